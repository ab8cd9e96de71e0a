"""MissingCurvesPanel: the chosen runs' metric against the missing rate η of one mechanism (beside the robustness
tab's subset × run matrix), and the test samples whose prediction flips at a chosen η, each opening in the
explorer with that sample's mask.

**η is the fraction MISSING.** The masks are the engine's (`robult_engine.missing`): drawn from (split,
mechanism, mask seed) or read from a saved `masks.npz`; every run is evaluated on the same masks, so the
curves are paired. The computation (app/core/analysis/curves.py, Qt-free) runs in the background through the
app's WorkRunner: progress, Cancel, errors shown in the panel and the status bar.

Run alone: `python -m app.views.analysis.missing_curves` shows it on a synthetic result.
"""
from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QPushButton, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from robult_engine.metrics import HIGHER_IS_BETTER
from robult_engine.missing import MissingSpecError
from robult_engine.missing_spec import describe_mechanisms

from app.background.runner import WorkRunner

from app.views.common import style
from app.core.analysis.curves import (CURVE_MECHANISMS, DEFAULT_RATES, CurveResult, compute_missing_curves, curve_spec,
                                      parse_curve_spec)
from app.views.common.export import export_plot
from app.core.analysis.tables import safe_name, write_csv
from app.views.common.job_controls import JobControls, JobOwner, choose_export_folder
from app.core.analysis.robustness import RobustnessResult, RunRef
from app.core.analysis.task_language import MAX_FLIPS_LISTED, flip_item, flip_rule, listed_note

RATE_TIP = ("Missing rates η, comma-separated: the fraction of (sample, modality) entries MISSING, each in [0, 1). "
            "η = 0.75 removes 75 % in the draw; a sample never loses every modality (one is given back), so the "
            "realised fraction — shown in the legend's table — is lower at high η.")
MECH_TIP = {m.name: m.summary for m in describe_mechanisms(curve=True)}


