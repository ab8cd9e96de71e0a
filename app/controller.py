"""Training on a background thread, inference requests on the live model, and one-shot pool jobs.

Threads (STYLE.md "Long work on a worker QObject moved to a QThread"):

- `TrainingWorker` is a QObject moved to a QThread that has no parent. Its `run` slot loads the dataset (through
  the window's dataset cache) and runs `Trainer.run()`, whose callbacks run on that thread. The callback turns
  every engine event into a queued signal carrying the frozen event object (`sig_step_ended`,
  `sig_epoch_ended`, `sig_finished`, `sig_failed`). It never touches a widget.
- `TrainingController` (GUI thread) owns the thread and the worker, re-emits the worker's signals, and shuts
  them down: stop flag (`threading.Event`) → `quit()` → `wait(timeout)` → drop references, from the window's
  `closeEvent` and from `QCoreApplication.aboutToQuit`.
- One-shot jobs (dataset info for the wizard, loading a checkpoint) run on the global `QThreadPool` through
  `start_job`, which reports back with queued signals too.

GUI → worker goes one way only: the stop flag and a request queue. A queued slot on the worker would never run
while its `run` slot is busy, so nothing is ever "invoked" on the worker.

Inference on the model while it trains (for the explorer)
---------------------------------------------------------
    controller.sig_request_done.connect(self._on_controller_request_done)   # (request_id: int, result: object)
    controller.submit(request_id, fn)       # fn: Callable[[RobultModel], object]

* During training, `fn(model)` runs **on the training thread**, between two optimizer steps (it is drained
  in the trainer's step/epoch callback), with the live model switched to `eval()` and under
  `torch.no_grad()`; the model's previous mode is restored afterwards. The model may live on the CUDA device
  (`next(model.parameters()).device`); return plain data or detached CPU tensors, never the model itself.
* When no training runs, `fn` runs on the QThreadPool with the last model handed to `set_model()` (the
  window's current model, eval mode, CPU).
* The answer arrives on the GUI thread as `sig_request_done(request_id, result)`. `result` is what `fn`
  returned, or the exception instance it raised (also `NoModelError` when there is no model yet). Requests
  are answered in submission order per channel; the caller tags them with its own ids (e.g. a generation
  counter) and drops stale answers.
"""
from __future__ import annotations

import queue
import threading
import traceback
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import shiboken6
import torch
from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from robult_engine.config import RunConfig
from robult_engine.events import EpochEnded, Failed, Finished, StepEnded

# Every QThread this module starts, so tests can assert none is left running.
LIVE_THREADS: "weakref.WeakSet[QThread]" = weakref.WeakSet()
# Threads that did not stop within the shutdown timeout: kept referenced (never garbage-collected while running).
_STUBBORN: list[QThread] = []


class NoModelError(RuntimeError):
    """An inference request arrived while no model is loaded and none is training."""


@dataclass(frozen=True)
class TrainingJob:
    """What the worker needs to run: plain data only."""
    run_id: int
    config: RunConfig
    out_dir: str
    resume_from: str | None = None


class _RequestChannel:
    """A queue of (request_id, fn) that can be closed atomically, so no request slips in between the
    worker's last drain and the controller switching to the pool."""

    def __init__(self) -> None:
        self._q: queue.Queue[tuple[int, Callable]] = queue.Queue()
        self._lock = threading.Lock()
        self._open = True

    def put(self, request_id: int, fn: Callable) -> bool:
        with self._lock:
            if not self._open:
                return False
            self._q.put((request_id, fn))
            return True

    def drain(self) -> list[tuple[int, Callable]]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> list[tuple[int, Callable]]:
        with self._lock:
            self._open = False
            return self.drain()


