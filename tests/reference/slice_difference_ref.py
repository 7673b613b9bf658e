"""ConResNet's inter-slice residual along one spatial axis: y[0] = 0, y[d] = |x[d] - x[d-1]| (torch.abs, whose
derivative at 0 is 0), outputs and input gradients on random inputs and on inputs with exactly repeated
slices; and the label variant (no gradient) y[0] = (x[0] != 0), y[d] = (x[d] != x[d-1])."""
import torch

import common

# name, input shape, axis (0 = D, 1 = H, 2 = W), input kind
CASES = [
    ("d", (2, 3, 4, 5, 6), 0, "randn"),
    ("h", (2, 3, 4, 5, 6), 1, "randn"),
    ("w", (2, 3, 4, 5, 6), 2, "randn"),
    ("d_ties", (2, 2, 6, 3, 4), 0, "ties"),
    ("w_ties", (1, 2, 3, 4, 7), 2, "ties"),
    ("d_size1", (2, 1, 1, 3, 4), 0, "randn"),
]


def residual(x, dim):
    n = x.shape[dim]
    first = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.cat([first, (x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1)).abs()], dim)


def label_residual(y, dim):
    prev = torch.cat([torch.zeros_like(y.narrow(dim, 0, 1)), y.narrow(dim, 0, y.shape[dim] - 1)], dim)
    return (y != prev).double()


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, axis, kind in CASES:
        dim = 2 + axis
        if kind == "ties":  # small integers: many differences are exactly 0
            x = torch.randint(-1, 2, shape).double()
        else:
            x = torch.randn(*shape)
        x.requires_grad_(True)
        y = residual(x, dim)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[name + "/axis"] = axis
        out[name + "/input"], out[name + "/output"] = x, y
        out[name + "/grad_output"], out[name + "/grad_input"] = dy, x.grad
    for name, shape, axis, high in [("labels_d", (2, 3, 5, 4, 6), 0, 2), ("labels_multi_h", (2, 1, 4, 7, 5), 1, 4),
                                    ("labels_w", (1, 2, 3, 4, 8), 2, 2)]:
        lab = torch.randint(0, high, shape).double()
        out[name + "/axis"] = axis
        out[name + "/labels"] = lab
        out[name + "/label_output"] = label_residual(lab, 2 + axis)
    common.write(outdir, "slice_difference", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
