"""PyTorch side of bench/run.sh: the same cases as bench_main.cpp, JSON lines (median of repeats)."""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/tests/reference")
from tiny_net_ref import TinyNet, soft_dice  # noqa: E402
import mmfnet_ref  # noqa: E402


def median(repeats, f):
    f()
    t = []
    for _ in range(repeats):
        a = time.perf_counter()
        f()
        t.append(time.perf_counter() - a)
    return statistics.median(t)


def main():
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else torch.get_num_threads()
    repeats = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 5
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cases = [(1, 16, 16, 32, 64, 64, 3, 3, 3), (1, 32, 32, 32, 32, 32, 3, 3, 3), (2, 8, 8, 16, 128, 128, 1, 3, 3),
             (2, 24, 8, 16, 64, 64, 1, 1, 1)]
    for n, cin, cout, d, h, w, kd, kh, kw in cases:
        conv = nn.Conv3d(cin, cout, (kd, kh, kw), padding=(kd // 2, kh // 2, kw // 2))
        x = torch.randn(n, cin, d, h, w, requires_grad=True)
        y = conv(x)
        dy = torch.randn_like(y)

        def fwd():
            with torch.no_grad():
                conv(x)

        def bwd():
            out = conv(x)  # autograd needs a graph; subtract the forward time below
            out.backward(dy)

        tf = median(repeats, fwd)
        tb = max(median(repeats, bwd) - tf, 1e-9)
        flops = 2.0 * y.numel() * cin * kd * kh * kw
        print(json.dumps({"bench": "conv3d", "case": f"{n}x{cin}->{cout} {d}x{h}x{w} k{kd}x{kh}x{kw}",
                          "threads": threads, "fwd_s": tf, "bwd_s": tb, "fwd_gflops": flops / tf * 1e-9,
                          "bwd_gflops": 2 * flops / tb * 1e-9}), flush=True)
    net = TinyNet(2, 8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(2, 2, 16, 64, 64)
    g = (torch.randn(2, 1, 16, 64, 64) > 0.5).float()

    def step():
        opt.zero_grad()
        logits = net(x)
        loss = soft_dice(torch.sigmoid(logits), g) + F.binary_cross_entropy_with_logits(logits, g)
        loss.backward()
        opt.step()

    print(json.dumps({"bench": "tiny_net_train_step", "case": "2x2x16x64x64 width 8", "threads": threads,
                      "step_s": median(repeats, step)}), flush=True)

    net = mmfnet_ref.MMFNet(mmfnet_ref.config()).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 16, 128, 128)
    g = (torch.randn(2, 1, 16, 128, 128) > 0.5).float()

    def mmfnet_step():
        opt.zero_grad()
        logits, _ = net(x)  # the reference returns (logits, taps)
        loss = soft_dice(torch.sigmoid(logits), g)
        loss.backward()
        opt.step()

    print(json.dumps({"bench": "mmfnet_train_step", "case": "paper 2x3x16x128x128", "threads": threads,
                      "step_s": median(3, mmfnet_step)}), flush=True)


if __name__ == "__main__":
    main()
