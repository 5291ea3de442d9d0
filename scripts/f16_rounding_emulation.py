#!/usr/bin/python3
"""How far f16 rounding moves the weight gradients of one step, in PyTorch (CPU), for the models
of scripts/torch_reference.py at batch 4: the conv and linear layers' inputs, weights and output
gradients rounded to f16 (what wgcnn's Precision::F16Mixed and PyTorch's autocast do), loss
scale 1024, against the f32 step. Prints ‖g16 − g32‖ / ‖g32‖ per parameter (first layers).

Used in tests/mixed_precision.rs and docs/results/issue17-mixed-precision.md: on Xception-mini
batch norm's backward pass cancels most of each gradient, so the rounding grows to tens of per
cent of the first layers' weight gradients; on ResNet-8 and LeNet-5 it stays at a few per cent.

    /usr/bin/python3 scripts/f16_rounding_emulation.py
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as tr  # noqa: E402


class Round(torch.autograd.Function):
    """x → f16 → f32 forward, and the same for the gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.half().float()

    @staticmethod
    def backward(ctx, g):
        return g.half().float()


ROUND = [False]
conv_forward = nn.Conv2d._conv_forward
linear_forward = nn.Linear.forward


def rounded_conv(self, x, w, b):
    if ROUND[0]:
        x, w = Round.apply(x), Round.apply(w)
    return conv_forward(self, x, w, b)


def rounded_linear(self, x):
    if ROUND[0]:
        return F.linear(Round.apply(x), Round.apply(self.weight), self.bias)
    return linear_forward(self, x)


nn.Conv2d._conv_forward = rounded_conv
nn.Linear.forward = rounded_linear

MODELS = [
    ("xception_mini (8, 16, 32)", lambda: tr.XceptionMini((8, 16, 32)), (1, 28, 28)),
    ("resnet8", lambda: tr.ResNetCifar(8), (3, 32, 32)),
    ("lenet5", tr.lenet5, (1, 28, 28)),
]

for name, make, shape in MODELS:
    torch.manual_seed(0)
    net = make()
    net.train()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # the same network both times
    x, y = torch.rand(4, *shape), torch.randint(0, 10, (4,))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    grads = {}
    for rnd in (False, True):
        net.load_state_dict(state)
        net.zero_grad()
        ROUND[0] = rnd
        scale = 1024.0 if rnd else 1.0
        (F.cross_entropy(net(x), y) * scale).backward()
        grads[rnd] = [(n, p.grad.clone() / scale) for n, p in net.named_parameters()]
    print(name)
    for (n, a), (_, b) in list(zip(grads[False], grads[True]))[:6]:
        print(f"  {n:28} {((a - b).norm() / a.norm()).item():.3e}")
