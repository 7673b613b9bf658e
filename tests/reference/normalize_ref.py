"""Reference for include/mmnet/data/normalize.hpp: Otsu thresholds and intensity normalisation.

skimage is not installed, so otsu() re-implements skimage.filters.threshold_otsu (skimage 0.19-0.22) on
numpy.histogram exactly as skimage does for float images. Volumes are float32 values (what mmnet's Volume
holds), stored in float64. Per case (C x D x H x W):
  input, threshold (C), mask_voxels (C), body_mean/body_std (C),
  body (body z-score, MMFNet clips [-2,1], [-3,2], [-2,3.5]), zscore (plain z-score),
  ct (clip to the 0.5/99.5 percentiles, z-score), ct_lower/ct_upper (C).
nnU-Net's masked z-score for MRI (use_mask_for_norm), per case nonzeroK/: volume (C x D x H x W), mask (D x H x W:
create_nonzero_mask = scipy.ndimage.binary_fill_holes(any channel != 0)), box (get_bbox_from_mask: z0, z1, y0, y1,
x0, x1, half-open), mean/std (C, over the mask), output (z-score inside the mask, 0 outside).
"""
import numpy as np

import common


def otsu(image, nbins=256):
    """skimage.filters.threshold_otsu(image, nbins) for a float image."""
    image = np.asarray(image)
    first = image.reshape(-1)[0]
    if np.all(image == first):
        return float(first)
    counts, edges = np.histogram(image.reshape(-1), bins=nbins, range=None)
    centers = (edges[:-1] + edges[1:]) / 2.0
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centers) / weight1
    mean2 = (np.cumsum((counts * centers)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centers[np.argmax(variance12)])


CLIPS = [(-2.0, 1.0), (-3.0, 2.0), (-2.0, 3.5)]


def channel_results(x, c):
    out = {}
    t = otsu(x)
    mask = x > t
    if mask.sum() == 0:
        mask = np.ones_like(mask)
    m, s = x[mask].mean(), x[mask].std()
    body = (x - m) / max(s, 1e-8)
    if c < len(CLIPS):
        body = np.clip(body, *CLIPS[c])
    z = (x - x.mean()) / max(x.std(), 1e-8)
    lo, hi = np.percentile(x, 0.5), np.percentile(x, 99.5)
    xc = np.clip(x, lo, hi)
    ct = (xc - xc.mean()) / max(xc.std(), 1e-8)
    out.update(threshold=t, mask_voxels=int((x > t).sum()), body_mean=m, body_std=s, body=body, zscore=z, ct=ct,
               ct_lower=lo, ct_upper=hi)
    return out


def make_cases(rng):
    cases = []
    # uniform noise, odd non-cubic shape
    cases.append(rng.uniform(-3.0, 5.0, size=(2, 5, 7, 9)))
    # bimodal: dark background with a bright ellipsoid "body" per channel, different contrasts
    d, h, w = 9, 14, 11
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    body = ((zz - 4) / 3.5) ** 2 + ((yy - 6.5) / 5.0) ** 2 + ((xx - 5) / 4.0) ** 2 < 1.0
    vol = np.empty((3, d, h, w))
    for c, (bg, fg) in enumerate([(10.0, 300.0), (0.0, 1200.0), (-50.0, 80.0)]):
        vol[c] = np.where(body, rng.normal(fg, 0.15 * abs(fg - bg), body.shape), rng.normal(bg, 5.0, body.shape))
    cases.append(vol)
    # integer-valued floats: many voxels on bin edges, and a size-1 axis
    cases.append(rng.integers(0, 512, size=(1, 1, 6, 13)).astype(np.float64))
    # a constant channel next to a skewed one (exponential tail)
    v = np.empty((2, 4, 3, 6))
    v[0] = 7.25
    v[1] = rng.exponential(2.0, size=(4, 3, 6))
    cases.append(v)
    # values on a 0.1 grid (float32-rounded): many voxels on or next to bin edges
    cases.append(np.round(rng.uniform(0.0, 25.6, size=(1, 7, 5, 8)), 1))
    # a narrow range far from 0 (float32 spacing ~6e-5 at 1000): heavy quantisation relative to the bin width
    cases.append(1000.0 + rng.normal(0.0, 1e-3, size=(1, 3, 8, 5)))
    # heavy-tailed lognormal and a three-component mixture
    v = np.empty((2, 6, 5, 7))
    v[0] = rng.lognormal(0.0, 1.5, size=(6, 5, 7))
    v[1] = rng.choice([-40.0, 5.0, 90.0], size=(6, 5, 7)) + rng.normal(0.0, 3.0, size=(6, 5, 7))
    cases.append(v)
    return [c.astype(np.float32).astype(np.float64) for c in cases]


def nonzero_mask(vol):
    """nnU-Net's create_nonzero_mask: any channel non-zero, holes filled (scipy's default cross structure)."""
    from scipy.ndimage import binary_fill_holes
    mask = np.zeros(vol.shape[1:], dtype=bool)
    for c in range(vol.shape[0]):
        mask |= vol[c] != 0
    return binary_fill_holes(mask)


def masked_zscore(vol):
    """nnU-Net ZScoreNormalization(use_mask_for_norm=True) after crop_to_nonzero: outside the mask -> 0."""
    mask = nonzero_mask(vol)
    out = np.zeros_like(vol)
    means, stds = [], []
    for c in range(vol.shape[0]):
        x = vol[c]
        m, s = x[mask].mean(), x[mask].std()
        out[c][mask] = (x[mask] - m) / max(s, 1e-8)
        means.append(m)
        stds.append(s)
    idx = np.nonzero(mask)
    box = [v for a in range(3) for v in (idx[a].min(), idx[a].max() + 1)]
    return mask, np.array(box, dtype=np.float64), np.array(means), np.array(stds), out


def make_nonzero_cases(rng):
    cases = []
    # an ellipsoid "brain" in exact zeros, 2 channels; a one-voxel hole and a 2x2x1 cavity (zero in every channel:
    # filled, so inside the mask); one voxel zero in channel 0 only (inside the mask through channel 1)
    d, h, w = 9, 14, 11
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    body = ((zz - 4) / 3.8) ** 2 + ((yy - 6.5) / 5.5) ** 2 + ((xx - 5) / 4.5) ** 2 < 1.0
    v = np.zeros((2, d, h, w))
    v[0][body] = rng.normal(300.0, 40.0, body.sum())
    v[1][body] = rng.normal(-20.0, 7.0, body.sum())
    v[:, 4, 6, 5] = 0.0
    v[:, 3, 8:10, 3:5] = 0.0
    v[0, 5, 7, 6] = 0.0
    cases.append(v)
    # a body touching the volume's border on one side; a cavity touching the outside only diagonally (a hole under
    # the 6-connected cross structure); 3 channels with different contrasts
    d, h, w = 7, 10, 12
    v = np.zeros((3, d, h, w))
    v[:, 1:6, 0:8, 2:11] = rng.uniform(1.0, 5.0, (3, 5, 8, 9)) * np.array([1.0, 10.0, 0.1])[:, None, None, None]
    v[:, 3, 4, 5] = 0.0
    v[:, 2, 5, 6] = 0.0  # diagonal neighbour of the one above: still an enclosed hole
    v[:, 1, 3, 10] = 0.0  # on the body's surface: outside
    cases.append(v)
    # no zero anywhere: the mask is everything, the result a plain z-score
    cases.append(rng.uniform(0.5, 3.0, size=(1, 5, 6, 7)))
    # a thin body (one slab) in a larger zero volume, noisy positive intensities as MR magnitudes
    v = np.zeros((2, 6, 9, 8))
    v[:, 2:4, 1:8, 2:7] = np.abs(rng.normal(1.0, 0.5, (2, 2, 7, 5)))
    cases.append(v)
    return [c.astype(np.float32).astype(np.float64) for c in cases]


def generate(outdir):
    rng = np.random.default_rng(20261129)
    entries = {}
    for i, vol in enumerate(make_cases(rng)):
        g = f"case{i}/"
        entries[g + "input"] = vol
        per = [channel_results(vol[c], c) for c in range(vol.shape[0])]
        for key in ("threshold", "mask_voxels", "body_mean", "body_std", "ct_lower", "ct_upper"):
            entries[g + key] = np.array([p[key] for p in per], dtype=np.float64)
        for key in ("body", "zscore", "ct"):
            entries[g + key] = np.stack([p[key] for p in per])
    for i, vol in enumerate(make_nonzero_cases(rng)):
        g = f"nonzero{i}/"
        mask, box, means, stds, out = masked_zscore(vol)
        entries[g + "volume"] = vol
        entries[g + "mask"] = mask.astype(np.float64)
        entries[g + "box"] = box
        entries[g + "mean"] = means
        entries[g + "std"] = stds
        entries[g + "output"] = out
    common.write(outdir, "normalize", entries)


if __name__ == "__main__":
    import sys

    generate(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
