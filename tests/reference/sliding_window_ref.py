"""Sliding-window inference: MONAI's monai.inferers.sliding_window_inference re-implemented line by line
(MONAI is not installed here; source: Project-MONAI/MONAI monai/inferers/utils.py, monai/data/utils.py at
d388d1c6) with padding_mode="constant", plus nnU-Net v2's mirror TTA (_internal_maybe_mirror_and_predict).

The toy network is reproducible in C++: a 3x3x3 Conv3d (padding 1, bias) whose weights the fixture stores, plus a
window-position term (k + 1) * (a0 * z + a1 * y + a2 * x) in window-local coordinates, so every output depends on
where the window sits. Everything is float64; MONAI builds the Gaussian map in float32, which the script checks
stays within 1e-6 relative of the float64 map used here (and by mmnet). When MONAI is importable the script also
runs MONAI's own function on every case and asserts agreement within 1e-6 (MONAI d388d1c6 run from source with
torch 1.13: largest difference 1.9e-8 relative, all of it from the float32 map).

nnU-Net v1 (nnunet/network_architecture/neural_network.py, SegmentationNetwork: _compute_steps_for_sliding_window,
_get_gaussian, _internal_maybe_mirror_and_pred_3D, _internal_predict_3D_3Dconv_tiled) is re-implemented from its
semantics (nnunet is not imported): window placement, the Gaussian built as nnU-Net builds it (a delta through
scipy.ndimage.gaussian_filter, divided by the maximum, cast to float32), checked bit-identical to the closed form
mmnet uses, and the tiled prediction with 8-flip softmax averaging of a small Conv3d network. The aggregation is
in float64 here (nnU-Net aggregates in float32; the Gaussian stays float32-valued as in nnU-Net).
"""
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

import common

try:
    from scipy.ndimage import gaussian_filter
except ImportError:  # the closed form below then stands alone
    gaussian_filter = None


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


# ---- nnU-Net v1: SegmentationNetwork._compute_steps_for_sliding_window (image_size >= patch_size) ----
def nnunet_steps(patch_size, image_size, step_size):
    steps = []
    for p, s in zip(patch_size, image_size):
        target = p * step_size  # target_step_sizes_in_voxels: a float
        n = int(np.ceil((s - p) / target)) + 1
        actual = (s - p) / (n - 1) if n > 1 else 99999999999  # one window: start 0 whatever the value
        steps.append([int(np.round(actual * i)) for i in range(n)])
    return steps


