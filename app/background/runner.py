"""`WorkRunner`: the contract of `app.core.work` on a QThreadPool.

    runner = WorkRunner(parent, max_threads=1)       # or WorkRunner(parent) on the global pool
    work = runner.start(fn, on_result=..., on_error=..., on_progress=..., on_cancelled=..., on_started=...)
    work.cancel()                                    # no result is delivered after this

`fn(work)` runs on a pool thread and never touches a widget. Its reports cross back through one queued signal
of the runner (a QObject living on the GUI thread) and are dispatched there to the callbacks, so callbacks may
touch widgets. No lambda is connected to a cross-thread signal and no QObject is created on a pool thread.
A callback whose QObject owner was deleted meanwhile is not called. `shutdown()` cancels everything, drops
the queued work and waits (bounded) for the running one.
"""
from __future__ import annotations

import traceback
import weakref
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from app.core.work import EXPECTED_ERRORS, Callbacks, Cancelled, Failure, Work

# every runner, so tests can assert that none is left with work
LIVE_RUNNERS: "weakref.WeakSet[WorkRunner]" = weakref.WeakSet()


class _Task(QRunnable):
    def __init__(self, runner: "WorkRunner", work: Work, fn: Callable[[Work], Any]) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._runner = runner
        self.work = work
        self._fn = fn

    def run(self) -> None:
        sig = self._runner.sig_report
        wid = self.work.work_id
        try:
            self.work.check()
            sig.emit(wid, "started", None)
            result = self._fn(self.work)
            self.work.check()
        except Cancelled:
            sig.emit(wid, "cancelled", None)
        except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a dead thread
            if not isinstance(e, EXPECTED_ERRORS):
                traceback.print_exc()
            sig.emit(wid, "error", Failure.of(e))
        else:
            sig.emit(wid, "result", result)
        finally:
            self._fn = None  # drop what the work captured here, not when the pool deletes the runnable


class WorkRunner(QObject):
    """Runs functions off the GUI thread and reports to their callbacks on the GUI thread.

    `max_threads=None` uses the application's global pool; a number gives the runner its own pool (1: the
    work of one runner never overlaps, e.g. everything touching one model)."""

    sig_report = Signal(int, str, object)  # work id, kind, payload (queued from the pool threads)

    def __init__(self, parent: QObject | None = None, max_threads: int | None = None) -> None:
        super().__init__(parent)
        if max_threads is None:
            self.pool = QThreadPool.globalInstance()
            self._own_pool = False
        else:
            self.pool = QThreadPool(self)
            self.pool.setMaxThreadCount(max_threads)
            self._own_pool = True
        self._next_id = 0
        self._works: dict[int, tuple[Work, Callbacks]] = {}
        self._closed = False
        self.sig_report.connect(self._on_report)
        LIVE_RUNNERS.add(self)

    def start(self, fn: Callable[[Work], Any], *, on_result: Callable[[Any], None],
              on_error: Callable[[Failure], None], on_progress: Callable[[Any], None] | None = None,
              on_cancelled: Callable[[Any], None] | None = None,
              on_started: Callable[[Work], None] | None = None) -> Work:
        """Run `fn(work)` on the pool (call from the GUI thread). Returns the Work handle (cancel it to drop
        its answer). After shutdown() the work is cancelled at once."""
        self._next_id += 1
        work = Work(self._next_id, self.sig_report.emit)
        if self._closed:
            work.cancel()
            return work
        self._works[work.work_id] = (work, Callbacks(on_result, on_error, on_progress, on_cancelled, on_started))
        self.pool.start(_Task(self, work, fn))
        return work

    @property
    def busy(self) -> bool:
        return bool(self._works)

    def cancel_all(self) -> None:
        for work, _ in self._works.values():
            work.cancel()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Wait for the pool (tests, shutdown). Reports already sent are still dispatched by the event loop."""
        return self.pool.waitForDone(timeout_ms)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel every work, drop the queued ones and wait (bounded) for the running one. Idempotent; safe
        when Qt already deleted the runner (its pool's destructor then waited already)."""
        self._closed = True
        self.cancel_all()
        ok = True
        if self._own_pool and shiboken6.isValid(self.pool):
            self.pool.clear()  # work not yet started never starts
            ok = self.pool.waitForDone(timeout_ms)
        self._works.clear()
        return ok

    # --- dispatch on the GUI thread -------------------------------------------------------------------
    @Slot(int, str, object)
    def _on_report(self, work_id: int, kind: str, payload: object) -> None:
        entry = self._works.get(work_id)
        if entry is None:
            return
        work, callbacks = entry
        if kind in ("result", "error", "cancelled"):
            del self._works[work_id]
            if work.cancelled:  # a result (or error) of cancelled work is stale: report the cancel instead
                kind, payload = "cancelled", None
        elif work.cancelled and not getattr(payload, "durable", False):
            return  # no progress of cancelled work (except a partial result the caller must store)
        cb = callbacks.get(kind)
        if cb is None:
            return
        owner = getattr(cb, "__self__", None)
        if isinstance(owner, QObject) and not shiboken6.isValid(owner):
            return  # the widget that asked is gone
        cb(work if kind == "started" else payload)


def wait_ms(ms: int) -> None:
    """Run the GUI thread's event loop for `ms` milliseconds, as the running app does, for scripts that wait
    for background work (a demo's screenshot, a benchmark). `QEventLoop.exec` releases the GIL while it waits
    for events, so the worker threads run at full speed; `QTest.qWait` keeps the GIL while it polls and slows
    a Python worker many times over (tests/app/test_wait_ms.py measures both)."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    QTimer.singleShot(max(0, int(ms)), loop.quit)
    loop.exec()
