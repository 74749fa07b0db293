#!/usr/bin/env bash
# Braid quick start: installs missing dependencies, builds, prepares the default corpus
# (Debian's fortunes, GPT-2 BPE), trains a small GPT on CPU under mpirun with tensor
# parallel 2 x pipeline parallel 2 (4 ranks), saves a checkpoint and prints a sample.
#   ./launch/quickstart.sh            # about 3-4 minutes on 2 cores after the build
# Environment: NP (ranks, default 4), TP, PP, STEPS, OUT (default out/quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${NP:-4} TP=${TP:-2} PP=${PP:-2} STEPS=${STEPS:-300} OUT=${OUT:-out/quickstart}

./launch/install_deps.sh
./launch/fetch_gpt2_vocab.sh vocab
./launch/build.sh

if [ ! -f data/fortunes/train_000000.h5 ]; then
  rm -rf data/fortunes
  inputs=$(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.*' | sort)
  build/bin/braid-data --input $inputs --output data/fortunes --tokenizer gpt2 \
    --vocab-dir vocab --doc-separator % --val-fraction 0.05
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe -np "$NP" build/bin/braid-train --config examples/quickstart.ini \
  --data data/fortunes --out "$OUT" --steps "$STEPS" --tp "$TP" --pp "$PP" --resume auto

echo
echo "=== sample from $(cat "$OUT/checkpoints/latest") ==="
build/bin/braid-sample --out "$OUT" --vocab-dir vocab --prompt "The secret of life is" --tokens 60
