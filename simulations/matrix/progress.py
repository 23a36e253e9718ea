"""Progress of a matrix on stdout: cells done/total, elapsed time and an ETA.

The ETA is the mean time of the cells executed so far in this invocation times the cells still
to do (cells skipped because they finished earlier take no time and do not enter the mean).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Writes one line when a cell starts and one when it ends."""

    def __init__(
        self, total: int, write: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total, self.write, self.clock = total, write, clock
        self.start = clock()
        self.done = 0
        self.durations: list[float] = []

    def eta_s(self) -> float | None:
        """Seconds left, from the mean executed cell time (None before any cell ran)."""
        if not self.durations:
            return None
        return sum(self.durations) / len(self.durations) * (self.total - self.done)

    def started(self, name: str, action: str) -> None:
        """Cell ``name`` begins (``action``: run, resume)."""
        self.write(f"[{self.done + 1}/{self.total}] {name}: {action} ...")

    def finished(self, name: str, status: str, seconds: float | None, detail: str = "") -> None:
        """Cell ``name`` ended with ``status`` after ``seconds`` (None: skipped, no time spent)."""
        self.done += 1
        if seconds is not None:
            self.durations.append(seconds)
        eta = self.eta_s()
        took = f" in {duration(seconds)}" if seconds is not None else ""
        self.write(
            f"[{self.done}/{self.total}] {name}: {status}{took}{f' ({detail})' if detail else ''} | "
            f"elapsed {duration(self.clock() - self.start)} | ETA {duration(eta) if eta is not None else '?'}"
        )
