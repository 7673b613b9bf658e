"""HMRNet-p / HMRNet-s (spec hmrnet.md §2.3, §3, §4, §8) against PyTorch autograd, in float64.

The network is written from the spec's §2.3 pseudo-code with the official module names of §8.0 (HMRNet_p.py /
HMRNet_s.py without the unused `sse0`), attributes registered in the official state-dict order. Tiny widths
c = (4, 8, 16, 32), ch = 2, in = 3, K = 2, PyTorch default init (the spec's precision measurements, §8.1).
Exported per form (p/, s/):
  weights/<key>          the state dict (§8.0 names and order)
  x, y0..y3              input 2x3x16x24x32 (-p) / 2x3x16x24x8 (-s) and the deep-supervision logits
  gates/<i>              the 12 gates in the §8.0 order (hooks on <gate>.sigmoid)
  blocks/<name>          -s only: outputs of in_conv, fr_in_conv, down1, basic_conv1 (float32 checks of §8.1)
  label                  a random ellipsoid per sample (~10 % foreground)
  loss_t25/..., loss_t1/...   L = Σ λ_s (L_fnDice(θ) + L_CE) on y_s vs label[::s], λ = (0.4, 0.3, 0.3, 0):
                         loss, dx, grads/<key> (dpvision_con3 has none); θ = 1 uses the plain Dice formula
  clip12/step<k>/<key>, clip001/step<k>/<key>   weights after SGD steps (lr 0.01, momentum 0.99, Nesterov,
                         wd 1e-5) with clip_grad_norm_ 12 / 0.01 before each step (-p 3 + 3 steps, -s 1 step)
unit/: the §8.2 test-5 unit checks (ramp up-sampling by 8 and (8,8,4), max pool (8,8,4) with ties, instance norm).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

TINY = dict(c=(4, 8, 16, 32), ch=2, cin=3, K=2)
LAMBDA = (0.4, 0.3, 0.3, 0.0)
SMOOTH = 1e-5


def conv_layers(form, cin, cout):
    """The block B(cin, cout): -p 2 x [Conv 3^3, IN, LReLU]; -s 6 x [Conv (3,3,1)|(1,1,3), IN, LReLU]."""
    if form == "p":
        kernels = [(3, 3, 3)] * 2
    else:
        kernels = [(3, 3, 1), (1, 1, 3), (3, 3, 1), (3, 3, 1), (1, 1, 3), (3, 3, 1)]
    mods = []
    for i, k in enumerate(kernels):
        mods += [nn.Conv3d(cin if i == 0 else cout, cout, k, padding=tuple((a - 1) // 2 for a in k)),
                 nn.InstanceNorm3d(cout, eps=1e-5, affine=True), nn.LeakyReLU(0.01)]
    return nn.Sequential(*mods)


class ConvBlock(nn.Module):
    def __init__(self, form, cin, cout):
        super().__init__()
        self.conv_conv = conv_layers(form, cin, cout)

    def forward(self, x):
        return self.conv_conv(x)


class HRBlock(nn.Module):
    def __init__(self, form, cin, cout):
        super().__init__()
        self.conv_hr = conv_layers(form, cin, cout)

    def forward(self, x):
        return self.conv_hr(x)


class Down(nn.Module):
    def __init__(self, form, cin, cout, k):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool3d(k, k), ConvBlock(form, cin, cout))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    def __init__(self, form, cin, cout, s):
        super().__init__()
        self.uppool_conv = nn.Sequential(
            nn.Upsample(scale_factor=tuple(float(a) for a in s), mode="trilinear", align_corners=True),
            ConvBlock(form, cin, cout))

    def forward(self, x):
        return self.uppool_conv(x)


class Concatenate(nn.Module):
    def __init__(self, form, cin, cout):
        super().__init__()
        self.conv = ConvBlock(form, cin, cout)

    def forward(self, *xs):
        return self.conv(torch.cat(xs, dim=1))


class Gate(nn.Module):
    """SpatialSELayer3D: sigmoid(conv(y)), conv C -> 1, k 1, bias; returns the gate (N x 1 x ...)."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv3d(c, 1, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, y):
        return self.sigmoid(self.conv(y))


def up(x, s):
    return F.interpolate(x, scale_factor=tuple(float(a) for a in s), mode="trilinear", align_corners=True)


def pool(x, s):
    return F.max_pool3d(x, kernel_size=s, stride=s)


