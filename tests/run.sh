#!/usr/bin/env bash
# Installs dependencies, builds Braid (CUDA code too when nvcc is found) and runs the whole
# test suite with ctest. Tests labelled `cuda` skip themselves without a GPU.
#   ./tests/run.sh              # everything
#   ./tests/run.sh -L mpi       # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/install_deps.sh
./launch/fetch_gpt2_vocab.sh vocab || echo "warning: GPT-2 vocabulary not fetched; its tests will skip"
./launch/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir build --output-on-failure --timeout 900 "$@"
