"""CSCN (include/mmnet/cscn.hpp) against PyTorch/numpy/scipy, shared/specs/cascaded-fcn.md §8 (ref-tiny config).
No official code exists; BUNet and ACDNet are written from spec §2 with the state-dict names of §8.

Writes cscn.h5:
  {bunet,acdnet}/init/...        state dict after torch.manual_seed(0) default init (float64), then every BN's
                                 weight ~ U(0.5, 1.5), bias ~ U(-0.2, 0.2), running_mean ~ U(-0.3, 0.3),
                                 running_var ~ U(0.5, 1.5)
  {net}/input, labels, alpha     x 2 x C x 4 x 8 x 12 (ACDNet channel 1 in [0, 1]); labels with background in each
                                 sample; alpha = EDT(labels) + 1 per sample (scipy)
  {net}/eval_logits              eval-mode forward of the loaded weights
  {net}/logits, loss, grad_input, grad/<param>, after_forward/<state>
                                 train-mode forward, focal loss (gamma 2, alpha), backward
  {net}/after_step/<state>       one Adam step (lr 1e-3, betas 0.9/0.999, eps 1e-8) on those gradients, where the
                                 b4.bias entries whose gradient is zero in exact arithmetic (rounding noise below
                                 1e-12 of the b4.weight gradient) are set to exactly 0 (grad/ stores them so)
  {net}/logits2, loss2, after_second/<state>   a second train-mode forward (no grad) after the step
  alpha_case/...                 §8.2 GT, alpha, its block [2:6, 2:10, 2:14] and alpha of the cropped GT
  loss_case/...                  §8.3 logits 1 x 2 x 6 x 10 x 14, loss and dL/dlogits for gamma 0 and 2, and CE
  cascade/...                    §8.5 random volume (10, 14, 18): bunet state (head bias shifted so that P_c > 0.5 on
                                 part of the volume), acdnet state, P_c, ROI, P_f, P_final, mask; forced/... with
                                 the ROI [2:10, 1:13, 3:15]; small/... the cascade on a (6, 10, 9) volume smaller
                                 than the minimum extent (8, 12, 12) (padding at the high end)
  counts/{bunet,acdnet}_{paper,tiny}   trainable parameter counts
"""
import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn as nn
import torch.nn.functional as F

import common


class CBR(nn.Module):
    def __init__(self, cin, cout, k, r=1):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, k, padding=r * (k - 1) // 2, dilation=r, bias=False)
        self.bn = nn.BatchNorm3d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def double_cbr(cin, mid, cout):
    return nn.ModuleList([CBR(cin, mid, 3), CBR(mid, cout, 3)])


def run(seq, x):
    for m in seq:
        x = m(x)
    return x


class BUNet(nn.Module):
    def __init__(self, b=16, cin=1, classes=2):
        super().__init__()
        self.e1 = double_cbr(cin, b, 2 * b)
        self.e2 = double_cbr(2 * b, 2 * b, 4 * b)
        self.bottom = double_cbr(4 * b, 4 * b, 8 * b)
        self.up2 = nn.ConvTranspose3d(8 * b, 8 * b, 2, stride=2)
        self.dec2 = double_cbr(12 * b, 4 * b, 4 * b)
        self.up1 = nn.ConvTranspose3d(4 * b, 4 * b, 2, stride=2)
        self.dec1 = double_cbr(6 * b, 2 * b, 2 * b)
        self.head = nn.Conv3d(2 * b, classes, 1)

    def forward(self, x):
        s1 = run(self.e1, x)
        s2 = run(self.e2, F.max_pool3d(s1, 2))
        u = self.up2(run(self.bottom, F.max_pool3d(s2, 2)))
        d2 = run(self.dec2, torch.cat([s2, u], 1))
        d1 = run(self.dec1, torch.cat([s1, self.up1(d2)], 1))
        return self.head(d1)


class ASPPDenseLayer(nn.Module):
    def __init__(self, c, a, k, rates):
        super().__init__()
        self.b0 = CBR(c, a, 1)
        self.b1 = CBR(c, a, 3, rates[0])
        self.b2 = CBR(c, a, 3, rates[1])
        self.b3 = CBR(c, a, 3, rates[2])
        self.b4 = nn.Conv3d(c, a, 1)
        self.bottleneck = CBR(5 * a, k, 1)

    def forward(self, x):
        g = x.mean(dim=(2, 3, 4), keepdim=True)
        b4 = F.relu(self.b4(g)).expand(-1, -1, *x.shape[2:])
        y = self.bottleneck(torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x), b4], 1))
        return torch.cat([x, y], 1)


