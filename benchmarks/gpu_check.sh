#!/usr/bin/env bash
# The one script a lent GPU (H100 or H200) runs, "is it correct" first, then "how fast", then
# the training row, each step under its own time limit and all under one budget
# (GPU_CHECK_BUDGET, 450 s) that each limit is cut to, so the script plus the machine's start
# fits 10 of a loan's 15 minutes:
#   1. python -m rpt_fast --device cuda (bf16, fp32) beside the GPU tier's test files, by name
#   2. bench_kernels.py --quick, bf16 then fp32 (ops interleaved; torch.compile with dynamic shapes)
#   3. bench_host.py (host time per eager call)
#   4. bench_train.py, T5-XL with ZeRO-3 + checkpointing, offload first (skipped without deepspeed)
# Limits come from the Triton variants each step compiles, counted by the dry run
# (count_variants.py --expect fails it when a step outgrows the count below) at an assumed
# 2 s per compile: self-check 64 (one process), GPU tier 138 (8 workers, 52 also the
# self-check's), kernel benchmarks 25 per dtype (all compiled by the GPU tier before).
# $OUT gets at most 8 files and no folder (what the device tool returns), as steps end:
# gpu_check.log, kernels-bf16.json, kernels-fp32.json, host.json, train.json, report.md,
# bench.tar.gz. A failing step does not stop the others; exit status 1 if any failed.
#
# The wheels to carry (DeepSpeed and what it lacks there) and the device tool's call,
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=480),
# are in benchmarks/README.md ("The GPU check"). On a CPU first (tests/test_gpu_check_script.py):
#   OUT=/tmp/out PYTHON=/path/to/venv/bin/python bash benchmarks/gpu_check.sh --dry-run
# PYTHON (default python3) runs every step; no step calls a bare python3.
set -u -o pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/rpt-gpu-check}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
BUDGET=${GPU_CHECK_BUDGET:-$((DRY ? 800 : 450))}
RESERVE=30  # seconds kept for the plots, the report and the archive at the end
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rpt-gpu-check.XXXXXX")
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
FAILED=()
SKIPPED=()

step() {  # step NAME LIMIT COMMAND...: at most LIMIT seconds, never past the budget
  local name=$1 limit=$2 start=$SECONDS rc room
  shift 2
  room=$((BUDGET - SECONDS - RESERVE))
  if ((room < 15)); then
    echo "=== $name: SKIPPED, ${room}s of the ${BUDGET}s budget left"
    SKIPPED+=("$name(no time left)")
    return
  fi
  ((limit > room)) && limit=$room
  echo "=== $name (limit ${limit}s, at ${SECONDS}s): $*"
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

keep() {  # keep SRC NAME: a result file into $OUT as soon as its step ends
  [[ -f $1 ]] && cp "$1" "$OUT/$2"
}

count() {  # count EXPECTED COUNT_VARIANTS_ARGS...: the dry run's count of a GPU step's compiles
  [[ $DRY -eq 1 ]] || return 0
  "$PYTHON" benchmarks/count_variants.py --expect "$@" || FAILED+=("variant count($2)")
}

if compgen -G ".whl/*.whl" > /dev/null; then  # carried wheels (deepspeed, ...), no index
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl \
    && export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$WORK/torch-extensions}

date -u
echo "python: $PYTHON ($(command -v "$PYTHON"))"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true

DEVICE=cuda
mapfile -t GPU_TESTS < <(grep -l "pytest.mark.gpu" tests/test_gpu_*.py)  # the GPU tier's files, by name
BENCH_DTYPES=(bf16:120 fp32:80)  # dtype:limit
SELFCHECK=(--dtype bfloat16,float32)  # fp16 on CUDA: the GPU tier
WORKERS=8  # pytest-xdist processes: Triton compiles on 8 of the 16 cores at once
HOST=(--dtype bf16 --budget 0.5)
BENCH=("$PYTHON" benchmarks/bench_kernels.py --quick --compile dynamic --op shared,grouped --mode full
       --provider eager,eager-loop,compile,triton,gemms --budget 0.05)