# ---- nnU-Net v1: SegmentationNetwork._get_gaussian (needs scipy) and the closed form mmnet evaluates ----
def nnunet_gaussian_scipy(patch_size, sigma_scale=1.0 / 8):
    tmp = np.zeros(patch_size)
    tmp[tuple(p // 2 for p in patch_size)] = 1
    g = gaussian_filter(tmp, [p * sigma_scale for p in patch_size], 0, mode="constant", cval=0)
    g = (g / np.max(g) * 1).astype(np.float32)
    g[g == 0] = np.min(g[g != 0])
    return g


def nnunet_gaussian_closed(patch_size, sigma_scale=1.0 / 8):
    """prod_a exp(-(x_a - p_a // 2)^2 / (2 sigma_a^2)), 0 beyond scipy's radius int(4 sigma + 0.5), in float64,
    then float32 and nnU-Net's zero replacement."""
    axes = []
    for p in patch_size:
        sigma = p * sigma_scale
        d = np.arange(p) - p // 2
        v = np.exp(-(d.astype(np.float64) ** 2) / (2 * sigma * sigma))
        v[np.abs(d) > int(4 * sigma + 0.5)] = 0
        axes.append(v)
    g = (axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]).astype(np.float32)
    if (g == 0).any():
        g[g == 0] = np.min(g[g != 0])
    return g


def nnunet_gaussian(patch_size, sigma_scale=1.0 / 8):
    g = nnunet_gaussian_closed(patch_size, sigma_scale)
    if gaussian_filter is not None:  # nnU-Net's construction must give the same float32 values, bit for bit
        assert np.array_equal(g, nnunet_gaussian_scipy(patch_size, sigma_scale)), patch_size
    return g


# ---- nnU-Net v1: _internal_maybe_mirror_and_pred_3D (x: 1 x C x patch; softmax of the network) ----
def nnunet_mirror_and_pred(net, x, mirror_axes, mult):
    # m = 0..7: none, W, H, HW, D, DW, DH, DHW (tensor axes 4, 3, 2), each weighted 1 / 2^len(mirror_axes)
    combos = [(), (2,), (1,), (2, 1), (0,), (0, 2), (0, 1), (0, 1, 2)]
    num_results = 2 ** len(mirror_axes)
    result = None
    for axes in combos:
        if not all(a in mirror_axes for a in axes):
            continue
        dims = [a + 2 for a in axes]
        xi = torch.flip(x, dims) if dims else x
        pred = torch.softmax(net(xi), 1)
        pred = torch.flip(pred, dims) if dims else pred
        result = 1 / num_results * pred if result is None else result + 1 / num_results * pred
    return result * mult


# ---- nnU-Net v1: _internal_predict_3D_3Dconv_tiled (x: C x D x H x W; use_gaussian=True, constant 0 padding) ----
def nnunet_predict_tiled(net, x, patch_size, step_size, mirror_axes):
    shape = x.shape[1:]
    new_shape = [max(s, p) for s, p in zip(shape, patch_size)]  # batchgenerators' pad_nd_image
    below = [(n - s) // 2 for n, s in zip(new_shape, shape)]
    above = [(n - s) // 2 + (n - s) % 2 for n, s in zip(new_shape, shape)]
    data = F.pad(x, [v for a in (2, 1, 0) for v in (below[a], above[a])], mode="constant", value=0.0)
    g = torch.from_numpy(nnunet_gaussian(patch_size).astype(np.float64))
    steps = nnunet_steps(patch_size, data.shape[1:], step_size)
    K = None
    agg = cnt = None
    for sd in steps[0]:
        for sh in steps[1]:
            for sw in steps[2]:
                sl = (slice(sd, sd + patch_size[0]), slice(sh, sh + patch_size[1]), slice(sw, sw + patch_size[2]))
                pred = nnunet_mirror_and_pred(net, data[(None, slice(None)) + sl], mirror_axes, g)[0]
                if agg is None:
                    K = pred.shape[0]
                    agg = torch.zeros((K,) + tuple(data.shape[1:]))
                    cnt = torch.zeros((K,) + tuple(data.shape[1:]))
                agg[(slice(None),) + sl] += pred
                cnt[(slice(None),) + sl] += g
    crop = (slice(None),) + tuple(slice(b, b + s) for b, s in zip(below, shape))
    return agg[crop] / cnt[crop], steps, g


# (size, patch, overlap): placement along one axis (step_size = 1 - overlap)
NNUNET_PLACEMENT = [
    (193, 128, 0.5), (20, 16, 0.5), (30, 24, 0.5), (40, 32, 0.5), (128, 128, 0.5), (100, 128, 0.5),
    (110, 32, 0.5), (17, 7, 0.5), (9, 4, 0.75), (11, 5, 0.3), (2, 1, 0.5), (5, 5, 0.5), (255, 128, 0.5),
    (161, 160, 0.5), (194, 128, 0.5), (20, 8, 0.0), (321, 96, 0.5), (13, 6, 0.5), (47, 10, 0.6), (1, 3, 0.5),
]

# (image N x C x D x H x W, patch, mirror axes, sw_batch_size)
NNUNET_CASES = [
    ((1, 2, 20, 30, 40), (16, 24, 32), (0, 1, 2), 1),  # D {0, 4}, H {0, 6}, W {0, 8}
    ((1, 2, 5, 30, 9), (8, 24, 12), (0, 2), 3),  # smaller than the patch along D and W: zero padding
    ((2, 2, 13, 24, 17), (13, 10, 7), (0, 1, 2), 4),  # size == patch along D, odd patch, two images
    ((1, 2, 11, 9, 7), (6, 5, 4), (), 2),  # no mirroring
]

# importance maps (patch, sigma_scale): small ones whole; 0.02 and 0.05 exercise scipy's 4-sigma truncation
NNUNET_GAUSSIANS = [((16, 24, 32), 0.125), ((13, 10, 7), 0.125), ((1, 2, 3), 0.125), ((16, 24, 32), 0.02),
                    ((9, 7, 5), 0.05)]


def generate_nnunet(out):
    C, K = 2, 3
    weight = torch.randn(K, C, 3, 3, 3) * 0.5
    bias = torch.randn(K) * 0.3
    out["nnnet/weight"] = weight
    out["nnnet/bias"] = bias

    def net(x):
        return F.conv3d(x, weight, bias, padding=1)

    for i, (size, patch, ov) in enumerate(NNUNET_PLACEMENT):
        s = max(size, patch)  # nnU-Net pads to the patch first
        out[f"placement/{i}/size"] = torch.tensor(size, dtype=torch.int64)
        out[f"placement/{i}/patch"] = torch.tensor(patch, dtype=torch.int64)
        out[f"placement/{i}/overlap"] = torch.tensor(ov)
        out[f"placement/{i}/starts"] = torch.tensor(nnunet_steps([patch], [s], 1 - ov)[0], dtype=torch.int64)
    assert nnunet_steps([128], [193], 0.5)[0] == [0, 32, 65]
    assert nnunet_steps([16, 24, 32], [20, 30, 40], 0.5) == [[0, 4], [0, 6], [0, 8]]

    for i, (patch, sigma) in enumerate(NNUNET_GAUSSIANS):
        out[f"gaussian/{i}/patch"] = torch.tensor(patch, dtype=torch.int64)
        out[f"gaussian/{i}/sigma_scale"] = torch.tensor(sigma)
        out[f"gaussian/{i}/map"] = torch.from_numpy(nnunet_gaussian(patch, sigma).astype(np.float64))
    g128 = nnunet_gaussian((128, 128, 128))  # MAML's tile: sampled, and checked against the closed-form corner
    assert g128[64, 64, 64] == 1 and g128[0, 0, 0] == np.float32(np.exp(-8.0) ** 3)
    out["gaussian128/sampled"] = torch.from_numpy(g128[::9, ::7, ::5].astype(np.float64))

    for i, (shape, patch, mirror, sw) in enumerate(NNUNET_CASES):
        x = torch.randn(*shape)
        probs, starts = [], None
        for n in range(shape[0]):  # nnU-Net predicts one image at a time
            y, starts, g = nnunet_predict_tiled(net, x[n], patch, 0.5, mirror)
            probs.append(y)
        p = f"nn{i}/"
        out[p + "image"] = x
        out[p + "patch"] = torch.tensor(patch, dtype=torch.int64)
        out[p + "mirror"] = torch.tensor([1 if a in mirror else 0 for a in range(3)], dtype=torch.int64)
        out[p + "sw_batch_size"] = torch.tensor(sw, dtype=torch.int64)
        for a, name in enumerate("dhw"):
            out[p + "starts_" + name] = torch.tensor(starts[a], dtype=torch.int64)
        out[p + "importance"] = g
        out[p + "probs"] = torch.stack(probs)


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
    generate_nnunet(out)  # after the MONAI cases, so their random draws are unchanged
    common.write(outdir, "sliding_window", out)


if __name__ == "__main__":
    import sys

    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
