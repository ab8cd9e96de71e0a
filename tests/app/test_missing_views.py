"""Missing modalities in the app (issue 11): the explorer's drawn MCAR mask and the robustness tab's curves.

The drawn mask is checked against `robult_engine.missing.draw_mask` (same split, spec and seed), against η and
against the data's own mask, and the panels against the model called directly; the curve values against
`metrics_under_masks` on the same masks. Tiny PID-Synth models are trained once per session.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from explorer_helpers import WAIT, bar_heights, dispose, show_explorer, wait_shown
from robult_engine.config import RunConfig

TINY = {"data.dataset": "pid-synth", "data.synth_n_train": 200, "train.epochs": 2, "model.d_h": 32,
        "model.d_z": 16, "model.d_u": 8, "model.d_hidden": 32, "train.device": "cpu"}


def tiny_cfg(method: str = "robult", **changes) -> RunConfig:
    return RunConfig().replace(method=method, **{**TINY, **changes}).validate()


@pytest.fixture(scope="session")
def runs(train_once) -> dict[str, Path]:
    return {m: train_once(tiny_cfg(m)) for m in ("robult", "supervised")}


def loaded(path, run_id=None):
    from app.core.analysis.standalone import loaded_from_checkpoint
    return loaded_from_checkpoint(str(path), run_id)


@pytest.fixture
def explorer(qtbot, runs):
    panel = show_explorer(qtbot, loaded(runs["robult"]))
    yield panel
    dispose(qtbot, panel)


# ----------------------------------------------------------------------------------------------------------
# explorer: apply a mechanism
# ----------------------------------------------------------------------------------------------------------


def test_drawn_mcar_mask_is_the_engines_and_updates_every_panel(qtbot, explorer):
    from robult_engine.missing import draw_mask, parse_missing
    ctl = explorer.mechanism
    ctx = explorer.context
    split = ctx.bundle.splits["test"]
    seen = set()
    for seed in range(6):
        ctl.eta.setText("0.5")
        ctl.seed.setValue(seed)
        gen = explorer.state.generation
        mask = ctl.draw()
        want = tuple(draw_mask(split, ctx.bundle.info, parse_missing("mcar:0.5")[0], seed)[0].tolist())
        assert mask == want and ctl.last_seed == seed
        assert ctl.seed.value() == seed + 1  # the next click draws a new mask
        assert explorer.state.enabled == want and explorer.toggles.state() == want
        assert any(want)  # a sample never loses every modality
        seen.add(want)
        if explorer.state.generation != gen:  # a new mask: the panels follow, as on a click
            wait_shown(qtbot, explorer)
        insp = explorer.inspection
        assert insp.subset == want
        data = explorer.sample.data
        with torch.no_grad():
            out = ctx.model(data.inputs, data.lengths, torch.tensor([want]) & data.mask)
        np.testing.assert_allclose(bar_heights(explorer.predictions.bars_sub),
                                   torch.softmax(out.logits[0], -1).numpy(), atol=1e-5)
        gone = [n for n, k in zip(explorer.state.modality_names, want) if not k]
        assert (", ".join(gone) + " missing" if gone else "nothing missing") in ctl.result.text()
    assert len(seen) > 1  # different seeds, different masks


@pytest.mark.parametrize("mech, eta", [("mnar-value", "0.5"), ("mnar-class", "0.8/0.1@0"), ("exclusive", "")])
def test_every_mechanism_draws_the_engines_mask_for_the_sample(qtbot, explorer, mech, eta):
    """Beside MCAR: the drawn mask of each mechanism is row `index` of the engine's mask on the split (what
    `robult eval --missing SPEC --mask-seed S` gives that sample), and is applied to the toggles."""
    from robult_engine.missing import draw_mask, parse_missing
    ctl = explorer.mechanism
    split = explorer.context.bundle.splits["test"]
    ctl.mechanism.setCurrentText(mech)
    assert ctl.eta.isEnabled() == (mech != "exclusive")
    if eta:
        ctl.eta.setText(eta)
    spec = parse_missing(mech if mech == "exclusive" else f"{mech}:{eta}")[0]
    index = explorer.state.sample.index
    drawn = []
    for seed in range(4):
        ctl.seed.setValue(seed)
        mask = ctl.draw()
        want = tuple(draw_mask(split, explorer.context.bundle.info, spec, seed)[index].tolist())
        assert mask == want and explorer.state.enabled == want, (mech, seed)
        assert ctl.result.text().count(spec.label) == 1
        drawn.append(mask)
        if mech == "exclusive":
            assert sum(mask) == 1
    assert all(any(m) for m in drawn)


def test_mnar_on_the_users_own_files_says_why_not():
    from types import SimpleNamespace

    from app.core.explorer_state import ExplorerState, SampleRef
    from app.views.explorer.mechanism_control import MechanismControl
    st = ExplorerState()
    st.set_modalities(("a", "b"))
    st.set_context(SimpleNamespace(loaded=SimpleNamespace(config=tiny_cfg()), bundle=None))
    st.set_sample(SampleRef.sources(files={"a": "/x.npy", "b": "/y.npy"}))
    st.set_present((True, True))
    ctl = MechanismControl(st)
    ctl.mechanism.setCurrentText("mnar-value")
    before = st.enabled
    assert ctl.draw() is None and st.enabled == before
    assert "depends on the dataset split" in ctl.result.text()
    ctl.mechanism.setCurrentText("exclusive")
    assert sum(ctl.draw()) == 1  # exclusive needs nothing but the sample
    ctl.deleteLater()


def test_drawn_mask_respects_eta_and_the_datas_own_mask():
    from types import SimpleNamespace

    from app.core.explorer_state import ExplorerState, SampleRef
    from app.views.explorer.mechanism_control import MechanismControl
    st = ExplorerState()
    st.set_modalities(("a", "b", "c"))
    st.set_context(SimpleNamespace(loaded=SimpleNamespace(config=tiny_cfg()), bundle=None))
    st.set_sample(SampleRef.sources(files={"a": "/x.npy", "c": "/y.npy"}))
    st.set_present((True, False, True))  # the sample itself lacks b
    ctl = MechanismControl(st)
    for eta in (0.0, 0.3, 0.7):
        masks = np.array([ctl.draw_mask_for_sample(str(eta), s) for s in range(600)])
        assert not masks[:, 1].any()  # never present where the data lacks it
        assert masks.any(1).all()  # never empty: one modality comes back
        # a and c are each missing with probability η, except that an emptied sample gets one back
        missing = 1 - masks[:, [0, 2]].mean()
        assert missing == pytest.approx(eta - eta ** 2 / 2, abs=0.05)
    ctl.deleteLater()


def test_bad_eta_is_refused_with_a_clear_message(qtbot, explorer):
    ctl = explorer.mechanism
    before = explorer.state.enabled
    messages = []
    ctl.sig_message.connect(lambda text, kind: messages.append((text, kind)))
    for bad in ("1", "1.5", "-0.1", "abc"):
        ctl.eta.setText(bad)
        assert ctl.draw() is None
        assert explorer.state.enabled == before
        text = ctl.result.text()
        assert "[0, 1)" in text and "missing" in text, text
        assert messages[-1][1] == "error"


def test_training_mechanism_is_shown(explorer):
    from app.views.explorer.mechanism_control import training_mechanism
    assert "complete training samples" in explorer.mechanism.trained.text()
    cfg = RunConfig().replace(**{"data.train_missing": "mcar:0.3", "data.train_pool": True})
    line = training_mechanism(cfg)
    assert "train_missing = mcar:0.3 (fraction missing)" in line and "train_pool on" in line


def test_sessions_table_names_the_training_mechanism(store):
    from PySide6.QtCore import Qt

    from app.views.sessions import RunsTableModel
    store.create_run(tiny_cfg().replace(**{"data.train_missing": "mcar:0.3"}), name="incomplete")
    store.create_run(tiny_cfg(), name="complete")
    model = RunsTableModel(store)
    model.refresh()
    tips = {r.name: model.data(model.index(i, 0), Qt.ItemDataRole.ToolTipRole) for i, r in enumerate(model.rows)}
    assert "train_missing = mcar:0.3 (fraction missing)" in tips["incomplete"]
    assert "complete training samples" in tips["complete"]


# ----------------------------------------------------------------------------------------------------------
# robustness tab: missing-rate curves
# ----------------------------------------------------------------------------------------------------------


def _refs(runs):
    from app.core.analysis.robustness import RunRef
    return [RunRef(i + 1, f"#{i + 1} {m}", m, str(p)) for i, (m, p) in enumerate(runs.items())]


@pytest.fixture
def curves(qtbot, runs):
    from app.views.analysis.missing_curves import MissingCurvesPanel
    panel = MissingCurvesPanel()
    qtbot.addWidget(panel)
    panel.resize(1200, 600)
    panel.show()
    panel.set_runs(_refs(runs), tiny_cfg().data)
    yield panel
    dispose(qtbot, panel)


def _engine_curves(runs, specs_text, seed, masks=None):
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    from robult_engine.data import load_dataset
    from robult_engine.evaluation import encode_split
    from robult_engine.missing import draw_masks, metrics_under_masks, parse_missing
    bundle = load_dataset(tiny_cfg().data)
    split = bundle.splits["test"]
    if masks is None:
        masks = draw_masks(split, bundle.info, parse_missing(specs_text), seed)
    out = {}
    for m, path in runs.items():
        enc = encode_split(model_from_checkpoint(load_checkpoint(path)), split, with_latents=False)
        out[m] = (metrics_under_masks(enc, masks, bundle.info.task), enc)
    return out, masks, bundle


def test_curve_values_equal_the_engines_on_the_same_masks(qtbot, curves, runs):
    curves.seed.setValue(3)
    with qtbot.waitSignal(curves.sig_result_ready, timeout=120_000):
        assert curves.compute()
    r = curves.result
    want, masks, _ = _engine_curves(runs, "mcar:0,0.25,0.5,0.75", 3)
    assert r.specs == ["mcar:0", "mcar:0.25", "mcar:0.5", "mcar:0.75"] and r.rates == [0, 0.25, 0.5, 0.75]
    for label in r.specs:
        assert torch.equal(r.masks[label], masks[label])
    for run, (m, _) in zip(r.runs, runs.items()):
        for metric in ("accuracy", "macro_f1"):
            np.testing.assert_allclose(r.curve(run.label, metric),
                                       [want[m][0][s][metric] for s in r.specs], rtol=0, atol=1e-12)
        x, y = curves.lines[run.label].getData()  # what is drawn
        np.testing.assert_allclose(x, r.rates)
        np.testing.assert_allclose(y, r.curve(run.label, curves.current_metric))
    assert np.isfinite(r.curve(r.runs[0].label, "accuracy")).all()
    assert "done" in curves.progress.format()
    assert "Realised fraction missing" in curves.info.text()


def test_curves_on_a_saved_mask_file_and_a_wrong_one(qtbot, curves, runs, tmp_path):
    from robult_engine.missing import save_masks
    want, masks, bundle = _engine_curves(runs, "mcar:0.1,0.6", 11)
    path = save_masks(tmp_path / "masks.npz", masks, modality_names=bundle.info.modality_names, split="test",
                      seed=11)
    curves.set_masks_path(str(path))
    with qtbot.waitSignal(curves.sig_result_ready, timeout=120_000):
        assert curves.compute()
    r = curves.result
    assert r.specs == ["mcar:0.1", "mcar:0.6"] and "masks.npz" in r.source
    for run, m in zip(r.runs, runs):
        np.testing.assert_allclose(r.curve(run.label, "accuracy"), [want[m][0][s]["accuracy"] for s in r.specs],
                                   atol=1e-12)
    # a mask file of the wrong shape: the error is shown, nothing crashes
    short = {k: v[:5] for k, v in masks.items()}
    bad = save_masks(tmp_path / "short.npz", short, modality_names=bundle.info.modality_names, split="test", seed=11)
    curves.set_masks_path(str(bad))
    messages = []
    curves.sig_message.connect(lambda text, kind: messages.append((text, kind)))
    assert curves.compute()
    qtbot.waitUntil(lambda: curves._job is None, timeout=60_000)
    assert curves.progress.format() == "failed"
    assert "masks of 5 samples" in curves.info.text() and messages[-1][1] == "error"
    assert curves.result is r  # the previous curves stay


def test_flips_at_a_rate_open_in_the_explorer_with_their_mask(qtbot, curves, runs, explorer):
    from PySide6.QtCore import Qt

    from app.core.explorer_state import SampleRef
    from robult_engine.inspect import flipped_samples
    curves.sig_open_sample.connect(lambda split, i, mask: explorer.open_sample(SampleRef.dataset(split, i), mask))
    with qtbot.waitSignal(curves.sig_result_ready, timeout=120_000):
        curves.compute()
    r = curves.result
    curves.flip_rate.setCurrentIndex(r.specs.index("mcar:0.75"))
    curves.flip_run.setCurrentIndex(0)
    want, _, _ = _engine_curves(runs, "mcar:0,0.25,0.5,0.75", 0)
    enc = want["robult"][1]
    flips = flipped_samples(enc, r.masks["mcar:0.75"], r.task)
    assert len(flips) > 0 and curves.flip_rows == flips.tolist() and curves.flips.count() == len(flips)
    item = curves.flips.item(0)
    with qtbot.waitSignal(explorer.sig_inspection_shown, timeout=WAIT):
        qtbot.mouseClick(curves.flips.viewport(), Qt.MouseButton.LeftButton,
                         pos=curves.flips.visualItemRect(item).center())
    wait_shown(qtbot, explorer)
    i = int(flips[0])
    assert explorer.sample.ref.index == i and explorer.sample.ref.split == "test"
    assert explorer.toggles.state() == tuple(r.masks["mcar:0.75"][i].tolist())
    assert explorer.inspection.pred != explorer.inspection.pred_all  # it really flips


def test_curves_can_be_cancelled(qtbot, runs):
    from app.views.analysis.missing_curves import MissingCurvesPanel
    panel = MissingCurvesPanel()
    qtbot.addWidget(panel)
    panel.set_runs(_refs(runs) * 30, tiny_cfg().data)
    assert panel.compute()
    qtbot.waitUntil(lambda: panel.progress.value() >= 1, timeout=60_000)
    panel.cancel()
    qtbot.waitUntil(lambda: panel._job is None, timeout=60_000)
    assert panel.progress.format() == "cancelled"
    assert panel.result is None and panel.compute_btn.isEnabled()
    dispose(qtbot, panel)


def test_bad_rates_are_refused_with_a_clear_message(curves):
    for bad in ("0, 1", "0.5, 1.2", "-0.25", "abc", ""):
        curves.rates.setText(bad)
        assert not curves.compute(), bad
        assert curves._job is None
        text = curves.info.text()
        assert "Bad missing rates" in text, text
        if bad and bad != "abc":
            assert "[0, 1)" in text and "fraction of entries missing" in text, text


@pytest.mark.parametrize("module", ["app.views.analysis.missing_curves", "app.views.explorer.mechanism_control"])
def test_the_new_panels_run_alone(module, tmp_path):
    import os
    import subprocess
    import sys
    shot = tmp_path / f"{module.rsplit('.', 1)[1]}.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "ROBULT_DEMO_SCREENSHOT": str(shot)}
    r = subprocess.run([sys.executable, "-m", module], cwd=Path(__file__).resolve().parents[2],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image
    with Image.open(shot) as im:
        assert im.width > 100 and im.height > 30


def test_the_robustness_tab_holds_the_curves_beside_the_matrix(qtbot, make_window):
    w = make_window()
    rob = w.analysis.robustness
    assert w.analysis.curves is rob.views.widget(1) and rob.views.tabText(1) == "Missing-rate curves"
    assert rob.views.tabText(0) == "Subset × run"
