"""Linear against torch.nn.Linear: outputs, input/weight/bias gradients for a random upstream gradient.

Each case k is written under case<k>/: in, out, bias, input, state/weight (out, in), state/bias, grad_output,
output, grad_input, grad_weight, grad_bias. Inputs of rank 3-5 are N x in x 1 (x 1 x 1): the reference applies
Linear to the N x in view and views the result back (N x out x 1 ...), as mmnet's Linear does (CBAM's MLPs on
pooled channel descriptors).
"""
import torch

import common

# (input shape, out features, bias)
CASES = [
    ((2, 5), 3, True),
    ((3, 7), 4, False),
    ((2, 12, 1, 1, 1), 3, True),  # CBAM fc1 (MMFNet tiny: 12 -> 3)
    ((2, 3, 1, 1, 1), 12, True),  # CBAM fc2
    ((2, 1), 4, True),  # one input feature
    ((1, 6), 1, True),  # one output feature
    ((4, 9, 1), 5, True),  # rank 3
    ((3, 4, 1, 1), 6, False),  # rank 4
    ((5, 33), 17, True),  # longer rows
]


def generate(outdir):
    common.seed(0)
    out = {"num_cases": len(CASES)}
    for i, (shape, fout, bias) in enumerate(CASES):
        g = "case%d/" % i
        fin = shape[1]
        lin = torch.nn.Linear(fin, fout, bias=bias)
        if bias:
            with torch.no_grad():
                lin.bias.uniform_(-1.0, 1.0)  # larger than the default bound, so bias errors show
        x = torch.randn(*shape, requires_grad=True)
        y = lin(x.reshape(shape[0], fin)).reshape((shape[0], fout) + tuple(shape[2:]))
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[g + "in"] = fin
        out[g + "out"] = fout
        out[g + "bias"] = int(bias)
        out[g + "input"] = x
        common.state(lin, g + "state", out)
        if bias:
            out[g + "grad_bias"] = lin.bias.grad
        out[g + "grad_output"] = dy
        out[g + "output"] = y
        out[g + "grad_input"] = x.grad
        out[g + "grad_weight"] = lin.weight.grad
    common.write(outdir, "linear", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
