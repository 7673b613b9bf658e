"""Fixtures for tests/io/hdf5_test.cpp: PyTorch weights converted by tools/torch2h5.py, and damaged files.

Writes to OUTDIR:
  io_torch.pt     state_dict of IoNet (float32, BatchNorm running stats and num_batches_tracked non-trivial)
  io_torch.h5     io_torch.pt converted by `tools/torch2h5.py --model-name io_net` (run as a subprocess)
  io.h5           expected values: "expected/<key>" in float64, counters as int64 (the key order of
                  io_torch.h5 is checked here; the C++ test checks it against its mirror module)
  io_bad_*.h5     files the C++ reader must refuse with io_error: string, compound, enum (bool), vlen,
                  null-dataspace and never-written datasets, and a file claiming a newer mmnet_format_version
  io_plain.h5     a plain h5py file (no creation order, nested groups, h5py's variable-length attributes)
  io_plain_small.h5  h5py's default format (no checksums) with creation order, as common.write makes fixtures
"""
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH2H5 = os.path.join(HERE, "..", "..", "tools", "torch2h5.py")


class Block(nn.Module):
    def __init__(self, cin, cout, kernel):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel)
        self.bn = nn.BatchNorm3d(cout)


class IoNet(nn.Module):
    """Conv3d + BatchNorm3d blocks in a ModuleList: keys like 'blocks.0.conv.weight'. Shapes have distinct axes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(2, 3, (3, 2, 1), bias=False)
        self.blocks = nn.ModuleList([Block(3, 4, (1, 3, 2)), Block(4, 5, (2, 1, 3))])
        self.head = nn.Conv3d(5, 2, 1)


# The C++ test's mirror of IoNet (tests/io/hdf5_test.cpp) lists these keys in this order.
EXPECTED_KEYS = ["stem.weight"] + [
    f"blocks.{i}.{k}" for i in range(2) for k in (
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
        "bn.num_batches_tracked")
] + ["head.weight", "head.bias"]


def make_net():
    """IoNet in float32 with trained-looking BatchNorm state: 3 and 5 tracked batches."""
    common.seed(11)
    net = IoNet().to(torch.float32)
    with torch.no_grad():
        for i, b in enumerate(net.blocks):
            b.bn.weight.uniform_(0.5, 1.5)
            b.bn.bias.uniform_(-0.5, 0.5)
    net.train()
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float32)
    with torch.no_grad():
        for _ in range(3):
            net.blocks[0].bn(net.blocks[0].conv(x) * 2 + 1)
        y = torch.randn(2, 4, 5, 6, 7, dtype=torch.float32)
        for _ in range(5):
            net.blocks[1].bn(net.blocks[1].conv(y) - 0.5)
    net.eval()
    return net


def convert(pt, h5, model_name):
    subprocess.run([sys.executable, TORCH2H5, pt, h5, "--model-name", model_name], check=True,
                   stdout=subprocess.DEVNULL)


def write_bad_files(outdir):
    def new(name):
        return h5py.File(os.path.join(outdir, name), "w", track_order=True)

    with new("io_bad_string.h5") as f:
        f.create_dataset("weight", data=np.array([b"abc", b"defg"]))
    with new("io_bad_compound.h5") as f:
        f.create_dataset("weight", data=np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")]))
    with new("io_bad_enum.h5") as f:
        f.create_dataset("mask", data=np.array([True, False, True]))
    with new("io_bad_vlen.h5") as f:
        f.create_dataset("weight", data=np.array(["x", "yy"], dtype=object), dtype=h5py.string_dtype())
    with new("io_bad_null.h5") as f:
        f.create_dataset("weight", data=h5py.Empty("f4"))
    with new("io_bad_unwritten.h5") as f:
        f.create_dataset("weight", shape=(3, 2), dtype="f4")  # allocated late, never written
    with new("io_bad_version.h5") as f:
        f.attrs["mmnet_format_version"] = "2"
        f.create_dataset("weight", data=np.ones(2, dtype=np.float32))
    # Plain h5py: no creation order, nested groups, variable-length UTF-8 and numeric attributes.
    with h5py.File(os.path.join(outdir, "io_plain.h5"), "w") as f:
        f.attrs["model_name"] = "plain-ü"
        f.attrs["epochs"] = np.int64(12)
        f.attrs["lr"] = 0.5
        f.attrs["sizes"] = np.array([1, 2, 3])
        f.create_dataset("zeta", data=np.arange(3, dtype=np.float32))
        f.create_dataset("alpha", data=np.arange(4, dtype=np.float64).reshape(2, 2))
        f.create_dataset("grp/inner", data=np.array(7, dtype=np.int32))
        f.create_dataset("half", data=np.array([0.5, -2.0], dtype=np.float16))
    # As tests/reference/common.py writes fixtures: h5py's defaults (no checksums) with creation order.
    with new("io_plain_small.h5") as f:
        f.create_dataset("w", data=np.arange(6, dtype=np.float32).reshape(2, 3))
        f.create_dataset("b", data=np.array([0.25, -1.5]))
        f.create_dataset("n", data=np.array(4, dtype=np.int64))


def generate(outdir):
    os.makedirs(outdir, exist_ok=True)
    net = make_net()
    sd = net.state_dict()
    assert list(sd.keys()) == EXPECTED_KEYS, list(sd.keys())
    assert sd["blocks.0.bn.num_batches_tracked"].item() == 3 and sd["blocks.1.bn.num_batches_tracked"].item() == 5
    pt = os.path.join(outdir, "io_torch.pt")
    h5 = os.path.join(outdir, "io_torch.h5")
    torch.save(sd, pt)
    convert(pt, h5, "io_net")

    # The converted file keeps order, dtypes, shapes and values.
    with h5py.File(h5, "r") as f:
        order = []  # h5py's keys() ignores the root's creation order under HDF5 1.10
        f.id.links.iterate(lambda n: order.append(n.decode()), idx_type=h5py.h5.INDEX_CRT_ORDER)
        assert order == EXPECTED_KEYS, order
        for k, v in sd.items():
            d = f[k]
            assert d.shape == tuple(v.shape) and d.dtype == v.numpy().dtype, (k, d.shape, d.dtype)
            assert np.array_equal(d[()], v.numpy()), k

    entries = {}
    for k, v in sd.items():
        entries["expected/" + k] = v if v.dtype == torch.int64 else v.to(torch.float64)
    common.write(outdir, "io", entries)
    write_bad_files(outdir)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
