"""Tests of the `mmnet` command-line tool (apps/mmnet): run with /usr/bin/python3 (h5py, numpy).

    cli_test.py <path to bin/mmnet> <work dir> [case ...]
    cli_test.py <path to bin/mmnet> <work dir> weights <path to examples/mmfnet_train_tiny>

Cases: info, forward, errors, bench, pipeline, pipeline_errors, phantom_brats, evaluate_regions, maml_info, maml_forward,
maml_pipeline, phantom_npc, phantom_barriers, cscn_info, cscn_forward, cscn_pipeline, hmrnet_info, hmrnet_forward,
hmrnet_pipeline, conresnet_info, conresnet_forward, conresnet_pipeline (default: all); weights (loads the file the example
saves). pipeline: phantom -> train -> resume -> segment -> evaluate on tiny phantoms with the tiny config;
pipeline_errors: bad data sets, checkpoints and predictions exit 2 with one line and leave no output behind.
Each failure is printed; the exit status is the number of failures.
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


# Passive OpenMP waiting: on a shared, oversubscribed machine spinning threads make training several times slower.
ENV = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))


def run(*args):
    p = subprocess.run([MMNET, *args], capture_output=True, text=True, timeout=300, env=ENV)
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
    # train-step: every model, one process each; the parameter counts of the models' tiny presets.
    for model, params in ((["--model", "mmfnet", "--config", "tiny", "--shape", "4x8x8"], 24152),
                          (["--model", "tiny", "--shape", "3x5x4"], 381),
                          (["--model", "maml", "--config", "tiny", "--shape", "16x16x16"], 120272),
                          (["--model", "cscn-bunet", "--config", "tiny", "--shape", "4x8x12"], 18116),
                          (["--model", "cscn-acdnet", "--config", "tiny", "--shape", "4x8x12"], 42898),
                          (["--model", "hmrnet-p", "--config", "tiny", "--shape", "8x8x16"], 196866),
                          (["--model", "hmrnet-s", "--config", "tiny", "--shape", "8x8x8"], 151806),
                          (["--model", "conresnet", "--config", "tiny", "--shape", "8x8x8"], 298544)):
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



# ---- the segmentation pipeline: phantom -> train -> resume -> segment -> evaluate ---------------------------------

import gzip
import json
import re
import shutil
import signal
import struct


def read_nifti(path):
    """A minimal NIfTI-1 reader (single file, little-endian): the header fields that fix the geometry and the data."""
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    assert struct.unpack_from("<i", raw, 0)[0] == 348, f"{path}: not a little-endian NIfTI-1 file"
    dim = struct.unpack_from("<8h", raw, 40)
    datatype = struct.unpack_from("<h", raw, 70)[0]
    pixdim = struct.unpack_from("<8f", raw, 76)
    vox_offset = int(struct.unpack_from("<f", raw, 108)[0])
    qform_code, sform_code = struct.unpack_from("<2h", raw, 252)
    quatern = struct.unpack_from("<6f", raw, 256)
    srow = struct.unpack_from("<12f", raw, 280)
    dims = dim[1:1 + dim[0]]
    dtype = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64}[datatype]
    n = int(np.prod(dims))
    data = np.frombuffer(raw, dtype=dtype, count=n, offset=vox_offset)
    geometry = {"dims": dims, "pixdim": pixdim[1:1 + dim[0]], "qform_code": qform_code, "sform_code": sform_code,
                "quatern": quatern, "srow": srow}
    return geometry, data, datatype, raw, vox_offset


def patch_nifti(src, dst, change):
    """Copies a NIfTI file, letting change(data) edit a writable copy of its voxels (same data type)."""
    geometry, data, datatype, raw, off = read_nifti(src)
    data = data.copy()
    change(data)
    out = raw[:off] + data.tobytes() + raw[off + data.nbytes:]
    with gzip.open(dst, "wb") as f:
        f.write(out)


T_SHAPE, T_PATCH = "12x24x20", "8x16x16"  # tiny phantoms (axes all different), tiny-config patches


def train_args(data, out, *extra):
    return ["train", "--data", data, "--config", "tiny", "--out", out, "--patch", T_PATCH, "--batch", "2",
            "--iterations", "2", "--seed", "5", "--progress", "lines", *extra]


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as f:
        return [line.strip().split(",") for line in f.read().strip().splitlines()]


def model_weights(path):
    with h5py.File(path, "r") as f:
        out = {}
        f["model"].visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
        return out


def case_pipeline():
    data = os.path.join(WORK, "data")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    for sub in ("phantom", "train", "segment", "evaluate"):
        rc, out, err = run(sub, "--help")
        check(rc == 0 and "--" in out and len(out.splitlines()) > 3, f"{sub} --help: exit 0 and the options")
    rc, out, err = run("phantom", "--out", data, "--cases", "4", "--test-cases", "2", "--seed", "3", "--shape", T_SHAPE)
    check(rc == 0, f"phantom: exit 0 ({err.strip()})")
    with open(os.path.join(data, "dataset.json")) as f:
        ds = json.load(f)
    check(ds["numTraining"] == 4 and ds["numTest"] == 2 and ds["modality"] == {"0": "T1", "1": "T2", "2": "CET1"},
          "phantom: dataset.json lists 4 training and 2 test cases, modalities T1 T2 CET1")
    tests = [os.path.basename(t)[:-len(".nii.gz")] for t in ds["test"]]
    for t in tests:
        check(os.path.exists(os.path.join(data, "labelsTs", t + ".nii.gz")) and
              all(os.path.exists(os.path.join(data, "imagesTs", f"{t}_{m:04d}.nii.gz")) for m in range(3)),
              f"phantom: imagesTs and labelsTs of {t}")
    g, _, _, _, _ = read_nifti(os.path.join(data, "imagesTr", "phantom_001_0000.nii.gz"))
    check(g["dims"] == (20, 24, 12), f"phantom: --shape 12x24x20 is (D, H, W): NIfTI dims (20, 24, 12) (got {g['dims']})")

    # Two epochs straight, and one epoch then --resume up to two: identical logs and weights.
    run_a, run_b = os.path.join(WORK, "run_a"), os.path.join(WORK, "run_b")
    rc, out, err = run(*train_args(data, run_a, "--epochs", "2"))
    check(rc == 0, f"train: exit 0 ({err.strip()[-300:]})")
    for f in ("best.h5", "last.h5", "log.csv", "curves.svg", "config.json"):
        check(os.path.exists(os.path.join(run_a, f)), f"train: RUN/{f} written")
    check("epoch 2/2" in out and "val dice" in out, "train: progress lines with the validation Dice")
    with open(os.path.join(run_a, "config.json")) as f:
        cfg = json.load(f)
    check(cfg["model"] == "mmfnet" and cfg["config"] == "tiny" and cfg["patch"] == [8, 16, 16] and
          cfg["normalization"]["clips"] == [[-2, 1], [-3, 2], [-2, 3.5]] and len(cfg["val_cases"]) == 1,
          f"train: config.json holds model, config, patch, clips, the validation case ({cfg})")
    log_a = read_log(run_a)
    check(len(log_a) == 3 and log_a[0][:5] == ["epoch", "iteration", "train_loss", "val_loss", "val_dice"],
          f"train: log.csv has a header and 2 epochs ({log_a})")
    rc, out, err = run(*train_args(data, run_b, "--epochs", "1"))
    check(rc == 0 and len(read_log(run_b)) == 2, f"train --epochs 1: exit 0, one epoch ({err.strip()[-200:]})")
    rc, out, err = run("train", "--out", run_b, "--resume", "--epochs", "2", "--progress", "lines")
    log_b = read_log(run_b)
    check(rc == 0 and "resuming at epoch 2" in out, f"train --resume: exit 0, continues at epoch 2 ({err.strip()[-200:]})")
    check([r[:5] for r in log_b] == [r[:5] for r in log_a],
          "train --resume: log.csv equals the uninterrupted run's (losses, validation Dice)")
    wa, wb = model_weights(os.path.join(run_a, "last.h5")), model_weights(os.path.join(run_b, "last.h5"))
    check(wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa),
          "train --resume: last.h5 weights bit-identical to the uninterrupted run's")

    # Ctrl-C in the middle of an epoch: exit 130 with last.h5 saved; --resume then ends where a straight run ends.
    import signal
    run_c, run_d = os.path.join(WORK, "run_c"), os.path.join(WORK, "run_d")
    long_args = ["--epochs", "1", "--iterations", "200"]
    run(*train_args(data, run_c, *long_args))
    p = subprocess.Popen([MMNET, *train_args(data, run_d, *long_args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in p.stdout:  # the signal goes once training runs (progress line at iteration 20)
        if line.startswith("epoch 1/1 it 20/"):
            p.send_signal(signal.SIGINT)
            break
    out, err = p.communicate(timeout=120)
    check(p.returncode == 130 and "interrupted" in out and os.path.exists(os.path.join(run_d, "last.h5")),
          f"train + SIGINT: exit 130, last.h5 saved (rc {p.returncode}, {err.strip()[-200:]})")
    rc, out, err = run("train", "--out", run_d, "--resume")
    check(rc == 0 and "resuming at epoch 1 iteration" in out and
          [r[:5] for r in read_log(run_d)] == [r[:5] for r in read_log(run_c)],
          f"train --resume after SIGINT mid-epoch: log.csv equals the uninterrupted run's ({err.strip()[-200:]})")
    wc, wd = model_weights(os.path.join(run_c, "last.h5")), model_weights(os.path.join(run_d, "last.h5"))
    check(wc.keys() == wd.keys() and all(np.array_equal(wc[k], wd[k]) for k in wc),
          "train --resume after SIGINT mid-epoch: last.h5 weights bit-identical")

    pred = os.path.join(WORK, "pred")
    rc, out, err = run("segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--split", "test",
                       "--out", pred, "--png", "--tta", "--largest-component")
    check(rc == 0, f"segment: exit 0 ({err.strip()[-300:]})")
    for t in tests:
        p = os.path.join(pred, t + ".nii.gz")
        check(os.path.exists(p) and os.path.exists(os.path.join(pred, t + ".png")), f"segment: {t}.nii.gz and {t}.png")
        if not os.path.exists(p):
            continue
        gp, vp, dt, _, _ = read_nifti(p)
        gi, _, _, _, _ = read_nifti(os.path.join(data, "imagesTs", t + "_0000.nii.gz"))
        check(gp == gi, f"segment: {t} has the input's geometry (dims, pixdim, qform, sform): {gp == gi}")
        check(dt == 2 and set(np.unique(vp)) <= {0, 1}, f"segment: {t} uint8 labels 0/1")
        with open(os.path.join(pred, t + ".png"), "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"segment: {t}.png is a PNG")

    csv = os.path.join(WORK, "eval.csv")
    rc, out, err = run("evaluate", "--pred", pred, "--truth", os.path.join(data, "labelsTs"), "--csv", csv)
    lines = out.strip().splitlines()
    num = r"([0-9]+\.[0-9]+|nan)"
    check(rc == 0 and bool(lines) and re.fullmatch(f"mean dice: {num}  mean hd95: {num}  mean assd: {num}", lines[-1]),
          f"evaluate: last line 'mean dice: X  mean hd95: Y  mean assd: Z' ({lines[-1:]}, {err.strip()})")
    with open(csv) as f:
        rows = f.read().strip().splitlines()
    check(rows[0] == "case,dice,iou,precision,recall,hd_mm,hd95_mm,assd_mm,nsd" and
          [r.split(",")[0] for r in rows[1:]] == tests, f"evaluate --csv: a header and one row per case ({rows})")
    # Perfect predictions: the truth itself gives Dice 1 and zero distances.
    rc, out, err = run("evaluate", "--pred", os.path.join(data, "labelsTs"), "--truth", os.path.join(data, "labelsTs"))
    check(rc == 0 and out.strip().splitlines()[-1] == "mean dice: 1.0000  mean hd95: 0.0000  mean assd: 0.0000",
          f"evaluate: the truth against itself ({out.strip().splitlines()[-1:]})")


def expect_error(args, what, *must_contain, absent=()):
    msg = one_line_error(args, what)
    for s in must_contain:
        check(s in msg, f"{what}: the message names {s!r} ({msg})")
    for p in absent:
        check(not os.path.exists(p), f"{what}: no output left behind ({p})")
    return msg


def case_pipeline_errors():
    base = os.path.join(WORK, "base")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    rc, _, err = run("phantom", "--out", base, "--cases", "3", "--test-cases", "1", "--seed", "9", "--shape", T_SHAPE)
    check(rc == 0, f"phantom: exit 0 ({err.strip()})")
    run_t = os.path.join(WORK, "run_tiny")
    rc, _, err = run(*train_args(base, run_t, "--epochs", "1", "--iterations", "1"))
    check(rc == 0, f"train: exit 0 ({err.strip()[-200:]})")

    def variant(name, edit):
        d = os.path.join(WORK, name)
        shutil.copytree(base, d)
        edit(d)
        return d

    out = os.path.join(WORK, "out")
    # phantom
    expect_error(["phantom", "--out", base, "--cases", "2", "--seed", "1"], "phantom into an existing data set", base)
    expect_error(["phantom", "--out", out, "--cases", "0", "--seed", "1"], "phantom --cases 0", "--cases", absent=[out])
    expect_error(["phantom", "--out", out, "--cases", "2", "--seed", "1", "--shape", "4x8"], "phantom --shape 4x8",
                 absent=[out])
    # train: bad paths and data
    expect_error(train_args(os.path.join(WORK, "nowhere"), out, "--epochs", "1"), "train --data missing", "nowhere",
                 absent=[out])
    missing = variant("missing_modality", lambda d: os.remove(os.path.join(d, "imagesTr", "phantom_002_0001.nii.gz")))
    expect_error(train_args(missing, out, "--epochs", "1"), "train: a missing modality file", "phantom_002_0001.nii.gz",
                 absent=[out])
    nan = variant("nan", lambda d: patch_nifti(os.path.join(base, "imagesTr", "phantom_001_0002.nii.gz"),
                                               os.path.join(d, "imagesTr", "phantom_001_0002.nii.gz"),
                                               lambda x: x.__setitem__(17, np.nan)))
    expect_error(train_args(nan, out, "--epochs", "1"), "train: NaN intensities", "phantom_001_0002.nii.gz", absent=[out])
    lab = variant("bad_label", lambda d: patch_nifti(os.path.join(base, "labelsTr", "phantom_003.nii.gz"),
                                                     os.path.join(d, "labelsTr", "phantom_003.nii.gz"),
                                                     lambda x: x.__setitem__(5, 3)))
    expect_error(train_args(lab, out, "--epochs", "1"), "train: label value 3", "phantom_003.nii.gz", absent=[out])
    expect_error(train_args(base, out, "--epochs", "1", "--patch", "6x16x16"), "train: patch not a multiple of 4",
                 "--patch", absent=[out])
    expect_error(train_args(base, out, "--epochs", "1", "--config", "huge"), "train: unknown config", absent=[out])
    expect_error(["train", "--out", out, "--resume"], "train --resume without a run", "last.h5", absent=[out])
    expect_error(["train", "--out", run_t, "--resume", "--config", "small"], "train --resume with another --config",
                 "config.json")
    expect_error(train_args(base, run_t, "--epochs", "1"), "train into an existing run", "--resume")
    # segment
    pred = os.path.join(WORK, "pred")
    expect_error(["segment", "--weights", os.path.join(WORK, "none.h5"), "--data", base, "--out", pred],
                 "segment: missing weights", "none.h5", absent=[pred])
    other = os.path.join(WORK, "run_other")
    os.makedirs(other)
    shutil.copy(os.path.join(run_t, "best.h5"), other)
    with open(os.path.join(run_t, "config.json")) as f:
        cfg = json.load(f)
    cfg["config"] = "small"
    with open(os.path.join(other, "config.json"), "w") as f:
        json.dump(cfg, f)
    expect_error(["segment", "--weights", os.path.join(other, "best.h5"), "--data", base, "--out", pred],
                 "segment: a checkpoint of another config", "mmfnet-tiny", absent=[pred])
    os.remove(os.path.join(other, "config.json"))
    expect_error(["segment", "--weights", os.path.join(other, "best.h5"), "--data", base, "--out", pred],
                 "segment: no config.json next to the weights", "config.json", absent=[pred])
    nan_ts = variant("nan_test", lambda d: patch_nifti(os.path.join(base, "imagesTs", "phantom_101_0000.nii.gz"),
                                                       os.path.join(d, "imagesTs", "phantom_101_0000.nii.gz"),
                                                       lambda x: x.__setitem__(3, np.inf)))
    expect_error(["segment", "--weights", os.path.join(run_t, "best.h5"), "--data", nan_ts, "--out", pred],
                 "segment: infinite intensities", "phantom_101_0000.nii.gz", absent=[pred])
    # evaluate
    rc, _, err = run("segment", "--weights", os.path.join(run_t, "best.h5"), "--data", base, "--out", pred)
    check(rc == 0, f"segment: exit 0 ({err.strip()[-200:]})")
    csv = os.path.join(WORK, "e.csv")
    truth = os.path.join(base, "labelsTs")
    empty = os.path.join(WORK, "empty_pred")
    os.makedirs(empty)
    expect_error(["evaluate", "--pred", empty, "--truth", truth, "--csv", csv], "evaluate: a missing prediction",
                 "phantom_101", absent=[csv])
    small = os.path.join(WORK, "small")
    rc, _, _ = run("phantom", "--out", small, "--cases", "1", "--test-cases", "1", "--seed", "9", "--shape", "8x24x20")
    expect_error(["evaluate", "--pred", os.path.join(small, "labelsTs"), "--truth", truth, "--csv", csv],
                 "evaluate: mismatched geometry", "phantom_101", "dims", absent=[csv])
    bad = os.path.join(WORK, "bad_truth")
    os.makedirs(bad)
    patch_nifti(os.path.join(truth, "phantom_101.nii.gz"), os.path.join(bad, "phantom_101.nii.gz"),
                lambda x: x.__setitem__(0, 7))
    expect_error(["evaluate", "--pred", pred, "--truth", bad, "--csv", csv], "evaluate: truth label 7",
                 "phantom_101.nii.gz", "7", absent=[csv])
    expect_error(["evaluate", "--pred", pred, "--truth", os.path.join(WORK, "nowhere")], "evaluate: missing --truth dir",
                 "nowhere")


# ---- the BraTS-like phantom and per-region evaluation -----------------------------------------------------------

BRATS_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"}


def case_phantom_brats():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    data = os.path.join(WORK, "brats")
    rc, out, err = run("phantom", "--task", "brats-like", "--out", data, "--cases", "3", "--test-cases", "2",
                       "--seed", "4", "--shape", "32x36x34")
    check(rc == 0 and "brats-like" in out and "1 x 1 x 1 mm" in out, f"phantom --task brats-like: exit 0 ({out!r} {err.strip()})")
    with open(os.path.join(data, "dataset.json")) as f:
        ds = json.load(f)
    check(ds["modality"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"} and ds["labels"] == BRATS_LABELS and
          ds["numTraining"] == 3 and ds["numTest"] == 2,
          f"phantom brats-like: dataset.json has T1 T1ce T2 FLAIR and labels {BRATS_LABELS} ({ds['modality']}, {ds['labels']})")
    names = [os.path.basename(e["image"])[:-len(".nii.gz")] for e in ds["training"]]
    names_ts = [os.path.basename(t)[:-len(".nii.gz")] for t in ds["test"]]
    seen = set()
    flair_ratio, t1ce_ratio = [], []
    for folder, lab, cases in (("imagesTr", "labelsTr", names), ("imagesTs", "labelsTs", names_ts)):
        for c in cases:
            mods = []
            for m in range(4):
                g, x, dt, _, _ = read_nifti(os.path.join(data, folder, f"{c}_{m:04d}.nii.gz"))
                mods.append(x.reshape(g["dims"][::-1]).astype(np.float64))
            gl, y, dtl, _, _ = read_nifti(os.path.join(data, lab, c + ".nii.gz"))
            y = y.reshape(gl["dims"][::-1])
            check(g["dims"] == (34, 36, 32) and tuple(round(p, 6) for p in g["pixdim"][:3]) == (1.0, 1.0, 1.0) and
                  dt == 16 and dtl == 2, f"phantom brats-like {c}: NIfTI dims (34, 36, 32), 1 mm, float32 images, uint8 labels")
            img = np.stack(mods)
            nonzero = np.any(img != 0, axis=0)
            # Skull-stripped: a voxel is zero in every modality or in none.
            check(bool(np.all(np.all(img != 0, axis=0) == nonzero)) and 0.1 < nonzero.mean() < 0.6,
                  f"phantom brats-like {c}: exact zeros outside the brain in all 4 modalities (brain {nonzero.mean():.2f})")
            check(set(np.unique(y)) <= {0, 1, 2, 3} and not np.any(y[~nonzero]),
                  f"phantom brats-like {c}: labels in 0..3, none outside the brain ({np.unique(y)})")
            seen |= set(np.unique(y).tolist())
            wt, et = y > 0, y == 3
            normal = nonzero & ~wt
            if wt.any() and et.any():
                flair_ratio.append(img[3][wt].mean() / img[3][normal].mean())
                t1ce_ratio.append(img[1][et].mean() / img[1][nonzero & ~et].mean())
    check(seen == {0, 1, 2, 3}, f"phantom brats-like: every label occurs ({seen})")
    check(len(flair_ratio) == 5 and min(flair_ratio) > 1.2 and min(t1ce_ratio) > 1.5,
          f"phantom brats-like: the whole tumour is bright in FLAIR, the enhancing part in T1ce "
          f"(FLAIR WT/normal {np.round(flair_ratio, 2)}, T1ce ET/rest {np.round(t1ce_ratio, 2)})")
    # The same seed writes the same voxels; the default size is 48 x 48 x 48.
    again = os.path.join(WORK, "brats_again")
    rc, _, err = run("phantom", "--task", "brats-like", "--out", again, "--cases", "3", "--test-cases", "2",
                     "--seed", "4", "--shape", "32x36x34")
    same = rc == 0 and all(
        np.array_equal(read_nifti(os.path.join(data, sub, f))[1], read_nifti(os.path.join(again, sub, f))[1])
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") for f in sorted(os.listdir(os.path.join(data, sub))))
    check(same, f"phantom brats-like: the same seed gives identical files ({err.strip()})")
    default = os.path.join(WORK, "brats_default")
    rc, out, err = run("phantom", "--task", "brats-like", "--out", default, "--cases", "1", "--test-cases", "0", "--seed", "1")
    g, _, _, _, _ = read_nifti(os.path.join(default, "imagesTr", "phantom_001_0003.nii.gz"))
    check(rc == 0 and g["dims"] == (48, 48, 48) and "48 x 48 x 48" in out, f"phantom brats-like: default 48 x 48 x 48 ({g['dims']})")
    # The default task is unchanged.
    mm = os.path.join(WORK, "mmfnet_default")
    rc, out, err = run("phantom", "--out", mm, "--cases", "1", "--test-cases", "0", "--seed", "1", "--shape", "8x16x16")
    with open(os.path.join(mm, "dataset.json")) as f:
        ds = json.load(f)
    check(rc == 0 and ds["modality"] == {"0": "T1", "1": "T2", "2": "CET1"} and ds["labels"] == {"0": "background", "1": "lesion"}
          and "4 x 1 x 1 mm" in out, f"phantom without --task: the mmfnet-like head phantom, 4 x 1 x 1 mm ({out.strip()})")
    expect_error(["phantom", "--task", "brats", "--out", os.path.join(WORK, "x"), "--cases", "1"], "phantom --task brats",
                 "--task", absent=[os.path.join(WORK, "x")])


def case_phantom_npc():
    """mmnet phantom --task npc-like: one T1 channel, label 1 tumour (small, brighter than muscle), 3 x 1 x 1 mm."""
    os.makedirs(WORK, exist_ok=True)
    data = os.path.join(WORK, "npc")
    shutil.rmtree(data, ignore_errors=True)
    rc, out, err = run("phantom", "--task", "npc-like", "--out", data, "--cases", "2", "--test-cases", "1", "--seed", "5")
    check(rc == 0 and "npc-like" in out and "24 x 64 x 64" in out and "3 x 1 x 1 mm" in out,
          f"phantom --task npc-like: exit 0, default 24 x 64 x 64 of 3 x 1 x 1 mm ({out!r} {err.strip()})")
    with open(os.path.join(data, "dataset.json")) as f:
        ds = json.load(f)
    check(ds["name"] == "mmnet_phantom_npc" and ds["modality"] == {"0": "T1"} and
          ds["labels"] == {"0": "background", "1": "tumour"} and ds["numTraining"] == 2 and ds["numTest"] == 1,
          f"phantom npc-like: dataset.json has one modality T1 and labels background / tumour ({ds['modality']}, {ds['labels']})")
    names = [os.path.basename(e["image"])[:-len(".nii.gz")] for e in ds["training"]]
    names_ts = [os.path.basename(t)[:-len(".nii.gz")] for t in ds["test"]]
    for folder, lab, cases in (("imagesTr", "labelsTr", names), ("imagesTs", "labelsTs", names_ts)):
        for c in cases:
            check(not os.path.exists(os.path.join(data, folder, f"{c}_0001.nii.gz")), f"phantom npc-like {c}: a single modality file")
            g, x, dt, _, _ = read_nifti(os.path.join(data, folder, f"{c}_0000.nii.gz"))
            gl, y, dtl, _, _ = read_nifti(os.path.join(data, lab, c + ".nii.gz"))
            check(g["dims"] == (64, 64, 24) and tuple(round(p, 6) for p in g["pixdim"][:3]) == (1.0, 1.0, 3.0) and
                  gl["dims"] == g["dims"] and tuple(round(p, 6) for p in gl["pixdim"][:3]) == (1.0, 1.0, 3.0) and
                  dt == 16 and dtl == 2,
                  f"phantom npc-like {c}: NIfTI dims (64, 64, 24), pixdim (1, 1, 3) mm (thick axial slices), float32 / uint8 "
                  f"({g['dims']}, {g['pixdim'][:3]})")
            img = x.reshape(g["dims"][::-1]).astype(np.float64)
            y = y.reshape(gl["dims"][::-1])
            tumour = y == 1
            volume_cm3 = tumour.sum() * 3.0 / 1000.0
            body = (img > 0.25) & ~tumour  # muscle, mucosa, fat ...: not air, airway or bone
            ratio = img[tumour].mean() / np.median(img[body]) if tumour.any() else 0.0
            check(set(np.unique(y).tolist()) == {0, 1} and 0.5 < volume_cm3 < 6.0 and ratio > 1.2,
                  f"phantom npc-like {c}: labels 0 / 1, a small tumour ({volume_cm3:.2f} cm^3) brighter than the body "
                  f"(tumour mean / body median {ratio:.2f})")
    again = os.path.join(WORK, "npc_again")
    shutil.rmtree(again, ignore_errors=True)
    rc, _, err = run("phantom", "--task", "npc-like", "--out", again, "--cases", "2", "--test-cases", "1", "--seed", "5")
    same = rc == 0 and all(
        np.array_equal(read_nifti(os.path.join(data, sub, f))[1], read_nifti(os.path.join(again, sub, f))[1])
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") for f in sorted(os.listdir(os.path.join(data, sub))))
    check(same, f"phantom npc-like: the same seed gives identical files ({err.strip()})")
    other = os.path.join(WORK, "npc_other")
    shutil.rmtree(other, ignore_errors=True)
    rc, out, err = run("phantom", "--task", "npc-like", "--out", other, "--cases", "1", "--test-cases", "0", "--seed", "6",
                       "--shape", "16x40x36")
    g, x, _, _, _ = read_nifti(os.path.join(other, "imagesTr", "phantom_001_0000.nii.gz"))
    check(rc == 0 and g["dims"] == (36, 40, 16) and tuple(round(p, 6) for p in g["pixdim"][:3]) == (1.0, 1.0, 3.0) and
          "16 x 40 x 36" in out, f"phantom npc-like --shape 16x40x36: dims (36, 40, 16) at 3 x 1 x 1 mm ({g['dims']}, {out.strip()})")


def case_phantom_barriers():
    """mmnet phantom --task barriers: CT / T1c / T2 channels, labels 1..5 (HMRNet's brain barriers), 1.2 mm isotropic."""
    os.makedirs(WORK, exist_ok=True)
    data = os.path.join(WORK, "barriers")
    shutil.rmtree(data, ignore_errors=True)
    rc, out, err = run("phantom", "--task", "barriers", "--out", data, "--cases", "2", "--test-cases", "1", "--seed", "6")
    check(rc == 0 and "barriers" in out and "48 x 56 x 48" in out and "1.2 x 1.2 x 1.2 mm" in out,
          f"phantom --task barriers: exit 0, default 48 x 56 x 48 of 1.2 mm ({out!r} {err.strip()})")
    with open(os.path.join(data, "dataset.json")) as f:
        ds = json.load(f)
    check(ds["name"] == "mmnet_phantom_barriers" and ds["modality"] == {"0": "CT", "1": "T1c", "2": "T2"} and
          ds["labels"] == {"0": "background", "1": "cerebellum", "2": "falx", "3": "sinuses", "4": "tentorium",
                           "5": "ventricles"} and ds["numTraining"] == 2 and ds["numTest"] == 1,
          f"phantom barriers: dataset.json has CT / T1c / T2 and labels 0..5 ({ds['modality']}, {ds['labels']})")
    names = [os.path.basename(e["image"])[:-len(".nii.gz")] for e in ds["training"]]
    names_ts = [os.path.basename(t)[:-len(".nii.gz")] for t in ds["test"]]
    for folder, lab, cases in (("imagesTr", "labelsTr", names), ("imagesTs", "labelsTs", names_ts)):
        for c in cases:
            imgs = []
            for m in range(3):
                g, x, dt, _, _ = read_nifti(os.path.join(data, folder, f"{c}_{m:04d}.nii.gz"))
                check(g["dims"] == (48, 56, 48) and tuple(round(p, 6) for p in g["pixdim"][:3]) == (1.2, 1.2, 1.2) and dt == 16,
                      f"phantom barriers {c} channel {m}: NIfTI dims (48, 56, 48), pixdim 1.2 mm, float32 ({g['dims']}, {g['pixdim'][:3]})")
                imgs.append(x.reshape(g["dims"][::-1]).astype(np.float64))
            gl, y, dtl, _, _ = read_nifti(os.path.join(data, lab, c + ".nii.gz"))
            y = y.reshape(gl["dims"][::-1])
            check(dtl == 2 and set(np.unique(y).tolist()) == {0, 1, 2, 3, 4, 5},
                  f"phantom barriers {c}: uint8 labels, all of 0..5 present ({np.unique(y).tolist()})")
            ct, t1c, t2 = imgs
            # falx one voxel thick along x (axis 2 of the z, y, x array); per-modality contrast
            falx_rows = (y == 2).sum(axis=2)
            brainish = (y == 0) & (ct > 0.3) & (ct < 0.6) & (t1c > 0.4)
            check(falx_rows.max() == 1 and t1c[y == 3].mean() > 1.5 * np.median(t1c[brainish]) and
                  t2[y == 5].mean() > 1.5 * np.median(t2[brainish]) and ct.max() > 0.8,
                  f"phantom barriers {c}: a one-voxel falx, bright sinuses in T1c, bright ventricles in T2, bright bone in CT")
    again = os.path.join(WORK, "barriers_again")
    shutil.rmtree(again, ignore_errors=True)
    rc, _, err = run("phantom", "--task", "barriers", "--out", again, "--cases", "2", "--test-cases", "1", "--seed", "6")
    same = rc == 0 and all(
        np.array_equal(read_nifti(os.path.join(data, sub, f))[1], read_nifti(os.path.join(again, sub, f))[1])
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") for f in sorted(os.listdir(os.path.join(data, sub))))
    check(same, f"phantom barriers: the same seed gives identical files ({err.strip()})")


def dice_np(p, t):
    s = p.sum() + t.sum()
    return float("nan") if t.sum() == 0 else 2.0 * np.logical_and(p, t).sum() / s


def case_evaluate_regions():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    data = os.path.join(WORK, "brats")
    rc, _, err = run("phantom", "--task", "brats-like", "--out", data, "--cases", "1", "--test-cases", "3", "--seed", "8",
                     "--shape", "32x36x34")
    check(rc == 0, f"phantom brats-like: exit 0 ({err.strip()})")
    truth, pred = os.path.join(data, "labelsTs"), os.path.join(WORK, "pred")
    os.makedirs(pred)
    # phantom_101: perfect; phantom_102: the enhancing part predicted as necrosis (ET Dice 0, TC and WT 1);
    # phantom_103: its truth has no enhancing voxel (ET absent: Dice nan, left out of the mean), and the prediction
    # loses the edema (WT < 1).
    patch_nifti(os.path.join(truth, "phantom_101.nii.gz"), os.path.join(pred, "phantom_101.nii.gz"), lambda x: None)
    patch_nifti(os.path.join(truth, "phantom_102.nii.gz"), os.path.join(pred, "phantom_102.nii.gz"),
                lambda x: x.__setitem__(x == 3, 2))
    t103 = os.path.join(truth, "phantom_103.nii.gz")
    patch_nifti(t103, t103, lambda x: x.__setitem__(x == 3, 2))
    patch_nifti(t103, os.path.join(pred, "phantom_103.nii.gz"), lambda x: x.__setitem__(x == 1, 0))
    cases = ["phantom_101", "phantom_102", "phantom_103"]
    regions = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    expected = {}
    for c in cases:
        t = read_nifti(os.path.join(truth, c + ".nii.gz"))[1]
        p = read_nifti(os.path.join(pred, c + ".nii.gz"))[1]
        for r, labs in regions.items():
            expected[(c, r)] = dice_np(np.isin(p, labs), np.isin(t, labs))
    csv = os.path.join(WORK, "regions.csv")
    rc, out, err = run("evaluate", "--pred", pred, "--truth", truth, "--csv", csv)
    lines = out.strip().splitlines()
    check(rc == 0, f"evaluate (auto -> brats): exit 0 ({err.strip()})")
    check(any("WT = {1,2,3}, TC = {2,3}, ET = {3}" in l for l in lines) and any("nan" in l and "empty" in l for l in lines),
          "evaluate brats: names the regions and the empty-region Dice convention")
    num = r"([0-9]+\.[0-9]+|nan|inf)"  # a missed region has an infinite Hausdorff distance
    means = {}
    for r in regions:
        m = [re.fullmatch(f"mean {r} dice: {num}  mean {r} hd95: {num}  mean {r} assd: {num}", l) for l in lines]
        m = [x for x in m if x]
        check(len(m) == 1, f"evaluate brats: one line 'mean {r} dice: X  mean {r} hd95: Y  mean {r} assd: Z'")
        if m:
            means[r] = float(m[0].group(1))
    check(lines[-3:] == [l for l in lines if l.startswith("mean ")], "evaluate brats: the mean lines come last (WT, TC, ET)")
    rows = [l.split() for l in lines if l.split()[:1] and l.split()[0] in cases]
    check([(r[0], r[1]) for r in rows] == [(c, r) for c in cases for r in regions],
          f"evaluate brats: one line per case and region ({[(r[0], r[1]) for r in rows]})")
    with open(csv) as f:
        csv_rows = [l.split(",") for l in f.read().strip().splitlines()]
    check(csv_rows[0] == ["case", "region", "dice", "iou", "precision", "recall", "hd_mm", "hd95_mm", "assd_mm", "nsd"],
          f"evaluate --csv: header with a region column ({csv_rows[0]})")
    got = {(r[0], r[1]): float(r[2]) for r in csv_rows[1:]}
    ok = len(got) == 9 and all((np.isnan(v) and np.isnan(got[k])) or abs(got[k] - v) < 1e-6 for k, v in expected.items())
    check(ok, f"evaluate --csv: per-region Dice equals numpy's ({got} vs {expected})")
    check(expected[("phantom_102", "ET")] == 0 and np.isnan(expected[("phantom_103", "ET")]) and
          expected[("phantom_103", "WT")] < 1, "evaluate regions: the test cases cover ET missed, ET absent, WT partial")
    want = {r: np.nanmean([expected[(c, r)] for c in cases]) for r in regions}
    check(means.keys() == want.keys() and all(abs(means[r] - want[r]) < 1e-4 for r in regions),
          f"evaluate brats: the means are nan-means over cases ({means} vs {want})")
    # Explicit --regions brats, a trailing slash, and --dataset give the same lines.
    for extra in (["--regions", "brats"], ["--dataset", data], ["--regions", "brats", "--truth", truth + "/"]):
        rc, out2, err = run("evaluate", "--pred", pred, "--truth", truth, *extra)
        check(rc == 0 and out2 == out, f"evaluate {' '.join(extra)}: the same output ({err.strip()})")
    # Per label: regions named by dataset.json.
    rc, out, err = run("evaluate", "--pred", pred, "--truth", truth, "--regions", "labels", "--csv", csv)
    lines = out.strip().splitlines()
    check(rc == 0 and [l.split(":")[0] for l in lines if l.startswith("mean ")] ==
          ["mean edema dice", "mean non-enhancing dice", "mean enhancing dice"],
          f"evaluate --regions labels: mean lines per label name ({lines[-3:]}, {err.strip()})")
    with open(csv) as f:
        got = {(r[0], r[1]): float(r[2]) for r in (l.split(",") for l in f.read().strip().splitlines()[1:])}
    exp_l = {}
    for c in cases:
        t = read_nifti(os.path.join(truth, c + ".nii.gz"))[1]
        p = read_nifti(os.path.join(pred, c + ".nii.gz"))[1]
        for k, name in ((1, "edema"), (2, "non-enhancing"), (3, "enhancing")):
            exp_l[(c, name)] = dice_np(p == k, t == k)
    check(len(got) == 9 and all((np.isnan(v) and np.isnan(got[k])) or abs(got[k] - v) < 1e-6 for k, v in exp_l.items()),
          f"evaluate --regions labels: per-label Dice equals numpy's ({got} vs {exp_l})")
    # Without a dataset.json: per label by value.
    loose = os.path.join(WORK, "loose", "labels")
    shutil.copytree(truth, loose)
    rc, out, err = run("evaluate", "--pred", pred, "--truth", loose, "--regions", "labels")
    check(rc == 0 and [l.split(":")[0] for l in out.strip().splitlines() if l.startswith("mean ")] ==
          ["mean 1 dice", "mean 2 dice", "mean 3 dice"], f"evaluate --regions labels without dataset.json: labels 1, 2, 3 ({err.strip()})")
    # Errors: binary evaluation of multi-class labels; a value dataset.json does not list.
    expect_error(["evaluate", "--pred", pred, "--truth", truth, "--regions", "binary"], "evaluate --regions binary on labels 0..3",
                 "phantom_101.nii.gz", "binary labels (0, 1)")
    bad = os.path.join(WORK, "bad_pred")
    shutil.copytree(pred, bad)
    patch_nifti(os.path.join(pred, "phantom_102.nii.gz"), os.path.join(bad, "phantom_102.nii.gz"), lambda x: x.__setitem__(3, 4))
    expect_error(["evaluate", "--pred", bad, "--truth", truth, "--csv", os.path.join(WORK, "bad.csv")],
                 "evaluate brats: a label value dataset.json does not list", "phantom_102.nii.gz", "label value 4",
                 "dataset.json", absent=[os.path.join(WORK, "bad.csv")])
    expect_error(["evaluate", "--pred", pred, "--truth", truth, "--regions", "wt"], "evaluate --regions wt", "--regions")
    expect_error(["evaluate", "--pred", pred, "--truth", truth, "--dataset", os.path.join(WORK, "nowhere")],
                 "evaluate --dataset without dataset.json", "nowhere")



# ---- MAML (issue [F]) ------------------------------------------------------------------------------------------

def case_maml_info():
    for config, params in (("brats", 66484752), ("liver", 62611104), ("tiny", 120272)):
        rc, out, err = run("info", "--model", "maml", "--config", config)
        lines = out.strip().splitlines()
        check(rc == 0 and lines and lines[-1] == f"params: {params}", f"info maml {config}: last line 'params: {params}' ({err.strip()})")
    # Spec §8 tiny network on its 16 x 24 x 32 patch: per-branch stages and the spec's group counts.
    rc, out, err = run("info", "--model", "maml", "--config", "tiny", "--shape", "16x24x32")
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)(?: \([^)]*\))?\s+(1 x [0-9 x]+?)\s+([0-9]+)$", line)
        if m:
            rows[m.group(1)] = (m.group(2), int(m.group(3)))
    b = "modality_specific_models.0."
    check(rows.get(b + "conv_blocks_context.3", ("", 0))[0] == "1 x 16 x 2 x 3 x 4",
          f"info maml tiny: bottleneck 1 x 16 x 2 x 3 x 4 (spec §8) ({rows.get(b + 'conv_blocks_context.3')})")
    check(rows.get("modality_specific_models.1", ("", 0))[1] == 58384 and rows.get("fusion", ("", 0))[1] == 868 and
          rows.get("modality_aware_modules.0", ("", 0))[1] + rows.get("modality_aware_modules.1", ("", 0))[1] == 2624 and
          rows.get("output", ("", 0))[1] == 12,
          f"info maml tiny: branch 58,384, fusion 868, MA 2,624, head 12 (spec §8) ({rows})")
    rc, out, err = run("info", "--model", "maml", "--config", "brats", "--shape", "128x128x100")
    check(rc == 2 and "multiple of 32" in err, f"info maml brats: a size that is not a multiple of 32 exits 2 ({err.strip()})")


