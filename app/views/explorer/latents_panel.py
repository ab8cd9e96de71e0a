"""LatentsPanel: per modality ‖Z^i‖ and ‖U^i‖ (and their ratio), what each modality predicts on its own,
c([U^i, Z^i]), and the reconstruction error. Modalities switched off are drawn faded.

Run alone: `python -m app.views.explorer.latents_panel` shows it on a synthetic sample.
"""
from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QFontMetricsF, QTextOption
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QScrollArea, QWidget

from app.views.common import style
from app.views.common.export import export_plot
from app.core.analysis.tables import inspection_tables, write_tables
from app.core.analysis.task_language import label_order, prediction_text

MAX_ANNOTATED_CELLS = 400  # beyond this no cell is annotated (the colour says it)
LABELS_AS_ROWS = 12  # more classes than this: the heat map turns, one row per class / label
ROW_PIXELS = 18  # the height of a label's row when the labels are rows (the heat map scrolls)
TITLE_CHARS = 70  # the modalities' own predictions go under the heat map when longer (labels sets of many labels)
CELL_FONT_PT = (9.0, 8.0, 7.0)  # a cell's value is drawn at the largest size that fits its cell, else hidden
TITLE_PT = (10.0, 9.0, 8.0)  # a title is drawn at the largest size at which it fits its plot on one line …
TITLE_WRAP_PT = 9.0  # … else wrapped to the plot's width at this size


