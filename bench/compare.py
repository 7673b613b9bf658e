#!/usr/bin/python3
"""mmnet against PyTorch on this machine, in one run: the `mmnet bench` CLI cases and the same cases in PyTorch,
interleaved case by case (so both see the same machine load), then a markdown table of ratios.

Run with Debian's /usr/bin/python3 (torch 1.13, h5py); `bash bench/run.sh` builds the Release CLI first.

    /usr/bin/python3 bench/compare.py [--quick] [--threads 1,2] [--batches 1,2] [--repeats 5]
                                      [--build-dir build] [--markdown out.md] [--jsonl out.jsonl]
                                      [--no-conv] [--no-train] [--models maml,conresnet,...]

conv3d cases: float32, bias on, padding kernel / 2 unless the case gives one. Each pass (forward, backward-data,
backward-weight) is timed on its own: mmnet through its cpu backend kernels (`mmnet bench conv3d`), PyTorch
through F.conv3d under no_grad, torch.nn.grad.conv3d_input and torch.nn.grad.conv3d_weight (both call
aten.convolution_backward with only that output requested). FLOPs of each pass: 2 * out_numel * Cin * kvol.

train-step cases: zero_grad, forward, loss, backward, [clip_grad_norm_,] optimiser step, then an eval-mode
forward to probabilities (PyTorch under no_grad). MMFNet: the PyTorch model is tests/reference/mmfnet_ref.py (the
one the fixtures come from), soft Dice (eps 1, one batch-global ratio) on sigmoid(logits), as
mmnet::mmfnet::Trainer, Adam lr 1e-3. TinyNet: tests/reference/tiny_net_ref.py, soft Dice + BCE with logits, Adam
lr 1e-3. The newer models (newer_model_case) run their tests/reference/<model>_ref.py modules with the library's
loss and the paper's / official code's optimiser: MAML (MAMLLoss code preset; SGD lr 0.01 Nesterov 0.99 wd 3e-5,
clip 12), one CSCN stage, BUNet or ACDNet (distance-weighted focal, gamma 2; Adam lr 1e-3), HMRNet-p / -s
(HMRNetLoss theta 2.5; SGD lr 0.01 Nesterov 0.99 wd 1e-5, clip 12), ConResNet (ConResNetLoss code mode, lambda
0.5; Adam lr 1e-4 wd 5e-4). Each case runs in its own process on both sides (the mmnet CLI; this script re-run
with --torch-train-step) so that the peak RSS is the case's own (VmHWM of /proc/self/status: getrusage's
ru_maxrss, also recorded, inherits the parent's RSS at fork time on Linux).

Every time is the median of --repeats runs after one warm-up run (the minimum is kept in the JSON lines too).
Ratios: speed = mmnet speed / PyTorch speed = PyTorch time / mmnet time (> 1: mmnet faster); memory = mmnet
peak RSS / PyTorch peak RSS (< 1: mmnet uses less).
"""
import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "tests", "reference")

