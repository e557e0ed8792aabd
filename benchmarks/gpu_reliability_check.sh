#!/usr/bin/env bash
# GPU checks of the reliability work (issues 7 and 17), ~5 minutes on one GPU: a real CUDA out-of-memory,
# fp16 skipped steps, a NaN loss on the device, the precision choice (native bf16, TF32 for fp32),
# data.batch_size = "auto" on the built trainer, kill + resume on the GPU (train.deterministic = true:
# exact equality is a resume property only when the kernels are deterministic), and the reliability
# tests on 2 CPU cores. Run from anywhere: bash benchmarks/gpu_reliability_check.sh [--dry-run]
set -uo pipefail
usage() {
    echo "usage: benchmarks/gpu_reliability_check.sh [--dry-run] [--help]"
    echo "  GPU reliability checks: real OOM, fp16 skipped steps, NaN, precision/TF32, auto batch, kill + resume"
    echo "  --dry-run  the steps that run without a GPU, on CPU (checks the script)"
    echo "  env: PYTHON (interpreter, default python3), OUT (log folder, default /tmp)"
    echo "  exit status: 0 when every check passed, 1 when any failed (each failure is listed at the end)"
}
DRY=0
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY=1 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp}
mkdir -p "$OUT"
exec > >(tee "$OUT/reliability_check.log") 2>&1
FAILED=()
GPU=0
[[ $DRY == 0 ]] && $PY -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null && GPU=1

check() {  # check NAME LIMIT CMD...: run it with a time limit; a non-zero exit is a failed check
    local name=$1 limit=$2; shift 2
    echo; echo "== $name"
    timeout "$limit" "$@"
    local rc=$?
    [[ $rc == 0 ]] || { echo "!! $name: exit $rc (124: over its ${limit}s limit)"; FAILED+=("$name"); }
}
gpu_check() {  # like check, skipped without a GPU
    if [[ $GPU == 1 ]]; then check "$@"; else echo; echo "== $1: skipped (no GPU)"; fi
}
vitkit_run() { $PY -m vitkit run "$T/tiny.toml" "$@"; }

T=$(mktemp -d /tmp/chk.XXXXXX)
cat > "$T/tiny.toml" <<R
name = "tiny"
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "digits"
batch_size = 64
[train]
epochs = 3
[output]
dir = "$T/runs"
plots = false
R

check "0. versions and device" 60 $PY -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

real_oom() {  # a user error (exit 2) with the advice, not a traceback
    vitkit_run --set 'model={name="vit",img_size=224,patch_size=4,embed_dim=768,depth=12,num_heads=12}' \
        --set data.batch_size=1024 2>"$T/err" >/dev/null
    local rc=$?; tail -2 "$T/err"; echo "rc=$rc"
    [[ $rc == 2 ]] && grep -q "out of memory" "$T/err" && ! grep -q Traceback "$T/err"
}
gpu_check "1. real CUDA OOM" 120 real_oom

fp16_run() {
    vitkit_run --set train.precision=\"fp16\" --set name=\"fp16\" >/dev/null 2>"$T/err" || { cat "$T/err"; return 1; }
    $PY -c "import json,glob; s=json.load(open(glob.glob('$T/runs/fp16/*/summary.json')[0])); print({k: s[k] for k in ('test_acc','skipped_steps','precision','device')})"
}
gpu_check "2. fp16 run: skipped steps counted" 120 fp16_run

nan_run() {  # a user error (exit 2) naming the epoch and step
    vitkit_run --set optimizer.lr=1e6 --set name=\"nan\" >/dev/null 2>"$T/err"
    local rc=$?; cat "$T/err"; [[ $rc == 2 ]] && grep -q "training diverged" "$T/err"
}
check "3. NaN loss (lr 1e6)" 120 nan_run

# issue 17 item 11: precision = "auto" uses bf16 only where the GPU has it natively (not emulated), else fp16
check "4. precision auto: native bf16 or fp16" 60 $PY -c "
import torch
from vitkit.engine.device import native_bf16, select_precision
dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
cap = torch.cuda.get_device_capability() if dev.type == 'cuda' else None
choice = select_precision('auto', dev)
print('capability', cap, 'native bf16', native_bf16(dev), '-> precision auto =', choice)
assert choice == ('fp32' if cap is None else 'bf16' if cap >= (8, 0) else 'fp16')"

# issue 17 item 12: fp32 on an Ampere+ GPU uses TF32 matmuls (said in the run header); train.tf32 = false turns it off
tf32_header() {
    vitkit_run --set train.precision=\"fp32\" --set train.epochs=1 --set name=\"tf32\" >"$T/out" 2>&1 || { cat "$T/out"; return 1; }
    grep -m1 "vitkit run" "$T/out"
    grep -q "fp32, TF32 matmuls" "$T/out" || return 1
    vitkit_run --set train.precision=\"fp32\" --set train.epochs=1 --set train.tf32=false --set name=\"notf32\" >"$T/out" 2>&1 || return 1
    grep -m1 "vitkit run" "$T/out"; ! grep -q "TF32" "$T/out"
}
gpu_check "5. fp32 with TF32 on, and off by train.tf32 = false" 180 tf32_header

# issue 17 item 13: "auto" probes a real training step of the built trainer (EMA, mixup), picks an even size
auto_batch() {
    vitkit_run --set data.batch_size=\"auto\" --set train.ema=0.99 --set augment.mixup=0.8 --set train.epochs=1 \
        --set name=\"auto\" >"$T/out" 2>&1
    local rc=$?; grep "data.batch_size = auto" "$T/out"; [[ $rc == 0 ]] || { tail -5 "$T/out"; return 1; }
    $PY -c "import re,sys; n=int(re.search(r'auto: (\d+)', open('$T/out').read()).group(1)); sys.exit(n % 2)"
}
check "6. data.batch_size = auto with EMA and mixup" 240 auto_batch

# issue 17 item 17: kill + resume on the device, deterministic kernels, exact equality
check "7. kill + resume, train.deterministic = true" 300 $PY benchmarks/resume_check.py --deterministic

check "8. reliability tests on 2 CPU cores, no GPU" 420 env CUDA_VISIBLE_DEVICES= taskset -c 0,1 $PY -m pytest -q -p no:cacheprovider \
    tests/test_corpus.py tests/test_faults.py tests/test_bad_images.py tests/test_resume.py --durations=12

rm -rf "$T"
echo
if (( ${#FAILED[@]} )); then
    echo "FAILED: ${#FAILED[@]} check(s): ${FAILED[*]}"
    exit 1
fi
echo "all checks passed"
