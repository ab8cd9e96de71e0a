"""MainWindow: the table of contents of the app — actions, menus, tabs, and who is wired to whom.

It owns no logic of its own: the run on screen is a `RunSession` (app/core/run_session.py), the state the
panels show is the Qt-free `SessionState` (the window subscribes and renders; nothing writes back), work off
the GUI thread goes through the contract of app/core/work.py (`self.work`, `self.controller`), datasets come
from one `DatasetCache` (robult_engine/data/cache.py).

The API other parts of the app rely on (the explorer plugs in through `app.views.explorer.install(window)`):

    window.store            SessionStore (runs, epochs, inspections, ui_state)
    window.controller       TrainingController (also the channel for inference on the live model)
    window.work             WorkRunner for the window's own background work
    window.tabs             QTabWidget; window.add_tab(title, widget)
    window.current_model    app.core.state.LoadedModel | None
    window.sig_model_loaded(LoadedModel)    whenever a model becomes current (opened file, reopened session,
                                            training finished or stopped with a best checkpoint)
    window.sig_session_reopened(int)        a run of the session database was reopened (after its model loaded)
    window.get_bundle(data_cfg)             the DatasetBundle for a DataConfig, loaded once and cached
                                            (thread-safe; blocks while loading, so call it off the GUI thread
                                            for datasets that are not cached yet)
"""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (QApplication, QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget, QToolBar,
                               QVBoxLayout, QWidget)

from robult_engine.config import ConfigError, DataConfig, RunConfig
from robult_engine.data.base import DatasetBundle
from robult_engine.data.cache import DatasetCache
from robult_engine.paths import asset_path

from .background.runner import WorkRunner
from .background.training import TrainingController
from .core.run_session import RunSession
from .core.sessions import SessionStore, runs_root
from .core.state import RESUMABLE, RUNNING, STOPPING, LoadedModel, SessionState, TrainingBuffers
from .core.work import Failure
from .views.sessions import SessionsPanel
from .views.training import TrainingPanel

ICON_PATH = asset_path("icons/robult-studio.svg")
FALLBACK_DATASET = "pid-synth"
STORE_TICK_MS = 500  # how often writes that wait for the session database are retried (the store backs off)


def _load_model(path: str, run_id: int | None, trust_code: tuple[str, ...] = ()) -> LoadedModel:
    """Background work: read a checkpoint (refusing foreign or booby-trapped files) and rebuild its model on
    the CPU."""
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    ck = load_checkpoint(path)
    # only the modules the user trusted by name may be imported; UntrustedCodeError names the others, imports none
    model = model_from_checkpoint(ck, trust_code=frozenset(trust_code))
    return LoadedModel(model=model, config=ck.config, info=ck.info, checkpoint_path=str(path), run_id=run_id,
                       labeled_indices=ck.labeled_indices.long())


def app_version() -> str:
    from .main import _version
    return _version()


SWEEP_BLOCKS_TRAINING = ("A sweep is running; a training run starts once it has ended or is cancelled (two trainings "
                         "at once would share torch's random generator, and neither would be reproducible).")


