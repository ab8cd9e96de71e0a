"""The quality of the soft weights κ per epoch (robult_engine/diagnostics.py): the pair precision and the AUC
equal their definitions on hand-made cases, and a Robult run reports both every epoch (in its events and its
metrics.jsonl), the AUC above chance once the prototypes mean something."""
from __future__ import annotations

import json
import math

import torch

from robult_engine.config import RunConfig
from robult_engine.diagnostics import kappa_auc, kappa_pair_precision
from robult_engine.events import EpochEnded, Finished
from robult_engine.trainer import Trainer


def brute_auc(k, r):
    pos = [a for a, y in zip(k, r) if y]
    neg = [a for a, y in zip(k, r) if not y]
    s = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return s / (len(pos) * len(neg))


def test_kappa_auc_is_the_mann_whitney_probability_with_ties():
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 5, (60,), generator=g).float() / 4  # many ties
    r = torch.rand(60, generator=g) < 0.4
    assert math.isclose(kappa_auc([k[:25], k[25:]], [r[:25], r[25:]]), brute_auc(k.tolist(), r.tolist()))
    assert kappa_auc([torch.tensor([0.1, 0.9])], [torch.tensor([False, True])]) == 1.0
    assert math.isnan(kappa_auc([torch.tensor([0.3])], [torch.tensor([True])]))  # one group empty
    assert math.isnan(kappa_auc([], []))


def test_pair_precision_counts_unlabeled_candidates_other_than_the_anchor():
    classes = torch.tensor([0, 0, 1, 0])
    labeled = torch.tensor([True, False, False, False])
    rows = torch.tensor([0, 1])
    w = torch.tensor([[1.0, 0.5, 0.2, 0.0],   # anchor 0: unlabeled 1 (same class, 0.5) and 2 (other, 0.2)
                      [0.9, 1.0, 0.0, 0.4]])  # anchor 1: labeled 0 (ignored), itself (ignored), 3 (same, 0.4)
    total, right = kappa_pair_precision(w, classes, labeled, rows)
    assert math.isclose(total, 1.1, rel_tol=1e-6) and math.isclose(right, 0.9, rel_tol=1e-6)


def test_a_robult_run_reports_kappa_quality_every_epoch(tmp_path):
    cfg = RunConfig().replace(**{"data.dataset": "pid-synth", "data.synth_n_train": 400, "train.epochs": 3,
                                 "data.label_fraction": 0.2, "model.d_h": 32, "model.d_z": 16, "model.d_u": 8,
                                 "model.d_hidden": 32})
    events = []
    final = Trainer(cfg, callbacks=[events.append], out_dir=tmp_path).run()
    assert isinstance(final, Finished), final
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert len(epochs) == 3
    for e in epochs:
        assert 0.0 <= e.kappa_precision <= 1.0 and 0.0 <= e.kappa_auc <= 1.0
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [ln["kappa_auc"] for ln in lines] == [e.kappa_auc for e in epochs]
    # supervised has no κ: NaN in the event, null in the log
    events.clear()
    Trainer(cfg.replace(method="supervised"), callbacks=[events.append]).run()
    assert all(math.isnan(e.kappa_auc) for e in events if isinstance(e, EpochEnded))
