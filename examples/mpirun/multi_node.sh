#!/usr/bin/env bash
# braid-train on several machines under mpirun (no Slurm): HOSTS is an Open MPI hostfile
# ("node1 slots=4" per line); ranks fill each node before the next (--map-by slot), so a
# TP group stays within a node and PP crosses nodes (rank = (pp * DP + dp) * TP + tp).
#
#   HOSTS=hosts.txt NP=8 TP=4 PP=2 examples/mpirun/multi_node.sh --steps 20000
#
# Every node needs the same paths: braid-train, DATA and OUT on a shared file system.
# Environment and signals as in single_node.sh; -x passes the environment to remote ranks.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
: "${HOSTS:?set HOSTS to an Open MPI hostfile}"
NP=${NP:-8}
read -r -a extra <<<"${MPIRUN_ARGS:-}"
exec mpirun -np "$NP" --hostfile "$HOSTS" --map-by slot \
  -x OMPI_MCA_odls_base_sigkill_timeout="${OMPI_MCA_odls_base_sigkill_timeout:-5}" -x PATH -x LD_LIBRARY_PATH \
  "${extra[@]}" "${BRAID_TRAIN:-$HERE/build/bin/braid-train}" \
  --config "${CONFIG:-$HERE/examples/quickstart.ini}" --data "${DATA:-data/fortunes}" \
  --out "${OUT:-out/mpirun}" --tp "${TP:-4}" --pp "${PP:-2}" --resume auto "$@"
