"""MAML (spec maml.md §2-3, §8) as a PyTorch reference, written from the spec with the official Generic_MAML /
nnU-Net v1 Generic_UNet module names (§8 layer list): M branches `modality_specific_models.{i}` (Generic_UNet:
conv_blocks_context, tu, conv_blocks_localization, seg_outputs), `fusion`, `modality_aware_modules.{i}`, `output`.
(The official Generic_UNet registers conv_blocks_localization before conv_blocks_context; mmnet and this script
use the §8 order. Loading is by name, so the order does not matter for weights.)

Groups of maml.h5:
  tiny/            maml-tiny (M 2, C 4, P 3, max 16, K 3), N 2, 16 x 24 x 32, MA variant "code":
    order                  (names as one string, "\n"-joined, in a uint8 array) -- see `names`
    params/<name>          initial state dict (§2.4 initialisation)
    x, y, y1, y2           input, labels N x 1 x D x H x W and the §3.2 targets Y^(1), Y^(2)
    F/<i>, z/<i>/<k>, F_dual, A/<i>, F_att, Z   forward taps
    lseg                   L_seg of the 7 outputs [Z, z_0^(0..2), z_1^(0..2)] (all evaluated)
    <preset>/terms, <preset>/loss, <preset>/grad/x, <preset>/grad/<param> (only parameters WITH a gradient)
        presets: code, paper, joint (code with lambda 0), intra (code with w_joint 0)
    single/zero/z0, single/noise/z0, single/noise/x    branch 0's full-res logits with channel 1 zero / noise
    sgd/step<s>/<param>, sgd/loss<s>, sgd/norm<s>       (a) SGD-Nesterov + code loss + clip 12 (s = 1, 2)
    sgd_clip/...                                        (a) with the loss times 1e4 (clipping active)
    adam/step<s>/<param>, adam/loss<s>                  (b) Adam-AMSGrad + paper loss, no clipping
  tiny_paper_ma/   the same network with ma_variant "paper" (§8 point 9): params, forward taps, lseg, code/ and
                   paper/ terms, loss and gradients (same x, y as tiny/)
  counts/<preset>/{branch,fusion,ma,output,total}      parameter counts of tiny, brats, liver (and *_paper_ma)
  sliding_window/  §8 point 8: nnU-Net v1 sliding window of maml-tiny (weights tiny/params) over a
                   1 x 2 x 20 x 30 x 40 volume, tiles 16 x 24 x 32, step 0.5, 8 mirror combinations:
    input, starts_d, starts_h, starts_w, gaussian (float64 formula), gaussian_f32 (the same rounded to float32),
    output (probabilities with gaussian_f32, as spec §4.6 / nnU-Net), output_g64 (with the float64 map),
    single0/output (present = {0}: branch 0's full-res softmax, float32 map)
"""
import itertools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

TINY = dict(m=2, c=4, p=3, cmax=16, k=3)
BRATS = dict(m=4, c=16, p=5, cmax=320, k=4)
LIVER = dict(m=2, c=32, p=5, cmax=320, k=2)


# ---- nnU-Net v1 building blocks (generic_UNet.py), names as there ----
class ConvDropoutNormNonlin(nn.Module):
    def __init__(self, ci, co, stride):
        super().__init__()
        self.conv = nn.Conv3d(ci, co, 3, stride, 1, 1, 1, True)
        self.instnorm = nn.InstanceNorm3d(co, eps=1e-5, affine=True, momentum=0.1)
        self.lrelu = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x):
        return self.lrelu(self.instnorm(self.conv(x)))


class StackedConvLayers(nn.Module):
    def __init__(self, ci, co, num_convs, first_stride=1):
        super().__init__()
        self.blocks = nn.Sequential(*([ConvDropoutNormNonlin(ci, co, first_stride)] +
                                      [ConvDropoutNormNonlin(co, co, 1) for _ in range(num_convs - 1)]))

    def forward(self, x):
        return self.blocks(x)


def widths(c, p, cmax):
    return [min(c * 2 ** d, cmax) for d in range(p + 1)]


