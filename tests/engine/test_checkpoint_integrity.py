"""Checkpoint integrity (robult_engine/checkpoint.py, robult_engine/trainer.py): a damaged, inflated or inconsistent
file ends in one CheckpointError that names the file and the problem, never a traceback and never weights that
differ from those written. Covers flipped bytes inside a tensor (the stored digest), zip bombs (declared sizes and
compression ratios checked before anything is unpacked), invalid dataset info or config, and damaged training
state in a resume file (the Trainer and `robult train --resume`, exit code 2)."""
from __future__ import annotations

import dataclasses
import json
import math
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robult_engine.checkpoint as checkpoint_mod
from robult_engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from robult_engine.data import DatasetInfo, ModalitySpec
from robult_engine.data.base import MODALITY_KINDS
from robult_engine.events import Failed, Finished
from robult_engine.models import build_model
from robult_engine.trainer import Trainer

from conftest import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, pid_bundle):
    """A run folder of one tiny epoch: best.pt (weights only) and last.pt (with the training state)."""
    out = tmp_path_factory.mktemp("run")
    final = Trainer(tiny_config(**{"train.epochs": 1}), pid_bundle, out_dir=out).run()
    assert isinstance(final, Finished), final
    return out


def member_span(path: Path, suffix: str) -> tuple[int, int]:
    """(offset, size) of the bytes of the archive member whose name ends with `suffix`."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def data_member_of(path: Path, offset: int) -> str:
    """The name of the data/ member whose bytes hold `offset`."""
    with zipfile.ZipFile(path) as z:
        names = [i.filename for i in z.infolist() if "/data/" in i.filename]
    for name in names:
        start, size = member_span(path, name)
        if start <= offset < start + size:
            return name
    raise AssertionError(f"offset {offset} is in no data/ member of {path}")


def save_like(path: Path, ck, **changes) -> Path:
    """Write a checkpoint through `save_checkpoint` with the fields of the loaded `ck`, some of them changed."""
    kw = dict(model_state=ck.model_state, config=ck.config, info=ck.info, labeled_indices=ck.labeled_indices,
              fingerprint=ck.fingerprint, memory_state=ck.memory_state, epoch=ck.epoch, metrics=ck.metrics,
              training_state=ck.training_state)
    kw.update(changes)
    return Path(save_checkpoint(path, **kw))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# --- 1. flipped bytes inside a stored tensor ------------------------------------------------------------------
def test_flipped_bytes_inside_a_weight_tensor_are_refused(tmp_path, pid_bundle):
    cfg = tiny_config(**{"model.d_h": 64, "model.d_hidden": 64})
    torch.manual_seed(0)
    state = build_model(cfg.model, pid_bundle.info).state_dict()
    name, weight = max(state.items(), key=lambda kv: kv[1].numel())
    assert weight.numel() * weight.element_size() >= 4000, name
    path = Path(save_checkpoint(tmp_path / "c.pt", model_state=state, config=cfg, info=pid_bundle.info,
                                labeled_indices=torch.arange(3), fingerprint="f"))
    assert same_tensors(load_checkpoint(path).model_state, state), "the intact file loads"
    data = bytearray(path.read_bytes())
    start = data.find(weight.numpy().tobytes())
    assert start > 0
    member = data_member_of(path, start)
    for i in range(start, start + 4000):  # 4,000 flipped bytes inside the stored weight tensor
        data[i] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(data)
    with zipfile.ZipFile(bad) as z:  # still a well-formed archive: only the tensor's bytes changed
        assert member in z.namelist()
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(bad)
    assert str(bad) in str(ei.value) and "digest mismatch" in str(ei.value)
    # one flipped bit is refused alike
    one = bytearray(path.read_bytes())
    one[start + 7] ^= 0x01
    bad.write_bytes(one)
    with pytest.raises(CheckpointError, match="digest mismatch"):
        load_checkpoint(bad)


def test_checkpoints_written_before_the_digest_still_load(tmp_path, run_dir):
    raw = torch.load(run_dir / "last.pt", weights_only=True)
    old = {k: v for k, v in raw.items() if k != "digest"}
    old["version"] = 1
    torch.save(old, tmp_path / "v1.pt")
    ck, ref = load_checkpoint(tmp_path / "v1.pt"), load_checkpoint(run_dir / "last.pt")
    assert same_tensors(ck.model_state, ref.model_state) and ck.config == ref.config and ck.info == ref.info
    model_from_checkpoint(ck)
    # a current file that lost its digest is not taken for an old one
    torch.save({**old, "version": checkpoint_mod.VERSION}, tmp_path / "nodigest.pt")
    with pytest.raises(CheckpointError, match="nodigest.pt.*digest"):
        load_checkpoint(tmp_path / "nodigest.pt")


def test_damage_to_settings_or_training_state_is_refused_too(tmp_path, run_dir):
    raw = torch.load(run_dir / "last.pt", weights_only=True)
    lr = raw["training_state"]["optimizer"]["param_groups"][0]["lr"]
    changes = {
        "cfg.pt": {**raw, "config": raw["config"].replace('"lr": ', '"lr": 1')},
        "optim.pt": {**raw, "training_state": {**raw["training_state"], "optimizer": {
            **raw["training_state"]["optimizer"],
            "param_groups": [{**raw["training_state"]["optimizer"]["param_groups"][0], "lr": lr + 0.5}]}}},
        "idx.pt": {**raw, "labeled_indices": raw["labeled_indices"].flip(0)},
    }
    for name, payload in changes.items():
        torch.save(payload, tmp_path / name)
        with pytest.raises(CheckpointError, match=f"{name}.*digest mismatch"):
            load_checkpoint(tmp_path / name)


# --- 2. zip bombs ---------------------------------------------------------------------------------------------
def rezip(src: Path, dst: Path, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for info in a.infolist():
            b.writestr(info.filename, a.read(info.filename), compress_type=compression)
    return dst


def test_a_small_file_that_inflates_hugely_is_refused_before_unpacking(tmp_path, run_dir):
    raw = torch.load(run_dir / "best.pt", weights_only=True)
    stored = tmp_path / "stored.pt"
    torch.save({**raw, "model": {**raw["model"], "filler": torch.zeros(20 * 2 ** 20)}}, stored)  # 80 MiB of zeros
    bomb = rezip(stored, tmp_path / "bomb.pt")
    stored.unlink()
    assert bomb.stat().st_size < 2 ** 20
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(bomb)
    msg = str(ei.value)
    assert str(bomb) in msg and "refused" in msg and "inflate" in msg and "ratio" in msg


def test_an_archive_that_claims_huge_sizes_is_refused(tmp_path, run_dir):
    data = bytearray((run_dir / "best.pt").read_bytes())
    i = data.find(b"PK\x01\x02")  # central directory entries
    patched = 0
    while i >= 0:
        n = struct.unpack_from("<H", data, i + 28)[0]
        if b"/data/" in bytes(data[i + 46:i + 46 + n]) and not patched:
            struct.pack_into("<I", data, i + 24, 3_000_000_000)  # uncompressed size: 3 GB
            patched += 1
        i = data.find(b"PK\x01\x02", i + 4)
    assert patched
    bad = tmp_path / "claims.pt"
    bad.write_bytes(data)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(bad)
    assert str(bad) in str(ei.value) and "3000000000" in str(ei.value) and "declares" in str(ei.value)


def test_size_limits_of_the_archive(tmp_path, run_dir, monkeypatch):
    # an honestly compressed checkpoint (ratios far below the bound) loads, with the same weights
    zipped = rezip(run_dir / "best.pt", tmp_path / "zipped.pt")
    assert any(i.compress_type == zipfile.ZIP_DEFLATED for i in zipfile.ZipFile(zipped).infolist())
    assert same_tensors(load_checkpoint(zipped).model_state, load_checkpoint(run_dir / "best.pt").model_state)
    # the absolute cap on what a checkpoint may unpack to
    monkeypatch.setattr(checkpoint_mod, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(CheckpointError, match="best.pt.*more than"):
        load_checkpoint(run_dir / "best.pt")


# --- 3. invalid dataset info or config --------------------------------------------------------------------------
GOOD_INFO = {"name": "d", "task": "single-label", "class_names": ["a", "b"],
             "modalities": [{"name": "v", "kind": "vector", "shape": [4]},
                            {"name": "i", "kind": "image", "shape": [1, 8, 8]}],
             "description": "", "licence": ""}


def with_mod(**changes):
    return {**GOOD_INFO, "modalities": [{**GOOD_INFO["modalities"][0], **changes}, GOOD_INFO["modalities"][1]]}


@pytest.mark.parametrize("d, message", [
    (with_mod(shape=[-4]), "shape"),
    (with_mod(shape=[0]), "shape"),
    (with_mod(shape=["4"]), "shape"),
    (with_mod(shape=[4.0]), "shape"),
    (with_mod(shape=[True]), "shape"),
    (with_mod(shape=[2 ** 40]), "shape"),
    (with_mod(shape=4), "shape"),
    (with_mod(shape=[4, 4]), "vector"),
    (with_mod(kind="audio"), "kind"),
    (with_mod(name=7), "name"),
    (with_mod(name="i"), "twice"),
    ({**GOOD_INFO, "task": "classification"}, "task"),
    ({**GOOD_INFO, "class_names": []}, "class"),
    ({**GOOD_INFO, "class_names": ["a", "a"]}, "twice"),
    ({**GOOD_INFO, "class_names": "ab"}, "class_names"),
    ({**GOOD_INFO, "class_names": ["a", 3]}, "class_names"),
    ({**GOOD_INFO, "modalities": []}, "modalities"),
    ({**GOOD_INFO, "modalities": [[1, 2]]}, "modalities"),
    ({**GOOD_INFO, "name": None}, "name"),
    ({**GOOD_INFO, "licence": 3}, "licence"),
    ({**GOOD_INFO, "extra": 1}, "extra"),
    ({k: v for k, v in GOOD_INFO.items() if k != "task"}, "task"),
    ([GOOD_INFO], "object"),
])
def test_dataset_info_from_dict_refuses_invalid_values(d, message):
    with pytest.raises(ValueError, match=message):
        DatasetInfo.from_dict(d)
    assert DatasetInfo.from_dict(GOOD_INFO).to_dict() == GOOD_INFO


def test_invalid_info_or_config_in_a_checkpoint_is_refused_naming_the_file(tmp_path, run_dir):
    ck = load_checkpoint(run_dir / "best.pt")
    bad_spec = dataclasses.replace(ck.info.modalities[0], shape=(-32,))
    bad_info = dataclasses.replace(ck.info, modalities=(bad_spec,) + ck.info.modalities[1:])
    cases = {
        "negshape.pt": (dict(info=bad_info), "shape"),
        "task.pt": (dict(info=dataclasses.replace(ck.info, task="ranking")), "task"),
        "dh.pt": (dict(config=ck.config.replace(**{"model.d_h": "16"})), "model.d_h"),
        "dz.pt": (dict(config=ck.config.replace(**{"model.d_z": -8})), "model.d_z"),
        "dropout.pt": (dict(config=ck.config.replace(**{"model.dropout": [0.1]})), "model.dropout"),
    }
    for name, (changes, message) in cases.items():
        path = save_like(tmp_path / name, ck, **changes)
        with pytest.raises(CheckpointError, match=f"{name}.*{message}"):
            load_checkpoint(path)


# --- 4. damaged training state in a resume file -----------------------------------------------------------------
def damaged_states(ts: dict) -> dict[str, tuple[dict, str]]:
    opt = ts["optimizer"]
    wrong_shape = {i: {k: (v[..., :1] if v.dim() else v) for k, v in s.items()} for i, s in opt["state"].items()}
    return {
        "no-optimizer": ({k: v for k, v in ts.items() if k != "optimizer"}, "optimizer"),
        "optimizer-junk": ({**ts, "optimizer": [1, 2]}, "optimizer"),
        "optimizer-groups": ({**ts, "optimizer": {**opt, "param_groups": []}}, "optimizer"),
        "optimizer-lr": ({**ts, "optimizer": {**opt, "param_groups": [{**opt["param_groups"][0], "lr": "fast"}]}},
                         "optimizer"),
        "optimizer-shapes": ({**ts, "optimizer": {**opt, "state": wrong_shape}}, "optimizer"),
        "no-scheduler": ({k: v for k, v in ts.items() if k != "scheduler"}, "scheduler"),
        "scheduler-junk": ({**ts, "scheduler": {**ts["scheduler"], "last_epoch": "x"}}, "scheduler"),
        "rng-float": ({**ts, "torch_rng": ts["torch_rng"].float()}, "torch_rng"),
        "rng-short": ({**ts, "torch_rng": ts["torch_rng"][:100]}, "torch_rng"),
        "rng-list": ({**ts, "torch_rng": ts["torch_rng"].tolist()}, "torch_rng"),
        "rng-zeros": ({**ts, "torch_rng": torch.zeros_like(ts["torch_rng"])}, "torch_rng"),
        "gen-2d": ({**ts, "gen_state": ts["gen_state"].view(2, -1)}, "gen_state"),
        "epoch-text": ({**ts, "next_epoch": "one"}, "next_epoch"),
        "epoch-negative": ({**ts, "next_epoch": -3}, "next_epoch"),
        "score-text": ({**ts, "best_score": "high"}, "best_score"),
        "no-step": ({k: v for k, v in ts.items() if k != "global_step"}, "global_step"),
    }


def test_resume_from_a_damaged_training_state_fails_clearly(tmp_path, run_dir, pid_bundle):
    ck = load_checkpoint(run_dir / "last.pt")
    cfg = tiny_config(**{"train.epochs": 2})
    for name, (ts, part) in damaged_states(ck.training_state).items():
        path = save_like(tmp_path / f"{name}.pt", ck, training_state=ts)
        events = []
        final = Trainer(cfg, pid_bundle, callbacks=[events.append], resume_from=path).run()
        assert isinstance(final, Failed), (name, final)
        assert final.kind == "data" and "Traceback" not in final.message, (name, final.message)
        assert str(path) in final.message and part in final.message and "training state" in final.message, \
            (name, final.message)


@pytest.mark.parametrize("case", ["no-optimizer", "rng-float", "rng-short", "optimizer-lr", "scheduler-junk"])
def test_robult_train_resume_with_a_damaged_file_exits_2(tmp_path, run_dir, case, capsys):
    from robult_engine.cli import main
    ck = load_checkpoint(run_dir / "last.pt")
    ts, part = damaged_states(ck.training_state)[case]
    path = save_like(tmp_path / "last.pt", ck, training_state=ts)
    rc = main(["train", "--resume", str(path), "--epochs", "2", "--out", str(tmp_path / "out"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert err.startswith("error: ") and str(path) in err and part in err, err
    assert "Traceback" not in out + err


def test_robult_train_resume_from_best_pt_exits_2(tmp_path, run_dir, capsys):
    from robult_engine.cli import main
    rc = main(["train", "--resume", str(run_dir / "best.pt"), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds no training state" in err and "last.pt" in err, (rc, err)


# --- properties ---------------------------------------------------------------------------------------------------
junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
shapes = st.lists(st.integers(-3, 40) | junk, max_size=4) | junk
modality = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "c"]) | junk, "kind": st.sampled_from(MODALITY_KINDS + ("audio",)) | junk,
     "shape": shapes},
    optional={"extra": junk})
info_like = st.fixed_dictionaries(
    {"name": st.text(max_size=5) | junk,
     "task": st.sampled_from(["single-label", "multi-label", "regression", "ranking"]) | junk,
     "class_names": st.lists(st.sampled_from(["x", "y", "z"]), max_size=3) | junk,
     "modalities": st.lists(modality | junk, max_size=3) | junk},
    optional={"description": st.text(max_size=5) | junk, "licence": st.text(max_size=5) | junk, "other": junk},
) | junk
RANKS = {"vector": 1, "image": 3, "sequence": 2, "text": 1}


@settings(max_examples=400, deadline=None)
@given(info_like)
def test_property_dataset_info_from_dict_is_valid_or_a_value_error(d):
    try:
        info = DatasetInfo.from_dict(d)
    except ValueError as e:
        assert str(e)
        return
    assert info.task in ("single-label", "multi-label", "regression")
    assert info.modalities and len(set(info.modality_names)) == len(info.modalities)
    assert info.class_names and len(set(info.class_names)) == len(info.class_names) and info.num_outputs >= 1
    for m in info.modalities:
        assert isinstance(m, ModalitySpec) and isinstance(m.name, str) and m.kind in MODALITY_KINDS
        assert len(m.shape) == RANKS[m.kind] and all(type(s) is int and s >= 1 for s in m.shape)
    assert DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


@pytest.fixture(scope="module")
def flip_target(run_dir, tmp_path_factory):
    ref = load_checkpoint(run_dir / "last.pt")
    data = (run_dir / "last.pt").read_bytes()
    with zipfile.ZipFile(run_dir / "last.pt") as z:
        pkl = next(i.filename for i in z.infolist() if i.filename.endswith("data.pkl"))
    start, size = member_span(run_dir / "last.pt", pkl)
    return ref, data, (start, size), tmp_path_factory.mktemp("flips") / "flipped.pt"


positions = st.floats(0, 1, exclude_max=True)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's unpickler warns about some damaged pickles
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.booleans(), positions, st.integers(0, 7)), min_size=1, max_size=3))
def test_property_flipped_bytes_load_identical_weights_or_are_refused(flip_target, flips):
    ref, data, (pkl_start, pkl_size), path = flip_target
    b = bytearray(data)
    for in_pickle, where, bit in flips:  # half of the flips land in the pickled record, where damage is subtler
        pos = pkl_start + math.floor(where * pkl_size) if in_pickle else math.floor(where * len(b))
        b[pos] ^= 1 << bit
    path.write_bytes(b)
    try:
        ck = load_checkpoint(path)
    except CheckpointError as e:
        assert str(path) in str(e)
        return
    assert same_tensors(ck.model_state, ref.model_state) and same_tensors(ck.memory_state, ref.memory_state)
    assert torch.equal(ck.labeled_indices, ref.labeled_indices)
    assert ck.config == ref.config and ck.info == ref.info and ck.fingerprint == ref.fingerprint
