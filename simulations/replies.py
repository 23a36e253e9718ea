"""Server-side checks of client replies before aggregation, the same for every strategy.

One broken or malicious client must not poison or crash a round. Every reply that is not an error
is checked against the message the server sent to that node:

* metrics: a MetricRecord ``metrics`` whose values are finite, with ``0 < num-examples <=
  max_examples`` (the most samples a client of the task could hold);
* train replies: exactly one ArrayRecord, ``arrays``, whose keys are a subset of the keys the server
  sent in ``arrays`` (a client may keep personal keys), each with the sent shape and dtype, and
  finite values;
* consistency: every accepted reply of a round has the same array keys and metric keys (those of the
  largest group of replies; ties go to the group of the lowest node id), as Flower's aggregation needs;
* the strategy's own contract: a strategy with a ``check_reply(sent, reply) -> str | None`` method
  may reject more train replies.

A rejected reply is dropped with its reason; the round aggregates the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Message

NUM_EXAMPLES = "num-examples"
CustomCheck = Callable[[Message, Message], "str | None"]


def _finite(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _metrics_problem(reply: Message, max_examples: float) -> str | None:
    records = reply.content.metric_records
    if "metrics" not in records:
        return f"no MetricRecord 'metrics' (has {sorted(records)})"
    metrics = records["metrics"]
    bad = sorted(key for key, value in metrics.items() if not _finite(value))
    if bad:
        return f"metric(s) {bad} are not finite numbers"
    if NUM_EXAMPLES not in metrics:
        return f"no '{NUM_EXAMPLES}' metric"
    count = metrics[NUM_EXAMPLES]
    if isinstance(count, list) or not 0 < count <= max_examples:
        return f"'{NUM_EXAMPLES}' = {count!r} is outside (0, {max_examples:g}]"
    return None


def _arrays_problem(sent: Message, reply: Message) -> str | None:
    if "arrays" not in sent.content.array_records:
        return None
    records = reply.content.array_records
    if list(records) != ["arrays"]:
        return f"array records {sorted(records)}; expected exactly ['arrays']"
    expected = sent.content.array_records["arrays"]
    got = records["arrays"]
    extra = sorted(set(got) - set(expected))
    if extra:
        return f"array key(s) {extra[:5]} the server did not send"
    for key in got:
        theirs, ours = got[key], expected[key]
        if tuple(theirs.shape) != tuple(ours.shape) or theirs.dtype != ours.dtype:
            return (
                f"array '{key}' has shape {tuple(theirs.shape)} ({theirs.dtype}); "
                f"sent {tuple(ours.shape)} ({ours.dtype})"
            )
        values = theirs.numpy()
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            return f"array '{key}' holds NaN or infinite values"
    return None


def _keys(reply: Message) -> tuple[tuple[str, ...], tuple[str, ...]]:
    arrays = reply.content.array_records.get("arrays")
    return tuple(sorted(arrays or ())), tuple(sorted(reply.content.metric_records["metrics"]))


def check_replies(
    sent: Iterable[Message],
    replies: Iterable[Message],
    max_examples: float,
    train: bool,
    custom: CustomCheck | None = None,
) -> tuple[list[Message], dict[int, str]]:
    """The replies that pass every check, and the reason each rejected one failed, by node id
    (error replies are neither: the loop counts them as failures). ``train``: train replies, whose
    arrays are checked too (evaluate replies carry metrics only)."""
    by_node = {message.metadata.dst_node_id: message for message in sent}
    passed: list[Message] = []
    rejected: dict[int, str] = {}
    for reply in replies:
        if reply.has_error():
            continue
        node = reply.metadata.src_node_id
        request = by_node.get(node)
        problem = (
            "a reply to no message sent this round"
            if request is None
            else _metrics_problem(reply, max_examples)
            or (_arrays_problem(request, reply) if train else None)
            or (custom(request, reply) if custom else None)
        )
        if problem:
            rejected[node] = problem
        else:
            passed.append(reply)
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Message]] = {}
    for reply in sorted(passed, key=lambda message: message.metadata.src_node_id):
        groups.setdefault(_keys(reply), []).append(reply)
    if len(groups) <= 1:
        return passed, rejected
    keys, accepted = max(groups.items(), key=lambda item: len(item[1]))  # the first largest group
    for other, members in groups.items():
        if other != keys:
            for reply in members:
                rejected[reply.metadata.src_node_id] = (
                    f"array keys {_difference(other[0], keys[0])} / metric keys {_difference(other[1], keys[1])} "
                    "differ from the round's other replies"
                )
    return [reply for reply in passed if _keys(reply) == keys], rejected


def _difference(got: tuple[str, ...], expected: tuple[str, ...]) -> str:
    extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
    return f"+{extra[:5]} -{missing[:5]}" if extra or missing else "same"
