"""Upsample against torch.nn.functional.interpolate (modes 'trilinear' and 'nearest'): outputs and input
gradients for align_corners true/false, given sizes and given scale factors (with and without
recompute_scale_factor), up- and down-sampling, non-integer ratios, size-1 axes, the out == 1 case and axes
whose size does not change. Each case also stores its options: mode (0 nearest, 1 trilinear), align_corners,
recompute_scale_factor, and size or scale_factor."""
import torch
import torch.nn.functional as F

import common

# name, input shape, mode, align_corners, size, scale_factor, recompute_scale_factor
CASES = [
    # HMRNet: align_corners=True, per-axis integer scales
    ("tri_ac_s2", (2, 3, 3, 4, 5), "trilinear", True, None, 2, False),
    ("tri_ac_s221", (2, 2, 3, 4, 5), "trilinear", True, None, (2, 2, 1), False),
    ("tri_ac_s4", (1, 2, 2, 3, 4), "trilinear", True, None, 4, False),
    ("tri_ac_s8", (1, 2, 2, 3, 4), "trilinear", True, None, 8, False),
    ("tri_ac_s884", (1, 2, 2, 3, 2), "trilinear", True, None, (8, 8, 4), False),
    # ConResNet: align_corners=True, explicit sizes up and down
    ("tri_ac_size_up4", (2, 2, 4, 6, 8), "trilinear", True, (16, 24, 32), None, False),
    ("tri_ac_size_down4", (2, 2, 16, 24, 32), "trilinear", True, (4, 6, 8), None, False),
    ("tri_ac_size_odd", (2, 2, 5, 7, 6), "trilinear", True, (9, 13, 11), None, False),
    ("tri_ac_size_odd_down", (1, 2, 9, 13, 11), "trilinear", True, (5, 7, 6), None, False),
    ("tri_ac_size1", (1, 2, 1, 5, 4), "trilinear", True, (3, 1, 7), None, False),
    ("tri_ac_out1", (2, 1, 4, 5, 6), "trilinear", True, (1, 1, 1), None, False),
    ("tri_ac_s_frac", (2, 2, 5, 7, 6), "trilinear", True, None, (1.7, 2.5, 0.6), False),
    # Cascaded FCN: align_corners=False, arbitrary sizes; and given scale factors
    ("tri_s2", (2, 3, 3, 4, 5), "trilinear", False, None, 2, False),
    ("tri_s221", (2, 2, 3, 4, 5), "trilinear", False, None, (2, 2, 1), False),
    ("tri_s4", (1, 2, 2, 3, 4), "trilinear", False, None, 4, False),
    ("tri_s8", (1, 2, 2, 3, 4), "trilinear", False, None, 8, False),
    ("tri_s884", (1, 2, 2, 3, 2), "trilinear", False, None, (8, 8, 4), False),
    ("tri_s_quarter", (2, 2, 16, 24, 32), "trilinear", False, None, 0.25, False),
    ("tri_s_frac", (2, 2, 5, 7, 6), "trilinear", False, None, (1.7, 2.5, 0.6), False),
    ("tri_s_frac_recompute", (2, 2, 5, 7, 6), "trilinear", False, None, (1.7, 2.5, 0.6), True),
    ("tri_s_copy_axes", (1, 2, 3, 4, 5), "trilinear", False, None, (2, 1.2, 1.1), False),
    ("tri_size_odd", (2, 2, 5, 7, 6), "trilinear", False, (9, 13, 11), None, False),
    ("tri_size_up", (1, 2, 2, 3, 4), "trilinear", False, (8, 24, 24), None, False),
    ("tri_size_down4", (2, 2, 16, 24, 32), "trilinear", False, (4, 6, 8), None, False),
    ("tri_size1", (1, 2, 1, 5, 4), "trilinear", False, (3, 1, 7), None, False),
    ("tri_size_mixed", (2, 1, 6, 5, 7), "trilinear", False, (3, 9, 7), None, False),
    # nearest (torch's legacy 'nearest': floor(o * scale))
    ("near_s2", (2, 3, 3, 4, 5), "nearest", False, None, 2, False),
    ("near_s221", (2, 2, 3, 4, 5), "nearest", False, None, (2, 2, 1), False),
    ("near_s884", (1, 2, 2, 3, 2), "nearest", False, None, (8, 8, 4), False),
    ("near_s_frac", (2, 2, 5, 7, 6), "nearest", False, None, (1.7, 2.5, 0.6), False),
    ("near_s_frac_recompute", (2, 2, 5, 7, 6), "nearest", False, None, (1.7, 2.5, 0.6), True),
    ("near_s_half", (2, 2, 6, 8, 10), "nearest", False, None, 0.5, False),
    ("near_s_third", (1, 2, 7, 9, 11), "nearest", False, None, (1 / 3, 0.3, 0.7), False),
    ("near_s_almost2", (1, 1, 10, 3, 4), "nearest", False, None, (2.05, 1, 1.3), False),
    ("near_size_odd", (2, 2, 5, 7, 6), "nearest", False, (9, 13, 11), None, False),
    ("near_size_down", (2, 2, 16, 24, 32), "nearest", False, (4, 6, 8), None, False),
    ("near_size_mixed", (1, 2, 6, 5, 7), "nearest", False, (3, 10, 7), None, False),
    ("near_size1", (1, 2, 1, 5, 4), "nearest", False, (3, 1, 7), None, False),
]


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, mode, ac, size, scale, recompute in CASES:
        x = torch.randn(*shape).requires_grad_(True)
        kw = {"mode": mode}
        if mode != "nearest":
            kw["align_corners"] = ac
        if size is not None:
            kw["size"] = size
        else:
            kw["scale_factor"] = scale if isinstance(scale, tuple) else (scale,) * 3
            kw["recompute_scale_factor"] = recompute
        y = F.interpolate(x, **kw)
        dy = torch.randn(*y.shape)
        y.backward(dy)
        out[name + "/input"] = x
        out[name + "/output"] = y
        out[name + "/grad_output"] = dy
        out[name + "/grad_input"] = x.grad
        out[name + "/mode"] = 1 if mode == "trilinear" else 0
        out[name + "/align_corners"] = int(ac)
        out[name + "/recompute_scale_factor"] = int(recompute)
        if size is not None:
            out[name + "/size"] = torch.tensor(size, dtype=torch.int64)
        else:
            out[name + "/scale_factor"] = torch.tensor(kw["scale_factor"], dtype=torch.float64)
    common.write(outdir, "upsample", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
