"""Multi-label pseudo-labels of FixMatch and co-training (docs/method.md, "FixMatch", "Co-training"): under
`loss.pseudo_balance` each label's "present" and "absent" pseudo-labels are admitted in the proportion of the
label's labeled prior, after aligning the label's predicted positive rate with that prior, so the confident
"absent" of rare labels cannot crowd out their positives and drag every label towards absent."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import robult_engine.trainer as trainer_module
from robult_engine.data import DatasetBundle, DatasetInfo, ModalitySpec, SplitData
from robult_engine.losses import align_distribution, align_label_rates, labeled_label_rates, select_prior_balanced
from robult_engine.trainer import Trainer

PRIORS = torch.tensor([0.04, 0.08, 0.15, 0.3])  # rare to common labels


def rare_label_bundle(n: int = 640, seed: int = 0) -> DatasetBundle:
    """Two vector views and four labels drawn with the rates PRIORS (the inputs do not matter here: the tests
    give the trainer the predictions themselves)."""
    g = torch.Generator().manual_seed(seed)
    info = DatasetInfo(name="rare-labels", task="multi-label", class_names=tuple(f"l{i}" for i in range(4)),
                       modalities=(ModalitySpec("a", "vector", (6,)), ModalitySpec("b", "vector", (6,))))

    def split(k: int) -> SplitData:
        return SplitData(inputs={"a": torch.randn(k, 6, generator=g), "b": torch.randn(k, 6, generator=g)},
                         lengths={}, mask=torch.ones(k, 2, dtype=torch.bool),
                         target=(torch.rand(k, 4, generator=g) < PRIORS).float(), ids=[str(j) for j in range(k)])

    return DatasetBundle(info, {"train": split(n), "val": split(64), "test": split(64)})


def hesitant_logits(target: torch.Tensor, threshold: float, g: torch.Generator) -> torch.Tensor:
    """A model trained on few labels of rare labels: sure of "absent" (p ≈ 0.01), hesitant about "present" (just
    under the threshold τ: about a fifth of them reach it). target (..., C) -> logits (..., C)."""
    pos = torch.randn(target.shape, generator=g) * 0.8 + math.log(threshold / (1 - threshold)) - 0.7
    neg = torch.randn(target.shape, generator=g) * 0.8 - 4.5
    return torch.where(target > 0.5, pos, neg)


def collapsing_logits(target: torch.Tensor, threshold: float, g: torch.Generator) -> torch.Tensor:
    """A model on its way to "absent everywhere": like `hesitant_logits`, but two thirds of the present labels are
    already predicted absent with confidence."""
    gone = torch.rand(target.shape, generator=g) < 2 / 3
    absent = torch.randn(target.shape, generator=g) * 0.8 - 4.5
    return torch.where((target > 0.5) & gone, absent, hesitant_logits(target, threshold, g))


def unlabeled_selection(make_cfg, monkeypatch, kind: str, balance: str, batches: int = 10, model=hesitant_logits):
    """Runs `Trainer._unlabeled_loss` on `batches` training batches with `model` (`hesitant_logits`) as the
    predictions and returns what it trained on: (pseudo, take, truth, labeled) of every (sample, head) row, and the
    epoch stats."""
    method = "fixmatch" if kind == "fixmatch" else "co-training"
    cfg = make_cfg(method=method, **{"data.dataset": "rare-labels", "data.label_fraction": 0.25,
                                     "train.batch_size": 64, "train.labeled_per_batch": 16,
                                     "loss.pseudo_balance": balance})
    t = Trainer(cfg, rare_label_bundle())
    t.setup()
    seen = []
    real_loss = trainer_module.pseudo_label_loss

    def spy(logits, heads, pseudo, take, task, denom=None):
        seen.append((pseudo.detach().clone(), take.detach().clone()))
        return real_loss(logits, heads, pseudo, take, task, denom=denom)

    monkeypatch.setattr(trainer_module, "pseudo_label_loss", spy)
    g = torch.Generator().manual_seed(1)
    thr = cfg.loss.fixmatch_threshold if kind == "fixmatch" else cfg.loss.cotrain_threshold
    stats: dict = {}
    rows = []
    for gidx in t.sampler.epoch(0)[:batches]:
        batch = t._step_batch(gidx)
        truth = (batch.target > 0.5).float()
        mods = model(truth.unsqueeze(1).expand(-1, 2, -1), thr, g)  # (B, 2, C): one prediction per view
        out = SimpleNamespace(logits=mods.mean(1), logits_mod=mods, mask=batch.mask)
        strong = SimpleNamespace(logits_mod=torch.zeros_like(mods, requires_grad=True), mask=batch.mask)
        t._unlabeled_loss(kind, batch, out, strong, stats)
        pseudo, take = seen[-1]  # (B, 2, C): per head of the strong view (FixMatch) or of the sample (co-training)
        rows.append((pseudo.flatten(0, 1), take.flatten(0, 1), truth.repeat_interleave(2, 0),
                     batch.labeled.repeat_interleave(2, 0)))
    monkeypatch.undo()
    pseudo, take, truth, labeled = (torch.cat(parts) for parts in zip(*rows))
    return pseudo, take, truth, labeled, stats


def positive_share(pseudo: torch.Tensor, take: torch.Tensor) -> torch.Tensor:
    """Per label, the share of "present" among the taken pseudo-labels. -> (C,)"""
    return (pseudo * take).sum(0) / take.sum(0).clamp(min=1)


# --- through the trainer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fixmatch", "cotrain"])
def test_the_default_balance_keeps_each_labels_positive_share_near_its_prior(make_cfg, monkeypatch, kind):
    """The plain per-label rule takes nearly every confident "absent" and few hesitant "present": a third of
    each label's prior or less, so L_u pushes every label towards absent. The default balance admits them in the
    proportion of the label's prior, and still trains every label."""
    pseudo, take, _, _, _ = unlabeled_selection(make_cfg, monkeypatch, kind, "none")
    plain = positive_share(pseudo, take)
    assert (plain < 0.35 * PRIORS).all(), plain  # what the balance is for

    pseudo, take, _, labeled, _ = unlabeled_selection(make_cfg, monkeypatch, kind, "da+freematch")
    share = positive_share(pseudo, take)
    assert ((share > 0.6 * PRIORS) & (share < 1.5 * PRIORS)).all(), (share, PRIORS)
    assert (take.sum(0) >= 20).all(), take.sum(0)  # every label keeps pseudo-labels of both kinds
    assert ((pseudo * take).sum(0) >= 1).all()
    assert not take[labeled].any()  # labeled samples have their labels


