"""ConResNet residual loss (spec §3.3, the official BCELossBoud), written out in torch:
t_k = ln(S / (Σ_{n,s} T[n,k,s] + 1)) (per (n, k) with scope 'sample'), q = clamp(P or sigmoid(P), 1e-3, 1 - 1e-3),
l_k = -(1/(N S)) Σ [t_k T ln q + (1 - T) ln(1 - q)], L = mean_k l_k. torch.clamp passes the gradient on the closed
interval, as the spec requires."""
import math

import torch

import common


def residual_bce(p, t, on_logits, per_sample):
    n, k = p.shape[:2]
    s = p[0, 0].numel()
    counts = t.reshape(n, k, -1).sum(-1)  # n x k
    if not per_sample:
        counts = counts.sum(0, keepdim=True).expand(n, k)
    w = torch.log(s / (counts + 1.0)).detach().reshape([n, k] + [1] * (p.dim() - 2))
    q = torch.clamp(p if on_logits else torch.sigmoid(p), 1e-3, 1 - 1e-3)
    terms = w * t * torch.log(q) + (1 - t) * torch.log(1 - q)
    return -(terms.reshape(n, k, -1).sum((0, 2)) / (n * s)).mean()


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)
    cases = []  # (p, t, on_logits, per_sample, grad_loss)
    shape = (2, 3, 4, 5, 6)
    t = (torch.rand(shape) < 0.15).double()
    t[1, 2] = 0.0  # a channel with no positive in one sample
    p = torch.rand(shape) * 1.4 - 0.2  # part of it outside [1e-3, 0.999]: no gradient there
    cases.append((p, t, True, False, 1.0))
    cases.append((p, t, True, True, 0.5))
    logits = torch.randn(shape) * 3
    cases.append((logits, t, False, False, 1.0))
    cases.append((logits, t, False, True, -2.0))
    shape = (1, 2, 3, 7, 4)  # N = 1, soft targets
    cases.append((torch.rand(shape), torch.rand(shape), True, False, 1.0))
    # exactly on the clamp bounds (float64 values 1e-3 and 1 - 1e-3): the gradient passes
    p = torch.rand(2, 1, 2, 3, 2) * 0.8 + 0.1
    p[0, 0, 0, 0, 0] = 1e-3
    p[1, 0, 1, 2, 1] = 1 - 1e-3
    cases.append((p, (torch.rand(2, 1, 2, 3, 2) < 0.5).double(), True, False, 1.0))
    on_bounds = len(cases) - 1  # float32 rounds 0.999 up, out of the band: a float64-only case (spec §8.7)
    out = {"num_cases": len(cases)}
    for k, (p, t, on_logits, per_sample, gl) in enumerate(cases):
        pk = p.clone().requires_grad_(True)
        loss = residual_bce(pk, t, on_logits, per_sample)
        loss.backward(torch.tensor(gl))
        pre = f"case{k}/"
        out.update({pre + "input": p, pre + "target": t, pre + "on_logits": int(on_logits),
                    pre + "per_sample": int(per_sample), pre + "double_only": int(k == on_bounds), pre + "grad_loss": gl, pre + "loss": loss,
                    pre + "grad": pk.grad})
    common.write(outdir, "residual_bce", out)
