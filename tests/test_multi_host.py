"""The multi-machine recipe of docs/ray.md ('Running on a Ray cluster'), executed as written on two hosts.

The hosts are two Linux network namespaces joined by a veth pair (198.18.0.1 the head, 198.18.0.2 the
worker; 198.18.0.0/15 is reserved for network tests, and the namespaces have no other route, so no
traffic leaves them). The commands are read from the section itself, placeholders filled in
(``<head-ip>``, ``<cores>`` = 1, ``num-supernodes``), so the test fails when the docs stop working.
Two flags are added to each ``ray start``, because both hosts share this machine's filesystem and
processes: ``--temp-dir`` (a directory of its own, not the ``/tmp/ray`` of any other Ray on the machine)
and ``--block`` (the process started is the node, stopped by pid).

Every process is started in a session of its own (``start_new_session``) and stopped by pid: SIGTERM
to the leader, then whatever is left of its session and process tree. Never ``ray stop``, which would
end every Ray on the machine. The namespaces are deleted at the end (which removes the veth pair).
The test skips only where a network namespace cannot be created (not root, no CAP_NET_ADMIN, no ``ip``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_ray_cluster import rows

from fedpersonal.runtime import quiet_environment
from simulations.local_superlink import PrivateSuperLink, _is_zombie, _terminate, descendants

APP = Path(__file__).resolve().parents[1]
DOC = APP / "docs" / "ray.md"
SECTION = "## Running on a Ray cluster"
HEAD_IP, WORKER_IP = "198.18.0.1", "198.18.0.2"
PREFIX = 30
CLIENTS = 4
RUN_CONFIG = f"num-clients={CLIENTS} num-rounds=2 samples-per-client=60"

# Waits (in the head's namespace) until the cluster has ``argv[2]`` live nodes; prints {node id: ip}.
WAIT_FOR_NODES = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 120
while True:
    nodes = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
    if len(nodes) >= int(sys.argv[2]) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(nodes))
"""


@dataclass
class Recipe:
    """The commands of docs/ray.md's multi-machine section, placeholders filled in."""

    head: list[str]  # ray start --head ...
    worker: list[str]  # ray start --address ...
    superlink_env: dict[str, str]  # the VAR=value assignments before flower-superlink
    superlink: list[str]
    connection: str  # the config.toml section, as text
    run: list[str]  # flwr run ...

    @property
    def ray_address(self) -> str:
        return self.superlink_env["RAY_ADDRESS"]

    @property
    def superlink_address(self) -> str:
        return self._one(r'address\s*=\s*"([^"]+)"', self.connection, "the SuperLink address in config.toml")

    @staticmethod
    def _one(pattern: str, text: str, what: str) -> str:
        found = re.findall(pattern, text, flags=re.DOTALL)
        assert len(found) == 1, f"{DOC.name}, '{SECTION[3:]}': expected one {what}, found {len(found)}"
        return str(found[0])

    @classmethod
    def from_docs(cls, num_supernodes: int) -> Recipe:
        text = DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
        text = text.replace("<head-ip>", HEAD_IP).replace("<cores>", "1")
        superlink = shlex.split(cls._one(r"```bash\n([^`]*flower-superlink[^`]*?)\n\s*```", text, "SuperLink command"))
        assignments = [word for word in superlink if re.fullmatch(r"[A-Z_]+=\S*", word)]
        run = cls._one(r"`(flwr run [^`]+)`", text, "'flwr run' command")
        return cls(
            head=shlex.split(cls._one(r"`(ray start --head[^`]*)`", text, "head command")),
            worker=shlex.split(cls._one(r"`(ray start --address[^`]*)`", text, "worker command")),
            superlink_env=dict(word.split("=", 1) for word in assignments),
            superlink=superlink[len(assignments) :],
            connection=textwrap.dedent(cls._one(r"```toml\n(.*?)```", text, "config.toml block")),
            run=shlex.split(re.sub(r"num-supernodes=\d+", f"num-supernodes={num_supernodes}", run)),
        )


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def make_hosts(head: str, worker: str, created: list[str]) -> None:
    """Two namespaces on a veth pair, loopback up in both (appends each namespace made to ``created``)."""
    for name in (head, worker):
        try:
            made = ip("netns", "add", name)
        except FileNotFoundError:
            pytest.skip("no 'ip' command (iproute2): cannot create network namespaces")
        if made.returncode != 0:
            pytest.skip(f"cannot create a network namespace (needs root or CAP_NET_ADMIN): {made.stderr.strip()}")
        created.append(name)
    veth = (f"{head}v", f"{worker}v")
    steps = [
        ("link", "add", veth[0], "netns", head, "type", "veth", "peer", "name", veth[1], "netns", worker),
        ("-n", head, "addr", "add", f"{HEAD_IP}/{PREFIX}", "dev", veth[0]),
        ("-n", worker, "addr", "add", f"{WORKER_IP}/{PREFIX}", "dev", veth[1]),
        ("-n", head, "link", "set", veth[0], "up"),
        ("-n", worker, "link", "set", veth[1], "up"),
        ("-n", head, "link", "set", "lo", "up"),
        ("-n", worker, "link", "set", "lo", "up"),
    ]
    for step in steps:
        done = ip(*step)
        assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr}"


