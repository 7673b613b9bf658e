"""PyTorch side of bench/conv_weight_kernels.cpp: the weight (and bias) gradient of Conv3d / ConvTranspose3d alone,
through aten::convolution_backward with output_mask (False, True, False) (oneDNN on cpu). Prints one line per
case: name, min seconds over the repeats (cpu time with one thread, else wall time), GFLOP/s (2 * output numel * Cin * kernel volume)."""
import sys
import time

import torch

CASES = [  # (name, transposed, N, Cin, Cout, (D, H, W), k, stride, pad, dil)
    ("1->8 16x128x128 k3", False, 1, 1, 8, (16, 128, 128), (3, 3, 3), 1, 1, 1),
    ("8->8 16x128x128 k3", False, 1, 8, 8, (16, 128, 128), (3, 3, 3), 1, 1, 1),
    ("8->8 16x128x128 k133", False, 1, 8, 8, (16, 128, 128), (1, 3, 3), 1, (0, 1, 1), 1),
    ("16->16 16x128x128 k133", False, 1, 16, 16, (16, 128, 128), (1, 3, 3), 1, (0, 1, 1), 1),
    ("32->32 32^3 k3", False, 1, 32, 32, (32, 32, 32), (3, 3, 3), 1, 1, 1),
    ("64->64 16^3 k3", False, 1, 64, 64, (16, 16, 16), (3, 3, 3), 1, 1, 1),
    ("64->32 16x64x64 k1", False, 1, 64, 32, (16, 64, 64), (1, 1, 1), 1, 0, 1),
    ("16->32 16x64x64 k3 s2", False, 1, 16, 32, (16, 64, 64), (3, 3, 3), 2, 1, 1),
    ("16->16 16x64x64 k3 d2", False, 1, 16, 16, (16, 64, 64), (3, 3, 3), 1, 2, 2),
    ("T 32->16 8x32x32 k2 s2", True, 1, 32, 16, (8, 32, 32), (2, 2, 2), 2, 0, 1),
]


def cases(batches):
    for c in CASES:
        for n in batches:
            yield (c[0] + f" N{n}",) + c[1:2] + (n,) + c[3:]


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    torch.set_num_threads(threads)
    # with one thread, process cpu time: on a shared machine it leaves out the time other processes held the core
    clock = time.process_time if threads == 1 else time.perf_counter
    torch.manual_seed(0)
    for name, tr, n, cin, cout, dhw, k, s, p, d in cases((1, 2)):
        x = torch.randn(n, cin, *dhw, dtype=torch.float32)
        if tr:
            w = torch.randn(cin, cout, *k)
            y = torch.nn.functional.conv_transpose3d(x, w, stride=s, padding=p, dilation=d)
        else:
            w = torch.randn(cout, cin, *k)
            y = torch.nn.functional.conv3d(x, w, stride=s, padding=p, dilation=d)
        dy = torch.randn_like(y)
        st = (s,) * 3 if isinstance(s, int) else s
        pa = (p,) * 3 if isinstance(p, int) else p
        di = (d,) * 3 if isinstance(d, int) else d

        def run(mask):
            return torch.ops.aten.convolution_backward(dy, x, w, [cout], st, pa, di, tr, [0, 0, 0], 1, mask)

        flops = 2.0 * (x.numel() if tr else y.numel()) * (cout if tr else cin) * k[0] * k[1] * k[2]
        res = {}
        for key, mask in (("w", [False, True, False]), ("wb", [False, True, True])):
            run(mask)
            best = 1e9
            for _ in range(repeats):
                a = clock()
                run(mask)
                best = min(best, clock() - a)
            res[key] = best
        print(f"{name:<34} weight {res['w'] * 1e3:9.3f} ms {flops / res['w'] * 1e-9:7.1f} GFLOP/s   "
              f"weight+bias {res['wb'] * 1e3:9.3f} ms", flush=True)


if __name__ == "__main__":
    main()
