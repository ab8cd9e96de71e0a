"""Failure slices (robult_engine/slices.py): a planted failure is found first, pruning never loses a top slice,
the search is deterministic, bad input exits 2 with one clear message, and `robult slices` runs on a tiny model."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robult_engine.data import DatasetInfo, ModalitySpec, SplitData
from robult_engine.evaluation import EncodedSplit
from robult_engine.slices import (Feature, find_slices, labelled_neighbour_counts, neighbour_levels,
                                  sample_errors, score_upper_bound, slice_errors, slice_inputs, slice_score)

C = 5  # classes of the planted dataset
PLANTED_CLASS = 3


def planted(n: int = 400, absent_b: float = 0.3, noise: float = 0.08, seed: int = 0, all_present: bool = False):
    """A two-modality split and its per-modality logits: A and B both name the true class, B more strongly,
    except that for class 3 A names the next class. So class-3 samples go wrong exactly where B is missing;
    besides, a few samples (`noise`) are wrong everywhere. Returns (info, split, encoding)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.arange(n) % C
    mask = torch.ones(n, 2, dtype=torch.bool)
    if not all_present:
        mask[:, 1] = torch.rand(n, generator=g) >= absent_b
    lm = torch.randn(n, 2, C, generator=g) * 0.1
    rows = torch.arange(n)
    wrong_a = torch.where(target == PLANTED_CLASS, (target + 1) % C, target)
    lm[rows, 0, wrong_a] += 3.0
    lm[rows, 1, target] += 6.0
    bad = torch.rand(n, generator=g) < noise
    lm[bad, :, :] = 0.0
    lm[bad, :, (target[bad] + 2) % C] = 5.0  # both modalities wrong
    info = DatasetInfo("planted", (ModalitySpec("A", "vector", (3,)), ModalitySpec("B", "vector", (3,))),
                       "single-label", tuple(f"c{i}" for i in range(C)))
    split = SplitData(inputs={"A": torch.zeros(n, 3), "B": torch.zeros(n, 3)}, lengths={}, mask=mask,
                      target=target)
    enc = EncodedSplit(logits_mod=lm, z=torch.zeros(n, 2, 0), u=torch.zeros(n, 2, 0), rec_err=torch.zeros(n, 2),
                       mask=mask, target=target)
    return info, split, enc


def test_a_planted_failure_missing_in_the_data_is_the_top_slice():
    info, split, enc = planted()
    inp = slice_inputs(enc, split, info)
    assert [f.name for f in inp.features][:2] == ["B", "class"]  # A is present everywhere: no feature
    slices, _ = find_slices(inp.errors, inp.features, rows=inp.rows, top_k=5)
    top = slices[0]
    assert set(top.predicates) == {("B", "absent"), ("class", "c3")}
    want = np.nonzero((~split.mask[:, 1] & (split.target == PLANTED_CLASS)).numpy())[0]
    np.testing.assert_array_equal(top.indices, want)
    assert top.size == len(want) and top.error_in == pytest.approx(1.0)
    # error outside: the mean over the other scored samples
    outside = np.setdiff1d(np.arange(len(split)), want)
    assert top.error_out == pytest.approx(inp.errors_all[outside].mean())
    assert top.error_out < 0.2


def test_a_planted_failure_under_a_missing_setting_is_masked_not_absent():
    """The same failure made by the --missing setting: B is 'masked' (the data has it), never 'absent'."""
    from robult_engine.missing import draw_mask, parse_missing
    info, split, enc = planted(all_present=True)
    mask = draw_mask(split, info, parse_missing("mcar:B=0.5")[0], seed=3)
    inp = slice_inputs(enc, split, info, spec_mask=mask)
    b = next(f for f in inp.features if f.name == "B")
    assert {b.levels[c] for c in np.unique(b.codes)} == {"present", "masked"}
    slices, _ = find_slices(inp.errors, inp.features, rows=inp.rows, top_k=5)
    assert set(slices[0].predicates) == {("B", "masked"), ("class", "c3")}
    want = np.nonzero((~mask[:, 1] & (split.target == PLANTED_CLASS)).numpy())[0]
    np.testing.assert_array_equal(slices[0].indices, want)
    # without the mask nothing is missing and class 3 is predicted right
    plain = slice_inputs(enc, split, info)
    assert "B" not in [f.name for f in plain.features]
    assert plain.errors_all[(split.target == PLANTED_CLASS).numpy()].mean() < 0.2


