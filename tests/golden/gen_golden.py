#!/usr/bin/env python3
"""Generates the golden-value data files `ops.rs` and `optim.rs` next to this script.

The values are computed with PyTorch (CPU, float32) and frozen into Rust source, so the
test binaries `tests/golden_ops.rs` and `tests/golden_optim.rs` need no Python in CI.
Inputs are drawn from seeded torch generators (one seed per case, derived from the
case name, so adding a case leaves the others unchanged) and written into the data
files too: Rust uses bit-identical inputs.

Run from anywhere:   /usr/bin/python3 tests/golden/gen_golden.py
(then `cargo fmt` is not needed: the script runs rustfmt on its output when found).

Float printing: every f32 is printed with NumPy's shortest round-trip representation
of the float32 value (Dragon4, `str(np.float32(v))`), which rustc parses back to the
identical f32. To keep the files small, *inputs* of the big linear-algebra cases are
quantized before use: data and upstream gradients to binary fractions (multiples of
1/8 or 1/4), weights and biases to 3 decimals. Their products still round in f32
(a 3-decimal weight is not a binary fraction), so the outputs y and dx carry genuine
f32 accumulation error; dw and db are sums of binary fractions and happen to be exact
in f32. Outputs are always torch's float32 results, printed in full.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_default_dtype(torch.float32)
torch.set_num_threads(1)  # deterministic accumulation order in torch's CPU kernels


# ---------------------------------------------------------------- helpers


def gen(name):
    """A torch generator seeded from the case name (stable across runs and cases)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return torch.Generator().manual_seed(seed)


def randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float32)


def q_bin(t, k):
    """Round to a multiple of 1/k (a binary fraction for k = 2^m): exact in f32."""
    return (torch.round(t * k) / k).to(torch.float32)


def q_dec(t, d=3):
    """Round to d decimals (then to the nearest f32): short in decimal."""
    s = 10.0**d
    return (torch.round(t.double() * s) / s).to(torch.float32)


def fmt(v):
    s = str(np.float32(v))
    if s in ("nan", "inf", "-inf"):
        raise ValueError(f"non-finite value {s}")
    if "." not in s and "e" not in s:
        s += ".0"
    return s


def flat(t):
    return t.detach().to(torch.float32).contiguous().view(-1).numpy()


def f32_list(t, indent=8):
    """Rust slice literal body for a float32 tensor, packed into lines."""
    return _pack([fmt(v) for v in flat(t)], indent)


def u32_list(vals, indent=8):
    return _pack([str(int(v)) for v in vals], indent)


def _pack(items, indent, width=100):
    width -= indent
    lines, cur = [], ""
    for it in items:
        piece = it + ","
        if cur and len(cur) + 1 + len(piece) > width:
            lines.append(cur)
            cur = piece
        else:
            cur = piece if not cur else cur + " " + piece
    if cur:
        lines.append(cur)
    return "\n".join(" " * indent + l for l in lines)


def shape(t):
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def f64_err(got32, want64):
    """max |f32 − f64| and the worst relative-to-scale error, for the comment block."""
    d = (got32.double() - want64).abs()
    scale = want64.abs().max().item() or 1.0
    return d.max().item(), d.max().item() / scale


class Writer:
    def __init__(self, header):
        self.parts = [header]
        self.cases = 0

    def raw(self, s):
        self.parts.append(s)

    def const(self, name, ty, fields, doc):
        """`pub const NAME: Ty = Ty { ... };` with one line per field; data fields are
        packed number lists. `fields` is a list of (field, kind, value)."""
        self.cases += 1
        out = [f"/// {line}" if line else "///" for line in doc.split("\n")]
        out.append("#[rustfmt::skip]")
        out.append(f"pub const {name}: {ty} = {ty} {{")
        for field, kind, value in fields:
            if kind == "str":
                out.append(f"    {field}: {value!r},".replace("'", '"'))
            elif kind == "lit":
                out.append(f"    {field}: {value},")
            elif kind == "f32":
                out.append(f"    {field}: {fmt(value)},")
            elif kind == "f32s":
                out.append(f"    {field}: &[\n{f32_list(value)}\n    ],")
            elif kind == "u32s":
                out.append(f"    {field}: &[\n{u32_list(value)}\n    ],")
            else:
                raise ValueError(kind)
        out.append("};")
        self.parts.append("\n".join(out) + "\n")

    def write(self, path):
        text = "\n".join(self.parts)
        with open(path, "w") as f:
            f.write(text)
        rustfmt = shutil.which("rustfmt")
        if rustfmt:
            subprocess.run([rustfmt, "--edition", "2021", path], check=True)
        size = os.path.getsize(path)
        print(f"wrote {path}: {self.cases} cases, {size / 1024:.0f} KiB")
        if size > 1_000_000:
            sys.exit(f"{path} is {size} bytes; keep generated files well under 1.5 MB")


