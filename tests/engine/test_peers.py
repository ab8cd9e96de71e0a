"""The peers ShaSpec and MMIN (docs/method.md, "Peers"): their losses, their subset heads (any mask, missing
inputs never read), checkpoints, no new parameters for the other methods, and each doing what it is for on a
dataset built for it (PID-Synth with redundant bits only)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from robult_engine.config import ConfigError, RunConfig
from robult_engine.data import DatasetInfo, ModalitySpec, load_dataset, make_batch
from robult_engine.evaluation import encode_split, evaluate_subsets, modality_subsets, subset_logits
from robult_engine.losses import domain_classification_loss, imagination_loss, shared_alignment_loss
from robult_engine.methods import METHOD_SPECS, method_spec
from robult_engine.models.robult import build_model, standardise_features, subset_index, subset_masks
from robult_engine.trainer import Trainer

from conftest import tiny_config

PEERS = ("shaspec", "mmin")
PEER_MODULES = ("substitution.", "imagination.")


# --- losses --------------------------------------------------------------------------------------------------


def test_domain_classification_loss_shapes_values_and_mask():
    b, m = 4, 3
    perfect = torch.eye(m).expand(b, m, m) * 50.0  # slot i says "modality i" with certainty
    mask = torch.ones(b, m, dtype=torch.bool)
    assert domain_classification_loss(perfect, mask).shape == ()
    assert float(domain_classification_loss(perfect, mask)) < 1e-6
    uniform = torch.zeros(b, m, m)
    assert float(domain_classification_loss(uniform, mask)) == pytest.approx(float(torch.log(torch.tensor(3.0))))
    # an absent slot does not count, even when its logits are NaN; the default denominator counts present slots
    mask[0, 1] = False
    bad = perfect.clone()
    bad[0, 1] = float("nan")
    assert float(domain_classification_loss(bad, mask)) < 1e-6
    wrong = perfect.clone()
    wrong[1, 2] = torch.tensor([50.0, 0.0, 0.0])  # one present slot misclassified (CE 50)
    assert float(domain_classification_loss(wrong, mask)) == pytest.approx(50.0 / 11, rel=1e-4)
    assert float(domain_classification_loss(wrong, mask, denom=1.0)) == pytest.approx(50.0, rel=1e-4)


def test_shared_alignment_loss_is_l1_over_present_pairs():
    z = torch.zeros(2, 3, 4)
    z[0, 1] = 1.0  # sample 0: |z0 − z1| = 1, |z1 − z2| = 1, |z0 − z2| = 0
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert shared_alignment_loss(z, mask).shape == ()
    assert float(shared_alignment_loss(z, mask)) == pytest.approx(2.0 / 6)  # 6 pairs in all
    mask[0, 2] = False  # sample 0 keeps one pair (0, 1): distance 1; sample 1 three pairs at 0
    z[0, 2] = float("nan")  # an absent modality is never read
    assert float(shared_alignment_loss(z, mask)) == pytest.approx(1.0 / 4)
    single = torch.tensor([[True, False, False]])  # one modality: no pair, no loss
    assert float(shared_alignment_loss(torch.randn(1, 3, 4), single)) == 0.0
    same = torch.randn(5, 1, 8).expand(5, 3, 8)
    assert float(shared_alignment_loss(same, torch.ones(5, 3, dtype=torch.bool))) == 0.0


def test_imagination_loss_is_mse_over_the_masked_slots():
    target = torch.zeros(3, 2, 4)
    imagined = torch.ones(3, 2, 4)
    mask = torch.tensor([[True, False], [False, False], [False, True]])
    imagined[0, 1] = float("nan")  # outside the mask
    assert imagination_loss(imagined, target, mask).shape == ()
    assert float(imagination_loss(imagined, target, mask)) == pytest.approx(1.0)
    assert float(imagination_loss(imagined, target, mask, denom=4.0)) == pytest.approx(0.5)
    assert float(imagination_loss(imagined, target, torch.zeros(3, 2, dtype=torch.bool))) == 0.0


# --- the subset heads ----------------------------------------------------------------------------------------


def peer_model(method: str, info, seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_config(method=method)
    return build_model(cfg.model, info, rec_route=cfg.loss.rec_route, method=method).eval()


def garbage_where_missing(inputs: dict, mask: torch.Tensor, names) -> dict:
    """NaN in a missing modality's float input, random ids in a missing text input."""
    out = {}
    for i, name in enumerate(names):
        x = inputs[name].clone()
        rows = ~mask[:, i]
        if x.is_floating_point():
            x[rows] = float("nan")
        else:
            x[rows] = torch.randint(1, 60, x[rows].shape)
        out[name] = x
    return out


