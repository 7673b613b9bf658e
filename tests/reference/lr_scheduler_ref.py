"""torch.optim.lr_scheduler (torch 1.13): lr sequences of StepLR, ExponentialLR, CosineAnnealingLR, PolynomialLR
and ReduceLROnPlateau over 40+ steps.

Per case: lr[0] after construction, lr[t] after the t-th step() (recursive form, torch's get_last_lr()[0]);
closed/epochs and closed/lr: step(epoch) at jumping epochs (torch's deprecated closed-form path); torch_state/*:
the scheduler's numeric state_dict() entries after all steps. nnunet/*: nnU-Net's PolyLRScheduler formula
initial_lr * (1 - e / max_steps) ** exponent, computed in Python. Plateau cases step on a metric sequence
(noisy, with plateaus, ties and one NaN) and record lr, best, num_bad_epochs and cooldown_counter per step.
"""
import math
import warnings

import numpy as np
import torch

import common

STEPS = 40
CLOSED_EPOCHS = [0, 1, 2, 7, 3, 14, 15, 40, 29, 30, 31, 10, 20, 21, 0, 13, 26, 39, 5]

CASES = {
    "step": (0.1, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3)),
    "step_every": (0.02, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.85)),
    "exponential": (0.05, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    "exponential_continuous": (1e-3, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9 ** (1 / 5))),
    "cosine": (0.1, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-4)),
    "cosine_zero": (0.3, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=13)),
    "poly": (0.01, lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=30, power=0.9)),
    "poly_linear": (0.5, lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=25, power=1.0)),
    "poly_square": (2e-4, lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=33, power=2.0)),
}

PLATEAU_STEPS = 45


def metric_sequence():
    rng = np.random.RandomState(5)
    m = []
    for t in range(PLATEAU_STEPS):
        if t < 8:
            v = 1.0 / (1 + 0.3 * t)
        elif t < 20:
            v = 0.30 + 0.004 * rng.randn()  # plateau with noise
        elif t < 26:
            v = 0.30 - 0.02 * (t - 19)  # improvement
        else:
            v = 0.17 + 0.0005 * (t % 3)  # plateau with ties
        m.append(v)
    m[12] = 0.30  # two equal values in a row
    m[13] = 0.30
    m[30] = float("nan")
    return m


PLATEAU = {
    "min_rel": (0.1, "metric", dict(mode="min", factor=0.5, patience=3)),
    "min_abs_cooldown": (0.05, "metric", dict(mode="min", factor=0.3, patience=2, threshold=0.01,
                                              threshold_mode="abs", cooldown=3, min_lr=1e-3)),
    "max_rel": (0.02, "dice", dict(mode="max", factor=0.2, patience=4, threshold=1e-3)),
    "max_abs_eps": (0.05, "dice", dict(mode="max", factor=0.9, patience=1, threshold=0.0, threshold_mode="abs",
                                       eps=1e-3)),
    "maml_like": (3e-4, "ema", dict(mode="min", factor=0.2, patience=2, threshold=1e-2, threshold_mode="abs")),
    "defaults": (1e-3, "metric", dict()),
}


def optimizer(lr):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def numeric_state(sched):
    out = {}
    for k, v in sched.state_dict().items():
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, (int, float)):
            out[k] = v
        elif isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
            out[k] = np.asarray(v, dtype=np.float64)
    return out


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    out = {"num_steps": STEPS, "closed_epochs": np.asarray(CLOSED_EPOCHS, dtype=np.int64)}
    warnings.simplefilter("ignore")  # step(epoch) is deprecated in torch; its closed form is what we test
    for name, (lr, make) in CASES.items():
        opt = optimizer(lr)
        sched = make(opt)
        lrs = [sched.get_last_lr()[0]]
        for _ in range(STEPS):
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        out[f"{name}/lr0"] = lr
        out[f"{name}/lr"] = np.asarray(lrs)
        for k, v in numeric_state(sched).items():
            out[f"{name}/torch_state/{k}"] = v
        opt = optimizer(lr)
        sched = make(opt)
        closed = []
        for e in CLOSED_EPOCHS:
            opt.step()
            sched.step(e)
            closed.append(sched.get_last_lr()[0])
        out[f"{name}/closed_lr"] = np.asarray(closed)

    # nnU-Net's PolyLRScheduler, lr set at the start of epoch e by step(e)
    initial_lr, max_steps, exponent = 0.01, 30, 0.9
    out["nnunet/initial_lr"] = initial_lr
    out["nnunet/max_steps"] = max_steps
    out["nnunet/exponent"] = exponent
    out["nnunet/lr"] = np.asarray([initial_lr * (1 - e / max_steps) ** exponent for e in range(max_steps)])

    metric = metric_sequence()
    dice = [1.0 - v for v in metric]
    ema, ma = [], None
    for v in metric[:30] + metric[31:] + [0.17 + 0.0005 * (t % 3) for t in range(30)]:  # nnU-Net v1's loss EMA
        ma = v if ma is None else 0.93 * ma + 0.07 * v
        ema.append(ma)
    sequences = {"metric": metric, "dice": dice, "ema": ema}
    for k, v in sequences.items():
        out[f"plateau_metric/{k}"] = np.asarray(v)
    for name, (lr, seq, kw) in PLATEAU.items():
        opt = optimizer(lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
        full = dict(mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel", cooldown=0,
                    min_lr=0.0, eps=1e-8)
        full.update(kw)
        p = f"plateau/{name}/"
        out[p + "lr0"] = lr
        out[p + "sequence"] = list(sequences).index(seq)  # 0 metric, 1 dice, 2 ema
        out[p + "mode_max"] = int(full["mode"] == "max")
        out[p + "threshold_abs"] = int(full["threshold_mode"] == "abs")
        for k in ("factor", "threshold", "min_lr", "eps"):
            out[p + k] = float(full[k])
        for k in ("patience", "cooldown"):
            out[p + k] = int(full[k])
        lrs, best, bad, cool = [], [], [], []
        for m in sequences[seq]:
            opt.step()
            sched.step(m)
            lrs.append(opt.param_groups[0]["lr"])
            best.append(sched.best)
            bad.append(sched.num_bad_epochs)
            cool.append(sched.cooldown_counter)
        out[p + "lr"] = np.asarray(lrs)
        out[p + "best"] = np.asarray(best)
        out[p + "num_bad_epochs"] = np.asarray(bad, dtype=np.int64)
        out[p + "cooldown_counter"] = np.asarray(cool, dtype=np.int64)
    common.write(outdir, "lr_scheduler", out)
