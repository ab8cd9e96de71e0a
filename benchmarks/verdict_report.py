"""Tables of benchmarks/verdict.sh: per dataset and label fraction, each tuned method's test metric (with all
modalities, mean over modality subsets, under each MCAR test setting; mean ± std over seeds) and Robult minus each
other method paired by seed, with a verdict per comparison: ahead / behind when the paired mean difference is more
than twice its standard error (std / sqrt(n)), level otherwise.

Usage: python benchmarks/verdict_report.py runs/verdict [--ref robult]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

LOWER_IS_BETTER = {"mae"}


def ms(vals: list[float]) -> str:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "—"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.3f}"


def cell(run: dict, metric: str, where: str, full: str) -> float:
    """One run's value at a column: 'all' (every modality), 'mean' (over subsets) or a missing-setting label."""
    if where == "all":
        return run["test"][full].get(metric, float("nan"))
    if where == "mean":
        return run["test"]["mean"].get(metric, float("nan"))
    return run.get("missing", {}).get(where, {}).get(metric, float("nan"))


def paired(a: list[dict], b: list[dict], metric: str, where: str, full: str) -> tuple[float, float, int, int]:
    """(mean, standard error, seeds where a is better, pairs) of a − b, signed so that positive is a better."""
    bs = {r["seed"]: r for r in b}
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    d = [sign * (cell(r, metric, where, full) - cell(bs[r["seed"]], metric, where, full)) for r in a if r["seed"] in bs]
    d = [x for x in d if not math.isnan(x)]
    if not d:
        return float("nan"), float("nan"), 0, 0
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
    return statistics.mean(d), se, sum(x > 0 for x in d), len(d)


def verdict(mean: float, se: float) -> str:
    if math.isnan(mean):
        return "—"
    if mean > 2 * se:
        return "**ahead**"
    if mean < -2 * se:
        return "**behind**"
    return "level"


def report(folder: Path, ref: str) -> list[str]:
    d = json.loads((folder / "compare" / "compare.json").read_text())
    metric, runs, methods = d["metric"], d["runs"], d["methods"]
    full = max((k for k in runs[methods[0]][0]["test"] if k != "mean"), key=lambda k: k.count("+"))
    settings = list(d.get("missing", {}).get("summary", {}))
    cols = [("all", f"all modalities ({full})"), ("mean", "mean over subsets")] + [(s, f"test {s}") for s in settings]
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    n = len(runs[methods[0]])
    name = d["dataset"]
    if name == "feature-synth":  # one dataset, three tasks: say which
        name += f" {((d.get('config') or {}).get('data') or {}).get('feature_synth_task', '')}".rstrip()
    lines = [f"#### {name}, {float(d['label_fraction']):.0%} labels (test {metric}, {better} is better; "
             f"{n} seeds)", "", "| method | " + " | ".join(c[1] for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(ms([cell(r, metric, w, full) for r in runs[m]]) for w, _ in cols)
                     + " |")
    if ref in runs:
        lines += ["", f"{ref} − each method, paired by seed (positive: {ref} better; seeds where it is better):", "",
                  "| " + ref + " − | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for m in methods:
            if m == ref:
                continue
            parts = []
            for w, _ in cols:
                mean, se, wins, k = paired(runs[ref], runs[m], metric, w, full)
                parts.append("—" if not k else f"{mean:+.3f} ({wins}/{k}) {verdict(mean, se)}")
            lines.append(f"| {m} | " + " | ".join(parts) + " |")
    tuned = folder / "tune" / "tune.json"
    if tuned.is_file():
        t = json.loads(tuned.read_text())
        chosen = t.get("chosen") or t.get("studies") or {}
        if chosen:
            lines += ["", "<details><summary>chosen settings (validation only)</summary>", "", "```",
                      json.dumps(chosen, indent=1, sort_keys=True)[:4000], "```", "</details>"]
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--ref", default="robult")
    a = ap.parse_args()
    root = Path(a.root)
    for f in sorted(root.glob("*/*/compare/compare.json")):
        print("\n".join(report(f.parent.parent, a.ref)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
