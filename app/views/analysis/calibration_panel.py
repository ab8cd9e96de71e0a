"""CalibrationPanel: can a prediction made from a modality subset be trusted? For a chosen run of the session,
a reliability diagram per modality subset (the user ticks the subsets to overlay) and, per subset, accuracy
next to ECE, adaptive ECE, Brier score and NLL; below, the dataset-level attribution summary (mean |φ_i| per
modality over the split) of every run side by side, so runs can be compared.

Computed in the background (progress, Cancel) from one encoding pass per run: `explain.compute_calibration`
(the engine's `calibration_table` and `attribution_summary`). Export: the plots as PNG + SVG, the tables as CSV.

Run alone: `python -m app.views.analysis.calibration_panel` shows it on a synthetic study.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.background.runner import WorkRunner

from app.views.common import style
from app.core.analysis.explain import CalibrationStudy, compute_calibration
from app.views.common.export import export_plot
from app.core.analysis.tables import write_csv
from app.views.common.job_controls import JobControls, JobOwner, export_to_chosen_folder
from app.views.common.plot_util import clear_message, show_message
from app.core.analysis.robustness import RunRef
from app.core.analysis.task_language import phi_axis

COLUMNS = ("n", "accuracy", "mean_confidence", "ece", "adaptive_ece", "brier", "nll")
HEADERS = ("n", "acc.", "conf.", "ECE", "adapt. ECE", "Brier", "NLL")
PALETTE = tuple(c for c in style.CATEGORICAL if c != "#F0E442")  # no yellow lines on white


class CalibrationPanel(JobOwner, QWidget):
    sig_result_ready = Signal(object)  # CalibrationStudy
    sig_message = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, *, bundle_getter=None) -> None:
        super().__init__(parent)
        self.runner = WorkRunner(self, max_threads=1)
        self.bundle_getter = bundle_getter
        self.runs: list[RunRef] = []
        self.data_cfg = None
        self.study: CalibrationStudy | None = None
        self.curves: dict[str, pg.PlotDataItem] = {}

        self.split = QComboBox()
        self.split.addItems(["test", "val"])
        self.jobs = JobControls(self, self.runner, "Calibration study",
                                compute_tip="Calibration of every modality subset and the attribution summary of "
                                            "every run (in the background)")
        self.compute_btn, self.cancel_btn, self.progress = self.jobs.compute_btn, self.jobs.cancel_btn, \
            self.jobs.progress
        self.run_box = QComboBox()
        self.run_box.setToolTip("The run whose reliability diagrams and table are shown")
        self.run_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.export_btn = QPushButton("Export…")
        self.export_btn.setToolTip("The plots (PNG + SVG) and tables (CSV) to a folder")
        self.export_btn.setEnabled(False)
        bar = QHBoxLayout()
        for w in (QLabel("Split"), self.split, self.compute_btn, self.cancel_btn, self.progress, QLabel("Run"),
                  self.run_box):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.export_btn)
        self.info = QLabel("")
        self.info.setWordWrap(True)

        self.subset_list = QListWidget()
        self.subset_list.setToolTip("Tick the modality subsets whose reliability diagrams are overlaid")
        self.subset_list.setMaximumWidth(130)
        self.reliability = style.plot_widget("Reliability diagram", left="accuracy", bottom="confidence",
                                             min_height=260,
                                             tooltip="Per confidence bin (15 equal-width bins): the fraction "
                                                     "correct against the mean confidence. On the diagonal: "
                                                     "calibrated; below it: over-confident.")
        self.diagonal = pg.PlotDataItem([0, 1], [0, 1], pen=pg.mkPen("#909090", style=Qt.PenStyle.DashLine))
        self.reliability.addItem(self.diagonal)
        self.reliability.setXRange(0, 1, padding=0.02)
        self.reliability.setYRange(0, 1, padding=0.02)
        self.reliability.getPlotItem().addLegend(offset=(10, 10), labelTextColor="#303030")
        self.table = QTableWidget(0, len(HEADERS) + 1)
        self.table.setHorizontalHeaderLabels(("subset",) + HEADERS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Per modality subset of the chosen run: accuracy and calibration (lower ECE, Brier "
                              "and NLL are better). Bold: the worst ECE.")
        self.attr_plot = style.plot_widget("Attribution summary: mean |φ_i| per modality and run",
                                           left=phi_axis("single-label", mean_abs=True), min_height=180,
                                           tooltip="Over the split's samples: the mean absolute Shapley value of "
                                                   "each modality (log-probability of the predicted class, "
                                                   "nats; multi-label: log σ of the top label; regression: the "
                                                   "score, in the target's units). "
                                                   "An even spread means the evidence is shared by the modalities.")
        self.attr_plot.getPlotItem().addLegend(offset=(-10, 5), labelTextColor="#303030")
        self.attr_bars: list[pg.BarGraphItem] = []

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.subset_list)
        top.addWidget(self.reliability)
        top.addWidget(self.table)
        top.setStretchFactor(0, 0)
        top.setStretchFactor(1, 3)
        top.setStretchFactor(2, 4)
        top.setSizes([120, 560, 640])
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self.attr_plot)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(bar)
        lay.addWidget(self.info)
        lay.addWidget(main, 1)

        self.compute_btn.clicked.connect(self.compute)
        self.cancel_btn.clicked.connect(self.cancel)
        self.run_box.currentIndexChanged.connect(self._on_run_changed)
        self.subset_list.itemChanged.connect(self._on_subset_item_changed)
        self.export_btn.clicked.connect(self._on_export_clicked)
        self.compute_btn.setEnabled(False)
        self.info.setText("Load a model to compare the calibration of the session's runs per modality subset.")
        self._draw_reliability()

    # --- inputs ---------------------------------------------------------------------------------------
    def set_runs(self, runs: list[RunRef], data_cfg) -> None:
        if self.data_cfg is not None and data_cfg != self.data_cfg:
            if self.jobs.busy:  # another dataset: the running study no longer applies (its answer is dropped)
                self.jobs.cancel()
                self.jobs.finish()
                self.progress.setFormat("cancelled (other dataset)")
            self.show_study(None)
        self.runs = list(runs)
        self.data_cfg = data_cfg
        n = len(self.runs)
        self.info.setText(f"{n} run{'s' if n != 1 else ''} with a checkpoint on {data_cfg.dataset}: "
                          + ", ".join(r.label for r in self.runs) if n else
                          f"No run with a checkpoint on {data_cfg.dataset} yet.")
        self.compute_btn.setEnabled(n > 0 and not self.jobs.busy)

    # --- computing ------------------------------------------------------------------------------------

    def _can_compute(self) -> bool:
        return bool(self.runs)

    @Slot()
    def compute(self) -> None:
        if not self.runs or self.data_cfg is None or self.jobs.busy:
            return
        runs, data_cfg, split = list(self.runs), self.data_cfg, self.split.currentText()
        getter = self.bundle_getter
        if getter is None:
            from app.core.analysis.context import default_bundle_getter as getter

        def work(job):
            return compute_calibration(runs, getter(data_cfg), split, progress=job.progress, check=job.check)

        self.jobs.start(work, 2 * len(runs), self._on_done)

    def _on_done(self, study: CalibrationStudy) -> None:
        self.progress.setFormat(f"done in {study.seconds:.1f} s")
        self.show_study(study)
        self.sig_result_ready.emit(study)

    # --- showing --------------------------------------------------------------------------------------
    def show_study(self, study: CalibrationStudy | None) -> None:
        self.study = study
        self.export_btn.setEnabled(study is not None and bool(study.runs))
        style.refill_combo(self.run_box, [r.label for r in study.runs if r.label in study.tables]
                           if study is not None else [])
        self.subset_list.blockSignals(True)
        checked = set(self.checked_subsets())
        self.subset_list.clear()
        if study is not None:
            singles = {n for n in study.subsets if "+" not in n}
            default = singles | {study.subsets[-1]} if study.subsets else set()
            for name in study.subsets:
                it = QListWidgetItem(name)
                it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                on = name in checked if checked & set(study.subsets) else name in default
                it.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
                self.subset_list.addItem(it)
        self.subset_list.blockSignals(False)
        if study is not None:
            nr = len(study.runs)
            msg = f"{nr} run{'s' if nr != 1 else ''} × {len(study.subsets)} subsets on the {study.split} split."
            if study.note:
                msg += f"<br><span style='color:#8A5A00'>{study.note}</span>"
            if study.skipped:
                msg += "<br><span style='color:#8A5A00'>Skipped: " + "; ".join(study.skipped) + "</span>"
            self.info.setText(msg)
        self._draw_run()
        self._draw_attribution()

    def checked_subsets(self) -> list[str]:
        return [self.subset_list.item(i).text() for i in range(self.subset_list.count())
                if self.subset_list.item(i).checkState() == Qt.CheckState.Checked]

    def set_checked_subsets(self, names) -> None:
        names = set(names)
        self.subset_list.blockSignals(True)
        for i in range(self.subset_list.count()):
            it = self.subset_list.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.text() in names else Qt.CheckState.Unchecked)
        self.subset_list.blockSignals(False)
        self._draw_reliability()

    @property
    def current_run(self) -> str:
        return self.run_box.currentText()

    @Slot(int)
    def _on_run_changed(self, _i: int) -> None:
        self._draw_run()

    @Slot(object)
    def _on_subset_item_changed(self, _item) -> None:
        self._draw_reliability()

    def _draw_run(self) -> None:
        self._draw_reliability()
        self._fill_table()

    def _table_of_run(self) -> dict:
        s = self.study
        return s.tables.get(self.current_run, {}) if s is not None else {}

    def _draw_reliability(self) -> None:
        pi = self.reliability.getPlotItem()
        for c in self.curves.values():
            pi.removeItem(c)
            if pi.legend is not None:
                pi.legend.removeItem(c)
        self.curves = {}
        table = self._table_of_run()
        order = self.study.subsets if self.study is not None else []
        for name in self.checked_subsets():
            row = table.get(name)
            if row is None or row.reliability is None:
                continue
            b = row.reliability
            conf, acc = np.asarray(b.confidence, float), np.asarray(b.accuracy, float)
            keep = np.isfinite(conf) & np.isfinite(acc)
            col = PALETTE[order.index(name) % len(PALETTE)]
            curve = pg.PlotDataItem(conf[keep], acc[keep], pen=pg.mkPen(col, width=2), symbol="o", symbolSize=6,
                                    symbolBrush=col, symbolPen=None, name=f"{name} (ECE {row.ece:.3f})")
            self.reliability.addItem(curve)
            self.curves[name] = curve
        title = f"Reliability diagram — {self.current_run}" if self.current_run else "Reliability diagram"
        pi.setTitle(title, color="#202020", size="10pt")
        if self.curves:
            clear_message(self.reliability)
        else:  # bare axes and a diagonal would read as a result: say why there is none
            show_message(self.reliability, self._empty_reliability_text(table), hide=(self.diagonal,))

    def _empty_reliability_text(self, table: dict) -> str:
        if self.study is None:
            return "Press Compute to draw the reliability diagrams."
        if table and all(row.reliability is None for row in table.values()):
            return self.study.note or "This run's outputs have no confidence to calibrate."
        return "Tick a modality subset on the left to draw its reliability diagram."

    def _fill_table(self) -> None:
        table = self._table_of_run()
        rows = [table[n] for n in (self.study.subsets if self.study else []) if n in table]
        self.table.setRowCount(len(rows))
        worst = max(rows, key=lambda r: r.ece).subset if rows else None
        for i, r in enumerate(rows):
            cells = [r.subset] + [str(r.n) if k == "n" else style.fmt(getattr(r, k), 3) for k in COLUMNS]
            for j, text in enumerate(cells):
                it = QTableWidgetItem(text)
                if j > 0:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if r.subset == worst and j == 4:
                    f = it.font()
                    f.setBold(True)
                    it.setFont(f)
                self.table.setItem(i, j, it)
        self.table.resizeColumnsToContents()

    def _draw_attribution(self) -> None:
        pi = self.attr_plot.getPlotItem()
        for b in self.attr_bars:
            pi.removeItem(b)
            if pi.legend is not None:
                pi.legend.removeItem(b)
        self.attr_bars = []
        s = self.study
        if s is None or not s.attribution:
            return
        pi.getAxis("left").setLabel(phi_axis(s.task, mean_abs=True), color="#303030")
        labels = [r.label for r in s.runs if r.label in s.attribution]
        m, k = len(s.modality_names), len(labels)
        width = 0.8 / max(k, 1)
        for j, lab in enumerate(labels):
            v = np.asarray(s.attribution[lab].mean_abs["all"], float)
            x = np.arange(m) - 0.4 + width * (j + 0.5)
            col = PALETTE[j % len(PALETTE)]
            bars = pg.BarGraphItem(x=x, height=v, width=width * 0.9, brush=col, pen=None, name=lab)
            self.attr_plot.addItem(bars)
            self.attr_bars.append(bars)
        style.set_ticks(self.attr_plot, "bottom", s.modality_names)
        self.attr_plot.setXRange(-0.6, m - 0.4, padding=0)
        top = max((max(s.attribution[lab].mean_abs["all"]) for lab in labels), default=1.0)
        self.attr_plot.setYRange(0, (top if np.isfinite(top) and top > 0 else 1.0) * (1.2 + 0.1 * k), padding=0)

    # --- export ---------------------------------------------------------------------------------------
    def tables(self) -> dict[str, tuple[list[str], list[list]]]:
        s = self.study
        if s is None:
            return {}
        cal = [[lab, r.subset] + [getattr(r, k) for k in COLUMNS]
               for lab, t in s.tables.items() for r in (t[n] for n in s.subsets if n in t)]
        bins = [[lab, r.subset, b, lo, hi, conf, acc, cnt]
                for lab, t in s.tables.items() for r in t.values() if r.reliability is not None
                for b, (lo, hi, conf, acc, cnt) in enumerate(zip(r.reliability.edges[:-1], r.reliability.edges[1:],
                                                                  r.reliability.confidence, r.reliability.accuracy,
                                                                  r.reliability.count))]
        attr = [[lab, g, name, a.mean_abs[g][i], a.mean[g][i], a.count.get(g, 0)]
                for lab, a in s.attribution.items() for g in a.mean_abs for i, name in enumerate(a.modalities)]
        return {"calibration_per_subset": (["run", "subset", *COLUMNS], cal),
                "reliability_bins": (["run", "subset", "bin", "lo", "hi", "confidence", "accuracy", "count"], bins),
                "attribution_summary": (["run", "group", "modality", "mean_abs_phi", "mean_phi", "n"], attr)}

    def export(self, folder) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out: list[Path] = []
        out += export_plot(self.reliability, folder, "reliability_diagram")
        out += export_plot(self.attr_plot, folder, "attribution_summary")
        for name, (header, rows) in self.tables().items():
            out.append(write_csv(folder / f"{name}.csv", header, rows))
        return out

    @Slot()
    def _on_export_clicked(self) -> None:
        if self.study is not None:
            export_to_chosen_folder(self, "Export the calibration plots and tables to…",
                                    f"calibration-{self.study.split}", self.export, self._message)

    def shutdown(self) -> None:
        self.runner.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)


def synthetic_study(m: int = 3, n: int = 600, seed: int = 0) -> CalibrationStudy:
    """A study of two synthetic runs (for `python -m` and the docs)."""
    import torch

    from robult_engine.evaluation import EncodedSplit, modality_subsets
    from robult_engine.explain.attribution import attribution_summary, train_prior
    from robult_engine.explain.calibration import calibration_table
    g = torch.Generator().manual_seed(seed)
    names = tuple(f"m{i}" for i in range(m))
    classes = tuple(str(c) for c in range(8))
    y = torch.randint(0, 8, (n,), generator=g)
    study = CalibrationStudy(split="test", task="single-label", modality_names=names, runs=[], tables={},
                             attribution={}, subsets=[s for s, _ in modality_subsets(names)])
    for j, label in enumerate(("#1 robult", "#2 supervised")):
        strength = torch.tensor([2.5, 1.5, 0.8][:m] + [1.0] * max(0, m - 3)) * (1.8 if j == 0 else 1.0)
        logits = torch.randn(n, m, 8, generator=g) * (1.0 + j)
        logits[torch.arange(n), :, y] += strength
        enc = EncodedSplit(logits_mod=logits, z=torch.zeros(n, m, 1), u=torch.zeros(n, m, 1),
                           rec_err=torch.zeros(n, m), mask=torch.ones(n, m, dtype=torch.bool), target=y)
        study.runs.append(RunRef(j + 1, label, label.split()[1], ""))
        study.tables[label] = calibration_table(enc, names, "single-label")
        study.attribution[label] = attribution_summary(enc, train_prior(y, "single-label", 8), names,
                                                       "single-label", classes)
    return study


def main() -> int:
    from app.views.common.demo import run_panel_demo
    return run_panel_demo(CalibrationPanel, lambda p: p.show_study(synthetic_study()), "Calibration — synthetic",
                          size=(1200, 760))


if __name__ == "__main__":
    raise SystemExit(main())
