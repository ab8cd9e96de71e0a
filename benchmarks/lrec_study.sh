#!/usr/bin/env bash
# The L_rec study of docs/results/README.md ("L_rec routes"): every route of the latent reconstruction loss,
# the difference term, robult-no-rec and the baselines, on identical labels, batches and seeds (the data seed
# is the run seed in `robult compare`). Two compares per dataset share the seeds: one for Robult with
# --grid loss.rec_route (validation picks the route), one for the difference term, one for the other methods.
# Usage: benchmarks/lrec_study.sh OUT_DIR [SEEDS] [JOBS] [DATASETS...]   (datasets: mfeat mfeat-zer-mor pid-synth av-digits)
set -euo pipefail
out=${1:?usage: lrec_study.sh OUT_DIR [SEEDS] [JOBS] [DATASETS...]}
seeds=${2:-5}
jobs=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(mfeat mfeat-zer-mor pid-synth av-digits)
robult=${ROBULT:-.venv/bin/robult}
for ds in "${datasets[@]}"; do
  case "$ds" in
    mfeat) args=(--dataset mfeat) ;;
    mfeat-zer-mor) args=(--dataset mfeat --modalities zer,mor) ;;
    # PID-Synth at the schedule validation chose for every method (docs/results/README.md, schedule study)
    pid-synth) args=(--dataset pid-synth --set train.labeled_per_batch=4 --dropout 0.3) ;;
    av-digits) args=(--dataset av-digits) ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  common=(--label-fraction 0.05 --seeds "$seeds" --jobs "$jobs" --threads 1 --quiet "${args[@]}")
  "$robult" compare --methods robult --grid loss.rec_route=projector,branch,full "${common[@]}" --out "$out/$ds/routes"
  "$robult" compare --methods robult --set loss.lambda_diff=0.5 "${common[@]}" --out "$out/$ds/diff"
  "$robult" compare --methods robult-no-rec,robult-st,supervised,moddrop,self-training "${common[@]}" \
    --out "$out/$ds/others"
done
