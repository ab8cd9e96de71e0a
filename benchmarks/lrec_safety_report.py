"""Tables of benchmarks/lrec_safety.sh: per dataset, each variant's test metric (mean over modality subsets and
with all modalities; mean ± std over seeds) and the paired differences that decide whether L_rec is safe.

Usage: python benchmarks/lrec_safety_report.py runs/lrec-safety
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

LOWER_IS_BETTER = {"mae"}


def load(folder: Path) -> tuple[str, dict[str, dict[int, dict]]]:
    """{variant: {seed: test table}} of a dataset's main/ and no-warmup/ comparisons, and the metric."""
    out: dict[str, dict[int, dict]] = {}
    metric = ""
    for part in ("main", "no-warmup"):
        f = folder / part / "compare.json"
        if not f.is_file():
            continue
        d = json.loads(f.read_text())
        metric = d["metric"]
        for m, runs in d["runs"].items():
            name = m if part == "main" else f"{m} (no warm-up)"
            out[name] = {r["seed"]: r["test"] for r in runs}
    return metric, out


def ms(vals: list[float]) -> str:
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.4f}"


def paired(a: dict[int, dict], b: dict[int, dict], metric: str, row: str) -> str:
    seeds = sorted(set(a) & set(b))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    d = [sign * (a[s][row][metric] - b[s][row][metric]) for s in seeds]
    return f"{statistics.mean(d):+.4f} ± {statistics.stdev(d) if len(d) > 1 else 0.0:.4f}; {sum(x > 0 for x in d)}/{len(d)}"


def main(root: str) -> int:
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        metric, v = load(folder)
        if not v:
            continue
        full = max(next(iter(next(iter(v.values())).values())), key=lambda k: k.count("+"))
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        print(f"\n#### {folder.name} (test {metric}, {better} is better; {len(next(iter(v.values())))} seeds)")
        print(f"| variant | mean over subsets | all modalities ({full}) |\n|---|---|---|")
        for name, runs in v.items():
            print(f"| {name} | {ms([t['mean'][metric] for t in runs.values()])} | "
                  f"{ms([t[full][metric] for t in runs.values()])} |")
        print("\npaired by seed, mean over subsets (positive: the first is better; seeds where it is better):")
        for a, b in (("robult", "robult-no-rec"), ("robult", "supervised"), ("robult-no-pu", "supervised"),
                     ("robult (no warm-up)", "robult-no-rec"), ("robult-no-pu (no warm-up)", "supervised"),
                     ("robult", "robult (no warm-up)")):
            if a in v and b in v:
                print(f"- {a} − {b}: {paired(v[a], v[b], metric, 'mean')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/lrec-safety"))
