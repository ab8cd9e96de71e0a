"""ONNX export (robult_engine/export.py, docs/export.md): the graph takes every modality's input and a presence
mask and returns the prediction of any modality subset; onnxruntime's outputs equal PyTorch's within 1e-5 on
every subset for each modality kind (vector, image, sequence with conv or GRU, text), for Robult, a baseline and
the peers ShaSpec and MMIN, and for each task; an encoder the exporter cannot express or traces wrongly is named
in the error; a file that is not a checkpoint is refused; a failed export writes nothing."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from robult_engine.checkpoint import CheckpointError, UntrustedCodeError, save_checkpoint  # noqa: E402
from robult_engine.cli import main  # noqa: E402
from robult_engine.data import DatasetInfo, ModalitySpec  # noqa: E402
from robult_engine.evaluation import modality_subsets  # noqa: E402
from robult_engine.export import (ExportCheckError, ExportError, export_checkpoint, export_onnx,  # noqa: E402
                                  input_signature, prediction_of, require_onnx)
from robult_engine.models import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5


def make_checkpoint(folder: Path, make_cfg, bundle, method: str = "robult", name: str = "best.pt", **model):
    """A seeded, just initialised model of `method` on `bundle`, saved as a checkpoint; -> (path, model)."""
    changes = {"method": method, "data.dataset": "four-kinds", "model.text_buckets": 64,
               **{f"model.{k}": v for k, v in model.items()}}
    cfg = make_cfg(**changes)
    torch.manual_seed(0)
    m = build_model(cfg.model, bundle.info, method=method, trust_code=True).eval()
    path = save_checkpoint(folder / name, model_state=m.state_dict(), config=cfg, info=bundle.info,
                           labeled_indices=torch.arange(4), fingerprint="test")
    return Path(path), m


def feed_of(split, mask: torch.Tensor, graph_inputs: set[str]) -> dict:
    """The documented inputs: each modality by name, `<name>_lengths` for sequences (and texts, when the graph
    takes them), and `mask`."""
    feed = {"mask": mask.numpy()}
    for name, x in split.inputs.items():
        feed[name] = x.numpy()
        if name in split.lengths:
            feed[f"{name}_lengths"] = split.lengths[name].numpy()
    return {k: v for k, v in feed.items() if k in graph_inputs}


def assert_onnx_matches(onnx_path: Path, model, bundle) -> float:
    """Run the file with onnxruntime on the bundle's test split (with its own missing modalities) under every
    non-empty subset, and compare both outputs with the PyTorch model; returns the largest difference."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in sess.get_inputs()}
    assert [o.name for o in sess.get_outputs()] == ["logits", "prediction"]
    split = bundle.splits["test"]
    worst = 0.0
    for name, sm in modality_subsets(bundle.info.modality_names):
        mask = split.mask & torch.tensor(sm)
        logits, pred = (torch.from_numpy(a) for a in sess.run(None, feed_of(split, mask, graph_inputs)))
        with torch.no_grad():
            want = model(split.inputs, split.lengths, mask).logits
        assert logits.shape == want.shape, name
        assert pred.shape == prediction_of(want, bundle.info.task).shape, name
        d = max(float((logits - want).abs().max()), float((pred - prediction_of(want, bundle.info.task)).abs().max()))
        assert d <= TOL, f"subset {name}: ONNX differs from PyTorch by {d}"
        worst = max(worst, d)
    return worst


@pytest.mark.parametrize("method,sequence_encoder,task", [
    ("robult", "conv", "single-label"),
    ("robult", "gru", "multi-label"),
    ("supervised", "conv", "regression"),
    ("shaspec", "gru", "single-label"),
    ("mmin", "conv", "multi-label"),
    ("mmin", "gru", "regression"),
])
def test_onnx_equals_pytorch_on_every_subset(tmp_path, make_cfg, make_bundle, method, sequence_encoder, task):
    bundle = make_bundle(task=task, missing=0.3)
    ck, model = make_checkpoint(tmp_path, make_cfg, bundle, method, sequence_encoder=sequence_encoder)
    out = tmp_path / "export" / "model.onnx"
    seen = []
    report = export_checkpoint(ck, out, progress=lambda done, total, text: seen.append((done, total)))
    assert out.is_file() and report.passed and report.max_diff <= TOL
    assert len(report.subsets) == 2 ** 4 - 1 and report.mixed is not None
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert "passed" in report.text() and str(out) in report.text()
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # no temporary file left
    assert_onnx_matches(out, model, bundle)

    import onnx
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["robult.method"] == method and meta["robult.task"] == task
    names = [i.name for i in proto.graph.input]
    assert names == ["vec", "img", "seq", "seq_lengths", "txt", "mask"]  # the built-in text encoder reads no lengths
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["seq"][:2] == ["batch", "time_seq"] and dims["txt"] == ["batch", "tokens_txt"]
    assert dims["img"] == ["batch", 1, 8, 8] and dims["mask"] == ["batch", 4]