def test_errors_per_task():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-1.0, -1.0, -1.0], [1.0, 1.0, -1.0]])
    ml_target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # F1 1; no label and none predicted: right; predicted {0,1} vs true {0}: F1 2/3
    np.testing.assert_allclose(sample_errors(logits, ml_target, "multi-label"), [0.0, 0.0, 1 / 3])
    np.testing.assert_allclose(sample_errors(logits, torch.tensor([0, 2, 1]), "single-label"), [0, 1, 1])
    np.testing.assert_allclose(sample_errors(logits[:, :1], torch.tensor([1.5, -1.0, 0.0]), "regression"),
                               [0.5, 0.0, 1.0])


def _brute_force(errors, features, min_support, max_order, alpha, k):
    """Every conjunction of up to max_order predicates (one value per feature), scored; the same reporting rule
    (score > 0, support, not the very samples of a shorter conjunction)."""
    e = np.asarray(errors, float)
    n, ebar = len(e), e.mean()
    preds = [(fi, vi) for fi, f in enumerate(features) for vi in range(len(f.levels)) if (f.codes == vi).any()]
    found = {}
    for order in range(1, max_order + 1):
        for combo in itertools.combinations(preds, order):
            if len({p[0] for p in combo}) < order:
                continue
            m = np.ones(n, bool)
            for fi, vi in combo:
                m &= features[fi].codes == vi
            s = int(m.sum())
            if s < min_support:
                continue
            parents = [combo[:i] + combo[i + 1:] for i in range(order)] if order > 1 else []
            if any(found.get(p, (None,))[0] == s for p in parents):
                found[combo] = (s, None)
                continue
            sc = float(slice_score(s, e[m].sum(), n, ebar, alpha))
            found[combo] = (s, sc)
    ranked = sorted(((-sc, -s, c) for c, (s, sc) in found.items() if sc is not None and sc > 0))
    return [(c, s, -neg) for neg, s_neg, c in ranked[:k] for s in [-s_neg]]


@pytest.mark.parametrize("min_support, max_order, alpha", [(10, 2, 0.95), (25, 2, 0.95), (5, 3, 0.8), (40, 3, 1.0)])
def test_pruning_by_support_and_bounds_keeps_the_exhaustive_top_k(min_support, max_order, alpha):
    info, split, enc = planted(n=300, seed=1)
    inp = slice_inputs(enc, split, info)
    rng = np.random.default_rng(0)
    feats = inp.features + [Feature("noise", "column", ("x", "y", "z"), rng.integers(0, 3, len(inp.errors)))]
    slices, stats = find_slices(inp.errors, feats, top_k=6, min_support=min_support, max_order=max_order,
                                alpha=alpha, rows=inp.rows)
    want = _brute_force(inp.errors, feats, min_support, max_order, alpha, 6)
    index = {(f.name, f.levels[v]): (fi, v) for fi, f in enumerate(feats) for v in range(len(f.levels))}
    got = [(tuple(index[p] for p in s.predicates), s.size, s.score) for s in slices]
    assert [(c, s) for c, s, _ in got] == [(c, s) for c, s, _ in want]
    np.testing.assert_allclose([x[2] for x in got], [x[2] for x in want])
    assert all(s.size >= min_support for s in slices)
    assert all(len(s.indices) == s.size for s in slices)
    assert stats.evaluated[0] == stats.generated[0]  # level 1 is evaluated whole; deeper levels are pruned
    assert any(k < e for k, e in zip(stats.kept, stats.evaluated))  # slices were pruned on the way
    assert all(e <= g for e, g in zip(stats.evaluated, stats.generated))


