"""Tables of the L_rec study (benchmarks/lrec_study.sh): every variant's test accuracy on the mean over all
modality subsets, on the unimodal subsets and on all modalities, paired differences by seed against
robult-no-rec, and the route validation picks.

    python benchmarks/lrec_report.py runs/lrec [--markdown] [--json docs/results/lrec-study.json]

Reads `<dir>/<dataset>/{routes,diff,others}/compare.json`. The variants share labeled indices, batch order
and seeds (the compare's data seed is the run seed), so differences are paired by seed.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _mean_std(v: list[float]) -> tuple[float, float]:
    v = [x for x in v if not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)


def summarise_run(test: dict, metric: str) -> dict[str, float]:
    subsets = [k for k in test if k != "mean"]
    uni = [k for k in subsets if "+" not in k]
    full = max(subsets, key=lambda k: k.count("+"))
    return {"mean": sum(test[k][metric] for k in subsets) / len(subsets),
            "unimodal": sum(test[k][metric] for k in uni) / len(uni),
            "all": test[full][metric],
            **{f"uni:{k}": test[k][metric] for k in uni}}


def variants_of(folder: Path) -> tuple[dict[str, dict[int, dict]], dict]:
    """{variant name: {seed: {"summary": ..., "val": ...}}} and facts (validation choice) for one dataset."""
    out: dict[str, dict[int, dict]] = {}
    facts: dict = {}
    routes = folder / "routes" / "compare.json"
    if routes.is_file():
        d = json.loads(routes.read_text())
        metric = d["metric"]
        for g in d["grid_runs"]:
            name = f"robult rec_route={g['setting']['loss.rec_route']}"
            out[name] = {r["seed"]: {"summary": summarise_run(r["test"], metric), "val": r["val_score"]}
                         for r in g["runs"]}
        facts["validation_choice"] = d["chosen_setting"]["robult"]["loss.rec_route"]
        facts["validation_scores"] = {f"{g['setting']['loss.rec_route']}": _mean_std([r["val_score"] for r in g["runs"]])[0]
                                      for g in d["grid_runs"]}
    for part, label in (("diff", "robult rec_route=branch + L_diff 0.5"), ("others", None)):
        p = folder / part / "compare.json"
        if not p.is_file():
            continue
        d = json.loads(p.read_text())
        metric = d["metric"]
        for m, runs in d["runs"].items():
            out[label or m] = {r["seed"]: {"summary": summarise_run(r["test"], metric), "val": r["val_score"]}
                               for r in runs}
    return out, facts


def table(variants: dict[str, dict[int, dict]], ref: str = "robult-no-rec") -> list[dict]:
    rows = []
    ref_runs = variants.get(ref, {})
    for name, runs in variants.items():
        row = {"variant": name, "seeds": len(runs)}
        for key in ("mean", "unimodal", "all"):
            row[key] = _mean_std([r["summary"][key] for r in runs.values()])
        row["val"] = _mean_std([r["val"] for r in runs.values()])[0]
        if name != ref and ref_runs:
            for key in ("mean", "unimodal"):
                diffs = [runs[s]["summary"][key] - ref_runs[s]["summary"][key] for s in runs if s in ref_runs]
                row[f"vs_no_rec_{key}"] = (*_mean_std(diffs), sum(d > 0 for d in diffs), len(diffs))
        rows.append(row)
    return rows


def fmt(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.4f} ± {ms[1]:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path, help="also write every number as JSON")
    args = ap.parse_args(argv)
    everything = {}
    for ds in sorted(p for p in args.folder.iterdir() if p.is_dir()):
        variants, facts = variants_of(ds)
        if not variants:
            continue
        rows = table(variants)
        everything[ds.name] = {"rows": rows, **facts}
        print(f"\n### {ds.name}" + (f" (validation picks rec_route={facts['validation_choice']})"
                                     if "validation_choice" in facts else ""))
        print("| variant | seeds | mean over subsets | unimodal mean | all modalities | val score | "
              "− robult-no-rec (mean; ahead) | − robult-no-rec (unimodal; ahead) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            d = [f"{r[k][0]:+.4f} ± {r[k][1]:.4f}; {r[k][2]}/{r[k][3]}" if k in r else ""
                 for k in ("vs_no_rec_mean", "vs_no_rec_unimodal")]
            print(f"| {r['variant']} | {r['seeds']} | {fmt(r['mean'])} | {fmt(r['unimodal'])} | {fmt(r['all'])} | "
                  f"{r['val']:.4f} | {d[0]} | {d[1]} |")
        full = variants.get("robult rec_route=full")
        if full:
            print("\nrobult (full route) minus each method, paired by seed (mean over subsets; seeds ahead):")
            for name, runs in variants.items():
                diffs = [full[sd]["summary"]["mean"] - runs[sd]["summary"]["mean"] for sd in full if sd in runs]
                if name != "robult rec_route=full" and diffs:
                    m, sd_ = _mean_std(diffs)
                    print(f"- {name}: {m:+.4f} ± {sd_:.4f}; {sum(d > 0 for d in diffs)}/{len(diffs)}")
                    everything[ds.name].setdefault("full_minus", {})[name] = [m, sd_, sum(d > 0 for d in diffs),
                                                                             len(diffs)]
        uni = [k for k in next(iter(next(iter(variants.values())).values()))["summary"] if k.startswith("uni:")]
        print("\nper single modality (test accuracy, mean over seeds):")
        print("| variant | " + " | ".join(k[4:] for k in uni) + " |")
        print("|---|" + "---|" * len(uni))
        for name, runs in variants.items():
            vals = [_mean_std([r["summary"][k] for r in runs.values()])[0] for k in uni]
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