class HMRNet(nn.Module):
    def __init__(self, form, c=(16, 32, 64, 128), ch=8, cin=3, K=2):
        super().__init__()
        self.form = form
        t = lambda v: (v, v, v)
        self.p3 = t(2) if form == "p" else (2, 2, 1)
        self.scales = {1: t(2), 2: t(4), 3: t(8) if form == "p" else (8, 8, 4), 5: t(4), 6: t(2)}
        B = lambda a, b: ConvBlock(form, a, b)
        # registration order = official state-dict order (§8.0)
        self.in_conv = B(cin, c[0])
        self.fr_in_conv = B(cin, ch)
        for l in (1, 2, 3):
            a, b = c[l - 1], c[l]
            setattr(self, f"basic_conv{l}", HRBlock(form, ch, ch))
            setattr(self, f"down{l}", Down(form, a, b, t(2) if l < 3 else self.p3))
            if l == 3:
                self.dpvision_con3 = nn.Conv3d(c[3], K, 1)
            setattr(self, f"concat{l}", Concatenate(form, ch + b, b))
            setattr(self, f"fr_concat{l}", Concatenate(form, b + ch, ch))
            setattr(self, f"sse_up{l}", Gate(b))
            setattr(self, f"sse_down{l}", Gate(ch))
        for l, j in ((5, 2), (6, 3)):
            a, b = c[5 - j], c[4 - j]
            setattr(self, f"up{j}", Up(form, a, b, self.p3 if j == 2 else t(2)))
            setattr(self, f"basic_conv{l}", HRBlock(form, ch, ch))
            setattr(self, f"dpvision_con{l}", nn.Conv3d(b, K, 1))
            setattr(self, f"concat{l}", Concatenate(form, 2 * b + ch, b))
            setattr(self, f"fr_concat{l}", Concatenate(form, b + ch, ch))
            setattr(self, f"sse_up{l}", Gate(b))
            setattr(self, f"sse_down{l}", Gate(ch))
        self.up4 = Up(form, c[1], c[0], t(2))
        self.basic_conv7 = HRBlock(form, ch, ch)
        self.concat7 = Concatenate(form, c[0] + ch + c[0], c[0])
        self.fr_concat7 = Concatenate(form, c[0] + ch, ch)
        self.final_concat = Concatenate(form, ch + c[0], c[0])
        self.sse7 = Gate(ch)
        self.fr_sse7 = Gate(c[0])
        self.out_conv = nn.Conv3d(c[0], K, 3, padding=1)
        self.gates = []
        self.blocks = {}

    def bfc(self, l, m, h, skip=None):
        s = self.scales[l]
        mu, hd = up(m, s), pool(h, s)
        cat = getattr(self, f"concat{l}")
        fm = cat(skip, hd, m) if skip is not None else cat(hd, m)
        am = getattr(self, f"sse_down{l}")(hd)
        self.gates.append(am)
        mc = fm * am
        ah = getattr(self, f"sse_up{l}")(mu)
        self.gates.append(ah)
        hc = getattr(self, f"fr_concat{l}")(mu, h) * ah
        return mc, hc

    def forward(self, x):
        self.gates = []
        m0, h0 = self.in_conv(x), self.fr_in_conv(x)
        m1, h1 = self.down1(m0), self.basic_conv1(h0)
        self.blocks = {"in_conv": m0, "fr_in_conv": h0, "down1": m1, "basic_conv1": h1}
        m1, h1 = self.bfc(1, m1, h1)
        m2, h2 = self.bfc(2, self.down2(m1), self.basic_conv2(h1))
        m3, h3 = self.bfc(3, self.down3(m2), self.basic_conv3(h2))
        y3 = self.dpvision_con3(m3)
        m5, h5 = self.bfc(5, self.up2(m3), self.basic_conv5(h3), skip=m2)
        y2 = self.dpvision_con5(m5)
        m6, h6 = self.bfc(6, self.up3(m5), self.basic_conv6(h5), skip=m1)
        y1 = self.dpvision_con6(m6)
        m7, h7 = self.up4(m6), self.basic_conv7(h6)
        a7 = self.sse7(h7)
        self.gates.append(a7)
        m7c = self.concat7(m0, h7, m7) * a7
        fa7 = self.fr_sse7(m7)
        self.gates.append(fa7)
        h7c = self.fr_concat7(m7c, h7) * fa7
        f = self.final_concat(h7c, m7c)
        return [self.out_conv(f), y1, y2, y3]


def factors(form):
    return [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8) if form == "p" else (8, 8, 4)]


def seg_loss(y, lab, theta):
    """L_fnDice(theta) + L_CE, foreground batch Dice (§3); theta None: the plain Dice+CE formula."""
    p = torch.softmax(y, dim=1)[:, 1]
    g = (lab[:, 0] == 1).to(y.dtype)
    if theta is None:
        dice = 1 - (2 * (p * g).sum() + SMOOTH) / (p.sum() + g.sum() + SMOOTH)
    else:
        tp, fn, fp = (p * g).sum(), ((1 - p) * g).sum(), (p * (1 - g)).sum()
        dice = 1 - (2 * tp + SMOOTH) / (2 * tp + theta * fn + fp + SMOOTH)
    return dice + F.cross_entropy(y, lab[:, 0].long())


def total_loss(ys, lab, form, theta):
    L = 0
    for y, lam, s in zip(ys, LAMBDA, factors(form)):
        if lam == 0:
            continue  # skipped, not multiplied by 0
        L = L + lam * seg_loss(y, lab[:, :, ::s[0], ::s[1], ::s[2]], theta)
    return L


