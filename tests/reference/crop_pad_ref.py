"""CropPad against torch.nn.functional.pad(x, (w_begin, w_end, h_begin, h_end, d_begin, d_end),
mode='constant', value=v), negative amounts cropping: outputs and input gradients for padding, cropping and
both on one axis."""
import torch
import torch.nn.functional as F

import common

# name, input shape, begin (d, h, w), end (d, h, w), fill value
CASES = [
    ("pad", (2, 3, 3, 4, 5), (1, 2, 0), (0, 1, 3), 0.0),
    ("crop", (2, 2, 5, 6, 7), (-1, 0, -2), (-2, -1, 0), 0.0),
    ("mixed", (1, 2, 4, 5, 6), (2, -1, 0), (-1, 3, -2), -1.5),
    ("same_axis", (2, 1, 6, 5, 7), (-2, 1, 3), (3, -2, -1), 2.0),
    ("identity", (1, 2, 3, 4, 5), (0, 0, 0), (0, 0, 0), 0.0),
    ("to_one_voxel", (2, 2, 4, 5, 6), (-3, 0, -2), (0, -4, -3), 0.0),
    ("size1_axes", (1, 2, 1, 4, 1), (2, 0, 1), (1, -3, 2), 0.5),
]


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, b, e, value in CASES:
        x = torch.randn(*shape).requires_grad_(True)
        y = F.pad(x, (b[2], e[2], b[1], e[1], b[0], e[0]), mode="constant", value=value)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[name + "/input"] = x
        out[name + "/begin"] = torch.tensor(b, dtype=torch.int64)
        out[name + "/end"] = torch.tensor(e, dtype=torch.int64)
        out[name + "/value"] = value
        out[name + "/output"] = y
        out[name + "/grad_output"] = dy
        out[name + "/grad_input"] = x.grad
    common.write(outdir, "crop_pad", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
