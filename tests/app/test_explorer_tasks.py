"""The explorer on the other tasks and on text: a multi-label and a regression model trained on a manifest
folder with a raw-text column and a .npy vector column. Every panel must show what the engine computes:
sigmoid probabilities per label (multi-label), the score itself (regression), for each modality subset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from explorer_helpers import WAIT, bar_heights, show_explorer, wait_shown
from robult_engine.config import RunConfig

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def _manifest(root: Path, task: str) -> Path:
    """40 / 12 / 12 samples; the text and the vector both carry the target, with noise."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    lines = ["id,split,label,vec,caption"]
    k = 0
    for split, n in (("train", 40), ("val", 12), ("test", 12)):
        for _ in range(n):
            a, b = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            if task == "multi-label":
                label = "|".join(n for n, on in (("comedy", a), ("drama", b)) if on) or "none"
            else:
                label = f"{(a - 0.5) * 2 + 0.3 * b + 0.01 * rng.standard_normal():.3f}"
            vec = np.array([a, b, *rng.standard_normal(4)], dtype=np.float32) + 0.2 * rng.standard_normal(6)
            np.save(root / f"v{k}.npy", vec.astype(np.float32))
            words = [WORDS[a], WORDS[2 + b], WORDS[4 + int(rng.integers(0, 2))]]
            lines.append(f"s{k},{split},{label},v{k}.npy,{' '.join(words)}")
            k += 1
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def _config(root: Path) -> RunConfig:
    return RunConfig().replace(**{
        "data.dataset": str(root), "data.label_fraction": 0.5, "train.epochs": 2, "train.batch_size": 16,
        "train.labeled_per_batch": 4, "train.device": "cpu", "model.d_h": 16, "model.d_z": 8, "model.d_u": 4,
        "model.d_hidden": 16, "model.text_buckets": 256}).validate()


@pytest.fixture(scope="module", params=["multi-label", "regression"])
def task_run(request, tmp_path_factory, train_once) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(f"explorer-{request.param}")
    return request.param, train_once(_config(_manifest(root / "data", request.param)))


def _engine(model, data, mask, task):
    with torch.no_grad():
        m = torch.tensor([tuple(mask)]) & data.mask
        out = model(data.inputs, data.lengths, m, with_reconstruction=True)
    logits = out.logits[0].float()
    probs = torch.sigmoid(logits) if task == "multi-label" else logits
    return probs.numpy(), out.z[0].norm(dim=-1).numpy(), out.u[0].norm(dim=-1).numpy()


def test_explorer_shows_multi_label_and_regression_outputs_for_every_subset(qtbot, task_run):
    from app.core.analysis.standalone import loaded_from_checkpoint
    task, ckpt = task_run
    panel = show_explorer(qtbot, loaded_from_checkpoint(str(ckpt)))
    try:
        model = panel.context.model
        assert panel.context.task == task
        names = panel.context.loaded.info.modality_names
        assert {s.kind for s in panel.context.loaded.info.modalities} == {"vector", "text"}
        expected = [True, True]
        for i in (None, 0, 0, 1):  # all on, vector off, back on, text off
            if i is not None:
                with qtbot.waitSignal(panel.sig_inspection_shown, timeout=WAIT):
                    panel.toggles.buttons[i].click()
                expected[i] = not expected[i]
                wait_shown(qtbot, panel)
            probs, zn, un = _engine(model, panel.sample.data, expected, task)
            np.testing.assert_allclose(bar_heights(panel.predictions.bars_sub), probs, atol=1e-5)
            np.testing.assert_allclose(bar_heights(panel.latents.bars_z), zn, rtol=1e-5)
            np.testing.assert_allclose(bar_heights(panel.latents.bars_u), un, rtol=1e-5)
            header = panel.predictions.header.text()
            used = " + ".join(n for n, on in zip(names, expected) if on)
            assert used in header
            if task == "regression":
                assert f"score <b>{probs[0]:+.3f}</b>" in header
                assert len(bar_heights(panel.predictions.bars_sub)) == 1
            else:  # the predicted label set: every label with p ≥ 0.5, outlined, and named in the header
                assert len(bar_heights(panel.predictions.bars_sub)) == len(panel.context.class_names)
                labels = [c for c, p in zip(panel.context.class_names, probs) if p >= 0.5]
                assert "labels <b style='font-size:large'>{" + ", ".join(labels) + "}</b>" in header
                outlined = [pen is not None for pen in panel.predictions.bars_sub.opts["pens"]]
                assert outlined == [p >= 0.5 for p in probs]
                assert panel.predictions.plot.getViewBox().viewRange()[1] == pytest.approx([0, 1.05])
        # the true target is shown in the task's terms, and the soft-PU panel has a state (values or a reason)
        assert panel.sample.target_name
        what = "true labels" if task == "multi-label" else "true score"
        assert what in panel.sample_panel.title.text() and what in panel.predictions.header.text()
        assert "true class" not in panel.predictions.header.text()
        if task == "regression":  # no "(x0.001)" rescaling of a score axis
            axis = panel.predictions.plot.getPlotItem().getAxis("left")
            assert axis.autoSIPrefixScale == 1.0 and "x0.001" not in axis.labelString()
        rule = "the labels with σ(c<sub>0</sub>(S)) ≥ 0.5" if task == "multi-label" else "the sign of c<sub>0</sub>(S)"
        assert rule in panel.softpu.header.text()
        if task == "multi-label":
            assert panel.sample.target_name.startswith("{")
        else:
            float(panel.sample.target_name)
        sp = panel.softpu.softpu
        assert sp is None or np.isfinite(np.asarray(sp.matrix, dtype=float)).all()
        # the dataset sample's text is shown as written in the manifest, not as hashed ids
        raw = panel.context.bundle.splits["test"].texts["caption"][0]
        assert raw.split()[0] in WORDS and len(raw.split()) == 3
        assert panel.sample_panel.views["caption"].text.toPlainText() == raw
        # browsing to other samples keeps working
        for _ in range(3):
            panel.sample_panel.next()
        wait_shown(qtbot, panel)
        assert panel.sample.ref.index == 3
        probs, _, _ = _engine(model, panel.sample.data, tuple(expected), task)
        np.testing.assert_allclose(bar_heights(panel.predictions.bars_sub), probs, atol=1e-5)
    finally:
        panel.shutdown()  # stops its jobs; pytest-qt closes and deletes the widget


