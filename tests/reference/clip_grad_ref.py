"""torch.nn.utils.clip_grad_norm_ and clip_grad_value_ (torch 1.13) on a fixed set of gradients.

Parameters p0 (3, 4, 5), p1 (7,), p2 (2, 3, 2, 2) frozen (grad None: not counted, not changed) and p3 (4, 1, 3).
Per case: the returned total norm and every gradient after clipping. Cases cover p = 2, 1, 3.5 and inf, with
max_norm below (clipping) and above (coefficient clamped to 1) the total, and all-zero gradients.
"""
import math

import torch

import common

SHAPES = [(3, 4, 5), (7,), (2, 3, 2, 2), (4, 1, 3)]
FROZEN = [False, False, True, False]

NORM_CASES = {
    "l2_clip": dict(max_norm=1.0, norm_type=2.0),
    "l2_no_clip": dict(max_norm=100.0, norm_type=2.0),
    "l2_nnunet": dict(max_norm=12.0, norm_type=2.0),
    "l1_clip": dict(max_norm=2.0, norm_type=1.0),
    "p3_5_clip": dict(max_norm=0.5, norm_type=3.5),
    "inf_clip": dict(max_norm=0.3, norm_type=math.inf),
    "inf_no_clip": dict(max_norm=30.0, norm_type=math.inf),
    "zeros": dict(max_norm=1.0, norm_type=2.0, zero=True),
}
VALUE_CASES = {"value_0_25": 0.25, "value_3": 3.0}


def grads():
    common.seed(11)
    scales = [2.0, 5.0, 1.0, 0.3]
    return [torch.randn(s) * c for s, c in zip(SHAPES, scales)]


def params_with(gs, zero=False):
    ps = []
    for s, g, frozen in zip(SHAPES, gs, FROZEN):
        p = torch.nn.Parameter(torch.zeros(s), requires_grad=not frozen)
        if not frozen:
            p.grad = torch.zeros(s) if zero else g.clone()
        ps.append(p)
    return ps


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    gs = grads()
    out = {}
    for j, g in enumerate(gs):
        out[f"grad{j}"] = g
        out[f"frozen{j}"] = int(FROZEN[j])
    for name, kw in NORM_CASES.items():
        zero = kw.pop("zero", False)
        ps = params_with(gs, zero)
        total = torch.nn.utils.clip_grad_norm_(ps, **kw)
        out[f"{name}/max_norm"] = kw["max_norm"]
        out[f"{name}/norm_type"] = kw["norm_type"]
        out[f"{name}/zero"] = int(zero)
        out[f"{name}/total_norm"] = total
        for j, p in enumerate(ps):
            if p.grad is not None:
                out[f"{name}/grad{j}"] = p.grad
    for name, v in VALUE_CASES.items():
        ps = params_with(gs)
        torch.nn.utils.clip_grad_value_(ps, v)
        out[f"{name}/clip_value"] = v
        for j, p in enumerate(ps):
            if p.grad is not None:
                out[f"{name}/grad{j}"] = p.grad
    common.write(outdir, "clip_grad", out)