HEADER = """\
//! GENERATED by `tests/golden/gen_golden.py` from PyTorch {torch} (CPU, float32) —
//! do not edit by hand; change the script and run it again.
//!
//! {what}
#![allow(clippy::excessive_precision, clippy::approx_constant, dead_code)]
"""

# ---------------------------------------------------------------- ops

OPS_TYPES = """
/// `conv2d` forward and backward: `y = conv2d(x, w, b)` and, for the upstream
/// gradient `dy`, the gradients `dx`, `dw`, `db` (all row-major, NCHW / OCkhkw).
pub struct Conv {
    pub name: &'static str,
    pub x_shape: [usize; 4],
    pub w_shape: [usize; 4],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub y_shape: [usize; 4],
    pub x: &'static [f32],
    pub w: &'static [f32],
    pub b: &'static [f32],
    pub y: &'static [f32],
    pub dy: &'static [f32],
    pub dx: &'static [f32],
    pub dw: &'static [f32],
    pub db: &'static [f32],
}

/// `max_pool2d` with `return_indices=True` (indices are flat `h*W+w` in the input
/// plane) and its backward for the upstream gradient `dy`.
pub struct Pool {
    pub name: &'static str,
    pub x_shape: [usize; 4],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub y_shape: [usize; 4],
    pub x: &'static [f32],
    pub y: &'static [f32],
    pub idx: &'static [u32],
    pub dy: &'static [f32],
    pub dx: &'static [f32],
}

/// `c = a @ b`.
pub struct Matmul {
    pub name: &'static str,
    pub a_shape: [usize; 2],
    pub b_shape: [usize; 2],
    pub a: &'static [f32],
    pub b: &'static [f32],
    pub c: &'static [f32],
}

/// `y = F.linear(x, w, b)` (x `[N,in]`, w `[out,in]`) and its backward for `dy`.
pub struct Linear {
    pub name: &'static str,
    pub x_shape: [usize; 2],
    pub w_shape: [usize; 2],
    pub x: &'static [f32],
    pub w: &'static [f32],
    pub b: &'static [f32],
    pub y: &'static [f32],
    pub dy: &'static [f32],
    pub dx: &'static [f32],
    pub dw: &'static [f32],
    pub db: &'static [f32],
}

/// One activation on the shared input `ACT_X` (shape `ACT_SHAPE`) with upstream
/// gradient `ACT_DY`: `y = f(x)`, `dx = f'(x)·dy`. `kind` is the `Activation`
/// variant's name, `alpha` its parameter (0 where it has none).
pub struct Act {
    pub name: &'static str,
    pub kind: &'static str,
    pub alpha: f32,
    pub y: &'static [f32],
    pub dx: &'static [f32],
}

/// Row-wise softmax of `logits` `[N,C]`.
pub struct Softmax {
    pub name: &'static str,
    pub shape: [usize; 2],
    pub logits: &'static [f32],
    pub probs: &'static [f32],
}

/// `F.cross_entropy(logits, targets)` (mean over the batch) and d(loss)/d(logits).
pub struct CrossEntropy {
    pub name: &'static str,
    pub shape: [usize; 2],
    pub logits: &'static [f32],
    pub targets: &'static [u32],
    pub loss: f32,
    pub dlogits: &'static [f32],
}

/// `F.mse_loss(pred, target)` (mean over all elements) and d(loss)/d(pred).
pub struct Mse {
    pub name: &'static str,
    pub shape: &'static [usize],
    pub pred: &'static [f32],
    pub target: &'static [f32],
    pub loss: f32,
    pub dpred: &'static [f32],
}
"""


