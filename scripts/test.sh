#!/usr/bin/env bash
# Runs every mmnet test: installs dependencies, configures, builds, regenerates the PyTorch fixtures and runs
# ctest (cpu backend, cuda backend through Thrust on OpenMP, nvcc build when nvcc exists, downstream consumer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
build="${MMNET_BUILD_DIR:-build}"
jobs="$(nproc)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
start=$(date +%s)
cmake --build "$build" -j"$jobs"
echo "[mmnet] build time: $(( $(date +%s) - start )) s"
cd "$build"
start=$(date +%s)
ctest --output-on-failure -j"$jobs"
echo "[mmnet] test time: $(( $(date +%s) - start )) s"