def test_support_prunes_the_planted_slice_when_it_is_too_small():
    info, split, enc = planted()
    inp = slice_inputs(enc, split, info)
    planted_size = int((~split.mask[:, 1] & (split.target == PLANTED_CLASS)).sum())
    small, _ = find_slices(inp.errors, inp.features, min_support=planted_size)
    big, stats = find_slices(inp.errors, inp.features, min_support=planted_size + 1)
    assert set(small[0].predicates) == {("B", "absent"), ("class", "c3")}
    assert all(s.size > planted_size for s in big)
    assert {("B", "absent"), ("class", "c3")} not in [set(s.predicates) for s in big]
    # the planted class alone still stands out, with the samples where B is present diluting it
    assert ("class", "c3") in [p for s in big for p in s.predicates]


def test_upper_bound_bounds_every_sub_slice():
    rng = np.random.default_rng(1)
    e = (rng.random(200) < 0.3).astype(float)
    n, ebar, alpha, sigma = len(e), e.mean(), 0.9, 8
    for _ in range(50):
        parent = rng.random(n) < rng.uniform(0.1, 0.6)
        ub = float(score_upper_bound(parent.sum(), e[parent].sum(), e[parent].max(), n, ebar, alpha, sigma))
        for _ in range(20):
            child = parent & (rng.random(n) < rng.uniform(0.2, 1.0))
            if child.sum() >= sigma:
                assert float(slice_score(child.sum(), e[child].sum(), n, ebar, alpha)) <= ub + 1e-12


def test_the_search_is_deterministic():
    def run():
        info, split, enc = planted(seed=5)
        inp = slice_inputs(enc, split, info)
        out, stats = find_slices(inp.errors, inp.features, rows=inp.rows, top_k=8, max_order=3)
        return [(s.predicates, s.size, s.score, s.error_in, s.error_out, s.indices.tolist()) for s in out], stats
    a, sa = run()
    b, sb = run()
    assert a == b and sa.to_dict() == sb.to_dict() and len(a) == 8


def test_no_error_no_slices_and_bad_parameters():
    from robult_engine.config import ConfigError
    f = Feature("f", "column", ("a", "b"), np.array([0, 1] * 20))
    assert find_slices(np.zeros(40), [f])[0] == []
    for kw in ({"top_k": 0}, {"max_order": 4}, {"alpha": 0.0}, {"min_support": 0}):
        with pytest.raises(ConfigError):
            find_slices(np.ones(40), [f], **kw)


def test_labelled_neighbours_count_and_bins():
    train = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=-1)
    labelled = torch.tensor([True, True, False, False])
    pts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0]]), dim=-1)
    np.testing.assert_array_equal(labelled_neighbour_counts(pts, train, labelled, k=2), [2, 0])
    labels, uppers = neighbour_levels(10)
    assert labels == ("0/10", "1-2/10", "3-5/10", "6-10/10") and uppers.tolist() == [0, 2, 5, 10]