class Branch(nn.Module):
    """Generic_UNet with conv pooling, transposed-conv upsampling, deep supervision (spec §2.2)."""

    def __init__(self, c, p, cmax, k):
        super().__init__()
        w = widths(c, p, cmax)
        self.p = p
        ctx = [StackedConvLayers(1, w[0], 2, 1)] + [StackedConvLayers(w[d - 1], w[d], 2, 2) for d in range(1, p)]
        ctx.append(nn.Sequential(StackedConvLayers(w[p - 1], w[p], 1, 2), StackedConvLayers(w[p], w[p], 1, 1)))
        self.conv_blocks_context = nn.ModuleList(ctx)
        self.tu = nn.ModuleList([nn.ConvTranspose3d(w[p - u], w[p - 1 - u], 2, 2, bias=False) for u in range(p)])
        self.conv_blocks_localization = nn.ModuleList([
            nn.Sequential(StackedConvLayers(2 * w[p - 1 - u], w[p - 1 - u], 1), StackedConvLayers(w[p - 1 - u], w[p - 1 - u], 1))
            for u in range(p)])
        self.seg_outputs = nn.ModuleList([nn.Conv3d(w[p - 1 - u], k, 1, 1, 0, 1, 1, False) for u in range(p)])

    def forward(self, x):
        skips = []
        for d in range(self.p):
            x = self.conv_blocks_context[d](x)
            skips.append(x)
        x = self.conv_blocks_context[self.p](x)
        heads = []
        for u in range(self.p):
            x = torch.cat([self.tu[u](x), skips[self.p - 1 - u]], dim=1)  # upsampled first, skip second
            x = self.conv_blocks_localization[u](x)
            heads.append(self.seg_outputs[u](x))
        return x, heads[::-1]  # F_i, [h_{P-1} (full), ..., h_0]


def ma_module(c, variant):
    layers = [nn.Conv3d(2 * c, c, 3, 1, 1, 1, 1, True), nn.InstanceNorm3d(c, eps=1e-5, affine=True),
              nn.LeakyReLU(0.01, inplace=True)]
    if variant == "code":
        layers += [nn.Conv3d(c, c, 3, 1, 1, 1, 1, True), nn.Sigmoid()]
    else:
        layers += [nn.Conv3d(c, c, 1, 1, 0, 1, 1, True), nn.InstanceNorm3d(c, eps=1e-5, affine=True),
                   nn.LeakyReLU(0.01, inplace=True), nn.Sigmoid()]
    return nn.Sequential(*layers)


def he_init(module):
    # nnU-Net InitWeights_He(1e-2), applied to the branches only (Generic_MAML never calls it on the fusion part)
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)


class MAML(nn.Module):
    def __init__(self, m, c, p, cmax, k, variant="code"):
        super().__init__()
        self.m, self.p = m, p
        self.modality_specific_models = nn.ModuleList([Branch(c, p, cmax, k) for _ in range(m)])
        for b in self.modality_specific_models:
            b.apply(he_init)
        self.fusion = nn.Conv3d(m * c, c, 3, 1, 1, 1, 1, True)
        self.modality_aware_modules = nn.ModuleList([ma_module(c, variant) for _ in range(m)])
        self.output = nn.Conv3d(c, k, 1, 1, 0, 1, 1, False)

    def forward(self, x):
        feats, outs = [], []
        for i in range(self.m):
            f, heads = self.modality_specific_models[i](x[:, i:i + 1])
            feats.append(f)
            outs += heads
        dual = self.fusion(torch.cat(feats, dim=1))
        att = [self.modality_aware_modules[i](torch.cat([feats[i], dual], dim=1)) for i in range(self.m)]
        f_att = att[0] * feats[0]
        for i in range(1, self.m):
            f_att = f_att + att[i] * feats[i]
        z = self.output(f_att)
        taps = dict(F=feats, F_dual=dual, A=att, F_att=f_att)
        return [z] + outs, taps


# ---- losses (§3) ----
def lseg(z, y):
    """nnU-Net DC_and_CE_loss: CE (mean) - mean_{k>=1} batch Dice."""
    yl = y[:, 0].long()
    ce = F.cross_entropy(z, yl)
    p = torch.softmax(z, 1)
    g = F.one_hot(yl, z.shape[1]).permute(0, 4, 1, 2, 3).to(z.dtype)
    axes = (0, 2, 3, 4)
    tp = (p * g).sum(axes)
    fp = (p * (1 - g)).sum(axes)
    fn = ((1 - p) * g).sum(axes)
    dc = (2 * tp + 1e-5) / (2 * tp + fp + fn + 1e-5 + 1e-8)
    return ce - dc[1:].mean()


def ds_weights(p):
    w = [2.0 ** -k if k < p - 1 else 0.0 for k in range(p)]
    s = sum(w)
    return [v / s for v in w]


def preset(name, p):
    a = ds_weights(p)
    if name == "code":
        return a[0], 1.0, a
    if name == "paper":
        return 1.0, 0.5, [1.0] + [0.0] * (p - 1)
    if name == "joint":
        return a[0], 0.0, a
    if name == "intra":
        return 0.0, 1.0, a
    raise ValueError(name)


