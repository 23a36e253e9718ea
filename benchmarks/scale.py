"""Peak memory and wall time against the number of clients, up to 100,000.

    python -m benchmarks.scale [--clients 1000 10000 100000]

Each count runs ``flwr run`` on a fresh private SuperLink (1 CPU per client) with FedPer (personal
head state on every client that trained), 3 rounds, 10 clients sampled per round for training and
for evaluation, 50 samples per client. Peak memory is the summed PSS of the SuperLink's whole process
tree (shared pages counted once), sampled twice a second. Writes benchmarks/results/scale.{json,md} and
appends the measurements to the performance record (perf_history.jsonl).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.perf import SAMPLED, append_history, flower_run, record_base
from simulations.reporting import result_payload, write_json_result


def measure(count: int, scratch: Path) -> dict:
    """One count's wall time and peak memory."""
    fraction = min(1.0, SAMPLED / count)
    config = (
        f"strategy='fedper' num-rounds=3 samples-per-client=50 local-epochs=1 fraction-train={fraction} "
        f"fraction-evaluate={fraction} node-wait-s=3600"
    )
    wall, _, peak = flower_run(scratch / f"c{count}", count, config, cpus=1, memory=True)
    return {"clients": count, "sampled_per_round": SAMPLED, "wall_s": wall, "peak_pss_gib": peak / 2**30}


def markdown(rows: list[dict]) -> str:
    """The table, with the growth per additional 10,000 clients between consecutive counts."""
    lines = ["| clients | peak memory (GiB) | wall, 3 rounds (s) | memory per 10,000 more clients (GiB) |",
             "|---|---|---|---|"]  # fmt: skip
    for previous, row in zip([None, *rows], rows, strict=False):
        growth = "-"
        if previous is not None:
            growth = (
                f"{(row['peak_pss_gib'] - previous['peak_pss_gib']) / (row['clients'] - previous['clients']) * 1e4:.3f}"
            )
        lines.append(f"| {row['clients']:,} | {row['peak_pss_gib']:.2f} | {row['wall_s']:.0f} | {growth} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure every count, write the results and extend the performance record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.clients:
            rows.append(measure(count, Path(scratch)))
            print(rows[-1], flush=True)
    payload = result_payload("scale", rows=rows)
    write_json_result("scale", payload, markdown(rows))
    base = record_base(payload, "cpu")
    lines = []
    for row in rows:
        lines.append({**base, "measurement": f"peak memory, {row['clients']} clients", "value": row["peak_pss_gib"],
                      "unit": "GiB"})  # fmt: skip
        lines.append({**base, "measurement": f"wall, {row['clients']} clients (3 rounds)", "value": row["wall_s"],
                      "unit": "s"})  # fmt: skip
    append_history(lines)


if __name__ == "__main__":
    main()
