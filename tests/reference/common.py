"""Shared helpers for the PyTorch reference scripts (run with Debian's /usr/bin/python3).

Each <name>_ref.py defines generate(outdir) and writes <outdir>/<name>.h5 with h5py: inputs, parameters,
outputs, input and parameter gradients, parameters after optimizer steps. Everything is computed in float64
with fixed seeds; the float tests cast inputs and compare with float tolerances.
"""
import os

import h5py
import numpy as np
import torch


def seed(s=0):
    torch.manual_seed(s)
    np.random.seed(s)


def to_np(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        if v.dtype == torch.int64:
            return v.numpy().astype(np.int64)
        return v.numpy().astype(np.float64)
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return np.array(v, dtype=np.int64)
    return np.asarray(v, dtype=np.float64)


def write(outdir, name, entries):
    """entries: dict of dataset path ('group/name' allowed) -> tensor/array/scalar. Written atomically."""
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, name + ".h5")
    tmp = path + ".tmp"
    with h5py.File(tmp, "w", track_order=True) as f:
        for key, value in entries.items():
            group = f
            for part in key.split("/")[:-1]:  # groups keep creation order too (state-dict order)
                group = group[part] if part in group else group.create_group(part, track_order=True)
            group.create_dataset(key.split("/")[-1], data=to_np(value))
    os.replace(tmp, path)
    return path


def state(module, prefix, out):
    """Adds module.state_dict() under prefix/ to out."""
    # clone: state_dict() tensors alias the live parameters, which later steps change in place
    for k, v in module.state_dict().items():
        out[prefix + "/" + k] = v.detach().clone()


def grads(module, prefix, out):
    for k, p in module.named_parameters():
        if p.grad is not None:
            out[prefix + "/" + k] = p.grad.detach().clone()  # zero_grad() zeroes in place
