"""Focal loss on logits, written out in torch (autograd gives dL/dlogits).

softmax: FL_v = -a_v (1 - p_t)^gamma log p_t with integer labels, mean over voxels (cascaded-FCN spec §3);
a_v = class_weight[y] * alpha_c[y] (1 - alpha for class 0, alpha otherwise) * weight_map[v].
sigmoid: MONAI's sigmoid_focal_loss (exp(gamma logsigmoid(-x(2t-1))) * bce), mean over elements;
a = (alpha t + (1 - alpha)(1 - t)) * class_weight[c] * weight_map.
gamma = 0 without weights is also checked against F.cross_entropy / F.binary_cross_entropy_with_logits here.
"""
import torch
import torch.nn.functional as F

import common


def softmax_focal(x, y, gamma, alpha, cw, wmap, red):
    logp = F.log_softmax(x, 1).gather(1, y.unsqueeze(1)).squeeze(1)  # N x ...
    pt = logp.exp()
    fl = -((1 - pt) ** gamma) * logp
    c = x.shape[1]
    w = torch.ones(c)
    if cw is not None:
        w = w * torch.tensor(cw)
    if alpha is not None:
        w = w * torch.tensor([1 - alpha] + [alpha] * (c - 1))
    fl = fl * w[y]
    if wmap is not None:
        fl = fl * wmap.reshape(fl.shape)
    return fl.mean() if red == "mean" else fl.sum()


def sigmoid_focal(x, t, gamma, alpha, cw, wmap, red):
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    fl = torch.exp(gamma * F.logsigmoid(-x * (t * 2 - 1))) * bce
    if alpha is not None:
        fl = fl * (alpha * t + (1 - alpha) * (1 - t))
    if cw is not None:
        fl = fl * torch.tensor(cw).reshape([1, -1] + [1] * (x.dim() - 2))
    if wmap is not None:
        fl = fl * wmap  # broadcasts N x 1 x ... over channels
    return fl.mean() if red == "mean" else fl.sum()


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)
    cases = []  # (mode, x, target, gamma, alpha, class_weight, weight_map, reduction, grad_loss, keep_dim)

    shape = (2, 3, 4, 5, 6)
    x = torch.randn(shape) * 2
    y = torch.randint(0, 3, (2, 4, 5, 6))
    wmap = torch.rand(2, 1, 4, 5, 6) * 3
    for gamma in (0.0, 2.0):
        cases.append(("softmax", x, y, gamma, None, None, None, "mean", 1.0, True))
    cases.append(("softmax", x, y, 0.5, None, [0.2, 1.0, 3.0], wmap, "mean", 1.0, False))
    cases.append(("softmax", x, y, 2.0, 0.25, None, wmap, "sum", 0.5, True))
    cases.append(("softmax", x, y, 3.0, 0.75, [1.0, 2.0, 0.5], None, "mean", -1.2, True))
    # binary softmax, empty foreground, large logits (p_t close to 1 for part of the voxels)
    shape = (2, 2, 3, 5, 4)
    x2 = torch.randn(shape) * 6
    cases.append(("softmax", x2, torch.zeros((2, 3, 5, 4), dtype=torch.int64), 2.0, None, None, None, "mean", 1.0, True))
    cases.append(("softmax", torch.randn(7, 4) * 3, torch.randint(0, 4, (7,)), 2.0, None, None, None, "mean", 1.0, False))
    # sigmoid: binary and soft targets, alpha, class weights, weight maps (full and broadcast)
    shape = (2, 3, 4, 5, 6)
    xs = torch.randn(shape) * 2
    tb = (torch.rand(shape) < 0.3).double()
    ts = torch.rand(shape)
    cases.append(("sigmoid", xs, tb, 0.0, None, None, None, "mean", 1.0, True))
    cases.append(("sigmoid", xs, tb, 2.0, None, None, None, "mean", 1.0, True))
    cases.append(("sigmoid", xs, ts, 2.0, 0.25, [0.5, 1.0, 2.0], torch.rand(shape) * 2, "mean", 1.0, True))
    cases.append(("sigmoid", xs, tb, 1.5, 0.6, None, torch.rand(2, 1, 4, 5, 6) * 2, "sum", 0.3, True))
    cases.append(("sigmoid", torch.randn(2, 1, 3, 4, 5) * 8, torch.zeros(2, 1, 3, 4, 5), 2.0, None, None, None, "mean", 1.0, True))

    out = {"num_cases": len(cases)}
    for k, (mode, x, t, gamma, alpha, cw, wmap, red, gl, keep_dim) in enumerate(cases):
        xk = x.clone().requires_grad_(True)
        if mode == "softmax":
            loss = softmax_focal(xk, t, gamma, alpha, cw, wmap, red)
            if gamma == 0 and alpha is None and cw is None and wmap is None:
                ce = F.cross_entropy(x, t, reduction=red)
                assert abs(loss.item() - ce.item()) <= 1e-14 * abs(ce.item())
            stored = (t.unsqueeze(1) if keep_dim else t).double()
        else:
            loss = sigmoid_focal(xk, t, gamma, alpha, cw, wmap, red)
            if gamma == 0 and alpha is None and cw is None and wmap is None:
                bce = F.binary_cross_entropy_with_logits(x, t, reduction=red)
                assert abs(loss.item() - bce.item()) <= 1e-14 * abs(bce.item())
            stored = t
        loss.backward(torch.tensor(gl))
        pre = f"case{k}/"
        out.update({pre + "sigmoid": int(mode == "sigmoid"), pre + "input": x, pre + "target": stored,
                    pre + "gamma": gamma, pre + "has_alpha": int(alpha is not None),
                    pre + "alpha": 0.0 if alpha is None else alpha, pre + "has_class_weight": int(cw is not None),
                    pre + "class_weight": torch.tensor(cw if cw else [0.0]), pre + "has_weight_map": int(wmap is not None),
                    pre + "weight_map": wmap if wmap is not None else torch.zeros(1), pre + "sum": int(red == "sum"),
                    pre + "grad_loss": gl, pre + "loss": loss, pre + "grad": xk.grad})
    common.write(outdir, "focal", out)