def ellipsoid_labels(n, shape, gen):
    lab = torch.zeros(n, 1, *shape)
    grid = torch.meshgrid(*[torch.arange(a, dtype=torch.float64) for a in shape], indexing="ij")
    for i in range(n):
        c = [a * (0.3 + 0.4 * torch.rand(1, generator=gen).item()) for a in shape]
        r = [0.288 * a * (0.85 + 0.3 * torch.rand(1, generator=gen).item()) for a in shape]
        q = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r))
        lab[i, 0] = (q <= 1).to(torch.float64)
    return lab


def weights(net, prefix, out):
    for k, v in net.state_dict().items():
        out[prefix + k] = v.detach().clone()


def generate_form(form, shape, seed, out):
    common.seed(seed)
    P = form + "/"
    net = HMRNet(form, **TINY)
    weights(net, P + "weights/", out)
    x = torch.randn(2, 3, *shape)
    out[P + "x"] = x
    with torch.no_grad():
        ys = net(x)
    for i, y in enumerate(ys):
        out[P + f"y{i}"] = y
    for i, g in enumerate(net.gates):
        out[P + f"gates/{i}"] = g
    if form == "s":
        for k, v in net.blocks.items():
            out[P + "blocks/" + k] = v
    gen = torch.Generator().manual_seed(seed + 100)
    lab = ellipsoid_labels(2, shape, gen)
    out[P + "label"] = lab
    out[P + "foreground_fraction"] = lab.mean()

    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for tag, theta in (("loss_t25", 2.5), ("loss_t1", None)):
        net.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        L = total_loss(net(xg), lab, form, theta)
        L.backward()
        out[P + tag + "/loss"] = L.detach()
        out[P + tag + "/dx"] = xg.grad
        for k, p in net.named_parameters():
            if p.grad is not None:
                out[P + tag + "/grads/" + k] = p.grad.detach().clone()
        assert net.dpvision_con3.weight.grad is None

    runs = (("clip12", 12.0, 3), ("clip001", 0.01, 3)) if form == "p" else (("clip12", 12.0, 1),)
    for tag, clip, steps in runs:
        net.load_state_dict(init)
        net.zero_grad(set_to_none=True)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=1e-5)
        norms = []
        for k in range(steps):
            opt.zero_grad(set_to_none=True)
            L = total_loss(net(x), lab, form, 2.5)
            L.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), clip)))
            opt.step()
            weights(net, P + f"{tag}/step{k + 1}/", out)
        out[P + tag + "/norms"] = torch.tensor(norms)


def generate_unit(out):
    U = "unit/"
    d, h, w = torch.meshgrid(torch.arange(2.0), torch.arange(3.0), torch.arange(4.0), indexing="ij")
    ramp = (1 + 2 * d + 3 * h + 5 * w).reshape(1, 1, 2, 3, 4)
    out[U + "ramp"] = ramp
    out[U + "ramp_up8"] = up(ramp, (8, 8, 8))
    out[U + "ramp_up884"] = up(ramp, (8, 8, 4))
    common.seed(5)
    # max pool (8,8,4): values on a coarse grid so that every window has ties
    xp = torch.randint(0, 3, (2, 3, 16, 8, 12)).to(torch.float64).requires_grad_(True)
    yp = pool(xp, (8, 8, 4))
    gp = torch.randn_like(yp)
    (yp * gp).sum().backward()
    out[U + "pool_x"] = xp
    out[U + "pool_y"] = yp
    out[U + "pool_gy"] = gp
    out[U + "pool_dx"] = xp.grad
    # instance norm on 2 x C x 2 x 3 x 2
    norm = nn.InstanceNorm3d(3, eps=1e-5, affine=True)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(3))
        norm.bias.copy_(0.2 * torch.randn(3))
    xn = torch.randn(2, 3, 2, 3, 2, requires_grad=True)
    yn = norm(xn)
    gn = torch.randn_like(yn)
    (yn * gn).sum().backward()
    out[U + "in_x"] = xn
    out[U + "in_weight"] = norm.weight
    out[U + "in_bias"] = norm.bias
    out[U + "in_y"] = yn
    out[U + "in_gy"] = gn
    out[U + "in_dx"] = xn.grad
    out[U + "in_dweight"] = norm.weight.grad
    out[U + "in_dbias"] = norm.bias.grad


def count(form, **kw):
    return sum(p.numel() for p in HMRNet(form, **kw).parameters())


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    out = {}
    generate_form("p", (16, 24, 32), 0, out)
    generate_form("s", (16, 24, 8), 1, out)
    generate_unit(out)
    out["counts/paper_p"] = count("p")
    out["counts/paper_s"] = count("s")
    out["counts/tiny_p"] = count("p", **TINY)
    out["counts/tiny_s"] = count("s", **TINY)
    common.write(outdir, "hmrnet", out)


if __name__ == "__main__":
    import sys

    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
