#!/usr/bin/env bash
# Is the default L_rec safe on every task type? The default Robult (rec_route full, λ_rec warm-up 0.3) against
# the same route without the warm-up, Robult without L_rec, supervised + L_rec (robult-no-pu) and supervised,
# on identical labels, batches and seeds (compare pairs them by seed): Feature-Synth multi-label (23 labels) and
# regression (two 768-d views, as pre-extracted embeddings), PID-Synth and mfeat. Writes
# OUT/<dataset>/{main,no-warmup}/compare.json; docs/results/lrec-multilabel.md reads them.
#
# Usage: benchmarks/lrec_safety.sh OUT_DIR [SEEDS] [JOBS] [DATASETS...]
#   datasets: fs-multilabel fs-regression pid-synth mfeat (default: all four)
set -euo pipefail
out=${1:?usage: benchmarks/lrec_safety.sh OUT_DIR [SEEDS] [JOBS] [DATASETS...]}
seeds=${2:-5}
jobs=${3:-1}
shift $(( $# < 3 ? $# : 3 ))
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(fs-multilabel fs-regression pid-synth mfeat)
robult=${ROBULT:-.venv/bin/robult}
for ds in "${datasets[@]}"; do
  case "$ds" in
    fs-multilabel) args=(--dataset feature-synth --set data.feature_synth_task=multi-label) ;;
    fs-regression) args=(--dataset feature-synth --set data.feature_synth_task=regression) ;;
    # PID-Synth at the schedule validation chose for every method (docs/results/README.md, schedule study)
    pid-synth) args=(--dataset pid-synth --set train.labeled_per_batch=4 --dropout 0.3) ;;
    mfeat) args=(--dataset mfeat) ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  common=(--label-fraction 0.05 --seeds "$seeds" --jobs "$jobs" --threads 1 --quiet "${args[@]}")
  "$robult" compare --methods robult,robult-no-rec,robult-no-pu,supervised "${common[@]}" --out "$out/$ds/main"
  "$robult" compare --methods robult,robult-no-pu --set loss.rec_warmup=0 "${common[@]}" --out "$out/$ds/no-warmup"
done
