"""MaxPool3d against torch.nn.MaxPool3d: outputs, argmax indices and input gradients for random inputs and
inputs with many exact ties (small integers, constant windows), with isotropic, anisotropic and overlapping
(stride < kernel, padded) windows."""
import torch

import common

# name, input shape, kernel, stride (None = kernel), padding, input kind
CASES = [
    ("k2", (2, 3, 6, 8, 10), 2, None, 0, "randn"),
    ("k221", (1, 2, 4, 6, 5), (2, 2, 1), None, 0, "randn"),
    ("k122", (2, 1, 3, 6, 8), (1, 2, 2), None, 0, "randn"),
    ("k4", (1, 2, 9, 13, 10), 4, None, 0, "randn"),
    ("k884", (1, 2, 16, 17, 9), (8, 8, 4), None, 0, "randn"),
    ("k3s1p1", (2, 3, 5, 6, 7), 3, 1, 1, "randn"),
    ("k3s2p1", (1, 2, 7, 8, 9), 3, 2, 1, "randn"),
    ("aniso_overlap", (2, 2, 6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 0, 1), "randn"),
    ("ties_k3s1p1", (2, 3, 5, 6, 7), 3, 1, 1, "ints"),
    ("ties_k2", (2, 3, 6, 8, 10), 2, None, 0, "ints"),
    ("ties_aniso", (2, 2, 6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 0, 1), "ints"),
    ("ties_k884", (1, 2, 16, 17, 9), (8, 8, 4), None, 0, "ints"),
    ("const_k3s1p1", (1, 2, 4, 5, 6), 3, 1, 1, "const"),
    ("const_neg_k2", (1, 2, 4, 6, 5), (2, 2, 1), None, 0, "const_neg"),
    ("blocks_k3s2p1", (1, 2, 7, 8, 9), 3, 2, 1, "blocks"),
]


def make_input(shape, kind):
    if kind == "randn":
        return torch.randn(*shape)
    if kind == "ints":
        return torch.randint(-2, 3, shape).double()
    if kind == "const":
        return torch.full(shape, 1.5)
    if kind == "const_neg":
        return torch.full(shape, -3.0)
    if kind == "blocks":  # piecewise constant in 2x2x2 blocks: every window holds equal values
        small = torch.randint(0, 3, (shape[0], shape[1], (shape[2] + 1) // 2, (shape[3] + 1) // 2, (shape[4] + 1) // 2)).double()
        big = small.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
        return big[:, :, : shape[2], : shape[3], : shape[4]].contiguous()
    raise ValueError(kind)


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, k, s, p, kind in CASES:
        pool = torch.nn.MaxPool3d(k, stride=s, padding=p, return_indices=True)
        x = make_input(shape, kind).requires_grad_(True)
        y, idx = pool(x)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[name + "/input"] = x
        out[name + "/output"] = y
        out[name + "/indices"] = idx
        out[name + "/grad_output"] = dy
        out[name + "/grad_input"] = x.grad
    common.write(outdir, "maxpool3d", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
