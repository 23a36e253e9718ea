"""Durable, exclusive file writes for run directories, checkpoints and client state.

* :func:`atomic_write`: the content goes to a uniquely named temporary file in the target's
  directory, is flushed and fsync'ed, renamed over the target, and the directory is fsync'ed; on
  any error (a full disk, say) the temporary file is removed and the previous target is untouched.
* :func:`durable_append`: appended text is flushed and fsync'ed before the call returns.
* :class:`DirectoryLock`: an exclusive ``flock`` on ``<directory>/.lock`` held for the life of a
  run; a second run on the same directory stops with :class:`DirectoryLockedError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

LOCK_FILE = ".lock"


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write(target: Path, write: Callable[[BinaryIO], None] | bytes, mode: int = 0o644) -> None:
    """Replace ``target`` with what ``write`` writes to a binary file (or with these bytes),
    durably and atomically; ``mode`` is the new file's permission bits."""
    target = Path(target)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as file:
            if isinstance(write, bytes):
                file.write(write)
            else:
                write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, mode)
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def durable_append(target: Path, text: str) -> None:
    """Append ``text`` to ``target`` and fsync it."""
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class DirectoryLockedError(RuntimeError):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory`` (a context manager); released on exit or
    when the process ends."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._handle: int | None = None

    def acquire(self) -> DirectoryLock:
        """Take the lock; :class:`DirectoryLockedError` names the directory and the holder's pid."""
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "?"
            os.close(handle)
            raise DirectoryLockedError(
                f"run directory '{self.path.parent}' is in use by another run (pid {holder}); "
                "expected one run per directory at a time"
            ) from error
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        self._handle = handle
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