class TransitionDown(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.cbr = CBR(cin, cout, 1)

    def forward(self, x):
        return F.avg_pool3d(self.cbr(x), 2)


class ACDNet(nn.Module):
    def __init__(self, s=32, L=4, k=16, a=16, rates=(1, 2, 4), theta=0.5, u2=64, u1=32, e=16, cin=2, classes=2):
        super().__init__()
        self.stem = CBR(cin, s, 3)
        c1 = s
        self.db1 = nn.ModuleList([ASPPDenseLayer(c1 + i * k, a, k, rates) for i in range(L)])
        o1 = c1 + L * k
        c2 = int(np.floor(theta * o1))
        self.td1 = TransitionDown(o1, c2)
        self.db2 = nn.ModuleList([ASPPDenseLayer(c2 + i * k, a, k, rates) for i in range(L)])
        o2 = c2 + L * k
        c3 = int(np.floor(theta * o2))
        self.td2 = TransitionDown(o2, c3)
        self.db3 = nn.ModuleList([ASPPDenseLayer(c3 + i * k, a, k, rates) for i in range(L)])
        o3 = c3 + L * k
        self.up2 = nn.ConvTranspose3d(o3, u2, 2, stride=2)
        self.dec2 = CBR(o2 + u2, u2, 3)
        self.up1 = nn.ConvTranspose3d(u2, u1, 2, stride=2)
        self.dec1 = CBR(o1 + u1, u1, 3)
        self.side3 = CBR(o3, e, 1)
        self.side2 = CBR(u2, e, 1)
        self.side1 = CBR(u1, e, 1)
        self.fuse = CBR(3 * e, s, 3)
        self.head = nn.Conv3d(s, classes, 1)

    def forward(self, x):
        size = x.shape[2:]
        f1 = run(self.db1, self.stem(x))
        f2 = run(self.db2, self.td1(f1))
        f3 = run(self.db3, self.td2(f2))
        u2 = self.dec2(torch.cat([f2, self.up2(f3)], 1))
        u1 = self.dec1(torch.cat([f1, self.up1(u2)], 1))
        s3 = F.interpolate(self.side3(f3), size=size, mode="trilinear", align_corners=False)
        s2 = F.interpolate(self.side2(u2), size=size, mode="trilinear", align_corners=False)
        s1 = self.side1(u1)
        return self.head(self.fuse(torch.cat([s1, s2, s3], 1)))


TINY_ACD = dict(s=8, L=2, k=3, a=4, rates=(1, 2, 3), theta=0.5, u2=16, u1=10, e=4)
BLOCK = (4, 8, 12)
STRIDE = (2, 4, 6)
MARGIN = 2
PERM = {"ax": (0, 1, 2), "cor": (1, 0, 2), "sag": (2, 0, 1)}
INV = {"ax": (0, 1, 2), "cor": (1, 0, 2), "sag": (1, 2, 0)}


def randomize_bn(net, gen):
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(c, generator=gen) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)


def edt(mask):
    return ndi.distance_transform_edt(mask != 0)


def alpha_map(labels):
    """labels N x 1 x D x H x W (0/1) -> alpha, EDT + 1 per sample."""
    a = np.stack([edt(l[0]) + 1.0 for l in labels])[:, None]
    return torch.tensor(a)


def focal(z, y, alpha, gamma):
    logp = F.log_softmax(z, 1)
    lpt = logp.gather(1, y.long())
    pother = F.softmax(z, 1).gather(1, 1 - y.long())  # 2 classes: 1 - p_t
    return (-alpha * pother ** gamma * lpt).mean()


