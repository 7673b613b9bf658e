"""MMFNet weights trained/initialised in PyTorch, loaded strictly by mmnet (issue [C] point 5): the reference MMFNet
of mmfnet_ref.py (tiny and paper configs) -> torch.save(state_dict) -> tools/torch2h5.py -> mmfnet_torch_{tiny,paper}.h5,
plus the eval-mode probabilities on fixed inputs (mmfnet_training.h5). BN running statistics are moved away from
(0, 1) by train-mode forwards so that eval mode reads them."""
import importlib.util
import os
import sys
import tempfile

import torch

import common

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import mmfnet_ref  # noqa: E402


def _torch2h5():
    path = os.path.join(here, "..", "..", "tools", "torch2h5.py")
    spec = importlib.util.spec_from_file_location("torch2h5", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _case(name, cfg, shape, seed, outdir, out, tool):
    torch.manual_seed(seed)
    net = mmfnet_ref.MMFNet(cfg)
    mmfnet_ref.randomize_bn(net)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(*shape) * 1.5 + 0.3)
    net.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        logits, _ = net(x)
    out[name + "/input"] = x
    out[name + "/prob"] = torch.sigmoid(logits)
    with tempfile.TemporaryDirectory() as tmp:
        pt = os.path.join(tmp, name + ".pt")
        torch.save(net.state_dict(), pt)
        rc = tool.main([pt, os.path.join(outdir, "mmfnet_torch_" + name + ".h5"), "--model-name", "mmfnet-" + name])
        if rc != 0:
            raise RuntimeError("torch2h5 failed for " + name)


def generate(outdir):
    os.makedirs(outdir, exist_ok=True)
    tool = _torch2h5()
    out = {}
    _case("tiny", mmfnet_ref.tiny(), (2, 3, 4, 12, 8), 3, outdir, out, tool)
    _case("paper", mmfnet_ref.config(), (1, 3, 16, 32, 48), 4, outdir, out, tool)
    common.write(outdir, "mmfnet_training", out)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    generate(sys.argv[1] if len(sys.argv) > 1 else ".")
