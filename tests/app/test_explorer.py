"""The explorer (issue 5): toggles, panels, files, robustness, latent view, exports, sessions.

Every number the panels show is checked against the engine called directly (`model(...)` with the mask).
Small models are trained once per session on tiny PID-Synth; the AV-Digits tests (image and real FSDD
recordings) train a tiny AV-Digits model and skip when its cache or the recordings are not there.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer_helpers import WAIT, bar_heights, dispose, show_explorer, wait_shown
from robult_engine.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
TINY = {"data.dataset": "pid-synth", "data.synth_n_train": 200, "train.epochs": 2, "model.d_h": 32,
        "model.d_z": 16, "model.d_u": 8, "model.d_hidden": 32, "train.device": "cpu"}


# ----------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ----------------------------------------------------------------------------------------------------------


def tiny_cfg(method: str = "robult", **changes) -> RunConfig:
    return RunConfig().replace(method=method, **{**TINY, **changes}).validate()


def _train(cfg: RunConfig, out: Path) -> Path:
    from robult_engine.trainer import Trainer
    final = Trainer(cfg, out_dir=out).run()
    assert final.checkpoint_path, final
    return Path(final.checkpoint_path)


@pytest.fixture(scope="session")
def pid_runs(train_once) -> dict[str, Path]:
    """best.pt of tiny PID-Synth runs: Robult, an ablation and a baseline (same data and labels)."""
    return {m: train_once(tiny_cfg(m)) for m in ("robult", "robult-no-rec", "supervised")}


@pytest.fixture(scope="session")
def avd_run(train_once) -> Path:
    """A tiny AV-Digits model (image + audio), or a skip when the AV-Digits cache is not built."""
    try:
        from robult_engine.data.avdigits import load_av_digits
        load_av_digits(build=False)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"AV-Digits cache not available ({e})")
    # what the panels show is checked against the same model called directly: one epoch is enough
    cfg = RunConfig().replace(**{"train.epochs": 1, "model.d_h": 32, "model.d_z": 16, "model.d_u": 8,
                                 "model.d_hidden": 32, "train.device": "cpu", "data.label_fraction": 0.2})
    return train_once(cfg)


def loaded(path, run_id=None):
    from app.core.analysis.standalone import loaded_from_checkpoint
    return loaded_from_checkpoint(str(path), run_id)


def engine_view(model, data, mask) -> dict[str, np.ndarray]:
    """What the explorer must show for `data` (one row) under `mask`, from the model called directly."""
    with torch.no_grad():
        m = torch.tensor([tuple(mask)]) & data.mask
        out = model(data.inputs, data.lengths, m, with_reconstruction=True)
    return {"probs": torch.softmax(out.logits[0], -1).numpy(), "used": tuple(m[0].tolist()),
            "z_norm": out.z[0].norm(dim=-1).numpy(), "u_norm": out.u[0].norm(dim=-1).numpy(),
            "mod_probs": torch.softmax(out.logits_mod[0], -1).numpy(),
            "rec": out.rec_error()[0].numpy()}


def check_panels(panel, model, mask, atol=1e-5):
    """Every panel shows the numbers of `mask` on the sample on screen, as the engine computes them."""
    want = engine_view(model, panel.sample.data, mask)
    insp = panel.inspection
    assert insp.subset == tuple(mask)
    assert insp.used == want["used"]
    assert panel.toggles.state() == tuple(mask)
    if any(want["used"]):
        np.testing.assert_allclose(bar_heights(panel.predictions.bars_sub), want["probs"], atol=atol)
        np.testing.assert_allclose(panel.predictions.inspection.probs, want["probs"], atol=atol)
    else:
        assert len(bar_heights(panel.predictions.bars_sub)) == 0
        assert "No modality selected" in panel.predictions.header.text()
    full = engine_view(model, panel.sample.data, (True,) * len(mask))
    np.testing.assert_allclose(bar_heights(panel.predictions.bars_all), full["probs"], atol=atol)
    np.testing.assert_allclose(bar_heights(panel.latents.bars_z), want["z_norm"], rtol=1e-5)
    np.testing.assert_allclose(bar_heights(panel.latents.bars_u), want["u_norm"], rtol=1e-5)
    np.testing.assert_allclose(bar_heights(panel.latents.bars_rec), want["rec"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(panel.latents.modpred_img.image, want["mod_probs"], atol=atol)
    # faded bars for the modalities that do not contribute
    alphas = [b.alpha() for b in panel.latents.bars_z.opts["brushes"]]
    assert [a == 255 for a in alphas] == list(want["used"])


@pytest.fixture
def explorer(qtbot, pid_runs):
    """A standalone ExplorerPanel on the tiny Robult run, showing test #0."""
    panel = show_explorer(qtbot, loaded(pid_runs["robult"]))
    yield panel
    dispose(qtbot, panel)


