"""Round trip back to PyTorch, and the converters' behaviour on every kind of input.

    /usr/bin/python3 h5_roundtrip_check.py FIXTURE_DIR

FIXTURE_DIR holds io_torch.pt (tests/reference/io_ref.py) and io_saved_by_cpp.h5 / io_saved_by_cpp_f64.h5,
written by tests/io/hdf5_test.cpp after it loaded io_torch.h5 into its mirror of IoNet. Each is converted with
tools/h52torch.py and loaded with strict=True into io_ref.IoNet (float32 / float64), and must equal
io_torch.pt exactly, in PyTorch's key order, with 0-d int64 counters. Then tools/torch2h5.py and
tools/h52torch.py are checked on checkpoints, whole modules, other dtypes and bad input (exit status 1, a
message naming the file and the problem, the output left untouched and no temporary file).
"""
import collections
import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import io_ref  # noqa: E402

TOOLS = os.path.join(ROOT, "tools")
failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print(f"FAILED: {what}", flush=True)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


torch2h5 = load_tool("torch2h5")
h52torch = load_tool("h52torch")


def run_tool(mod, *args):
    """(exit status, stdout, stderr) of mod.main(args), in this process (torch is imported once)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = mod.main(list(args))
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def same_state(a, b, what, dtype=None):
    """Same keys in the same order, dtypes, shapes and values (b cast to dtype for floating entries)."""
    check(list(a.keys()) == list(b.keys()), f"{what}: key order {list(a.keys())} vs {list(b.keys())}")
    for k in b:
        if k not in a:
            continue
        x, y = a[k], b[k]
        if dtype is not None and y.is_floating_point():
            y = y.to(dtype)
        check(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y),
              f"{what}: {k}: {x.dtype} {tuple(x.shape)} vs {y.dtype} {tuple(y.shape)}, equal values: "
              f"{x.shape == y.shape and torch.equal(x.to(y.dtype), y)}")


def h5_order(path):
    names = []
    with h5py.File(path, "r") as f:
        f.id.links.iterate(lambda n: names.append(n.decode()), idx_type=h5py.h5.INDEX_CRT_ORDER)
    return names


def roundtrip_from_cpp(fixdir, tmp):
    reference = torch.load(os.path.join(fixdir, "io_torch.pt"))
    for name, dtype in (("io_saved_by_cpp.h5", torch.float32), ("io_saved_by_cpp_f64.h5", torch.float64)):
        src = os.path.join(fixdir, name)
        out = os.path.join(tmp, name + ".pt")
        rc, _, err = run_tool(h52torch, src, out)
        check(rc == 0, f"h52torch {name}: exit {rc}: {err}")
        sd = torch.load(out)
        check(isinstance(sd, collections.OrderedDict), f"{name}: an OrderedDict, got {type(sd).__name__}")
        check(list(sd.keys()) == io_ref.EXPECTED_KEYS, f"{name}: PyTorch's key order")
        for k, v in sd.items():
            if k.endswith("num_batches_tracked"):
                check(v.dtype == torch.int64 and v.dim() == 0, f"{name}: {k} is a 0-d int64, got {v.dtype} {v.shape}")
            else:
                check(v.dtype == dtype, f"{name}: {k} is {dtype}, got {v.dtype}")
        net = io_ref.IoNet().to(dtype)
        result = net.load_state_dict(sd, strict=True)
        check(not result.missing_keys and not result.unexpected_keys, f"{name}: strict load")
        same_state(net.state_dict(), reference, f"{name} loaded into IoNet", dtype=dtype)
        check(net.blocks[0].bn.num_batches_tracked.item() == 3 and net.blocks[1].bn.num_batches_tracked.item() == 5,
              f"{name}: num_batches_tracked")
        with h5py.File(src, "r") as f:
            check(f.attrs["model_name"] == b"io_net", f"{name}: model_name attribute")


def python_roundtrip(fixdir, tmp):
    """torch2h5 then h52torch is the identity; torch2h5's file equals the C++ writer's in content and layout."""
    pt = os.path.join(fixdir, "io_torch.pt")
    reference = torch.load(pt)
    h5 = os.path.join(tmp, "py.h5")
    rc, _, err = run_tool(torch2h5, pt, h5, "--model-name", "io_net")
    check(rc == 0 and err == "", f"torch2h5 io_torch.pt: exit {rc}: {err}")
    back = os.path.join(tmp, "py.pt")
    check(run_tool(h52torch, h5, back)[0] == 0, "h52torch py.h5")
    same_state(torch.load(back), reference, "torch2h5 -> h52torch")

    cpp = os.path.join(fixdir, "io_saved_by_cpp.h5")
    check(h5_order(h5) == h5_order(cpp) == io_ref.EXPECTED_KEYS, "creation order of both writers")
    with h5py.File(h5, "r") as a, h5py.File(cpp, "r") as b:
        check(dict(a.attrs) == dict(b.attrs), f"attributes {dict(a.attrs)} vs {dict(b.attrs)}")
        for k in io_ref.EXPECTED_KEYS:
            x, y = a[k], b[k]
            same = (x.dtype == y.dtype and x.shape == y.shape and x.chunks == y.chunks and
                    x.fletcher32 == y.fletcher32 and np.array_equal(x[()], y[()]) and
                    x.id.get_create_plist().get_layout() == y.id.get_create_plist().get_layout())
            check(same, f"{k}: torch2h5 and C++ datasets differ")


def converter_inputs(fixdir, tmp):
    """Checkpoint dicts, whole modules, dtype conversions."""
    sd = torch.load(os.path.join(fixdir, "io_torch.pt"))
    net = io_ref.IoNet().float()
    net.load_state_dict(sd)
    cases = {
        "state_dict_entry": {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
        "model_entry": {"model": sd},
        "model_state_dict_entry": {"model_state_dict": sd, "loss": 0.5},
        "module_in_checkpoint": {"model": net, "epoch": 1},
        "whole_module": net,
    }
    for name, obj in cases.items():
        pt = os.path.join(tmp, name + ".pt")
        torch.save(obj, pt)
        h5 = os.path.join(tmp, name + ".h5")
        rc, _, err = run_tool(torch2h5, pt, h5)
        check(rc == 0, f"torch2h5 {name}: exit {rc}: {err}")
        if "module" in name:
            check("full unpickling" in err, f"{name}: warns about full unpickling: {err!r}")
        back = os.path.join(tmp, name + ".back.pt")
        check(run_tool(h52torch, h5, back)[0] == 0, f"h52torch {name}")
        same_state(torch.load(back), sd, name)

    # A whole module of torch's own classes, through the command line (as a user runs it).
    seq = torch.nn.Sequential(torch.nn.Conv3d(2, 3, (1, 2, 3)), torch.nn.BatchNorm3d(3)).float()
    seq[1].num_batches_tracked.fill_(4)
    pt = os.path.join(tmp, "seq.pt")
    torch.save(seq, pt)
    h5 = os.path.join(tmp, "seq.h5")
    p = subprocess.run([sys.executable, os.path.join(TOOLS, "torch2h5.py"), pt, h5, "--model-name", "Ünet-β"],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"torch2h5 CLI on a whole module: {p.returncode} {p.stderr}")
    back = os.path.join(tmp, "seq.back.pt")
    p = subprocess.run([sys.executable, os.path.join(TOOLS, "h52torch.py"), h5, back], capture_output=True, text=True)
    check(p.returncode == 0, f"h52torch CLI: {p.returncode} {p.stderr}")
    seq2 = torch.nn.Sequential(torch.nn.Conv3d(2, 3, (1, 2, 3)), torch.nn.BatchNorm3d(3)).float()
    seq2.load_state_dict(torch.load(back), strict=True)
    same_state(seq2.state_dict(), seq.state_dict(), "whole module via the CLI")
    with h5py.File(h5, "r") as f:
        check(f.attrs["model_name"].decode() == "Ünet-β", "UTF-8 model name")
        check(f["1.num_batches_tracked"].shape == () and f["1.num_batches_tracked"][()] == 4, "0-d counter")

    # dtypes: float32/float64/int64 kept; float16/bfloat16 -> float32 and int32/bool -> int64, with warnings.
    mixed = collections.OrderedDict([
        ("f32", torch.tensor([1.5, -2.0], dtype=torch.float32)),
        ("f64", torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)),
        ("i64", torch.tensor(7, dtype=torch.int64)),
        ("f16", torch.tensor([0.5, 65504.0, -1e-3], dtype=torch.float16)),
        ("bf16", torch.tensor([3.0, -0.125], dtype=torch.bfloat16)),
        ("i32", torch.tensor([1, -2, 3], dtype=torch.int32)),
        ("flag", torch.tensor([True, False])),
        ("empty", torch.zeros(0, 3)),
        ("view", torch.arange(12, dtype=torch.float32).reshape(3, 4).t()),  # not contiguous
    ])
    pt = os.path.join(tmp, "mixed.pt")
    torch.save(mixed, pt)
    h5 = os.path.join(tmp, "mixed.h5")
    rc, _, err = run_tool(torch2h5, pt, h5)
    check(rc == 0, f"torch2h5 mixed dtypes: {err}")
    for key, want in (("f16", "torch.float16 stored as float32"), ("bf16", "torch.bfloat16 stored as float32"),
                      ("i32", "torch.int32 stored as int64"), ("flag", "torch.bool stored as int64")):
        check(f"entry '{key}': {want}" in err, f"warning for {key}: {err!r}")
    check("'f32'" not in err and "'f64'" not in err and "'i64'" not in err, f"no warning for kept dtypes: {err!r}")
    expected = {"f32": np.float32, "f64": np.float64, "i64": np.int64, "f16": np.float32, "bf16": np.float32,
                "i32": np.int64, "flag": np.int64, "empty": np.float32, "view": np.float32}
    with h5py.File(h5, "r") as f:
        for key, dt in expected.items():
            d = f[key]
            check(d.dtype == np.dtype(dt) and d.shape == tuple(mixed[key].shape), f"{key}: {d.dtype} {d.shape}")
            check(np.array_equal(d[()], mixed[key].to(torch.float64 if dt != np.int64 else torch.int64).numpy()),
                  f"{key}: values")
    back = os.path.join(tmp, "mixed.back.pt")
    check(run_tool(h52torch, h5, back)[0] == 0, "h52torch mixed")
    got = torch.load(back)
    check(got["i64"].dim() == 0 and got["i64"].dtype == torch.int64, "0-d int64 stays 0-d int64")
    check(got["f64"].dtype == torch.float64 and torch.equal(got["f64"], mixed["f64"]), "float64 kept")
    check(torch.equal(got["view"], mixed["view"]), "non-contiguous tensor")


def expect_failure(mod, args, parts, what, out=None):
    rc, _, err = run_tool(mod, *args)
    check(rc == 1, f"{what}: exit status 1, got {rc} ({err.strip()})")
    for p in parts:
        check(p in err, f"{what}: '{p}' in the message: {err.strip()!r}")
    check("Traceback" not in err, f"{what}: no traceback")
    if out is not None:
        d = os.path.dirname(out)
        check(not any(".tmp-" in n for n in os.listdir(d)), f"{what}: no temporary file left in {d}")


def bad_input(fixdir, tmp):
    good_pt = os.path.join(fixdir, "io_torch.pt")
    out = os.path.join(tmp, "bad", "out.h5")
    os.makedirs(os.path.dirname(out))
    with open(out, "w") as f:
        f.write("old")  # a failed conversion must leave it alone

    def path(name, content):
        p = os.path.join(tmp, name)
        if isinstance(content, str):
            content = content.encode()
        if isinstance(content, bytes):
            with open(p, "wb") as f:
                f.write(content)
        else:
            torch.save(content, p)
        return p

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    missing = os.path.join(tmp, "missing.pt")
    expect_failure(torch2h5, [missing, out], [missing, "no such file"], "torch2h5 missing input", out)
    for name, content, parts in (
            ("text.pt", "not a torch file\n", ["not a readable PyTorch file"]),
            ("noise.pt", noise, ["not a readable PyTorch file"]),
            ("list.pt", [torch.ones(2)], ["holds a list"]),
            ("mixed.pt", {"a": torch.ones(2), "b": 3}, ["entry 'b' is a int", "state_dict"]),
            ("badentry.pt", {"state_dict": 5}, ["checkpoint entry 'state_dict' is a int"]),
            ("slash.pt", {"a/b": torch.ones(1)}, ["key 'a/b' cannot be a dataset name"]),
            ("empty.pt", {}, ["the state_dict is empty"]),
            ("complex.pt", {"c": torch.ones(2, dtype=torch.complex64)}, ["entry 'c'", "dense real tensors"])):
        p = path(name, content)
        expect_failure(torch2h5, [p, out], [p] + parts, f"torch2h5 {name}", out)
    with open(out) as f:
        check(f.read() == "old", "torch2h5: the existing output is untouched after failures")
    nodir = os.path.join(tmp, "no", "such", "dir", "out.h5")
    expect_failure(torch2h5, [good_pt, nodir], [nodir, "does not exist"], "torch2h5 missing output directory")
    expect_failure(torch2h5, [good_pt], ["usage", "required"], "torch2h5 without OUT")
    rc, out_text, _ = run_tool(torch2h5, "--help")
    check(rc == 0 and "usage: torch2h5.py" in out_text and "--model-name" in out_text, "torch2h5 --help")

    # h52torch
    out_pt = os.path.join(tmp, "bad", "out.pt")
    with open(out_pt, "w") as f:
        f.write("old")
    cpp = os.path.join(fixdir, "io_saved_by_cpp.h5")
    with open(cpp, "rb") as f:
        good = f.read()
    data = bytearray(good)
    # A flipped bit inside stem.weight's stored values: the Fletcher-32 checksum catches it.
    stem = torch.load(good_pt)["stem.weight"].numpy().tobytes()
    at = good.find(stem)
    check(at > 0, "stem.weight's bytes are found in the file")
    data[at + 5] ^= 0x10
    for name, content, parts in (
            ("missing.h5", None, ["no such file"]),
            ("empty.h5", b"", ["not an HDF5 file", "empty"]),
            ("text.h5", "a text file", ["not an HDF5 file"]),
            ("noise.h5", noise, ["not an HDF5 file"]),
            ("cut.h5", good[: len(good) // 2], ["truncated or corrupt"]),
            ("cut_early.h5", good[:100], ["truncated or corrupt"]),
            ("flipped.h5", bytes(data), ["cannot read dataset 'stem.weight'", "corrupt"])):
        p = os.path.join(tmp, name) if content is None else path(name, content)
        expect_failure(h52torch, [p, out_pt], [p] + parts, f"h52torch {name}", out_pt)
    for name, parts in (("io_bad_string.h5", ["dataset 'weight' holds", "float32, float64 or int64"]),
                        ("io_bad_compound.h5", ["dataset 'weight' holds"]),
                        ("io_bad_enum.h5", ["dataset 'mask' holds"]),
                        ("io_bad_vlen.h5", ["dataset 'weight' holds"]),
                        ("io_bad_null.h5", ["dataset 'weight' has no data"]),
                        ("io_bad_unwritten.h5", ["dataset 'weight' stores 0 bytes", "never written"]),
                        ("io_bad_version.h5", ["mmnet_format_version is '2'"]),
                        ("io_plain.h5", ["'grp' is a group"])):
        p = os.path.join(fixdir, name)
        expect_failure(h52torch, [p, out_pt], [p] + parts, f"h52torch {name}", out_pt)
    with open(out_pt) as f:
        check(f.read() == "old", "h52torch: the existing output is untouched after failures")
    expect_failure(h52torch, [cpp, os.path.join(tmp, "nodir", "x.pt")], ["does not exist"], "h52torch missing dir")
    p = subprocess.run([sys.executable, os.path.join(TOOLS, "h52torch.py"), os.path.join(tmp, "missing.h5"), out_pt],
                       capture_output=True, text=True)
    check(p.returncode == 1 and "no such file" in p.stderr and "Traceback" not in p.stderr,
          f"h52torch CLI exit status 1: {p.returncode} {p.stderr!r}")
    rc, out_text, _ = run_tool(h52torch, "--help")
    check(rc == 0 and "usage: h52torch.py" in out_text, "h52torch --help")


def corrupt_sweep(fixdir, tmp, stride=3):
    """Every stride-th byte of a C++-saved file, changed: h52torch fails cleanly or reads the exact original."""
    src = os.path.join(fixdir, "io_saved_by_cpp.h5")
    with open(src, "rb") as f:
        good = f.read()
    original = h52torch.read_h5(src)
    bad = os.path.join(tmp, "bad.h5")
    detected = harmless = 0
    for i in range(0, len(good), stride):
        data = bytearray(good)
        data[i] ^= 0xFF if i % 2 else 1 << (i // 2 % 8)
        with open(bad, "wb") as f:
            f.write(data)
        try:
            got = h52torch.read_h5(bad)
        except h52torch.ConversionError as e:
            detected += 1
            if bad not in str(e):
                check(False, f"byte {i}: message without the file name: {e}")
            continue
        except Exception as e:  # noqa: BLE001
            check(False, f"byte {i}: {type(e).__name__} instead of a clean error: {e}")
            continue
        same = list(got) == list(original) and all(
            got[k].dtype == original[k].dtype and np.array_equal(got[k], original[k]) for k in original)
        check(same, f"byte {i}: changed byte gave different tensors, undetected")
        harmless += same
    print(f"corrupt sweep of {src}: {detected} detected, {harmless} harmless", flush=True)


def main():
    fixdir = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for step in (roundtrip_from_cpp, python_roundtrip, converter_inputs, bad_input, corrupt_sweep):
            sub = os.path.join(tmp, step.__name__)
            os.makedirs(sub)
            step(fixdir, sub)
    print(f"h5_roundtrip_check: {checks} checks, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
