#!/usr/bin/env bash
# Every GPU figure of issue 6 in one run (about 5-7 minutes on one H100/H200, under 8):
#   vit_small_patch16_224, bf16, batch 256: training and inference img/s, vitkit vs timm interleaved in
#   the same process, eager then torch.compile'd; achieved TFLOP/s, fraction of the GPU's bf16 peak,
#   peak memory; then the vs_timm table at the four CPU configs' shapes on the GPU (bf16, eager);
#   then issue 27's: vit_base_patch16_224 training, bf16, batch 128, plain vs gradient checkpointing vs
#   patch_drop_rate 0.5, interleaved: peak memory and step time ratios (checked: checkpointing must
#   lower the memory and patch dropout the step time, else the step fails).
#
#   benchmarks/gpu.sh             # on the GPU machine, from anywhere (torch, timm, einops installed)
#   benchmarks/gpu.sh --dry-run   # the same commands on CPU with a tiny config (what runs without a GPU)
#
# vitkit runs from this checkout through PYTHONPATH (no install). Outputs are also written to
# $OUT (default /tmp/vitkit-gpu-bench): a .txt table per step, .json for the bench runs.
set -uo pipefail
usage() {
    echo "usage: benchmarks/gpu.sh [--dry-run] [--help]"
    echo "  every GPU figure of issues 6 and 27: vitkit vs timm img/s (eager, compiled), TFLOP/s, memory, vs_timm table;"
    echo "  ViT-B/16 with gradient checkpointing and patch dropout: memory and step time ratios"
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
    BIG=(vit_base_patch16_224 --batch-size 128 --precision bf16 --device cuda --steps 5 --repeats 5 --warmup 2)
    EAGER_LIMIT=150 COMPILE_LIMIT=330 TABLE_LIMIT=120 BIG_LIMIT=150 STRICT=1
else
    echo "no GPU (or --dry-run): the same steps on CPU with a tiny config, to check this script"
    MAIN=(vit_tiny_patch16_224 --img-size 32 --patch-size 8 --batch-size 8 --precision fp32 --device cpu
          --steps 1 --repeats 2 --warmup 1)
    TABLE=(--device cpu --quick --batch-size 2 --config tiny-32)
    BIG=(vit_base_patch16_224 --img-size 32 --patch-size 8 --batch-size 8 --precision fp32 --device cpu
         --steps 1 --repeats 2 --warmup 1)
    EAGER_LIMIT=300 COMPILE_LIMIT=300 TABLE_LIMIT=300 BIG_LIMIT=300 STRICT=0
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
    $PY -c "import json, sys; from vitkit.commands.bench.command import print_report; print_report(json.load(open(sys.argv[1])))" \
        "$OUT_DIR/$name.json" | tee "$OUT_DIR/$name.txt"
    [[ ${PIPESTATUS[0]} == 0 ]] || FAILED+=("$name (table)")
}

bench eager "$EAGER_LIMIT" "${MAIN[@]}" --vs timm
# compiled: each model compiles once per mode (train, eval); TORCH_LOGS prints any further recompilation
export TORCH_LOGS=recompiles
bench compiled "$COMPILE_LIMIT" "${MAIN[@]}" --vs timm --compile
unset TORCH_LOGS
step vs_timm_table "$TABLE_LIMIT" $PY benchmarks/vs_timm.py "${TABLE[@]}" --json "$OUT_DIR/vs_timm.json"
# issue 27: what gradient checkpointing and patch dropout change on ViT-B/16 (ratios against the plain model)
bench bigger "$BIG_LIMIT" "${BIG[@]}" --train --grad-checkpointing --patch-drop 0.5
step bigger_check 60 $PY - "$OUT_DIR/bigger.json" "$STRICT" <<'PYCHECK'
import json, sys
found = json.load(open(sys.argv[1]))["vs_base"]["train"]
ckpt, pdrop = found["vitkit ckpt"], found["vitkit pdrop 0.5"]
for name, ratio in (("checkpointing", ckpt), ("patch dropout 0.5", pdrop)):
    if not ratio["step_time"] or not ratio["memory"]:
        sys.exit(f"{name}: a ratio is missing: {ratio}")
    print(f"{name}: peak memory {ratio['memory']:.2f}x, step time {ratio['step_time']:.2f}x of the plain model")
if sys.argv[2] == "1" and not (ckpt["memory"] < 1.0 and pdrop["step_time"] < 1.0):
    sys.exit("checkpointing did not lower the memory, or patch dropout did not shorten the step")
PYCHECK
echo; echo "total $(( $(date +%s) - START )) s; outputs in $OUT_DIR"
if (( ${#FAILED[@]} )); then
    echo "FAILED: ${#FAILED[@]} step(s): ${FAILED[*]}"
    exit 1
fi
echo "all steps passed"