# ----------------------------------------------------------------------------------------------------------
# toggles
# ----------------------------------------------------------------------------------------------------------


def test_each_toggle_updates_every_panel_to_that_subset(qtbot, explorer):
    model = explorer.context.model
    assert explorer.sample.ref.split == "test" and explorer.sample.ref.index == 0
    check_panels(explorer, model, (True, True, True))
    expected = [True, True, True]
    for i in (0, 1, 2, 1, 0):  # every modality off and back on, one click at a time
        with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
            explorer.toggles.buttons[i].click()
        expected[i] = not expected[i]
        wait_shown(qtbot, explorer)
        check_panels(explorer, model, tuple(expected))
    # soft-PU does not depend on the toggles and matches the engine's inspector
    from robult_engine.inspect import encode_reference, inspect_sample
    ctx = explorer.context
    ref = encode_reference(model, ctx.reference, ctx.task)
    want = inspect_sample(model, explorer.sample.data, tuple(expected), memory_state=ctx.memory_state,
                          reference=ref, kernel=ctx.loaded.config.loss.kernel, bandwidth=ctx.loaded.config.loss.bandwidth,
                          class_names=ctx.class_names)
    np.testing.assert_allclose(explorer.softpu.softpu.matrix, want.softpu.matrix, atol=1e-6)
    assert explorer.softpu.softpu.kappa == pytest.approx(want.softpu.kappa, abs=1e-6)


def test_rapid_toggling_ends_on_the_last_state(qtbot, explorer):
    model = explorer.context.model
    rng = np.random.default_rng(3)
    for _ in range(25):  # no waiting between clicks
        explorer.toggles.buttons[int(rng.integers(0, 3))].click()
    last = explorer.toggles.state()
    wait_shown(qtbot, explorer)
    qtbot.wait(200)  # any straggler result arrives and must be dropped
    assert explorer.shown_generation == explorer.state.generation
    check_panels(explorer, model, last)
    # switching samples while toggling: still the last sample and the last toggles
    explorer.sample_panel.next()
    explorer.toggles.buttons[0].click()
    explorer.sample_panel.next()
    explorer.toggles.buttons[1].click()
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index == 2
    check_panels(explorer, model, explorer.toggles.state())


def test_all_modalities_off_is_a_clear_state(qtbot, explorer):
    for i in range(3):
        explorer.toggles.buttons[i].click()
    wait_shown(qtbot, explorer)
    assert explorer.inspection.empty
    assert "No modality selected" in explorer.predictions.header.text()
    assert explorer.predictions.empty_text.toPlainText() == "No modality selected"
    check_panels(explorer, explorer.context.model, (False, False, False))
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        explorer.toggles.all_btn.click()
    wait_shown(qtbot, explorer)
    assert not explorer.inspection.empty and explorer.predictions.empty_text.toPlainText() == ""


