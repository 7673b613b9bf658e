#!/usr/bin/env bash
# Benchmarks mmnet against PyTorch (Debian python3-torch) on this machine, in one run: builds a Release `mmnet`
# CLI (no tests, no CUDA, -march=native) and runs bench/compare.py, which times every case with `mmnet bench`
# and with PyTorch, interleaved, and prints a markdown table of ratios (docs/performance.md explains it).
#
#   bash bench/run.sh [compare.py options]     e.g. --quick, --threads 1, --stat min
#
# Environment: MMNET_BUILD_DIR (default build-bench). Results: $MMNET_BUILD_DIR/bench_compare.{md,jsonl}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
build="${MMNET_BUILD_DIR:-build-bench}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMMNET_BUILD_TESTS=OFF -DMMNET_BUILD_EXAMPLES=OFF \
      -DMMNET_BUILD_APPS=ON -DMMNET_WITH_CUDA=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target mmnet_cli
/usr/bin/python3 bench/compare.py --build-dir "$build" --markdown "$build/bench_compare.md" \
    --jsonl "$build/bench_compare.jsonl" "$@"