# The table (issue [D]): batch and thread counts come from --batches / --threads.
CONV_CASES = [
    dict(cin=1, cout=8, shape=(16, 128, 128), kernel=(3, 3, 3)),
    dict(cin=8, cout=8, shape=(16, 128, 128), kernel=(3, 3, 3)),
    dict(cin=8, cout=8, shape=(16, 128, 128), kernel=(1, 3, 3)),
    dict(cin=16, cout=16, shape=(16, 128, 128), kernel=(1, 3, 3)),
    dict(cin=32, cout=32, shape=(32, 32, 32), kernel=(3, 3, 3)),
    dict(cin=64, cout=64, shape=(16, 16, 16), kernel=(3, 3, 3)),
    dict(cin=64, cout=32, shape=(16, 64, 64), kernel=(1, 1, 1)),
    dict(cin=16, cout=32, shape=(16, 64, 64), kernel=(3, 3, 3), stride=(2, 2, 2)),
    dict(cin=16, cout=16, shape=(16, 64, 64), kernel=(3, 3, 3), dilation=(2, 2, 2), padding=(2, 2, 2)),
]
TRAIN_CASES = [
    dict(model="mmfnet", config="paper", batch=2, shape=(16, 128, 128)),
    dict(model="tiny", width=8, batch=2, shape=(16, 64, 64)),
    # The four newer models: library presets (small / paper) at CPU-sized inputs; see docs/performance.md.
    dict(model="maml", config="small", batch=2, shape=(32, 32, 32)),
    dict(model="cscn-bunet", config="paper", batch=2, shape=(8, 24, 24)),  # the paper's block
    dict(model="cscn-acdnet", config="paper", batch=2, shape=(8, 24, 24)),
    dict(model="hmrnet-p", config="paper", batch=2, shape=(16, 32, 32)),  # batch 1: PyTorch picks slow_conv3d
    dict(model="hmrnet-s", config="paper", batch=2, shape=(16, 32, 32)),
    dict(model="conresnet", config="small", batch=2, shape=(32, 64, 64)),
]
# --quick: small shapes with every code path (k3, (1,3,3), k1, stride, dilation; both models) for smoke tests.
QUICK_CONV = [
    dict(cin=1, cout=8, shape=(8, 32, 32), kernel=(3, 3, 3)),
    dict(cin=8, cout=8, shape=(8, 32, 32), kernel=(1, 3, 3)),
    dict(cin=16, cout=8, shape=(8, 32, 32), kernel=(1, 1, 1)),
    dict(cin=8, cout=16, shape=(8, 32, 32), kernel=(3, 3, 3), stride=(2, 2, 2)),
    dict(cin=8, cout=8, shape=(8, 32, 32), kernel=(3, 3, 3), dilation=(2, 2, 2), padding=(2, 2, 2)),
]
QUICK_TRAIN = [
    dict(model="mmfnet", config="tiny", batch=2, shape=(16, 32, 32)),
    dict(model="tiny", width=4, batch=2, shape=(8, 32, 32)),
    dict(model="maml", config="tiny", batch=2, shape=(16, 24, 32)),
    dict(model="cscn-bunet", config="tiny", batch=2, shape=(4, 8, 12)),
    dict(model="cscn-acdnet", config="tiny", batch=2, shape=(4, 8, 12)),
    dict(model="hmrnet-p", config="tiny", batch=2, shape=(16, 16, 24)),
    dict(model="hmrnet-s", config="tiny", batch=2, shape=(16, 16, 20)),
    dict(model="conresnet", config="tiny", batch=2, shape=(16, 16, 24)),
]


def triple(v):
    return "x".join(str(int(a)) for a in v)


