#!/usr/bin/env bash
# The GPU check: the default gaze scenario, the perf benchmark and the vectorized clients on a CUDA GPU,
# recorded in benchmarks/results/gpu_check.md (plus perf_cuda.{json,md}, vectorized_cuda.{json,md} and lines
# in perf_history.jsonl).
# Needs an NVIDIA GPU and a CUDA build of torch; exits 1 without them, having measured nothing.
#
#   bash benchmarks/gpu_check.sh
#   CLIENT_GPUS=0.5 ROUNDS=5 PERF_ARGS="--memory-clients 100" PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#
# CLIENT_GPUS (default 0.25): Flower's client-resources-num-gpus, the GPU share each client reserves
# under `flwr run` (0.25: four clients train at once per GPU). ROUNDS (default 10): rounds of every
# run. PERF_ARGS (default "--memory-clients 100"): more options of `python -m benchmarks.perf`.
#
# Time: on one H200 with 16 cores (2026-12-04) the three end-to-end runs took 2.5 min, the vectorized
# clients 1 min and the perf benchmark about 6 min with one memory point (each further point about 40 s
# more): about 9.5 minutes with the defaults. The slowest step, perf, runs last.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    RAY_USAGE_STATS_ENABLED=0

PYTHON="${PYTHON:-python}"
CLIENT_GPUS="${CLIENT_GPUS:-0.25}"
ROUNDS="${ROUNDS:-10}"
PERF_ARGS="${PERF_ARGS:---memory-clients 100}"
REPORT=benchmarks/results/gpu_check.md
SCRATCH="$(mktemp -d -t fedpersonal-gpu-check-XXXXXX)"
trap 'rm -rf "$SCRATCH"' EXIT

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or lists none); nothing measured" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch.cuda.is_available() is False for $PYTHON ($("$PYTHON" -c \
        'import torch; print("torch", torch.__version__, "CUDA build", torch.version.cuda)')); nothing measured" >&2
    exit 1
fi

echo "== GPU"
nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv | tee "$SCRATCH/gpu.csv"
nvidia-smi

# timed NAME COMMAND...: run COMMAND (its output shown and kept in $SCRATCH/NAME.log), its wall seconds
# in $SCRATCH/NAME.seconds. A failing command is named in FAILED and the check goes on, so one broken
# step (a Ray that cannot start, say) does not cost the others' numbers; the check then exits 1.
FAILED=()
timed() {
    local name=$1 start end status=0
    shift
    echo "== $name: $*"
    start=$(date +%s.%N)
    "$@" 2>&1 | tee "$SCRATCH/$name.log" || status=$?
    end=$(date +%s.%N)
    if ((status != 0)); then
        echo "gpu_check: $name failed with exit code $status" >&2
        FAILED+=("$name")
        return 0
    fi
    "$PYTHON" -c "print(f'{$end - $start:.1f}')" >"$SCRATCH/$name.seconds"
}

# The default scenario (15 clients, FedAvg) end to end, through the matrix runner (one cell each).
SET=("num-rounds=$ROUNDS")
timed inprocess-cpu "$PYTHON" -m simulations.matrix --quiet --out "$SCRATCH/inprocess-cpu" --set "${SET[@]}" "device='cpu'"
timed inprocess-cuda "$PYTHON" -m simulations.matrix --quiet --out "$SCRATCH/inprocess-cuda" --set "${SET[@]}" \
    "device='cuda'"
timed flwr-cuda "$PYTHON" -m simulations.matrix --quiet --out "$SCRATCH/flwr-cuda" --backend flower --client-cpus 1 \
    --client-gpus "$CLIENT_GPUS" --set "${SET[@]}" "device='cuda'"

# Vectorized clients (torch.func) against one-after-another on the GPU (writes vectorized_cuda.{json,md}).
timed vectorized "$PYTHON" -m benchmarks.vectorized --device cuda --rounds "$ROUNDS"

# The perf benchmark with every runner on the GPU (writes perf_cuda.{json,md}, appends to perf_history.jsonl).
# shellcheck disable=SC2086  # PERF_ARGS is a list of options
timed perf "$PYTHON" -m benchmarks.perf --device cuda --client-gpus "$CLIENT_GPUS" --rounds "$ROUNDS" $PERF_ARGS

"$PYTHON" - "$SCRATCH" "$REPORT" "$CLIENT_GPUS" "$ROUNDS" "${FAILED[*]:-}" <<'EOF'
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.perf import git_commit

scratch, report, client_gpus, rounds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
failed = set(sys.argv[5].split())


def log_tail(name: str) -> str:
    """A failed step's last log lines, as a quoted block."""
    tail = (scratch / f"{name}.log").read_text(errors="replace").strip().splitlines()[-12:]
    return "\n".join(["failed; the end of its log:", "", *(f"    {line}" for line in tail)])


per_gpu = int(1 / client_gpus) if client_gpus < 1 else 1
runs = [
    ("inprocess-cpu", "in-process runner", "cpu", "1 (in turn)"),
    ("inprocess-cuda", "in-process runner", "cuda", "1 (in turn)"),
    ("flwr-cuda", f"flwr run, 1 CPU + {client_gpus:g} GPU per client", "cuda", f"{per_gpu} per GPU"),
]
lines = [
    "# gpu_check",
    "",
    "`bash benchmarks/gpu_check.sh`: the default gaze scenario (15 clients, FedAvg, "
    f"{rounds} rounds) end to end, and `python -m benchmarks.perf --device cuda` "
    "([perf_cuda.md](perf_cuda.md)).",
    "",
    f"GPU: {(scratch / 'gpu.csv').read_text().strip().splitlines()[-1]}; torch {torch.__version__} "
    f"(CUDA {torch.version.cuda}); commit {git_commit()}; {time.strftime('%Y-%m-%dT%H:%M:%S%z')}.",
    "",
    "| run | device | clients at once | wall (end to end) | final global angular error |",
    "|---|---|---|---|---|",
]
for name, runner, device, at_once in runs:
    if name in failed:
        lines.append(f"| {runner} | {device} | {at_once} | failed (its log: below) | - |")
        continue
    seconds = float((scratch / f"{name}.seconds").read_text())
    (summary,) = (scratch / name).glob("**/summary.json")
    error = json.loads(summary.read_text())["final"]["global-angular-error"]
    lines.append(f"| {runner} | {device} | {at_once} | {seconds:.1f} s | {error:.3f}° |")
for title, name, result in [
    ("vectorized clients on the GPU", "vectorized", Path("benchmarks/results/vectorized_cuda.md")),
    ("perf on the GPU", "perf", Path("benchmarks/results/perf_cuda.md")),
]:
    body = log_tail(name) if name in failed else result.read_text().split("\n", 3)[-1].strip()
    lines += ["", f"## {title}", "", body]
for name in sorted(failed & {run[0] for run in runs}):
    lines += ["", f"## {name}", "", log_tail(name)]
report.write_text("\n".join(lines) + "\n")
print(f"gpu_check: results in {report}")
EOF
if ((${#FAILED[@]})); then
    echo "gpu_check: failed steps: ${FAILED[*]} (their logs are in $REPORT)" >&2
    exit 1
fi