def case_maml_forward():
    x = tiny_input((1, 2, 8, 16, 24), seed=2)
    inp = write_h5("maml_in.h5", {"input": x})
    out_all = os.path.join(WORK, "maml_out_all.h5")
    rc, so, se = run("forward", "--model", "maml", "--config", "tiny", "--input", inp, "--output", out_all, "--seed", "1")
    check(rc == 0, f"forward maml tiny: exit 0 ({se.strip()})")
    if rc != 0:
        return
    with h5py.File(out_all, "r") as f:
        y = f["output"][()]
    check(y.shape == (1, 3, 8, 16, 24) and np.allclose(y.sum(axis=1), 1, atol=1e-5) and np.all(y > 0),
          f"forward maml tiny: softmax over K = 3 classes, shape (1, 3, 8, 16, 24) ({y.shape})")
    # One modality: the branch alone; the other channel is never read, and may be left out altogether.
    outs = []
    noise = np.concatenate([x[:, :1], tiny_input((1, 1, 8, 16, 24), seed=9)], 1)
    for name, arr in (("both", x), ("noise", noise), ("one", x[:, :1])):
        path = os.path.join(WORK, f"maml_out_m0_{name}.h5")
        rc, so, se = run("forward", "--model", "maml", "--config", "tiny", "--input", write_h5(f"maml_in_{name}.h5", {"input": arr}),
                         "--output", path, "--seed", "1", "--modalities", "0")
        check(rc == 0, f"forward maml tiny --modalities 0 ({name}): exit 0 ({se.strip()})")
        if rc == 0:
            with h5py.File(path, "r") as f:
                outs.append(f["output"][()])
    check(len(outs) == 3 and np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2]) and
          not np.allclose(outs[0], y),
          "forward maml --modalities 0: the branch's own prediction, independent of channel 1 (present, noise or absent)")
    msg = one_line_error(["forward", "--model", "maml", "--config", "tiny", "--input", inp, "--output",
                          os.path.join(WORK, "x.h5"), "--modalities", "2"], "forward maml: modality index out of range")
    check("--modalities" in msg and "'2'" in msg, f"forward maml --modalities 2: names the option and the value ({msg})")
    msg = one_line_error(["forward", "--model", "mmfnet", "--config", "tiny", "--input", inp, "--output",
                          os.path.join(WORK, "x.h5"), "--modalities", "0"], "forward mmfnet --modalities")
    msg = one_line_error(["forward", "--model", "maml", "--config", "tiny", "--output", os.path.join(WORK, "x.h5"),
                          "--input", write_h5("maml_3ch.h5", {"input": tiny_input((1, 3, 8, 16, 24))})],
                         "forward maml: 3 channels for 2 modalities")
    check("3 channels" in msg and "2 modalities" in msg, f"forward maml: names expected and actual channels ({msg})")


