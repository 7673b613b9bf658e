"""ConResAtt, ConResNet's context residual module, against the official class (jianpengz/ConResNet,
models/ConResNet.py, ConResAtt with weight_std=True). The class below is the official one with two constants made
parameters: GroupNorm's group count (official 8) and conv_mp_first's input channels (official 4, the image's C_in);
its forward is verbatim except that `.cuda()` is dropped. Every case uses the official constructor, so its
state_dict holds the tensors the forward never uses; they are written too (state/), and the grad/ group lists
only the used parameters (their PyTorch .grad is not None).

Each case k is written under case<k>/: options (in, out, first, res_in, groups), input_seg, input_res,
grad_out_seg, grad_out_res (the loss is sum(O_seg * grad_out_seg) + sum(O_res * grad_out_res)), state/<key> (the
whole official state dict, unused keys included, in registration order), taps F, G, R, T (forward hooks, so the
forward stays verbatim), out_seg, out_res, grad_input_seg, grad_input_res, grad/<key> for every used parameter.
Shapes are non-cubic (D != H != W), batch 2; one case has D = 1 (G = 0), one 1-channel groups, one G = 1, one
the official 8 groups. GroupNorm affine parameters and conv weights are randomised (per-channel offsets and scales,
so that the standardisation's mean and variance both matter). The script asserts that no slice difference
|S[d] - S[d-1]| and no ReLU input lies near 0, so float runs cannot flip a sign or a mask.
"""
import torch
import torch.nn as nn
from torch.nn import functional as F

import common