@pytest.mark.parametrize("method", PEERS)
def test_every_subset_mask_predicts_without_reading_missing_inputs(method, four_kind_bundle):
    info = four_kind_bundle.info
    names = info.modality_names
    model = peer_model(method, info)
    split = four_kind_bundle.splits["train"]  # complete samples
    batch = make_batch(split, torch.arange(len(split)))
    with torch.no_grad():
        enc_h = model.encode(batch.inputs, batch.lengths)
        for _name, sm in modality_subsets(names):
            mask = torch.tensor(sm).expand(len(split), -1).clone()
            out = model(batch.inputs, batch.lengths, mask)
            assert out.logits.shape == (len(split), info.num_outputs)
            assert torch.isfinite(out.logits).all()
            poisoned = model(garbage_where_missing(batch.inputs, mask, names), batch.lengths, mask)
            assert torch.equal(poisoned.logits, out.logits), "a missing modality's input changed the prediction"
            # the table evaluation looks up is the same head
            table = model.predict_subsets(enc_h, out.z, out.u, mask[:1])
            torch.testing.assert_close(table[:, 0], out.logits)
        # a mask per row (every subset at once), and the singletons of logits_mod
        masks = subset_masks(len(names))[1:]  # (15, M)
        rows = masks[torch.arange(len(split)) % len(masks)]
        out = model(batch.inputs, batch.lengths, rows)
        for j in range(len(split)):
            alone = model(batch.inputs, batch.lengths, rows[j:j + 1].expand(len(split), -1)).logits[j]
            torch.testing.assert_close(out.logits[j], alone)
        full = model(batch.inputs, batch.lengths, torch.ones(len(split), len(names), dtype=torch.bool))
        for i in range(len(names)):
            mask = torch.zeros(len(split), len(names), dtype=torch.bool)
            mask[:, i] = True
            torch.testing.assert_close(full.logits_mod[:, i], model(batch.inputs, batch.lengths, mask).logits)


@pytest.mark.parametrize("method", PEERS)
def test_evaluation_scores_the_peer_head_on_every_subset(method, make_bundle):
    bundle = make_bundle(missing=0.4)
    info = bundle.info
    model = peer_model(method, info)
    split = bundle.splits["test"]  # some modalities missing in the data
    assert not split.mask.all()
    enc = encode_split(model, split, batch_size=5)
    m = len(info.modality_names)
    assert enc.subset_table.shape == (len(split), 2 ** m, info.num_outputs)
    assert torch.equal(enc.subset_table[:, 0], torch.zeros(len(split), info.num_outputs))
    batch = make_batch(split, torch.arange(len(split)))
    with torch.no_grad():
        for _name, sm in modality_subsets(info.modality_names):
            logits, rows = subset_logits(enc, sm)
            eff = split.mask & torch.tensor(sm)
            direct = model(batch.inputs, batch.lengths, eff).logits
            torch.testing.assert_close(logits[rows], direct[rows])
    assert torch.equal(subset_index(torch.tensor([[True, False, True, True]])), torch.tensor([13]))


@pytest.mark.parametrize("method", PEERS)
def test_explorer_toggles_and_attribution_use_the_peer_head(method, make_bundle):
    from robult_engine.explain.attribution import shapley_sample, train_prior
    from robult_engine.inspect import encode_sample, recombine
    four_kind_bundle = make_bundle(missing=0.4)
    info = four_kind_bundle.info
    model = peer_model(method, info)
    split = four_kind_bundle.splits["test"]
    j = int(torch.nonzero(~split.mask.all(1))[0])  # a sample that misses a modality
    sample = make_batch(split, torch.tensor([j]))
    enc = encode_sample(model, sample)
    assert enc.subset_table.shape == (2 ** 4, info.num_outputs)
    for _name, sm in modality_subsets(info.modality_names):
        used = torch.tensor(sm) & split.mask[j]
        ins = recombine(enc, sm, info.task, info.class_names)
        if used.any():
            with torch.no_grad():
                direct = model(sample.inputs, sample.lengths, used[None]).logits[0]
            expected = torch.softmax(direct.double(), -1).numpy()
            assert ins.probs == pytest.approx(expected, abs=1e-5)
    # Shapley values of the peer's own game: v(A) from the subset head, efficiency Σφ = v(all) − v(∅)
    encs = encode_split(model, split)
    prior = train_prior(four_kind_bundle.splits["train"].target, info.task, info.num_outputs)
    a = shapley_sample(encs, j, prior, info.task)
    with torch.no_grad():
        full = model(sample.inputs, sample.lengths, sample.mask).logits[0]
    assert a["output"] == int(full.argmax())
    assert a["v_full"] == pytest.approx(float(torch.log_softmax(full.double(), -1)[a["output"]]), abs=1e-5)
    assert sum(a["phi"]) == pytest.approx(a["v_full"] - a["v_empty"], abs=1e-9)


