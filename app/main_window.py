"""MainWindow: the table of contents of the app — actions, menus, tabs, and who is wired to whom.

It owns no logic of its own: the run on screen is a `RunSession` (app/core/run_session.py), every training
request and every sweep goes through one `RunQueue` (app/core/run_queue.py, `self.run_queue`: one at a time, the
others wait, listed in the Training tab by app/views/training_queue.py), the state the
panels show is the Qt-free `SessionState` (the window subscribes and renders; nothing writes back), work off
the GUI thread goes through the contract of app/core/work.py (`self.work`, `self.controller`), datasets come
from one `DatasetCache` (robult_engine/data/cache.py).

It builds every tab itself: Training, Sessions, the Explorer (app/views/explorer), the analysis tabs
(`self.analysis`, app/views/analysis/tabs.py) and Sweeps; `closeEvent` shuts every one of them down.

The API other parts of the app rely on:

    window.store            SessionStore (runs, epochs, inspections, ui_state)
    window.controller       TrainingController (also the channel for inference on the live model)
    window.work             WorkRunner for the window's own background work
    window.tabs             QTabWidget; window.add_tab(title, widget)
    window.current_model    app.core.state.LoadedModel | None: the one current model of the app (read-only;
                            `set_current_model` changes it and emits sig_model_loaded)
    window.sig_model_loaded(LoadedModel)    whenever a model becomes current (opened file, reopened session,
                                            training finished or stopped with a best checkpoint)
    window.sig_session_reopened(int)        a run of the session database was reopened (after its model loaded)
    window.get_bundle(data_cfg)             the DatasetBundle for a DataConfig, loaded once and cached
                                            (thread-safe; blocks while loading, so call it off the GUI thread
                                            for datasets that are not cached yet)

The working context (the current model and its run, the dataset, the explorer's sample and toggles, the tab) is
written to the store's ui_state whenever it changes (debounced; queued while the file is locked) and brought
back once the window is first shown (`restore_context`): the model loads off the GUI thread as Sessions ›
Reopen does, and a checkpoint that is gone or cannot be read is said in the status bar and the window starts
clean.
"""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QIcon, QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QDialog, QDialogButtonBox, QFileDialog, QLabel,
                               QMainWindow, QMenu, QMessageBox, QTableWidget, QTableWidgetItem, QTabWidget, QToolBar,
                               QVBoxLayout, QWidget)

from robult_engine.config import ConfigError, DataConfig, RunConfig
from robult_engine.data.base import DatasetBundle
from robult_engine.data.cache import DatasetCache
from robult_engine.paths import asset_path, source_checkout

from .background.runner import WorkRunner
from .background.training import TrainingController
from .core.run_queue import (CANCELLED, COMPARISON, DONE, FAILED, RESUME, TRAINING, TRAINING_KINDS, QueueEntry,
                             RunQueue, submission_message)
from .core.run_session import RunSession
from .core.sessions import SessionStore, runs_root
from .core.state import (CONTEXT_KEY, FINISHED, RESUMABLE, RUNNING, STOPPING, LoadedModel, SessionState,
                         TrainingBuffers, WorkingContext, same_inputs)
from .core.state import FAILED as RUN_FAILED
from .core.work import Failure
from .core.analysis.robustness import runs_from_store
from .core.explorer_state import SampleRef
from .views.analysis.tabs import AnalysisTabs
from .views.explorer.explorer_panel import ExplorerPanel
from .views.sessions import SessionsPanel
from .views.training import TrainingPanel
from .views.training_queue import RunQueueView

ICON_PATH = asset_path("icons/robult-studio.svg")
FALLBACK_DATASET = "pid-synth"
STORE_TICK_MS = 500  # how often writes that wait for the session database are retried (the store backs off)
CONTEXT_SAVE_MS = 800  # the working context is written this long after its last change
# View menu keys of the tabs that have no action of their own elsewhere (Ctrl+1 … Ctrl+6 are taken)
TAB_KEYS = {"Calibration": "Ctrl+7", "Dataset PID": "Ctrl+8", "Slices": "Ctrl+9"}
# shortcuts that live in a panel (QShortcut) rather than on a menu action, for Help › Keyboard shortcuts
PANEL_SHORTCUTS = (("Alt+1 … Alt+M", "Explorer: switch modality 1 … M on or off"),
                   ("Alt+0", "Explorer: switch every modality on"),
                   ("Alt+Left, PgUp", "Explorer: previous sample"),
                   ("Alt+Right, PgDown", "Explorer: next sample"),
                   ("Ctrl+B", "Sessions: pin the selected run as the baseline"))


