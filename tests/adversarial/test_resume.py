"""Resume cannot go silently wrong: a foreign, edited, damaged or incomplete run directory is
refused with an error naming the key or file; a half-written last line is dropped and reported."""

import json
import shutil

import pytest
import torch
from crashing import crash_in_round
from small_configs import PAIRS, small_run

from fedpersonal.checkpoint import CHECKPOINT, CHECKPOINT_FORMAT, CLIENT_STATE_DIR, load_checkpoint, save_checkpoint
from fedpersonal.config import ConfigError
from fedpersonal.results import RunDirectory
from simulations.inprocess import run_inprocess

SMALL = {"num-clients": 2, "num-rounds": 1, "samples-per-client": 30, "local-epochs": 1}


def first_run(tmp_path, **extra):
    run_dir, _ = run_inprocess({**SMALL, **extra, "results-dir": str(tmp_path)})
    return run_dir


def resume(run_dir, **extra):
    config = {**SMALL, **extra, "num-rounds": 2, "results-dir": str(run_dir.path.parent), "resume": str(run_dir.path)}
    return run_inprocess(config)[0]


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    gaze = first_run(tmp_path / "gaze")
    classify = first_run(tmp_path / "classify", task="classify")
    shutil.copy(classify.path / CHECKPOINT, gaze.path / CHECKPOINT)
    with pytest.raises(ConfigError, match=r"belongs to a run with a different config \(.*'task'"):
        resume(gaze)


def test_an_edited_config_json_does_not_smuggle_in_a_changed_lr(tmp_path):
    run_dir = first_run(tmp_path)
    facts = run_dir.read_json("config.json")
    facts["config"]["lr"] = 0.5
    (run_dir.path / "config.json").write_text(json.dumps(facts))
    with pytest.raises(ConfigError, match=r"different config \(\['lr'\]\)"):
        resume(run_dir, lr=0.5)


def as_an_older_version(run_dir, section: str) -> None:
    """Rewrite config.json and the checkpoint as a version without ``section`` would have written them."""
    facts = run_dir.read_json("config.json")
    facts["config"] = {k: v for k, v in facts["config"].items() if not k.startswith(f"{section}.")}
    (run_dir.path / "config.json").write_text(json.dumps(facts))
    checkpoint = load_checkpoint(run_dir.path)
    fingerprint = checkpoint["fingerprint"]
    fingerprint["config"] = {k: v for k, v in fingerprint["config"].items() if not k.startswith(f"{section}.")}
    extra = {key: checkpoint[key] for key in ("fingerprint", "client-states", "learned")}
    save_checkpoint(run_dir.path, checkpoint["round"], checkpoint["model"], checkpoint["strategy"], extra)


def test_a_run_of_a_version_without_a_newer_section_resumes_while_that_section_keeps_its_defaults(tmp_path):
    run_dir = first_run(tmp_path)
    as_an_older_version(run_dir, "poison")
    assert resume(run_dir).read_rows("rounds.jsonl")[-1]["round"] == 2
    as_an_older_version(run_dir, "poison")
    with pytest.raises(ConfigError, match=r"different values for \['poison.attack', 'poison.share'\]"):
        resume(run_dir, **{"num-rounds": 3, "poison.share": 0.3, "poison.attack": "scale"})


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_damaged_checkpoint_names_the_file(tmp_path, damage):
    run_dir = first_run(tmp_path)
    path = run_dir.path / CHECKPOINT
    content = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": content[: len(content) // 2], "garbage": b"x" * 100}[damage])
    with pytest.raises(ConfigError, match=f"cannot load the checkpoint '{path}'"):
        resume(run_dir)


def test_a_checkpoint_whose_content_does_not_match_its_hash_is_refused(tmp_path):
    run_dir = first_run(tmp_path)
    path = run_dir.path / CHECKPOINT
    wrapped = torch.load(path, weights_only=True)
    assert wrapped["format"] == CHECKPOINT_FORMAT
    wrapped["payload"][-40] ^= 1  # one bit of the serialised content
    torch.save(wrapped, path)
    with pytest.raises(ConfigError, match=f"'{path}': its content does not match its SHA-256"):
        resume(run_dir)


def test_missing_or_damaged_personal_state_is_refused(tmp_path):
    run_dir = first_run(tmp_path, strategy="fedper")
    states = sorted((run_dir.path / CLIENT_STATE_DIR).iterdir())
    assert [p.name for p in states] == ["0.r1.bin", "1.r1.bin"]
    states[0].write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(ConfigError, match=f"cannot read the client state '{states[0]}'"):
        resume(run_dir, strategy="fedper")
    shutil.rmtree(run_dir.path / CLIENT_STATE_DIR)
    with pytest.raises(ConfigError, match=r"client 0's personal state after round 1 is missing"):
        resume(run_dir, strategy="fedper")


def test_a_half_written_last_line_is_dropped_and_reported(tmp_path, caplog):
    run_dir = first_run(tmp_path)
    with open(run_dir.path / "rounds.jsonl", "a") as handle:
        handle.write('{"round": 2, "global-angu')  # the crash came mid-append
    resumed = resume(run_dir)
    assert [row["round"] for row in resumed.read_rows("rounds.jsonl")] == [0, 1, 2]
    assert "dropped the half-written last line 3" in caplog.text


def test_a_damaged_line_in_the_middle_names_the_file_and_line(tmp_path):
    run_dir = first_run(tmp_path)
    path = run_dir.path / "rounds.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match=f"'{path}' line 2 is not a JSON object"):
        resume(run_dir)


@pytest.mark.parametrize(("name", "task"), PAIRS, ids=[f"{n}-{t}" for n, t in PAIRS])
def test_crash_then_resume_equals_an_uninterrupted_run(name, task, tmp_path, monkeypatch, one_thread):
    """Every registered algorithm checkpoints all its state: strategy, clients' personal state, RNG."""
    config = {**small_run(name, task), "num-rounds": 2}
    full, _ = run_inprocess({**config, "results-dir": str(tmp_path / "full")})
    crashed = crash_in_round(monkeypatch, {**config, "results-dir": str(tmp_path / "crashed")}, 2)
    resumed, _ = run_inprocess({**config, "results-dir": str(tmp_path / "crashed"), "resume": str(crashed)})

    def rows(run_dir, filename):
        return [{k: v for k, v in row.items() if k != "time-s"} for row in run_dir.read_rows(filename)]

    assert rows(resumed, "rounds.jsonl") == rows(full, "rounds.jsonl")
    assert rows(resumed, "clients.jsonl") == rows(full, "clients.jsonl")
    expected = torch.load(full.path / "model.pt", weights_only=True)
    for key, value in torch.load(resumed.path / "model.pt", weights_only=True).items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_a_run_directory_moved_elsewhere_resumes_from_its_new_folder(tmp_path):
    run_dir = first_run(tmp_path / "old")
    moved = tmp_path / "new" / run_dir.path.name
    moved.parent.mkdir()
    shutil.copytree(run_dir.path, moved)
    shutil.rmtree(run_dir.path)
    resumed = resume(RunDirectory(moved))
    assert resumed.path == moved
    assert [row["round"] for row in resumed.read_rows("rounds.jsonl")] == [0, 1, 2]


def test_a_results_dir_that_does_not_hold_the_resumed_run_is_refused(tmp_path):
    run_dir = first_run(tmp_path / "runs")
    config = {**SMALL, "num-rounds": 2, "results-dir": str(tmp_path / "elsewhere"), "resume": str(run_dir.path)}
    with pytest.raises(ConfigError, match=r"'results-dir' = .*elsewhere.* does not hold the resumed run"):
        run_inprocess(config)
