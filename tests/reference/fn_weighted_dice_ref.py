"""False-negative-weighted soft Dice on probabilities (HMRNet spec §3), written out in torch:
L = mean over groups of 1 - (2TP + snr) / (2TP + theta FN + FP + sdr), groups per channel over the batch
(batch=True) or per (sample, channel), background channel dropped unless include_background."""
import torch
import torch.nn.functional as F

import common


def fn_dice(p, g, theta, snr, sdr, batch, include_bg):
    if not include_bg:
        p, g = p[:, 1:], g[:, 1:]
    axes = [0] + list(range(2, p.dim())) if batch else list(range(2, p.dim()))
    tp = (p * g).sum(axes)
    fn = ((1 - p) * g).sum(axes)
    fp = (p * (1 - g)).sum(axes)
    return (1 - (2 * tp + snr) / (2 * tp + theta * fn + fp + sdr)).mean()


def plain_dice(p, g, snr, sdr, batch, include_bg):
    if not include_bg:
        p, g = p[:, 1:], g[:, 1:]
    axes = [0] + list(range(2, p.dim())) if batch else list(range(2, p.dim()))
    return (1 - (2 * (p * g).sum(axes) + snr) / (p.sum(axes) + g.sum(axes) + sdr)).mean()


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)

    def onehot(lab, c):
        return F.one_hot(lab, c).movedim(-1, 1).double()

    cases = []  # (p, g, theta, snr, sdr, batch, include_bg, grad_loss)
    shape = (2, 2, 4, 6, 5)
    p = torch.softmax(torch.randn(shape) * 2, 1)
    g = onehot((torch.rand(2, 4, 6, 5) < 0.25).long(), 2)
    for theta in (1.0, 2.5):
        cases.append((p, g, theta, 1e-5, 1e-5, True, False, 1.0))
    cases.append((p, g, 3.5, 1e-5, 1e-5, False, False, 0.8))
    cases.append((p, g, 2.0, 1.0, 1.0, True, True, 1.0))
    shape = (2, 3, 3, 5, 4)
    p3 = torch.softmax(torch.randn(shape), 1)
    g3 = onehot(torch.randint(0, 3, (2, 3, 5, 4)), 3)
    cases.append((p3, g3, 3.0, 1e-5, 1e-5, True, False, -1.5))
    cases.append((p3, g3, 2.0, 1e-5, 1e-5, False, True, 1.0))
    # empty foreground: no voxel of class 1 anywhere
    g0 = onehot(torch.zeros(2, 4, 6, 5, dtype=torch.long), 2)
    cases.append((p, g0, 2.5, 1e-5, 1e-5, True, False, 1.0))
    # soft targets
    cases.append((torch.rand(2, 2, 3, 4, 5), torch.rand(2, 2, 3, 4, 5), 1.7, 0.0, 1e-3, False, False, 1.0))

    out = {"num_cases": len(cases)}
    for k, (p, g, theta, snr, sdr, batch, bg, gl) in enumerate(cases):
        pk = p.clone().requires_grad_(True)
        loss = fn_dice(pk, g, theta, snr, sdr, batch, bg)
        if theta == 1.0:
            plain = plain_dice(p, g, snr, sdr, batch, bg)
            assert abs(plain.item() - loss.item()) <= 1e-14
        loss.backward(torch.tensor(gl))
        pre = f"case{k}/"
        out.update({pre + "p": p, pre + "g": g, pre + "theta": theta, pre + "smooth_nr": snr, pre + "smooth_dr": sdr,
                    pre + "batch": int(batch), pre + "include_background": int(bg), pre + "grad_loss": gl,
                    pre + "loss": loss, pre + "grad": pk.grad})
    common.write(outdir, "fn_weighted_dice", out)
