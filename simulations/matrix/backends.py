"""How a cell is executed: in this process (fast, the default; optionally with the clients trained in
lockstep) or through a real ``flwr run``.

A backend's ``run(cell_dir, keys)`` runs one complete run config (``results-dir`` points into the
cell's directory) and raises on failure; the runner then checks that the run directory holds a
``summary.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import tomli_w

from simulations import inprocess
from simulations.local_superlink import PrivateSuperLink

APP_DIR = Path(__file__).resolve().parents[2]
OUTPUT_TAIL = 3000  # characters of a failed flwr run's output kept in the error


class Backend(Protocol):
    """Runs one cell's run config to completion."""

    def run(self, cell_dir: Path, keys: Mapping[str, Any]) -> None:
        """Run ``keys``; raise an exception describing the failure if it does not finish."""

    def close(self) -> None:
        """Release what the backend started."""


class InProcessBackend:
    """The ServerApp logic and ClientApp in this process (:func:`simulations.inprocess.run_inprocess`);
    ``vectorized`` trains each round's clients in lockstep (:mod:`simulations.vectorized`)."""

    def __init__(self, vectorized: bool = False) -> None:
        self.vectorized = vectorized

    def run(self, cell_dir: Path, keys: Mapping[str, Any]) -> None:
        """Run ``keys`` in this process."""
        inprocess.run_inprocess(keys, vectorized=self.vectorized)

    def close(self) -> None:
        """Nothing to release."""


class FlowerRunFailed(RuntimeError):
    """``flwr run`` ended without a finished run; the message holds the end of its output."""


class FlowerBackend:
    """``flwr run`` on private SuperLinks (one per client count, started on first use), each client
    reserving ``client_cpus`` CPUs (torch in a client uses that many threads) and ``client_gpus`` GPUs
    (Flower's ``client-resources-num-gpus``: a fraction puts several clients on one GPU)."""

    def __init__(self, home: Path, timeout_s: float = 86400.0, client_cpus: int = 1, client_gpus: float = 0.0) -> None:
        self.home = Path(home)
        self.timeout_s = timeout_s
        self.client_cpus = client_cpus
        self.client_gpus = client_gpus
        self.links: dict[int, PrivateSuperLink] = {}

    def _link(self, num_clients: int) -> PrivateSuperLink:
        if num_clients not in self.links:
            home = self.home / f"clients-{num_clients}"
            link = PrivateSuperLink(home, num_clients, self.client_cpus, num_gpus_per_client=self.client_gpus)
            self.links[num_clients] = link.start()
        return self.links[num_clients]

    def run(self, cell_dir: Path, keys: Mapping[str, Any]) -> None:
        """Write ``keys`` to ``<cell>/run-config.toml`` and ``flwr run`` it."""
        from simulations.server_app import parse_run_config

        num_clients = parse_run_config(dict(keys)).num_clients
        config_file = cell_dir / "run-config.toml"
        config_file.write_text(tomli_w.dumps(dict(keys)))
        done = self._link(num_clients).run(APP_DIR, str(config_file), timeout=self.timeout_s)
        if done.returncode != 0 or not any(cell_dir.glob("*/summary.json")):
            output = (done.stdout + done.stderr)[-OUTPUT_TAIL:]
            raise FlowerRunFailed(f"flwr run exited with code {done.returncode}; end of its output:\n{output}")

    def close(self) -> None:
        """Stop every SuperLink this backend started."""
        for link in self.links.values():
            link.stop()
        self.links.clear()


def make_backend(
    name: str, out: Path, timeout_s: float = 86400.0, client_cpus: int = 1, client_gpus: float = 0.0
) -> Backend:
    """``"inprocess"``, ``"vectorized"`` (in process, clients in lockstep) or ``"flower"`` (SuperLink
    homes under ``<out>/flower-home``)."""
    if name in ("inprocess", "vectorized"):
        return InProcessBackend(vectorized=name == "vectorized")
    if name == "flower":
        return FlowerBackend(out / "flower-home", timeout_s, client_cpus, client_gpus)
    raise ValueError(f"backend {name!r} is unknown; choose 'inprocess', 'vectorized' or 'flower'")
