"""torch.nn.init (torch 1.13): fan_in / fan_out, calculate_gain, and the std of kaiming_* / xavier_* as torch
computes them (the C++ test checks sample statistics of large draws against these).

shapes/<k>: a weight shape; fans/<k>: (fan_in, fan_out) from nn.init._calculate_fan_in_and_fan_out.
gain/<case>: calculate_gain; kaiming/<k>/<case>: gain / sqrt(fan) with torch's _calculate_correct_fan;
xavier/<k>/<gain>: gain * sqrt(2 / (fan_in + fan_out)).
"""
import math

import numpy as np
import torch
from torch.nn import init

import common

SHAPES = {
    "conv3d": (16, 4, 1, 3, 3),          # Conv3d(4, 16, (1, 3, 3))
    "conv3d_odd": (5, 3, 3, 5, 7),       # Conv3d(3, 5, (3, 5, 7))
    "conv_transpose3d": (8, 3, 2, 2, 2),  # ConvTranspose3d(8, 3, 2): (in, out, k, k, k)
    "linear": (5, 7),                    # Linear(7, 5)
    "conv1d": (6, 2, 9),
    "matrix_wide": (3, 40),
}
GAINS = [("linear", None), ("conv3d", None), ("conv_transpose3d", None), ("sigmoid", None), ("tanh", None),
         ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0.0), ("leaky_relu", math.sqrt(5)),
         ("selu", None), ("conv1d", None), ("conv2d", None), ("conv_transpose1d", None), ("conv_transpose2d", None)]
KAIMING = [(0.0, "fan_in", "leaky_relu"), (0.01, "fan_in", "leaky_relu"), (math.sqrt(5), "fan_in", "leaky_relu"),
           (0.0, "fan_out", "relu"), (0.2, "fan_out", "leaky_relu"), (0.0, "fan_in", "linear"),
           (0.0, "fan_out", "tanh"), (0.0, "fan_in", "selu")]
XAVIER_GAINS = [1.0, math.sqrt(2.0), 5.0 / 3]


def kaiming_name(a, mode, nl):
    return f"a{a:.4f}_{mode}_{nl}"


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    out = {}
    for k, s in SHAPES.items():
        w = torch.empty(s)
        fi, fo = init._calculate_fan_in_and_fan_out(w)
        out[f"shapes/{k}"] = np.asarray(s, dtype=np.int64)
        out[f"fans/{k}"] = np.asarray([fi, fo], dtype=np.int64)
        for a, mode, nl in KAIMING:
            fan = init._calculate_correct_fan(w, mode)
            out[f"kaiming/{k}/{kaiming_name(a, mode, nl)}"] = init.calculate_gain(nl, a) / math.sqrt(fan)
        for g in XAVIER_GAINS:
            out[f"xavier/{k}/{g:.4f}"] = g * math.sqrt(2.0 / float(fi + fo))
    for i, (nl, p) in enumerate(GAINS):
        out[f"gain/{i}/value"] = init.calculate_gain(nl, p)
        out[f"gain/{i}/param"] = -1.0 if p is None else p
    common.write(outdir, "init", out)
