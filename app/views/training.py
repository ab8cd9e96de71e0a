"""TrainingPanel: live curves of the current run, its status, progress/ETA, and Stop / Resume.

The panel draws `app.core.state.TrainingBuffers`, which the window fills as the worker's events arrive. A ~20 Hz
QTimer redraws only the plots whose buffer version changed, only while the panel is visible, and thins step
curves to at most `MAX_POINTS` points, so the cost of a redraw does not grow with the length of the run
(ScopeFoundry's "throttle at the edges").

Run alone: `python -m app.views.training` shows the panel fed with synthetic events.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QFrame, QGraphicsItem, QGridLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QProgressBar, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from app.views.common.plot_util import clear_message, fit_title, no_si_prefix, show_message
from ..core.state import TrainingBuffers, format_duration

REDRAW_HZ = 20  # progress bar, labels, and epoch plots when an epoch ended
STEP_PLOT_INTERVAL_S = 0.25  # the step-loss plot at most 4 times a second (a repaint of a plot costs ~10-25 ms)
MAX_POINTS = 1500  # per step curve on screen
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
LOSS_COLORS = {"total": "#222222", "sup": "#1f77b4", "pu": "#d62728", "rec": "#2ca02c", "st": "#9467bd",
               "unsup": "#ff7f0e"}
LOSS_NAMES = {"total": "total L", "sup": "L_sup", "pu": "L_PU", "rec": "L_rec", "st": "L_st", "unsup": "L_u"}
# the validation legend names at most this many curves: the full set, the mean, and the best and worst subsets
# at the last epoch (M = 6 has 63 subsets); every subset is in the list beside the plot
VAL_LEGEND_CAP = 8
VAL_LEGEND_EXTREMES = 3  # best and worst subsets named in a capped legend
NO_RUN = "no run yet"
NO_SOFT_PU = "no soft-PU in this method: κ is recorded by the Robult methods with the soft-PU loss"
STATUS_STYLES = {
    "info": ("#eef3fb", "#2b5797"),
    "ok": ("#eaf6ec", "#1e6b2f"),
    "warning": ("#fff6e0", "#7a5200"),
    "error": ("#fdecec", "#a4161a"),
}

pg.setConfigOptions(antialias=True, background="w", foreground="#333")


def _thin(x: list[float], y: list[float], max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points, always keeping the last one (the curves are already smoothed)."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    n = len(xa)
    if n > max_points:
        stride = int(math.ceil(n / max_points))
        idx = np.arange(0, n, stride)
        if idx[-1] != n - 1:
            idx = np.append(idx, n - 1)
        xa, ya = xa[idx], ya[idx]
    return xa, ya


class StatusPanel(QFrame):
    """A coloured strip with the run's status or error message (selectable text, never a modal)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statusPanel")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 10, 6)
        lay.addWidget(self.label)
        self.kind = "info"
        self.set_message("info", "")

    def set_message(self, kind: str, text: str) -> None:
        self.kind = kind if kind in STATUS_STYLES else "info"
        bg, fg = STATUS_STYLES[self.kind]
        self.setStyleSheet(f"QFrame#statusPanel {{ background: {bg}; border: 1px solid {fg}; border-radius: 4px; }}"
                           f" QLabel {{ color: {fg}; }}")
        self.label.setText(text)
        self.setVisible(bool(text))

    @property
    def text(self) -> str:
        return self.label.text()


