#!/usr/bin/env bash
# Train an ARM on every worker of a Cloud TPU VM pod slice. JAX finds the other workers itself
# (distributed.auto=true); each worker reads only its slice of every batch and its weight shards.
#
#   scripts/launch_tpu_pod.sh setup TPU_NAME ZONE                 copy this repository, install jax[tpu]
#   scripts/launch_tpu_pod.sh train TPU_NAME ZONE CONFIG.yaml [section.key=value ...]
#
# Models and data must already be on every worker (or on a shared disk) at the paths the config names;
# run.out_dir should be a shared location (e.g. a GCS-fuse or NFS mount) so every worker sees the checkpoints.
set -euo pipefail
action=${1:?setup or train}; tpu=${2:?TPU name}; zone=${3:?zone}; shift 3
remote_dir=${REMOTE_DIR:-uniarm_jax}
ssh_all() { gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$1"; }

case "$action" in
  setup)
    gcloud compute tpus tpu-vm scp --zone "$zone" --worker=all --recurse "$(dirname "$0")/.." "$tpu:$remote_dir"
    ssh_all "cd $remote_dir && python3 -m venv .venv && .venv/bin/pip install -q 'jax[tpu]==0.10.2' \
             && .venv/bin/pip install -q -r requirements.txt -e ."
    ;;
  train)
    config=${1:?config}; shift
    ssh_all "cd $remote_dir && .venv/bin/uniarm train $config distributed.auto=true $*"
    ;;
  *) echo "unknown action '$action'; expected setup or train" >&2; exit 2 ;;
esac