def adam_step(net, state, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    opt.step()


def net_case(out, name, net, cin):
    g = torch.Generator().manual_seed(1)
    randomize_bn(net, g)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    common.state(net, name + "/init", out)
    x = torch.randn(2, cin, *BLOCK, generator=g)
    if cin == 2:
        x[:, 1] = torch.rand(2, *BLOCK, generator=g)
    labels = np.zeros((2, 1) + BLOCK)
    labels[0, 0, 1:4, 2:7, 3:10] = 1
    labels[0, 0, 2, 4, 6] = 0
    labels[1, 0, 0:3, 4:8, 6:12] = 1
    labels[1, 0, 3, 1, 1] = 1
    alpha = alpha_map(labels)
    y = torch.tensor(labels)
    out[name + "/input"] = x
    out[name + "/labels"] = y
    out[name + "/alpha"] = alpha
    net.eval()
    with torch.no_grad():
        out[name + "/eval_logits"] = net(x)
    net.train()
    xg = x.clone().requires_grad_(True)
    z = net(xg)
    out[name + "/logits"] = z.detach()
    common.state(net, name + "/after_forward", out)
    loss = focal(z, y, alpha, 2.0)
    out[name + "/loss"] = loss.detach()
    loss.backward()
    out[name + "/grad_input"] = xg.grad
    # b4.bias (the ASPP image branch) enters a train-mode BN as a per-channel constant wherever its ReLU is active
    # (or inactive) in every sample, so its gradient there is exactly zero and both libraries hold only rounding
    # noise, which Adam's g / (|g| + eps) would turn into steps of up to lr. Those entries are set to zero (here
    # and, from this fixture, in the C++ test) before the step.
    params = dict(net.named_parameters())
    for n, p in params.items():
        if n.endswith("b4.bias"):
            scale = params[n[:-4] + "weight"].grad.abs().max()
            with torch.no_grad():
                p.grad[p.grad.abs() <= 1e-12 * scale] = 0
    common.grads(net, name + "/grad", out)
    adam_step(net, None)
    common.state(net, name + "/after_step", out)
    with torch.no_grad():
        z2 = net(x)
    out[name + "/logits2"] = z2
    out[name + "/loss2"] = focal(z2, y, alpha, 2.0)
    common.state(net, name + "/after_second", out)
    net.load_state_dict(init)
    return net


def grid(n, b, s):
    o = list(range(0, n - b + 1, s))
    if o[-1] != n - b:
        o.append(n - b)
    return o


def min_extent():
    m = [0, 0, 0]
    for v in PERM:
        for k in range(3):
            m[PERM[v][k]] = max(m[PERM[v][k]], BLOCK[k])
    return m


def stage_predict(net, vol):
    """vol: C x Z x Y x X numpy/torch; returns P (Z, Y, X) numpy, padding at the high end to min_extent."""
    vol = torch.as_tensor(vol)
    c, n = vol.shape[0], list(vol.shape[1:])
    m = min_extent()
    padded = [max(n[a], m[a]) for a in range(3)]
    vp = torch.zeros(c, *padded)
    vp[:, :n[0], :n[1], :n[2]] = vol
    P = torch.zeros(padded)
    for v in ("ax", "cor", "sag"):
        V = vp.permute(0, *[1 + p for p in PERM[v]])
        D, H, W = V.shape[1:]
        acc = torch.zeros(D, H, W)
        cnt = torch.zeros(D, H, W)
        with torch.no_grad():
            for a in grid(D, BLOCK[0], STRIDE[0]):
                for b in grid(H, BLOCK[1], STRIDE[1]):
                    for cc in grid(W, BLOCK[2], STRIDE[2]):
                        blk = V[None, :, a:a + BLOCK[0], b:b + BLOCK[1], cc:cc + BLOCK[2]]
                        p = F.softmax(net(blk), 1)[0, 1]
                        acc[a:a + BLOCK[0], b:b + BLOCK[1], cc:cc + BLOCK[2]] += p
                        cnt[a:a + BLOCK[0], b:b + BLOCK[1], cc:cc + BLOCK[2]] += 1
        P += (acc / cnt).permute(*INV[v])
    return (P / 3)[:n[0], :n[1], :n[2]].numpy()


def roi(mask, margin=MARGIN, structure=None):
    n = mask.shape
    if structure is None:
        structure = np.ones((3, 3, 3))
    lab, cnt = ndi.label(mask, structure=structure)
    if cnt == 0:
        return [0, 0, 0], list(n)
    sizes = np.bincount(lab.ravel())[1:]
    keep = lab == (int(np.argmax(sizes)) + 1)
    idx = np.argwhere(keep)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, n)
    m = min_extent()
    lo, hi = list(map(int, lo)), list(map(int, hi))
    for a in range(3):
        if n[a] < m[a]:
            lo[a], hi[a] = 0, n[a]
            continue
        if hi[a] - lo[a] < m[a]:
            lo[a] = lo[a] - (m[a] - (hi[a] - lo[a])) // 2
            hi[a] = lo[a] + m[a]
            if lo[a] < 0:
                lo[a], hi[a] = 0, m[a]
            elif hi[a] > n[a]:
                lo[a], hi[a] = n[a] - m[a], n[a]
    return lo, hi


