"""The app side of issue 12: φ per modality in the explorer, reliability diagrams and the attribution summary,
and the dataset PID beside the model's Z/U split. Every number is checked against `robult_engine.explain`
called directly on the same model and data."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer_helpers import WAIT, bar_heights, dispose, show_explorer, wait_shown
from robult_engine.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
TINY = {"data.dataset": "pid-synth", "data.synth_n_train": 200, "train.epochs": 2, "model.d_h": 32,
        "model.d_z": 16, "model.d_u": 8, "model.d_hidden": 32, "train.device": "cpu"}


def tiny_cfg(method: str = "robult") -> RunConfig:
    return RunConfig().replace(method=method, **TINY).validate()


@pytest.fixture(scope="session")
def explain_runs(train_once) -> dict[str, Path]:
    """best.pt of two tiny PID-Synth runs (M = 3) on the same data and labels."""
    return {m: train_once(tiny_cfg(m)) for m in ("robult", "supervised")}


def loaded(path):
    from app.core.analysis.standalone import loaded_from_checkpoint
    return loaded_from_checkpoint(str(path))


def bundle():
    from app.core.analysis.context import default_bundle_getter
    return default_bundle_getter(tiny_cfg().data)


def refs(runs):
    from app.core.analysis.robustness import RunRef
    return [RunRef(i + 1, f"#{i + 1} {m}", m, str(p)) for i, (m, p) in enumerate(runs.items())]


def engine_phi(model, data, used, b):
    """φ of the sample as the engine computes it: the model called on the sample, v(∅) the train prior."""
    from robult_engine.explain.attribution import shapley_values, train_prior
    from robult_engine.inspect import encode_sample
    enc = encode_sample(model, data)
    info = b.info
    prior = train_prior(b.splits["train"].target, info.task, len(info.class_names))
    return shapley_values(enc.logits_mod[None], torch.tensor([used]), prior, info.task)


# ----------------------------------------------------------------------------------------------------------
# φ in the explorer
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def explorer(qtbot, explain_runs):
    panel = show_explorer(qtbot, loaded(explain_runs["robult"]))
    yield panel
    dispose(qtbot, panel)


def test_phi_panel_equals_the_engine_for_the_sample_and_subset_and_follows_the_toggles(qtbot, explorer):
    p, b = explorer, explorer.context.bundle
    model = p.context.model
    for step in (None, 0, 1, 1, 2):  # all on; m0 off; m0, m1 off; m1 back on; m2 off
        if step is not None:
            gen = p.state.generation
            p.toggle(step)
            qtbot.waitUntil(lambda: p.shown_generation > gen, timeout=WAIT)
        wait_shown(qtbot, p)
        used = p.inspection.used
        shown = p.attribution.phi
        if not any(used):
            assert shown is None and "No modality selected" in p.attribution.header.text()
            continue
        want = engine_phi(model, p.sample.data, used, b)
        np.testing.assert_allclose(bar_heights(p.attribution.bars), want.phi[0].numpy(), atol=1e-9)
        np.testing.assert_allclose(shown.phi, want.phi[0].numpy(), atol=1e-9)
        assert shown.output == int(want.output[0]) == p.inspection.pred  # the class the subset predicts
        assert shown.used == used
        # efficiency: the bars add up to v(on) − v(∅); a modality switched off is a dummy (φ = 0, faded)
        assert sum(shown.phi) == pytest.approx(shown.v_full - shown.v_empty, abs=1e-9)
        for i, u in enumerate(used):
            if not u:
                assert abs(shown.phi[i]) < 1e-12
                assert p.attribution.bars.opts["brushes"][i].alpha() < 255
        assert p.inspection.class_names[shown.output] in p.attribution.header.text()


def test_a_negative_attribution_is_noted(qtbot, explorer):
    from robult_engine.evaluation import encode_split
    from robult_engine.explain.attribution import shapley_values, train_prior
    from app.core.explorer_state import SampleRef
    p, b = explorer, explorer.context.bundle
    enc = encode_split(p.context.model, b.splits["test"], with_latents=False)
    prior = train_prior(b.splits["train"].target, b.info.task, len(b.info.class_names))
    phi = shapley_values(enc.logits_mod, enc.mask, prior, b.info.task).phi
    neg = torch.nonzero((phi < 0).any(1)).flatten()
    pos = torch.nonzero((phi >= 0).all(1)).flatten()
    assert len(neg) and len(pos)
    i = int(neg[0])
    p.open_sample(SampleRef.dataset("test", i))
    qtbot.waitUntil(lambda: p.sample is not None and p.sample.ref.index == i, timeout=WAIT)
    wait_shown(qtbot, p)
    note = p.attribution.note.text()
    names = [n for n, v in zip(b.info.modality_names, phi[i].tolist()) if v < 0]
    assert "pushed against the prediction" in note and all(f"<b>{n}</b>" in note for n in names)
    j = int(pos[0])
    p.open_sample(SampleRef.dataset("test", j))
    qtbot.waitUntil(lambda: p.sample is not None and p.sample.ref.index == j, timeout=WAIT)
    wait_shown(qtbot, p)
    assert "No modality pushed against" in p.attribution.note.text()


def test_the_explorer_export_includes_phi(qtbot, explorer, tmp_path):
    files = {f.name for f in explorer.export_all(tmp_path)}
    assert {"attribution_phi.png", "attribution_phi.csv"} <= files
    rows = (tmp_path / "attribution_phi.csv").read_text().splitlines()
    assert len(rows) == 1 + len(explorer.state.modality_names)


# ----------------------------------------------------------------------------------------------------------
# calibration and the attribution summary
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def calibration(qtbot, explain_runs):
    from app.views.analysis.calibration_panel import CalibrationPanel
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    panel.resize(1200, 760)
    panel.show()
    panel.set_runs(refs(explain_runs), tiny_cfg().data)
    with qtbot.waitSignal(panel.sig_result_ready, timeout=120_000):
        panel.compute()
    yield panel
    dispose(qtbot, panel)


def test_reliability_diagrams_and_table_equal_the_engine_for_the_run(qtbot, calibration, explain_runs, tmp_path):
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    from robult_engine.evaluation import encode_split
    from robult_engine.explain.attribution import attribution_summary, train_prior
    from robult_engine.explain.calibration import calibration_table
    p, b = calibration, bundle()
    names, task = b.info.modality_names, b.info.task
    study = p.study
    assert [r.method for r in study.runs] == list(explain_runs) and not study.skipped
    assert "done" in p.progress.format()
    for k, (method, path) in enumerate(explain_runs.items()):
        label = study.runs[k].label
        enc = encode_split(model_from_checkpoint(load_checkpoint(path)), b.splits["test"], with_latents=False)
        want = calibration_table(enc, names, task)
        assert list(study.tables[label]) == list(want)
        for name, w in want.items():
            got = study.tables[label][name]
            for key in ("accuracy", "mean_confidence", "ece", "adaptive_ece", "brier", "nll"):
                assert getattr(got, key) == pytest.approx(getattr(w, key), abs=1e-12), (label, name, key)
            assert got.reliability.count == w.reliability.count
        prior = train_prior(b.splits["train"].target, task, len(b.info.class_names))
        summ = attribution_summary(enc, prior, names, task, tuple(b.info.class_names))
        np.testing.assert_allclose(study.attribution[label].mean_abs["all"], summ.mean_abs["all"], atol=1e-12)
        np.testing.assert_allclose(bar_heights(p.attr_bars[k]), summ.mean_abs["all"], atol=1e-12)
        # the chosen run's diagrams: one curve per ticked subset, the engine's bins (empty bins left out)
        p.run_box.setCurrentText(label)
        p.set_checked_subsets(["m0", "m1+m2"])
        assert set(p.curves) == {"m0", "m1+m2"}
        for name, curve in p.curves.items():
            bins = want[name].reliability
            keep = [i for i, c in enumerate(bins.count) if c > 0]
            x, y = curve.getData()
            np.testing.assert_allclose(x, np.asarray(bins.confidence)[keep], atol=1e-12)
            np.testing.assert_allclose(y, np.asarray(bins.accuracy)[keep], atol=1e-12)
        # the table: one row per subset, accuracy next to ECE / Brier / NLL
        assert p.table.rowCount() == len(want)
        for i, (name, w) in enumerate(want.items()):
            assert p.table.item(i, 0).text() == name
            assert p.table.item(i, 2).text() == f"{w.accuracy:.3f}"
            assert p.table.item(i, 4).text() == f"{w.ece:.3f}"
            assert p.table.item(i, 6).text() == f"{w.brier:.3f}"
            assert p.table.item(i, 7).text() == f"{w.nll:.3f}"
    files = {f.name for f in p.export(tmp_path / "out")}
    assert {"reliability_diagram.png", "attribution_summary.png", "calibration_per_subset.csv",
            "reliability_bins.csv", "attribution_summary.csv"} <= files
    rows = (tmp_path / "out" / "calibration_per_subset.csv").read_text().splitlines()
    assert len(rows) == 1 + len(study.runs) * len(study.subsets)


def test_the_calibration_study_can_be_cancelled(qtbot, explain_runs):
    from app.views.analysis.calibration_panel import CalibrationPanel
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    panel.set_runs(refs(explain_runs) * 30, tiny_cfg().data)
    panel.compute()
    qtbot.waitUntil(lambda: panel.progress.value() >= 1, timeout=60_000)
    panel.cancel()
    qtbot.waitUntil(lambda: panel._job is None, timeout=60_000)
    assert panel.progress.format() == "cancelled" and panel.study is None and panel.compute_btn.isEnabled()
    dispose(qtbot, panel)


def test_another_dataset_cancels_a_running_study(qtbot, explain_runs):
    from app.views.analysis.calibration_panel import CalibrationPanel
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    panel.set_runs(refs(explain_runs) * 30, tiny_cfg().data)
    panel.compute()
    results = []
    panel.sig_result_ready.connect(results.append)
    other = RunConfig().replace(**{"data.dataset": "mfeat"}).data
    panel.set_runs([], other)
    assert panel._job is None and panel.study is None and "cancelled" in panel.progress.format()
    assert not panel.compute_btn.isEnabled()  # no run on the other dataset
    panel.runner.wait(60_000)
    qtbot.wait(50)
    assert results == [] and panel.study is None  # the old study's answer was dropped
    dispose(qtbot, panel)


# ----------------------------------------------------------------------------------------------------------
# the dataset PID
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def pid_panel(qtbot):
    from app.core.analysis.explain import PIDCache
    from app.views.analysis.pid_panel import DatasetPIDPanel
    panel = DatasetPIDPanel(cache=PIDCache())
    qtbot.addWidget(panel)
    panel.resize(1200, 700)
    panel.show()
    yield panel
    dispose(qtbot, panel)


def test_the_pid_job_completes_equals_the_engine_and_is_cached(qtbot, pid_panel, explain_runs):
    from robult_engine.evaluation import encode_split
    from robult_engine.explain.pid import dataset_pid
    p, b = pid_panel, bundle()
    lm = loaded(explain_runs["robult"])
    p.set_context(lm, b)
    seen = []
    p.progress.valueChanged.connect(seen.append)
    with qtbot.waitSignal(p.sig_result_ready, timeout=180_000):
        p.compute()
    r = p.result
    assert not r.pid_cached and "done" in p.progress.format() and max(seen) == 4  # 3 pairs + the model
    want = dataset_pid(b)
    assert [x.pair for x in r.pid] == [x.pair for x in want]
    for got, w in zip(r.pid, want):
        for k, v in w.result.components().items():
            assert got.result.components()[k] == pytest.approx(v, abs=1e-9)
    # the stacked bars: R from 0, U1 after R, ...
    np.testing.assert_allclose(p.pid_bars["R"].opts["width"], [w.result.redundancy for w in want], atol=1e-9)
    np.testing.assert_allclose(p.pid_bars["U1"].opts["x0"], [w.result.redundancy for w in want], atol=1e-9)
    enc = encode_split(lm.model, b.splits["test"], with_latents=True)
    np.testing.assert_allclose(bar_heights(p.bars_z), enc.z.norm(dim=-1).mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(bar_heights(p.bars_u), enc.u.norm(dim=-1).mean(0).numpy(), rtol=1e-5)
    assert len(p.cache) == 1
    # a second model on the same dataset: the PID comes from the cache
    p.set_context(loaded(explain_runs["supervised"]), b)
    with qtbot.waitSignal(p.sig_result_ready, timeout=60_000):
        p.compute()
    assert p.result.pid_cached and "PID cached" in p.progress.format()
    assert [x.result.components() for x in p.result.pid] == [x.result.components() for x in r.pid]


def test_the_pid_job_can_be_cancelled(qtbot, pid_panel, explain_runs):
    from app.core.analysis.explain import compute_explain
    from robult_engine.explain.pid import all_pairs
    p, b = pid_panel, bundle()
    p.set_context(loaded(explain_runs["robult"]), b)

    def long(lm, bundle_, split, cache, progress=None, check=None):  # the pairs five times over
        return compute_explain(lm, bundle_, split, cache, pairs=all_pairs(bundle_.info.modality_names) * 5,
                               progress=progress, check=check)

    p.compute_fn = long
    p.compute()
    qtbot.waitUntil(lambda: p.progress.value() >= 1, timeout=120_000)
    p.cancel()
    qtbot.waitUntil(lambda: p._job is None, timeout=120_000)
    assert p.progress.format() == "cancelled" and p.result is None and len(p.cache) == 0
    assert p.compute_btn.isEnabled()


def test_pid_errors_are_shown(qtbot, pid_panel, explain_runs):
    p = pid_panel
    p.set_context(loaded(explain_runs["robult"]), bundle())

    def broken(*_a, **_k):
        raise ValueError("the estimator needs two modalities")

    p.compute_fn = broken
    with qtbot.waitSignal(p.sig_message, timeout=30_000) as msg:
        p.compute()
    assert msg.args == ["Dataset PID failed: the estimator needs two modalities", "error"]
    assert "Dataset PID failed: the estimator needs two modalities" in p.info.text()
    assert p.progress.format() == "failed" and p.compute_btn.isEnabled() and p.result is None


# ----------------------------------------------------------------------------------------------------------
# the window and the panels alone
# ----------------------------------------------------------------------------------------------------------


def test_the_window_has_the_calibration_and_pid_tabs(make_window):
    w = make_window(show=False)
    titles = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert {"Calibration", "Dataset PID"} <= set(titles)
    assert w.analysis.calibration.bundle_getter is not None


@pytest.mark.parametrize("module", ["app.views.explorer.attribution_panel", "app.views.analysis.calibration_panel",
                                    "app.views.analysis.pid_panel"])
def test_each_new_panel_module_runs_alone(module, tmp_path):
    shot = tmp_path / f"{module.rsplit('.', 1)[1]}.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "ROBULT_DEMO_SCREENSHOT": str(shot)}
    r = subprocess.run([sys.executable, "-m", module], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image
    with Image.open(shot) as im:
        assert im.width > 100 and im.height > 30
