"""LatentsPanel: per modality ‖Z^i‖ and ‖U^i‖ (and their ratio), what each modality predicts on its own,
c([U^i, Z^i]), and the reconstruction error. Modalities switched off are drawn faded.

Run alone: `python -m app.views.explorer.latents_panel` shows it on a synthetic sample.
"""
from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QGridLayout, QWidget

from . import style
from .export import export_plot, inspection_tables, write_tables

MAX_ANNOTATED_CELLS = 160


class LatentsPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.inspection = None
        self.norms = style.plot_widget(f"<span style='color:{style.Z_COLOUR}'>■</span> ‖Z<sup>i</sup>‖ redundant · "
                                       f"<span style='color:{style.U_COLOUR}'>■</span> ‖U<sup>i</sup>‖ unique",
                                       left="norm", min_height=150,
                                       tooltip=style.TIP_Z + "\n\n" + style.TIP_U + "\n\n" + style.TIP_RATIO)
        self.bars_z = pg.BarGraphItem(x=[], height=[], width=0.36, brush=style.Z_COLOUR, brushes=[], pen=None,
                                      name="‖Z‖ redundant (g_0)")
        self.bars_u = pg.BarGraphItem(x=[], height=[], width=0.36, brush=style.U_COLOUR, brushes=[], pen=None,
                                      name="‖U‖ unique (g_i)")
        self.norms.addItem(self.bars_z)
        self.norms.addItem(self.bars_u)
        self.ratio_texts: list[pg.TextItem] = []

        self.modpred = style.plot_widget("Each modality alone: c([U<sup>i</sup>, Z<sup>i</sup>])", min_height=150,
                                         tooltip=style.TIP_MODPRED)
        self.modpred_img = pg.ImageItem(axisOrder="row-major")
        self.modpred_img.setLookupTable(style.heat_lut("viridis"))
        self.modpred.addItem(self.modpred_img)
        self.modpred.getPlotItem().invertY(True)
        self.cell_texts: list[pg.TextItem] = []

        self.rec = style.plot_widget("Reconstruction error ‖H − Ĥ‖²", left="MSE", min_height=130,
                                     tooltip=style.TIP_REC)
        self.bars_rec = pg.BarGraphItem(x=[], height=[], width=0.5, brushes=[], pen=None)
        self.rec.addItem(self.bars_rec)
        for w in (self.norms, self.rec):
            w.getPlotItem().getAxis("left").enableAutoSIPrefix(False)

        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.norms, 0, 0)
        lay.addWidget(self.rec, 0, 1)
        lay.addWidget(self.modpred, 1, 0, 1, 2)
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
            self._names = names
            style.set_ticks(self.norms, "bottom", names)
            style.set_ticks(self.rec, "bottom", names)
            style.set_ticks(self.modpred, "left", names)
            for w in (self.norms, self.rec):
                w.setXRange(-0.6, len(names) - 0.4, padding=0)
            for t in self.ratio_texts:
                self.norms.removeItem(t)
            self.ratio_texts = []
            for _ in names:
                t = pg.TextItem("", color="#303030", anchor=(0.5, 1.0))
                self.norms.addItem(t)
                self.ratio_texts.append(t)
        if classes != self._classes or len(self.cell_texts) != len(names) * len(classes):
            self._classes = classes
            style.set_ticks(self.modpred, "bottom", classes, positions=np.arange(len(classes)) + 0.5)
            for t in self.cell_texts:
                self.modpred.removeItem(t)
            self.cell_texts = []
            if len(names) * len(classes) <= MAX_ANNOTATED_CELLS:
                for i in range(len(names)):
                    for j in range(len(classes)):
                        t = pg.TextItem("", anchor=(0.5, 0.5))
                        t.setPos(j + 0.5, i + 0.5)
                        self.modpred.addItem(t)
                        self.cell_texts.append(t)
        style.set_ticks(self.modpred, "left", names, positions=np.arange(len(names)) + 0.5)

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
        img = np.array(insp.mod_probs, dtype=float)  # (M, C)
        if insp.task == "regression":
            img = np.tanh(img)
            levels = (-1.0, 1.0)
        else:
            levels = (0.0, 1.0)
        self.modpred_img.setImage(img, levels=levels)
        self.modpred_img.setRect(0, 0, img.shape[1], m)
        self.modpred.setXRange(0, img.shape[1], padding=0)
        self.modpred.setYRange(0, m, padding=0)
        if self.cell_texts:
            for i in range(m):
                for j in range(img.shape[1]):
                    v = float(insp.mod_probs[i, j])
                    best = j == insp.mod_pred[i]
                    self.cell_texts[i * img.shape[1] + j].setText(f"{v:.2f}" if (v >= 0.01 or best) else "")
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
        classes = insp.class_names if insp.task != "regression" else ("score",)
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
        c = len(classes)
        if self.cell_texts:
            for i in range(len(names)):
                for j in range(c):
                    v = float(insp.mod_probs[i, j])
                    t = self.cell_texts[i * c + j]
                    if not used[i]:
                        t.setColor("#A0A0A0")
                    else:
                        t.setColor("#000000" if (v > 0.6 and insp.task != "regression") else "#FFFFFF")
        on = [n for n, u in zip(names, used) if u]
        self.modpred.getPlotItem().setTitle(
            "Each modality alone: c([U<sup>i</sup>, Z<sup>i</sup>])  —  "
            + ", ".join(f"{n} → {html.escape(insp.prediction_text(n))}" for n in names)
            + ("" if on else "  (none on)"), color="#202020", size="10pt")

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
    from .demo import run_panel_demo, synthetic_inspection
    return run_panel_demo(LatentsPanel, lambda p: p.show_inspection(synthetic_inspection((True, False))),
                          "Latents — synthetic sample")


if __name__ == "__main__":
    raise SystemExit(main())
