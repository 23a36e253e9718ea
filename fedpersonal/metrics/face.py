"""Face verification (1:1) and open-set identification (1:N) metrics on embeddings.

* Verification accuracy, 10-fold (LFW protocol): for each fold the threshold that maximises
  accuracy on the other nine folds is applied to it; the mean over folds is reported.
* TAR@FAR: the threshold accepts at most ``floor(FAR * impostors)`` impostor pairs (a pair is
  accepted when its score is strictly above the threshold); TAR is the share of genuine pairs
  accepted. A FAR is *supported* when ``FAR * impostors >= 1``; asking for one that is not is an
  error.
* TPIR@FPIR: each probe's rank-1 gallery match and score; the threshold accepts at most
  ``floor(FPIR * non-mated probes)`` non-mated probes; TPIR is the share of mated probes whose
  rank-1 match is their own identity and is accepted.

Scores are cosine similarities; embeddings need not be normalised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

RATES = (1e-1, 1e-2, 1e-3, 1e-4)


def rate_key(name: str, rate: float) -> str:
    """Metric key of a rate: ``rate_key("tar@far", 0.01) == "tar@far=0.01"``."""
    return f"{name}={rate:g}"


def supported_rates(negatives: int, rates: Sequence[float] = RATES) -> tuple[float, ...]:
    """The rates that ``negatives`` impostor pairs (or non-mated probes) can resolve."""
    return tuple(rate for rate in rates if negatives * rate >= 1 - 1e-9)


def normalise(embeddings: ArrayLike) -> NDArray[np.float64]:
    """Rows scaled to unit length."""
    emb = np.asarray(embeddings, dtype=np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def all_pairs(labels: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Every unordered pair (i < j) of samples and whether it is genuine (same label)."""
    labels = np.asarray(labels)
    first, second = np.triu_indices(len(labels), k=1)
    return first, second, labels[first] == labels[second]


def pair_scores(embeddings: ArrayLike, first: ArrayLike, second: ArrayLike) -> NDArray[np.float64]:
    """Cosine similarity of each pair (first[i], second[i])."""
    emb = normalise(embeddings)
    return np.sum(emb[np.asarray(first)] * emb[np.asarray(second)], axis=1)


def _accept_threshold(negative_scores: NDArray[np.float64], rate: float, what: str) -> float:
    """A threshold that accepts (score > threshold) at most floor(rate * n) negatives."""
    count = len(negative_scores)
    if count * rate < 1 - 1e-9:
        raise ValueError(f"{what} {rate:g} needs >= {math.ceil(1 / rate)} negatives, got {count}")
    allowed = int(math.floor(rate * count + 1e-9))
    descending = np.sort(negative_scores)[::-1]
    return float(descending[allowed]) if allowed < count else -math.inf


def tar_at_far(scores: ArrayLike, genuine: ArrayLike, fars: Sequence[float]) -> dict[float, float]:
    """TAR at each FAR over pairs with ``scores`` and ``genuine`` flags."""
    scores, genuine = np.asarray(scores, dtype=np.float64), np.asarray(genuine, dtype=bool)
    if not genuine.any():
        raise ValueError("tar_at_far needs at least one genuine pair")
    result = {}
    for far in fars:
        threshold = _accept_threshold(scores[~genuine], far, "FAR")
        result[far] = float(np.mean(scores[genuine] > threshold))
    return result


def best_threshold(scores: ArrayLike, genuine: ArrayLike) -> float:
    """The threshold (midway between observed scores) with the highest accuracy on these pairs."""
    scores, genuine = np.asarray(scores, dtype=np.float64), np.asarray(genuine, dtype=bool)
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2.0, [values[-1] + 1.0]])
    positives, negatives = np.sort(scores[genuine]), np.sort(scores[~genuine])
    accepted_genuine = len(positives) - np.searchsorted(positives, candidates, side="right")
    rejected_impostors = np.searchsorted(negatives, candidates, side="right")
    return float(candidates[np.argmax(accepted_genuine + rejected_impostors)])


def ten_folds(count: int, seed: int = 0, num_folds: int = 10) -> NDArray[np.int64]:
    """A random, balanced fold index in [0, num_folds) for each of ``count`` pairs."""
    return np.random.default_rng(seed).permutation(count) % num_folds


def verification_accuracy(scores: ArrayLike, genuine: ArrayLike, folds: ArrayLike) -> float:
    """Mean held-out accuracy over folds, each with the threshold chosen on the other folds."""
    scores, genuine, folds = np.asarray(scores, dtype=np.float64), np.asarray(genuine, dtype=bool), np.asarray(folds)
    accuracies = []
    for fold in np.unique(folds):
        held = folds == fold
        threshold = best_threshold(scores[~held], genuine[~held])
        accuracies.append(np.mean((scores[held] > threshold) == genuine[held]))
    return float(np.mean(accuracies))


def open_set_scores(
    gallery: ArrayLike, gallery_ids: ArrayLike, probes: ArrayLike, probe_ids: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    """Rank-1 results of probes against a gallery of templates (one row per identity).

    Returns the mated probes' rank-1 scores, whether their rank-1 match is their identity, and
    the non-mated probes' rank-1 scores (a probe is mated when its identity is in the gallery).
    """
    gallery_ids, probe_ids = np.asarray(gallery_ids), np.asarray(probe_ids)
    similarity = normalise(probes) @ normalise(gallery).T
    best = np.argmax(similarity, axis=1)
    top = similarity[np.arange(len(best)), best]
    mated = np.isin(probe_ids, gallery_ids)
    correct = gallery_ids[best] == probe_ids
    return top[mated], correct[mated], top[~mated]


def tpir_at_fpir(
    mated_scores: ArrayLike, mated_correct: ArrayLike, nonmated_scores: ArrayLike, fpirs: Sequence[float]
) -> dict[float, float]:
    """TPIR at each FPIR from :func:`open_set_scores` results (possibly pooled over galleries)."""
    mated_scores, nonmated = np.asarray(mated_scores, dtype=np.float64), np.asarray(nonmated_scores, dtype=np.float64)
    mated_correct = np.asarray(mated_correct, dtype=bool)
    if len(mated_scores) == 0:
        raise ValueError("tpir_at_fpir needs at least one mated probe")
    return {
        fpir: float(np.mean(mated_correct & (mated_scores > _accept_threshold(nonmated, fpir, "FPIR"))))
        for fpir in fpirs
    }