def test_peers_refuse_more_modalities_than_the_table_holds():
    info = DatasetInfo(name="wide", modalities=tuple(ModalitySpec(f"v{i}", "vector", (3,)) for i in range(11)),
                       task="single-label", class_names=("a", "b"))
    with pytest.raises(ConfigError, match="at most 10 modalities"):
        build_model(tiny_config().model, info, method="mmin")
    assert build_model(tiny_config().model, info, method="robult") is not None


@pytest.mark.parametrize("method", PEERS)
def test_training_losses_ignore_absent_inputs_and_reach_the_peer_modules(method, pid_bundle):
    t = Trainer(tiny_config(method=method, **{"data.label_fraction": 1.0}), pid_bundle)
    t.setup()
    batch = t._step_batch(t.sampler.epoch(0)[0])
    batch.mask = batch.mask.clone()
    batch.mask[4:, 1] = False  # rows 0..3 complete, the rest miss m1
    for name in batch.inputs:
        batch.inputs[name] = batch.inputs[name].clone().requires_grad_(True)
    t._global_mask = batch.mask  # what _step_batch records (the dropout draws on it)
    gen = t.gen.get_state()

    def losses():
        t.gen.set_state(gen)
        torch.manual_seed(0)
        return t.compute_losses(batch, epoch=0, stats={})
    before = losses()
    t.model.zero_grad(set_to_none=True)
    before["total"].backward()
    assert batch.inputs["m1"].grad[4:].abs().sum() == 0 and batch.inputs["m0"].grad.abs().sum() > 0
    own = t.model.substitution if method == "shaspec" else t.model.imagination
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own.parameters())
    with torch.no_grad():
        batch.inputs["m1"][4:] = float("nan")
    after = losses()
    assert {k: v.item() for k, v in after.items()} == {k: v.item() for k, v in before.items()}


# --- checkpoints and the other methods -----------------------------------------------------------------------


def test_other_methods_get_no_new_parameters(pid_bundle):
    cfg = tiny_config()
    plain = set(build_model(cfg.model, pid_bundle.info).state_dict())
    for name, spec in METHOD_SPECS.items():
        keys = set(build_model(cfg.model, pid_bundle.info, method=name).state_dict())
        if spec.subset_head == "mean":
            assert keys == plain, name
        else:
            assert keys > plain and all(k.startswith(PEER_MODULES) for k in keys - plain), name
    assert {method_spec(p).subset_head for p in PEERS} == {"shared-substitution", "imagination"}
    assert all(method_spec(p).family == "peer" and method_spec(p).search_space for p in PEERS)


