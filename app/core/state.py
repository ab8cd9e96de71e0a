"""Qt-free application state (model and view apart): what the panels show, never how.

- `LoadedModel`: the model that is "current" in the app (an opened checkpoint, a reopened session, the best
  checkpoint of a finished run). `MainWindow.sig_model_loaded` carries one.
- `SessionState`: the run status, the current run and model, the dataset and user-facing notes. Panels
  subscribe to it; it is changed on the GUI thread only.
- `WorkingContext`: what a restart brings back (the last model, its dataset, the explorer's sample and toggles,
  the tab), kept in the session database's ui_state under `CONTEXT_KEY`.
- `TrainingBuffers`: the live curves of a run, filled as events arrive (GUI thread) and read by the training
  panel's redraw timer. Plain Python lists and dicts; no Qt, no tensors.

This module imports neither Qt nor torch at import time, so it can be tested and reused headless.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from robult_engine.config import RunConfig
    from robult_engine.data.base import DatasetInfo
    from robult_engine.events import EpochEnded, StepEnded
    from robult_engine.models.robult import RobultModel

# Run status values, as stored in the `runs.status` column.
RUNNING, FINISHED, STOPPED, FAILED, CRASHED = "running", "finished", "stopped", "failed", "crashed"
RUN_STATUSES = (RUNNING, FINISHED, STOPPED, FAILED, CRASHED)
RESUMABLE = (STOPPED, CRASHED, FAILED)

# What the app is doing right now (SessionState.activity).
IDLE, PREPARING, TRAINING, STOPPING = "idle", "preparing", "training", "stopping"


@dataclass(frozen=True)
class LoadedModel:
    """The current model of the app: owned by `MainWindow.current_model` (changed only by `set_current_model`, which
    emits `MainWindow.sig_model_loaded`)."""
    model: "RobultModel"  # eval mode, on the CPU; never trained further by the app
    config: "RunConfig"
    info: "DatasetInfo"
    checkpoint_path: str
    run_id: int | None  # the session it belongs to, None for a file opened from elsewhere
    labeled_indices: "torch.Tensor"  # int64 indices into the train split that kept their labels


Listener = Callable[[set[str]], None]

def same_inputs(a: Any, b: Any) -> bool:
    """Two run configs whose models take the same samples and have the same architecture (data and model
    sections equal): a model of one can stand for the other in the explorer."""
    da, db = getattr(a, "data", None), getattr(b, "data", None)
    ma, mb = getattr(a, "model", None), getattr(b, "model", None)
    return da is not None and ma is not None and da == db and ma == mb


CONTEXT_KEY = "window/context"  # ui_state: the working context of the last window (WorkingContext.to_dict())
CONTEXT_VERSION = 1


@dataclass(frozen=True)
class WorkingContext:
    """What the window was working on, so that a restart brings it back: the current model (its checkpoint, and
    the run it belongs to), the dataset, the explorer's sample and toggles, and the tab on screen."""
    checkpoint: str = ""  # the current model's checkpoint file ("" when no model was current)
    run_id: int | None = None  # the session run of that checkpoint (None for a file opened from elsewhere)
    dataset: str = ""  # the current model's dataset, else the window's default dataset
    tab: str = ""  # the title of the tab on screen
    inspection: dict | None = None  # the explorer's {"sample": {...}, "enabled": {modality: on}}

    def to_dict(self) -> dict[str, Any]:
        return {"version": CONTEXT_VERSION, "checkpoint": self.checkpoint, "run_id": self.run_id,
                "dataset": self.dataset, "tab": self.tab, "inspection": self.inspection}

    @classmethod
    def from_dict(cls, d: Any) -> "WorkingContext | None":
        """The context of a stored dict; None for anything else. Never raises: a damaged or foreign value
        gives None (or drops the fields that do not fit), and the window starts clean."""
        if not isinstance(d, dict):
            return None

        def text(key: str) -> str:
            v = d.get(key)
            return v if isinstance(v, str) else ""

        run_id = d.get("run_id")
        if not isinstance(run_id, int) or isinstance(run_id, bool):
            run_id = None
        insp = d.get("inspection")
        return cls(checkpoint=text("checkpoint"), run_id=run_id, dataset=text("dataset"), tab=text("tab"),
                   inspection=insp if isinstance(insp, dict) else None)


