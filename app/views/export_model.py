"""File › Export model…: the current model to one ONNX graph (robult_engine/export.py, docs/export.md).

The action asks for the file (starting in the folder of the last export), then exports and checks the graph on
the window's WorkRunner (app/core/work.py): the work reports each checked subset as `Progress`, which a progress
dialog shows; its Cancel cancels the work, whose next progress report stops the export (nothing is written).
The result lands in the status bar; a failure opens a dialog with the engine's message. No widget is touched
off the GUI thread, and the model the window holds is not changed (the engine exports a copy).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMessageBox, QProgressDialog

from robult_engine.export import ExportReport, export_onnx, require_onnx

_last_dir: list[str] = []  # the last export's folder, when the explorer's export helpers are not there


def _export_folders() -> list[str]:
    """The list that remembers the last export folder of the app (shared with the explorer's exports)."""
    try:
        from app.views.common.job_controls import _last_export_dir
    except ImportError:  # the app without the explorer
        return _last_dir
    return _last_export_dir


def start_folder() -> str:
    """Where the file dialog opens: the last export's folder, else the user's Documents folder (or home)."""
    from PySide6.QtCore import QStandardPaths
    folders = _export_folders()
    if folders and Path(folders[-1]).is_dir():
        return folders[-1]
    return QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation) or str(Path.home())


def default_name(checkpoint_path: str) -> str:
    """model file name for a checkpoint: "<run folder>-<checkpoint>.onnx" (e.g. robult-20260101-best.onnx)."""
    p = Path(checkpoint_path)
    return f"{p.parent.name}-{p.stem}.onnx" if p.parent.name else f"{p.stem}.onnx"


def _run_export(work, model, info, path: str, source: str, metadata: dict, refs: dict) -> ExportReport:
    """Background work: export and check; each progress report first checks for a cancel."""
    def progress(done: int, total: int, text: str) -> None:
        work.check()
        work.progress(done, total, text)

    return export_onnx(model, info, path, source=source, metadata=metadata, encoder_refs=refs, progress=progress)


class ModelExporter(QObject):
    """The File › Export model… action of a MainWindow and the export it runs (one at a time)."""

    sig_finished = Signal(object)  # ExportReport, or the Failure, or None when cancelled

    def __init__(self, window) -> None:
        super().__init__(window)  # the window is reached as the parent, not held (no reference cycle)
        self.action = QAction("&Export model…", window)
        self.action.setToolTip("Export the current model to ONNX: one graph for every modality subset, checked "
                               "against PyTorch (docs/export.md)")
        self.action.setStatusTip("Export the current model to an ONNX file")
        self.action.triggered.connect(self._on_action_triggered)
        window.sig_model_loaded.connect(self._on_model_loaded)
        self.job = None
        self.progress_dialog: QProgressDialog | None = None
        self.error_dialog: QMessageBox | None = None
        self.last_report: ExportReport | None = None
        self._update_action()

    def _window(self):
        return self.parent()

    @property
    def busy(self) -> bool:
        return self.job is not None

    def _update_action(self) -> None:
        window = self._window()
        self.action.setEnabled(window is not None and window.current_model is not None and self.job is None)

    def _on_model_loaded(self, _loaded) -> None:
        self._update_action()

    def _on_action_triggered(self) -> None:
        loaded = self._window().current_model
        if loaded is None or self.job is not None:
            return
        try:
            require_onnx()
        except ValueError as e:
            self._show_error(str(e))
            return
        suggested = str(Path(start_folder()) / default_name(loaded.checkpoint_path))
        path, _ = QFileDialog.getSaveFileName(self._window(), "Export the model to ONNX", suggested,
                                              "ONNX models (*.onnx);;All files (*)")
        if not path:
            return
        if not Path(path).suffix:
            path += ".onnx"
        folders = _export_folders()
        folders[:] = [str(Path(path).parent)]
        self.export(path)

    def export(self, path: str):
        """Export the current model to `path` in the background (the action's work, without the dialog)."""
        loaded = self._window().current_model
        if loaded is None or self.job is not None:
            return None
        from robult_engine.config import parse_encoder_entries
        refs = parse_encoder_entries(loaded.config.model.encoders)
        metadata = {"robult.method": loaded.config.method, "robult.dataset": loaded.info.name}
        model, info, source = loaded.model, loaded.info, loaded.checkpoint_path
        dialog = QProgressDialog(f"Exporting {Path(source).name} to {Path(path).name}…", "Cancel", 0, 1,
                                 self._window())
        dialog.setWindowTitle("Export model")
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(0)
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(self.cancel)
        self.progress_dialog = dialog
        dialog.show()
        self._window().statusBar().showMessage(f"Exporting the model to {path}…")
        self.job = self._window().work.start(
            lambda work: _run_export(work, model, info, path, source, metadata, refs),
            on_result=self._on_result, on_error=self._on_error, on_progress=self._on_progress,
            on_cancelled=self._on_cancelled)
        self._update_action()
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            if self.progress_dialog is not None:
                self.progress_dialog.setLabelText("Cancelling…")

    # --- answers of the work (GUI thread) ----------------------------------------------------------------------
    def _on_progress(self, p) -> None:
        dialog = self.progress_dialog
        if dialog is not None and hasattr(p, "total"):
            if p.text:
                dialog.setLabelText(f"Export model: {p.text}…")
            dialog.setMaximum(max(1, p.total))
            # last: a modal progress dialog handles pending events inside setValue (the result may land there)
            dialog.setValue(min(p.done, p.total))

    def _done(self) -> None:
        self.job = None
        if self.progress_dialog is not None:
            self.progress_dialog.canceled.disconnect(self.cancel)
            self.progress_dialog.close()
            self.progress_dialog.deleteLater()
            self.progress_dialog = None
        self._update_action()

    def _on_result(self, report: ExportReport) -> None:
        self._done()
        self.last_report = report
        self._window().statusBar().showMessage(
            f"Exported the model to {report.path}: onnxruntime equals PyTorch on all {len(report.subsets)} modality "
            f"subsets (max |difference| {report.max_diff:.1e})", 15_000)
        self.sig_finished.emit(report)

    def _on_error(self, failure) -> None:
        self._done()
        self._window().statusBar().showMessage("The model could not be exported", 8000)
        self._show_error(failure.message)
        self.sig_finished.emit(failure)

    def _on_cancelled(self, _payload=None) -> None:
        self._done()
        self._window().statusBar().showMessage("Export cancelled", 8000)
        self.sig_finished.emit(None)

    def _show_error(self, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, "Could not export the model", text,
                          QMessageBox.StandardButton.Ok, self._window())
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_dialog = box
        box.open()
