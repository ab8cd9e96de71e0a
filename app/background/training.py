"""Training on a background thread, and inference requests on the model while it trains.

Both follow the background-work contract of `app.core.work` (started / progress / result / error /
cancelled, GUI-thread callbacks of one shape).

- `TrainingWorker` is a QObject moved to a QThread that has no parent. Its `run` slot loads the dataset
  (through the window's dataset cache) and runs `Trainer.run()`, whose callbacks run on that thread. Every
  engine event becomes a queued signal carrying the frozen event: `sig_progressed` (`Started`, `StepEnded`,
  `EpochEnded`), then exactly one of `sig_finished` (`Finished`), `sig_cancelled` (`Finished` with
  `cancelled=True`: stopped by the user, best checkpoint kept) or `sig_failed` (`Failed`, which has `message`
  and `kind` like `app.core.work.Failure`). It never touches a widget.
- `TrainingController` (GUI thread) owns the thread and the worker. Its signals of the same names are the
  worker's, connected signal-to-signal (no relay slot). `sig_stopped` follows once the thread has ended.
  `stop()` is the cancel; `shutdown()` is stop flag → `quit()` → `wait(timeout)` → deliver the worker's last
  queued events → drop references (from the window's `closeEvent` and `QCoreApplication.aboutToQuit`).

GUI → worker goes one way only: the stop flag (`threading.Event`) and a request channel. A queued slot on the
worker would never run while its `run` slot is busy, so nothing is ever invoked on the worker.

Inference on the model while it trains (the explorer)
-----------------------------------------------------
    work = controller.run_on_model(fn, on_result=..., on_error=..., on_cancelled=...)   # fn(model) -> value

* During training, `fn(model)` runs **on the training thread**, between two optimizer steps (drained in the
  trainer's step/epoch callback), with the live model in `eval()` under `torch.no_grad()`; its previous mode
  is restored afterwards. The model may live on the CUDA device; return plain data or detached CPU tensors.
* When no training runs, `fn` runs on the controller's WorkRunner with the model handed to `set_model()`
  (the window's current model, eval mode, CPU).
* `on_result(value)` / `on_error(Failure)` / `on_cancelled(None)` are called on the GUI thread; a cancelled
  request is skipped if it has not run yet, and its answer is dropped if it has.
"""
from __future__ import annotations

import queue
import threading
import traceback
import weakref
from pathlib import Path
from typing import Any, Callable

import shiboken6
import torch
from PySide6.QtCore import QCoreApplication, QObject, QThread, QThreadPool, Signal, Slot

from app.core.run_session import TrainingJob
from app.core.work import Callbacks, Failure, Work
from robult_engine.events import EpochEnded, Failed, Finished, StepEnded

from .runner import WorkRunner

# Every QThread this module starts, so tests can assert none is left running.
LIVE_THREADS: "weakref.WeakSet[QThread]" = weakref.WeakSet()
# Threads that did not stop within the shutdown timeout: kept referenced (never garbage-collected while running).
_STUBBORN: list[QThread] = []


class NoModelError(RuntimeError):
    """An inference request arrived while no model is loaded and none is training."""


class _RequestChannel:
    """A queue of (work, fn) that can be closed atomically, so no request slips in between the worker's last
    drain and the controller switching to the pool."""

    def __init__(self) -> None:
        self._q: queue.Queue[tuple[Work, Callable]] = queue.Queue()
        self._lock = threading.Lock()
        self._open = True

    def put(self, work: Work, fn: Callable) -> bool:
        with self._lock:
            if not self._open:
                return False
            self._q.put((work, fn))
            return True

    def drain(self) -> list[tuple[Work, Callable]]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> list[tuple[Work, Callable]]:
        with self._lock:
            self._open = False
            return self.drain()