def test_a_checkpoint_written_without_the_peer_field_still_loads(tmp_path, pid_bundle):
    """A robult checkpoint saved from a model built the way earlier versions built it loads strictly."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg.model, pid_bundle.info)
    path = save_checkpoint(tmp_path / "old.pt", model_state=model.state_dict(), config=cfg, info=pid_bundle.info,
                           labeled_indices=torch.tensor([0, 1]), fingerprint="x")
    again = model_from_checkpoint(load_checkpoint(path))
    assert again.subset_head == "mean" and set(again.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("method", PEERS)
def test_checkpoint_round_trip_gives_identical_predictions(method, tmp_path, pid_bundle):
    cfg = tiny_config(method=method, **{"train.epochs": 1})
    seen: list = []
    tr = Trainer(cfg, pid_bundle, out_dir=tmp_path, callbacks=[seen.append])
    final = tr.run()
    assert final.checkpoint_path, getattr(final, "message", final)
    losses = [e.train_losses for e in seen if type(e).__name__ == "EpochEnded"][0]
    own = {"shaspec": {"domain", "align"}, "mmin": {"imagine", "cycle"}}[method]
    assert set(losses) == {"sup", "total"} | own and all(map(lambda v: v == v, losses.values()))
    ck = load_checkpoint(final.checkpoint_path)
    model = model_from_checkpoint(ck)
    tr.model.eval()
    split = pid_bundle.splits["test"]
    batch = make_batch(split, torch.arange(len(split)))
    with torch.no_grad():
        for sm in subset_masks(3)[1:]:
            mask = sm.expand(len(split), -1)
            assert torch.equal(tr.model(batch.inputs, batch.lengths, mask).logits,
                               model(batch.inputs, batch.lengths, mask).logits)
    names, task = pid_bundle.info.modality_names, pid_bundle.info.task
    assert evaluate_subsets(model, split, names, task) == evaluate_subsets(tr.model, split, names, task)
    assert ck.metrics["test"] == evaluate_subsets(model, split, names, task)


# --- each method does what it is for ---------------------------------------------------------------------------


def redundant_config(method: str, **changes) -> RunConfig:
    """PID-Synth where every modality sees the same 3 class bits (no unique, synergy or nuisance bits)."""
    return RunConfig().replace(**{
        "method": method, "data.dataset": "pid-synth", "data.synth_n_train": 400, "data.label_fraction": 0.2,
        "data.synth_redundant_bits": 3, "data.synth_unique_bits": 0, "data.synth_synergy_bits": 0,
        "data.synth_nuisance_bits": 0, "data.synth_noise": 0.3, "data.synth_dim": 16,
        "model.d_h": 16, "model.d_z": 8, "model.d_u": 8, "model.d_hidden": 32, "model.dropout": 0.0,
        "train.epochs": 8, "train.batch_size": 32, "train.labeled_per_batch": 8, "train.patience": 0,
        "train.lr": 3e-3, **changes}).validate()


def r2(pred: torch.Tensor, true: torch.Tensor) -> float:
    return float(1 - ((pred - true) ** 2).sum() / ((true - true.mean(0)) ** 2).sum())


def test_mmin_imagines_a_redundant_modality_latent():
    cfg = redundant_config("mmin")
    bundle = load_dataset(cfg.data)
    tr = Trainer(cfg, bundle)
    assert type(tr.run()).__name__ == "Finished"
    model = tr.model.eval()
    test = bundle.splits["test"]
    batch = make_batch(test, torch.arange(len(test)))
    only_m0 = torch.zeros_like(batch.mask)
    only_m0[:, 0] = True
    with torch.no_grad():
        h = standardise_features(model.encode(batch.inputs, batch.lengths))  # MMIN's latents n(H^i)
        imagined = model.imagination(h, only_m0)
    shuffle = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    for i in (1, 2):
        true, pred = h[:, i], imagined[:, i]
        fit, baseline = r2(pred, true), r2(pred[shuffle], true)
        cos = float(F.cosine_similarity(pred, true, dim=-1).mean())
        cos_base = float(F.cosine_similarity(pred[shuffle], true, dim=-1).mean())
        assert fit > 0.4 and fit > baseline + 0.5, (i, fit, baseline)
        assert cos > cos_base + 0.3, (i, cos, cos_base)


def test_shaspec_substitution_beats_zero_filling_on_a_redundant_pair():
    cfg = redundant_config("shaspec", **{"data.modalities": ("m0", "m1")})
    bundle = load_dataset(cfg.data)
    tr = Trainer(cfg, bundle)
    assert type(tr.run()).__name__ == "Finished"
    model = tr.model.eval()
    test = bundle.splits["test"]
    batch = make_batch(test, torch.arange(len(test)))
    with torch.no_grad():
        out = model(batch.inputs, batch.lengths, batch.mask)
        for i in range(2):
            alone = torch.zeros_like(batch.mask)
            alone[:, i] = True
            substituted = model.predict(out.h, out.z, out.u, alone)
            # the same head with the missing modality's features zero-filled instead of substituted
            keep = alone.unsqueeze(-1)
            zero = model.substitution(torch.where(keep, out.z, torch.zeros_like(out.z)),
                                      torch.where(keep, out.u, torch.zeros_like(out.u)), torch.ones_like(alone))
            nll_sub, nll_zero = F.cross_entropy(substituted, test.target), F.cross_entropy(zero, test.target)
            acc_sub = (substituted.argmax(-1) == test.target).float().mean()
            acc_zero = (zero.argmax(-1) == test.target).float().mean()
            assert nll_sub < nll_zero - 0.05 and acc_sub >= acc_zero, (i, nll_sub, nll_zero, acc_sub, acc_zero)
