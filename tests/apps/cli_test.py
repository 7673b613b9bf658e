"""Tests of the `mmnet` command-line tool (apps/mmnet): run with /usr/bin/python3 (h5py, numpy).

    cli_test.py <path to bin/mmnet> <work dir> [case ...]
    cli_test.py <path to bin/mmnet> <work dir> weights <path to examples/mmfnet_train_tiny>

Cases: info, forward, errors, bench (default: all); weights (loads the file the example saves). Each failure is printed; the exit status is the number of failures.
"""
import os
import subprocess
import sys

import h5py
import numpy as np

MMNET, WORK = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(*args):
    p = subprocess.run([MMNET, *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def write_h5(name, datasets):
    path = os.path.join(WORK, name)
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


def tiny_input(shape=(2, 3, 4, 12, 8), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def case_info():
    for config, params in (("paper", 1548403), ("tiny", 24152), ("single-modality", 679697),
                           ("base-mmfnet", 1531195), ("merge-baseline", 1701345), ("input-level", 6108865)):
        rc, out, err = run("info", "--model", "mmfnet", "--config", config)
        lines = out.strip().splitlines()
        check(rc == 0 and lines and lines[-1] == f"params: {params}", f"info {config}: last line 'params: {params}'")
    # Per-block shapes of spec §8 for the tiny network on 4 x 12 x 8 (batch 1), and counts that sum up.
    rc, out, err = run("info", "--model", "mmfnet", "--config", "tiny", "--shape", "4x12x8")
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and (parts[0].startswith(("encoders.", "fusions.", "decoder.", "head"))):
            rows[parts[0]] = (" ".join(parts[1:-1]).replace("(+ sigmoid) ", ""), int(parts[-1]))
    expected = {
        "encoders.0.block1": "1 x 4 x 4 x 12 x 8", "encoders.2.block2": "1 x 8 x 2 x 6 x 4",
        "encoders.1.bottleneck": "1 x 8 x 1 x 3 x 2", "fusions.1": "1 x 4 x 4 x 12 x 8",
        "fusions.2": "1 x 8 x 2 x 6 x 4", "decoder.2": "1 x 8 x 2 x 6 x 4", "decoder.1": "1 x 4 x 4 x 12 x 8",
        "head": "1 x 1 x 4 x 12 x 8",
    }
    for k, v in expected.items():
        check(k in rows and rows[k][0] == v, f"info tiny 4x12x8: {k} output {v} (got {rows.get(k)})")
    check(rc == 0 and len(rows) == 14, f"info tiny: 14 blocks (got {len(rows)})")
    check(sum(p for _, p in rows.values()) == 24152, "info tiny: block parameter counts sum to 24152")
    check(rows.get("fusions.1", (0, 0))[1] == 699 and rows.get("fusions.2", (0, 0))[1] == 2420,
          "info tiny: fusion blocks 699 + 2420 parameters (spec §8)")
    enc = sum(p for k, (_, p) in rows.items() if k.startswith("encoders.0."))
    check(enc == 4956, f"info tiny: encoder 4956 parameters (got {enc})")


def case_forward():
    x = tiny_input()
    inp = write_h5("cli_in.h5", {"input": x})
    outs = []
    for name, extra in (("a", ["--seed", "3"]), ("b", ["--seed", "3", "--threads", "1"]), ("c", ["--seed", "4"])):
        out = os.path.join(WORK, f"cli_out_{name}.h5")
        if os.path.exists(out):
            os.remove(out)
        rc, so, se = run("forward", "--model", "mmfnet", "--config", "tiny", "--input", inp, "--output", out, *extra)
        check(rc == 0, f"forward tiny {' '.join(extra)}: exit 0 (stderr: {se.strip()})")
        if rc != 0:
            return
        with h5py.File(out, "r") as f:
            check(list(f.keys()) == ["output"], "forward: the output file holds dataset 'output'")
            y = f["output"]
            check(y.shape == (2, 1, 4, 12, 8), f"forward: output shape (2, 1, 4, 12, 8) (got {y.shape})")
            check(y.dtype == np.float32, f"forward: output float32 (got {y.dtype})")
            y = y[()]
        check(bool(np.all(np.isfinite(y)) and np.all(y > 0) and np.all(y < 1)), "forward: probabilities in (0, 1)")
        outs.append(y)
    check(np.array_equal(outs[0], outs[1]), "forward: same seed, 1 thread vs default threads: identical output")
    check(not np.array_equal(outs[0], outs[2]), "forward: another seed gives another initialisation")
    # float64 input is accepted (converted to float32 like the weights).
    inp64 = write_h5("cli_in64.h5", {"input": x.astype(np.float64)})
    out = os.path.join(WORK, "cli_out_d.h5")
    rc, so, se = run("forward", "--config", "tiny", "--input", inp64, "--output", out, "--seed", "3")
    with h5py.File(out, "r") as f:
        check(rc == 0 and np.array_equal(f["output"][()], outs[0]), "forward: float64 input gives the same output")


def one_line_error(args, what):
    rc, out, err = run(*args)
    lines = err.strip("\n").split("\n")
    check(rc == 2 and len(lines) == 1 and lines[0].startswith("mmnet: ") and len(lines[0]) > 10,
          f"{what}: exit 2, one line on stderr (rc {rc}, stderr {err[:200]!r})")
    return lines[0]


def case_errors():
    out = os.path.join(WORK, "cli_err_out.h5")
    fwd = ["forward", "--model", "mmfnet", "--config", "tiny", "--output", out]
    msg = one_line_error(fwd + ["--input", write_h5("cli_2ch.h5", {"input": tiny_input((2, 2, 4, 12, 8))})],
                         "wrong channel count")
    check("2 channels" in msg and "3 modalities" in msg, f"wrong channel count: message names 2 and 3 ({msg})")
    msg = one_line_error(fwd + ["--input", write_h5("cli_rank4.h5", {"input": tiny_input((3, 4, 12, 8))})],
                         "wrong rank")
    check("rank 4" in msg, f"wrong rank: message names rank 4 ({msg})")
    msg = one_line_error(fwd + ["--input", write_h5("cli_noinput.h5", {"x": tiny_input()})], "missing dataset")
    check("'input'" in msg, f"missing dataset: message names 'input' ({msg})")
    one_line_error(fwd + ["--input", os.path.join(WORK, "does_not_exist.h5")], "missing input file")
    one_line_error(fwd + ["--input", write_h5("cli_size.h5", {"input": tiny_input((1, 3, 5, 12, 8))})],
                   "spatial size not a multiple of 2^L")
    inp = write_h5("cli_ok.h5", {"input": tiny_input()})
    one_line_error(fwd + ["--input", inp, "--weights", os.path.join(WORK, "no_weights.h5")], "missing weights file")
    msg = one_line_error(fwd + ["--input", inp, "--weights", write_h5("cli_badw.h5", {"head.weight": np.zeros((1, 4, 1, 1, 1))})],
                         "weights that do not fit")
    one_line_error(fwd + ["--input", inp, "--backend", "tpu"], "unknown backend")
    one_line_error(["forward", "--config", "huge", "--input", inp, "--output", out], "unknown config")
    one_line_error(["forward", "--model", "unet", "--input", inp, "--output", out], "unknown model")
    one_line_error(["forward", "--config", "tiny", "--output", out], "missing --input")
    one_line_error(["info", "--config", "tiny", "--shape", "3x4x4"], "info: size not a multiple of 2^L")
    one_line_error(["info", "--config", "tiny", "--shape", "4x12"], "info: malformed --shape")
    check(not os.path.exists(out), "no output file is written on error")
    # --backend cuda: runs where the tool was built with the cuda backend, else a clear one-line error.
    rc, so, se = run(*(fwd + ["--input", inp, "--backend", "cuda"]))
    if rc == 0:
        check(os.path.exists(out), "--backend cuda: output written")
        os.remove(out)
    else:
        check(rc == 2 and "cuda backend" in se and len(se.strip().splitlines()) == 1,
              f"--backend cuda without the cuda backend: exit 2, one line ({se!r})")


def case_weights(example):
    """--weights: the example's trained tiny model replaces the seeded initialisation entirely."""
    weights = os.path.join(WORK, "mmfnet_tiny.h5")
    p = subprocess.run([example, "3", weights], capture_output=True, text=True, timeout=300)
    check(p.returncode == 0 and os.path.exists(weights), f"example mmfnet_train_tiny saves weights ({p.stderr.strip()})")
    inp = write_h5("cli_w_in.h5", {"input": tiny_input()})
    ys = []
    for seed, w in (("1", weights), ("2", weights), ("1", None)):
        out = os.path.join(WORK, f"cli_w_out_{seed}_{bool(w)}.h5")
        rc, so, se = run("forward", "--config", "tiny", "--input", inp, "--output", out, "--seed", seed,
                         *(["--weights", w] if w else []))
        check(rc == 0, f"forward --seed {seed} {'--weights' if w else ''}: exit 0 ({se.strip()})")
        with h5py.File(out, "r") as f:
            ys.append(f["output"][()])
    check(np.array_equal(ys[0], ys[1]), "--weights: the seed no longer matters")
    check(not np.array_equal(ys[0], ys[2]), "--weights: output differs from the seeded initialisation")
    rc, so, se = run("forward", "--config", "paper", "--input", inp, "--output", os.path.join(WORK, "x.h5"),
                     "--weights", weights)
    check(rc == 2 and len(se.strip().splitlines()) == 1, "tiny weights into the paper config: exit 2, one line")


def bench_json(args, what):
    """Runs `mmnet bench ...`; checks exit 0 and exactly one JSON object on stdout, returns it ({} on failure)."""
    import json
    rc, out, err = run("bench", *args)
    lines = out.strip().splitlines()
    try:
        obj = json.loads(lines[0]) if rc == 0 and len(lines) == 1 else None
    except ValueError:
        obj = None
    check(obj is not None, f"{what}: exit 0 and one JSON line ({err.strip()})")
    return obj or {}


def case_bench():
    # conv3d: the three passes timed, positive rates; output extents follow stride, padding and dilation.
    small = ["--cin", "2", "--cout", "3", "--shape", "4x6x5", "--batch", "2", "--threads", "1", "--repeats", "1"]
    for extra, out_shape in (([], [4, 6, 5]), (["--stride", "2"], [2, 3, 3]),
                             (["--dilation", "2", "--padding", "2"], [4, 6, 5]), (["--stride", "1,2,1"], [4, 3, 5])):
        r = bench_json(["conv3d", *small, "--kernel", "3", *extra], f"bench conv3d {' '.join(extra)}")
        keys = ("fwd_s", "bwd_data_s", "bwd_weight_s", "fwd_gflops", "bwd_data_gflops", "bwd_weight_gflops")
        check(all(isinstance(r.get(k), (int, float)) and r[k] > 0 for k in keys), f"bench conv3d {extra}: {keys} > 0")
        check(r.get("out_shape") == out_shape and r.get("threads") == 1,
              f"bench conv3d {extra}: out_shape {out_shape} (got {r.get('out_shape')}), threads 1")
    r = bench_json(["conv3d", *small, "--kernel", "1,3,3"], "bench conv3d --kernel 1,3,3")
    check(r.get("padding") == [0, 1, 1] and r.get("out_shape") == [4, 6, 5], "bench conv3d: default padding kernel / 2")
    check(abs(r.get("gflop", 0) - 2 * 2 * 3 * 4 * 6 * 5 * 2 * 9 * 1e-9) < 1e-15, "bench conv3d: FLOPs 2 out_numel Cin kvol")
    # train-step: both models, one process each; the parameter counts of the models.
    for model, params in ((["--model", "mmfnet", "--config", "tiny", "--shape", "4x8x8"], 24152),
                          (["--model", "tiny", "--shape", "3x5x4"], 381)):
        r = bench_json(["train-step", *model, "--batch", "1", "--threads", "1", "--repeats", "1"], f"bench {model}")
        keys = ("train_step_s", "infer_s", "peak_rss_mb")
        check(all(isinstance(r.get(k), (int, float)) and r[k] > 0 for k in keys) and r.get("params") == params,
              f"bench train-step {model[1]}: {keys} > 0, params {params} (got {r.get('params')})")
    for args, what in ((["conv3d", *small, "--kernel", "0"], "kernel 0"),
                       (["conv3d", *small, "--kernel", "3,3"], "two kernel sizes"),
                       (["conv3d", *small, "--kernel", "7", "--padding", "0"], "kernel larger than the input"),
                       (["conv3d", "--cin", "2", "--cout", "3", "--shape", "4x6", "--kernel", "3"], "shape 4x6"),
                       (["train-step", "--model", "mmfnet", "--config", "tiny", "--shape", "4x8x6"], "shape not a multiple of 4"),
                       (["train-step", "--model", "unet"], "unknown model")):
        one_line_error(["bench", *args], f"bench {what}")


cases = {"info": case_info, "forward": case_forward, "errors": case_errors, "bench": case_bench}
os.makedirs(WORK, exist_ok=True)
if sys.argv[3:4] == ["weights"]:
    case_weights(sys.argv[4])
else:
    for name in sys.argv[3:] or cases:
        cases[name]()
print(f"{len(failures)} failure(s)")
sys.exit(min(len(failures), 100))
