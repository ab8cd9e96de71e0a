"""Streaming task metrics (update, then compute), the same object for tables and live panels."""
from __future__ import annotations

import math

import torch

PRIMARY = {"single-label": "accuracy", "multi-label": "f1_micro", "regression": "mae"}
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "auroc": True, "f1_micro": True, "f1_macro": True,
                    "f1_samples": True, "map": True, "mae": False, "pearson_r": True, "acc2": True}


def primary_metric(task: str) -> str:
    return PRIMARY[task]


def score_of(metrics: dict[str, float], task: str) -> float:
    """The primary metric, signed so that higher is better (for early stopping and ranking)."""
    name = PRIMARY[task]
    v = metrics[name]
    return v if HIGHER_IS_BETTER[name] else -v


class TaskMetrics:
    def __init__(self, task: str, num_outputs: int) -> None:
        self.task = task
        self.num_outputs = num_outputs
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self._logits.append(logits.detach().float().cpu())
        self._targets.append(target.detach().cpu())

    def compute(self) -> dict[str, float]:
        if not self._logits:
            return {}
        return compute_metrics(torch.cat(self._logits), torch.cat(self._targets), self.task)


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1e-12), torch.zeros_like(denom))


def auroc_binary(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve by the rank statistic (ties get average ranks). scores, labels: (N,)."""
    pos = labels.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_scores, order = scores.sort()
    _, group, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # 1-based rank of the last member of each tie group
    avg = ends - (counts.double() - 1) / 2  # mean of the ranks ends-count+1 .. ends
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[order] = avg[group]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision of one label, scikit-learn's definition (`average_precision_score`): the sum over the
    distinct score thresholds, highest first, of (R_n - R_(n-1)) * P_n, tied scores taken together. NaN when
    the label has no positive. scores, labels: (N,)."""
    pos = labels.bool()
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(scores.double(), descending=True, stable=True)
    s, y = scores.double()[order], pos[order].double()
    last = torch.ones(len(s), dtype=torch.bool)  # the last row of each group of tied scores
    last[:-1] = s[1:] != s[:-1]
    tp = y.cumsum(0)[last]
    seen = torch.arange(1, len(s) + 1, dtype=torch.float64)[last]
    recall = tp / n_pos
    gain = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((gain * tp / seen).sum())


def compute_metrics(logits: torch.Tensor, target: torch.Tensor, task: str) -> dict[str, float]:
    """logits: (N, C); target as in the dataset. Returns the task's metrics as plain floats."""
    if task == "single-label":
        c = logits.shape[1]
        pred = logits.argmax(-1)
        t = target.long()
        out = {"accuracy": float((pred == t).float().mean())}
        conf = torch.zeros(c, c, dtype=torch.float64)
        conf.index_put_((t, pred), torch.ones_like(t, dtype=torch.float64), accumulate=True)
        tp = conf.diag()
        fp = conf.sum(0) - tp
        fn = conf.sum(1) - tp
        # scikit-learn's convention (f1_score(average="macro")): the mean over the classes present in the targets
        # or in the predictions, so predicting a class absent from the targets costs an F1 of 0 for that class
        support = (conf.sum(1) > 0) | (conf.sum(0) > 0)
        f1 = _f1(tp, fp, fn)
        out["macro_f1"] = float(f1[support].mean()) if support.any() else float("nan")
        if c == 2:
            out["auroc"] = auroc_binary(torch.softmax(logits, -1)[:, 1].double(), t)
        return out
    if task == "multi-label":
        pred = (logits > 0).float()
        t = target.float()
        tp, fp, fn = (pred * t).sum(0), (pred * (1 - t)).sum(0), ((1 - pred) * t).sum(0)
        micro = _f1(tp.sum(), fp.sum(), fn.sum())
        per_sample = _f1((pred * t).sum(1), (pred * (1 - t)).sum(1), ((1 - pred) * t).sum(1))
        # mAP: the mean over the labels with at least one positive of their average precision (threshold-free)
        ap = torch.tensor([average_precision(logits[:, j], t[:, j]) for j in range(t.shape[1])], dtype=torch.float64)
        return {"f1_micro": float(micro), "f1_macro": float(_f1(tp, fp, fn).mean()),
                "f1_samples": float(per_sample.mean()),
                "map": float(ap.nanmean()) if (~ap.isnan()).any() else float("nan")}
    if task == "regression":
        p = logits[:, 0].double()
        t = target.double()
        mae = float((p - t).abs().mean())
        pc, tc = p - p.mean(), t - t.mean()
        den = math.sqrt(float((pc ** 2).sum() * (tc ** 2).sum()))
        r = float((pc * tc).sum() / den) if den > 0 else float("nan")
        nz = t != 0  # binary accuracy on non-neutral samples (the MOSI convention)
        acc2 = float(((p[nz] > 0) == (t[nz] > 0)).double().mean()) if nz.any() else float("nan")
        return {"mae": mae, "pearson_r": r, "acc2": acc2}
    raise ValueError(f"unknown task {task!r}")
