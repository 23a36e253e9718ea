"""Checkpoints of a run: server side (one file per run) and client personal state (per client).

``<run-dir>/checkpoint.pt`` is rewritten atomically after every round with the round number, the
global model, the strategy's state (e.g. server-optimizer moments) and the RNG states.
``<run-dir>/client-state/<partition>.r<round>.bin`` holds a client's ``context.state`` (Flower's
protobuf serialisation of a RecordDict) after that round; the newest two are kept, because a
client may save round r+1 before the server's checkpoint of round r+1 is written.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from numpy.typing import NDArray

from fedpersonal.storage import atomic_write

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # 2: the payload wrapped with its SHA-256


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely (damaged, or holding more than tensors and plain data)."""


CLIENT_STATE_DIR = "client-state"
_STATE_FILE = re.compile(r"^(?P<partition>\d+)\.r(?P<round>\d+)\.bin$")


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators, as tensors, numbers and
    strings only (so that a checkpoint loads with ``torch.load(weights_only=True)``)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = cast(
        tuple[str, NDArray[np.uint32], int, int, float], np.random.get_state()
    )
    return {
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has-gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    python, numpy_state = states["python"], states["numpy"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (numpy_state["kind"], keys, numpy_state["position"], numpy_state["has-gauss"], numpy_state["cached"])
    )
    torch.set_rng_state(states["torch"])


def save_checkpoint(
    run_dir: Path,
    server_round: int,
    model_state: dict[str, torch.Tensor],
    strategy_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``checkpoint.pt`` (replacing the previous one durably and atomically): the round, the
    global model, the strategy's state, the RNG states and ``extra`` (e.g. the run's fingerprint),
    serialised, then wrapped with the SHA-256 of those bytes."""
    data = {
        "round": server_round,
        "model": model_state,
        "strategy": strategy_state,
        "rng": rng_states(),
        **(extra or {}),
    }
    inner = io.BytesIO()
    torch.save(data, inner)
    raw = inner.getvalue()
    wrapped = {
        "format": CHECKPOINT_FORMAT,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "payload": torch.frombuffer(bytearray(raw), dtype=torch.uint8),
    }
    atomic_write(Path(run_dir) / CHECKPOINT, lambda handle: torch.save(wrapped, handle))


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read ``checkpoint.pt`` with ``weights_only`` loads, after checking its SHA-256; a
    FileNotFoundError names the missing file, a CheckpointError the damaged or unsafe one."""
    target = Path(run_dir) / CHECKPOINT
    if not target.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {target} does not exist")
    try:
        wrapped = torch.load(target, weights_only=True)  # tensors and plain data only: nothing in it runs
        if not isinstance(wrapped, dict) or wrapped.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a fedpersonal checkpoint of format {CHECKPOINT_FORMAT}")
        raw = wrapped["payload"].numpy().tobytes()
        if hashlib.sha256(raw).hexdigest() != wrapped["sha256"]:
            raise ValueError("its content does not match its SHA-256: the file is damaged")
        data: dict[str, Any] = torch.load(io.BytesIO(raw), weights_only=True)
        return data
    except Exception as error:  # noqa: BLE001 - any failure to read is a damaged or unsafe file
        raise CheckpointError(f"cannot load the checkpoint '{target}': {error}") from error


def save_client_state(base: Path, partition_id: int, server_round: int, state: RecordDict) -> None:
    """Persist one client's state after ``server_round`` under ``base/client-state``; keep its newest two files."""
    folder = Path(base) / CLIENT_STATE_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = recorddict_to_proto(state).SerializeToString()
    atomic_write(client_state_file(base, partition_id, server_round), payload, mode=0o600)  # owner only
    for _, old in _state_files(folder, partition_id)[:-2]:
        old.unlink(missing_ok=True)


def load_client_state(base: Path, partition_id: int, up_to_round: int) -> RecordDict | None:
    """The client's newest saved state from a round <= ``up_to_round`` (None if there is none)."""
    candidates = [
        path
        for saved_round, path in _state_files(Path(base) / CLIENT_STATE_DIR, partition_id)
        if saved_round <= up_to_round
    ]
    if not candidates:
        return None
    return read_client_state(candidates[-1])


def client_state_file(base: Path, partition_id: int, server_round: int) -> Path:
    """Where client ``partition_id``'s state after ``server_round`` is saved under ``base``."""
    return Path(base) / CLIENT_STATE_DIR / f"{partition_id}.r{server_round}.bin"


def read_client_state(path: Path) -> RecordDict:
    """One saved client state; a CheckpointError names a damaged file."""
    proto = ProtoRecordDict()
    try:
        proto.ParseFromString(path.read_bytes())
        return recorddict_from_proto(proto)
    except Exception as error:  # noqa: BLE001 - protobuf raises several kinds on damaged bytes
        raise CheckpointError(f"cannot read the client state '{path}': {error}") from error


def _state_files(folder: Path, partition_id: int) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STATE_FILE.match(path.name)
        if match and int(match["partition"]) == partition_id:
            found.append((int(match["round"]), path))
    return sorted(found)
