"""torch.optim.AdamW (torch 1.13): parameters after each of 5 steps with fixed gradient sequences, and torch's
optimizer.state_dict() after the last step (flattened to mmnet's names, see sgd_ref.flat_state).

Same problem as sgd_ref.py / adam_ref.py: param2 is frozen (never decayed either), param3 starts at step 3.
"""
import torch

import common
import sgd_ref

CASES = {
    "default": dict(lr=1e-3),  # weight_decay 1e-2
    "strong_decay": dict(lr=0.05, weight_decay=0.5, betas=(0.8, 0.99), eps=1e-6),
    "no_decay": dict(lr=0.01, weight_decay=0.0),
    "amsgrad": dict(lr=0.02, betas=(0.9, 0.9), weight_decay=0.1, amsgrad=True),
    "amsgrad_large_eps": dict(lr=0.03, betas=(0.5, 0.9), eps=1e-2, weight_decay=0.05, amsgrad=True),
}


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    init, grads = sgd_ref.problem(2)
    out = {}
    sgd_ref.write_problem(out, init, grads)
    for case, kw in CASES.items():
        full = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)
        full.update(kw)
        out[f"{case}/lr"] = kw["lr"]
        out[f"{case}/beta1"] = full["betas"][0]
        out[f"{case}/beta2"] = full["betas"][1]
        out[f"{case}/eps"] = full["eps"]
        out[f"{case}/weight_decay"] = full["weight_decay"]
        out[f"{case}/amsgrad"] = int(full["amsgrad"])
        after, opt = sgd_ref.run_keep(lambda ps: torch.optim.AdamW(ps, **kw), init, grads)
        sgd_ref.write_run(out, case, after)
        sgd_ref.write_state(out, case, opt)
    common.write(outdir, "adamw", out)
