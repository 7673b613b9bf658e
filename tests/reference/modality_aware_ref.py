"""MAML's modality-aware attention fusion (spec maml.md §2.3) against PyTorch autograd, written as the official
Generic_MAML registers it: `fusion` (Conv3d M*C -> C, k3, p1, bias), `modality_aware_modules` (a ModuleList of
nn.Sequential: Conv3d(2C, C, 3) - InstanceNorm3d(C, affine) - LeakyReLU(0.01) - Conv3d(C, C, 3) - Sigmoid in the
code variant; the paper variant's second conv is 1x1x1 and is followed by IN + LeakyReLU) and the head `output`
(Conv3d C -> K, k1, bias=False). For each case: the state dict (names as in Generic_MAML), the M inputs F_i,
F_dual, every A_i, F_att, Z, and for L = sum(Z * R) the gradient of every F_i and every parameter; plus one MA
module on its own (inputs F_i and F_dual as leaves, upstream gradient for A_i). Parameter counts of the spec's
tiny, BraTS and liver presets are written too (computed by instantiating the PyTorch modules)."""
import torch
import torch.nn as nn

import common

# name, M, C, K, variant, batch, (D, H, W)
CASES = [
    ("m2_code", 2, 4, 3, "code", 2, (4, 6, 5)),
    ("m2_paper", 2, 4, 3, "paper", 2, (5, 3, 6)),
    ("m4_code", 4, 3, 4, "code", 2, (3, 5, 4)),
    ("m4_paper", 4, 3, 4, "paper", 2, (4, 3, 5)),
]
# preset name, M, C, K (spec §2.1, §8)
PRESETS = [("tiny", 2, 4, 3), ("brats", 4, 16, 4), ("liver", 2, 32, 2)]


def ma_module(c, variant):
    conv = dict(kernel_size=3, stride=1, padding=1, dilation=1, bias=True)
    norm = dict(eps=1e-5, affine=True, momentum=0.1)
    layers = [nn.Conv3d(2 * c, c, **conv), nn.InstanceNorm3d(c, **norm), nn.LeakyReLU(0.01, inplace=True)]
    if variant == "code":
        layers += [nn.Conv3d(c, c, **conv), nn.Sigmoid()]
    else:
        layers += [nn.Conv3d(c, c, 1, 1, 0, 1, 1, True), nn.InstanceNorm3d(c, **norm), nn.LeakyReLU(0.01, inplace=True),
                   nn.Sigmoid()]
    return nn.Sequential(*layers)


class MAFusionHead(nn.Module):
    """The fusion part of Generic_MAML (its branches left out), attribute names and order as there."""

    def __init__(self, m, c, k, variant):
        super().__init__()
        self.m = m
        self.fusion = nn.Conv3d(m * c, c, 3, 1, 1, 1, 1, True)
        self.modality_aware_modules = nn.ModuleList([ma_module(c, variant) for _ in range(m)])
        self.output = nn.Conv3d(c, k, 1, 1, 0, 1, 1, False)

    def forward(self, feats):
        dual = self.fusion(torch.cat(feats, dim=1))
        att = [self.modality_aware_modules[i](torch.cat([feats[i], dual], dim=1)) for i in range(self.m)]
        f_att = att[0] * feats[0]
        for i in range(1, self.m):
            f_att = f_att + att[i] * feats[i]
        return dual, att, f_att, self.output(f_att)


def count(mods):
    return sum(p.numel() for mod in mods for p in mod.parameters())


def generate(outdir):
    common.seed(0)
    out = {}
    for name, m, c, k, variant in [(p[0], p[1], p[2], p[3], v) for p in PRESETS for v in ("code", "paper")]:
        net = MAFusionHead(m, c, k, variant)
        out[f"counts/{name}_{variant}/fusion"] = count([net.fusion])
        out[f"counts/{name}_{variant}/ma"] = count(net.modality_aware_modules)
        out[f"counts/{name}_{variant}/output"] = count([net.output])

    for name, m, c, k, variant, n, (d, h, w) in CASES:
        net = MAFusionHead(m, c, k, variant)
        with torch.no_grad():  # away from IN's initial 1 / 0 so the affine gradients matter
            for mod in net.modules():
                if isinstance(mod, nn.InstanceNorm3d):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.5, 0.5)
        feats = [(torch.randn(n, c, d, h, w) * (1 + 0.5 * i)).requires_grad_(True) for i in range(m)]
        out[f"{name}/num_modalities"] = m
        common.state(net, name + "/state", out)
        for i, f in enumerate(feats):
            out[f"{name}/F/{i}"] = f
        dual, att, f_att, z = net(feats)
        r = torch.randn(z.shape)
        (z * r).sum().backward()
        out[name + "/dual"] = dual
        for i, a in enumerate(att):
            out[f"{name}/A/{i}"] = a
        out[name + "/F_att"] = f_att
        out[name + "/Z"] = z
        out[name + "/grad_Z"] = r
        for i, f in enumerate(feats):
            out[f"{name}/grad_F/{i}"] = f.grad
        common.grads(net, name + "/grad", out)

        # The last MA module on its own: A = MA(F, F_dual) with both inputs leaves.
        ma = net.modality_aware_modules[m - 1]
        ma.zero_grad()
        fi = feats[m - 1].detach().clone().requires_grad_(True)
        fd = dual.detach().clone().requires_grad_(True)
        a = ma(torch.cat([fi, fd], dim=1))
        da = torch.randn(a.shape)
        a.backward(da)
        out[name + "/ma/A"] = a
        out[name + "/ma/grad_A"] = da
        out[name + "/ma/grad_F"] = fi.grad
        out[name + "/ma/grad_dual"] = fd.grad
        common.grads(ma, name + "/ma/grad", out)
    common.write(outdir, "modality_aware", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
