#!/usr/bin/env bash
# The one script a lent GPU (H100 or H200, 132 SMs) runs: what it answers first is "is it
# correct", then "how fast", then the training row, each step under its own time limit and all
# under one budget (GPU_CHECK_BUDGET, 450 s), so the script plus the machine's start (1-2 min)
# fits 10 of a loan's 15 minutes and leaves room for a rerun.
#
#   1. python -m rpt_fast --device cuda (the self-check: Triton and eager against float64, bf16
#      and fp32, CUDA-graph replay) side by side with the GPU-tier test files, named one by one
#      (tests/test_gpu_*.py; pytest -n 8 -v: a line per test as it ends)
#   2. kernel benchmarks, bf16 then fp32 (fwd + bwd; eager, eager-loop, torch.compile with
#      dynamic shapes, triton, the gemms bound; shared and grouped ops interleaved)
#   3. the Triton path's host time per eager call (bench_host.py)
#   4. the training row last: T5-XL, ZeRO-3 + checkpointing, with parameter offload first, then
#      without (bench_train.py; skipped with the reason when deepspeed does not import)
#
# Time limits come from the Triton variants each step compiles, counted on a CPU by the dry run
# (benchmarks/count_variants.py, which fails the dry run when a step outgrows its count here),
# at an assumed 2 s per compile on the GPU machine's CPU (1-3 s): the self-check 64 variants
# (~130 s, one process), the GPU tier 201 (-n 8 workers: ~50 s of compiles plus start-up; 57 of
# them are the self-check's too), the kernel benchmarks 28 per dtype (all also the GPU tier's,
# so cached by then) plus two torch.compile graphs per dtype (~20-30 s each).
#
# Everything goes to $OUT as it happens, never more than 8 files and no folder (what the device
# tool returns): gpu_check.log (every step's output, unbuffered), kernels-bf16.json,
# kernels-fp32.json, host.json, train.json (copied as each step ends), report.md and
# bench.tar.gz (plots and all results) at the end. A failing step does not stop the others; the
# exit status is 1 if any failed.
#
# Preparation, here (DeepSpeed is missing on the GPU machine, which has no network; it ships as
# an sdist only, so build its pure-Python wheel here; hjson, pydantic and pydantic's needs are
# the rest of what it lacks; einops, msgpack, ninja, psutil, py-cpuinfo are in its image):
#   python -m pip wheel --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl hjson==3.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 typing_extensions==4.16.0
# (.whl/ is in .gitignore: about 5 MB). Then the device tool's call:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=480)
# and on a CPU, before spending GPU minutes (tests/test_gpu_check_script.py runs it):
#   OUT=/tmp/out PYTHON=/path/to/venv/bin/python bash benchmarks/gpu_check.sh --dry-run
#
# PYTHON (default python3) is the interpreter every step runs; no step calls a bare python3.
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
  count 201 tests "${GPU_TESTS[@]}"
  count 28 bench --quick --op shared,grouped --mode full --dtype bf16
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
  echo "    (carry its wheels in .whl/: see the preparation lines at the top of this script)"
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