class SessionState:
    """Observable, Qt-free state of the window. `update(**changes)` notifies listeners with the changed keys."""

    FIELDS = ("activity", "run_id", "run_name", "run_status", "dataset", "dataset_note",
              "message", "message_kind", "status_tip", "buffers_version", "runs_version", "best_checkpoint",
              "first_checkpoint", "comparison_done")

    def __init__(self) -> None:
        self.activity: str = IDLE
        self.run_id: int | None = None  # the run the training panel shows
        self.run_name: str = ""
        self.run_status: str = ""  # one of RUN_STATUSES, "" when no run is shown
        self.dataset: str = ""  # the default dataset of the window (after any fall-back)
        self.dataset_note: str = ""  # e.g. why the default dataset fell back to pid-synth
        self.message: str = ""  # the status/error panel's text
        self.message_kind: str = "info"  # "info" | "ok" | "warning" | "error"
        self.status_tip: str = ""  # a short status-bar message
        self.buffers_version: int = 0  # grows when the curve buffers are replaced (the panel resets)
        self.runs_version: int = 0  # grows when session rows change (the Sessions table refreshes)
        self.best_checkpoint: tuple[str, int | None, int] | None = None  # (path, run id, serial) to load
        # (path, run id, serial): the training run's best checkpoint, announced once per start or resume as soon
        # as it exists (the explorer, following the training, loads it so it is not empty during a first run)
        self.first_checkpoint: tuple[str, int | None, int] | None = None
        self.comparison_done: str = ""  # the id of the last comparison whose queue ran out
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def update(self, **changes: Any) -> set[str]:
        changed = set()
        for key, value in changes.items():
            if key not in self.FIELDS:
                raise AttributeError(f"SessionState has no field {key!r}")
            if getattr(self, key) is not value and getattr(self, key) != value:
                setattr(self, key, value)
                changed.add(key)
        if changed:
            for listener in list(self._listeners):
                listener(changed)
        return changed

    @property
    def is_busy(self) -> bool:
        return self.activity in (PREPARING, TRAINING, STOPPING)


def ema(values: list[float], alpha: float) -> list[float]:
    """Exponential moving average (bias-corrected like Adam's, so the first points are not pulled to 0)."""
    out, m, w = [], 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(out[-1] if out else float("nan"))
            continue
        m = (1 - alpha) * m + alpha * v
        w = (1 - alpha) * w + alpha
        out.append(m / w)
    return out


