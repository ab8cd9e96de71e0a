"""The multi-label metrics equal scikit-learn's on the same predictions (threshold 0.5 on the sigmoid, i.e.
logit > 0): micro / macro / samples F1 with zero_division=0 (scikit-learn's default value) and mAP, the mean of
`average_precision_score` over the labels that have a positive. Skipped when scikit-learn is absent (it is in
the `test` extra)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robult_engine.metrics import average_precision, compute_metrics

skm = pytest.importorskip("sklearn.metrics")


def _data(seed: int, n: int = 300, c: int = 7, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, c, generator=g) < torch.linspace(0.05, 0.5, c)).float()
    target[: n // 5] = 0  # label sets that are empty (as 22 % of the Movies films are)
    logits = 2.0 * target - 1.0 + 1.5 * torch.randn(n, c, generator=g)
    if ties:
        logits = torch.round(logits * 2) / 2  # many tied scores per label
    return logits, target


@pytest.mark.parametrize("seed, ties", [(0, False), (1, True), (2, True)])
def test_multilabel_f1_and_map_equal_scikit_learn(seed, ties):
    logits, target = _data(seed, ties=ties)
    m = compute_metrics(logits, target, "multi-label")
    y, pred = target.numpy().astype(int), (torch.sigmoid(logits) > 0.5).numpy().astype(int)
    for avg in ("micro", "macro", "samples"):
        assert m[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg, zero_division=0), abs=1e-6), avg
    scores = logits.double().numpy()
    assert m["map"] == pytest.approx(skm.average_precision_score(y, scores, average="macro"), abs=1e-9)
    for j in range(y.shape[1]):
        assert average_precision(logits[:, j], target[:, j]) == pytest.approx(
            skm.average_precision_score(y[:, j], scores[:, j]), abs=1e-9)


def test_a_label_without_positives_is_left_out_of_map_and_counts_zero_in_macro_f1():
    logits, target = _data(3)
    target[:, 2] = 0  # label 2 has no positive in these rows
    m = compute_metrics(logits, target, "multi-label")
    y, pred = target.numpy().astype(int), (logits > 0).numpy().astype(int)
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0), abs=1e-6)
    keep = [j for j in range(y.shape[1]) if j != 2]
    ap = np.mean([skm.average_precision_score(y[:, j], logits[:, j].double().numpy()) for j in keep])
    assert m["map"] == pytest.approx(ap, abs=1e-9)
    assert np.isnan(average_precision(logits[:, 2], target[:, 2]))
