"""How the suite shares two pytest-xdist workers (``-n 2`` in pyproject.toml).

The tests that start processes of their own (a SuperLink, Ray clusters, two network namespaces) form
one lane: one worker runs them one after another, so two Ray instances never compete, and because they
mostly wait on process start-up the other worker runs the in-process tests meanwhile. Every other test
is its own unit of work. (xdist's ``--dist loadgroup`` would express this with a marker, but with
pytest 9 its marker has no effect; this scheduler groups by test id instead.)
"""

import pytest
import torch
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

# Test ids (or their prefixes) that start SuperLink or Ray processes.
PROCESS_LANE = (
    "tests/test_flower_run.py::",
    "tests/test_ray_cluster.py::",
    "tests/test_local_superlink.py::",
    "tests/test_multi_host.py::",
    "tests/test_secagg.py::test_secure_fedavg_under_flwr_run",
)


def lane_scope(nodeid: str) -> str:
    """The unit of work of test ``nodeid``: ``"process-lane"`` for the lane, else the test itself."""
    return "process-lane" if nodeid.startswith(PROCESS_LANE) else nodeid


class ProcessLaneScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with :func:`lane_scope` as the scope. Scopes go out largest first, so
    the lane starts at once."""

    def _split_scope(self, nodeid: str) -> str:
        return lane_scope(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> ProcessLaneScheduling:
    """Schedule with :class:`ProcessLaneScheduling`."""
    return ProcessLaneScheduling(config, log)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread from the first test (or module fixture) of a module that asks for it to the
    module's end: tiny models on a shared 2-core machine run several times faster so, and the matrix
    workers train on one thread too. A module's ``pytestmark = pytest.mark.usefixtures("one_thread")``
    sets it before its module-scoped fixtures run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
