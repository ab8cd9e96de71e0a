"""PredictionsPanel: class probabilities for the chosen modality subset next to all modalities, and the change.

Run alone: `python -m app.views.explorer.predictions_panel` shows it on a synthetic sample.
"""
from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from PySide6.QtGui import QFontMetricsF

from app.views.common import style
from app.views.common.export import export_plot
from app.core.analysis.tables import inspection_tables, write_tables
from app.core.analysis.task_language import label_order, prediction_text


class PredictionsPanel(QWidget):
    """Bars: grey = all modalities on, blue = the subset; below, the difference (green up, red down)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.inspection = None
        self._classes: tuple[str, ...] = ()
        self._x = np.zeros(0)
        self.header = style.title_label(big=True)
        self.header.setObjectName("predictionHeader")
        self.plot = style.plot_widget("Class probabilities", left="p", min_height=170,
                                      tooltip="Grey: every modality of the sample on. Blue: the modalities switched "
                                              "on. The subset's prediction is the mean of the per-modality logits "
                                              "c([U^i, Z^i]) over the modalities on.")
        self.bars_all = pg.BarGraphItem(x=[], height=[], width=0.38, brush=style.ALL, pen=None, name="all modalities")
        self.bars_sub = pg.BarGraphItem(x=[], height=[], width=0.38, brush=style.SUBSET, pen=None, name="subset")
        self.plot.addItem(self.bars_all)
        self.plot.addItem(self.bars_sub)
        self.empty_text = pg.TextItem("", color="#B00020", anchor=(0.5, 0.5))
        self.plot.addItem(self.empty_text)
        self.delta = style.plot_widget("Change vs all modalities (subset − all)", left="Δp", min_height=110,
                                       tooltip="How much each class probability moved when modalities were "
                                               "switched off.")
        self.delta.setXLink(self.plot)
        self.delta.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        self.bars_delta = pg.BarGraphItem(x=[], height=[], width=0.6, brushes=[], pen=None)
        self.delta.addItem(self.bars_delta)
        self.delta.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen("#808080")))
        self._order: list[int] = []
        for w in (self.plot, self.delta):  # the first and last class names may reach past the axis's ends
            w.getPlotItem().getAxis("bottom").setStyle(hideOverlappingLabels=40)
        self.plot.getPlotItem().getViewBox().sigResized.connect(self._fit_ticks)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.header)
        lay.addWidget(self.plot, 3)
        lay.addWidget(self.delta, 2)
        self.clear("Load a model and a sample.")

    # --- showing --------------------------------------------------------------------------------------
    def clear(self, message: str = "") -> None:
        self.inspection = None
        self._shown_all = None
        self._delta_lim = None
        self._y_fixed = False
        self.header.setText(f"<span style='color:#606060'>{message}</span>")
        for b in (self.bars_all, self.bars_sub):
            b.setOpts(x=[], height=[])
        self.bars_delta.setOpts(x=[], height=[], brushes=[])
        self.empty_text.setText("")

    _TITLES = {"single-label": ("Class probabilities", "p", "Δp"),
               "multi-label": ("Label probabilities (on at p ≥ 0.5)", "p", "Δp"),
               "regression": ("Predicted score", "score", "Δ score")}
    # the colour key in the title (a legend inside the plot would cover the bars of many labels)
    KEY = (f"  <span style='color:{style.ALL}'>■</span> all "
           f"<span style='color:{style.SUBSET}'>■</span> subset")

    def _set_task(self, task: str) -> None:
        if task == getattr(self, "_task", None):
            return
        self._task = task
        title, left, dleft = self._TITLES.get(task, self._TITLES["single-label"])
        self.plot.getPlotItem().setTitle(title + self.KEY, color="#202020", size="10pt")
        for w, lab in ((self.plot, left), (self.delta, dleft)):
            w.getPlotItem().getAxis("left").setLabel(lab, color="#303030")
        self._y_fixed = False
        if task == "regression":
            self.plot.enableAutoRange(axis="y")

    def _set_classes(self, classes: tuple[str, ...]) -> None:
        if classes != self._classes:
            self._classes = classes
            self._tick_step = None
            order = label_order(classes)  # natural order (g2 before g10) unless the dataset chose one
            self._order = order
            self._x = np.empty(len(classes), dtype=float)
            self._x[order] = np.arange(len(classes))
            for w in (self.plot, self.delta):
                style.set_ticks(w, "bottom", [classes[j] for j in order], max_labels=max(40, len(classes)))
            self.plot.setXRange(-0.6, len(classes) - 0.4, padding=0)
            self._fit_ticks()

    def _fit_ticks(self, *_args) -> None:
        """Name as many classes under the bars as fit without overlapping (every k-th, from the first), so 23
        genre names do not run into each other; the header names the predicted ones."""
        names = [self._classes[j] for j in self._order]
        vb = self.plot.getPlotItem().getViewBox()
        if not names or vb.width() <= 0:
            return
        ax = self.plot.getPlotItem().getAxis("bottom")
        fm = QFontMetricsF(ax.style.get("tickFont") or ax.font())
        px = vb.width() / max(vb.viewRect().width(), 1e-9)  # pixels per class
        step = max(1, int(np.ceil((max(fm.horizontalAdvance(n) for n in names) + 8) / max(px, 1e-9))))
        if step == getattr(self, "_tick_step", None):
            return
        self._tick_step = step
        ticks = [(float(k), n) for k, n in enumerate(names) if k % step == 0]
        for w in (self.plot, self.delta):
            w.getPlotItem().getAxis("bottom").setTicks([ticks, []])

    def show_inspection(self, insp, true_name: str = "") -> None:
        self.inspection = insp
        classes = insp.class_names if insp.task != "regression" else ("score",)
        self._set_task(insp.task)
        self._set_classes(tuple(classes))
        x = self._x  # each class's position on the axis
        if self._shown_all is None or not np.array_equal(self._shown_all, insp.probs_all):
            self.bars_all.setOpts(x=x - 0.2, height=insp.probs_all)
            self._shown_all = insp.probs_all
        reg = insp.task == "regression"
        if insp.empty:
            self.bars_sub.setOpts(x=[], height=[])
            self.bars_delta.setOpts(x=[], height=[], brushes=[])
            self.empty_text.setText("No modality selected")
            top = 1.0 if not reg else float(np.nanmax(np.abs(insp.probs_all))) or 1.0
            self.empty_text.setPos((len(classes) - 1) / 2, top * 0.6)
            self.header.setText("<b style='color:#B00020'>No modality selected</b> — switch one on (Alt+1…) to "
                                "get a prediction. All modalities: "
                                f"<b>{html.escape(prediction_text(insp, 'all'))}</b>")
            return
        self.empty_text.setText("")
        multi = insp.task == "multi-label"
        on = [(p >= 0.5) if multi else (i == insp.pred) for i, p in enumerate(insp.probs)]
        pens = [pg.mkPen("#000000", width=2) if o else None for o in on]
        self.bars_sub.setOpts(x=x + 0.2, height=insp.probs, pens=pens)
        d = insp.delta
        self.bars_delta.setOpts(x=x, height=d, brushes=[style.UP if v >= 0 else style.DOWN for v in d])
        lim = max(0.05, float(np.nanmax(np.abs(d))) * 1.15)
        if lim != self._delta_lim:
            self.delta.setYRange(-lim, lim, padding=0)
            self._delta_lim = lim
        if not reg and not self._y_fixed:  # probabilities: softmax or one sigmoid per label
            self.plot.setYRange(0, 1.05, padding=0)
            self._y_fixed = True
        used = " + ".join(n for n, u in zip(insp.modality_names, insp.used) if u)
        p = insp.probs[insp.pred] if insp.pred >= 0 and not reg else float("nan")
        pa = insp.probs_all[insp.pred_all] if insp.pred_all >= 0 and not reg else float("nan")
        same = prediction_text(insp, "subset") == prediction_text(insp, "all") if multi else insp.pred == insp.pred_all
        verdict = ("<span style='color:#1A7F37'>same as all modalities</span>" if same else
                   "<span style='color:#B00020'><b>differs</b> from all modalities</span>")
        truth = (f" · true {'score' if reg else 'labels' if multi else 'class'} <b>{html.escape(true_name)}</b>"
                 if true_name else "")
        if reg:
            self.header.setText(f"With {used}: score <b>{insp.probs[0]:+.3f}</b> · all modalities "
                                f"<b>{insp.probs_all[0]:+.3f}</b>{truth}")
        elif multi:  # the predicted label set (p ≥ 0.5 each)
            self.header.setText(f"With <b>{used}</b>: labels <b style='font-size:large'>"
                                f"{html.escape(prediction_text(insp, 'subset'))}</b> · all modalities: "
                                f"<b>{html.escape(prediction_text(insp, 'all'))}</b> — {verdict}{truth}")
        else:
            self.header.setText(f"With <b>{used}</b>: <b style='font-size:large'>"
                                f"{html.escape(prediction_text(insp, 'subset'))}</b> (p = {style.fmt(p, 2)}) · all "
                                f"modalities: <b>{html.escape(prediction_text(insp, 'all'))}</b> "
                                f"(p = {style.fmt(pa, 2)}) — {verdict}{truth}")

    # --- export ---------------------------------------------------------------------------------------
    def plots(self) -> dict[str, pg.PlotWidget]:
        return {"class_probabilities": self.plot, "probability_change": self.delta}

    def export(self, folder, sample_title: str = "") -> list:
        out = []
        for name, w in self.plots().items():
            out += export_plot(w, folder, name)
        if self.inspection is not None:
            out += write_tables(folder, {k: v for k, v in inspection_tables(self.inspection, sample_title).items()
                                         if k in ("inspection_summary", "inspection_predictions")})
        return out


def main() -> int:
    from app.views.common.demo import run_panel_demo, synthetic_inspection
    return run_panel_demo(PredictionsPanel, lambda p: p.show_inspection(synthetic_inspection(), "7"),
                          "Predictions — synthetic sample")


if __name__ == "__main__":
    raise SystemExit(main())
