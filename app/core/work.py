"""The background-work contract, Qt-free: what a piece of work off the GUI thread sees and what it reports.

Everything that runs off the GUI thread (training, inference on the live model, dataset reads, checkpoint
loads, robustness matrices, projections) reports the same five things, through callbacks of one shape —
each takes one argument — that are always called on the GUI thread:

    on_started(work)        the work began running on its thread
    on_progress(payload)    `Progress(done, total, text)` for pool work; the engine's events for training
    on_result(payload)      what the work returned
    on_error(failure)       a `Failure` (message, kind) — the trainer's `Failed` event has the same two fields
    on_cancelled(payload)   the work was cancelled: None for pool work, the trainer's `Finished` for a run

Exactly one of result / error / cancelled is called, once. A cancelled `Work` delivers no more progress (except
payloads marked `durable = True`: partial results the caller must store, such as a finished run of a sweep) and
never a result, even if it had finished already: cancelling is also how a caller drops a stale answer (a newer request replaces
an older one). The function running the work receives its `Work` and calls `work.progress(...)` and
`work.check()` (raises `Cancelled` once `cancel()` was called) between steps.

Qt adapters: `app.background.runner.WorkRunner` (a pool) and `app.background.training.TrainingController`
(the training thread, which also runs requests on the model while it trains).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from robult_engine.checkpoint import CheckpointError
from robult_engine.config import ConfigError
from robult_engine.data.base import DataError

# errors whose message is meant for the user as it stands; anything else is shown with its type
EXPECTED_ERRORS = (DataError, CheckpointError, ConfigError, FileNotFoundError, PermissionError, ValueError)


class Cancelled(Exception):
    """Raised by `Work.check()` after `Work.cancel()`."""


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    text: str = ""


@dataclass(frozen=True)
class Failure:
    """Why a piece of work failed, for the user (`message`), and the exception when there was one."""
    message: str
    kind: str = "error"
    exception: BaseException | None = None

    @classmethod
    def of(cls, e: BaseException) -> "Failure":
        return cls(describe_error(e), "error", e)


def describe_error(e: BaseException) -> str:
    """A message for the user: expected errors as they are, anything else with its type."""
    if isinstance(e, EXPECTED_ERRORS):
        return str(e) or type(e).__name__
    return f"{type(e).__name__}: {e}"


Callback = Callable[[Any], None]


class Work:
    """One piece of background work: the handle the caller keeps and the function running it receives.

    `cancel()` may be called from any thread; `check()` and `progress()` are called by the work itself."""

    def __init__(self, work_id: int, report: Callable[[int, str, Any], None] | None = None) -> None:
        self.work_id = work_id
        self._report = report
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def progress(self, done: int, total: int, text: str = "") -> None:
        if self._report is not None:
            self._report(self.work_id, "progress", Progress(int(done), int(total), str(text)))

    def emit(self, payload: Any) -> None:
        """Report any immutable payload to on_progress (a partial result the caller stores as it comes, e.g.
        each finished run of a sweep)."""
        if self._report is not None:
            self._report(self.work_id, "progress", payload)


@dataclass
class Callbacks:
    """The callbacks of one piece of work (GUI thread). on_result and on_error are required: an error is
    always shown somewhere."""
    on_result: Callback
    on_error: Callback
    on_progress: Callback | None = None
    on_cancelled: Callback | None = None
    on_started: Callback | None = None

    def get(self, kind: str) -> Callback | None:
        return {"result": self.on_result, "error": self.on_error, "progress": self.on_progress,
                "cancelled": self.on_cancelled, "started": self.on_started}[kind]
