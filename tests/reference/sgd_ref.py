"""torch.optim.SGD: parameters after each of 5 steps with fixed gradient sequences.

Parameters: param0 (3, 4) and param1 (5,) trainable from step 1; param2 (2, 3, 2) frozen (never a grad, must not
change); param3 (4, 1) gets its first grad at step 3 (grad None before, so its momentum buffer starts there).
active_from = first step with a grad (0: never). Gradients vary in scale between steps and contain zeros.
"""
import torch

import common

SHAPES = [(3, 4), (5,), (2, 3, 2), (4, 1)]
ACTIVE_FROM = [1, 1, 0, 3]
STEPS = 5
SCALES = [3.0, 1.0, 0.2, 2.0, 0.1]


def problem(seed):
    common.seed(seed)
    init = [torch.randn(s) for s in SHAPES]
    grads = [[torch.randn(s) * SCALES[t] for s in SHAPES] for t in range(STEPS)]
    for t in range(STEPS):
        grads[t][0][0, 0] = 0.0  # an element that never moves without weight decay
    return init, grads


def run_keep(make_opt, init, grads):
    """Runs STEPS steps; returns the parameters after each step and the optimizer."""
    params = [torch.nn.Parameter(v.clone(), requires_grad=(a != 0)) for v, a in zip(init, ACTIVE_FROM)]
    opt = make_opt(params)
    after = []
    for t in range(STEPS):
        for j, p in enumerate(params):
            p.grad = grads[t][j].clone() if ACTIVE_FROM[j] != 0 and t + 1 >= ACTIVE_FROM[j] else None
        opt.step()
        after.append([p.detach().clone() for p in params])
    return after, opt


def run(make_opt, init, grads):
    return run_keep(make_opt, init, grads)[0]


# The param_groups entries mmnet stores (booleans as 0/1); torch's maximize, foreach, ... are not mirrored.
GROUP_KEYS = ["lr", "momentum", "dampening", "nesterov", "weight_decay", "betas", "eps", "amsgrad", "params"]


def write_state(out, case, opt):
    """torch's opt.state_dict() under <case>/torch_state/, flattened to mmnet's names: state.<i>.<name>
    (step as int64; a None momentum buffer is left out) and param_groups.0.<key>."""
    sd = opt.state_dict()
    p = f"{case}/torch_state/"
    for i, st in sd["state"].items():
        for k, v in st.items():
            if v is None:
                continue
            out[f"{p}state.{i}.{k}"] = int(v.item()) if k == "step" else v.detach().clone()
    group = sd["param_groups"][0]
    for k in GROUP_KEYS:
        if k not in group:
            continue
        v = group[k]
        if k in ("nesterov", "amsgrad"):
            v = int(v)
        elif k == "betas":
            v = torch.tensor(v)
        elif k == "params":
            v = torch.tensor(v, dtype=torch.int64)
        else:
            v = float(v)
        out[f"{p}param_groups.0.{k}"] = v


def write_problem(out, init, grads):
    out["num_steps"] = STEPS
    for j in range(len(SHAPES)):
        out[f"param{j}/initial"] = init[j]
        out[f"param{j}/active_from"] = ACTIVE_FROM[j]
        for t in range(STEPS):
            out[f"param{j}/grad{t + 1}"] = grads[t][j]


def write_run(out, case, after):
    for t, ps in enumerate(after):
        for j, p in enumerate(ps):
            out[f"{case}/param{j}/step{t + 1}"] = p


CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "dampening": dict(lr=0.05, momentum=0.8, dampening=0.3),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.05),
    "momentum_weight_decay": dict(lr=0.03, momentum=0.7, dampening=0.1, weight_decay=0.02),
    "nesterov_weight_decay": dict(lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.1),
}


def generate(outdir):
    torch.set_default_dtype(torch.float64)
    init, grads = problem(0)
    out = {}
    write_problem(out, init, grads)
    for case, kw in CASES.items():
        full = dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0)
        full.update(kw)
        for k, v in full.items():
            out[f"{case}/{k}"] = float(v)
        out[f"{case}/lr"] = kw["lr"]
        after, opt = run_keep(lambda ps: torch.optim.SGD(ps, **kw), init, grads)
        write_run(out, case, after)
        write_state(out, case, opt)
    common.write(outdir, "sgd", out)