def test_keyboard_shortcuts_toggle_and_browse(qtbot, explorer):
    from PySide6.QtCore import Qt
    explorer.activateWindow()
    qtbot.waitUntil(lambda: explorer.isActiveWindow(), timeout=5000)
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        qtbot.keyClick(explorer, Qt.Key.Key_2, Qt.KeyboardModifier.AltModifier)
    wait_shown(qtbot, explorer)
    assert explorer.toggles.state() == (True, False, True)
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        qtbot.keyClick(explorer, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index == 1 and explorer.toggles.state() == (True, False, True)
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        qtbot.keyClick(explorer, Qt.Key.Key_PageUp)
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index == 0
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        qtbot.keyClick(explorer, Qt.Key.Key_0, Qt.KeyboardModifier.AltModifier)
    wait_shown(qtbot, explorer)
    assert explorer.toggles.state() == (True, True, True)
    tips = [b.toolTip() for b in explorer.toggles.buttons]
    assert all("Alt+" in t for t in tips)
    assert "shared projector g_0" in explorer.latents.norms.toolTip()
    assert "modality projector g_i" in explorer.latents.norms.toolTip()
    assert "RBF kernel of the distance to the labeled class prototype" in explorer.softpu.header.toolTip()


def test_find_goes_to_the_next_sample_whose_id_matches(qtbot, explorer):
    sp = explorer.sample_panel
    test = explorer.context.bundle.splits["test"]
    target = 7
    wanted = str(test.ids[target])
    found = sp.matches(wanted.upper())  # ignoring case
    assert target in found.tolist() and all(wanted.casefold() in str(test.ids[i]).casefold() for i in found)
    sp.find.setText(wanted)
    sp.find_next()
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.split == "test" and explorer.sample.ref.index == int(found[0])
    assert sp.find_info.text() == f"1 of {len(found)}"
    sp.find.setText("no sample has this id")
    sp.find_next()
    assert sp.find_info.text() == "no match" and explorer.sample.ref.index == int(found[0])


def test_browsing_split_class_filter_random(qtbot, explorer):
    sp = explorer.sample_panel
    test = explorer.context.bundle.splits["test"]
    sp.klass.setCurrentIndex(1 + 3)  # class index 3
    wait_shown(qtbot, explorer)
    assert int(test.target[explorer.sample.ref.index]) == 3
    first = explorer.sample.ref.index
    sp.next()
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index > first and int(test.target[explorer.sample.ref.index]) == 3
    sp.previous()
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index == first
    sp.random()
    wait_shown(qtbot, explorer)
    assert int(test.target[explorer.sample.ref.index]) == 3
    i = sp.split.findText("train")
    sp.split.setCurrentIndex(i)
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.split == "train"
    lab = set(explorer.context.labeled_indices.tolist())
    assert explorer.sample.labeled == (explorer.sample.ref.index in lab)
    assert ("unlabeled in this run" in sp.title.text()) == (not explorer.sample.labeled)
    # a labeled training sample: soft-PU uses its label and κ = 1
    j = sorted(lab)[0]
    sp.index.setValue(j)
    wait_shown(qtbot, explorer)
    assert explorer.inspection.softpu.labeled and explorer.inspection.softpu.kappa == 1.0


def test_soft_pu_panel_shows_history_or_says_unavailable(qtbot, explorer, store):
    pu = explorer.softpu
    assert pu.kappa_history is None
    assert "unavailable" in pu.hist_note.toPlainText()
    assert pu.top.rowCount() == len(explorer.inspection.softpu.top)
    n = len(explorer.inspection.softpu.ref_indices)
    assert pu.matrix_img.image.shape == (n + 1, n + 1)
    # the same model, now as a run of the session with epoch rows: its κ histogram is read from the store
    from robult_engine.events import EpochEnded
    ctx = explorer.context
    run_id = store.create_run(ctx.loaded.config)
    edges = tuple(i / 20 for i in range(21))
    for e in range(3):
        hist = [0.0] * 20
        hist[5 + 4 * e] = 1.0
        store.add_epoch(run_id, EpochEnded(e, 3, {"total": 1.0}, {"m0": {"accuracy": 0.5}}, 0.5, False,
                                           {"m0": 1.0}, {"m0": 1.0}, {"m0": 0.1}, tuple(hist), edges, 0.3, 0.5,
                                           1.0))
    explorer.store = store
    explorer.set_model(loaded(ctx.loaded.checkpoint_path, run_id))
    wait_shown(qtbot, explorer)
    h, e, epochs = pu.kappa_history
    assert h.shape == (3, 20) and epochs == [1, 2, 3] and h[2, 13] == 1.0


# ----------------------------------------------------------------------------------------------------------
# own files
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def avd_explorer(qtbot, avd_run):
    panel = show_explorer(qtbot, loaded(avd_run), timeout=60_000)
    yield panel
    dispose(qtbot, panel)


def _digit_png(path: Path) -> Path:
    from PIL import Image, ImageDraw
    img = Image.new("L", (64, 64), 255)
    d = ImageDraw.Draw(img)
    d.ellipse((16, 8, 48, 56), outline=0, width=6)  # a handwritten-ish zero
    img.save(path)
    return path


def _engine_on_files(model, info, sources):
    from robult_engine.data.frontends import sample_from_sources
    return sample_from_sources(info, sources)


def test_open_an_image_file(qtbot, avd_explorer, tmp_path):
    png = _digit_png(tmp_path / "zero.png")
    with qtbot.waitSignal(avd_explorer.sig_inspection_shown, timeout=WAIT):
        assert avd_explorer.sample_panel.open_paths([str(png)])
    wait_shown(qtbot, avd_explorer)
    s = avd_explorer.sample
    assert dict(s.ref.files) == {"image": str(png)}
    assert s.views[0].present and not s.views[1].present
    assert avd_explorer.sample_panel.views["image"].image.pixmap().width() >= 8 * 16  # scaled up, nearest
    assert not avd_explorer.toggles.buttons[1].isEnabled()  # the sample has no audio
    info = avd_explorer.context.info
    data = _engine_on_files(avd_explorer.context.model, info, {"image": str(png)})
    torch.testing.assert_close(s.data.inputs["image"], data.inputs["image"])
    check_panels(avd_explorer, avd_explorer.context.model, (True, True))
    assert avd_explorer.inspection.used == (True, False)
    assert not avd_explorer.inspection.softpu.valid  # S needs both modalities


def test_open_a_real_fsdd_recording(qtbot, avd_explorer, fsdd_dir, tmp_path):
    wav = sorted(fsdd_dir.glob("3_*.wav"))[0]
    png = _digit_png(tmp_path / "zero.png")
    with qtbot.waitSignal(avd_explorer.sig_inspection_shown, timeout=WAIT):
        avd_explorer.sample_panel.open_paths([str(wav)])
    wait_shown(qtbot, avd_explorer)
    s = avd_explorer.sample
    audio = s.views[1]
    assert audio.present and audio.waveform is not None and audio.sample_rate == 8000 and len(audio.frames) > 3
    view = avd_explorer.sample_panel.views["audio"]
    assert view.wave.isVisibleTo(avd_explorer) and view.frames_img.image.shape[0] == 13
    from robult_engine.data.audio import audio_file_to_features
    feats = audio_file_to_features(wav)
    np.testing.assert_allclose(audio.frames, feats[:len(audio.frames)], atol=1e-6)
    check_panels(avd_explorer, avd_explorer.context.model, (True, True))
    # image and recording together, dropped onto the panel
    from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(png)), QUrl.fromLocalFile(str(wav))])
    ev = QDropEvent(QPointF(QPoint(50, 50)), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                    Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(avd_explorer.sig_inspection_shown, timeout=WAIT):
        avd_explorer.sample_panel.dropEvent(ev)
    wait_shown(qtbot, avd_explorer)
    assert dict(avd_explorer.sample.ref.files) == {"image": str(png), "audio": str(wav)}
    assert avd_explorer.inspection.used == (True, True) and avd_explorer.inspection.softpu.valid
    check_panels(avd_explorer, avd_explorer.context.model, (True, True))
    with qtbot.waitSignal(avd_explorer.sig_inspection_shown, timeout=WAIT):
        avd_explorer.toggles.buttons[0].click()  # image off: the recording alone
    wait_shown(qtbot, avd_explorer)
    check_panels(avd_explorer, avd_explorer.context.model, (False, True))


def test_bad_files_are_refused_and_the_app_keeps_running(qtbot, avd_explorer, tmp_path):
    before = avd_explorer.sample.ref
    for name, what in (("fake.png", "not an image"), ("fake.wav", "not a readable audio file")):
        bad = tmp_path / name
        bad.write_text("this is plain text, not media\n")
        gen = avd_explorer.state.generation
        avd_explorer.sample_panel.open_paths([str(bad)])
        qtbot.waitUntil(lambda: "Could not use that sample" in avd_explorer.message, timeout=WAIT)
        assert what in avd_explorer.message and name in avd_explorer.message
        assert avd_explorer.sample.ref == before  # the last good sample stays on screen
        assert avd_explorer.state.generation > gen
        avd_explorer._message("", "info")
    unsupported = tmp_path / "notes.docx"
    unsupported.write_text("x")
    assert not avd_explorer.sample_panel.open_paths([str(unsupported)])
    assert "unsupported file type .docx" in avd_explorer.message
    # still alive: a toggle gives a fresh, correct result
    with qtbot.waitSignal(avd_explorer.sig_inspection_shown, timeout=WAIT):
        avd_explorer.toggles.buttons[1].click()
    wait_shown(qtbot, avd_explorer)
    check_panels(avd_explorer, avd_explorer.context.model, (True, False))


def test_a_file_type_the_model_does_not_take_is_refused(qtbot, explorer, tmp_path):
    png = _digit_png(tmp_path / "x.png")
    assert not explorer.sample_panel.open_paths([str(png)])  # PID-Synth has only vector modalities
    assert "take no image" in explorer.message
    np_file = tmp_path / "v.npy"
    np.save(np_file, np.ones(7, dtype=np.float32))  # wrong size for m0
    explorer.sample_panel.open_paths([str(np_file)])
    qtbot.waitUntil(lambda: "Could not use that sample" in explorer.message, timeout=WAIT)
    assert "needs" in explorer.message
    good = tmp_path / "good.npy"
    d = explorer.context.info.modalities[0].shape[0]
    np.save(good, np.linspace(-1, 1, d).astype(np.float32))
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        explorer.sample_panel.open_paths([str(good)])
    wait_shown(qtbot, explorer)
    assert explorer.inspection.present == (True, False, False)
    check_panels(explorer, explorer.context.model, (True, True, True))


# ----------------------------------------------------------------------------------------------------------
# robustness
# ----------------------------------------------------------------------------------------------------------


def _run_refs(pid_runs):
    from app.core.analysis.robustness import RunRef
    return [RunRef(i + 1, f"#{i + 1} {m}", m, str(p)) for i, (m, p) in enumerate(pid_runs.items())]


@pytest.fixture
def robustness(qtbot, pid_runs):
    from app.views.analysis.robustness_panel import RobustnessPanel
    panel = RobustnessPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 600)
    panel.show()
    panel.class_names = tuple(loaded(pid_runs["robult"]).info.class_names)
    panel.set_runs(_run_refs(pid_runs), tiny_cfg().data)
    with qtbot.waitSignal(panel.sig_result_ready, timeout=120_000):
        panel.compute()
    yield panel
    dispose(qtbot, panel)


