#!/usr/bin/env bash
# The whole GPU routine on a machine whose python already has a CUDA torch (torch is never
# installed here): build, GPU tests, compute-sanitizer, the benchmark. Everything lands in $OUT
# (default ./gpu_out) as at most 8 flat files, because the device tool returns no more:
#   setup.log  tests_gpu.log  tests_gpu.xml  sanitizer_memcheck.log  sanitizer_racecheck.log
#   bench.log  results.tar.gz (benchmarks/results)  summary.txt
# Every step runs even after a failure; the exit status is 1 if any step failed.
# Without a .git checkout, pass the commit measured: DLK_BENCH_COMMIT=<sha> [DLK_BENCH_DIRTY=1].
# All of it exceeds one 10-minute device command: DLK_STAGES picks stages (default "tests sanitizer bench";
# setup always runs), e.g. DLK_STAGES=tests in a first call, DLK_STAGES="sanitizer bench" in a second.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
FAILED=()

step() {  # step NAME LOG COMMAND...: runs COMMAND, appending its output to LOG
    local name=$1 log=$2 started=$SECONDS
    shift 2
    echo "== $name" | tee -a "$log"
    if "$@" >>"$log" 2>&1; then
        echo "ok     $name ($((SECONDS - started)) s)"
    else
        local status=$?
        echo "FAILED $name (exit $status, $((SECONDS - started)) s; see $(basename "$log"))"
        FAILED+=("$name")
    fi
}

install_missing() {  # pip-installs only what the machine's python cannot import
    local missing=() module
    declare -A spec=([triton]="triton==3.6.0" [pytest]=pytest [pytest_benchmark]=pytest-benchmark [ninja]=ninja
                     [pybind11]=pybind11 [numpy]=numpy [tqdm]=tqdm [matplotlib]=matplotlib)
    for module in "${!spec[@]}"; do
        "$PY" -c "import $module" 2>/dev/null || missing+=("${spec[$module]}")
    done
    echo "missing: ${missing[*]:-none}"
    [ ${#missing[@]} -eq 0 ] || "$PY" -m pip install "${missing[@]}"
}

sanitizer() {  # sanitizer TOOL: one compute-sanitizer pass over every op family's CUDA backend
    local binary
    binary="$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")"
    [ -x "$binary" ] || { echo "compute-sanitizer not found"; return 1; }
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$binary" --tool "$1" --error-exitcode 1 "$PY" benchmarks/sanitize.py
}

SETUP="$OUT/setup.log"
step nvidia-smi "$SETUP" nvidia-smi
step "python deps" "$SETUP" install_missing
step "torch has CUDA" "$SETUP" "$PY" -c \
    "import torch; print(torch.__version__, torch.version.cuda); assert torch.cuda.is_available()"
step build "$SETUP" env MAX_JOBS="${MAX_JOBS:-16}" "$PY" -m pip install -e . --no-build-isolation -v
step "dlkernels info" "$SETUP" "$PY" -m dlkernels info
STAGES=" ${DLK_STAGES:-tests sanitizer bench} "
stage() { [[ "$STAGES" == *" $1 "* ]]; }
stage tests && step "GPU tests" "$OUT/tests_gpu.log" "$PY" -m pytest -m cuda tests/ -q -rs --junitxml="$OUT/tests_gpu.xml"
stage sanitizer && step "memcheck" "$OUT/sanitizer_memcheck.log" sanitizer memcheck
stage sanitizer && step "racecheck" "$OUT/sanitizer_racecheck.log" sanitizer racecheck
stage bench && step "benchmark pool2d, batch_norm" "$OUT/bench.log" "$PY" -m dlkernels.bench --ops pool2d,batch_norm
stage bench && step "benchmark rnn" "$OUT/bench.log" "$PY" -m dlkernels.bench --ops rnn --quick
# The full conv2d matrix (1500 case x direction rows, 3 backends) does not fit one 10-minute command:
# each call measures one subset, chosen with DLK_CONV_MATCH (comma-separated terms a case must all contain;
# default: batch 32, float16 channels_last), into its own result file.
CONV_MATCH="${DLK_CONV_MATCH:-) 32x,float16}"
stage bench && step "benchmark conv2d ($CONV_MATCH)" "$OUT/bench.log" "$PY" -m dlkernels.bench --ops conv2d --quick --match "$CONV_MATCH"
# Attention: one subset per call as well (DLK_ATTN_MATCH; default: bf16 head dim 128, the issue's target rows).
ATTN_MATCH="${DLK_ATTN_MATCH:-head_dim=128,bfloat16}"
stage bench && step "benchmark attention ($ATTN_MATCH)" "$OUT/bench.log" "$PY" -m dlkernels.bench --ops attention --quick --match "$ATTN_MATCH"
if stage bench && [ "${DLK_PYTEST_BENCH:-0}" = 1 ]; then  # the same cases again under pytest-benchmark (slow)
    step "pytest-benchmark" "$OUT/bench.log" "$PY" -m pytest benchmarks/ --benchmark-only -q
fi
step "results tarball" "$OUT/bench.log" tar czf "$OUT/results.tar.gz" benchmarks/results

{
    echo "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo unknown)"
    echo "failed steps: ${FAILED[*]:-none}"
} | tee "$OUT/summary.txt"
[ ${#FAILED[@]} -eq 0 ]
