"""AnalysisTabs: builds the analysis tabs and wires them to each other; MainWindow places them and wires them to
the Explorer tab, the current model and the session's runs.

    Robustness    RobustnessPanel: metric per modality subset × run of the session, flipped samples; its second
                  view is MissingCurvesPanel (metric against the missing rate η of one mechanism)
    Latent space  LatentViewPanel: PCA of Z and U, click a point to open its sample
    Calibration   CalibrationPanel: reliability diagrams and ECE / Brier / NLL per subset, mean |φ| per run
    Dataset PID   DatasetPIDPanel: R / U1 / U2 / S per modality pair beside the model's ‖Z‖ / ‖U‖ and |φ|
    Slices        SlicesView: where the model fails, slices of the test split
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal, Slot

from app.views.analysis.calibration_panel import CalibrationPanel
from app.views.analysis.latent_view import LatentViewPanel
from app.views.analysis.missing_curves import MissingCurvesPanel
from app.views.analysis.robustness_panel import RobustnessPanel
from app.views.analysis.slices_view import SlicesView
from app.views.analysis.pid_panel import DatasetPIDPanel

# (attribute, tab title, tooltip), in tab order
TABS = (("robustness", "Robustness", "Every modality subset × every run of the session (Ctrl+4)"),
        ("latent_view", "Latent space", "PCA of the redundant and unique latents (Ctrl+5)"),
        ("calibration", "Calibration", "Reliability diagrams per modality subset, ECE / Brier / NLL, and the "
                                       "attribution summary of every run"),
        ("pid", "Dataset PID", "The dataset's redundancy / uniqueness / synergy per modality pair beside the "
                               "model's Z/U split"),
        ("slices", "Slices", "Where the model fails: the groups of test samples (modality present / masked / "
                             "absent, class, confidence, …) with the highest error"))


class AnalysisTabs(QObject):
    """The analysis tabs of one window. Widgets only: the runs, the model and its context come from MainWindow."""

    sig_open_sample = Signal(str, int, tuple)  # split, index, the modality mask to show (empty: as it is)
    sig_message = Signal(str, str)  # text, kind

    def __init__(self, bundle_getter: Callable | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.robustness = RobustnessPanel(bundle_getter=bundle_getter)
        self.curves = MissingCurvesPanel(bundle_getter=bundle_getter)  # a view of the Robustness tab
        self.robustness.views.addTab(self.curves, "Missing-rate curves")
        self.latent_view = LatentViewPanel()
        self.calibration = CalibrationPanel(bundle_getter=bundle_getter)
        self.pid = DatasetPIDPanel()
        self.slices = SlicesView(bundle_getter=bundle_getter)
        for panel in (self.robustness, self.curves, self.calibration, self.pid, self.slices):
            panel.sig_message.connect(self.sig_message)
        for panel in (self.robustness, self.curves, self.slices):
            panel.sig_open_sample.connect(self.sig_open_sample)
        self.latent_view.sig_open_sample.connect(self._on_latent_open_sample)
        self.robustness.sig_result_ready.connect(self.curves.set_cached)

    def tabs(self) -> list[tuple[str, object, str]]:
        """(title, widget, tooltip) of each tab, in order."""
        return [(title, getattr(self, attr), tip) for attr, title, tip in TABS]

    def widgets(self) -> tuple:
        return tuple(getattr(self, attr) for attr, _, _ in TABS)

    def set_model(self, loaded) -> None:
        names = tuple(loaded.info.class_names)
        self.robustness.class_names = names
        self.curves.class_names = names

    def set_runs(self, runs: list, data_cfg) -> None:
        """The session's runs on the current model's dataset (app.core.analysis.robustness.runs_from_store)."""
        self.robustness.set_runs(runs, data_cfg)
        self.curves.set_runs(runs, data_cfg)
        self.calibration.set_runs(runs, data_cfg)
        self.slices.set_runs(runs)

    def set_context(self, ctx) -> None:
        """The current model's ModelContext (app.core.analysis.context), once the explorer has prepared it."""
        self.latent_view.set_context(ctx.loaded, ctx.bundle)
        self.pid.set_context(ctx.loaded, ctx.bundle)
        self.slices.set_context(ctx.loaded, ctx.bundle, ctx.memory_state)

    @Slot(str, int)
    def _on_latent_open_sample(self, split: str, index: int) -> None:
        self.sig_open_sample.emit(split, index, ())

    def shutdown(self) -> None:
        """Stop every tab's background jobs (bounded waits)."""
        for panel in (self.robustness, self.curves, self.latent_view, self.calibration, self.pid, self.slices):
            panel.shutdown()
