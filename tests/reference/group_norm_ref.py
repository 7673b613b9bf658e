"""GroupNorm against torch.nn.GroupNorm: outputs, input gradients and affine parameter gradients for several group
counts (G = 1, 1 < G < C, G = C), affine and not, rank 2, 3 and 5 inputs, tiny volumes (1x1x2, 1x2x1), constant
groups (variance 0), eps 1e-3, a group longer than one reduction chunk (4096 values), and parameter gradients
accumulated over two backward calls. Every tensor is rounded to float32 first, so the float tests get the very
same inputs."""
import torch

import common


def f32(t):
    return t.float().double()


def run_case(out, prefix, groups, shape, seed, affine=True, eps=1e-5, make_input=None, twice=False):
    common.seed(seed)
    c = shape[1]
    m = torch.nn.GroupNorm(groups, c, eps=eps, affine=affine)
    if affine:
        with torch.no_grad():
            m.weight.copy_(f32(torch.rand(c) + 0.5))
            m.bias.copy_(f32(torch.rand(c) - 0.5))
    common.state(m, prefix + "/state", out)
    calls = 2 if twice else 1
    for k in range(calls):
        x = f32(make_input(shape) if make_input and k == 0 else torch.randn(*shape) * 2 - 0.5).requires_grad_(True)
        dy = f32(torch.randn(*shape))
        y = m(x)
        y.backward(dy)
        tag = prefix if k == 0 else prefix + "/second"
        out[tag + "/input"] = x
        out[tag + "/output"] = y
        out[tag + "/grad_output"] = dy
        out[tag + "/grad_input"] = x.grad
        common.grads(m, tag + "/grad", out)


def constant_groups(shape):
    x = torch.randn(*shape)
    x[0, 0:2] = 0.25  # group 0 of sample 0 constant
    x[1, 4:6] = -2.0  # group 2 of sample 1 constant
    return x


def narrow(shape):
    # With two values per statistic, xhat is +-d / sqrt(d^2 + eps) (d the half distance) and the input gradient is
    # eps / (d^2 + eps) times the size of its terms: with d ~ 1 it is a 1e-5 remainder of a cancellation that
    # PyTorch itself gets only to ~3e-10. A spread comparable to sqrt(eps) keeps it well conditioned.
    return torch.randn(*shape) * 0.004 + 0.3


def generate(outdir):
    out = {}
    run_case(out, "g2c6", 2, (2, 6, 3, 4, 5), 0, twice=True)
    run_case(out, "g1c4", 1, (2, 4, 2, 3, 5), 1)
    run_case(out, "g4c4", 4, (3, 4, 2, 5, 3), 2)
    run_case(out, "plain", 3, (2, 6, 4, 3, 2), 3, affine=False)
    run_case(out, "tiny_w", 2, (1, 2, 1, 1, 2), 4, make_input=narrow)
    run_case(out, "tiny_h", 1, (2, 3, 1, 2, 1), 5)
    run_case(out, "constant", 3, (2, 6, 2, 3, 4), 6, make_input=constant_groups)
    run_case(out, "eps", 2, (2, 4, 3, 2, 5), 7, eps=1e-3)
    run_case(out, "rank3", 2, (2, 4, 7), 8)
    run_case(out, "rank2", 2, (3, 4), 9)
    run_case(out, "chunked", 2, (1, 4, 12, 13, 14), 10)
    common.write(outdir, "group_norm", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
