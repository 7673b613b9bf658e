"""MMFNet (include/mmnet/mmfnet.hpp) against a PyTorch MMFNet written from shared/specs/mmfnet.md §2 (no official
code exists; every [R] choice of §7 is followed). Module attribute names make state_dict() equal §8's table, in
its order: encoders.{m}.block{l}.{conv1,bn1,conv2,bn2}, encoders.{m}.bottleneck.{conv,bn},
fusions.{l}.{channel_attention.mlp_{avg,max,std}.fc{1,2}, spatial_attention.conv, rfblock.{reduce,conv1,bn,conv2}},
decoder.{L..1}.{up,conv,bn}, head.

Writes mmfnet.h5:
  tiny/...        §8 points 1-6 on mmfnet-tiny (M 3, levels (4, 8), bottleneck 8, r 4): the state dict after
                  seed 0 default init and BN gamma ~ U(0.5, 1.5), beta ~ U(-0.1, 0.1); x ~ N(0, 1) 2x3x4x12x8,
                  labels ~ Bernoulli(0.3); per level Wc, Ws, Fc, Fs, Fr, Ffused; decoder outputs; logits, prob,
                  the soft Dice loss (§3: eps 1, one batch-global ratio); every parameter gradient and the input
                  gradient; after 3 Adam steps (lr 1e-3) every parameter and BN buffer, and the eval-mode prob.
                  steps/ is the literal procedure; steps_exact/ sets the gradients of the conv biases that feed a
                  BatchNorm (exactly zero in exact arithmetic) to zero before each step, because Adam's
                  g / (|g| + eps) turns float rounding noise in them into steps of up to lr.
  fusion/...      §8 point 7: the level-1 fusion block alone on a hand-made Fori with an all-zero channel and
                  voxels where every channel is zero; Ffused, the taps, dL/dFori and every parameter gradient.
  <variant>/...   §8 point 9 and §2.6: base (shared MLP, avg+max), two_modality (M 2, r 3), merge (merging
                  encoders' features), plus multi_mlp, std_channel, std_spatial, single (one modality) and
                  input_level (one encoder on all M channels): state, input, labels, prob, loss, gradients.
  counts/<preset> trainable parameter counts of the paper-size presets.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

import common

POOLS = ("avg", "max", "std")
AM = ("avg", "max")


def config(m=3, levels=(8, 16, 32, 64), bottleneck=64, r=12, cpools=POOLS, spools=POOLS, shared=False, eps=1e-6,
           fusion="cbam_rfblock", input_level=False):
    return dict(m=m, levels=tuple(levels), bottleneck=bottleneck, r=r, cpools=tuple(cpools), spools=tuple(spools),
                shared=shared, eps=eps, fusion=fusion, input_level=input_level)


def tiny(**kw):
    base = dict(levels=(4, 8), bottleneck=8, r=4)
    base.update(kw)
    return config(**base)


class EncoderBlock(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, c, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(c)
        self.conv2 = nn.Conv3d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(c)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class Bottleneck(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.conv = nn.Conv3d(cin, c, 3, padding=1)
        self.bn = nn.BatchNorm3d(c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, cin, levels, bottleneck):
        super().__init__()
        self.levels = len(levels)
        for l, c in enumerate(levels, 1):
            setattr(self, f"block{l}", EncoderBlock(cin, c))
            cin = c
        self.bottleneck = Bottleneck(cin, bottleneck)

    def forward(self, x):
        skips = []
        for l in range(1, self.levels + 1):
            x = getattr(self, f"block{l}")(x)
            skips.append(x)  # pre-pool feature, the level-l skip
            x = F.max_pool3d(x, 2, 2)
        return skips, self.bottleneck(x)


class MLP(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, c)

    def forward(self, v):
        return self.fc2(F.relu(self.fc1(v)))


def global_pool(x, kind, eps):
    n, c = x.shape[:2]
    if kind == "avg":
        v = F.adaptive_avg_pool3d(x, 1)
    elif kind == "max":
        v = F.adaptive_max_pool3d(x, 1)  # first index on ties
    else:
        v = torch.sqrt(x.var(dim=(2, 3, 4), unbiased=False, keepdim=True) + eps)
    return v.view(n, c)


def channel_reduce(x, kind, eps):
    if kind == "avg":
        return x.mean(1, keepdim=True)
    if kind == "max":
        return torch.max(x, dim=1, keepdim=True)[0]  # not amax: the whole tie gradient goes to the first index
    return torch.sqrt(x.var(1, unbiased=False, keepdim=True) + eps)


class ChannelAttention(nn.Module):
    def __init__(self, c, hidden, pools, shared, eps):
        super().__init__()
        self.pools, self.shared, self.eps = pools, shared, eps
        if shared:
            self.mlp = MLP(c, hidden)
        else:
            for p in pools:
                setattr(self, "mlp_" + p, MLP(c, hidden))

    def forward(self, x):
        n, c = x.shape[:2]
        z = 0
        for p in self.pools:
            z = z + (self.mlp if self.shared else getattr(self, "mlp_" + p))(global_pool(x, p, self.eps))
        return torch.sigmoid(z).view(n, c, 1, 1, 1)  # Wc: one sigmoid after the sum


class SpatialAttention(nn.Module):
    def __init__(self, pools, eps):
        super().__init__()
        self.pools, self.eps = pools, eps
        self.conv = nn.Conv3d(len(pools), 1, 3, padding=1)

    def forward(self, fc):
        return torch.sigmoid(self.conv(torch.cat([channel_reduce(fc, p, self.eps) for p in self.pools], 1)))


class RFBlock(nn.Module):
    def __init__(self, mc, c):
        super().__init__()
        self.reduce = nn.Conv3d(mc, c, 1)
        self.conv1 = nn.Conv3d(c, c, (1, 3, 3), padding=(0, 1, 1))
        self.bn = nn.BatchNorm3d(c)
        self.conv2 = nn.Conv3d(c, c, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x):
        fr = self.reduce(x)
        return fr, fr + self.conv2(F.relu(self.bn(self.conv1(fr))))


class FusionBlock(nn.Module):
    def __init__(self, m, c, cfg):
        super().__init__()
        mc = m * c
        hidden = max(1, mc // cfg["r"])
        self.channel_attention = ChannelAttention(mc, hidden, cfg["cpools"], cfg["shared"], cfg["eps"])
        self.spatial_attention = SpatialAttention(cfg["spools"], cfg["eps"])
        self.rfblock = RFBlock(mc, c)

    def forward(self, fori):
        wc = self.channel_attention(fori)
        fc = wc * fori
        ws = self.spatial_attention(fc)
        fs = ws * fc
        fr, ffused = self.rfblock(fori + fs)
        return ffused, dict(Wc=wc, Ws=ws, Fc=fc, Fs=fs, Fr=fr, Ffused=ffused)


class DecoderBlock(nn.Module):
    def __init__(self, cin, c, cskip):
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, c, 2, stride=2)
        self.conv = nn.Conv3d(cskip + c, c, 3, padding=1)
        self.bn = nn.BatchNorm3d(c)

    def forward(self, below, skip):
        return F.relu(self.bn(self.conv(torch.cat([skip, self.up(below)], 1))))  # [skip, up] (A5)


class MMFNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        m, levels = cfg["m"], cfg["levels"]
        n_enc = 1 if cfg["input_level"] else m
        cin = m if cfg["input_level"] else 1
        self.encoders = nn.ModuleList([Encoder(cin, levels, cfg["bottleneck"]) for _ in range(n_enc)])
        if cfg["fusion"] == "cbam_rfblock":
            self.fusions = nn.ModuleDict({str(l): FusionBlock(n_enc, c, cfg) for l, c in enumerate(levels, 1)})
            skip_ch = list(levels)
        else:
            skip_ch = [n_enc * c for c in levels]  # merging: the plain concat of the skips
        dec = {}
        below = n_enc * cfg["bottleneck"]
        for l in range(len(levels), 0, -1):  # decoder.L first (state_dict order L..1)
            dec[str(l)] = DecoderBlock(below, levels[l - 1], skip_ch[l - 1])
            below = levels[l - 1]
        self.decoder = nn.ModuleDict(dec)
        self.head = nn.Conv3d(levels[0], 1, 1)

    def forward(self, x):
        cfg = self.cfg
        xs = [x] if cfg["input_level"] else list(torch.split(x, 1, dim=1))
        outs = [enc(xi) for enc, xi in zip(self.encoders, xs)]
        taps = {}
        fused = []
        for l in range(1, len(cfg["levels"]) + 1):
            fori = torch.cat([o[0][l - 1] for o in outs], 1)
            if cfg["fusion"] == "cbam_rfblock":
                f, t = self.fusions[str(l)](fori)
                for k, v in t.items():
                    taps[f"level{l}/{k}"] = v
            else:
                f = fori
            fused.append(f)
        h = torch.cat([o[1] for o in outs], 1)
        for l in range(len(cfg["levels"]), 0, -1):
            h = self.decoder[str(l)](h, fused[l - 1])
            taps[f"decoder{l}/output"] = h
        logits = self.head(h)
        return logits, taps


def randomize_bn(net):
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm3d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)


def soft_dice(p, g, eps=1.0):
    return 1 - (2 * (p * g).sum() + eps) / (p.sum() + g.sum() + eps)


def bias_before_bn(name):
    """Conv biases whose output feeds a BatchNorm: their gradient is exactly zero in exact arithmetic."""
    parts = name.split(".")
    if parts[-1] != "bias":
        return False
    local = ".".join(parts[-3:-1]) if len(parts) >= 3 else ""
    return (parts[0] == "encoders" and parts[-2] in ("conv1", "conv2") and parts[-3].startswith("block")) or \
        local == "bottleneck.conv" or local == "rfblock.conv1" or (parts[0] == "decoder" and parts[-2] == "conv")


def detached(d):
    return {k: v.detach().clone() for k, v in d.items()}


def forward_backward(net, x0, g, prefix, out, taps_too=True):
    x = x0.clone().requires_grad_(True)
    logits, taps = net(x)
    prob = torch.sigmoid(logits)
    loss = soft_dice(prob, g)
    if taps_too:
        for k, v in detached(taps).items():
            out[f"{prefix}/{k}"] = v
    out[prefix + "/logits"] = logits.detach().clone()
    out[prefix + "/prob"] = prob.detach().clone()
    out[prefix + "/loss"] = loss.detach().clone()
    loss.backward()
    out[prefix + "/grad_input"] = x.grad.detach().clone()
    common.grads(net, prefix + "/grad", out)


def adam_steps(net, x, g, prefix, out, exact_zero):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(3):
        opt.zero_grad()
        logits, _ = net(x)
        loss = soft_dice(torch.sigmoid(logits), g)
        loss.backward()
        out[f"{prefix}/loss/{step}"] = loss.detach().clone()
        if exact_zero:
            for name, p in net.named_parameters():
                if bias_before_bn(name):
                    p.grad.zero_()
        opt.step()
    common.state(net, prefix + "/final", out)
    net.eval()
    with torch.no_grad():
        out[prefix + "/eval_prob"] = torch.sigmoid(net(x)[0])
    net.train()


def tiny_case(out):
    common.seed(0)
    net = MMFNet(tiny())
    randomize_bn(net)
    x = torch.randn(2, 3, 4, 12, 8)
    g = (torch.rand(2, 1, 4, 12, 8) < 0.3).double()
    out["tiny/input"] = x
    out["tiny/labels"] = g
    common.state(net, "tiny/init", out)
    exact = copy.deepcopy(net)
    # Step 1 of the literal procedure is the forward/backward compared term by term.
    forward_backward(net, x, g, "tiny", out)
    net.zero_grad()
    # Recreate the model so the Adam run starts from the initial state (the forward above moved the running stats).
    fresh = copy.deepcopy(exact)
    adam_steps(fresh, x, g, "tiny/steps", out, exact_zero=False)
    adam_steps(exact, x, g, "tiny/steps_exact", out, exact_zero=True)


def fusion_case(out):
    common.seed(5)
    cfg = tiny()
    block = FusionBlock(3, 4, cfg)
    randomize_bn(block)
    shape = (2, 12, 4, 12, 8)
    fori = torch.relu(torch.randn(*shape))  # what ReLU outputs look like: many zeros, positive elsewhere
    fori[:, 1] = 0.0  # an all-zero channel: std = sqrt(eps), global max ties
    flat = fori.reshape(2, 12, -1)
    flat[:, :, ::5] = 0.0  # voxels where every channel is zero: channel max ties, channel std = sqrt(eps)
    fori = flat.reshape(shape)
    dy = torch.randn(2, 4, 4, 12, 8)
    out["fusion/input"] = fori
    out["fusion/grad_output"] = dy
    common.state(block, "fusion/state", out)
    x = fori.clone().requires_grad_(True)
    ffused, taps = block(x)
    for k, v in detached(taps).items():
        out["fusion/" + k] = v
    ffused.backward(dy)
    out["fusion/grad_input"] = x.grad.detach().clone()
    common.grads(block, "fusion/grad", out)


VARIANTS = [
    ("base", tiny(cpools=AM, spools=AM, shared=True), 3),
    ("multi_mlp", tiny(cpools=AM, spools=AM), 3),
    ("std_channel", tiny(spools=AM), 3),
    ("std_spatial", tiny(cpools=AM), 3),
    ("two_modality", tiny(m=2, r=3), 2),
    ("merge", tiny(fusion="merge"), 3),
    ("single", tiny(m=1, fusion="merge"), 1),
    ("input_level", tiny(levels=(6, 12), bottleneck=12, fusion="merge", input_level=True), 3),
]

PRESETS = [
    ("paper", config()),
    ("tiny", tiny()),
    ("single", config(m=1, fusion="merge")),
    ("base", config(cpools=AM, spools=AM, shared=True)),
    ("multi_mlp", config(cpools=AM, spools=AM)),
    ("std_channel", config(spools=AM)),
    ("std_spatial", config(cpools=AM)),
    ("two_modality", config(m=2)),
    ("merge", config(fusion="merge")),
    ("input_level", config(levels=(24, 48, 96, 192), bottleneck=192, fusion="merge", input_level=True)),
]


def generate(outdir):
    out = {}
    tiny_case(out)
    fusion_case(out)
    for i, (name, cfg, m) in enumerate(VARIANTS):
        common.seed(10 + i)
        net = MMFNet(cfg)
        randomize_bn(net)
        x = torch.randn(2, m, 4, 12, 8)
        g = (torch.rand(2, 1, 4, 12, 8) < 0.3).double()
        out[name + "/input"] = x
        out[name + "/labels"] = g
        common.state(net, name + "/state", out)
        forward_backward(net, x, g, name, out, taps_too=False)
    for name, cfg in PRESETS:
        out["counts/" + name] = sum(p.numel() for p in MMFNet(cfg).parameters())
    common.write(outdir, "mmfnet", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