class FittedTitle(QObject):
    """A plot's (rich-text) title that always fits the plot's width, its full text kept: at 10, 9 or 8 pt on one
    line, else wrapped at word boundaries. It follows the widget's size. (A pyqtgraph title wider than its
    plot widens the plot item beyond its widget, and title and axes are clipped.)"""

    def __init__(self, plot: pg.PlotWidget, text: str = "") -> None:
        super().__init__(plot)
        self.plot = plot
        self.text = ""
        self.point_size = TITLE_PT[0]
        self.wrapped = False
        plot.installEventFilter(self)
        if text:
            self.set_text(text)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        if obj is self.plot and event.type() == QEvent.Type.Resize:
            self.apply(event.size().width())
        return False

    def set_text(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.apply()

    def room(self, width: int) -> float:
        """The width the title may take in a plot widget `width` pixels wide: the view box's column (what the
        axes beside it need comes off, and the text item's margins)."""
        p = self.plot.getPlotItem()
        others = max(0.0, p.effectiveSizeHint(Qt.SizeHint.MinimumSize).width() - p.titleLabel.minimumWidth())
        return max(30.0, width - others - 12.0)

    def apply(self, width: int | None = None) -> None:
        p = self.plot.getPlotItem()
        label = p.titleLabel
        resizing = width is not None
        room = self.room(self.plot.width() if width is None else width)
        label.item.setTextWidth(-1)
        self.wrapped = False
        for pt in TITLE_PT:
            p.setTitle(self.text, color="#202020", size=f"{pt:g}pt")
            if label.item.boundingRect().width() <= room:
                break
        else:
            pt = TITLE_WRAP_PT
            p.setTitle(self.text, color="#202020", size=f"{pt:g}pt")
            label.item.document().setDefaultTextOption(
                QTextOption(Qt.AlignmentFlag.AlignHCenter))  # wrapping words, centred like a one-line title
            label.item.setTextWidth(room)
            label.updateMin()
            label.resizeEvent(None)
            self.wrapped = True
        self.point_size = pt
        if not resizing and not getattr(self.plot, "closed", False):
            # pyqtgraph lays the plot out in its widget only when the widget resizes
            pg.GraphicsView.setRange(self.plot, self.plot.range, padding=0, disableAutoPixel=False)


class LatentsPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.inspection = None
        self.norms = style.plot_widget(left="norm", min_height=150,
                                       tooltip=style.TIP_Z + "\n\n" + style.TIP_U + "\n\n" + style.TIP_RATIO)
        self.bars_z = pg.BarGraphItem(x=[], height=[], width=0.36, brush=style.Z_COLOUR, brushes=[], pen=None,
                                      name="‖Z‖ redundant (g_0)")
        self.bars_u = pg.BarGraphItem(x=[], height=[], width=0.36, brush=style.U_COLOUR, brushes=[], pen=None,
                                      name="‖U‖ unique (g_i)")
        self.norms.addItem(self.bars_z)
        self.norms.addItem(self.bars_u)
        self.ratio_texts: list[pg.TextItem] = []

        self.modpred = style.plot_widget(min_height=150, tooltip=style.TIP_MODPRED)
        self.modpred_img = pg.ImageItem(axisOrder="row-major")
        self.modpred_img.setLookupTable(style.heat_lut("viridis"))
        self.modpred.addItem(self.modpred_img)
        self.modpred.getPlotItem().invertY(True)
        self.modpred.getPlotItem().getViewBox().sigResized.connect(self._fit_cell_texts)
        self.cell_texts: list[pg.TextItem] = []
        self.cell_cells: list[tuple[int, int]] = []  # (modality, class) of each cell text
        self.label_order: list[int] = []  # the classes / labels in the order drawn (task_language.label_order)
        self.labels_as_rows = False  # many labels: one row per label, so every name is readable
        self.cell_font_pt: float | None = None  # the size the cell values are drawn at (None: hidden)
        self.modpred_scroll = QScrollArea()  # 23 labels as rows scroll instead of being squeezed
        self.modpred_scroll.setWidgetResizable(True)
        self.modpred_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.modpred_scroll.setWidget(self.modpred)
        self.modpred_note = QLabel("")
        self.modpred_note.setWordWrap(True)
        self.modpred_note.setVisible(False)
        self.modpred_note.setToolTip("What each modality alone predicts")

        self.rec = style.plot_widget(left="MSE", min_height=130, tooltip=style.TIP_REC)
        self.bars_rec = pg.BarGraphItem(x=[], height=[], width=0.5, brushes=[], pen=None)
        self.rec.addItem(self.bars_rec)
        for w in (self.norms, self.rec):
            w.getPlotItem().getAxis("left").enableAutoSIPrefix(False)

        # the titles fit their plots at any width (at 1280 px three were clipped): smaller type, else wrapped
        self.titles = {
            "norms": FittedTitle(self.norms, f"<span style='color:{style.Z_COLOUR}'>■</span> ‖Z<sup>i</sup>‖ "
                                             f"redundant · <span style='color:{style.U_COLOUR}'>■</span> "
                                             f"‖U<sup>i</sup>‖ unique"),
            "modpred": FittedTitle(self.modpred, "Each modality alone: c([U<sup>i</sup>, Z<sup>i</sup>])"),
            "rec": FittedTitle(self.rec, "Reconstruction error ‖H − Ĥ‖²")}

        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.norms, 0, 0)
        lay.addWidget(self.rec, 0, 1)
        lay.addWidget(self.modpred_scroll, 1, 0, 1, 2)
        lay.addWidget(self.modpred_note, 2, 0, 1, 2)
        lay.setRowStretch(0, 1)
        lay.setRowStretch(1, 1)
        self._names: tuple[str, ...] = ()
        self._classes: tuple[str, ...] = ()
        self._shown_used: tuple[bool, ...] = ()

    def clear(self) -> None:
        self.inspection = None
        self._shown_used = ()
        for b in (self.bars_z, self.bars_u, self.bars_rec):
            b.setOpts(x=[], height=[], brushes=[])
        self.modpred_img.clear()
        for t in self.ratio_texts + self.cell_texts:
            t.setText("")

    def _ensure_axes(self, names: tuple[str, ...], classes: tuple[str, ...]) -> None:
        if names != self._names:
            style.set_ticks(self.norms, "bottom", names)
            style.set_ticks(self.rec, "bottom", names)
            for w in (self.norms, self.rec):
                w.setXRange(-0.6, len(names) - 0.4, padding=0)
            for t in self.ratio_texts:
                self.norms.removeItem(t)
            self.ratio_texts = []
            for _ in names:
                t = pg.TextItem("", color="#303030", anchor=(0.5, 1.0))
                self.norms.addItem(t)
                self.ratio_texts.append(t)
        if names != self._names or classes != self._classes:
            self._names, self._classes = names, classes
            self.label_order = label_order(classes)
            self.labels_as_rows = len(classes) > LABELS_AS_ROWS
            shown = [classes[j] for j in self.label_order]
            ax_cls, ax_mod = ("left", "bottom") if self.labels_as_rows else ("bottom", "left")
            style.set_ticks(self.modpred, ax_cls, shown, positions=np.arange(len(classes)) + 0.5,
                            max_labels=max(40, len(classes)))  # every label named (the rows scroll)
            style.set_ticks(self.modpred, ax_mod, names, positions=np.arange(len(names)) + 0.5)
            for t in self.cell_texts:
                self.modpred.removeItem(t)
            self.cell_texts, self.cell_cells = [], []
            if len(names) * len(classes) <= MAX_ANNOTATED_CELLS:
                for i in range(len(names)):
                    for k, j in enumerate(self.label_order):
                        t = pg.TextItem("", anchor=(0.5, 0.5))
                        t.textItem.document().setDocumentMargin(1)
                        t.setPos(*((i + 0.5, k + 0.5) if self.labels_as_rows else (k + 0.5, i + 0.5)))
                        self.modpred.addItem(t)
                        self.cell_texts.append(t)
                        self.cell_cells.append((i, j))
            self.modpred.setMinimumHeight(max(150, ROW_PIXELS * len(classes) + 90) if self.labels_as_rows
                                          else 150)

    def _fit_cell_texts(self, *_args) -> None:
        """Draw each cell's value at the largest font size that fits its cell (9, 8 or 7 pt), or hide the
        values when even the smallest does not: values never overlap, whatever the number of labels."""
        if not self.cell_texts:
            return
        vb = self.modpred.getPlotItem().getViewBox()
        rect = vb.viewRect()
        if rect.width() <= 0 or rect.height() <= 0:
            return
        px_w = vb.width() / rect.width()  # pixels per cell (cells are 1 × 1 in view units)
        px_h = vb.height() / rect.height()
        widest = max((t.textItem.toPlainText() for t in self.cell_texts), key=len, default="") or "0.00"
        margin = 2 * self.cell_texts[0].textItem.document().documentMargin()
        size = None
        for pt in CELL_FONT_PT:
            f = self.cell_texts[0].textItem.font()
            f.setPointSizeF(pt)
            fm = QFontMetricsF(f)
            if fm.horizontalAdvance(widest) + margin + 2 <= px_w and fm.height() + margin <= px_h:
                size = pt
                break
        self.cell_font_pt = size
        for t in self.cell_texts:
            if size is None:
                t.setVisible(False)
                continue
            f = t.textItem.font()
            if f.pointSizeF() != size:
                f.setPointSizeF(size)
                t.setFont(f)
            t.setVisible(True)

    def show_inspection(self, insp) -> None:
        prev, self.inspection = self.inspection, insp
        if prev is not None and self._same_encoding(prev, insp):
            self._show_subset(insp)  # a toggle: only what is on / off changes
            return
        names = insp.modality_names
        classes = insp.class_names if insp.task != "regression" else ("score",)
        self._ensure_axes(tuple(names), tuple(classes))
        m = len(names)
        x = np.arange(m, dtype=float)
        a = [255 if u else style.DISABLED_ALPHA for u in insp.used]
        self.bars_z.setOpts(x=x - 0.19, height=insp.z_norm, brushes=[style.colour(style.Z_COLOUR, al) for al in a])
        self.bars_u.setOpts(x=x + 0.19, height=insp.u_norm, brushes=[style.colour(style.U_COLOUR, al) for al in a])
        top = float(max(np.max(insp.z_norm), np.max(insp.u_norm))) if m else 1.0
        self.norms.setYRange(0, top * 1.2 or 1.0, padding=0)
        for i, t in enumerate(self.ratio_texts):
            t.setPos(i, max(insp.z_norm[i], insp.u_norm[i]) + top * 0.02)
        self.bars_rec.setOpts(x=x, height=insp.rec_err, brushes=[style.colour(style.REC_COLOUR, al) for al in a])
        self.rec.setYRange(0, float(np.max(insp.rec_err)) * 1.2 or 1.0, padding=0)
        probs = np.array(insp.mod_probs, dtype=float)[:, self.label_order]  # (M, C), classes in label order
        reg = insp.task == "regression"
        img, levels = (np.tanh(probs), (-1.0, 1.0)) if reg else (probs, (0.0, 1.0))
        if self.labels_as_rows:
            img = img.T  # (C, M): one row per label
        self.modpred_img.setImage(img, levels=levels)
        rows, cols = img.shape
        self.modpred_img.setRect(0, 0, cols, rows)
        self.modpred.setXRange(0, cols, padding=0)
        self.modpred.setYRange(0, rows, padding=0)
        for t, (i, j) in zip(self.cell_texts, self.cell_cells):
            v = float(insp.mod_probs[i, j])
            best = j == insp.mod_pred[i]
            t.setText(f"{v:+.2f}" if reg else f"{v:.2f}" if (v >= 0.01 or best) else "")
        self._fit_cell_texts()
        self._show_subset(insp, values_changed=True)

    @staticmethod
    def _same_encoding(a, b) -> bool:
        """Two inspections of one encoded sample (they differ only by the subset)."""
        return (a.modality_names == b.modality_names and a.class_names == b.class_names and a.present == b.present
                and np.array_equal(a.z_norm, b.z_norm) and np.array_equal(a.u_norm, b.u_norm)
                and np.array_equal(a.mod_probs, b.mod_probs) and np.array_equal(a.rec_err, b.rec_err))

    def _show_subset(self, insp, values_changed: bool = False) -> None:
        """Fade the modalities that are off; the values are already on screen."""
        names = insp.modality_names
        used = tuple(insp.used)
        if not values_changed and used == self._shown_used:
            return
        self._shown_used = used
        a = [255 if u else style.DISABLED_ALPHA for u in used]
        if not values_changed:
            self.bars_z.setOpts(brushes=[style.colour(style.Z_COLOUR, al) for al in a])
            self.bars_u.setOpts(brushes=[style.colour(style.U_COLOUR, al) for al in a])
            self.bars_rec.setOpts(brushes=[style.colour(style.REC_COLOUR, al) for al in a])
        short = len(self.ratio_texts) > 4  # M = 6: the full "U/Z 0.24 (off)" labels overlap their neighbours
        for i, t in enumerate(self.ratio_texts):
            t.setText(f"{insp.ratio[i]:.2f}" if short else
                      f"U/Z {insp.ratio[i]:.2f}" + ("" if used[i] else " (off)"))
        for t, (i, j) in zip(self.cell_texts, self.cell_cells):
            v = float(insp.mod_probs[i, j])
            if not used[i]:
                t.setColor("#A0A0A0")
            else:
                t.setColor("#000000" if (v > 0.6 and insp.task != "regression") else "#FFFFFF")
        on = [n for n, u in zip(names, used) if u]
        what = {"multi-label": " (σ per label)", "regression": " (score)"}.get(insp.task, " (softmax p)")
        preds = ", ".join(f"{n} → {prediction_text(insp, n)}" for n in names) + ("" if on else "  (none on)")
        title = f"Each modality alone: c([U<sup>i</sup>, Z<sup>i</sup>]){what}"
        if len(preds) <= TITLE_CHARS:  # short enough for the title (a long title would widen the plot)
            title += "  —  " + html.escape(preds)
            self.modpred_note.setText("")
        else:
            self.modpred_note.setText(html.escape(preds))
        self.modpred_note.setVisible(bool(self.modpred_note.text()))
        self.titles["modpred"].set_text(title)

    def plots(self) -> dict[str, pg.PlotWidget]:
        return {"latent_norms": self.norms, "modality_predictions": self.modpred, "reconstruction_error": self.rec}

    def export(self, folder, sample_title: str = "") -> list:
        out = []
        for name, w in self.plots().items():
            out += export_plot(w, folder, name)
        if self.inspection is not None:
            out += write_tables(folder, {k: v for k, v in inspection_tables(self.inspection, sample_title).items()
                                         if k == "inspection_modalities"})
        return out


def main() -> int:
    from app.views.common.demo import run_panel_demo, synthetic_inspection
    return run_panel_demo(LatentsPanel, lambda p: p.show_inspection(synthetic_inspection((True, False))),
                          "Latents — synthetic sample")


if __name__ == "__main__":
    raise SystemExit(main())
