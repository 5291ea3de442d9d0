#!/usr/bin/env bash
# Kill test of crash-consistent checkpoints (issue 12).
#
#   scripts/crash_test.sh N [backend]      # N trials (default 50), backend cpu (default) or gpu
#
# A reference run trains LeNet-5 on 512 bundled digits for 2 epochs, writing its checkpoint
# after every step (--checkpoint-every 1, so many kills land inside a checkpoint write). Each
# trial starts the same run, SIGKILLs it at a random moment, and then resumes with --resume
# (SIGKILLing again at random, up to 3 times, before a final undisturbed resume) until it
# finishes. The trial passes when every resume loads and the final parameters equal the
# reference run's bit for bit. A kill before the first checkpoint exists restarts the run.
# Prints trials / failures and how many kills left a write in progress; exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-50}"
BACKEND="${2:-cpu}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build --release --example mnist >/dev/null 2>&1 || cargo build --release --example mnist
BIN=target/release/examples/mnist
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ARGS=(--backend "$BACKEND" --train-limit 512 --test-limit 200 --batch-size 32 --epochs 2 --seed 5
      --checkpoint-every 1)

# Tensors (names and bytes) of a safetensors file, metadata ignored: a digest per tensor.
tensors() {
    /usr/bin/env python3 - "$1" <<'EOF'
import hashlib, json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]
for k in sorted(k for k in h if k != "__metadata__"):
    s, e = h[k]["data_offsets"]
    print(k, h[k]["shape"], hashlib.sha256(data[s:e]).hexdigest())
EOF
}

echo "reference run…"
"$BIN" "${ARGS[@]}" --checkpoint "$WORK/ref/c.safetensors" >"$WORK/ref.log" 2>&1
REF="$(tensors "$WORK/ref/c.safetensors")"
# the duration of one run, to spread the kills over it
T0=$(date +%s.%N); "$BIN" "${ARGS[@]}" --checkpoint "$WORK/t/c.safetensors" >/dev/null 2>&1; T1=$(date +%s.%N)
RUN_S=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.3f", b - a }')
echo "one run takes ${RUN_S}s"

fail=0; kills=0; in_write=0; resumes=0
for trial in $(seq 1 "$N"); do
    D="$WORK/trial"; rm -rf "$D"; mkdir -p "$D"
    CK="$D/c.safetensors"
    finished=0
    for attempt in 1 2 3 4; do
        extra=()
        [ -f "$CK" ] && extra=(--resume) && resumes=$((resumes + 1))
        "$BIN" "${ARGS[@]}" --checkpoint "$CK" "${extra[@]}" >"$D/log" 2>&1 &
        pid=$!
        if [ "$attempt" -lt 4 ]; then
            sleep "$(awk -v r="$RUN_S" -v x="$RANDOM" 'BEGIN { printf "%.3f", r * x / 32768 }')"
            if kill -9 "$pid" 2>/dev/null; then
                wait "$pid" 2>/dev/null || true
                if grep -q "^done:" "$D/log"; then finished=1; break; fi   # it had finished
                kills=$((kills + 1))
                # a temporary file or a second optimizer generation: killed inside a write
                if ls "$D" | grep -q '\.tmp-' || [ "$(ls "$D" | grep -c 'optim-' || true)" -gt 1 ]; then
                    in_write=$((in_write + 1))
                fi
                continue
            fi
        fi
        if wait "$pid"; then finished=1; break; fi
        if grep -q "^error" "$D/log"; then
            echo "trial $trial: the resume failed:"; cat "$D/log"; fail=$((fail + 1)); continue 2
        fi
    done
    if [ "$finished" -ne 1 ]; then
        echo "trial $trial: did not finish"; fail=$((fail + 1)); continue
    fi
    if [ "$(tensors "$CK")" != "$REF" ]; then
        echo "trial $trial: final parameters differ from the reference run"; fail=$((fail + 1))
    fi
done
echo "crash test: $N trials, $fail failures; $kills kills ($in_write inside a checkpoint write), $resumes resumes"
[ "$fail" -eq 0 ]
