"""The explorer: see *why* a trained model survives a missing modality.

`install(main_window)` is called at the end of `MainWindow.__init__`; it adds three tabs and wires them:

    Explorer      ExplorerPanel: a sample, its modality toggles (Alt+1…M), predictions, ‖Z‖/‖U‖, soft-PU
    Robustness    RobustnessPanel: metric per modality subset × run of the session, flipped samples
    Latent space  LatentViewPanel: PCA of Z and U, click a point to open its sample
    Calibration   CalibrationPanel: reliability diagrams and ECE / Brier / NLL per subset, mean |φ| per run
    Dataset PID   DatasetPIDPanel: R / U1 / U2 / S per modality pair beside the model's ‖Z‖ / ‖U‖ and |φ|
    Slices        SlicesView (app/views/slices_view.py): where the model fails, slices of the test split

Modules: `sources` (loading samples, Qt-free), `service` (engine bridge, caches, requests off the GUI thread
through the work contract of app/core/work.py), `robustness` (Qt-free evaluation of every run),
`task_language` (Qt-free: flips per task, label order, palette, modality titles, φ units), `export`
(PNG/SVG/CSV/report), one module per panel (each runnable alone: `python -m
app.views.explorer.predictions_panel`), `demo` (synthetic data for that). Its state is Qt-free:
app/core/explorer_state.py. The engine side is `robult_engine.inspect`.
"""
from __future__ import annotations

import weakref

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Slot
from PySide6.QtGui import QAction, QKeySequence

__all__ = ["ExplorerSuite", "install"]


