"""model.input_norm: the feature-wise input standardisation of the vector and sequence encoders (docs/method.md,
"Input normalisation"): fitted on the training split's present samples only, carried by checkpoints, the old
per-sample LayerNorm kept for configs written before the field, bad values refused."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint, payload_digest, save_checkpoint
from robult_engine.config import ConfigError, RunConfig
from robult_engine.data import DatasetBundle, DatasetInfo, ModalitySpec, SplitData
from robult_engine.events import Finished
from robult_engine.models import build_model
from robult_engine.models.encoders import FeatureStandardise, VectorEncoder, feature_moments
from robult_engine.models.robult import RobultModel
from robult_engine.trainer import Trainer

SMALL = {"model.d_h": 16, "model.d_z": 8, "model.d_u": 8, "model.d_hidden": 16}


def _split(vec, seq, seq_len, mask, target) -> SplitData:
    return SplitData(inputs={"vec": vec, "seq": seq}, lengths={"seq": seq_len}, mask=mask, target=target,
                     ids=[f"s{i}" for i in range(len(target))])


def _shifted_bundle(n: int = 64) -> tuple[DatasetBundle, torch.Tensor, torch.Tensor]:
    """A vector (3,) and a sequence (5, 2) modality. Train: a third of the samples lack each modality (zero-filled,
    length 1); the present ones have feature means around 100 / -40 and a sequence whose padding frames hold 1e6
    (never a valid frame). Val and test: values around -1e4, far from anything in train. Returns the bundle and
    the train split's present vectors and valid frames, from which the statistics must come."""
    g = torch.Generator().manual_seed(3)
    info = DatasetInfo("shifted", (ModalitySpec("vec", "vector", (3,)), ModalitySpec("seq", "sequence", (5, 2))),
                       "single-label", ("a", "b"))

    def make(k: int, offset: float, scale: float, drop: bool) -> SplitData:
        vec = torch.randn(k, 3, generator=g) * torch.tensor([1.0, 5.0, 0.1]) * scale + torch.tensor([100., -40., 3.])
        seq_len = torch.randint(1, 6, (k,), generator=g)
        valid = torch.arange(5)[None, :] < seq_len[:, None]
        seq = torch.where(valid.unsqueeze(-1), torch.randn(k, 5, 2, generator=g) * 2 + 7, torch.full((k, 5, 2), 1e6))
        vec, seq = vec + offset, seq + offset
        mask = torch.ones(k, 2, dtype=torch.bool)
        if drop:
            mask[0::3, 0] = False
            mask[1::3, 1] = False
        vec = vec * mask[:, :1]
        seq = seq * mask[:, 1:, None]
        seq_len = torch.where(mask[:, 1], seq_len, torch.ones_like(seq_len))
        return _split(vec, seq, seq_len, mask, torch.arange(k) % 2)

    train = make(n, 0.0, 1.0, drop=True)
    bundle = DatasetBundle(info, {"train": train, "val": make(16, -1e4, 50.0, False),
                                  "test": make(16, -1e4, 50.0, False)})
    present_vec = train.inputs["vec"][train.mask[:, 0]]
    valid = torch.arange(5)[None, :] < train.lengths["seq"][:, None]
    frames = train.inputs["seq"][train.mask[:, 1].unsqueeze(1) & valid]  # (valid frames of present samples, 2)
    return bundle, present_vec, frames


def _cfg(**changes) -> RunConfig:
    return RunConfig().replace(**{"data.dataset": "shifted", "data.label_fraction": 0.5, **SMALL,
                                  "train.epochs": 1, "train.batch_size": 16, "train.labeled_per_batch": 4,
                                  "train.patience": 0, "train.device": "cpu", **changes}).validate()


@pytest.mark.parametrize("sequence_encoder", ["conv", "gru"])
def test_statistics_come_from_present_training_samples_only(sequence_encoder):
    bundle, present_vec, frames = _shifted_bundle()
    t = Trainer(_cfg(**{"model.sequence_encoder": sequence_encoder}), bundle)
    t.setup()
    vec_norm, seq_norm = t.model.encoders["vec"].net[0], t.model.encoders["seq"].norm
    assert isinstance(vec_norm, FeatureStandardise) and isinstance(seq_norm, FeatureStandardise)
    for norm, rows in ((vec_norm, present_vec), (seq_norm, frames)):
        ref = rows.double()
        torch.testing.assert_close(norm.mean, ref.mean(0).float())
        torch.testing.assert_close(norm.std, ref.std(0, unbiased=False).float())
    # zero-filled missing samples, sequence padding (1e6) or the shifted val/test data would move these far off
    assert 90 < float(vec_norm.mean[0]) < 110 and float(seq_norm.mean.max()) < 10
    # and a standardised present training sample is now of unit scale
    z = vec_norm(present_vec)
    assert float(z.mean(0).abs().max()) < 1e-4 and float((z.std(0, unbiased=False) - 1).abs().max()) < 1e-4


