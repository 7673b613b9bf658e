"""ConResNet (spec conresnet.md §2-4, §8) against PyTorch autograd, in float64.

The network is the official `conresnet` of jianpengz/ConResNet (models/ConResNet.py, weight_std=True) with the
hard-coded constants made parameters (C_in, width w, GroupNorm groups G, the patch shape); its modules and forward
are the official ones: ConResAtt and the weight-standardised Conv3d come verbatim from context_residual_ref.py,
NoBottleneck and conresnet below are written line by line from the official file. PyTorch default init
(torch.manual_seed(0)). The official state dict has 123 tensors (23 never used, spec §7.7).

Exported (config tiny: C_in 2, K 3, w 4, G 2, blocks 1,2,2,2,2, patch 16x24x32, N 2):
  official/<key>            the whole official state dict (123 keys, registration order)
  x, x_res, labels, y, y_res   inputs (§8.2): X = randn (generator seed 1), X_res per §3.1, integer label map in
                            the phantom convention (1 edema, 2 non-enhancing, 3 enhancing), y = [ET, WT, TC]
  taps/<name>               §8.3 forward taps, eval mode; seg_x{4,2,1}/{F,G,R,T,O_res,O_seg}
  out/{seg,res,resx2,resx4,resx2_pre,resx4_pre}
  loss_<mode>/...           mode code (logits), paper (sigmoid), lambda0 (code, λ = 0): t/<output> (K), dice,
                            bce, lb_res, lb_resx2, lb_resx4, total, grad/<key>, grad_x, grad_x_res
  adam_<mode>/step<k>/<key>, adam_<mode>/exp_avg/<key>, exp_avg_sq/<key>: Adam (lr 1e-3 (1 - t/10)^0.9, wd 5e-4)
                            after steps 1..3, moments after step 3; mode paper and code
  train/{mask,seg,res,resx2,resx4,grad_x}   Dropout3d in train mode with the exported mask (paper-mode loss)
  baseline/seg              the ablation baseline (O_seg = F, seg only) with the same weights
  sw/{x,prob}               §4.4 sliding window of the tiny model over 1x2x30x40x50 (3x2x2 tiles)
  counts/...                parameter counts (tiny used / total; BraTS used / total / baseline)
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from context_residual_ref import ConResAtt, Conv3d, conv3x3x3


class NoBottleneck(nn.Module):
    """Official NoBottleneck (pre-activation residual block) with GroupNorm(8, .) -> GroupNorm(groups, .)."""

    def __init__(self, inplanes, planes, stride=(1, 1, 1), dilation=(1, 1, 1), downsample=None, fist_dilation=1,
                 multi_grid=1, weight_std=False, groups=8):
        super(NoBottleneck, self).__init__()
        self.weight_std = weight_std
        self.gn1 = nn.GroupNorm(groups, inplanes)
        self.conv1 = conv3x3x3(inplanes, planes, kernel_size=(3, 3, 3), stride=stride,
                               padding=tuple(d * multi_grid for d in dilation),
                               dilation=tuple(d * multi_grid for d in dilation), bias=False,
                               weight_std=self.weight_std)
        self.relu = nn.ReLU(inplace=True)
        self.gn2 = nn.GroupNorm(groups, planes)
        self.conv2 = conv3x3x3(planes, planes, kernel_size=(3, 3, 3), stride=(1, 1, 1),
                               padding=tuple(d * multi_grid for d in dilation),
                               dilation=tuple(d * multi_grid for d in dilation), bias=False,
                               weight_std=self.weight_std)
        self.downsample = downsample

    def forward(self, x):
        skip = x
        seg = self.gn1(x)
        seg = self.relu(seg)
        seg = self.conv1(seg)
        seg = self.gn2(seg)
        seg = self.relu(seg)
        seg = self.conv2(seg)
        if self.downsample is not None:
            skip = self.downsample(x)
        seg = seg + skip
        return seg


class ConResNet(nn.Module):
    """Official `conresnet` with C_in, w, G parametrised (official: 4, 32, 8); residual=False is the paper's
    baseline ablation (§2.6): only gn_seg / conv_seg of each decoder stage, O_seg = F, returns [seg]."""

    def __init__(self, shape, layers=(1, 2, 2, 2, 2), num_classes=3, cin=4, w=32, groups=8, residual=True):
        super(ConResNet, self).__init__()
        self.shape = shape
        self.residual = residual
        ws = True
        G = groups
        self.conv_4_32 = nn.Sequential(conv3x3x3(cin, w, kernel_size=(3, 3, 3), stride=(1, 1, 1), weight_std=ws))
        self.conv_32_64 = nn.Sequential(nn.GroupNorm(G, w), nn.ReLU(inplace=True),
                                        conv3x3x3(w, 2 * w, kernel_size=(3, 3, 3), stride=(2, 2, 2), weight_std=ws))
        self.conv_64_128 = nn.Sequential(nn.GroupNorm(G, 2 * w), nn.ReLU(inplace=True),
                                         conv3x3x3(2 * w, 4 * w, kernel_size=(3, 3, 3), stride=(2, 2, 2),
                                                   weight_std=ws))
        self.conv_128_256 = nn.Sequential(nn.GroupNorm(G, 4 * w), nn.ReLU(inplace=True),
                                          conv3x3x3(4 * w, 8 * w, kernel_size=(3, 3, 3), stride=(2, 2, 2),
                                                    weight_std=ws))
        self.layer0 = self._make_layer(w, w, layers[0], G)
        self.layer1 = self._make_layer(2 * w, 2 * w, layers[1], G)
        self.layer2 = self._make_layer(4 * w, 4 * w, layers[2], G)
        self.layer3 = self._make_layer(8 * w, 8 * w, layers[3], G)
        self.layer4 = self._make_layer(8 * w, 8 * w, layers[4], G, dilation=(2, 2, 2))
        self.fusionConv = nn.Sequential(nn.GroupNorm(G, 8 * w), nn.ReLU(inplace=True), nn.Dropout3d(0.1),
                                        conv3x3x3(8 * w, 4 * w, kernel_size=(3, 3, 3), padding=(1, 1, 1),
                                                  weight_std=ws))
        if residual:
            self.seg_x4 = nn.Sequential(ConResAtt(4 * w, 2 * w, kernel_size=(3, 3, 3), padding=(1, 1, 1),
                                                  weight_std=ws, first_layer=True, groups=G, res_in=cin))
            self.seg_x2 = nn.Sequential(ConResAtt(2 * w, w, kernel_size=(3, 3, 3), padding=(1, 1, 1),
                                                  weight_std=ws, groups=G, res_in=cin))
            self.seg_x1 = nn.Sequential(ConResAtt(w, w, kernel_size=(3, 3, 3), padding=(1, 1, 1), weight_std=ws,
                                                  groups=G, res_in=cin))
        else:
            self.seg_x4 = nn.Sequential(PlainStage(4 * w, 2 * w, G))
            self.seg_x2 = nn.Sequential(PlainStage(2 * w, w, G))
            self.seg_x1 = nn.Sequential(PlainStage(w, w, G))
        self.seg_cls = nn.Sequential(nn.Conv3d(w, num_classes, kernel_size=1))
        if residual:
            self.res_cls = nn.Sequential(nn.Conv3d(w, num_classes, kernel_size=1))
            self.resx2_cls = nn.Sequential(nn.Conv3d(w, num_classes, kernel_size=1))
            self.resx4_cls = nn.Sequential(nn.Conv3d(2 * w, num_classes, kernel_size=1))

    def _make_layer(self, inplanes, planes, blocks, G, stride=(1, 1, 1), dilation=(1, 1, 1), multi_grid=1):
        downsample = None  # in = out, stride 1: never built (spec §2.2)
        layers = []
        generate_multi_grid = lambda index, grids: grids[index % len(grids)] if isinstance(grids, tuple) else 1
        layers.append(NoBottleneck(inplanes, planes, stride, dilation=dilation, downsample=downsample,
                                   multi_grid=generate_multi_grid(0, multi_grid), weight_std=True, groups=G))
        for i in range(1, blocks):
            layers.append(NoBottleneck(inplanes, planes, dilation=dilation,
                                       multi_grid=generate_multi_grid(i, multi_grid), weight_std=True, groups=G))
        return nn.Sequential(*layers)

    def forward(self, x_list, taps=None):
        x, x_res = x_list
        t = taps if taps is not None else {}
        x = self.conv_4_32(x)
        t["x0"] = x
        x = self.layer0(x)
        skip1 = x
        t["s1"] = x
        x = self.conv_32_64(x)
        x = self.layer1(x)
        skip2 = x
        t["s2"] = x
        x = self.conv_64_128(x)
        x = self.layer2(x)
        skip3 = x
        t["s3"] = x
        x = self.conv_128_256(x)
        x = self.layer3(x)
        t["layer3"] = x
        x = self.layer4(x)
        t["layer4"] = x
        x = self.fusionConv(x)
        t["z"] = x
        s = self.shape
        s4 = (int(s[0] / 4), int(s[1] / 4), int(s[2] / 4))
        s2 = (int(s[0] / 2), int(s[1] / 2), int(s[2] / 2))
        s1 = (int(s[0]), int(s[1]), int(s[2]))
        up = lambda v, size: F.interpolate(v, size=size, mode="trilinear", align_corners=True)
        if not self.residual:
            a4 = self.seg_x4(up(x, s4) + skip3)
            a2 = self.seg_x2(up(a4, s2) + skip2)
            a1 = self.seg_x1(up(a2, s1) + skip1)
            return [self.seg_cls(a1)]
        res_x4 = up(x_res, s4)
        t["r4"] = res_x4
        seg_x4 = up(x, s4)
        seg_x4 = seg_x4 + skip3
        seg_x4, res_x4 = self.seg_x4([seg_x4, res_x4])
        res_x2 = up(res_x4, s2)
        seg_x2 = up(seg_x4, s2)
        seg_x2 = seg_x2 + skip2
        seg_x2, res_x2 = self.seg_x2([seg_x2, res_x2])
        res_x1 = up(res_x2, s1)
        seg_x1 = up(seg_x2, s1)
        seg_x1 = seg_x1 + skip1
        seg_x1, res_x1 = self.seg_x1([seg_x1, res_x1])
        seg = self.seg_cls(seg_x1)
        res = self.res_cls(res_x1)
        resx2 = self.resx2_cls(res_x2)
        resx4 = self.resx4_cls(res_x4)
        t["resx2_pre"] = resx2
        t["resx4_pre"] = resx4
        resx2 = up(resx2, s1)
        resx4 = up(resx4, s1)
        return [seg, res, resx2, resx4]


class PlainStage(nn.Module):
    """Baseline decoder stage: F = conv_seg(ReLU(gn_seg(I))) (ConResAtt's segmentation half)."""

    def __init__(self, cin, cout, G):
        super().__init__()
        self.gn_seg = nn.GroupNorm(G, cin)
        self.conv_seg = conv3x3x3(cin, cout, weight_std=True)

    def forward(self, x):
        return self.conv_seg(F.relu(self.gn_seg(x)))


UNUSED = ["seg_x4.0.gn_res.weight", "seg_x4.0.gn_res.bias", "seg_x4.0.gn_res2.weight", "seg_x4.0.gn_res2.bias",
          "seg_x4.0.conv_res2.weight", "seg_x4.0.gn_mp.weight", "seg_x4.0.gn_mp.bias", "seg_x4.0.conv_mp.weight",
          "seg_x2.0.gn_res.weight", "seg_x2.0.gn_res.bias", "seg_x2.0.gn_res2.weight", "seg_x2.0.gn_res2.bias",
          "seg_x2.0.conv_res2.weight", "seg_x2.0.conv_mp_first.weight",
          "seg_x1.0.gn_res.weight", "seg_x1.0.gn_res.bias", "seg_x1.0.gn_res2.weight", "seg_x1.0.gn_res2.bias",
          "seg_x1.0.conv_res2.weight", "seg_x1.0.gn_mp.weight", "seg_x1.0.gn_mp.bias",
          "seg_x1.0.conv_mp_first.weight", "seg_x1.0.conv_mp.weight"]


# ---- losses (§3), the official DiceLoss4BraTS + BCELoss4BraTS + BCELossBoud written out -------------------------

def seg_losses(z, y):
    p = torch.sigmoid(z)
    N, K = z.shape[:2]
    dice = 0
    bce = 0
    for k in range(K):
        pk = p[:, k].reshape(N, -1)
        yk = y[:, k].reshape(N, -1)
        num = 2 * (pk * yk).sum(1)
        den = pk.sum(1) + yk.sum(1) + 1
        dice = dice + (1 - (num / den).mean())
        bce = bce + F.binary_cross_entropy_with_logits(z[:, k], y[:, k])
    return dice / K, bce


def residual_bce(P, T, on_logits):
    N, K = P.shape[:2]
    V = P[0, 0].numel()
    tot = 0
    ts = []
    for k in range(K):
        t = math.log(V / (T[:, k].sum().item() + 1))
        ts.append(t)
        q = P[:, k] if on_logits else torch.sigmoid(P[:, k])
        q = torch.clamp(q, 1e-3, 1 - 1e-3)
        tk = T[:, k]
        tot = tot + (-(t * tk * torch.log(q) + (1 - tk) * torch.log(1 - q))).mean()
    return tot / K, torch.tensor(ts)


def total_loss(outs, y, y_res, on_logits, lam):
    dice, bce = seg_losses(outs[0], y)
    lb = [residual_bce(o, y_res, on_logits) for o in outs[1:]]
    total = dice + bce + lb[0][0] + lam * (lb[1][0] + lb[2][0])
    return total, dict(dice=dice, bce=bce, lb_res=lb[0][0], lb_resx2=lb[1][0], lb_resx4=lb[2][0],
                       t=[l[1] for l in lb])


# ---- inputs (§8.2) ------------------------------------------------------------------------------------------

def image_residual(x):
    r = torch.zeros_like(x)
    r[:, :, 1:] = (x[:, :, 1:] - x[:, :, :-1]).abs()
    return r


def label_residual(y):
    prev = torch.zeros_like(y)
    prev[:, :, 1:] = y[:, :, :-1]
    return (y != prev).to(y.dtype)


def ball(shape, c, r):
    d, h, w = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    return ((d - c[0]) ** 2 + (h - c[1]) ** 2 + (w - c[2]) ** 2) <= r * r


def make_labels(shape):
    """Integer label maps (phantom convention: WT ball 1, TC ball 2, ET ball 3) and y = [ET, WT, TC]."""
    specs = [((8, 12, 16), (3, 5, 7)), ((2, 10, 20), (2, 4, 6))]
    lab = torch.zeros(2, 1, *shape)
    y = torch.zeros(2, 3, *shape)
    for n, (c, (r_et, r_tc, r_wt)) in enumerate(specs):
        et, tc, wt = ball(shape, c, r_et), ball(shape, c, r_tc), ball(shape, c, r_wt)
        lab[n, 0][wt] = 1
        lab[n, 0][tc] = 2
        lab[n, 0][et] = 3
        y[n, 0], y[n, 1], y[n, 2] = et.double(), wt.double(), tc.double()
    return lab, y


def sliding_window(net, x, patch):
    """test.py's tiling (§4.4) with the per-axis stride ceil(tile (1 - 1/3)); zero padding at the end."""
    x_res = image_residual(x)
    N, C = x.shape[:2]
    size = list(x.shape[2:])
    pad = [max(p - s, 0) for s, p in zip(size, patch)]
    xp = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
    rp = F.pad(x_res, (0, pad[2], 0, pad[1], 0, pad[0]))
    S = list(xp.shape[2:])
    stride = [int(math.ceil(p * (1 - 1 / 3))) for p in patch]
    n = [int(math.ceil((S[a] - patch[a]) / stride[a])) + 1 for a in range(3)]
    acc = torch.zeros(N, 3, *S)
    cnt = torch.zeros(N, 3, *S)
    starts = []
    for i in range(n[0]):
        for j in range(n[1]):
            for k in range(n[2]):
                sl = []
                for a, ia in enumerate((i, j, k)):
                    a1 = ia * stride[a]
                    a2 = min(a1 + patch[a], S[a])
                    a1 = max(a2 - patch[a], 0)
                    sl.append(slice(a1, a2))
                starts.append([s.start for s in sl])
                with torch.no_grad():
                    out = net([xp[:, :, sl[0], sl[1], sl[2]], rp[:, :, sl[0], sl[1], sl[2]]])[0]
                acc[:, :, sl[0], sl[1], sl[2]] += torch.sigmoid(out)
                cnt[:, :, sl[0], sl[1], sl[2]] += 1
    prob = acc / cnt
    return prob[:, :, :size[0], :size[1], :size[2]], n, stride, starts


def count(module):
    return sum(p.numel() for p in module.parameters())


def used_count(module):
    return sum(v.numel() for k, v in module.state_dict().items() if k not in UNUSED)


def generate(outdir):
    out = {}
    patch = (16, 24, 32)
    common.seed(0)
    net = ConResNet(patch, num_classes=3, cin=2, w=4, groups=2).double()
    net.eval()
    sd = net.state_dict()
    assert len(sd) == 123
    for k, v in sd.items():
        out["official/" + k] = v.detach().clone()
    used = [k for k in sd if k not in UNUSED]
    assert len(used) == 100 and len(UNUSED) == 23

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, *patch, generator=g, dtype=torch.float64)
    x_res = image_residual(x)
    labels, y = make_labels(patch)
    y_res = label_residual(y)
    out.update({"x": x, "x_res": x_res, "labels": labels, "y": y, "y_res": y_res})

    # forward taps (hooks keep the forward verbatim)
    taps = {}
    hooks = []
    for name in ("seg_x4", "seg_x2", "seg_x1"):
        m = getattr(net, name)[0]

        def conv_hook(key):
            def f(mod, inp, o):
                taps[key] = o.detach().clone()
            return f

        def in_hook(key):
            def f(mod, inp, o):
                taps[key] = inp[0].detach().clone()
            return f

        hooks.append(m.conv_seg.register_forward_hook(conv_hook(name + "/F")))
        hooks.append(m.conv_res.register_forward_hook(in_hook(name + "/G")))
        hooks.append(m.conv_res.register_forward_hook(conv_hook(name + "/R")))
        hooks.append(m.gn_res1.register_forward_hook(in_hook(name + "/TR")))
        hooks.append(m.conv_res1.register_forward_hook(conv_hook(name + "/O_res")))
        hooks.append(m.register_forward_hook(
            (lambda key: (lambda mod, inp, o: taps.__setitem__(key, o[0].detach().clone())))(name + "/O_seg")))
    t = {}
    outs = net([x, x_res], t)
    for h in hooks:
        h.remove()
    for name in ("seg_x4", "seg_x2", "seg_x1"):
        taps[name + "/T"] = taps.pop(name + "/TR") - taps[name + "/R"]
    for k, v in t.items():
        out["taps/" + k] = v.detach().clone()
    for k, v in taps.items():
        out["taps/" + k] = v
    for k, v in zip(("seg", "res", "resx2", "resx4"), outs):
        out["out/" + k] = v.detach().clone()
    for o in outs[1:]:
        assert ((o - 1e-3).abs().min() > 1e-7) and ((o - 0.999).abs().min() > 1e-7)

    # losses and gradients (§8.4, §8.5)
    for mode, on_logits, lam in (("code", True, 0.5), ("paper", False, 0.5), ("lambda0", True, 0.0)):
        xg = x.clone().requires_grad_(True)
        rg = x_res.clone().requires_grad_(True)
        net.zero_grad()
        o = net([xg, rg])
        total, parts = total_loss(o, y, y_res, on_logits, lam)
        total.backward()
        p = "loss_%s/" % mode
        for key in ("dice", "bce", "lb_res", "lb_resx2", "lb_resx4"):
            out[p + key] = parts[key].detach()
        out[p + "total"] = total.detach()
        for name, tk in zip(("res", "resx2", "resx4"), parts["t"]):
            out[p + "t/" + name] = tk
        grads = dict(net.named_parameters())
        for k in used:
            out[p + "grad/" + k] = grads[k].grad.detach().clone()
        out[p + "grad_x"] = xg.grad.detach().clone()
        out[p + "grad_x_res"] = rg.grad.detach().clone()

    # Adam, 3 steps (§8.6)
    for mode, on_logits in (("paper", False), ("code", True)):
        m = ConResNet(patch, num_classes=3, cin=2, w=4, groups=2).double()
        m.load_state_dict(sd)
        m.eval()
        params = [pp for k, pp in m.named_parameters() if k in used]
        opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-4)
        for step in range(3):
            for grp in opt.param_groups:
                grp["lr"] = 1e-3 * (1 - step / 10) ** 0.9
            opt.zero_grad()
            total, _ = total_loss(m([x, x_res]), y, y_res, on_logits, 0.5)
            total.backward()
            opt.step()
            for k, pp in m.named_parameters():
                if k in used:
                    out["adam_%s/step%d/%s" % (mode, step + 1, k)] = pp.detach().clone()
        names = dict((id(pp), k) for k, pp in m.named_parameters())
        for pp in params:
            st = opt.state[pp]
            out["adam_%s/exp_avg/%s" % (mode, names[id(pp)])] = st["exp_avg"].clone()
            out["adam_%s/exp_avg_sq/%s" % (mode, names[id(pp)])] = st["exp_avg_sq"].clone()

    # Dropout3d in train mode with an exported mask (§8.8), paper-mode loss gradient w.r.t. X
    gm = torch.Generator().manual_seed(3)
    keep = (torch.rand(2, 32, 1, 1, 1, generator=gm) >= 0.1).double()
    if keep.min() > 0:
        keep[0, 5] = 0
        keep[1, 17] = 0
    mask = keep / 0.9
    net.train()
    h = net.fusionConv[2].register_forward_hook(lambda mod, inp, o: inp[0] * mask)
    xg = x.clone().requires_grad_(True)
    net.zero_grad()
    o = net([xg, x_res])
    total, _ = total_loss(o, y, y_res, False, 0.5)
    total.backward()
    h.remove()
    net.eval()
    out["train/mask"] = mask
    for k, v in zip(("seg", "res", "resx2", "resx4"), o):
        out["train/" + k] = v.detach().clone()
    out["train/grad_x"] = xg.grad.detach().clone()

    # baseline ablation with the same weights
    base = ConResNet(patch, num_classes=3, cin=2, w=4, groups=2, residual=False).double()
    base.load_state_dict({k: v for k, v in sd.items() if k in base.state_dict()})
    base.eval()
    with torch.no_grad():
        out["baseline/seg"] = base([x, x_res])[0]

    # sliding window (§4.4, §8.8)
    xs = torch.randn(1, 2, 30, 40, 50, generator=g, dtype=torch.float64)
    prob, n, stride, starts = sliding_window(net, xs, patch)
    assert n == [3, 2, 2] and stride == [11, 16, 22], (n, stride)
    out["sw/x"] = xs
    out["sw/prob"] = prob
    out["sw/starts"] = torch.tensor(starts, dtype=torch.int64)

    # parameter counts
    out["counts/tiny_used"] = used_count(net)
    out["counts/tiny_total"] = count(net)
    brats = ConResNet((80, 160, 160), num_classes=3, cin=4, w=32, groups=8)
    out["counts/brats_used"] = used_count(brats)
    out["counts/brats_total"] = count(brats)
    out["counts/brats_baseline"] = count(ConResNet((80, 160, 160), num_classes=3, cin=4, w=32, groups=8,
                                                   residual=False))
    assert out["counts/tiny_used"] == 298544 and out["counts/brats_used"] == 19018732
    assert out["counts/brats_total"] == 19441196 and out["counts/brats_baseline"] == 18783715
    common.write(outdir, "conresnet", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