def conv_case(w_, cname, n, c, o, hw, k, stride, pad):
    g = gen(cname)
    h, wd = hw
    kh, kw = k
    fan_in = c * kh * kw
    x = q_bin(randn(g, n, c, h, wd), 8)
    w = q_dec(randn(g, o, c, kh, kw) / fan_in**0.5)
    b = q_dec(randn(g, o) * 0.1)
    xr, wr, br = (t.clone().requires_grad_(True) for t in (x, w, b))
    y = F.conv2d(xr, wr, br, stride=stride, padding=pad)
    dy = q_bin(randn(g, *y.shape), 8)
    y.backward(dy)
    y64 = F.conv2d(x.double(), w.double(), b.double(), stride=stride, padding=pad)
    ea, er = f64_err(y, y64)
    doc = (
        f"conv2d {cname}: x {list(x.shape)}, w {list(w.shape)},\n"
        f"stride {list(stride)}, padding {list(pad)} -> y {list(y.shape)}.\n"
        f"torch f32 vs f64 on y: max abs err {ea:.2e} ({er:.2e} of max|y|)."
    )
    w_.const(
        cname.upper(),
        "Conv",
        [
            ("name", "str", cname),
            ("x_shape", "lit", shape(x)),
            ("w_shape", "lit", shape(w)),
            ("stride", "lit", f"[{stride[0]}, {stride[1]}]"),
            ("padding", "lit", f"[{pad[0]}, {pad[1]}]"),
            ("y_shape", "lit", shape(y)),
            ("x", "f32s", x),
            ("w", "f32s", w),
            ("b", "f32s", b),
            ("y", "f32s", y),
            ("dy", "f32s", dy),
            ("dx", "f32s", xr.grad),
            ("dw", "f32s", wr.grad),
            ("db", "f32s", br.grad),
        ],
        doc,
    )


def pool_case(w_, cname, xs, kernel, stride, pad):
    g = gen(cname)
    x = randn(g, *xs)
    # randn has no ties in practice; make sure of it, so the argmax is unambiguous.
    assert x.view(-1).unique().numel() == x.numel(), "tie in pool input"
    xr = x.clone().requires_grad_(True)
    y, idx = F.max_pool2d(xr, kernel, stride, pad, return_indices=True)
    dy = q_bin(randn(g, *y.shape), 8)
    y.backward(dy)
    doc = (
        f"max_pool2d {cname}: x {list(x.shape)},\n"
        f"kernel {list(kernel)}, stride {list(stride)}, padding {list(pad)} -> y {list(y.shape)}."
    )
    w_.const(
        cname.upper(),
        "Pool",
        [
            ("name", "str", cname),
            ("x_shape", "lit", shape(x)),
            ("kernel", "lit", f"[{kernel[0]}, {kernel[1]}]"),
            ("stride", "lit", f"[{stride[0]}, {stride[1]}]"),
            ("padding", "lit", f"[{pad[0]}, {pad[1]}]"),
            ("y_shape", "lit", shape(y)),
            ("x", "f32s", x),
            ("y", "f32s", y),
            ("idx", "u32s", idx.view(-1).tolist()),
            ("dy", "f32s", dy),
            ("dx", "f32s", xr.grad),
        ],
        doc,
    )


def matmul_case(w_, cname, m, k, n):
    g = gen(cname)
    a = randn(g, m, k)
    b = randn(g, k, n)
    c = a @ b
    ea, er = f64_err(c, a.double() @ b.double())
    doc = (
        f"matmul {cname}: a [{m}, {k}] @ b [{k}, {n}] (full-precision randn inputs).\n"
        f"torch f32 vs f64: max abs err {ea:.2e} ({er:.2e} of max|c|)."
    )
    w_.const(
        cname.upper(),
        "Matmul",
        [
            ("name", "str", cname),
            ("a_shape", "lit", shape(a)),
            ("b_shape", "lit", shape(b)),
            ("a", "f32s", a),
            ("b", "f32s", b),
            ("c", "f32s", c),
        ],
        doc,
    )


def linear_case(w_, cname, n, fin, fout, grid):
    g = gen(cname)
    x = q_bin(randn(g, n, fin), grid)
    w = q_dec(randn(g, fout, fin) / fin**0.5)
    b = q_dec(randn(g, fout) * 0.1)
    xr, wr, br = (t.clone().requires_grad_(True) for t in (x, w, b))
    y = F.linear(xr, wr, br)
    dy = q_bin(randn(g, n, fout), grid)
    y.backward(dy)
    ea, er = f64_err(y, F.linear(x.double(), w.double(), b.double()))
    doc = (
        f"linear {cname}: x [{n}, {fin}], w [{fout}, {fin}] -> y [{n}, {fout}].\n"
        f"torch f32 vs f64 on y: max abs err {ea:.2e} ({er:.2e} of max|y|)."
    )
    w_.const(
        cname.upper(),
        "Linear",
        [
            ("name", "str", cname),
            ("x_shape", "lit", shape(x)),
            ("w_shape", "lit", shape(w)),
            ("x", "f32s", x),
            ("w", "f32s", w),
            ("b", "f32s", b),
            ("y", "f32s", y),
            ("dy", "f32s", dy),
            ("dx", "f32s", xr.grad),
            ("dw", "f32s", wr.grad),
            ("db", "f32s", br.grad),
        ],
        doc,
    )


