"""Config: JSON round trip, a clear ConfigError naming the field for every invalid value, unknown fields refused."""
from __future__ import annotations

import dataclasses
import json

import pytest

from robult_engine.config import METHODS, ConfigError, DataConfig, RunConfig


def test_defaults_are_valid_and_round_trip():
    cfg = RunConfig()
    assert cfg.validate() is cfg
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_json_round_trip_of_non_defaults():
    cfg = RunConfig().replace(**{
        "method": "robult-supcon", "seed": 7, "data.dataset": "pid-synth", "data.modalities": ("m2", "m0"),
        "data.label_fraction": 0.2, "model.d_z": 24, "model.fusion": "gated", "model.sequence_encoder": "gru",
        "loss.kernel": "laplacian", "loss.bandwidth": 0.3, "loss.tau": 0.07, "train.epochs": 4,
        "train.device": "cpu"})
    text = cfg.to_json()
    back = RunConfig.from_json(text)
    assert back == cfg and isinstance(back.data.modalities, tuple)
    assert json.loads(text)["data"]["modalities"] == ["m2", "m0"]
    assert RunConfig.from_dict(json.loads(text)) == cfg
    assert RunConfig.from_json(json.dumps({"method": "moddrop"})) == RunConfig(method="moddrop")  # partial files


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().train.epochs = 3


@pytest.mark.parametrize("key, value, field", [
    ("method", "robust", "method"),
    ("data.label_fraction", -0.05, "data.label_fraction"),
    ("data.label_fraction", 0.0, "data.label_fraction"),
    ("data.label_fraction", 1.5, "data.label_fraction"),
    ("data.dataset", " ", "data.dataset"),
    ("data.modalities", ("m0", "m0"), "data.modalities"),
    ("data.train_modality_dropout", 1.0, "data.train_modality_dropout"),
    ("data.synth_n_train", 5, "data.synth_n_train"),
    ("data.synth_unique_bits", 9, "data.synth_unique_bits"),
    ("data.synth_noise", -1.0, "data.synth_noise"),
    ("model.d_h", 0, "model.d_h"),
    ("model.d_z", 2.5, "model.d_z"),
    ("model.dropout", 1.0, "model.dropout"),
    ("model.classifier", "transformer", "model.classifier"),
    ("model.fusion", "attention?", "model.fusion"),
    ("model.sequence_encoder", "lstm", "model.sequence_encoder"),
    ("model.text_buckets", 4, "model.text_buckets"),
    ("loss.tau", 0.0, "loss.tau"),
    ("loss.tau", -0.1, "loss.tau"),
    ("loss.lambda_pu", -1.0, "loss.lambda_pu"),
    ("loss.lambda_rec", -1.0, "loss.lambda_rec"),
    ("loss.kernel", "gaussian", "loss.kernel"),
    ("loss.bandwidth", 0.0, "loss.bandwidth"),
    ("loss.prototype_momentum", 1.0, "loss.prototype_momentum"),
    ("loss.st_threshold", 0.0, "loss.st_threshold"),
    ("loss.moddrop_p", 1.0, "loss.moddrop_p"),
    ("train.epochs", 0, "train.epochs"),
    ("train.epochs", 2.5, "train.epochs"),
    ("train.batch_size", 1, "train.batch_size"),
    ("train.labeled_per_batch", 0, "train.labeled_per_batch"),
    ("train.labeled_per_batch", 65, "train.labeled_per_batch"),
    ("train.lr", 0.0, "train.lr"),
    ("train.weight_decay", -1e-4, "train.weight_decay"),
    ("train.warmup_frac", 1.0, "train.warmup_frac"),
    ("train.grad_clip", -1.0, "train.grad_clip"),
    ("train.patience", -1, "train.patience"),
    ("train.device", "tpu", "train.device"),
])
def test_invalid_values_name_their_field(key, value, field):
    cfg = RunConfig().replace(**{key: value})  # replace builds, validate judges
    with pytest.raises(ConfigError) as ei:
        cfg.validate()
    assert str(ei.value).startswith(field + ":") or field in str(ei.value), str(ei.value)
    # the same value read from JSON gets the same error
    section, _, name = key.rpartition(".")
    d = {section: {name: list(value) if isinstance(value, tuple) else value}} if section else {name: value}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        RunConfig.from_dict(d).validate()


