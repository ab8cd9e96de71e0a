"""File › Export model… (app/views/export_model.py): disabled until a model is open; exports the current model to
the chosen ONNX file on a background worker (the GUI keeps running), with progress; a failure opens one error
dialog and writes nothing; a cancelled export writes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def window_with_model(qtbot, make_window, trained_checkpoint):
    w = make_window()
    assert not w.model_exporter.action.isEnabled()  # nothing to export yet
    with qtbot.waitSignal(w.sig_model_loaded, timeout=30_000):
        w.open_checkpoint(str(trained_checkpoint))
    assert w.model_exporter.action.isEnabled()
    return w


def file_menu_actions(w) -> list[str]:
    menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&File")
    return [a.text() for a in menu.actions() if not a.isSeparator()]


def test_the_action_exports_the_current_model(qtbot, window_with_model, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from app.views import export_model
    w = window_with_model
    assert file_menu_actions(w)[:2] == ["&Open model…", "&Export model…"]
    asked = []
    monkeypatch.setattr(export_model, "_last_dir", [])
    monkeypatch.setattr(export_model, "_export_folders", lambda: export_model._last_dir)
    target = tmp_path / "exports" / "model"  # no suffix: .onnx is added
    target.parent.mkdir()

    def get_save_file_name(parent, title, start, filters):
        asked.append(start)
        return str(target), filters.split(";;")[0]

    monkeypatch.setattr(QFileDialog, "getSaveFileName", get_save_file_name)
    progress = []
    shown = w.model_exporter._on_progress

    def record(p):
        progress.append(p.done)
        shown(p)

    monkeypatch.setattr(w.model_exporter, "_on_progress", record)
    with qtbot.waitSignal(w.model_exporter.sig_finished, timeout=60_000) as done:
        w.model_exporter.action.trigger()
        assert w.model_exporter.busy and not w.model_exporter.action.isEnabled()
        dialog = w.model_exporter.progress_dialog
        assert dialog is not None and dialog.isVisible()
        qtbot.wait(1)  # the GUI thread keeps handling events while the export runs
    report = done.args[0]
    out = target.with_suffix(".onnx")
    assert report.passed and Path(report.path) == out and out.is_file()
    assert asked and asked[0].endswith("run-best.onnx")  # the checkpoint's run folder and name
    assert export_model._last_dir == [str(target.parent)]  # the next dialog opens there
    assert progress and max(progress) >= len(report.subsets)
    assert w.model_exporter.progress_dialog is None and w.model_exporter.action.isEnabled()
    assert "Exported the model to" in w.statusBar().currentMessage()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["m0", "m1", "m2", "mask"]
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["robult.method"] == "robult" and meta["robult.dataset"] == w.current_model.info.name


def test_a_failed_export_shows_one_error_and_writes_nothing(qtbot, window_with_model, tmp_path):
    w = window_with_model
    folder = tmp_path / "a-folder.onnx"
    folder.mkdir()
    with qtbot.waitSignal(w.model_exporter.sig_finished, timeout=60_000) as done:
        w.model_exporter.export(str(folder))  # a folder, not a file
    failure = done.args[0]
    assert "is a folder" in failure.message
    box = w.model_exporter.error_dialog
    assert box is not None and box.isVisible() and "is a folder" in box.text()
    assert list(folder.iterdir()) == [] and w.model_exporter.action.isEnabled()
    box.close()


def test_a_cancelled_export_writes_nothing(qtbot, window_with_model, tmp_path):
    w = window_with_model
    (tmp_path / "exports").mkdir()
    out = tmp_path / "exports" / "m.onnx"
    with qtbot.waitSignal(w.model_exporter.sig_finished, timeout=60_000) as done:
        w.model_exporter.export(str(out))
        from PySide6.QtWidgets import QPushButton
        w.model_exporter.progress_dialog.findChild(QPushButton).click()  # the dialog's Cancel button
    assert done.args[0] is None
    assert not out.exists() and list(out.parent.iterdir()) == []
    assert "cancelled" in w.statusBar().currentMessage()
