#!/usr/bin/env bash
# Wall time of the digits recipe without a tracking plugin, with vitkit-tensorboard, with vitkit-mlflow,
# interleaved (docs/tracking.md). Needs both plugins installed. Usage: benchmarks/tracking_overhead.sh [EPOCHS] [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
epochs=${1:-20} rounds=${2:-3}
out=$(mktemp -d)
echo "variant round command_s loop_s s_per_epoch"
for round in $(seq 1 "$rounds"); do
  for variant in none tensorboard mlflow; do
    case $variant in
      none) env=(VITKIT_TENSORBOARD=0) ;;
      tensorboard) env=(VITKIT_TENSORBOARD=1) ;;
      mlflow) env=(VITKIT_TENSORBOARD=0 "MLFLOW_TRACKING_URI=sqlite:///$out/mlflow.db") ;;
    esac
    start=$(date +%s.%N)
    (cd "$out" && env -u MLFLOW_TRACKING_URI "${env[@]}" python -m vitkit run "$root/recipes/digits.toml" \
      --set "train.epochs=$epochs" --set "output.dir=\"$out/runs/$variant\"" > "$out/log_${variant}_$round.txt" 2>&1)
    end=$(date +%s.%N)
    dir=$(ls -d "$out/runs/$variant"/*/* | tail -1)
    python -c "import json; s = json.load(open('$dir/summary.json')); w = s['wall_time_s']
print('$variant', $round, round($end - $start, 1), round(w, 2), round(w / s['epochs_run'], 3))"
  done
done
