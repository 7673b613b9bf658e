"""Exact Euclidean distance transform: scipy.ndimage.distance_transform_edt(mask, sampling=spacing) per volume.

Includes the cascaded-FCN spec §8 item 2 alpha-map volume (Z, Y, X) = (6, 10, 14). Without scipy (it is Debian's
python3-scipy), a brute-force O(n^2) numpy reference gives the same values (the volumes here are small).
"""
import itertools

import numpy as np

import common

try:
    from scipy.ndimage import distance_transform_edt as _scipy_edt
except ImportError:  # pragma: no cover - the fallback is exact too, only slower
    _scipy_edt = None


def brute_edt(mask, spacing):
    mask = np.asarray(mask) != 0
    bg = np.argwhere(~mask).astype(np.float64) * np.asarray(spacing)
    out = np.zeros(mask.shape)
    for idx in np.argwhere(mask):
        d2 = ((bg - idx * np.asarray(spacing)) ** 2).sum(1)
        out[tuple(idx)] = np.sqrt(d2.min())
    return out


def edt(mask, spacing=(1.0, 1.0, 1.0)):
    """EDT of each trailing 3D volume of mask (any leading axes)."""
    mask = np.asarray(mask)
    vols = mask.reshape((-1,) + mask.shape[-3:])
    out = np.stack([(_scipy_edt(v != 0, sampling=spacing) if _scipy_edt is not None else brute_edt(v, spacing))
                    for v in vols])
    return out.reshape(mask.shape)


def spec_volume():
    """Cascaded-FCN spec §8 item 2 ground truth (6, 10, 14)."""
    g = np.zeros((6, 10, 14))
    g[1:4, 2:7, 2:9] = 1
    g[2, 4, 5] = 0
    g[3:6, 6:10, 11:14] = 1
    g[4, 8, 2] = 1
    return g


def generate(outdir):
    common.seed(0)
    rng = np.random.RandomState(0)
    cases = []  # (mask, spacing)
    cases.append((spec_volume(), (1.0, 1.0, 1.0)))
    cases.append((spec_volume(), (2.5, 1.0, 0.7)))
    cases.append(((rng.rand(2, 1, 5, 7, 9) < 0.8).astype(np.float64), (1.0, 1.0, 1.0)))
    cases.append(((rng.rand(2, 2, 4, 6, 3) < 0.7).astype(np.float64), (3.0, 1.0, 1.5)))
    one_bg = np.ones((1, 1, 4, 9, 6))
    one_bg[0, 0, 3, 0, 5] = 0  # a single background voxel in a corner: distances across the whole volume
    cases.append((one_bg, (1.0, 1.0, 1.0)))
    cases.append((one_bg, (0.5, 2.0, 1.25)))
    cases.append((np.zeros((3, 4, 5)), (1.0, 1.0, 1.0)))  # no inside voxel: all 0
    line = np.ones((1, 1, 7))  # size-1 axes
    line[0, 0, 0] = 0
    cases.append((line, (1.0, 1.0, 2.0)))
    if _scipy_edt is not None:  # the brute-force fallback agrees with scipy
        for m, s in cases[:4]:
            vols = np.asarray(m).reshape((-1,) + m.shape[-3:])
            for v in vols:
                assert np.abs(brute_edt(v, s) - _scipy_edt(v != 0, sampling=s)).max() <= 1e-12
    out = {"num_cases": len(cases)}
    for k, (m, s) in enumerate(cases):
        pre = f"case{k}/"
        out.update({pre + "mask": m, pre + "spacing": np.asarray(s), pre + "distance": edt(m, s)})
    common.write(outdir, "distance_transform", out)