def act_cases(w_):
    g = gen("activations")
    act_shape = (3, 5, 17)
    x = randn(g, *act_shape) * 3.0
    # Keep away from 0 (where ReLU/LeakyReLU/Step derivatives are a convention) and
    # from |x| > 12 (tanh/sigmoid saturate; nothing left to test there).
    x = torch.where(x.abs() < 0.05, torch.sign(x) * 0.05 + x, x)
    x = torch.where(x == 0, torch.full_like(x, 0.25), x).clamp(-12.0, 12.0)
    assert (x.abs() >= 0.05).all()
    dy = randn(g, *act_shape)
    w_.raw(
        "/// Shape of the shared activation input.\n"
        f"pub const ACT_SHAPE: [usize; 3] = {shape(x)};\n"
    )
    for nm, t in (("ACT_X", x), ("ACT_DY", dy)):
        w_.raw(
            f"/// Shared activation {'input (randn·3, |x| ≥ 0.05)' if nm == 'ACT_X' else 'upstream gradient (randn)'}.\n"
            f"#[rustfmt::skip]\npub const {nm}: &[f32] = &[\n{f32_list(t, 4)}\n];\n"
        )

    def step(t):
        return (t > 0).to(torch.float32)

    acts = [
        ("relu", "Relu", 0.0, F.relu),
        ("leaky_relu_0_1", "LeakyRelu", 0.1, lambda t: F.leaky_relu(t, 0.1)),
        ("elu_1", "Elu", 1.0, lambda t: F.elu(t, 1.0)),
        ("elu_0_5", "Elu", 0.5, lambda t: F.elu(t, 0.5)),
        ("sigmoid", "Sigmoid", 0.0, torch.sigmoid),
        ("tanh", "Tanh", 0.0, torch.tanh),
        ("step", "Step", 0.0, None),
    ]
    for cname, kind, alpha, f in acts:
        if f is None:  # Heaviside: forward (x > 0), gradient zero by definition
            y, dx = step(x), torch.zeros_like(x)
        else:
            xr = x.clone().requires_grad_(True)
            y = f(xr)
            y.backward(dy)
            dx = xr.grad
        w_.const(
            "ACT_" + cname.upper(),
            "Act",
            [
                ("name", "str", cname),
                ("kind", "str", kind),
                ("alpha", "f32", alpha),
                ("y", "f32s", y),
                ("dx", "f32s", dx),
            ],
            f"activation {kind}({alpha}) on ACT_X, backward with ACT_DY.",
        )


