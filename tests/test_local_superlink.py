"""The private SuperLink's start-up: a port taken after it was picked, and a SuperLink that fails."""

import socket

import pytest

from simulations import local_superlink
from simulations.local_superlink import PortTaken, PrivateSuperLink


@pytest.fixture
def taken_port():
    """A port another process listens on: what a port picked as free looks like once someone took it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def first_picks(monkeypatch, ports: list[int]) -> None:
    """``free_port`` returns ``ports`` first, then really free ports."""
    really_free = local_superlink.free_port
    monkeypatch.setattr(local_superlink, "free_port", lambda: ports.pop(0) if ports else really_free())


def test_a_port_taken_before_the_superlink_binds_it_starts_it_again_on_a_new_port(tmp_path, monkeypatch, taken_port):
    first_picks(monkeypatch, [taken_port])
    link = PrivateSuperLink(tmp_path, num_supernodes=1)
    assert link.port == taken_port
    with link:
        assert link.port != taken_port
        assert f"127.0.0.1:{link.port}" in (tmp_path / "config.toml").read_text()
        assert local_superlink._healthy(link.port)  # the SuperLink answers there, not just some listener
    assert link.process is not None and link.process.poll() is not None


def test_a_port_taken_at_every_attempt_fails_naming_the_log(tmp_path, monkeypatch, taken_port):
    monkeypatch.setattr(local_superlink, "START_ATTEMPTS", 2)
    first_picks(monkeypatch, [taken_port] * 2)  # the first pick and the one retry
    with pytest.raises(PortTaken, match="already in use") as failure:
        PrivateSuperLink(tmp_path, num_supernodes=1).start()
    assert str(tmp_path / "superlink.log") in str(failure.value)


def test_a_superlink_that_fails_for_another_reason_raises_with_its_log_tail_and_no_retry(tmp_path, monkeypatch):
    (tmp_path / "state.db").mkdir()  # the database path is a folder
    starts = []
    start_once = PrivateSuperLink._start_once
    monkeypatch.setattr(PrivateSuperLink, "_start_once", lambda self: starts.append(1) or start_once(self))
    with pytest.raises(RuntimeError, match="exited with code") as failure:
        PrivateSuperLink(tmp_path, num_supernodes=1).start()
    assert not isinstance(failure.value, PortTaken)
    assert "unable to open database file" in str(failure.value)  # from the log
    assert len(starts) == 1
