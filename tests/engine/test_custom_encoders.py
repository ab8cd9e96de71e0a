"""Your own encoder (model.encoders = "modality=package.module:function"): it trains, saves and reloads with
trust; without trust a checkpoint naming outside code is refused and nothing is imported; a factory returning
the wrong shape is named in the error; the CLI's --encoder / --trust-code do the same from the command line."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from robult_engine.checkpoint import (CheckpointError, UntrustedCodeError, load_checkpoint, model_from_checkpoint,
                                      untrusted_modules)
from robult_engine.config import ConfigError, ModelConfig
from robult_engine.data import make_batch
from robult_engine.events import Failed, Finished
from robult_engine.models import build_model
from robult_engine.models.encoders import GRUSequenceEncoder
from robult_engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TRANSFORMER = "seq=examples.transformer_encoder:make_encoder"


def four_kind_cfg(make_cfg, encoders: tuple[str, ...], **changes):
    return make_cfg(**{"data.dataset": "four-kinds", "train.epochs": 1, "train.batch_size": 8,
                       "train.labeled_per_batch": 2, "data.label_fraction": 0.25, "model.encoders": encoders,
                       **changes})


def outputs(model, split):
    batch = make_batch(split, torch.arange(len(split)))
    model.eval()
    with torch.no_grad():
        out = model(batch.inputs, batch.lengths, batch.mask, with_fusion=True)
    return out.h, out.logits


def write_module(folder: Path, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return name


@pytest.fixture
def repo_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # examples/ is importable from a source checkout


def test_transformer_example_trains_saves_and_reloads_only_with_trust(make_cfg, four_kind_bundle, tmp_path,
                                                                      repo_on_path):
    cfg = four_kind_cfg(make_cfg, (TRANSFORMER,))
    tr = Trainer(cfg, four_kind_bundle, out_dir=tmp_path, trust_code=True)
    final = tr.run()
    assert isinstance(final, Finished), final
    assert type(tr.model.encoders["seq"]).__name__ == "TransformerSequenceEncoder"
    assert any(k.startswith("encoders.seq.encoder.layers.0.self_attn") for k in tr.model.state_dict())
    ck = load_checkpoint(tmp_path / "best.pt")
    assert ck.config.model.encoders == (TRANSFORMER,)  # stored by name, in the config
    assert untrusted_modules(ck) == ["examples.transformer_encoder"]

    with pytest.raises(UntrustedCodeError) as e:
        model_from_checkpoint(ck)
    assert isinstance(e.value, CheckpointError)
    assert e.value.modules == ["examples.transformer_encoder"]
    msg = str(e.value)
    assert str(tmp_path / "best.pt") in msg and "examples.transformer_encoder" in msg and "--trust-code" in msg

    # trust names the modules: naming another module is refused, naming this one loads it
    with pytest.raises(UntrustedCodeError) as e:
        model_from_checkpoint(ck, trust_code={"some_other.module"})
    assert e.value.modules == ["examples.transformer_encoder"]
    again = model_from_checkpoint(ck, trust_code={"examples.transformer_encoder"})
    h1, l1 = outputs(tr.model, four_kind_bundle.splits["test"])
    h2, l2 = outputs(again, four_kind_bundle.splits["test"])
    assert torch.allclose(h1, h2) and torch.allclose(l1, l2)


def test_nothing_is_imported_without_trust(make_cfg, four_kind_bundle, tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, "robult_test_marker_encoder", f"""
        from pathlib import Path
        with open({str(marker)!r}, "a") as f:
            f.write("imported\\n")   # a side effect of importing: the test sees whether the module ran
        from robult_engine.models.encoders import VectorEncoder

        def make(shape, d_h, dropout):
            return VectorEncoder(shape[-1], d_h, dropout)
        """)
    cfg = four_kind_cfg(make_cfg, (f"vec={name}:make",))
    assert isinstance(Trainer(cfg, four_kind_bundle, out_dir=tmp_path / "run", trust_code=True).run(), Finished)
    assert marker.read_text() == "imported\n"  # training from the user's own config imports it
    marker.unlink()
    monkeypatch.delitem(sys.modules, name)

    ck = load_checkpoint(tmp_path / "run" / "best.pt")
    with pytest.raises(UntrustedCodeError) as e:
        model_from_checkpoint(ck)
    assert e.value.modules == [name]
    assert not marker.exists() and name not in sys.modules  # refused before any import
    # the model builder refuses it as well when asked not to trust
    with pytest.raises(UntrustedCodeError):
        build_model(ck.config.model, ck.info)
    assert not marker.exists() and name not in sys.modules
    # a Trainer trusts nothing unless told (by default, or trusting another module) and fails without importing
    for trust in (False, {"another.module"}):
        final = Trainer(cfg, four_kind_bundle, trust_code=trust).run()
        assert isinstance(final, Failed) and name in final.message and not marker.exists()
    assert isinstance(Trainer(cfg, four_kind_bundle).run(), Failed) and not marker.exists()

    model_from_checkpoint(ck, trust_code=True)
    assert marker.read_text() == "imported\n"


def test_builtin_factories_need_no_trust(make_cfg, four_kind_bundle, tmp_path):
    cfg = four_kind_cfg(make_cfg, ("seq=robult_engine.models.encoders:gru_sequence",))
    assert cfg.model.sequence_encoder == "conv"  # the entry overrides the kind's default for this modality only
    assert isinstance(Trainer(cfg, four_kind_bundle, out_dir=tmp_path, trust_code=True).run(), Finished)
    ck = load_checkpoint(tmp_path / "best.pt")
    assert untrusted_modules(ck) == []
    model = model_from_checkpoint(ck)
    assert isinstance(model.encoders["seq"], GRUSequenceEncoder)


def test_wrong_shape_names_the_factory(make_cfg, four_kind_bundle, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, "robult_test_bad_encoder", """
        import torch
        from torch import nn

        class Flat(nn.Module):   # forgets to pool: (B, T, d_h) instead of (B, d_h)
            def __init__(self, d_in, d_h):
                super().__init__()
                self.lin = nn.Linear(d_in, d_h)

            def forward(self, x, lengths=None):
                return self.lin(x)

        def make(shape, d_h, dropout):
            return Flat(shape[-1], d_h)

        def not_a_module(shape, d_h, dropout):
            return lambda x, lengths: x
        """)
    final = Trainer(four_kind_cfg(make_cfg, (f"seq={name}:make",)), four_kind_bundle, trust_code=True).run()
    assert isinstance(final, Failed) and final.kind == "config"
    assert f"{name}:make" in final.message and "'seq'" in final.message
    assert "(B, d_h)" in final.message and "(8, 6, 16)" in final.message  # what it returned, for an (8, 6, 4) batch

    with pytest.raises(ConfigError, match=rf"{name}:not_a_module returned a function .* torch.nn.Module"):
        build_model(ModelConfig(d_h=16, encoders=(f"seq={name}:not_a_module",)), four_kind_bundle.info,
                    trust_code=True)


@pytest.mark.parametrize("entry, match", [
    ("seq", "expected MODALITY=package.module:function"),
    ("seq=examples.transformer_encoder", "expected MODALITY=package.module:function"),
    ("seq=examples/transformer_encoder.py:make", "is not a module name"),
    ("seq=examples.transformer_encoder:make-encoder", "is not a function name"),
])
def test_malformed_entries_are_refused_by_name(entry, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(encoders=(entry,)).validate()


def test_factory_problems_are_explained(four_kind_bundle, repo_on_path):
    info = four_kind_bundle.info
    with pytest.raises(ConfigError, match="model.encoders: modality 'seq' is given twice"):
        ModelConfig(encoders=(TRANSFORMER, TRANSFORMER)).validate()
    with pytest.raises(ConfigError, match="no modality 'audio' in four-kinds; it has vec, img, seq, txt"):
        build_model(ModelConfig(encoders=("audio=examples.transformer_encoder:make_encoder",)), info,
                    trust_code=True)
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.enc' .* PYTHONPATH"):
        build_model(ModelConfig(encoders=("seq=no_such_pkg.enc:make",)), info, trust_code=True)
    with pytest.raises(ConfigError, match="has no 'missing'"):
        build_model(ModelConfig(encoders=("seq=examples.transformer_encoder:missing",)), info, trust_code=True)
    # the example refuses a modality of the wrong kind, and the message says which factory and call failed
    with pytest.raises(ConfigError, match=r"make_encoder\(shape=\(5,\), d_h=128, dropout=0.1\) for modality 'vec' "
                                          r"failed \(ValueError: a transformer encoder needs a sequence"):
        build_model(ModelConfig(encoders=("vec=examples.transformer_encoder:make_encoder",)), info, trust_code=True)


def test_cli_encoder_and_trust_code(engine_cli, tmp_path):
    """From the command line: train with --encoder, eval refused without --trust-code (nothing imported, exit 2),
    accepted with it; resuming such a run needs --trust-code as well."""
    marker = tmp_path / "imported.txt"
    write_module(tmp_path, "my_cli_encoder", f"""
        with open({str(marker)!r}, "a") as f:
            f.write("imported\\n")
        from robult_engine.models.encoders import VectorEncoder

        def make(shape, d_h, dropout):
            return VectorEncoder(shape[-1], d_h, dropout)
        """)
    env = {"PYTHONPATH": str(tmp_path)}
    tiny = ["--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16", "--set",
            "model.d_z=8", "--set", "model.d_u=8", "--set", "model.d_hidden=16", "--batch-size", "16",
            "--label-fraction", "0.1", "--threads", "1", "--quiet"]
    out = tmp_path / "run"
    proc = engine_cli("train", "--epochs", "1", "--encoder", "m1=my_cli_encoder:make", "--out", str(out), *tiny,
                      env=env)
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()
    marker.unlink()

    refused = engine_cli("eval", str(out / "best.pt"), "--threads", "1", env=env)
    assert refused.returncode == 2
    assert "my_cli_encoder" in refused.stderr and "--trust-code" in refused.stderr
    assert not marker.exists()
    # trust names what it trusts: a bare --trust-code, or another module, imports nothing
    bare = engine_cli("eval", str(out / "best.pt"), "--threads", "1", "--trust-code", env=env)
    assert bare.returncode == 2 and "name the module" in bare.stderr and "Traceback" not in bare.stderr
    other = engine_cli("eval", str(out / "best.pt"), "--threads", "1", "--trust-code", "other_pkg.enc", env=env)
    assert other.returncode == 2 and "my_cli_encoder" in other.stderr and not marker.exists()
    ok = engine_cli("eval", str(out / "best.pt"), "--threads", "1", "--trust-code", "my_cli_encoder", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "m0+m1+m2" in ok.stdout and marker.exists()
    marker.unlink()

    # resume takes the run's own config from last.pt: its outside code needs --trust-code too
    refused = engine_cli("train", "--resume", str(out / "last.pt"), "--out", str(out), "--quiet", env=env)
    assert refused.returncode == 2 and "my_cli_encoder" in refused.stderr and not marker.exists()
    resumed = engine_cli("train", "--resume", str(out / "last.pt"), "--out", str(out), "--epochs", "2",
                         "--threads", "1", "--quiet", "--trust-code", "my_cli_encoder", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "last.pt").epoch == 1 and marker.exists()


@pytest.mark.parametrize("factory, modality", [("image", "vec"), ("conv_sequence", "vec"), ("vector", "img"),
                                               ("gru_sequence", "img"), ("image", "seq")])
def test_a_builtin_factory_for_another_kind_of_modality_is_refused_by_name(make_cfg, four_kind_bundle, factory,
                                                                          modality):
    """An image encoder named for a vector modality (and the like) ends in one message naming the modality, its
    kind and the factories that fit, before any forward pass (it used to fail deep inside conv2d)."""
    info = four_kind_bundle.info
    ref = f"robult_engine.models.encoders:{factory}"
    with pytest.raises(ConfigError, match=f"modality '{modality}' is a .* modality .*{factory} builds an encoder"):
        build_model(ModelConfig(encoders=(f"{modality}={ref}",)), info)
