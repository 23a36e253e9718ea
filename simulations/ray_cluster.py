"""A local multi-node Ray cluster for tests and trials, and how to attach a simulation to one.

Flower's Ray backend attaches to an existing cluster when ``RAY_ADDRESS`` is set in the
environment that starts the SuperLink. :func:`local_cluster` starts a head and worker nodes on
this machine with ``ray.cluster_utils.Cluster`` (its own processes only, stopped with
``Cluster.shutdown()``), bound to 127.0.0.2 so Ray does not rewrite the address.

    python -m simulations.ray_cluster --workers 2 --cpus-per-node 1
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray.cluster_utils import Cluster

from fedpersonal.runtime import quiet_environment

NODE_IP = "127.0.0.2"


@contextmanager
def local_cluster(workers: int = 1, cpus_per_node: int = 1) -> Iterator[Cluster]:
    """Start a head plus ``workers`` worker nodes; yields the ``Cluster`` (its ``address`` goes in
    ``RAY_ADDRESS``; ``remove_node`` takes a node away)."""
    os.environ.update(quiet_environment({}))
    node_args: dict[str, Any] = {"num_cpus": cpus_per_node, "node_ip_address": NODE_IP, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node_args)
    try:
        for _ in range(workers):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def main() -> None:
    """Start a local cluster, print how to attach to it, and keep it up until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Start a local multi-node Ray cluster")
    parser.add_argument("--workers", type=int, default=1, help="worker nodes besides the head")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    args = parser.parse_args()
    with local_cluster(args.workers, args.cpus_per_node) as cluster:
        address = cluster.address
        print(f"Ray cluster up: {args.workers + 1} nodes x {args.cpus_per_node} CPUs at {address}", flush=True)
        print(f"attach a SuperLink: RAY_ADDRESS={address} flower-superlink ... (see README)", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