def softmax_ce_cases(w_):
    for cname, scale, offset, doc in (
        ("softmax_small", 2.0, 0.0, "logits randn·2 [6, 10]"),
        (
            "softmax_large",
            5.0,
            90.0,
            "logits randn·5 + 90 [6, 10]:\nexp(logit) overflows f32, so this checks the max-subtraction",
        ),
    ):
        g = gen(cname)
        logits = (randn(g, 6, 10) * scale + offset).to(torch.float32)
        p = torch.softmax(logits, dim=1)
        w_.const(
            cname.upper(),
            "Softmax",
            [
                ("name", "str", cname),
                ("shape", "lit", shape(logits)),
                ("logits", "f32s", logits),
                ("probs", "f32s", p),
            ],
            f"softmax {cname}: {doc}.",
        )
    for cname, scale, offset, doc in (
        ("cross_entropy_small", 2.0, 0.0, "logits randn·2 [8, 10]"),
        (
            "cross_entropy_large",
            5.0,
            90.0,
            "logits randn·5 + 90 [8, 10]\n(needs a stable log-sum-exp)",
        ),
    ):
        g = gen(cname)
        logits = (randn(g, 8, 10) * scale + offset).to(torch.float32)
        targets = torch.randint(0, 10, (8,), generator=g)
        lr = logits.clone().requires_grad_(True)
        loss = F.cross_entropy(lr, targets)
        loss.backward()
        w_.const(
            cname.upper(),
            "CrossEntropy",
            [
                ("name", "str", cname),
                ("shape", "lit", shape(logits)),
                ("logits", "f32s", logits),
                ("targets", "u32s", targets.tolist()),
                ("loss", "f32", loss.item()),
                ("dlogits", "f32s", lr.grad),
            ],
            f"cross-entropy {cname}: {doc}, mean over the batch.",
        )
    cname = "mse"
    g = gen(cname)
    pred = randn(g, 3, 4, 5)
    target = randn(g, 3, 4, 5)
    pr = pred.clone().requires_grad_(True)
    loss = F.mse_loss(pr, target)
    loss.backward()
    w_.const(
        "MSE",
        "Mse",
        [
            ("name", "str", cname),
            ("shape", "lit", "&" + shape(pred)),
            ("pred", "f32s", pred),
            ("target", "f32s", target),
            ("loss", "f32", loss.item()),
            ("dpred", "f32s", pr.grad),
        ],
        "mse: pred, target randn [3, 4, 5], mean over all elements.",
    )


def gen_ops():
    w = Writer(
        HEADER.format(
            torch=torch.__version__,
            what="Golden values for the single ops: conv2d, max_pool2d, matmul, linear,\n"
            "//! activations, softmax, cross-entropy and mse (forward and backward).",
        )
    )
    w.raw(OPS_TYPES)
    # conv2d
    conv_case(w, "conv_lenet1", 2, 1, 6, (28, 28), (5, 5), (1, 1), (2, 2))
    conv_case(w, "conv_lenet2", 2, 6, 16, (14, 14), (5, 5), (1, 1), (0, 0))
    conv_case(w, "conv_s2_p1_nonsquare", 2, 3, 4, (9, 7), (3, 2), (2, 2), (1, 1))
    conv_case(w, "conv_s3_p2", 2, 2, 3, (10, 11), (4, 4), (3, 3), (2, 2))
    # max_pool2d
    pool_case(w, "pool_lenet_2x2", (2, 2, 28, 28), (2, 2), (2, 2), (0, 0))
    pool_case(w, "pool_3x3_s2_p1", (2, 3, 11, 9), (3, 3), (2, 2), (1, 1))
    pool_case(w, "pool_nonsquare", (2, 3, 11, 8), (3, 2), (2, 1), (1, 0))
    # matmul
    matmul_case(w, "matmul_odd", 7, 13, 5)
    matmul_case(w, "matmul_tile_edges", 33, 65, 17)
    matmul_case(w, "matmul_long_k", 5, 256, 9)
    # linear: LeNet's fc3 at N = 4, and LeNet fc1's 400-wide input (N = 4) with a
    # narrower output. The full fc1 (400 -> 120) and fc2 (120 -> 84) are left out on
    # purpose to keep this file small: fc1's w and dw alone are 48,000 numbers each
    # (~800 KB of source); the cases here run the same code path, with the same
    # 400-term dot products, on a tenth of the data.
    linear_case(w, "linear_lenet_fc3", 4, 84, 10, 8)
    linear_case(w, "linear_in400", 4, 400, 12, 4)
    linear_case(w, "linear_odd", 3, 7, 5, 8)
    # elementwise and losses
    act_cases(w)
    softmax_ce_cases(w)
    w.write(os.path.join(HERE, "ops.rs"))


# ---------------------------------------------------------------- optimizers

OPTIM_TYPES = """
/// Length of the parameter vector.
pub const LEN: usize = {n};
/// Number of steps recorded per case.
pub const STEPS: usize = {steps};

/// One optimizer run: `STEPS` steps from `P0` with the gradients `GRADS[t]`
/// (t = 0 is step number 1); `params[t]` is the parameter vector after step t+1.
/// `kind` is `sgd|momentum|nesterov|rmsprop|adam|adamw`; `momentum` is used by
/// momentum, nesterov and rmsprop; `weight_decay` is L2 (decoupled for adamw);
/// `l1` adds `l1·sign(p)` to the gradient.
pub struct OptimCase {{
    pub name: &'static str,
    pub kind: &'static str,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub l1: f32,
    pub params: [[f32; LEN]; STEPS],
}}
"""


