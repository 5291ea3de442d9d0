#!/usr/bin/env bash
# Long fuzzing runs of the two untrusted-input parsers with the proptest targets of
# tests/fuzz.rs (cargo-fuzz needs nightly; these run on stable).
#
#   scripts/fuzz.sh [minutes-per-target]        (default 10)
#
# Two targets, each given the minutes: `idx` (parse_idx: arbitrary bytes, mutated
# files, huge header claims, gzip differential) and `checkpoint`
# (Checkpoint::from_bytes: arbitrary bytes, mutated files, hostile headers). Within a
# target the strategies take turns, in batches of FUZZ_BATCH cases (default 50000),
# each batch with a fresh PROPTEST_RNG_SEED. Runs under `nice`. Prints executions and
# failures per strategy and per target; a failing input is shrunk and saved to
# $WGCNN_FUZZ_ARTIFACTS (default target/fuzz-artifacts) — copy it into
# fuzz/corpus/<target>/ (as err-*/ok-*) once the bug is fixed. Exits 1 on any failure.
#
# Environment: FUZZ_BATCH (cases per batch), FUZZ_SEED (first seed; default from the
# clock), FUZZ_TARGETS (default "idx checkpoint").
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-10}
secs=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60); if (s < 1) exit 1; print s }') || {
  echo "usage: $0 [minutes-per-target]" >&2
  exit 2
}
batch=${FUZZ_BATCH:-50000}
seed=${FUZZ_SEED:-$(date +%s)}
targets=${FUZZ_TARGETS:-idx checkpoint}
export WGCNN_FUZZ_ARTIFACTS=${WGCNN_FUZZ_ARTIFACTS:-$PWD/target/fuzz-artifacts}
log_dir=target/fuzz-logs
mkdir -p "$log_dir"
log="$log_dir/fuzz-$(date +%Y%m%d-%H%M%S).log"

declare -A strategies=(
  [idx]="fuzz_idx_arbitrary_bytes fuzz_idx_mutated fuzz_idx_huge_claims fuzz_idx_gzip_differential"
  [checkpoint]="fuzz_checkpoint_arbitrary_bytes fuzz_checkpoint_mutated fuzz_checkpoint_hostile_header"
)

echo "building the fuzz targets (release)..."
built=$(cargo test --release --test fuzz --no-run 2>&1)
exe=$(sed -n 's/.*Executable .*(\(.*\))$/\1/p' <<<"$built" | tail -n1)
if [[ -z "$exe" || ! -x "$exe" ]]; then
  echo "$built" >&2
  echo "could not find the fuzz test binary" >&2
  exit 2
fi
# a private copy, so rebuilding during the run doesn't swap the binary
bin=$(mktemp -d)/fuzz
cp "$exe" "$bin"
trap 'rm -rf "$(dirname "$bin")"' EXIT

echo "replaying the corpus..."
"$bin" --exact corpus_replay --test-threads=1 >>"$log" 2>&1 || {
  echo "corpus replay FAILED (see $log)" >&2
  exit 1
}

declare -A execs runs fails
total_fail=0
for t in $targets; do
  [[ -n "${strategies[$t]:-}" ]] || { echo "unknown target $t" >&2; exit 2; }
  deadline=$(($(date +%s) + secs))
  echo "target $t: ${minutes} min, strategies: ${strategies[$t]}"
  while (($(date +%s) < deadline)); do
    for s in ${strategies[$t]}; do
      (($(date +%s) < deadline)) || break
      seed=$((seed + 1))
      out=$(PROPTEST_CASES=$batch PROPTEST_RNG_SEED=$seed nice -n 10 \
        "$bin" --exact "$s" --nocapture --test-threads=1 2>&1) || true
      line=$(grep -m1 -o 'fuzz-target .*' <<<"$out" || true)
      n=$(sed -n 's/^fuzz-target [^:]*: \([0-9]*\) executions.*/\1/p' <<<"$line")
      execs[$s]=$((${execs[$s]:-0} + ${n:-0}))
      runs[$s]=$((${runs[$s]:-0} + 1))
      if [[ "$line" != *": ok" ]]; then
        fails[$s]=$((${fails[$s]:-0} + 1))
        total_fail=$((total_fail + 1))
        { echo "=== FAILURE $s seed $seed"; echo "$out"; } >>"$log"
        echo "  FAILURE in $s (seed $seed): $(grep -m1 -o 'input saved to [^)]*' <<<"$out" || echo 'see log')"
      else
        echo "$line" >>"$log"
      fi
    done
  done
done

echo
printf '%-12s %-34s %14s %8s %9s\n' target strategy executions batches failures
for t in $targets; do
  tsum=0 tfail=0
  for s in ${strategies[$t]}; do
    printf '%-12s %-34s %14d %8d %9d\n' "$t" "$s" "${execs[$s]:-0}" "${runs[$s]:-0}" "${fails[$s]:-0}"
    tsum=$((tsum + ${execs[$s]:-0}))
    tfail=$((tfail + ${fails[$s]:-0}))
  done
  printf '%-12s %-34s %14d %8s %9d\n' "$t" "(total, ${minutes} min)" "$tsum" "" "$tfail"
done
echo "log: $log; artifacts: $WGCNN_FUZZ_ARTIFACTS"
((total_fail == 0)) || exit 1
