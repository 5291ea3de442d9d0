#!/usr/bin/env bash
# Soak test: train LeNet-5 for many epochs on the bundled MNIST subset with the
# mnist example (GPU path) and check that nothing drifts:
#
#   * GPU memory flat after epoch 1: the example's JSON `gpu_bytes_first_epoch` must
#     equal `gpu_bytes_last_epoch` (bytes of device buffers the executor holds);
#   * host memory flat: the process's resident set after each epoch may not grow by
#     more than SOAK_RSS_TOLERANCE_MB (default 32) from the end of epoch 2 to the
#     last epoch (with a software adapter such as lavapipe, device memory lives in
#     host memory, so a device-side leak shows up here too);
#   * throughput steady: every epoch after the first within ±10% of the median
#     images/s of those epochs (the first one compiles pipelines and warms caches).
#
#   scripts/soak.sh [epochs] [extra mnist args...]      (default 20 epochs)
#   scripts/soak.sh 2                                   # quick check of the script
#   scripts/soak.sh 20 --batch-size 128
#
# Not part of the default test run (20 epochs take a while on a software adapter).
# Prints a per-epoch table and a verdict; exits 1 when a check fails. Output, JSON
# and checkpoint go to target/soak/.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=${1:-20}
shift || true
[[ "$epochs" =~ ^[0-9]+$ && "$epochs" -ge 1 ]] || {
  echo "usage: $0 [epochs] [extra mnist args...]" >&2
  exit 2
}
tol_pct=${SOAK_THROUGHPUT_TOLERANCE_PCT:-10}
rss_tol_mb=${SOAK_RSS_TOLERANCE_MB:-32}
out=target/soak
mkdir -p "$out"
rm -f "$out"/soak.json "$out"/epochs.tsv "$out"/soak.safetensors "$out"/soak.safetensors.optim

echo "building the mnist example (release)..."
cargo build --release --example mnist 2>&1 | tail -n 1
exe=target/release/examples/mnist

# Run in the background; after each epoch line, record the process's RSS.
fifo=$(mktemp -u)
mkfifo "$fifo"
trap 'rm -f "$fifo"' EXIT
"$exe" --backend gpu --epochs "$epochs" --json "$out/soak.json" \
  --checkpoint "$out/soak.safetensors" "$@" >"$fifo" 2>"$out/stderr.log" &
pid=$!
while IFS= read -r line; do
  echo "$line"
  if [[ "$line" =~ ^epoch\ +([0-9]+)/[0-9]+\ +train\ loss\ ([^ ]+)\ +train\ acc\ ([^ ]+)%\ +test\ acc\ ([^ ]+)%\ +([^ ]+)\ s\ +\(([0-9.]+)\ img/s\) ]]; then
    rss=$(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$pid/status" 2>/dev/null || echo 0)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" \
      "${BASH_REMATCH[3]}" "${BASH_REMATCH[4]}" "${BASH_REMATCH[5]}" "${BASH_REMATCH[6]}" \
      "$rss" >>"$out/epochs.tsv"
  fi
done <"$fifo" | tee "$out/stdout.log"
status=0
wait "$pid" || status=$?
if ((status != 0)); then
  echo "the mnist example failed (exit $status):" >&2
  tail -n 20 "$out/stderr.log" >&2
  exit 1
fi
[[ -s "$out/epochs.tsv" && -s "$out/soak.json" ]] || {
  echo "no epoch lines or no JSON summary: has the example's output format changed?" >&2
  exit 1
}

json_num() { sed -n "s/.*\"$1\": *\([0-9.eE+-]*\).*/\1/p" "$out/soak.json" | head -n1; }
first=$(json_num gpu_bytes_first_epoch)
last=$(json_num gpu_bytes_last_epoch)
adapter=$(sed -n 's/.*"adapter": *"\([^"]*\)".*/\1/p' "$out/soak.json" | head -n1)

awk -F'\t' -v tol="$tol_pct" -v rss_tol="$rss_tol_mb" -v first="$first" -v last="$last" \
  -v adapter="$adapter" '
  { ep[NR] = $1; loss[NR] = $2; tr[NR] = $3; te[NR] = $4; secs[NR] = $5; ips[NR] = $6; rss[NR] = $7 }
  END {
    n = NR
    # median throughput of epochs 2..n (all epochs when there is only one)
    m = 0
    for (i = (n > 1 ? 2 : 1); i <= n; i++) v[++m] = ips[i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    med = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
    printf "\nadapter: %s\n", adapter
    printf "%5s %10s %9s %9s %8s %9s %8s %9s\n", "epoch", "loss", "train%", "test%", "secs", "img/s", "vs med", "rss MiB"
    worst = 0; bad = 0
    for (i = 1; i <= n; i++) {
      dev = med > 0 ? 100 * (ips[i] - med) / med : 0
      flag = ""
      if (i > 1 || n == 1) {
        if (dev > worst || -dev > worst) worst = (dev < 0 ? -dev : dev)
        if (dev > tol || -dev > tol) { bad++; flag = " <-" }
      } else flag = " (warm-up)"
      printf "%5s %10s %9s %9s %8s %9s %+7.1f%% %9s%s\n", ep[i], loss[i], tr[i], te[i], secs[i], ips[i], dev, rss[i], flag
    }
    printf "\n"
    ok = 1
    if (first == "" || last == "") { printf "GPU memory:  FAIL (no gpu_bytes_* in the JSON)\n"; ok = 0 }
    else if (first + 0 == last + 0) printf "GPU memory:  PASS flat after epoch 1 (%d bytes first, %d bytes last)\n", first, last
    else { printf "GPU memory:  FAIL %d bytes after epoch 1, %d bytes at the end (%+d)\n", first, last, last - first; ok = 0 }
    base = (n >= 2) ? 2 : 1
    growth = rss[n] - rss[base]
    if (rss[base] == 0) printf "host memory: n/a (no /proc RSS)\n"
    else if (growth <= rss_tol) printf "host memory: PASS %+d MiB from epoch %d to %d (RSS %d -> %d MiB, tolerance %d MiB)\n", growth, ep[base], ep[n], rss[base], rss[n], rss_tol
    else { printf "host memory: FAIL %+d MiB from epoch %d to %d (RSS %d -> %d MiB, tolerance %d MiB)\n", growth, ep[base], ep[n], rss[base], rss[n], rss_tol; ok = 0 }
    if (bad == 0) printf "throughput:  PASS every epoch after the first within +-%d%% of the median %.0f img/s (worst %.1f%%)\n", tol, med, worst
    else { printf "throughput:  FAIL %d epoch(s) outside +-%d%% of the median %.0f img/s (worst %.1f%%)\n", bad, tol, med, worst; ok = 0 }
    if (n < 3) printf "note: %d epoch(s) only: run 20 for a meaningful soak\n", n
    printf "verdict:     %s\n", ok ? "PASS" : "FAIL"
    exit ok ? 0 : 1
  }' "$out/epochs.tsv"