def test_robustness_matrix_equals_evaluate_subsets(robustness, pid_runs):
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    from robult_engine.data import load_dataset
    from robult_engine.evaluation import evaluate_subsets
    r = robustness.result
    bundle = load_dataset(tiny_cfg().data)
    assert [run.method for run in r.runs] == list(pid_runs) and not r.skipped
    for metric in ("accuracy", "macro_f1"):
        mat = r.matrix(metric)
        for j, (m, path) in enumerate(pid_runs.items()):
            ck = load_checkpoint(path)
            table = evaluate_subsets(model_from_checkpoint(ck), bundle.splits["test"], bundle.info.modality_names,
                                     bundle.info.task)  # what `robult eval` prints
            for i, (name, _) in enumerate(r.subsets):
                assert mat[i, j] == pytest.approx(table[name][metric], abs=1e-12)
    # the cells are annotated with those values
    texts = [t.toPlainText() for t in robustness.cell_texts]
    acc = r.matrix(robustness.current_metric)
    assert texts == [f"{v:.3f}" for v in acc.reshape(-1)]
    assert robustness.img.image.shape == acc.shape
    assert "done" in robustness.progress.format()
    # the colour scale is the metric's range, not the matrix's min and max, and it says so
    assert robustness.color_range == (0.0, 1.0) and tuple(robustness.img.levels) == (0.0, 1.0)
    assert "colour scale 0 – 1" in robustness.plot.getPlotItem().titleLabel.text
    n = len(r.runs)
    assert f"{n} run{'s' if n != 1 else ''} × {len(r.subsets)} subsets" in robustness.info.text()


