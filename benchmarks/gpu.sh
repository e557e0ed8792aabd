#!/usr/bin/env bash
# Every GPU figure of issue 6 in one run (about 5-7 minutes on one H100/H200, under 8):
#   vit_small_patch16_224, bf16, batch 256: training and inference img/s, vitkit vs timm interleaved in
#   the same process, eager then torch.compile'd; achieved TFLOP/s, fraction of the GPU's bf16 peak,
#   peak memory; then the vs_timm table at the four CPU configs' shapes on the GPU (bf16, eager).
#
#   benchmarks/gpu.sh             # on the GPU machine, from anywhere (torch, timm, einops installed)
#   benchmarks/gpu.sh --dry-run   # the same commands on CPU with a tiny config (what runs without a GPU)
#
# vitkit runs from this checkout through PYTHONPATH (no install). Outputs are also written to
# $OUT (default /tmp/vitkit-gpu-bench): a .txt table per step, .json for the bench runs.
set -uo pipefail
usage() {
    echo "usage: benchmarks/gpu.sh [--dry-run] [--help]"
    echo "  every GPU figure of issue 6: vitkit vs timm img/s (eager, compiled), TFLOP/s, memory, vs_timm table"
    echo "  --dry-run  the same steps on CPU with a tiny config (checks the script without a GPU)"
    echo "  env: PYTHON (interpreter), OUT (output folder, default /tmp/vitkit-gpu-bench)"
    echo "  exit status: 0 when every step passed, 1 when any failed (each failure is listed at the end)"
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    ""|--dry-run) ;;
    *) usage >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-$(command -v python || command -v python3)}
OUT_DIR=${OUT:-/tmp/vitkit-gpu-bench}
mkdir -p "$OUT_DIR"
START=$(date +%s)

if [[ "${1:-}" != "--dry-run" ]] && $PY -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv || true
    MAIN=(vit_small_patch16_224 --batch-size 256 --precision bf16 --device cuda --steps 10 --repeats 5 --warmup 3)
    TABLE=(--device cuda --precision bf16 --steps 10 --repeats 5 --warmup 3 --batch-size 256)
    EAGER_LIMIT=150 COMPILE_LIMIT=330 TABLE_LIMIT=120
else
    echo "no GPU (or --dry-run): the same steps on CPU with a tiny config, to check this script"
    MAIN=(vit_tiny_patch16_224 --img-size 32 --patch-size 8 --batch-size 8 --precision fp32 --device cpu
          --steps 1 --repeats 2 --warmup 1)
    TABLE=(--device cpu --quick --batch-size 2 --config tiny-32)
    EAGER_LIMIT=300 COMPILE_LIMIT=300 TABLE_LIMIT=300
fi
FAILED=()
$PY -c "import torch, timm, einops; print(f'torch {torch.__version__}, timm {timm.__version__}, einops {einops.__version__}')" \
    || FAILED+=("versions (torch, timm, einops not importable)")

step() {  # step NAME LIMIT CMD...: run with a time limit, keep the output; a failure is counted, the rest still runs
    local name=$1 limit=$2; shift 2
    echo; echo "== $name ($(( $(date +%s) - START )) s in)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
    local rc=${PIPESTATUS[0]}
    [[ $rc == 0 ]] || { echo "!! $name: exit $rc (124: over its ${limit}s limit)"; FAILED+=("$name (exit $rc)"); }
}

bench() {  # bench NAME LIMIT ARGS...: `vitkit bench ARGS --json` into NAME.json, then its table
    local name=$1 limit=$2; shift 2
    echo; echo "== $name ($(( $(date +%s) - START )) s in)"
    timeout "$limit" $PY -m vitkit bench "$@" --json >"$OUT_DIR/$name.json" 2> >(tee "$OUT_DIR/$name.log" >&2)
    local rc=$?
    [[ $rc == 0 ]] || { echo "!! $name: exit $rc (124: over its ${limit}s limit)"; FAILED+=("$name (exit $rc)"); return; }
    $PY -c "import json, sys; from vitkit.apps.bench_command import print_report; print_report(json.load(open(sys.argv[1])))" \
        "$OUT_DIR/$name.json" | tee "$OUT_DIR/$name.txt"
    [[ ${PIPESTATUS[0]} == 0 ]] || FAILED+=("$name (table)")
}

bench eager "$EAGER_LIMIT" "${MAIN[@]}" --vs timm
# compiled: each model compiles once per mode (train, eval); TORCH_LOGS prints any further recompilation
export TORCH_LOGS=recompiles
bench compiled "$COMPILE_LIMIT" "${MAIN[@]}" --vs timm --compile
unset TORCH_LOGS
step vs_timm_table "$TABLE_LIMIT" $PY benchmarks/vs_timm.py "${TABLE[@]}" --json "$OUT_DIR/vs_timm.json"
echo; echo "total $(( $(date +%s) - START )) s; outputs in $OUT_DIR"
if (( ${#FAILED[@]} )); then
    echo "FAILED: ${#FAILED[@]} step(s): ${FAILED[*]}"
    exit 1
fi
echo "all steps passed"
