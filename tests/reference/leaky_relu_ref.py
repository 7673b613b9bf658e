"""LeakyReLU against torch.nn.LeakyReLU for the default slope 0.01 and slopes 0.2, 0 and -0.5: outputs and input
gradients, with exact zeros in the input (PyTorch's gradient there is the slope)."""
import torch

import common


def generate(outdir):
    common.seed(0)
    x = (torch.randn(2, 3, 4, 5, 6) * 3).float().double()
    x[0, 0, 0, 0, :4] = 0.0
    x[1, 2, 3, 4, :2] = torch.tensor([50.0, -50.0])
    dy = torch.randn(2, 3, 4, 5, 6).float().double()
    out = {"input": x, "grad_output": dy}
    for name, slope in (("default", None), ("slope02", 0.2), ("slope0", 0.0), ("negative", -0.5)):
        mod = torch.nn.LeakyReLU() if slope is None else torch.nn.LeakyReLU(slope)
        xi = x.clone().requires_grad_(True)
        y = mod(xi)
        y.backward(dy)
        out[name + "/output"] = y
        out[name + "/grad_input"] = xi.grad
    common.write(outdir, "leaky_relu", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