def test_robustness_colour_ranges():
    from app.views.analysis.robustness_panel import color_range
    mat = np.array([[0.986], [1.0]])
    assert color_range("accuracy", mat) == (0.0, 1.0)  # 0.986 and 1.000 look nearly alike, as they are
    assert color_range("pearson_r", mat) == (-1.0, 1.0)
    assert color_range("mae", np.array([[0.5], [2.0], [np.nan]])) == (0.0, 2.0)  # errors: 0 to the largest


def test_clicking_a_cell_lists_flips_and_opens_one_in_the_explorer(qtbot, robustness, explorer):
    from PySide6.QtCore import QPoint, Qt
    robustness.sig_open_sample.connect(
        lambda split, i, mask: explorer.open_sample(__import__("app.core.explorer_state", fromlist=["SampleRef"])
                                                    .SampleRef.dataset(split, i), mask))
    r = robustness.result
    col = 0
    row = max(range(len(r.subsets) - 1), key=lambda i: len(r.flips(r.runs[col].label, r.subsets[i][1])))
    flips = r.flips(r.runs[col].label, r.subsets[row][1])
    assert len(flips) > 0
    # a real mouse click in the middle of the cell
    vb = robustness.plot.getPlotItem().getViewBox()
    scene_pt = vb.mapViewToScene(pg_point(col + 0.5, row + 0.5))
    view_pt = robustness.plot.mapFromScene(scene_pt)
    qtbot.mouseClick(robustness.plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(int(view_pt.x()),
                                                                                      int(view_pt.y())))
    qtbot.waitUntil(lambda: robustness.selected == (row, col), timeout=5000)
    assert robustness.flip_rows == flips.tolist()
    assert robustness.flips.count() == len(flips)
    item = robustness.flips.item(0)
    rect = robustness.flips.visualItemRect(item)
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        qtbot.mouseClick(robustness.flips.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.split == "test" and explorer.sample.ref.index == int(flips[0])
    assert explorer.toggles.state() == r.subsets[row][1]
    # it really flips: the subset's prediction differs from all modalities
    assert explorer.inspection.pred != explorer.inspection.pred_all
    check_panels(explorer, explorer.context.model, r.subsets[row][1])


def pg_point(x, y):
    from PySide6.QtCore import QPointF
    return QPointF(x, y)


def test_robustness_can_be_cancelled(qtbot, pid_runs):
    from app.views.analysis.robustness_panel import RobustnessPanel
    panel = RobustnessPanel()
    qtbot.addWidget(panel)
    refs = _run_refs(pid_runs) * 30  # long enough to be cancelled on the way
    panel.set_runs(refs, tiny_cfg().data)
    panel.compute()
    qtbot.waitUntil(lambda: panel.progress.value() >= 1, timeout=60_000)
    panel.cancel()
    qtbot.waitUntil(lambda: panel._job is None, timeout=60_000)
    assert panel.progress.format() == "cancelled"
    assert panel.result is None and panel.compute_btn.isEnabled()
    dispose(qtbot, panel)


def test_robustness_skips_runs_on_other_data(qtbot, pid_runs, tmp_path):
    from app.core.analysis.robustness import RunRef, compute_robustness
    from robult_engine.data import load_dataset
    other = _train(tiny_cfg("robult", **{"data.seed": 5}), tmp_path / "other")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    refs = [RunRef(1, "ok", "robult", str(pid_runs["robult"])), RunRef(2, "other", "robult", str(other)),
            RunRef(3, "bad", "robult", str(bad))]
    res = compute_robustness(refs, load_dataset(tiny_cfg().data))
    assert [r.label for r in res.runs] == ["ok"]
    assert any(s.startswith("other: trained on other data") for s in res.skipped)
    assert any(s.startswith("bad: ") for s in res.skipped)


# ----------------------------------------------------------------------------------------------------------
# latent view
# ----------------------------------------------------------------------------------------------------------


def test_latent_view_colours_and_click_opens_the_sample(qtbot, explorer):
    from PySide6.QtCore import QPoint, Qt

    from app.views.analysis.latent_view import LatentViewPanel
    from robult_engine.evaluation import encode_split
    from robult_engine.inspect import latent_points
    lv = LatentViewPanel()
    qtbot.addWidget(lv)
    lv.resize(1000, 500)
    lv.show()
    qtbot.waitExposed(lv)
    lv.sig_open_sample.connect(lambda split, i: explorer.open_sample(
        __import__("app.core.explorer_state", fromlist=["SampleRef"]).SampleRef.dataset(split, i)))
    with qtbot.waitSignal(lv.sig_points_ready, timeout=WAIT):
        lv.set_context(explorer.context.loaded, explorer.context.bundle)
    test = explorer.context.bundle.splits["test"]
    want = latent_points(encode_split(explorer.context.model, test), "z")
    np.testing.assert_allclose(lv.points["z"]["xy"], want["xy"], atol=1e-6)
    assert len(lv.scatter["z"].points()) == 3 * len(test)
    for mode in ("modality", "labeled / unlabeled", "class"):
        lv.colour_by.setCurrentText(mode)
    with qtbot.waitSignal(lv.sig_points_ready, timeout=WAIT):
        lv.split.setCurrentText("train")
    lv.colour_by.setCurrentText("labeled / unlabeled")
    lab = set(explorer.context.labeled_indices.tolist())
    brushes = lv.scatter["z"].data["brush"]
    idx = [d[1] for d in lv.scatter["z"].data["data"]]
    n_dark = sum(1 for b, i in zip(brushes, idx) if b.color().alpha() == 255)
    assert n_dark == 3 * len(lab) and all(i in lab for b, i in zip(brushes, idx) if b.color().alpha() == 255)
    with qtbot.waitSignal(lv.sig_points_ready, timeout=WAIT):
        lv.split.setCurrentText("test")
    # a real click on one point
    spot = lv.scatter["z"].points()[10]
    vb = lv.plot_z.getPlotItem().getViewBox()
    qtbot.wait(100)
    pos = lv.plot_z.mapFromScene(vb.mapViewToScene(spot.pos()))
    split, index = spot.data()
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        qtbot.mouseClick(lv.plot_z.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(int(pos.x()), int(pos.y())))
    wait_shown(qtbot, explorer)
    clicked = explorer.sample.ref
    assert clicked.split == "test"
    xy = lv.points["z"]["xy"][lv.points["z"]["sample"] == clicked.index]
    assert np.min(np.linalg.norm(xy - np.array([spot.pos().x(), spot.pos().y()]), axis=1)) < 0.5 or \
        clicked.index == index
    dispose(qtbot, lv)


# ----------------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------------


def _check_files(files):
    from PySide6.QtGui import QImage
    kinds = set()
    for f in map(Path, files):
        assert f.is_file() and f.stat().st_size > 0, f
        if f.suffix == ".csv":
            rows = list(csv.reader(open(f, encoding="utf-8")))
            assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows), f
        elif f.suffix == ".png":
            img = QImage(str(f))
            assert not img.isNull() and img.width() > 100, f
        elif f.suffix == ".svg":
            root = ET.parse(f).getroot()
            assert root.tag.endswith("svg"), f
            assert len(list(root.iter())) > 10, f
        elif f.suffix == ".json":
            import json
            json.loads(f.read_text())
        kinds.add(f.suffix)
    return kinds


