"""The error every data-layer failure raises: it names the file or key and what was expected."""

from __future__ import annotations

from fedpersonal.config import ConfigError


class DataError(ConfigError):
    """A dataset is missing, has the wrong layout, is corrupted, or cannot be partitioned.

    A subclass of :class:`ConfigError` (and so of ``ValueError``): bad data is bad input to the
    run and stops it before training, exactly like a bad run-config value.
    """
