"""Conv3d against torch.nn.Conv3d: outputs, input/weight/bias gradients for a random upstream gradient.

Each case k is written under case<k>/: the options (in, out, kernel, stride, padding, dilation, bias), input,
state/weight, state/bias (PyTorch's names), grad_output, output, grad_input, grad_weight, grad_bias. Input axes
all differ so that axis mix-ups show; widths span several SIMD batches plus a tail.
"""
import torch

import common

# (input shape, out channels, kernel, stride, padding, dilation, bias)
CASES = [
    ((2, 3, 5, 7, 6), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), True),  # k3 p1
    ((2, 3, 5, 7, 6), 5, (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), True),  # k1 p0
    ((2, 4, 5, 7, 6), 3, (1, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1), True),  # in-plane kernel
    ((2, 3, 5, 7, 6), 4, (3, 3, 1), (1, 1, 1), (1, 1, 0), (1, 1, 1), True),
    ((2, 3, 5, 7, 6), 2, (1, 1, 3), (1, 1, 1), (0, 0, 1), (1, 1, 1), True),
    ((2, 3, 7, 9, 8), 4, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), True),  # stride 2
    ((2, 3, 5, 9, 8), 4, (3, 3, 3), (1, 2, 2), (1, 1, 1), (1, 1, 1), True),  # in-plane stride
    ((1, 3, 6, 7, 9), 4, (3, 3, 3), (1, 1, 1), (2, 2, 2), (2, 2, 2), True),  # dilation 2, "same"
    ((1, 2, 5, 7, 13), 3, (3, 3, 3), (1, 1, 1), (1, 2, 4), (1, 2, 4), True),  # dilation (1,2,4), "same"
    ((2, 5, 4, 6, 7), 2, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), False),  # no bias, Cin > Cout
    ((1, 3, 6, 7, 11), 6, (2, 3, 4), (2, 1, 3), (0, 1, 2), (1, 2, 1), True),  # everything mixed, stride_w 3
    ((2, 3, 5, 6, 7), 4, (3, 3, 3), (1, 1, 1), (0, 0, 0), (1, 1, 1), True),  # valid (no padding)
    ((1, 3, 4, 5, 19), 9, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), True),  # wide rows: batches + tail
    ((2, 3, 3, 4, 5), 2, (1, 1, 1), (1, 1, 1), (1, 2, 1), (1, 1, 1), True),  # padding beyond the kernel
    ((1, 2, 9, 7, 9), 3, (2, 2, 3), (3, 2, 1), (0, 1, 1), (1, 1, 2), True),  # stride 3 leaves inputs unread
    ((1, 1, 9, 10, 12), 1, (3, 3, 3), (2, 2, 1), (2, 1, 3), (2, 1, 3), False),  # one channel in and out
    # wide rows for the cpu register tiles: an 8-channel block plus a tail, several W tiles plus a W tail
    ((1, 3, 3, 5, 70), 10, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), True),
    ((2, 9, 3, 5, 41), 2, (3, 3, 3), (1, 2, 2), (1, 1, 1), (1, 1, 1), True),  # 2-channel block, stride_w 2
    ((1, 4, 3, 6, 64), 3, (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), True),  # unpadded 1x1x1: read in place
    ((1, 2, 4, 5, 50), 1, (3, 3, 3), (1, 1, 3), (1, 1, 2), (1, 1, 2), False),  # 1 channel, stride_w 3, dilation
]


def generate(outdir):
    common.seed(0)
    out = {"num_cases": len(CASES)}
    for i, (shape, cout, k, s, p, d, bias) in enumerate(CASES):
        g = "case%d/" % i
        cin = shape[1]
        conv = torch.nn.Conv3d(cin, cout, k, stride=s, padding=p, dilation=d, bias=bias)
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
        out[g + "dilation"] = torch.tensor(d)
        out[g + "bias"] = int(bias)
        out[g + "input"] = x
        common.state(conv, g + "state", out)  # state/weight, state/bias: PyTorch's names
        if bias:
            out[g + "grad_bias"] = conv.bias.grad
        out[g + "grad_output"] = dy
        out[g + "output"] = y
        out[g + "grad_input"] = x.grad
        out[g + "grad_weight"] = conv.weight.grad
    common.write(outdir, "conv3d", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
