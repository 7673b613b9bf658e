"""Flip and Permute of the spatial axes against torch.flip(x, dims=[2 + a ...]) and
x.permute(0, 1, 2 + p0, 2 + p1, 2 + p2): outputs and input gradients for every axis subset and every
permutation, on a volume whose axes all differ."""
import itertools

import torch

import common

SHAPE = (2, 3, 3, 4, 5)


def generate(outdir):
    common.seed(0)
    out = {}
    for r in range(4):
        for axes in itertools.combinations(range(3), r):
            name = "flip_" + ("".join(map(str, axes)) or "none")
            x = torch.randn(*SHAPE).requires_grad_(True)
            y = torch.flip(x, dims=[2 + a for a in axes])
            dy = torch.randn(*y.shape)
            y.backward(dy)
            out[name + "/axes"] = torch.tensor(axes, dtype=torch.int64)
            out[name + "/input"], out[name + "/output"] = x, y
            out[name + "/grad_output"], out[name + "/grad_input"] = dy, x.grad
    for p in itertools.permutations(range(3)):
        name = "permute_" + "".join(map(str, p))
        x = torch.randn(*SHAPE).requires_grad_(True)
        y = x.permute(0, 1, 2 + p[0], 2 + p[1], 2 + p[2])
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[name + "/order"] = torch.tensor(p, dtype=torch.int64)
        out[name + "/input"], out[name + "/output"] = x, y.contiguous()
        out[name + "/grad_output"], out[name + "/grad_input"] = dy, x.grad
    common.write(outdir, "flip_permute", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