def _call_on_model(fn: Callable, model) -> Any:
    """Run a request on `model` in eval mode without gradients, restoring its mode; exceptions are returned."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return fn(model)
    except Exception as e:  # noqa: BLE001 - the requester gets the exception as its answer
        return e
    finally:
        model.train(was_training)


class TrainingWorker(QObject):
    """Runs one training job on its own thread. Never touches widgets; talks only through signals."""

    sig_step_ended = Signal(object)  # StepEnded
    sig_epoch_ended = Signal(object)  # EpochEnded
    sig_finished = Signal(object)  # Finished
    sig_failed = Signal(object)  # Failed
    sig_request_done = Signal(int, object)
    sig_labeled_indices = Signal(int, object)  # (run_id, list[int]) once the trainer has drawn them
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
        self._sent_indices = False
        self.final_event: Finished | Failed | None = None

    @Slot()
    def run(self) -> None:
        from robult_engine.trainer import Trainer
        job = self.job
        try:
            try:
                bundle = self._load_bundle(job.config.data)
            except Exception as e:  # noqa: BLE001 - a bad dataset ends the run with a readable message
                ev = Failed(f"The dataset could not be loaded: {e}", "data")
                self.final_event = ev
                self.sig_failed.emit(ev)
                return
            self._trainer = Trainer(job.config, bundle, callbacks=[self._on_event], should_stop=self._stop.is_set,
                                    out_dir=job.out_dir, resume_from=job.resume_from)
            self._trainer.run()  # never raises; the final event reaches _on_event
        except Exception as e:  # noqa: BLE001 - defensive: the worker must always end with an event
            ev = Failed(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}", "error")
            self.final_event = ev
            self.sig_failed.emit(ev)
        finally:
            model = self._trainer.model if self._trainer is not None else None
            pending = self._requests.close()
            for rid, fn in pending:
                self.sig_request_done.emit(rid, _call_on_model(fn, model) if model is not None
                                           else NoModelError("training ended before the model was built"))
            if pending:
                self.sig_release.emit(pending)
            del pending
            self._trainer = None
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())  # hand the object back before its thread ends
            self.sig_done.emit()

    def _on_event(self, ev) -> None:
        """Trainer callback, on the training thread."""
        if not self._sent_indices and self._trainer is not None and hasattr(self._trainer, "labeled_idx"):
            self._sent_indices = True
            self.sig_labeled_indices.emit(self.job.run_id, [int(i) for i in self._trainer.labeled_idx.tolist()])
        if isinstance(ev, StepEnded):
            self.sig_step_ended.emit(ev)
            self._serve_requests()
        elif isinstance(ev, EpochEnded):
            self.sig_epoch_ended.emit(ev)
            self._serve_requests()
        elif isinstance(ev, Finished):
            self.final_event = ev
            self.sig_finished.emit(ev)
        elif isinstance(ev, Failed):
            self.final_event = ev
            self.sig_failed.emit(ev)

    def _serve_requests(self) -> None:
        pending = self._requests.drain()
        if not pending:
            return
        model = self._trainer.model if self._trainer is not None else None
        for rid, fn in pending:
            self.sig_request_done.emit(rid, _call_on_model(fn, model) if model is not None
                                       else NoModelError("the model is not built yet"))
        # the callables may hold Qt objects (a requester's closure): let their last reference go on the GUI thread
        self.sig_release.emit(pending)
        del pending, fn


class TrainingController(QObject):
    """Owns the training thread and worker (GUI thread). See the module docstring for the request channel."""

    sig_started = Signal(int)  # run_id
    sig_step_ended = Signal(object)
    sig_epoch_ended = Signal(object)
    sig_finished = Signal(object)
    sig_failed = Signal(object)
    sig_request_done = Signal(int, object)
    sig_labeled_indices = Signal(int, object)
    sig_stopped = Signal()  # the thread has ended and references are dropped (running is False again)

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
        self.job: TrainingJob | None = None
        self.last_final_event: Finished | Failed | None = None
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._on_app_about_to_quit)

    # --- state ------------------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._thread is not None

    @property
    def is_training(self) -> bool:
        """Alias of is_running: requests submitted now run on the training thread."""
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
        worker.sig_step_ended.connect(self._on_worker_step_ended)
        worker.sig_epoch_ended.connect(self._on_worker_epoch_ended)
        worker.sig_finished.connect(self._on_worker_finished)
        worker.sig_failed.connect(self._on_worker_failed)
        worker.sig_request_done.connect(self._on_worker_request_done)
        worker.sig_labeled_indices.connect(self._on_worker_labeled_indices)
        worker.sig_release.connect(self._on_worker_release)
        worker.sig_done.connect(thread.quit)
        thread.started.connect(worker.run)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        LIVE_THREADS.add(thread)
        thread.start()
        self.sig_started.emit(job.run_id)

    def stop(self) -> None:
        """Ask the run to stop after the current step; it ends with Finished(cancelled=True) (best checkpoint
        kept)."""
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
    def submit(self, request_id: int, fn: Callable[[Any], object]) -> None:
        """Run `fn(model)` on the live model (training thread) or on the current model (pool); the answer
        comes back as sig_request_done(request_id, result)."""
        if self._requests is not None and self._requests.put(request_id, fn):
            return
        model = self._model
        if model is None:
            self.sig_request_done.emit(request_id, NoModelError("no model is loaded; train or open one first"))
            return
        start_job(lambda: _call_on_model(fn, model), self._on_pool_request_done, self._on_pool_request_done,
                  tag=request_id)

    @Slot(int, object)
    def _on_pool_request_done(self, tag: int, result: object) -> None:
        self.sig_request_done.emit(tag, result)

    # --- worker → GUI -----------------------------------------------------------------------------------
    @Slot(object)
    def _on_worker_step_ended(self, ev: StepEnded) -> None:
        self.sig_step_ended.emit(ev)

    @Slot(object)
    def _on_worker_epoch_ended(self, ev: EpochEnded) -> None:
        self.sig_epoch_ended.emit(ev)

    @Slot(object)
    def _on_worker_finished(self, ev: Finished) -> None:
        self.last_final_event = ev
        self.sig_finished.emit(ev)

    @Slot(object)
    def _on_worker_failed(self, ev: Failed) -> None:
        self.last_final_event = ev
        self.sig_failed.emit(ev)

    @Slot(int, object)
    def _on_worker_request_done(self, request_id: int, result: object) -> None:
        self.sig_request_done.emit(request_id, result)

    @Slot(int, object)
    def _on_worker_labeled_indices(self, run_id: int, indices: object) -> None:
        self.sig_labeled_indices.emit(run_id, indices)

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
        self._requests = None
        self._worker = None
        self._thread = None
        self.sig_stopped.emit()

    @Slot()
    def _on_app_about_to_quit(self) -> None:
        self.shutdown()
        QThreadPool.globalInstance().waitForDone(10_000)


# --- one-shot jobs on the QThreadPool ---------------------------------------------------------------------
class _JobHub(QObject):
    """One long-lived QObject on the GUI thread that receives every pool job's answer (a queued signal) and
    hands it to the job's callbacks there. Jobs carry no QObject of their own, so no QObject is ever created
    on one thread and destroyed on another (a source of crashes and lock-order deadlocks with the GIL)."""

    sig_job_ended = Signal(int, bool, object)  # job id, ok, result or exception

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: dict[int, tuple[Callable, Callable, int]] = {}
        self._next = 0
        self.sig_job_ended.connect(self._on_job_ended)

    def register(self, on_done: Callable, on_failed: Callable, tag: int) -> int:
        self._next += 1
        self._callbacks[self._next] = (on_done, on_failed, tag)
        return self._next

    @Slot(int, bool, object)
    def _on_job_ended(self, job_id: int, ok: bool, payload: object) -> None:
        entry = self._callbacks.pop(job_id, None)
        if entry is None:
            return
        on_done, on_failed, tag = entry
        cb = on_done if ok else on_failed
        owner = getattr(cb, "__self__", None)
        if isinstance(owner, QObject) and not shiboken6.isValid(owner):
            return  # the widget that asked is gone
        cb(tag, payload)

    @property
    def pending(self) -> int:
        return len(self._callbacks)


_HUB: _JobHub | None = None


def _hub() -> _JobHub:
    global _HUB
    if _HUB is None or not shiboken6.isValid(_HUB):
        app = QCoreApplication.instance()
        if app is None or QThread.currentThread() is not app.thread():
            raise RuntimeError("start_job must be called from the GUI thread of a running QApplication")
        _HUB = _JobHub()
    return _HUB


class FunctionJob(QRunnable):
    """Run `fn()` on the pool and send (ok, result-or-exception) to the hub. Owned and deleted by the pool."""

    def __init__(self, fn: Callable[[], object], job_id: int, hub: _JobHub) -> None:
        super().__init__()
        self.fn = fn
        self.job_id = job_id
        self.hub = hub

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as e:  # noqa: BLE001 - reported to the caller as a value
            self.hub.sig_job_ended.emit(self.job_id, False, e)
        else:
            self.hub.sig_job_ended.emit(self.job_id, True, result)
        finally:
            self.fn = None  # drop what the job captured here, not when the pool deletes the runnable


def start_job(fn: Callable[[], object], on_done: Callable[[int, object], None],
              on_failed: Callable[[int, object], None], tag: int = 0) -> None:
    """Run `fn()` on the global QThreadPool (call from the GUI thread). `on_done(tag, result)` or
    `on_failed(tag, exception)` is then called on the GUI thread — unless its QObject was deleted meanwhile."""
    hub = _hub()
    job_id = hub.register(on_done, on_failed, tag)
    QThreadPool.globalInstance().start(FunctionJob(fn, job_id, hub))


def wait_for_jobs(timeout_ms: int = 10_000) -> bool:
    """Wait for the pool's jobs (tests and shutdown)."""
    return QThreadPool.globalInstance().waitForDone(timeout_ms)
