#!/usr/bin/env bash
# ConResNet on BraTS-like phantoms (docs/models/conresnet.md "Command line", docs/pipeline.md "ConResNet runs", issue [I]):
# installs dependencies, builds the `mmnet` tool (Release, tests off), then
#   1. mmnet phantom  --task brats-like: T1, T1ce, T2, FLAIR, 48^3 voxels of 1 mm, labels 1 edema, 2 non-enhancing,
#                     3 enhancing
#   2. mmnet train    ConResNet (config small: w 8, G 4) with the context residual, and the paper's Baseline ablation
#                     (config small-baseline: no context residual path) on the same data with the same steps
#   3. mmnet segment  the held-out cases with each (official sliding window, sigmoid regions ET, WT, TC > 0.5,
#                     labels WT -> 1, TC -> 2, ET -> 3)
#   4. mmnet evaluate Dice / HD95 / ASSD per region (WT, TC, ET) of both, then a summary
# Extra arguments go to both `mmnet train` runs, e.g. `--epochs 12`. Everything lands in $MMNET_OUT (default
# build-rel/conresnet_job).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_cli.sh
out="${MMNET_OUT:-$build/conresnet_job}"

rm -rf "$out/data" "$out"/run_* "$out"/pred_* "$out"/metrics_*.csv "$out"/eval_*.txt
mkdir -p "$out"
t0=$(date +%s)
echo "== 1/4 brats-like phantom data set"
"$mmnet" phantom --task brats-like --out "$out/data" --cases 16 --test-cases 6 --seed 7
summary=""
for model in residual baseline; do
  config=$([ "$model" = residual ] && echo small || echo small-baseline)
  echo "== 2/4 train ConResNet ($config)"
  t1=$(date +%s)
  "$mmnet" train --data "$out/data" --model conresnet --config "$config" --out "$out/run_$model" \
    --epochs 10 --iterations 40 --batch 2 --patch 32x32x32 --val-fraction 0.125 --seed 0 --progress lines "$@"
  t2=$(date +%s)
  echo "== 3/4 segment the held-out cases ($config)"
  "$mmnet" segment --weights "$out/run_$model/best.h5" --data "$out/data" --split test --out "$out/pred_$model"
  echo "== 4/4 evaluate ($config)"
  "$mmnet" evaluate --pred "$out/pred_$model" --truth "$out/data/labelsTs" --csv "$out/metrics_$model.csv" | tee "$out/eval_$model.txt"
  label=$([ "$model" = residual ] && echo "ConResNet (context residual, small)" || echo "Baseline (no context residual, small-baseline)")
  summary+="$label, training $(( t2 - t1 )) s"$'\n'"$(grep '^mean ' "$out/eval_$model.txt")"$'\n'
done

echo "== done in $(( $(date +%s) - start )) s (phantoms to metrics: $(( $(date +%s) - t0 )) s)"
printf '%s' "$summary"
echo "data: $out/data  runs: $out/run_{residual,baseline}  predictions: $out/pred_{residual,baseline}  metrics: $out/metrics_*.csv"
