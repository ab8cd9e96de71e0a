"""The controls of a view that computes something in the background: Compute / Cancel buttons and a progress
bar driving one job at a time on a WorkRunner (the work contract of app/core/work.py), and the export of a
view's plots and tables to a folder the user picks. The Robustness matrix, the missing-rate curves and the
Calibration and Dataset PID views use them, so each
view only says what to compute and how to show it.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QProgressBar, QPushButton, QWidget


class JobOwner:
    """The side of JobControls its owner view gives (mixed in before QWidget): `self.jobs` is the view's
    JobControls, `self.info` a label for failures, `sig_message` its status-bar signal. The view still writes
    `_can_compute()`; it overrides `_show_error` where failures go elsewhere."""

    def cancel(self) -> None:
        self.jobs.cancel()

    @property
    def _job(self):
        """The running job, if any (JobControls owns it)."""
        return self.jobs.job

    def _show_error(self, text: str) -> None:
        self.info.setText(text)

    def _message(self, text: str, level: str) -> None:
        self.sig_message.emit(text, level)


class JobControls(QObject):
    """Compute / Cancel / progress for one background job at a time.

    `what` names the computation in messages ("Calibration study"). The owner view implements
    `_message(text, level)` (the status bar), `_show_error(text)` (the failure in the view) and
    `_can_compute()` (may Compute be enabled when no job runs); they are reached through the Qt parent, not
    held, so no Python reference cycle ties the view to its controls (PySide cannot collect those). Progress
    events are the work contract's `Progress(done, total, text)`. As a child QObject of the view, the job's
    answers stop reaching it once the view is gone.
    """

    def __init__(self, owner: QWidget, runner, what: str, *, compute_text: str = "Compute",
                 compute_tip: str = "") -> None:
        super().__init__(owner)
        self.runner = runner
        self._on_result_name = ""
        self.what = what
        self.job = None
        self.compute_btn = QPushButton(compute_text)
        self.compute_btn.setToolTip(compute_tip)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, work, total: int, on_result: Callable[[object], None]) -> None:
        """Run `work(job)` in the background; `on_result`, a method of the owner, gets its value on the GUI
        thread."""
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self.compute_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self._on_result_name = on_result.__name__  # a method of the owner, called through the parent
        self.job = self.runner.start(work, on_result=self._on_done, on_error=self._on_failed,
                                     on_progress=self._on_progress, on_cancelled=self._on_cancelled)

    def cancel(self, note: str = "cancelling…") -> None:
        if self.job is not None:
            self.job.cancel()
            self.progress.setFormat(note)

    def _owner(self):
        return self.parent()

    def finish(self) -> None:
        self.job = None
        owner = self._owner()
        self.compute_btn.setEnabled(owner is not None and bool(owner._can_compute()))
        self.cancel_btn.setEnabled(False)

    def _on_done(self, value) -> None:
        self.finish()
        owner = self._owner()
        if owner is not None:
            getattr(owner, self._on_result_name)(value)

    def _on_progress(self, p) -> None:
        self.progress.setRange(0, max(1, p.total))
        self.progress.setValue(p.done)
        self.progress.setFormat(f"{p.done}/{p.total} {p.text}")

    def _on_cancelled(self, _payload=None) -> None:
        self.finish()
        self.progress.setFormat("cancelled")
        if self._owner() is not None:
            self._owner()._message(f"{self.what} cancelled.", "info")

    def _on_failed(self, failure) -> None:
        self.finish()
        self.progress.setFormat("failed")
        owner = self._owner()
        if owner is not None:
            owner._show_error(f"<span style='color:#B00020'>{self.what} failed: {failure.message}</span>")
            owner._message(f"{self.what} failed: {failure.message}", "error")


_last_export_dir: list[str] = []  # the folder the last export of this app chose (the next dialog opens there)


def choose_export_folder(parent: QWidget, title: str) -> str:
    """Ask for an export folder, starting where the last export went, else in the user's Documents folder (or
    home) — never in whatever the current directory happens to be (a source checkout, say). "" when cancelled."""
    from PySide6.QtCore import QStandardPaths
    start = _last_export_dir[-1] if _last_export_dir and Path(_last_export_dir[-1]).is_dir() else (
        QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation) or str(Path.home()))
    folder = QFileDialog.getExistingDirectory(parent, title, start)
    if folder:
        _last_export_dir[:] = [folder]
    return folder


def export_to_chosen_folder(parent: QWidget, title: str, prefix: str, export: Callable[[Path], list[Path]],
                            message: Callable[[str, str], None]) -> Path | None:
    """Ask for a folder, export into a new time-stamped subfolder `<prefix>-<time>` and report how it went."""
    base = choose_export_folder(parent, title)
    if not base:
        return None
    folder = Path(base) / f"{prefix}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    try:
        files = export(folder)
    except OSError as e:
        message(f"Export failed: {e}", "error")
        return None
    message(f"Exported {len(files)} files to {folder}", "ok")
    return folder
