"""SoftPUPanel: the sample seen by the soft Positive-Unlabeled loss (docs/method.md).

Pseudo-label ỹ and its confidence, κ, the weights the sample gives to and receives from a fixed reference
batch of training samples, its top positives, the batch's weight matrix, and the κ histogram over training
(from the session's epoch rows when the run was trained in the app).

Run alone: `python -m app.views.explorer.softpu_panel` shows it on a synthetic sample.
"""
from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QGridLayout, QHeaderView, QLabel, QSizePolicy, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from app.views.common.plot_util import clear_message, fit_title, message_item, plot_message, show_message
from app.views.common import style
from app.views.common.export import export_plot
from app.core.analysis.tables import write_csv

NO_SOFT_PU = "no soft-PU in this method"
NO_SAMPLE = "no sample yet"
# the plots' smallest heights: the panel shares the explorer's lower half at 1280 × 800 with six modalities
MIN_WEIGHTS_H, MIN_MATRIX_H = 90, 100


def display_order(pu) -> np.ndarray:
    """Reference rows grouped by ỹ (labeled rows first inside a group), so the matrix shows class blocks."""
    n = len(pu.ref_indices)
    return np.array(sorted(range(n), key=lambda r: (pu.ref_class_names[r], not bool(pu.ref_labeled[r]),
                                                    int(pu.ref_indices[r]))), dtype=int)


class SoftPUPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.softpu = None
        self._note = ""
        self.kappa_history: tuple | None = None
        self.header = style.title_label()
        self.header.setToolTip(style.TIP_PSEUDO + "\n\n" + style.TIP_KAPPA)
        self.header.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.has_weights = False  # the plots show a sample's soft-PU weights (not a message)

        self.weights = style.plot_widget("", left="w", bottom="reference samples, grouped by ỹ",
                                         min_height=MIN_WEIGHTS_H,
                                         tooltip="↑ w[sample, k]: how much reference sample k counts as a positive "
                                                 "of this sample as an anchor.\n↓ w[k, sample]: how much this sample "
                                                 "counts as a positive of anchor k (its κ when it is unlabeled).\n"
                                                 "Dark bars: labeled reference samples.")
        fit_title(self.weights, "Weights the sample gives (↑) and receives (↓), reference batch", color="#202020",
                  size="10pt")
        self.weights.getPlotItem().getAxis("bottom").setTicks([[], []])
        self.bars_gives = pg.BarGraphItem(x=[], height=[], width=0.8, brushes=[], pen=None)
        self.bars_recv = pg.BarGraphItem(x=[], height=[], width=0.8, brushes=[], pen=None)
        self.weights.addItem(self.bars_gives)
        self.weights.addItem(self.bars_recv)
        self.weights.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen("#808080")))
        self.weights.setYRange(-1.05, 1.05, padding=0)

        self.top = QTableWidget(0, 5)
        self.top.setHorizontalHeaderLabels(["train #", "weight", "ỹ / label", "labeled", "κ"])
        self.top.verticalHeader().setVisible(False)
        self.top.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.top.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.top.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.top.horizontalHeader().setStretchLastSection(True)
        self.top.setToolTip("The reference samples this sample weighs most as positives (excluding itself).")
        top_box = QWidget()
        tl = QVBoxLayout(top_box)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(QLabel("<b>Top positives</b>"))
        tl.addWidget(self.top)

        self.matrix = style.plot_widget(min_height=MIN_MATRIX_H,
                                        tooltip="w[j, k] for every anchor j (row) and candidate k (column) of the "
                                                "reference batch plus this sample (last row and column, marked). 1 on "
                                                "the diagonal.")
        fit_title(self.matrix, "Weight matrix of the batch (rows: anchors, last = this sample)", color="#202020",
                  size="10pt")
        self.matrix_img = pg.ImageItem(axisOrder="row-major")
        self.matrix_img.setLookupTable(style.heat_lut("viridis"))
        self.matrix.addItem(self.matrix_img)
        self.matrix.getPlotItem().invertY(True)
        self.matrix.getPlotItem().setAspectLocked(True)
        for ax in ("left", "bottom"):
            self.matrix.getPlotItem().getAxis(ax).setTicks([[], []])
        self.sample_lines = [pg.InfiniteLine(angle=0, pen=pg.mkPen("#D55E00", width=1.5)),
                             pg.InfiniteLine(angle=90, pen=pg.mkPen("#D55E00", width=1.5))]
        for ln in self.sample_lines:
            self.matrix.addItem(ln)

        self.hist = style.plot_widget(left="κ", bottom="epoch", min_height=MIN_MATRIX_H,
                                      tooltip=style.TIP_KAPPA + "\n\nEach column is one epoch's histogram of κ over "
                                              "the unlabeled training samples (brighter = more).")
        fit_title(self.hist, "κ of unlabeled samples over training", color="#202020", size="10pt")
        self.hist_img = pg.ImageItem(axisOrder="row-major")
        self.hist_img.setLookupTable(style.heat_lut("inferno"))
        self.hist.addItem(self.hist_img)
        show_message(self.hist, "κ histogram unavailable")
        self.hist_note = message_item(self.hist)  # the histogram's message, word-wrapped in the plot

        self.top.setMinimumHeight(MIN_WEIGHTS_H - 20)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.header)  # word-wrapped: the whole message, however narrow the panel
        lay = QGridLayout()
        lay.addWidget(self.weights, 0, 0)
        lay.addWidget(top_box, 0, 1)
        lay.addWidget(self.matrix, 1, 0)
        lay.addWidget(self.hist, 1, 1)
        lay.setColumnStretch(0, 3)
        lay.setColumnStretch(1, 2)
        lay.setRowStretch(0, 2)
        lay.setRowStretch(1, 3)
        outer.addLayout(lay, 1)
        self.clear("Soft-PU weights appear when a model and a sample are loaded.")
        self.set_kappa_history(None, note="no run selected")

    # --- sample -----------------------------------------------------------------------------------------
    def clear(self, message: str = "", short: str = NO_SAMPLE) -> None:
        """No weights on screen: the header says `message` (in full, wrapped), the plots `short`."""
        self.softpu = None
        self._note = ""
        self.header.setText(f"<span style='color:#606060'>{html.escape(message)}</span>")
        self._clear_plots(short)

    def _clear_plots(self, short: str) -> None:
        self.has_weights = False
        self.bars_gives.setOpts(x=[], height=[], brushes=[])
        self.bars_recv.setOpts(x=[], height=[], brushes=[])
        self.top.setRowCount(0)
        self.matrix_img.clear()
        for ln in self.sample_lines:
            ln.setVisible(False)
        for w in (self.weights, self.matrix):
            show_message(w, short)

    def plot_messages(self) -> dict[str, str]:
        """What each plot says for want of data ("" where it shows data)."""
        return {name: plot_message(w) for name, w in self.plots().items()}

    def show_softpu(self, pu, note: str = "") -> None:
        if pu is None:
            self.clear(note or "Soft-PU needs the training split (the reference batch); it is not available.")
            return
        if pu is self.softpu and note == self._note:
            return  # a toggle: soft-PU does not depend on the subset, nothing to redraw
        self.softpu, self._note = pu, note
        if not pu.prototypes_seen:  # the method keeps no labeled prototypes: it has no κ and no weights
            extra = f"<br><span style='color:#606060'>{html.escape(note)}</span>" if note else ""
            self.header.setText("<b>No soft-PU in this run's method</b>: it keeps no labeled class prototypes, so "
                                "it computes neither the pseudo-label weight κ nor the positive weights of its "
                                "samples (the Robult methods with the soft-PU loss do)." + extra)
            self._clear_plots(NO_SOFT_PU)
            return
        conf = style.fmt(pu.confidence, 2)
        name = html.escape(pu.pseudo_label_name)  # "< 0" (a regression sign bin) is not a tag
        if pu.labeled:
            who = f"labeled training sample: ỹ = its label <b>{name}</b>, κ = 1"
        else:
            rule = {"multi-label": "the labels with σ(c<sub>0</sub>(S)) ≥ 0.5",
                    "regression": "the sign of c<sub>0</sub>(S)"}.get(pu.task, "argmax c<sub>0</sub>(S)")
            who = f"pseudo-label ỹ = {rule} = <b>{name}</b>" + ("" if pu.task == "regression" else
                                                                    f" (confidence {conf})")
        kappa_txt = (f"κ = <b>{pu.kappa:.3f}</b> ({pu.kernel}, σ = {pu.sigma:.3f})" if pu.prototypes_seen else
                     "κ = 0: <i>this run keeps no labeled prototypes</i> (its method does not use soft-PU)")
        parts = [who, kappa_txt, f"{pu.prototypes_seen} class prototypes",
                 f"gives Σw = {float(np.sum(pu.gives)):.2f}, receives Σw = {float(np.sum(pu.receives)):.2f}"]
        warn = f"<br><span style='color:#B00020'>⚠ {pu.reason}</span>" if not pu.valid else ""
        extra = f"<br><span style='color:#606060'>{note}</span>" if note else ""
        self.header.setText(" · ".join(parts) + warn + extra)

        for w in (self.weights, self.matrix):
            clear_message(w)
        self.has_weights = True
        for ln in self.sample_lines:
            ln.setVisible(True)
        order = display_order(pu)
        n = len(order)
        x = np.arange(n, dtype=float)
        lab = pu.ref_labeled[order]
        self.bars_gives.setOpts(x=x, height=pu.gives[order],
                                brushes=[style.colour(style.GIVES, 255 if l else 120) for l in lab])
        self.bars_recv.setOpts(x=x, height=-pu.receives[order],
                               brushes=[style.colour(style.RECEIVES, 255 if l else 120) for l in lab])
        self.weights.setXRange(-1, n, padding=0)
        full = np.concatenate([order, [n]])
        mat = pu.matrix[np.ix_(full, full)]
        self.matrix_img.setImage(mat, levels=(0.0, 1.0))
        self.matrix_img.setRect(0, 0, n + 1, n + 1)
        self.sample_lines[0].setPos(n)
        self.sample_lines[1].setPos(n)

        self.top.setRowCount(len(pu.top))
        for i, (row, split_idx, w, cname, labeled) in enumerate(pu.top):
            vals = [str(split_idx), f"{w:.3g}", cname, "yes" if labeled else "", f"{float(pu.ref_kappa[row]):.3g}"]
            for j, v in enumerate(vals):
                item = QTableWidgetItem(v)
                if j in (1, 4):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.top.setItem(i, j, item)

    # --- training history -------------------------------------------------------------------------------
    def set_kappa_history(self, hists: list | None, edges: list | None = None, epochs: list | None = None,
                          note: str = "") -> None:
        """`hists`: one normalised histogram per epoch (the session's `kappa_hist` rows), or None with a note
        saying why it is unavailable."""
        if not hists:
            self.kappa_history = None
            self.hist_img.clear()
            self.hist.setXRange(0, 1, padding=0)  # no axes of an earlier run stay behind
            self.hist.setYRange(0, 1, padding=0)
            show_message(self.hist, f"κ histogram unavailable:\n{note}" if note else "κ histogram unavailable")
            return
        h = np.array(hists, dtype=float)  # (E, bins)
        edges = list(edges) if edges else list(np.linspace(0, 1, h.shape[1] + 1))
        epochs = list(epochs) if epochs else list(range(1, len(h) + 1))
        self.kappa_history = (h, edges, epochs)
        clear_message(self.hist)
        img = h.T  # (bins, E): rows = κ bins (y), columns = epochs (x)
        self.hist_img.setImage(img, levels=(0.0, max(1e-9, float(img.max()))))
        self.hist_img.setRect(epochs[0] - 0.5, edges[0], len(epochs), edges[-1] - edges[0])
        self.hist.setXRange(epochs[0] - 0.5, epochs[0] - 0.5 + len(epochs), padding=0)
        self.hist.setYRange(edges[0], edges[-1], padding=0)

    # --- export -----------------------------------------------------------------------------------------
    def plots(self) -> dict[str, pg.PlotWidget]:
        return {"softpu_weights": self.weights, "softpu_matrix": self.matrix, "kappa_history": self.hist}

    def export(self, folder, sample_title: str = "") -> list:
        from pathlib import Path
        out = []
        for name, w in self.plots().items():
            out += export_plot(w, folder, name)
        pu = self.softpu
        if pu is not None and self.has_weights:
            n = len(pu.ref_indices)
            out.append(write_csv(Path(folder) / "softpu_reference.csv",
                                 ["ref_row", "train_index", "labeled", "pseudo_or_label", "kappa", "weight_given",
                                  "weight_received"],
                                 [[r, int(pu.ref_indices[r]), bool(pu.ref_labeled[r]), pu.ref_class_names[r],
                                   float(pu.ref_kappa[r]), float(pu.gives[r]), float(pu.receives[r])]
                                  for r in range(n)]))
            labels = [f"ref{r}" for r in range(n)] + ["sample"]
            out.append(write_csv(Path(folder) / "softpu_matrix.csv", ["anchor"] + labels,
                                 [[labels[i], *[float(v) for v in pu.matrix[i]]] for i in range(n + 1)]))
        if self.kappa_history is not None:
            h, edges, epochs = self.kappa_history
            out.append(write_csv(Path(folder) / "kappa_history.csv",
                                 ["epoch"] + [f"{edges[i]:.2f}-{edges[i + 1]:.2f}" for i in range(len(edges) - 1)],
                                 [[e, *[float(v) for v in row]] for e, row in zip(epochs, h)]))
        return out


def main() -> int:
    from app.views.common.demo import run_panel_demo, synthetic_inspection, synthetic_kappa_history

    def fill(p: SoftPUPanel) -> None:
        p.show_softpu(synthetic_inspection().softpu)
        hists, edges = synthetic_kappa_history()
        p.set_kappa_history(hists, edges)
    return run_panel_demo(SoftPUPanel, fill, "Soft-PU weights — synthetic sample", size=(1000, 650))


if __name__ == "__main__":
    raise SystemExit(main())
