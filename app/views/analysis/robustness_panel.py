"""RobustnessPanel: a heat map of the metric for every modality subset (rows) × every run of the session on the
same dataset (columns: Robult, its ablations, the baselines), computed in the background with progress and
cancel. Click a cell to list the samples whose prediction flips under that subset (vs all modalities); click
one of them to open it in the explorer with that subset switched on.

Run alone: `python -m app.views.analysis.robustness_panel` shows it on a synthetic result.
"""
from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, Qt, Signal, Slot
from PySide6.QtGui import QPainter, QPen
from PySide6.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QScrollArea, QSizePolicy, QSplitter, QTabWidget, QToolTip, QVBoxLayout,
                               QWidget)

from robult_engine.metrics import HIGHER_IS_BETTER

from app.background.runner import WorkRunner

from app.views.common.plot_util import clear_message, show_message
from app.views.common import style
from app.views.common.export import export_plot
from app.core.analysis.tables import safe_name, write_csv, write_json
from app.views.common.job_controls import JobControls, JobOwner
from app.core.analysis.robustness import RobustnessResult, RunRef, compute_robustness
from app.core.analysis.task_language import MAX_FLIPS_LISTED, flip_item, flip_rule, listed_note


def color_range(metric: str, mat: np.ndarray) -> tuple[float, float]:
    """The heat map's colour scale: the metric's own range, not the matrix's min and max (so 0.986 and 1.000
    look nearly alike, as they are): [0, 1] for accuracies, F1 and AUROC, [-1, 1] for a correlation, and
    [0, the largest value] for an error such as MAE, which has no upper bound."""
    if metric == "pearson_r":
        return -1.0, 1.0
    if HIGHER_IS_BETTER.get(metric, True):
        return 0.0, 1.0
    finite = mat[np.isfinite(mat)]
    top = float(finite.max()) if finite.size else 1.0
    return 0.0, top if top > 0 else 1.0



def matrix_colormap(better_high: bool) -> "pg.ColorMap":
    """Viridis, reversed where lower is better (bright = good either way: a low error is bright). Always a new
    ColorMap: `pg.colormap.get` hands out one cached object per name, and reversing that in place turned every
    later viridis in the process (the next higher-is-better matrix included) bright-is-worse."""
    stops, colors = pg.colormap.get("viridis").getStops()
    cmap = pg.ColorMap(stops.copy(), colors.copy())
    if not better_high:
        cmap.reverse()
    return cmap

def run_tags(runs) -> list[str]:
    """Short, unique column tags of the runs: "#id" (the session's run number) or, without ids, "R1", "R2", …"""
    ids = [r.run_id for r in runs]
    if all(i is not None for i in ids) and len(set(ids)) == len(ids):
        return [f"#{i}" for i in ids]
    return [f"R{j + 1}" for j in range(len(runs))]


def run_names(runs) -> list[str]:
    """A run's full label after its tag (the label "#3 robult" of run 3 is "robult" after the tag "#3")."""
    out = []
    for tag, r in zip(run_tags(runs), runs):
        label = r.label
        out.append(label[len(tag):].strip() if label.startswith(tag + " ") else label)
    return out


