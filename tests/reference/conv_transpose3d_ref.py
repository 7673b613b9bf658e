"""ConvTranspose3d against torch.nn.ConvTranspose3d: outputs, input/weight/bias gradients for a random upstream
gradient.

Each case k is written under case<k>/: the options (in, out, kernel, stride, padding, output_padding, dilation,
bias), input, state/weight (in, out, kD, kH, kW), state/bias (PyTorch's names), grad_output, output, grad_input,
grad_weight, grad_bias. Input axes all differ so that axis mix-ups show.
"""
import torch

import common

# (input shape, out channels, kernel, stride, padding, output_padding, dilation, bias)
CASES = [
    ((2, 3, 3, 4, 5), 4, (2, 2, 2), (2, 2, 2), (0, 0, 0), (0, 0, 0), (1, 1, 1), True),  # k2 s2 (MMFNet decoder)
    ((2, 4, 3, 5, 4), 3, (2, 2, 2), (2, 2, 2), (0, 0, 0), (0, 0, 0), (1, 1, 1), False),  # k2 s2, no bias (MAML)
    ((2, 3, 3, 4, 5), 2, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1), True),  # k3 s2 p1 op1 (doubles)
    ((2, 3, 3, 4, 5), 4, (1, 2, 2), (1, 2, 2), (0, 0, 0), (0, 0, 0), (1, 1, 1), True),  # anisotropic (MMFNet)
    ((2, 3, 3, 4, 5), 2, (1, 2, 2), (1, 2, 2), (0, 0, 0), (0, 0, 0), (1, 1, 1), False),  # the same, no bias
    ((2, 3, 4, 5, 6), 2, (3, 3, 3), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), True),  # k3 s1 p1: same size
    ((1, 2, 3, 4, 5), 3, (3, 3, 3), (2, 2, 2), (0, 0, 0), (0, 0, 0), (1, 1, 1), True),  # overlapping taps
    ((1, 3, 3, 4, 3), 2, (2, 3, 4), (2, 1, 3), (0, 1, 2), (1, 0, 2), (1, 1, 1), True),  # mixed, op < stride
    ((1, 2, 3, 4, 5), 2, (3, 3, 3), (1, 1, 1), (2, 2, 2), (1, 0, 1), (2, 2, 2), True),  # op < dilation only
    ((2, 3, 3, 4, 5), 4, (1, 1, 1), (1, 1, 1), (0, 0, 0), (0, 0, 0), (1, 1, 1), True),  # 1x1x1
    ((1, 2, 3, 4, 3), 3, (2, 2, 2), (3, 3, 3), (0, 0, 0), (2, 1, 0), (1, 1, 1), True),  # stride > kernel: gaps
    ((1, 2, 3, 3, 19), 3, (3, 3, 3), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), True),  # wide rows: SIMD + tail
    ((1, 2, 4, 5, 6), 2, (3, 3, 3), (2, 2, 2), (2, 2, 2), (0, 1, 1), (1, 1, 1), True),  # padding 2 crops
    ((2, 5, 3, 4, 2), 2, (2, 3, 2), (2, 2, 1), (0, 1, 0), (1, 1, 0), (1, 1, 1), False),  # Cin > Cout, no bias
    ((1, 1, 2, 3, 4), 1, (2, 2, 2), (2, 2, 2), (0, 0, 0), (0, 0, 0), (1, 1, 1), True),  # one channel
    ((2, 2, 1, 4, 3), 3, (1, 3, 3), (1, 2, 2), (0, 1, 1), (0, 1, 1), (1, 1, 1), True),  # size-1 D axis
    # wide rows for the cpu register tiles (channel blocks with tails, W tiles with tails, polyphase strides)
    ((1, 3, 2, 3, 36), 10, (2, 2, 2), (2, 2, 2), (0, 0, 0), (0, 0, 0), (1, 1, 1), True),  # k2 s2 decoder, wide
    ((2, 9, 2, 4, 23), 3, (3, 3, 3), (1, 2, 2), (1, 1, 1), (0, 1, 1), (1, 1, 1), True),  # k3 s2 p1 op1, wide
    ((1, 4, 3, 4, 40), 1, (3, 3, 3), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), False),  # one output channel
]


def generate(outdir):
    common.seed(0)
    out = {"num_cases": len(CASES)}
    for i, (shape, cout, k, s, p, op, d, bias) in enumerate(CASES):
        g = "case%d/" % i
        cin = shape[1]
        conv = torch.nn.ConvTranspose3d(cin, cout, k, stride=s, padding=p, output_padding=op, dilation=d, bias=bias)
        if bias:
            with torch.no_grad():
                conv.bias.uniform_(-1.0, 1.0)  # larger than the default bound, so bias errors show
        x = torch.randn(*shape, requires_grad=True)
        y = conv(x)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[g + "in"] = cin
        out[g + "out"] = cout
        out[g + "kernel"] = torch.tensor(k)
        out[g + "stride"] = torch.tensor(s)
        out[g + "padding"] = torch.tensor(p)
        out[g + "output_padding"] = torch.tensor(op)
        out[g + "dilation"] = torch.tensor(d)
        out[g + "bias"] = int(bias)
        out[g + "input"] = x
        common.state(conv, g + "state", out)
        if bias:
            out[g + "grad_bias"] = conv.bias.grad
        out[g + "grad_output"] = dy
        out[g + "output"] = y
        out[g + "grad_input"] = x.grad
        out[g + "grad_weight"] = conv.weight.grad
    common.write(outdir, "conv_transpose3d", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
