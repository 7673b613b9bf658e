"""Soft Dice + cross-entropy on logits with integer labels, written out in torch after nnU-Net v1's
DC_and_CE_loss / SoftDiceLoss / get_tp_fp_fn_tn (MAML spec §3.1) and HMRNet spec §3 (theta on FN, 1 - Dice).

Dice groups: per class over batch and space (batch=True) or per (sample, class); background dropped unless
include_background; dc = (2tp + snr) / (2tp + theta fn + fp + sdr [+ 1e-8 for the nnU-Net preset, added the way
nnU-Net adds it]); Dice term -mean(dc) (nnU-Net) or 1 - mean(dc). With an ignore label the voxels are masked out of
tp, fp, fn as nnU-Net does (target set to 0 there, then multiplied by the mask) and CE uses ignore_index.
"""
import torch
import torch.nn.functional as F

import common


def dice_ce(x, y, o):
    c = x.shape[1]
    p = torch.softmax(x, 1)
    y0 = y.clone()
    mask = torch.ones_like(y, dtype=torch.float64)
    if o["ignore"] is not None:
        mask = (y != o["ignore"]).double()
        y0[y == o["ignore"]] = 0
    g = F.one_hot(y0, c).movedim(-1, 1).double()
    m = mask.unsqueeze(1)
    axes = [0] + list(range(2, x.dim())) if o["batch"] else list(range(2, x.dim()))
    tp = (p * g * m).sum(axes)
    fp = (p * (1 - g) * m).sum(axes)
    fn = ((1 - p) * g * m).sum(axes)
    num = 2 * tp + o["snr"]
    den = 2 * tp + o["theta"] * fn + fp + o["sdr"]
    dc = num / (den + 1e-8) if o["nnunet_eps"] else num / den
    if not o["bg"]:
        dc = dc[1:] if o["batch"] else dc[:, 1:]
    dice = -dc.mean() if o["negative"] else 1 - dc.mean()
    kw = {}
    if o["ce_weight"] is not None:
        kw["weight"] = torch.tensor(o["ce_weight"])
    if o["ignore"] is not None:
        kw["ignore_index"] = o["ignore"]
    ce = F.cross_entropy(x, y, **kw)
    loss = 0.0
    if o["wce"] != 0:
        loss = loss + o["wce"] * ce
    if o["wd"] != 0:
        loss = loss + o["wd"] * dice
    return loss


def nnunet(**kw):
    o = dict(snr=1e-5, sdr=1e-5, nnunet_eps=True, theta=1.0, batch=True, bg=False, negative=True, ce_weight=None,
             ignore=None, wce=1.0, wd=1.0)
    o.update(kw)
    return o


def hmrnet(theta, **kw):
    return nnunet(theta=theta, nnunet_eps=False, negative=False, **kw)


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)
    cases = []  # (x, y (N x ...), keep_dim, options, grad_loss)
    x = torch.randn(2, 3, 4, 6, 8) * 2
    y = torch.randint(0, 3, (2, 4, 6, 8))
    cases.append((x, y, True, nnunet(), 1.0))
    cases.append((x, y, False, nnunet(batch=False), 0.7))
    x2 = torch.randn(2, 2, 5, 4, 6) * 2
    y2 = (torch.rand(2, 5, 4, 6) < 0.2).long()
    cases.append((x2, y2, True, hmrnet(2.5), 1.0))
    cases.append((x2, y2, True, hmrnet(1.0), 1.0))
    cases.append((x, y, True, nnunet(bg=True, negative=False, ce_weight=[0.3, 1.0, 2.0], wce=0.5, wd=2.0, nnunet_eps=False,
                                     snr=1.0, sdr=1.0), -1.3))
    y_ign = y.clone()
    y_ign[0, 1, :, :4] = 255
    y_ign[1, :, 5, :] = 255
    cases.append((x, y_ign, True, nnunet(ignore=255), 1.0))
    cases.append((x, y_ign, False, hmrnet(3.0, batch=False, ignore=255, ce_weight=[1.0, 0.5, 2.0]), 1.0))
    cases.append((x, y, True, nnunet(wd=0.0), 1.0))
    cases.append((x, y, True, nnunet(wce=0.0), 1.0))
    y_empty = y.clone()
    y_empty[y_empty == 2] = 1  # class 2 absent: its Dice is smooth / (Σp + smooth)
    cases.append((x, y_empty, True, nnunet(), 1.0))
    cases.append((x2, torch.zeros_like(y2), True, hmrnet(2.0), 1.0))  # empty foreground (K = 2)

    out = {"num_cases": len(cases)}
    for k, (x, y, keep_dim, o, gl) in enumerate(cases):
        xk = x.clone().requires_grad_(True)
        loss = dice_ce(xk, y, o)
        loss.backward(torch.tensor(gl))
        pre = f"case{k}/"
        stored = y.unsqueeze(1) if keep_dim else y
        out.update({pre + "input": x, pre + "labels": stored.double(), pre + "smooth_nr": o["snr"],
                    pre + "smooth_dr": o["sdr"] + (1e-8 if o["nnunet_eps"] else 0.0), pre + "theta": o["theta"],
                    pre + "batch": int(o["batch"]), pre + "include_background": int(o["bg"]),
                    pre + "negative": int(o["negative"]), pre + "has_ce_weight": int(o["ce_weight"] is not None),
                    pre + "ce_weight": torch.tensor(o["ce_weight"] or [0.0]),
                    pre + "has_ignore": int(o["ignore"] is not None), pre + "ignore_index": o["ignore"] or 0,
                    pre + "weight_ce": o["wce"], pre + "weight_dice": o["wd"], pre + "grad_loss": gl,
                    pre + "loss": loss, pre + "grad": xk.grad})
    common.write(outdir, "dice_ce", out)
