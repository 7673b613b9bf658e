"""Label down-sampling by integer per-axis factors: HMRNet's strided picking label[:, :, ::fd, ::fh, ::fw] and
MAML's centre picking label[f*o + f/2] (= label[:, :, fd//2::fd, fh//2::fh, fw//2::fw]), on integer labels
stored as floats, with divisible and non-divisible extents."""
import torch

import common

# name, label shape, factor (d, h, w)
CASES = [
    ("f2", (2, 1, 16, 24, 32), (2, 2, 2)),
    ("f4", (2, 1, 16, 24, 32), (4, 4, 4)),
    ("f8", (2, 1, 16, 24, 32), (8, 8, 8)),
    ("f221", (2, 1, 16, 24, 8), (2, 2, 1)),
    ("f884", (2, 1, 16, 24, 8), (8, 8, 4)),
    ("odd_243", (2, 1, 7, 9, 5), (2, 4, 3)),
    ("odd_125", (1, 1, 7, 9, 5), (1, 2, 5)),
    ("odd_large", (1, 1, 3, 9, 6), (5, 8, 7)),
    ("two_channels", (2, 2, 6, 5, 4), (2, 3, 2)),
    ("identity", (1, 1, 3, 4, 5), (1, 1, 1)),
]


def generate(outdir):
    common.seed(0)
    out = {}
    for name, shape, (fd, fh, fw) in CASES:
        y = torch.randint(0, 4, shape).double()
        out[name + "/input"] = y
        out[name + "/factor"] = torch.tensor((fd, fh, fw), dtype=torch.int64)
        out[name + "/strided"] = y[:, :, ::fd, ::fh, ::fw]
        if shape[2] > fd // 2 and shape[3] > fh // 2 and shape[4] > fw // 2:
            out[name + "/centered"] = y[:, :, fd // 2 :: fd, fh // 2 :: fh, fw // 2 :: fw]
    common.write(outdir, "label_resample", out)


if __name__ == "__main__":
    import sys
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
