# Helpers of the command-line tests (sourced). BIN is build/bin; each test gets a fresh
# WORK directory. The run() helpers never hide a rank's output.
set -uo pipefail
BIN=${1:?usage: $0 BUILD_BIN_DIR}
WORK=$(mktemp -d /tmp/braid_cli.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
MPIRUN="mpiexec --oversubscribe"
failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_program_error PROGRAM NAME NP "expected message" ARGS... : PROGRAM (in $BIN) must
# exit non-zero (not by a signal or abort), and EVERY rank must print the expected message.
# expect_error NAME NP "message" ARGS... is the same for braid-train.
expect_program_error() {
  local program=$1 name=$2 np=$3 msg=$4; shift 4
  local out="$WORK/$name.log"
  timeout 120 $MPIRUN -n "$np" "$BIN/$program" "$@" >"$out" 2>&1
  local rc=$?
  local count
  count=$(grep -F -c -- "$msg" "$out")
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -ge 128 ]; then
    fail "$name: exit code $rc (want a clean non-zero exit)"; sed 's/^/    /' "$out" | head -20
  elif [ "$count" -lt "$np" ]; then
    fail "$name: '$msg' printed by $count of $np ranks"; sed 's/^/    /' "$out" | head -20
  else
    pass "$name (exit $rc, message on all $np ranks)"
  fi
}
expect_error() { expect_program_error braid-train "$@"; }

# A small byte-level dataset from a generated text.
make_text_dataset() {
  local dir=$1
  python3 - "$WORK/corpus.txt" <<'PY'
import random, sys
random.seed(5)
words = "the of and to in is was he for it with as his on be at by had are but from".split()
with open(sys.argv[1], "w") as f:
    for d in range(400):
        f.write(" ".join(random.choice(words) for _ in range(random.randint(5, 40))) + ".\n%\n")
PY
  "$BIN/braid-data" --input "$WORK/corpus.txt" --output "$dir" --tokenizer byte --doc-separator % >/dev/null
}
