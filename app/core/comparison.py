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
import json
import math
from dataclasses import dataclass

from robult_engine.config import RunConfig
from robult_engine.metrics import HIGHER_IS_BETTER


def comparison_configs(base: RunConfig, methods: list[str] | tuple[str, ...], seeds: int,
                       overrides: dict[str, dict] | None = None) -> list[tuple[RunConfig, str]]:
    """(config, name) per run: seed by seed, every method (the first method is the reference). `overrides`: each
    method's own settings on top of the base (those a `robult tune` study chose), as `robult compare` applies
    them."""
    out = []
    overrides = overrides or {}
    for seed in range(int(seeds)):
        for m in methods:
            cfg = base.replace(**overrides.get(m, {})).replace(method=m, seed=seed, **{"data.seed": seed})
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


# --- the pinned baseline of the sessions view -------------------------------------------------------------------
# Every difference against the pinned baseline is the baseline minus the run (the sign `robult compare` prints:
# the first method minus each other one), taken seed by seed by the engine's own `paired_differences`, so the
# view and the CLI agree by construction. A run stands for its seed group: the runs of the same comparison whose
# config is the same apart from `seed` and `data.seed` (one per seed).
UNPAIRED_NOTE = "no seed in common: unpaired"
NO_METRICS = "—"
_SEED_KEYS = (("seed",), ("data", "seed"))


@dataclass(frozen=True)
class RunResult:
    """What the baseline needs of one run (`SessionStore.run_results`)."""
    id: int
    method: str
    seed: int
    comparison: str
    status: str
    config: dict
    test_metrics: dict

    @classmethod
    def from_record(cls, r: dict) -> "RunResult":
        return cls(int(r["id"]), str(r.get("method") or ""), int(r.get("seed") or 0), str(r.get("comparison") or ""),
                   str(r.get("status") or ""), r.get("config") if isinstance(r.get("config"), dict) else {},
                   r.get("test_metrics") if isinstance(r.get("test_metrics"), dict) else {})


def group_key(run: RunResult) -> tuple[str, str]:
    """Runs with the same key repeat one setting at other seeds: same comparison, same config apart from seeds."""
    cfg = json.loads(json.dumps(run.config))  # a deep copy
    for path in _SEED_KEYS:
        node = cfg
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return run.comparison, json.dumps(cfg, sort_keys=True, default=str)


def seed_group(run: RunResult, runs: list[RunResult]) -> list[RunResult]:
    """The runs that repeat `run`'s setting (itself included)."""
    key = group_key(run)
    return [r for r in runs if r.id == run.id or group_key(r) == key]


def by_seed(run: RunResult, group: list[RunResult], keep=lambda r: True) -> dict[int, RunResult]:
    """One run per seed of `run`'s group (those `keep` accepts): `run` itself at its seed, else the latest."""
    out: dict[int, RunResult] = {}
    for r in sorted(group, key=lambda r: r.id):
        if keep(r):
            out[r.seed] = r
    if keep(run):
        out[run.seed] = run
    return out


def primary_test_metric(test_metrics: dict) -> str:
    """The primary metric of a run's test table ("" when it has none)."""
    from robult_engine.metrics import PRIMARY
    return next((m for m in PRIMARY.values() if any(isinstance(row, dict) and m in row
                                                     for row in test_metrics.values())), "")


