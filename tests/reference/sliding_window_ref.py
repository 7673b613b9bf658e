"""Sliding-window inference: MONAI's monai.inferers.sliding_window_inference re-implemented line by line
(MONAI is not installed here; source: Project-MONAI/MONAI monai/inferers/utils.py, monai/data/utils.py at
d388d1c6) with padding_mode="constant", plus nnU-Net v2's mirror TTA (_internal_maybe_mirror_and_predict).

The toy network is reproducible in C++: a 3x3x3 Conv3d (padding 1, bias) whose weights the fixture stores, plus a
window-position term (k + 1) * (a0 * z + a1 * y + a2 * x) in window-local coordinates, so every output depends on
where the window sits. Everything is float64; MONAI builds the Gaussian map in float32, which the script checks
stays within 1e-6 relative of the float64 map used here (and by mmnet). When MONAI is importable the script also
runs MONAI's own function on every case and asserts agreement within 1e-6 (MONAI d388d1c6 run from source with
torch 1.13: largest difference 1.9e-8 relative, all of it from the float32 map).
"""
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

import common


# ---- monai/inferers/utils.py: _get_scan_interval ----
def get_scan_interval(image_size, roi_size, num_spatial_dims, overlap):
    scan_interval = []
    for i, o in zip(range(num_spatial_dims), overlap):
        if roi_size[i] == image_size[i]:
            scan_interval.append(int(roi_size[i]))
        else:
            interval = int(roi_size[i] * (1 - o))
            scan_interval.append(interval if interval > 0 else 1)
    return tuple(scan_interval)


# ---- monai/data/utils.py: get_valid_patch_size, dense_patch_slices ----
def get_valid_patch_size(image_size, patch_size):
    return tuple(min(ms, ps or ms) for ms, ps in zip(image_size, patch_size))


def dense_patch_slices(image_size, patch_size, scan_interval):
    num_spatial_dims = len(image_size)
    patch_size = get_valid_patch_size(image_size, patch_size)
    scan_num = []
    for i in range(num_spatial_dims):
        if scan_interval[i] == 0:
            scan_num.append(1)
        else:
            num = int(math.ceil(float(image_size[i]) / scan_interval[i]))
            scan_dim = next((d for d in range(num) if d * scan_interval[i] + patch_size[i] >= image_size[i]), None)
            scan_num.append(scan_dim + 1 if scan_dim is not None else 1)
    starts = []
    for dim in range(num_spatial_dims):
        dim_starts = []
        for idx in range(scan_num[dim]):
            start_idx = idx * scan_interval[dim]
            start_idx -= max(start_idx + patch_size[dim] - image_size[dim], 0)
            dim_starts.append(start_idx)
        starts.append(dim_starts)
    out = np.asarray([x.flatten() for x in np.meshgrid(*starts, indexing="ij")]).T
    return [tuple(slice(s, s + patch_size[d]) for d, s in enumerate(x)) for x in out]


# ---- monai/data/utils.py: compute_importance_map (dtype is float32 in MONAI; see the module docstring) ----
def compute_importance_map(patch_size, mode, sigma_scale, dtype=torch.float64):
    if mode == "constant":
        importance_map = torch.ones(patch_size, dtype=dtype)
    else:
        sigmas = [i * s for i, s in zip(patch_size, sigma_scale)]
        for i in range(len(patch_size)):
            x = torch.arange(start=-(patch_size[i] - 1) / 2.0, end=(patch_size[i] - 1) / 2.0 + 1, dtype=dtype)
            x = torch.exp(x**2 / (-2 * sigmas[i] ** 2))
            importance_map = importance_map.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    min_non_zero = max(torch.min(importance_map).item(), 1e-3)
    return torch.clamp_(importance_map, min=min_non_zero)


# ---- nnU-Net v2: mirror TTA around one network call ----
def mirrored(net, mirror_axes):
    if not mirror_axes:
        return net

    def predict(x):
        prediction = net(x)
        axes = [m + 2 for m in mirror_axes]
        combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
        for a in combos:
            prediction += torch.flip(net(torch.flip(x, a)), a)
        return prediction / (len(combos) + 1)

    return predict