@dataclass
class TrainingBuffers:
    """The curves of one run. Step series use x in epochs (epoch + fraction), so epoch-level history read
    back from the database and live steps share an axis. `version_steps` / `version_epochs` grow with every
    change so the redraw timer only touches plots whose data changed."""
    smoothing: float = 0.05  # EMA weight of a new step loss
    step_x: list[float] = field(default_factory=list)
    step_losses: dict[str, list[float]] = field(default_factory=dict)  # raw
    step_smoothed: dict[str, list[float]] = field(default_factory=dict)  # EMA, kept incrementally
    epoch_x: list[float] = field(default_factory=list)  # epoch + 1 (the end of the epoch)
    epoch_train_losses: dict[str, list[float]] = field(default_factory=dict)
    val_score: list[float] = field(default_factory=list)
    val_metric: dict[str, list[float]] = field(default_factory=dict)  # subset -> primary metric per epoch
    metric_name: str = ""
    z_norm: dict[str, list[float]] = field(default_factory=dict)
    u_norm: dict[str, list[float]] = field(default_factory=dict)
    kappa_hists: list[tuple[float, ...]] = field(default_factory=list)
    kappa_edges: tuple[float, ...] = ()
    kappa_epochs: list[float] = field(default_factory=list)
    # the quality of κ per epoch (events.EpochEnded.kappa_precision / kappa_auc), NaN where not measured
    kappa_precision: list[float] = field(default_factory=list)
    kappa_auc: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = float("nan")
    global_step: int = 0
    total_steps: int = 0
    epochs_planned: int = 0
    elapsed_s: float = 0.0
    # the ETA: measured on this process's training only (a resumed run's earlier epochs took place elsewhere, in
    # another process, and its trainer's clock restarts at 0). `begin_live` starts the measure (the run's Started
    # event); steps and epochs that arrive afterwards count, replayed ones never do.
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    live_since: float | None = None  # clock() when the training in this process started
    live_steps_per_epoch: int = 0
    live_steps: int = 0  # steps / epochs trained in this process …
    live_steps_s: float = 0.0
    live_epochs: int = 0
    live_epochs_s: float = 0.0  # … and the clock time from live_since to the last one's end
    outcome: str = ""  # how the run ended, shown in the progress bar ("" while it runs)
    outcome_complete: bool = False  # the bar shows 100 % (finished, early stopping) rather than where it stopped
    version_steps: int = 0
    version_epochs: int = 0
    _ema_state: dict[str, tuple[float, float]] = field(default_factory=dict)

    def clear(self) -> None:
        fresh = TrainingBuffers(smoothing=self.smoothing, clock=self.clock)
        self.__dict__.update(fresh.__dict__)
        self.version_steps = fresh.version_steps + 1
        self.version_epochs = fresh.version_epochs + 1

    # --- filling ----------------------------------------------------------------------------------------
    def add_step(self, ev: "StepEnded") -> None:
        # set_plan(epochs) is called when a run starts; total_steps = epochs × steps per epoch
        steps_per_epoch = max(1, ev.total_steps // max(1, self.epochs_planned or 1))
        x = ev.epoch + (ev.step + 1) / steps_per_epoch
        self.step_x.append(x)
        a = self.smoothing
        for k, v in ev.losses.items():
            raw = self.step_losses.setdefault(k, [float("nan")] * (len(self.step_x) - 1))
            raw.append(v)
            sm = self.step_smoothed.setdefault(k, [float("nan")] * (len(self.step_x) - 1))
            m, w = self._ema_state.get(k, (0.0, 0.0))
            if math.isfinite(v):
                m, w = (1 - a) * m + a * v, (1 - a) * w + a
                self._ema_state[k] = (m, w)
            sm.append(m / w if w > 0 else float("nan"))
        for k in self.step_losses:  # a loss absent from this step keeps its series aligned
            if len(self.step_losses[k]) < len(self.step_x):
                self.step_losses[k].append(float("nan"))
                self.step_smoothed[k].append(self.step_smoothed[k][-1] if self.step_smoothed[k] else float("nan"))
        self.global_step, self.total_steps, self.elapsed_s = ev.global_step, ev.total_steps, ev.elapsed_s
        if self.live_since is not None:
            self.live_steps += 1
            self.live_steps_s = self.clock() - self.live_since
        self.version_steps += 1

    def set_plan(self, epochs: int) -> None:
        self.epochs_planned = int(epochs)
        self.outcome, self.outcome_complete = "", False
        self.live_since = None  # a (re)started run: measured again from its Started event

    def begin_live(self, steps_per_epoch: int, total_steps: int = 0) -> None:
        """The run starts training in this process now (its Started event, a new run or a resumed one): the ETA
        counts the steps and epochs from here on."""
        self.live_since = self.clock()
        self.live_steps_per_epoch = max(1, int(steps_per_epoch))
        if total_steps > 0:
            self.total_steps = int(total_steps)
        self.live_steps = self.live_epochs = 0
        self.live_steps_s = self.live_epochs_s = 0.0

    def set_outcome(self, text: str, complete: bool) -> None:
        self.outcome, self.outcome_complete = text, complete
        self.version_epochs += 1
        self.version_steps += 1  # the plots refit their x axis to what the run did

    def add_epoch(self, epoch: int, train_losses: dict[str, float], val_metrics: dict[str, dict[str, float]],
                  val_score: float, z_norm: dict[str, float], u_norm: dict[str, float],
                  kappa_hist: tuple[float, ...] | list[float], kappa_edges: tuple[float, ...] | list[float],
                  is_best: bool, metric_name: str, kappa_precision: float | None = None,
                  kappa_auc: float | None = None) -> None:
        """One epoch's record (from an EpochEnded event or a database row)."""
        # a resumed run may repeat an epoch that was cut short: drop the later points first
        while self.epoch_x and self.epoch_x[-1] >= epoch + 1:
            self._pop_epoch()
        n = len(self.epoch_x)
        self.epoch_x.append(epoch + 1.0)
        self.metric_name = metric_name or self.metric_name
        for series, values in ((self.epoch_train_losses, train_losses), (self.z_norm, z_norm),
                               (self.u_norm, u_norm)):
            for k, v in values.items():
                series.setdefault(k, [float("nan")] * n).append(float(v))
            for k in series:
                if len(series[k]) < n + 1:
                    series[k].append(float("nan"))
        for subset, row in val_metrics.items():
            v = row.get(metric_name, float("nan")) if metric_name else float("nan")
            self.val_metric.setdefault(subset, [float("nan")] * n).append(float(v))
        for k in self.val_metric:
            if len(self.val_metric[k]) < n + 1:
                self.val_metric[k].append(float("nan"))
        self.val_score.append(float(val_score))
        self.kappa_precision.append(float("nan") if kappa_precision is None else float(kappa_precision))
        self.kappa_auc.append(float("nan") if kappa_auc is None else float(kappa_auc))
        if kappa_hist and any(v > 0 for v in kappa_hist):
            self.kappa_hists.append(tuple(float(v) for v in kappa_hist))
            self.kappa_edges = tuple(float(v) for v in kappa_edges)
            self.kappa_epochs.append(epoch + 1.0)
        if is_best or (math.isfinite(val_score) and not math.isfinite(self.best_score)) or \
                (math.isfinite(val_score) and val_score > self.best_score):
            self.best_epoch, self.best_score = epoch, float(val_score)
        self.version_epochs += 1

    def add_epoch_event(self, ev: "EpochEnded", metric_name: str) -> None:
        self.epochs_planned = ev.epochs
        if self.live_since is not None:
            self.live_epochs += 1
            self.live_epochs_s = self.clock() - self.live_since
        self.add_epoch(ev.epoch, ev.train_losses, ev.val_metrics, ev.val_score, ev.z_norm, ev.u_norm,
                       ev.pu_weight_hist, ev.pu_weight_edges, ev.is_best, metric_name,
                       getattr(ev, "kappa_precision", None), getattr(ev, "kappa_auc", None))
        self.elapsed_s = max(self.elapsed_s, ev.elapsed_s)

    def _pop_epoch(self) -> None:
        x = self.epoch_x.pop()
        for series in (self.epoch_train_losses, self.z_norm, self.u_norm, self.val_metric):
            for v in series.values():
                if v:
                    v.pop()
        if self.val_score:
            self.val_score.pop()
        for series in (self.kappa_precision, self.kappa_auc):
            if series:
                series.pop()
        if self.kappa_epochs and self.kappa_epochs[-1] == x:
            self.kappa_epochs.pop()
            self.kappa_hists.pop()
        # steps recorded after the cut are replaced by the resumed run's steps
        while self.step_x and self.step_x[-1] > x - 1.0:
            self.step_x.pop()
            for v in (*self.step_losses.values(), *self.step_smoothed.values()):
                if v:
                    v.pop()

    # --- reading ----------------------------------------------------------------------------------------
    def modality_order(self) -> tuple[str, ...]:
        """The modalities in the model's order, read off the all-modality subset's name ("image+audio"), so a
        curve keeps its colour whatever order a stored row's keys come back in (the database sorts them)."""
        full = max(self.val_metric, key=lambda k: k.count("+"), default="")
        names = [m for m in full.split("+") if m] if full else []
        for m in (*self.z_norm, *self.u_norm):
            if m not in names:
                names.append(m)
        return tuple(names)

    def subset_order(self) -> list[str]:
        """The subsets of `val_metric` in a fixed order: by size, then by their modalities' positions."""
        order = {m: i for i, m in enumerate(self.modality_order())}
        return sorted(self.val_metric, key=lambda s: (s.count("+"), [order.get(m, len(order)) for m in s.split("+")]))

    @property
    def progress(self) -> float:
        return self.global_step / self.total_steps if self.total_steps else 0.0

    def eta_s(self) -> float | None:
        """Seconds left: the time per epoch trained in this process (since the run started or resumed here) ×
        the epochs left; before this process has finished an epoch, its time per step × the steps left. None
        until the run has trained in this process."""
        if self.live_since is None:
            return None
        spe = self.live_steps_per_epoch or 1
        if self.total_steps > 0:
            steps_left = max(0, self.total_steps - self.global_step)
        elif self.epochs_planned > 0:
            steps_left = max(0, self.epochs_planned * spe - self.global_step)
        else:
            return None
        if self.live_epochs > 0:
            return max(0.0, self.live_epochs_s / self.live_epochs * steps_left / spe)
        if self.live_steps > 0:
            return max(0.0, self.live_steps_s / self.live_steps * steps_left)
        return None


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"
