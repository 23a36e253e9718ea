"""Pieces every strategy shares: sampling settings from the run config, metric averaging."""

from __future__ import annotations

from typing import Any

from flwr.app import MetricRecord, RecordDict

from fedpersonal.config import RunConfig

IDENTITY_KEYS = ("partition-id", "num-examples")


def sampling_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """FedAvg-family sampling arguments: fractions, and wait for every client to connect."""
    return {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1,
        "min_available_nodes": cfg.num_clients,
        "train_metrics_aggr_fn": weighted_mean_metrics,
        "evaluate_metrics_aggr_fn": weighted_mean_metrics,
    }


def weighted_mean_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of every scalar metric except identity keys; sums the weights."""
    weights = [float(rec.metric_records["metrics"][weight_key]) for rec in records]
    total = sum(weights)
    merged: dict[str, float] = {weight_key: total}
    for key, value in records[0].metric_records["metrics"].items():
        if key in IDENTITY_KEYS or not isinstance(value, (int, float)):
            continue
        merged[key] = sum(
            w * float(rec.metric_records["metrics"][key]) for w, rec in zip(weights, records)
        ) / max(total, 1e-12)
    return MetricRecord(merged)
