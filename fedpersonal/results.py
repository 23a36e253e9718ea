"""The run directory: resolved config, per-round and per-client metrics, final model.

Layout of ``<results-dir>/<run-name>/``:

* ``config.json``  - the resolved run config (every key, defaults filled in) and run facts
* ``rounds.jsonl`` - one JSON object per round (round 0 = the initial model), appended and
  flushed as each round ends, so a crash never loses a finished round
* ``clients.jsonl`` - one JSON object per client reply: round, phase (train/evaluate), node id,
  partition id and the client's metrics, or its error
* ``model.pt``     - the final global model (``torch.save`` of a state_dict)
* ``summary.json`` - final global metrics and the fairness summary over clients
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from logging import WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.common import log

from fedpersonal.storage import atomic_write, durable_append


class RunFileError(ValueError):
    """A run directory's file is damaged beyond a half-written last line."""


class RunDirectory:
    """Writes (and reads back) the files of one run."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDirectory:
        """A new, empty directory ``root/<timestamp>-<name>`` (suffixed if it exists)."""
        base = Path(root).expanduser().resolve() / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        path, suffix = base, 1
        while path.exists():
            path, suffix = Path(f"{base}-{suffix}"), suffix + 1
        path.mkdir(parents=True)
        return cls(path)

    def write_json(self, filename: str, payload: Mapping[str, Any]) -> None:
        """Write one JSON document (durably and atomically)."""
        atomic_write(self.path / filename, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())

    def append_rows(self, filename: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append JSON lines and fsync them."""
        durable_append(self.path / filename, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))

    def read_rows(self, filename: str) -> list[dict[str, Any]]:
        """All JSON lines of ``filename`` (empty if it does not exist). A half-written last line (a
        crash while appending) is dropped with a warning; any other bad line is a RunFileError
        naming the file and line."""
        target = self.path / filename
        if not target.exists():
            return []
        text = target.read_text(errors="replace")
        lines = text.split("\n")
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number == len(lines) and not text.endswith("\n"):
                    log(
                        WARNING,
                        "dropped the half-written last line %d of '%s' (%d characters)",
                        number,
                        target,
                        len(line),
                    )
                    break
                raise RunFileError(f"'{target}' line {number} is not a JSON object: {error}") from error
        return rows

    def drop_rows_after(self, filename: str, last_round: int) -> None:
        """Remove the rows of rounds after ``last_round`` (rewritten atomically), for a resume."""
        kept = [row for row in self.read_rows(filename) if row["round"] <= last_round]
        atomic_write(self.path / filename, "".join(json.dumps(row, sort_keys=True) + "\n" for row in kept).encode())

    def read_json(self, filename: str) -> dict[str, Any]:
        """One JSON document."""
        return json.loads((self.path / filename).read_text())

    def save_model(self, state_dict: Mapping[str, torch.Tensor], filename: str = "model.pt") -> None:
        """Save a state_dict with ``torch.save`` (durably and atomically)."""
        atomic_write(self.path / filename, lambda handle: torch.save(dict(state_dict), handle))