def cascade(out, prefix, bunet, acdnet, img, forced=None):
    pc = stage_predict(bunet, img[None])
    lo, hi = roi(pc > 0.5) if forced is None else forced
    crop = np.stack([img, pc])[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    pf = stage_predict(acdnet, crop)
    pfin = np.zeros_like(pc)
    pfin[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 0.5 * pc[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] + 0.5 * pf
    out[prefix + "/p_coarse"] = pc
    out[prefix + "/roi"] = np.array([lo, hi], dtype=np.float64)
    out[prefix + "/p_fine"] = pf
    out[prefix + "/p_final"] = pfin
    out[prefix + "/mask"] = (pfin > 0.5).astype(np.float64)
    return pc


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    out = {}
    for name, net in (("bunet_paper", BUNet()), ("acdnet_paper", ACDNet()), ("bunet_tiny", BUNet(b=2)),
                      ("acdnet_tiny", ACDNet(**TINY_ACD))):
        out["counts/" + name] = np.array(sum(p.numel() for p in net.parameters()), dtype=np.float64)
        out["counts/" + name + "_tensors"] = np.array(len(net.state_dict()), dtype=np.float64)

    torch.manual_seed(0)
    bunet = net_case(out, "bunet", BUNet(b=2), 1)
    torch.manual_seed(0)
    acdnet = net_case(out, "acdnet", ACDNet(**TINY_ACD), 2)

    # §8.2 alpha map
    g = np.zeros((6, 10, 14))
    g[1:4, 2:7, 2:9] = 1
    g[2, 4, 5] = 0
    g[3:6, 6:10, 11:14] = 1
    g[4, 8, 2] = 1
    a = edt(g) + 1
    out["alpha_case/gt"] = g
    out["alpha_case/alpha"] = a
    out["alpha_case/block"] = a[2:6, 2:10, 2:14]
    out["alpha_case/block_from_crop"] = edt(g[2:6, 2:10, 2:14]) + 1

    # §8.3 loss
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, 2, 6, 10, 14, generator=gen) * 2
    y = torch.tensor(g[None, None])
    out["loss_case/logits"] = z
    for gamma in (0, 2):
        zz = z.clone().requires_grad_(True)
        l = focal(zz, y, torch.tensor(a[None, None]), float(gamma))
        l.backward()
        out["loss_case/gamma%d/loss" % gamma] = l.detach()
        out["loss_case/gamma%d/grad" % gamma] = zz.grad
    zz = z.clone().requires_grad_(True)
    ce = F.cross_entropy(zz, y[:, 0].long())
    ce.backward()
    out["loss_case/ce/loss"] = ce.detach()
    out["loss_case/ce/grad"] = zz.grad

    # §8.5 cascade, eval mode, loaded weights
    bunet.eval()
    acdnet.eval()
    img = torch.randn(10, 14, 18, generator=torch.Generator().manual_seed(5)).numpy()
    out["cascade/image"] = img
    # Shift the head bias so that P_c > 0.5 covers part of the volume (random weights rarely do).
    pc0 = stage_predict(bunet, img[None])
    target = np.quantile(pc0, 0.9)
    lo_s, hi_s = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo_s + hi_s)
        with torch.no_grad():
            bunet.head.bias[1] += mid
        frac = (stage_predict(bunet, img[None]) > 0.5).mean()
        with torch.no_grad():
            bunet.head.bias[1] -= mid
        if frac > 0.1:
            hi_s = mid
        else:
            lo_s = mid
        if 0.03 <= frac <= 0.1:
            break
    with torch.no_grad():
        bunet.head.bias[1] += mid
    # The same for ACDNet on the forced crop: P_f > 0.5 on about half of it, so the final mask is not empty.
    pc = stage_predict(bunet, img[None])
    crop = np.stack([img, pc])[:, 2:10, 1:13, 3:15]
    lo_s, hi_s = -20.0, 20.0
    for _ in range(40):
        mid2 = 0.5 * (lo_s + hi_s)
        with torch.no_grad():
            acdnet.head.bias[1] += mid2
        frac = (stage_predict(acdnet, crop) > 0.5).mean()
        with torch.no_grad():
            acdnet.head.bias[1] -= mid2
        if frac > 0.5:
            hi_s = mid2
        else:
            lo_s = mid2
        if 0.4 <= frac <= 0.6:
            break
    with torch.no_grad():
        acdnet.head.bias[1] += mid2
    common.state(bunet, "cascade/bunet", out)
    common.state(acdnet, "cascade/acdnet", out)
    cascade(out, "cascade/auto", bunet, acdnet, img)
    cascade(out, "cascade/forced", bunet, acdnet, img, forced=([2, 1, 3], [10, 13, 15]))
    small = img[:6, :10, :9].copy()
    out["cascade/small_image"] = small
    cascade(out, "cascade/small", bunet, acdnet, small, forced=([0, 0, 0], [6, 10, 9]))
    common.write(outdir, "cscn", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
