"""Segmentation metrics (mmnet/metrics) and connected components (mmnet/ops/connected_components.hpp).

An independent numpy/scipy implementation that follows MONAI's code path (monai/metrics/utils.py get_mask_edges
with crop=True, get_surface_distance; hausdorff_distance.py, surface_distance.py, surface_dice.py, meandice.py,
meaniou.py, confusion_matrix.py), in float64 (MONAI casts distances to float32):
  edges = M ^ scipy.ndimage.binary_erosion(M) on the union bounding box padded by one zero voxel,
  distances = distance_transform_edt(~edges_to, sampling=spacing)[edges_from].
The one deliberate difference, documented in docs/metrics.md: the percentile of an all-inf list is inf (MONAI's
torch.quantile gives nan there because it interpolates inf - inf).

Writes two fixtures: metrics.h5 (binary mask pairs and label volumes with every metric) and
connected_components.h5 (scipy.ndimage.label with 6- and 26-connectivity, count, largest component).
"""
import numpy as np
from scipy import ndimage

import common


# ---------------------------------------------------------------------------------------------- MONAI's path
def mask_edges(pred, gt):
    """get_mask_edges(crop=True): edges of both masks on the union box with a 1-voxel zero margin."""
    pred, gt = pred != 0, gt != 0
    union = pred | gt
    if not union.any():
        return np.zeros(pred.shape, bool), np.zeros(gt.shape, bool)
    idx = np.argwhere(union)
    lo, hi = idx.min(0), idx.max(0) + 1
    # CropForeground(margin=1, allow_smaller=False): the box grows by 1 and is zero-padded past the border
    pad = [(1, 1)] * 3
    p = np.pad(pred, pad)[tuple(slice(a, b + 2) for a, b in zip(lo, hi))]
    g = np.pad(gt, pad)[tuple(slice(a, b + 2) for a, b in zip(lo, hi))]
    return ndimage.binary_erosion(p) ^ p, ndimage.binary_erosion(g) ^ g


def surface_distance(edges_from, edges_to, spacing):
    """get_surface_distance(edges_from, edges_to, spacing) in float64."""
    if not edges_to.any():
        return np.full(int(edges_from.sum()), np.inf)
    if not edges_from.any():
        return np.full(int(edges_to.sum()), np.inf)  # MONAI returns dis[seg_gt] here
    dis = ndimage.distance_transform_edt(~edges_to, sampling=spacing)
    return dis[edges_from]


def pct(d, q):
    if d.size == 0:
        return np.nan
    if np.isinf(d).any():
        return np.inf  # MONAI: nan (torch.quantile of inf values); see the module docstring
    return np.percentile(d, q)


def nan_max(a, b):
    return np.nan if (np.isnan(a) or np.isnan(b)) else max(a, b)


def all_metrics(pred, gt, spacing, tau, q):
    pred, gt = pred != 0, gt != 0
    tp = int((pred & gt).sum())
    fp = int((pred & ~gt).sum())
    fn = int((~pred & gt).sum())
    tn = int((~pred & ~gt).sum())
    y_o, p_o = tp + fn, tp + fp
    out = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    # DiceHelper.compute_channel
    out["dice"] = 2.0 * tp / (y_o + p_o) if y_o > 0 else np.nan
    out["dice_keep_empty"] = 2.0 * tp / (y_o + p_o) if y_o > 0 else (1.0 if y_o + p_o <= 0 else 0.0)
    union = y_o + p_o - tp
    out["iou"] = tp / union if y_o > 0 else np.nan
    out["iou_keep_empty"] = tp / union if union > 0 else 1.0
    out["precision"] = tp / (tp + fp) if tp + fp != 0 else np.nan
    out["recall"] = tp / (tp + fn) if tp + fn != 0 else np.nan
    ep, eg = mask_edges(pred, gt)
    d_pg = surface_distance(ep, eg, spacing)
    d_gp = surface_distance(eg, ep, spacing)
    mx = lambda d: np.nan if d.size == 0 else d.max()
    out["hd"] = nan_max(mx(d_pg), mx(d_gp))
    out["hd_directed"] = mx(d_pg)
    out["hd95"] = nan_max(pct(d_pg, q), pct(d_gp, q))
    out["hd95_directed"] = pct(d_pg, q)
    both = np.concatenate([d_pg, d_gp])
    out["assd"] = np.nan if both.size == 0 else both.mean()
    out["asd"] = np.nan if d_pg.size == 0 else d_pg.mean()
    total = d_pg.size + d_gp.size
    out["nsd"] = np.nan if total == 0 else ((d_pg <= tau).sum() + (d_gp <= tau).sum()) / total
    finite = both[np.isfinite(both)]
    # NSD counts must not hinge on rounding: no distance within 1e-9 of tau
    assert not (np.abs(finite - tau) < 1e-9).any(), ("tolerance tie", tau)
    out["num_pred_to_truth"] = d_pg.size
    out["num_truth_to_pred"] = d_gp.size
    if d_pg.size:
        out["pred_to_truth"] = d_pg
    if d_gp.size:
        out["truth_to_pred"] = d_gp
    return out


