"""End-to-end proof: the tiny 3D network of include/mmnet/models/tiny_net.hpp trained for 3 Adam steps on
Dice + BCE-with-logits. Writes the initial state dict, input, labels, the loss of each step, the output and
every gradient of the first step, and the state dict (parameters and BN running statistics) after step 3.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import common


class TinyNet(nn.Module):
    """Conv3d-BN-ReLU-MaxPool-Conv3d-concat skip-Conv3d-Sigmoid, attribute names as in the C++ struct."""

    def __init__(self, cin=2, width=4):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, width, 3, padding=1, bias=False)  # BN follows: a bias would be a no-op
        self.bn1 = nn.BatchNorm3d(width)
        self.pool = nn.MaxPool3d(3, stride=1, padding=1)
        self.conv2 = nn.Conv3d(width, width, (1, 3, 3), padding=(0, 1, 1))
        self.head = nn.Conv3d(2 * width, 1, 1)

    def forward(self, x):
        skip = F.relu(self.bn1(self.conv1(x)))
        h = self.conv2(self.pool(skip))
        return self.head(torch.cat([skip, h], dim=1))  # logits; sigmoid applied for Dice


def soft_dice(p, g, eps=1.0):
    return 1 - (2 * (p * g).sum() + eps) / (p.sum() + g.sum() + eps)


def generate(outdir):
    common.seed(0)
    net = TinyNet()
    with torch.no_grad():
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.1, 0.1)
    x = torch.randn(2, 2, 6, 8, 10)
    g = (torch.rand(2, 1, 6, 8, 10) < 0.3).double()
    out = {"input": x, "target": g}
    common.state(net, "init", out)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(3):
        opt.zero_grad()
        logits = net(x)
        prob = torch.sigmoid(logits)
        loss = soft_dice(prob, g) + F.binary_cross_entropy_with_logits(logits, g)
        loss.backward()
        out[f"loss/{step}"] = loss
        if step == 0:
            out["step0/prob"] = prob
            common.grads(net, "step0/grad", out)
        opt.step()
    common.state(net, "final", out)
    net.eval()
    with torch.no_grad():
        out["eval/prob"] = torch.sigmoid(net(x))
    common.write(outdir, "tiny_net", out)
