"""Broadcasting element-wise ops against PyTorch autograd: a * b and a + b with b a channel gate
(N x C x 1 x 1 x 1), a spatial gate (N x 1 x D x H x W), the full shape, a batch-shared gate and a per-sample
scalar, with dL/da and dL/db (summed over the broadcast axes); x.expand(shape) of a pooled N x C x 1 x 1 x 1
tensor with its gradient (the sum over D, H, W). The "big" cases reduce more than 4096 terms per gate element,
so the kernels' two-pass blocking runs."""
import torch

import common

# name, a shape, b shape
CASES = [
    ("channel_gate", (2, 3, 4, 5, 6), (2, 3, 1, 1, 1)),
    ("spatial_gate", (2, 3, 4, 5, 6), (2, 1, 4, 5, 6)),
    ("full", (2, 3, 4, 5, 6), (2, 3, 4, 5, 6)),
    ("batch_shared", (2, 3, 4, 5, 6), (1, 3, 1, 5, 1)),
    ("scalar_per_sample", (2, 3, 4, 5, 6), (2, 1, 1, 1, 1)),
    ("rank3", (2, 4, 7), (2, 1, 7)),
    ("channel_gate_big", (2, 3, 9, 30, 33), (2, 3, 1, 1, 1)),
    ("spatial_gate_one_channel", (2, 1, 3, 4, 5), (2, 1, 3, 4, 5)),
]
# name, input shape, target shape
EXPAND = [
    ("pool_back", (2, 3, 1, 1, 1), (2, 3, 4, 5, 6)),
    ("pool_back_big", (1, 2, 1, 1, 1), (1, 2, 9, 30, 33)),
    ("mixed", (2, 1, 4, 1, 6), (2, 3, 4, 5, 6)),
]


def generate(outdir):
    common.seed(0)
    out = {}
    for name, sa, sb in CASES:
        a0, b0 = torch.randn(*sa), torch.randn(*sb)
        dy = torch.randn(*sa)
        out[name + "/a"] = a0
        out[name + "/b"] = b0
        out[name + "/grad_output"] = dy
        for op, f in (("mul", lambda a, b: a * b), ("add", lambda a, b: a + b)):
            a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
            y = f(a, b)
            y.backward(dy)
            out[f"{name}/{op}/output"] = y
            out[f"{name}/{op}/grad_a"] = a.grad
            out[f"{name}/{op}/grad_b"] = b.grad
    for name, sx, shape in EXPAND:
        x = torch.randn(*sx).requires_grad_(True)
        y = x.expand(*shape)
        dy = torch.randn(*shape)
        y.backward(dy)
        out[name + "/input"] = x
        out[name + "/output"] = y.contiguous()
        out[name + "/grad_output"] = dy
        out[name + "/grad_input"] = x.grad
    common.write(outdir, "broadcast", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
