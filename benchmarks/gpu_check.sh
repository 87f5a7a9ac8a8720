#!/usr/bin/env bash
# One GPU check for a lent H200, under 9 minutes: GPU-tier tests, fused-op correctness of every
# dtype against float64 (plus CUDA-graph replay and bitwise determinism), the kernel benchmark
# and its plots/report, and a T5-XL training-memory row (bench_train.py: bf16, batch 8, source
# 512, 100 prompt tokens, ZeRO-3 with checkpointing, with and without parameter offload; skipped
# with a message when deepspeed does not import), and the Triton path's host time per eager
# call (bench_host.py). Writes gpu_check.log, kernels.json/.csv, train.json/.csv, host.json,
# report.md and bench.tar.gz (plots and all results) to $OUT. Each step has its
# own time limit; a failing step does not stop the others, and the exit status is non-zero if
# any failed.
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh            # on the GPU machine
#   OUT=/tmp/out bash benchmarks/gpu_check.sh --dry-run  # here, on CPU: checks the script's flow
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rpt-gpu-check}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
mkdir -p "$OUT/bench"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
FAILED=()
SKIPPED=()

step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "=== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - start))s"
  [[ $rc -eq 0 ]] || FAILED+=("$name(rc=$rc)")
}

bench_step() {  # like step, but a benchmark cut short by its limit keeps its rows and passes
  local before=${#FAILED[@]}
  step "$@"
  if [[ ${#FAILED[@]} -gt $before && ${FAILED[-1]} =~ rc=(124|137) ]]; then
    echo "=== $1: cut short by its limit; the rows measured so far are kept"
    unset 'FAILED[-1]'
  fi
}

train_bench() {  # train_bench LIMIT ARGS...: bench_train.py, or a clear skip without deepspeed
  local limit=$1 why
  shift
  if ! why=$(python3 -c "import deepspeed" 2>&1 >/dev/null); then
    echo "=== training benchmark: SKIPPED, deepspeed does not import: ${why##*$'\n'}"
    echo "    (carry wheels of deepspeed and its dependencies in .whl/: hjson, ninja, py-cpuinfo,"
    echo "    msgpack, pydantic, einops, ... whatever this machine lacks)"
    SKIPPED+=("training benchmark(no deepspeed)")
    return
  fi
  bench_step "training benchmark" "$limit" python3 benchmarks/bench_train.py "$@" --out "$OUT/bench/results"
}

if compgen -G ".whl/*.whl" > /dev/null; then  # carried wheels (deepspeed, ...), no index
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/rpt-torch-ext}

date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
python3 - <<'PY'
import importlib.metadata as md, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())
for p in ("triton", "transformers", "deepspeed"):
    try: print(p, md.version(p))
    except md.PackageNotFoundError: print(p, "absent")
PY

if [[ $DRY -eq 1 ]]; then
  export TRITON_INTERPRET=1 DS_ACCELERATOR=cpu
  step "gpu-tier tests (collection only on CPU)" 120 python3 -m pytest tests -m gpu -q -p no:cacheprovider
  step "correctness (interpreter)" 120 python3 benchmarks/gpu_correctness.py --device cpu --quick --dtype fp32
  bench_step "kernel benchmark" 300 python3 benchmarks/bench_kernels.py --device cpu \
    --shapes "8,32,16;24,32,16" --provider eager,eager-loop,native,triton --mode fwd,full \
    --compile dynamic --budget 0.01 --threads 1 --out "$OUT/bench/results"
  train_bench 120 --quick --config-timeout 50
  step "host time (launches stubbed)" 30 python3 benchmarks/bench_host.py --device cpu \
    --shapes "10,768,400" --budget 0.05 --out "$OUT/bench/results"
else  # limits add up to 8.5 minutes; most steps end well before theirs
  XDIST=(); python3 -c "import xdist" 2>/dev/null && XDIST=(-n 4)
  if python3 -c "import pytest" 2>/dev/null; then
    step "gpu-tier tests" 70 python3 -m pytest tests -m gpu -q -p no:cacheprovider "${XDIST[@]}"
  else
    echo "=== gpu-tier tests: pytest is not installed here; carry its wheel in .whl/"
    FAILED+=("gpu-tier tests(no pytest)")
  fi
  step "correctness" 60 python3 benchmarks/gpu_correctness.py --backend triton
  # quick grid, bf16 and fp32, fwd and full, torch.compile once per op/dtype/mode (dynamic);
  # results are rewritten after every row, so a run cut short keeps what it measured
  BENCH=(python3 benchmarks/bench_kernels.py --quick --compile dynamic --dtype bf16,fp32
         --mode fwd,full --provider eager,eager-loop,compile,triton,native --budget 0.05)
  bench_step "kernel benchmark, shared op" 90 "${BENCH[@]}" --op shared --out "$OUT/bench/results"
  bench_step "kernel benchmark, grouped op" 40 "${BENCH[@]}" --op grouped --out "$OUT/bench/results-grouped"
  bench_step "kernel benchmark, max-autotune" 30 python3 benchmarks/bench_kernels.py \
    --shapes "100,2048,800" --dtype bf16 --mode fwd --provider eager,triton,compile,compile-max \
    --out "$OUT/bench/results-max-autotune"
  # T5-XL, bf16, batch 8, source 512 (+100 prompt), target 128, ZeRO-3 + checkpointing, offload
  # first (the 8 GB goal), then without (the throughput ratio). Per mode: a build (62 s on 2
  # busy CPU cores here, random weights drawn on the CPU), 1 warm-up + 3 timed steps and one
  # gathered-bytes step; the row is written as each mode ends.
  train_bench 170 --models t5-xl --modes zero3-offload-ckpt,zero3-ckpt --warmup 1 --steps 3 \
    --config-timeout 85
  # host time of the Triton path per eager call, kernel launches stubbed (bench_host.py)
  step "host time (launches stubbed)" 20 python3 benchmarks/bench_host.py --device cuda \
    --dtype bf16 --budget 0.5 --out "$OUT/bench/results"
fi
step "plots" 20 python3 benchmarks/plot.py "$OUT/bench"
step "report" 10 python3 benchmarks/report.py "$OUT/bench" --out "$OUT/report.md"
for f in kernels.json kernels.csv train.json train.csv host.json; do
  cp "$OUT/bench/results/$f" "$OUT/" 2>/dev/null
done
tar czf "$OUT/bench.tar.gz" -C "$OUT" bench && rm -rf "$OUT/bench"

[[ ${#SKIPPED[@]} -eq 0 ]] || echo "skipped: ${SKIPPED[*]}"
if [[ ${#FAILED[@]} -eq 0 ]]; then
  echo "GPU CHECK PASSED"
else
  echo "GPU CHECK FAILED: ${FAILED[*]}"
  exit 1
fi