def test_manifest_meta_columns_are_kept_and_become_features(tmp_path):
    """A manifest's `meta:NAME` columns stay per-sample attributes (not modalities) and slice the samples."""
    from robult_engine.data.manifest import load_manifest
    rows = ["id,split,label,caption,meta:site"]
    for i in range(60):
        split = "train" if i < 30 else "test"
        rows.append(f"s{i},{split},{['cat', 'dog'][i % 2]},a {'cat' if i % 2 == 0 else 'dog'} photo {i},"
                    f"{'north' if i % 3 else 'south'}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    b = load_manifest(tmp_path)
    assert b.info.modality_names == ("caption",)
    test = b.splits["test"]
    assert test.meta["site"] == ["north" if i % 3 else "south" for i in range(30, 60)]
    assert b.splits["test"].subset([0, 2]).meta["site"] == [test.meta["site"][0], test.meta["site"][2]]
    # planted: the model is wrong on every "south" sample
    n = len(test)
    south = np.array([s == "south" for s in test.meta["site"]])
    lm = torch.zeros(n, 1, 2)
    lm[torch.arange(n), 0, test.target] = 2.0
    lm[torch.as_tensor(south), 0] = lm[torch.as_tensor(south), 0].flip(-1)
    enc = EncodedSplit(lm, torch.zeros(n, 1, 0), torch.zeros(n, 1, 0), torch.zeros(n, 1), test.mask, test.target)
    inp = slice_inputs(enc, test, b.info)
    assert "site" in [f.name for f in inp.features]
    slices, _ = find_slices(inp.errors, inp.features, min_support=5)
    assert slices[0].predicates == (("site", "south"),)
    np.testing.assert_array_equal(slices[0].indices, np.nonzero(south)[0])


def test_a_meta_column_without_a_name_is_refused(tmp_path):
    from robult_engine.data.base import DataError
    from robult_engine.data.manifest import load_manifest
    (tmp_path / "manifest.csv").write_text("id,split,label,caption,meta:\na,train,x,hi,1\nb,train,y,ho,2\n")
    with pytest.raises(DataError, match=r"manifest.csv: column 'meta:' names no attribute"):
        load_manifest(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# The command line, on a tiny trained model
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from robult_engine.config import RunConfig
    from robult_engine.trainer import Trainer
    cfg = RunConfig().replace(**{"data.dataset": "pid-synth", "data.synth_n_train": 120, "data.label_fraction": 0.1,
                                 "model.d_h": 16, "model.d_z": 8, "model.d_u": 8, "model.d_hidden": 16,
                                 "train.epochs": 2, "train.batch_size": 16, "train.labeled_per_batch": 4,
                                 "train.patience": 0, "train.device": "cpu"}).validate()
    out = tmp_path_factory.mktemp("slices") / "run"
    final = Trainer(cfg, out_dir=out).run()
    assert final.checkpoint_path, final
    return Path(final.checkpoint_path)


def _main(capsys, *args):
    from robult_engine.cli import main
    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_prints_the_table_and_writes_json(tiny_checkpoint, tmp_path, capsys):
    js = tmp_path / "slices.json"
    rc, out, err = _main(capsys, "slices", str(tiny_checkpoint), "--missing", "mcar:0.5", "--top", "5",
                         "--min-support", "6", "--json", str(js), "--threads", "1")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("test split, robult,") and "under mcar:0.5 (mask seed 0)" in lines[0]
    assert lines[1].startswith("features: m0, m1, m2, class, confidence")
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["rank", "slice"])
    assert lines[header].split() == ["rank", "slice", "size", "error", "in", "error", "out", "score"]
    d = json.loads(js.read_text())
    assert d["missing"] == "mcar:0.5" and d["min_support"] == 6 and 1 <= len(d["slices"]) <= 5
    table_rows = lines[header + 1:header + 1 + len(d["slices"])]
    # the per-sample errors again, from the model under the very same mask
    from robult_engine.missing import draw_mask, parse_missing
    from robult_engine.slices import load_model_and_data, model_errors
    ckpt, model, bundle = load_model_and_data(str(tiny_checkpoint), quiet=True)
    mask = draw_mask(bundle.splits["test"], bundle.info, parse_missing("mcar:0.5")[0], 0)
    errs = model_errors(model, bundle, "test", mask)
    assert d["error_overall"] == pytest.approx(np.nanmean(errs))
    for k, (s, row) in enumerate(zip(d["slices"], table_rows), 1):
        assert len(s["indices"]) == s["size"] >= 6
        assert s["error_in"] == pytest.approx(errs[s["indices"]].mean())
        assert row.split()[0] == str(k) and s["slice"] in row
        assert f"{s['error_in']:.4f}" in row and f"{s['error_out']:.4f}" in row
    scores = [s["score"] for s in d["slices"]]
    assert scores == sorted(scores, reverse=True) and all(x > 0 for x in scores)


def test_cli_is_deterministic_and_compares_a_second_model(tiny_checkpoint, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for js in (a, b):
        rc, out, err = _main(capsys, "slices", str(tiny_checkpoint), "--json", str(js), "--threads", "1",
                             "--compare", str(tiny_checkpoint), "--max-order", "3", "--min-support", "5")
        assert rc == 0, err
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    da.pop("seconds"), db.pop("seconds")
    assert da == db and da["slices"]
    # the same model compared with itself: the same errors on every slice
    for s, c in zip(da["slices"], da["compare"]["slices"]):
        assert c["error_in"] == pytest.approx(s["error_in"]) and c["error_out"] == pytest.approx(s["error_out"])
    assert "in (B)" in out and "B = " in out


@pytest.mark.parametrize("args, message", [
    (["--missing", "mcar:1.5"], "--missing mcar:1.5: a rate must be in [0, 1)"),
    (["--missing", "frobnicate:0.5"], "unknown mechanism 'frobnicate'"),
    (["--missing", "mcar:0,0.5"], "slices are found under one setting"),
    (["--missing", "subsets"], "slices are found under one setting"),
    (["--missing", "mcar:audio=0.5"], "unknown modality 'audio'"),
    (["--max-order", "4"], "--max-order: 1 to 3"),
    (["--min-support", "0"], "--min-support: must be at least 1"),
])
def test_bad_input_exits_2_with_one_clear_message(tiny_checkpoint, capsys, args, message):
    rc, out, err = _main(capsys, "slices", str(tiny_checkpoint), "--threads", "1", *args)
    assert rc == 2 and message in err and "Traceback" not in err, (rc, err)
    assert err.count("error:") == 1 and out == ""


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, capsys):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    rc, _, err = _main(capsys, "slices", str(bad))
    assert rc == 2 and str(bad) in err and "not a Robult checkpoint" in err


def test_slice_errors_of_another_model_use_the_same_samples():
    info, split, enc = planted()
    inp = slice_inputs(enc, split, info)
    slices, _ = find_slices(inp.errors, inp.features, rows=inp.rows, top_k=3)
    other = np.zeros(len(split))
    other[slices[0].indices] = 1.0
    (a_in, a_out), *_ = slice_errors(slices, other)
    assert a_in == 1.0 and a_out == 0.0


@pytest.mark.parametrize("task, target_feature", [("single-label", "class"), ("multi-label", "labels"),
                                                  ("regression", "target")])
def test_every_task_and_modality_kind_through_a_model(make_bundle, task, target_feature):
    """An untrained model on every modality kind with missing modalities in the data: errors, κ from the prototype
    memory, labelled neighbours and the task's target feature, and slices whose numbers are their samples'."""
    from robult_engine.config import RunConfig
    from robult_engine.models.robult import build_model
    from robult_engine.slices import find_model_slices
    bundle = make_bundle(n=40, task=task, missing=0.4, seed=2)
    cfg = RunConfig().replace(**{"model.d_h": 8, "model.d_z": 4, "model.d_u": 4, "model.d_hidden": 8})
    torch.manual_seed(0)
    model = build_model(cfg.model, bundle.info, method="robult")
    k = 2 if task == "regression" else len(bundle.info.class_names)
    memory = {"protos": torch.nn.functional.normalize(torch.randn(k, 4), dim=-1), "seen": torch.ones(k, dtype=bool)}
    rep = find_model_slices(model, bundle, labeled_indices=torch.arange(0, 40, 3), memory_state=memory,
                            method="robult", min_support=3, top_k=5, neighbours=4)
    names = [f.name for f in rep.inputs.features]
    assert target_feature in names and "kappa" in names and "labelled-nn" in names
    assert any(f.kind == "modality" and "absent" in {f.levels[c] for c in f.codes} for f in rep.inputs.features)
    assert ("confidence" in names) == (task != "regression")
    e = rep.inputs.errors_all
    assert rep.n == int(np.isfinite(e).sum()) and rep.error_overall == pytest.approx(np.nanmean(e))
    for s in rep.slices:
        assert s.error_in == pytest.approx(e[s.indices].mean()) and s.size >= 3
    # a method without κ has no κ feature, and neighbours=0 skips the training pass
    plain = find_model_slices(model, bundle, labeled_indices=torch.arange(0, 40, 3), memory_state=memory,
                              method="supervised", min_support=3, neighbours=0)
    assert not {"kappa", "labelled-nn"} & {f.name for f in plain.inputs.features}
