"""torch.nn.CrossEntropyLoss on logits with integer labels: loss and grad_loss * dL/dlogits for several shapes,
class weights, ignore_index, both reductions, both label layouts (N x 1 x ... and N x ...) and extreme logits."""
import torch

import common


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)
    cases = []  # (logits, labels as stored, labels rank form, weight or None, ignore or None, reduction, grad_loss)

    def labels(shape, c):
        return torch.randint(0, c, shape)

    shape = (2, 3, 4, 5, 6)
    x = torch.randn(shape) * 2
    y = labels((2, 4, 5, 6), 3)
    cases.append((x, y, True, None, None, "mean", 1.0))
    cases.append((x, y, False, [0.2, 1.0, 3.0], None, "mean", 1.0))
    y_ign = y.clone()
    y_ign[0, 1, :, :3] = 255
    y_ign[1, 3, 2, :] = 255
    cases.append((x, y_ign, True, [0.5, 2.0, 1.5], 255, "mean", -0.7))
    cases.append((x, y_ign, True, None, 255, "sum", 1.0))
    cases.append((x, y, True, [1.0, 0.0, 2.0], None, "sum", 2.0))  # a zero class weight
    # binary, labels with no foreground at all (empty foreground)
    shape = (2, 2, 3, 5, 4)
    cases.append((torch.randn(shape), torch.zeros((2, 3, 5, 4), dtype=torch.int64), True, None, None, "mean", 1.0))
    # rank 2 classification logits and rank 3
    cases.append((torch.randn(7, 4) * 3, labels((7,), 4), False, [1.0, 2.0, 0.5, 0.25], None, "mean", 1.0))
    cases.append((torch.randn(3, 5, 6), labels((3, 6), 5), True, None, -100, "mean", 1.5))
    # extreme logits
    x = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, 30.0], [1e-3, 0.0, -17.0], [45.0, 45.0, -45.0]])
    cases.append((x, torch.tensor([0, 0, 2, 1]), False, None, None, "mean", 1.0))
    # ignore everywhere but one voxel
    shape = (1, 3, 2, 3, 2)
    y = torch.full((1, 2, 3, 2), 7, dtype=torch.int64)
    y[0, 1, 2, 0] = 2
    cases.append((torch.randn(shape), y, True, [0.3, 0.4, 0.6], 7, "mean", 1.0))

    out = {"num_cases": len(cases)}
    for k, (x, y, keep_dim, w, ign, red, gl) in enumerate(cases):
        xk = x.clone().requires_grad_(True)
        kw = {"reduction": red}
        if w is not None:
            kw["weight"] = torch.tensor(w)
        if ign is not None:
            kw["ignore_index"] = ign
        loss = torch.nn.CrossEntropyLoss(**kw)(xk, y)
        loss.backward(torch.tensor(gl))
        stored = y.unsqueeze(1) if keep_dim else y
        pre = f"case{k}/"
        out.update({pre + "input": x, pre + "labels": stored.double(), pre + "sum": int(red == "sum"),
                    pre + "has_weight": int(w is not None), pre + "weight": torch.tensor(w if w else [0.0]),
                    pre + "has_ignore": int(ign is not None), pre + "ignore_index": 0 if ign is None else ign,
                    pre + "grad_loss": gl, pre + "loss": loss, pre + "grad": xk.grad})
    common.write(outdir, "cross_entropy", out)
