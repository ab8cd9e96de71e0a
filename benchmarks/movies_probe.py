"""What each Movies view carries: a sanity probe, measured (not a target to tune to).

One-vs-rest logistic regression (scikit-learn, L2, C = 1, one binary model per genre) trained on the whole train
split with all its labels, scored on the test split at the threshold the engine uses (0.5 on the sigmoid):
micro-F1 (the primary metric), macro-F1, samples-F1 and mAP, computed by `robult_engine.metrics` (equal to
scikit-learn's; tests/engine/test_metrics_sklearn.py). Views:

- title: tf-idf of character 2..4-grams of the raw title (within word boundaries, min_df 2, sublinear tf);
- timing+production: the standardised timing vector and the production vector (zeros where the data lack it,
  plus the production presence flag as a feature);
- ratings: the standardised ratings vector;
- all: the three side by side.

Also two floors: "no genre" (predict the empty set for every film) and "Drama" (predict Drama, the most
frequent genre, for every film).

    pip install scikit-learn
    python benchmarks/movies_probe.py [--json docs/results/movies-probe.json]
    python benchmarks/movies_probe.py --label-fraction 0.05 [--seeds 5]   # the labeled films `robult train` uses

The tf-idf vocabulary and weights are fitted on all training titles (no labels involved) either way.

Needs the Movies cache (`python -m robult_engine.data.movies`).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from robult_engine.data.movies import GENRES, load_movies
from robult_engine.metrics import average_precision, compute_metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regressions")
    ap.add_argument("--label-fraction", type=float, default=1.0,
                    help="train on this fraction of the train split's labels: the labeled indices `robult train` "
                         "uses for data seeds 0..SEEDS-1 (default 1: all labels)")
    ap.add_argument("--seeds", type=int, default=5, help="labeled subsets averaged when --label-fraction < 1")
    ap.add_argument("--json", help="also write the table as JSON")
    args = ap.parse_args(argv)
    try:
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
    except ImportError:
        raise SystemExit("the probe needs scikit-learn: pip install scikit-learn") from None
    b = load_movies(build=False)
    tr, te = b.splits["train"], b.splits["test"]
    y_tr, y_te = tr.target.numpy().astype(int), te.target
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True, lowercase=True)
    t_tr = tfidf.fit_transform(tr.texts["title"])
    t_te = tfidf.transform(te.texts["title"])

    def dense(split, names):
        cols = [split.inputs[n].numpy() for n in names]
        if "production" in names:
            cols.append(split.mask[:, b.info.modality_names.index("production")].numpy()[:, None].astype(np.float32))
        return sparse.csr_matrix(np.concatenate(cols, 1))

    views = {
        "title (char 2-4-gram tf-idf)": (t_tr, t_te),
        "timing+production": (dense(tr, ["timing", "production"]), dense(te, ["timing", "production"])),
        "ratings": (dense(tr, ["ratings"]), dense(te, ["ratings"])),
    }
    views["all"] = tuple(sparse.hstack([v[i] for v in views.values()]).tocsr() for i in (0, 1))
    rows: dict[str, dict[str, float]] = {}
    per_label: dict[str, dict[str, float]] = {}  # average precision of each genre, per view
    n_te = len(te)
    rows["floor: no genre"] = compute_metrics(torch.full((n_te, len(GENRES)), -1.0), y_te, "multi-label")
    drama = torch.full((n_te, len(GENRES)), -1.0)
    drama[:, GENRES.index("Drama")] = 1.0
    rows["floor: Drama for every film"] = compute_metrics(drama, y_te, "multi-label")
    if args.label_fraction < 1:
        from robult_engine.semisup import labeled_indices
        subsets = [labeled_indices(tr.target, "multi-label", args.label_fraction, s).numpy()
                   for s in range(args.seeds)]
        what = (f"{len(subsets[0]):,} labeled training films ({args.label_fraction:g}; mean over seeds "
                f"0..{args.seeds - 1})")
    else:
        subsets = [np.arange(len(tr))]
        what = f"all {len(tr):,} training films"
    for name, (x_tr, x_te) in views.items():
        t0 = time.time()
        runs = []
        for idx in subsets:
            clf = OneVsRestClassifier(LogisticRegression(C=args.C, max_iter=2000, solver="liblinear"))
            clf.fit(x_tr[idx], y_tr[idx])
            p = np.clip(clf.predict_proba(x_te), 1e-12, 1 - 1e-12)
            runs.append(torch.from_numpy(np.log(p) - np.log1p(-p)))  # the sigmoid's inverse: logit > 0 <=> p > 0.5
        scores = [compute_metrics(logits, y_te, "multi-label") for logits in runs]
        rows[name] = {k: float(np.mean([m[k] for m in scores])) for k in scores[0]}
        if len(scores) > 1:
            rows[name]["f1_micro_sd"] = float(np.std([m["f1_micro"] for m in scores]))
        rows[name]["fit_s"] = round(time.time() - t0, 1)
        per_label[name] = {g: float(np.mean([average_precision(logits[:, j], y_te[:, j]) for logits in runs]))
                           for j, g in enumerate(GENRES)}
    print(f"Movies probe: one-vs-rest logistic regression (C={args.C}), {what}, test split ({n_te:,} films), "
          f"threshold 0.5")
    print(f"{'view':<30} {'micro-F1':>9} {'macro-F1':>9} {'samples-F1':>11} {'mAP':>7}")
    for name, m in rows.items():
        print(f"{name:<30} {m['f1_micro']:>9.4f} {m['f1_macro']:>9.4f} {m['f1_samples']:>11.4f} "
              f"{m['map']:>7.4f}")
    print("\naverage precision per genre (first row: the test prevalence, a random ranking's AP)")
    print(f"{'view':<30} " + " ".join(f"{g[:11]:>11}" for g in GENRES))
    prevalence = y_te.mean(0).tolist()
    print(f"{'(prevalence)':<30} " + " ".join(f"{q:>11.3f}" for q in prevalence))
    for name, ap in per_label.items():
        print(f"{name:<30} " + " ".join(f"{ap[g]:>11.3f}" for g in GENRES))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"C": args.C, "label_fraction": args.label_fraction, "labeled": len(subsets[0]),
                       "seeds": len(subsets), "n_train": len(tr), "n_test": n_te, "features": {"title": dict(
                analyzer="char_wb", ngram_range=[2, 4], min_df=2, sublinear_tf=True,
                vocabulary=len(tfidf.vocabulary_))}, "rows": rows, "average_precision_per_genre": per_label,
                "test_prevalence": dict(zip(GENRES, prevalence))}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