def test_explorer_export_writes_png_svg_csv(qtbot, explorer, tmp_path, dialogs):
    files = explorer.export_all(tmp_path / "exp")
    assert _check_files(files) == {".png", ".svg", ".csv", ".json"}
    names = {f.name for f in map(Path, files)}
    for n in ("class_probabilities.png", "class_probabilities.svg", "latent_norms.svg", "softpu_matrix.png",
              "inspection_predictions.csv", "inspection_modalities.csv", "softpu_reference.csv", "softpu_matrix.csv"):
        assert n in names
    rows = list(csv.DictReader(open(tmp_path / "exp" / "inspection_predictions.csv")))
    np.testing.assert_allclose([float(r["p_subset"]) for r in rows], explorer.inspection.probs, atol=1e-9)
    # through the button and the (stubbed) folder dialog
    dialogs.open_dir = str(tmp_path / "via-button")
    (tmp_path / "via-button").mkdir()
    explorer.export_btn.click()
    assert (tmp_path / "via-button" / "class_probabilities.svg").is_file()
    assert "Exported" in explorer.message


def test_robustness_report_folder(robustness, tmp_path, explorer):
    out = robustness.export_report(tmp_path, extra_plots={"class_probabilities": explorer.predictions.plot})
    files = list(out.iterdir())
    kinds = _check_files(files)
    assert kinds == {".csv", ".png", ".svg", ".json"}
    names = {f.name for f in files}
    assert {"matrix_accuracy.csv", "matrix_macro_f1.csv", "all_metrics.csv", "config.json",
            "robustness_accuracy.png", "robustness_accuracy.svg", "class_probabilities.png"} <= names
    rows = list(csv.reader(open(out / "matrix_accuracy.csv")))
    assert rows[0][1:] == [r.label for r in robustness.result.runs]
    got = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(got, robustness.result.matrix("accuracy"), atol=1e-9)
    import json
    cfg = json.loads((out / "config.json").read_text())
    assert set(cfg["runs"]) == {r.label for r in robustness.result.runs}
    assert cfg["runs"]["#1 robult"]["config"]["method"] == "robult"


