"""Run the real ServerApp logic and ClientApp in one process, without Ray or a SuperLink.

:class:`InProcessGrid` is a Flower ``Grid`` that delivers each message to the ClientApp directly,
with one persistent ``Context`` per node (so ``context.state`` carries personal state across
rounds, as in a simulation). Message contents are deep-copied on the way in, as serialisation
would. Benchmarks use it to compare many configurations quickly; tests use it to capture the
exact messages a strategy exchanges. ``flwr run`` remains the way users run scenarios.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedpersonal.results import RunDirectory

SERVER_NODE_ID = 1
CLIENT_ERROR_CODE = 1


def error_reply(error: Exception, message: Message) -> Message:
    """The reply of a client whose call raised ``error``, as Flower makes it."""
    return Message(Error(CLIENT_ERROR_CODE, f"{type(error).__name__}: {error}"), reply_to=message)


@contextmanager
def acting_as(node_id: int) -> Iterator[None]:
    """Flower's task identity is node ``node_id`` inside the block, the server's again after it."""
    TaskIdentity.node_id = node_id
    try:
        yield
    finally:
        TaskIdentity.node_id = SERVER_NODE_ID


class InProcessGrid(Grid):
    """A Grid whose ``num_nodes`` nodes run ``client_app`` in this process, one after another.

    With ``record`` it keeps every delivered message and reply (``sent``, ``replies``) for
    inspection; a model-sized copy per message, so only tests ask for it.
    """

    def __init__(
        self,
        client_app: ClientApp,
        run_config: Mapping[str, Any],
        num_nodes: int,
        run_id: int = 1,
        record: bool = False,
    ) -> None:
        self.client_app = client_app
        self.record = record
        self.contexts = {
            100 + index: Context(
                run_id=run_id,
                node_id=100 + index,
                node_config={"partition-id": index, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for index in range(num_nodes)
        }
        self.sent: list[Message] = []  # every message delivered, when recording
        self.replies: list[Message] = []  # every reply, when recording
        self._run: Any = None
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SERVER_NODE_ID, run_id

    def set_run(self, run: Any) -> None:
        """Record the run (unused in-process)."""
        self._run = run

    @property
    def run(self) -> Any:
        """The run set with :meth:`set_run`."""
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        """A message to one node."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The ids of all nodes."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Not used: :meth:`send_and_receive` delivers synchronously."""
        raise NotImplementedError("InProcessGrid delivers through send_and_receive only")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Not used: :meth:`send_and_receive` delivers synchronously."""
        raise NotImplementedError("InProcessGrid delivers through send_and_receive only")

    def delivered(self, message: Message) -> Message:
        """The copy of ``message`` its node receives (ids set, content deep-copied; kept when recording)."""
        message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        message.metadata.__dict__["_src_node_id"] = SERVER_NODE_ID
        delivered = Message(
            copy.deepcopy(message.content),
            message.metadata.dst_node_id,
            message.metadata.message_type,
            group_id=message.metadata.group_id,
        )
        delivered.metadata.__dict__.update({"_message_id": message.metadata.message_id, "_src_node_id": SERVER_NODE_ID})
        if self.record:
            self.sent.append(delivered)
        return delivered

    def _deliver(self, message: Message) -> tuple[Message, float]:
        """The ClientApp's reply to ``message`` and the seconds the call took."""
        delivered = self.delivered(message)
        start = time.perf_counter()
        try:
            with acting_as(message.metadata.dst_node_id):
                reply = self.client_app(delivered, self.contexts[message.metadata.dst_node_id])
        except Exception as error:  # a failing client becomes an error reply, as in Flower
            reply = error_reply(error, delivered)
        seconds = time.perf_counter() - start
        if self.record:
            self.replies.append(reply)
        return reply, seconds

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Deliver every message; return the replies of calls that took at most ``timeout`` seconds
        (a late reply is discarded, as Flower's grid stops waiting for it)."""
        replies = []
        for message in messages:
            reply, seconds = self._deliver(message)
            if timeout is None or seconds <= timeout:
                replies.append(reply)
        return replies


def run_inprocess(
    run_config: Mapping[str, Any],
    on_grid: Callable[[InProcessGrid], None] | None = None,
    record: bool = False,
    vectorized: bool = False,
) -> tuple[RunDirectory, InProcessGrid]:
    """Run one configuration (Flower run-config keys) in this process; returns its run directory
    and the grid (holding every message and reply with ``record``). ``vectorized`` trains each
    round's clients in lockstep (:mod:`simulations.vectorized`; a ConfigError where it does not apply)."""
    from simulations.client_app import app as client_app
    from simulations.server_app import parse_run_config, run
    from simulations.vectorized import VectorizedGrid, check_vectorized

    cfg = parse_run_config(dict(run_config))
    if vectorized:
        check_vectorized(cfg)
    grid_class = VectorizedGrid if vectorized else InProcessGrid
    grid = grid_class(client_app, cfg.to_dict(), cfg.num_clients, record=record)
    if on_grid is not None:
        on_grid(grid)
    return run(grid, cfg), grid
