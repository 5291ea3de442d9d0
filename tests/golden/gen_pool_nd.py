#!/usr/bin/env python3
"""Generates `pool_nd.rs` next to this script: PyTorch golden values for 1-D and 3-D
pooling (`tests/pool_nd.rs`): max_pool1d / max_pool3d with `return_indices=True`,
avg_pool1d / avg_pool3d with `count_include_pad=True`, and min-pooling as `−max_pool(−x)`
(the first minimum; padding +∞), forward and backward (`dx` for an
upstream gradient `dy`), with overlapping (stride < kernel), gapped (stride > kernel) and
padded windows. The `ties` cases draw inputs from {-1, 0, 1}, so most windows hold several
maxima (within a depth slice and across depth slices): PyTorch picks the first one in
(d, h, w) order, and so must we.

Inputs are drawn from a torch generator seeded from the case name and quantized to
multiples of 1/8 (exact in f32) and written into the data file, so Rust uses
bit-identical inputs. Outputs are torch's float32 results, printed with NumPy's
shortest round-trip representation (`str(np.float32(v))`), which rustc parses back to
the identical f32.

Run from anywhere:   /usr/bin/python3 tests/golden/gen_pool_nd.py
"""

import hashlib
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


def q8(t):
    return (torch.round(t * 8) / 8).to(torch.float32) + 0.0


def ties(t):
    """Values in {-1, 0, 1} (no negative zero)."""
    return torch.clamp(torch.round(t), -1, 1).to(torch.float32) + 0.0


def arr(t):
    vals = t.detach().to(torch.float32).reshape(-1).numpy()
    out = []
    for v in vals:
        s = str(np.float32(v))
        if "e" not in s and "." not in s and "inf" not in s and "nan" not in s:
            s += ".0"
        out.append(s)
    return "&[" + ", ".join(out) + "]"


def ints(t):
    return "&[" + ", ".join(str(int(i)) for i in t.reshape(-1)) + "]"


# (name, x shape [N,C,L], kernel, stride, padding, tie-heavy input)
POOL1D = [
    ("p1_k2_s2", (2, 3, 8), 2, 2, 0, False),
    ("p1_k3_s1_pad1", (1, 2, 7), 3, 1, 1, False),
    ("p1_k4_s3_pad2", (2, 1, 11), 4, 3, 2, False),
    ("p1_k2_s3_gaps", (1, 2, 10), 2, 3, 0, False),
    ("p1_ties_k3_s2_pad1", (2, 2, 9), 3, 2, 1, True),
]

# (name, x shape [N,C,D,H,W], kernel, stride, padding, tie-heavy input)
POOL3D = [
    ("p3_k2", (1, 2, 4, 4, 4), (2, 2, 2), (2, 2, 2), (0, 0, 0), False),
    ("p3_k3_s2_pad1", (2, 1, 5, 6, 5), (3, 3, 3), (2, 2, 2), (1, 1, 1), False),
    ("p3_k231_s121_pad010", (1, 2, 5, 5, 4), (2, 3, 1), (1, 2, 1), (0, 1, 0), False),
    ("p3_k232_s312_pad110_gaps", (1, 1, 7, 5, 6), (2, 3, 2), (3, 1, 2), (1, 1, 0), False),
    ("p3_ties_k3_s1_pad1", (1, 2, 4, 4, 4), (3, 3, 3), (1, 1, 1), (1, 1, 1), True),
    ("p3_ties_k2_s1", (2, 1, 3, 4, 3), (2, 2, 2), (1, 1, 1), (0, 0, 0), True),
]