class TrainingPanel(QWidget):
    """Live view of one run. The window owns the buffers and fills them; this panel only reads them."""

    def __init__(self, buffers: TrainingBuffers, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.buffers = buffers
        self._drawn_steps = -1
        self._drawn_epochs = -1
        self._last_step_plot = 0.0
        self._epoch_queue: list = []  # epoch plots still to draw, one per tick
        self._epoch_axis_hi: dict[int, tuple[float, float]] = {}
        self._loss_view_user = False  # the user zoomed/panned the loss plot: stop managing its range
        self._loss_x_hi = 0.0
        self._create_header()
        self._create_plots()
        self._create_layout()
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / REDRAW_HZ))
        self.timer.timeout.connect(self._on_timer_timeout)
        self.timer.start()
        self.redraw_count = 0
        self.redraw_time_total = 0.0  # seconds of GUI time spent in redraw() (the benchmark reports it)
        self.redraw_time_max = 0.0

    # --- construction -----------------------------------------------------------------------------------
    def _create_header(self) -> None:
        self.title = QLabel("No run yet — start one with Training › New training run… (Ctrl+N), or open a saved "
                            "model with File › Open model… (Ctrl+O).")
        f = self.title.font()
        f.setPointSizeF(f.pointSizeF() * 1.15)
        f.setBold(True)
        self.title.setFont(f)
        self.title.setWordWrap(True)
        self.status_panel = StatusPanel()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.progress.setTextVisible(True)
        self.progress.setToolTip("Progress of the run (optimizer steps)")
        self.eta_label = QLabel("")
        self.eta_label.setMinimumWidth(230)
        self.eta_label.setToolTip("Elapsed time and an estimate of the time left")
        self.btn_stop = QToolButton()
        self.btn_resume = QToolButton()
        for b in (self.btn_stop, self.btn_resume):
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            b.setMinimumWidth(90)
        self.best_label = QLabel("")
        self.best_label.setToolTip("Best validation score so far (mean over modality subsets of the primary metric)")

    def set_actions(self, stop: QAction, resume: QAction) -> None:
        self.btn_stop.setDefaultAction(stop)
        self.btn_resume.setDefaultAction(resume)

    def _plot(self, title: str, xlabel: str, ylabel: str) -> pg.PlotWidget:
        w = pg.PlotWidget()
        fit_title(w, title, size="10pt")
        w.setLabel("bottom", xlabel)
        w.setLabel("left", ylabel)
        w.showGrid(x=True, y=True, alpha=0.25)
        w.setMinimumHeight(180)
        w.setMenuEnabled(True)
        for side in ("left", "bottom", "top", "right"):
            axis = w.getAxis(side)
            no_si_prefix(axis)  # "accuracy (x0.001)" helps nobody
            # repaint an axis only when it changes: a curve's update region touches the axes, and replaying
            # their tick labels was most of the cost of a frame
            axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        w.getPlotItem().titleLabel.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        return w

    @staticmethod
    def _legend(plot: pg.PlotWidget, offset: tuple[int, int], columns: int = 1) -> None:
        plot.addLegend(offset=offset, labelTextSize="8pt", colCount=columns, brush=pg.mkBrush(255, 255, 255, 210),
                       pen=pg.mkPen("#bbb"))

    def _create_val_box(self) -> None:
        """The validation plot with, beside it, the list of every subset (shown on demand: at M = 6 a legend of
        63 entries would hide the plot) and, under it, what the capped legend names."""
        self.val_list = QListWidget()
        self.val_list.setToolTip("Every modality subset: its validation metric at the last epoch. Select one to "
                                 "draw its curve thicker.")
        self.val_list.setMaximumWidth(210)
        self.val_list.setVisible(False)
        self.val_list.currentItemChanged.connect(self._on_val_list_current_changed)
        self.val_legend_note = QLabel("")
        self.val_legend_note.setStyleSheet("color:#606060")
        self.val_legend_note.setWordWrap(True)
        self.val_list_btn = QToolButton()
        self.val_list_btn.setCheckable(True)
        self.val_list_btn.setText("All subsets ▸")
        self.val_list_btn.setToolTip("List every modality subset beside the plot")
        self.val_list_btn.toggled.connect(self._on_val_list_btn_toggled)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.val_legend_note, 1)
        bar.addWidget(self.val_list_btn)
        self.val_legend_bar = QWidget()
        self.val_legend_bar.setLayout(bar)
        self.val_legend_bar.setVisible(False)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.plot_val, 1)
        row.addWidget(self.val_list)
        self.val_box = QWidget()
        col = QVBoxLayout(self.val_box)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(2)
        col.addLayout(row, 1)
        col.addWidget(self.val_legend_bar)

    def _create_plots(self) -> None:
        self.plot_losses = self._plot("Training losses (per step, smoothed)", "epoch", "loss")
        self._legend(self.plot_losses, (-10, 10))
        self.plot_losses.getViewBox().sigRangeChangedManually.connect(self._on_loss_view_range_changed_manually)
        self.plot_val = self._plot("Validation metric per modality subset", "epoch", "metric")
        self._legend(self.plot_val, (-10, -10), columns=2)
        self.plot_norms = self._plot("Latent norms per modality: ‖Z‖ solid, ‖U‖ dashed", "epoch", "mean norm")
        self._legend(self.plot_norms, (-10, -10), columns=3)
        self.plot_kappa = self._plot("Soft-PU weight κ of unlabeled pairs (histogram per epoch) and its quality",
                                     "epoch", "κ")
        self.plot_kappa.showGrid(x=False, y=False)
        self.kappa_image = pg.ImageItem(axisOrder="row-major")
        self.plot_kappa.addItem(self.kappa_image)
        cmap = pg.colormap.get("viridis")
        self.kappa_image.setColorMap(cmap)
        self.kappa_bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=cmap, interactive=False, width=12,
                                         label="share of pairs", colorMapMenu=False)
        self.kappa_bar.setImageItem(self.kappa_image, insert_in=self.plot_kappa.getPlotItem())
        self.plot_kappa.setYRange(0, 1, padding=0)
        self.plot_kappa.setXRange(0, 1)
        # how good κ was (against the unlabeled samples' true labels, where the data carry them): lines over the
        # histogram, same 0..1 axis
        self.kappa_legend = self.plot_kappa.addLegend(offset=(8, -8), labelTextColor="#fff", brush=(0, 0, 0, 110))
        self.kappa_precision_curve = self.plot_kappa.plot(
            [], [], pen=pg.mkPen("#ffffff", width=2), symbol="o", symbolSize=5, symbolBrush="#ffffff",
            name="precision of κ-weighted positives")
        self.kappa_auc_curve = self.plot_kappa.plot(
            [], [], pen=pg.mkPen("#ff9f1c", width=2, style=Qt.PenStyle.DashLine), symbol="t", symbolSize=6,
            symbolBrush="#ff9f1c", name="AUC of κ for right pseudo-labels")
        self.kappa_legend.setVisible(False)
        self.loss_curves: dict[str, pg.PlotDataItem] = {}
        self.val_curves: dict[str, pg.PlotDataItem] = {}
        self.score_curve: pg.PlotDataItem | None = None
        self.best_marker = pg.ScatterPlotItem(size=11, symbol="star", brush=pg.mkBrush("#f5b800"),
                                              pen=pg.mkPen("#7a5c00"))
        self.best_marker.setZValue(50)  # over every curve
        self.plot_val.addItem(self.best_marker)
        self.val_legend_keys: tuple[str, ...] = ()  # the curves the validation legend names now
        self._val_legend_entries: tuple[str, ...] = ()
        self._val_legend_corner = (1, 1)
        self._val_pens: dict[str, object] = {}
        self.plot_val.getViewBox().sigRangeChanged.connect(self._place_val_legend)
        self.plot_val.getViewBox().sigResized.connect(self._place_val_legend)
        self.norm_curves: dict[str, pg.PlotDataItem] = {}
        self._create_val_box()

    def _create_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.progress, 1)
        top.addWidget(self.eta_label)
        top.addWidget(self.best_label)
        top.addWidget(self.btn_stop)
        top.addWidget(self.btn_resume)
        grid = QGridLayout()
        grid.setSpacing(6)
        grid.addWidget(self.plot_losses, 0, 0)
        grid.addWidget(self.val_box, 0, 1)
        grid.addWidget(self.plot_norms, 1, 0)
        grid.addWidget(self.plot_kappa, 1, 1)
        lay = self._layout = QVBoxLayout(self)
        lay.addWidget(self.title)
        lay.addWidget(self.status_panel)
        lay.addLayout(top)
        lay.addLayout(grid, 1)
        self.status_panel.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    def add_queue_view(self, view: QWidget) -> None:
        """The run queue's list (app/views/training_queue.py) between the progress row and the plots; it shows
        itself only while an entry waits or a sweep runs."""
        self._layout.insertWidget(3, view)
        refresh = getattr(view, "refresh", None)
        if refresh is not None:
            refresh()

    # --- API ----------------------------------------------------------------------------------------------
    def set_title(self, text: str) -> None:
        self.title.setText(text)

    def set_status(self, kind: str, text: str) -> None:
        self.status_panel.set_message(kind, text)

    def reset(self) -> None:
        """Forget everything drawn (the buffers were cleared or replaced)."""
        for d in (self.loss_curves, self.val_curves, self.norm_curves):
            for item in d.values():
                item.getViewBox().removeItem(item) if item.getViewBox() else None
            d.clear()
        for plot in (self.plot_losses, self.plot_val, self.plot_norms):
            legend = plot.getPlotItem().legend
            if legend is not None:
                legend.clear()
        if self.score_curve is not None:
            self.plot_val.removeItem(self.score_curve)
            self.score_curve = None
        self.best_marker.setData([], [])
        self.val_legend_keys = ()
        self._val_legend_entries = ()
        self._val_pens.clear()
        self.val_list.clear()
        self.val_legend_bar.setVisible(False)
        self.val_list.setVisible(False)
        self.val_list_btn.setChecked(False)
        self.kappa_image.clear()
        self.kappa_precision_curve.setData([], [])
        self.kappa_auc_curve.setData([], [])
        self.kappa_legend.setVisible(False)
        self._drawn_steps = self._drawn_epochs = -1
        self._loss_view_user = False
        self._loss_x_hi = 0.0
        self._epoch_axis_hi.clear()
        self.plot_losses.getViewBox().enableAutoRange()
        self.redraw(force=True)

    def curve_colours(self) -> dict[str, str]:
        """The pen colour of each validation and norm curve (tests read this)."""
        return {f"{prefix}:{k}": item.opts["pen"].color().name() for prefix, d in
                (("val", self.val_curves), ("norm", self.norm_curves)) for k, item in d.items()}

    def curve_point_counts(self) -> dict[str, int]:
        """Points currently set on each curve (tests and the benchmark read this)."""
        out = {}
        for prefix, d in (("loss", self.loss_curves), ("val", self.val_curves), ("norm", self.norm_curves)):
            for k, item in d.items():
                x, _ = item.getData()
                out[f"{prefix}:{k}"] = 0 if x is None else len(x)
        img = self.kappa_image.image
        out["kappa:epochs"] = 0 if img is None else int(img.shape[1] if img.ndim == 2 else 0)
        for key, curve in (("kappa:precision", self.kappa_precision_curve), ("kappa:auc", self.kappa_auc_curve)):
            xs = curve.getData()[0]
            out[key] = 0 if xs is None else len(xs)
        return out

    # --- drawing ----------------------------------------------------------------------------------------
    @Slot()
    def _on_timer_timeout(self) -> None:
        if self.isVisible():
            self.redraw()

    def redraw(self, force: bool = False) -> None:
        t0 = time.perf_counter()
        try:
            self._redraw(force)
        finally:
            dt = time.perf_counter() - t0
            self.redraw_time_total += dt
            self.redraw_time_max = max(self.redraw_time_max, dt)

    def _redraw(self, force: bool) -> None:
        """One frame. An ended epoch touches three plots; they are drawn on three successive ticks, so Qt paints
        one plot per pass and the event loop runs in between (painting all three at once blocked it for
        ~100 ms). `force` draws everything at once (tests, a reopened run)."""
        b = self.buffers
        if force:
            self._epoch_queue = []
            self._drawn_steps, self._drawn_epochs = b.version_steps, b.version_epochs
            self._last_step_plot = time.perf_counter()
            self._draw_steps()
            self._draw_val()
            self._draw_norms()
            self._draw_kappa()
            self._draw_progress()
            return
        if b.version_epochs != self._drawn_epochs:
            self._drawn_epochs = b.version_epochs
            self._epoch_queue = [self._draw_val, self._draw_norms, self._draw_kappa]
            self._draw_progress()
        if self._epoch_queue:
            self._epoch_queue.pop(0)()
            return
        if b.version_steps != self._drawn_steps:
            now = time.perf_counter()
            if now - self._last_step_plot >= STEP_PLOT_INTERVAL_S:
                self._last_step_plot = now
                self._drawn_steps = b.version_steps
                self._draw_steps()
            self._draw_progress()
        self.redraw_count += 1

    def _draw_progress(self) -> None:
        b = self.buffers
        frac = b.progress
        if not b.total_steps and b.epochs_planned:  # a stored run: no steps, only epochs
            frac = min(1.0, len(b.epoch_x) / b.epochs_planned)
        if b.outcome:
            self.progress.setValue(1000 if b.outcome_complete else int(round(frac * 1000)))
            self.progress.setFormat(b.outcome)
        elif b.total_steps:
            epoch_now = min(b.epochs_planned, int(b.global_step * b.epochs_planned / max(1, b.total_steps)) + 1) \
                if b.epochs_planned else 0
            self.progress.setValue(int(round(frac * 1000)))
            self.progress.setFormat(f"{frac:.0%} — step {b.global_step:,}/{b.total_steps:,}"
                                    + (f", epoch {epoch_now}/{b.epochs_planned}" if b.epochs_planned else ""))
        else:
            self.progress.setValue(0)
            self.progress.setFormat("")
        eta = None if b.outcome else b.eta_s()
        text = f"elapsed {format_duration(b.elapsed_s)}" if b.elapsed_s else ""
        if eta is not None and frac < 1:
            text += f" · ETA {format_duration(eta)}"
        self.eta_label.setText(text)
        if b.best_epoch >= 0 and math.isfinite(b.best_score):
            self.best_label.setText(f"best {b.best_score:.3f} @ epoch {b.best_epoch + 1}")
        else:
            self.best_label.setText("")

    @Slot()
    def _on_loss_view_range_changed_manually(self) -> None:
        self._loss_view_user = True

    def _empty_text(self, what: str) -> str:
        """Why a plot of the run has no data yet ("" when the run has some)."""
        b = self.buffers
        if not b.step_x and not b.epoch_x:
            return NO_RUN
        if not b.epoch_x:
            return f"no {what} yet: it appears when the first epoch ends"
        return ""

    def _draw_steps(self) -> None:
        b = self.buffers
        if not b.step_x:
            show_message(self.plot_losses, NO_RUN if not b.epoch_x else "no per-step losses: a stored run keeps "
                                                                        "its epochs only")
            return
        clear_message(self.plot_losses)
        lo, hi = math.inf, -math.inf
        for k, series in b.step_smoothed.items():
            item = self.loss_curves.get(k)
            if item is None:
                width = 2.4 if k == "total" else 1.6
                item = self.plot_losses.plot([], [], pen=pg.mkPen(LOSS_COLORS.get(k, "#555"), width=width),
                                             name=LOSS_NAMES.get(k, k))
                self.loss_curves[k] = item
            x, y = _thin(b.step_x, series)
            item.setData(x, y, connect="finite")
            fin = y[np.isfinite(y)]
            if fin.size:
                lo, hi = min(lo, float(fin.min())), max(hi, float(fin.max()))
        if not self._loss_view_user and b.step_x:
            self._fit_loss_view(lo, hi)

    def _fit_loss_view(self, lo: float, hi: float) -> None:
        """Keep the axes still while the run goes on: x spans the planned epochs, y changes only when the curves
        leave the view or use less than half of it. A changing range repaints the axes, the dearest part of a
        frame; pyqtgraph's auto-range would change it on every new point."""
        vb = self.plot_losses.getViewBox()
        b = self.buffers
        x_hi = b.step_x[-1] if b.outcome else max(float(b.epochs_planned or 0), b.step_x[-1])
        if x_hi != self._loss_x_hi:
            self._loss_x_hi = x_hi
            vb.setXRange(0.0, x_hi, padding=0.02)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return
        y0, y1 = vb.viewRange()[1]
        span = max(hi - lo, 1e-6)
        if lo < y0 or hi > y1 or span < 0.5 * (y1 - y0):
            pad = 0.08 * span
            vb.setYRange(lo - pad, hi + pad, padding=0)

    def _hold_epoch_axis(self, plot: pg.PlotWidget, x0: float = 0.0) -> None:
        """All plots share one still x axis: the planned epochs (a growing range re-renders the axis on every
        epoch, and that was most of an epoch-end frame)."""
        b = self.buffers
        last = b.epoch_x[-1] if b.epoch_x else 0.0
        # while it runs: the plan (still); once it ended (or a stored run): just the epochs it has
        hi = float(max(last if b.outcome else b.epochs_planned, last, 1))
        key = id(plot)
        if self._epoch_axis_hi.get(key) != (x0, hi):
            self._epoch_axis_hi[key] = (x0, hi)
            plot.getViewBox().setXRange(x0, hi, padding=0.02)

    def _draw_val(self) -> None:
        b = self.buffers
        x = np.asarray(b.epoch_x, dtype=float)
        empty = self._empty_text("validation metric")
        if empty or not b.val_metric:
            show_message(self.plot_val, empty or "no validation metric recorded")
            return
        clear_message(self.plot_val)
        self._hold_epoch_axis(self.plot_val)
        if b.metric_name:
            fit_title(self.plot_val, f"Validation {b.metric_name} per modality subset (★ best)", size="10pt")
            self.plot_val.setLabel("left", b.metric_name)
        for i, subset in enumerate(b.subset_order()):  # colour by the subset's place, not by arrival order
            series = b.val_metric[subset]
            item = self.val_curves.get(subset)
            if item is None:
                n_mod = subset.count("+") + 1
                color = PALETTE[i % len(PALETTE)]
                pen = pg.mkPen(color, width=1.0 + 0.6 * n_mod)
                item = self.plot_val.plot([], [], pen=pen, symbol="o", symbolSize=4, symbolBrush=color,
                                          symbolPen=None)
                self.val_curves[subset] = item
                self._val_pens[subset] = pen
            item.setData(x, np.asarray(series, dtype=float), connect="finite")
        if b.val_score:
            if self.score_curve is None:
                self.score_curve = self.plot_val.plot([], [], pen=pg.mkPen("#000", width=2.5,
                                                                           style=Qt.PenStyle.DashLine))
            self.score_curve.setData(x, np.asarray(b.val_score, dtype=float), connect="finite")
            if b.best_epoch >= 0 and math.isfinite(b.best_score):
                self.best_marker.setData([b.best_epoch + 1.0], [b.best_score])
        self._update_val_legend()

    # --- the validation legend --------------------------------------------------------------------------
    def val_last_values(self) -> dict[str, float]:
        """Each subset's validation metric at the last epoch where it has a finite value (NaN without one)."""
        out = {}
        for subset in self.buffers.subset_order():
            vals = [v for v in self.buffers.val_metric[subset] if v is not None and math.isfinite(v)]
            out[subset] = float(vals[-1]) if vals else float("nan")
        return out

    def val_legend_choice(self) -> tuple[str, ...]:
        """The subsets the legend names: all of them when they fit VAL_LEGEND_CAP (with the mean), else the full
        set and the best and worst VAL_LEGEND_EXTREMES subsets at the last epoch."""
        order = self.buffers.subset_order()
        if len(order) + 1 <= VAL_LEGEND_CAP:
            return tuple(order)
        from robult_engine.metrics import HIGHER_IS_BETTER
        full = max(order, key=lambda k: k.count("+"))
        last = self.val_last_values()
        ranked = [k for k in sorted(order, key=lambda k: last[k], reverse=HIGHER_IS_BETTER.get(
            self.buffers.metric_name, True)) if k != full and math.isfinite(last[k])]
        k = VAL_LEGEND_EXTREMES
        best, worst = ranked[:k], [s for s in reversed(ranked[-k:]) if s not in ranked[:k]]
        return (full, *best, *worst)

    def _update_val_legend(self) -> None:
        legend = self.plot_val.getPlotItem().legend
        keys = tuple(k for k in self.val_legend_choice() if k in self.val_curves)
        capped = len(keys) < len(self.val_curves)
        last = self.val_last_values()
        # a capped legend says each named subset's last value (the best and worst change over the epochs)
        labels = tuple(k if not capped or i == 0 else f"{k} ({last[k]:.3f})" for i, k in enumerate(keys))
        entries = labels + (("val score (mean)",) if self.score_curve is not None else ())
        if legend is not None and entries != self._val_legend_entries:
            legend.clear()
            for k, label in zip(keys, labels):
                legend.addItem(self.val_curves[k], label)
            if self.score_curve is not None:
                legend.addItem(self.score_curve, "val score (mean)")
        self._val_legend_entries = entries
        self.val_legend_keys = keys
        n = len(self.val_curves)
        self.val_legend_bar.setVisible(capped)
        if capped:
            k = VAL_LEGEND_EXTREMES
            self.val_legend_note.setText(f"Legend: all modalities, the mean, the {k} best and {k} worst of the {n} "
                                         f"subsets at the last epoch.")
            self.val_list_btn.setText(f"All {n} subsets ▾" if self.val_list_btn.isChecked() else
                                      f"All {n} subsets ▸")
        self._fill_val_list()
        self._place_val_legend()

    def _fill_val_list(self) -> None:
        if not self.val_list.isVisible() and not self.val_list_btn.isChecked():
            return
        last = self.val_last_values()
        current = self.val_list.currentItem()
        keep = current.data(Qt.ItemDataRole.UserRole) if current is not None else None
        self.val_list.blockSignals(True)
        self.val_list.clear()
        for subset, v in last.items():
            pen = self._val_pens.get(subset)
            item = QListWidgetItem(f"{subset}  {v:.3f}" if math.isfinite(v) else f"{subset}  –")
            item.setData(Qt.ItemDataRole.UserRole, subset)
            if pen is not None:
                pm = QPixmap(12, 12)
                pm.fill(QColor(pen.color()))
                item.setIcon(QIcon(pm))
            self.val_list.addItem(item)
            if subset == keep:
                self.val_list.setCurrentItem(item)
        self.val_list.blockSignals(False)

    @Slot(bool)
    def _on_val_list_btn_toggled(self, on: bool) -> None:
        self.val_list.setVisible(on)
        n = len(self.val_curves)
        self.val_list_btn.setText(f"All {n} subsets ▾" if on else f"All {n} subsets ▸")
        if on:
            self._fill_val_list()

    @Slot(object, object)
    def _on_val_list_current_changed(self, current, previous) -> None:
        for item, wide in ((previous, False), (current, True)):
            if item is None:
                continue
            subset = item.data(Qt.ItemDataRole.UserRole)
            curve, pen = self.val_curves.get(subset), self._val_pens.get(subset)
            if curve is None or pen is None:
                continue
            curve.setPen(pg.mkPen(pen.color(), width=pen.widthF() + 2.5) if wide else pen)
            curve.setZValue(20 if wide else 0)

    def best_marker_point(self) -> tuple[float, float] | None:
        """The ★ (best epoch, best score) in view coordinates, None when not drawn."""
        x, y = self.best_marker.getData()
        if x is None or not len(x):
            return None
        return float(x[0]), float(y[0])

    @Slot()
    def _place_val_legend(self, *_args) -> None:
        """Keep the ★ in view: the legend goes to the first corner of the plot (bottom right, top right, top left,
        bottom left) where it does not cover the best epoch's marker."""
        legend = self.plot_val.getPlotItem().legend
        if legend is None:
            return
        vb = self.plot_val.getViewBox()
        area = vb.sceneBoundingRect()
        size = legend.boundingRect()
        star = self.best_marker_point()
        star_at = vb.mapViewToScene(pg.Point(*star)) if star is not None else None
        pad = 10.0
        corner = (1, 1)
        for cx, cy in ((1, 1), (1, 0), (0, 0), (0, 1)):
            left = area.left() + pad if cx == 0 else area.right() - pad - size.width()
            top = area.top() + pad if cy == 0 else area.bottom() - pad - size.height()
            if star_at is None or not QRectF(left, top, size.width(), size.height()).adjusted(
                    -8, -8, 8, 8).contains(star_at):
                corner = (cx, cy)
                break
        if corner == self._val_legend_corner:
            return
        self._val_legend_corner = corner
        cx, cy = corner
        legend.anchor(itemPos=(cx, cy), parentPos=(cx, cy), offset=(-pad if cx else pad, -pad if cy else pad))

    def _draw_norms(self) -> None:
        b = self.buffers
        x = np.asarray(b.epoch_x, dtype=float)
        empty = self._empty_text("latent norms")
        if empty or not (b.z_norm or b.u_norm):
            show_message(self.plot_norms, empty or "no latent norms recorded")
            return
        clear_message(self.plot_norms)
        self._hold_epoch_axis(self.plot_norms)
        for i, mod in enumerate(b.modality_order()):  # colour by modality index: stable across a resume
            color = PALETTE[i % len(PALETTE)]
            for kind, series, style in (("Z", b.z_norm, Qt.PenStyle.SolidLine), ("U", b.u_norm, Qt.PenStyle.DashLine)):
                if mod not in series:
                    continue
                key = f"{kind}:{mod}"
                item = self.norm_curves.get(key)
                if item is None:
                    # one legend entry per modality (its colour); the title says solid ‖Z‖, dashed ‖U‖
                    named = kind == "Z" or mod not in b.z_norm
                    item = self.plot_norms.plot([], [], pen=pg.mkPen(color, width=2, style=style), symbol="o",
                                                symbolSize=4, symbolBrush=color, symbolPen=None,
                                                name=mod if named else None)
                    self.norm_curves[key] = item
                item.setData(x, np.asarray(series[mod], dtype=float), connect="finite")

    def _draw_kappa(self) -> None:
        b = self.buffers
        if not b.kappa_hists:
            # nothing of an earlier run stays behind: no image, no epoch axis, no colour scale, no quality lines
            self.kappa_image.clear()
            self.kappa_bar.setLevels((0.0, 1.0))
            self._epoch_axis_hi.pop(id(self.plot_kappa), None)
            self.plot_kappa.getViewBox().setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            self._draw_kappa_quality()
            show_message(self.plot_kappa, self._empty_text("κ") or NO_SOFT_PU, hide=(self.kappa_bar,))
            return
        clear_message(self.plot_kappa)
        self._draw_kappa_quality()
        img = np.asarray(b.kappa_hists, dtype=float).T  # (bins, epochs): rows are κ bins
        n_bins, n_ep = img.shape
        edges = b.kappa_edges or tuple(i / n_bins for i in range(n_bins + 1))
        x0 = b.kappa_epochs[0] - 1.0
        top = max(1e-9, float(img.max()))
        self.kappa_image.setImage(img, autoLevels=False, levels=(0.0, top))
        self.kappa_bar.setLevels((0.0, top))
        self.kappa_image.setRect(QRectF(x0, edges[0], float(n_ep), edges[-1] - edges[0]))
        self.plot_kappa.setYRange(0, 1, padding=0)
        self._hold_epoch_axis(self.plot_kappa, x0=min(x0, 0.0))

    def _draw_kappa_quality(self) -> None:
        """The precision and AUC of κ per epoch, at the middle of each epoch's histogram column; hidden (with
        their legend) where no epoch measured them (other methods, multi-label, data without true labels)."""
        b = self.buffers
        x = np.asarray(b.epoch_x, dtype=float) - 0.5
        shown = False
        for curve, values in ((self.kappa_precision_curve, b.kappa_precision), (self.kappa_auc_curve, b.kappa_auc)):
            y = np.asarray(values[:len(x)], dtype=float)
            ok = np.isfinite(y)
            curve.setData(x[:len(y)][ok], y[ok])
            shown = shown or bool(ok.any())
        self.kappa_legend.setVisible(shown)


