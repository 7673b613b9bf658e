"""Regenerates every fixture: python3 generate_all.py OUTDIR [name ...]. One process, so torch loads once."""
import glob
import importlib.util
import os
import sys
import time

import torch

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)  # deterministic reductions

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
outdir = sys.argv[1]
only = set(sys.argv[2:])
scripts = sorted(glob.glob(os.path.join(here, "*_ref.py")))
t0 = time.time()
for path in scripts:
    name = os.path.basename(path)[: -len("_ref.py")]
    if only and name not in only:
        continue
    spec = importlib.util.spec_from_file_location(name + "_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.generate(outdir)
    print(f"fixture {name}: written", flush=True)
print(f"{len(scripts)} reference scripts, {time.time() - t0:.1f} s", flush=True)
