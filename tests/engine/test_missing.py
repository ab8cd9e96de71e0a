"""Missing modalities as a protocol (robult_engine/missing.py): the spec parser, every mechanism's masks, mask
files, evaluation under masks on the toggles' code path, training with incomplete samples, and the losses on
incomplete rows (hand-computed values, no NaN without a complete sample, gradients only where they belong)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from robult_engine.config import ConfigError
from robult_engine.data import DatasetBundle, DatasetInfo, ModalitySpec, SplitData
from robult_engine.evaluation import encode_split, metrics_from_encoded
from robult_engine.losses import pu_contrastive_loss, reconstruction_loss, supervised_loss
from robult_engine.missing import (MissingSpec, MissingSpecError, apply_mask, concat_splits, draw_mask, draw_masks,
                                   expand, load_masks, metrics_under_masks, parse_missing, parse_missing_grid,
                                   realised_missing, save_masks, signal_strength, soft_pu_points)
from robult_engine.models.robult import build_model
from robult_engine.trainer import Trainer

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def vector_bundle(m: int = 6, n: int = 200, classes: int = 4, seed: int = 0) -> DatasetBundle:
    """M vector modalities (M = 6 like mfeat: nothing here assumes two), modality i of sample j scaled by a
    per-sample strength so mnar-value has something to rank."""
    g = torch.Generator().manual_seed(seed)
    info = DatasetInfo("vec6", tuple(ModalitySpec(f"v{i}", "vector", (3,)) for i in range(m)), "single-label",
                       tuple(f"c{k}" for k in range(classes)))

    def split(k):
        inputs = {f"v{i}": torch.randn(k, 3, generator=g) * torch.rand(k, 1, generator=g) for i in range(m)}
        return SplitData(inputs, {}, torch.ones(k, m, dtype=torch.bool), torch.arange(k) % classes,
                         [f"s{j}" for j in range(k)])
    return DatasetBundle(info, {"train": split(n), "val": split(n // 4), "test": split(n)})


# --- the parser ---------------------------------------------------------------------------------------------


def test_parse_settings_grids_and_labels():
    assert parse_missing("mcar:0.5") == [MissingSpec("mcar", (0.5,))]
    assert [s.label for s in parse_missing("mcar:0,0.25,0.5,0.75")] == ["mcar:0", "mcar:0.25", "mcar:0.5",
                                                                        "mcar:0.75"]
    per = parse_missing("mcar:0.2/0.7")
    assert per == [MissingSpec("mcar", (0.2, 0.7))] and math.isnan(per[0].rate)
    assert parse_missing("MCAR:audio=0.7") == [MissingSpec("mcar", (0.7,), ("audio",))]
    mc = parse_missing("mnar-class:0.8/0.1@3+5")[0]
    assert (mc.rates, mc.classes, mc.rate, mc.label) == ((0.8, 0.1), ("3", "5"), 0.8, "mnar-class:0.8/0.1@3+5")
    assert parse_missing("mnar-value:0.3")[0].rate == 0.3
    assert parse_missing("exclusive") == [MissingSpec("exclusive")]
    assert parse_missing("subset:audio+image")[0].modalities == ("audio", "image")
    # every label parses back to its spec
    for text in ("mcar:0.5", "mcar:0.2/0.7", "mcar:a=0.1/b=0.2", "mnar-class:0.6@1", "mnar-value:0.3/0",
                 "exclusive", "subsets", "subset:x+y"):
        for s in parse_missing(text):
            assert parse_missing(s.label) == [s]
    # a repeated option: settings in order, without repeats
    assert [s.label for s in parse_missing_grid(["mcar:0,0.5", "mcar:0.5", "exclusive"])] == ["mcar:0", "mcar:0.5",
                                                                                            "exclusive"]


@pytest.mark.parametrize("text, message", [
    ("mcar:1", "a rate must be in [0, 1) (the fraction of entries missing), got 1"),
    ("mcar:1.5", "must be in [0, 1)"),
    ("mcar:-0.1", "must be in [0, 1)"),
    ("mcar:nan", "must be in [0, 1)"),
    ("mcar:half", "'half' is not a rate"),
    ("mcar", "mcar needs parameters, e.g. mcar:0.5"),
    ("mcar:0.1,,0.2", "an empty rate"),
    ("dropout:0.5", "unknown mechanism 'dropout'; one of mcar, mnar-class, mnar-value, exclusive, subsets"),
    ("exclusive:0.5", "exclusive takes no parameters"),
    ("mcar:a=0.1/0.2", "name every rate of a setting or none"),
    ("mcar:0.5@3", "only mnar-class takes '@CLASSES'"),
    ("mnar-class:0.5/0.2/0.1", "mnar-class takes HI or HI/LO"),
    ("subset:a+a", "name each kept modality once"),
])
def test_parse_errors_name_the_spec_and_the_problem(text, message):
    with pytest.raises(MissingSpecError, match=None) as e:
        parse_missing(text)
    assert message in str(e.value) and text.split(":")[0] in str(e.value)
    assert isinstance(e.value, ConfigError)  # the CLI prints it and exits 2


# --- the mechanisms -----------------------------------------------------------------------------------------


def test_mcar_is_pure_respects_the_data_mask_and_never_empties_a_sample():
    b = vector_bundle()
    split = copy.deepcopy(b.splits["test"])
    split.mask[::4, 0] = False  # the data itself lacks v0 for a quarter of the samples
    split.mask[1::4, 1:] = False  # ... and a quarter have v0 only
    spec = parse_missing("mcar:0.5")[0]
    a = draw_mask(split, b.info, spec, seed=3)
    assert torch.equal(a, draw_mask(split, b.info, spec, seed=3))  # same inputs, same mask
    assert not torch.equal(a, draw_mask(split, b.info, spec, seed=4))
    assert a.dtype == torch.bool and a.shape == split.mask.shape
    assert not (a & ~split.mask).any()  # a modality absent in the data stays absent
    assert a.any(1).all()  # restored where the draw removed everything
    assert torch.equal(a[1::4], split.mask[1::4])  # a sample with one modality keeps it
    assert torch.equal(draw_mask(split, b.info, parse_missing("mcar:0")[0], 0), split.mask)


def test_mcar_rate_is_the_fraction_missing_and_rates_are_nested():
    b = vector_bundle(m=6, n=4000)
    split = b.splits["test"]
    masks = draw_masks(split, b.info, parse_missing("mcar:0,0.25,0.5,0.75"), seed=0)
    # with 6 modalities a row is emptied with probability η^6, so the realised fraction missing is ≈ η
    for label, eta in (("mcar:0", 0.0), ("mcar:0.25", 0.25), ("mcar:0.5", 0.5)):
        assert realised_missing(masks[label]) == pytest.approx(eta, abs=0.015)
    # at 0.75, 0.75^6 = 17.8 % of the rows lose all six and get one back: 0.75 − 0.178/6 ≈ 0.72
    assert realised_missing(masks["mcar:0.75"]) == pytest.approx(0.75 - 0.75 ** 6 / 6, abs=0.015)
    # nested: whatever is missing at 0.25 is missing at 0.5 (no row emptied at 0.5 here changes this much)
    missing_25, missing_50 = ~masks["mcar:0.25"], ~masks["mcar:0.5"]
    assert (missing_25 & ~missing_50).sum() <= 0.002 * missing_25.numel()
    # per-modality and named rates
    per = draw_mask(split, b.info, parse_missing("mcar:0/0.5/0.9/0/0/0")[0], 0)
    assert per[:, 0].all() and (1 - per[:, 1].float().mean()) == pytest.approx(0.5, abs=0.03)
    assert (1 - per[:, 2].float().mean()) == pytest.approx(0.9, abs=0.03)
    named = draw_mask(split, b.info, parse_missing("mcar:v5=0.6")[0], 0)
    assert named[:, :5].all() and (1 - named[:, 5].float().mean()) == pytest.approx(0.6, abs=0.03)


def test_two_modalities_the_realised_fraction_is_reported_not_pretended():
    b = vector_bundle(m=2, n=4000)
    mask = draw_mask(b.splits["test"], b.info, parse_missing("mcar:0.5")[0], 0)
    # P(both dropped) = 1/4, one restored: 1/4·1/2 + 1/2·1/2 = 0.375 of the entries end up missing
    assert realised_missing(mask) == pytest.approx(0.375, abs=0.015) and mask.any(1).all()


def test_mechanism_errors_name_the_spec_and_the_dataset():
    b = vector_bundle(m=6)
    split = b.splits["test"]
    with pytest.raises(MissingSpecError, match=r"mcar:0.2/0.7: 2 per-modality rates, but the dataset has 6 "
                                               r"modalities \(v0, v1, v2, v3, v4, v5\)"):
        draw_mask(split, b.info, parse_missing("mcar:0.2/0.7")[0], 0)
    with pytest.raises(MissingSpecError, match="unknown modality 'audio'; the dataset has v0, v1"):
        draw_mask(split, b.info, parse_missing("mcar:audio=0.5")[0], 0)
    with pytest.raises(MissingSpecError, match="unknown class '9'"):
        draw_mask(split, b.info, parse_missing("mnar-class:0.5@9")[0], 0)
    with pytest.raises(MissingSpecError, match="unknown modality 'x'"):
        draw_mask(split, b.info, parse_missing("subset:x")[0], 0)


def test_exclusive_keeps_exactly_one_of_the_present_modalities():
    b = vector_bundle(m=6, n=3000)
    split = copy.deepcopy(b.splits["test"])
    split.mask[:, 5] = False
    mask = draw_mask(split, b.info, parse_missing("exclusive")[0], 1)
    assert (mask.sum(1) == 1).all() and not mask[:, 5].any()
    share = mask[:, :5].float().mean(0)
    assert torch.allclose(share, torch.full((5,), 0.2), atol=0.03)  # uniform over the present ones


def test_mnar_by_class_removes_more_for_the_chosen_classes():
    b = vector_bundle(m=6, n=4000, classes=4)
    split = b.splits["test"]
    mask = draw_mask(split, b.info, parse_missing("mnar-class:0.6/0.1@c2+3")[0], 0)  # by name and by index
    chosen = (split.target == 2) | (split.target == 3)
    assert (1 - mask[chosen].float().mean()) == pytest.approx(0.6, abs=0.03)
    assert (1 - mask[~chosen].float().mean()) == pytest.approx(0.1, abs=0.02)
    default = draw_mask(split, b.info, parse_missing("mnar-class:0.5")[0], 0)  # first half of the classes, lo 0
    first_half = split.target < 2
    assert default[~first_half].all() and (1 - default[first_half].float().mean()) == pytest.approx(0.5, abs=0.03)


def test_mnar_by_value_removes_the_weakest_signals():
    b = vector_bundle(m=6, n=1000)
    split = b.splits["test"]
    strength = signal_strength(split, b.info)
    assert torch.allclose(strength[:, 0], split.inputs["v0"].double().pow(2).mean(1).sqrt())
    mask = draw_mask(split, b.info, parse_missing("mnar-value:0.3")[0], 0)
    single = mask.sum(1) == 1  # the rows that may have had one modality restored (all six among the weakest)
    assert single.sum() <= 25  # ≈ 6·0.3⁵·0.7 + 0.3⁶ of the rows
    for i in range(6):
        gone = ~mask[:, i]
        assert 300 - single.sum() <= gone.sum() <= 300  # round(0.3 · 1000), less the restored entries
        assert strength[gone, i].max() <= strength[~gone & ~single, i].min()  # exactly the weakest 30 %
    assert torch.equal(mask, draw_mask(split, b.info, parse_missing("mnar-value:0.3")[0], 0))


def test_signal_strength_of_sequences_and_texts(make_bundle):
    b = make_bundle(n=12)
    split = b.splits["train"]
    s = signal_strength(split, b.info)
    j = 0
    ln = int(split.lengths["seq"][j])
    frames = split.inputs["seq"][j, :ln].double()
    assert s[j, 2] == pytest.approx(float(frames.pow(2).sum() / (ln * 4)) ** 0.5)
    assert torch.equal(s[:, 3], split.lengths["txt"].double())  # a text's signal: its number of tokens


def test_subsets_expand_to_every_non_empty_subset_for_any_m():
    b = vector_bundle(m=6)
    specs = expand(parse_missing("subsets"), b.info.modality_names)
    assert len(specs) == 2 ** 6 - 1 and specs[0].label == "subset:v0" and specs[-1].label == "subset:" + "+".join(
        f"v{i}" for i in range(6))
    masks = draw_masks(b.splits["test"], b.info, parse_missing("subsets"), 0)
    assert len(masks) == 63 and masks["subset:v1+v4"].float().mean(0).tolist() == [0, 1, 0, 0, 1, 0]


# --- mask files ---------------------------------------------------------------------------------------------


def test_mask_file_round_trip_and_refusals(tmp_path):
    b = vector_bundle(m=6, n=50)
    split = b.splits["test"]
    masks = draw_masks(split, b.info, parse_missing_grid(["mcar:0.25,0.5", "exclusive"]), 7)
    path = save_masks(tmp_path / "masks.npz", masks, modality_names=b.info.modality_names, split="test", seed=7,
                      dataset="vec6")
    with np.load(path, allow_pickle=False) as z:
        assert z["mask0"].shape == (50, 1) and z["mask0"].dtype == np.uint8  # packed bits: 6 modalities in a byte
    back, meta = load_masks(path, n=50, modality_names=b.info.modality_names)
    assert list(back) == ["mcar:0.25", "mcar:0.5", "exclusive"] and meta["mask_seed"] == 7
    assert all(torch.equal(back[k], masks[k]) for k in masks)
    assert meta["realised_missing"]["exclusive"] == pytest.approx(5 / 6)
    with pytest.raises(MissingSpecError, match=r"masks.npz: masks of 50 samples × 6 modalities, the split has 60"):
        load_masks(path, n=60, modality_names=b.info.modality_names)
    with pytest.raises(MissingSpecError, match=r"masks made for modalities \(v0, v1, v2, v3, v4, v5\), the data "
                                               r"has \(a, b\)"):
        load_masks(path, n=50, modality_names=("a", "b"))
    with pytest.raises(MissingSpecError, match="no such mask file"):
        load_masks(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(MissingSpecError, match="junk.npz: not a mask file"):
        load_masks(tmp_path / "junk.npz")
    np.savez(tmp_path / "bad.npz", meta=np.array('{"specs": ["mcar:0.5"], "modalities": ["a", "b"], "n": 4}'),
             mask0=np.zeros((3, 1), np.uint8))
    with pytest.raises(MissingSpecError, match=r"setting 'mcar:0.5' has shape \(3, 1\), expected a packed \(4, 2\)"):
        load_masks(tmp_path / "bad.npz")


# --- evaluation under masks: the toggles' code path ---------------------------------------------------------


def test_metrics_under_masks_recombine_one_encoding(pid_bundle, tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg.model, pid_bundle.info)
    split, names = pid_bundle.splits["test"], pid_bundle.info.modality_names
    enc = encode_split(model, split, with_latents=False)
    masks = draw_masks(split, pid_bundle.info, parse_missing_grid(["subsets", "mcar:0,0.5"]), 0)
    table = metrics_under_masks(enc, masks, "single-label")
    # a fixed subset is exactly the subset table (same recombination of the per-modality logits)
    subsets = metrics_from_encoded(enc, names, "single-label")
    for name, row in subsets.items():
        assert table["subset:" + name] == row
    assert table["mcar:0"] == subsets["+".join(names)]
    # mcar:0.5 equals predicting each sample from its own present modalities (the mean of their logits)
    m = masks["mcar:0.5"]
    logits = (enc.logits_mod * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    acc = float((logits.argmax(1) == enc.target).float().mean())
    assert table["mcar:0.5"]["accuracy"] == pytest.approx(acc)
    # never a zero-filled input: the model sees the same inputs whatever the mask (one encoding for all)
    with pytest.raises(MissingSpecError, match="shape"):
        metrics_under_masks(enc, {"x": m[:5]}, "single-label")


def test_apply_mask_zeroes_removed_entries_and_cannot_add_any(make_bundle):
    b = make_bundle(n=10)
    split = b.splits["train"]
    mask = split.mask.clone()
    mask[0, 2] = False
    mask[1, 0] = False
    out = apply_mask(split, mask)
    assert torch.equal(out.mask, mask) and out.inputs["seq"][0].abs().sum() == 0 and out.lengths["seq"][0] == 1
    assert out.inputs["vec"][1].abs().sum() == 0 and torch.equal(out.inputs["vec"][2:], split.inputs["vec"][2:])
    assert split.inputs["seq"][0].abs().sum() > 0  # the original split is untouched
    with pytest.raises(MissingSpecError, match="only remove"):
        apply_mask(out, split.mask)
    both = concat_splits(split, out)
    assert len(both) == 20 and torch.equal(both.mask[10:], mask) and both.ids[10:] == split.ids


# --- training with incomplete samples -----------------------------------------------------------------------


def with_pool(bundle: DatasetBundle, n_pool: int = 30) -> DatasetBundle:
    """A copy with a `pool` split of incomplete samples (each has one modality, like AV-Digits' pool)."""
    bundle = copy.deepcopy(bundle)
    pool = copy.deepcopy(bundle.splits["train"].subset(torch.arange(n_pool)))
    m = pool.mask.shape[1]
    mask = torch.zeros_like(pool.mask)
    mask[torch.arange(n_pool), torch.arange(n_pool) % m] = True
    bundle.splits["pool"] = apply_mask(pool, mask)
    bundle.splits["pool"].ids = [f"pool{j}" for j in range(n_pool)]
    return bundle


def test_train_missing_is_drawn_once_with_the_data_seed(pid_bundle, make_cfg):
    cfg = make_cfg(**{"data.train_missing": "mcar:0.4", "data.seed": 3})
    t = Trainer(cfg, pid_bundle)
    t.setup()
    train = pid_bundle.splits["train"]
    expected = draw_mask(train, pid_bundle.info, parse_missing("mcar:0.4")[0], 3)
    assert torch.equal(t.train_split.mask, expected) and not expected.all()
    assert t.train_split.inputs["m0"][~expected[:, 0]].abs().sum() == 0  # stored as missing data is stored
    # the same labeled indices as without train_missing (the labels do not depend on the masks)
    t0 = Trainer(make_cfg(**{"data.seed": 3}), pid_bundle)
    t0.setup()
    assert torch.equal(t.labeled_idx, t0.labeled_idx)
    for method in ("robult", "supervised", "moddrop", "self-training", "robult-st"):
        final = Trainer(cfg.replace(method=method, **{"train.epochs": 1}), pid_bundle).run()
        assert type(final).__name__ == "Finished", getattr(final, "message", "")


@pytest.mark.parametrize("value, message", [
    ("mcar:1.2", "data.train_missing: mcar:1.2: a rate must be in [0, 1)"),
    ("mcar:0.1,0.2", "give one setting (not a grid"),
    ("subsets", "give one setting"),
    ("blur:0.3", "unknown mechanism 'blur'"),
])
def test_train_missing_errors_name_the_field(make_cfg, value, message):
    with pytest.raises(ConfigError) as e:
        make_cfg(**{"data.train_missing": value})
    assert message in str(e.value)


def test_train_missing_unknown_modality_is_refused_at_setup(pid_bundle, make_cfg):
    final = Trainer(make_cfg(**{"data.train_missing": "mcar:audio=0.5"}), pid_bundle).run()
    assert final.kind == "config" and "data.train_missing" in final.message and "'audio'" in final.message


def test_train_pool_adds_unlabeled_incomplete_samples(pid_bundle, make_cfg):
    bundle = with_pool(pid_bundle)
    n = len(bundle.splits["train"])
    t = Trainer(make_cfg(**{"data.train_pool": True}), bundle)
    t.setup()
    plain = Trainer(make_cfg(), bundle)
    plain.setup()
    assert len(t.train_split) == n + 30 and torch.equal(t.train_split.mask[n:], bundle.splits["pool"].mask)
    assert torch.equal(t.labeled_idx, plain.labeled_idx) and not t.is_labeled[n:].any()  # the pool is unlabeled
    seen = torch.cat(t.sampler.epoch(0))
    assert (seen >= n).sum() == 30  # one pass over the unlabeled set, pool included
    final = Trainer(make_cfg(**{"data.train_pool": True}), bundle).run()
    assert type(final).__name__ == "Finished", getattr(final, "message", "")
    missing = Trainer(make_cfg(**{"data.train_pool": True}), pid_bundle).run()
    assert missing.kind == "config" and "data.train_pool" in missing.message and "no pool split" in missing.message


# --- the losses on incomplete rows --------------------------------------------------------------------------


def test_supervised_loss_on_incomplete_rows_by_hand():
    # M = 3, C = 2. Row 0 (y = 0) has m0 and m2: CE ln(4/3) and ln2; m1 absent (its ln4 must not count); no S.
    # Row 1 (y = 1) is complete: m0 [0, ln3] → ln(4/3), m1 [0, 0] → ln2, m2 [ln3, 0] → ln4; S: [0, 0] → ln2.
    a, z, bb = [LN3, 0.0], [0.0, 0.0], [0.0, LN3]
    logits_mod = torch.tensor([[a, bb, z], [bb, z, a]])
    mask = torch.tensor([[True, False, True], [True, True, True]])
    got = supervised_loss(logits_mod, mask, torch.tensor([0, 1]), torch.ones(2), "single-label",
                          torch.tensor([[LN3, 0.0], [0.0, 0.0]]), torch.tensor([False, True]))
    want = ((math.log(4 / 3) + LN2) / 2 + (math.log(4 / 3) + LN2 + LN4) / 3 + LN2) / 2
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_pu_loss_with_an_incomplete_candidate_and_no_incomplete_anchor_by_hand():
    # anchor 0: s = (1, 0), complete; anchor 1 is incomplete (no S): skipped. τ = 1.
    # candidates: sample 0: z⁰ = (1, 0), z¹ = (0, 1); sample 1: z⁰ = (1, 0), z¹ absent (its (−1, 0) must not count).
    # sims of anchor 0 over the present entries: 1, 0, 1 → log-softmax 1 − L, −L, 1 − L with L = log(2e + 1).
    # weights: own sample 1 (both modalities), sample 1 weight 0.5 → w̄ = (0.4, 0.4, 0.2).
    # L_PU = −(0.4 (1 − L) + 0.4 (−L) + 0.2 (1 − L)) = L − 0.6.
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [-1.0, 0.0]]], requires_grad=True)
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    cand_mask = torch.tensor([[True, True], [True, False]])
    w = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    got = pu_contrastive_loss(anchors, z, cand_mask, w, 1.0, torch.tensor([True, False]))
    assert got.item() == pytest.approx(math.log(2 * math.e + 1) - 0.6, abs=1e-6)
    got.backward()
    assert z.grad[1, 1].abs().sum() == 0 and anchors.grad[1].abs().sum() == 0  # absent entry, invalid anchor
    assert z.grad[0].abs().sum() > 0
    # no complete sample at all: zero, not NaN
    none = pu_contrastive_loss(anchors, z, cand_mask, w, 1.0, torch.tensor([False, False]))
    assert none.item() == 0.0


