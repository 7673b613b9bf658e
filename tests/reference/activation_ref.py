"""ReLU and Sigmoid against torch.nn: outputs and input gradients for a fixed upstream gradient."""
import torch

import common


def generate(outdir):
    common.seed(0)
    x = torch.randn(2, 3, 4, 5, 6) * 3
    x[0, 0, 0, 0, :3] = 0.0  # ReLU'(0) = 0 in PyTorch
    x[1, 2, 3, 4, :2] = torch.tensor([40.0, -40.0])  # sigmoid saturation without overflow
    dy = torch.randn(2, 3, 4, 5, 6)
    out = {"input": x, "grad_output": dy}
    for name, mod in (("relu", torch.nn.ReLU()), ("sigmoid", torch.nn.Sigmoid())):
        xi = x.clone().requires_grad_(True)
        y = mod(xi)
        y.backward(dy)
        out[name + "/output"] = y
        out[name + "/grad_input"] = xi.grad
    common.write(outdir, "activation", out)
