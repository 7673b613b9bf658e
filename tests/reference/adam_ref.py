"""torch.optim.Adam (torch 1.13): parameters after each of 5 steps with fixed gradient sequences.

Also torch's optimizer.state_dict() after the last step, flattened (sgd_ref.write_state).
Same problem layout as sgd_ref.py: param2 is frozen, param3 gets its first grad at step 3 (so its own step
count, and with it the bias corrections, starts there). Gradient scales fall and rise so that AMSGrad's
running maximum differs from the current second moment.
"""
import torch

import common
import sgd_ref

CASES = {
    "default": dict(lr=1e-3),
    "large_lr": dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
    "amsgrad": dict(lr=0.02, amsgrad=True),  # beta2 = 0.999: v rarely falls, so the max differs little
    "amsgrad_fast_beta2": dict(lr=0.02, betas=(0.9, 0.9), amsgrad=True),  # differs by ~1e-3 from plain Adam
    "amsgrad_weight_decay": dict(lr=0.02, betas=(0.5, 0.9), eps=1e-4, weight_decay=0.05, amsgrad=True),
}


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    init, grads = sgd_ref.problem(1)
    out = {}
    sgd_ref.write_problem(out, init, grads)
    for case, kw in CASES.items():
        full = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False)
        full.update(kw)
        out[f"{case}/lr"] = kw["lr"]
        out[f"{case}/beta1"] = full["betas"][0]
        out[f"{case}/beta2"] = full["betas"][1]
        out[f"{case}/eps"] = full["eps"]
        out[f"{case}/weight_decay"] = full["weight_decay"]
        out[f"{case}/amsgrad"] = int(full["amsgrad"])
        after, opt = sgd_ref.run_keep(lambda ps: torch.optim.Adam(ps, **kw), init, grads)
        sgd_ref.write_run(out, case, after)
        sgd_ref.write_state(out, case, opt)
    common.write(outdir, "adam", out)