def test_reconstruction_loss_on_present_modalities_only_by_hand():
    # row 0: m0 target (1, 1) vs (0, 0): ‖·‖²/d_h = 1; m1 absent (its error 50 must not count);
    # row 1: m0 (0, 0) vs (2, 0): 2; m1 (1, 0) vs (1, 0): 0. Sum 3 over B = 2 rows: 1.5.
    target = torch.tensor([[[1.0, 1.0], [10.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]])
    rec = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [1.0, 0.0]]])
    got = reconstruction_loss(target, rec, torch.tensor([[True, False], [True, True]]))
    assert got.item() == pytest.approx(1.5)


def test_soft_pu_points_use_present_modalities_for_incomplete_samples_by_hand():
    s_n = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_n = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[0.6, 0.8], [0.0, -1.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    points, logits = soft_pu_points(s_n, z_n, mask, torch.tensor([True, False]),
                                    torch.tensor([[1.0, 0.0], [5.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 2.0]]))
    # sample 0 is complete: its S and c_0(S); sample 1 has only m0: norm(z⁰) = (0.6, 0.8), its present logits
    assert torch.allclose(points, torch.tensor([[1.0, 0.0], [0.6, 0.8]]))
    assert torch.equal(logits, torch.tensor([[1.0, 0.0], [0.0, 2.0]]))


def _incomplete_batch(trainer, complete: bool):
    """A training batch where every sample misses m1 (and, unless `complete`, no sample has all modalities)."""
    idx = trainer.sampler.epoch(0)[0]
    batch = trainer._step_batch(idx)
    batch.mask = batch.mask.clone()
    batch.mask[:, 1] = False
    if complete:
        batch.mask[:4] = True
    for name in batch.inputs:
        batch.inputs[name] = batch.inputs[name].clone().requires_grad_(True)
    trainer._global_mask = batch.mask  # what _step_batch records (moddrop draws on it)
    return batch


@pytest.mark.parametrize("method", ["robult", "robult-st", "robult-supcon", "supervised", "moddrop",
                                    "self-training"])
def test_no_complete_sample_no_nan_and_no_gradient_through_s(pid_bundle, make_cfg, method):
    # every sample is labeled so the supervised term is there too; self-training past its warm-up
    cfg = make_cfg(method=method, **{"data.label_fraction": 1.0, "loss.st_warmup": 0.0})
    t = Trainer(cfg, pid_bundle)
    t.setup()
    batch = _incomplete_batch(t, complete=False)
    stats = {"kappa_hist": torch.zeros(20), "kappa_sum": 0.0, "kappa_n": 0, "pl_correct": 0, "pl_n": 0}
    losses = t.compute_losses(batch, epoch=1, stats=stats)
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    if "pu" in losses:
        assert losses["pu"].item() == 0.0  # no anchor: S needs every modality
    t.model.zero_grad(set_to_none=True)
    losses["total"].backward()
    # f_0 and c_0 see no complete sample, so they get no gradient at all
    for p in list(t.model.fusion.parameters()) + list(t.model.fusion_head.parameters()):
        assert p.grad is None or p.grad.abs().sum() == 0
    # the absent modality's input gets no gradient, the present ones do
    assert batch.inputs["m1"].grad is None or batch.inputs["m1"].grad.abs().sum() == 0
    assert batch.inputs["m0"].grad.abs().sum() > 0


def test_gradients_only_where_they_belong_with_mixed_rows(pid_bundle, make_cfg):
    t = Trainer(make_cfg(method="robult", **{"data.label_fraction": 1.0}), pid_bundle)
    t.setup()
    batch = _incomplete_batch(t, complete=True)  # rows 0..3 complete, the rest miss m1
    stats = {"kappa_hist": torch.zeros(20), "kappa_sum": 0.0, "kappa_n": 0, "pl_correct": 0, "pl_n": 0}
    losses = t.compute_losses(batch, epoch=1, stats=stats)
    assert losses["pu"].item() > 0 and torch.isfinite(losses["total"])
    losses["total"].backward()
    g1 = batch.inputs["m1"].grad
    assert g1[4:].abs().sum() == 0 and g1[:4].abs().sum() > 0  # m1 gets gradient from complete rows only
    assert batch.inputs["m0"].grad[4:].abs().sum() > 0  # incomplete rows still train their present modality
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.model.fusion.parameters())


