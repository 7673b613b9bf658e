"""3D-CBAM of MMFNet (include/mmnet/attention/cbam.hpp): channel attention, then spatial attention on its output,
the attention half of the fusion block (shared/specs/mmfnet.md §2.3; the RFBlock is not part of it):

    Fc = Wc * x (channel_attention_ref.ChannelAttention),  Fs = Ws * Fc (spatial_attention_ref.SpatialAttention)

State dict names as spec §8: channel_attention.mlp_{avg,max,std}.fc{1,2}.* (channel_attention.mlp.* when shared)
and spatial_attention.conv.* ((1, 3, 3, 3, 3), or (1, 2, 3, 3, 3) without the std pool).
Cases: the tiny MMFNet levels (Fori 2x12x4x12x8, hidden 3; 2x24x2x6x4, hidden 6), the spec §2.6 ablations (Base
MMFNet: shared MLP, avg+max, 2-channel spatial conv; +multi-MLP; +stdPool in one branch only), the spec §8 point 7
input (an all-zero channel and voxels where every channel is zero) for the full and the Base variant, the
two-modality hidden size, and size-1 axes with N = 1. Stores Fs, Fc, Wc, Ws, dL/dx and every parameter gradient.
"""
import torch
import torch.nn as nn

import common
from channel_attention_ref import ChannelAttention, make_input
from spatial_attention_ref import SpatialAttention

POOLS = ("avg", "max", "std")
AM = ("avg", "max")
POOL_ID = {"avg": 0, "max": 1, "std": 2}


class CBAM(nn.Module):
    def __init__(self, channels, hidden, channel_pools=POOLS, spatial_pools=POOLS, shared=False, kernel=3, eps=1e-6):
        super().__init__()
        self.channel_attention = ChannelAttention(channels, hidden, channel_pools, shared, eps)
        self.spatial_attention = SpatialAttention(spatial_pools, kernel, eps)

    def forward(self, x):
        fc, wc = self.channel_attention(x)
        fs, ws = self.spatial_attention(fc)
        return fs, fc, wc, ws


# name, input shape, hidden, channel pools, spatial pools, shared, input kind
CASES = [
    ("mmfnet_l1", (2, 12, 4, 12, 8), 3, POOLS, POOLS, False, "randn"),
    ("mmfnet_l2", (2, 24, 2, 6, 4), 6, POOLS, POOLS, False, "randn"),
    ("base_mmfnet", (2, 12, 4, 12, 8), 3, AM, AM, True, "randn"),
    ("multi_mlp", (2, 12, 3, 5, 4), 3, AM, AM, False, "randn"),
    ("std_channel_only", (2, 12, 3, 5, 4), 3, POOLS, AM, False, "randn"),
    ("std_spatial_only", (2, 12, 3, 5, 4), 3, AM, POOLS, False, "randn"),
    ("zeros", (2, 12, 4, 12, 8), 3, POOLS, POOLS, False, "zeros"),
    ("zeros_base", (2, 12, 4, 5, 3), 3, AM, AM, True, "zeros"),
    ("two_modality", (2, 8, 3, 4, 5), 2, POOLS, POOLS, False, "randn"),
    ("size1", (1, 6, 1, 3, 1), 1, POOLS, POOLS, False, "randn"),
]


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, hidden, cpools, spools, shared, kind in CASES:
        m = CBAM(shape[1], hidden, cpools, spools, shared)
        x0 = make_input(shape, kind)
        dy = torch.randn(*shape)
        out[name + "/options/hidden"] = hidden
        out[name + "/options/channel_pools"] = torch.tensor([POOL_ID[p] for p in cpools])
        out[name + "/options/spatial_pools"] = torch.tensor([POOL_ID[p] for p in spools])
        out[name + "/options/shared"] = int(shared)
        out[name + "/input"] = x0
        out[name + "/grad_output"] = dy
        common.state(m, name + "/state", out)
        x = x0.clone().requires_grad_(True)
        fs, fc, wc, ws = m(x)
        fs.backward(dy)
        out[name + "/output"] = fs
        out[name + "/channel_output"] = fc
        out[name + "/channel_weights"] = wc
        out[name + "/spatial_weights"] = ws
        out[name + "/grad_input"] = x.grad
        common.grads(m, name + "/grad", out)
    common.write(outdir, "cbam", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
