"""Shared look of the explorer's plots: colours, plot widgets, heat maps and the tooltips that explain Z, U, κ."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from app.views.common.plot_util import no_si_prefix
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QLabel, QSizePolicy

# Okabe–Ito: distinguishable for colour-blind readers, and in print.
CATEGORICAL = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
               "#999999", "#882255", "#44AA99", "#117733")
SUBSET = "#0072B2"  # the chosen modality subset
ALL = "#B0B0B0"  # all modalities on (the reference)
Z_COLOUR = "#009E73"  # redundant part
U_COLOUR = "#E69F00"  # unique part
REC_COLOUR = "#CC79A7"
GIVES = "#0072B2"
RECEIVES = "#D55E00"
UP, DOWN = "#1A9850", "#D73027"
DISABLED_ALPHA = 60

TIP_Z = ("Z^i = g_0(H^i): redundant part, shared projector g_0. One projector maps every modality into one space, "
         "aligned with the fused S, so what several modalities share lives here. ‖Z^i‖ is its size.")
TIP_U = ("U^i = g_i(H^i): unique part, modality projector g_i. The reconstruction loss makes U^i carry what Z^i "
         "lacks. ‖U^i‖ is its size.")
TIP_RATIO = "‖U^i‖ / ‖Z^i‖: how much of the modality's code is its unique part rather than the shared one."
TIP_KAPPA = ("κ: soft weight: RBF kernel of the distance to the labeled class prototype, "
             "κ = exp(−d² / 2σ²), d = ‖s − prototype(ỹ)‖ (the kernel and σ are the run's settings). An unlabeled "
             "sample counts as a positive of anchors with the same pseudo-label ỹ with weight κ.")
TIP_PSEUDO = "ỹ: the pseudo-label argmax c_0(S) of the fusion head on S = g_0(f_0(H)), all modalities (detached)."
TIP_MODPRED = ("c([U^i, Z^i]): what each modality predicts on its own with the shared classifier c. The subset's "
               "prediction is the mean of these logits over the modalities switched on.")
TIP_REC = ("Reconstruction error ‖H^i − r_i([U^i, Z^i])‖² (mean over features): how well the unique and redundant "
           "parts together recover the encoder output H^i.")


def colour(c: str, alpha: int = 255) -> QColor:
    q = QColor(c)
    q.setAlpha(alpha)
    return q


def plot_widget(title: str = "", *, left: str = "", bottom: str = "", tooltip: str = "",
                min_height: int = 150) -> pg.PlotWidget:
    """A white plot with readable axes; the mouse does not pan/zoom by accident (right-click menu still works)."""
    w = pg.PlotWidget(background="w")
    w.setMinimumHeight(min_height)
    w.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    p = w.getPlotItem()
    if title:
        p.setTitle(title, color="#202020", size="10pt")
    for name, label in (("left", left), ("bottom", bottom)):
        ax = p.getAxis(name)
        ax.setPen(pg.mkPen("#606060"))
        ax.setTextPen(pg.mkPen("#303030"))
        no_si_prefix(ax)
        if label:
            ax.setLabel(label, color="#303030")
    p.setMouseEnabled(x=False, y=False)
    p.hideButtons()
    if tooltip:
        w.setToolTip(tooltip)
    return w


def set_ticks(plot: pg.PlotWidget, axis: str, labels: list[str] | tuple[str, ...], positions=None,
              max_labels: int = 40) -> None:
    pos = list(range(len(labels))) if positions is None else list(positions)
    step = max(1, int(np.ceil(len(labels) / max_labels)))
    ticks = [(float(p), str(t)) for i, (p, t) in enumerate(zip(pos, labels)) if i % step == 0]
    plot.getPlotItem().getAxis(axis).setTicks([ticks, []])


def heat_lut(name: str = "viridis") -> np.ndarray:
    return pg.colormap.get(name).getLookupTable(0.0, 1.0, 256)


def title_label(text: str = "", *, big: bool = False) -> QLabel:
    lab = QLabel(text)
    lab.setTextFormat(Qt.TextFormat.RichText)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if big:
        f = QFont(lab.font())
        f.setPointSizeF(f.pointSizeF() * 1.25)
        lab.setFont(f)
    return lab


def fmt(v: float, digits: int = 3) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.{digits}f}"


def refill_combo(box, items) -> None:
    """Replace a combo box's items without emitting its change signals, keeping the chosen text where it is
    still offered (else the first item)."""
    cur = box.currentText()
    box.blockSignals(True)
    box.clear()
    box.addItems(list(items))
    i = box.findText(cur)
    box.setCurrentIndex(i if i >= 0 else 0)
    box.blockSignals(False)