def case_maml_pipeline():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    data = os.path.join(WORK, "brats")
    rc, out, err = run("phantom", "--task", "brats-like", "--out", data, "--cases", "3", "--test-cases", "2",
                       "--seed", "4", "--shape", "32x36x34")
    check(rc == 0, f"phantom brats-like: exit 0 ({err.strip()})")

    def maml_args(out, *extra):
        return ["train", "--data", data, "--model", "maml", "--config", "small", "--out", out, "--patch", "16x16x16",
                "--batch", "2", "--iterations", "2", "--seed", "5", "--progress", "lines", "--modality-dropout", "0.5",
                *extra]
    run_a, run_b = os.path.join(WORK, "run_a"), os.path.join(WORK, "run_b")
    rc, out, err = run(*maml_args(run_a, "--epochs", "2"))
    check(rc == 0 and "maml small" in out and "SGD-Nesterov" in out and "modality dropout 0.50" in out,
          f"train maml: exit 0, SGD-Nesterov, modality dropout ({out[:400]!r} {err.strip()[-300:]})")
    with open(os.path.join(run_a, "config.json")) as f:
        cfg = json.load(f)
    check(cfg["model"] == "maml" and cfg["normalization"]["mode"] == "nonzero_zscore" and cfg["optimizer"] == "sgd" and
          cfg["lr"] == 0.01 and cfg["labels"] == ["background", "edema", "non-enhancing", "enhancing"] and
          cfg["modality_dropout"] == 0.5 and cfg.get("discretize") == "argmax",
          f"train maml: config.json holds the nnU-Net normalisation, SGD 0.01, the labels, the dropout ({cfg})")
    rc, out, err = run(*maml_args(run_b, "--epochs", "1"))
    rc, out, err = run("train", "--out", run_b, "--resume", "--epochs", "2", "--progress", "lines")
    check(rc == 0 and [r[:5] for r in read_log(run_b)] == [r[:5] for r in read_log(run_a)],
          f"train maml --resume: log.csv equals the uninterrupted run's (modality dropout generator restored) ({err.strip()[-200:]})")
    wa, wb = model_weights(os.path.join(run_a, "last.h5")), model_weights(os.path.join(run_b, "last.h5"))
    check(wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa),
          "train maml --resume: last.h5 weights bit-identical to the uninterrupted run's")
    check("modality_specific_models.3.seg_outputs.2.weight" in wa and "fusion.weight" in wa and "output.weight" in wa,
          "train maml: the checkpoint has the official state-dict names")

    tests = ["phantom_101", "phantom_102"]
    for mods, tag in (("", "all"), ("T1ce", "t1ce"), ("T2,FLAIR", "t2flair")):
        pred = os.path.join(WORK, "pred_" + tag)
        rc, out, err = run("segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--out", pred,
                           "--png", *(["--modalities", mods] if mods else []))
        check(rc == 0 and (mods == "" or f"modalities {mods}" in out),
              f"segment maml {tag}: exit 0 ({out[:300]!r} {err.strip()[-300:]})")
        for t in tests:
            p = os.path.join(pred, t + ".nii.gz")
            ok = os.path.exists(p)
            if ok:
                gp, vp, dt, _, _ = read_nifti(p)
                gi, _, _, _, _ = read_nifti(os.path.join(data, "imagesTs", t + "_0000.nii.gz"))
                ok = gp == gi and dt == 2 and set(np.unique(vp)) <= {0, 1, 2, 3}
            check(ok, f"segment maml {tag}: {t}.nii.gz in the input's geometry, labels 0..3")
        rc, out, err = run("evaluate", "--pred", pred, "--truth", os.path.join(data, "labelsTs"))
        check(rc == 0 and "mean WT dice:" in out and "mean TC dice:" in out and "mean ET dice:" in out,
              f"evaluate maml {tag}: per-region means WT, TC, ET ({out[-300:]!r} {err.strip()})")
    expect_error(["segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--out",
                  os.path.join(WORK, "p_bad"), "--modalities", "PD"], "segment maml: unknown modality", "PD", "T1ce",
                 absent=[os.path.join(WORK, "p_bad")])
    expect_error(["segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--out",
                  os.path.join(WORK, "p_bad"), "--largest-component"], "segment maml: --largest-component",
                 "multi-class", absent=[os.path.join(WORK, "p_bad")])
    expect_error(maml_args(os.path.join(WORK, "run_bad"), "--patch", "12x16x16"), "train maml: patch not a multiple of 8",
                 "multiple of 8", absent=[os.path.join(WORK, "run_bad")])
    mm = os.path.join(WORK, "mmfnet_data")
    run("phantom", "--out", mm, "--cases", "2", "--test-cases", "1", "--seed", "3", "--shape", "16x24x24")
    expect_error(maml_args(os.path.join(WORK, "run_bad"))[:2] + [mm] + maml_args(os.path.join(WORK, "run_bad"))[3:],
                 "train maml on a 3-modality binary data set", "3 modalities", "maml small expects 4",
                 absent=[os.path.join(WORK, "run_bad")])


