"""Checkpoints (docs/method.md; robult_engine/checkpoint.py): a round trip keeps everything; anything that is not a Robult checkpoint, above all a
file whose pickle would run code, is refused with a clear CheckpointError and nothing is executed."""
from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

from robult_engine.checkpoint import (CheckpointError, load_checkpoint, model_from_checkpoint, payload_digest,
                                     save_checkpoint)
from robult_engine.data import make_batch
from robult_engine.models import build_model
from robult_engine.trainer import Trainer


def redigest(payload: dict) -> dict:
    """An edited payload with its digest recomputed, so that loading it reaches the checks behind the digest
    (an edit alone is refused as a digest mismatch, tests/engine/test_checkpoint_integrity.py)."""
    return {**payload, "digest": payload_digest(payload)} if "digest" in payload else payload


class Booby:
    """Unpickling this object runs `touch <marker>` through os.system."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pid_bundle):
    """A tiny trained run folder (best.pt, last.pt) and the trainer that wrote it."""
    from robult_engine.config import RunConfig
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig().replace(**{"data.dataset": "pid-synth", "data.synth_n_train": 120, "data.label_fraction": 0.1,
                                 "model.d_h": 16, "model.d_z": 8, "model.d_u": 8, "model.d_hidden": 16,
                                 "model.classifier": "linear", "model.fusion": "gated", "loss.bandwidth": 0.4,
                                 "train.epochs": 1, "train.batch_size": 16, "train.labeled_per_batch": 4})
    tr = Trainer(cfg, pid_bundle, out_dir=out)
    final = tr.run()
    assert final.checkpoint_path
    return tr, out


def test_round_trip_of_a_trained_run(trained, pid_bundle):
    tr, out = trained
    ck = load_checkpoint(out / "best.pt")
    assert ck.config == tr.cfg and ck.config.to_dict() == tr.cfg.to_dict()
    assert ck.info == pid_bundle.info
    assert torch.equal(ck.labeled_indices, tr.labeled_idx)
    assert ck.fingerprint == pid_bundle.fingerprint()
    assert ck.epoch == 0 and set(ck.metrics) >= {"val", "test", "best_score"}
    assert ck.training_state == {}, "best.pt holds no training state"
    model = model_from_checkpoint(ck)
    assert not model.training
    tr.model.eval()  # after the run the trainer's model holds the best weights
    split = pid_bundle.splits["test"]
    batch = make_batch(split, torch.arange(len(split)))
    with torch.no_grad():
        a = tr.model(batch.inputs, batch.lengths, batch.mask, with_fusion=True, with_reconstruction=True)
        b = model(batch.inputs, batch.lengths, batch.mask, with_fusion=True, with_reconstruction=True)
    for name in ("h", "z", "u", "logits_mod", "logits", "s", "logits_fused", "h_rec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(ck.memory_state["protos"], tr.memory.protos)
    last = load_checkpoint(out / "last.pt")
    assert set(last.training_state) >= {"optimizer", "scheduler", "gen_state", "torch_rng", "next_epoch"}


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, pid_bundle, tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg.model, pid_bundle.info)
    kw = dict(model_state=model.state_dict(), config=tiny_cfg, info=pid_bundle.info,
              labeled_indices=torch.tensor([1, 5, 9]), fingerprint="abc123")
    path = save_checkpoint(tmp_path / "sub" / "c.pt", **kw, metrics={"val": {"m0": {"accuracy": 0.5}}})
    save_checkpoint(path, **kw)  # overwrite in place
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["c.pt"]
    ck = load_checkpoint(path)
    assert ck.labeled_indices.tolist() == [1, 5, 9] and ck.fingerprint == "abc123" and ck.metrics == {}
    again = model_from_checkpoint(ck)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_booby_trapped_checkpoint_is_refused_and_runs_nothing(tmp_path, trained):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    # a file that looks like a Robult checkpoint, with a payload whose unpickling calls os.system
    raw = torch.load(trained[1] / "best.pt", weights_only=True)
    raw["metrics"] = Booby(str(marker))
    torch.save(raw, evil)
    assert zipfile.is_zipfile(evil)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(evil)
    msg = str(ei.value)
    assert str(evil) in msg and "refused" in msg and "not loaded" in msg
    assert not marker.exists(), "loading the file executed its pickled code"
    # the same object as a plain pickle (not a PyTorch archive) and in the legacy torch format
    for name, write in (("evil.pkl", lambda p: p.write_bytes(pickle.dumps(Booby(str(marker))))),
                        ("legacy.pt", lambda p: torch.save({"x": Booby(str(marker))}, p,
                                                           _use_new_zipfile_serialization=False))):
        p = tmp_path / name
        write(p)
        with pytest.raises(CheckpointError, match="not a Robult checkpoint"):
            load_checkpoint(p)
        assert not marker.exists()
    # sanity check of the test itself: an unsafe load would indeed have run it
    pickle.loads(pickle.dumps(Booby(str(marker))))
    assert marker.exists()


def test_foreign_truncated_and_text_files_are_refused(tmp_path, trained):
    foreign = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(3, 2), "layer.bias": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a Robult checkpoint"):
        load_checkpoint(foreign)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.arange(4), tensor_only)
    with pytest.raises(CheckpointError, match="not a Robult checkpoint"):
        load_checkpoint(tensor_only)
    data = (trained[1] / "best.pt").read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        truncated = tmp_path / f"cut{cut}.pt"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(truncated.name)):
            load_checkpoint(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("these are not the weights you are looking for\n")
    with pytest.raises(CheckpointError, match="not a Robult checkpoint"):
        load_checkpoint(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(empty)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path)  # a folder


def test_damaged_or_newer_checkpoints_are_refused(tmp_path, trained):
    raw = torch.load(trained[1] / "best.pt", weights_only=True)

    def write(name, payload):
        p = tmp_path / name
        torch.save(redigest(payload), p)
        return p

    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        load_checkpoint(write("v99.pt", {**raw, "version": 99}))
    missing = {k: v for k, v in raw.items() if k != "labeled_indices"}
    with pytest.raises(CheckpointError, match="missing labeled_indices"):
        load_checkpoint(write("missing.pt", missing))
    with pytest.raises(CheckpointError, match="metadata"):
        load_checkpoint(write("badcfg.pt", {**raw, "config": '{"train": {"nope": 1}}'}))
    with pytest.raises(CheckpointError, match="metadata"):
        load_checkpoint(write("badinfo.pt", {**raw, "info": "{}"}))
    # weights that do not fit the model the config describes
    extra = dict(raw["model"])
    extra["intruder.weight"] = torch.zeros(1)
    ck = load_checkpoint(write("extra.pt", {**raw, "model": extra}))
    with pytest.raises(CheckpointError, match="do not match"):
        model_from_checkpoint(ck)
    smaller = {k: v for k, v in raw["model"].items() if not k.startswith("classifier")}
    with pytest.raises(CheckpointError, match="do not match"):
        model_from_checkpoint(load_checkpoint(write("smaller.pt", {**raw, "model": smaller})))


def test_model_from_checkpoint_for_every_kind(tmp_path, four_kind_bundle, tiny_cfg):
    cfg = tiny_cfg.replace(**{"model.sequence_encoder": "gru", "model.text_buckets": 64})
    torch.manual_seed(0)
    model = build_model(cfg.model, four_kind_bundle.info).eval()
    path = save_checkpoint(tmp_path / "k.pt", model_state=model.state_dict(), config=cfg,
                           info=four_kind_bundle.info, labeled_indices=torch.arange(3),
                           fingerprint=four_kind_bundle.fingerprint())
    again = model_from_checkpoint(load_checkpoint(path))
    split = four_kind_bundle.splits["val"]
    with torch.no_grad():
        assert torch.equal(model(split.inputs, split.lengths, split.mask).logits,
                           again(split.inputs, split.lengths, split.mask).logits)


def test_unknown_entries_and_wrong_types_are_refused(tmp_path, trained):
    raw = torch.load(trained[1] / "best.pt", weights_only=True)
    cases = {
        "extra.pt": ({**raw, "optimizer_of_another_tool": {}}, "unexpected entries optimizer_of_another_tool"),
        "idx.pt": ({**raw, "labeled_indices": torch.rand(3)}, "labeled_indices"),
        "model.pt": ({**raw, "model": {"w": [1, 2]}}, "model is not a dict of tensors"),
        "model2.pt": ({**raw, "model": "weights"}, "model is not a dict of tensors"),
    }
    for name, (payload, msg) in cases.items():
        torch.save(redigest(payload), tmp_path / name)
        with pytest.raises(CheckpointError, match=msg):
            load_checkpoint(tmp_path / name)
