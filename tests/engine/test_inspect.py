"""robult_engine.inspect: the explorer's numbers, checked against the model called directly (no Qt here)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
from robult_engine.config import RunConfig
from robult_engine.data import load_dataset, make_batch
from robult_engine.evaluation import encode_split, modality_subsets, subset_logits
from robult_engine.inspect import (SampleInspector, encode_reference, flipped_samples, inspect_sample,
                                   latent_points, pca_2d, recombine, reference_indices, soft_pu, weights_version)
from robult_engine.losses import soft_kappa, soft_pu_weights
from robult_engine.trainer import Trainer

TINY = {"data.dataset": "pid-synth", "data.synth_n_train": 200, "train.epochs": 2, "model.d_h": 32,
        "model.d_z": 16, "model.d_u": 8, "model.d_hidden": 32}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect-run")
    cfg = RunConfig().replace(**TINY)
    final = Trainer(cfg, out_dir=out).run()
    assert final.checkpoint_path, final
    ckpt = load_checkpoint(final.checkpoint_path)
    model = model_from_checkpoint(ckpt)
    bundle = load_dataset(cfg.data)
    return ckpt, model, bundle


def _subsets(m):
    return [mask for _, mask in modality_subsets(tuple(f"m{i}" for i in range(m)))]


def test_recombine_matches_model_for_every_subset(trained):
    ckpt, model, bundle = trained
    info = bundle.info
    test = bundle.splits["test"]
    for j in (0, 5, 17):
        sample = test.subset([j])
        insp = SampleInspector(model, sample, task=info.task, class_names=info.class_names)
        for mask in _subsets(info.num_modalities):
            got = insp.inspect(mask)
            with torch.no_grad():
                out = model(sample.inputs, sample.lengths, torch.tensor([mask]), with_reconstruction=True)
            want = torch.softmax(out.logits[0], -1).numpy()
            np.testing.assert_allclose(got.probs, want, rtol=1e-5, atol=1e-6)
            assert got.pred == int(want.argmax())
            assert got.used == mask and not got.empty
            np.testing.assert_allclose(got.z_norm, out.z[0].norm(dim=-1).numpy(), rtol=1e-5)
            np.testing.assert_allclose(got.u_norm, out.u[0].norm(dim=-1).numpy(), rtol=1e-5)
            np.testing.assert_allclose(got.ratio, got.u_norm / got.z_norm, rtol=1e-6)
            np.testing.assert_allclose(got.mod_probs, torch.softmax(out.logits_mod[0], -1).numpy(), rtol=1e-5,
                                       atol=1e-6)
            rec = out.rec_error()[0].numpy()
            np.testing.assert_allclose(got.rec_err, rec, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(got.delta, got.probs - got.probs_all, atol=1e-12)
        full = insp.inspect((True,) * info.num_modalities)
        np.testing.assert_allclose(full.delta, 0.0, atol=1e-12)


def test_toggle_recombines_without_calling_the_model(trained):
    _, model, bundle = trained
    sample = bundle.splits["test"].subset([3])
    insp = SampleInspector(model, sample, task="single-label", class_names=bundle.info.class_names)
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        for mask in _subsets(3):
            insp.inspect(mask)
    finally:
        handle.remove()
    assert calls == []


def test_no_modality_selected_is_a_state_not_a_crash(trained):
    _, model, bundle = trained
    got = inspect_sample(model, bundle.splits["test"].subset([0]), (False, False, False),
                         class_names=bundle.info.class_names)
    assert got.empty and got.pred == -1 and np.isnan(got.probs).all()
    assert not np.isnan(got.probs_all).any()
    assert got.summary()["probs"] == [None] * len(bundle.info.class_names)


def test_a_modality_the_sample_lacks_never_contributes(trained):
    _, model, bundle = trained
    sample = bundle.splits["test"].subset([1])
    sample.mask[0, 1] = False  # m1 missing in the data
    got = inspect_sample(model, sample, (True, True, False), class_names=bundle.info.class_names)
    assert got.used == (True, False, False) and got.present == (True, False, True)
    only0 = inspect_sample(model, sample, (True, False, False), class_names=bundle.info.class_names)
    np.testing.assert_allclose(got.probs, only0.probs)
    none = inspect_sample(model, sample, (False, True, False), class_names=bundle.info.class_names)
    assert none.empty


def test_soft_pu_matches_the_loss_functions(trained):
    ckpt, model, bundle = trained
    train = bundle.splits["train"]
    n = len(train)
    lab = ckpt.labeled_indices
    idx = reference_indices(n, lab, size=32, n_labeled=8, seed=0)
    is_lab = torch.zeros(n, dtype=torch.bool)
    is_lab[lab] = True
    batch = make_batch(train, idx, is_lab)
    ref = encode_reference(model, batch, "single-label")
    assert ref.labeled.sum() == min(8, len(lab)) and len(ref.indices) == 32
    sample = bundle.splits["test"].subset([4])
    insp = SampleInspector(model, sample, task="single-label", class_names=bundle.info.class_names, reference=ref,
                           memory_state=ckpt.memory_state, kernel="rbf", bandwidth=None)
    pu = insp.softpu
    # recompute by hand with the loss module's functions
    with torch.no_grad():
        out = model(sample.inputs, sample.lengths, torch.ones(1, 3, dtype=torch.bool), with_fusion=True)
        ob = model(batch.inputs, batch.lengths, batch.mask, with_fusion=True)
    s_all = torch.cat([F.normalize(ob.s, dim=-1), F.normalize(out.s, dim=-1)])
    pseudo_ref = ob.logits_fused.argmax(-1)
    cls = torch.cat([torch.where(batch.labeled, batch.target, pseudo_ref), out.logits_fused.argmax(-1)])
    lab_all = torch.cat([batch.labeled, torch.tensor([False])])
    kappa, sigma = soft_kappa(s_all, cls, ckpt.memory_state["protos"], ckpt.memory_state["seen"], "rbf", None)
    w = soft_pu_weights(cls, lab_all, kappa)
    np.testing.assert_allclose(pu.matrix, w.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pu.gives, w[-1, :-1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pu.receives, w[:-1, -1].numpy(), rtol=1e-5, atol=1e-6)
    assert pu.kappa == pytest.approx(float(kappa[-1]), rel=1e-5)
    assert pu.sigma == pytest.approx(float(sigma), rel=1e-5)
    assert pu.pseudo_label == int(out.logits_fused.argmax())
    assert pu.confidence == pytest.approx(float(torch.softmax(out.logits_fused, -1).max()), rel=1e-5)
    assert pu.valid and not pu.labeled
    # the weights it receives: κ of the sample for every reference row with the same ỹ
    same = (cls[:-1] == cls[-1]).numpy()
    np.testing.assert_allclose(pu.receives, np.where(same, pu.kappa, 0.0), rtol=1e-5, atol=1e-7)
    # top positives: sorted, positive, and what the sample gives
    ws = [t[2] for t in pu.top]
    assert ws == sorted(ws, reverse=True) and all(v > 0 for v in ws)
    for row, split_idx, weight, _, labeled in pu.top:
        assert split_idx == int(idx[row]) and weight == pytest.approx(float(pu.gives[row]))
        assert labeled == bool(batch.labeled[row])
    # soft-PU does not depend on the toggles
    assert insp.inspect((True, False, False)).softpu is pu


def test_soft_pu_hand_example():
    """3 reference rows + the sample on a 2-D sphere, one prototype per class, rbf with σ = 1 (DESIGN §1, loss 2)."""
    from robult_engine.inspect import ReferenceEncoding, SampleEncoding
    ref = ReferenceEncoding(indices=torch.tensor([10, 11, 12]),
                            s_n=torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]),
                            s_valid=torch.ones(3, dtype=torch.bool), labeled=torch.tensor([True, False, False]),
                            classes=torch.tensor([0, 0, 1]), pseudo=torch.tensor([0, 0, 1]),
                            target=torch.tensor([0, 1, 1]))
    enc = SampleEncoding(modality_names=("a", "b"), present=torch.tensor([True, True]),
                         logits_mod=torch.zeros(2, 2), z=torch.ones(2, 2), u=torch.ones(2, 2),
                         rec_err=torch.zeros(2), s=torch.tensor([3.0, 0.0]), logits_fused=torch.tensor([2.0, 0.0]))
    memory = {"protos": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "seen": torch.tensor([True, True])}
    pu = soft_pu(enc, ref, memory, task="single-label", class_names=("x", "y"), kernel="rbf", bandwidth=1.0)
    # sample: s = (1, 0), ỹ = 0, distance to prototype 0 is 0 → κ = 1
    assert pu.pseudo_label == 0 and pu.pseudo_label_name == "x" and pu.kappa == pytest.approx(1.0)
    # reference row 1: class 0, s = (0, 1), d = √2 → κ = exp(−2 / 2) = e^-1
    e1 = float(np.exp(-1.0))
    np.testing.assert_allclose(pu.ref_kappa, [1.0, e1, float(np.exp(-(0.6 ** 2 + 0.2 ** 2) / 2))], rtol=1e-6)
    # the sample gives: row 0 (labeled, same class) 1, row 1 (same ỹ) κ_1, row 2 (other class) 0
    np.testing.assert_allclose(pu.gives, [1.0, e1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(pu.receives, [1.0, 1.0, 0.0], rtol=1e-6)
    assert pu.confidence == pytest.approx(float(torch.softmax(torch.tensor([2.0, 0.0]), 0)[0]))
    assert [t[1] for t in pu.top] == [10, 11]


def test_soft_pu_without_prototypes_gives_kappa_zero(trained):
    ckpt, model, bundle = trained
    ref = encode_reference(model, bundle.splits["train"].subset(list(range(16))), "single-label")
    sample = bundle.splits["test"].subset([0])
    got = inspect_sample(model, sample, (True, True, True), memory_state={}, reference=ref,
                         class_names=bundle.info.class_names)
    assert got.softpu.prototypes_seen == 0 and got.softpu.kappa == 0.0
    assert (got.softpu.ref_kappa == 0).all()


def test_labeled_sample_uses_its_label_and_kappa_one(trained):
    ckpt, model, bundle = trained
    train = bundle.splits["train"]
    j = int(ckpt.labeled_indices[0])
    ref = encode_reference(model, train.subset(list(range(20))), "single-label")
    got = inspect_sample(model, train.subset([j]), (True,) * 3, memory_state=ckpt.memory_state, reference=ref,
                         class_names=bundle.info.class_names, sample_labeled=True)
    assert got.softpu.labeled and got.softpu.kappa == 1.0
    assert got.softpu.pseudo_label == int(train.target[j])


def test_incomplete_sample_flags_soft_pu_invalid(trained):
    ckpt, model, bundle = trained
    sample = bundle.splits["test"].subset([2])
    sample.mask[0, 2] = False
    ref = encode_reference(model, bundle.splits["train"].subset(list(range(16))), "single-label")
    got = inspect_sample(model, sample, (True,) * 3, memory_state=ckpt.memory_state, reference=ref,
                         class_names=bundle.info.class_names)
    assert not got.softpu.valid and "m2" in got.softpu.reason


def test_flipped_samples_brute_force(trained):
    _, model, bundle = trained
    test = bundle.splits["test"]
    enc = encode_split(model, test)
    full, _ = subset_logits(enc, (True, True, True))
    for mask in _subsets(3):
        got = flipped_samples(enc, mask)
        with torch.no_grad():
            sub = model(test.inputs, test.lengths, torch.tensor([mask] * len(test))).logits
        want = np.nonzero((sub.argmax(-1) != full.argmax(-1)).numpy())[0]
        np.testing.assert_array_equal(got, want)
    assert len(flipped_samples(enc, (True, True, True))) == 0


def test_reference_indices_are_seeded_and_mixed():
    lab = torch.tensor([1, 5, 9, 13])
    a = reference_indices(100, lab, size=10, n_labeled=3, seed=7)
    b = reference_indices(100, lab, size=10, n_labeled=3, seed=7)
    assert torch.equal(a, b) and len(a) == 10 and len(set(a.tolist())) == 10
    assert sum(int(i) in {1, 5, 9, 13} for i in a) == 3
    state = torch.get_rng_state()
    reference_indices(100, lab, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # never draws from the global RNG
    assert len(reference_indices(5, [], size=64)) == 5


def test_pca_2d_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) @ np.diag([5, 2, 1, 0.5, 0.1, 0.1])
    xy, ratio = pca_2d(x)
    xc = x - x.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    for k in range(2):
        assert abs(abs(np.dot(xy[:, k], xc @ vt[k])) - np.dot(xc @ vt[k], xc @ vt[k])) < 1e-6
    np.testing.assert_allclose(ratio, (s ** 2 / (s ** 2).sum())[:2], rtol=1e-9)
    np.testing.assert_array_equal(xy, pca_2d(x)[0])  # deterministic
    one, r1 = pca_2d(np.ones((4, 1)) * np.arange(4)[:, None])
    assert one.shape == (4, 2) and r1[1] == 0


def test_latent_points(trained):
    _, model, bundle = trained
    enc = encode_split(model, bundle.splits["test"])
    enc.mask[0, 1] = False
    pts = latent_points(enc, "z")
    n = len(bundle.splits["test"])
    assert pts["xy"].shape == (3 * n - 1, 2)
    assert not ((pts["sample"] == 0) & (pts["modality"] == 1)).any()
    assert latent_points(enc, "u")["xy"].shape == (3 * n - 1, 2)


def test_weights_version_changes_with_an_optimizer_step(trained):
    _, model, bundle = trained
    import copy
    m = copy.deepcopy(model)
    v0 = weights_version(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    test = bundle.splits["test"]
    out = m(test.inputs, test.lengths, test.mask)
    out.logits.sum().backward()
    opt.step()
    assert weights_version(m) != v0


def test_recombine_rejects_a_wrong_subset_length(trained):
    _, model, bundle = trained
    insp = SampleInspector(model, bundle.splits["test"].subset([0]), task="single-label",
                           class_names=bundle.info.class_names)
    with pytest.raises(ValueError, match="3 modalities"):
        recombine(insp.encoding, (True,), "single-label", bundle.info.class_names)


def test_inspect_imports_no_qt_and_no_sqlite():
    code = ("import sys, robult_engine.inspect; "
            "bad = [m for m in sys.modules if m.startswith(('PySide6', 'PyQt', 'sqlite3', 'sqlite_utils', 'app'))]; "
            "print(bad); raise SystemExit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stdout + r.stderr


def test_prediction_text_per_task():
    """A class name (single-label), the set of labels with p ≥ 0.5 (multi-label), the score (regression)."""
    from robult_engine.inspect import SampleEncoding
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.2, -0.1]])  # two modalities, three outputs

    def enc(lm):
        m = lm.shape[0]
        return SampleEncoding(("a", "b"), torch.ones(m, dtype=torch.bool), lm, torch.ones(m, 4), torch.ones(m, 2),
                              torch.zeros(m), torch.ones(4), torch.zeros(lm.shape[1]))

    single = recombine(enc(logits), (True, True), "single-label", ("x", "y", "z"))
    assert single.prediction_text() == "z"  # mean logits (-0.5, -0.4, 0.2)
    assert single.prediction_text("a") == "x" and single.prediction_text("b") == "y"
    multi = recombine(enc(logits), (True, True), "multi-label", ("x", "y", "z"))
    assert multi.prediction_text("all") == "{z}"  # sigmoid(-0.5), sigmoid(-0.4) < 0.5 ≤ sigmoid(0.2)
    assert multi.prediction_text("a") == "{x, z}" and multi.prediction_text("b") == "{y}"
    none = recombine(enc(torch.full((2, 3), -4.0)), (True, True), "multi-label", ("x", "y", "z"))
    assert none.prediction_text() == "{}"
    reg = recombine(enc(logits[:, :1]), (False, True), "regression", ("score",))
    assert reg.prediction_text() == "-3.000" and reg.prediction_text("all") == "-0.500"
    empty = recombine(enc(logits), (False, False), "single-label", ("x", "y", "z"))
    assert empty.prediction_text() == "–" and empty.summary()["prediction"] == "–"
