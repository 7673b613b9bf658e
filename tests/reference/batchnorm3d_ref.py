"""BatchNorm3d against torch.nn.BatchNorm3d: train-mode output and gradients, running statistics after several
forward calls (momentum 0.1, 0.3 and None), eval-mode output and gradients, non-affine and untracked variants,
and a tiny batch (N=2, C=3, 1x1x2)."""
import torch

import common


def snapshot(module, prefix, out):
    """common.state / common.grads with copies: those store tensors that share storage with the live module, so
    later in-place updates (running stats, zero_grad) would change what is written."""
    for k, v in module.state_dict().items():
        out[prefix + "/" + k] = v.clone()


def snapshot_grads(module, prefix, out):
    for k, p in module.named_parameters():
        if p.grad is not None:
            out[prefix + "/" + k] = p.grad.clone()


def run_case(out, prefix, shape, train_calls, seed, **kwargs):
    """train_calls forward calls in train mode (gradients of the first), then one eval-mode call with backward."""
    common.seed(seed)
    c = shape[1]
    bn = torch.nn.BatchNorm3d(c, **kwargs)
    with torch.no_grad():
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        if bn.track_running_stats:
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    snapshot(bn, prefix + "/init", out)
    bn.train()
    for k in range(train_calls):
        x = (torch.randn(*shape) * 2 + torch.linspace(-1, 1, c).view(1, c, 1, 1, 1)).requires_grad_(True)
        dy = torch.randn(*shape)
        y = bn(x)
        out[f"{prefix}/train{k}/input"] = x
        out[f"{prefix}/train{k}/output"] = y
        if k == 0:
            y.backward(dy)
            out[f"{prefix}/train0/grad_output"] = dy
            out[f"{prefix}/train0/grad_input"] = x.grad
            snapshot_grads(bn, prefix + "/train0/grad", out)
        snapshot(bn, f"{prefix}/after{k}", out)
    bn.eval()
    bn.zero_grad()
    x = (torch.randn(*shape) * 2 + 0.5).requires_grad_(True)
    dy = torch.randn(*shape)
    y = bn(x)
    y.backward(dy)
    out[prefix + "/eval/input"] = x
    out[prefix + "/eval/output"] = y
    out[prefix + "/eval/grad_output"] = dy
    out[prefix + "/eval/grad_input"] = x.grad
    snapshot_grads(bn, prefix + "/eval/grad", out)


def generate(outdir):
    out = {}
    run_case(out, "default", (2, 3, 4, 5, 6), 2, 0)
    run_case(out, "momentum03", (3, 4, 2, 5, 3), 2, 1, momentum=0.3, eps=1e-3)
    run_case(out, "momentum_none", (2, 5, 3, 4, 2), 3, 2, momentum=None)
    run_case(out, "nonaffine", (2, 3, 4, 5, 6), 2, 3, affine=False)
    run_case(out, "untracked", (2, 3, 2, 5, 4), 1, 4, track_running_stats=False)
    run_case(out, "small", (2, 3, 1, 1, 2), 2, 5)
    run_case(out, "single_sample", (1, 4, 1, 2, 1), 2, 6)
    common.write(outdir, "batchnorm3d", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
