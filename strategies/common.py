"""Pieces every strategy shares: metric averaging that skips identity keys."""

from __future__ import annotations

from flwr.app import MetricRecord, RecordDict

IDENTITY_KEYS = ("partition-id", "num-examples")


def weighted_mean_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of every scalar metric except identity keys; sums the weights."""
    weights = [float(rec.metric_records["metrics"][weight_key]) for rec in records]
    total = sum(weights)
    merged: dict[str, float] = {weight_key: total}
    for key, value in records[0].metric_records["metrics"].items():
        if key in IDENTITY_KEYS or not isinstance(value, (int, float)):
            continue
        merged[key] = sum(w * float(rec.metric_records["metrics"][key]) for w, rec in zip(weights, records)) / max(
            total, 1e-12
        )
    return MetricRecord(merged)
