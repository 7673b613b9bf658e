#!/usr/bin/env bash
# HMRNet on barriers phantoms (docs/models/hmrnet.md "Command line", docs/pipeline.md "HMRNet runs", issue [H]):
# installs dependencies, builds the `mmnet` tool (Release, tests off), then
#   1. mmnet phantom  --task barriers: CT / T1c / T2 head phantoms, 48 x 56 x 48 voxels of 1.2 mm, labels
#                     1 cerebellum, 2 falx, 3 sinuses, 4 tentorium, 5 ventricles
#   2. mmnet train    HMRNet two-stage (config small): stage 1 a coarse 6-class U-Net on whole volumes, stage 2 one
#                     binary HMRNet per part (-p cerebellum, tentorium, ventricles; -s falx and the two sinus parts)
#                     on the ground-truth crops (--epochs x --iterations per stage)
#   3. mmnet segment  the held-out cases two-stage (boxes from stage 1, fine HMRNets, paste-back), and stage 1
#                     alone (--stage coarse, the baseline)
#   4. mmnet evaluate Dice / HD95 / ASSD per structure of both, then a summary
# Extra arguments go to `mmnet train`, e.g. `--epochs 10`. Everything lands in $MMNET_OUT (default build-rel/hmrnet_job).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_cli.sh
out="${MMNET_OUT:-$build/hmrnet_job}"

rm -rf "$out/data" "$out/run" "$out"/pred_* "$out"/metrics_*.csv "$out"/eval_*.txt
mkdir -p "$out"
t0=$(date +%s)
echo "== 1/4 barriers phantom data set"
"$mmnet" phantom --task barriers --out "$out/data" --cases 12 --test-cases 6 --seed 7
echo "== 2/4 train HMRNet (small): stage-1 U-Net, then the six fine HMRNets"
"$mmnet" train --data "$out/data" --model hmrnet --config small --out "$out/run" \
  --stage1-epochs 16 --epochs 8 --iterations 20 --batch 2 --val-fraction 0.1 --seed 0 --progress lines "$@"
t1=$(date +%s)
summary=""
for stage in cascade coarse; do
  echo "== 3/4 segment the held-out cases: $stage"
  "$mmnet" segment --weights "$out/run/best.h5" --data "$out/data" --split test --out "$out/pred_$stage" --stage "$stage"
  echo "== 4/4 evaluate ($stage)"
  "$mmnet" evaluate --pred "$out/pred_$stage" --truth "$out/data/labelsTs" --csv "$out/metrics_$stage.csv" | tee "$out/eval_$stage.txt"
  label=$([ "$stage" = cascade ] && echo "HMRNet two-stage" || echo "stage 1 alone   ")
  summary+="$label"$'\n'"$(grep -E '^(mean|average) ' "$out/eval_$stage.txt")"$'\n'
done

echo "== done in $(( $(date +%s) - start )) s (phantoms to metrics: $(( $(date +%s) - t0 )) s, training $(( t1 - t0 )) s)"
printf '%s' "$summary"
echo "data: $out/data  run: $out/run (stage1/, one directory per part)  predictions: $out/pred_{cascade,coarse}  metrics: $out/metrics_*.csv"