def conv_geometry(case):
    k = tuple(case["kernel"])
    return dict(kernel=k, stride=tuple(case.get("stride", (1, 1, 1))),
                padding=tuple(case.get("padding", tuple(a // 2 for a in k))),
                dilation=tuple(case.get("dilation", (1, 1, 1))))


def conv_label(case):
    g = conv_geometry(case)
    s = f"{case['cin']}->{case['cout']} {triple(case['shape'])} k{triple(g['kernel'])}"
    if g["stride"] != (1, 1, 1):
        s += f" s{triple(g['stride'])}"
    if g["padding"] != tuple(a // 2 for a in g["kernel"]):
        s += f" p{triple(g['padding'])}"
    if g["dilation"] != (1, 1, 1):
        s += f" d{triple(g['dilation'])}"
    return s


def train_label(case):
    what = f"tiny width {case['width']}" if case["model"] == "tiny" else f"{case['model']} {case['config']}"
    return f"{what} {triple(case['shape'])}"


def timed(repeats, f, prepare=lambda: None):
    """(median, min) seconds of f() over repeats runs after one warm-up run; prepare() untimed before each."""
    prepare()
    f()
    t = []
    for _ in range(repeats):
        prepare()
        a = time.perf_counter()
        f()
        t.append(time.perf_counter() - a)
    return statistics.median(t), min(t)


def env_for(threads):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_json(cmd, threads):
    """Runs cmd, returns its last stdout line as a dict ({'error': ...} when it fails)."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env_for(threads))
    lines = [l for l in p.stdout.splitlines() if l.strip().startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}").splitlines()[-1]}
    return json.loads(lines[-1])


# ---- PyTorch side ----------------------------------------------------------------------------------------

def torch_kernel(f):
    """Which ATen convolution the forward f() ran (one untimed call under the profiler): "oneDNN"
    (mkldnn_convolution), "native" (slow_conv3d: vol2col + GEMM, what PyTorch 1.13's heuristic picks at batch 1
    when N*C*D*H <= 20480 and for 1x1x1 kernels on one thread) or "?". The backward passes use the same choice."""
    from torch.profiler import profile
    with profile() as prof:
        f()
    keys = " ".join(e.key for e in prof.key_averages())
    return "oneDNN" if "mkldnn" in keys else "native" if "slow_conv" in keys else "?"


def torch_conv(case, batch, threads, repeats):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = conv_geometry(case)
    cin, cout = case["cin"], case["cout"]
    x = torch.randn(batch, cin, *case["shape"])
    w = torch.randn(cout, cin, *g["kernel"]) / math.sqrt(cin * math.prod(g["kernel"]))
    b = torch.randn(cout) * 0.1
    conv = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"])
    with torch.no_grad():
        y = F.conv3d(x, w, b, **conv)
        dy = torch.randn_like(y)

        def fwd():
            F.conv3d(x, w, b, **conv)

        def bwd_data():
            torch.nn.grad.conv3d_input(x.shape, w, dy, **conv)

        def bwd_weight():
            torch.nn.grad.conv3d_weight(x, w.shape, dy, **conv)

        passes = (("fwd", fwd), ("bwd_data", bwd_data), ("bwd_weight", bwd_weight))
        times = {name: timed(repeats, f) for name, f in passes}
        kernel = torch_kernel(fwd)  # the backward passes go through the same choice (ATen select_conv_backend)
    flops = 2.0 * y.numel() * cin * math.prod(g["kernel"])
    r = {"bench": "conv3d", "impl": "torch", "case": conv_label(case), "batch": batch, "threads": threads,
         "repeats": repeats, "out_shape": list(y.shape[2:]), "gflop": flops * 1e-9, "kernel": kernel}
    for name, (med, mn) in times.items():
        r[f"{name}_s"] = med
        r[f"{name}_min_s"] = mn
        r[f"{name}_gflops"] = flops / med * 1e-9
    return r


def proc_status_mb(key):
    """A "VmXXX:" line of /proc/self/status in MB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb():
    """This process's peak RSS in MB: VmHWM, as `mmnet bench train-step` reports it. getrusage's ru_maxrss would
    start at the parent's RSS at fork time on Linux (this script's, with torch and conv3d tensors loaded)."""
    hwm = proc_status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def newer_model_case(case, n, shape):
    """MAML, CSCN (one stage), HMRNet, ConResNet from tests/reference/*_ref.py (the modules the C++ is tested
    against), each with the loss and optimiser of `mmnet bench train-step` (apps/mmnet/bench.hpp).
    Returns (net, train_loss(), infer(), optimiser, clip max-norm or None, parameter count); data are made here,
    outside the step."""
    import torch
    import torch.nn.functional as F
    model, config = case["model"], case["config"]
    if model == "maml":
        import maml_ref
        cfg = dict(small=dict(m=4, c=8, p=3, cmax=64, k=4), tiny=maml_ref.TINY, brats=maml_ref.BRATS,
                   liver=maml_ref.LIVER)[config]
        net = maml_ref.MAML(**cfg).float()
        m, p = cfg["m"], cfg["p"]
        x = torch.randn(n, m, *shape)
        y = torch.randint(0, cfg["k"], (n, 1, *shape)).float()
        w_joint, lam, alpha = maml_ref.preset("code", p)  # MAMLLossOptions::code(P)

        def train_loss():
            targets = [y] + [maml_ref.downsample_labels(y, 2 ** k) for k in range(1, p)]  # as MAMLLoss does per call
            return maml_ref.total_loss(net(x)[0], targets, m, p, w_joint, lam, alpha)[0]

        def infer():
            return torch.softmax(net(x)[0][0], 1)

        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
        return net, train_loss, infer, opt, 12.0, None
    if model in ("cscn-bunet", "cscn-acdnet"):
        import cscn_ref
        if model == "cscn-bunet":
            net, cin = (cscn_ref.BUNet(b=2) if config == "tiny" else cscn_ref.BUNet()), 1
        else:
            net, cin = (cscn_ref.ACDNet(**cscn_ref.TINY_ACD) if config == "tiny" else cscn_ref.ACDNet()), 2
        net = net.float()
        x = torch.randn(n, cin, *shape)
        y = (torch.rand(n, 1, *shape) < 0.3).float()
        alpha = cscn_ref.alpha_map(y.numpy()).float()  # EDT + 1 (scipy), once, as the block cutter supplies it

        def train_loss():
            return cscn_ref.focal(net(x), y, alpha, 2.0)

        def infer():
            return torch.softmax(net(x), 1)

        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        return net, train_loss, infer, opt, None, None
    if model in ("hmrnet-p", "hmrnet-s"):
        import hmrnet_ref
        form = model[-1]
        net = hmrnet_ref.HMRNet(form, **(hmrnet_ref.TINY if config == "tiny" else {})).float()
        x = torch.randn(n, 3, *shape)
        y = (torch.rand(n, 1, *shape) < 0.3).float()

        def train_loss():
            return hmrnet_ref.total_loss(net(x), y, form, 2.5)

        def infer():
            return torch.softmax(net(x)[0], 1)

        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=1e-5)
        return net, train_loss, infer, opt, 12.0, None
    if model == "conresnet":
        import conresnet_ref
        cfg = dict(small=dict(cin=4, w=8, groups=4), tiny=dict(cin=2, w=4, groups=2),
                   brats=dict(cin=4, w=32, groups=8))[config]
        net = conresnet_ref.ConResNet(shape, num_classes=3, **cfg).float()
        x = torch.randn(n, cfg["cin"], *shape)
        x_res = conresnet_ref.image_residual(x)
        y = (torch.rand(n, 3, *shape) < 0.3).float()
        y_res = conresnet_ref.label_residual(y)

        def train_loss():
            return conresnet_ref.total_loss(net([x, x_res]), y, y_res, True, 0.5)[0]  # code mode, lambda 0.5

        def infer():
            return torch.sigmoid(net([x, x_res])[0])

        opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-4)
        # the official module holds 23 tensors no forward uses (spec §7.7); mmnet does not have them
        return net, train_loss, infer, opt, None, conresnet_ref.used_count(net)
    raise ValueError(f"unknown model {model}")


def torch_train_step_worker(case, threads, repeats):
    """Runs in its own process (peak RSS of this case only); prints one JSON line."""
    import torch
    import torch.nn.functional as F
    start_rss = proc_status_mb("VmRSS")  # torch imported, no model or data yet
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sys.path.insert(0, REFERENCE)
    n, shape = case["batch"], tuple(case["shape"])
    if case["model"] == "mmfnet":
        import mmfnet_ref
        cfg = mmfnet_ref.config() if case["config"] == "paper" else getattr(mmfnet_ref, case["config"])()
        net = mmfnet_ref.MMFNet(cfg).float()
        x = torch.randn(n, cfg["m"], *shape)

        def loss_of(logits, y):
            return mmfnet_ref.soft_dice(torch.sigmoid(logits), y)

        def logits_of(inp):
            return net(inp)[0]  # the reference returns (logits, taps); the taps are dropped at once
    elif case["model"] == "tiny":
        import tiny_net_ref
        net = tiny_net_ref.TinyNet(2, case["width"]).float()
        x = torch.randn(n, 2, *shape)

        def loss_of(logits, y):
            return tiny_net_ref.soft_dice(torch.sigmoid(logits), y) + F.binary_cross_entropy_with_logits(logits, y)

        def logits_of(inp):
            return net(inp)
    if case["model"] in ("mmfnet", "tiny"):
        y = (torch.rand(n, 1, *shape) < 0.3).float()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        clip, params = None, None

        def train_loss():
            return loss_of(logits_of(x), y)

        def infer_fn():
            return torch.sigmoid(logits_of(x))
    else:
        net, train_loss, infer_fn, opt, clip, params = newer_model_case(case, n, shape)
    last = {}

    def step():
        opt.zero_grad()
        loss = train_loss()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        last["loss"] = float(loss)

    net.train()
    step_med, step_min = timed(repeats, step)
    net.eval()

    def infer():
        with torch.no_grad():
            infer_fn()

    infer_med, infer_min = timed(repeats, infer)
    r = {"bench": "train_step", "impl": "torch", "model": case["model"], "batch": n, "shape": list(shape),
         "threads": threads, "repeats": repeats, "params": params or sum(p.numel() for p in net.parameters()),
         "train_step_s": step_med, "train_step_min_s": step_min, "infer_s": infer_med, "infer_min_s": infer_min,
         "peak_rss_mb": peak_rss_mb(), "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
         "start_rss_mb": start_rss, "last_loss": last["loss"]}
    print(json.dumps(r), flush=True)


# ---- mmnet side ------------------------------------------------------------------------------------------

def mmnet_conv(cli, case, batch, threads, repeats):
    g = conv_geometry(case)
    cmd = [cli, "bench", "conv3d", "--cin", str(case["cin"]), "--cout", str(case["cout"]),
           "--shape", triple(case["shape"]), "--kernel", ",".join(map(str, g["kernel"])),
           "--stride", ",".join(map(str, g["stride"])), "--padding", ",".join(map(str, g["padding"])),
           "--dilation", ",".join(map(str, g["dilation"])), "--batch", str(batch), "--threads", str(threads),
           "--repeats", str(repeats)]
    return run_json(cmd, threads)


def mmnet_train(cli, case, threads, repeats):
    cmd = [cli, "bench", "train-step", "--model", case["model"], "--batch", str(case["batch"]),
           "--shape", triple(case["shape"]), "--threads", str(threads), "--repeats", str(repeats)]
    cmd += ["--width", str(case["width"])] if case["model"] == "tiny" else ["--config", case["config"]]
    return run_json(cmd, threads)


def torch_train(case, threads, repeats):
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-train-step", json.dumps(case),
           "--threads", str(threads), "--repeats", str(repeats)]
    return run_json(cmd, threads)


# ---- report ----------------------------------------------------------------------------------------------

def fmt(v, digits=3):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"


def ratio(a, b):
    return b / a if a and b else None  # PyTorch time / mmnet time, or mmnet MB / PyTorch MB with args swapped


def sec(r, what, args):
    """Seconds of a measurement ("fwd", "train_step", ...): the median, or the minimum with --stat min."""
    return r[f"{what}_min_s" if args.stat == "min" else f"{what}_s"]


def geomean(vals):
    vals = [v for v in vals if v]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def machine_summary():
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
    except OSError:
        pass
    flags = info.get("Flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    return (f"{info.get('Model name', platform.processor() or '?')} (family {info.get('CPU family', '?')}, "
            f"model {info.get('Model', '?')}), {info.get('CPU(s)', os.cpu_count())} CPUs, {simd}, "
            f"L2 {info.get('L2 cache', '?')}, L3 {info.get('L3 cache', '?')}, {platform.system()} {platform.release()}")


def markdown(results, args):
    import torch
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "?"
    except OSError:
        commit = "?"
    out = [f"Run {datetime.datetime.now().isoformat(timespec='minutes')}, mmnet {commit}, PyTorch {torch.__version__}, "
           f"repeats {args.repeats} ({args.stat} after one warm-up){', --quick' if args.quick else ''}.",
           f"Machine: {machine_summary()}.", "",
           "Speed ratio = PyTorch time / mmnet time (> 1: mmnet faster); memory ratio = mmnet peak RSS / PyTorch "
           "peak RSS (< 1: mmnet smaller).", ""]
    conv = [r for r in results if r["kind"] == "conv"]
    if conv:
        out += ["### conv3d (float32, GFLOP/s; FLOPs = 2 · out_numel · Cin · kvol per pass)", "",
                "| case | N | T | fwd mmnet | fwd torch | fwd ratio | bwd-data mmnet | bwd-data torch | bwd-data ratio "
                "| bwd-weight mmnet | bwd-weight torch | bwd-weight ratio | torch kernel |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in conv:
            m, t = r["mmnet"], r["torch"]
            cells = [r["label"], str(r["batch"]), str(r["threads"])]
            for p in ("fwd", "bwd_data", "bwd_weight"):
                if "error" in m or "error" in t:
                    cells += ["error" if "error" in m else "", "error" if "error" in t else "", "—"]
                    continue
                tm, tt = sec(m, p, args), sec(t, p, args)
                cells += [fmt(m["gflop"] / tm), fmt(t["gflop"] / tt), fmt(ratio(tm, tt), 2)]
            cells.append(t.get("kernel", "?"))
            out.append("| " + " | ".join(cells) + " |")
        out += ["", "Geometric mean of the speed ratios:", "", "| T | fwd | bwd-data | bwd-weight |", "|---|---|---|---|"]
        for th in sorted({r["threads"] for r in conv}):
            rows = [r for r in conv if r["threads"] == th and "error" not in r["mmnet"] and "error" not in r["torch"]]
            out.append(f"| {th} | " + " | ".join(
                fmt(geomean([ratio(sec(r["mmnet"], p, args), sec(r["torch"], p, args)) for r in rows]), 2)
                for p in ("fwd", "bwd_data", "bwd_weight")) + " |")
        out.append("")
    train = [r for r in results if r["kind"] == "train"]
    if train:
        out += ["### training step and inference (float32, seconds; peak RSS of the case's own process, MB)", "",
                "| model | N | T | params mmnet / torch | step mmnet | step torch | step ratio | infer mmnet "
                "| infer torch | infer ratio | RSS mmnet | RSS torch | memory ratio | torch RSS after import |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in train:
            m, t = r["mmnet"], r["torch"]
            if "error" in m or "error" in t:
                out.append(f"| {r['label']} | {r['batch']} | {r['threads']} | error: "
                           f"{m.get('error', '')} {t.get('error', '')} |" + " |" * 10)
                continue
            params = f"{m['params']} / {t['params']}" + ("" if m["params"] == t["params"] else " (DIFFER)")
            out.append("| " + " | ".join([
                r["label"], str(r["batch"]), str(r["threads"]), params,
                fmt(sec(m, "train_step", args)), fmt(sec(t, "train_step", args)),
                fmt(ratio(sec(m, "train_step", args), sec(t, "train_step", args)), 2),
                fmt(sec(m, "infer", args)), fmt(sec(t, "infer", args)),
                fmt(ratio(sec(m, "infer", args), sec(t, "infer", args)), 2),
                fmt(m["peak_rss_mb"], 4), fmt(t["peak_rss_mb"], 4), fmt(m["peak_rss_mb"] / t["peak_rss_mb"], 2),
                fmt(t.get("start_rss_mb"), 4)]) + " |")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small cases only (smoke test, about a minute)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--batches", default="1,2", help="comma-separated conv3d batch sizes (default 1,2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement, after a warm-up (default 5)")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="which time the table uses (default median; min is steadier on a loaded machine)")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"), help="where bin/mmnet is (default build)")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--jsonl", help="also write every raw JSON result to this file")
    ap.add_argument("--no-conv", action="store_true", help="skip the conv3d cases")
    ap.add_argument("--no-train", action="store_true", help="skip the train-step cases")
    ap.add_argument("--models", help="comma-separated train-step models to run (default all: mmfnet, tiny, maml, "
                                     "cscn-bunet, cscn-acdnet, hmrnet-p, hmrnet-s, conresnet)")
    ap.add_argument("--torch-train-step", help=argparse.SUPPRESS)  # internal: one PyTorch case in this process
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t]
    batches = [int(b) for b in args.batches.split(",") if b]
    if args.repeats < 1 or not threads or min(threads) < 1 or not batches or min(batches) < 1:
        ap.error("--repeats, --threads and --batches need positive values")

    if args.torch_train_step:
        torch_train_step_worker(json.loads(args.torch_train_step), threads[0], args.repeats)
        return 0

    cli = os.path.join(args.build_dir, "bin", "mmnet")
    if not os.access(cli, os.X_OK):
        sys.exit(f"compare.py: {cli} not found; build it first (bash bench/run.sh builds a Release CLI), "
                 f"or pass --build-dir")
    jsonl = open(args.jsonl, "w") if args.jsonl else None

    def log(r):
        line = json.dumps(r)
        print(line, file=sys.stderr, flush=True)
        if jsonl:
            jsonl.write(line + "\n")
            jsonl.flush()

    results = []
    if not args.no_conv:
        for case in QUICK_CONV if args.quick else CONV_CASES:
            for batch in batches:
                for th in threads:
                    m = mmnet_conv(cli, case, batch, th, args.repeats)
                    t = torch_conv(case, batch, th, args.repeats)
                    log(m), log(t)
                    results.append(dict(kind="conv", label=conv_label(case), batch=batch, threads=th, mmnet=m, torch=t))
    if not args.no_train:
        models = set(args.models.split(",")) if args.models else None
        for case in QUICK_TRAIN if args.quick else TRAIN_CASES:
            if models is not None and case["model"] not in models:
                continue
            for th in threads:
                m = mmnet_train(cli, case, th, args.repeats)
                t = torch_train(case, th, args.repeats)
                log(m), log(t)
                results.append(dict(kind="train", label=train_label(case), batch=case["batch"], threads=th, mmnet=m,
                                    torch=t))
    table = markdown(results, args)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if jsonl:
        jsonl.close()
    failed = [r for r in results if "error" in r["mmnet"] or "error" in r["torch"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