STRUCTS = """\
/// 1-D pooling of `x [N,C,L]`: max (`y`, `idx` = position along L, `dx` for `dy`) and
/// average (`avg_y`, `avg_dx` for the same `dy`).
pub struct Pool1d {
    pub name: &'static str,
    pub x_shape: [usize; 3],
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub y_shape: [usize; 3],
    pub x: &'static [f32],
    pub dy: &'static [f32],
    pub y: &'static [f32],
    pub idx: &'static [u32],
    pub dx: &'static [f32],
    pub avg_y: &'static [f32],
    pub avg_dx: &'static [f32],
    pub min_y: &'static [f32],
    pub min_idx: &'static [u32],
    pub min_dx: &'static [f32],
}

/// 3-D pooling of `x [N,C,D,H,W]`: max (`y`, `idx` = flat `d·H·W + h·W + w`, `dx` for
/// `dy`) and average (`avg_y`, `avg_dx` for the same `dy`).
pub struct Pool3d {
    pub name: &'static str,
    pub x_shape: [usize; 5],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub y_shape: [usize; 5],
    pub x: &'static [f32],
    pub dy: &'static [f32],
    pub y: &'static [f32],
    pub idx: &'static [u32],
    pub dx: &'static [f32],
    pub avg_y: &'static [f32],
    pub avg_dx: &'static [f32],
    pub min_y: &'static [f32],
    pub min_idx: &'static [u32],
    pub min_dx: &'static [f32],
}

"""


def case(kind, name, xs, k, s, p, tie):
    g = gen(name)
    raw = torch.randn(*xs, generator=g)
    x = (ties(raw) if tie else q8(raw)).requires_grad_(True)
    if kind == "Pool1d":
        y, idx = F.max_pool1d(x, k, s, p, return_indices=True)
        ya = F.avg_pool1d(x, k, s, p, ceil_mode=False, count_include_pad=True)
        ym, idxm = F.max_pool1d(-x, k, s, p, return_indices=True)
    else:
        y, idx = F.max_pool3d(x, k, s, p, return_indices=True)
        ya = F.avg_pool3d(x, k, s, p, ceil_mode=False, count_include_pad=True)
        ym, idxm = F.max_pool3d(-x, k, s, p, return_indices=True)
    dy = q8(torch.randn(*y.shape, generator=g))
    (dx,) = torch.autograd.grad(y, x, dy)
    (dxa,) = torch.autograd.grad(ya, x, dy)
    ym = -ym
    (dxm,) = torch.autograd.grad(ym, x, dy)
    lst = lambda v: list(v) if isinstance(v, tuple) else v
    return (
        f"    {kind} {{\n        name: \"{name}\",\n        x_shape: {list(xs)},\n"
        f"        kernel: {lst(k)},\n        stride: {lst(s)},\n        padding: {lst(p)},\n"
        f"        y_shape: {list(y.shape)},\n        x: {arr(x)},\n        dy: {arr(dy)},\n"
        f"        y: {arr(y)},\n        idx: {ints(idx)},\n        dx: {arr(dx)},\n"
        f"        avg_y: {arr(ya)},\n        avg_dx: {arr(dxa)},\n"
        f"        min_y: {arr(ym)},\n        min_idx: {ints(idxm)},\n        min_dx: {arr(dxm)},\n    }},\n"
    )


def main():
    out = [
        "//! GENERATED by `tests/golden/gen_pool_nd.py` from PyTorch "
        + torch.__version__
        + " (CPU, float32) —\n//! do not edit by hand; change the script and run it again.\n"
        "//!\n//! Golden values for 1-D and 3-D max, average and min pooling, forward and backward.\n"
        "#![allow(clippy::excessive_precision, clippy::approx_constant, dead_code)]\n\n",
        STRUCTS,
        "pub const POOL1D: &[Pool1d] = &[\n",
    ]
    for c in POOL1D:
        out.append(case("Pool1d", *c))
    out.append("];\n\npub const POOL3D: &[Pool3d] = &[\n")
    for c in POOL3D:
        out.append(case("Pool3d", *c))
    out.append("];\n")
    path = os.path.join(HERE, "pool_nd.rs")
    with open(path, "w") as f:
        f.write("".join(out))
    rf = shutil.which("rustfmt")
    if rf:
        subprocess.run([rf, "--edition", "2021", path], check=False)
    print("wrote", path)


if __name__ == "__main__":
    main()
