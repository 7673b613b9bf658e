"""Distance-weighted softmax focal loss (cascaded-FCN spec §3), written out in torch with the alpha map from
scipy's EDT (distance_transform_ref.edt): alpha = EDT(labels == foreground) * spacing + 1, optionally capped."""
import numpy as np
import torch
import torch.nn.functional as F

import common
from distance_transform_ref import edt, spec_volume


def alpha_map(labels, foreground, spacing, alpha_max):
    a = edt((labels == foreground).astype(np.float64), spacing) + 1.0
    if alpha_max is not None:
        a = np.minimum(a, alpha_max)
    return torch.tensor(a)


def focal(x, y, alpha, gamma, red):
    logp = F.log_softmax(x, 1).gather(1, y.unsqueeze(1)).squeeze(1)
    fl = -alpha.reshape(logp.shape) * (1 - logp.exp()) ** gamma * logp
    return fl.mean() if red == "mean" else fl.sum()


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)
    g = spec_volume()
    ball = np.zeros_like(g)
    zz, yy, xx = np.meshgrid(np.arange(6), np.arange(10), np.arange(14), indexing="ij")
    ball[(zz - 3) ** 2 + (yy - 5) ** 2 + (xx - 6) ** 2 <= 7] = 1
    labels2 = np.stack([g, ball])[:, None]  # 2 x 1 x 6 x 10 x 14
    cases = []  # (logits, labels N x 1 x ..., alpha given?, foreground, spacing, alpha_max, gamma, reduction, gl)
    x = torch.randn(2, 2, 6, 10, 14) * 2
    for gamma in (0.0, 2.0):
        cases.append((x, labels2, False, 1, (1.0, 1.0, 1.0), None, gamma, "mean", 1.0))
    cases.append((x, labels2, False, 1, (2.0, 1.0, 0.5), 3.0, 2.0, "sum", 0.5))
    # three classes, foreground class 2
    lab3 = labels2 * 2
    lab3[0, 0, 0, :, :5] = 1  # class 1 voxels count as background of class 2
    cases.append((torch.randn(2, 3, 6, 10, 14), lab3, False, 2, (1.0, 1.0, 1.0), None, 2.0, "mean", 1.0))
    out = {}
    # block crop of the full-volume alpha (spec §3): block [2:6, 2:10, 2:14] of sample 0
    a_full = alpha_map(labels2[:1], 1, (1.0, 1.0, 1.0), None)
    blk = (slice(None), slice(None), slice(2, 6), slice(2, 10), slice(2, 14))
    xb = torch.randn(1, 2, 4, 8, 12) * 2
    cases.append((xb, labels2[:1][blk], a_full[blk], 1, (1.0, 1.0, 1.0), None, 2.0, "mean", 1.0))
    out["block_alpha_sum"] = a_full[blk].sum()
    out["block_alpha_from_crop_sum"] = alpha_map(labels2[:1][blk], 1, (1.0, 1.0, 1.0), None).sum()

    out["num_cases"] = len(cases)
    for k, (x, lab, given, fg, sp, amax, gamma, red, gl) in enumerate(cases):
        alpha = given if isinstance(given, torch.Tensor) else alpha_map(lab, fg, sp, amax)
        y = torch.tensor(lab[:, 0]).long()
        xk = x.clone().requires_grad_(True)
        loss = focal(xk, y, alpha, gamma, red)
        loss.backward(torch.tensor(gl))
        pre = f"case{k}/"
        out.update({pre + "input": x, pre + "labels": torch.tensor(lab), pre + "alpha_given": int(isinstance(given, torch.Tensor)),
                    pre + "alpha": alpha, pre + "foreground": fg, pre + "spacing": torch.tensor(sp),
                    pre + "has_alpha_max": int(amax is not None), pre + "alpha_max": 0.0 if amax is None else amax,
                    pre + "gamma": gamma, pre + "sum": int(red == "sum"), pre + "grad_loss": gl, pre + "loss": loss,
                    pre + "grad": xk.grad})
    common.write(outdir, "distance_weighted_focal", out)