if [[ $DRY -eq 1 ]]; then  # the same flow on CPU: Triton through its interpreter, tiny shapes
  export TRITON_INTERPRET=1 DS_ACCELERATOR=cpu
  DEVICE=cpu
  SELFCHECK=(--shapes 7,24,12)  # tests/test_selfcheck.py runs the CPU cases
  WORKERS=2
  BENCH_DTYPES=(fp32:150)  # the interpreter computes bf16 dots wrongly
  HOST=(--shapes 10,768,400 --budget 0.05)
  BENCH=("$PYTHON" benchmarks/bench_kernels.py --device cpu --shapes "8,32,16;24,32,16" --compile dynamic
         --op shared,grouped --mode full --provider eager,eager-loop,compile,triton,native,gemms --budget 0.01
         --threads 1)
  count 64 selfcheck --dtype bfloat16,float32
  count 138 tests "${GPU_TESTS[@]}"
  count 25 bench --quick --op shared,grouped --mode full --dtype bf16
fi

# 1. Correctness: the self-check in the background (its lines prefixed), the GPU tier beside it.
(step "self-check" 200 "$PYTHON" -m rpt_fast --device "$DEVICE" --verbose "${SELFCHECK[@]}"
 exit ${#FAILED[@]}) 2>&1 | sed -u 's/^/[self-check] /' &
SELF_CHECK=$!
if "$PYTHON" -c "import pytest" 2>/dev/null; then
  XDIST=()
  "$PYTHON" -c "import xdist" 2>/dev/null && XDIST=(-n "$WORKERS")
  step "gpu-tier tests" 200 "$PYTHON" -m pytest "${GPU_TESTS[@]}" -v -p no:cacheprovider "${XDIST[@]}"
else
  echo "=== gpu-tier tests: pytest is not installed here; carry its wheel in .whl/"
  FAILED+=("gpu-tier tests(no pytest)")
fi
wait "$SELF_CHECK" || FAILED+=("self-check")

# 2. Kernel benchmarks; 3. host time per call.
for dtype_limit in "${BENCH_DTYPES[@]}"; do
  dtype=${dtype_limit%:*}
  bench_step "kernel benchmark, $dtype" "${dtype_limit#*:}" "${BENCH[@]}" --dtype "$dtype" --out "$WORK/bench/kernels-$dtype"
  keep "$WORK/bench/kernels-$dtype/kernels.json" "kernels-$dtype.json"
done
step "host time (launches stubbed)" 25 "$PYTHON" benchmarks/bench_host.py --device "$DEVICE" "${HOST[@]}" \
  --out "$WORK/bench/host"
keep "$WORK/bench/host/host.json" host.json

# 4. The training row, with whatever time is left.
if ! why=$("$PYTHON" -c "import deepspeed" 2>&1 >/dev/null); then
  echo "=== training benchmark: SKIPPED, deepspeed does not import: ${why##*$'\n'}"
  echo "    (carry its wheels in .whl/: benchmarks/README.md, section 'The GPU check')"
  SKIPPED+=("training benchmark(no deepspeed)")
elif [[ $DRY -eq 1 ]]; then
  bench_step "training benchmark" 150 "$PYTHON" benchmarks/bench_train.py --quick --config-timeout 50 \
    --out "$WORK/bench/train"
else  # T5-XL, bf16, batch 8, source 512 (+100 prompt), target 128; each mode's row written as it ends
  bench_step "training benchmark" 200 "$PYTHON" benchmarks/bench_train.py --models t5-xl \
    --modes zero3-offload-ckpt,zero3-ckpt --warmup 1 --steps 3 --config-timeout 85 --out "$WORK/bench/train"
fi
keep "$WORK/bench/train/train.json" train.json

RESERVE=0
step "plots" 20 "$PYTHON" benchmarks/plot.py "$WORK/bench"
step "report" 10 "$PYTHON" benchmarks/report.py "$WORK/bench" --out "$OUT/report.md"
tar czf "$OUT/bench.tar.gz" -C "$WORK" bench && rm -rf "$WORK"

[[ ${#SKIPPED[@]} -eq 0 ]] || echo "skipped: ${SKIPPED[*]}"
if [[ ${#FAILED[@]} -eq 0 ]]; then
  echo "GPU CHECK PASSED in ${SECONDS}s"
else
  echo "GPU CHECK FAILED in ${SECONDS}s: ${FAILED[*]}"
  exit 1
fi
