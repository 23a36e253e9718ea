"""Pieces every strategy shares: metric averaging that skips identity keys."""

from __future__ import annotations

from flwr.app import MetricRecord, MetricRecordValues, RecordDict

IDENTITY_KEYS = ("partition-id", "num-examples")
# Metrics whose largest value over the replies is reported too, as ``<key>-max`` (a worst case: the
# sample-level epsilon of the least private client).
MAX_KEYS = ("dpsgd-epsilon",)


def _metric(record: RecordDict, key: str) -> float:
    """Scalar metric ``key`` of a reply as a float (a list-valued metric raises, as float() does)."""
    return float(record.metric_records["metrics"][key])  # type: ignore[arg-type]  # the value may be a list


def weighted_mean_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of every scalar metric except identity keys (and the largest value of each
    of :data:`MAX_KEYS`, as ``<key>-max``); sums the weights."""
    weights = [_metric(rec, weight_key) for rec in records]
    total = sum(weights)
    merged: dict[str, MetricRecordValues] = {weight_key: total}
    for key, value in records[0].metric_records["metrics"].items():
        if key in IDENTITY_KEYS or not isinstance(value, (int, float)):
            continue
        merged[key] = sum(w * _metric(rec, key) for w, rec in zip(weights, records)) / max(total, 1e-12)
        if key in MAX_KEYS:
            merged[f"{key}-max"] = max(_metric(rec, key) for rec in records)
    return MetricRecord(merged)