def test_modalities_empty_means_all():
    known = ("m0", "m1", "m2")
    RunConfig().validate(known)  # () = all modalities of the dataset
    with pytest.raises(ConfigError, match=r"data\.modalities: unknown modality 'audio'.*m0, m1, m2"):
        RunConfig().replace(**{"data.modalities": ("m0", "audio")}).validate(known)
    with pytest.raises(ConfigError, match=r"data\.modalities: duplicates"):
        RunConfig().replace(**{"data.modalities": ("m1", "m1")}).validate(known)


def test_modalities_explicit_known_subset_is_valid():
    RunConfig().replace(**{"data.modalities": ("m2", "m0")}).validate(("m0", "m1", "m2"))


def test_unknown_fields_are_refused():
    with pytest.raises(ConfigError, match="unknown field 'learning_rate'"):
        RunConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"config\.train: unknown field 'learning_rate'"):
        RunConfig.from_dict({"train": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown field model\.depth"):
        RunConfig().replace(**{"model.depth": 3})
    with pytest.raises(ConfigError, match="unknown section 'optim'"):
        RunConfig().replace(**{"optim.lr": 3})
    with pytest.raises(ConfigError, match=r"config\.loss: expected an object"):
        RunConfig.from_dict({"loss": [1, 2]})
    with pytest.raises(ConfigError, match="expected a JSON object"):
        RunConfig.from_json("[1, 2, 3]")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{method: robult}")


def test_every_method_is_valid():
    for m in METHODS:
        RunConfig(method=m).validate()
    assert len(set(METHODS)) == len(METHODS)
    assert {"robult", "robult-no-rec", "robult-supcon", "robult-no-pu", "supervised", "moddrop",
            "self-training"} <= set(METHODS), "the paper's methods and baselines (docs/method.md)"


@pytest.mark.parametrize("key, value", [
    ("data.label_fraction", "0.05"),
    ("train.lr", "fast"),
    ("loss.tau", None),
    ("data.modalities", "m0"),
])
def test_wrong_types_are_config_errors(key, value):
    """A value of the wrong type (e.g. a string in a hand-edited JSON file or `--set x=abc`) must be a ConfigError
    naming the field, not a TypeError from a comparison deep inside validate()."""
    section, _, name = key.partition(".")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RunConfig.from_dict({section: {name: value}}).validate()


def test_data_config_alone():
    DataConfig().validate()
    with pytest.raises(ConfigError, match="label_fraction"):
        DataConfig(label_fraction=2.0).validate(("a",))


def test_a_config_written_before_rec_routes_keeps_the_projector_route():
    """A whole loss section from a version before `rec_route` existed was trained with the "projector" route;
    a hand-written partial one gets the current default."""
    import json
    from robult_engine.config import _LEGACY_LOSS_FIELDS
    legacy = json.loads(RunConfig().to_json())
    legacy["loss"] = {k: v for k, v in legacy["loss"].items() if k in _LEGACY_LOSS_FIELDS}
    assert RunConfig.from_dict(legacy).loss.rec_route == "projector"
    assert RunConfig.from_dict(legacy).loss.rec_warmup == 0.0  # nor the L_rec warm-up, which came later
    assert RunConfig.from_dict({"loss": {"lambda_rec": 0.5}}).loss.rec_route == "full"
    assert RunConfig().loss.rec_route == "full"
    assert RunConfig.from_json(RunConfig().to_json()) == RunConfig()
