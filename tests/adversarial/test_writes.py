"""Writes are durable and exclusive: one run per directory, a failed write keeps the previous file
and leaves no temporary file, a damaged cache entry is rebuilt, personal state is owner-only."""

import errno
import os
import stat

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, RecordDict
from real_data_files import private_cache  # noqa: F401

from fedpersonal import storage
from fedpersonal.checkpoint import CLIENT_STATE_DIR, load_checkpoint, save_checkpoint, save_client_state
from fedpersonal.config import ConfigError
from fedpersonal.data import cache
from fedpersonal.data.containers import ImageSet
from fedpersonal.storage import DirectoryLock, DirectoryLockedError
from simulations.inprocess import run_inprocess

SMALL = {"num-clients": 2, "num-rounds": 1, "samples-per-client": 30, "local-epochs": 1}


def test_a_second_run_on_a_directory_in_use_is_refused(tmp_path):
    run_dir, _ = run_inprocess({**SMALL, "results-dir": str(tmp_path)})
    resume = {**SMALL, "num-rounds": 2, "results-dir": str(tmp_path), "resume": str(run_dir.path)}
    with DirectoryLock(run_dir.path):  # another run holds the directory
        with pytest.raises(ConfigError, match=rf"'{run_dir.path}' is in use by another run \(pid {os.getpid()}\)"):
            run_inprocess(resume)
        with pytest.raises(DirectoryLockedError):
            DirectoryLock(run_dir.path).acquire()
    assert [row["round"] for row in run_dir.read_rows("rounds.jsonl")] == [0, 1]  # untouched
    resumed, _ = run_inprocess(resume)  # the lock is free again
    assert [row["round"] for row in resumed.read_rows("rounds.jsonl")] == [0, 1, 2]


def test_a_full_disk_mid_checkpoint_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(3)}, {})
    real_save = torch.save

    def disk_full(payload, handle):
        handle.write(b"PK\x03\x04partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, 2, {"w": torch.zeros(3)}, {})
    monkeypatch.setattr(torch, "save", real_save)
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["round"] == 1 and torch.equal(checkpoint["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no stray temporary file


def test_every_write_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    storage.atomic_write(tmp_path / "a.json", b"{}")
    assert len(synced) == 2  # the file, then its directory
    storage.durable_append(tmp_path / "rows.jsonl", "{}\n")
    assert len(synced) == 3


def test_a_truncated_cache_file_is_rebuilt(tmp_path, private_cache):  # noqa: F811
    calls = []

    def build():
        calls.append(1)
        return ImageSet(np.arange(4000, dtype=np.uint8).reshape(10, 20, 20), np.arange(10), ("x",))

    expected = np.array(cache.cached("toy", None, {}, ImageSet, build).images)  # a copy, not the memory map
    (entry,) = [p for p in cache.cache_root().iterdir() if p.name.startswith("toy-")]
    images = entry / "images.npy"
    images.write_bytes(images.read_bytes()[:200])  # truncated, e.g. by a full disk or a killed process
    again = cache.cached("toy", None, {}, ImageSet, build)
    assert len(calls) == 2 and np.array_equal(again.images, expected)


def test_personal_state_files_are_owner_only(tmp_path):
    save_client_state(tmp_path, 3, 1, RecordDict({"personal": ConfigRecord({"x": 1})}))
    (saved,) = (tmp_path / CLIENT_STATE_DIR).iterdir()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / CLIENT_STATE_DIR).stat().st_mode) == 0o700
