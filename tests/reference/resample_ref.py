"""Reference for include/mmnet/data/resample.hpp: a Volume resampled trilinearly and a LabelMap by nearest
neighbour to a target spacing (CSCN spec §4.1: 1 mm isotropic) or onto a given grid.

Semantics: output extent floor(n * s / t + 0.5) (at least 1); "align corners": output voxel o sits at input
coordinate o * (n - 1) / (n' - 1). Trilinear = torch F.interpolate(mode='trilinear', align_corners=True), checked
here to equal scipy.ndimage.zoom(order=1, grid_mode=False). Nearest = input index floor(x + 0.5), clamped.
Per case: input (C x D x H x W, float32 values stored in float64), spacing, target, extent (3), trilinear
(C x D' x H' x W'), labels (D x H x W integer labels), nearest (D' x H' x W').
"""
import math

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

import common

# name, (C, D, H, W), spacing (D, H, W) mm, target spacing
CASES = [
    ("npc", (1, 6, 7, 9), (3.0, 1.0, 1.0), (1.0, 1.0, 1.0)),        # thick axial slices -> 1 mm (the CSCN case)
    ("mixed", (2, 5, 9, 7), (2.5, 0.6, 0.7), (1.0, 1.0, 1.0)),      # up along D, down along H and W, 2 channels
    ("down", (1, 11, 13, 8), (0.5, 0.8, 1.5), (1.0, 1.2, 1.0)),
    ("halves", (1, 3, 5, 6), (1.5, 0.5, 2.5), (1.0, 1.0, 1.0)),     # n s / t ends in .5 (4.5, 2.5, 15): rounds up
    ("size1", (1, 1, 4, 5), (1.0, 1.0, 1.0), (0.5, 2.0, 1.0)),      # a size-1 axis grows; H 4 -> 2
    ("identity", (1, 4, 5, 6), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
]


def extent(shape, spacing, target):
    return tuple(max(1, int(math.floor(n * s / t + 0.5))) for n, s, t in zip(shape, spacing, target))


def coords(n_in, n_out):
    if n_out == 1:
        return np.zeros(1)
    return np.arange(n_out) * ((n_in - 1) / (n_out - 1))


def nearest(labels, out):
    idx = [np.clip(np.floor(coords(n, m) + 0.5).astype(np.int64), 0, n - 1) for n, m in zip(labels.shape, out)]
    return labels[np.ix_(*idx)]


def generate(outdir):
    common.seed(0)
    rng = np.random.default_rng(0)
    out = {}
    for name, shape, spacing, target in CASES:
        x = rng.normal(size=shape).astype(np.float32).astype(np.float64) * 3.0
        x = x.astype(np.float32).astype(np.float64)
        e = extent(shape[1:], spacing, target)
        y = F.interpolate(torch.tensor(x)[None], size=e, mode="trilinear", align_corners=True)[0].numpy()
        if all(n > 1 and m > 1 for n, m in zip(shape[1:], e)):  # scipy's zoom agrees (its factor (n'-1)/(n-1))
            for c in range(shape[0]):
                z = scipy.ndimage.zoom(x[c], [m / n for n, m in zip(shape[1:], e)], order=1, grid_mode=False,
                                       prefilter=False)
                assert z.shape == e and np.allclose(z, y[c], atol=1e-9), name
        labels = rng.integers(0, 3, size=shape[1:]).astype(np.float64)
        out[name + "/input"] = x
        out[name + "/spacing"] = np.array(spacing)
        out[name + "/target"] = np.array(target)
        out[name + "/extent"] = np.array(e, dtype=np.int64)
        out[name + "/trilinear"] = y
        out[name + "/labels"] = labels
        out[name + "/nearest"] = nearest(labels, e)
    common.write(outdir, "resample", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