# ---- monai/inferers/utils.py: sliding_window_inference (tensor output, no buffering, same-size outputs) ----
def sliding_window_inference(inputs, roi_size, sw_batch_size, predictor, overlap, mode, sigma_scale, cval):
    num_spatial_dims = len(inputs.shape) - 2
    for o in overlap:
        assert 0 <= o < 1
    batch_size, _, *image_size_ = inputs.shape
    image_size = tuple(max(image_size_[i], roi_size[i]) for i in range(num_spatial_dims))
    pad_size = []
    for k in range(len(inputs.shape) - 1, 1, -1):
        diff = max(roi_size[k - 2] - inputs.shape[k], 0)
        half = diff // 2
        pad_size.extend([half, diff - half])
    if any(pad_size):
        inputs = F.pad(inputs, pad=pad_size, mode="constant", value=cval)
    scan_interval = get_scan_interval(image_size, roi_size, num_spatial_dims, overlap)
    slices = dense_patch_slices(image_size, roi_size, scan_interval)
    num_win = len(slices)
    total_slices = num_win * batch_size
    valid_patch_size = get_valid_patch_size(image_size, roi_size)
    w_t = compute_importance_map(valid_patch_size, mode, sigma_scale)[None, None]
    output_image, count_map = None, None
    for slice_g in range(0, total_slices, sw_batch_size):
        slice_range = range(slice_g, min(slice_g + sw_batch_size, total_slices))
        unravel_slice = [
            [slice(idx // num_win, idx // num_win + 1), slice(None)] + list(slices[idx % num_win]) for idx in slice_range
        ]
        win_data = torch.cat([inputs[win_slice] for win_slice in unravel_slice])
        seg = predictor(win_data)
        assert tuple(seg.shape[2:]) == tuple(roi_size)
        if output_image is None:
            output_image = torch.zeros([batch_size, seg.shape[1], *image_size])
            count_map = torch.zeros([1, 1, *image_size])
            for s in slices:
                count_map[(slice(None), slice(None), *s)] += w_t
        seg = seg * w_t
        for original_idx, p in zip(unravel_slice, seg):
            output_image[original_idx] += p
    output_image = output_image / count_map
    if any(pad_size):
        final_slicing = []
        for sp in range(num_spatial_dims):
            si = num_spatial_dims - sp - 1
            final_slicing.insert(0, slice(pad_size[sp * 2], pad_size[sp * 2] + image_size_[si]))
        output_image = output_image[(slice(None), slice(None), *final_slicing)]
    return output_image, [tuple(s.start for s in sl) for sl in slices], w_t[0, 0]


def toy_network(weight, bias, pos):
    def net(x):
        y = F.conv3d(x, weight, bias, padding=1)
        _, K, D, H, W = y.shape
        z = torch.arange(D).view(D, 1, 1).double()
        yy = torch.arange(H).view(1, H, 1).double()
        xx = torch.arange(W).view(1, 1, W).double()
        term = pos[0] * z + pos[1] * yy + pos[2] * xx
        return y + torch.arange(1, K + 1).double().view(1, K, 1, 1, 1) * term

    return net


# (image N x C x D x H x W, roi, overlap, mode, sigma_scale, sw_batch_size, cval, mirror axes)
CASES = [
    ((1, 2, 9, 11, 13), (4, 5, 6), (0.25,) * 3, "constant", (0.125,) * 3, 1, 0.0, ()),
    ((1, 2, 9, 11, 13), (4, 5, 6), (0.25,) * 3, "gaussian", (0.125,) * 3, 2, 0.0, ()),
    ((1, 2, 9, 11, 13), (5, 4, 7), (0.5,) * 3, "gaussian", (0.125,) * 3, 3, 0.0, ()),
    ((1, 2, 10, 9, 11), (5, 6, 4), (0.75,) * 3, "gaussian", (0.1, 0.125, 0.2), 5, 0.0, ()),
    ((1, 2, 9, 11, 13), (4, 5, 6), (0.0,) * 3, "constant", (0.125,) * 3, 1, 0.0, ()),
    ((1, 2, 3, 11, 4), (6, 5, 7), (0.25,) * 3, "gaussian", (0.125,) * 3, 2, 0.7, ()),  # smaller than roi: padding
    ((1, 2, 5, 6, 7), (5, 6, 7), (0.25,) * 3, "gaussian", (0.125,) * 3, 1, 0.0, ()),  # roi == image: one window
    ((1, 2, 7, 12, 9), (2, 7, 3), (0.5, 0.25, 0.0), "gaussian", (0.125,) * 3, 4, 0.0, ()),  # anisotropic
    ((2, 2, 6, 8, 7), (4, 5, 3), (0.25,) * 3, "gaussian", (0.125,) * 3, 4, 0.0, ()),  # two images
    ((1, 2, 9, 11, 13), (4, 5, 6), (0.5,) * 3, "gaussian", (0.125,) * 3, 2, 0.0, (0, 2)),  # mirror TTA
    ((1, 2, 3, 11, 8), (5, 5, 6), (0.5,) * 3, "gaussian", (0.125,) * 3, 3, -0.3, (0, 1, 2)),  # TTA + padding
    ((1, 2, 2, 2, 2), (1, 1, 1), (0.5,) * 3, "gaussian", (0.125,) * 3, 3, 0.0, ()),  # roi 1: int(1 * 0.5) = 0 -> interval 1
]


def monai_or_none():
    """MONAI itself when it is importable (e.g. PYTHONPATH=<MONAI checkout>), to cross-check this re-implementation."""
    try:
        from monai.inferers.utils import sliding_window_inference as swi

        return swi
    except Exception:  # not installed here: the re-implementation stands alone
        return None


def generate(outdir):
    common.seed(0)
    C, K = 2, 3
    weight = torch.randn(K, C, 3, 3, 3) * 0.3
    bias = torch.randn(K)
    pos = torch.tensor([0.11, -0.07, 0.05])
    sym = weight.clone()  # symmetric under every flip: a flip-equivariant network (with pos = 0)
    for axes in [(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]:
        sym = sym + torch.flip(weight, axes)
    sym = sym / 8
    out = {"net/weight": weight, "net/bias": bias, "net/pos": pos, "net/symmetric_weight": sym}
    net = toy_network(weight, bias, pos)
    for i, (shape, roi, overlap, mode, sigma, sw, cval, mirror) in enumerate(CASES):
        x = torch.randn(*shape)
        y, starts, w = sliding_window_inference(x, roi, sw, mirrored(net, list(mirror)), overlap, mode, sigma, cval)
        if mode == "gaussian":  # MONAI's float32 map vs the float64 one used here
            w32 = compute_importance_map(tuple(roi), mode, sigma, dtype=torch.float32).double()
            assert ((w32 - w).abs().max() / w.abs().max()).item() < 1e-6
        monai_swi = monai_or_none()
        if monai_swi is not None:  # differs only through MONAI's float32 importance map (2e-8 at d388d1c6)
            ym = monai_swi(x, roi, sw, mirrored(net, list(mirror)), overlap=overlap, mode=mode, sigma_scale=sigma,
                           padding_mode="constant", cval=cval)
            assert ((ym - y).abs().max() / y.abs().max()).item() < 1e-6, f"case{i}: differs from MONAI"
        p = f"case{i}/"
        out[p + "input"] = x
        out[p + "roi"] = torch.tensor(roi, dtype=torch.int64)
        out[p + "overlap"] = torch.tensor(overlap)
        out[p + "gaussian"] = torch.tensor(1 if mode == "gaussian" else 0, dtype=torch.int64)
        out[p + "sigma_scale"] = torch.tensor(sigma)
        out[p + "sw_batch_size"] = torch.tensor(sw, dtype=torch.int64)
        out[p + "padding_value"] = torch.tensor(cval)
        out[p + "mirror"] = torch.tensor([1 if a in mirror else 0 for a in range(3)], dtype=torch.int64)
        out[p + "starts"] = torch.tensor(starts, dtype=torch.int64)
        out[p + "importance"] = w
        out[p + "output"] = y
    common.write(outdir, "sliding_window", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