@pytest.mark.parametrize("kind", ["fixmatch", "cotrain"])
def test_multi_label_pseudo_label_quality_is_their_micro_f1(make_cfg, monkeypatch, kind):
    """The reported quality of multi-label pseudo-labels is the micro-F1 of the taken ones against the training
    targets, not their per-label accuracy, which stays near 1 − π even when every pseudo-label says "absent"."""
    pseudo, take, truth, _, stats = unlabeled_selection(make_cfg, monkeypatch, kind, "none",
                                                        model=collapsing_logits)
    tk = take.float()
    tp = (pseudo * truth * tk).sum()
    wrong = ((pseudo != truth).float() * tk).sum()
    f1 = float(2 * tp / (2 * tp + wrong))
    accuracy = float(((pseudo == truth).float() * tk).sum() / tk.sum())
    assert accuracy > 0.85 and f1 < 0.6  # accurate per label, yet most present labels are taken as absent
    assert stats["ul_correct"] / stats["ul_checked"] == pytest.approx(f1, abs=1e-6)


# --- the pure functions -----------------------------------------------------------------------------------------


def test_label_rates_are_smoothed_positive_shares():
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(labeled_label_rates(target), torch.tensor([4 / 6, 2 / 6, 1 / 6]))


def test_label_alignment_is_distribution_alignment_of_each_labels_two_outcomes():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(5, 3, 4, generator=g)
    prior, mean = torch.tensor([0.05, 0.1, 0.3, 0.5]), torch.tensor([0.01, 0.2, 0.3, 0.6])
    q = align_label_rates(p, prior, mean)
    two = torch.stack([1 - p, p], -1)  # (..., C, 2): absent, present
    ref = align_distribution(two, torch.stack([1 - prior, prior], -1), torch.stack([1 - mean, mean], -1))[..., 1]
    assert q.shape == p.shape and torch.allclose(q, ref, atol=1e-6)
    assert (q[..., 0] > p[..., 0]).all() and (q[..., 1] < p[..., 1]).all()  # under-, over-predicted
    assert torch.allclose(align_label_rates(p, prior, prior), p, atol=1e-6)  # on its prior: unchanged


def test_prior_balanced_selection_cuts_the_crowded_side_to_its_most_confident():
    # label 0 (π = 0.2): 1 confident present, 7 confident absent -> 1 present and ceil(1 · 0.8 / 0.2) = 4 absent,
    # the surest ones; label 1 (π = 0.5): 3 present and 1 absent -> 1 present (the surest) and 1 absent;
    # label 2: no confident present -> nothing at all
    p = torch.tensor([[0.99, 0.97, 0.01],
                      [0.30, 0.99, 0.02],
                      [0.01, 0.96, 0.01],
                      [0.02, 0.02, 0.03],
                      [0.03, 0.50, 0.04],
                      [0.04, 0.50, 0.01],
                      [0.005, 0.50, 0.02],
                      [0.045, 0.50, 0.01],
                      [0.015, 0.50, 0.01],
                      [0.001, 0.999, 0.001]])
    valid = torch.ones(10, dtype=torch.bool)
    valid[9] = False  # a labeled row: never a candidate
    pseudo, take = select_prior_balanced(p, valid, torch.tensor([0.2, 0.5, 0.1]), 0.95)
    assert torch.equal(pseudo, (p >= 0.5).float())
    assert take[:, 0].nonzero().flatten().tolist() == [0, 2, 3, 6, 8]
    assert take[:, 1].nonzero().flatten().tolist() == [1, 3]
    assert not take[:, 2].any() and not take[9].any()
    empty_pseudo, empty_take = select_prior_balanced(p[:0], valid[:0], torch.tensor([0.2, 0.5, 0.1]), 0.95)
    assert empty_take.shape == (0, 3) and not empty_take.any()


def test_prior_balanced_selection_matches_the_prior_on_calibrated_predictions():
    """Where the confident pseudo-labels already come in the prior's proportion, nearly all are kept."""
    g = torch.Generator().manual_seed(3)
    prior = torch.tensor([0.1, 0.3])
    truth = (torch.rand(4000, 2, generator=g) < prior).float()
    p = torch.where(truth > 0.5, torch.full_like(truth, 0.99), torch.full_like(truth, 0.01))
    pseudo, take = select_prior_balanced(p, torch.ones(4000, dtype=torch.bool), prior, 0.95)
    kept = take.float().mean(0)
    assert (kept > 0.85).all(), kept
    assert torch.equal(pseudo[take], truth[take])