def test_typed_text_alone_gives_a_prediction(qtbot, task_run):
    """A text the user types is hashed like the training texts; with the vector missing, only text counts."""
    from app.core.analysis.sources import load_file_sample
    from app.core.analysis.standalone import loaded_from_checkpoint
    from app.core.explorer_state import SampleRef
    from robult_engine.inspect import inspect_sample
    task, ckpt = task_run
    loaded = loaded_from_checkpoint(str(ckpt))
    info = loaded.info
    text_name = next(s.name for s in info.modalities if s.kind == "text")
    ref = SampleRef.sources({}, {text_name: "alpha delta echo"})
    sample = load_file_sample(info, ref, text_buckets=loaded.config.model.text_buckets)
    assert sample.data.mask[0].tolist() == [s.kind == "text" for s in info.modalities]
    assert next(v for v in sample.views if v.name == text_name).text == "alpha delta echo"
    insp = inspect_sample(loaded.model, sample.data, (True,) * len(info.modalities), task=task,
                          class_names=info.class_names)
    probs, _, _ = _engine(loaded.model, sample.data, (True, True), task)
    np.testing.assert_allclose(insp.probs, probs, atol=1e-5)
    assert insp.used == tuple(s.kind == "text" for s in info.modalities)


def test_robustness_matrix_on_these_tasks_matches_robult_eval(task_run):
    from app.core.analysis.robustness import RunRef, compute_robustness
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    from robult_engine.data import load_dataset
    from robult_engine.evaluation import evaluate_subsets
    from robult_engine.metrics import primary_metric
    task, ckpt_path = task_run
    ckpt = load_checkpoint(ckpt_path)
    bundle = load_dataset(ckpt.config.data)
    res = compute_robustness([RunRef(None, "run", "robult", str(ckpt_path))], bundle)
    assert not res.skipped and res.task == task
    want = evaluate_subsets(model_from_checkpoint(ckpt), bundle.splits["test"], bundle.info.modality_names, task)
    assert res.metric_names[0] == primary_metric(task)
    for metric in res.metric_names:
        col = res.matrix(metric)[:, 0]
        for i, (name, _) in enumerate(res.subsets):
            assert col[i] == pytest.approx(want[name][metric], abs=1e-12, nan_ok=True)
    # flips: samples whose subset prediction (labels set / sign of the score) differs from all modalities
    for name, sm in res.subsets:
        flips = res.flips("run", sm)
        assert flips.dtype == np.int64 and (flips < len(bundle.splits["test"])).all()
    assert len(res.flips("run", (True,) * len(res.modality_names))) == 0


def test_a_dataset_image_stored_as_bytes_is_shown_in_0_1(tmp_path):
    from PIL import Image

    from app.core.analysis.sources import load_dataset_sample
    from robult_engine.data.manifest import load_manifest
    root = tmp_path / "imgs"
    root.mkdir()
    lines = ["id,split,label,photo"]
    for k, split in enumerate(["train"] * 4 + ["val", "test"]):
        Image.new("RGB", (12, 12), (250 if k % 2 else 10, 128, 0)).save(root / f"p{k}.png")
        lines.append(f"s{k},{split},{'ab'[k % 2]},p{k}.png")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    bundle = load_manifest(root)
    assert bundle.splits["train"].inputs["photo"].dtype == torch.uint8
    view = load_dataset_sample(bundle, "train", 1).views[0]
    assert view.image.max() <= 1.0 and view.image.max() == pytest.approx(250 / 255, abs=1e-6)
