#!/usr/bin/env python3
"""Writes Fashion-MNIST as CIFAR-shaped colour images for `examples/cifar10` (`--npz`):
each 28×28 grey image is padded by 2 pixels of 0 to 32×32 and repeated over 3 channels
(x_train [60000, 32, 32, 3] u8 NHWC, y_train [60000] u8, x_test / y_test [10000, …]),
saved with `np.savez` (uncompressed, ~200 MB).

    /usr/bin/python3 scripts/fashion_npz.py [SRC_DIR] [OUT.npz]

SRC_DIR defaults to Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist).
"""

import gzip
import sys

import numpy as np


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def rgb32(x):
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(x[..., None], 3, axis=3)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = sys.argv[2] if len(sys.argv) > 2 else "runs/fashion-rgb32.npz"
    arrays = {
        "x_train": rgb32(idx(f"{src}/train-images-idx3-ubyte.gz")),
        "y_train": idx(f"{src}/train-labels-idx1-ubyte.gz"),
        "x_test": rgb32(idx(f"{src}/t10k-images-idx3-ubyte.gz")),
        "y_test": idx(f"{src}/t10k-labels-idx1-ubyte.gz"),
    }
    np.savez(out, **arrays)
    print(out, {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main()