# ---- CSCN (issue [G]) ------------------------------------------------------------------------------------------

def info_rows(out):
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^((?:bunet|acdnet)\.\S+(?: \+ \S+)?)(?: \([^)]*\))?\s+(1 x [0-9 x]+?)\s+([0-9]+)$", line)
        if m:
            rows[m.group(1)] = (m.group(2), int(m.group(3)))
    return rows


def case_cscn_info():
    rc, out, err = run("info", "--model", "cscn", "--config", "paper")
    lines = out.strip().splitlines()
    check(rc == 0 and lines and lines[-1] == "params: 2820324", f"info cscn paper: last line 'params: 2820324' ({err.strip()})")
    check("BUNet 1147090 + ACDNet 1673234" in out, "info cscn paper: BUNet 1,147,090 + ACDNet 1,673,234 (spec §2.3)")
    rows = info_rows(out)
    names = ["bunet.e1", "bunet.e2", "bunet.bottom", "bunet.up2 + dec2", "bunet.up1 + dec1", "bunet.head",
             "acdnet.stem", "acdnet.db1", "acdnet.td1", "acdnet.db2", "acdnet.td2", "acdnet.db3", "acdnet.up2 + dec2",
             "acdnet.up1 + dec1", "acdnet.side1", "acdnet.side2", "acdnet.side3", "acdnet.fuse", "acdnet.head"]
    check(list(rows) == names, f"info cscn paper: the per-block rows of both networks ({list(rows)})")
    want = {"bunet.e1": "1 x 32 x 8 x 24 x 24", "bunet.bottom": "1 x 128 x 2 x 6 x 6", "bunet.up2 + dec2": "1 x 64 x 4 x 12 x 12",
            "bunet.head": "1 x 2 x 8 x 24 x 24", "acdnet.db1": "1 x 96 x 8 x 24 x 24", "acdnet.td1": "1 x 48 x 4 x 12 x 12",
            "acdnet.db2": "1 x 112 x 4 x 12 x 12", "acdnet.td2": "1 x 56 x 2 x 6 x 6", "acdnet.db3": "1 x 120 x 2 x 6 x 6",
            "acdnet.side3": "1 x 16 x 8 x 24 x 24", "acdnet.head": "1 x 2 x 8 x 24 x 24"}
    bad = {k: rows.get(k, ("", 0))[0] for k, v in want.items() if rows.get(k, ("", 0))[0] != v}
    check(not bad, f"info cscn paper: output shapes of spec §2.2 / §2.3 on the 8 x 24 x 24 block ({bad})")
    nb = sum(p for k, (_, p) in rows.items() if k.startswith("bunet."))
    check(nb == 1147090, f"info cscn paper: the bunet rows sum to 1,147,090 ({nb})")
    rc, out, err = run("info", "--model", "cscn", "--config", "tiny")
    rows = info_rows(out)
    nb = sum(p for k, (_, p) in rows.items() if k.startswith("bunet."))
    na = sum(p for k, (_, p) in rows.items() if k.startswith("acdnet."))
    check(rc == 0 and out.strip().splitlines()[-1] == "params: 61014" and nb == 18116 and na == 42898,
          f"info cscn tiny: BUNet 18,116 + ACDNet 42,898 = 61,014 (spec §8) ({nb}, {na})")
    check(rows.get("acdnet.td2", ("", 0))[0] == "1 x 6 x 1 x 2 x 3" and rows.get("acdnet.db3", ("", 0))[0] == "1 x 12 x 1 x 2 x 3" and
          rows.get("acdnet.up1 + dec1", ("", 0))[0] == "1 x 10 x 4 x 8 x 12",
          f"info cscn tiny: spec §8 shapes on the 4 x 8 x 12 block ({rows.get('acdnet.td2')}, {rows.get('acdnet.db3')})")
    rc, out, err = run("info", "--model", "cscn", "--config", "paper", "--shape", "8x24x22")
    check(rc == 2 and "multiple of 4" in err, f"info cscn: a block size that is not a multiple of 4 exits 2 ({err.strip()})")