@pytest.mark.parametrize("method", ["robult", "robult-st", "moddrop", "self-training"])
def test_an_absent_modality_input_has_no_influence_on_any_loss(pid_bundle, make_cfg, method):
    # κ and the pseudo-class of an incomplete sample come from its present modalities, never from an S computed
    # over an absent input: whatever sits in the absent slot, every loss is the same
    t = Trainer(make_cfg(method=method, **{"loss.st_warmup": 0.0}), pid_bundle)
    t.setup()
    batch = _incomplete_batch(t, complete=True)
    with torch.no_grad():  # every class has a prototype, so κ of the unlabeled samples is not simply 0
        t.memory.protos.copy_(torch.nn.functional.normalize(torch.randn_like(t.memory.protos), dim=-1))
        t.memory.seen[:] = True
    assert (~batch.labeled[4:]).sum() > 4
    memory = copy.deepcopy(t.memory.state_dict())
    gen = t.gen.get_state()

    def losses():
        t.memory.load_state_dict(memory)
        t.gen.set_state(gen)
        torch.manual_seed(0)
        stats = {"kappa_hist": torch.zeros(20), "kappa_sum": 0.0, "kappa_n": 0, "pl_correct": 0, "pl_n": 0}
        return {k: v.item() for k, v in t.compute_losses(batch, epoch=1, stats=stats).items()}, stats
    before, stats_before = losses()
    with torch.no_grad():
        batch.inputs["m1"][4:] = torch.randn_like(batch.inputs["m1"][4:]) * 5
    after, stats_after = losses()
    assert after == pytest.approx(before, rel=1e-6, abs=1e-7)
    assert torch.equal(stats_after["kappa_hist"], stats_before["kappa_hist"])
    assert stats_before["kappa_sum"] > 0 or method in ("moddrop", "self-training")  # those use no κ