class MissingCurvesPanel(JobOwner, QWidget):
    sig_open_sample = Signal(str, int, tuple)  # split, index, that sample's mask
    sig_result_ready = Signal(object)  # CurveResult
    sig_message = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, *, bundle_getter=None) -> None:
        super().__init__(parent)
        self.runner = WorkRunner(self, max_threads=1)
        self.bundle_getter = bundle_getter
        self.result: CurveResult | None = None
        self.cached: RobustnessResult | None = None  # the robustness tab's encodings, reused when they apply
        self.runs: list[RunRef] = []
        self.data_cfg = None
        self.masks_path: str | None = None
        self.flip_rows: list[int] = []
        self.class_names: tuple[str, ...] = ()

        self.mechanism = QComboBox()
        self.mechanism.addItems(list(CURVE_MECHANISMS))
        for i, m in enumerate(CURVE_MECHANISMS):
            self.mechanism.setItemData(i, MECH_TIP[m], Qt.ItemDataRole.ToolTipRole)
        self.mechanism.setToolTip("The missing-modality mechanism (robult_engine.missing)")
        self.rates = QLineEdit(DEFAULT_RATES)
        self.rates.setObjectName("curve_rates")
        self.rates.setToolTip(RATE_TIP)
        self.rates.setMinimumWidth(150)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Mask seed: the masks are a pure function of (split, mechanism, η, seed) — the ones "
                             "`robult eval --missing … --mask-seed SEED` uses")
        self.split = QComboBox()
        self.split.addItems(["test", "val"])
        self.masks_btn = QPushButton("Masks file…")
        self.masks_btn.setToolTip("Evaluate on saved masks (masks.npz written by robult eval / compare / sweep) "
                                  "instead of drawing them; click again and cancel to draw again")
        self.jobs = JobControls(self, self.runner, "Missing-rate curves", compute_text="Compute curves",
                                compute_tip="Evaluate the ticked runs under every mask (in the background)")
        self.compute_btn, self.cancel_btn, self.progress = self.jobs.compute_btn, self.jobs.cancel_btn, \
            self.jobs.progress
        self.progress.setTextVisible(True)
        self.progress.setMaximumWidth(240)
        self.export_btn = QPushButton("Export…")
        self.export_btn.setToolTip("The curve plot (PNG + SVG) and the values (CSV) in a folder")
        self.export_btn.setEnabled(False)
        bar = QHBoxLayout()
        eta = QLabel("η missing")
        eta.setToolTip(RATE_TIP)
        for w in (QLabel("Mechanism"), self.mechanism, eta, self.rates, QLabel("seed"), self.seed, QLabel("Split"),
                  self.split, self.masks_btn, self.compute_btn, self.cancel_btn, self.progress):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.export_btn)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setObjectName("curves_info")

        self.run_list = QListWidget()
        self.run_list.setToolTip("The runs to draw (tick or untick)")
        self.run_list.setMaximumWidth(260)
        self.metric_box = QComboBox()
        self.metric_box.setToolTip("Metric on the y axis")
        self.plot = style.plot_widget("Metric against the missing rate", left="metric",
                                      bottom="η — fraction of entries missing", min_height=260,
                                      tooltip="One line per run; every run is evaluated on the same masks")
        self.legend = self.plot.getPlotItem().addLegend(offset=(-10, 10))
        self.lines: dict[str, pg.PlotDataItem] = {}
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(QLabel("<b>Runs</b>"))
        ll.addWidget(self.run_list, 1)
        ll.addWidget(QLabel("Metric"))
        ll.addWidget(self.metric_box)

        self.flip_run = QComboBox()
        self.flip_run.setToolTip("The run whose flips are listed")
        self.flip_rate = QComboBox()
        self.flip_rate.setToolTip("The missing rate η at which flips are listed")
        self.flips_title = QLabel("<b>Flipped samples</b>")
        self.flips_title.setWordWrap(True)
        self.flips = QListWidget()
        self.flips.setMinimumWidth(280)
        self.flips.setToolTip("Samples whose prediction under their mask at this η flips against all modalities "
                              "(the class changes; multi-label: the label set, by a Jaccard distance ≥ 0.5; "
                              "regression: the score, by ≥ 1 σ of the target or across 0 by ≥ 0.5 σ). "
                              "Click one to open it in the explorer with that mask.")
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        fr = QHBoxLayout()
        fr.addWidget(self.flip_run, 1)
        fr.addWidget(QLabel("at η"))
        fr.addWidget(self.flip_rate)
        sl.addLayout(fr)
        sl.addWidget(self.flips_title)
        sl.addWidget(self.flips, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.plot)
        split.addWidget(side)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(bar)
        lay.addWidget(self.info)
        lay.addWidget(split, 1)

        self.compute_btn.clicked.connect(self.compute)
        self.cancel_btn.clicked.connect(self.cancel)
        self.masks_btn.clicked.connect(self._on_masks_clicked)
        self.metric_box.currentIndexChanged.connect(self._on_view_changed)
        self.run_list.itemChanged.connect(self._on_run_item_changed)
        self.flip_run.currentIndexChanged.connect(self._on_flip_choice_changed)
        self.flip_rate.currentIndexChanged.connect(self._on_flip_choice_changed)
        self.flips.itemClicked.connect(self._on_flip_clicked)
        self.flips.itemActivated.connect(self._on_flip_clicked)
        self.export_btn.clicked.connect(self._on_export_clicked)
        self.compute_btn.setEnabled(False)
        self._say("Load a model: the session's runs on its dataset are drawn against the missing rate η.")

    # --- inputs ---------------------------------------------------------------------------------------
    def set_runs(self, runs: list[RunRef], data_cfg) -> None:
        if self.data_cfg is not None and data_cfg != self.data_cfg and self._job is None:
            self.result = None
            self.cached = None
            self._draw()
            self._fill_flip_choices()
        ticked = {self.run_list.item(i).text() for i in range(self.run_list.count())
                  if self.run_list.item(i).checkState() == Qt.CheckState.Checked}
        known = {self.run_list.item(i).text() for i in range(self.run_list.count())}
        self.runs = list(runs)
        self.data_cfg = data_cfg
        self.run_list.blockSignals(True)
        self.run_list.clear()
        for r in self.runs:
            it = QListWidgetItem(r.label)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if (r.label in ticked or r.label not in known)
                             else Qt.CheckState.Unchecked)
            self.run_list.addItem(it)
        self.run_list.blockSignals(False)
        self.compute_btn.setEnabled(bool(self.runs) and self._job is None)
        n = len(self.runs)
        self._say(f"{n} run{'s' if n != 1 else ''} with a checkpoint on {data_cfg.dataset}." if n else
                  f"No run with a checkpoint on {data_cfg.dataset} yet.")

    def set_cached(self, result: RobustnessResult | None) -> None:
        """The robustness tab's latest result: its encodings are reused for the same split and checkpoints."""
        self.cached = result

    def chosen_runs(self) -> list[RunRef]:
        return [r for i, r in enumerate(self.runs)
                if i < self.run_list.count() and self.run_list.item(i).checkState() == Qt.CheckState.Checked]

    def spec_text(self) -> str:
        return curve_spec(self.mechanism.currentText(), self.rates.text())

    def _say(self, text: str, kind: str = "info") -> None:
        colour = {"error": "#B00020", "warning": "#8A5A00"}.get(kind)
        self.info.setText(f"<span style='color:{colour}'>{text}</span>" if colour else text)
        if kind in ("error", "warning"):
            self.sig_message.emit(text, kind)

    # --- computing ------------------------------------------------------------------------------------
    @Slot()
    def compute(self) -> bool:
        """Start the computation; False (and a message) when the input is bad or nothing can be computed."""
        if self._job is not None or self.data_cfg is None:
            return False
        runs = self.chosen_runs()
        if not runs:
            self._say("Tick at least one run.", "warning")
            return False
        spec = self.spec_text()
        if not self.masks_path:
            try:
                parse_curve_spec(spec)  # a bad rate is said here, before anything starts
            except MissingSpecError as e:
                self._say(f"Bad missing rates: {e}", "error")
                return False
        data_cfg, split, seed, path, cached = (self.data_cfg, self.split.currentText(), int(self.seed.value()),
                                               self.masks_path, self.cached)
        getter = self.bundle_getter
        if getter is None:
            from app.core.analysis.context import default_bundle_getter as getter

        def work(job):
            bundle = getter(data_cfg)
            return compute_missing_curves(runs, bundle, split, spec, seed, masks_path=path, cached=cached,
                                          progress=job.progress, check=job.check)

        self.jobs.start(work, len(runs), self._on_done)
        return True

    # what JobControls asks of its owner (and JobOwner's cancel, _show_error, _message)
    def _can_compute(self) -> bool:
        return bool(self.runs)

    def _on_done(self, result: CurveResult) -> None:
        self.progress.setFormat(f"done in {result.seconds:.1f} s")
        self.show_result(result)
        self.sig_result_ready.emit(result)

    # --- showing --------------------------------------------------------------------------------------
    def show_result(self, result: CurveResult) -> None:
        self.result = result
        style.refill_combo(self.metric_box, result.metric_names)
        self.export_btn.setEnabled(bool(result.runs))
        realised = ", ".join(f"η {r:g} → {q:.3f}" for r, q in zip(result.rates, result.realised))
        msg = (f"{len(result.runs)} run(s) × {len(result.specs)} settings on the {result.split} split, masks "
               f"{result.source}. Realised fraction missing: {realised}.")
        if result.skipped:
            msg += "<br><span style='color:#8A5A00'>Skipped: " + "; ".join(result.skipped) + "</span>"
        self._say(msg)
        self._fill_flip_choices()
        self._draw()

    def _fill_flip_choices(self) -> None:
        r = self.result
        for box, items in ((self.flip_run, [run.label for run in r.runs] if r else []),
                           (self.flip_rate, [f"{x:g}" for x in r.rates] if r else [])):
            box.blockSignals(True)
            box.clear()
            box.addItems(items)
            box.blockSignals(False)
        if r is not None and r.rates:
            self.flip_rate.setCurrentIndex(len(r.rates) - 1 if len(r.rates) < 3 else len(r.rates) // 2)
        self._on_flip_choice_changed()

    @property
    def current_metric(self) -> str:
        return self.metric_box.currentText()

    @Slot(int)
    def _on_view_changed(self, _i: int) -> None:
        self._draw()

    @Slot(QListWidgetItem)
    def _on_run_item_changed(self, _item) -> None:
        self._draw()

    def _draw(self) -> None:
        p = self.plot.getPlotItem()
        for line in self.lines.values():
            p.removeItem(line)
        self.lines = {}
        self.legend.clear()
        r = self.result
        if r is None or not r.runs or not self.current_metric:
            return
        metric = self.current_metric
        shown = {run.label for run in self.chosen_runs()} or {run.label for run in r.runs}
        for k, run in enumerate(r.runs):
            if run.label not in shown:
                continue
            c = style.CATEGORICAL[k % len(style.CATEGORICAL)]
            line = p.plot(r.rates, r.curve(run.label, metric), pen=pg.mkPen(c, width=2), symbol="o",
                          symbolBrush=c, symbolPen=c, symbolSize=7, name=run.label)
            self.lines[run.label] = line
        p.getAxis("left").setLabel(metric, color="#303030")
        better = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
        mech = r.specs[0].split(":", 1)[0] if r.specs else ""
        p.setTitle(f"{metric} ({better} is better) under {mech} on the {r.split} split — η is the fraction missing",
                   color="#202020", size="10pt")
        if r.rates:
            lo, hi = min(r.rates), max(r.rates)
            pad = max(0.02, 0.05 * (hi - lo))
            self.plot.setXRange(lo - pad, hi + pad, padding=0)
        self.plot.enableAutoRange(axis="y")

    # --- flips ----------------------------------------------------------------------------------------
    @Slot(int)
    def _on_flip_choice_changed(self, _i: int = 0) -> None:
        self.flips.clear()
        self.flip_rows = []
        r = self.result
        ri, si = self.flip_run.currentIndex(), self.flip_rate.currentIndex()
        if r is None or ri < 0 or si < 0 or ri >= len(r.runs) or si >= len(r.specs):
            self.flips_title.setText("<b>Flipped samples</b><br><span style='color:#606060'>compute the curves"
                                     "</span>")
            return
        self.show_flips(r.runs[ri].label, r.specs[si])

    def show_flips(self, run_label: str, spec_label: str) -> np.ndarray:
        r = self.result
        idx = r.flips(run_label, spec_label)
        out_m = r.outputs(run_label, spec_label)
        out_all = r.outputs(run_label, None)
        target = r.encodings[run_label].target
        mask = r.masks[spec_label]
        names = r.modality_names
        classes = tuple(self.class_names)
        if not classes and r.task != "regression" and out_all.shape[-1]:
            classes = tuple(str(c) for c in range(out_all.shape[-1]))
        self.flip_rows = [int(i) for i in idx]
        for i in self.flip_rows[:MAX_FLIPS_LISTED]:  # the rest are counted, not worded (GUI-thread time)
            kept = "+".join(n for n, k in zip(names, mask[i].tolist()) if k)
            text, tip, verdict = flip_item(r.task, out_all[i], out_m[i], target[i], classes, kept)
            it = QListWidgetItem(f"#{i}:  {text}")
            it.setData(Qt.ItemDataRole.UserRole, i)
            if verdict:
                it.setForeground(pg.mkColor("#1A7F37" if verdict > 0 else "#B00020"))
            if tip:
                it.setToolTip(tip)
            self.flips.addItem(it)
        listed = listed_note(len(idx))
        self.flips_title.setText(f"<b>{len(idx)} of {len(target)}</b> {r.split} samples flip for "
                                 f"<b>{html.escape(run_label)}</b> under <b>{html.escape(spec_label)}</b> (vs all "
                                 f"modalities)<br><span style='color:#606060'>a flip: "
                                 f"{html.escape(flip_rule(r.task, target))}"
                                 + (f"; {html.escape(listed)}" if listed else "") + "</span>")
        return idx

    @Slot(QListWidgetItem)
    def _on_flip_clicked(self, item: QListWidgetItem) -> None:
        r = self.result
        si = self.flip_rate.currentIndex()
        if r is None or si < 0:
            return
        i = int(item.data(Qt.ItemDataRole.UserRole))
        self.sig_open_sample.emit(r.split, i, tuple(bool(x) for x in r.masks[r.specs[si]][i].tolist()))

    # --- masks file and export ------------------------------------------------------------------------
    @Slot()
    def _on_masks_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Masks file", "", "Mask files (*.npz)")
        self.set_masks_path(path or None)

    def set_masks_path(self, path: str | None) -> None:
        self.masks_path = path
        self.mechanism.setEnabled(path is None)
        self.rates.setEnabled(path is None)
        self.seed.setEnabled(path is None)
        self.masks_btn.setText(f"Masks: {Path(path).name}" if path else "Masks file…")
        self._say(f"Curves on the saved masks of {path}" if path else "Masks drawn from the mechanism and seed.")

    def export(self, folder) -> Path:
        r = self.result
        if r is None or not r.runs:
            raise ValueError("compute the curves first")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(folder) / f"missing-curves-{safe_name(r.split)}-{stamp}"
        out.mkdir(parents=True, exist_ok=False)
        rows = []
        for run in r.runs:
            for spec, rate, real in zip(r.specs, r.rates, r.realised):
                flips = len(r.flips(run.label, spec))
                for metric, v in r.tables[run.label].get(spec, {}).items():
                    rows.append([run.run_id if run.run_id is not None else "", run.label, run.method, spec, rate,
                                 real, metric, float(v), flips])
        write_csv(out / "missing_curves.csv", ["run_id", "run", "method", "setting", "eta_missing",
                                               "realised_missing", "metric", "value", "flipped_samples"], rows)
        export_plot(self.plot, out, f"missing_curves_{safe_name(self.current_metric)}")
        return out

    @Slot()
    def _on_export_clicked(self) -> None:
        folder = choose_export_folder(self, "Write the curves into…")
        if folder:
            try:
                path = self.export(folder)
            except (OSError, ValueError) as e:
                self._say(f"Export failed: {e}", "error")
                return
            self.sig_message.emit(f"Missing-rate curves written to {path}", "ok")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API; a panel shown on its own (tests, `-m`)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        self.runner.shutdown()


def synthetic_result() -> CurveResult:
    import torch

    from robult_engine.evaluation import EncodedSplit
    from robult_engine.missing import draw_masks, parse_missing
    from types import SimpleNamespace
    g = torch.Generator().manual_seed(0)
    names = ("image", "audio")
    n = 200
    target = torch.randint(0, 10, (n,), generator=g)
    split = SimpleNamespace(mask=torch.ones(n, 2, dtype=torch.bool), target=target)
    info = SimpleNamespace(modality_names=names, task="single-label", class_names=tuple(map(str, range(10))))
    specs = parse_missing("mcar:0,0.25,0.5,0.75")
    masks = draw_masks(split, info, specs, 0)
    from robult_engine.missing import metrics_under_masks, realised_missing
    runs, tables, encs = [], {}, {}
    for k, m in enumerate(["robult", "supervised", "moddrop"]):
        run = RunRef(k + 1, f"#{k + 1} {m}", m, "")
        lm = torch.randn(n, 2, 10, generator=g)
        lm[torch.arange(n), :, target] += torch.tensor([3.0 - k, 2.0 - 0.5 * k])
        enc = EncodedSplit(lm, torch.zeros(n, 2, 0), torch.zeros(n, 2, 0), torch.zeros(n, 2),
                           torch.ones(n, 2, dtype=torch.bool), target)
        runs.append(run)
        encs[run.label] = enc
        tables[run.label] = metrics_under_masks(enc, masks, "single-label")
    return CurveResult("test", "single-label", names, list(masks), [s.rate for s in specs],
                       [realised_missing(v) for v in masks.values()], masks, runs, tables, encs,
                       source="drawn, mask seed 0")


def main() -> int:
    from app.views.common.demo import run_panel_demo

    def fill(p: MissingCurvesPanel) -> None:
        p.class_names = tuple(str(d) for d in range(10))
        res = synthetic_result()
        p.set_runs(res.runs, type("Cfg", (), {"dataset": "synthetic"})())
        p.show_result(res)
    return run_panel_demo(MissingCurvesPanel, fill, "Missing-rate curves — synthetic result", size=(1200, 520))


if __name__ == "__main__":
    raise SystemExit(main())