def test_streaming_moments_match_the_direct_ones_and_bound_the_chunk():
    """Chunked float64 moments equal the one-shot ones, also for a feature with a large mean and a small spread
    (year-like) and for a sequence whose chunks hold a single sample."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64) * torch.tensor([0.01, 1., 30.]) + \
        torch.tensor([1990., 0., -7.])
    present = torch.rand(500, generator=g) > 0.2
    mean, var, count = feature_moments(x.float(), present, chunk_elements=9)  # three samples per chunk
    ref = x.float()[present].double()
    assert count == int(present.sum())
    torch.testing.assert_close(mean, ref.mean(0))
    torch.testing.assert_close(var, ref.var(0, unbiased=False))
    seq, lens = torch.randn(40, 6, 2, generator=g), torch.randint(1, 7, (40,), generator=g)
    mean, var, count = feature_moments(seq, torch.ones(40, dtype=torch.bool), lens, chunk_elements=1)
    rows = seq[torch.arange(6)[None, :] < lens[:, None]].double()
    assert count == rows.shape[0]
    torch.testing.assert_close(mean, rows.mean(0))
    torch.testing.assert_close(var, rows.var(0, unbiased=False))


def test_a_constant_or_absent_feature_is_centred_not_blown_up():
    bundle, _, _ = _shifted_bundle()
    train = bundle.splits["train"]
    train.inputs["vec"][:, 2] = 5.0 * train.mask[:, 0]  # constant over the present samples
    model = build_model(_cfg().model, bundle.info)
    model.fit_input_norm(train)
    norm = model.encoders["vec"].net[0]
    assert float(norm.mean[2]) == pytest.approx(5.0) and float(norm.std[2]) == 1.0
    nobody = SplitData(inputs=train.inputs, lengths=train.lengths, mask=torch.zeros_like(train.mask),
                       target=train.target)
    model = build_model(_cfg().model, bundle.info)
    assert model.fit_input_norm(nobody) == {"vec": 0, "seq": 0}
    assert torch.equal(model.encoders["vec"].net[0].std, torch.ones(3))  # no data: stays the identity


def test_huge_but_finite_feature_values_are_standardised_in_float64(make_cfg, pid_bundle):
    """A feature at 3e38 overflows a per-sample LayerNorm's variance in float32 (tests/engine/test_trainer.py);
    fitted in float64, the feature-wise norm centres it and the run trains."""
    import dataclasses
    bad = dataclasses.replace(pid_bundle, splits=dict(pid_bundle.splits))
    train = bad.splits["train"].subset(torch.arange(len(bad.splits["train"])))
    train.inputs["m0"][:] = 3e38
    bad.splits["train"] = train
    final = Trainer(make_cfg(**{"train.epochs": 1}), bad).run()
    assert isinstance(final, Finished), final


def _difference_bundle(n: int = 800) -> DatasetBundle:
    """One 2-feature view whose class is whether a + b > 0 (a, b independent standard normals). A per-sample
    LayerNorm over two features keeps only sign(a − b), which is independent of a + b: the class is lost."""
    g = torch.Generator().manual_seed(1)
    info = DatasetInfo("two-features", (ModalitySpec("x", "vector", (2,)),), "single-label", ("neg", "pos"))

    def make(k: int) -> SplitData:
        x = torch.randn(k, 2, generator=g)
        return SplitData(inputs={"x": x}, lengths={}, mask=torch.ones(k, 1, dtype=torch.bool),
                         target=(x.sum(1) > 0).long(), ids=[str(i) for i in range(k)])
    return DatasetBundle(info, {"train": make(n), "val": make(300), "test": make(300)})


def test_feature_norm_learns_a_two_feature_view_that_layer_norm_destroys():
    bundle = _difference_bundle()
    scores = {}
    for norm in ("feature", "layer"):
        cfg = RunConfig().replace(**{"method": "supervised", "data.dataset": "two-features",
                                     "data.label_fraction": 1.0, **SMALL, "model.dropout": 0.0,
                                     "model.input_norm": norm, "train.epochs": 4, "train.batch_size": 32,
                                     "train.labeled_per_batch": 32, "train.patience": 0,
                                     "train.device": "cpu"}).validate()
        final = Trainer(cfg, bundle).run()
        assert isinstance(final, Finished), final
        scores[norm] = final.best_score
    assert scores["feature"] > 0.9, scores
    assert scores["layer"] < 0.65, scores


def test_the_statistics_travel_with_the_checkpoint_and_are_not_refitted_on_resume(tmp_path, monkeypatch):
    bundle, _, _ = _shifted_bundle()
    cfg = _cfg(**{"train.epochs": 2})
    t = Trainer(cfg, bundle, out_dir=tmp_path / "run")
    t.setup()
    t._loop(0.0)  # ends with the best epoch's weights loaded, as best.pt holds them
    trained = {k: v.clone() for k, v in t.model.state_dict().items()}
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    for key in ("encoders.vec.net.0.mean", "encoders.vec.net.0.std", "encoders.seq.norm.mean",
                "encoders.seq.norm.std"):
        torch.testing.assert_close(ckpt.model_state[key], trained[key], rtol=0, atol=0)
    model = model_from_checkpoint(ckpt)
    assert float(model.encoders["vec"].net[0].mean[0]) > 90  # the fitted values, not the identity
    val = bundle.splits["val"]
    t.model.eval()
    with torch.no_grad():
        a = t.model(val.inputs, val.lengths, val.mask).logits
        b = model(val.inputs, val.lengths, val.mask).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    # a resume keeps the checkpoint's statistics: fitting again (on whatever data) is never called
    calls = []
    monkeypatch.setattr(RobultModel, "fit_input_norm", lambda self, split: calls.append(split) or {})
    resumed = Trainer(cfg.replace(**{"train.epochs": 3}), bundle, out_dir=tmp_path / "run",
                      resume_from=tmp_path / "run" / "last.pt")
    resumed.setup()
    assert calls == []
    torch.testing.assert_close(resumed.model.encoders["vec"].net[0].mean, trained["encoders.vec.net.0.mean"])


def _without_input_norm(cfg: RunConfig) -> dict:
    d = json.loads(cfg.to_json())
    del d["model"]["input_norm"]
    return d


def test_a_config_written_before_input_norm_keeps_the_layer_norm():
    assert RunConfig().model.input_norm == "feature"
    legacy = _without_input_norm(RunConfig())
    assert RunConfig.from_dict(legacy).model.input_norm == "layer"
    older = {**legacy, "model": {k: v for k, v in legacy["model"].items() if k != "encoders"}}
    assert RunConfig.from_dict(older).model.input_norm == "layer"  # from before model.encoders, too
    assert RunConfig.from_dict({"model": {"d_h": 32}}).model.input_norm == "feature"  # hand-written, partial
    assert RunConfig.from_json(RunConfig().to_json()) == RunConfig()
    layer = RunConfig.from_json(RunConfig().replace(**{"model.input_norm": "layer"}).to_json())
    assert layer.model.input_norm == "layer"


def test_an_old_checkpoint_loads_and_predicts_as_before(tmp_path, four_kind_bundle):
    """A checkpoint whose config has no input_norm (written before it existed) rebuilds the per-sample LayerNorm
    encoders, loads strictly and gives the same outputs as the model that wrote it."""
    info = four_kind_bundle.info
    cfg = RunConfig().replace(**{"data.dataset": "four-kinds", **SMALL, "model.input_norm": "layer"}).validate()
    torch.manual_seed(0)
    old = build_model(cfg.model, info).eval()
    assert isinstance(old.encoders["vec"].net[0], nn.LayerNorm) and isinstance(old.encoders["seq"].norm, nn.LayerNorm)
    path = tmp_path / "old.pt"
    save_checkpoint(path, model_state=old.state_dict(), config=cfg, info=info,
                    labeled_indices=torch.arange(3), fingerprint=four_kind_bundle.fingerprint())
    payload = torch.load(path, weights_only=True)
    payload["config"] = json.dumps(_without_input_norm(cfg), indent=2, sort_keys=True)  # as an old version wrote it
    del payload["digest"]
    payload["digest"] = payload_digest(payload)
    torch.save(payload, path)
    ckpt = load_checkpoint(path)
    assert ckpt.config.model.input_norm == "layer"
    model = model_from_checkpoint(ckpt)
    assert isinstance(model.encoders["vec"].net[0], nn.LayerNorm)
    s = four_kind_bundle.splits["test"]
    with torch.no_grad():
        torch.testing.assert_close(model(s.inputs, s.lengths, s.mask).logits, old(s.inputs, s.lengths, s.mask).logits,
                                   rtol=0, atol=0)


def test_an_encoder_factory_of_your_own_keeps_its_layout():
    """VectorEncoder called as custom factories call it (no input_norm) builds the LayerNorm it always had, so
    their checkpoints keep loading."""
    assert isinstance(VectorEncoder(4, 8, 0.0).net[0], nn.LayerNorm)
    assert isinstance(VectorEncoder(4, 8, 0.0, "none").net[0], nn.Identity)


def test_a_feature_standardise_inside_an_encoder_of_your_own_is_fitted():
    bundle, present_vec, _ = _shifted_bundle()
    model = build_model(_cfg(**{"model.input_norm": "none"}).model, bundle.info)
    assert model.fit_input_norm(bundle.splits["train"]) == {}  # nothing to fit
    model.encoders["vec"] = nn.Sequential(FeatureStandardise(3), nn.Linear(3, 16))  # as a factory would build it
    assert model.fit_input_norm(bundle.splits["train"]) == {"vec": len(present_vec)}
    torch.testing.assert_close(model.encoders["vec"][0].mean, present_vec.double().mean(0).float())


@pytest.mark.parametrize("value", ["batch", "", "Feature"])
def test_an_unknown_input_norm_is_refused_by_name(value):
    with pytest.raises(ConfigError, match=r"model\.input_norm: one of feature, layer, none"):
        RunConfig().replace(**{"model.input_norm": value}).validate()
    with pytest.raises(ConfigError, match=r"model\.input_norm"):
        RunConfig.from_dict({"model": {"input_norm": value}}).validate()
    with pytest.raises(ConfigError, match=r"model\.input_norm: expected a str"):
        RunConfig.from_dict({"model": {"input_norm": 1}}).validate()
