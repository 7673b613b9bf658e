#!/usr/bin/env bash
# The main job (docs/pipeline.md): installs dependencies, builds the `mmnet` tool (Release, tests off), then
#   1. mmnet phantom   synthetic T1/T2/CET1 head phantoms with a lesion label: training cases + held-out test cases
#   2. mmnet train     MMFNet (config small) with soft Dice + Adam, foreground-oversampled augmented patches,
#                      validation Dice every epoch -> best.h5 / last.h5 / log.csv / curves.svg / config.json
#   3. mmnet segment   the held-out test cases: sliding-window inference, threshold, largest component, uncrop
#   4. mmnet evaluate  Dice / HD95 / ASSD per case and their means
# Everything lands in $MMNET_OUT (default build-rel/main_job). Extra arguments go to `mmnet train` (a later
# option wins), e.g. `bash scripts/main.sh --epochs 12`. Re-running starts from fresh data and a fresh run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_cli.sh
out="${MMNET_OUT:-$build/main_job}"  # under the (git-ignored) build directory

rm -rf "$out/data" "$out/run" "$out/pred"
mkdir -p "$out"
echo "== 1/4 phantom data set"
"$mmnet" phantom --out "$out/data" --cases 10 --test-cases 4 --seed 7 --shape 16x64x64
echo "== 2/4 train MMFNet (small)"
"$mmnet" train --data "$out/data" --model mmfnet --config small --out "$out/run" \
  --epochs 8 --iterations 20 --batch 2 --patch 16x48x48 --lr 3e-3 --val-fraction 0.2 --seed 0 "$@"
echo "== 3/4 segment the held-out test cases"
"$mmnet" segment --weights "$out/run/best.h5" --data "$out/data" --split test --out "$out/pred" \
  --largest-component --png
echo "== 4/4 evaluate"
"$mmnet" evaluate --pred "$out/pred" --truth "$out/data/labelsTs" --csv "$out/metrics.csv"

echo "== done in $(( $(date +%s) - start )) s"
echo "data set:     $out/data (dataset.json, imagesTr, labelsTr, imagesTs, labelsTs)"
echo "training run: $out/run (best.h5, last.h5, log.csv, curves.svg, config.json)"
echo "predictions:  $out/pred (CASE.nii.gz in the input geometry, CASE.png overlays)"
echo "metrics:      $out/metrics.csv"
