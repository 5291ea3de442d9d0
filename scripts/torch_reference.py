#!/usr/bin/env python3
"""PyTorch side-by-side for the wgcnn benchmark: training-step throughput (images/s) of the
same LeNet-5 (`wgcnn::nn::lenet5`) and Xception-mini (`wgcnn::nn::xception_mini`, widths
32,64,128) on random 1x28x28 inputs, SGD, batch 64 and 256, on CUDA if present (else CPU).

    python3 scripts/torch_reference.py [--json out.json] [--device cuda|cpu]

Each figure: warm-up steps, then steps back to back with one synchronisation at the end
(like the wgcnn bench, which reads metrics back once), eager mode, float32.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


class SamePad(nn.Module):
    """Keras/TensorFlow 'same' for stride 2, k = 3 on even sizes: one zero after."""

    def forward(self, x):
        return F.pad(x, (0, 1, 0, 1))


def separable(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False))


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), separable(cin, cout), nn.BatchNorm2d(cout),
            nn.ReLU(), separable(cout, cout), nn.BatchNorm2d(cout),
            nn.MaxPool2d(3, 2, padding=1))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class XceptionMini(nn.Module):
    def __init__(self, widths=(32, 64, 128), classes=10):
        super().__init__()
        layers = [SamePad(), nn.Conv2d(1, widths[0], 3, stride=2, bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for a, b in zip(widths, widths[1:]):
            layers.append(Block(a, b))
        last = widths[-1]
        layers += [separable(last, 2 * last), nn.BatchNorm2d(2 * last), nn.ReLU(),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25),
                   nn.Linear(2 * last, classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x / 127.5 - 1.0)


def throughput(model, batch, device, steps):
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch, 1, 28, 28, device=device) * 255
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(10):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"PyTorch {torch.__version__} on {name}")
    rows = []
    for model_name, make in [("lenet5", lenet5), ("xception_mini", XceptionMini)]:
        for batch in (64, 256):
            steps = 200 if a.device == "cuda" else 20
            ips = throughput(make(), batch, a.device, steps)
            rows.append({"model": model_name, "batch": batch, "images_per_s": ips})
            print(f"{model_name:14s} batch {batch:4d}: {ips:10.0f} images/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": name, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