# ----------------------------------------------------------------------------------------------------------
# the main window: install, sessions, live training
# ----------------------------------------------------------------------------------------------------------


def _window_with_run(make_window, store, pid_runs, tmp_path, method="robult"):
    run_dir = tmp_path / f"run-{method}"
    run_dir.mkdir()
    ck = run_dir / "best.pt"
    shutil.copy(pid_runs[method], ck)
    run_id = store.create_run(tiny_cfg(method), run_dir=str(run_dir))
    store.update_run(run_id, checkpoint_path=str(ck), status="finished")
    return run_id, ck


def test_install_adds_tabs_menu_and_follows_the_current_model(qtbot, make_window, store, pid_runs, tmp_path):
    run_id, ck = _window_with_run(make_window, store, pid_runs, tmp_path)
    w = make_window(store=store)
    titles = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert {"Explorer", "Robustness", "Latent space"} <= set(titles)
    menus = [a.text() for a in w.menuBar().actions()]
    assert "E&xplorer" in menus and menus.index("E&xplorer") < menus.index("&Help")
    w.open_checkpoint(str(ck), run_id=run_id)
    wait_shown(qtbot, w.explorer)
    assert w.explorer.loaded_model.run_id == run_id
    assert [r.run_id for r in w.analysis.robustness.runs] == [run_id]
    qtbot.waitUntil(lambda: w.analysis.latent_view.points is not None, timeout=WAIT)
    w.act_robustness.trigger()
    assert w.tabs.currentWidget() is w.analysis.robustness
    with qtbot.waitSignal(w.analysis.robustness.sig_result_ready, timeout=60_000):
        w.analysis.robustness.compute()
    r = w.analysis.robustness.result
    row = max(range(len(r.subsets) - 1), key=lambda i: len(r.flips(r.runs[0].label, r.subsets[i][1])))
    flips = w.analysis.robustness.select_cell(row, 0)
    if len(flips):
        with qtbot.waitSignal(w.explorer.sig_inspection_shown, timeout=WAIT):
            w.analysis.robustness._on_flip_clicked(w.analysis.robustness.flips.item(0))
        assert w.tabs.currentWidget() is w.explorer
        wait_shown(qtbot, w.explorer)
        assert w.explorer.sample.ref.index == int(flips[0])


def test_a_reopened_session_restores_the_explorer(qtbot, make_window, store, pid_runs, tmp_path):
    run_id, ck = _window_with_run(make_window, store, pid_runs, tmp_path)
    w = make_window(store=store)
    ex = w.explorer
    w.reopen_session(run_id)
    wait_shown(qtbot, ex)
    ex.sample_panel.split.setCurrentText("val")
    wait_shown(qtbot, ex)
    ex.sample_panel.index.setValue(5)
    wait_shown(qtbot, ex)
    ex.toggles.buttons[1].click()
    wait_shown(qtbot, ex)
    pred = ex.inspection.summary()
    qtbot.waitUntil(lambda: store.latest_inspection(run_id) is not None and
                    store.latest_inspection(run_id)["sample"] == {"kind": "dataset", "split": "val", "index": 5} and
                    store.latest_inspection(run_id)["enabled"] == {"m0": True, "m1": False, "m2": True},
                    timeout=5000)  # the debounced save
    saved = store.latest_inspection(run_id)
    assert saved["prediction"]["pred"] == pred["pred"]
    w.close()
    # a new window on the same database: reopening the session brings the explorer back as it was
    w2 = make_window(store=store)
    ex2 = w2.explorer
    w2.reopen_session(run_id)
    qtbot.waitUntil(lambda: ex2.sample is not None and ex2.sample.ref.split == "val", timeout=WAIT)
    wait_shown(qtbot, ex2)
    assert ex2.sample.ref.index == 5
    assert ex2.toggles.state() == (True, False, True)
    assert ex2.inspection.summary() == pred
    assert ex2.sample_panel.current_split == "val" and ex2.sample_panel.index.value() == 5