class MainWindow(QMainWindow):
    sig_model_loaded = Signal(object)  # app.core.state.LoadedModel
    sig_session_reopened = Signal(int)  # run id

    def __init__(self, store: SessionStore, settings: QSettings, default_dataset: str = "av-digits") -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.state = SessionState()
        self.buffers = TrainingBuffers()
        self.current_model: LoadedModel | None = None
        self.datasets = DatasetCache()
        self.work = WorkRunner(self)
        self.controller = TrainingController(self.get_bundle, parent=self)
        self.run = RunSession(store, self.state, self.buffers, self.controller, runs_root(store))
        self.run.confirm_code = self.confirm_code  # a run whose config names outside code starts only if trusted
        self.notices: list[tuple[str, str]] = []
        self._crashed_notice: tuple[int, ...] = ()  # the runs the "did not end cleanly" notice names
        self.error_dialog: QMessageBox | None = None
        self._closing = False
        self._model_work = None  # the checkpoint being loaded (cancelled when another load starts)
        self.state.update(dataset=default_dataset)
        self.setWindowTitle("Robult Studio")
        if ICON_PATH.exists():
            self.setWindowIcon(QIcon(str(ICON_PATH)))
        self._create_actions()
        self._create_menus()
        self._create_toolbar()
        self._create_panels()
        self._create_status_bar()
        self._connect()
        self._restore_settings()
        self._mark_interrupted_runs()
        self._load_default_dataset()
        self._update_actions()
        self._install_explorer()
        self._install_sweeps()

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
        # the platform's Quit sequence (empty on some platforms and themes), and Ctrl+Q everywhere
        quit_keys = [k for k in QKeySequence.keyBindings(QKeySequence.StandardKey.Quit) if not k.isEmpty()]
        self.act_quit.setShortcuts(quit_keys + [QKeySequence("Ctrl+Q")] * (QKeySequence("Ctrl+Q") not in quit_keys))
        self.act_quit.setMenuRole(QAction.MenuRole.QuitRole)
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
        self.act_sweeps_tab = QAction("Sweeps", self)
        self.act_sweeps_tab.setShortcut(QKeySequence("Ctrl+6"))
        self.act_sweeps_tab.triggered.connect(self._on_act_sweeps_tab_triggered)
        self.act_about = QAction("&About Robult Studio", self)
        self.act_about.setMenuRole(QAction.MenuRole.AboutRole)
        self.act_about.triggered.connect(self._on_act_about_triggered)
        self.act_about_qt = QAction("About &Qt", self)
        self.act_about_qt.setMenuRole(QAction.MenuRole.AboutQtRole)
        self.act_about_qt.triggered.connect(QApplication.aboutQt)

    def _create_menus(self) -> None:
        mb = self.menuBar()
        m_file = mb.addMenu("&File")
        m_file.addAction(self.act_open)
        from .views.export_model import ModelExporter  # File › Export model… (ONNX, docs/export.md)
        self.model_exporter = ModelExporter(self)
        m_file.addAction(self.model_exporter.action)
        m_file.addSeparator()
        m_file.addAction(self.act_quit)
        m_train = self.m_train = mb.addMenu("&Training")
        m_train.addAction(self.act_new)
        m_train.addAction(self.act_stop)
        m_train.addAction(self.act_resume)
        m_view = mb.addMenu("&View")
        m_view.addAction(self.act_training_tab)
        m_view.addAction(self.act_sessions)
        m_view.addAction(self.act_sweeps_tab)
        m_help = mb.addMenu("&Help")
        m_help.addAction(self.act_about)
        m_help.addAction(self.act_about_qt)

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
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.training_panel, "Training")
        self.tabs.addTab(self.sessions_panel, "Sessions")
        self.tabs.setTabToolTip(0, "Live curves of the current run (Ctrl+1)")
        self.tabs.setTabToolTip(1, "Runs of the session database (Ctrl+2)")
        self.sweeps_panel = None
        try:  # the Sweeps tab draws with the explorer's plotting helpers; without the explorer there is none
            from .views.sweeps import SweepsPanel
        except ImportError as e:
            print(f"robult-studio: the Sweeps tab is not available ({e})", file=sys.stderr)
        else:
            self.sweeps_panel = SweepsPanel(self.store, self.get_bundle, self.initial_config)
            self.sweeps_panel.blocked_reason = self._sweep_blocked_reason
            self.sweeps_panel.sig_message.connect(self._on_sweep_message)
            self.sweeps_panel.sig_busy_changed.connect(self._on_sweep_busy_changed)
            self.m_train.addSeparator()
            self.m_train.addAction(self.sweeps_panel.act_new)
        self.act_sweeps_tab.setEnabled(self.sweeps_panel is not None)
        self.tabs.currentChanged.connect(self._on_tab_changed)
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

    def _connect(self) -> None:
        c, run = self.controller, self.run
        c.sig_started.connect(run.on_started)
        c.sig_progressed.connect(run.on_progressed)
        c.sig_finished.connect(run.on_finished)
        c.sig_cancelled.connect(run.on_cancelled)
        c.sig_failed.connect(run.on_failed)
        c.sig_stopped.connect(run.on_stopped)
        self.state.subscribe(self._on_state_changed)
        self.sessions_panel.sig_reopen_requested.connect(self.reopen_session)
        self.sessions_panel.sig_resume_requested.connect(self.resume_run)
        self.sessions_panel.sig_runs_deleted.connect(self.run.forget)
        # writes that met another program's lock are retried here, and the live run's heartbeat renewed
        self.store_timer = QTimer(self)
        self.store_timer.setInterval(STORE_TICK_MS)
        self.store_timer.timeout.connect(self._on_store_timer_timeout)
        self.store_timer.start()

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

    @Slot()
    def _on_store_timer_timeout(self) -> None:
        self.run.tick_store()

    def _mark_interrupted_runs(self) -> None:
        try:
            ids = self.store.mark_interrupted_runs()
        except sqlite3.Error as e:  # the window opens anyway, and says why the check was skipped
            self.add_notice("error", f"The runs left running last time could not be checked in "
                                     f"{self.store.location}: {e}")
            return
        if ids:
            self._crashed_notice = tuple(ids)
            self._show_crashed_notice()
            self.sessions_panel.request_refresh()

    def _show_crashed_notice(self) -> None:
        self.notices = [(k, t) for k, t in self.notices if k != "crashed"]
        ids = self._crashed_notice
        if ids:
            which = ", ".join(f"#{i}" for i in ids)
            many = len(ids) > 1
            self.notices.append(("crashed", f"Run{'s' if many else ''} {which} did not end cleanly last time (the "
                                            f"app was closed or killed while training) and {'are' if many else 'is'} "
                                            f"marked crashed. Resume from the Sessions tab."))
        self._render_notices()

    def _install_explorer(self) -> None:
        try:
            from app.views import explorer
        except ModuleNotFoundError as e:
            if e.name not in ("app.views.explorer",):
                raise
            return
        install = getattr(explorer, "install", None)
        if install is not None:
            install(self)

    # --- shared API ---------------------------------------------------------------------------------------
    def _install_sweeps(self) -> None:
        """The Sweeps tab goes after the explorer's tabs (Ctrl+3 … Ctrl+5 are theirs)."""
        if self.sweeps_panel is None:
            return
        self.tabs.addTab(self.sweeps_panel, "Sweeps")
        self.tabs.setTabToolTip(self.tabs.indexOf(self.sweeps_panel), "Label fraction × missing rate sweeps: run, "
                                "resume, open a CLI sweep, export (Ctrl+6)")
        tab = self.settings.value("window/tab", 0)  # restored again now that every tab exists
        try:
            if int(tab) == self.tabs.indexOf(self.sweeps_panel):
                self.tabs.setCurrentIndex(int(tab))
        except (TypeError, ValueError):
            pass

    def add_tab(self, title: str, widget: QWidget) -> None:
        self.tabs.addTab(widget, title)

    def get_bundle(self, data_cfg: DataConfig) -> DatasetBundle:
        """The dataset a DataConfig names, loaded once and cached (thread-safe)."""
        return self.datasets.get(data_cfg)

    def add_notice(self, kind: str, text: str) -> None:
        """A message that stays visible at the top of the window (database problems, dataset fall-backs)."""
        self.notices.append((kind, text))
        self._render_notices()

    def _render_notices(self) -> None:
        self.notice_label.setText("\n".join(t for _, t in self.notices))
        self.notice_label.setVisible(bool(self.notices))

    @property
    def default_dataset(self) -> str:
        return self.state.dataset

    # --- rendering the state (the only place the window reacts to what the run session decided) -----------
    def _on_state_changed(self, changed: set[str]) -> None:
        st = self.state
        if changed & {"message", "message_kind"}:
            self.training_panel.set_status(st.message_kind, st.message)
        if "buffers_version" in changed:
            self.training_panel.reset()
        if changed & {"run_id", "run_name"}:
            self.training_panel.set_title(f"#{st.run_id} · {st.run_name}" if st.run_id is not None else "")
        if changed & {"run_id", "run_status"}:
            self.sessions_panel.set_busy_run(st.run_id if st.run_status == RUNNING else None)
            if st.run_status == RUNNING and st.run_id in self._crashed_notice:
                self._crashed_notice = tuple(i for i in self._crashed_notice if i != st.run_id)
                self._show_crashed_notice()  # the run is being resumed: the notice has done its job
        if "runs_version" in changed:
            self.sessions_panel.request_refresh()
        if "comparison_done" in changed and st.comparison_done:
            self.sessions_panel.select_comparison(st.comparison_done)
        if "status_tip" in changed and st.status_tip:
            self.statusBar().showMessage(st.status_tip, 8000)
        if "best_checkpoint" in changed and st.best_checkpoint and not self._closing:
            path, run_id, _serial = st.best_checkpoint
            self.open_checkpoint(path, run_id=run_id)
        if changed & {"activity", "run_status", "run_id"}:
            self._update_actions()

    def _update_actions(self) -> None:
        running = self.controller.is_running
        self.act_new.setEnabled(not running)
        self.act_stop.setEnabled((running and self.state.activity != STOPPING) or self.sweep_has_focus())
        resumable = (not running and self.state.run_id is not None and self.state.run_status in RESUMABLE)
        self.act_resume.setEnabled(resumable)
        title = "Training" + (" ●" if running else "")
        self.tabs.setTabText(self.tabs.indexOf(self.training_panel), title)

    # --- the default dataset ------------------------------------------------------------------------------
    def _load_default_dataset(self) -> None:
        name = self.state.dataset
        self.dataset_label.setText(f"Dataset: {name} (reading…)")
        datasets, cfg = self.datasets, DataConfig(dataset=name)
        self.work.start(lambda _w: datasets.get(cfg).info, on_result=self._on_default_dataset_loaded,
                        on_error=self._on_default_dataset_failed)

    def show_dataset(self, name: str, info=None) -> None:
        """The status bar's dataset: the one the current run or model works on (its modalities and task once
        known), not only the default dataset the app opened with."""
        if info is not None:
            self.dataset_label.setText(f"Dataset: {info.name} ({', '.join(info.modality_names)}; {info.task})")
        else:
            self.dataset_label.setText(f"Dataset: {name}")
        self.dataset_label.setToolTip(f"The dataset of the current run or model: {name}")

    def _on_default_dataset_loaded(self, info) -> None:
        if self.state.run_id is None and self.current_model is None:  # no run or model says otherwise
            self.show_dataset(info.name, info)
        if self.state.run_id is None:  # nothing else to say yet
            self.training_panel.set_status("info", f"Ready to train on {info.name} (Ctrl+N) or to open a saved "
                                                   f"model (Ctrl+O).")

    def _on_default_dataset_failed(self, failure: Failure) -> None:
        name = self.state.dataset
        if name != FALLBACK_DATASET:
            self.add_notice("warning", f"The default dataset {name} could not be prepared ({failure.message}). "
                                       f"Using {FALLBACK_DATASET} instead; {name} can still be chosen in the wizard "
                                       f"once its cache is built (python -m robult_engine.data.avdigits).")
            self.state.update(dataset=FALLBACK_DATASET, dataset_note=failure.message)
            self._load_default_dataset()
        else:
            self.dataset_label.setText(f"Dataset: {name} (unavailable)")
            self.add_notice("error", f"No dataset could be prepared: {failure.message}")

    # --- training (the RunSession decides; the window shows the tab) ----------------------------------------
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
        from .views.wizard import TrainingWizard
        if self.controller.is_running:
            self.statusBar().showMessage("A run is training; stop it first (Esc).", 5000)
            return None
        if self.sweep_running():
            self.statusBar().showMessage(SWEEP_BLOCKS_TRAINING, 8000)
            return None
        wiz = TrainingWizard(self.get_bundle, self.initial_config(), parent=self)
        wiz.setWindowModality(Qt.WindowModality.WindowModal)
        wiz.resize(max(wiz.sizeHint().width(), 900), max(wiz.sizeHint().height(), 720))
        wiz.accepted.connect(self._on_wizard_accepted)
        self.wizard = wiz
        wiz.open()
        return wiz

    @Slot()
    def _on_wizard_accepted(self) -> None:
        wiz = self.sender() or self.wizard
        queue = wiz.comparison()
        if queue:
            self.start_comparison(queue)
        else:
            self.start_training(wiz.config(), name=wiz.run_name())

    def start_comparison(self, queue: list[tuple[RunConfig, str]]) -> int | None:
        """Queue methods × seeds (app/core/comparison.py); they run one after another. Returns the first id."""
        from .core.comparison import new_comparison_id
        if self.sweep_running():
            self.statusBar().showMessage(SWEEP_BLOCKS_TRAINING, 8000)
            return None
        run_id = self.run.start_queue(queue, new_comparison_id())
        if run_id is not None:
            self.show_dataset(queue[0][0].data.dataset)
            self.settings.setValue("wizard/last_config", queue[0][0].to_json())
            self.tabs.setCurrentWidget(self.training_panel)
        return run_id

    def start_training(self, cfg: RunConfig, name: str = "") -> int | None:
        """Create the session row and start the worker; returns the run id (None if refused)."""
        if self.sweep_running():
            self.statusBar().showMessage(SWEEP_BLOCKS_TRAINING, 8000)
            return None
        run_id = self.run.start(cfg, name)
        if run_id is not None:
            self.show_dataset(cfg.data.dataset)
            self.settings.setValue("wizard/last_config", cfg.to_json())
            self.tabs.setCurrentWidget(self.training_panel)
        return run_id

    @Slot(int)
    def sweep_running(self) -> bool:
        return self.sweeps_panel is not None and self.sweeps_panel.busy

    def resume_run(self, run_id: int) -> bool:
        """Continue a stopped, failed or crashed run from <run dir>/last.pt (the same session row)."""
        if self.sweep_running():
            self.statusBar().showMessage(SWEEP_BLOCKS_TRAINING, 8000)
            return False
        ok = self.run.resume(run_id)
        row = self.store.get_run(run_id) if ok else None
        if row is not None:
            self.show_dataset(row.dataset)
        self.tabs.setCurrentWidget(self.training_panel)
        return ok

    def stop_training(self) -> None:
        self.run.stop()

    @Slot(int)
    def reopen_session(self, run_id: int) -> bool:
        """Show a stored run's curves and load its best checkpoint as the current model."""
        row = self.run.show_stored(run_id)
        if row is None:
            return False
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

    # --- models ---------------------------------------------------------------------------------------------
    def open_checkpoint(self, path: str, run_id: int | None = None, reopened: bool = False,
                        trust_code: tuple[str, ...] = ()):
        """Load a checkpoint in the background; it becomes the current model (sig_model_loaded). A newer load
        cancels this one. Returns the Work handle."""
        if self._model_work is not None:
            self._model_work.cancel()
        if run_id is None:
            run_id = self.store.find_run_by_checkpoint(path)
        self.statusBar().showMessage(f"Loading {Path(path).name}…")

        def loaded(lm: LoadedModel) -> None:
            if not self._closing:
                self.set_current_model(lm)
                if reopened and run_id is not None:
                    self.sig_session_reopened.emit(run_id)

        def failed(failure: Failure) -> None:
            if not self._closing:
                self._on_model_failed(failure, path, run_id, reopened)

        self._model_work = self.work.start(lambda _w: _load_model(path, run_id, trust_code), on_result=loaded,
                                           on_error=failed)
        return self._model_work

    def _on_model_failed(self, failure: Failure, path: str, run_id: int | None, reopened: bool) -> None:
        modules = self._untrusted_modules(failure.exception)
        if modules is not None:
            if self.confirm_code(Path(path).name, modules):
                # exactly these modules: a file that names any other one is refused again
                self.open_checkpoint(path, run_id=run_id, reopened=reopened, trust_code=tuple(modules))
                return
            text = "Not opened: it names code that was not trusted (" + ", ".join(modules) + ")."
        else:
            text = failure.message
        self.statusBar().showMessage("The model could not be opened", 8000)
        self.training_panel.set_status("error", f"Could not open the model: {text}")
        self._show_error_dialog("Could not open the model", text)

    def confirm_code(self, what: str, modules: list[str]) -> bool:
        """Ask before importing encoder code outside Robult Studio that `what` (a checkpoint file, a run)
        names; True when the user trusts exactly these modules. No is the default."""
        answer = QMessageBox.question(
            self, "Run code outside Robult Studio?",
            f"{what} builds its model with code outside Robult Studio:\n\n  " + "\n  ".join(modules)
            + "\n\nContinuing imports and runs these modules (and no others). Only continue if you trust "
            "them.", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    @staticmethod
    def _untrusted_modules(e: BaseException | None) -> list[str] | None:
        """The module names an UntrustedCodeError lists (None for any other error)."""
        from robult_engine.checkpoint import UntrustedCodeError
        if isinstance(e, UntrustedCodeError):
            return [str(m) for m in getattr(e, "modules", ())] or ["(unnamed)"]
        return None

    def set_current_model(self, loaded: LoadedModel) -> None:
        self.current_model = loaded
        self.controller.set_model(loaded.model)
        self.state.update(current_model=loaded)
        origin = f"run #{loaded.run_id}" if loaded.run_id is not None else Path(loaded.checkpoint_path).name
        self.model_label.setText(f"Model: {loaded.config.method} on {loaded.info.name} ({origin})")
        self.show_dataset(loaded.config.data.dataset, loaded.info)
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

    def _show_error_dialog(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_dialog = box
        box.open()

    # --- slots of actions ---------------------------------------------------------------------------------
    @Slot()
    def _on_act_new_triggered(self) -> None:
        self.new_training()

    @Slot()
    def _on_act_open_triggered(self) -> None:
        self.open_model_dialog()

    @Slot()
    def _on_act_stop_triggered(self) -> None:
        if self.sweep_has_focus():
            self.sweeps_panel.cancel()
        else:
            self.stop_training()

    def _sweep_blocked_reason(self) -> str:
        if self.controller.is_running:
            return ("A training run is going; a sweep starts once it has ended (two trainings at once would share "
                    "torch's random generator, and neither would be reproducible).")
        return ""

    def sweep_has_focus(self) -> bool:
        """Esc cancels the sweep while the Sweeps tab is shown and a sweep runs; else it stops the training."""
        sp = self.sweeps_panel
        return sp is not None and sp.busy and self.tabs.currentWidget() is sp

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
    def _on_act_sweeps_tab_triggered(self) -> None:
        if self.sweeps_panel is not None:
            self.tabs.setCurrentWidget(self.sweeps_panel)

    @Slot(bool)
    def _on_sweep_busy_changed(self, _busy: bool) -> None:
        self._update_actions()

    @Slot(int)
    def _on_tab_changed(self, _index: int) -> None:
        self._update_actions()

    @Slot(str, str)
    def _on_sweep_message(self, text: str, level: str) -> None:
        self.statusBar().showMessage(text, 8000 if level in ("error", "warn") else 5000)

    def about_text(self) -> str:
        from PySide6 import __version__ as pyside_version
        from PySide6.QtCore import qVersion
        notices = asset_path("THIRD-PARTY-NOTICES.md")
        data = (f'{asset_path("AV-DIGITS-LICENSE.md")}, {asset_path("MFEAT-LICENSE.md")}, '
                f'{asset_path("MOVIES-LICENSE.md")}')
        return (f"<b>Robult Studio {app_version()}</b><br>Robust multimodal learning with missing modalities and "
                f"scarce labels — the Robult method (Nguyen, Kamboj, Do; arXiv 2509.03477), its ablations and "
                f"baselines. MIT licence.<br><br>"
                f"Built with Qt {qVersion()} and PySide6 {pyside_version}, used under the GNU LGPL v3 (dynamically "
                f"linked; Help › About Qt). pyqtgraph: MIT; sqlite-utils: Apache-2.0; PyTorch: BSD-3-Clause.<br>"
                f"Data: AV-Digits is CC BY-SA 4.0 (built from the Free Spoken Digit Dataset, CC BY-SA 4.0, and the "
                f"UCI optdigits images, CC BY 4.0); mfeat is CC BY 4.0 (UCI Multiple Features, R. P. W. Duin); "
                f"Movies is GPL-3 (ggplot2movies, H. Wickham; IMDb data), built on your machine; "
                f"datasets you open keep their own licences.<br>"
                f"Details: {notices} and {data}.<br><br>Sessions: {self.store.location}")

    @Slot()
    def _on_act_about_triggered(self) -> None:
        QMessageBox.about(self, "About Robult Studio", self.about_text())

    # --- closing ----------------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        questions = [(self.controller.is_running, "A run is training. Stop it and quit?\n\nThe best checkpoint so "
                      "far is kept and the run can be resumed later from the Sessions tab."),
                     (self.sweep_running(), "A sweep is running. Stop it and quit?\n\nEvery finished run is kept in "
                      "the session; Resume in the Sweeps tab trains the others.")]
        for busy, text in questions:
            if busy and QMessageBox.question(
                    self, "Quit Robult Studio", text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                    QMessageBox.StandardButton.No) != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self._closing = True
        self.run.cancel_queue()  # queued runs of a comparison do not start; the finished ones are in the database
        self.training_panel.timer.stop()
        self.store_timer.stop()  # what still waits is written when the store closes (SessionStore.close)
        if self.controller.is_running:
            self.statusBar().showMessage("Stopping the run…")
            self.run.closing(self.controller.shutdown())
        self._save_settings()
        if self.sweeps_panel is not None:
            if self.sweeps_panel.busy:
                self.statusBar().showMessage("Stopping the sweep…")
            self.sweeps_panel.shutdown()  # its finished runs are in the database; the sweep can be resumed
        self.work.shutdown()
        self.work.wait(10_000)
        super().closeEvent(event)
