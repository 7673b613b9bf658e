"""Global pooling over D, H, W against PyTorch: F.adaptive_avg_pool3d(x, 1), F.adaptive_max_pool3d(x, 1) (with
its indices; ties go to the first index) and the MMFNet std pool sqrt(x.var((2, 3, 4), unbiased=False) + eps).
Inputs: random, small integers (many ties), an all-zero and a constant channel (std = sqrt(eps), gradient 0),
size-1 spatial axes, and planes longer than the kernels' reduction block (4096) so the two-pass blocking runs."""
import torch
import torch.nn.functional as F

import common

# name, input shape, kind
CASES = [
    ("randn", (2, 3, 4, 5, 6), "randn"),
    ("ties", (2, 3, 3, 4, 5), "ints"),
    ("zero_channel", (2, 4, 3, 5, 4), "zero_channel"),
    ("size1", (2, 3, 1, 1, 1), "randn"),
    ("size1_axes", (2, 2, 1, 7, 1), "randn"),
    ("big", (1, 2, 9, 30, 33), "randn"),       # 8910 per plane: 3 blocks
    ("big_ties", (2, 2, 9, 30, 33), "ints"),
    ("big_zero", (1, 3, 8, 32, 33), "zero_channel"),
]
EPS = [("", 1e-6), ("_eps1e-2", 1e-2)]


def make_input(shape, kind):
    if kind == "randn":
        return torch.randn(*shape)
    if kind == "ints":
        return torch.randint(-2, 3, shape).double()
    if kind == "zero_channel":  # channel 1 all zero, channel 2 constant, the rest random after a ReLU
        x = torch.relu(torch.randn(*shape))
        x[:, 1] = 0.0
        x[:, 2] = 0.75
        return x
    raise ValueError(kind)


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, kind in CASES:
        x0 = make_input(shape, kind)
        out[name + "/input"] = x0
        k = shape[2] * shape[3] * shape[4]

        x = x0.clone().requires_grad_(True)
        y = F.adaptive_avg_pool3d(x, 1)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[name + "/grad_output"] = dy
        out[name + "/avg/output"] = y
        out[name + "/avg/grad_input"] = x.grad

        x = x0.clone().requires_grad_(True)
        y, idx = F.adaptive_max_pool3d(x, 1, return_indices=True)
        y.backward(dy)
        # first-index rule on ties, checked here against a plain flattened argmax (first occurrence)
        first = torch.tensor([[int((row == row.max()).nonzero()[0]) for row in plane] for plane in x0.reshape(shape[0], shape[1], k)])
        assert torch.equal(idx.reshape(shape[0], shape[1]), first), name
        out[name + "/max/output"] = y
        out[name + "/max/indices"] = idx
        out[name + "/max/grad_input"] = x.grad

        for suffix, eps in EPS:
            x = x0.clone().requires_grad_(True)
            y = torch.sqrt(x.var(dim=(2, 3, 4), unbiased=False, keepdim=True) + eps)
            y.backward(dy)
            out[name + "/std" + suffix + "/output"] = y
            out[name + "/std" + suffix + "/grad_input"] = x.grad
    common.write(outdir, "global_pool", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
