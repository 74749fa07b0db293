#!/usr/bin/env bash
# Configures and builds Braid into build/ (executables in build/bin/). The CUDA backend is
# built when nvcc is found (BRAID_CUDA=AUTO); pass -DBRAID_CUDA=OFF in BRAID_CMAKE_ARGS to
# skip it. Parallelism follows the machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${BRAID_JOBS:-$(nproc)}
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release ${BRAID_CMAKE_ARGS:-}
fi
cmake --build build -j "$jobs"
