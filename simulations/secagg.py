"""Secure aggregation of the train step with Flower's SecAgg+ (run-config section ``secagg``).

Flower 1.42's SecAgg+ is legacy-API only: the server runs ``SecAggPlusWorkflow`` on a
``LegacyContext`` (a legacy strategy's ``configure_fit`` / ``aggregate_fit``), and the client's
``secaggplus_mod`` expects the legacy ``fitins.*`` / ``fitres.*`` layout. This module runs Flower's
protocol unchanged and adapts both ends to our Message-API strategies and ClientApp:

* **server** (:class:`SecAggPlusGrid`): the round loop's grid. Evaluate messages pass through. The
  train messages the strategy builds are handed, through a legacy strategy (:class:`_Bridge`), to
  Flower's ``SecAggPlusWorkflow``, which runs its four stages (setup, share keys, collect masked
  vectors, unmask) over the real grid. The server receives masked integer vectors only, and learns
  the weighted mean of the clients' updates ``reply - sent``. The grid then answers each train
  message whose masked vector entered the sum with ``arrays = sent + mean update`` and the client's
  own (plain) metrics. The strategy's weighted mean of identical arrays is those arrays, so FedAvg,
  FedProx, the FedOpt family (whose optimizer steps on that mean) and Flower's client-side DP
  wrappers (which add noise to it) aggregate exactly what SecAgg+ released, unchanged; this is what
  Flower's own workflow does (every ``FitRes`` handed to ``aggregate_fit`` carries the aggregate).
* **checks**: before the workflow sums the masked vectors, each reply is checked (metrics as in
  :mod:`simulations.replies`, the masked arrays named, sent, shaped as sent, the same for every
  reply, the weight within ``max-weight``); a failing reply is turned into an error reply, which
  SecAgg+ treats as a dropped client: its vector stays out of the sum, its pairwise masks are
  removed with the shares of its neighbours, and its own update stays masked.
* **client** (:func:`secure_aggregation_mod`, a ClientApp mod): a SecAgg+ train message goes through
  Flower's ``secaggplus_mod``; in the stage that trains, an adapter gives the app our layout
  (``arrays`` and ``config``) and turns its reply into the legacy ``fitres.*`` layout with the update
  ``reply - sent`` (float64) as the parameters and the weight as ``num_examples``. Our ``metrics``
  record travels next to it in the clear, as Flower's ``fitres.metrics`` would. A 0-d array (BatchNorm's
  ``num_batches_tracked``) travels as a 1-element array: Flower 1.42's unmask stage dequantizes a 0-d
  array into a numpy scalar, which its in-place offset and rescaling then miss.

The application never sees SecAgg+'s state record in ``context.state`` (keys, shares), so personal
state saved to disk never holds it, and it is dropped after the last stage. Flower's workflow
shuffles the clients with Python's ``random`` and quantizes with numpy's global generator; both
draw from fresh entropy here, and the run's seeded generators (client sampling, DP noise, training)
are left exactly as they were.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    bytes_to_ndarray,
    ndarray_to_bytes,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedpersonal.config import RunConfig
from fedpersonal.privacy.secagg import SecAggSettings, effective_max_weight, uniform_weights
from simulations.replies import NUM_EXAMPLES, check_replies

KEYS = "secagg-keys"  # fitins config: JSON list of the names of fitins.parameters, in order
WEIGHT = "secagg-weight"  # fitins config: the reply metric that weights the update ('': every client 1)
REPLY = "secagg"  # reply ConfigRecord: {"keys": JSON list of the names of the masked arrays, in order}
CLIPPED = "secagg-clipped"  # reply metric: entries of the weighted update beyond +-clipping-range
REJECTED = 100  # error code of a masked-vector reply the server's checks refused


# --------------------------------------------------------------------------------------------- client


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: a SecAgg+ train message goes through Flower's ``secaggplus_mod`` with the app
    behind :func:`_legacy_adapter`; any other message goes straight to the app. The app never sees
    SecAgg+'s state record, which is dropped once the last stage (or a failed one) is over."""
    app = _without_secagg_state(call_next)
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return app(msg, ctxt)
    stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE)
    fresh = _FreshNumpy()
    done = True
    try:
        reply = secaggplus_mod(msg, ctxt, fresh.after(_legacy_adapter(app)))
        done = stage == Stage.UNMASK
        return reply
    finally:
        fresh.restore()
        if done and RECORD_KEY_STATE in ctxt.state:
            del ctxt.state[RECORD_KEY_STATE]