def gen_optim():
    n, steps = 37, 5
    g = gen("optim")
    p0 = randn(g, n)
    p0 = torch.where(p0.abs() < 0.05, p0.sign() * 0.05 + p0, p0)  # sign(p) well defined
    grads = randn(g, steps, n)

    w = Writer(
        HEADER.format(
            torch=torch.__version__,
            what="Golden values for the optimizers: 5 steps of each update rule on one\n"
            "//! parameter vector with a fixed sequence of gradients (torch.optim).",
        )
    )
    w.raw(OPTIM_TYPES.format(n=n, steps=steps))
    w.raw(
        "/// Initial parameters (randn, |p| ≥ 0.05 so sign(p) is well defined).\n"
        f"#[rustfmt::skip]\npub const P0: [f32; LEN] = [\n{f32_list(p0, 4)}\n];\n"
    )
    w.raw(
        "/// The gradient fed at each step (randn).\n"
        "#[rustfmt::skip]\npub const GRADS: [[f32; LEN]; STEPS] = [\n"
        + "\n".join(f"    [\n{f32_list(grads[t])}\n    ]," for t in range(steps))
        + "\n];\n"
    )

    T = torch.optim
    cases = [
        # name, kind, lr, momentum, weight_decay, l1, torch optimizer factory
        ("sgd", "sgd", 0.1, 0.0, 0.0, 0.0, lambda p: T.SGD([p], lr=0.1)),
        ("momentum", "momentum", 0.05, 0.9, 0.0, 0.0,
         lambda p: T.SGD([p], lr=0.05, momentum=0.9)),
        ("nesterov", "nesterov", 0.05, 0.9, 0.0, 0.0,
         lambda p: T.SGD([p], lr=0.05, momentum=0.9, nesterov=True)),
        ("rmsprop", "rmsprop", 0.01, 0.0, 0.0, 0.0,
         lambda p: T.RMSprop([p], lr=0.01, alpha=0.99, eps=1e-8)),
        ("rmsprop_momentum", "rmsprop", 0.01, 0.9, 0.0, 0.0,
         lambda p: T.RMSprop([p], lr=0.01, alpha=0.99, eps=1e-8, momentum=0.9)),
        ("adam", "adam", 0.01, 0.0, 0.0, 0.0,
         lambda p: T.Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8)),
        ("adamw", "adamw", 0.01, 0.0, 0.01, 0.0,
         lambda p: T.AdamW([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
        ("sgd_weight_decay", "sgd", 0.1, 0.0, 0.1, 0.0,
         lambda p: T.SGD([p], lr=0.1, weight_decay=0.1)),
        ("adam_weight_decay", "adam", 0.01, 0.0, 0.1, 0.0,
         lambda p: T.Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)),
        ("sgd_l1", "sgd", 0.1, 0.0, 0.0, 0.01, lambda p: T.SGD([p], lr=0.1)),
    ]
    for name, kind, lr, mom, wd, l1, make in cases:
        p = torch.nn.Parameter(p0.clone())
        opt = make(p)
        after = []
        for t in range(steps):
            gr = grads[t].clone()
            if l1:  # the L1 penalty l1·|p|.sum() contributes l1·sign(p) to the gradient
                gr = gr + l1 * torch.sign(p.detach())
            p.grad = gr.to(torch.float32)
            opt.step()
            after.append(p.detach().clone())
        body = "\n".join(f"        [\n{f32_list(a, 12)}\n        ]," for a in after)
        w.cases += 1
        w.raw(
            f"/// {name}: torch.optim with lr {lr}, momentum {mom}, weight decay {wd}, l1 {l1}.\n"
            "#[rustfmt::skip]\n"
            f"pub const {name.upper()}: OptimCase = OptimCase {{\n"
            f'    name: "{name}",\n    kind: "{kind}",\n    lr: {fmt(lr)},\n'
            f"    momentum: {fmt(mom)},\n    weight_decay: {fmt(wd)},\n    l1: {fmt(l1)},\n"
            f"    params: [\n{body}\n    ],\n}};\n"
        )
    w.raw(
        "/// Every optimizer case.\npub const ALL: [&OptimCase; "
        f"{len(cases)}] = [\n"
        + "".join(f"    &{c[0].upper()},\n" for c in cases)
        + "];\n"
    )
    w.write(os.path.join(HERE, "optim.rs"))


if __name__ == "__main__":
    gen_ops()
    gen_optim()
