"""3D-CBAM channel attention of MMFNet (include/mmnet/attention/channel_attention.hpp) against a PyTorch module
written from the spec (shared/specs/mmfnet.md §2.3, A7-A9):

    z = sum_p MLP_p(pool_p(x)),  Wc = sigmoid(z),  Fc = Wc * x
    pools: avg F.adaptive_avg_pool3d(x, 1), max F.adaptive_max_pool3d(x, 1) (first index on ties),
           std sqrt(x.var((2, 3, 4), unbiased=False) + eps)
    MLP = fc1 (Linear C -> hidden) -> ReLU -> fc2 (Linear hidden -> C); one per pool (mlp_avg, mlp_max, mlp_std)
          or one shared (mlp, "Base MMFNet")

Cases: the tiny MMFNet levels (C = 12, hidden 3 on 2x12x4x12x8; C = 24, hidden 6), Base MMFNet, every non-empty
pool subset with separate and with a shared MLP, an all-zero channel plus voxels where every channel is zero (spec
§8 point 7: std = sqrt(eps), max ties), another eps, size-1 axes with N = 1, the two-modality hidden size and a
hidden size larger than C. Each case stores its options under <case>/options so the C++ test builds the same module.
"""
import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F

import common

POOLS = ("avg", "max", "std")
POOL_ID = {"avg": 0, "max": 1, "std": 2}


class MLP(nn.Module):
    def __init__(self, channels, hidden):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, v):
        return self.fc2(F.relu(self.fc1(v)))


def pool(x, kind, eps):
    if kind == "avg":
        return F.adaptive_avg_pool3d(x, 1)
    if kind == "max":
        return F.adaptive_max_pool3d(x, 1)
    return torch.sqrt(x.var(dim=(2, 3, 4), unbiased=False, keepdim=True) + eps)


class ChannelAttention(nn.Module):
    def __init__(self, channels, hidden, pools=POOLS, shared=False, eps=1e-6):
        super().__init__()
        self.pools, self.shared, self.eps = tuple(pools), shared, eps
        if shared:
            self.mlp = MLP(channels, hidden)
        else:
            for p in self.pools:  # registration order avg, max, std = state_dict order
                setattr(self, "mlp_" + p, MLP(channels, hidden))

    def forward(self, x):
        n, c = x.shape[:2]
        z = 0
        for p in self.pools:
            mlp = self.mlp if self.shared else getattr(self, "mlp_" + p)
            z = z + mlp(pool(x, p, self.eps).view(n, c))
        wc = torch.sigmoid(z).view(n, c, 1, 1, 1)  # sigmoid once, after the sum
        return wc * x, wc


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


def subsets():
    for r in (1, 2, 3):
        for s in itertools.combinations(POOLS, r):
            yield s


# name, input shape, hidden, pools, shared, eps, input kind
CASES = [
    ("mmfnet_l1", (2, 12, 4, 12, 8), 3, POOLS, False, 1e-6, "randn"),
    ("mmfnet_l2", (2, 24, 2, 6, 4), 6, POOLS, False, 1e-6, "randn"),
    ("base_mmfnet", (2, 12, 4, 12, 8), 3, ("avg", "max"), True, 1e-6, "randn"),
    ("zeros", (2, 12, 4, 5, 3), 3, POOLS, False, 1e-6, "zeros"),
    ("zeros_base", (2, 12, 4, 5, 3), 3, ("avg", "max"), True, 1e-6, "zeros"),
    ("zeros_shared_all", (2, 6, 3, 5, 4), 2, POOLS, True, 1e-6, "zeros"),
    ("eps1e-2", (2, 6, 3, 4, 5), 2, POOLS, False, 1e-2, "randn"),
    ("size1", (1, 5, 1, 3, 1), 1, POOLS, False, 1e-6, "randn"),
    ("two_modality", (2, 8, 3, 4, 5), 2, POOLS, False, 1e-6, "randn"),
    ("wide_hidden", (2, 4, 3, 4, 5), 7, POOLS, True, 1e-6, "randn"),
] + [
    (("shared_" if shared else "sep_") + "_".join(s), (2, 6, 3, 5, 4), 2, s, shared, 1e-6, "randn")
    for shared in (False, True) for s in subsets()
]


def run_case(name, shape, hidden, pools, shared, eps, kind, out):
    m = ChannelAttention(shape[1], hidden, pools, shared, eps)
    x0 = make_input(shape, kind)
    dy = torch.randn(*shape)
    out[name + "/options/hidden"] = hidden
    out[name + "/options/pools"] = torch.tensor([POOL_ID[p] for p in pools])
    out[name + "/options/shared"] = int(shared)
    out[name + "/options/eps"] = eps
    out[name + "/input"] = x0
    out[name + "/grad_output"] = dy
    common.state(m, name + "/state", out)
    x = x0.clone().requires_grad_(True)
    fc, wc = m(x)
    fc.backward(dy)
    out[name + "/output"] = fc
    out[name + "/weights"] = wc
    out[name + "/grad_input"] = x.grad
    common.grads(m, name + "/grad", out)


def generate(outdir):
    common.seed(0)
    out = {}
    for case in CASES:
        run_case(*case, out)
    common.write(outdir, "channel_attention", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
