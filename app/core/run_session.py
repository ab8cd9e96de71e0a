"""`RunSession`: the run the Training tab shows — start, resume, stop, its session rows and its history. Qt-free.

It drives a *launcher* (the `TrainingController`, duck-typed: `start(job)`, `stop()`, `is_running`,
`stop_requested`) and receives the launcher's reports through `on_started` / `on_progressed` /
`on_finished` / `on_cancelled` / `on_failed` / `on_stopped` (the window connects the controller's signals
of those names to them, on the GUI thread). Everything it decides is written to the session database and
to the observable `SessionState`; the window and the panels subscribe to the state and never write back:

    state.run_id / run_name / run_status / activity    what the Training tab shows
    state.message / message_kind                       the coloured status panel above the curves
    state.status_tip                                   a short status-bar message
    state.buffers_version                              the curve buffers were replaced (panels reset)
    state.runs_version                                 session rows changed (the Sessions table refreshes)
    state.best_checkpoint                              (path, run id, serial) of a best checkpoint to load
    state.first_checkpoint                             (path, run id, serial) of the training run's best
                                                       checkpoint, once per start or resume, as soon as it exists

Rows are written as the events arrive, so killing the app mid-training loses at most the epoch in progress.
A write that meets another program's lock on the database is queued by the store and retried (`tick_store`,
the window's timer); at the end of a run, epochs the database lacks are added from the run folder's
metrics.jsonl, and while writes still wait, the run's message says so (the run is never shown as saved then).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from robult_engine.config import ConfigError, RunConfig
from robult_engine.events import EpochEnded, Failed, Finished, Started, StepEnded
from robult_engine.metrics import PRIMARY

from .sessions import SessionStoreError
from .state import (CRASHED, FAILED, FINISHED, IDLE, PREPARING, RESUMABLE, RUNNING, STOPPED, STOPPING, TRAINING,
                    SessionState, TrainingBuffers)

FAILURE_TITLES = {"nan": "The training diverged", "data": "The data could not be used", "oom": "Out of memory",
                  "config": "The configuration is invalid", "error": "The training failed"}


@dataclass(frozen=True)
class TrainingJob:
    """What the training worker needs to run: plain data only."""
    run_id: int
    config: RunConfig
    out_dir: str
    resume_from: str | None = None
    # the encoder modules outside robult_engine the user trusted for this run (the config's model.encoders);
    # nothing else is imported (robult_engine/models/encoders.py)
    trust_code: tuple[str, ...] = ()


def metric_name(val_metrics: dict[str, dict[str, float]]) -> str:
    """The task's primary metric, read off the metric names (accuracy, f1_micro or mae)."""
    for row in val_metrics.values():
        for name in PRIMARY.values():
            if name in row:
                return name
    return ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class RunSession:
    """Start / resume / stop of one run at a time, its rows, and the replay of a stored run's curves."""

    def __init__(self, store, state: SessionState, buffers: TrainingBuffers, launcher, runs_root: Path) -> None:
        self.store = store
        self.state = state
        self.buffers = buffers
        self.launcher = launcher
        self.runs_root = Path(runs_root)
        self.job: TrainingJob | None = None  # the job the launcher runs (None when idle)
        self._epoch_steps: list[StepEnded] = []  # the current epoch's steps, stored with its epoch row
        self.queue: list[tuple[RunConfig, str]] = []  # the comparison's runs still to start (app/core/comparison.py)
        self.comparison = ""  # the id of the comparison being run ("" for a single run)
        self._queue_total = 0
        self._where = ""  # " Comparison …: run k of n." while a comparison runs
        self._unsaved_note: tuple[str, str, str] | None = None  # (kind, message, message with the note) shown
        self._checkpoint_announced = False  # state.first_checkpoint was set for the job that runs
        # asked before a run whose config names encoder code outside Robult Studio is started or resumed:
        # (what, modules) -> True when the user trusts those modules. The window shows a dialog; without one,
        # nothing is trusted.
        self.confirm_code: Callable[[str, list[str]], bool] = lambda what, modules: False

    # --- commands ---------------------------------------------------------------------------------------
    def start_queue(self, items: list[tuple[RunConfig, str]], comparison: str) -> int | None:
        """Run a comparison: `items` (config, name) one after another, as one comparison id. A row is created
        when its run starts, so closing the app mid-queue leaves the finished runs and nothing half-made.
        Returns the first run's id."""
        if self.launcher.is_running or not items:
            self._tip("A run is already training." if items else "Nothing to run.")
            return None
        self.comparison, self._queue_total = comparison, len(items)
        self.queue = list(items[1:])
        run_id = self.start(*items[0])
        if run_id is None:
            self.cancel_queue()
        return run_id

    def cancel_queue(self) -> int:
        """Start no further run of the comparison (the one training goes on). Returns how many were dropped."""
        n = len(self.queue)
        self.queue = []
        return n

    def start(self, cfg: RunConfig, name: str = "") -> int | None:
        """Create the session row and start the run; returns the run id (None if refused, with the reason in
        the state's message)."""
        if self.launcher.is_running:
            self._tip("A run is already training.")
            return None
        try:
            cfg.validate()
        except ConfigError as e:
            self._say("error", f"The run was not started: {e}")
            return None
        trust = self._trusted(cfg, name or "The new run")
        if trust is None:
            return None
        try:
            run_id = self.store.create_run(cfg, name=name)
        except SessionStoreError as e:  # the file stays locked by another program
            self._say("error", f"The run was not started: {e}. Try again in a moment.")
            return None
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = self.runs_root / f"run-{run_id:04d}-{stamp}"
        self.store.update_run(run_id, run_dir=str(run_dir), comparison=self.comparison)
        self.buffers.clear()
        self.buffers.set_plan(cfg.train.epochs)
        self._buffers_replaced()
        self._show(run_id, name or f"Run #{run_id}", RUNNING)
        self._where = (f" Comparison {self.comparison}: run {self._queue_total - len(self.queue)} of "
                       f"{self._queue_total}." if self.comparison else "")
        self._say("info", f"Preparing {cfg.data.dataset} and the model…{self._where}")
        self._launch(TrainingJob(run_id=run_id, config=cfg, out_dir=str(run_dir), trust_code=trust))
        return run_id

    def resume(self, run_id: int) -> bool:
        """Continue a stopped, failed or crashed run from <run dir>/last.pt (the same session row)."""
        if self.launcher.is_running:
            self._say("warning", "A run is training; stop it before resuming another one.")
            return False
        row = self.store.get_run(run_id)
        if row is None:
            return False
        if row.status not in RESUMABLE:
            self._say("warning", f"Run #{run_id} is {row.status}; only stopped, failed or crashed runs can be "
                                 f"resumed.")
            return False
        last = Path(row.run_dir) / "last.pt" if row.run_dir else None
        if last is None or not last.is_file():
            self.replay(row)
            self._say("error", f"Run #{run_id} cannot be resumed: it ended before its first epoch was complete, "
                               f"so there is no {last or 'last.pt'} to resume from. Start a new run instead "
                               f"(Ctrl+N).")
            return False
        try:
            cfg = RunConfig.from_json(row.config_json)
        except ConfigError as e:
            self._say("error", f"Run #{run_id} cannot be resumed: its stored config is invalid ({e}).")
            return False
        trust = self._trusted(cfg, f"Run #{run_id}")
        if trust is None:
            return False
        if self.state.run_id != run_id or not self.buffers.epoch_x:
            self.replay(row)
        self.buffers.set_plan(cfg.train.epochs)
        self.store.set_status(run_id, RUNNING, error="")
        self._show(run_id, row.name or f"Run #{run_id}", RUNNING)
        self._say("info", f"Resuming run #{run_id} from {last.name}…")
        self._launch(TrainingJob(run_id=run_id, config=cfg, out_dir=row.run_dir, resume_from=str(last),
                                 trust_code=trust))
        return True

    def stop(self) -> None:
        """Cancel the run after the current step (it stays resumable)."""
        if self.launcher.is_running and not self.launcher.stop_requested:
            self.launcher.stop()
            dropped = self.cancel_queue()
            self.state.update(activity=STOPPING)
            rest = f" The {_plural(dropped, 'queued run')} of the comparison will not start." if dropped else ""
            self._say("warning", f"Stopping after the current step; the best checkpoint is kept…{rest}")

    def show_stored(self, run_id: int) -> Any:
        """Show a stored run's curves (not while one trains). Returns its row, or None."""
        row = self.store.get_run(run_id)
        if row is None:
            return None
        if self.launcher.is_running:
            self._say("warning", "A run is training; wait for it or stop it before reopening another session.")
            return None
        self.replay(row)
        return row

    def forget(self, run_ids) -> None:
        """Runs were deleted from the database: stop showing the one on screen if it was among them."""
        if self.state.run_id in run_ids:
            self.buffers.clear()
            self._buffers_replaced()
            self.state.update(run_id=None, run_name="", run_status="")
            self._say("info", "The run shown here was deleted.")

    def closing(self, stopped_in_time: bool) -> None:
        """The app closes: a run that did not stop in time is recorded as stopped (its row says why)."""
        if not stopped_in_time and self.job is not None:
            self.store.set_status(self.job.run_id, STOPPED, error="The app closed before the run finished stopping.")

    # --- history ----------------------------------------------------------------------------------------
    def replay(self, row) -> None:
        """Fill the buffers with a run's stored epochs and the step losses drawn during them."""
        self.buffers.clear()
        try:
            self.buffers.set_plan(RunConfig.from_json(row.config_json).train.epochs)
        except ConfigError:
            pass
        for e in self.store.epochs(row.id):
            for st in e.get("steps") or ():
                try:
                    step, global_step, total_steps, elapsed, lr, losses = st
                    self.buffers.add_step(StepEnded(
                        e["epoch"], int(step), int(global_step), int(total_steps),
                        {k: float("nan") if v is None else float(v) for k, v in dict(losses).items()},
                        float(lr), float(elapsed)))
                except (TypeError, ValueError):  # a malformed row (hand-edited file): skip it, keep the rest
                    continue
            self.buffers.add_epoch(e["epoch"], e["train_losses"], e["val_metrics"], e["val_score"], e["z_norm"],
                                   e["u_norm"], e.get("kappa_hist") or (), e.get("kappa_edges") or (),
                                   e["epoch"] == row.best_epoch, metric_name(e["val_metrics"]),
                                   e.get("kappa_precision"), e.get("kappa_auc"))
        n = len(self.buffers.epoch_x)
        outcome = {FINISHED: (f"Finished — {_plural(n, 'epoch')}", True),
                   STOPPED: (f"Stopped after {_plural(n, 'epoch')} — resumable", False),
                   CRASHED: (f"Crashed after {_plural(n, 'epoch')} — resumable", False),
                   FAILED: (f"Failed after {_plural(n, 'epoch')}", False)}.get(row.status)
        if outcome:
            self.buffers.set_outcome(*outcome)
        self._buffers_replaced()
        self._show(row.id, row.name or f"Run #{row.id}", row.status)

    # --- the launcher's reports (GUI thread) ------------------------------------------------------------
    def on_started(self, job: TrainingJob) -> None:
        self._epoch_steps = []

    def on_progressed(self, ev) -> None:
        if isinstance(ev, StepEnded):
            if self.state.activity == PREPARING:
                self.state.update(activity=TRAINING)
                self._say("info", "Training…  Stop with Esc; the best checkpoint is kept and the run can be resumed."
                          + self._where)
            self.buffers.add_step(ev)
            self._epoch_steps.append(ev)  # written with the epoch's row when it ends
        elif isinstance(ev, EpochEnded):
            self.buffers.add_epoch_event(ev, metric_name(ev.val_metrics))
            if ev.checkpoint_path and not self._checkpoint_announced:
                self._checkpoint_announced = True
                serial = self.state.first_checkpoint[2] + 1 if self.state.first_checkpoint else 1
                self.state.update(first_checkpoint=(ev.checkpoint_path, self._run_id(), serial))
            steps = [s for s in self._epoch_steps if s.epoch == ev.epoch]
            self._epoch_steps = []
            if not self.store.add_epoch(self._run_id(), ev, steps):  # queued behind a lock: kept, retried
                self._tip(f"The session database is busy: {self.store.pending_summary()} wait to be written "
                          f"(kept and retried).")
            self._rows_changed()
        elif isinstance(ev, Started):
            self.buffers.begin_live(ev.steps_per_epoch, ev.total_steps)  # the ETA counts from here
            self.store.update_run(self._run_id(), labeled_indices=list(ev.labeled_indices))

    def on_finished(self, ev: Finished) -> None:
        self._ended(ev)

    def on_cancelled(self, ev: Finished) -> None:
        self._ended(ev)

    def _ended(self, ev: Finished) -> None:
        run_id = self._run_id()
        status = STOPPED if ev.cancelled else FINISHED
        fields: dict[str, Any] = {"status": status, "error_message": "", "test_metrics": dict(ev.test_metrics)}
        if ev.best_epoch >= 0:
            fields.update(best_score=ev.best_score, best_epoch=ev.best_epoch)
        if ev.checkpoint_path:
            fields["checkpoint_path"] = ev.checkpoint_path
        # epochs the database lacks (a write lost, an event never delivered) come from the run folder's log;
        # the status is written after them, in the same queue, so the file never says "finished" without them
        restored = self.store.catch_up_epochs(run_id) if run_id is not None else 0
        self.store.update_run(run_id, **fields)
        self.state.update(run_status=status)
        best = (f"best validation score {ev.best_score:.4f} at epoch {ev.best_epoch + 1}"
                if ev.best_epoch >= 0 and math.isfinite(ev.best_score) else "no completed epoch")
        planned = self.buffers.epochs_planned
        if ev.cancelled:
            msg = (f"Stopped after {_plural(ev.epochs_run, 'epoch')} — {best}. Resume continues from the last "
                   f"completed epoch (Ctrl+R).")
            kind = "warning"
            self.buffers.set_outcome(f"Stopped during epoch {ev.epochs_run + 1} of {planned} — resumable", False)
        else:
            why = " (early stopping)" if ev.stopped_early else ""
            msg = f"Finished{why} in {ev.elapsed_s:.0f} s — {best}."
            kind = "ok"
            self.buffers.set_outcome(f"Early stopping after epoch {ev.epochs_run} of {planned}" if ev.stopped_early
                                     else f"Finished — {_plural(ev.epochs_run, 'epoch')}", True)
        test = ev.test_metrics.get(max(ev.test_metrics, key=lambda k: k.count("+"))) if ev.test_metrics else None
        if test:
            metric = metric_name(ev.test_metrics)
            if metric in test:
                msg += f" Test {metric} with all modalities: {test[metric]:.4f}."
        if restored:
            msg += (f" {_plural(restored, 'epoch')} missing from the session database "
                    f"{'was' if restored == 1 else 'were'} added from the run folder's metrics.jsonl (without "
                    f"{'its' if restored == 1 else 'their'} step losses).")
        self._say_unsaved(kind, msg)
        self._tip(msg.split(" — ")[0])
        if ev.checkpoint_path:
            serial = self.state.best_checkpoint[2] + 1 if self.state.best_checkpoint else 1
            self.state.update(best_checkpoint=(ev.checkpoint_path, run_id, serial))
        self._rows_changed()

    def on_failed(self, ev: Failed) -> None:
        run_id = self._run_id()
        fields = {"status": FAILED, "error_message": f"[{ev.kind}] {ev.message}"}
        if ev.checkpoint_path:
            fields["checkpoint_path"] = ev.checkpoint_path
        if run_id is not None:
            self.store.update_run(run_id, **fields)
        self.state.update(run_status=FAILED)
        title = FAILURE_TITLES.get(ev.kind, FAILURE_TITLES["error"])
        where = f" (epoch {ev.epoch + 1})" if ev.epoch >= 0 else ""
        extra = " The best checkpoint before the failure is kept." if ev.checkpoint_path else ""
        self._say_unsaved("error", f"{title}{where}: {ev.message}{extra}")
        self.buffers.set_outcome(f"Failed{where}", False)
        self._tip(title)
        self._rows_changed()

    def on_stopped(self) -> None:
        """The launcher's thread has ended: the next run of a comparison starts, if one is queued (the window's
        run queue, app/core/run_queue.py, counts the whole comparison as one request: it ends when this does not
        start another run)."""
        self.job = None
        self.state.update(activity=IDLE)
        self._rows_changed()
        while self.queue:  # a run that cannot start (its reason is in the message) gives way to the next one
            cfg, name = self.queue.pop(0)
            if self.start(cfg, name) is not None:
                return
        if self.comparison:
            self.state.update(comparison_done=self.comparison)
            self.comparison, self._queue_total = "", 0

    # --- helpers ----------------------------------------------------------------------------------------
    def _trusted(self, cfg: RunConfig, what: str) -> tuple[str, ...] | None:
        """The outside encoder modules `cfg` names, once the user has trusted them (`confirm_code`); () for a
        config of built-in encoders; None when they were not trusted (the reason is in the state's message)."""
        from robult_engine.models.encoders import untrusted_modules
        try:
            modules = untrusted_modules(cfg.model.encoders)
        except ConfigError as e:
            self._say("error", f"{what} was not started: {e}")
            return None
        if modules and not self.confirm_code(what, list(modules)):
            self._say("error", f"{what} was not started: its configuration names code outside Robult Studio that "
                               f"was not trusted ({', '.join(modules)}); nothing was imported.")
            return None
        return tuple(modules)

    def tick_store(self, force: bool = False) -> None:
        """The window's timer (GUI thread): retry the writes that wait for the session database (with backoff,
        or now with `force`) and renew the live run's heartbeat. Once nothing waits, the run's message loses
        its "not yet saved" note."""
        waiting = self.store.pending_writes()
        self.store.tick(force=force)
        if waiting and not self.store.pending_writes():
            note, self._unsaved_note = self._unsaved_note, None
            if note is not None and self.state.message == note[2]:
                self._say(note[0], note[1])
            self._tip("The session database could be written again: every epoch is saved.")
            self._rows_changed()

    def _say_unsaved(self, kind: str, msg: str) -> None:
        """Say how a run ended — with a warning while some of its writes still wait for the database."""
        s = self.store
        if not s.pending_writes():
            self._unsaved_note = None
            self._say(kind, msg)
            return
        summary = s.pending_summary()
        verb = "is" if summary.startswith("1 ") and " and " not in summary else "are"
        shown = (f"{msg} The session database {s.location} cannot be written right now ({s.last_write_error}): "
                 f"{summary} {verb} not yet saved. They are kept and retried every few seconds — keep the app "
                 f"open until this note clears (the run folder's metrics.jsonl has every epoch too).")
        self._unsaved_note = (kind, msg, shown)
        self._say("warning" if kind == "ok" else kind, shown)

    def _launch(self, job: TrainingJob) -> None:
        self.job = job
        self._epoch_steps = []
        self._checkpoint_announced = False
        self.launcher.start(job)
        self.state.update(activity=PREPARING)  # after start: listeners see the launcher running
        self._rows_changed()

    def _run_id(self) -> int | None:
        return self.job.run_id if self.job is not None else self.state.run_id

    def _show(self, run_id: int, name: str, status: str) -> None:
        self.state.update(run_id=run_id, run_name=name, run_status=status)

    def _say(self, kind: str, text: str) -> None:
        self.state.update(message=text, message_kind=kind)

    def _tip(self, text: str) -> None:
        self.state.update(status_tip=text)

    def _buffers_replaced(self) -> None:
        self.state.update(buffers_version=self.state.buffers_version + 1)

    def _rows_changed(self) -> None:
        self.state.update(runs_version=self.state.runs_version + 1)
