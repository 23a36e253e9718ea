"""Process-level settings that every fedpersonal process applies once."""

from __future__ import annotations

import os

QUIET_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def quiet_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: os.environ) plus the variables that keep Flower and Ray offline."""
    return {**(dict(os.environ) if base is None else base), **QUIET_ENVIRONMENT}
