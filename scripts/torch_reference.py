#!/usr/bin/env python3
"""PyTorch side-by-side for the wgcnn benchmark: training-step throughput (images/s) of the
same LeNet-5 (`wgcnn::nn::lenet5`) and Xception-mini (`wgcnn::nn::xception_mini`, widths
32,64,128) on random 1x28x28 inputs, SGD, batch 64 and 256, on CUDA if present (else CPU).
With `--resnet`, ResNet-20 (`wgcnn::nn::resnet_cifar(20, 10)`, option-B projections) on
3x32x32 inputs at batch 128 and 512 instead (what `bench -- --resnet` runs).

    python3 scripts/torch_reference.py [--json out.json] [--device cuda|cpu] [--resnet]
                                       [--best graph|compile] [--amp]

Each figure: warm-up steps, then steps back to back with one synchronisation at the end
(like the wgcnn bench, which reads metrics back once). Modes, each a row of the JSON with
its "mode":
  eager        always: float32, eager execution (launch-bound at small batches on a GPU)
  cuda_graph   --best graph (CUDA only): the whole step (forward, backward, SGD update)
               captured once as a CUDA graph and replayed, PyTorch's "whole network capture"
  compile      --best compile (PyTorch >= 2.0): torch.compile(mode="max-autotune"), eager
               loop around it (compilation happens in the warm-up, not timed)
  amp          --amp (CUDA only): channels_last, autocast to float16, dynamic loss scaling
               (torch.cuda.amp.GradScaler) — the comparison for wgcnn's f16 mixed precision
A mode this PyTorch or device cannot run is reported as not measured, never estimated.
"""
import argparse
import json
import os
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


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetCifar(nn.Module):
    """He et al. 2016 section 4.2, depth 6n+2, as wgcnn::nn::resnet_cifar."""

    def __init__(self, depth=20, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, w in enumerate((16, 32, 64)):
            for b in range(n):
                blocks.append(BasicBlock(cin, w, 2 if stage > 0 and b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def setup(model, batch, device, shape, channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = (torch.rand(batch, *shape, device=device) * 255).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, opt, x, y


def timed(step, device, steps, warmup):
    """images/s-ready seconds per step: `warmup` calls, then `steps` back to back."""
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        out = step()
    if out is not None:
        out.item()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def step_eager(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def step_cuda_graph(model, opt, x, y):
    """The whole step captured as one CUDA graph (static x, y), replayed each step."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step_eager(model, opt, x, y)()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def step():
        graph.replay()
    return step


def step_amp(model, opt, x, y):
    scaler = torch.cuda.amp.GradScaler()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss
    return step


def throughput(make, batch, device, steps, shape=(1, 28, 28), mode="eager"):
    """images/s of `mode`'s training step, or a string saying why it cannot run here."""
    warmup = 10 if steps >= 10 else 2
    if mode in ("cuda_graph", "amp") and device != "cuda":
        return f"{mode} needs CUDA"
    if mode == "compile" and not hasattr(torch, "compile"):
        return f"torch.compile needs PyTorch >= 2.0 (this is {torch.__version__})"
    model, opt, x, y = setup(make(), batch, device, shape, channels_last=mode == "amp")
    if mode == "cuda_graph":
        step = step_cuda_graph(model, opt, x, y)
    elif mode == "amp":
        step = step_amp(model, opt, x, y)
    elif mode == "compile":
        step = step_eager(torch.compile(model, mode="max-autotune"), opt, x, y)
        warmup = max(warmup, 3)
    else:
        step = step_eager(model, opt, x, y)
    return batch / timed(step, device, steps, warmup)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--resnet", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="CPU threads (default: every logical CPU)")
    ap.add_argument("--best", choices=("graph", "compile"),
                    help="also PyTorch's best mode: a captured CUDA graph, or torch.compile")
    ap.add_argument("--amp", action="store_true",
                    help="also float16 autocast + GradScaler, channels_last (CUDA)")
    a = ap.parse_args()
    modes = ["eager"]
    if a.best:
        modes.append({"graph": "cuda_graph", "compile": "compile"}[a.best])
    if a.amp:
        modes.append("amp")
    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"PyTorch {torch.__version__} on {name} ({torch.get_num_threads()} threads)")
    rows = []
    if a.resnet:
        cases = [("resnet20", ResNetCifar, (3, 32, 32), (128, 512))]
    else:
        cases = [("lenet5", lenet5, (1, 28, 28), (64, 256)),
                 ("xception_mini", XceptionMini, (1, 28, 28), (64, 256))]
    for model_name, make, shape, batches in cases:
        for batch in batches:
            steps = 200 if a.device == "cuda" else 20
            if a.resnet and a.device != "cuda":
                steps = 4
            for mode in modes:
                ips = throughput(make, batch, a.device, steps, shape, mode)
                if isinstance(ips, str):
                    print(f"{model_name:14s} batch {batch:4d} {mode:10s}: not measured ({ips})")
                    continue
                rows.append({"model": model_name, "batch": batch, "mode": mode,
                             "images_per_s": ips})
                print(f"{model_name:14s} batch {batch:4d} {mode:10s}: {ips:10.0f} images/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": name, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
