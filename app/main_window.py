"""MainWindow: menus and shortcuts, the Training and Sessions tabs, the current model, the dataset cache.

The API other parts of the app rely on (the explorer plugs in through `app.explorer.install(window)`):

    window.store            SessionStore (runs, epochs, inspections, ui_state)
    window.controller       TrainingController (also the inference request channel: controller.submit)
    window.tabs             QTabWidget; window.add_tab(title, widget)
    window.current_model    app.state.LoadedModel | None
    window.sig_model_loaded(LoadedModel)    whenever a model becomes current (opened file, reopened session,
                                            training finished or stopped with a best checkpoint)
    window.sig_session_reopened(int)        a run of the session database was reopened (after its model loaded)
    window.get_bundle(data_cfg)             the DatasetBundle for a DataConfig, loaded once and cached
                                            (thread-safe; blocks while loading, so call it off the GUI thread
                                            for datasets that are not cached yet)

Session rows are written here, on the GUI thread, as the controller's events arrive.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import math
import threading
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget, QToolBar, QVBoxLayout,
                               QWidget)

from robult_engine.config import ConfigError, DataConfig, RunConfig
from robult_engine.data import choose_modalities, load_dataset
from robult_engine.data.base import DatasetBundle
from robult_engine.events import EpochEnded, Failed, Finished, StepEnded
from robult_engine.metrics import PRIMARY

from .controller import TrainingController, TrainingJob, start_job, wait_for_jobs
from .panels.sessions import SessionsPanel
from .panels.training import TrainingPanel
from .sessions import SessionStore, runs_root
from .state import (CRASHED, FAILED, FINISHED, IDLE, PREPARING, RESUMABLE, RUNNING, STOPPED, STOPPING, TRAINING,
                    LoadedModel, SessionState, TrainingBuffers)

ICON_PATH = Path(__file__).resolve().parents[1] / "assets" / "icons" / "robult-studio.svg"
FALLBACK_DATASET = "pid-synth"


class DatasetCache:
    """Loaded datasets by what determines their content; thread-safe, each dataset loaded at most once at a
    time; keeps the `max_items` most recently used."""

    def __init__(self, max_items: int = 4) -> None:
        self.max_items = max_items
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[tuple, DatasetBundle] = collections.OrderedDict()
        self._key_locks: dict[tuple, threading.Lock] = {}

    @staticmethod
    def key(data_cfg: DataConfig) -> tuple:
        if data_cfg.dataset == "pid-synth":
            synth = tuple((f.name, getattr(data_cfg, f.name)) for f in dataclasses.fields(data_cfg)
                          if f.name.startswith("synth_"))
            return ("pid-synth", data_cfg.seed, synth)
        if data_cfg.dataset == "av-digits":
            return ("av-digits",)
        try:
            return ("path", str(Path(data_cfg.dataset).expanduser().resolve()))
        except OSError:
            return ("path", data_cfg.dataset)

    def cached(self, data_cfg: DataConfig) -> bool:
        with self._lock:
            return self.key(data_cfg) in self._items

    def get(self, data_cfg: DataConfig) -> DatasetBundle:
        k = self.key(data_cfg)
        with self._lock:
            bundle = self._items.get(k)
            if bundle is not None:
                self._items.move_to_end(k)
            klock = self._key_locks.setdefault(k, threading.Lock())
        if bundle is None:
            with klock:
                with self._lock:
                    bundle = self._items.get(k)
                if bundle is None:
                    bundle = load_dataset(dataclasses.replace(data_cfg, modalities=()))
                    with self._lock:
                        self._items[k] = bundle
                        while len(self._items) > self.max_items:
                            self._items.popitem(last=False)
        return choose_modalities(bundle, data_cfg.modalities, data_cfg.dataset)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _load_model_job(path: str, run_id: int | None) -> LoadedModel:
    """Pool job: read a checkpoint (refusing foreign or booby-trapped files) and rebuild its model on the CPU."""
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    ck = load_checkpoint(path)
    model = model_from_checkpoint(ck)
    return LoadedModel(model=model, config=ck.config, info=ck.info, checkpoint_path=str(path), run_id=run_id,
                       labeled_indices=ck.labeled_indices.long())


def _metric_name(val_metrics: dict[str, dict[str, float]]) -> str:
    """The task's primary metric, read off the metric names (accuracy, f1_micro or mae)."""
    for row in val_metrics.values():
        for name in PRIMARY.values():
            if name in row:
                return name
    return ""


