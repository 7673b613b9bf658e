"""Softmax and LogSoftmax against torch.nn.Softmax / torch.nn.LogSoftmax: the channel axis of rank 2, 3 and 5
inputs, other axes (dim 2, dim -1), one channel, ties, and logits of +-1000 (stability): outputs and input
gradients. Every tensor is rounded to float32 first, so the float tests get the very same inputs."""
import torch

import common


def f32(t):
    return t.float().double()


def run_case(out, prefix, x, dim, seed):
    common.seed(seed)
    x = f32(x)
    dy = f32(torch.randn(*x.shape))
    out[prefix + "/input"] = x
    out[prefix + "/grad_output"] = dy
    out[prefix + "/dim"] = dim
    for name, mod in (("softmax", torch.nn.Softmax(dim=dim)), ("log_softmax", torch.nn.LogSoftmax(dim=dim))):
        xi = x.clone().requires_grad_(True)
        y = mod(xi)
        y.backward(dy)
        out[f"{prefix}/{name}/output"] = y
        out[f"{prefix}/{name}/grad_input"] = xi.grad


def generate(outdir):
    out = {}
    common.seed(100)
    run_case(out, "ncdhw", torch.randn(2, 4, 3, 5, 6) * 3, 1, 0)
    run_case(out, "rank2", torch.randn(3, 5) * 2, 1, 1)
    run_case(out, "rank3", torch.randn(2, 3, 7), 1, 2)
    run_case(out, "dim2", torch.randn(2, 3, 4, 5), 2, 3)
    run_case(out, "dim_last", torch.randn(2, 3, 4, 5, 6), -1, 4)
    run_case(out, "one_channel", torch.randn(2, 1, 3, 4, 2), 1, 5)
    ties = torch.randn(2, 3, 2, 3, 4)
    ties[0, :, 0, 0, 0] = 1.5  # all channels equal: uniform probabilities
    ties[1, 0:2, 1, 2, 3] = 4.0  # two equal maxima
    run_case(out, "ties", ties, 1, 6)
    large = torch.randn(2, 3, 2, 3, 4) * 1000
    large[0, :, 0, 0, 0] = torch.tensor([1000.0, -1000.0, 0.0])
    large[1, :, 1, 2, 3] = torch.tensor([-1000.0, -1000.0, -999.0])
    large[1, :, 0, 1, 2] = torch.tensor([1000.0, 1000.0, 1000.0])
    run_case(out, "large", large, 1, 7)
    common.write(outdir, "softmax", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