def documentation_path() -> Path | None:
    """docs/app.md of the source checkout the app runs from (None for an installation without the docs)."""
    root = source_checkout()
    path = root / "docs" / "app.md" if root is not None else None
    return path if path is not None and path.is_file() else None


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


class MainWindow(QMainWindow):
    sig_model_loaded = Signal(object)  # app.core.state.LoadedModel
    sig_session_reopened = Signal(int)  # run id

    def __init__(self, store: SessionStore, settings: QSettings, default_dataset: str = "av-digits") -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.state = SessionState()
        self.buffers = TrainingBuffers()
        self._current_model: LoadedModel | None = None
        self.datasets = DatasetCache()
        self.work = WorkRunner(self)
        self.controller = TrainingController(self.get_bundle, parent=self)
        self.run = RunSession(store, self.state, self.buffers, self.controller, runs_root(store))
        self.run.confirm_code = self.confirm_code  # a run whose config names outside code starts only if trusted
        self.run_queue = RunQueue()  # trainings and sweeps, one at a time
        self.notices: list[tuple[str, str]] = []
        self._crashed_notice: tuple[int, ...] = ()  # the runs the "did not end cleanly" notice names
        self.error_dialog: QMessageBox | None = None
        self._closing = False
        self._model_work = None  # the checkpoint being loaded (cancelled when another load starts)
        self._context_restored = False  # restore_context ran (the context is saved only from then on)
        self._restoring: WorkingContext | None = None  # the context whose model is being loaded back
        self._restore_note = ""  # why the last context could not be brought back
        self._last_context: dict | None = None  # the context last written
        self.tab_actions: dict[QWidget, QAction] = {}  # View menu: the action that shows each tab
        self._own_tab_actions: dict[QWidget, QAction] = {}  # those made here (tabs without an action elsewhere)
        self.shortcuts_dialog: QDialog | None = None
        self._followed: tuple[str, int] | None = None  # the live run's checkpoint loaded for the explorer
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
        self._create_analysis_tabs()
        self._install_sweeps()
        self._create_tab_actions()
        self._connect_context()

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
        self.act_docs = QAction("&Documentation", self)
        self.act_docs.setShortcut(QKeySequence("F1"))
        self.act_docs.setToolTip("Open the app's guide, docs/app.md (F1)")
        self.act_docs.triggered.connect(self._on_act_docs_triggered)
        self.act_shortcuts = QAction("&Keyboard shortcuts", self)
        self.act_shortcuts.setShortcut(QKeySequence("Ctrl+/"))
        self.act_shortcuts.setToolTip("List every keyboard shortcut (Ctrl+/)")
        self.act_shortcuts.triggered.connect(self._on_act_shortcuts_triggered)
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
        m_view = self.m_view = mb.addMenu("&View")  # one entry per tab, filled once every tab exists
        m_view.addAction(self.act_training_tab)
        m_view.addAction(self.act_sessions)
        m_view.addAction(self.act_sweeps_tab)
        m_help = self.m_help = mb.addMenu("&Help")
        m_help.addAction(self.act_docs)
        m_help.addAction(self.act_shortcuts)
        m_help.addSeparator()
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
        self.queue_view = RunQueueView(self.run_queue)
        self.training_panel.add_queue_view(self.queue_view)
        self.queue_view.sig_message.connect(self._on_panel_message)
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
            self.sweeps_panel = SweepsPanel(self.store, self.get_bundle, self.initial_config, run_queue=self.run_queue)
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
        c.sig_stopped.connect(self._on_training_stopped)  # after the run session: a comparison may go on
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

    def _create_analysis_tabs(self) -> None:
        """The Explorer tab and the analysis tabs, the Explorer menu, and the wiring between them."""
        self.explorer = ExplorerPanel(store=self.store, controller=self.controller, bundle_getter=self.get_bundle)
        self.analysis = AnalysisTabs(self.get_bundle, parent=self)
        self.tabs.addTab(self.explorer, "Explorer")
        self.tabs.setTabToolTip(self.tabs.indexOf(self.explorer), "One sample, modality toggles, predictions, "
                                                                  "latents, soft-PU weights (Ctrl+3)")
        for title, widget, tip in self.analysis.tabs():
            self.tabs.addTab(widget, title)
            self.tabs.setTabToolTip(self.tabs.indexOf(widget), tip)
        self.act_explorer = QAction("Explorer", self)
        self.act_explorer.setShortcut(QKeySequence("Ctrl+3"))
        self.act_explorer.triggered.connect(self._on_act_explorer_triggered)
        self.act_robustness = QAction("Robustness", self)
        self.act_robustness.setShortcut(QKeySequence("Ctrl+4"))
        self.act_robustness.triggered.connect(self._on_act_robustness_triggered)
        self.act_latent = QAction("Latent space", self)
        self.act_latent.setShortcut(QKeySequence("Ctrl+5"))
        self.act_latent.triggered.connect(self._on_act_latent_triggered)
        self.act_report = QAction("Export robustness &report…", self)
        self.act_report.setToolTip("Tables (CSV), plots (PNG + SVG) and run configs (JSON) of the robustness "
                                   "matrix, in one folder")
        self.act_report.triggered.connect(self.analysis.robustness._on_report_clicked)
        self.act_export = QAction("&Export explorer plots and tables…", self)
        self.act_export.triggered.connect(self.explorer._on_export_clicked)
        m = self.m_explorer = QMenu("E&xplorer", self.menuBar())
        for a in (self.act_explorer, self.act_robustness, self.act_latent):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_export)
        m.addAction(self.act_report)
        self.menuBar().insertMenu(self.m_help.menuAction(), m)
        self.sig_model_loaded.connect(self._on_model_loaded)
        self.sig_session_reopened.connect(self.explorer.session_reopened)
        self.explorer.sig_context_ready.connect(self.analysis.set_context)
        self.explorer.sig_message.connect(self._on_panel_message)
        self.analysis.sig_message.connect(self._on_panel_message)
        self.analysis.sig_open_sample.connect(self._on_open_sample)
        self.controller.sig_stopped.connect(self._refresh_runs)  # a run ended (finished, cancelled or failed)

    @Slot(object)
    def _on_model_loaded(self, loaded: LoadedModel) -> None:
        self.explorer.set_model(loaded)
        self.analysis.set_model(loaded)
        self._refresh_runs()

    @Slot()
    def _refresh_runs(self, *_args) -> None:
        """The session's runs on the current model's dataset, for the analysis tabs."""
        loaded = self.current_model
        if loaded is None:
            return
        runs = runs_from_store(self.store, loaded.config.data.dataset, loaded)
        self.analysis.set_runs(runs, loaded.config.data)

    @Slot(str, int, tuple)
    def _on_open_sample(self, split: str, index: int, subset: tuple) -> None:
        self.explorer.open_sample(SampleRef.dataset(split, index), tuple(subset) or None)
        self.tabs.setCurrentWidget(self.explorer)

    @Slot(str, str)
    def _on_panel_message(self, text: str, kind: str) -> None:
        if text:
            self.statusBar().showMessage(text, 8000 if kind != "error" else 15000)

    @Slot()
    def _on_act_explorer_triggered(self) -> None:
        self.tabs.setCurrentWidget(self.explorer)

    @Slot()
    def _on_act_robustness_triggered(self) -> None:
        self.tabs.setCurrentWidget(self.analysis.robustness)

    @Slot()
    def _on_act_latent_triggered(self) -> None:
        self.tabs.setCurrentWidget(self.analysis.latent_view)

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
        if self.tab_actions:  # a tab added once the window is built gets its View entry too
            self._create_tab_actions()

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
        elif "first_checkpoint" in changed:
            self._follow_training()
        if "dataset" in changed:
            self._on_context_changed()
        if changed & {"activity", "run_status", "run_id"}:
            self._update_actions()

    def follows_training(self) -> bool:
        """The explorer shows the run being trained ("Follow training" is ticked)."""
        panel = self._explorer_panel()
        return panel is not None and bool(getattr(panel, "follows_training", False))

    def _explorer_on_screen(self) -> bool:
        current = self.tabs.currentWidget()
        return current is not None and (current is self.explorer or current in self.analysis.widgets())

    def _follow_training(self, *_args) -> None:
        """While a run trains, the explorer follows it ("Follow training") and one of its tabs is on screen: if
        the current model cannot stand for the live one (there is none, or it takes other data or has another
        architecture), the run's best checkpoint is loaded as soon as it exists; the explorer then inspects the
        live model. Nothing is loaded while nobody looks (the training keeps the CPU)."""
        st, job = self.state, getattr(self.controller, "job", None)
        if self._closing or not st.first_checkpoint or not self.controller.is_running or job is None:
            return
        path, run_id, serial = st.first_checkpoint
        if job.run_id != run_id or not self.follows_training() or not self._explorer_on_screen():
            return
        lm = self.current_model
        if lm is not None and (lm.run_id == run_id or same_inputs(job.config, lm.config)):
            return
        if self._followed == (path, serial):
            return  # asked for already (a load that failed is not asked for again)
        self._followed = (path, serial)
        self.open_checkpoint(path, run_id=run_id)

    def _update_actions(self) -> None:
        running = self.controller.is_running  # New stays enabled: a run asked for now waits in the run queue
        self.act_stop.setEnabled((running and self.state.activity != STOPPING) or self.sweep_has_focus())
        resumable = (not running and self.state.run_id is not None and self.state.run_status in RESUMABLE)
        self.act_resume.setEnabled(resumable)
        title = "Training" + (" ●" if running else "")
        self.tabs.setTabText(self.tabs.indexOf(self.training_panel), title)

    # --- the default dataset ------------------------------------------------------------------------------
    def _load_default_dataset(self) -> None:
        name = self.state.dataset
        if self.current_model is None and self.state.run_id is None:
            self.dataset_label.setText(f"Dataset: {name} (reading…)")
        datasets, cfg = self.datasets, DataConfig(dataset=name)

        def loaded(info) -> None:
            if name == self.state.dataset:  # not a default dataset replaced meanwhile (a restored context's)
                self._on_default_dataset_loaded(info)

        def failed(failure: Failure) -> None:
            if name == self.state.dataset:
                self._on_default_dataset_failed(failure)

        self.work.start(lambda _w: datasets.get(cfg).info, on_result=loaded, on_error=failed)

    def show_dataset(self, name: str, info=None) -> None:
        """The status bar's dataset: the one the current run or model works on (its modalities and task once
        known), not only the default dataset the app opened with."""
        if info is not None:
            self.dataset_label.setText(f"Dataset: {info.name} ({', '.join(info.modality_names)}; {info.task})")
        else:
            self.dataset_label.setText(f"Dataset: {name}")
        self.dataset_label.setToolTip(f"The dataset of the current run or model: {name}")

    def _on_default_dataset_loaded(self, info) -> None:
        if self._restoring is not None or self.current_model is not None or self.state.run_id is not None:
            return  # a run, a model, or the last session's model coming back says what the window works on
        self.show_dataset(info.name, info)
        note = f"{self._restore_note} " if self._restore_note else ""
        self.training_panel.set_status("warning" if note else "info",
                                       f"{note}Ready to train on {info.name} (Ctrl+N) or to open a saved model "
                                       f"(Ctrl+O).")

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

    # --- tabs and help ------------------------------------------------------------------------------------
    def tab_title(self, index: int) -> str:
        """A tab's title without the "training" mark ("Training ●" is "Training")."""
        return self.tabs.tabText(index).replace("●", "").replace("&", "").strip()

    def _create_tab_actions(self) -> None:
        """View: one entry per tab, in tab order, each with its shortcut (the explorer's own actions are reused,
        so a key is bound once)."""
        known = {self.training_panel: self.act_training_tab, self.sessions_panel: self.act_sessions,
                 self.explorer: self.act_explorer, self.analysis.robustness: self.act_robustness,
                 self.analysis.latent_view: self.act_latent}
        if self.sweeps_panel is not None:
            known[self.sweeps_panel] = self.act_sweeps_tab
        taken = {a.shortcut().toString() for a in self.findChildren(QAction) if not a.shortcut().isEmpty()}
        self.tab_actions = {}
        self.m_view.clear()
        for i in range(self.tabs.count()):
            w, title = self.tabs.widget(i), self.tab_title(i)
            act = known.get(w) or self._own_tab_actions.get(w)
            if act is None:
                act = self._own_tab_actions[w] = QAction(title, self)
                key = TAB_KEYS.get(title, "")
                if key and key not in taken:
                    act.setShortcut(QKeySequence(key))
                    taken.add(key)
                    tip = self.tabs.tabToolTip(i)
                    if key not in tip:
                        self.tabs.setTabToolTip(i, f"{tip} ({key})" if tip else key)
                keys = act.shortcut().toString()
                act.setToolTip(f"Show the {title} tab" + (f" ({keys})" if keys else ""))
                act.triggered.connect(self._on_tab_action_triggered)
            self.tab_actions[w] = act
            self.m_view.addAction(act)

    @Slot()
    def _on_tab_action_triggered(self) -> None:
        act = self.sender()
        page = next((w for w, a in self._own_tab_actions.items() if a is act), None)
        if page is not None and self.tabs.indexOf(page) >= 0:
            self.tabs.setCurrentWidget(page)

    def shortcut_rows(self) -> list[tuple[str, str]]:
        """(keys, what they do) of every shortcut of the window: its actions (menus) and the panels' own keys."""
        rows, seen = [], set()
        for menu_action in self.menuBar().actions():
            menu = menu_action.menu()
            if menu is None:
                continue
            where = menu_action.text().replace("&", "")
            for a in menu.actions():
                keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts()
                                 if not k.isEmpty())
                if keys and id(a) not in seen:
                    seen.add(id(a))
                    rows.append((keys, f"{where} › {a.text().replace('&', '').rstrip('…').strip()}"))
        return rows + list(PANEL_SHORTCUTS)

    def show_shortcuts(self) -> QDialog:
        """Help › Keyboard shortcuts: a table of every shortcut (window-modal, not blocking)."""
        rows = self.shortcut_rows()
        dlg = QDialog(self)
        dlg.setWindowTitle("Keyboard shortcuts")
        table = QTableWidget(len(rows), 2, dlg)
        table.setObjectName("shortcutsTable")
        table.setHorizontalHeaderLabels(["Keys", "Does"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for r, (keys, what) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(keys))
            table.setItem(r, 1, QTableWidgetItem(what))
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dlg)
        buttons.rejected.connect(dlg.reject)
        lay = QVBoxLayout(dlg)
        lay.addWidget(table)
        lay.addWidget(buttons)
        dlg.resize(560, 520)
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        self.shortcuts_dialog = dlg
        dlg.open()
        return dlg

    def open_documentation(self) -> bool:
        """Help › Documentation: docs/app.md in the desktop's viewer for Markdown files."""
        path = documentation_path()
        if path is None:
            self.statusBar().showMessage("The documentation is not installed with this copy of Robult Studio: it is "
                                         "docs/app.md in the project's source.", 10000)
            return False
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self.statusBar().showMessage(f"No program could open {path}.", 10000)
            return False
        self.statusBar().showMessage(f"Opened {path}", 5000)
        return True

    @Slot()
    def _on_act_docs_triggered(self) -> None:
        self.open_documentation()

    @Slot()
    def _on_act_shortcuts_triggered(self) -> None:
        self.show_shortcuts()

    # --- the working context (what a restart brings back) --------------------------------------------------
    def _connect_context(self) -> None:
        self._context_timer = QTimer(self)
        self._context_timer.setSingleShot(True)
        self._context_timer.setInterval(CONTEXT_SAVE_MS)
        self._context_timer.timeout.connect(self.save_context)
        self.tabs.currentChanged.connect(self._on_context_changed)
        self.tabs.currentChanged.connect(self._follow_training)
        panel = self._explorer_panel()
        if panel is not None and hasattr(panel, "sig_inspection_shown"):
            panel.sig_inspection_shown.connect(self._on_context_changed)  # a sample or a toggle changed
        box = getattr(panel, "live_box", None)
        if box is not None:
            box.toggled.connect(self._follow_training)

    def _explorer_panel(self):
        return getattr(self, "explorer", None)

    @Slot(int)
    def _on_context_changed(self, _value: int = 0) -> None:
        if self._context_restored and not self._closing:
            self._context_timer.start()

    def working_context(self) -> WorkingContext:
        """What the window works on now."""
        lm, panel = self.current_model, self._explorer_panel()
        inspection = panel.inspection_context(lm.checkpoint_path) if panel is not None and lm is not None else None
        return WorkingContext(checkpoint=str(lm.checkpoint_path) if lm is not None else "",
                              run_id=lm.run_id if lm is not None else None,
                              dataset=lm.config.data.dataset if lm is not None else self.state.dataset,
                              tab=self.tab_title(self.tabs.currentIndex()), inspection=inspection)

    @Slot()
    def save_context(self) -> bool:
        """Write the working context to the store's ui_state (queued when the file is locked). Nothing is written
        before the last context was restored, nor while its model is still loading back."""
        self._context_timer.stop()
        if not self._context_restored or self._restoring is not None:
            return False
        d = self.working_context().to_dict()
        if d == self._last_context:
            return False
        try:
            self.store.set_ui(CONTEXT_KEY, d)
        except Exception as e:  # noqa: BLE001 - the window goes on; the context is tried again at the next change
            self.statusBar().showMessage(f"The working context could not be saved in {self.store.location}: {e}",
                                         8000)
            return False
        self._last_context = d
        return True

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if not self._context_restored:
            QTimer.singleShot(0, self, self.restore_context)  # once the window is on screen

    @Slot()
    def restore_context(self) -> bool:
        """Bring back the context the last window left in the store (once): the tab, the dataset, and the last
        model with its sample and toggles — loaded off the GUI thread. Returns True when a model is being loaded.
        A checkpoint or run that is gone is said in the status bar, and the window starts clean."""
        if self._context_restored or self._closing:
            return False
        self._context_restored = True
        try:
            ctx = WorkingContext.from_dict(self.store.get_ui(CONTEXT_KEY))
        except Exception as e:  # noqa: BLE001 - a damaged or locked file: start clean, and say so
            self._restore_failed(None, f"the session database could not be read ({e})")
            return False
        if ctx is None:
            return False
        self._last_context = ctx.to_dict()
        self._select_tab(ctx.tab)
        if not ctx.checkpoint:
            self._restore_dataset(ctx.dataset)
            return False
        if self.current_model is not None or self.controller.is_running or self._model_work is not None:
            return False  # something newer is already on screen
        name = Path(ctx.checkpoint).name
        if ctx.run_id is not None:
            try:
                row = self.store.get_run(ctx.run_id)
            except Exception as e:  # noqa: BLE001
                row, why = None, f"run #{ctx.run_id} could not be read ({e})"
            else:
                why = f"run #{ctx.run_id} is no longer in the session database"
            if row is None:
                self._restore_failed(ctx, why)
                return False
        if not Path(ctx.checkpoint).is_file():
            self._restore_failed(ctx, f"its checkpoint {ctx.checkpoint} is missing")
            return False
        self._restoring = ctx
        panel = self._explorer_panel()
        if panel is not None and ctx.inspection:
            panel.expect_inspection(ctx.checkpoint, ctx.inspection)
        what = f"run #{ctx.run_id}" if ctx.run_id is not None else name
        self.show_dataset(ctx.dataset)
        self.training_panel.set_status("info", f"Restoring the last session: loading the model of {what} ({name})…")
        self.open_checkpoint(ctx.checkpoint, run_id=ctx.run_id, restoring=True)
        return True

    def _select_tab(self, title: str) -> None:
        for i in range(self.tabs.count()):
            if title and self.tab_title(i) == title:
                self.tabs.setCurrentIndex(i)
                return

    def _restore_dataset(self, name: str) -> None:
        """The dataset of the last context becomes the window's default (a built-in one; a file may be gone)."""
        from robult_engine.data import BUILTIN
        if name and name in BUILTIN and name != self.state.dataset:
            self.state.update(dataset=name, dataset_note="")
            self._load_default_dataset()

    def _restored(self, loaded: LoadedModel) -> None:
        """The last context's model is current again: its run's curves are shown, as Reopen does."""
        self._restoring = None
        what = Path(loaded.checkpoint_path).name
        if loaded.run_id is not None and self.state.run_id is None and not self.controller.is_running:
            row = self.run.show_stored(loaded.run_id)
            if row is not None:
                what = f"run #{loaded.run_id} ({row.status})"
                self._update_actions()
        text = f"Restored the last session: {loaded.config.method} on {loaded.info.name}, {what}."
        if self.state.run_id is None or self.state.run_id == loaded.run_id:
            self.training_panel.set_status("info", text)
        self.statusBar().showMessage(text, 8000)
        self._on_context_changed()

    def _restore_failed(self, ctx: WorkingContext | None, why: str) -> None:
        """The last context's model could not come back: say so, and start clean."""
        self._restoring = None
        panel = self._explorer_panel()
        if panel is not None:
            panel.expect_inspection(None, None)
        what = f" (run #{ctx.run_id})" if ctx is not None and ctx.run_id is not None else ""
        self._restore_note = f"The last session's model{what} could not be restored: {why}. Starting clean."
        self.statusBar().showMessage(self._restore_note, 20000)
        if self.state.run_id is None:
            self.training_panel.set_status("warning", self._restore_note)
        if ctx is not None:
            self._restore_dataset(ctx.dataset)

    def _abandon_restore(self) -> None:
        """Another model was asked for while the last context's was loading: that one wins, quietly."""
        if self._restoring is not None:
            self._restoring = None
            panel = self._explorer_panel()
            if panel is not None:
                panel.expect_inspection(None, None)

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
        """Open the training wizard (window-modal, not blocking); returns it. Accepting it starts the run, or
        queues it while a training or a sweep runs (the run queue)."""
        from .views.wizard import TrainingWizard
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

    def submit_request(self, kind: str, name: str, start, key=None) -> QueueEntry:
        """Put a request on the run queue (app/core/run_queue.py): it starts now when nothing runs, else waits
        for its turn; the status bar says its place, or why it was not taken."""
        entry = self.run_queue.submit(kind, name, start, key=key)
        text = submission_message(self.run_queue, entry)
        if text:
            self.statusBar().showMessage(text, 12000)
        return entry

    def _refusal(self, message_before: str) -> str:
        """Why the run session did not start a request (its message, when it said something new)."""
        msg = self.state.message
        return msg if msg and msg != message_before else "the run session refused it"

    def start_comparison(self, queue: list[tuple[RunConfig, str]]) -> int | None:
        """Run methods × seeds (app/core/comparison.py) as one request of the run queue; its runs train one
        after another. Returns the first run's id when it started now (None when it waits or was refused)."""
        from .core.comparison import new_comparison_id
        items = list(queue)
        now, started = not self.run_queue.busy, []

        def go(entry: QueueEntry) -> bool:
            before = self.state.message
            run_id = self.run.start_queue(items, new_comparison_id())
            started.append(run_id)
            if run_id is None:
                entry.note = self._refusal(before)
                return False
            self.datasets.set_shown(items[0][0].data)
            self.show_dataset(items[0][0].data.dataset)
            self.settings.setValue("wizard/last_config", items[0][0].to_json())
            if now:
                self.tabs.setCurrentWidget(self.training_panel)
            return True

        methods = list(dict.fromkeys(cfg.method for cfg, _ in items))
        seeds = len({cfg.seed for cfg, _ in items})
        where = f" on {items[0][0].data.dataset}" if items else ""
        entry = self.submit_request(COMPARISON, f"{' vs '.join(methods)} × {seeds} seed{'s' * (seeds != 1)}{where} "
                                                f"({len(items)} runs)", go)
        if items and entry.state not in (CANCELLED, FAILED) and not started:  # queued: the wizard starts from it
            self.settings.setValue("wizard/last_config", items[0][0].to_json())
        return started[0] if started else None

    def start_training(self, cfg: RunConfig, name: str = "") -> int | None:
        """Create the session row and start the worker — now when nothing else runs, else once its turn in the
        run queue comes (the status bar says its place). Returns the run id when it started now (None when it
        waits or was refused)."""
        now, started = not self.run_queue.busy, []

        def go(entry: QueueEntry) -> bool:
            before = self.state.message
            run_id = self.run.start(cfg, name)
            started.append(run_id)
            if run_id is None:
                entry.note = self._refusal(before)
                return False
            self.datasets.set_shown(cfg.data)
            self.show_dataset(cfg.data.dataset)
            self.settings.setValue("wizard/last_config", cfg.to_json())
            if now:
                self.tabs.setCurrentWidget(self.training_panel)
            return True

        entry = self.submit_request(TRAINING, name or f"{cfg.method} on {cfg.data.dataset}", go)
        if entry.state not in (CANCELLED, FAILED) and not started:  # queued: the wizard starts from it
            self.settings.setValue("wizard/last_config", cfg.to_json())
        return started[0] if started else None

    @Slot(int)
    def sweep_running(self) -> bool:
        return self.sweeps_panel is not None and self.sweeps_panel.busy

    def resume_run(self, run_id: int) -> bool:
        """Continue a stopped, failed or crashed run from <run dir>/last.pt (the same session row) — now when
        nothing else runs, else once its turn in the run queue comes. True when it resumed now."""
        now, resumed = not self.run_queue.busy, []

        def go(entry: QueueEntry) -> bool:
            before = self.state.message
            ok = self.run.resume(run_id)
            resumed.append(ok)
            row = self.store.get_run(run_id) if ok else None
            if row is not None:
                self.show_dataset(row.dataset)
            if now:
                self.tabs.setCurrentWidget(self.training_panel)
            if not ok:
                entry.note = self._refusal(before)
            return ok

        try:
            row = self.store.get_run(run_id)
        except sqlite3.Error:
            row = None
        name = f"run #{run_id}" + (f" {row.name}" if row is not None and row.name else "")
        self.submit_request(RESUME, name, go, key=(RESUME, run_id))
        return bool(resumed and resumed[0])

    @Slot()
    def _on_training_stopped(self) -> None:
        """The training thread has ended. Unless the run session went on with the next run of a comparison, the
        run queue's training request is over, and the next request starts."""
        entry = self.run_queue.current
        if entry is None or entry.kind not in TRAINING_KINDS or self.controller.is_running:
            return
        status = self.state.run_status
        self.run_queue.finish(entry, {FINISHED: DONE, RUN_FAILED: FAILED}.get(status, CANCELLED),
                              note=f"run #{self.state.run_id} {status}" if self.state.run_id is not None else "")

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
                        trust_code: tuple[str, ...] = (), restoring: bool = False):
        """Load a checkpoint in the background; it becomes the current model (sig_model_loaded). A newer load
        cancels this one. `restoring`: the model of the last working context (a failure is said in the status
        bar, without a dialog, and the window starts clean). Returns the Work handle."""
        if self._model_work is not None:
            self._model_work.cancel()
        if not restoring:
            self._abandon_restore()
        if run_id is None:
            try:
                run_id = self.store.find_run_by_checkpoint(path)
            except sqlite3.Error:  # the model still opens; it is only not tied to its run
                run_id = None
        self.statusBar().showMessage(f"Loading {Path(path).name}…")
        work = None

        def loaded(lm: LoadedModel) -> None:
            if self._model_work is work:
                self._model_work = None
            if not self._closing:
                self.set_current_model(lm)
                if restoring and self._restoring is not None:
                    self._restored(lm)
                if reopened and run_id is not None:
                    self.sig_session_reopened.emit(run_id)

        def failed(failure: Failure) -> None:
            if self._model_work is work:
                self._model_work = None
            if not self._closing:
                self._on_model_failed(failure, path, run_id, reopened, restoring and self._restoring is not None)

        work = self._model_work = self.work.start(lambda _w: _load_model(path, run_id, trust_code),
                                                  on_result=loaded, on_error=failed)
        return work

    def _on_model_failed(self, failure: Failure, path: str, run_id: int | None, reopened: bool,
                         restoring: bool = False) -> None:
        modules = self._untrusted_modules(failure.exception)
        if modules is not None:
            if self.confirm_code(Path(path).name, modules):
                # exactly these modules: a file that names any other one is refused again
                self.open_checkpoint(path, run_id=run_id, reopened=reopened, trust_code=tuple(modules),
                                     restoring=restoring)
                return
            text = "Not opened: it names code that was not trusted (" + ", ".join(modules) + ")."
        else:
            text = failure.message
        if restoring:
            self._restore_failed(self._restoring, f"{Path(path).name} could not be opened ({text})")
            return
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

    @property
    def current_model(self) -> LoadedModel | None:
        """The current model of the app (opened, reopened or just trained); None before the first one."""
        return self._current_model

    def set_current_model(self, loaded: LoadedModel) -> None:
        """Make `loaded` the current model: the one place it changes; every tab follows sig_model_loaded."""
        self._current_model = loaded
        self.datasets.set_shown(loaded.config.data)  # kept; datasets no longer shown are trimmed to the budget
        self.controller.set_model(loaded.model)
        origin = f"run #{loaded.run_id}" if loaded.run_id is not None else Path(loaded.checkpoint_path).name
        self.model_label.setText(f"Model: {loaded.config.method} on {loaded.info.name} ({origin})")
        self.show_dataset(loaded.config.data.dataset, loaded.info)
        self.model_label.setToolTip(loaded.checkpoint_path)
        self.statusBar().showMessage(f"Current model: {loaded.config.method} on {loaded.info.name} ({origin})", 6000)
        if self.state.run_id is None and not self.controller.is_running:
            # no run of this session is shown: the banner speaks of the open model, not of the default dataset
            self.training_panel.set_status("info", f"Model open: {loaded.config.method} on {loaded.info.name} "
                                                   f"({origin}); the Explorer and the analysis tabs show it. "
                                                   f"Train a new run with Ctrl+N.")
        self.sig_model_loaded.emit(loaded)
        self._on_context_changed()

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
        waiting = self.run_queue.queued
        dropped = (f"\n\nThe run queue's {len(waiting)} waiting request{'s' * (len(waiting) != 1)} "
                   f"({'; '.join(e.label for e in waiting)}) will not start; none has started, so nothing is lost "
                   f"(a run waiting to be resumed stays resumable)." if waiting else "")
        questions = [(self.controller.is_running, "A run is training. Stop it and quit?\n\nThe best checkpoint so "
                      "far is kept and the run can be resumed later from the Sessions tab." + dropped),
                     (self.sweep_running(), "A sweep is running. Stop it and quit?\n\nEvery finished run is kept in "
                      "the session; Resume in the Sweeps tab trains the others." + dropped)]
        for busy, text in questions:
            if busy and QMessageBox.question(
                    self, "Quit Robult Studio", text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                    QMessageBox.StandardButton.No) != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self._closing = True
        # queued requests had not started (no row, no folder): they are dropped, and nothing starts any more
        for e in self.run_queue.close():
            print(f"robult-studio: not started, the app was closed: {e.label}", file=sys.stderr)
        self.run.cancel_queue()  # queued runs of a comparison do not start; the finished ones are in the database
        self.training_panel.timer.stop()
        self.store_timer.stop()  # what still waits is written when the store closes (SessionStore.close)
        if self.controller.is_running:
            self.statusBar().showMessage("Stopping the run…")
            self.run.closing(self.controller.shutdown())
        self._save_settings()
        self.save_context()  # written now (or queued: the store writes what waits when it closes)
        if self.sweeps_panel is not None:
            if self.sweeps_panel.busy:
                self.statusBar().showMessage("Stopping the sweep…")
            self.sweeps_panel.shutdown()  # its finished runs are in the database; the sweep can be resumed
        self.explorer.shutdown()  # saves the inspection, stops its jobs (bounded waits)
        self.analysis.shutdown()
        self.work.shutdown()
        self.work.wait(10_000)
        super().closeEvent(event)
