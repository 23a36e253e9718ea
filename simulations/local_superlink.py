"""Start and stop a private Flower SuperLink (simulation mode) and submit runs to it.

Tests, benchmarks and scripts use this instead of Flower's shared ``:local:`` SuperLink: it
lives in its own FLWR_HOME, on a free port, with the offline environment, and is stopped by pid
(the SuperLink takes its SuperExec and simulation children with it).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from fedpersonal.runtime import quiet_environment

CONNECTION = "fedpersonal-private"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Pids of every process below ``pid`` (read from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it is still there after ``grace_s``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


PORT_TAKEN = "already in use"  # how the SuperLink reports a taken port
START_ATTEMPTS = 5


class PortTaken(RuntimeError):
    """A port picked as free was taken by another process before the SuperLink bound it."""


def _log_tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_until_healthy(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Return once the SuperLink on ``port`` answers its health check; raise ``PortTaken`` or a
    ``RuntimeError`` with the log's tail when it exits first, a ``TimeoutError`` when it never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _log_tail(log)
            error = PortTaken if PORT_TAKEN in tail else RuntimeError
            raise error(f"flower-superlink exited with code {process.returncode} during start-up; {log}:\n{tail}")
        if _healthy(port):
            return
        time.sleep(0.2)
    tail = _log_tail(log)
    raise TimeoutError(f"flower-superlink did not answer on port {port} within {timeout:.0f} s; {log}:\n{tail}")


def _healthy(port: int) -> bool:
    """Whether the SuperLink's HTTP API on ``port`` answers its health check. (An open port is not
    enough: it may belong to the process that took it.)"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        return False


class PrivateSuperLink:
    """A SuperLink owned by this process: ``with PrivateSuperLink(home, num_supernodes=3) as link``.

    ``extra_env`` reaches the SuperLink and the simulation it starts, e.g. ``RAY_ADDRESS`` to attach
    the simulation to an existing Ray cluster. Each client reserves ``num_cpus_per_client`` CPUs and
    ``num_gpus_per_client`` GPUs (a fraction shares a GPU: 0.25 runs four clients at once on each).
    """

    def __init__(
        self,
        home: Path,
        num_supernodes: int,
        num_cpus_per_client: int = 2,
        extra_env: dict[str, str] | None = None,
        num_gpus_per_client: float = 0.0,
    ) -> None:
        self.home = Path(home)
        self.extra_env = dict(extra_env or {})
        self.num_supernodes = num_supernodes
        self.num_cpus_per_client = num_cpus_per_client
        self.num_gpus_per_client = num_gpus_per_client
        self.port = free_port()  # the HTTP API: runtime, control and fleet
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for ``flwr`` commands that talk to this SuperLink; this interpreter's scripts
        (``flwr``, ``flower-superlink``) come first on PATH, so an unactivated virtual environment works.

        Without a ``RAY_ADDRESS`` (here or in ``extra_env``) the simulation starts a Ray of its own:
        ``RAY_ADDRESS=local``, because Ray's default joins the cluster last started on this machine
        (``/tmp/ray/ray_current_cluster``), someone else's or one still shutting down."""
        environment = quiet_environment()
        path = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", os.defpath)])
        own_ray = {"RAY_ADDRESS": environment.get("RAY_ADDRESS") or "local"}
        return environment | own_ray | {"PATH": path, "FLWR_HOME": str(self.home)} | self.extra_env

    def _write_connection(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "127.0.0.1:{self.port}"\n'
            "insecure = true\n"
        )

    def start(self) -> PrivateSuperLink:
        """Start the SuperLink and wait until its HTTP API answers (stopping it on failure).

        A port is free when picked but another process can take it before the SuperLink binds it
        (ephemeral ports of outgoing connections, a Ray cluster starting); then it starts again on
        new ports, up to ``START_ATTEMPTS`` times."""
        attempts_left = START_ATTEMPTS
        while True:
            try:
                return self._start_once()
            except PortTaken:
                attempts_left -= 1
                if not attempts_left:
                    raise
                self.port = free_port()

    def _start_once(self) -> PrivateSuperLink:
        self._write_connection()
        log_path = self.home / "superlink.log"
        log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [
                "flower-superlink",
                "--insecure",
                "--simulation",
                "--isolation",
                "subprocess",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                str(self.home / "state.db"),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child holds its own descriptor
        try:
            _wait_until_healthy(self.port, self.process, log_path, timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def federation_config(self) -> str:
        """The ``--federation-config`` of every run: the clients and the resources each reserves."""
        config = f"num-supernodes={self.num_supernodes} client-resources-num-cpus={self.num_cpus_per_client}"
        if self.num_gpus_per_client:
            config += f" client-resources-num-gpus={self.num_gpus_per_client:g}"
        return config

    def run(self, app_dir: Path, run_config: str = "", timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``flwr run APP --stream`` against this SuperLink; returns the finished process."""
        federation = self.federation_config()
        command = ["flwr", "run", str(app_dir), CONNECTION, "--stream", "--federation-config", federation]
        if run_config:
            command += ["--run-config", run_config]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def stop(self) -> None:
        """Terminate the SuperLink and every process it started (a run still in progress
        included), by pid, and wait for them."""
        if self.process is None or self.process.poll() is not None:
            return
        children = descendants(self.process.pid)
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        for pid in children:
            _terminate(pid)

    def __enter__(self) -> PrivateSuperLink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
