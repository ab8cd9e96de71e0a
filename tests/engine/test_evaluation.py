"""Subset evaluation (docs/method.md, "Evaluation") against a naive per-subset pass, and the task metrics by hand."""
from __future__ import annotations

import math

import pytest
import torch

from robult_engine.config import ModelConfig
from robult_engine.evaluation import (encode_split, evaluate_subsets, mean_over_subsets, metrics_from_encoded,
                                      modality_subsets, selection_score, subset_logits)
from robult_engine.metrics import TaskMetrics, auroc_binary, compute_metrics, score_of
from robult_engine.models import build_model

SMALL = dict(d_h=16, d_z=8, d_u=6, d_hidden=12, dropout=0.3, text_buckets=64)


def test_modality_subsets_order_and_names():
    subs = modality_subsets(("a", "b", "c"))
    assert [n for n, _ in subs] == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]
    assert subs[3][1] == (True, True, False) and subs[-1][1] == (True, True, True)
    assert len(modality_subsets(tuple("abcd"))) == 2 ** 4 - 1


@pytest.mark.parametrize("task", ["single-label", "multi-label", "regression"])
def test_subset_evaluation_equals_naive_per_subset_pass(make_bundle, task):
    bundle = make_bundle(n=16, task=task, num_classes=3, missing=0.35)  # val/test miss modalities at random
    info, split = bundle.info, bundle.splits["test"]
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), info)
    model.train()  # evaluation must switch to eval mode itself (dropout 0.3 would otherwise change outputs)
    enc = encode_split(model, split, batch_size=5)  # several batches, concatenated
    assert model.training, "the model's mode is restored"
    model.eval()
    names = info.modality_names
    naive_table = {}
    for name, sub in modality_subsets(names):
        eff = split.mask & torch.tensor(sub)[None, :]
        with torch.no_grad():  # the naive way: a full forward pass with the subset's mask
            naive = model(split.inputs, split.lengths, eff).logits
        rows = eff.any(1)
        logits, got_rows = subset_logits(enc, sub)
        assert torch.equal(got_rows, rows)
        assert torch.allclose(logits[rows], naive[rows], atol=1e-5), name
        if rows.any():
            naive_table[name] = compute_metrics(naive[rows], split.target[rows], task)
    table = evaluate_subsets(model, split, names, task, batch_size=7)
    assert table.keys() == naive_table.keys()
    for name in table:
        for k, v in naive_table[name].items():
            assert table[name][k] == pytest.approx(v, abs=1e-6, nan_ok=True), (name, k)
    assert metrics_from_encoded(enc, names, task).keys() == table.keys()


def test_encode_split_latents_and_reconstruction_error(make_bundle):
    bundle = make_bundle(n=8)
    split = bundle.splits["val"]
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), bundle.info).eval()
    enc = encode_split(model, split, batch_size=3)
    n = len(split)
    assert enc.z.shape == (n, 4, 8) and enc.u.shape == (n, 4, 6) and enc.rec_err.shape == (n, 4)
    with torch.no_grad():
        out = model(split.inputs, split.lengths, split.mask, with_reconstruction=True)
    assert torch.allclose(enc.z, out.z, atol=1e-6)
    assert torch.allclose(enc.rec_err, out.rec_error(), atol=1e-6)
    light = encode_split(model, split, with_latents=False)
    assert light.z.numel() == 0 and torch.allclose(light.logits_mod, enc.logits_mod, atol=1e-6)


def test_subset_rows_without_any_present_modality_are_skipped(pid_bundle):
    split = pid_bundle.splits["val"].subset(torch.arange(6))
    split.mask = torch.tensor([[True, False, False]] * 3 + [[False, True, True]] * 3)
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), pid_bundle.info)
    table = evaluate_subsets(model, split, pid_bundle.info.modality_names, "single-label")
    assert "m0" in table and "m1" in table and "m0+m1" in table
    # m0 is present in the first three rows only; accuracy is over those rows
    enc = encode_split(model, split)
    logits, rows = subset_logits(enc, (True, False, False))
    assert rows.tolist() == [True] * 3 + [False] * 3
    assert table["m0"]["accuracy"] == pytest.approx(
        float((logits[:3].argmax(-1) == split.target[:3]).float().mean()))


def test_mean_and_selection_score():
    table = {"a": {"accuracy": 0.5, "macro_f1": 0.4}, "b": {"accuracy": 1.0, "macro_f1": float("nan")}}
    mean = mean_over_subsets(table, "single-label")
    assert mean["accuracy"] == pytest.approx(0.75) and mean["macro_f1"] == pytest.approx(0.4)  # nan ignored
    assert selection_score(table, "single-label") == pytest.approx(0.75)
    assert selection_score({"a": {"mae": 0.5}, "b": {"mae": 1.5}}, "regression") == pytest.approx(-1.0)
    assert selection_score({}, "single-label") == float("-inf")
    assert score_of({"mae": 2.0}, "regression") == -2.0


# ----------------------------------------------------------------------------------------------------------
# metrics by hand
# ----------------------------------------------------------------------------------------------------------


