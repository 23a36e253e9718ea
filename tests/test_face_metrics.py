"""Face metrics on hand-made scores and embeddings with known answers."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedpersonal.metrics import face as fm


def test_rate_keys_and_supported_rates():
    assert fm.rate_key("tar@far", 0.01) == "tar@far=0.01"
    assert fm.supported_rates(9) == ()
    assert fm.supported_rates(10) == (0.1,)
    assert fm.supported_rates(999) == (0.1, 0.01)
    assert fm.supported_rates(10_000) == (0.1, 0.01, 0.001, 0.0001)


def test_tar_at_far_by_hand():
    genuine_scores = [0.9, 0.8, 0.3]
    impostor_scores = [0.85, 0.5, 0.4, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4]
    scores = np.array(genuine_scores + impostor_scores)
    genuine = np.array([True] * 3 + [False] * 10)
    # FAR 0.1 of 10 impostors: one may pass, so the threshold is the 2nd highest impostor (0.5).
    assert fm.tar_at_far(scores, genuine, [0.1]) == {0.1: pytest.approx(2 / 3)}
    # FAR 0.3: three may pass (0.85, 0.5, 0.4); the threshold is 0.2, so 0.3 passes too.
    assert fm.tar_at_far(scores, genuine, [0.3]) == {0.3: pytest.approx(1.0)}
    with pytest.raises(ValueError, match="FAR 0.01 needs >= 100 negatives, got 10"):
        fm.tar_at_far(scores, genuine, [0.01])


def test_ties_never_let_more_impostors_pass():
    scores = np.array([0.7, 0.5, 0.5, 0.5, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    genuine = np.array([True, True] + [False] * 10)
    # Impostors 0.5, 0.5, 0.1, ...: at FAR 0.1 one may pass, but two tie at 0.5: none passes.
    assert fm.tar_at_far(scores, genuine, [0.1]) == {0.1: pytest.approx(0.5)}


def test_pairs_and_cosine_scores():
    first, second, genuine = fm.all_pairs([0, 0, 1])
    assert list(zip(first, second)) == [(0, 1), (0, 2), (1, 2)]
    assert list(genuine) == [True, False, False]
    embeddings = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    np.testing.assert_allclose(fm.pair_scores(embeddings, first, second), [math.sqrt(0.5), 0.0, math.sqrt(0.5)])


def test_best_threshold_and_ten_fold_accuracy():
    scores = np.array([0.9, 0.6, 0.4, 0.2, 0.5, 0.1])
    genuine = np.array([True, True, True, False, False, False])
    # Thresholds between sorted scores: accepting > 0.45 gets 5 of 6 right (0.4 is missed).
    assert fm.best_threshold(scores, genuine) == pytest.approx(0.3)  # 0.3 also gives 5/6, lower wins
    folds = np.array([0, 1, 0, 1, 0, 1])
    # Fold 0 held out (0.9 T, 0.4 T, 0.5 F): fold 1 (0.6 T, 0.2 F, 0.1 F) picks 0.4 (3/3 there),
    # which gets only 0.9 right: 1/3. Fold 1 held out: fold 0 (0.9 T, 0.4 T, 0.5 F) scores 2/3 at
    # -0.6 (accept all) and at 0.7; the lower wins, which accepts 0.2 and 0.1 too: 1/3.
    assert fm.verification_accuracy(scores, genuine, folds) == pytest.approx(1 / 3)
    separable = np.r_[np.linspace(0.6, 1.0, 50), np.linspace(-1.0, 0.4, 50)]
    labels = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    assert fm.verification_accuracy(separable, labels, fm.ten_folds(100)) == 1.0
    assert sorted(np.bincount(fm.ten_folds(100))) == [10] * 10


def test_open_set_identification_by_hand():
    gallery = np.eye(3)[:2]  # identities 7 -> e1, 8 -> e2
    gallery_ids = np.array([7, 8])
    probes = np.array(
        [
            [1.0, 0.1, 0.0],  # id 7, correct, cos ~0.995
            [0.2, 1.0, 0.0],  # id 8, correct, cos ~0.981
            [1.0, 0.5, 0.0],  # id 8 but matches 7: wrong at rank 1
            [0.6, 0.0, 0.8],  # id 9 (not enrolled): rank-1 score 0.6
            [0.0, 0.3, 0.954],  # id 9: rank-1 score ~0.3
        ]
    )
    probe_ids = np.array([7, 8, 8, 9, 9])
    mated, correct, nonmated = fm.open_set_scores(gallery, gallery_ids, probes, probe_ids)
    assert list(correct) == [True, True, False]
    np.testing.assert_allclose(nonmated, [0.6, 0.3], atol=1e-3)
    # FPIR 0.5 of 2 non-mated probes: one may pass -> threshold 0.3; both correct probes pass.
    assert fm.tpir_at_fpir(mated, correct, nonmated, [0.5]) == {0.5: pytest.approx(2 / 3)}
    # FPIR 1.0: every non-mated probe may pass -> no threshold; TPIR = rank-1 accuracy.
    assert fm.tpir_at_fpir(mated, correct, nonmated, [1.0]) == {1.0: pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="FPIR 0.1 needs >= 10 negatives, got 2"):
        fm.tpir_at_fpir(mated, correct, nonmated, [0.1])


class LabelEmbedding(nn.Module):
    """A perfect embedder: the identity label is written in pixel (0, 0)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        labels = torch.round((images[:, 0, 0, 0] + 1.0) * 127.5).long()
        return nn.functional.one_hot(labels, 16).float() + 0.01


def test_client_protocol_is_perfect_for_a_perfect_embedder():
    from fedpersonal.config import parse_config
    from fedpersonal.tasks.base import ClientData
    from fedpersonal.tasks.face import FaceSettings, FaceTask

    cfg = parse_config({"test-fraction": 0.4, "face.identities-min": 5, "face.images-per-identity": 10}, [FaceSettings])
    task = FaceTask(cfg)
    # The smallest client: 5 identities x 4 test images = 20 images, 30 genuine and 160 impostor pairs.
    assert task.personal_rates() == ((0.1, 0.01), (0.1,))

    def tensors(per_identity):
        labels = torch.arange(6).repeat_interleave(per_identity)
        images = torch.zeros(len(labels), 1, 16, 16, dtype=torch.uint8)
        images[:, 0, 0, 0] = labels.to(torch.uint8)
        return images, labels

    metrics = task.client_metrics(LabelEmbedding(), ClientData(tensors(6), tensors(4)))
    assert metrics == {"tar@far=0.1": 1.0, "tar@far=0.01": 1.0, "tpir@fpir=0.1": 1.0}
