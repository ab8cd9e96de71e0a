"""Where does the model fail? Failure slices of a split: SliceLine-style search over per-sample features.

A *slice* is a conjunction of up to `max_order` predicates ``feature=value`` (``class=3 ∧ audio=absent``). Every
scored sample of the split gets an error and a value for each feature; the search returns the slices whose mean
error is much higher than the split's, weighted by their size, as SliceLine does (Sagadeeva & Boehm, SIGMOD 2021).
Pure NumPy / PyTorch (no Qt, no sqlite, no further dependency); deterministic: the same inputs give the same
slices in the same order.

**Per-sample error** (the mean over the split is the task's usual error, as `robult eval` reports it):

- single-label: 1 where the predicted class is wrong, else 0 (the mean is 1 − accuracy);
- multi-label: 1 − the sample's F1 between the predicted labels (logit > 0) and the true ones (2 |P ∩ T| /
  (|P| + |T|)), the per-sample term of ``f1_samples``, except that a sample with no true label and none predicted
  is right (error 0; ``f1_samples`` counts it F1 0, scikit-learn's convention), so "no labels" is no failure;
- regression: the absolute error |prediction − target| (the mean is the MAE); a slice is scored by its mean error.

The prediction is the model's under the sample's presence mask: the data's own mask, combined with the
``--missing`` setting when one is given (drawn as `robult eval --missing` draws it: robult_engine.missing, same
split, spec and mask seed). A sample left with no modality is not scored.

**Features** (each a small set of values; a feature with a single value on the scored samples is dropped):

- one per modality: ``present``; ``masked`` (the data has it, the ``--missing`` setting removed it); ``absent``
  (the data itself lacks it: the dataset's own presence mask, e.g. Movies' ``production``);
- ``class``: the true class (single-label); ``labels``: the number of true labels (multi-label: 0, 1, 2, 3+);
  ``target``: the true score's quartile (regression);
- ``confidence``: the quartile of the prediction's confidence (max softmax; multi-label: the mean of
  max(p, 1 − p) over the labels);
- ``kappa``: the quartile of the soft weight κ the model's prototype memory gives the sample (docs/method.md,
  soft-PU), for methods that train with κ and whose checkpoint holds prototypes: S = g_0(f_0(H)) for a sample with
  every modality, the normalised mean of its present Z^i otherwise, its pseudo-class from the model (as in
  training: `missing.soft_pu_points`), the run's kernel and bandwidth (median heuristic over the split when none);
- ``labelled-nn``: how many of the k nearest training samples (cosine, in the shared latent: the normalised mean of
  a sample's present Z^i) kept their label in the run, binned as 0, up to k/4, up to k/2, more (k = 10);
- every extra column of a manifest (``meta:NAME``, `SplitData.meta`): its values as written (the 30 most frequent,
  the rest as ``other``), or quartiles when the column is numeric with many distinct values.

**Scoring and search** (SliceLine): with n scored samples, ē the mean error, a slice S of |S| samples and mean
error ē_S scores ``sc = α (ē_S / ē − 1) − (1 − α) (n / |S| − 1)``: α ∈ (0, 1] trades error against size (α = 1:
error only; the default 0.95 favours large slices among equally bad ones). Only slices of at least
`min_support` samples (default max(10, 1 % of n)) with sc > 0 are returned. The search goes level by level:
level 1 every predicate, level L + 1 the conjunctions of two level-L slices that share L − 1 predicates (each
feature at most once) and whose every level-L sub-slice survived. A slice survives when it has `min_support`
samples, some error, and a score upper bound above the k-th best score so far; the bound of a candidate (no
subset of S has more samples than S, more summed error than S, or a larger maximum error) is the largest
score any sub-slice of at least `min_support` samples could reach, computed from the smallest size, error sum
and maximum error of its parents. So pruning never drops a slice that could enter the top k. A conjunction
with as many samples as one of its parents (``class=3 ∧ audio=present`` when every class-3 sample has its audio)
is the same set of samples under a longer name and is not reported.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .cli_common import add_trust_arg, parse_trust
from .config import ConfigError
from .data import load_dataset
from .data.base import make_batch
from .errors import MissingSpecError
from .evaluation import autocast_ctx, encode_split, subset_logits, transfer_mismatches
from .losses import pseudo_classes, soft_kappa
from .methods import method_spec
from .missing import soft_pu_points
from .missing_spec import parse_missing_grid
from .sweep import MaskEvaluator, add_missing_args

BINS = 4  # quantile bins of a continuous feature (confidence, κ, a numeric manifest column, a regression target)
MAX_LEVELS = 30  # values kept of a categorical manifest column (the rest are "other")
NEIGHBOURS = 10  # k of the labelled-neighbour feature
DEFAULT_ALPHA = 0.95
MAX_ORDER = 3  # predicates per slice at most


def default_min_support(n: int) -> int:
    """max(10, 1 % of n) samples."""
    return max(10, int(math.ceil(0.01 * n)))


# ----------------------------------------------------------------------------------------------------------
# Per-sample errors and features
# ----------------------------------------------------------------------------------------------------------


ERROR_NAMES = {"single-label": "error (1 = wrong class)", "multi-label": "1 − sample F1",
               "regression": "absolute error"}


def sample_errors(logits: torch.Tensor, target: torch.Tensor, task: str) -> np.ndarray:
    """(N,) float64 per-sample errors of logits (N, C) against the targets (see the module docstring)."""
    logits = logits.float()
    if task == "single-label":
        return (logits.argmax(-1) != target.long()).double().numpy()
    if task == "multi-label":
        pred, t = (logits > 0).double(), target.double()
        tp = (pred * t).sum(1)
        denom = pred.sum(1) + t.sum(1)
        f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1e-12), torch.ones_like(denom))  # ∅ = ∅: right
        return (1.0 - f1).numpy()
    return (logits[:, 0].double() - target.double().reshape(-1)).abs().numpy()


def prediction_confidence(logits: torch.Tensor, task: str) -> np.ndarray | None:
    """(N,) how sure the prediction is: max softmax, or the mean of max(p, 1 − p) over the labels; None for
    regression (a score has no confidence)."""
    if task == "single-label":
        return torch.softmax(logits.float(), -1).amax(-1).double().numpy()
    if task == "multi-label":
        p = torch.sigmoid(logits.float())
        return torch.maximum(p, 1 - p).mean(-1).double().numpy()
    return None


@dataclass(frozen=True)
class Feature:
    """One per-sample feature: a value code per scored sample (−1: no value) and the text of each code."""
    name: str
    kind: str  # "modality" | "class" | "binned" | "column"
    levels: tuple[str, ...]
    codes: np.ndarray  # (n,) int64 in −1..len(levels) − 1

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "levels": list(self.levels)}


def _fmt_edge(x: float) -> str:
    return f"{x:.3g}"


def quantile_feature(name: str, values: np.ndarray, bins: int = BINS, valid: np.ndarray | None = None
                     ) -> Feature | None:
    """Quantile bins of a continuous value ('[lo, hi)', the last one closed); None when fewer than 2 bins remain
    (every value alike). `valid`: the samples that have a value (the others get code −1)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) if valid is None else (np.asarray(valid, bool) & np.isfinite(v))
    if ok.sum() < 2:
        return None
    edges = np.unique(np.quantile(v[ok], np.linspace(0.0, 1.0, bins + 1)))
    if len(edges) < 2:
        return None
    inner = edges[1:-1]
    codes = np.full(len(v), -1, dtype=np.int64)
    codes[ok] = np.searchsorted(inner, v[ok], side="right")
    levels = tuple(f"[{_fmt_edge(lo)}, {_fmt_edge(hi)}{']' if k == len(edges) - 2 else ')'}"
                   for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])))
    used = np.unique(codes[ok])
    if len(used) < 2:
        return None
    return Feature(name, "binned", levels, codes)


