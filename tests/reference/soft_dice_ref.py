"""Soft Dice loss (MMFNet spec §3) written out in torch; autograd gives dL/dp.

batch=True: one ratio over every element. batch=False: MONAI's DiceLoss(batch=False) formula, a ratio per
(n, c) over the remaining axes, then the mean. Each case stores p, g, options, grad_loss, the loss and
grad_loss * dL/dp.
"""
import torch

import common


def soft_dice(p, g, smooth_nr, smooth_dr, batch):
    if batch:
        inter, total = (p * g).sum(), p.sum() + g.sum()
    else:
        n, c = p.shape[0], p.shape[1]
        pf, gf = p.reshape(n, c, -1), g.reshape(n, c, -1)  # also rank 2: one element per group
        inter, total = (pf * gf).sum(-1), pf.sum(-1) + gf.sum(-1)
    return (1.0 - (2.0 * inter + smooth_nr) / (total + smooth_dr)).mean()


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)
    cases = []

    def binary(shape, rate):
        return (torch.rand(shape) < rate).double()

    # (p, g, smooth_nr, smooth_dr, batch, grad_loss)
    shape = (2, 3, 4, 5, 6)
    p = torch.sigmoid(torch.randn(shape) * 2)
    g = binary(shape, 0.3)
    cases.append((p, g, 1.0, 1.0, True, 1.0))
    cases.append((p, g, 1.0, 1.0, False, 1.0))
    shape = (3, 2, 5, 4)  # soft targets, MONAI's default smoothing
    cases.append((torch.rand(shape), torch.rand(shape), 1e-5, 1e-5, False, 0.7))
    cases.append((torch.rand(shape), torch.rand(shape), 1e-5, 1e-5, True, -1.3))
    shape = (2, 1, 4, 12, 8)  # the MMFNet reference shape, no numerator smoothing
    cases.append((torch.sigmoid(torch.randn(shape)), binary(shape, 0.2), 0.0, 1e-6, True, 1.0))
    cases.append((torch.rand(4, 3), binary((4, 3), 0.5), 0.5, 2.0, False, 2.0))  # rank 2: one voxel per group
    # empty labels in some groups, exact 0 and 1 probabilities
    p = torch.rand(2, 2, 3, 4)
    g = binary((2, 2, 3, 4), 0.5)
    g[0, 0] = 0.0
    g[1, 1] = 1.0
    p[0, 1, 0, :] = 0.0
    p[1, 0, 2, :] = 1.0
    cases.append((p, g, 1.0, 1.0, False, 1.0))
    cases.append((p, g, 1.0, 1.0, True, 1.0))
    cases.append((torch.rand(7), binary((7,), 0.4), 2.0, 0.5, True, 1.0))  # rank 1

    out = {"num_cases": len(cases)}
    for k, (p, g, snr, sdr, batch, gl) in enumerate(cases):
        pk = p.clone().requires_grad_(True)
        loss = soft_dice(pk, g, snr, sdr, batch)
        loss.backward(torch.tensor(gl))
        pre = f"case{k}/"
        out.update({pre + "p": p, pre + "g": g, pre + "smooth_nr": snr, pre + "smooth_dr": sdr,
                    pre + "batch": int(batch), pre + "grad_loss": gl, pre + "loss": loss, pre + "grad": pk.grad})
    common.write(outdir, "soft_dice", out)