def case_cscn_forward():
    x = tiny_input((2, 1, 9, 14, 13), seed=3)
    inp = write_h5("cscn_in.h5", {"input": x})
    out = os.path.join(WORK, "cscn_out.h5")
    rc, so, se = run("forward", "--model", "cscn", "--config", "tiny", "--input", inp, "--output", out, "--seed", "2")
    check(rc == 0, f"forward cscn tiny: exit 0 ({se.strip()})")
    if rc != 0:
        return
    with h5py.File(out, "r") as f:
        y = f["output"][()]
    check(y.shape == (1 * 2, 1, 9, 14, 13) and np.all(y >= 0) and np.all(y <= 1) and y.std() > 0,
          f"forward cscn tiny: P_final N x 1 x Z x Y x X in [0, 1] ({y.shape})")
    one = os.path.join(WORK, "cscn_out1.h5")
    rc, so, se = run("forward", "--model", "cscn", "--config", "tiny", "--input", write_h5("cscn_in1.h5", {"input": x[1:]}),
                     "--output", one, "--seed", "2")
    with h5py.File(one, "r") as f:
        y1 = f["output"][()]
    check(rc == 0 and np.array_equal(y1[0], y[1]), "forward cscn: each volume of the batch goes through the cascade alone")
    msg = one_line_error(["forward", "--model", "cscn", "--config", "tiny", "--output", os.path.join(WORK, "x.h5"),
                          "--input", write_h5("cscn_2ch.h5", {"input": tiny_input((1, 2, 8, 8, 12))})],
                         "forward cscn: 2 channels")
    check("2 channels" in msg and "1 modalities" in msg, f"forward cscn: names expected and actual channels ({msg})")
    one_line_error(["forward", "--model", "cscn", "--config", "tiny", "--input", inp, "--output", os.path.join(WORK, "x.h5"),
                    "--modalities", "0"], "forward cscn --modalities")


