"""Comparisons from the GUI, Qt-free: methods × seeds on identical labels and batches, and their paired
differences, as `robult compare` prints them.

A comparison is a list of run configs that differ only in the method and the seed; for a seed, every method
gets the same `seed` and `data.seed`, so the labeled indices and the batch order are identical across methods
(what makes the paired difference meaningful). The runs share a comparison id in the session database and
run one after another (`RunSession.start_queue`); a run that finished is a row like any other, so closing
the app mid-queue loses nothing finished.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass

from robult_engine.config import RunConfig
from robult_engine.metrics import HIGHER_IS_BETTER


def comparison_configs(base: RunConfig, methods: list[str] | tuple[str, ...], seeds: int
                       ) -> list[tuple[RunConfig, str]]:
    """(config, name) per run: seed by seed, every method (the first method is the reference)."""
    out = []
    for seed in range(int(seeds)):
        for m in methods:
            cfg = base.replace(method=m, seed=seed, **{"data.seed": seed})
            out.append((cfg, f"{m} · seed {seed}"))
    return out


def new_comparison_id() -> str:
    return "cmp-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def subset_mean(test_metrics: dict, metric: str) -> float:
    """The mean over modality subsets of one test metric (nan when absent)."""
    vals = [row[metric] for name, row in test_metrics.items() if name != "mean" and metric in row
            and row[metric] is not None and math.isfinite(row[metric])]
    return sum(vals) / len(vals) if vals else float("nan")


def _mean_std(v: list[float]) -> tuple[float, float]:
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)


@dataclass(frozen=True)
class MethodSummary:
    method: str
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class PairedDifference:
    method: str  # the reference minus this method
    mean: float
    std: float
    wins: int  # seeds on which the reference is ahead
    n: int


@dataclass(frozen=True)
class ComparisonSummary:
    comparison: str
    metric: str
    methods: tuple[MethodSummary, ...]
    differences: tuple[PairedDifference, ...]

    def text(self) -> str:
        if not self.methods:
            return ""
        ref = self.methods[0].method
        parts = [f"<b>Comparison {self.comparison}</b> — test {self.metric}, mean over modality subsets:"]
        parts += [f"{s.method} {s.mean:.4f} ± {s.std:.4f} ({s.n} seed{'s' if s.n != 1 else ''})" for s in self.methods]
        for d in self.differences:
            parts.append(f"{ref} − {d.method}: {d.mean:+.4f} ± {d.std:.4f}, {ref} ahead in {d.wins} of {d.n}")
        return "<br>".join(parts)


def summarise(comparison: str, runs: list[tuple[str, int, dict]], metric: str) -> ComparisonSummary:
    """`runs`: (method, seed, test metrics) of the finished runs of one comparison, the reference method's
    first. The paired difference is taken seed by seed (the runs of a seed share labels and batches)."""
    order: list[str] = []
    by: dict[str, dict[int, float]] = {}
    for method, seed, tm in runs:
        if method not in by:
            order.append(method)
            by[method] = {}
        v = subset_mean(tm, metric)
        if math.isfinite(v):
            by[method][int(seed)] = v
    methods = tuple(MethodSummary(m, *_mean_std(list(by[m].values())), len(by[m])) for m in order)
    higher = HIGHER_IS_BETTER.get(metric, True)
    diffs = []
    if order:
        ref = by[order[0]]
        for m in order[1:]:
            d = [ref[s] - v for s, v in by[m].items() if s in ref]
            if d:
                diffs.append(PairedDifference(m, *_mean_std(d), sum((x > 0) if higher else (x < 0) for x in d), len(d)))
    return ComparisonSummary(comparison, metric, methods, tuple(diffs))