def _without_secagg_state(call_next: ClientAppCallable) -> ClientAppCallable:
    """``call_next`` with SecAgg+'s state record out of ``context.state`` during the call."""

    def call(msg: Message, ctxt: Context) -> Message:
        saved = ctxt.state.get(RECORD_KEY_STATE)
        if saved is not None:
            del ctxt.state[RECORD_KEY_STATE]
        try:
            return call_next(msg, ctxt)
        finally:
            if saved is not None:
                ctxt.state[RECORD_KEY_STATE] = saved

    return call


class _FreshNumpy:
    """After the app has trained, numpy's global generator (which Flower's stochastic rounding
    draws from) is reseeded from fresh entropy; :meth:`restore` puts the app's state back."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] | None = None

    def after(self, call: ClientAppCallable) -> ClientAppCallable:
        def wrapped(msg: Message, ctxt: Context) -> Message:
            reply = call(msg, ctxt)
            self.saved = np.random.get_state(legacy=False)
            np.random.seed(np.frombuffer(os.urandom(16), dtype=np.uint32))
            return reply

        return wrapped

    def restore(self) -> None:
        if self.saved is not None:
            np.random.set_state(self.saved)


def _legacy_adapter(app: ClientAppCallable) -> ClientAppCallable:
    """The app as ``secaggplus_mod``'s legacy client: ``fitins.*`` in, ``fitres.*`` out."""

    def call(msg: Message, ctxt: Context) -> Message:
        config = msg.content.config_records["fitins.config"]
        parameters = msg.content.array_records["fitins.parameters"]
        keys = json.loads(str(config[KEYS]))
        sent = ArrayRecord({key: Array(parameters[str(index)].numpy()) for index, key in enumerate(keys)})
        weight_key = str(config[WEIGHT])
        ours = ConfigRecord({key: value for key, value in config.items() if key not in (KEYS, WEIGHT)})
        msg.content = RecordDict({"arrays": sent, "config": ours})
        reply = app(msg, ctxt)
        if reply.has_error():
            raise RuntimeError(f"the client failed before secure aggregation: {reply.error.reason}")
        reply.content = _legacy_reply(reply.content, sent, weight_key, ctxt)
        return reply

    return call


def _legacy_reply(content: RecordDict, sent: ArrayRecord, weight_key: str, ctxt: Context) -> RecordDict:
    """The app's reply in the layout ``secaggplus_mod`` reads: the update ``reply - sent`` of every
    array the app sends back (float64) as ``fitres.parameters``, the weight as ``num_examples``; the
    ``arrays`` record itself never leaves the device."""
    arrays = content.array_records["arrays"]
    metrics = content.metric_records["metrics"]
    keys = list(arrays.keys())
    # 0-d arrays (BatchNorm's num_batches_tracked) travel as 1-element arrays: Flower's unmask stage
    # dequantizes a 0-d array into a numpy scalar and its in-place offset and scaling then miss it.
    update = [
        np.atleast_1d(arrays[key].numpy().astype(np.float64) - sent[key].numpy().astype(np.float64)) for key in keys
    ]
    weight = float(cast(float, metrics[weight_key])) if weight_key else 1.0
    protocol = ctxt.state.config_records[RECORD_KEY_STATE]
    scale = weight / float(cast(float, protocol["max_weight"]))
    limit = float(cast(float, protocol["clipping_range"]))
    metrics[CLIPPED] = sum(int(np.count_nonzero(np.abs(values) * scale > limit)) for values in update)
    legacy = RecordDict({name: record for name, record in content.items() if name != "arrays"})
    parameters = Parameters(tensors=[ndarray_to_bytes(values) for values in update], tensor_type="numpy.ndarray")
    legacy["fitres.parameters"] = compat.parameters_to_arrayrecord(parameters, keep_input=False)
    legacy["fitres.num_examples"] = MetricRecord({"num_examples": weight})
    legacy["fitres.metrics"] = ConfigRecord()
    legacy["fitres.status"] = ConfigRecord({"code": 0, "message": "Success"})
    legacy[REPLY] = ConfigRecord({"keys": json.dumps(keys)})
    return legacy