def categorical_feature(name: str, values: list[str] | np.ndarray, kind: str = "column",
                        order: tuple[str, ...] | None = None, max_levels: int = MAX_LEVELS) -> Feature | None:
    """A feature of the distinct values (strings): in `order` when given, else by frequency (then text), the
    `max_levels` most frequent kept and the rest as "other". None when a single value remains."""
    vals = ["(empty)" if (isinstance(x, str) and x == "") else str(x) for x in values]
    if order is None:
        counts: dict[str, int] = {}
        for x in vals:
            counts[x] = counts.get(x, 0) + 1
        ranked = sorted(counts, key=lambda x: (-counts[x], x))
        keep = ranked[:max_levels] if len(ranked) > max_levels else ranked
        levels = tuple(sorted(keep, key=_natural_key)) + (("other",) if len(ranked) > max_levels else ())
    else:
        levels = tuple(order)
    index = {lv: i for i, lv in enumerate(levels)}
    other = index.get("other", -1)
    codes = np.array([index.get(x, other) for x in vals], dtype=np.int64)
    if len(np.unique(codes[codes >= 0])) < 2:
        return None
    return Feature(name, kind, levels, codes)


def _natural_key(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def column_feature(name: str, values: list[str]) -> Feature | None:
    """A manifest column: quartiles when every non-empty value is a number and there are more distinct values
    than 2 × BINS, else its categories."""
    filled = [x for x in values if x != ""]
    try:
        nums = np.array([float(x) for x in filled], dtype=np.float64)
        numeric = len(filled) > 0 and bool(np.isfinite(nums).all())
    except ValueError:
        numeric = False
    if numeric and len(set(filled)) > 2 * BINS:
        v = np.array([float(x) if x != "" else np.nan for x in values], dtype=np.float64)
        return quantile_feature(name, v)
    return categorical_feature(name, values)


PRESENCE_LEVELS = ("present", "masked", "absent")


def presence_features(names: tuple[str, ...], data_mask: np.ndarray, used_mask: np.ndarray) -> list[Feature]:
    """One feature per modality: present / masked (removed by the missing-modality setting) / absent (the data
    lacks it). data_mask, used_mask: (n, M) bool."""
    out = []
    for i, name in enumerate(names):
        codes = np.where(used_mask[:, i], 0, np.where(data_mask[:, i], 1, 2)).astype(np.int64)
        if len(np.unique(codes)) >= 2:
            out.append(Feature(name, "modality", PRESENCE_LEVELS, codes))
    return out


def neighbour_levels(k: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Bins of "how many of the k nearest are labelled": 0, 1..k/4, ..k/2, ..k → (labels, upper edges)."""
    q, h = max(1, k // 4), max(1, k // 2)
    uppers = sorted({0, q, h, k})
    labels, lo = [], 0
    for up in uppers:
        labels.append(f"{lo}/{k}" if lo == up else f"{lo}-{up}/{k}")
        lo = up + 1
    return tuple(labels), np.array(uppers)


@torch.no_grad()
def labelled_neighbour_counts(points: torch.Tensor, train_points: torch.Tensor, train_labelled: torch.Tensor,
                              k: int = NEIGHBOURS, chunk: int = 512) -> np.ndarray:
    """(n,) how many of each point's k nearest training points (cosine; points are unit vectors) are labelled."""
    k = min(k, len(train_points))
    out = np.zeros(len(points), dtype=np.int64)
    lab = train_labelled.bool()
    for start in range(0, len(points), chunk):
        sim = points[start:start + chunk].float() @ train_points.float().T  # (c, N_train)
        idx = sim.topk(k, dim=1).indices  # ties: torch's order, the same for the same inputs
        out[start:start + chunk] = lab[idx].sum(1).numpy()
    return out


def unit_mean_latent(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, d) the normalised mean of the normalised Z^i over the modalities of `mask` (N, M)."""
    zn = torch.nn.functional.normalize(z.float(), dim=-1)
    w = mask.float().unsqueeze(-1)
    return torch.nn.functional.normalize((zn * w).sum(1) / w.sum(1).clamp(min=1.0), dim=-1)


# ----------------------------------------------------------------------------------------------------------
# The search (SliceLine)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    """One slice: its predicates, size, mean error inside and outside, SliceLine score and sample indices
    (into the split, sorted)."""
    predicates: tuple[tuple[str, str], ...]  # (feature, value)
    size: int
    error_in: float
    error_out: float
    score: float
    indices: np.ndarray = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        return " ∧ ".join(f"{f}={v}" for f, v in self.predicates)

    def to_dict(self, with_indices: bool = True) -> dict:
        d = {"slice": self.text, "predicates": [{"feature": f, "value": v} for f, v in self.predicates],
             "size": self.size, "error_in": self.error_in, "error_out": self.error_out, "score": self.score}
        if with_indices:
            d["indices"] = [int(i) for i in self.indices]
        return d


def slice_score(size, err_sum, n: int, mean_error: float, alpha: float):
    """SliceLine's score α (ē_S / ē − 1) − (1 − α) (n / |S| − 1) (arrays or scalars; −inf for an empty slice)."""
    size = np.asarray(size, dtype=np.float64)
    err_sum = np.asarray(err_sum, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = alpha * ((err_sum / size) / mean_error - 1.0) - (1.0 - alpha) * (n / size - 1.0)
    return np.where(size > 0, sc, -np.inf)


def score_upper_bound(size, err_sum, err_max, n: int, mean_error: float, alpha: float, min_support: int):
    """The largest score a sub-slice of a slice with (size, error sum, max error) could reach with at least
    `min_support` samples: max over s ∈ [min_support, size] of α (min(err_sum, s·err_max) / (s ē) − 1) −
    (1 − α)(n / s − 1), which is monotone on either side of s = err_sum / err_max, so three points suffice."""
    size = np.asarray(size, dtype=np.float64)
    err_sum = np.asarray(err_sum, dtype=np.float64)
    err_max = np.asarray(err_max, dtype=np.float64)
    lo = np.minimum(float(min_support), size)
    with np.errstate(divide="ignore", invalid="ignore"):
        knee = np.clip(np.where(err_max > 0, err_sum / err_max, lo), lo, size)
    best = np.full(size.shape, -np.inf)
    for s in (lo, knee, size):
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.minimum(err_sum, s * err_max)
            sc = alpha * (e / (s * mean_error) - 1.0) - (1.0 - alpha) * (n / s - 1.0)
        best = np.maximum(best, np.where(s > 0, sc, -np.inf))
    return np.where(size >= min_support, best, -np.inf)


@dataclass
class SearchStats:
    """What the search looked at, per level: candidates generated, evaluated, kept for the next level."""
    generated: list[int] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"generated": self.generated, "evaluated": self.evaluated, "kept": self.kept}


class _TopK:
    """The k best slices so far, ordered by (−score, −size, predicate codes): deterministic ties."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.items: list[tuple[tuple, tuple, int, float, float]] = []  # (order key, preds, size, err_sum, score)

    def add(self, preds: tuple, size: int, err_sum: float, score: float) -> None:
        if not score > 0:
            return
        self.items.append(((-score, -size, preds), preds, size, err_sum, score))
        self.items.sort(key=lambda t: t[0])
        del self.items[self.k:]

    @property
    def threshold(self) -> float:
        """The score a slice must beat to matter: the k-th best so far, 0 while fewer than k are known."""
        return self.items[-1][4] if len(self.items) >= self.k else 0.0


def find_slices(errors: np.ndarray, features: list[Feature], *, top_k: int = 10, min_support: int | None = None,
                max_order: int = 2, alpha: float = DEFAULT_ALPHA, rows: np.ndarray | None = None,
                check: Callable[[], None] | None = None, progress: Callable[[int, str], None] | None = None
                ) -> tuple[list[Slice], SearchStats]:
    """The top-k slices (score > 0, at least `min_support` samples, up to `max_order` predicates) of the samples
    with these errors (n,) and features (codes over the same n samples). `rows` maps the n samples to split
    indices (default 0..n−1). `check()` may raise to stop; `progress(level, text)` is told each level."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    n = len(e)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    if top_k < 1:
        raise ConfigError(f"--top: must be at least 1, got {top_k}")
    if not 1 <= max_order <= MAX_ORDER:
        raise ConfigError(f"--max-order: 1 to {MAX_ORDER} predicates per slice, got {max_order}")
    if not (0.0 < alpha <= 1.0):
        raise ConfigError(f"--alpha: must be in (0, 1], got {alpha}")
    sigma = default_min_support(n) if min_support is None else int(min_support)
    if sigma < 1:
        raise ConfigError(f"--min-support: must be at least 1 sample, got {min_support}")
    stats = SearchStats()
    if n == 0 or not np.isfinite(e).all():
        if n and not np.isfinite(e).all():
            raise ValueError("the per-sample errors hold NaN or infinite values")
        return [], stats
    ebar = float(e.mean())
    if ebar <= 0:
        return [], stats  # no error anywhere: nothing fails
    total_err = float(e.sum())
    # the basic predicates (feature f = value v), in feature then value order
    preds: list[tuple[int, int]] = []
    masks: list[np.ndarray] = []
    for fi, f in enumerate(features):
        for vi in range(len(f.levels)):
            m = f.codes == vi
            if m.any():
                preds.append((fi, vi))
                masks.append(m)
    if not preds:
        return [], stats
    top = _TopK(top_k)

    def evaluate(cands: list[tuple[int, ...]]):
        """(size, err_sum, err_max) of each candidate (a tuple of predicate ids)."""
        size = np.zeros(len(cands), dtype=np.int64)
        esum = np.zeros(len(cands))
        emax = np.zeros(len(cands))
        for j, c in enumerate(cands):
            if check is not None and j % 512 == 0:
                check()
            m = masks[c[0]]
            for p in c[1:]:
                m = m & masks[p]
            s = int(m.sum())
            size[j] = s
            if s:
                ev = e[m]
                esum[j] = ev.sum()
                emax[j] = ev.max()
        return size, esum, emax

    frontier: dict[tuple[int, ...], tuple[int, float, float]] = {}
    level_cands: list[tuple[int, ...]] = [(p,) for p in range(len(preds))]
    bounds = None  # level 1: no parents
    for level in range(1, max_order + 1):
        if progress is not None:
            progress(level, f"level {level}: {len(level_cands)} candidate slices")
        stats.generated.append(len(level_cands))
        if bounds is not None:  # prune candidates whose parents' bound cannot beat the k-th best
            keep = [j for j in range(len(level_cands)) if bounds[j] > top.threshold]
            level_cands = [level_cands[j] for j in keep]
        stats.evaluated.append(len(level_cands))
        size, esum, emax = evaluate(level_cands)
        sc = slice_score(size, esum, n, ebar, alpha)
        for j, c in enumerate(level_cands):
            # a conjunction as large as one of its parents holds the very same samples: it adds a predicate
            # that says nothing, so it is not reported (it still takes part in the search)
            same = level > 1 and any(frontier[c[:i] + c[i + 1:]][0] == size[j] for i in range(len(c)))
            if size[j] >= sigma and not same:
                top.add(tuple(preds[p] for p in c), int(size[j]), float(esum[j]), float(sc[j]))
        ub = score_upper_bound(size, esum, emax, n, ebar, alpha, sigma)
        frontier = {c: (int(size[j]), float(esum[j]), float(emax[j])) for j, c in enumerate(level_cands)
                    if size[j] >= sigma and esum[j] > 0 and ub[j] > top.threshold}
        stats.kept.append(len(frontier))
        if level == max_order or len(frontier) < 2:
            break
        # level + 1: join two slices sharing their first level − 1 predicates (apriori), each feature once,
        # every level-sized sub-slice in the frontier; the bound from the parents' smallest statistics
        ordered = sorted(frontier)
        groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for c in ordered:
            groups.setdefault(c[:-1], []).append(c)
        next_cands, next_bounds = [], []
        for prefix, members in groups.items():
            for a_i in range(len(members)):
                for b_i in range(a_i + 1, len(members)):
                    a, b = members[a_i][-1], members[b_i][-1]
                    if preds[a][0] == preds[b][0]:
                        continue  # one value per feature
                    cand = prefix + (a, b)
                    feats = [preds[p][0] for p in cand]
                    if len(set(feats)) != len(feats):
                        continue
                    parents = [cand[:i] + cand[i + 1:] for i in range(len(cand))]
                    if any(p not in frontier for p in parents):
                        continue
                    ps = min(frontier[p][0] for p in parents)
                    pe = min(frontier[p][1] for p in parents)
                    pm = min(frontier[p][2] for p in parents)
                    next_cands.append(cand)
                    next_bounds.append(float(score_upper_bound(ps, pe, pm, n, ebar, alpha, sigma)))
        if not next_cands:
            break
        level_cands, bounds = next_cands, next_bounds
    out = []
    index = {p: i for i, p in enumerate(preds)}
    for _key, pr, size_, esum_, score_ in top.items:
        m = masks[index[pr[0]]]
        for p in pr[1:]:
            m = m & masks[index[p]]
        out_n = n - size_
        out.append(Slice(predicates=tuple((features[fi].name, features[fi].levels[vi]) for fi, vi in pr),
                         size=size_, error_in=esum_ / size_,
                         error_out=(total_err - esum_) / out_n if out_n else float("nan"), score=score_,
                         indices=np.sort(rows[m])))
    return out, stats


def slice_errors(slices: list[Slice], errors_by_index: np.ndarray) -> list[tuple[float, float]]:
    """(mean error in, mean error out) of each slice's samples under other per-sample errors (N,) over the whole
    split (NaN where a sample is not scored): e.g. a second model on the very samples of each slice."""
    e = np.asarray(errors_by_index, dtype=np.float64)
    scored = np.isfinite(e)
    out = []
    for s in slices:
        inside = np.zeros(len(e), dtype=bool)
        inside[s.indices] = True
        a, b = e[inside & scored], e[~inside & scored]
        out.append((float(a.mean()) if len(a) else float("nan"), float(b.mean()) if len(b) else float("nan")))
    return out


# ----------------------------------------------------------------------------------------------------------
# From a model and a split
# ----------------------------------------------------------------------------------------------------------


@dataclass
class SliceInputs:
    """The scored samples of a split: errors, features, and what the app shows of each sample."""
    task: str
    error_name: str
    errors: np.ndarray  # (n,) of the scored samples
    rows: np.ndarray  # (n,) their split indices
    features: list[Feature]
    errors_all: np.ndarray  # (N,) over the whole split, NaN where not scored
    used_mask: np.ndarray  # (N, M) bool: the modalities each sample's prediction used
    predicted: np.ndarray  # (N,) predicted class (single-label) / score (regression); −1 / NaN elsewhere
    notes: list[str] = field(default_factory=list)

    @property
    def n_total(self) -> int:
        return len(self.errors_all)


def slice_inputs(enc, split, info, *, spec_mask: torch.Tensor | None = None, kappa: np.ndarray | None = None,
                 neighbour_counts: np.ndarray | None = None, neighbours: int = NEIGHBOURS) -> SliceInputs:
    """Errors and features of an encoded split (`evaluation.encode_split`) under a presence mask `spec_mask`
    (N, M) (None: the data's own). `kappa`, `neighbour_counts`: (N,) per sample, or None to leave them out."""
    n_all, m = enc.mask.shape
    sm = torch.ones(n_all, m, dtype=torch.bool) if spec_mask is None else spec_mask.bool()
    logits, rows_t = subset_logits(enc, sm)
    used = (enc.mask & sm)
    task = info.task
    errors_all = np.full(n_all, np.nan)
    err = sample_errors(logits, enc.target, task)
    rows = rows_t.numpy().nonzero()[0].astype(np.int64)
    errors_all[rows] = err[rows]
    notes = []
    if len(rows) < n_all:
        notes.append(f"{n_all - len(rows)} sample(s) with no modality left were not scored")
    data_mask = enc.mask.numpy()[rows]
    feats = presence_features(tuple(info.modality_names), data_mask, used.numpy()[rows])
    target = enc.target[rows_t]
    if task == "single-label":
        f = categorical_feature("class", [info.class_names[int(c)] for c in target.tolist()], kind="class",
                                order=tuple(info.class_names))
    elif task == "multi-label":
        cnt = target.float().sum(1).long().clamp(max=3).tolist()
        f = categorical_feature("labels", ["3+" if c >= 3 else str(c) for c in cnt], kind="class",
                                order=("0", "1", "2", "3+"))
    else:
        f = quantile_feature("target", target.double().reshape(-1).numpy())
    if f is not None:
        feats.append(f)
    conf = prediction_confidence(logits, task)
    if conf is not None:
        f = quantile_feature("confidence", conf[rows])
        if f is not None:
            feats.append(f)
    if kappa is not None:
        f = quantile_feature("kappa", np.asarray(kappa, dtype=np.float64)[rows])
        if f is not None:
            feats.append(f)
        else:
            notes.append("κ is alike for every sample, so it is no feature")
    if neighbour_counts is not None:
        labels, uppers = neighbour_levels(neighbours)
        codes = np.searchsorted(uppers, np.asarray(neighbour_counts)[rows], side="left").astype(np.int64)
        if len(np.unique(codes)) >= 2:
            feats.append(Feature("labelled-nn", "binned", labels, codes))
        else:
            notes.append(f"every sample has {labels[int(codes[0])] if len(codes) else '?'} labelled neighbours, "
                         f"so labelled-nn is no feature")
    for name, values in sorted(getattr(split, "meta", {}).items()):
        if len(values) != n_all:
            continue
        f = column_feature(name, [values[i] for i in rows])
        if f is not None:
            feats.append(f)
    if task == "single-label":
        predicted = logits.argmax(-1).double().numpy()
        predicted[~rows_t.numpy()] = -1
    elif task == "regression":
        predicted = logits[:, 0].double().numpy().copy()
        predicted[~rows_t.numpy()] = np.nan
    else:
        predicted = np.full(n_all, -1.0)
    return SliceInputs(task=task, error_name=ERROR_NAMES[task], errors=err[rows], rows=rows, features=feats,
                       errors_all=errors_all, used_mask=used.numpy(), predicted=predicted, notes=notes)


@torch.no_grad()
def _fused(model, split, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(S (N, d_z), c_0(S) (N, C)) of every sample, on the model's device, returned on the CPU."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was = model.training
    model.eval()
    s_all, lf_all = [], []
    try:
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            b = make_batch(split, idx).to(device)
            with autocast_ctx(device):
                out = model(b.inputs, b.lengths, b.mask, with_fusion=True)
            s_all.append(out.s.float().cpu())
            lf_all.append(out.logits_fused.float().cpu())
    finally:
        model.train(was)
    return torch.cat(s_all), torch.cat(lf_all)


def uses_kappa(method: str) -> bool:
    """Whether the method trains with the soft weight κ (its checkpoint's prototype memory means something)."""
    try:
        spec = method_spec(method)
    except (KeyError, ValueError, ConfigError):
        return False
    return spec.contrastive == "soft-pu" or spec.pseudo_labels == "kappa"


def kappa_values(model, split, enc, used: torch.Tensor, memory_state: dict | None, task: str, kernel: str,
                 bandwidth: float | None) -> np.ndarray | None:
    """(N,) κ of every sample as training would weigh it (see the module docstring); None without prototypes."""
    protos = (memory_state or {}).get("protos")
    seen = (memory_state or {}).get("seen")
    if protos is None or seen is None or not bool(seen.bool().any()) or enc.z.numel() == 0:
        return None
    if protos.shape[-1] != enc.z.shape[-1]:
        return None
    s, lf = _fused(model, split)
    logits, _ = subset_logits(enc, used)
    s_n = torch.nn.functional.normalize(s, dim=-1)
    z_n = torch.nn.functional.normalize(enc.z.float(), dim=-1)
    points, plog = soft_pu_points(s_n, z_n, used, used.all(1), lf, logits.float())
    kappa, _ = soft_kappa(points, pseudo_classes(plog, task), protos.float(), seen.bool(), kernel, bandwidth)
    return kappa.double().numpy()


@dataclass
class SliceReport:
    """The result of a slice search on one model: the slices, and what they were computed on."""
    slices: list[Slice]
    inputs: SliceInputs = field(repr=False)
    split: str
    task: str
    error_name: str
    n: int  # scored samples
    error_overall: float
    min_support: int
    max_order: int
    alpha: float
    missing: str  # the --missing setting ("" for the data's own mask)
    mask_seed: int
    stats: SearchStats
    seconds: float = 0.0
    checkpoint: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "split": self.split, "task": self.task, "error": self.error_name,
                "scored_samples": self.n, "error_overall": self.error_overall, "min_support": self.min_support,
                "max_order": self.max_order, "alpha": self.alpha, "missing": self.missing,
                "mask_seed": self.mask_seed, "features": [f.to_dict() for f in self.inputs.features],
                "search": self.stats.to_dict(), "notes": self.notes, "seconds": self.seconds,
                "slices": [s.to_dict() for s in self.slices]}


def find_model_slices(model, bundle, *, split: str = "test", spec_mask: torch.Tensor | None = None,
                      missing_label: str = "", mask_seed: int = 0, labeled_indices=None,
                      memory_state: dict | None = None, method: str = "", kernel: str = "rbf",
                      bandwidth: float | None = None, neighbours: int = NEIGHBOURS, top_k: int = 10,
                      min_support: int | None = None, max_order: int = 2, alpha: float = DEFAULT_ALPHA,
                      progress: Callable[[int, int, str], None] | None = None,
                      check: Callable[[], None] | None = None) -> SliceReport:
    """Encode the split once, compute errors and features, and search (see the module docstring).
    `progress(done, total, text)` and `check()` (raises to cancel) are optional hooks; neighbours=0 leaves the
    labelled-neighbour feature out (it needs a pass over the training split)."""
    t0 = time.perf_counter()
    if split not in bundle.splits:
        raise ConfigError(f"--split {split}: the dataset has {', '.join(bundle.splits)}")
    data = bundle.splits[split]
    info = bundle.info
    total = 4 + max_order
    step = [0]

    def tell(text: str) -> None:
        if check is not None:
            check()
        if progress is not None:
            progress(step[0], total, text)
        step[0] += 1

    tell(f"encoding the {split} split")
    enc = encode_split(model, data, with_latents=True)
    n_all, m = enc.mask.shape
    if spec_mask is not None and tuple(spec_mask.shape) != (n_all, m):
        raise MissingSpecError(f"a mask of shape {tuple(spec_mask.shape)} for a split of shape {(n_all, m)}")
    used = enc.mask & (spec_mask.bool() if spec_mask is not None else torch.ones(n_all, m, dtype=torch.bool))
    notes = []
    tell("κ of every sample")
    kappa = None
    if uses_kappa(method):
        kappa = kappa_values(model, data, enc, used, memory_state, info.task, kernel, bandwidth)
        if kappa is None:
            notes.append("the checkpoint holds no prototypes, so κ is no feature")
    tell("labelled neighbours")
    counts = None
    if neighbours > 0 and "train" in bundle.splits and labeled_indices is not None and enc.z.numel():
        train = bundle.splits["train"]
        lab = torch.zeros(len(train), dtype=torch.bool)
        li = torch.as_tensor(labeled_indices, dtype=torch.long).reshape(-1)
        li = li[(li >= 0) & (li < len(train))]
        lab[li] = True
        enc_train = encode_split(model, train, with_latents=True)
        if check is not None:
            check()
        counts = labelled_neighbour_counts(unit_mean_latent(enc.z, used), unit_mean_latent(enc_train.z, enc_train.mask),
                                           lab, neighbours)
        neighbours = min(neighbours, len(train))
    tell("features")
    inputs = slice_inputs(enc, data, info, spec_mask=spec_mask, kappa=kappa, neighbour_counts=counts,
                          neighbours=neighbours)

    def level_progress(level: int, text: str) -> None:
        step[0] = 3 + level
        tell(text)
    sigma = default_min_support(len(inputs.errors)) if min_support is None else int(min_support)
    slices, stats = find_slices(inputs.errors, inputs.features, top_k=top_k, min_support=sigma,
                                max_order=max_order, alpha=alpha, rows=inputs.rows, check=check,
                                progress=level_progress)
    if progress is not None:
        progress(total, total, "done")
    return SliceReport(slices=slices, inputs=inputs, split=split, task=info.task, error_name=inputs.error_name,
                       n=len(inputs.errors), error_overall=float(inputs.errors.mean()) if len(inputs.errors) else
                       float("nan"), min_support=sigma, max_order=max_order, alpha=alpha, missing=missing_label,
                       mask_seed=mask_seed, stats=stats, seconds=time.perf_counter() - t0,
                       notes=inputs.notes + notes)


def model_errors(model, bundle, split: str = "test", spec_mask: torch.Tensor | None = None) -> np.ndarray:
    """(N,) per-sample errors of a model on a split under a presence mask (NaN where not scored): for scoring
    another model's slices (`slice_errors`)."""
    enc = encode_split(model, bundle.splits[split], with_latents=False)
    n_all, m = enc.mask.shape
    sm = torch.ones(n_all, m, dtype=torch.bool) if spec_mask is None else spec_mask.bool()
    logits, rows = subset_logits(enc, sm)
    err = sample_errors(logits, enc.target, bundle.info.task)
    err[~rows.numpy()] = np.nan
    return err


# ----------------------------------------------------------------------------------------------------------
# Checkpoints, masks and the command line
# ----------------------------------------------------------------------------------------------------------


def one_setting_mask(bundle, split: str, missing: list[str] | tuple[str, ...] | str | None, mask_seed: int = 0,
                     masks_file: str | None = None) -> tuple[torch.Tensor | None, str]:
    """The presence mask of one missing-modality setting on `split` (as `robult eval --missing` draws it, or read
    from a mask file), with its label; (None, "") without either. A bad spec, or a grid of several settings, is a
    MissingSpecError naming the option."""
    specs = [missing] if isinstance(missing, str) else list(missing or [])
    if not specs and not masks_file:
        return None, ""
    if specs and masks_file:
        raise MissingSpecError("--missing and --masks: give one of them (the masks file already holds its settings)")
    if specs:
        parsed = parse_missing_grid(specs)
        if len(parsed) != 1 or parsed[0].mechanism == "subsets":
            labels = ", ".join(s.label for s in parsed)
            raise MissingSpecError(f"--missing {' '.join(specs)}: slices are found under one setting, got "
                                   f"{'every subset' if parsed[0].mechanism == 'subsets' else labels}; give one, "
                                   f"e.g. --missing mcar:0.5")
    ev = MaskEvaluator(bundle, split, specs, mask_seed, masks_file)
    if len(ev.labels) != 1:
        raise MissingSpecError(f"{masks_file}: holds {len(ev.labels)} settings ({', '.join(ev.labels[:8])}); slices "
                               f"are found under one setting: draw it with --missing instead")
    label = ev.labels[0]
    return ev.masks[label], label


def load_model_and_data(checkpoint: str, dataset: str | None = None, trust_code=frozenset(), quiet: bool = False):
    """(checkpoint, model, bundle) as `robult eval` loads them: the training data unless `dataset` names other
    data, which must fit the model (modalities, task, classes)."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, trust_code=trust_code)
    data_cfg = ckpt.config.data
    if dataset:
        data_cfg = ckpt.config.replace(**{"data.dataset": dataset}).data
    bundle = load_dataset(data_cfg)
    mismatch = transfer_mismatches(ckpt.info, bundle.info)
    if mismatch:
        raise ConfigError(f"{checkpoint}: a model trained on {ckpt.info.name} cannot be evaluated on "
                          f"{bundle.info.name}: " + "; ".join(mismatch))
    if bundle.fingerprint() != ckpt.fingerprint and not quiet:
        print(f"note: the data differ from the data this model was trained on (fingerprint "
              f"{bundle.fingerprint()} vs {ckpt.fingerprint})", file=sys.stderr)
    return ckpt, model, bundle


def checkpoint_slices(ckpt, model, bundle, **kw) -> SliceReport:
    """`find_model_slices` with what the checkpoint knows: labelled indices, prototypes, method, kernel."""
    rep = find_model_slices(model, bundle, labeled_indices=ckpt.labeled_indices, memory_state=ckpt.memory_state,
                            method=ckpt.config.method, kernel=ckpt.config.loss.kernel,
                            bandwidth=ckpt.config.loss.bandwidth, **kw)
    rep.checkpoint = str(ckpt.path)
    return rep


def format_slices(report: SliceReport, other: list[tuple[float, float]] | None = None,
                  other_name: str = "") -> str:
    """The slices as a plain-text table: rank, slice, size, error in the slice, error outside it (and the other
    model's errors on the same samples)."""
    head = ["rank", "slice", "size", "error in", "error out"]
    if other is not None:
        head += [f"in ({other_name})", f"out ({other_name})"]
    head.append("score")
    rows = []
    for k, s in enumerate(report.slices, 1):
        r = [str(k), s.text, str(s.size), f"{s.error_in:.4f}", f"{s.error_out:.4f}"]
        if other is not None:
            r += [f"{other[k - 1][0]:.4f}", f"{other[k - 1][1]:.4f}"]
        r.append(f"{s.score:.4f}")
        rows.append(r)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if i == 1 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def cmd_slices(args: argparse.Namespace) -> int:
    """`robult slices CHECKPOINT [--missing SPEC] [--top K] [--min-support N] [--max-order 2] [--json FILE]`."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.min_support is not None and args.min_support < 1:
        raise ConfigError(f"--min-support: must be at least 1 sample, got {args.min_support}")
    if args.top < 1:
        raise ConfigError(f"--top: must be at least 1, got {args.top}")
    if not 1 <= args.max_order <= MAX_ORDER:
        raise ConfigError(f"--max-order: 1 to {MAX_ORDER} predicates per slice, got {args.max_order}")
    if not 0.0 < args.alpha <= 1.0:
        raise ConfigError(f"--alpha: must be in (0, 1], got {args.alpha}")
    if args.neighbours < 0:
        raise ConfigError(f"--neighbours: must be 0 (leave the feature out) or more, got {args.neighbours}")
    if args.missing:  # a bad spec is said before the checkpoint and the data are read
        parse_missing_grid(args.missing)
    trust = parse_trust(args.trust_code)
    ckpt, model, bundle = load_model_and_data(args.checkpoint, args.dataset, trust)
    if args.split not in bundle.splits:
        raise ConfigError(f"--split {args.split}: the dataset has {', '.join(bundle.splits)}")
    mask, label = one_setting_mask(bundle, args.split, args.missing, args.mask_seed, args.masks)
    report = checkpoint_slices(ckpt, model, bundle, split=args.split, spec_mask=mask, missing_label=label,
                               mask_seed=args.mask_seed, neighbours=args.neighbours, top_k=args.top,
                               min_support=args.min_support, max_order=args.max_order, alpha=args.alpha)
    report.checkpoint = str(args.checkpoint)
    other, other_name, other_pairs = None, "", None
    if args.compare:
        ck2, model2, _ = load_model_and_data(args.compare, args.dataset, trust, quiet=True)
        mismatch = transfer_mismatches(ck2.info, bundle.info)
        if mismatch:
            raise ConfigError(f"{args.compare}: cannot be compared on {bundle.info.name}: " + "; ".join(mismatch))
        other = model_errors(model2, bundle, args.split, mask)
        other_pairs = slice_errors(report.slices, other)
        other_name = "B"
    under = f" under {label} (mask seed {args.mask_seed})" if label else " (the data's own missing modalities)"
    print(f"{args.split} split, {ckpt.config.method}, {args.checkpoint}{under}: {report.n} samples scored, "
          f"{report.error_name} {report.error_overall:.4f} overall; slices of at least {report.min_support} "
          f"samples, up to {report.max_order} predicates, α {report.alpha:g}")
    names = ", ".join(f.name for f in report.inputs.features)
    print(f"features: {names}")
    for note in report.notes:
        print(f"note: {note}")
    if report.slices:
        print(format_slices(report, other_pairs, other_name))
    else:
        print("no slice has a higher error than the whole split (at this support)")
    if args.compare:
        print(f"B = {args.compare}: its errors on the very samples of each slice")
    if args.json:
        d = report.to_dict()
        if other_pairs is not None:
            d["compare"] = {"checkpoint": str(args.compare),
                            "error_overall": float(np.nanmean(other)) if np.isfinite(other).any() else None,
                            "slices": [{"error_in": a, "error_out": b} for a, b in other_pairs]}
        Path(args.json).write_text(json.dumps(d, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    """The `robult slices` subcommand."""
    s = sub.add_parser("slices", help="where the model fails: the slices of the test split with the highest error",
                       description="Find failure slices (SliceLine): conjunctions of up to --max-order predicates "
                                   "feature=value (modality present / masked / absent, class, confidence, κ, "
                                   "labelled neighbours, a manifest's meta: columns) whose mean error is far above "
                                   "the split's, weighted by size.")
    s.add_argument("checkpoint")
    s.add_argument("--dataset", help="evaluate on this dataset instead of the training one")
    s.add_argument("--split", default="test")
    s.add_argument("--top", type=int, default=10, help="how many slices (default 10)")
    s.add_argument("--min-support", type=int, default=None,
                   help="fewest samples in a slice (default max(10, 1%% of the scored samples))")
    s.add_argument("--max-order", type=int, default=2, help=f"most predicates per slice, 1 to {MAX_ORDER} (default 2)")
    s.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="SliceLine's weight of error against size in (0, 1] (default 0.95; 1: error only)")
    s.add_argument("--neighbours", type=int, default=NEIGHBOURS,
                   help="k of the labelled-neighbour feature (default 10; 0 leaves it out and skips the pass over "
                        "the training split)")
    s.add_argument("--compare", metavar="CHECKPOINT",
                   help="a second model: its errors on the same slices' samples, side by side")
    s.add_argument("--json", help="also write the slices (with their sample indices) as JSON")
    add_trust_arg(s, "the checkpoint(s)")
    s.add_argument("--threads", type=int, default=0)
    add_missing_args(s, with_file=True)
    s.set_defaults(func=cmd_slices)
    return s


__all__ = ["Feature", "SearchStats", "Slice", "SliceInputs", "SliceReport", "categorical_feature",
           "checkpoint_slices", "column_feature", "default_min_support", "find_model_slices", "find_slices",
           "format_slices", "kappa_values", "labelled_neighbour_counts", "load_model_and_data", "model_errors",
           "one_setting_mask", "prediction_confidence", "presence_features", "quantile_feature", "sample_errors",
           "score_upper_bound", "slice_errors", "slice_inputs", "slice_score"]