# ---------------------------------------------------------------------------------------------- test masks
def box(shape, lo, hi):
    m = np.zeros(shape)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


def ellipsoid(shape, centre, radii):
    z, y, x = np.indices(shape).astype(np.float64)
    r = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2
    return (r <= 1.0).astype(np.float64)


def metric_cases(rng):
    S = (9, 11, 13)
    cases = []  # (name, pred, truth, spacing, tau, q)
    single = np.zeros(S)
    single[4, 5, 6] = 1
    other = np.zeros(S)
    other[1, 9, 2] = 1
    cases.append(("single_voxel_same", single, single, (1.0, 1.0, 1.0), 1.0, 95.0))
    cases.append(("single_voxel_apart", single, other, (3.0, 0.8, 0.6), 2.5, 95.0))
    cube = box(S, (2, 3, 4), (6, 8, 9))
    shifted = box(S, (3, 3, 6), (7, 8, 11))
    cases.append(("cube_shifted", shifted, cube, (1.0, 1.0, 1.0), 1.5, 95.0))
    cases.append(("cube_shifted_aniso", shifted, cube, (3.0, 0.8, 0.6), 1.3, 95.0))
    S2 = (13, 17, 19)
    sphere = ellipsoid(S2, (6, 8, 9), (4.2, 4.2, 4.2))
    dil = ndimage.binary_dilation(sphere, ndimage.generate_binary_structure(3, 1), iterations=2).astype(np.float64)
    cases.append(("sphere_dilated", dil, sphere, (1.0, 1.0, 1.0), 1.5, 95.0))
    cases.append(("sphere_dilated_aniso", sphere, dil, (3.0, 0.8, 0.6), 1.7, 90.0))
    ell = ellipsoid(S2, (5.5, 9, 8.2), (3.1, 6.3, 5.4))
    cases.append(("ellipsoid_vs_sphere", ell, sphere, (2.5, 0.7, 1.1), 2.35, 95.0))
    # disjoint objects: truth has two blobs, pred one of them and a false blob
    t2 = box(S2, (1, 1, 1), (4, 5, 6)) + box(S2, (8, 10, 11), (12, 16, 18))
    p2 = box(S2, (1, 1, 2), (4, 5, 7)) + box(S2, (9, 1, 14), (11, 4, 17))
    cases.append(("disjoint_objects", p2, t2, (1.0, 1.0, 1.0), 2.5, 95.0))
    cases.append(("disjoint_objects_aniso", p2, t2, (3.0, 0.8, 0.6), 4.1, 75.0))
    # touching the volume border: surface on the border faces (scipy border_value=0)
    cases.append(("border_slab", box(S, (0, 0, 0), (9, 11, 5)), box(S, (0, 2, 0), (9, 11, 7)), (1.0, 1.0, 1.0), 1.5, 95.0))
    cases.append(("full_volume", np.ones(S), box(S, (1, 1, 1), (8, 10, 12)), (2.0, 1.0, 0.5), 0.7, 95.0))
    # a one-slice object (extent 1 along D) and a volume with a size-1 axis
    cases.append(("one_slice", box(S, (4, 2, 3), (5, 9, 10)), box(S, (4, 3, 3), (5, 9, 12)), (3.0, 0.8, 0.6), 0.7, 95.0))
    flat = (1, 7, 10)
    cases.append(("size1_axis", (rng.rand(*flat) < 0.5).astype(np.float64), (rng.rand(*flat) < 0.5).astype(np.float64),
                  (1.0, 1.0, 1.0), 1.2, 95.0))
    # random masks
    for k, (shape, pp, pg, sp, tau, q) in enumerate([
            ((6, 8, 10), 0.3, 0.3, (1.0, 1.0, 1.0), 1.2, 95.0),
            ((7, 9, 5), 0.6, 0.5, (3.0, 0.8, 0.6), 1.1, 95.0),
            ((10, 6, 8), 0.1, 0.15, (0.5, 1.25, 2.0), 1.6, 50.0),
            ((5, 12, 9), 0.8, 0.7, (1.5, 0.9, 0.7), 0.95, 99.0),
            ((11, 8, 7), 0.05, 0.9, (2.0, 2.0, 1.0), 3.1, 95.0)]):
        cases.append((f"random{k}", (rng.rand(*shape) < pp).astype(np.float64),
                      (rng.rand(*shape) < pg).astype(np.float64), sp, tau, q))
    # smoothed random blobs (larger surfaces)
    blob = lambda: (ndimage.gaussian_filter(rng.rand(12, 15, 17), 1.5) > 0.5).astype(np.float64)
    cases.append(("random_blobs", blob(), blob(), (3.0, 0.8, 0.6), 1.9, 95.0))
    # empty cases
    cases.append(("empty_pred", np.zeros(S), cube, (3.0, 0.8, 0.6), 1.0, 95.0))
    cases.append(("empty_truth", cube, np.zeros(S), (3.0, 0.8, 0.6), 1.0, 95.0))
    cases.append(("both_empty", np.zeros(S), np.zeros(S), (3.0, 0.8, 0.6), 1.0, 95.0))
    return cases