def test_single_label_metrics_by_hand():
    # predictions (argmax): 0, 0, 1, 2 ; targets 0, 1, 1, 1 (class 2 has no support)
    logits = torch.tensor([[3.0, 0, 0], [2.0, 1, 0], [0, 5.0, 0], [0, 0, 1.0]])
    target = torch.tensor([0, 1, 1, 1])
    m = compute_metrics(logits, target, "single-label")
    assert m["accuracy"] == pytest.approx(2 / 4)
    # class 0: tp 1, fp 1, fn 0 -> F1 = 2/(2+1) = 2/3; class 1: tp 1, fp 0, fn 2 -> 2/(2+2) = 1/2;
    # class 2 has no support but is predicted once: tp 0, fp 1 -> F1 0, and it counts (scikit-learn's
    # f1_score(average="macro") averages over classes in the targets or the predictions): (2/3 + 1/2 + 0)/3
    assert m["macro_f1"] == pytest.approx(7 / 18)
    assert "auroc" not in m


def test_macro_f1_follows_scikit_learn():
    # targets [0, 0, 1, 1], predictions [0, 2, 1, 1], 3 classes: F1 = 2/3, 1, 0 -> 5/9 = 0.556 (scikit-learn),
    # not 0.833 (the mean over the target classes only)
    logits = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1]), 3).float()
    m = compute_metrics(logits, torch.tensor([0, 0, 1, 1]), "single-label")
    assert m["macro_f1"] == pytest.approx(5 / 9)
    # a class in neither targets nor predictions is not averaged in: 4 classes, class 3 never seen
    logits4 = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1]), 4).float()
    assert compute_metrics(logits4, torch.tensor([0, 0, 1, 1]), "single-label")["macro_f1"] == pytest.approx(5 / 9)
    # perfect predictions give 1
    assert compute_metrics(logits, torch.tensor([0, 2, 1, 1]), "single-label")["macro_f1"] == pytest.approx(1.0)


def test_binary_auroc_by_hand_with_ties():
    # scores 0.1 (neg), 0.4 (pos), 0.4 (neg), 0.8 (pos): pairs (pos, neg) = (0.4, 0.1) win, (0.4, 0.4) tie = ½,
    # (0.8, 0.1) win, (0.8, 0.4) win -> (3 + ½)/4 = 0.875
    scores = torch.tensor([0.1, 0.4, 0.4, 0.8], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    assert auroc_binary(scores, labels) == pytest.approx(0.875)
    assert auroc_binary(torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64), torch.tensor([0, 1, 1])) == 0.5
    assert math.isnan(auroc_binary(torch.tensor([0.1, 0.2], dtype=torch.float64), torch.tensor([1, 1])))
    # compute_metrics adds it for two classes, from the softmax probability of class 1
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.2, 0.8]]))
    m = compute_metrics(logits, labels, "single-label")
    assert m["auroc"] == pytest.approx(0.875)


def test_auroc_matches_pairwise_count_on_random_data():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (300,), generator=g).double()  # many ties
    labels = torch.rand(300, generator=g) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()).mean()
    assert auroc_binary(scores, labels) == pytest.approx(float(pairwise), abs=1e-12)


def test_multilabel_metrics_by_hand():
    logits = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])  # predictions {0, 2}, {2}
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    m = compute_metrics(logits, target, "multi-label")
    # micro: tp = 2 (0 of sample 0, 2 of sample 1), fp = 1, fn = 1 -> 4/(4+2) = 2/3
    assert m["f1_micro"] == pytest.approx(2 / 3)
    # per class: c0 tp1 -> 1; c1 fn1 -> 0; c2 tp1 fp1 -> 2/3; macro = 5/9
    assert m["f1_macro"] == pytest.approx(5 / 9)
    # per sample: s0 tp1 fp1 fn1 -> 1/2; s1 tp1 -> 1; mean 3/4
    assert m["f1_samples"] == pytest.approx(3 / 4)


def test_regression_metrics_by_hand():
    pred = torch.tensor([[1.0], [-1.0], [2.0], [0.5]])
    target = torch.tensor([2.0, -1.0, 0.0, -0.5])
    m = compute_metrics(pred, target, "regression")
    assert m["mae"] == pytest.approx((1 + 0 + 2 + 1) / 4)
    # signs right on samples 0 and 1, wrong on 3; sample 2 is neutral (target 0) and not counted: 2/3
    assert m["acc2"] == pytest.approx(2 / 3)
    p, t = pred[:, 0].double(), target.double()
    r = float(((p - p.mean()) * (t - t.mean())).sum() / ((p - p.mean()).norm() * (t - t.mean()).norm()))
    assert m["pearson_r"] == pytest.approx(r)


def test_streaming_metrics_equal_one_shot():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    tm = TaskMetrics("single-label", 4)
    assert tm.compute() == {}
    for i in range(0, 50, 16):
        tm.update(logits[i:i + 16], target[i:i + 16])
    assert tm.compute() == compute_metrics(logits, target, "single-label")