def mean_test_metric(test_metrics: dict, metric: str) -> float:
    """The test metric's mean over modality subsets as `robult compare` takes it (`mean_over_subsets`, on the
    subsets in the engine's order: the store keeps them sorted by name, and a float32 sum depends on order)."""
    from robult_engine.evaluation import mean_over_subsets, modality_subsets
    rows = {k: {m: float(v) for m, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for k, row in test_metrics.items() if k != "mean" and isinstance(row, dict)}
    full = max(rows, key=lambda k: (k.count("+"), -list(rows).index(k)), default="")
    order = [name for name, _ in modality_subsets(full.split("+"))] if full and len(full.split("+")) <= 12 else []
    table = {k: rows[k] for k in order if k in rows}
    table.update({k: v for k, v in rows.items() if k not in table})
    try:
        return float(mean_over_subsets(table, "").get(metric, float("nan")))
    except (TypeError, ValueError, RuntimeError):
        return float("nan")


@dataclass(frozen=True)
class BaselineDifference:
    """The baseline minus a run on one metric: the mean of the per-seed differences over the seeds both have
    (`n` pairs), or — without a seed in common — the difference of their means over seeds (`n` 0, a note)."""
    metric: str
    higher_is_better: bool
    mean: float  # nan: nothing to compare
    std: float
    wins: int  # pairs on which the baseline is ahead
    n: int
    note: str = ""

    @property
    def available(self) -> bool:
        return math.isfinite(self.mean)

    @property
    def paired(self) -> bool:
        return self.n > 0

    @property
    def run_better(self) -> bool | None:
        """Whether the run is ahead of the baseline (None: level, or nothing to compare). Lower is better for
        an error (MAE): there a positive baseline − run means the run is ahead."""
        if not self.available or self.mean == 0:
            return None
        return (self.mean < 0) if self.higher_is_better else (self.mean > 0)

    def text(self) -> str:
        if not self.available:
            return NO_METRICS
        if self.paired:
            return f"{self.mean:+.4f} · {self.n} pair{'s' if self.n != 1 else ''}"
        return f"{self.mean:+.4f} · {self.note}"


def paired_vs_baseline(base: dict[int, float], run: dict[int, float], metric: str) -> BaselineDifference:
    """baseline − run of per-seed values: paired by seed by the engine's `paired_differences` (what `robult
    compare` prints for a baseline run first), else unpaired with UNPAIRED_NOTE."""
    from robult_engine.cli import paired_differences
    from robult_engine.metrics import HIGHER_IS_BETTER
    higher = HIGHER_IS_BETTER.get(metric, True)
    nan = float("nan")
    if set(base) & set(run):
        results = {"baseline": [{"seed": s, "test": {"mean": {metric: float(v)}}} for s, v in sorted(base.items())],
                   "run": [{"seed": s, "test": {"mean": {metric: float(v)}}} for s, v in sorted(run.items())]}
        d = paired_differences(results, ["baseline", "run"], metric).get("run")
        if d is None:
            return BaselineDifference(metric, higher, nan, nan, 0, 0)
        return BaselineDifference(metric, higher, float(d["mean"]), float(d["std"]), int(d["wins"]), int(d["n"]))
    b = [float(v) for v in base.values() if math.isfinite(v)]
    r = [float(v) for v in run.values() if math.isfinite(v)]
    if not b or not r:
        return BaselineDifference(metric, higher, nan, nan, 0, 0)
    return BaselineDifference(metric, higher, sum(b) / len(b) - sum(r) / len(r), nan, 0, 0, UNPAIRED_NOTE)


def baseline_differences(baseline_id: int, runs: list[RunResult]) -> tuple[str, dict[int, BaselineDifference | str]]:
    """(metric, per run id): the baseline minus the run's seed group on the test metric's mean over subsets —
    "baseline" for the baseline's own seed group, a BaselineDifference (perhaps unavailable: "—") otherwise.
    Only finished runs count, as in `robult compare`."""
    from robult_engine.metrics import HIGHER_IS_BETTER
    base = next((r for r in runs if r.id == baseline_id), None)
    if base is None:
        return "", {}
    metric = primary_test_metric(base.test_metrics)
    keys = {r.id: group_key(r) for r in runs}
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in runs:
        groups.setdefault(keys[r.id], []).append(r)
    means = {r.id: mean_test_metric(r.test_metrics, metric) if metric and r.status == "finished" else float("nan")
             for r in runs}

    def keep(r: RunResult) -> bool:
        return math.isfinite(means[r.id])
    base_vals = {s: means[r.id] for s, r in by_seed(base, groups[keys[base.id]], keep).items()}
    nan = float("nan")
    out: dict[int, BaselineDifference | str] = {}
    for r in runs:
        if keys[r.id] == keys[base.id]:
            out[r.id] = "baseline"
        elif not keep(r):  # no test metrics (not finished, or of another task): nothing to compare
            out[r.id] = BaselineDifference(metric, HIGHER_IS_BETTER.get(metric, True), nan, nan, 0, 0)
        else:
            vals = {s: means[x.id] for s, x in by_seed(r, groups[keys[r.id]], keep).items()}
            out[r.id] = paired_vs_baseline(base_vals, vals, metric)
    return metric, out


def curve_difference(base: dict[int, dict[int, float]], run: dict[int, dict[int, float]]
                     ) -> tuple[list[int], list[float], int]:
    """Per epoch, the baseline minus the run of per-seed curves ({seed: {epoch: value}}): paired by seed over the
    seeds both have (returns their number), else the difference of the means over seeds (returns 0)."""
    common = sorted(set(base) & set(run))
    epochs = sorted({e for s in (common or base) for e in base[s]} & {e for s in (common or run) for e in run[s]})
    ys = []
    for e in epochs:
        if common:
            b = {s: base[s][e] for s in common if e in base[s]}
            r = {s: run[s][e] for s in common if e in run[s]}
        else:
            b = {s: c[e] for s, c in base.items() if e in c}
            r = {s: c[e] for s, c in run.items() if e in c}
        d = paired_vs_baseline(b, r, "val_score") if (not common or set(b) & set(r)) else None
        ys.append(d.mean if d is not None else float("nan"))
    return epochs, ys, len(common)


_ABSENT = object()


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(baseline: dict, config: dict) -> list[tuple[str, str, str]]:
    """The config keys (dotted) whose values differ: (key, the baseline's, this run's), sorted by key; a key
    one config lacks shows as "(absent)"."""
    a = _flatten(baseline if isinstance(baseline, dict) else {})
    b = _flatten(config if isinstance(config, dict) else {})

    def show(v: object) -> str:
        return "(absent)" if v is _ABSENT else json.dumps(v, default=str)
    return [(k, show(a.get(k, _ABSENT)), show(b.get(k, _ABSENT))) for k in sorted(set(a) | set(b))
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]