def case_cscn_pipeline():
    os.makedirs(WORK, exist_ok=True)
    data = os.path.join(WORK, "npc")
    shutil.rmtree(data, ignore_errors=True)
    rc, out, err = run("phantom", "--task", "npc-like", "--out", data, "--cases", "3", "--test-cases", "1", "--seed", "3",
                       "--shape", "8x30x28")
    check(rc == 0, f"phantom npc-like 8 x 30 x 28 of 3 x 1 x 1 mm: exit 0 ({err.strip()})")

    def cscn_args(out, *extra):
        return ["train", "--data", data, "--model", "cscn", "--config", "tiny", "--out", out, "--batch", "2",
                "--iterations", "2", "--seed", "5", "--progress", "lines", *extra]
    run_a, run_b = os.path.join(WORK, "run_a"), os.path.join(WORK, "run_b")
    for r in (run_a, run_b):
        shutil.rmtree(r, ignore_errors=True)
    rc, out, err = run(*cscn_args(run_a, "--epochs", "2"))
    check(rc == 0 and "stage 1/2: BUNet" in out and "stage 2/2: ACDNet" in out and "validation: cascade Dice" in out,
          f"train cscn tiny: exit 0, both stages ({out[-400:]!r} {err.strip()[-300:]})")
    with open(os.path.join(run_a, "config.json")) as f:
        cfg = json.load(f)
    check(cfg["model"] == "cscn" and cfg["config"] == "tiny" and cfg["normalization"]["mode"] == "isotropic_nonzero_zscore" and
          cfg["normalization"]["spacing"] == [1.0, 1.0, 1.0] and cfg["patch"] == [4, 8, 12] and cfg["lr"] == 0.001 and
          cfg["modalities"] == ["T1"] and cfg["labels"] == ["background", "tumour"],
          f"train cscn: config.json: model, 1 mm resampling + non-zero z-score, the block, Adam 1e-3 ({cfg})")
    for stage in ("bunet", "acdnet"):
        files = [f for f in ("last.h5", "best.h5", "log.csv", "curves.svg") if os.path.exists(os.path.join(run_a, stage, f))]
        check(len(files) == 4, f"train cscn: RUN/{stage}/ holds last.h5, best.h5, log.csv, curves.svg ({files})")
    wa = model_weights(os.path.join(run_a, "best.h5"))
    with h5py.File(os.path.join(run_a, "best.h5"), "r") as f:
        name = f.attrs.get("model_name")
    check("bunet.e1.0.conv.weight" in wa and "acdnet.db3.1.bottleneck.conv.weight" in wa and len(wa) == 66 + 252 and
          str(name.decode() if isinstance(name, bytes) else name) == "cscn-tiny",
          f"train cscn: RUN/best.h5 is the CSCN checkpoint (bunet.* + acdnet.*, 318 tensors, cscn-tiny) ({len(wa)}, {name})")
    best_b = model_weights(os.path.join(run_a, "bunet", "best.h5"))
    check(all(np.array_equal(best_b[k], wa["bunet." + k]) for k in best_b),
          "train cscn: RUN/best.h5's bunet.* are stage 1's best")
    # Resume: stage 1 in two runs (--stage 1), then --resume runs stage 2: the same losses and weights.
    rc1, _, e1 = run(*cscn_args(run_b, "--epochs", "1", "--stage", "1"))
    check(rc1 == 0 and not os.path.exists(os.path.join(run_b, "acdnet")) and not os.path.exists(os.path.join(run_b, "best.h5")),
          f"train cscn --stage 1: stops after BUNet ({e1.strip()[-200:]})")
    rc2, _, e2 = run("train", "--out", run_b, "--resume", "--epochs", "2", "--stage", "1", "--progress", "lines")
    rc3, o3, e3 = run("train", "--out", run_b, "--resume", "--progress", "lines")
    check(rc2 == 0 and rc3 == 0 and "resuming stage 1" in o3 and "stage 2/2" in o3,
          f"train cscn --resume: stage 1 complete -> stage 2 ({e2.strip()[-200:]} {e3.strip()[-200:]})")
    for stage in ("bunet", "acdnet"):
        la, lb = read_log(os.path.join(run_a, stage)), read_log(os.path.join(run_b, stage))
        check([r[:5] for r in la] == [r[:5] for r in lb] and len(la) == 3,
              f"train cscn --resume: {stage}/log.csv equals the uninterrupted run's ({la} vs {lb})")
    wb = model_weights(os.path.join(run_b, "best.h5"))
    check(wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa),
          "train cscn --resume: RUN/best.h5 bit-identical to the uninterrupted run's")
    rc4, o4, e4 = run("train", "--out", run_b, "--resume", "--progress", "lines")
    check(rc4 == 0 and "resuming stage 2" in o4, f"train cscn --resume after the end: stage 2, nothing left to do ({e4.strip()[-200:]})")

    test = "phantom_101"
    for stage in ("cascade", "coarse"):
        pred = os.path.join(WORK, "pred_" + stage)
        shutil.rmtree(pred, ignore_errors=True)
        rc, out, err = run("segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--out", pred,
                           "--stage", stage, "--largest-component")
        check(rc == 0 and ("BUNet alone" in out if stage == "coarse" else "cascade" in out),
              f"segment cscn --stage {stage}: exit 0 ({out[-300:]!r} {err.strip()[-300:]})")
        p = os.path.join(pred, test + ".nii.gz")
        ok = os.path.exists(p)
        if ok:
            gp, vp, dt, _, _ = read_nifti(p)
            gi, _, _, _, _ = read_nifti(os.path.join(data, "imagesTs", test + "_0000.nii.gz"))
            ok = gp == gi and dt == 2 and set(np.unique(vp)) <= {0, 1} and tuple(gp["dims"]) == (28, 30, 8)
        check(ok, f"segment cscn --stage {stage}: {test}.nii.gz back on the input's 3 x 1 x 1 mm grid and geometry, labels 0/1")
        rc, out, err = run("evaluate", "--pred", pred, "--truth", os.path.join(data, "labelsTs"))
        check(rc == 0 and "mean dice:" in out, f"evaluate cscn {stage}: binary metrics ({out[-200:]!r} {err.strip()})")

    # Bad inputs: one line, exit 2, nothing left behind.
    bad = os.path.join(WORK, "run_bad")
    mm = os.path.join(WORK, "mmfnet_data")
    shutil.rmtree(mm, ignore_errors=True)
    run("phantom", "--out", mm, "--cases", "2", "--test-cases", "1", "--seed", "3", "--shape", "8x24x24")
    args = cscn_args(bad)
    args[args.index("--data") + 1] = mm
    expect_error(args, "train cscn on a 3-modality data set", "3 modalities", "cscn tiny expects 1", absent=[bad])
    three = os.path.join(WORK, "npc_3labels")
    shutil.rmtree(three, ignore_errors=True)
    shutil.copytree(data, three)
    with open(os.path.join(three, "dataset.json")) as f:
        ds = json.load(f)
    ds["labels"]["2"] = "nodes"
    with open(os.path.join(three, "dataset.json"), "w") as f:
        json.dump(ds, f)
    args[args.index("--data") + 1] = three
    expect_error(args, "train cscn on labels 0, 1, 2", "labels must be exactly 0", "got 3 labels", absent=[bad])
    expect_error(cscn_args(bad, "--patch", "8x24x24"), "train cscn --patch", "--patch", "4 x 8 x 12", absent=[bad])
    expect_error(["segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--out", os.path.join(WORK, "p_bad"),
                  "--modalities", "T1"], "segment cscn --modalities", "--modalities", "one modality",
                 absent=[os.path.join(WORK, "p_bad")])
    expect_error(["segment", "--weights", os.path.join(run_a, "best.h5"), "--data", mm, "--out", os.path.join(WORK, "p_bad")],
                 "segment cscn on a 3-modality data set", "3 modalities", absent=[os.path.join(WORK, "p_bad")])

# ---- HMRNet (issue [H]) ----------------------------------------------------------------------------------------

HMR_PARTS = ["cerebellum", "falx", "sinus_sagittal", "sinus_transverse", "tentorium", "ventricles"]


def case_hmrnet_info():
    for config, params in (("paper-p", 3124092), ("paper-s", 2377932), ("tiny-p", 196866), ("tiny-s", 151806)):
        rc, out, err = run("info", "--model", "hmrnet", "--config", config)
        lines = out.strip().splitlines()
        check(rc == 0 and lines and lines[-1] == f"params: {params}",
              f"info hmrnet {config}: last line 'params: {params}' (spec §2.5 / §8) ({err.strip()})")
    rc, out, err = run("info", "--model", "hmrnet", "--config", "tiny-s", "--shape", "16x24x32")
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(.+?)\s{2,}(1 x [0-9 x]+?)\s+([0-9]+)$", line)
        if m:
            rows[m.group(1).strip()] = (m.group(2), int(m.group(3)))
    want = {"in_conv (MR m0)": "1 x 4 x 16 x 24 x 32", "fr_in_conv (HR h0)": "1 x 2 x 16 x 24 x 32",
            "down1 (max-pool 2 + block)": "1 x 8 x 8 x 12 x 16", "down3 (max-pool (2,2,1) + block)": "1 x 32 x 2 x 3 x 8",
            "dpvision_con5 (y2)": "1 x 2 x 4 x 6 x 8", "out_conv (y0 logits; softmax outside)": "1 x 2 x 16 x 24 x 32"}
    bad = {k: rows.get(k, ("", 0))[0] for k, v in want.items() if rows.get(k, ("", 0))[0] != v}
    check(rc == 0 and len(rows) == 25 and not bad and sum(p for _, p in rows.values()) == 151806,
          f"info hmrnet tiny-s 16x24x32: 25 block rows, -s shapes (third pooling (2,2,1)), counts sum to 151,806 ({bad}, {len(rows)})")
    rc, out, err = run("info", "--model", "hmrnet", "--config", "small")
    lines = out.strip().splitlines()
    names = [l.split()[0] for l in lines if l.split() and l.split()[0] in ["stage1"] + HMR_PARTS]
    check(rc == 0 and names == ["stage1"] + HMR_PARTS and lines[-1].startswith("params: ") and
          "falx (HMRNet-s" in out and "cerebellum (HMRNet-p" in out,
          f"info hmrnet small: the system, stage 1 and the six parts with the paper's forms ({names})")
    rc, out, err = run("info", "--model", "hmrnet", "--config", "tiny-p", "--shape", "16x24x20")
    check(rc == 2 and "multiple of 8" in err, f"info hmrnet -p: a size that is not a multiple of 8 exits 2 ({err.strip()})")


