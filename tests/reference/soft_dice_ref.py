"""Soft Dice loss (MMFNet spec §3) written out in torch; autograd gives dL/dp.

batch=True: one ratio over every element (per_channel: one per channel, MONAI batch=True). batch=False: MONAI's
DiceLoss(batch=False) formula, a ratio per (n, c) over the remaining axes, then the mean. include_background=False
drops channel 0 (MONAI). The last cases use softmax probabilities with one-hot targets of stored labels.
Each case stores p, g, options, grad_loss, the loss and grad_loss * dL/dp.
"""
import torch

import common


def soft_dice(p, g, smooth_nr, smooth_dr, batch, include_bg=True, per_channel=False):
    if not include_bg:  # MONAI include_background=False: channel 0 dropped
        p, g = p[:, 1:], g[:, 1:]
    if batch and per_channel:  # MONAI batch=True: a ratio per channel over batch and space
        axes = [0] + list(range(2, p.dim()))
        inter, total = (p * g).sum(axes), p.sum(axes) + g.sum(axes)
    elif batch:
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
    cases = [c + (True, False, None) for c in cases]  # include_background, per_channel, labels

    # softmax probabilities with one-hot targets (labels stored: the test rebuilds g with losses::one_hot)
    shape = (2, 3, 4, 5, 6)
    p = torch.softmax(torch.randn(shape) * 2, 1)
    lab = torch.randint(0, 3, (2, 1, 4, 5, 6))
    g = torch.nn.functional.one_hot(lab[:, 0], 3).movedim(-1, 1).double()
    cases.append((p, g, 1e-5, 1e-5, False, 1.0, False, False, lab))  # MONAI include_background=False
    cases.append((p, g, 1e-5, 1e-5, True, 0.6, True, True, lab))     # MONAI batch=True
    cases.append((p, g, 1e-5, 1e-5, True, 1.0, False, True, lab))    # batch=True, no background
    cases.append((p, g, 1.0, 1.0, True, 1.0, False, False, lab))     # one global ratio over channels 1, 2
    lab0 = torch.zeros(2, 1, 3, 4, 5, dtype=torch.int64)              # empty foreground
    p0 = torch.softmax(torch.randn(2, 2, 3, 4, 5), 1)
    g0 = torch.nn.functional.one_hot(lab0[:, 0], 2).movedim(-1, 1).double()
    cases.append((p0, g0, 1e-5, 1e-5, False, 1.0, False, False, lab0))
    cases.append((p0, g0, 1e-5, 1e-5, True, 1.0, False, True, lab0))

    out = {"num_cases": len(cases)}
    for k, (p, g, snr, sdr, batch, gl, bg, per_channel, lab) in enumerate(cases):
        pk = p.clone().requires_grad_(True)
        loss = soft_dice(pk, g, snr, sdr, batch, bg, per_channel)
        loss.backward(torch.tensor(gl))
        pre = f"case{k}/"
        out.update({pre + "p": p, pre + "g": g, pre + "smooth_nr": snr, pre + "smooth_dr": sdr,
                    pre + "batch": int(batch), pre + "include_background": int(bg), pre + "per_channel": int(per_channel),
                    pre + "has_labels": int(lab is not None), pre + "labels": (lab if lab is not None else torch.zeros(1)).double(),
                    pre + "grad_loss": gl, pre + "loss": loss, pre + "grad": pk.grad})
    common.write(outdir, "soft_dice", out)