class RunHeader(QWidget):
    """The column header of the heat map, outside its scroll area (so it stays in view over 63 subset rows):
    each run's tag and name over its own column, elided to the column's width, the full label in a tooltip."""

    def __init__(self, plot: pg.PlotWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = plot
        self.labels: list[str] = []  # full labels, one per column
        self.tags: list[str] = []
        self.names: list[str] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self.fontMetrics().height() + 8)
        self.setMouseTracking(True)
        vb = plot.getPlotItem().getViewBox()
        vb.sigResized.connect(self.update)
        vb.sigRangeChanged.connect(self.update)

    def set_runs(self, runs) -> None:
        self.labels = [r.label for r in runs]
        self.tags = run_tags(runs)
        self.names = run_names(runs)
        self.update()

    def columns(self) -> list[QRect]:
        """Each run's column, in this widget's coordinates (where the heat map draws it)."""
        vb = self.plot.getPlotItem().getViewBox()
        view = self.plot.viewport()
        out = []
        for j in range(len(self.labels)):
            a = self.plot.mapFromScene(vb.mapViewToScene(QPointF(j, 0)))
            b = self.plot.mapFromScene(vb.mapViewToScene(QPointF(j + 1, 0)))
            left = self.mapFromGlobal(view.mapToGlobal(QPoint(min(a.x(), b.x()), 0))).x()
            right = self.mapFromGlobal(view.mapToGlobal(QPoint(max(a.x(), b.x()), 0))).x()
            out.append(QRect(left, 0, max(1, right - left), self.height()))
        return out

    def shown_texts(self) -> list[str]:
        """What each column shows: "tag name", elided to the column's width."""
        fm = self.fontMetrics()
        return [fm.elidedText(f"{tag} {name}".strip(), Qt.TextElideMode.ElideRight, max(8, r.width() - 6))
                for tag, name, r in zip(self.tags, self.names, self.columns())]

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        if not self.labels:
            return
        painter = QPainter(self)
        text_pen, rule_pen = QPen(pg.mkColor("#202020")), QPen(pg.mkColor("#B0B0B0"))
        for r, text in zip(self.columns(), self.shown_texts()):
            painter.setPen(text_pen)
            painter.drawText(r.adjusted(3, 0, -3, 0), Qt.AlignmentFlag.AlignCenter, text)
            painter.setPen(rule_pen)
            painter.drawLine(r.bottomLeft() + QPoint(2, 0), r.bottomRight() - QPoint(2, 0))
        painter.end()

    def event(self, ev) -> bool:
        if ev.type() == QEvent.Type.ToolTip:
            for r, label in zip(self.columns(), self.labels):
                if r.contains(ev.pos()):
                    QToolTip.showText(ev.globalPos(), label, self)
                    return True
            QToolTip.hideText()
            ev.ignore()
            return True
        return super().event(ev)


