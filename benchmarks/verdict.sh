#!/usr/bin/env bash
# The tuned verdict: every method tuned with the same budget (robult tune: the same number of Optuna trials per
# method, the first being its default config, chosen on validation only), then each method's chosen config
# trained over the same seeds and tested once on the same test split, with all modalities, over every modality
# subset and under MCAR test masks (0.5 missing, the same masks for every method; MCAR 0 is the all-modalities column). Paired by seed.
# Writes OUT/<dataset>/<fraction>/{tune,compare}/; benchmarks/verdict_report.py turns them into tables.
#
# Usage: benchmarks/verdict.sh OUT_DIR [TRIALS] [SEEDS] [JOBS] [FRACTIONS] [DATASETS...]
#   FRACTIONS: comma-separated label fractions (default 0.01,0.05)
#   datasets: mfeat pid-synth fs-multilabel fs-regression movies av-digits (default: mfeat pid-synth fs-multilabel)
#   METHODS (environment): default robult,robult-no-rec,supervised,fixmatch,co-training,shaspec,mmin
#   EPOCHS (environment): the epoch budget of every trial and final run (default: the config's)
#   EXTRA (environment): further flags for every command, e.g. "--set model.d_h=16"
#   TUNE_EXTRA (environment): further flags for the tuning only, e.g. "--tune-seeds 0,1"
set -euo pipefail
out=${1:?usage: benchmarks/verdict.sh OUT_DIR [TRIALS] [SEEDS] [JOBS] [FRACTIONS] [DATASETS...]}
trials=${2:-4}
seeds=${3:-5}
jobs=${4:-1}
fractions=${5:-0.01,0.05}
shift $(( $# < 5 ? $# : 5 ))
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(mfeat pid-synth fs-multilabel)
methods=${METHODS:-robult,robult-no-rec,supervised,fixmatch,co-training,shaspec,mmin}
robult=${ROBULT:-.venv/bin/robult}
epochs=()
[ -z "${EPOCHS:-}" ] || epochs=(--epochs "$EPOCHS")
for ds in "${datasets[@]}"; do
  case "$ds" in
    fs-multilabel) args=(--dataset feature-synth --set data.feature_synth_task=multi-label) ;;
    fs-regression) args=(--dataset feature-synth --set data.feature_synth_task=regression) ;;
    mfeat|pid-synth|movies|av-digits) args=(--dataset "$ds") ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  for f in ${fractions//,/ }; do
    dir="$out/$ds/$f"
    common=(--label-fraction "$f" --threads 1 --quiet "${epochs[@]}" "${args[@]}")
    # shellcheck disable=SC2206
    [ -z "${EXTRA:-}" ] || common+=(${EXTRA})
    tune_extra=()
    # shellcheck disable=SC2206
    [ -z "${TUNE_EXTRA:-}" ] || tune_extra=(${TUNE_EXTRA})
    "$robult" tune --methods "$methods" --trials "$trials" --search-only --jobs "$jobs" "${common[@]}" \
      "${tune_extra[@]}" --out "$dir/tune"
    [ -f "$dir/compare/compare.json" ] || \
      "$robult" compare --from-tune "$dir/tune" --seeds "$seeds" --jobs "$jobs" --missing mcar:0.5 \
        "${common[@]}" --out "$dir/compare"
  done
done
