"""Channel concatenation against torch.cat(dim=1) and its gradient (the split of grad_output), for 5-D inputs
and a rank-3 case."""
import torch

import common


def generate(outdir):
    common.seed(0)
    out = {}
    for name, n, channels, rest in (("rank5", 2, (1, 3, 2), (3, 4, 5)), ("rank3", 3, (2, 4, 1), (7,))):
        xs = [torch.randn(n, c, *rest).requires_grad_(True) for c in channels]
        y = torch.cat(xs, dim=1)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        for i, x in enumerate(xs):
            out[f"{name}/input{i}"] = x
            out[f"{name}/grad_input{i}"] = x.grad
        out[name + "/output"] = y
        out[name + "/grad_output"] = dy
    common.write(outdir, "concat", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