class RobustnessPanel(JobOwner, QWidget):
    sig_open_sample = Signal(str, int, tuple)  # split, index, subset mask
    sig_result_ready = Signal(object)  # RobustnessResult
    sig_message = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, *, bundle_getter=None) -> None:
        super().__init__(parent)
        self.runner = WorkRunner(self, max_threads=1)
        self.bundle_getter = bundle_getter
        self.result: RobustnessResult | None = None
        self.runs: list[RunRef] = []
        self.data_cfg = None
        self.selected: tuple[int, int] | None = None  # (row, col)
        self.flip_rows: list[int] = []

        self.split = QComboBox()
        self.split.addItems(["test", "val"])
        self.split.setToolTip("Split to evaluate (the test split is what `robult eval` reports)")
        self.metric_box = QComboBox()
        self.metric_box.setToolTip("Metric shown in the heat map")
        self.metric_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.jobs = JobControls(self, self.runner, "Robustness computation",
                                compute_tip="Evaluate every run on every modality subset (in the background)")
        self.compute_btn, self.cancel_btn, self.progress = self.jobs.compute_btn, self.jobs.cancel_btn, \
            self.jobs.progress
        self.progress.setTextVisible(True)
        self.progress.setMaximumWidth(260)
        self.report_btn = QPushButton("Export report…")
        self.report_btn.setToolTip("A folder with the tables (CSV), the plots (PNG + SVG) and the run configs (JSON)")
        self.report_btn.setEnabled(False)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        bar = QHBoxLayout()
        for w in (QLabel("Split"), self.split, QLabel("Metric"), self.metric_box, self.compute_btn, self.cancel_btn,
                  self.progress):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.report_btn)

        self.plot = style.plot_widget("Metric per modality subset and run", min_height=260,
                                      tooltip="Rows: modality subsets the model is given at test time. Columns: "
                                              "runs of this session on the same dataset. Click a cell to see "
                                              "which samples change their prediction under that subset.")
        self._plot_tip = self.plot.toolTip()
        self.img = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.img)
        self.color_bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get("viridis"), interactive=False,
                                         width=14, colorMapMenu=False)
        self.color_bar.setImageItem(self.img, insert_in=self.plot.getPlotItem())
        self.color_range: tuple[float, float] = (0.0, 1.0)
        self.plot.getPlotItem().invertY(True)
        self.cell_texts: list[pg.TextItem] = []
        self.sel_box = pg.QtWidgets.QGraphicsRectItem(0, 0, 1, 1)
        self.sel_box.setPen(pg.mkPen("#D55E00", width=3))
        self.sel_box.setZValue(10)
        self.sel_box.hide()
        self.plot.addItem(self.sel_box)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_clicked)
        self.plot.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        self.run_header = RunHeader(self.plot)  # the runs' names over their columns, never scrolled away
        self.runs_legend = QLabel("")  # every run's full label, tag first
        self.runs_legend.setWordWrap(True)
        self.runs_legend.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.flips_title = QLabel("<b>Flipped samples</b><br><span style='color:#606060'>click a cell</span>")
        self.flips_title.setWordWrap(True)
        self.flips = QListWidget()
        self.flips.setMinimumWidth(300)
        self.flips.setToolTip("Samples whose prediction under the subset flips against all modalities "
                              "(the class changes; multi-label: the label set, by a Jaccard distance ≥ 0.5; "
                              "regression: the score, by ≥ 1 σ of the target or across 0 by ≥ 0.5 σ). "
                              "Click one to open it in the explorer with that subset.")
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.flips_title)
        sl.addWidget(self.flips, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.plot_scroll = QScrollArea()  # 2^M - 1 rows: at M = 6 the 63 rows scroll instead of shrinking
        self.plot_scroll.setWidgetResizable(True)
        self.plot_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.plot_scroll.setWidget(self.plot)
        self.plot_scroll.verticalScrollBar().valueChanged.connect(self.run_header.update)
        matrix_box = QWidget()
        mb = QVBoxLayout(matrix_box)
        mb.setContentsMargins(0, 0, 0, 0)
        mb.setSpacing(2)
        mb.addWidget(self.runs_legend)
        mb.addWidget(self.run_header)
        mb.addWidget(self.plot_scroll, 1)
        split.addWidget(matrix_box)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        matrix_page = QWidget()
        mp = QVBoxLayout(matrix_page)
        mp.setContentsMargins(0, 6, 0, 0)
        mp.addLayout(bar)
        mp.addWidget(self.info)
        mp.addWidget(split, 1)
        # the subset x run matrix and, beside it, other views of robustness (the missing-rate curves are added by
        # app.views.analysis.tabs: `views.addTab(...)`)
        self.views = QTabWidget()
        self.views.setDocumentMode(True)
        self.views.addTab(matrix_page, "Subset × run")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.views, 1)

        self.compute_btn.clicked.connect(self.compute)
        self.cancel_btn.clicked.connect(self.cancel)
        self.metric_box.currentIndexChanged.connect(self._on_metric_changed)
        self.flips.itemClicked.connect(self._on_flip_clicked)
        self.flips.itemActivated.connect(self._on_flip_clicked)
        self.report_btn.clicked.connect(self._on_report_clicked)
        self._set_info("Load a model to compare the session's runs on every modality subset.")
        self._draw()

    # --- inputs ---------------------------------------------------------------------------------------
    def set_runs(self, runs: list[RunRef], data_cfg) -> None:
        """The columns to compute (and the dataset, by its DataConfig)."""
        if self.data_cfg is not None and data_cfg != self.data_cfg and self._job is None:
            self.result = None  # another dataset: the old matrix no longer applies
            self.report_btn.setEnabled(False)
            self.flips.clear()
            self.sel_box.hide()
            self._draw()
        self.runs = list(runs)
        self.data_cfg = data_cfg
        n = len(self.runs)
        self._set_info(f"{n} run{'s' if n != 1 else ''} with a checkpoint on {data_cfg.dataset}: "
                       + ", ".join(r.label for r in self.runs) if n else
                       f"No run with a checkpoint on {data_cfg.dataset} yet.")
        self.compute_btn.setEnabled(n > 0)
        if self.result is None:
            self._draw()  # the empty plot's message follows the runs

    def _set_info(self, text: str) -> None:
        self.info.setText(text)

    # --- computing ------------------------------------------------------------------------------------
    @Slot()
    def compute(self) -> None:
        if not self.runs or self.data_cfg is None or self._job is not None:
            return
        runs, data_cfg, split = list(self.runs), self.data_cfg, self.split.currentText()
        getter = self.bundle_getter
        if getter is None:
            from app.core.analysis.context import default_bundle_getter as getter

        def work(job):
            bundle = getter(data_cfg)
            return compute_robustness(runs, bundle, split, progress=job.progress, check=job.check)

        self.jobs.start(work, len(runs), self._on_done)



    # what JobControls asks of its owner
    def _show_error(self, text: str) -> None:
        self._set_info(text)

    def _can_compute(self) -> bool:
        return bool(self.runs)

    def _on_done(self, result: RobustnessResult) -> None:
        self.progress.setFormat(f"done in {result.seconds:.1f} s")
        self.show_result(result)
        self.sig_result_ready.emit(result)

    # --- showing --------------------------------------------------------------------------------------
    def show_result(self, result: RobustnessResult) -> None:
        self.result = result
        style.refill_combo(self.metric_box, result.metric_names)
        self.report_btn.setEnabled(bool(result.runs))
        nr, ns = len(result.runs), len(result.subsets)
        msg = f"{nr} run{'s' if nr != 1 else ''} × {ns} subset{'s' if ns != 1 else ''} on the {result.split} split."
        if result.skipped:
            msg += "<br><span style='color:#8A5A00'>Skipped: " + "; ".join(result.skipped) + "</span>"
        self._set_info(msg)
        self.selected = None
        self.sel_box.hide()
        self.flips.clear()
        self.flips_title.setText("<b>Flipped samples</b><br><span style='color:#606060'>click a cell</span>")
        self._draw()

    @property
    def current_metric(self) -> str:
        return self.metric_box.currentText()

    @Slot(int)
    def _on_metric_changed(self, _i: int) -> None:
        self._draw()

    def _draw(self) -> None:
        r = self.result
        for t in self.cell_texts:
            self.plot.removeItem(t)
        self.cell_texts = []
        if r is None or not r.runs or not self.current_metric:
            self.img.clear()
            self.run_header.set_runs([])
            self.run_header.setVisible(False)
            self.runs_legend.setText("")
            self.runs_legend.setVisible(False)
            self.plot.getPlotItem().setTitle("Metric per modality subset and run", color="#202020", size="10pt")
            self.plot.setMinimumHeight(260)
            if r is not None:
                text = "no run to compare"
            elif self.runs:
                text = "no robustness matrix yet: Compute evaluates every run on every modality subset"
            else:
                text = "no run yet"
            show_message(self.plot, text, hide=(self.color_bar,))
            return
        clear_message(self.plot)
        tags, names = run_tags(r.runs), run_names(r.runs)
        self.run_header.set_runs(r.runs)
        self.run_header.setVisible(True)
        self.runs_legend.setText("Columns: " + " · ".join(f"<b>{html.escape(t)}</b> {html.escape(n)}"
                                                          for t, n in zip(tags, names)))
        self.runs_legend.setVisible(True)
        metric = self.current_metric
        mat = r.matrix(metric)  # (S, R)
        lo, hi = color_range(metric, mat)
        self.color_range = (lo, hi)
        better_high = HIGHER_IS_BETTER.get(metric, True)
        cmap = matrix_colormap(better_high)
        self.color_bar.setColorMap(cmap)
        self.color_bar.setLevels((lo, hi))
        self.img.setImage(np.nan_to_num(mat, nan=lo if better_high else hi), levels=(lo, hi))
        s, n = mat.shape
        self.img.setRect(0, 0, n, s)
        self.plot.setMinimumHeight(max(260, 24 * s + 90))
        small = s > 15
        for i in range(s):
            for j in range(n):
                v = mat[i, j]
                frac = (v - lo) / (hi - lo) if np.isfinite(v) else 0.0
                bright = frac > 0.6 if better_high else frac < 0.4
                t = pg.TextItem(style.fmt(v, 3), color="#000000" if bright else "#FFFFFF", anchor=(0.5, 0.5))
                if small:
                    f = t.textItem.font()
                    f.setPointSizeF(max(6.5, f.pointSizeF() * 0.8))
                    t.setFont(f)
                t.setPos(j + 0.5, i + 0.5)
                self.plot.addItem(t)
                self.cell_texts.append(t)
        style.set_ticks(self.plot, "left", [name for name, _ in r.subsets], positions=np.arange(s) + 0.5,
                        max_labels=s)  # every subset named, also the 63 of M = 6 (the rows scroll)
        # short tags under the columns (they never overlap); the full names are in the header above the rows
        style.set_ticks(self.plot, "bottom", tags, positions=np.arange(n) + 0.5)
        self.plot.setXRange(0, n, padding=0)
        self.plot.setYRange(0, s, padding=0)
        self.plot.getPlotItem().setTitle(f"{metric} on the {r.split} split ({'higher' if better_high else 'lower'} "
                                         f"is better; colour scale {lo:g} – {hi:.3g})", color="#202020", size="10pt")

    # --- cells and flips ------------------------------------------------------------------------------
    @Slot(object)
    def _on_scene_clicked(self, ev) -> None:
        if self.result is None or not self.result.runs:
            return
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = vb.mapSceneToView(ev.scenePos())
        row, col = int(np.floor(p.y())), int(np.floor(p.x()))
        if 0 <= row < len(self.result.subsets) and 0 <= col < len(self.result.runs):
            self.select_cell(row, col)

    @Slot(object)
    def _on_scene_mouse_moved(self, pos) -> None:
        """The cell under the mouse named in a tooltip: its run, its subset and its value."""
        r = self.result
        if r is None or not r.runs or not self.current_metric:
            return
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(pos):
            return
        p = vb.mapSceneToView(pos)
        row, col = int(np.floor(p.y())), int(np.floor(p.x()))
        if 0 <= row < len(r.subsets) and 0 <= col < len(r.runs):
            v = r.matrix(self.current_metric)[row, col]
            self.plot.setToolTip(f"{r.runs[col].label}\n{r.subsets[row][0]}: {self.current_metric} "
                                 f"{style.fmt(v, 4)}\n\nClick to see which samples change their prediction.")
        else:
            self.plot.setToolTip(self._plot_tip)

    def select_cell(self, row: int, col: int) -> np.ndarray:
        """Show the samples that flip for subset `row` under run `col`; returns their indices."""
        r = self.result
        self.selected = (row, col)
        self.sel_box.setRect(col, row, 1, 1)
        self.sel_box.show()
        name, mask = r.subsets[row]
        run = r.runs[col]
        idx = r.flips(run.label, mask)
        out_sub = r.outputs(run.label, mask)
        out_all = r.outputs(run.label, (True,) * len(mask))
        target = r.encodings[run.label].target
        self.flips.clear()
        self.flip_rows = [int(i) for i in idx]
        classes = self._class_names()
        if not classes and r.task != "regression" and out_all.shape[-1]:
            classes = tuple(str(c) for c in range(out_all.shape[-1]))
        for i in self.flip_rows[:MAX_FLIPS_LISTED]:  # the rest are counted, not worded (GUI-thread time)
            text, tip, verdict = flip_item(r.task, out_all[i], out_sub[i], target[i], classes, name)
            item = QListWidgetItem(f"#{i}:  {text}")
            item.setData(Qt.ItemDataRole.UserRole, i)
            if verdict:
                item.setForeground(pg.mkColor("#1A7F37" if verdict > 0 else "#B00020"))
            if tip:
                item.setToolTip(tip)
            self.flips.addItem(item)
        total = len(target)
        listed = listed_note(len(idx))
        self.flips_title.setText(f"<b>{len(idx)} of {total}</b> {r.split} samples flip for "
                                 f"<b>{html.escape(run.label)}</b> with <b>{html.escape(name)}</b> only (vs all "
                                 f"modalities)<br><span style='color:#606060'>a flip: "
                                 f"{html.escape(flip_rule(r.task, target))}"
                                 + (f"; {html.escape(listed)}" if listed else "") + "</span>")
        return idx

    def _class_names(self) -> tuple[str, ...]:
        cfg = getattr(self, "class_names", None)
        return tuple(cfg) if cfg else ()

    @Slot(QListWidgetItem)
    def _on_flip_clicked(self, item: QListWidgetItem) -> None:
        if self.result is None or self.selected is None:
            return
        idx = int(item.data(Qt.ItemDataRole.UserRole))
        self.sig_open_sample.emit(self.result.split, idx, tuple(self.result.subsets[self.selected[0]][1]))

    # --- export ---------------------------------------------------------------------------------------
    def export_report(self, folder, extra_plots: dict | None = None) -> Path:
        """Write a robustness report folder under `folder`; returns its path."""
        r = self.result
        if r is None or not r.runs:
            raise ValueError("compute the robustness matrix first")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(folder) / f"robustness-report-{safe_name(r.split)}-{stamp}"
        out.mkdir(parents=True, exist_ok=False)
        labels = [run.label for run in r.runs]
        for metric in r.metric_names:
            mat = r.matrix(metric)
            write_csv(out / f"matrix_{safe_name(metric)}.csv", ["subset", *labels],
                      [[name, *[float(v) for v in mat[i]]] for i, (name, _) in enumerate(r.subsets)])
        rows = []
        for run in r.runs:
            for name, mask in r.subsets:
                flips = len(r.flips(run.label, mask))
                for metric, v in r.tables[run.label].get(name, {}).items():
                    rows.append([run.run_id if run.run_id is not None else "", run.label, run.method, name,
                                 metric, float(v), flips])
        write_csv(out / "all_metrics.csv", ["run_id", "run", "method", "subset", "metric", "value", "flipped_samples"],
                  rows)
        current = self.current_metric
        for metric in r.metric_names:  # one heat map per metric
            i = self.metric_box.findText(metric)
            self.metric_box.setCurrentIndex(i)
            export_plot(self.plot, out, f"robustness_{metric}")
        self.metric_box.setCurrentIndex(max(0, self.metric_box.findText(current)))
        for name, view in (extra_plots or {}).items():
            export_plot(view, out, name)
        write_json(out / "config.json", {"split": r.split, "task": r.task, "modalities": list(r.modality_names),
                                         "runs": {run.label: {"run_id": run.run_id, "method": run.method,
                                                              "checkpoint": run.checkpoint_path,
                                                              "config": r.configs.get(run.label)}
                                                  for run in r.runs},
                                         "skipped": r.skipped})
        return out

    @Slot()
    def _on_report_clicked(self) -> None:
        from app.views.common.job_controls import choose_export_folder
        folder = choose_export_folder(self, "Write the robustness report into…")
        if folder:
            try:
                path = self.export_report(folder)
            except (OSError, ValueError) as e:
                self.sig_message.emit(f"Report failed: {e}", "error")
                return
            self.sig_message.emit(f"Robustness report written to {path}", "ok")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API; a panel shown on its own (tests, `-m`)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        self.runner.shutdown()