def test_the_mnar_class_default_written_out_names_the_classes_it_chooses():
    """The explorer's default mnar-class spec names its classes (it used to say "0.8/0.1", leaving the user to
    guess which classes lose their modalities); the written-out spec draws the very mask the bare one does."""
    from robult_engine.data.feature_synth import make_feature_synth
    from robult_engine.missing import default_mnar_classes, draw_mask, mnar_class_spec, parse_missing
    assert default_mnar_classes("single-label", ("a", "b", "c", "d", "e")) == ("a", "b")
    assert default_mnar_classes("single-label", ("only",)) == ("only",)
    assert default_mnar_classes("regression", ("score",)) == ("negative",)
    assert mnar_class_spec("single-label", ("0", "1", "2", "3")) == "mnar-class:0.8/0.1@0+1"
    assert mnar_class_spec("single-label", ("cat one", "dog", "x", "y")) == "mnar-class:0.8/0.1@0+dog"
    for task in ("single-label", "multi-label", "regression"):
        b = make_feature_synth(n_train=200, task=task, labels=6, dim=8)
        split = b.splits["test"]
        bare = draw_mask(split, b.info, parse_missing("mnar-class:0.8/0.1")[0], 3)
        named = draw_mask(split, b.info, parse_missing(mnar_class_spec(task, b.info.class_names))[0], 3)
        assert torch.equal(bare, named), task
