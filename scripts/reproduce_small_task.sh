#!/usr/bin/env bash
# The small-scale comparison of docs/results.md, end to end on a CPU: the pairs, the weak ARM's base,
# every ARM, and the evaluations. Each step is skipped when its output exists (and `uniarm train`
# resumes from its last checkpoint), so an interrupted run continues where it stopped.
#   scripts/reproduce_small_task.sh [EXPERIMENT ...]
# EXPERIMENT: k2_same_size, k2_weak_to_strong, k3_weak_to_strong (default: all three, in this order).
set -euo pipefail
cd "$(dirname "$0")/.."
UNIARM=${UNIARM:-.venv/bin/uniarm}
SMOL=$($UNIARM prepare-smollm2 | tail -n 1)
WEAK=$PWD/runs/small_task/smollm2_first6_last6

[ -f data/small_task/train.jsonl ] || $UNIARM make-data --base "$SMOL" --out data/small_task
[ -f "$WEAK/config.json" ] || $UNIARM truncate --base "$SMOL" --first 6 --last 6 --out "$WEAK"

train() {  # experiment, ARM base, config name
  local out=runs/small_task/$1/$3
  [ -f "$out/adapter/adapter_config.json" ] || $UNIARM train "configs/small_task/$3.yaml" "model.base=$2" "run.out_dir=$out"
}

[ $# -gt 0 ] || set -- k2_same_size k2_weak_to_strong k3_weak_to_strong
for exp in "$@"; do
    case $exp in
      k2_weak_to_strong) arm_base=$WEAK; configs="genarm_brevity genarm_informativeness parm uniarm_dim_global uniarm_weighted_vote" ;;
      k2_same_size) arm_base=$SMOL; configs="genarm_brevity genarm_informativeness parm uniarm_dim_global uniarm_weighted_vote" ;;
      k3_weak_to_strong) arm_base=$WEAK; configs="genarm_tone parm_k3 uniarm_dim_global_k3 uniarm_weighted_vote_k3"
        for cfg in genarm_brevity genarm_informativeness; do train k2_weak_to_strong "$WEAK" $cfg; done ;;
      *) echo "unknown experiment $exp; expected k2_weak_to_strong, k2_same_size or k3_weak_to_strong" >&2; exit 2 ;;
    esac
    for cfg in $configs; do train "$exp" "$arm_base" "$cfg"; done
    [ -f "docs/results/$exp/results.json" ] || $UNIARM evaluate "configs/small_task/eval_$exp.yaml"
done
