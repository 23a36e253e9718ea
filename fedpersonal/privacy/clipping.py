"""Clipping a client's update to an L2 bound, with Flower's clipping primitive, aligned by key.

An update is ``reply - sent`` over the keys a client sends (a personalized client sends only its
shared keys). Integer arrays (BatchNorm's ``num_batches_tracked``) are counters, not learned
values: under differential privacy a client never releases them; they are sent back unchanged
(an update of zero) and do not count towards the norm.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.supercore.differential_privacy import compute_adaptive_clip_model_update


def is_counter(array: Array) -> bool:
    """Whether an array holds integers (a counter), not learned values."""
    return not np.issubdtype(np.dtype(array.dtype), np.floating)


def counters_unchanged(reply: ArrayRecord, sent: ArrayRecord, as_float: bool = False) -> ArrayRecord:
    """``reply`` with every counter array replaced by the sent one (as float64 if ``as_float``, the
    form Flower's clipping can scale in place)."""
    arrays = {}
    for key, array in reply.items():
        if is_counter(array):
            value = sent[key].numpy()
            array = Array(value.astype(np.float64) if as_float else value)
        arrays[key] = array
    return ArrayRecord(arrays)


def clip_update(sent: ArrayRecord, reply: ArrayRecord, clipping_norm: float) -> tuple[ArrayRecord, bool]:
    """``reply`` whose update from ``sent`` is scaled to an L2 norm of at most ``clipping_norm``
    (counters unchanged), and whether it had to be scaled down."""
    floats = [key for key, array in reply.items() if not is_counter(array)]
    mine = [reply[key].numpy().copy() for key in floats]
    theirs = [sent[key].numpy() for key in floats]
    moved = any(np.any(a != b) for a, b in zip(mine, theirs, strict=True))  # Flower's clip divides by the norm
    clipped = compute_adaptive_clip_model_update(mine, theirs, clipping_norm) if moved else False
    scaled = dict(zip(floats, mine, strict=True))
    unchanged = counters_unchanged(reply, sent)
    return ArrayRecord({key: Array(scaled[key]) if key in scaled else unchanged[key] for key in reply}), clipped


def unclipped_bit(clipped: bool) -> int:
    """The bit a reply reports for adaptive clipping: 1 when its update was *not* clipped.

    Andrew et al. (NeurIPS 2021) adapt ``C <- C exp(-lr (b - q))`` with ``b`` the (noisy) share of
    updates at most ``C``, so ``C`` tracks the ``q``-quantile of the update norms. Flower 1.42's
    wrappers apply that rule to the share of replies whose norm bit is set, and its own clipping sets
    the bit when an update *was* clipped, which drives ``C`` the wrong way (all clipped: ``C``
    shrinks). Reporting the unclipped bit makes the wrapper's rule Andrew et al.'s."""
    return int(not clipped)