def _demo() -> int:  # pragma: no cover - manual check
    import sys

    from PySide6.QtWidgets import QApplication

    from robult_engine.events import EpochEnded, StepEnded
    app = QApplication(sys.argv)
    from ..background import gc_policy
    gc_policy.install()
    buf = TrainingBuffers()
    buf.set_plan(12)
    panel = TrainingPanel(buf)
    panel.resize(1200, 800)
    panel.set_title("Demo run — robult · pid-synth")
    panel.set_status("info", "Training (synthetic events)…")
    rng = np.random.default_rng(0)
    state = {"step": 0}
    steps_per_epoch = 40

    def tick() -> None:
        s = state["step"]
        if s >= 12 * steps_per_epoch:
            return
        e, k = divmod(s, steps_per_epoch)
        t = s / 100
        buf.add_step(StepEnded(e, k, s + 1, 12 * steps_per_epoch,
                               {"sup": 2 * math.exp(-t) + 0.1 * rng.random(), "pu": 4 * math.exp(-t / 2) + 1,
                                "rec": 0.5 * math.exp(-t) + 0.05, "total": 6 * math.exp(-t) + 1.2}, 1e-3, s * 0.05))
        if k == steps_per_epoch - 1:
            acc = 1 - 0.8 * math.exp(-e / 3)
            h = np.exp(-((np.arange(20) - 4 - e) ** 2) / 8)
            buf.add_epoch_event(EpochEnded(e, 12, {"total": 1.0}, {"m0": {"accuracy": acc * 0.8},
                                                                  "m1": {"accuracy": acc * 0.7},
                                                                  "m0+m1": {"accuracy": acc}}, acc * 0.83, True,
                                           {"m0": 2 + e / 5, "m1": 2.5}, {"m0": 1, "m1": 1 + e / 10}, {},
                                           tuple(h / h.sum()), tuple(i / 20 for i in range(21)), 0.5, 0.5, s * 0.05),
                                "accuracy")
        state["step"] += 1

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(5)
    panel.show()
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_demo())