def label_volume(rng, shape):
    """A BraTS-like label volume: 0 background, 2 oedema around 1 necrosis with 4 enhancing."""
    lab = np.zeros(shape)
    lab[ellipsoid(shape, (6, 8, 9), (5.0, 6.5, 7.0)) > 0] = 2
    lab[ellipsoid(shape, (6, 8.5, 9.5), (3.2, 4.0, 4.5)) > 0] = 4
    lab[ellipsoid(shape, (6, 9, 10), (1.8, 2.2, 2.5)) > 0] = 1
    noise = rng.rand(*shape)
    lab[noise < 0.03] = 0
    lab[(noise > 0.985)] = 2
    return lab


REGIONS = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4], "1": [1], "2": [2], "3": [3], "4": [4]}


def cc_cases(rng):
    cases = []  # (name, mask)
    for k, (shape, p) in enumerate([((6, 8, 10), 0.3), ((9, 7, 11), 0.45), ((5, 13, 9), 0.2),
                                    ((12, 10, 8), 0.6), ((1, 15, 14), 0.5), ((4, 1, 23), 0.55)]):
        cases.append((f"random{k}", (rng.rand(*shape) < p).astype(np.float64)))
    cases.append(("blobs", (ndimage.gaussian_filter(rng.rand(14, 16, 18), 1.2) > 0.52).astype(np.float64)))
    cases.append(("empty", np.zeros((3, 4, 5))))
    cases.append(("full", np.ones((3, 4, 5))))
    # diagonal-only contacts: one 26-component, many 6-components; equal sizes (a tie for the largest)
    diag = np.zeros((5, 6, 7))
    for i in range(5):
        diag[i, i, i] = 1
        diag[i, i, 6 - i] = 1
    cases.append(("diagonals", diag))
    # a U shape whose right arm starts at an earlier raster position than the join
    u = np.zeros((3, 8, 9))
    u[1, 1:7, 1] = 1
    u[1, 6, 1:8] = 1
    u[1, 2:7, 7] = 1
    u[0, 0, 4] = 1
    cases.append(("u_shape", u))
    return cases


def generate(outdir):
    common.seed(0)
    rng = np.random.RandomState(0)
    out = {}
    cases = metric_cases(rng)
    out["num_cases"] = len(cases)
    for k, (name, p, g, sp, tau, q) in enumerate(cases):
        pre = f"case{k}/"
        out[pre + "pred"] = p
        out[pre + "truth"] = g
        out[pre + "spacing"] = np.asarray(sp)
        out[pre + "tolerance"] = tau
        out[pre + "percentile"] = q
        out[pre + "name_id"] = k
        for key, v in all_metrics(p, g, sp, tau, q).items():
            out[pre + key] = v
    # label volumes: BraTS regions and labels 1..4 (3 absent in both: NaN metrics)
    shape = (13, 17, 19)
    truth = label_volume(rng, shape)
    pred = np.roll(label_volume(rng, shape), 1, axis=2)
    sp, tau = (3.0, 0.8, 0.6), 1.9
    out["labels/pred"] = pred
    out["labels/truth"] = truth
    out["labels/spacing"] = np.asarray(sp)
    out["labels/tolerance"] = tau
    for r, labs in REGIONS.items():
        res = all_metrics(np.isin(pred, labs), np.isin(truth, labs), sp, tau, 95.0)
        for key in ("dice", "iou", "precision", "recall", "hd", "hd95", "assd", "nsd", "tp", "fp", "fn", "tn"):
            out[f"labels/{r}/{key}"] = res[key]
    # numpy.percentile (linear) on lists with ties and odd lengths
    qs = np.array([0.0, 12.5, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0])
    out["percentile/q"] = qs
    for k, n in enumerate([1, 2, 3, 7, 20, 21, 101, 1000]):
        v = np.round(rng.rand(n) * 10, 1 if k % 2 else 6)  # rounded: ties
        out[f"percentile/list{k}/values"] = v
        out[f"percentile/list{k}/expected"] = np.array([np.percentile(v, q) for q in qs])
    out["percentile/num_lists"] = 8
    common.write(outdir, "metrics", out)

    cc = {}
    ccs = cc_cases(rng)
    cc["num_cases"] = len(ccs)
    for k, (name, m) in enumerate(ccs):
        for conn, rank in ((6, 1), (26, 3)):
            pre = f"case{k}/c{conn}/"
            lab, n = ndimage.label(m != 0, ndimage.generate_binary_structure(3, rank))
            cc[pre + "labels"] = lab.astype(np.float64)
            cc[pre + "count"] = int(n)
            sizes = np.bincount(lab.ravel())[1:]
            largest = (lab == (np.argmax(sizes) + 1)) if n > 0 else np.zeros(m.shape, bool)
            cc[pre + "largest"] = largest.astype(np.float64)
        cc[f"case{k}/mask"] = m
    common.write(outdir, "connected_components", cc)


if __name__ == "__main__":
    import sys
    generate(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