class ExplorerSuite(QObject):
    """The explorer's panels inside a MainWindow, and the wiring between them and the window."""

    def __init__(self, window) -> None:
        super().__init__(window)
        from .explorer_panel import ExplorerPanel
        from .calibration_panel import CalibrationPanel
        from .latent_view import LatentViewPanel
        from .pid_panel import DatasetPIDPanel
        from .robustness_panel import RobustnessPanel
        self._window_ref = weakref.ref(window)  # the window holds the suite (window.explorer): no cycle back
        getter = getattr(window, "get_bundle", None)
        self.explorer = ExplorerPanel(store=getattr(window, "store", None),
                                      controller=getattr(window, "controller", None), bundle_getter=getter)
        self.robustness = RobustnessPanel(bundle_getter=getter)
        from .missing_curves import MissingCurvesPanel
        self.curves = MissingCurvesPanel(bundle_getter=getter)  # a view of the Robustness tab (issue 11)
        self.robustness.views.addTab(self.curves, "Missing-rate curves")
        self.latent_view = LatentViewPanel()
        self.calibration = CalibrationPanel(bundle_getter=getter)
        self.pid = DatasetPIDPanel()
        from app.views.slices_view import SlicesView
        self.slices = SlicesView(bundle_getter=getter)
        self._closed = False
        self._close_seen = False
        self._create_tabs()
        self._create_actions()
        self._connect()
        current = getattr(window, "current_model", None)
        if current is not None:
            self._on_model_loaded(current)

    @property
    def window(self):
        """The MainWindow (held weakly; None once it is gone)."""
        ref = getattr(self, "_window_ref", None)  # absent while Python tears the wrapper down
        return ref() if ref is not None else None

    def _create_tabs(self) -> None:
        w = self.window
        w.add_tab("Explorer", self.explorer)
        w.add_tab("Robustness", self.robustness)
        w.add_tab("Latent space", self.latent_view)
        w.add_tab("Calibration", self.calibration)
        w.add_tab("Dataset PID", self.pid)
        w.add_tab("Slices", self.slices)
        tabs = w.tabs
        tabs.setTabToolTip(tabs.indexOf(self.slices), "Where the model fails: the groups of test samples (modality "
                                                      "present / masked / absent, class, confidence, …) with the "
                                                      "highest error")
        tabs.setTabToolTip(tabs.indexOf(self.calibration), "Reliability diagrams per modality subset, ECE / Brier / "
                                                           "NLL, and the attribution summary of every run")
        tabs.setTabToolTip(tabs.indexOf(self.pid), "The dataset's redundancy / uniqueness / synergy per modality pair "
                                                   "beside the model's Z/U split")
        tabs.setTabToolTip(tabs.indexOf(self.explorer), "One sample, modality toggles, predictions, latents, "
                                                        "soft-PU weights (Ctrl+3)")
        tabs.setTabToolTip(tabs.indexOf(self.robustness), "Every modality subset × every run of the session (Ctrl+4)")
        tabs.setTabToolTip(tabs.indexOf(self.latent_view), "PCA of the redundant and unique latents (Ctrl+5)")

    def _create_actions(self) -> None:
        w = self.window
        self.act_explorer = QAction("Explorer", w)
        self.act_explorer.setShortcut(QKeySequence("Ctrl+3"))
        self.act_explorer.triggered.connect(self._on_act_explorer_triggered)
        self.act_robustness = QAction("Robustness", w)
        self.act_robustness.setShortcut(QKeySequence("Ctrl+4"))
        self.act_robustness.triggered.connect(self._on_act_robustness_triggered)
        self.act_latent = QAction("Latent space", w)
        self.act_latent.setShortcut(QKeySequence("Ctrl+5"))
        self.act_latent.triggered.connect(self._on_act_latent_triggered)
        self.act_report = QAction("Export robustness &report…", w)
        self.act_report.setToolTip("Tables (CSV), plots (PNG + SVG) and run configs (JSON) of the robustness "
                                   "matrix, in one folder")
        self.act_report.triggered.connect(self.robustness._on_report_clicked)
        self.act_export = QAction("&Export explorer plots and tables…", w)
        self.act_export.triggered.connect(self.explorer._on_export_clicked)
        mb = w.menuBar() if hasattr(w, "menuBar") else None
        if mb is None:
            return
        menu = None
        for a in mb.actions():
            if a.text().replace("&", "") == "Help":
                menu = mb.insertMenu(a, self._make_menu(mb))
                break
        if menu is None:
            mb.addMenu(self._make_menu(mb))

    def _make_menu(self, mb):
        from PySide6.QtWidgets import QMenu
        m = QMenu("E&xplorer", mb)
        for a in (self.act_explorer, self.act_robustness, self.act_latent):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_export)
        m.addAction(self.act_report)
        self.menu = m
        return m

    def _connect(self) -> None:
        w = self.window
        if hasattr(w, "sig_model_loaded"):
            w.sig_model_loaded.connect(self._on_model_loaded)
        if hasattr(w, "sig_session_reopened"):
            w.sig_session_reopened.connect(self._on_session_reopened)
        self.explorer.sig_context_ready.connect(self._on_explorer_context_ready)
        self.explorer.sig_message.connect(self._on_message)
        self.robustness.sig_message.connect(self._on_message)
        self.calibration.sig_message.connect(self._on_message)
        self.pid.sig_message.connect(self._on_message)
        self.robustness.sig_open_sample.connect(self._on_robustness_open_sample)
        self.curves.sig_open_sample.connect(self._on_robustness_open_sample)
        self.curves.sig_message.connect(self._on_message)
        self.robustness.sig_result_ready.connect(self.curves.set_cached)
        self.latent_view.sig_open_sample.connect(self._on_latent_open_sample)
        self.slices.sig_open_sample.connect(self._on_robustness_open_sample)
        self.slices.sig_message.connect(self._on_message)
        ctl = getattr(w, "controller", None)
        if ctl is not None and hasattr(ctl, "sig_stopped"):
            ctl.sig_stopped.connect(self._on_runs_changed)  # a run ended (finished, cancelled or failed)
        w.installEventFilter(self)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # --- window events ----------------------------------------------------------------------------------
    @Slot(object)
    def _on_model_loaded(self, loaded) -> None:
        self.explorer.set_model(loaded)
        self.robustness.class_names = tuple(loaded.info.class_names)
        self.curves.class_names = tuple(loaded.info.class_names)
        self._refresh_runs(loaded)

    def _refresh_runs(self, loaded=None) -> None:
        from .robustness import runs_from_store
        loaded = loaded or getattr(self.window, "current_model", None)
        if loaded is None:
            return
        runs = runs_from_store(getattr(self.window, "store", None), loaded.config.data.dataset, loaded)
        self.robustness.set_runs(runs, loaded.config.data)
        self.curves.set_runs(runs, loaded.config.data)
        self.calibration.set_runs(runs, loaded.config.data)
        self.slices.set_runs(runs)

    @Slot()
    def _on_runs_changed(self) -> None:
        self._refresh_runs()

    @Slot(int)
    def _on_session_reopened(self, run_id: int) -> None:
        self.explorer.session_reopened(run_id)

    @Slot(object)
    def _on_explorer_context_ready(self, ctx) -> None:
        self.latent_view.set_context(ctx.loaded, ctx.bundle)
        self.pid.set_context(ctx.loaded, ctx.bundle)
        self.slices.set_context(ctx.loaded, ctx.bundle, ctx.memory_state)

    @Slot(str, int, tuple)
    def _on_robustness_open_sample(self, split: str, index: int, subset: tuple) -> None:
        from app.core.explorer_state import SampleRef
        self.explorer.open_sample(SampleRef.dataset(split, index), tuple(subset))
        self.window.tabs.setCurrentWidget(self.explorer)

    @Slot(str, int)
    def _on_latent_open_sample(self, split: str, index: int) -> None:
        from app.core.explorer_state import SampleRef
        self.explorer.open_sample(SampleRef.dataset(split, index))
        self.window.tabs.setCurrentWidget(self.explorer)

    @Slot(str, str)
    def _on_message(self, text: str, kind: str) -> None:
        w = self.window
        sb = w.statusBar() if w is not None and hasattr(w, "statusBar") else None
        if sb is not None and text:
            sb.showMessage(text, 8000 if kind != "error" else 15000)

    @Slot()
    def _on_act_explorer_triggered(self) -> None:
        self.window.tabs.setCurrentWidget(self.explorer)

    @Slot()
    def _on_act_robustness_triggered(self) -> None:
        self.window.tabs.setCurrentWidget(self.robustness)

    @Slot()
    def _on_act_latent_triggered(self) -> None:
        self.window.tabs.setCurrentWidget(self.latent_view)

    # --- shutdown ---------------------------------------------------------------------------------------
    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        """Shut down when the window really closes: a Close event (which the window may still refuse, e.g.
        while training) followed by the Hide that an accepted close causes."""
        if obj is not None and obj is self.window:
            t = event.type()
            if t == QEvent.Type.Close:
                self._close_seen = True
            elif t == QEvent.Type.Hide and getattr(self, "_close_seen", False):
                self.shutdown()
            elif t == QEvent.Type.Show:
                self._close_seen = False
        return False

    def shutdown(self) -> None:
        """Save the inspection and stop the explorer's background jobs (bounded waits)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        w = self.window
        if w is not None:
            w.removeEventFilter(self)
        self.explorer.shutdown()
        self.robustness.shutdown()
        self.curves.shutdown()
        self.latent_view.shutdown()
        self.calibration.shutdown()
        self.pid.shutdown()
        self.slices.shutdown()


def install(main_window) -> ExplorerSuite:
    """Create the explorer's panels, add them as tabs of `main_window`, wire the signals."""
    suite = ExplorerSuite(main_window)
    main_window.explorer = suite
    return suite
