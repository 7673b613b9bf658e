"""HMRNet's bidirectional feature calibration (spec hmrnet.md §2.3-2.4, §7.4, §8.0) against PyTorch autograd.

One BFC level, written from the spec's pseudo-code and named like the official HMRNet_p.py (Concatenate modules
holding a ConvBlock `conv.conv_conv`, SpatialSELayer3D gates `sse_up{l}` / `sse_down{l}` with `conv` and
`sigmoid`):
    mu = up(m, s)   trilinear, align_corners=True          hd = max_pool3d(h, kernel=stride=s)
    mc = Bm(cat[skip, hd, m] or cat[hd, m]) * sigmoid(W_h(hd))     (alpha_m, sse_down{l})
    hc = Bh(cat[mu, h])                    * sigmoid(W_m(mu))      (alpha_h, sse_up{l})
The fusion blocks are a stand-in for HMRNet's B (issue [H]): Conv3d k3 p1 (bias) -> InstanceNorm3d(affine)
-> LeakyReLU(0.01), i.e. the official ConvBlock with one conv instead of two. Batch 2, non-cubic volumes, scales
2, 4, 8, (2,2,1), (8,8,4) (one case with an MR axis of size 1), with and without the U-Net skip, gates on, off
and one of the two (ablations of §2.6). L = sum(mc * grad_mc) + sum(hc * grad_hc). Exported per case: inputs,
state dict (official key names), mc, hc, both gates, gradients of m, h, skip and of every parameter. A
stand-alone Gate case (x * sigmoid(conv(y))) is under gate/."""
import torch
import torch.nn as nn
import torch.nn.functional as F

import common


class Block(nn.Module):
    """Test fusion block: the official ConvBlock with one conv (Conv3d k3 p1 -> IN -> LeakyReLU)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv3d(cin, cout, kernel_size=3, padding=1),
            nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
            nn.LeakyReLU(0.01),
        )

    def forward(self, x):
        return self.conv_conv(x)


class Concatenate(nn.Module):
    """The official Concatenate: channel concatenation in the given order, then the block."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = Block(cin, cout)

    def forward(self, *xs):
        return self.conv(torch.cat(xs, dim=1))