def session(leader: int) -> set[int]:
    """Every process of the session ``leader`` leads and of its process tree, ``leader`` excluded."""
    members = set(descendants(leader))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == leader:
                members.add(int(entry.name))
    members.discard(leader)
    return members


def stop(process: subprocess.Popen[bytes]) -> set[int]:
    """SIGTERM ``process`` (``ray start --block`` and the SuperLink stop their children on it), wait, then
    terminate by pid whatever is left of its session; returns the pids still alive after that."""
    children = session(process.pid)
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    left = children | session(process.pid)
    for pid in left:
        _terminate(pid)
    return {pid for pid in left if not _is_zombie(pid)}


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def wait_reachable(namespace: str, address: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait until ``address`` (host:port) accepts TCP connections inside ``namespace``."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{log.stem} exited with {process.returncode}:\n{log_tail(log)}"
        probe = subprocess.run(
            ["ip", "netns", "exec", namespace, "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"{address} not reachable in {namespace} after {timeout:.0f} s:\n{log_tail(log)}")


def test_documented_recipe_runs_on_two_hosts_and_matches_a_single_host_run(tmp_path):
    recipe = Recipe.from_docs(num_supernodes=CLIENTS)
    head, worker = f"fp{os.getpid()}h", f"fp{os.getpid()}w"
    home, results, logs = tmp_path / "flwr-home", tmp_path / "cluster", tmp_path / "logs"
    home.mkdir()
    logs.mkdir()
    base = quiet_environment()
    base.pop("RAY_ADDRESS", None)
    env = base | {"PATH": os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", os.defpath)])}
    # Short paths: Ray's Unix sockets live under --temp-dir, and socket paths are limited to 107 bytes.
    ray_dirs = [tempfile.mkdtemp(prefix="fp-ray-") for _ in range(2)]
    created: list[str] = []
    started: list[subprocess.Popen[bytes]] = []

    def start(
        namespace: str, command: list[str], log: Path, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *command],
                env=env | (extra_env or {}),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=home,
                start_new_session=True,
            )
        started.append(process)
        return process

    try:
        make_hosts(head, worker, created)
        head_log, worker_log, link_log = logs / "ray-head.log", logs / "ray-worker.log", logs / "superlink.log"
        head_node = start(head, [*recipe.head, "--block", f"--temp-dir={ray_dirs[0]}"], head_log)
        wait_reachable(head, recipe.ray_address, head_node, head_log, timeout=60)
        start(worker, [*recipe.worker, "--block", f"--temp-dir={ray_dirs[1]}"], worker_log)
        nodes = subprocess.run(
            ["ip", "netns", "exec", head, sys.executable, "-c", WAIT_FOR_NODES, recipe.ray_address, "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        node_ips = json.loads(nodes.stdout.strip().splitlines()[-1]) if nodes.returncode == 0 else {}
        assert sorted(node_ips.values()) == [HEAD_IP, WORKER_IP], (
            f"cluster nodes {node_ips}:\n{nodes.stderr[-3000:]}\n{log_tail(head_log)}\n{log_tail(worker_log)}"
        )

        env["FLWR_HOME"] = str(home)
        link = start(head, recipe.superlink, link_log, recipe.superlink_env)
        wait_reachable(head, recipe.superlink_address, link, link_log, timeout=120)
        (home / "config.toml").write_text(recipe.connection)
        done = subprocess.run(
            ["ip", "netns", "exec", head, *recipe.run, "--run-config", f"{RUN_CONFIG} results-dir='{results}'"],
            env=env,
            cwd=APP,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr + log_tail(link_log)
    finally:
        leftovers = set().union(*(stop(process) for process in reversed(started)))
        for name in created:
            ip("netns", "delete", name)
        for directory in ray_dirs:
            shutil.rmtree(directory, ignore_errors=True)
    assert not leftovers, f"processes left running: {sorted(leftovers)}"
    assert not {head, worker} & set(ip("netns", "list").stdout.split())

    calls = rows(results, "clients.jsonl")
    hosts = {node_ips.get(row["ray-node-id"], row["ray-node-id"]) for row in calls}
    assert hosts == {HEAD_IP, WORKER_IP}, f"client calls ran on {hosts}"

    with PrivateSuperLink(tmp_path / "home-single", num_supernodes=CLIENTS, num_cpus_per_client=1) as single:
        local = single.run(APP, f"{RUN_CONFIG} results-dir='{tmp_path / 'single'}'")
    assert local.returncode == 0, local.stdout + local.stderr
    two_hosts, one_host = rows(results, "rounds.jsonl"), rows(tmp_path / "single", "rounds.jsonl")
    assert [row["round"] for row in two_hosts] == [row["round"] for row in one_host] == [0, 1, 2]
    for on_cluster, single_host in zip(two_hosts, one_host):
        for metric in ("global-angular-error", "personalized-angular-error", "train-loss"):
            if metric in single_host:  # round 0 only evaluates
                assert on_cluster[metric] == pytest.approx(single_host[metric], rel=1e-6), metric