def case_hmrnet_forward():
    x = tiny_input((2, 3, 16, 24, 16), seed=4)
    inp = write_h5("hmr_in.h5", {"input": x})
    for config in ("tiny-p", "tiny-s"):
        out = os.path.join(WORK, f"hmr_{config}.h5")
        rc, so, se = run("forward", "--model", "hmrnet", "--config", config, "--input", inp, "--output", out, "--seed", "1")
        check(rc == 0, f"forward hmrnet {config}: exit 0 ({se.strip()})")
        if rc != 0:
            continue
        with h5py.File(out, "r") as f:
            y = f["output"][()]
        check(y.shape == (2, 2, 16, 24, 16) and np.allclose(y.sum(axis=1), 1, atol=1e-5) and y.std() > 0,
              f"forward hmrnet {config}: softmax(y0) N x 2 x D x H x W ({y.shape})")
    msg = one_line_error(["forward", "--model", "hmrnet", "--config", "tiny-p", "--output", os.path.join(WORK, "x.h5"),
                          "--input", write_h5("hmr_1ch.h5", {"input": tiny_input((1, 1, 16, 16, 16))})],
                         "forward hmrnet: 1 channel")
    check("1 channels" in msg and "3 modalities" in msg, f"forward hmrnet: names expected and actual channels ({msg})")
    one_line_error(["forward", "--model", "hmrnet", "--config", "tiny-p", "--output", os.path.join(WORK, "x.h5"),
                    "--input", write_h5("hmr_odd.h5", {"input": tiny_input((1, 3, 16, 20, 16))})],
                   "forward hmrnet -p: H = 20 is not a multiple of 8")
    msg = one_line_error(["forward", "--model", "hmrnet", "--config", "tiny", "--input", inp, "--output",
                          os.path.join(WORK, "x.h5")], "forward hmrnet with the system config")
    check("tiny-p" in msg and "segment" in msg, f"forward hmrnet tiny: points to the -p / -s configs and segment ({msg})")


def case_hmrnet_pipeline():
    data = os.path.join(WORK, "barriers")
    shutil.rmtree(data, ignore_errors=True)
    rc, out, err = run("phantom", "--task", "barriers", "--out", data, "--cases", "3", "--test-cases", "1", "--seed", "3",
                       "--shape", "32x40x32")
    check(rc == 0, f"phantom barriers 32 x 40 x 32: exit 0 ({err.strip()})")

    def hmr_args(out, *extra):
        return ["train", "--data", data, "--model", "hmrnet", "--config", "tiny", "--out", out, "--batch", "1",
                "--iterations", "2", "--seed", "5", "--progress", "lines", *extra]
    run_a, run_b = os.path.join(WORK, "run_a"), os.path.join(WORK, "run_b")
    for r in (run_a, run_b):
        shutil.rmtree(r, ignore_errors=True)
    rc, out, err = run(*hmr_args(run_a, "--epochs", "2"))
    check(rc == 0 and "stage 1: U-Net" in out and all(f"part {i + 1}/6: {p}" in out for i, p in enumerate(HMR_PARTS)),
          f"train hmrnet tiny: exit 0, stage 1 and the six parts ({out[-400:]!r} {err.strip()[-300:]})")
    with open(os.path.join(run_a, "config.json")) as f:
        cfg = json.load(f)
    parts = cfg.get("hmrnet", {}).get("parts", [])
    check(cfg["model"] == "hmrnet" and cfg["normalization"]["mode"] == "zscore" and cfg["patch"] == [32, 40, 32] and
          cfg["modalities"] == ["CT", "T1c", "T2"] and len(cfg["labels"]) == 6 and cfg["lr"] == 0.003 and
          [p["name"] for p in parts] == HMR_PARTS and [p["form"] for p in parts] == ["p", "s", "s", "s", "p", "p"] and
          all(len(p["patch"]) == 3 and p["patch"][0] % 8 == 0 and p["patch"][1] % 8 == 0 and
              p["patch"][2] % (8 if p["form"] == "p" else 4) == 0 for p in parts) and
          cfg["hmrnet"]["box_margin"] == 10 and cfg["hmrnet"]["sinus_split"]["margin"] == 5 and
          cfg["normalization"]["clips"] == [],
          f"train hmrnet: config.json: whole-volume z-score, stage-1 patch = the volume, parts with forms and patches ({cfg})")
    for stage in ["stage1"] + HMR_PARTS:
        files = [f for f in ("last.h5", "best.h5", "log.csv", "curves.svg") if os.path.exists(os.path.join(run_a, stage, f))]
        check(len(files) == 4, f"train hmrnet: RUN/{stage}/ holds last.h5, best.h5, log.csv, curves.svg ({files})")
    wa = model_weights(os.path.join(run_a, "best.h5"))
    with h5py.File(os.path.join(run_a, "best.h5"), "r") as f:
        name = f.attrs.get("model_name")
    check(any(k.startswith("stage1/") or k.startswith("stage1.") for k in wa) and
          all(any(k.startswith(p + "/") or k.startswith(p + ".") for k in wa) for p in HMR_PARTS) and
          str(name.decode() if isinstance(name, bytes) else name) == "hmrnet-tiny",
          f"train hmrnet: RUN/best.h5 is the whole system (stage1.* and one prefix per part, hmrnet-tiny) ({name})")
    best_falx = model_weights(os.path.join(run_a, "falx", "best.h5"))
    check(all(np.array_equal(v, wa.get("falx." + k, wa.get("falx/" + k))) for k, v in best_falx.items()),
          "train hmrnet: RUN/best.h5's falx.* are the falx stage's best")
    # Resume: stage 1 in two runs (--stage 1), then --resume runs the parts: the same losses and weights.
    rc1, _, e1 = run(*hmr_args(run_b, "--epochs", "1", "--stage", "1"))
    check(rc1 == 0 and os.path.exists(os.path.join(run_b, "stage1", "last.h5")) and
          not os.path.exists(os.path.join(run_b, "falx")) and not os.path.exists(os.path.join(run_b, "best.h5")),
          f"train hmrnet --stage 1: stops after the U-Net ({e1.strip()[-200:]})")
    rc2, _, e2 = run("train", "--out", run_b, "--resume", "--epochs", "2", "--stage", "1", "--progress", "lines")
    rc3, o3, e3 = run("train", "--out", run_b, "--resume", "--progress", "lines")
    check(rc2 == 0 and rc3 == 0 and "resuming stage 1" in o3 and "part 6/6: ventricles" in o3,
          f"train hmrnet --resume: stage 1 complete -> the parts ({e2.strip()[-200:]} {e3.strip()[-200:]})")
    for stage in ["stage1"] + HMR_PARTS:
        la, lb = read_log(os.path.join(run_a, stage)), read_log(os.path.join(run_b, stage))
        check([r[:5] for r in la] == [r[:5] for r in lb] and len(la) == 3,
              f"train hmrnet --resume: {stage}/log.csv equals the uninterrupted run's ({la} vs {lb})")
    wb = model_weights(os.path.join(run_b, "best.h5"))
    check(wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa),
          "train hmrnet --resume: RUN/best.h5 bit-identical to the uninterrupted run's")
    rc4, o4, e4 = run("train", "--out", run_b, "--resume", "--progress", "lines")
    check(rc4 == 0 and "resuming stage 2 (ventricles)" in o4 and "part 5/6" not in o4,
          f"train hmrnet --resume after the end: the last part, nothing left to do ({o4[-300:]!r} {e4.strip()[-200:]})")
    wc = model_weights(os.path.join(run_b, "best.h5"))
    check(all(np.array_equal(wa[k], wc[k]) for k in wa), "train hmrnet --resume after the end: RUN/best.h5 unchanged")

    test = "phantom_101"
    for stage in ("cascade", "coarse"):
        pred = os.path.join(WORK, "pred_" + stage)
        shutil.rmtree(pred, ignore_errors=True)
        rc, out, err = run("segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--out", pred,
                           "--stage", stage)
        check(rc == 0 and ("stage 1 alone" in out if stage == "coarse" else "two-stage" in out),
              f"segment hmrnet --stage {stage}: exit 0 ({out[-300:]!r} {err.strip()[-300:]})")
        p = os.path.join(pred, test + ".nii.gz")
        ok = os.path.exists(p)
        if ok:
            gp, vp, dt, _, _ = read_nifti(p)
            gi, _, _, _, _ = read_nifti(os.path.join(data, "imagesTs", test + "_0000.nii.gz"))
            ok = gp == gi and dt == 2 and set(np.unique(vp)) <= set(range(6)) and tuple(gp["dims"]) == (32, 40, 32)
        check(ok, f"segment hmrnet --stage {stage}: {test}.nii.gz in the input's geometry, labels 0..5")
        rc, out, err = run("evaluate", "--pred", pred, "--truth", os.path.join(data, "labelsTs"))
        check(rc == 0 and all(f"mean {s} dice:" in out and f"mean {s} assd:" in out
                              for s in ("cerebellum", "falx", "sinuses", "tentorium", "ventricles")) and
              "average of the 5 label means: dice" in out,
              f"evaluate hmrnet {stage}: Dice and ASSD per structure and their average ({out[-300:]!r} {err.strip()})")

    # Bad inputs: one line, exit 2, nothing left behind.
    bad = os.path.join(WORK, "run_bad")
    args = hmr_args(bad)
    args[args.index("--config") + 1] = "tiny-p"
    expect_error(args, "train hmrnet with a one-network config", "tiny-p", "two-stage", absent=[bad])
    mm = os.path.join(WORK, "mmfnet_data")
    shutil.rmtree(mm, ignore_errors=True)
    run("phantom", "--out", mm, "--cases", "2", "--test-cases", "1", "--seed", "3", "--shape", "8x24x24")
    args = hmr_args(bad)
    args[args.index("--data") + 1] = mm
    expect_error(args, "train hmrnet on a binary data set", "labels must be exactly 0..5", absent=[bad])
    expect_error(["segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--out", os.path.join(WORK, "p_bad"),
                  "--largest-component"], "segment hmrnet --largest-component", "--largest-component",
                 absent=[os.path.join(WORK, "p_bad")])
    expect_error(["segment", "--weights", os.path.join(run_a, "falx", "best.h5"), "--data", data, "--out",
                  os.path.join(WORK, "p_bad")], "segment hmrnet with a stage's checkpoint", "config.json",
                 absent=[os.path.join(WORK, "p_bad")])


# ---- ConResNet (issue [I]) -------------------------------------------------------------------------------------

