"""The Slices view (app/views/analysis/slices_view.py): "Find slices" in the background fills the table with the engine's
slices, activating a slice opens one of its samples in the explorer (with the modalities its prediction used),
Prev / Next step through the slice, "compare with" scores a second checkpoint on the same samples, bad input is
said, and the window has the tab. Tiny PID-Synth models, trained once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from explorer_helpers import WAIT, dispose, show_explorer, wait_shown


@pytest.fixture(scope="session")
def second_checkpoint(tmp_path_factory) -> Path:
    """A supervised tiny PID-Synth run (the same data as `trained_checkpoint`): the model to compare with."""
    import torch

    from robult_engine.config import RunConfig
    from robult_engine.trainer import Trainer
    # the data of the app tests' `trained_checkpoint` (tests/app/conftest.py), another method
    cfg = RunConfig().replace(method="supervised", **{
        "data.dataset": "pid-synth", "data.synth_n_train": 200, "data.label_fraction": 0.1, "train.epochs": 2,
        "train.batch_size": 32, "train.labeled_per_batch": 8, "train.patience": 0, "train.device": "cpu",
        "model.d_h": 16, "model.d_z": 8, "model.d_u": 4, "model.d_hidden": 16, "model.dropout": 0.0}).validate()
    out = tmp_path_factory.mktemp("slices-second") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        final = Trainer(cfg, out_dir=out).run()
    finally:
        torch.set_num_threads(before)
    assert final.checkpoint_path, final
    return Path(final.checkpoint_path)


def _context(path):
    from app.core.analysis.context import default_bundle_getter
    from app.core.analysis.standalone import loaded_from_checkpoint
    from robult_engine.checkpoint import load_checkpoint
    loaded = loaded_from_checkpoint(str(path))
    return loaded, default_bundle_getter(loaded.config.data), dict(load_checkpoint(str(path)).memory_state)


@pytest.fixture
def view(qtbot, trained_checkpoint):
    from app.views.analysis.slices_view import SlicesView
    v = SlicesView()
    qtbot.addWidget(v)
    v.resize(1200, 500)
    v.show()
    qtbot.waitExposed(v)
    v.set_context(*_context(trained_checkpoint))
    yield v
    dispose(qtbot, v)


def _find(qtbot, v, missing="mcar:0.5", support=6):
    v.missing.setText(missing)
    v.support.setValue(support)
    assert v.find_btn.isEnabled()
    qtbot.mouseClick(v.find_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: v.result is not None and v._job is None, timeout=WAIT)
    return v.result


def test_find_slices_fills_the_table_with_the_engines_slices(qtbot, view):
    from robult_engine.missing import draw_mask, parse_missing
    from robult_engine.slices import find_model_slices
    res = _find(qtbot, view)
    rep = res.report
    assert rep.slices and view.table.rowCount() == len(rep.slices)
    assert view.progress.format().startswith("done in")
    assert view.table.isColumnHidden(5) and view.table.isColumnHidden(6)  # no comparison asked
    for k, s in enumerate(rep.slices):
        assert view.table.item(k, 0).text() == str(k + 1)
        assert view.table.item(k, 1).text() == s.text
        assert int(view.table.item(k, 2).text()) == s.size >= 6
        assert view.table.item(k, 3).text() == f"{s.error_in:.4f}"
        assert view.table.item(k, 4).text() == f"{s.error_out:.4f}"
    # the engine on the same model, data and mask gives the same slices
    loaded, bundle, memory = view.loaded, view.bundle, view.memory_state
    mask = draw_mask(bundle.splits["test"], bundle.info, parse_missing("mcar:0.5")[0], 0)
    want = find_model_slices(loaded.model, bundle, spec_mask=mask, missing_label="mcar:0.5",
                             labeled_indices=loaded.labeled_indices, memory_state=memory,
                             method=loaded.config.method, kernel=loaded.config.loss.kernel, min_support=6)
    assert [(s.text, s.size, s.indices.tolist()) for s in want.slices] == \
           [(s.text, s.size, s.indices.tolist()) for s in rep.slices]
    assert "mcar:0.5" in view.info.text() and f"{rep.error_overall:.4f}" in view.info.text()
    # a double-click on a slice opens its first sample
    from PySide6.QtWidgets import QApplication
    row = len(rep.slices) - 1
    qtbot.wait(QApplication.doubleClickInterval() + 50)  # the click on "Find slices" is no half of a double-click
    rect = view.table.visualItemRect(view.table.item(row, 1))
    with qtbot.waitSignal(view.sig_open_sample, timeout=5000) as sig:
        # as a user's double-click arrives: a press and release, then the double-click
        qtbot.mouseClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    first = int(rep.slices[row].indices[0])
    assert sig.args[:2] == ["test", first] and view.current_slice == row
    assert tuple(sig.args[2]) == tuple(bool(x) for x in rep.inputs.used_mask[first])


@pytest.fixture
def explorer(qtbot, view):
    """An explorer on the view's model; the view's "open sample" goes to it, as in the window."""
    from app.core.explorer_state import SampleRef
    panel = show_explorer(qtbot, view.loaded)

    def open_sample(split: str, index: int, used: tuple) -> None:
        panel.open_sample(SampleRef.dataset(split, index), used)
    view.sig_open_sample.connect(open_sample)
    yield panel
    view.sig_open_sample.disconnect(open_sample)
    dispose(qtbot, panel)


def test_activating_a_slice_opens_its_samples_in_the_explorer(qtbot, view, explorer):
    from app.core.explorer_state import SampleRef
    res = _find(qtbot, view)
    row = min(1, len(res.slices) - 1)
    s = res.slices[row]
    first = int(s.indices[0])
    view.table.setFocus()
    view.table.setCurrentCell(row, 1)
    assert view.current_slice == row and explorer.state.sample != SampleRef.dataset("test", int(s.indices[1]))
    qtbot.keyClick(view.table, Qt.Key.Key_Return)  # activate the slice (as a double-click does)
    assert explorer.state.sample == SampleRef.dataset("test", first)
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index == first
    assert view.current_slice == row and view.sample_rows == s.indices.tolist()
    # the toggles are the modalities the slice's prediction used (the mcar:0.5 mask ∧ the data)
    used = tuple(bool(x) for x in res.report.inputs.used_mask[first])
    assert explorer.state.enabled == used and explorer.inspection.used == used
    assert view.samples.count() == s.size and view.samples.currentRow() == 0
    assert s.size > 1
    qtbot.mouseClick(view.next_btn, Qt.MouseButton.LeftButton)  # Next steps through the slice, not the split
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index == int(s.indices[1]) and view.samples.currentRow() == 1
    qtbot.mouseClick(view.prev_btn, Qt.MouseButton.LeftButton)
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index == first and view.samples.currentRow() == 0
    qtbot.mouseClick(view.prev_btn, Qt.MouseButton.LeftButton)  # wraps around to the slice's last sample
    wait_shown(qtbot, explorer)
    assert explorer.sample.ref.index == int(s.indices[-1])


def test_compare_with_a_second_run_shows_both_errors_per_slice(qtbot, view, second_checkpoint):
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    from robult_engine.missing import draw_mask, parse_missing
    from robult_engine.slices import model_errors
    from app.core.analysis.robustness import RunRef
    view.set_runs([RunRef(7, "#7 supervised", "supervised", str(second_checkpoint))])
    assert [view.compare_box.itemText(i) for i in range(view.compare_box.count())] == \
           ["no comparison", "#7 supervised", "Checkpoint file…"]
    view.compare_box.setCurrentIndex(1)
    res = _find(qtbot, view)
    assert res.compare_label == "#7 supervised"
    assert not view.table.isColumnHidden(5) and not view.table.isColumnHidden(6)
    assert view.table.horizontalHeaderItem(5).text() == "error in (#7 supervised)"
    bundle = view.bundle
    mask = draw_mask(bundle.splits["test"], bundle.info, parse_missing("mcar:0.5")[0], 0)
    errs = model_errors(model_from_checkpoint(load_checkpoint(str(second_checkpoint))), bundle, "test", mask)
    for k, s in enumerate(res.slices):
        inside = np.zeros(len(errs), bool)
        inside[s.indices] = True
        assert view.table.item(k, 5).text() == f"{errs[inside].mean():.4f}"
        assert view.table.item(k, 6).text() == f"{np.nanmean(errs[~inside]):.4f}"
    assert "#7 supervised" in view.info.text()


def test_a_bad_missing_setting_is_said_and_nothing_starts(qtbot, view):
    for bad, said in (("mcar:2", "a rate must be in [0, 1)"), ("mcar:0,0.5", "one setting")):
        view.missing.setText(bad)
        with qtbot.waitSignal(view.sig_message, timeout=2000) as msg:
            assert view.compute() is False
        assert msg.args[1] == "error" and said in msg.args[0] and said in view.info.text()
        assert view._job is None and view.find_btn.isEnabled()


def test_cancel_drops_the_search(qtbot, view):
    view.missing.setText("")
    assert view.compute()
    view.cancel()
    qtbot.waitUntil(lambda: view._job is None, timeout=WAIT)
    assert view.result is None and view.progress.format() == "cancelled" and view.find_btn.isEnabled()
    assert view.table.rowCount() == 0


def test_the_window_has_the_slices_tab_and_opens_a_slice_sample(qtbot, make_window, trained_checkpoint):
    w = make_window()
    titles = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert "Slices" in titles and titles.index("Slices") > titles.index("Latent space")
    w.open_checkpoint(str(trained_checkpoint))
    wait_shown(qtbot, w.explorer)
    qtbot.waitUntil(lambda: w.analysis.slices.find_btn.isEnabled(), timeout=WAIT)
    w.tabs.setCurrentWidget(w.analysis.slices)
    res = _find(qtbot, w.analysis.slices)
    assert res.slices
    s = res.slices[0]
    from app.core.explorer_state import SampleRef
    assert w.analysis.slices.activate_row(0) == int(s.indices[0])
    assert w.explorer.state.sample == SampleRef.dataset("test", int(s.indices[0]))
    assert w.tabs.currentWidget() is w.explorer
    w.tabs.setCurrentWidget(w.analysis.slices)
    assert w.analysis.slices.next() == int(s.indices[1])  # the slice's next sample, not the split's
    qtbot.waitUntil(lambda: w.explorer.sample is not None
                    and w.explorer.sample.ref.index == int(s.indices[1]), timeout=WAIT)
    assert w.tabs.currentWidget() is w.explorer
