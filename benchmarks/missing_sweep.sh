#!/usr/bin/env bash
# The published label-fraction × missing-rate sweep (docs/results/missing.md): 5 methods, label fractions
# 0.01-1, MCAR 0-0.75, 3 seeds, on each built-in dataset. --resume keeps the runs an interrupted call finished.
# Usage: benchmarks/missing_sweep.sh OUT_DIR [JOBS] [DATASETS...]   (datasets: pid-synth mfeat av-digits)
set -euo pipefail
out=${1:?usage: $0 OUT_DIR [JOBS] [DATASETS...]}
jobs=${2:-2}
shift $(( $# < 2 ? $# : 2 ))
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(pid-synth mfeat av-digits)
methods=robult,supervised,moddrop,self-training,robult-st
for d in "${datasets[@]}"; do
  case $d in
    pid-synth) args=(--dataset pid-synth --set train.labeled_per_batch=4 --dropout 0.3) ;;  # the validated schedule
    *) args=(--dataset "$d") ;;
  esac
  python -m robult_engine sweep "${args[@]}" --methods "$methods" --label-fractions 0.01,0.05,0.2,1 \
      --missing mcar:0,0.25,0.5,0.75 --seeds 3 --jobs "$jobs" --threads 1 --resume --out "$out/$d"
done