class MainWindow(QMainWindow):
    sig_model_loaded = Signal(object)  # app.state.LoadedModel
    sig_session_reopened = Signal(int)  # run id

    def __init__(self, store: SessionStore, settings: QSettings, default_dataset: str = "av-digits") -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.state = SessionState()
        self.buffers = TrainingBuffers()
        self._epoch_steps: list[StepEnded] = []  # the current epoch's steps, stored with its epoch row
        self.current_model: LoadedModel | None = None
        self._dataset_cache = DatasetCache()
        self.controller = TrainingController(self.get_bundle, parent=self)
        self.notices: list[tuple[str, str]] = []
        self.error_dialog: QMessageBox | None = None
        self._closing = False
        self._load_generation = 0
        self._pending_loads: dict[int, tuple[str, int | None, bool]] = {}  # tag -> (path, run_id, reopened)
        self._requested_default = default_dataset
        self.state.update(dataset=default_dataset)
        self.setWindowTitle("Robult Studio")
        if ICON_PATH.exists():
            self.setWindowIcon(QIcon(str(ICON_PATH)))
        self._create_actions()
        self._create_menus()
        self._create_toolbar()
        self._create_panels()
        self._create_status_bar()
        self._connect_controller()
        self.state.subscribe(self._on_state_changed)
        self._restore_settings()
        self._mark_interrupted_runs()
        self._load_default_dataset()
        self._update_actions()
        self._install_explorer()

    # --- construction -----------------------------------------------------------------------------------
    def _create_actions(self) -> None:
        self.act_new = QAction("&New training run…", self)
        self.act_new.setShortcut(QKeySequence.StandardKey.New)
        self.act_new.setToolTip("Open the training wizard (Ctrl+N)")
        self.act_new.setStatusTip("Configure and start a training run")
        self.act_new.triggered.connect(self._on_act_new_triggered)
        self.act_open = QAction("&Open model…", self)
        self.act_open.setShortcut(QKeySequence.StandardKey.Open)
        self.act_open.setToolTip("Open a saved model checkpoint (.pt) from the app or the CLI (Ctrl+O)")
        self.act_open.setStatusTip("Load a checkpoint as the current model")
        self.act_open.triggered.connect(self._on_act_open_triggered)
        self.act_quit = QAction("&Quit", self)
        self.act_quit.setShortcut(QKeySequence("Ctrl+Q"))
        self.act_quit.setToolTip("Quit Robult Studio (Ctrl+Q)")
        self.act_quit.triggered.connect(self.close)
        self.act_stop = QAction("&Stop", self)
        self.act_stop.setShortcuts([QKeySequence(Qt.Key.Key_Escape), QKeySequence("Ctrl+.")])
        self.act_stop.setToolTip("Stop training after the current step; the best checkpoint is kept (Esc, Ctrl+.)")
        self.act_stop.setStatusTip("Stop the run; it can be resumed later")
        self.act_stop.triggered.connect(self._on_act_stop_triggered)
        self.act_resume = QAction("&Resume", self)
        self.act_resume.setShortcut(QKeySequence("Ctrl+R"))
        self.act_resume.setToolTip("Continue the stopped, failed or crashed run from its last completed epoch "
                                   "(Ctrl+R)")
        self.act_resume.triggered.connect(self._on_act_resume_triggered)
        self.act_sessions = QAction("Sessions", self)
        self.act_sessions.setShortcut(QKeySequence("Ctrl+2"))
        self.act_sessions.setToolTip("Show the runs of the session database (Ctrl+2)")
        self.act_sessions.triggered.connect(self._on_act_sessions_triggered)
        self.act_training_tab = QAction("Training", self)
        self.act_training_tab.setShortcut(QKeySequence("Ctrl+1"))
        self.act_training_tab.setToolTip("Show the live training curves (Ctrl+1)")
        self.act_training_tab.triggered.connect(self._on_act_training_tab_triggered)
        self.act_about = QAction("&About Robult Studio", self)
        self.act_about.triggered.connect(self._on_act_about_triggered)

    def _create_menus(self) -> None:
        mb = self.menuBar()
        m_file = mb.addMenu("&File")
        m_file.addAction(self.act_open)
        m_file.addSeparator()
        m_file.addAction(self.act_quit)
        m_train = mb.addMenu("&Training")
        m_train.addAction(self.act_new)
        m_train.addAction(self.act_stop)
        m_train.addAction(self.act_resume)
        m_view = mb.addMenu("&View")
        m_view.addAction(self.act_training_tab)
        m_view.addAction(self.act_sessions)
        m_help = mb.addMenu("&Help")
        m_help.addAction(self.act_about)

    def _create_toolbar(self) -> None:
        tb = QToolBar("Main")
        tb.setObjectName("mainToolBar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a in (self.act_new, self.act_open, self.act_stop, self.act_resume):
            tb.addAction(a)
        self.addToolBar(tb)

    def _create_panels(self) -> None:
        self.notice_label = QLabel()
        self.notice_label.setObjectName("noticeBar")
        self.notice_label.setWordWrap(True)
        self.notice_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notice_label.setStyleSheet("QLabel#noticeBar { background: #fff6e0; color: #5c3d00; "
                                        "border: 1px solid #e0b84a; border-radius: 4px; padding: 6px; }")
        self.notice_label.setVisible(False)
        self.training_panel = TrainingPanel(self.buffers)
        self.training_panel.set_actions(self.act_stop, self.act_resume)
        self.sessions_panel = SessionsPanel(self.store)
        self.sessions_panel.sig_reopen_requested.connect(self._on_sessions_panel_reopen_requested)
        self.sessions_panel.sig_resume_requested.connect(self._on_sessions_panel_resume_requested)
        self.sessions_panel.sig_runs_deleted.connect(self._on_sessions_panel_runs_deleted)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.training_panel, "Training")
        self.tabs.addTab(self.sessions_panel, "Sessions")
        self.tabs.setTabToolTip(0, "Live curves of the current run (Ctrl+1)")
        self.tabs.setTabToolTip(1, "Runs of the session database (Ctrl+2)")
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 6, 6, 0)
        lay.addWidget(self.notice_label)
        lay.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

    def _create_status_bar(self) -> None:
        sb = self.statusBar()
        self.dataset_label = QLabel()
        self.dataset_label.setToolTip("The default dataset of the training wizard")
        self.model_label = QLabel("Model: none")
        self.model_label.setToolTip("The current model (opened, reopened or just trained)")
        self.db_label = QLabel(f"Sessions: {self.store.location}")
        self.db_label.setToolTip(f"Session database: {self.store.location}")
        for w in (self.dataset_label, self.model_label, self.db_label):
            sb.addPermanentWidget(w)
        sb.showMessage("Ready", 3000)

    def _connect_controller(self) -> None:
        c = self.controller
        c.sig_started.connect(self._on_controller_started)
        c.sig_step_ended.connect(self._on_controller_step_ended)
        c.sig_epoch_ended.connect(self._on_controller_epoch_ended)
        c.sig_finished.connect(self._on_controller_finished)
        c.sig_failed.connect(self._on_controller_failed)
        c.sig_labeled_indices.connect(self._on_controller_labeled_indices)
        c.sig_stopped.connect(self._on_controller_stopped)

    def _restore_settings(self) -> None:
        geo = self.settings.value("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1280, 860)
        st = self.settings.value("window/state")
        if st is not None:
            self.restoreState(st)
        tab = self.settings.value("window/tab", 0)
        try:
            self.tabs.setCurrentIndex(int(tab))
        except (TypeError, ValueError):
            pass

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/tab", self.tabs.currentIndex())
        self.settings.sync()

    def _mark_interrupted_runs(self) -> None:
        ids = self.store.mark_interrupted_runs()
        if ids:
            which = ", ".join(f"#{i}" for i in ids)
            self.add_notice("warning", f"Run{'s' if len(ids) > 1 else ''} {which} did not end cleanly last time "
                                       f"(the app was closed or killed while training) and {'are' if len(ids) > 1 else 'is'} "
                                       f"marked crashed. Resume from the Sessions tab.")
            self.sessions_panel.request_refresh()

    def _install_explorer(self) -> None:
        try:
            from app import explorer
        except ModuleNotFoundError as e:
            if e.name not in ("app.explorer",):
                raise
            return
        install = getattr(explorer, "install", None)
        if install is not None:
            install(self)

    # --- shared API ---------------------------------------------------------------------------------------
    def add_tab(self, title: str, widget: QWidget) -> None:
        self.tabs.addTab(widget, title)

    def get_bundle(self, data_cfg: DataConfig) -> DatasetBundle:
        """The dataset a DataConfig names, loaded once and cached (thread-safe)."""
        return self._dataset_cache.get(data_cfg)

    def add_notice(self, kind: str, text: str) -> None:
        """A message that stays visible at the top of the window (database problems, dataset fall-backs)."""
        self.notices.append((kind, text))
        self.notice_label.setText("\n".join(t for _, t in self.notices))
        self.notice_label.setVisible(True)

    @property
    def default_dataset(self) -> str:
        return self.state.dataset

    # --- the default dataset ------------------------------------------------------------------------------
    def _load_default_dataset(self) -> None:
        name = self.state.dataset
        self.dataset_label.setText(f"Dataset: {name} (reading…)")
        cache = self._dataset_cache
        cfg = DataConfig(dataset=name)
        start_job(lambda: cache.get(cfg).info, self._on_default_dataset_loaded, self._on_default_dataset_failed)

    @Slot(int, object)
    def _on_default_dataset_loaded(self, _tag: int, info) -> None:
        self.dataset_label.setText(f"Dataset: {info.name} ({', '.join(info.modality_names)}; {info.task})")
        if self.state.run_id is None:  # nothing else to say yet
            self.training_panel.set_status("info", f"Ready to train on {info.name} (Ctrl+N) or to open a saved "
                                                   f"model (Ctrl+O).")

    @Slot(int, object)
    def _on_default_dataset_failed(self, _tag: int, error: object) -> None:
        name = self.state.dataset
        if name != FALLBACK_DATASET:
            self.add_notice("warning", f"The default dataset {name} could not be prepared ({error}). Using "
                                       f"{FALLBACK_DATASET} instead; {name} can still be chosen in the wizard once "
                                       f"its cache is built (python -m robult_engine.data.avdigits).")
            self.state.update(dataset=FALLBACK_DATASET, dataset_note=str(error))
            self._load_default_dataset()
        else:
            self.dataset_label.setText(f"Dataset: {name} (unavailable)")
            self.add_notice("error", f"No dataset could be prepared: {error}")

    # --- training -------------------------------------------------------------------------------------------
    def initial_config(self) -> RunConfig:
        """The wizard's starting values: the last config used (settings), on the default dataset otherwise."""
        text = self.settings.value("wizard/last_config")
        if text:
            try:
                return RunConfig.from_json(str(text)).validate()
            except (ConfigError, TypeError, ValueError):
                pass
        return RunConfig().replace(**{"data.dataset": self.state.dataset})

    def new_training(self):
        """Open the training wizard (window-modal, not blocking); returns it. Accepting it starts the run."""
        from .wizard import TrainingWizard
        if self.controller.is_running:
            self.statusBar().showMessage("A run is training; stop it first (Esc).", 5000)
            return None
        wiz = TrainingWizard(self.get_bundle, self.initial_config(), parent=self)
        wiz.setWindowModality(Qt.WindowModality.WindowModal)
        wiz.accepted.connect(self._on_wizard_accepted)
        self.wizard = wiz
        wiz.open()
        return wiz

    @Slot()
    def _on_wizard_accepted(self) -> None:
        wiz = self.sender() or self.wizard
        cfg = wiz.config()
        self.start_training(cfg, name=wiz.run_name())

    def start_training(self, cfg: RunConfig, name: str = "") -> int | None:
        """Create the session row and start the worker; returns the run id (None if a run is going on)."""
        if self.controller.is_running:
            self.statusBar().showMessage("A run is already training.", 5000)
            return None
        try:
            cfg.validate()
        except ConfigError as e:
            self.training_panel.set_status("error", f"The run was not started: {e}")
            return None
        self.settings.setValue("wizard/last_config", cfg.to_json())
        run_id = self.store.create_run(cfg, name=name)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = runs_root(self.store) / f"run-{run_id:04d}-{stamp}"
        self.store.update_run(run_id, run_dir=str(run_dir))
        self.buffers.clear()
        self.buffers.set_plan(cfg.train.epochs)
        self.training_panel.reset()
        self._show_run(run_id, name or f"Run #{run_id}", RUNNING)
        self.training_panel.set_status("info", f"Preparing {cfg.data.dataset} and the model…")
        self.state.update(activity=PREPARING)
        self.controller.start(TrainingJob(run_id=run_id, config=cfg, out_dir=str(run_dir)))
        self.sessions_panel.request_refresh()
        self.tabs.setCurrentWidget(self.training_panel)
        return run_id

    def resume_run(self, run_id: int) -> bool:
        """Continue a stopped, failed or crashed run from <run dir>/last.pt (the same session row)."""
        if self.controller.is_running:
            self.training_panel.set_status("warning", "A run is training; stop it before resuming another one.")
            return False
        row = self.store.get_run(run_id)
        if row is None:
            return False
        if row.status not in RESUMABLE:
            self.training_panel.set_status("warning", f"Run #{run_id} is {row.status}; only stopped, failed or "
                                                      f"crashed runs can be resumed.")
            return False
        last = Path(row.run_dir) / "last.pt" if row.run_dir else None
        if last is None or not last.is_file():
            self._show_run_history(row)
            self.training_panel.set_status("error", f"Run #{run_id} cannot be resumed: it ended before its first "
                                                    f"epoch was complete, so there is no {last or 'last.pt'} to "
                                                    f"resume from. Start a new run instead (Ctrl+N).")
            return False
        try:
            cfg = RunConfig.from_json(row.config_json)
        except ConfigError as e:
            self.training_panel.set_status("error", f"Run #{run_id} cannot be resumed: its stored config is "
                                                    f"invalid ({e}).")
            return False
        if self.state.run_id != run_id or not self.buffers.epoch_x:
            self._show_run_history(row)
        self.buffers.set_plan(cfg.train.epochs)
        self.store.set_status(run_id, RUNNING, error="")
        self._show_run(run_id, row.name or f"Run #{run_id}", RUNNING)
        self.training_panel.set_status("info", f"Resuming run #{run_id} from {last.name}…")
        self.state.update(activity=PREPARING)
        self.controller.start(TrainingJob(run_id=run_id, config=cfg, out_dir=row.run_dir, resume_from=str(last)))
        self.sessions_panel.request_refresh()
        self.tabs.setCurrentWidget(self.training_panel)
        return True

    def stop_training(self) -> None:
        if self.controller.is_running and not self.controller.stop_requested:
            self.controller.stop()
            self.state.update(activity=STOPPING)
            self.training_panel.set_status("warning", "Stopping after the current step; the best checkpoint is "
                                                      "kept…")

    def _show_run(self, run_id: int, name: str, status: str) -> None:
        self.state.update(run_id=run_id, run_name=name, run_status=status)
        self.training_panel.set_title(f"#{run_id} · {name}")
        self.sessions_panel.set_busy_run(run_id if status == RUNNING else None)

    def _show_run_history(self, row) -> None:
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
            metric = _metric_name(e["val_metrics"])
            self.buffers.add_epoch(e["epoch"], e["train_losses"], e["val_metrics"], e["val_score"], e["z_norm"],
                                   e["u_norm"], e.get("kappa_hist") or (), e.get("kappa_edges") or (),
                                   e["epoch"] == row.best_epoch, metric)
        n = len(self.buffers.epoch_x)
        outcome = {FINISHED: (f"Finished — {n} epochs", True),
                   STOPPED: (f"Stopped after {n} epochs — resumable", False),
                   CRASHED: (f"Crashed after {n} epochs — resumable", False),
                   FAILED: (f"Failed after {n} epochs", False)}.get(row.status)
        if outcome:
            self.buffers.set_outcome(*outcome)
        self.training_panel.reset()
        self._show_run(row.id, row.name or f"Run #{row.id}", row.status)

    # --- controller events (GUI thread) ---------------------------------------------------------------------
    @Slot(int)
    def _on_controller_started(self, run_id: int) -> None:
        self._epoch_steps = []
        self._update_actions()

    @Slot(object)
    def _on_controller_step_ended(self, ev: StepEnded) -> None:
        if self.state.activity == PREPARING:
            self.state.update(activity=TRAINING)
            self.training_panel.set_status("info", "Training…  Stop with Esc; the best checkpoint is kept and the "
                                                   "run can be resumed.")
        self.buffers.add_step(ev)
        self._epoch_steps.append(ev)  # written with the epoch's row when it ends

    @Slot(object)
    def _on_controller_epoch_ended(self, ev: EpochEnded) -> None:
        self.buffers.add_epoch_event(ev, _metric_name(ev.val_metrics))
        run_id = self.controller.job.run_id if self.controller.job else self.state.run_id
        steps = [s for s in self._epoch_steps if s.epoch == ev.epoch]
        self._epoch_steps = []
        if run_id is not None:
            self.store.add_epoch(run_id, ev, steps)
        self.sessions_panel.request_refresh()

    @Slot(int, object)
    def _on_controller_labeled_indices(self, run_id: int, indices: object) -> None:
        self.store.update_run(run_id, labeled_indices=indices)

    @Slot(object)
    def _on_controller_finished(self, ev: Finished) -> None:
        run_id = self.controller.job.run_id if self.controller.job else self.state.run_id
        status = STOPPED if ev.cancelled else FINISHED
        fields = {"status": status, "error_message": ""}
        if ev.best_epoch >= 0:
            fields.update(best_score=ev.best_score, best_epoch=ev.best_epoch)
        if ev.checkpoint_path:
            fields["checkpoint_path"] = ev.checkpoint_path
        self.store.update_run(run_id, **fields)
        self.state.update(run_status=status)
        best = (f"best validation score {ev.best_score:.4f} at epoch {ev.best_epoch + 1}"
                if ev.best_epoch >= 0 and math.isfinite(ev.best_score) else "no completed epoch")
        planned = self.buffers.epochs_planned
        if ev.cancelled:
            msg = (f"Stopped after {ev.epochs_run} epoch{'s' if ev.epochs_run != 1 else ''} — {best}. "
                   f"Resume continues from the last completed epoch (Ctrl+R).")
            kind = "warning"
            self.buffers.set_outcome(f"Stopped during epoch {ev.epochs_run + 1} of {planned} — resumable", False)
        else:
            why = " (early stopping)" if ev.stopped_early else ""
            msg = f"Finished{why} in {ev.elapsed_s:.0f} s — {best}."
            kind = "ok"
            self.buffers.set_outcome(f"Early stopping after epoch {ev.epochs_run} of {planned}" if ev.stopped_early
                                     else f"Finished — {ev.epochs_run} epochs", True)
        self.act_stop.setEnabled(False)
        test = ev.test_metrics.get(max(ev.test_metrics, key=lambda k: k.count("+"))) if ev.test_metrics else None
        if test:
            metric = _metric_name(ev.test_metrics)
            if metric in test:
                msg += f" Test {metric} with all modalities: {test[metric]:.4f}."
        self.training_panel.set_status(kind, msg)
        self.statusBar().showMessage(msg.split(" — ")[0], 8000)
        if ev.checkpoint_path and not self._closing:
            self.open_checkpoint(ev.checkpoint_path, run_id=run_id)
        self.sessions_panel.request_refresh()

    @Slot(object)
    def _on_controller_failed(self, ev: Failed) -> None:
        run_id = self.controller.job.run_id if self.controller.job else self.state.run_id
        fields = {"status": FAILED, "error_message": f"[{ev.kind}] {ev.message}"}
        if ev.checkpoint_path:
            fields["checkpoint_path"] = ev.checkpoint_path
        if run_id is not None:
            self.store.update_run(run_id, **fields)
        self.state.update(run_status=FAILED)
        titles = {"nan": "The training diverged", "data": "The data could not be used",
                  "oom": "Out of memory", "config": "The configuration is invalid", "error": "The training failed"}
        where = f" (epoch {ev.epoch + 1})" if ev.epoch >= 0 else ""
        extra = " The best checkpoint before the failure is kept." if ev.checkpoint_path else ""
        self.training_panel.set_status("error", f"{titles.get(ev.kind, 'The training failed')}{where}: "
                                                f"{ev.message}{extra}")
        self.buffers.set_outcome(f"Failed{where}", False)
        self.act_stop.setEnabled(False)
        self.statusBar().showMessage(titles.get(ev.kind, "The training failed"), 8000)
        self.sessions_panel.request_refresh()

    @Slot()
    def _on_controller_stopped(self) -> None:
        self.state.update(activity=IDLE)
        self.sessions_panel.set_busy_run(None)
        self.sessions_panel.request_refresh()
        self._update_actions()

    # --- models ---------------------------------------------------------------------------------------------
    def open_checkpoint(self, path: str, run_id: int | None = None, reopened: bool = False) -> int:
        """Load a checkpoint on the pool; it becomes the current model (sig_model_loaded). Returns the job tag."""
        self._load_generation += 1
        tag = self._load_generation
        if run_id is None:
            run_id = self.store.find_run_by_checkpoint(path)
        self._pending_loads[tag] = (path, run_id, reopened)
        self.statusBar().showMessage(f"Loading {Path(path).name}…")
        start_job(lambda: _load_model_job(path, run_id), self._on_model_job_done, self._on_model_job_failed, tag=tag)
        return tag

    @Slot(int, object)
    def _on_model_job_done(self, tag: int, loaded: LoadedModel) -> None:
        path, run_id, reopened = self._pending_loads.pop(tag, ("", None, False))
        if tag != self._load_generation or self._closing:
            return  # a newer load was asked for meanwhile
        self.set_current_model(loaded)
        if reopened and run_id is not None:
            self.sig_session_reopened.emit(run_id)

    @Slot(int, object)
    def _on_model_job_failed(self, tag: int, error: object) -> None:
        path, run_id, reopened = self._pending_loads.pop(tag, ("", None, False))
        if tag != self._load_generation or self._closing:
            return
        text = str(error) if str(error) else type(error).__name__
        self.statusBar().showMessage("The model could not be opened", 8000)
        self.training_panel.set_status("error", f"Could not open the model: {text}")
        self._show_error_dialog("Could not open the model", text)

    def set_current_model(self, loaded: LoadedModel) -> None:
        self.current_model = loaded
        self.controller.set_model(loaded.model)
        self.state.update(current_model=loaded)
        origin = f"run #{loaded.run_id}" if loaded.run_id is not None else Path(loaded.checkpoint_path).name
        self.model_label.setText(f"Model: {loaded.config.method} on {loaded.info.name} ({origin})")
        self.model_label.setToolTip(loaded.checkpoint_path)
        self.statusBar().showMessage(f"Current model: {loaded.config.method} on {loaded.info.name} ({origin})", 6000)
        self.sig_model_loaded.emit(loaded)

    def open_model_dialog(self) -> None:
        start = str(self.settings.value("paths/last_model_dir", "") or runs_root(self.store))
        path, _ = QFileDialog.getOpenFileName(self, "Open a saved model", start,
                                              "Robult checkpoints (*.pt);;All files (*)")
        if path:
            self.settings.setValue("paths/last_model_dir", str(Path(path).parent))
            self.open_checkpoint(path)

    def reopen_session(self, run_id: int) -> bool:
        """Show a stored run's curves and load its best checkpoint as the current model."""
        row = self.store.get_run(run_id)
        if row is None:
            return False
        if self.controller.is_running:
            self.training_panel.set_status("warning", "A run is training; wait for it or stop it before reopening "
                                                      "another session.")
            return False
        self._show_run_history(row)
        self.tabs.setCurrentWidget(self.training_panel)
        if row.checkpoint_path and Path(row.checkpoint_path).is_file():
            self.training_panel.set_status("info", f"Reopened run #{run_id} ({row.status}); loading its best "
                                                   f"checkpoint (epoch {row.best_epoch + 1})…")
            self.open_checkpoint(row.checkpoint_path, run_id=run_id, reopened=True)
        else:
            missing = f" ({row.checkpoint_path} is missing)" if row.checkpoint_path else ""
            self.training_panel.set_status("warning", f"Reopened run #{run_id} ({row.status}); it has no checkpoint "
                                                      f"to load{missing}.")
            self.sig_session_reopened.emit(run_id)
        self._update_actions()
        return True

    def _show_error_dialog(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_dialog = box
        box.open()

    # --- slots of actions and panels --------------------------------------------------------------------
    @Slot()
    def _on_act_new_triggered(self) -> None:
        self.new_training()

    @Slot()
    def _on_act_open_triggered(self) -> None:
        self.open_model_dialog()

    @Slot()
    def _on_act_stop_triggered(self) -> None:
        self.stop_training()

    @Slot()
    def _on_act_resume_triggered(self) -> None:
        if self.state.run_id is not None:
            self.resume_run(self.state.run_id)

    @Slot()
    def _on_act_sessions_triggered(self) -> None:
        self.tabs.setCurrentWidget(self.sessions_panel)

    @Slot()
    def _on_act_training_tab_triggered(self) -> None:
        self.tabs.setCurrentWidget(self.training_panel)

    @Slot()
    def _on_act_about_triggered(self) -> None:
        QMessageBox.about(self, "About Robult Studio",
                          "<b>Robult Studio</b><br>Robust multimodal learning with missing modalities and scarce "
                          "labels — the Robult method (Nguyen, Kamboj, Do; arXiv 2509.03477), its ablations and "
                          f"baselines.<br><br>Sessions: {self.store.location}")

    @Slot(int)
    def _on_sessions_panel_reopen_requested(self, run_id: int) -> None:
        self.reopen_session(run_id)

    @Slot(int)
    def _on_sessions_panel_resume_requested(self, run_id: int) -> None:
        self.resume_run(run_id)

    @Slot(object)
    def _on_sessions_panel_runs_deleted(self, run_ids: object) -> None:
        if self.state.run_id in run_ids:
            self.state.update(run_id=None, run_name="", run_status="")
            self.buffers.clear()
            self.training_panel.reset()
            self.training_panel.set_title("The run shown here was deleted.")
        self._update_actions()

    def _on_state_changed(self, changed: set[str]) -> None:
        if changed & {"activity", "run_status", "run_id"}:
            self._update_actions()

    def _update_actions(self) -> None:
        running = self.controller.is_running
        self.act_new.setEnabled(not running)
        self.act_stop.setEnabled(running and self.state.activity != STOPPING)
        resumable = (not running and self.state.run_id is not None and self.state.run_status in RESUMABLE)
        self.act_resume.setEnabled(resumable)
        title = "Training" + (" ●" if running else "")
        self.tabs.setTabText(self.tabs.indexOf(self.training_panel), title)

    # --- closing ----------------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if self.controller.is_running:
            answer = QMessageBox.question(
                self, "Quit Robult Studio", "A run is training. Stop it and quit?\n\nThe best checkpoint so far is "
                "kept and the run can be resumed later from the Sessions tab.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self._closing = True
        self.training_panel.timer.stop()
        if self.controller.is_running:
            self.statusBar().showMessage("Stopping the run…")
            if not self.controller.shutdown():
                # the thread is kept referenced; the row says what happened
                run_id = self.controller.job.run_id if self.controller.job else None
                if run_id is not None:
                    self.store.set_status(run_id, STOPPED, error="The app closed before the run finished stopping.")
        self._save_settings()
        wait_for_jobs(10_000)
        super().closeEvent(event)

