#!/usr/bin/env bash
# The main job: installs dependencies, builds, trains a small 3D segmentation network on built-in synthetic
# multi-modal volumes, saves the weights to HDF5, reloads them and segments held-out volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
build="${MMNET_BUILD_DIR:-build}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(nproc)" --target tiny_train
"$build/examples/tiny_train" --out "$build/tiny_net.h5" "$@"  # a later --out wins
