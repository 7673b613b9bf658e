"""Deep supervision: L = Σ_k w_k loss(z_k, y_k), terms with w_k == 0 skipped (nnU-Net MultipleOutputLoss2).

maml: DiceCE (nnU-Net preset) over 3 outputs, weights nnU-Net 1, 1/2, 0 normalised = 2/3, 1/3, 0, targets
y_k[o] = y[f o + f/2] with f = 2^k (MAML spec §3.2). hmrnet: DiceCE (1 - fn-Dice, theta 2.5) + CE over 4 outputs,
weights 0.4, 0.3, 0.3, 0, targets label[::s] (HMRNet spec §3). ce: plain cross-entropy, unnormalised weights."""
import torch

import common
from dice_ce_ref import dice_ce, hmrnet, nnunet


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    common.seed(0)
    out = {}
    setups = []
    # maml
    y = torch.randint(0, 3, (2, 8, 12, 16))
    ys = [y[:, f // 2::f, f // 2::f, f // 2::f] if f > 1 else y for f in (1, 2, 4)]
    zs = [torch.randn(2, 3, *t.shape[1:]) * 2 for t in ys]
    setups.append(("maml", zs, ys, [2 / 3, 1 / 3, 0.0], lambda z, t: dice_ce(z, t, nnunet()), 1.0))
    # hmrnet
    y = (torch.rand(2, 8, 16, 24) < 0.3).long()
    ys = [y[:, ::s, ::s, ::s] for s in (1, 2, 4, 8)]
    zs = [torch.randn(2, 2, *t.shape[1:]) * 2 for t in ys]
    setups.append(("hmrnet", zs, ys, [0.4, 0.3, 0.3, 0.0], lambda z, t: dice_ce(z, t, hmrnet(2.5)), 1.0))
    # plain CE, weights as given (not normalised)
    y = torch.randint(0, 4, (2, 4, 6, 8))
    ys = [y, y[:, ::2, ::2, ::2]]
    zs = [torch.randn(2, 4, *t.shape[1:]) for t in ys]
    setups.append(("ce", zs, ys, [1.0, 0.5], lambda z, t: torch.nn.functional.cross_entropy(z, t), -2.0))

    for name, zs, ys, w, fn, gl in setups:
        zk = [z.clone().requires_grad_(True) for z in zs]
        loss = 0.0
        for k in range(len(zs)):
            if w[k] != 0:
                loss = loss + w[k] * fn(zk[k], ys[k])
        loss.backward(torch.tensor(gl))
        out.update({f"{name}/num_outputs": len(zs), f"{name}/weights": torch.tensor(w), f"{name}/loss": loss,
                    f"{name}/grad_loss": gl})
        for k in range(len(zs)):
            pre = f"{name}/out{k}/"
            out.update({pre + "input": zs[k], pre + "labels": ys[k].unsqueeze(1).double(),
                        pre + "skipped": int(zk[k].grad is None),
                        pre + "grad": zk[k].grad if zk[k].grad is not None else torch.zeros(1)})
    common.write(outdir, "deep_supervision", out)
