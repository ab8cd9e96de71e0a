"""Background work for the explorer: one-shot jobs on a QThreadPool, with progress and cancel.

`JobRunner.start(fn, on_done=..., on_failed=..., on_progress=...)` runs `fn(job)` on the runner's pool; the
job reports with `job.progress(done, total, text)` and checks `job.check()` (raises `JobCancelled` once
`cancel()` was called). Results cross back as queued signals of the runner (a QObject living on the GUI
thread) and are dispatched there to the callbacks, so callbacks may touch widgets. No lambda is ever
connected to a cross-thread signal (STYLE.md pitfalls); callbacks are plain Python callables the runner calls
from its own slot on the GUI thread. `shutdown()` cancels everything and waits (bounded) for the pool.
"""
from __future__ import annotations

import threading
import traceback
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from robult_engine.checkpoint import CheckpointError
from robult_engine.config import ConfigError
from robult_engine.data.base import DataError

EXPECTED_ERRORS = (DataError, CheckpointError, ConfigError, FileNotFoundError, PermissionError, ValueError)


class JobCancelled(Exception):
    """Raised by `Job.check()` after `Job.cancel()`."""


def describe_error(e: BaseException) -> str:
    """A message for the user: expected errors as they are, anything else with its type."""
    if isinstance(e, EXPECTED_ERRORS):
        return str(e)
    return f"{type(e).__name__}: {e}"


class Job(QRunnable):
    def __init__(self, runner: "JobRunner", job_id: int, fn: Callable[["Job"], Any]) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the runner drops its reference once the result has been dispatched
        self._runner = runner
        self.job_id = job_id
        self._fn = fn
        self._cancel = threading.Event()

    # --- API for the job function (worker thread) ------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled()

    def progress(self, done: int, total: int, text: str = "") -> None:
        self._runner.sig_job_progress.emit(self.job_id, int(done), int(total), str(text))

    # --- QRunnable ------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.check()
            result = self._fn(self)
            self.check()
        except JobCancelled:
            self._runner.sig_job_cancelled.emit(self.job_id)
        except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a dead thread
            if not isinstance(e, EXPECTED_ERRORS):
                traceback.print_exc()
            self._runner.sig_job_failed.emit(self.job_id, describe_error(e))
        else:
            self._runner.sig_job_finished.emit(self.job_id, result)


class JobRunner(QObject):
    """Owns a QThreadPool (default: one thread, so jobs touching one model never overlap)."""
    sig_job_finished = Signal(int, object)
    sig_job_failed = Signal(int, str)
    sig_job_cancelled = Signal(int)
    sig_job_progress = Signal(int, int, int, str)

    def __init__(self, parent: QObject | None = None, max_threads: int = 1) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._next_id = 0
        self._jobs: dict[int, tuple[Job, dict[str, Callable | None]]] = {}
        self._closed = False
        self.sig_job_finished.connect(self._on_job_finished)
        self.sig_job_failed.connect(self._on_job_failed)
        self.sig_job_cancelled.connect(self._on_job_cancelled)
        self.sig_job_progress.connect(self._on_job_progress)

    def start(self, fn: Callable[[Job], Any], *, on_done: Callable[[Any], None] | None = None,
              on_failed: Callable[[str], None] | None = None, on_progress: Callable[[int, int, str], None] | None = None,
              on_cancelled: Callable[[], None] | None = None) -> Job | None:
        if self._closed:
            return None
        self._next_id += 1
        job = Job(self, self._next_id, fn)
        self._jobs[job.job_id] = (job, {"done": on_done, "failed": on_failed, "progress": on_progress,
                                        "cancelled": on_cancelled})
        self.pool.start(job)
        return job

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def cancel_all(self) -> None:
        for job, _ in self._jobs.values():
            job.cancel()

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Wait for the pool (tests, shutdown). Results already emitted are still dispatched by the event loop."""
        return self.pool.waitForDone(timeout_ms)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel every job, drop the queued ones and wait (bounded) for the running one. Idempotent; safe
        when Qt already deleted the runner (its pool's destructor then waited already)."""
        self._closed = True
        self.cancel_all()
        ok = True
        if shiboken6.isValid(self.pool):
            self.pool.clear()  # jobs not yet started never start
            ok = self.pool.waitForDone(timeout_ms)
        self._jobs.clear()
        return ok

    # --- dispatch on the GUI thread -------------------------------------------------------------------
    def _pop(self, job_id: int) -> dict[str, Callable | None]:
        entry = self._jobs.pop(job_id, None)
        return entry[1] if entry else {}

    @Slot(int, object)
    def _on_job_finished(self, job_id: int, result: object) -> None:
        cb = self._pop(job_id).get("done")
        if cb is not None:
            cb(result)

    @Slot(int, str)
    def _on_job_failed(self, job_id: int, message: str) -> None:
        cb = self._pop(job_id).get("failed")
        if cb is not None:
            cb(message)

    @Slot(int)
    def _on_job_cancelled(self, job_id: int) -> None:
        cb = self._pop(job_id).get("cancelled")
        if cb is not None:
            cb()

    @Slot(int, int, int, str)
    def _on_job_progress(self, job_id: int, done: int, total: int, text: str) -> None:
        entry = self._jobs.get(job_id)
        cb = entry[1].get("progress") if entry else None
        if cb is not None:
            cb(done, total, text)