# --------------------------------------------------------------------------------------------- server


class _Bridge(LegacyStrategy):
    """The legacy strategy Flower's workflow drives: ``configure_fit`` hands out the round's train
    messages as FitIns; ``aggregate_fit`` receives the securely aggregated mean update."""

    def __init__(self, messages: dict[int, Message], weight_key: str, grid: Grid) -> None:
        self.messages = messages
        self.weight_key = weight_key
        self.proxies = {node: GridClientProxy(node, grid, 0) for node in messages}
        self.aggregate: NDArrays | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return [(self.proxies[node], self._fitins(message)) for node, message in self.messages.items()]

    def _fitins(self, message: Message) -> FitIns:
        arrays = message.content.array_records["arrays"]
        keys = list(arrays.keys())
        tensors = [ndarray_to_bytes(arrays[key].numpy()) for key in keys]
        config: dict[str, Scalar] = {
            **cast(dict[str, Scalar], dict(message.content.config_records["config"])),
            KEYS: json.dumps(keys),
            WEIGHT: self.weight_key,
        }
        return FitIns(Parameters(tensors=tensors, tensor_type="numpy.ndarray"), config)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if results:  # every FitRes carries the same aggregate (Flower's workflow puts it there)
            self.aggregate = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return None


class _Workflow(SecAggPlusWorkflow):
    """Flower's workflow; its shuffle of the clients draws from fresh entropy, not the run's seeded
    ``random`` module (which Flower's client sampling uses)."""

    def setup_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        with _fresh_random():
            return super().setup_stage(grid, context, state)


@contextmanager
def _fresh_random() -> Iterator[None]:
    saved = random.getstate()
    random.seed(os.urandom(32))
    try:
        yield
    finally:
        random.setstate(saved)


