#!/usr/bin/env python3
"""Generates `pool_windows.rs` next to this script: PyTorch golden values for the 2-D
pooling windows beyond symmetric padding (`tests/pool_windows.rs`):

* `ceil_mode=True` (PyTorch's own flag): max_pool2d with `return_indices=True`, and
  avg_pool2d with `count_include_pad` True and False, forward and backward;
* Keras `padding="same"`, built from PyTorch ops that know nothing of it: the total padding
  `max((⌈L/s⌉−1)·s + k − L, 0)` split with the odd one at the end; max-pooling of the input
  padded with −∞ (indices mapped back to the unpadded plane), and the average as
  sum-pooling of the zero-padded input divided by sum-pooling of a zero-padded ones
  tensor (Keras divides by the real inputs only).

Inputs are drawn from a torch generator seeded from the case name and quantized to
multiples of 1/8 (exact in f32); outputs are torch's float32 results printed with NumPy's
shortest round-trip representation, which rustc parses back to the identical f32.

Run from anywhere:   /usr/bin/python3 tests/golden/gen_pool_windows.py
"""

import hashlib
import math
import os
import shutil
import subprocess

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)


def gen(name):
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return torch.Generator().manual_seed(seed)


def arr(t):
    out = []
    for v in t.detach().to(torch.float32).reshape(-1).numpy():
        s = str(np.float32(v))
        if "e" not in s and "." not in s:
            s += ".0"
        out.append(s)
    return "&[" + ", ".join(out) + "]"


def ints(t):
    return "&[" + ", ".join(str(int(i)) for i in t.reshape(-1)) + "]"


# (name, x shape [N,C,H,W], kernel, stride, padding (ceil) or None (same))
CASES = [
    ("ceil_k2_s2", (1, 2, 5, 5), (2, 2), (2, 2), (0, 0)),
    ("ceil_k3_s2_pad1", (2, 1, 6, 7), (3, 3), (2, 2), (1, 1)),
    ("ceil_k3_s3_pad1_drop", (1, 2, 7, 8), (3, 3), (3, 3), (1, 1)),
    ("ceil_k2x3_s3x2", (1, 1, 8, 7), (2, 3), (3, 2), (0, 1)),
    ("same_k3_s2", (1, 2, 15, 15), (3, 3), (2, 2), None),
    ("same_k3_s2_even", (2, 1, 8, 6), (3, 3), (2, 2), None),
    ("same_k2_s1", (1, 2, 5, 4), (2, 2), (1, 1), None),
    ("same_k3x2_s1x3", (1, 1, 7, 8), (3, 2), (1, 3), None),
]


def same_pads(length, k, s):
    out = math.ceil(length / s)
    total = max((out - 1) * s + k - length, 0)
    return total // 2, total - total // 2


def max_same(x, k, s):
    (t, b), (l, r) = [same_pads(x.shape[2 + a], k[a], s[a]) for a in range(2)]
    xp = F.pad(x, (l, r, t, b), value=float("-inf"))
    y, idx = F.max_pool2d(xp, k, s, return_indices=True)
    wp, w = xp.shape[3], x.shape[3]
    h_, w_ = idx // wp - t, idx % wp - l
    return y, h_ * w + w_


def avg_same(x, k, s):
    (t, b), (l, r) = [same_pads(x.shape[2 + a], k[a], s[a]) for a in range(2)]
    pad = (l, r, t, b)
    sums = F.avg_pool2d(F.pad(x, pad), k, s, divisor_override=1)
    counts = F.avg_pool2d(F.pad(torch.ones_like(x), pad), k, s, divisor_override=1)
    return sums / counts


def case(name, shape, k, s, pad):
    g = gen(name)
    x = (torch.round(torch.randn(shape, generator=g) * 8) / 8).requires_grad_(True)
    if pad is None:
        y, idx = max_same(x, k, s)
        avg = [avg_same(x, k, s)]
    else:
        y, idx = F.max_pool2d(x, k, s, pad, ceil_mode=True, return_indices=True)
        avg = [F.avg_pool2d(x, k, s, pad, ceil_mode=True, count_include_pad=c) for c in (True, False)]
    dy = torch.round(torch.randn(y.shape, generator=g) * 8) / 8
    (dx,) = torch.autograd.grad(y, x, dy)
    fields = [
        f'name: "{name}"',
        f"x_shape: {list(shape)}",
        f"kernel: {list(k)}",
        f"stride: {list(s)}",
        f"padding: {list(pad) if pad else [0, 0]}",
        f"same: {'true' if pad is None else 'false'}",
        f"y_shape: {list(y.shape)}",
        f"x: {arr(x)}",
        f"dy: {arr(dy)}",
        f"max_y: {arr(y)}",
        f"max_idx: {ints(idx)}",
        f"max_dx: {arr(dx)}",
    ]
    for tag, a in zip(("pad", "nopad"), avg + avg[:1] * (2 - len(avg))):
        (adx,) = torch.autograd.grad(a, x, dy, retain_graph=True)
        fields += [f"avg_{tag}_y: {arr(a)}", f"avg_{tag}_dx: {arr(adx)}"]
    return "    Window {\n" + "".join(f"        {f},\n" for f in fields) + "    },\n"


STRUCT = '''/// One 2-D pooling problem: `x [N,C,H,W]`, window, stride, and either PyTorch padding with
/// `ceil_mode=True` (`same = false`) or Keras `same` (`same = true`). `max_*`: max-pooling
/// (`idx` = `h·W + w` in the input plane, `dx` for `dy`). `avg_pad_*` / `avg_nopad_*`: the
/// average with `count_include_pad` True / False (for `same` both hold Keras's average,
/// which excludes padding).
pub struct Window {
    pub name: &'static str,
    pub x_shape: [usize; 4],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub same: bool,
    pub y_shape: [usize; 4],
    pub x: &'static [f32],
    pub dy: &'static [f32],
    pub max_y: &'static [f32],
    pub max_idx: &'static [u32],
    pub max_dx: &'static [f32],
    pub avg_pad_y: &'static [f32],
    pub avg_pad_dx: &'static [f32],
    pub avg_nopad_y: &'static [f32],
    pub avg_nopad_dx: &'static [f32],
}

'''


def main():
    out = [
        "//! GENERATED by `tests/golden/gen_pool_windows.py` from PyTorch "
        + torch.__version__
        + " (CPU, float32) —\n//! do not edit by hand; change the script and run it again.\n"
        "//!\n//! Golden values for 2-D pooling with `ceil_mode` and Keras `same`.\n"
        "#![allow(clippy::excessive_precision, clippy::approx_constant, dead_code)]\n\n",
        STRUCT,
        "pub const WINDOWS: &[Window] = &[\n",
    ]
    out += [case(*c) for c in CASES]
    out.append("];\n")
    path = os.path.join(HERE, "pool_windows.rs")
    with open(path, "w") as f:
        f.write("".join(out))
    rf = shutil.which("rustfmt")
    if rf:
        subprocess.run([rf, "--edition", "2021", path], check=False)
    print("wrote", path)


if __name__ == "__main__":
    main()