def test_absent_rows_are_never_read_and_an_empty_row_gives_zeros(tmp_path, make_cfg, make_bundle):
    bundle = make_bundle(task="single-label")
    ck, model = make_checkpoint(tmp_path, make_cfg, bundle, "robult")
    out = tmp_path / "m.onnx"
    export_checkpoint(ck, out, check=False)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    split = bundle.splits["test"]
    mask = torch.zeros(len(split), 4, dtype=torch.bool)
    mask[:, 0] = True
    mask[0, 0] = False  # no modality at all in row 0
    feed = feed_of(split, mask, {i.name for i in sess.get_inputs()})
    logits, pred = sess.run(None, feed)
    feed["img"] = feed["img"] * float("nan")  # an absent modality's values (even NaN) change nothing
    feed["seq_lengths"] = feed["seq_lengths"] * 0
    logits2, _ = sess.run(None, feed)
    assert (logits == logits2).all()
    assert (logits[0] == 0).all() and abs(pred[0] - 1 / 3).max() < 1e-6  # uniform probabilities


def test_one_modality_model(tmp_path, make_cfg):
    from robult_engine.data import DatasetBundle, SplitData
    info = DatasetInfo(name="one", modalities=(ModalitySpec("x", "vector", (3,)),), task="single-label",
                       class_names=("a", "b"))
    torch.manual_seed(0)
    model = build_model(make_cfg().model, info, method="robult").eval()
    n = 6
    split = SplitData(inputs={"x": torch.randn(n, 3)}, lengths={}, mask=torch.ones(n, 1, dtype=torch.bool),
                      target=torch.zeros(n, dtype=torch.long))
    report = export_onnx(model, info, tmp_path / "one.onnx")
    assert report.passed and [s for s, _ in report.subsets] == ["x"]
    assert_onnx_matches(tmp_path / "one.onnx", model, DatasetBundle(info, {"test": split}))
    assert [g.name for g in input_signature(info)] == ["x", "mask"]


def test_custom_encoder_that_traces_is_exported(tmp_path, make_cfg, make_bundle, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # examples/ is importable from a source checkout
    bundle = make_bundle()
    ck, model = make_checkpoint(tmp_path, make_cfg, bundle, "robult",
                                encoders=("seq=examples.transformer_encoder:make_encoder",))
    with pytest.raises(UntrustedCodeError, match="examples.transformer_encoder"):
        export_checkpoint(ck, tmp_path / "m.onnx")  # nothing is imported without trust
    assert not (tmp_path / "m.onnx").exists()
    report = export_checkpoint(ck, tmp_path / "m.onnx", trust_code={"examples.transformer_encoder"})
    assert report.passed
    # its attention traces with a fixed length, so the sequence and text axes are fixed at the data's lengths
    assert "modality 'seq'" in report.fixed_time and "seq float32 (batch, 6, 4)" in report.inputs
    assert "fixed at the data's lengths" in report.text()
    assert_onnx_matches(tmp_path / "m.onnx", model, bundle)


BAD_ENCODERS = '''
import torch
from torch import nn


class CumMax(nn.Module):
    """A running maximum over time: an operation ONNX opset 17 cannot express (aten::cummax)."""
    def __init__(self, d_in, d_h):
        super().__init__()
        self.lin = nn.Linear(d_in, d_h)

    def forward(self, x, lengths):
        return self.lin(torch.cummax(x, dim=1).values.mean(1))


class Frozen(nn.Module):
    """Scales by a Python number taken from the data: the tracer records it as a constant."""
    def __init__(self, d_in, d_h):
        super().__init__()
        self.lin = nn.Linear(d_in, d_h)

    def forward(self, x, lengths=None):
        return self.lin(x) * float(x.abs().max())


def cummax(shape, d_h, dropout):
    return CumMax(shape[-1], d_h)


def frozen(shape, d_h, dropout):
    return Frozen(shape[-1], d_h)
'''


@pytest.fixture
def bad_encoders(tmp_path, monkeypatch) -> str:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "export_onnx_bad_encoders.py").write_text(textwrap.dedent(BAD_ENCODERS))
    monkeypatch.syspath_prepend(str(folder))
    return "export_onnx_bad_encoders"


