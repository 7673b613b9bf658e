"""Per-voxel reductions over the channel axis against PyTorch: torch.mean(x, 1, keepdim=True),
torch.max(x, 1, keepdim=True) (values, indices: the FIRST maximal channel, and its gradient, which goes to that
index only, unlike amax) and the MMFNet std sqrt(x.var(1, unbiased=False, keepdim=True) + eps). Inputs: random,
small integers (ties), an all-zero channel plus voxels where every channel is zero (std = sqrt(eps), gradient 0),
a single channel, and ranks 3 and 2."""
import torch

import common

# name, input shape, kind
CASES = [
    ("randn", (2, 5, 3, 4, 6), "randn"),
    ("ties", (2, 4, 3, 5, 4), "ints"),
    ("zeros", (2, 6, 4, 3, 5), "zeros"),
    ("one_channel", (2, 1, 3, 4, 5), "randn"),
    ("rank3", (2, 3, 7), "ints"),
    ("rank2", (3, 4), "randn"),
]
EPS = [("", 1e-6), ("_eps1e-2", 1e-2)]


def make_input(shape, kind):
    if kind == "randn":
        return torch.randn(*shape)
    if kind == "ints":
        return torch.randint(-2, 3, shape).double()
    if kind == "zeros":  # after a ReLU: channel 2 all zero, and the first half of the voxels zero in every channel
        x = torch.relu(torch.randn(*shape))
        x[:, 2] = 0.0
        flat = x.reshape(shape[0], shape[1], -1)
        flat[:, :, : flat.shape[2] // 2] = 0.0
        return flat.reshape(shape)
    raise ValueError(kind)


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, kind in CASES:
        x0 = make_input(shape, kind)
        out[name + "/input"] = x0
        dy = torch.randn(shape[0], 1, *shape[2:])
        out[name + "/grad_output"] = dy

        x = x0.clone().requires_grad_(True)
        y = torch.mean(x, dim=1, keepdim=True)
        y.backward(dy)
        out[name + "/mean/output"] = y
        out[name + "/mean/grad_input"] = x.grad

        x = x0.clone().requires_grad_(True)
        y, idx = torch.max(x, dim=1, keepdim=True)
        y.backward(dy)
        first = (x0 == y.detach()).double().argmax(dim=1, keepdim=True)  # first maximal channel
        assert torch.equal(idx, first), name
        out[name + "/max/output"] = y
        out[name + "/max/indices"] = idx
        out[name + "/max/grad_input"] = x.grad

        for suffix, eps in EPS:
            x = x0.clone().requires_grad_(True)
            y = torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + eps)
            y.backward(dy)
            out[name + "/std" + suffix + "/output"] = y
            out[name + "/std" + suffix + "/grad_input"] = x.grad
    common.write(outdir, "channel_reduce", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
