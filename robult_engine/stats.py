"""Statistics and plain-text tables shared by the commands (compare, sweep, tune, explain) and the app.

Small functions of lists of numbers and of rows of text, so every command, and the app's comparison view, reports
its numbers through the same code. Importing this module loads no torch, data or model (`paired_differences` reads
which way each metric is better from robult_engine/metrics.py when it is called).
"""
from __future__ import annotations

import math


def mean_std(vals: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value) of the non-NaN values; NaN for none."""
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def paired_differences(results: dict[str, list[dict]], methods: list[str], metric: str) -> dict[str, dict]:
    """The first method minus each other one on the mean over subsets, seed by seed (the runs of a seed share
    labeled indices and batch order, so the paired difference removes the split's own luck)."""
    from .metrics import HIGHER_IS_BETTER
    ref = methods[0]
    by_seed = {r["seed"]: r["test"]["mean"].get(metric, float("nan")) for r in results[ref]}
    out = {}
    for m in methods[1:]:
        diffs = [by_seed[r["seed"]] - r["test"]["mean"].get(metric, float("nan")) for r in results[m]
                 if r["seed"] in by_seed]
        diffs = [d for d in diffs if not math.isnan(d)]
        if diffs:
            mean, sd = mean_std(diffs)
            higher = HIGHER_IS_BETTER.get(metric, True)  # MAE: the first method is ahead when its error is lower
            out[m] = {"mean": mean, "std": sd, "wins": sum((d > 0) if higher else (d < 0) for d in diffs),
                      "n": len(diffs)}
    return out


def format_table(rows: list[str], cols: list[str], cell, first: str = "subset") -> str:
    """A plain-text table: one row per subset, one column per method/metric."""
    w0 = max([len(first)] + [len(r) for r in rows])
    widths = [max(len(c), 15) for c in cols]
    lines = [first.ljust(w0) + "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    for r in rows:
        lines.append(r.ljust(w0) + "  " + "  ".join(cell(r, c).rjust(w) for c, w in zip(cols, widths)))
    return "\n".join(lines)


__all__ = ["format_table", "mean_std", "paired_differences"]
