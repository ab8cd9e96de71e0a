"""Shapley attribution over modalities: the axioms (efficiency, symmetry, dummy) on constructed logits,
equality with a naive implementation that re-encodes the sample through the model for every coalition, the
dataset summary and `robult eval --attribution`."""
from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from robult_engine.config import ModelConfig
from robult_engine.evaluation import encode_split
from robult_engine.explain import Cancelled
from robult_engine.explain.attribution import (attribution_summary, coalition_masks, shapley_coefficients,
                                               shapley_sample, shapley_values, train_prior)
from robult_engine.models import build_model

SMALL = dict(d_h=16, d_z=8, d_u=6, d_hidden=12, dropout=0.3, text_buckets=64)


def _random_logits(n: int, m: int, c: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, m, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


@pytest.mark.parametrize("task", ["single-label", "multi-label", "regression"])
@pytest.mark.parametrize("m", [1, 2, 3, 6])
def test_efficiency(task, m):
    c = 1 if task == "regression" else 4
    lm = _random_logits(5, m, c)
    present = torch.ones(5, m, dtype=torch.bool)
    present[0, 1:] = False  # one sample with a single modality
    prior = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])) if task != "regression" else torch.tensor([0.7])
    a = shapley_values(lm, present, prior, task)
    assert torch.allclose(a.phi.sum(1), a.v_full - a.v_empty, atol=1e-10)
    if task == "single-label":  # v(all) is the log-probability of the predicted class under the full prediction
        w = present.double().unsqueeze(-1)
        full = (lm * w).sum(1) / w.sum(1)
        assert torch.equal(a.output, full.argmax(-1))
        assert torch.allclose(a.v_full, torch.log_softmax(full, -1).max(-1).values, atol=1e-12)
        assert torch.allclose(a.v_empty, prior.double()[a.output])


def test_symmetry_and_dummy():
    lm = _random_logits(4, 4, 3)
    lm[:, 2] = lm[:, 0]  # modalities 0 and 2 give the same logits: symmetric players
    present = torch.ones(4, 4, dtype=torch.bool)
    present[1, 3] = False  # missing from the data: a dummy for that sample
    a = shapley_values(lm, present, torch.log(torch.tensor([0.2, 0.3, 0.5])), "single-label")
    assert torch.allclose(a.phi[:, 0], a.phi[:, 2], atol=1e-12)
    assert abs(float(a.phi[1, 3])) < 1e-12
    # a game in which player 1 never changes a coalition's value: φ_1 = 0, and the others share v(all) − v(∅)
    masks = coalition_masks(3)
    v = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = v[[int(k) & ~2 for k in range(8)]]  # v(A) = v(A without player 1)
    phi = v @ shapley_coefficients(3)
    assert abs(float(phi[1])) < 1e-12 and float(phi.sum()) == pytest.approx(float(v[7] - v[0]))
    assert masks[7].all() and not masks[0].any()
    # by hand on two modalities of a regression model
    lm_r = torch.tensor([[[1.5], [-2.0]]], dtype=torch.float64)  # one sample, two modalities
    r = shapley_values(lm_r, torch.ones(1, 2, dtype=torch.bool), torch.tensor([1.5]), "regression")
    # v(∅) = 1.5, v({0}) = 1.5, v({1}) = -2, v({0,1}) = -0.25: φ_0 = ½(0) + ½(-0.25 + 2) = 0.875, φ_1 = -2.625
    assert r.phi[0].tolist() == pytest.approx([0.875, -2.625])


def test_coefficients_against_the_permutation_definition():
    """φ_i = mean over the M! orderings of i's marginal contribution, on an arbitrary game v."""
    for m in (2, 3, 4):
        masks = coalition_masks(m)
        v = torch.randn(2 ** m, dtype=torch.float64, generator=torch.Generator().manual_seed(m))
        index = {tuple(row.tolist()): k for k, row in enumerate(masks)}
        phi = torch.zeros(m, dtype=torch.float64)
        for order in itertools.permutations(range(m)):
            member = [False] * m
            for i in order:
                before = v[index[tuple(member)]]
                member[i] = True
                phi[i] += v[index[tuple(member)]] - before
        phi /= math.factorial(m)
        assert torch.allclose(v @ shapley_coefficients(m), phi, atol=1e-12)
    assert coalition_masks(3)[5].tolist() == [True, False, True]


def _naive_shapley(model, split, i: int, prior: torch.Tensor, cls: int) -> list[float]:
    """Re-encode sample i through the model with every coalition's mask, then the permutation definition."""
    m = split.mask.shape[1]
    inputs = {k: v[i:i + 1] for k, v in split.inputs.items()}
    lengths = {k: v[i:i + 1] for k, v in split.lengths.items()}

    def value(members: frozenset) -> float:
        mask = torch.tensor([[j in members and bool(split.mask[i, j]) for j in range(m)]])
        if not mask.any():
            return float(prior[cls])
        with torch.no_grad():
            out = model(inputs, lengths, mask)
        return float(torch.log_softmax(out.logits.double(), -1)[0, cls])

    phi = [0.0] * m
    for order in itertools.permutations(range(m)):
        members: set = set()
        for j in order:
            before = value(frozenset(members))
            members.add(j)
            phi[j] += value(frozenset(members)) - before
    return [p / math.factorial(m) for p in phi]