def case_conresnet_info():
    for config, params in (("brats", 19018732), ("tiny", 298544), ("brats-baseline", 18783715), ("small", 1192132)):
        rc, out, err = run("info", "--model", "conresnet", "--config", config)
        lines = out.strip().splitlines()
        check(rc == 0 and lines and lines[-1] == f"params: {params}",
              f"info conresnet {config}: last line 'params: {params}' (spec §2.6 / §8) ({err.strip()})")
    rc, out, err = run("info", "--model", "conresnet", "--config", "tiny", "--shape", "16x24x32")
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)(?: \([^)]*\))?\s+(1 x [0-9 x]+?)\s+([0-9]+)$", line)
        if m:
            rows[m.group(1)] = (m.group(2), int(m.group(3)))
    want = {"conv_4_32.0": "1 x 4 x 16 x 24 x 32", "layer1": "1 x 8 x 8 x 12 x 16", "layer4": "1 x 32 x 2 x 3 x 4",
            "fusionConv": "1 x 16 x 2 x 3 x 4", "seg_x4.0": "1 x 8 x 4 x 6 x 8", "seg_x1.0": "1 x 4 x 16 x 24 x 32",
            "seg_cls.0": "1 x 3 x 16 x 24 x 32", "resx4_cls.0": "1 x 3 x 16 x 24 x 32"}
    bad = {k: rows.get(k, ("", 0))[0] for k, v in want.items() if rows.get(k, ("", 0))[0] != v}
    check(rc == 0 and len(rows) == 17 and not bad and sum(p for _, p in rows.values()) == 298544,
          f"info conresnet tiny 16x24x32: 17 rows with the spec §8 shapes, counts sum to 298,544 ({bad}, {len(rows)})")
    rc, out, err = run("info", "--model", "conresnet", "--config", "tiny-baseline", "--shape", "16x24x32")
    check(rc == 0 and "res_cls" not in out and "baseline" in out,
          f"info conresnet tiny-baseline: no residual heads ({err.strip()})")
    rc, out, err = run("info", "--model", "conresnet", "--config", "tiny", "--shape", "16x24x30")
    check(rc == 2 and "multiple of 8" in err, f"info conresnet: a size that is not a multiple of 8 exits 2 ({err.strip()})")


def case_conresnet_forward():
    x = tiny_input((2, 2, 16, 24, 32), seed=6)
    inp = write_h5("cr_in.h5", {"input": x})
    outs = {}
    for config in ("tiny", "tiny-baseline"):
        out = os.path.join(WORK, f"cr_{config}.h5")
        rc, so, se = run("forward", "--model", "conresnet", "--config", config, "--input", inp, "--output", out, "--seed", "1")
        check(rc == 0, f"forward conresnet {config}: exit 0 ({se.strip()})")
        if rc != 0:
            continue
        with h5py.File(out, "r") as f:
            outs[config] = y = f["output"][()]
        check(y.shape == (2, 3, 16, 24, 32) and np.all(y >= 0) and np.all(y <= 1) and y.std() > 0,
              f"forward conresnet {config}: sigmoid(O_seg) N x 3 x D x H x W in [0, 1] ({y.shape})")
    one = os.path.join(WORK, "cr_one.h5")
    rc, _, _ = run("forward", "--model", "conresnet", "--config", "tiny", "--input", write_h5("cr_in1.h5", {"input": x[1:]}),
                   "--output", one, "--seed", "1")
    if rc == 0 and "tiny" in outs:
        with h5py.File(one, "r") as f:
            y1 = f["output"][()]
        check(np.allclose(y1[0], outs["tiny"][1], atol=1e-5), "forward conresnet: each volume of the batch independent")
    msg = one_line_error(["forward", "--model", "conresnet", "--config", "tiny", "--output", os.path.join(WORK, "x.h5"),
                          "--input", write_h5("cr_4ch.h5", {"input": tiny_input((1, 4, 16, 16, 16))})],
                         "forward conresnet tiny: 4 channels")
    check("4 channels" in msg and "2 modalities" in msg, f"forward conresnet: names expected and actual channels ({msg})")
    one_line_error(["forward", "--model", "conresnet", "--config", "tiny", "--output", os.path.join(WORK, "x.h5"),
                    "--input", write_h5("cr_odd.h5", {"input": tiny_input((1, 2, 16, 20, 16))})],
                   "forward conresnet: H = 20 is not a multiple of 8")


def case_conresnet_pipeline():
    data = os.path.join(WORK, "brats")
    shutil.rmtree(data, ignore_errors=True)
    rc, out, err = run("phantom", "--task", "brats-like", "--out", data, "--cases", "3", "--test-cases", "1", "--seed", "4",
                       "--shape", "24x24x24")
    check(rc == 0, f"phantom brats-like 24^3: exit 0 ({err.strip()})")

    def cr_args(out, *extra, config="small"):
        return ["train", "--data", data, "--model", "conresnet", "--config", config, "--out", out, "--batch", "2",
                "--patch", "16x16x16", "--iterations", "2", "--seed", "5", "--progress", "lines", *extra]
    run_a, run_b, run_c = (os.path.join(WORK, n) for n in ("run_a", "run_b", "run_c"))
    for r in (run_a, run_b, run_c):
        shutil.rmtree(r, ignore_errors=True)
    rc, out, err = run(*cr_args(run_a, "--epochs", "2"))
    check(rc == 0 and "context residual" in out, f"train conresnet small: exit 0 ({out[-300:]!r} {err.strip()[-300:]})")
    with open(os.path.join(run_a, "config.json")) as f:
        cfg = json.load(f)
    check(cfg["model"] == "conresnet" and cfg["config"] == "small" and cfg["normalization"]["mode"] == "nonzero_zscore" and
          cfg["patch"] == [16, 16, 16] and cfg["lr"] == 0.001 and cfg["optimizer"] == "adam" and len(cfg["labels"]) == 4,
          f"train conresnet: config.json: nnU-Net MRI preprocessing, the patch, Adam 1e-3 ({cfg})")
    log = read_log(run_a)
    check(len(log) == 3 and float(log[2][5]) < float(log[1][5]) < 0.001,
          f"train conresnet: poly lr per iteration (the logged lr of the last step falls) ({log})")
    wa = model_weights(os.path.join(run_a, "best.h5"))
    check(len(wa) == 100 and any(k.startswith("res_cls") for k in wa),
          f"train conresnet: best.h5 holds the network's 100 tensors, residual heads included ({len(wa)})")
    # Resume: the same run stopped by SIGINT once epoch 1 is done (it saves last.h5 after the current iteration),
    # then --resume: the same log and weights (the poly lr is a function of the step and of epochs x iterations, the
    # batches of (seed, step); Dropout3d's generator is checkpointed). A run that finished first resumes nothing.
    p = subprocess.Popen([MMNET, *cr_args(run_b, "--epochs", "2")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    for line in p.stdout:
        if line.startswith("epoch 1/2  train loss"):
            p.send_signal(signal.SIGINT)
            break
    o1, e1 = p.communicate(timeout=300)
    rc2, o2, e2 = run("train", "--out", run_b, "--resume", "--progress", "lines")
    lb = read_log(run_b)
    check(p.returncode in (0, 130) and rc2 == 0 and [r[:6] for r in log] == [r[:6] for r in lb],
          f"train conresnet interrupted + --resume: log.csv equals the uninterrupted run's (rc {p.returncode}; {log} vs {lb}; "
          f"{e1.strip()[-200:]} {e2.strip()[-200:]})")
    wb = model_weights(os.path.join(run_b, "best.h5"))
    check(wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa),
          "train conresnet --resume: best.h5 bit-identical to the uninterrupted run's")
    wl_a, wl_b = model_weights(os.path.join(run_a, "last.h5")), model_weights(os.path.join(run_b, "last.h5"))
    check(all(np.array_equal(wl_a[k], wl_b[k]) for k in wl_a), "train conresnet --resume: last.h5 bit-identical")
    # The baseline ablation.
    rc, out, err = run(*cr_args(run_c, "--epochs", "1", config="small-baseline"))
    wc = model_weights(os.path.join(run_c, "best.h5")) if rc == 0 else {}
    check(rc == 0 and "baseline" in out and len(wc) > 0 and not any(k.startswith("res") for k in wc),
          f"train conresnet small-baseline: no residual path or heads ({err.strip()[-300:]})")

    test = "phantom_101"
    for name, run_dir in (("residual", run_a), ("baseline", run_c)):
        pred = os.path.join(WORK, "pred_" + name)
        shutil.rmtree(pred, ignore_errors=True)
        rc, out, err = run("segment", "--weights", os.path.join(run_dir, "best.h5"), "--data", data, "--out", pred)
        check(rc == 0 and "regions ET, WT, TC" in out, f"segment conresnet {name}: exit 0 ({out[-300:]!r} {err.strip()[-300:]})")
        p = os.path.join(pred, test + ".nii.gz")
        ok = os.path.exists(p)
        if ok:
            gp, vp, dt, _, _ = read_nifti(p)
            gi, _, _, _, _ = read_nifti(os.path.join(data, "imagesTs", test + "_0000.nii.gz"))
            ok = gp == gi and dt == 2 and set(np.unique(vp)) <= {0, 1, 2, 3}
        check(ok, f"segment conresnet {name}: {test}.nii.gz in the input's geometry, labels 0..3")
        rc, out, err = run("evaluate", "--pred", pred, "--truth", os.path.join(data, "labelsTs"))
        check(rc == 0 and all(f"mean {r} dice:" in out and f"mean {r} hd95:" in out for r in ("WT", "TC", "ET")),
              f"evaluate conresnet {name}: Dice and HD95 of WT, TC, ET ({out[-300:]!r} {err.strip()})")

    # Bad inputs: one line, exit 2, nothing left behind.
    bad = os.path.join(WORK, "run_bad")
    expect_error(cr_args(bad, "--optimizer", "sgd"), "train conresnet --optimizer sgd", "--optimizer", absent=[bad])
    expect_error(["segment", "--weights", os.path.join(run_a, "best.h5"), "--data", data, "--out", os.path.join(WORK, "p_bad"),
                  "--tta"], "segment conresnet --tta", "--tta", absent=[os.path.join(WORK, "p_bad")])
    barriers = os.path.join(WORK, "barriers")
    shutil.rmtree(barriers, ignore_errors=True)
    run("phantom", "--task", "barriers", "--out", barriers, "--cases", "2", "--test-cases", "1", "--seed", "3", "--shape", "16x16x16")
    args = cr_args(bad)
    args[args.index("--data") + 1] = barriers
    expect_error(args, "train conresnet on a 3-modality data set", "3 modalities", "conresnet small expects 4", absent=[bad])


cases = {"info": case_info, "forward": case_forward, "errors": case_errors, "bench": case_bench,
         "pipeline": case_pipeline, "pipeline_errors": case_pipeline_errors,
         "maml_info": case_maml_info, "maml_forward": case_maml_forward, "maml_pipeline": case_maml_pipeline, "phantom_brats": case_phantom_brats,
         "evaluate_regions": case_evaluate_regions, "phantom_npc": case_phantom_npc,
         "phantom_barriers": case_phantom_barriers,
         "cscn_info": case_cscn_info, "cscn_forward": case_cscn_forward, "cscn_pipeline": case_cscn_pipeline,
         "hmrnet_info": case_hmrnet_info, "hmrnet_forward": case_hmrnet_forward, "hmrnet_pipeline": case_hmrnet_pipeline,
         "conresnet_info": case_conresnet_info, "conresnet_forward": case_conresnet_forward,
         "conresnet_pipeline": case_conresnet_pipeline}
os.makedirs(WORK, exist_ok=True)
if sys.argv[3:4] == ["weights"]:
    case_weights(sys.argv[4])
else:
    for name in sys.argv[3:] or cases:
        cases[name]()
print(f"{len(failures)} failure(s)")
sys.exit(min(len(failures), 100))
