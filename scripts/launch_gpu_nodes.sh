#!/usr/bin/env bash
# Train an ARM on several GPU nodes: run this once on every node (or let SLURM do it, below).
#
#   scripts/launch_gpu_nodes.sh COORDINATOR_HOST:PORT NUM_NODES NODE_RANK CONFIG.yaml [section.key=value ...]
#
# e.g. on two 8-GPU nodes, node0 being the coordinator:
#   node0$ scripts/launch_gpu_nodes.sh node0:1234 2 0 configs/uniarm_pku.yaml run.out_dir=/shared/runs/uniarm
#   node1$ scripts/launch_gpu_nodes.sh node0:1234 2 1 configs/uniarm_pku.yaml run.out_dir=/shared/runs/uniarm
# One process per node drives all its GPUs; the mesh spans all 16 (mesh.fsdp=-1 shards the base over
# them). Under SLURM, `srun --ntasks-per-node=1 .venv/bin/uniarm train CONFIG distributed.auto=true` does
# the same without this script. Install jax's CUDA build first: pip install "jax[cuda12]==0.10.2".
set -euo pipefail
coordinator=${1:?host:port}; nodes=${2:?number of nodes}; rank=${3:?this node rank}; config=${4:?config}
shift 4
exec "$(dirname "$0")/../.venv/bin/uniarm" train "$config" \
  distributed.coordinator_address="$coordinator" distributed.num_processes="$nodes" \
  distributed.process_id="$rank" distributed.cpu_collectives=null "$@"