def downsample_labels(y, f):
    return y[:, :, f // 2::f, f // 2::f, f // 2::f]


def total_loss(outs, targets, m, p, w_joint, lam, alpha):
    """Skips zero-weight terms (not evaluated, no gradient). Returns (loss, terms)."""
    terms = [0.0] * (1 + m * p)
    loss = 0.0
    if w_joint != 0:
        t = lseg(outs[0], targets[0])
        terms[0] = t.item()
        loss = loss + w_joint * t
    for i in range(m):
        for k in range(p):
            wgt = lam * alpha[k]
            if wgt == 0:
                continue
            t = lseg(outs[1 + i * p + k], targets[k])
            terms[1 + i * p + k] = t.item()
            loss = loss + wgt * t
    return loss, terms


def names_array(names):
    return np.frombuffer("\n".join(names).encode(), dtype=np.uint8).astype(np.int64)


def count(mods):
    return sum(q.numel() for mod in mods for q in mod.parameters())


def make_labels(n, d, h, w, k, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n, 1, d, h, w), generator=g)
    # a smooth region of each class too, so Dice terms are not all near chance
    y[:, :, : d // 2, : h // 2] = 1
    y[:, :, d // 2:, h // 2:, : w // 3] = 2
    for s in range(n):
        assert set(torch.unique(y[s]).tolist()) == set(range(k))
    return y.to(torch.get_default_dtype())


def forward_group(net, prefix, x, y, out, presets):
    m, p = net.m, net.p
    targets = [y] + [downsample_labels(y, 2 ** k) for k in range(1, p)]
    x = x.clone().requires_grad_(True)
    outs, taps = net(x)
    for i in range(m):
        out[f"{prefix}/F/{i}"] = taps["F"][i]
        out[f"{prefix}/A/{i}"] = taps["A"][i]
        for k in range(p):
            out[f"{prefix}/z/{i}/{k}"] = outs[1 + i * p + k]
    out[prefix + "/F_dual"] = taps["F_dual"]
    out[prefix + "/F_att"] = taps["F_att"]
    out[prefix + "/Z"] = outs[0]
    with torch.no_grad():
        out[prefix + "/lseg"] = torch.tensor([lseg(outs[0], targets[0]).item()] +
                                             [lseg(outs[1 + i * p + k], targets[k]).item() for i in range(m) for k in range(p)])
    for name in presets:
        net.zero_grad(set_to_none=True)
        xx = x.detach().clone().requires_grad_(True)
        outs, _ = net(xx)
        loss, terms = total_loss(outs, targets, m, p, *preset(name, p))
        loss.backward()
        out[f"{prefix}/{name}/terms"] = torch.tensor(terms)
        out[f"{prefix}/{name}/loss"] = loss.detach()
        out[f"{prefix}/{name}/grad/x"] = xx.grad
        common.grads(net, f"{prefix}/{name}/grad", out)
    net.zero_grad(set_to_none=True)
    return targets


def steps(net0, prefix, x, targets, out, name, opt_fn, clip, scale):
    net = MAML(**TINY)
    net.load_state_dict(net0.state_dict())
    opt = opt_fn(net.parameters())
    p = net.p
    for s in (1, 2):
        opt.zero_grad()  # torch 1.13: set_to_none=False, grads that are None stay None
        outs, _ = net(x)
        loss, _ = total_loss(outs, targets, net.m, p, *preset(name, p))
        (loss * scale).backward()
        out[f"{prefix}/loss{s}"] = loss.detach() * scale
        if clip:
            out[f"{prefix}/norm{s}"] = torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        common.state(net, f"{prefix}/step{s}", out)


def gaussian(patch):
    g = torch.ones(patch, dtype=torch.float64)
    for a, pa in enumerate(patch):
        xs = torch.arange(pa, dtype=torch.float64)
        v = torch.exp(-(xs - pa // 2) ** 2 / (2 * (pa / 8.0) ** 2))
        shape = [1, 1, 1]
        shape[a] = pa
        g = g * v.reshape(shape)
    return g


def tile_starts(size, patch, step=0.5):
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / (step * patch)) + 1
    return [int(np.round(i * (size - patch) / (n - 1))) for i in range(n)]


def sliding_window(predict, x, patch, g):
    n, _, *size = x.shape
    starts = [tile_starts(s, p) for s, p in zip(size, patch)]
    acc = None
    norm = torch.zeros(size, dtype=torch.float64)
    for sd, sh, sw in itertools.product(*starts):
        tile = x[:, :, sd:sd + patch[0], sh:sh + patch[1], sw:sw + patch[2]]
        prob = 0
        for r in range(4):  # the 8 combinations of the 3 flips
            for axes in itertools.combinations((2, 3, 4), r):
                xf = torch.flip(tile, axes) if axes else tile
                pf = predict(xf)
                prob = prob + (torch.flip(pf, axes) if axes else pf)
        prob = prob / 8
        if acc is None:
            acc = torch.zeros((n, prob.shape[1], *size), dtype=torch.float64)
        acc[:, :, sd:sd + patch[0], sh:sh + patch[1], sw:sw + patch[2]] += prob * g
        norm[sd:sd + patch[0], sh:sh + patch[1], sw:sw + patch[2]] += g
    return acc / norm, starts


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)
    out = {}
    # parameter counts of the presets (instantiating the PyTorch modules)
    for pname, cfg in (("tiny", TINY), ("brats", BRATS), ("liver", LIVER)):
        net = MAML(**cfg)
        out[f"counts/{pname}/branch"] = count([net.modality_specific_models[0]])
        out[f"counts/{pname}/fusion"] = count([net.fusion])
        out[f"counts/{pname}/ma"] = count(net.modality_aware_modules)
        out[f"counts/{pname}/output"] = count([net.output])
        out[f"counts/{pname}/total"] = count([net])
        ma_paper = cfg["m"] * count([ma_module(cfg["c"], "paper")])  # only the MA modules differ
        out[f"counts/{pname}_paper_ma/ma"] = ma_paper
        out[f"counts/{pname}_paper_ma/total"] = count([net]) - count(net.modality_aware_modules) + ma_paper
        del net

    common.seed(1)
    net = MAML(**TINY)
    names = [n for n, _ in net.named_parameters()]
    assert len(names) == 139 and len(list(net.buffers())) == 0
    out["tiny/order"] = names_array(names)
    common.state(net, "tiny/params", out)
    n, (d, h, w) = 2, (16, 24, 32)
    x = torch.randn(n, 2, d, h, w)
    y = make_labels(n, d, h, w, 3, 5)
    out["tiny/x"] = x
    out["tiny/y"] = y
    targets = forward_group(net, "tiny", x, y, out, ("code", "paper", "joint", "intra"))
    out["tiny/y1"] = targets[1]
    out["tiny/y2"] = targets[2]

    # single-modality path: branch 0 never reads channel 1
    with torch.no_grad():
        for kind in ("zero", "noise"):
            xs = x.clone()
            xs[:, 1] = 0 if kind == "zero" else torch.randn(n, d, h, w) * 3
            _, heads = net.modality_specific_models[0](xs[:, 0:1])
            out[f"tiny/single/{kind}/z0"] = heads[0]
            out[f"tiny/single/{kind}/x"] = xs

    sgd = lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    adam = lambda ps: torch.optim.Adam(ps, lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=3e-5, amsgrad=True)
    steps(net, "tiny/sgd", x, targets, out, "code", sgd, 12.0, 1.0)
    steps(net, "tiny/sgd_clip", x, targets, out, "code", sgd, 12.0, 1e4)
    steps(net, "tiny/adam", x, targets, out, "paper", adam, None, 1.0)

    # §8 point 9: the paper's MA module
    common.seed(2)
    pnet = MAML(**TINY, variant="paper")
    with torch.no_grad():  # IN of the MA modules away from 1 / 0 so the affine gradients matter
        for mod in pnet.modality_aware_modules.modules():
            if isinstance(mod, nn.InstanceNorm3d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    out["tiny_paper_ma/order"] = names_array([nm for nm, _ in pnet.named_parameters()])
    common.state(pnet, "tiny_paper_ma/params", out)
    forward_group(pnet, "tiny_paper_ma", x, y, out, ("code", "paper"))

    # §8 point 8: nnU-Net v1 sliding window over 20 x 30 x 40 with 16 x 24 x 32 tiles
    common.seed(3)
    xs = torch.randn(1, 2, 20, 30, 40)
    patch = (16, 24, 32)
    g64 = gaussian(patch)
    g32 = g64.float().double()
    assert abs(g64.max().item() - 1) < 1e-15 and g64[8, 12, 16] == 1
    with torch.no_grad():
        full = lambda t: torch.softmax(net(t)[0][0], 1)
        single0 = lambda t: torch.softmax(net.modality_specific_models[0](t[:, 0:1])[1][0], 1)
        prob32, starts = sliding_window(full, xs, patch, g32)
        prob64, _ = sliding_window(full, xs, patch, g64)
        prob_single, _ = sliding_window(single0, xs, patch, g32)
    assert starts == [[0, 4], [0, 6], [0, 8]], starts
    out["sliding_window/input"] = xs
    out["sliding_window/starts_d"] = torch.tensor(starts[0])
    out["sliding_window/starts_h"] = torch.tensor(starts[1])
    out["sliding_window/starts_w"] = torch.tensor(starts[2])
    out["sliding_window/gaussian"] = g64
    out["sliding_window/gaussian_f32"] = g32
    out["sliding_window/output"] = prob32
    out["sliding_window/output_g64"] = prob64
    out["sliding_window/single0/output"] = prob_single
    common.write(outdir, "maml", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
