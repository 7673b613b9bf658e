#!/usr/bin/env bash
# CSCN on npc-like phantoms (docs/models/cscn.md, docs/pipeline.md "CSCN runs", issue [G]): installs dependencies,
# builds the `mmnet` tool (Release, tests off), then
#   1. mmnet phantom  --task npc-like: single-modality T1 head-and-neck phantoms, a small nasopharyngeal tumour,
#                     24 x 64 x 64 voxels of 3 x 1 x 1 mm (train and segment resample them to 1 mm: 72 x 64 x 64)
#   2. mmnet train    CSCN (config small: the paper's 8 x 24 x 24 blocks, stride and ROI margin, narrow networks):
#                     stage 1 BUNet, stage 2 ACDNet on [image, P_coarse] (--epochs x --iterations per stage)
#   3. mmnet segment  the held-out cases with the cascade (P_final > 0.5), and with BUNet alone (--stage coarse,
#                     the coarse stage's multi-view mask: the baseline)
#   4. mmnet evaluate Dice / HD95 / ASSD of both on the case's own grid (3 x 1 x 1 mm), then a summary
# Extra arguments go to `mmnet train`, e.g. `--epochs 10`. Everything lands in $MMNET_OUT (default build-rel/cscn_job).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_cli.sh
out="${MMNET_OUT:-$build/cscn_job}"

rm -rf "$out/data" "$out/run" "$out"/pred_* "$out"/metrics_*.csv "$out"/eval_*.txt
mkdir -p "$out"
t0=$(date +%s)
echo "== 1/4 npc-like phantom data set"
"$mmnet" phantom --task npc-like --out "$out/data" --cases 20 --test-cases 8 --seed 7
echo "== 2/4 train CSCN (small): BUNet, then ACDNet"
"$mmnet" train --data "$out/data" --model cscn --config small --out "$out/run" \
  --epochs 6 --iterations 50 --batch 8 --val-fraction 0.1 --seed 0 --progress lines "$@"
summary=""
for stage in cascade coarse; do
  echo "== 3/4 segment the held-out cases: $stage"
  "$mmnet" segment --weights "$out/run/best.h5" --data "$out/data" --split test --out "$out/pred_$stage" --stage "$stage"
  echo "== 4/4 evaluate ($stage)"
  "$mmnet" evaluate --pred "$out/pred_$stage" --truth "$out/data/labelsTs" --csv "$out/metrics_$stage.csv" | tee "$out/eval_$stage.txt"
  label=$([ "$stage" = cascade ] && echo "CSCN (cascade)   " || echo "BUNet alone      ")
  summary+="$label $(grep '^mean dice' "$out/eval_$stage.txt")"$'\n'
done

echo "== done in $(( $(date +%s) - start )) s (phantoms to metrics: $(( $(date +%s) - t0 )) s)"
printf '%s' "$summary"
echo "data: $out/data  run: $out/run (bunet/, acdnet/)  predictions: $out/pred_{cascade,coarse}  metrics: $out/metrics_*.csv"