def test_an_encoder_onnx_cannot_express_is_named(tmp_path, make_cfg, make_bundle, bad_encoders, capsys):
    bundle = make_bundle()
    ck, _ = make_checkpoint(tmp_path, make_cfg, bundle, "robult", encoders=(f"seq={bad_encoders}:cummax",))
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(ExportError) as e:
        export_checkpoint(ck, out, trust_code={bad_encoders})
    msg = str(e.value)
    assert str(ck) in msg and "modality 'seq'" in msg and f"{bad_encoders}:cummax" in msg and "cummax" in msg
    assert "\n" not in msg and len(msg) < 700
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))
    # the command line: the same message, exit code 2, nothing written
    assert main(["export", str(ck), "--onnx", str(out), "--trust-code", bad_encoders]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "modality 'seq'" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_wrongly_traced_encoder_fails_the_check_and_keeps_the_old_file(tmp_path, make_cfg, make_bundle,
                                                                         bad_encoders, capsys):
    bundle = make_bundle()
    ck, _ = make_checkpoint(tmp_path, make_cfg, bundle, "robult", encoders=(f"vec={bad_encoders}:frozen",))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    with pytest.raises(ExportCheckError) as e:
        export_checkpoint(ck, out, trust_code={bad_encoders})
    msg = str(e.value)
    assert "differs from the PyTorch model" in msg and "modality 'vec'" in msg and "nothing was written" in msg
    assert not e.value.report.passed and e.value.report.max_diff > TOL
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "code", "m.onnx"]
    # the command line shows the failed check and exits 1
    assert main(["export", str(ck), "--onnx", str(out), "--trust-code", bad_encoders]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "error: " in err
    # --no-check writes the graph as traced
    assert main(["export", str(ck), "--onnx", str(out), "--trust-code", bad_encoders, "--no-check"]) == 0
    assert "not run" in capsys.readouterr().out and out.read_bytes() != b"the previous export"


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, capsys, content):
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    out = tmp_path / "m.onnx"
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        export_checkpoint(bad, out)
    assert main(["export", str(bad), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and err.count("\n") == 1
    assert main(["export", str(tmp_path / "missing.pt"), "--onnx", str(out)]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_cli_export_prints_the_report(tmp_path, make_cfg, make_bundle, capsys):
    bundle = make_bundle()
    ck, model = make_checkpoint(tmp_path, make_cfg, bundle, "shaspec")
    out = tmp_path / "m.onnx"
    assert main(["export", str(ck), "--onnx", str(out), "--rows", "4"]) == 0
    text = capsys.readouterr().out
    assert "passed" in text and "vec+img+seq+txt" in text and "mask columns: vec, img, seq, txt" in text
    assert out.is_file()
    assert main(["export", str(ck), "--onnx", str(tmp_path)]) == 2  # a folder
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", str(ck), "--onnx", str(out), "--opset", "3"]) == 2
    assert "opset" in capsys.readouterr().err


def test_a_cancelled_export_leaves_nothing(tmp_path, make_cfg, make_bundle):
    bundle = make_bundle()
    ck, _ = make_checkpoint(tmp_path, make_cfg, bundle, "robult")

    class Stop(Exception):
        pass

    def progress(done, total, text):
        if "subset" in text and done > 5:
            raise Stop()

    with pytest.raises(Stop):
        export_checkpoint(ck, tmp_path / "m.onnx", progress=progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_missing_packages_say_what_to_install(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(ExportError, match=r"onnxruntime.*pip install 'robult-studio\[export\]'"):
        require_onnx()
    require_onnx(runtime=False)  # --no-check needs onnx only
    assert main(["export", str(tmp_path / "x.pt"), "--onnx", str(tmp_path / "m.onnx")]) == 2


def test_the_documented_example_runs(tmp_path, make_cfg, monkeypatch, capsys):
    """docs/export.md's onnxruntime example, as written, on a model of AV-Digits' layout (an 8×8 image and a
    sequence of 13 MFCCs, ten classes)."""
    info = DatasetInfo(name="av-digits", modalities=(ModalitySpec("image", "image", (1, 8, 8)),
                                                     ModalitySpec("audio", "sequence", (92, 13))),
                       task="single-label", class_names=tuple("0123456789"))
    torch.manual_seed(0)
    model = build_model(make_cfg().model, info, method="robult").eval()
    export_onnx(model, info, tmp_path / "model.onnx", check=False)
    doc = (REPO / "docs" / "export.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/export.md", "exec"), {})
    assert "(2, 10)" in capsys.readouterr().out


def test_a_failed_write_leaves_no_partial_file(tmp_path, make_cfg, make_bundle, monkeypatch):
    import os
    bundle = make_bundle()
    ck, _ = make_checkpoint(tmp_path, make_cfg, bundle, "robult")
    out = tmp_path / "out" / "m.onnx"

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(ExportError, match=re.escape(f"{out}: cannot write the ONNX file (No space left on device)")):
        export_checkpoint(ck, out, check=False)
    assert list(out.parent.iterdir()) == []