class Gate(nn.Module):
    """The official SpatialSELayer3D: x * sigmoid(conv(y)), conv C -> 1, k = 1, bias."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv3d(c, 1, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, y, x):
        self.alpha = self.sigmoid(self.conv(y))
        return x * self.alpha


class BFC(nn.Module):
    def __init__(self, level, cm, ch, scale, cskip=0, mr_gate=True, hr_gate=True):
        super().__init__()
        self.level, self.scale, self.cskip = level, tuple(scale), cskip
        self.mr_gate, self.hr_gate = mr_gate, hr_gate
        # registration order = official state-dict order: concat, fr_concat, sse_up, sse_down
        setattr(self, f"concat{level}", Concatenate(cskip + ch + cm, cm))
        setattr(self, f"fr_concat{level}", Concatenate(cm + ch, ch))
        if hr_gate:
            setattr(self, f"sse_up{level}", Gate(cm))
        if mr_gate:
            setattr(self, f"sse_down{level}", Gate(ch))

    def part(self, name):
        return getattr(self, f"{name}{self.level}")

    def forward(self, m, h, skip=None):
        mu = F.interpolate(m, scale_factor=tuple(float(s) for s in self.scale), mode="trilinear", align_corners=True)
        hd = F.max_pool3d(h, kernel_size=self.scale, stride=self.scale)
        mc = self.part("concat")(skip, hd, m) if skip is not None else self.part("concat")(hd, m)
        if self.mr_gate:
            mc = self.part("sse_down")(hd, mc)
        hc = self.part("fr_concat")(mu, h)
        if self.hr_gate:
            hc = self.part("sse_up")(mu, hc)
        return mc, hc


# name, level, C_m, C_h, C_skip, scale, HR extents (D, H, W), mr_gate, hr_gate
CASES = [
    ("s2_enc", 1, 4, 2, 0, (2, 2, 2), (6, 10, 8), True, True),
    ("s4_enc", 2, 3, 2, 0, (4, 4, 4), (8, 12, 16), True, True),
    ("s8_enc", 3, 5, 2, 0, (8, 8, 8), (16, 8, 24), True, True),
    ("s221_enc", 3, 4, 3, 0, (2, 2, 1), (8, 6, 5), True, True),
    ("s884_enc", 3, 4, 2, 0, (8, 8, 4), (16, 24, 12), True, True),
    ("s4_dec_skip", 5, 3, 2, 3, (4, 4, 4), (12, 8, 16), True, True),
    ("s2_dec_skip", 6, 2, 3, 2, (2, 2, 2), (10, 6, 8), True, True),
    ("s221_dec_skip", 5, 4, 2, 4, (2, 2, 1), (6, 10, 4), True, True),
    ("s884_dec_skip_size1", 5, 3, 2, 3, (8, 8, 4), (16, 24, 4), True, True),
    ("s2_gates_off", 2, 3, 2, 0, (2, 2, 2), (4, 6, 10), False, False),
    ("s4_hr_gate_only", 6, 3, 2, 2, (4, 4, 4), (8, 4, 12), False, True),
    ("s221_mr_gate_only", 1, 3, 2, 0, (2, 2, 1), (6, 4, 7), True, False),
]


def randomise_norms(module):
    # IN's default affine (1, 0) would hide a swapped or ignored weight/bias
    for mod in module.modules():
        if isinstance(mod, nn.InstanceNorm3d):
            with torch.no_grad():
                mod.weight.copy_(1 + 0.3 * torch.randn_like(mod.weight))
                mod.bias.copy_(0.2 * torch.randn_like(mod.bias))


def generate(outdir):
    common.seed(0)
    out = {}
    for name, level, cm, ch, cskip, scale, hr, mr_gate, hr_gate in CASES:
        p = name + "/"
        mr = tuple(n // s for n, s in zip(hr, scale))
        net = BFC(level, cm, ch, scale, cskip, mr_gate, hr_gate)
        randomise_norms(net)
        m = torch.randn(2, cm, *mr, requires_grad=True)
        h = torch.randn(2, ch, *hr, requires_grad=True)
        skip = torch.randn(2, cskip, *mr, requires_grad=True) if cskip else None
        mc, hc = net(m, h, skip)
        gm, gh = torch.randn_like(mc), torch.randn_like(hc)
        ((mc * gm).sum() + (hc * gh).sum()).backward()

        out[p + "level"] = level
        out[p + "mr_channels"] = cm
        out[p + "hr_channels"] = ch
        out[p + "skip_channels"] = cskip
        out[p + "scale"] = torch.tensor(scale, dtype=torch.int64)
        out[p + "mr_gate"] = int(mr_gate)
        out[p + "hr_gate"] = int(hr_gate)
        out[p + "m"] = m
        out[p + "h"] = h
        if skip is not None:
            out[p + "skip"] = skip
        out[p + "grad_mc"] = gm
        out[p + "grad_hc"] = gh
        common.state(net, p + "state", out)
        out[p + "mc"] = mc
        out[p + "hc"] = hc
        if mr_gate:
            out[p + "alpha_m"] = net.part("sse_down").alpha
        if hr_gate:
            out[p + "alpha_h"] = net.part("sse_up").alpha
        out[p + "grad_m"] = m.grad
        out[p + "grad_h"] = h.grad
        if skip is not None:
            out[p + "grad_skip"] = skip.grad
        common.grads(net, p + "grad", out)

    # stand-alone gate: x 2x3x4x5x6 gated by y 2x2x4x5x6
    gate = Gate(2)
    x = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    y = torch.randn(2, 2, 4, 5, 6, requires_grad=True)
    z = gate(y, x)
    dz = torch.randn_like(z)
    z.backward(dz)
    out["gate/x"] = x
    out["gate/y"] = y
    out["gate/grad_output"] = dz
    common.state(gate, "gate/state", out)
    out["gate/output"] = z
    out["gate/alpha"] = gate.alpha
    out["gate/grad_x"] = x.grad
    out["gate/grad_y"] = y.grad
    common.grads(gate, "gate/grad", out)
    common.write(outdir, "bfc", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
