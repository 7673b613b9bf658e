"""WSConv3d against ConResNet's weight-standardised Conv3d (jianpengz/ConResNet, models/ConResNet.py, class
Conv3d; its forward is copied below): outputs and input/raw-weight/bias gradients, i.e. autograd through the
standardisation (mean over (in, kD, kH, kW) per output channel, unbiased variance, +1e-12 inside the sqrt).

Each case k is written under case<k>/: the options (in, out, kernel, stride, padding, dilation, bias), input,
state/weight (the raw weight), state/bias, w_hat (the standardised weight), grad_output, output, grad_input,
grad_weight (w.r.t. the raw weight), grad_bias. Raw weights get a per-channel offset and scale so that the mean
and the variance both matter.
"""
import torch
import torch.nn.functional as F

import common


class WSConv3d(torch.nn.Conv3d):
    """The official class (bias default aside), forward verbatim."""

    def standardised(self):
        weight = self.weight
        weight_mean = weight.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True).mean(
            dim=4, keepdim=True)
        weight = weight - weight_mean
        std = torch.sqrt(torch.var(weight.view(weight.size(0), -1), dim=1) + 1e-12).view(-1, 1, 1, 1, 1)
        return weight / std.expand_as(weight)

    def forward(self, x):
        return F.conv3d(x, self.standardised(), self.bias, self.stride, self.padding, self.dilation, self.groups)


# (input shape, out channels, kernel, stride, padding, dilation, bias, zero_channel)
CASES = [
    ((2, 3, 5, 7, 6), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), False, False),  # ResBlock conv
    ((2, 3, 7, 9, 8), 4, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), False, False),  # stride-2 down conv
    ((1, 3, 6, 7, 9), 3, (3, 3, 3), (1, 1, 1), (2, 2, 2), (2, 2, 2), False, False),  # layer4: dilation 2
    ((2, 4, 3, 5, 4), 4, (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), False, False),  # conv_res: 1x1x1
    ((2, 3, 5, 7, 6), 2, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), True, False),  # with bias
    ((1, 2, 5, 6, 7), 3, (1, 3, 3), (1, 2, 1), (0, 1, 1), (1, 1, 1), True, False),  # anisotropic
    ((2, 3, 3, 4, 5), 2, (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), False, False),  # n = 3 values per channel (*)
    ((1, 3, 4, 5, 19), 5, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), False, False),  # wide rows: SIMD + tail
    ((2, 2, 4, 5, 6), 3, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), False, True),  # an all-zero channel
]
# (*) not n = 2: with two values per channel W^ is +-1/sqrt(2) whatever W is, so dL/dW is O(1e-12 / s^3) times
# rounding noise, and no fixed relative tolerance can compare it (the C++ gradient check covers n = 2).


def generate(outdir):
    common.seed(0)
    out = {"num_cases": len(CASES)}
    for i, (shape, cout, k, s, p, d, bias, zero_channel) in enumerate(CASES):
        g = "case%d/" % i
        cin = shape[1]
        conv = WSConv3d(cin, cout, k, stride=s, padding=p, dilation=d, bias=bias)
        with torch.no_grad():
            scale = torch.rand(cout, 1, 1, 1, 1) * 2.0 + 0.5
            offset = torch.randn(cout, 1, 1, 1, 1) * 0.3
            conv.weight.mul_(scale).add_(offset)
            if zero_channel:
                conv.weight[1].zero_()  # s = sqrt(1e-12): W^ = 0, dL/dW = (g - mean g) * 1e6
            if bias:
                conv.bias.uniform_(-1.0, 1.0)
        x = torch.randn(*shape, requires_grad=True)
        y = conv(x)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[g + "in"] = cin
        out[g + "out"] = cout
        out[g + "kernel"] = torch.tensor(k)
        out[g + "stride"] = torch.tensor(s)
        out[g + "padding"] = torch.tensor(p)
        out[g + "dilation"] = torch.tensor(d)
        out[g + "bias"] = int(bias)
        out[g + "input"] = x
        common.state(conv, g + "state", out)
        out[g + "w_hat"] = conv.standardised()
        if bias:
            out[g + "grad_bias"] = conv.bias.grad
        out[g + "grad_output"] = dy
        out[g + "output"] = y
        out[g + "grad_input"] = x.grad
        out[g + "grad_weight"] = conv.weight.grad
    common.write(outdir, "ws_conv3d", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
