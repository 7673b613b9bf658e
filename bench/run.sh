#!/usr/bin/env bash
# Benchmarks mmnet against PyTorch (Debian python3-torch) on the same machine in the same run, and prints
# time ratios (mmnet / PyTorch: below 1 means mmnet is faster). Usage: bash bench/run.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
threads="${1:-$(nproc)}"
build="${MMNET_BUILD_DIR:-build-bench}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMMNET_BUILD_BENCH=ON -DMMNET_BUILD_TESTS=OFF -DMMNET_WITH_CUDA=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target mmnet_bench
"$build/bench/mmnet_bench" --threads "$threads" | tee "$build/mmnet.jsonl"
/usr/bin/python3 bench/torch_bench.py --threads "$threads" | tee "$build/torch.jsonl"
/usr/bin/python3 - "$build/mmnet.jsonl" "$build/torch.jsonl" <<'PY'
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])]
t = [json.loads(l) for l in open(sys.argv[2])]
print(f"{'benchmark':<48} {'mmnet s':>10} {'torch s':>10} {'ratio':>7}")
for a, b in zip(m, t):
    for key in ("fwd_s", "bwd_s", "step_s"):
        if key in a:
            name = f"{a['bench']} {a['case']} {key[:-2]}"
            print(f"{name:<48} {a[key]:>10.4f} {b[key]:>10.4f} {a[key] / b[key]:>7.2f}")
PY