class _DelegatingGrid(Grid):
    """A Grid that forwards everything to ``grid``."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=timeout)


Check = Callable[[list[Message], list[Message]], list[Message]]


class _StageGrid(_DelegatingGrid):
    """The grid the workflow talks to: records each stage's replies, and runs ``check`` on the
    masked vectors before the workflow sums them."""

    def __init__(self, grid: Grid, check: Check) -> None:
        super().__init__(grid)
        self.check = check
        self.stages: list[tuple[str, list[Message]]] = []  # (stage, replies) in order

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        sent = list(messages)
        stage = str(sent[0].content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]) if sent else ""
        replies = list(self.grid.send_and_receive(sent, timeout=timeout))
        if stage == Stage.COLLECT_MASKED_VECTORS:
            replies = self.check(sent, replies)
        self.stages.append((stage, replies))
        return replies


class SecAggPlusGrid(_DelegatingGrid):
    """The round loop's grid under secure aggregation: train messages go through Flower's SecAgg+
    (see the module docstring); everything else is forwarded to ``grid``.

    ``weight_key``: the reply metric that weights each update ('': uniform weights);
    ``max_weight``: the largest weight (Flower's ``max_weight``); ``max_examples``: the most samples a
    client can hold (the bound of :mod:`simulations.replies`).
    """

    def __init__(
        self, grid: Grid, settings: SecAggSettings, weight_key: str, max_weight: float, max_examples: float
    ) -> None:
        super().__init__(grid)
        self.settings = settings
        self.weight_key = weight_key
        self.max_weight = max_weight
        self.max_examples = max_examples
        self.last_stages: list[tuple[str, list[Message]]] = []  # the last round's replies, by stage

    @classmethod
    def for_run(cls, grid: Grid, cfg: RunConfig, max_examples: float) -> Grid:
        """``grid`` itself when section ``secagg`` is off, else the SecAgg+ grid of run ``cfg``."""
        settings = cfg.section(SecAggSettings)
        if not settings.enabled:
            return grid
        weight_key = "" if uniform_weights(cfg) else NUM_EXAMPLES
        return cls(grid, settings, weight_key, effective_max_weight(cfg, max_examples), max_examples)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        sent = list(messages)
        kinds = {message.metadata.message_type for message in sent}
        if MessageType.TRAIN not in kinds:
            return self.grid.send_and_receive(sent, timeout=timeout)
        if kinds != {MessageType.TRAIN}:
            raise ValueError(f"secure aggregation: train messages mixed with {sorted(kinds - {MessageType.TRAIN})}")
        return self._secure_round(sent, timeout)

    def _secure_round(self, messages: list[Message], timeout: float | None) -> list[Message]:
        by_node = {message.metadata.dst_node_id: message for message in messages}
        sent = _common_arrays(messages)
        config = messages[0].content.config_records.get("config", ConfigRecord())
        bridge = _Bridge(by_node, self.weight_key, self.grid)
        manager = SimpleClientManager()
        for proxy in bridge.proxies.values():
            manager.register(proxy)
        context = LegacyContext(
            Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
            strategy=bridge,
            client_manager=manager,
        )
        current_round = int(cast(int, config.get("server-round", 0)))
        context.state[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: current_round})
        context.state[MAIN_PARAMS_RECORD] = ArrayRecord()  # the bridge builds each FitIns from its message
        s = self.settings
        stages = _StageGrid(self.grid, lambda stage_sent, replies: self._checked(by_node, stage_sent, replies))
        workflow = _Workflow(
            s.shares,
            s.threshold,
            max_weight=self.max_weight,
            clipping_range=s.clipping_range,
            quantization_range=s.quantization_range,
            modulus_range=s.modulus_range,
            timeout=s.timeout or timeout,
        )
        workflow(stages, context)
        self.last_stages = stages.stages
        return _answers(by_node, sent, stages.stages, bridge.aggregate)

    def _checked(self, train: dict[int, Message], sent: list[Message], replies: list[Message]) -> list[Message]:
        """``replies`` (masked vectors) with those that fail the checks replaced by error replies."""
        problems: dict[int, str] = {}
        plain = [reply for reply in replies if not reply.has_error()]
        passed, rejected = check_replies(list(train.values()), plain, self.max_examples, train=False)
        problems.update(rejected)
        named: dict[int, tuple[str, ...]] = {}
        for reply in passed:
            node = reply.metadata.src_node_id
            problem, keys = self._masked_problem(train[node], reply)
            if problem:
                problems[node] = problem
            else:
                named[node] = keys
        groups: dict[tuple[str, ...], list[int]] = {}
        for node in sorted(named):
            groups.setdefault(named[node], []).append(node)
        if len(groups) > 1:
            keys, _ = max(groups.items(), key=lambda item: len(item[1]))
            for node, other in named.items():
                if other != keys:
                    problems[node] = f"masked arrays {list(other)[:5]} differ from the round's other replies"
        by_node = {message.metadata.dst_node_id: message for message in sent}
        checked = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if not reply.has_error() and node in problems:
                reply = Message(Error(REJECTED, f"rejected: {problems[node]}"), reply_to=by_node[node])
            checked.append(reply)
        return checked

    def _masked_problem(self, train: Message, reply: Message) -> tuple[str | None, tuple[str, ...]]:
        record = reply.content.config_records.get(REPLY)
        if "arrays" in reply.content.array_records:
            return "the reply holds plain arrays", ()
        try:
            keys = tuple(json.loads(str(record["keys"]))) if record is not None else ()
        except (json.JSONDecodeError, TypeError):
            keys = ()
        sent = train.content.array_records["arrays"]
        if not keys or len(set(keys)) != len(keys) or not set(keys) <= set(sent):
            return f"the masked arrays are not named, or name arrays the server did not send: {list(keys)[:5]}", ()
        masked = reply.content.config_records[RECORD_KEY_CONFIGS].get(Key.MASKED_PARAMETERS)
        if not isinstance(masked, list) or len(masked) != len(keys) + 1:
            return f"expected {len(keys) + 1} masked arrays (the weight and {len(keys)} named arrays)", ()
        shapes = [tuple(bytes_to_ndarray(cast(bytes, data)).shape) for data in masked]
        expected = [(1,), *(tuple(sent[key].shape) or (1,) for key in keys)]
        if shapes != expected:
            return f"masked arrays of shapes {shapes[:5]}; expected {expected[:5]}", ()
        weight = reply.content.metric_records.get("fitres.num_examples", MetricRecord()).get("num_examples")
        claimed = reply.content.metric_records["metrics"].get(self.weight_key, 1.0) if self.weight_key else 1.0
        if not isinstance(weight, (int, float)) or weight != claimed or not 0 < weight <= self.max_weight:
            return f"weight {weight!r} (metric {claimed!r}) is outside (0, secagg max-weight {self.max_weight:g}]", ()
        return None, keys


def _common_arrays(messages: list[Message]) -> ArrayRecord:
    """The arrays every train message carries (SecAgg+ adds the mean update to them)."""
    first = messages[0].content
    extra = sorted(set(first.keys()) - {"arrays", "config"})
    if extra:
        raise ValueError(f"secure aggregation carries a train message's 'arrays' and 'config' only, not {extra}")
    arrays = first.array_records["arrays"]
    for message in messages[1:]:
        other = message.content.array_records.get("arrays")
        if other is None or list(other) != list(arrays) or any(other[k].data != arrays[k].data for k in arrays):
            raise ValueError("secure aggregation needs every train message of a round to carry the same arrays")
    return arrays


def _answers(
    train: dict[int, Message], sent: ArrayRecord, stages: list[tuple[str, list[Message]]], aggregate: NDArrays | None
) -> list[Message]:
    """One reply per train message: ``sent + mean update`` with the client's metrics for every
    client whose masked vector entered the sum, the first error of a client that failed, an error
    for every client of a round that halted, nothing for a client that never answered a stage."""
    errors: dict[int, str] = {}
    answered: dict[int, int] = {}
    for stage, replies in stages:
        for reply in replies:
            node = reply.metadata.src_node_id
            answered[node] = answered.get(node, 0) + 1
            if reply.has_error():
                errors.setdefault(node, f"SecAgg+ stage '{stage}': {reply.error.reason}")
    collected = next((replies for stage, replies in stages if stage == Stage.COLLECT_MASKED_VECTORS), [])
    contributed = {reply.metadata.src_node_id: reply for reply in collected if not reply.has_error()}
    arrays = None
    if aggregate is not None and contributed:
        keys = json.loads(str(next(iter(contributed.values())).content.config_records[REPLY]["keys"]))
        arrays = _updated(sent, keys, aggregate)
    last = stages[-1][0] if stages else Stage.SETUP
    answers = []
    for node, message in train.items():
        if arrays is not None and node in contributed:  # its update is in the sum, whatever came after
            answers.append(Message(_content(contributed[node], arrays), reply_to=message))
        elif node in errors:
            answers.append(Message(Error(REJECTED, errors[node]), reply_to=message))
        elif answered.get(node, 0) == len(stages) and stages:
            reason = f"SecAgg+ halted after stage '{last}': too few clients left for the reconstruction threshold"
            answers.append(Message(Error(REJECTED, reason), reply_to=message))
    return answers


def _updated(sent: ArrayRecord, keys: list[str], mean_update: NDArrays) -> ArrayRecord:
    """``sent + mean update`` for each named array, in its sent dtype (integers rounded)."""
    arrays = {}
    for key, update in zip(keys, mean_update, strict=True):
        base = sent[key].numpy()
        value = base.astype(np.float64) + update.reshape(base.shape)
        if not np.issubdtype(base.dtype, np.floating):
            value = np.round(value)
        arrays[key] = Array(np.asarray(value.astype(base.dtype)))
    return ArrayRecord(arrays)


def _content(reply: Message, arrays: ArrayRecord) -> RecordDict:
    """The content the strategy aggregates for one contributing client."""
    metrics = MetricRecord(dict(reply.content.metric_records["metrics"]))
    content = RecordDict({"arrays": ArrayRecord(dict(arrays)), "metrics": metrics})
    info = reply.content.config_records.get("info")
    if info is not None:
        content["info"] = ConfigRecord(dict(info))
    return content
