#!/bin/bash
# Issue 17's real-GPU figures in one prepared run, for a session lent a GPU machine (the
# `device` tool: minutes of device time, one command of at most 10 minutes). Build here, on
# the development machine, then carry the binaries and the Vulkan loader:
#
#   cargo build --release --example bench --example mnist
#   mkdir -p .bin && cp target/release/examples/{bench,mnist} .bin/ && echo /.bin/ >> .git/info/exclude
#   (the loader debs in .gl as the device tool's README says)
#   device run, carry [".gl", ".bin"], timeout_s 580:
#     for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; bash scripts/gpu_figures.sh
#
# Everything lands in $OUT (at most 8 files come back): the full benchmark (GEMM up to
# 4096³ by precision with % of peak, the VGG-sized conv in f32 and with f16 inputs, the steps
# of LeNet-5, Xception-mini and ResNet-20 in f32 and f16 mixed precision, backward-weight ÷
# forward per conv, PyTorch eager and best mode with AMP in the same sitting), the MNIST
# example in both precisions, and the autotuner's cache with its timings. Each part has its own
# time limit so that one slow part cannot take the others' results with it.
set -u
OUT="${OUT:-/tmp/gpu-figures}"
mkdir -p "$OUT"
BIN="${BIN:-.bin}"
export XDG_RUNTIME_DIR=/tmp WGCNN_BACKEND=vulkan
if ! ls /usr/share/vulkan/icd.d/*.json /usr/local/nvidia/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    echo "no Vulkan ICD found" >&2
fi
[ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] &&
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
part() { echo "== $1 $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"; }

part "bench (full)"
timeout 300 "$BIN/bench" --xception --resnet --json "$OUT/bench.json" >"$OUT/bench.txt" 2>>"$OUT/log.txt"
echo "exit $?" >>"$OUT/log.txt"

for p in f32 f16-mixed; do
    part "mnist --precision $p"
    timeout 60 "$BIN/mnist" --precision "$p" --checkpoint "/tmp/mnist-$p.safetensors" \
        --json "$OUT/mnist-$p.json" >>"$OUT/log.txt" 2>&1
    echo "exit $?" >>"$OUT/log.txt"
done

part "mnist with the autotuner (first run tunes, second reads the cache)"
export WGCNN_TUNE=1 WGCNN_TUNE_CACHE="$OUT/tiles.json"
for run in 1 2; do
    timeout 60 "$BIN/mnist" --epochs 1 --checkpoint /tmp/mnist-tuned.safetensors >>"$OUT/log.txt" 2>&1
    echo "exit $? (run $run)" >>"$OUT/log.txt"
done
part "done"
