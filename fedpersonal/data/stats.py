"""Per-client statistics of a partitioned dataset: sizes, label histograms, and a plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from fedpersonal.data.partition import Partition
from fedpersonal.figures import save_figure

MAX_LISTED_CLASSES = 12


@dataclass(frozen=True)
class ClientStats:
    """Sizes and class counts (train + test) of one client."""

    client: int
    train: int
    test: int
    counts: NDArray[np.int64] | None  # per class, None without class labels
    users: tuple[str, ...]  # natural users the client holds


def client_stats(data: Any, partition: Partition) -> list[ClientStats]:
    """One :class:`ClientStats` per client of ``partition``."""
    labels = getattr(data, "labels", None)
    groups = getattr(data, "groups", None)
    names = getattr(data, "group_names", ())
    num_classes = len(getattr(data, "class_names", ()))
    rows = []
    for client, (train, test) in enumerate(zip(partition.train, partition.test)):
        indices = np.concatenate([train, test])
        counts = np.bincount(np.asarray(labels)[indices], minlength=num_classes) if labels is not None else None
        users = tuple(names[g] for g in np.unique(np.asarray(groups)[indices])) if groups is not None else ()
        rows.append(ClientStats(client, len(train), len(test), counts, users))
    return rows


def histogram_text(counts: NDArray[np.int64] | None, class_names: tuple[str, ...]) -> str:
    """``name:count`` of the classes present (the largest ones first when there are many)."""
    if counts is None:
        return "(no class labels)"
    present = [int(c) for c in np.flatnonzero(counts)]
    if len(present) > MAX_LISTED_CLASSES:
        present = sorted(present, key=lambda c: -counts[c])[:MAX_LISTED_CLASSES]
        more = f" (+{np.count_nonzero(counts) - MAX_LISTED_CLASSES} classes)"
    else:
        more = ""
    return " ".join(f"{class_names[c]}:{counts[c]}" for c in present) + more


def stats_table(data: Any, rows: list[ClientStats]) -> str:
    """The per-client table as text."""
    class_names = tuple(getattr(data, "class_names", ()))
    lines = [f"{'client':>6} {'train':>7} {'test':>6} {'total':>7}  {'users':<16} label histogram (train+test)"]
    for row in rows:
        users = ",".join(row.users) if len(row.users) <= 2 else f"{row.users[0]}..+{len(row.users) - 1}"
        lines.append(
            f"{row.client:>6} {row.train:>7} {row.test:>6} {row.train + row.test:>7}  {users or '-':<16} "
            f"{histogram_text(row.counts, class_names)}"
        )
    return "\n".join(lines)


def save_plot(rows: list[ClientStats], class_names: tuple[str, ...], path: Path, title: str) -> Path:
    """Bars per client: stacked by class when there are labels, train/test otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = np.arange(len(rows))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.35 * len(rows) + 2), 4.0))
    bottom = np.zeros(len(rows))
    if rows and rows[0].counts is not None:
        # client_stats gives counts to every row or to none
        counts = np.stack([cast(NDArray[np.int64], row.counts) for row in rows])
        colors = plt.get_cmap("tab20" if counts.shape[1] <= 20 else "viridis")(np.linspace(0, 1, counts.shape[1]))
        for label in range(counts.shape[1]):
            axis.bar(clients, counts[:, label], bottom=bottom, color=colors[label], label=class_names[label])
            bottom += counts[:, label]
        if counts.shape[1] <= 20:
            axis.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    else:
        for name, values in (("train", [r.train for r in rows]), ("test", [r.test for r in rows])):
            axis.bar(clients, values, bottom=bottom, label=name)
            bottom += np.asarray(values)
        axis.legend(fontsize=8)
    axis.set_xlabel("client")
    axis.set_ylabel("samples")
    axis.set_title(title, fontsize=9)
    return save_figure(figure, path, dpi=120)