def synthetic_result() -> RobustnessResult:
    from robult_engine.evaluation import EncodedSplit, modality_subsets
    g = np.random.default_rng(0)
    names = ("image", "audio")
    runs = [RunRef(i, f"#{i} {m}", m, "") for i, m in enumerate(["robult", "robult-no-rec", "supervised", "moddrop"], 1)]
    subsets = modality_subsets(names)
    tables, encs = {}, {}
    for k, run in enumerate(runs):
        tables[run.label] = {n: {"accuracy": float(0.95 - 0.1 * k * (1 - all(m)) - 0.05 * g.random()),
                                 "macro_f1": float(0.9 - 0.1 * k * (1 - all(m)))} for n, m in subsets}
        import torch
        target = torch.randint(0, 10, (50,))
        lm = torch.randn(50, 2, 10)
        encs[run.label] = EncodedSplit(lm, torch.zeros(50, 2, 0), torch.zeros(50, 2, 0), torch.zeros(50, 2),
                                       torch.ones(50, 2, dtype=torch.bool), target)
    return RobustnessResult("test", "single-label", names, subsets, runs, tables, encs)


def main() -> int:
    from app.views.common.demo import run_panel_demo

    def fill(p: RobustnessPanel) -> None:
        p.class_names = tuple(str(d) for d in range(10))
        p.show_result(synthetic_result())
        p.select_cell(0, 2)
    return run_panel_demo(RobustnessPanel, fill, "Robustness — synthetic result", size=(1000, 520))


if __name__ == "__main__":
    raise SystemExit(main())
