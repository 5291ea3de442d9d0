#!/usr/bin/env bash
# Host memory through an epoch of a large image folder (issue 13): writes N (default 100,000)
# 32×32 RGB PNGs into DIR/<class>/ (10 classes; Pillow), then decodes one shuffled epoch with
# `bench --folder` (worker threads, bounded prefetch, batches of 128) under /usr/bin/time -v
# and prints the peak resident set size. The folder is left in place for reruns.
#
#   scripts/folder_rss.sh [N] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
dir="${2:-runs/folder-$n}"
if [ ! -f "$dir/.complete" ]; then
    /usr/bin/python3 - "$n" "$dir" <<'PY'
import os, sys
import numpy as np
from PIL import Image
n, d = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
for c in range(10):
    os.makedirs(f"{d}/class{c}", exist_ok=True)
for i in range(n):
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(img).save(f"{d}/class{i % 10}/{i:06d}.png")
open(f"{d}/.complete", "w").close()
PY
fi
cargo build --release --example bench >/dev/null
/usr/bin/time -v target/release/examples/bench --folder "$dir" 2> /tmp/folder_rss.time
grep -E "Maximum resident set size|Elapsed" /tmp/folder_rss.time
