"""3D-CBAM spatial attention of MMFNet (include/mmnet/attention/spatial_attention.hpp) against a PyTorch module
written from the spec (shared/specs/mmfnet.md §2.3, A9, A10):

    S  = cat([x.mean(1), torch.max(x, 1)[0], sqrt(x.var(1, unbiased=False) + eps)])   (the pools in use, that order)
    Ws = sigmoid(conv(S)),  conv = Conv3d(|pools| -> 1, k, padding k // 2, bias), no BN
    Fs = Ws * x

torch.max(x, dim=1, keepdim=True)[0], not amax: on ties the gradient goes to the first maximal channel.
Cases: the tiny MMFNet levels, Base MMFNet (2-channel conv), every non-empty pool subset, an all-zero channel plus
voxels where every channel is zero (spec §8 point 7: std = sqrt(eps), max ties), kernels 1, 5 and 7 (7 larger than
the depth), one channel, another eps, size-1 axes with N = 1. Options are stored under <case>/options.
"""
import itertools

import torch
import torch.nn as nn

import common

POOLS = ("avg", "max", "std")
POOL_ID = {"avg": 0, "max": 1, "std": 2}


def reduce(x, kind, eps):
    if kind == "avg":
        return torch.mean(x, dim=1, keepdim=True)
    if kind == "max":
        return torch.max(x, dim=1, keepdim=True)[0]
    return torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + eps)


class SpatialAttention(nn.Module):
    def __init__(self, pools=POOLS, kernel=3, eps=1e-6):
        super().__init__()
        self.pools, self.eps = tuple(pools), eps
        self.conv = nn.Conv3d(len(self.pools), 1, kernel, padding=kernel // 2)

    def forward(self, x):
        s = torch.cat([reduce(x, p, self.eps) for p in self.pools], dim=1)
        ws = torch.sigmoid(self.conv(s))
        return ws * x, ws


def make_input(shape, kind):
    if kind == "randn":
        return torch.randn(*shape)
    if kind == "zeros":  # after a ReLU: channel 1 all zero, and the first third of the voxels zero in every channel
        x = torch.relu(torch.randn(*shape))
        x[:, 1] = 0.0
        flat = x.reshape(shape[0], shape[1], -1)
        flat[:, :, : flat.shape[2] // 3] = 0.0
        return flat.reshape(shape)
    raise ValueError(kind)


# name, input shape, pools, kernel, eps, input kind
CASES = [
    ("mmfnet_l1", (2, 12, 4, 12, 8), POOLS, 3, 1e-6, "randn"),
    ("mmfnet_l2", (2, 24, 2, 6, 4), POOLS, 3, 1e-6, "randn"),
    ("base_mmfnet", (2, 12, 4, 12, 8), ("avg", "max"), 3, 1e-6, "randn"),
    ("zeros", (2, 12, 4, 5, 3), POOLS, 3, 1e-6, "zeros"),
    ("zeros_base", (2, 12, 4, 5, 3), ("avg", "max"), 3, 1e-6, "zeros"),
    ("kernel1", (2, 5, 3, 4, 6), POOLS, 1, 1e-6, "randn"),
    ("kernel5", (2, 3, 5, 6, 7), POOLS, 5, 1e-6, "randn"),
    ("kernel7_small", (1, 4, 3, 4, 5), ("avg", "max"), 7, 1e-6, "randn"),
    ("one_channel", (2, 1, 3, 4, 5), POOLS, 3, 1e-6, "randn"),
    ("eps1e-2", (2, 6, 3, 4, 5), POOLS, 3, 1e-2, "randn"),
    ("size1", (1, 4, 1, 3, 1), POOLS, 3, 1e-6, "randn"),
] + [
    ("pools_" + "_".join(s), (2, 5, 3, 5, 4), s, 3, 1e-6, "randn")
    for r in (1, 2, 3) for s in itertools.combinations(POOLS, r)
]


def run_case(name, shape, pools, kernel, eps, kind, out):
    m = SpatialAttention(pools, kernel, eps)
    x0 = make_input(shape, kind)
    dy = torch.randn(*shape)
    out[name + "/options/pools"] = torch.tensor([POOL_ID[p] for p in pools])
    out[name + "/options/kernel"] = kernel
    out[name + "/options/eps"] = eps
    out[name + "/input"] = x0
    out[name + "/grad_output"] = dy
    common.state(m, name + "/state", out)
    x = x0.clone().requires_grad_(True)
    fs, ws = m(x)
    fs.backward(dy)
    out[name + "/output"] = fs
    out[name + "/weights"] = ws
    out[name + "/grad_input"] = x.grad
    common.grads(m, name + "/grad", out)


def generate(outdir):
    common.seed(0)
    out = {}
    for case in CASES:
        run_case(*case, out)
    common.write(outdir, "spatial_attention", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
