"""InstanceNorm3d against torch.nn.InstanceNorm3d (track_running_stats=False): outputs, input gradients and affine
parameter gradients for several shapes, affine and not, tiny volumes (1x1x2, 1x2x1), constant channels (variance
0), a shifted input, a volume longer than one reduction chunk (4096 values), and parameter gradients accumulated
over two backward calls. Every tensor is rounded to float32 first, so the float tests get the very same inputs."""
import torch

import common


def f32(t):
    return t.float().double()


def run_case(out, prefix, shape, seed, affine=True, eps=1e-5, make_input=None, twice=False):
    common.seed(seed)
    c = shape[1]
    m = torch.nn.InstanceNorm3d(c, eps=eps, affine=affine)
    if affine:
        with torch.no_grad():
            m.weight.copy_(f32(torch.rand(c) + 0.5))
            m.bias.copy_(f32(torch.rand(c) - 0.5))
    common.state(m, prefix + "/state", out)
    calls = 2 if twice else 1
    for k in range(calls):
        x = f32(make_input(shape) if make_input and k == 0 else torch.randn(*shape) * 2 + 0.5).requires_grad_(True)
        dy = f32(torch.randn(*shape))
        y = m(x)
        y.backward(dy)
        tag = prefix if k == 0 else prefix + "/second"
        out[tag + "/input"] = x
        out[tag + "/output"] = y
        out[tag + "/grad_output"] = dy
        out[tag + "/grad_input"] = x.grad
        common.grads(m, tag + "/grad", out)


def constant_channels(shape):
    x = torch.randn(*shape)
    x[0, 0] = 0.5  # variance 0: output = bias, gradient = weight / sqrt(eps) * (dy - mean(dy))
    x[1, 2] = -3.0
    x[1, 1] = 0.0
    return x


def narrow(shape):
    # With two values per statistic, xhat is +-d / sqrt(d^2 + eps) (d the half distance) and the input gradient is
    # eps / (d^2 + eps) times the size of its terms: with d ~ 1 it is a 1e-5 remainder of a cancellation that
    # PyTorch itself gets only to ~3e-10. A spread comparable to sqrt(eps) keeps it well conditioned.
    return torch.randn(*shape) * 0.004 + 0.3


def shifted(shape):
    return torch.randn(*shape) * 0.01 + 100.0  # small spread on a large mean


def generate(outdir):
    out = {}
    run_case(out, "affine", (2, 3, 4, 5, 6), 0, twice=True)
    run_case(out, "plain", (2, 4, 3, 5, 7), 1, affine=False)
    run_case(out, "tiny_w", (1, 2, 1, 1, 2), 2, make_input=narrow)
    run_case(out, "tiny_h", (2, 3, 1, 2, 1), 3, make_input=narrow)
    run_case(out, "constant", (2, 3, 2, 3, 4), 4, make_input=constant_channels)
    run_case(out, "shifted_eps", (2, 2, 3, 4, 5), 5, eps=1e-3, make_input=shifted)
    run_case(out, "chunked", (1, 2, 16, 17, 18), 6)
    common.write(outdir, "instance_norm3d", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
