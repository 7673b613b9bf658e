"""AvgPool3d against torch.nn.AvgPool3d: outputs and input gradients for isotropic, anisotropic (HMRNet's
(2,2,1), (8,8,4)), large (4, 8) and overlapping padded windows, with count_include_pad True (PyTorch's
default) and False, on shapes whose axes all differ (odd sizes exercise the floored output size)."""
import torch

import common

# name, input shape, kernel, stride (None = kernel), padding, count_include_pad
CASES = [
    ("k2", (2, 3, 6, 8, 10), 2, None, 0, True),
    ("k2_odd", (2, 2, 5, 7, 9), 2, None, 0, True),
    ("k221", (1, 2, 4, 6, 5), (2, 2, 1), None, 0, True),
    ("k122", (2, 1, 3, 6, 8), (1, 2, 2), None, 0, True),
    ("k4", (1, 2, 9, 13, 10), 4, None, 0, True),
    ("k8", (1, 2, 17, 16, 9), 8, None, 0, True),
    ("k884", (1, 2, 16, 17, 9), (8, 8, 4), None, 0, True),
    ("k3s1p1", (2, 3, 5, 6, 7), 3, 1, 1, True),
    ("k3s2p1", (1, 2, 7, 8, 9), 3, 2, 1, True),
    ("k2s1", (2, 2, 4, 5, 6), 2, 1, 0, True),
    ("aniso_overlap", (2, 2, 6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 0, 1), True),
    ("k3s1p1_nopad", (2, 3, 5, 6, 7), 3, 1, 1, False),
    ("aniso_overlap_nopad", (2, 2, 6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 1, 1), False),
    ("k4s2p2_nopad", (1, 2, 6, 9, 7), 4, 2, 2, False),
    ("size1_axis", (2, 3, 1, 6, 5), (1, 2, 2), None, 0, True),
]


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, k, s, p, cip in CASES:
        pool = torch.nn.AvgPool3d(k, stride=s, padding=p, count_include_pad=cip)
        x = torch.randn(*shape).requires_grad_(True)
        y = pool(x)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[name + "/input"] = x
        out[name + "/output"] = y
        out[name + "/grad_output"] = dy
        out[name + "/grad_input"] = x.grad
    common.write(outdir, "avgpool3d", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
