#!/usr/bin/env bash
# braid-train on one machine under mpirun: TP2 x PP2 on 4 ranks.
#
#   examples/mpirun/single_node.sh                    # from Braid's source tree
#   NP=8 TP=2 PP=2 examples/mpirun/single_node.sh --steps 2000 --zero 1
#
# Arguments go to braid-train and override CONFIG's values. Environment: NP (4), TP (2),
# PP (2), DATA (data/fortunes), CONFIG (examples/quickstart.ini), OUT (out/mpirun),
# BRAID_TRAIN (build/bin/braid-train), MPIRUN_ARGS (extra mpirun options).
#
# Stopping and resuming: `kill -USR1 <mpirun pid>` (mpirun forwards it to every rank):
# the ranks save a checkpoint and exit 42. Ctrl-C or SIGTERM: mpirun sends SIGTERM to the
# ranks, which save and exit 43, within 2 x OMPI_MCA_odls_base_sigkill_timeout seconds
# (set to 5 here) before mpirun kills them. Running this script again resumes (--resume
# auto); the run continues bitwise as if it had never stopped.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
NP=${NP:-4}
read -r -a extra <<<"${MPIRUN_ARGS:-}"
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-5}
# More ranks than cores is fine on CPU (each rank then gets one BLAS thread).
exec mpirun --oversubscribe -np "$NP" "${extra[@]}" "${BRAID_TRAIN:-$HERE/build/bin/braid-train}" \
  --config "${CONFIG:-$HERE/examples/quickstart.ini}" --data "${DATA:-data/fortunes}" \
  --out "${OUT:-out/mpirun}" --tp "${TP:-2}" --pp "${PP:-2}" --resume auto "$@"