def _call_on_model(fn: Callable, model) -> Any:
    """Run a request on `model` in eval mode without gradients, restoring its mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return fn(model)
    finally:
        model.train(was_training)


class TrainingWorker(QObject):
    """Runs one training job on its own thread. Never touches widgets; talks only through signals."""

    sig_started = Signal(object)  # TrainingJob
    sig_progressed = Signal(object)  # Started | StepEnded | EpochEnded
    sig_finished = Signal(object)  # Finished
    sig_cancelled = Signal(object)  # Finished(cancelled=True)
    sig_failed = Signal(object)  # Failed
    sig_request_done = Signal(int, str, object)  # work id, "result" | "error" | "cancelled", payload
    sig_release = Signal(object)  # served requests, so their callables (and what they hold) die on the GUI thread
    sig_done = Signal()  # run() returned; the thread may quit

    def __init__(self, job: TrainingJob, bundle_loader: Callable, stop_event: threading.Event,
                 requests: _RequestChannel) -> None:
        super().__init__()  # no parent: moveToThread refuses objects with a parent
        self.job = job
        self._load_bundle = bundle_loader
        self._stop = stop_event
        self._requests = requests
        self._trainer = None
        self.final_event: Finished | Failed | None = None

    @Slot()
    def run(self) -> None:
        from robult_engine.trainer import Trainer
        job = self.job
        self.sig_started.emit(job)
        try:
            try:
                bundle = self._load_bundle(job.config.data)
            except Exception as e:  # noqa: BLE001 - a bad dataset ends the run with a readable message
                self._on_event(Failed(f"The dataset could not be loaded: {e}", "data"))
                return
            self._trainer = Trainer(job.config, bundle, callbacks=[self._on_event], should_stop=self._stop.is_set,
                                    out_dir=job.out_dir, resume_from=job.resume_from,
                                    trust_code=frozenset(job.trust_code))
            self._trainer.run()  # never raises; the final event reaches _on_event
        except Exception as e:  # noqa: BLE001 - defensive: the worker must always end with an event
            self._on_event(Failed(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}", "error"))
        finally:
            model = self._trainer.model if self._trainer is not None else None
            pending = self._requests.close()
            self._serve(pending, model, "training ended before the model was built")
            del pending
            self._trainer = None
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())  # hand the object back before its thread ends
            self.sig_done.emit()

    def _on_event(self, ev) -> None:
        """Trainer callback, on the training thread."""
        if isinstance(ev, Finished):
            self.final_event = ev
            (self.sig_cancelled if ev.cancelled else self.sig_finished).emit(ev)
        elif isinstance(ev, Failed):
            self.final_event = ev
            self.sig_failed.emit(ev)
        else:
            self.sig_progressed.emit(ev)
            if isinstance(ev, (StepEnded, EpochEnded)):
                pending = self._requests.drain()
                self._serve(pending, self._trainer.model if self._trainer is not None else None,
                            "the model is not built yet")
                del pending

    def _serve(self, pending: list[tuple[Work, Callable]], model, no_model: str) -> None:
        if not pending:
            return
        for work, fn in pending:
            if work.cancelled:
                self.sig_request_done.emit(work.work_id, "cancelled", None)
                continue
            if model is None:
                self.sig_request_done.emit(work.work_id, "error", Failure.of(NoModelError(no_model)))
                continue
            try:
                value = _call_on_model(fn, model)
            except Exception as e:  # noqa: BLE001 - the requester gets the failure; the training goes on
                self.sig_request_done.emit(work.work_id, "error", Failure.of(e))
            else:
                self.sig_request_done.emit(work.work_id, "result", value)
        # the callables may hold Qt objects (a requester's closure): let their last reference go on the GUI thread
        self.sig_release.emit(pending)


class TrainingController(QObject):
    """Owns the training thread and worker (GUI thread). See the module docstring."""

    sig_started = Signal(object)  # TrainingJob
    sig_progressed = Signal(object)  # Started | StepEnded | EpochEnded
    sig_finished = Signal(object)  # Finished
    sig_cancelled = Signal(object)  # Finished(cancelled=True)
    sig_failed = Signal(object)  # Failed
    sig_stopped = Signal()  # the thread has ended and references are dropped (is_running is False again)

    def __init__(self, bundle_loader: Callable, parent: QObject | None = None,
                 shutdown_timeout_ms: int = 30_000) -> None:
        super().__init__(parent)
        self._load_bundle = bundle_loader
        self.shutdown_timeout_ms = shutdown_timeout_ms
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._stop = threading.Event()
        self._requests: _RequestChannel | None = None
        self._model = None  # the model idle requests run on
        self._next_request = 0
        self._pending: dict[int, Callbacks] = {}  # requests sent to the training thread
        self.runner = WorkRunner(self)  # idle requests (global pool)
        self.job: TrainingJob | None = None
        self.last_final_event: Finished | Failed | None = None
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._on_app_about_to_quit)

    # --- state ------------------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        """True while a run's thread exists: requests submitted now run on the training thread."""
        return self._thread is not None

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def set_model(self, model) -> None:
        """The model idle requests run on (the window's current model; eval mode, CPU)."""
        self._model = model

    # --- training ---------------------------------------------------------------------------------------
    def start(self, job: TrainingJob) -> None:
        if self.is_running:
            raise RuntimeError("a training run is already in progress")
        Path(job.out_dir).mkdir(parents=True, exist_ok=True)
        self.job = job
        self.last_final_event = None
        self._stop = threading.Event()
        self._requests = _RequestChannel()
        thread = QThread()  # no parent: owned here, ended in shutdown()/_on_thread_finished
        thread.setObjectName(f"robult-training-{job.run_id}")
        worker = TrainingWorker(job, self._load_bundle, self._stop, self._requests)
        worker.moveToThread(thread)
        for name in ("sig_started", "sig_progressed", "sig_finished", "sig_cancelled", "sig_failed"):
            getattr(worker, name).connect(getattr(self, name))  # signal to signal
        worker.sig_request_done.connect(self._on_worker_request_done)
        worker.sig_release.connect(self._on_worker_release)
        worker.sig_done.connect(thread.quit)
        thread.started.connect(worker.run)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        LIVE_THREADS.add(thread)
        thread.start()

    def stop(self) -> None:
        """Cancel the run after the current step; it ends with sig_cancelled (best checkpoint kept)."""
        self._stop.set()

    def shutdown(self, timeout_ms: int | None = None) -> bool:
        """Stop the run and end the thread: stop flag → quit() → wait(timeout) → drop references.

        Events the worker sent before it ended are delivered first (in order), so the session rows are
        complete. Returns False when the thread did not end in time (it is then kept referenced)."""
        thread = self._thread
        if thread is None:
            return True
        self._stop.set()
        thread.quit()  # takes effect once run() returns; the stop flag makes that happen at the next step
        ok = thread.wait(timeout_ms if timeout_ms is not None else self.shutdown_timeout_ms)
        # deliver the worker's queued events (epoch rows, the final event) before dropping everything
        QCoreApplication.sendPostedEvents(self, 0)
        if not ok:
            _STUBBORN.append(thread)
            return False
        self._release()
        return True

    # --- requests ---------------------------------------------------------------------------------------
    def run_on_model(self, fn: Callable[[Any], object], *, on_result: Callable[[Any], None],
                     on_error: Callable[[Failure], None], on_cancelled: Callable[[Any], None] | None = None) -> Work:
        """Run `fn(model)` on the live model (training thread) or on the current model (pool)."""
        self._next_request += 1
        work = Work(self._next_request)
        if self._requests is not None and self._requests.put(work, fn):
            self._pending[work.work_id] = Callbacks(on_result, on_error, on_cancelled=on_cancelled)
            return work
        model = self._model
        if model is None:
            on_error(Failure.of(NoModelError("no model is loaded; train or open one first")))
            return work
        pool_work = self.runner.start(lambda _w: _call_on_model(fn, model), on_result=on_result, on_error=on_error,
                                      on_cancelled=on_cancelled)
        return pool_work

    @Slot(int, str, object)
    def _on_worker_request_done(self, work_id: int, kind: str, payload: object) -> None:
        callbacks = self._pending.pop(work_id, None)
        if callbacks is None:
            return
        cb = callbacks.get(kind)
        if cb is None:
            return
        owner = getattr(cb, "__self__", None)
        if isinstance(owner, QObject) and not shiboken6.isValid(owner):
            return
        cb(payload)

    @Slot(object)
    def _on_worker_release(self, _objects: object) -> None:
        """Nothing to do: the queued call's arguments are dropped here, on the GUI thread."""

    @Slot()
    def _on_thread_finished(self) -> None:
        # `finished` is emitted by the thread just *before* it ends (isRunning() may still be true here):
        # wait for the end (a few instructions; wait() releases the GIL) before dropping the last reference
        if self._thread is not None and self.sender() in (self._thread, None):
            self._thread.wait()
            self._release()

    def _release(self) -> None:
        if self._thread is None:
            return
        if self._worker is not None:
            self.last_final_event = self._worker.final_event
        self._requests = None
        self._worker = None
        self._thread = None
        self.sig_stopped.emit()

    @Slot()
    def _on_app_about_to_quit(self) -> None:
        self.shutdown()
        self.runner.shutdown()
        QThreadPool.globalInstance().waitForDone(10_000)


def wait_for_jobs(timeout_ms: int = 10_000) -> bool:
    """Wait for the global pool's work (tests and shutdown)."""
    return QThreadPool.globalInstance().waitForDone(timeout_ms)