def test_a_restored_inspection_whose_files_are_gone_falls_back_to_the_dataset(qtbot, make_window, store, pid_runs,
                                                                              tmp_path):
    run_id, ck = _window_with_run(make_window, store, pid_runs, tmp_path)
    gone = tmp_path / "moved-away.npy"
    store.save_inspection(run_id, {"version": 1, "sample": {"kind": "files", "files": {"m0": str(gone)}, "texts": {}},
                                   "enabled": {"m0": True, "m1": False, "m2": True}, "prediction": None})
    w = make_window(store=store)
    ex = w.explorer
    w.reopen_session(run_id)
    qtbot.waitUntil(lambda: ex.sample is not None, timeout=WAIT)
    wait_shown(qtbot, ex)
    assert ex.sample.ref.is_dataset and ex.sample.ref.split == "test"
    assert ex.toggles.state() == (True, True, True)


def test_inspecting_the_model_that_is_training_runs_on_the_training_thread(qtbot, make_window, store, pid_runs,
                                                                          tmp_path):
    run_id, ck = _window_with_run(make_window, store, pid_runs, tmp_path)
    w = make_window(store=store)
    ex = w.explorer
    w.open_checkpoint(str(ck), run_id=run_id)
    wait_shown(qtbot, ex)
    assert ex.live_tag.text() == ""
    # a long run with the same data and architecture: the explorer follows the live model
    cfg = tiny_cfg("robult", **{"train.epochs": 400, "train.patience": 0})
    w.start_training(cfg)
    qtbot.waitUntil(lambda: w.controller.is_running and w.buffers.global_step > 0, timeout=60_000)
    threads = []
    real = w.controller.run_on_model

    def spy(fn, **callbacks):
        def on_training_thread(model):
            threads.append(threading.get_ident())
            return fn(model)
        return real(on_training_thread, **callbacks)
    w.controller.run_on_model = spy
    with qtbot.waitSignal(ex.sig_inspection_shown, timeout=WAIT):
        ex.toggles.buttons[0].click()
    wait_shown(qtbot, ex)
    assert threads and threading.get_ident() not in threads and "live model" in ex.live_tag.text()
    assert ex.inspection.subset == (False, True, True)
    ex.live_box.setChecked(False)  # back to the loaded checkpoint, on the explorer's own pool
    wait_shown(qtbot, ex)
    assert ex.live_tag.text() == ""
    check_panels(ex, ex.context.model, (False, True, True))
    w.controller.run_on_model = real
    w.stop_training()
    qtbot.waitUntil(lambda: not w.controller.is_running, timeout=60_000)


# ----------------------------------------------------------------------------------------------------------
# panels run alone
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [*(f"app.views.explorer.{m}" for m in ("predictions_panel", "latents_panel",
                                                                          "softpu_panel", "sample_panel", "toggles")),
                                    "app.views.analysis.robustness_panel", "app.views.analysis.latent_view"])
def test_each_panel_module_runs_alone(module, tmp_path):
    shot = tmp_path / f"{module.rsplit('.', 1)[1]}.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "ROBULT_DEMO_SCREENSHOT": str(shot)}
    r = subprocess.run([sys.executable, "-m", module], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image
    with Image.open(shot) as im:
        assert im.width > 100 and im.height > 30


def test_a_lower_is_better_matrix_leaves_the_shared_colour_map_alone():
    """Showing an MAE matrix reversed pyqtgraph's cached viridis in place, so the next accuracy matrix (and every
    other viridis in the app) was drawn bright-is-worse."""
    import pyqtgraph as pg

    from app.views.analysis.robustness_panel import matrix_colormap
    before = pg.colormap.get("viridis").getLookupTable(0.0, 1.0, 4).copy()
    low = matrix_colormap(better_high=False).getLookupTable(0.0, 1.0, 4)
    high = matrix_colormap(better_high=True).getLookupTable(0.0, 1.0, 4)
    assert (pg.colormap.get("viridis").getLookupTable(0.0, 1.0, 4) == before).all()  # the shared one untouched
    assert (high == before).all()
    assert abs(low.astype(int) - before[::-1].astype(int)).max() <= 2  # reversed (interpolation rounds a little)
