"""torch.nn.BCEWithLogitsLoss: loss and grad_loss * dL/dx for several shapes, reductions, pos_weight values,
binary and soft targets and extreme logits (+-50)."""
import torch

import common


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)

    def binary(shape, rate):
        return (torch.rand(shape) < rate).double()

    cases = []  # (x, y, reduction, pos_weight or None, grad_loss)
    shape = (2, 3, 4, 5, 6)
    x = torch.randn(shape) * 3
    y = binary(shape, 0.3)
    x[0, 0, 0, 0, :3] = 0.0
    cases.append((x, y, "mean", None, 1.0))
    cases.append((x, y, "sum", None, 0.5))
    cases.append((x, y, "mean", 4.0, 1.0))
    shape = (3, 4, 5)  # soft targets
    x, y = torch.randn(shape) * 2, torch.rand(shape)
    cases.append((x, y, "mean", 2.5, -1.5))
    cases.append((x, y, "sum", None, 1.0))
    # extreme logits: +-50 with targets 0 and 1 (both agreeing and disagreeing) and soft targets
    x = torch.tensor([50.0, -50.0, 50.0, -50.0, 50.0, -50.0, 30.0, -30.0, 0.0, 1e-3, -17.0, 45.0]).reshape(2, 6)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 0.7, 1.0, 0.0, 1.0, 0.0, 0.5, 0.25]).reshape(2, 6)
    cases.append((x, y, "mean", None, 1.0))
    cases.append((x, y, "sum", 0.3, 1.0))
    cases.append((torch.randn(17) * 5, binary((17,), 0.5), "mean", 1.0, 1.0))  # rank 1, explicit pos_weight 1
    shape = (2, 1, 4, 12, 8)
    cases.append((torch.randn(shape) * 4, binary(shape, 0.2), "mean", 0.0, 3.0))  # pos_weight 0: negatives only

    out = {"num_cases": len(cases)}
    for k, (x, y, red, pw, gl) in enumerate(cases):
        xk = x.clone().requires_grad_(True)
        crit = torch.nn.BCEWithLogitsLoss(reduction=red, pos_weight=None if pw is None else torch.tensor([pw]))
        loss = crit(xk, y)
        loss.backward(torch.tensor(gl))
        pre = f"case{k}/"
        out.update({pre + "input": x, pre + "target": y, pre + "sum": int(red == "sum"),
                    pre + "has_pos_weight": int(pw is not None), pre + "pos_weight": 1.0 if pw is None else pw,
                    pre + "grad_loss": gl, pre + "loss": loss, pre + "grad": xk.grad})
    common.write(outdir, "bce_with_logits", out)
