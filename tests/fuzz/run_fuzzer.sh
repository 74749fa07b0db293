#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time, starting from the committed seed corpus
# (new inputs go to a temporary directory, the seeds are not modified), and prints how
# many inputs it executed. Any crash, sanitizer report, leak, uncaught exception or slow
# input fails the test, with the input that triggered it shown for reproduction.
#   run_fuzzer.sh FUZZER SEED_DIR SECONDS    (BRAID_FUZZ_SECONDS overrides SECONDS)
# Exit 77 (skipped) when the fuzzer was not built (no clang++ with libFuzzer).
set -uo pipefail
bin=${1:?usage: $0 FUZZER SEED_DIR SECONDS} seeds=${2:?} seconds=${BRAID_FUZZ_SECONDS:-${3:?}}
if [ ! -x "$bin" ]; then
  echo "SKIP: $bin was not built: it needs clang++ and libFuzzer (Debian: clang, libclang-rt-14-dev)"
  exit 77
fi
work=$(mktemp -d /tmp/braid_fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/crashes"
# -close_fd_mask=1: the parsers may print --help to stdout; libFuzzer reports on stderr.
"$bin" "$work/corpus" "$seeds" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
  -print_final_stats=1 -close_fd_mask=1 -artifact_prefix="$work/crashes/" >"$work/log" 2>&1
rc=$?
runs=$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$work/log" | tail -1)
if [ $rc -ne 0 ]; then
  echo "FAIL: $(basename "$bin") exited with $rc"
  grep -v '^#[0-9]' "$work/log" | tail -60
  for f in "$work"/crashes/*; do
    [ -e "$f" ] || continue
    echo "--- input $(basename "$f") (base64):"; base64 "$f" | head -40
  done
  exit 1
fi
echo "PASS: $(basename "$bin"): ${runs:-no run count}, $(ls "$work/corpus" | wc -l) new corpus inputs"
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$work/log"