class Conv3d(nn.Conv3d):
    """Official weight-standardised convolution, verbatim."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=(1, 1, 1), padding=(0, 0, 0), dilation=(1, 1, 1),
                 groups=1, bias=False):
        super(Conv3d, self).__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)

    def forward(self, x):
        weight = self.weight
        weight_mean = weight.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True).mean(dim=4,
                                                                                                                keepdim=True)
        weight = weight - weight_mean
        std = torch.sqrt(torch.var(weight.view(weight.size(0), -1), dim=1) + 1e-12).view(-1, 1, 1, 1, 1)
        weight = weight / std.expand_as(weight)
        return F.conv3d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def conv3x3x3(in_planes, out_planes, kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1), dilation=(1, 1, 1),
              bias=False, weight_std=False):
    if weight_std:
        return Conv3d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                      bias=bias)
    return nn.Conv3d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                     bias=bias)


class ConResAtt(nn.Module):
    """Official ConResAtt; `groups` replaces the hard-coded 8 and `res_in` the hard-coded 4 of conv_mp_first."""

    def __init__(self, in_planes, out_planes, kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1),
                 dilation=(1, 1, 1), bias=False, weight_std=False, first_layer=False, groups=8, res_in=4):
        super(ConResAtt, self).__init__()
        self.weight_std = weight_std
        self.stride = stride
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.first_layer = first_layer

        self.relu = nn.ReLU(inplace=True)

        self.gn_seg = nn.GroupNorm(groups, in_planes)
        self.conv_seg = conv3x3x3(in_planes, out_planes, kernel_size=(kernel_size[0], kernel_size[1], kernel_size[2]),
                                  stride=(stride[0], stride[1], stride[2]), padding=(padding[0], padding[1], padding[2]),
                                  dilation=(dilation[0], dilation[1], dilation[2]), bias=bias, weight_std=self.weight_std)

        self.gn_res = nn.GroupNorm(groups, out_planes)
        self.conv_res = conv3x3x3(out_planes, out_planes, kernel_size=(1, 1, 1), stride=(1, 1, 1), padding=(0, 0, 0),
                                  dilation=(dilation[0], dilation[1], dilation[2]), bias=bias, weight_std=self.weight_std)

        self.gn_res1 = nn.GroupNorm(groups, out_planes)
        self.conv_res1 = conv3x3x3(out_planes, out_planes, kernel_size=(kernel_size[0], kernel_size[1], kernel_size[2]),
                                   stride=(1, 1, 1), padding=(padding[0], padding[1], padding[2]),
                                   dilation=(dilation[0], dilation[1], dilation[2]), bias=bias,
                                   weight_std=self.weight_std)
        self.gn_res2 = nn.GroupNorm(groups, out_planes)
        self.conv_res2 = conv3x3x3(out_planes, out_planes, kernel_size=(kernel_size[0], kernel_size[1], kernel_size[2]),
                                   stride=(1, 1, 1), padding=(padding[0], padding[1], padding[2]),
                                   dilation=(dilation[0], dilation[1], dilation[2]), bias=bias,
                                   weight_std=self.weight_std)

        self.gn_mp = nn.GroupNorm(groups, in_planes)
        self.conv_mp_first = conv3x3x3(res_in, out_planes,
                                       kernel_size=(kernel_size[0], kernel_size[1], kernel_size[2]),
                                       stride=(stride[0], stride[1], stride[2]),
                                       padding=(padding[0], padding[1], padding[2]),
                                       dilation=(dilation[0], dilation[1], dilation[2]), bias=bias,
                                       weight_std=self.weight_std)
        self.conv_mp = conv3x3x3(in_planes, out_planes, kernel_size=(kernel_size[0], kernel_size[1], kernel_size[2]),
                                 stride=(stride[0], stride[1], stride[2]), padding=(padding[0], padding[1], padding[2]),
                                 dilation=(dilation[0], dilation[1], dilation[2]), bias=bias,
                                 weight_std=self.weight_std)

    def _res(self, x):  # bs, channel, D, W, H

        bs, channel, depth, heigt, width = x.shape
        x_copy = torch.zeros_like(x)  # official: .cuda()
        x_copy[:, :, 1:, :, :] = x[:, :, 0: depth - 1, :, :]
        res = x - x_copy
        res[:, :, 0, :, :] = 0
        res = torch.abs(res)
        return res

    def forward(self, input):
        x1, x2 = input
        if self.first_layer:
            x1 = self.gn_seg(x1)
            x1 = self.relu(x1)
            x1 = self.conv_seg(x1)

            res = torch.sigmoid(x1)
            res = self._res(res)
            res = self.conv_res(res)

            x2 = self.conv_mp_first(x2)
            x2 = x2 + res

        else:
            x1 = self.gn_seg(x1)
            x1 = self.relu(x1)
            x1 = self.conv_seg(x1)

            res = torch.sigmoid(x1)
            res = self._res(res)
            res = self.conv_res(res)

            if self.in_planes != self.out_planes:
                x2 = self.gn_mp(x2)
                x2 = self.relu(x2)
                x2 = self.conv_mp(x2)

            x2 = x2 + res

        x2 = self.gn_res1(x2)
        x2 = self.relu(x2)
        x2 = self.conv_res1(x2)

        x1 = x1 * (1 + torch.sigmoid(x2))

        return [x1, x2]


# (in, out, first, res_in, groups, (D, H, W), moderate, note). out >= 3: with out = 2, conv_res (1x1x1) has two
# weights per output channel, its standardised weight is +-1/sqrt(2) whatever the raw one, and the raw weight's
# gradient is rounding noise that no relative tolerance can compare.
CASES = [
    (6, 4, True, 2, 2, (5, 7, 6), True, "first module (seg_x4 kind), I_res with C_in = 2 channels"),
    (6, 3, False, 2, 3, (6, 5, 7), True, "in != out (seg_x2 kind): gn_mp, conv_mp; 1-channel groups in gn_res1"),
    (4, 4, False, 2, 2, (4, 6, 5), True, "in == out (seg_x1 kind): T = I_res"),
    (16, 8, True, 4, 8, (3, 5, 4), False, "first module, the official 8 groups and C_in 4; init-like scale"),
    (4, 4, False, 2, 4, (1, 5, 6), True, "D = 1: G = 0, the context path passes nothing; 1-channel groups"),
    (3, 6, False, 2, 1, (5, 3, 4), True, "in < out, one group"),
]
# A WSConv output has about sqrt(fan_in / 2) times the scale of its ReLU(GN) input (unit-variance weights), so
# with GroupNorm weights near 1 F and O_res reach +-10 and both sigmoids saturate, as in ConResNet at init, and
# the context path and the gate carry tiny gradients. `moderate` cases scale each GroupNorm by 2 / sqrt(fan_in)
# of the convolution after it, so that F and O_res are O(1) and every path is exercised.


def randomise(module, moderate):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("gn_"):
                nxt = {"gn_seg": module.conv_seg, "gn_res1": module.conv_res1, "gn_mp": module.conv_mp,
                       "gn_res": module.conv_res, "gn_res2": module.conv_res2}[name.split(".")[0]]
                scale = 2.0 / nxt.weight[0].numel() ** 0.5 if moderate else 1.0
                if name.endswith("weight"):
                    p.copy_((1.0 + 0.3 * torch.randn(p.shape)) * scale)
                else:
                    p.copy_(0.2 * torch.randn(p.shape) * scale)
            else:
                co = p.shape[0]
                p.mul_(torch.rand(co, 1, 1, 1, 1) * 2.0 + 0.5).add_(torch.randn(co, 1, 1, 1, 1) * 0.3)


def tie_free(f):
    """No |S[d] - S[d-1]| within float rounding of 0 unless both sigmoids are saturated (derivative ~0 there)."""
    s = torch.sigmoid(f)
    if f.shape[2] < 2:
        return True
    diff = (s[:, :, 1:] - s[:, :, :-1]).abs()
    slope = torch.maximum(s[:, :, 1:] * (1 - s[:, :, 1:]), s[:, :, :-1] * (1 - s[:, :, :-1]))
    return bool(((diff > 2e-6) | (slope < 1e-4)).all())


def run_case(cin, cout, first, res_in, groups, dhw, moderate):
    """One module, inputs and output gradients from the current seed: (module, tensors), or None when a slice
    difference or a ReLU input lies within float rounding of 0 (a float run could flip a sign or a mask)."""
    m = ConResAtt(cin, cout, weight_std=True, first_layer=first, groups=groups, res_in=res_in)
    randomise(m, moderate)
    taps, relu_inputs = {}, []
    m.conv_seg.register_forward_hook(lambda mod, inp, o: taps.__setitem__("F", o.detach().clone()))
    m.conv_res.register_forward_hook(lambda mod, inp, o: taps.update(G=inp[0].detach().clone(), R=o.detach().clone()))
    if first:
        m.conv_mp_first.register_forward_hook(lambda mod, inp, o: taps.__setitem__("T", o.detach().clone()))
    elif cin != cout:
        m.conv_mp.register_forward_hook(lambda mod, inp, o: taps.__setitem__("T", o.detach().clone()))
    for gn in (m.gn_seg, m.gn_mp, m.gn_res1):  # the ReLUs' inputs
        gn.register_forward_hook(lambda mod, inp, o: relu_inputs.append(o.detach().clone()))

    n = 2
    x_seg = torch.randn(n, cin, *dhw, requires_grad=True)
    x_res = (torch.rand(n, res_in, *dhw) if first else torch.randn(n, cin, *dhw)).requires_grad_(True)
    o_seg, o_res = m([x_seg, x_res])
    if "T" not in taps:
        taps["T"] = x_res.detach().clone()
    if not tie_free(taps["F"]) or any(r.abs().min() <= 2e-6 for r in relu_inputs):
        return None
    assert o_seg.shape == (n, cout) + dhw and o_res.shape == o_seg.shape
    dy_seg, dy_res = torch.randn(*o_seg.shape), torch.randn(*o_res.shape)
    (o_seg * dy_seg).sum().add((o_res * dy_res).sum()).backward()
    t = dict(input_seg=x_seg, input_res=x_res, grad_out_seg=dy_seg, grad_out_res=dy_res, out_seg=o_seg, out_res=o_res,
             grad_input_seg=x_seg.grad, grad_input_res=x_res.grad, **taps)
    return m, t


def generate(outdir):
    out = {"num_cases": len(CASES)}
    for i, (cin, cout, first, res_in, groups, dhw, moderate, _note) in enumerate(CASES):
        g = "case%d/" % i
        for attempt in range(20):  # the first tie-free seed of the case, so cases do not depend on each other
            common.seed(1000 * i + attempt)
            r = run_case(cin, cout, first, res_in, groups, dhw, moderate)
            if r is not None:
                break
        assert r is not None, g
        m, t = r
        out[g + "in"], out[g + "out"], out[g + "first"] = cin, cout, int(first)
        out[g + "res_in"], out[g + "groups"] = res_in, groups
        for k in ("input_seg", "input_res", "grad_out_seg", "grad_out_res"):
            out[g + k] = t[k]
        common.state(m, g + "state", out)  # the whole official state dict, unused tensors included
        for k in ("F", "G", "R", "T", "out_seg", "out_res", "grad_input_seg", "grad_input_res"):
            out[g + k] = t[k]
        common.grads(m, g + "grad", out)  # used parameters only: the unused ones have grad None
    common.write(outdir, "context_residual", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