def test_equals_a_naive_reencoding_implementation(make_bundle):
    bundle = make_bundle(n=12, missing=0.3)  # four modality kinds; val/test samples miss modalities at random
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), bundle.info).eval()
    split = bundle.splits["test"]
    enc = encode_split(model, split, batch_size=4)
    prior = train_prior(bundle.splits["train"].target, "single-label", 3)
    for i in range(len(split)):
        got = shapley_sample(enc, i, prior, "single-label", explain="true")
        naive = _naive_shapley(model, split, i, prior, int(split.target[i]))
        assert got["phi"] == pytest.approx(naive, abs=1e-5), i
        chosen = shapley_sample(enc, i, prior, "single-label", explain=2)
        assert chosen["output"] == 2
        assert chosen["phi"] == pytest.approx(_naive_shapley(model, split, i, prior, 2), abs=1e-5)


def test_train_prior():
    t = torch.tensor([0, 0, 1, 2, 2, 2])
    expected = torch.tensor([3, 2, 4, 1], dtype=torch.float64) / 10  # (n_c + 1) / (N + C)
    assert torch.allclose(train_prior(t, "single-label", 4).exp(), expected, atol=1e-12)
    assert train_prior(torch.tensor([1.0, 2.0, 6.0]), "regression", 1).item() == pytest.approx(3.0)
    ml = train_prior(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "multi-label", 2).exp()
    assert ml.tolist() == pytest.approx([0.75, 0.25])


def test_dataset_summary_groups_by_true_class_and_stops_on_request():
    lm = _random_logits(30, 3, 3)
    lm[:, 1] = 0  # modality 1 always says "uniform": it still moves the mean of the others' logits
    lm[:, 2] = 0.0
    target = torch.arange(30) % 3
    from robult_engine.evaluation import EncodedSplit
    enc = EncodedSplit(logits_mod=lm.float(), z=torch.zeros(30, 3, 0), u=torch.zeros(30, 3, 0),
                       rec_err=torch.zeros(30, 3), mask=torch.ones(30, 3, dtype=torch.bool), target=target)
    prior = torch.log(torch.ones(3) / 3)
    seen = []
    s = attribution_summary(enc, prior, ("a", "b", "c"), "single-label", ("x", "y", "z"), chunk=7,
                            progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (30, 30) and len(seen) == 5
    phi = shapley_values(lm, enc.mask, prior, "single-label").phi
    assert s.mean_abs["all"] == pytest.approx(phi.abs().mean(0).tolist(), abs=1e-6)
    assert s.mean_abs["y"] == pytest.approx(phi[target == 1].abs().mean(0).tolist(), abs=1e-6)
    assert s.count == {"all": 30, "x": 10, "y": 10, "z": 10}
    # b and c are identical players: equal attribution
    assert s.mean_abs["all"][1] == pytest.approx(s.mean_abs["all"][2], abs=1e-6)
    with pytest.raises(Cancelled):
        attribution_summary(enc, prior, ("a", "b", "c"), "single-label", chunk=7, should_stop=lambda: True)


def test_cli_eval_attribution(tmp_path, capsys):
    from robult_engine.cli import main
    from robult_engine.trainer import Trainer
    from conftest import tiny_config
    cfg = tiny_config(**{"train.epochs": 1})
    final = Trainer(cfg, out_dir=tmp_path).run()
    js = tmp_path / "eval.json"
    assert main(["eval", final.checkpoint_path, "--attribution", "--json", str(js), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "mean |φ| per modality" in out and "class (true)" in out and "share of samples with φ < 0" in out
    data = json.loads(js.read_text())
    att = data["attribution"]
    assert set(att["mean_abs_phi"]["all"]) == {"m0", "m1", "m2"} and att["n"] == 64
    assert "m0+m1+m2" in data  # the subset table is still there
    assert main(["eval", final.checkpoint_path, "--attribution", "--explain", "nope", "--threads", "1"]) == 2
    assert "--explain nope" in capsys.readouterr().err


def test_the_benchmark_measures_phi_beside_one_subset_prediction(capsys):
    import importlib.util
    from conftest import REPO
    spec = importlib.util.spec_from_file_location("explain_bench", REPO / "benchmarks" / "explain_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.timing(repeats=1)
    assert set(rows) == {3, 6} and rows[6]["coalitions"] == 64
    assert all(r["phi (µs)"] > 0 and r["phi / one subset prediction"] > 0 for r in rows.values())
    assert "phi / one subset prediction" in capsys.readouterr().out


def test_eval_explanations_on_a_regression_model(make_bundle, capsys):
    """Calibration does not apply to a regression model (said, not crashed); φ explains the predicted score."""
    import argparse
    from robult_engine.explain.cli import eval_explanations
    bundle = make_bundle(n=16, task="regression")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), bundle.info).eval()
    args = argparse.Namespace(calibration=True, attribution=True, explain="predicted")
    out = eval_explanations(args, None, model, bundle, "test")
    err = capsys.readouterr()
    assert out["calibration"] is None and "not applicable" in err.err and "regression" in out["calibration_note"]
    att = out["attribution"]
    assert att["n"] == len(bundle.splits["test"]) and set(att["mean_abs_phi"]) == {"all"}
    assert "predicted score" in err.out
    enc = encode_split(model, bundle.splits["test"])
    a = shapley_values(enc.logits_mod, enc.mask, train_prior(bundle.splits["train"].target, "regression", 1),
                       "regression")
    w = enc.mask.float().unsqueeze(-1)
    score = ((enc.logits_mod * w).sum(1) / w.sum(1))[:, 0]
    assert torch.allclose(a.v_full.float(), score, atol=1e-5)  # v(all) is the model's predicted score
    assert torch.allclose(a.phi.sum(1), a.v_full - bundle.splits["train"].target.double().mean(), atol=1e-9)
