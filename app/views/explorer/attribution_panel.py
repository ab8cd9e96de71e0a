"""AttributionPanel: the Shapley value φ_i of each modality for the sample on screen.

The game: v(A) = log p_A(c) of the class c the toggled subset predicts (multi-label: log σ of its top label;
regression: the predicted score), v(∅) = the train-split prior; exact over all 2^M coalitions, recombined from
the sample's cached per-modality logits (no model call), so it updates with the toggles in the same frame as
the other panels. A modality switched off is absent from every coalition (φ = 0, drawn faded); the bars add up
to v(subset) − v(∅). A modality with φ < 0 pushed against the prediction, and a note says so.

Run alone: `python -m app.views.explorer.attribution_panel` shows it on a synthetic sample (M = 3).
"""
from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.views.common import style
from app.core.analysis.explain import SamplePhi, sample_phi, train_prior_of
from app.views.common.export import export_plot
from app.core.analysis.tables import write_csv
from app.core.analysis.task_language import label_order, phi_axis, phi_unit

TIP = ("φ_i: exact Shapley value of modality i (over all 2^M modality subsets) for the log-probability of the "
       "class the switched-on modalities predict (multi-label: log σ of the chosen label, nats; regression: the "
       "score, in the target's units), from v(∅) = the train-split prior. Σ φ_i = v(on) − v(∅). "
       "Green: the modality supports the prediction; red: it pushed against it. Switched-off modalities: φ = 0.")
TOP_LABEL = "top label (predicted)"


class AttributionPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.phi: SamplePhi | None = None
        self.prior = None
        self.task = "single-label"
        self.class_names: tuple[str, ...] = ()
        self.prior_note = ""
        self._names: tuple[str, ...] = ()
        self.header = style.title_label()
        self.label_box = QComboBox()  # multi-label: which label φ explains
        self.label_box.setToolTip("The label φ explains: the top label of the prediction, or any label")
        self.label_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.label_row = QWidget()
        lr = QHBoxLayout(self.label_row)
        lr.setContentsMargins(0, 0, 0, 0)
        lr.addWidget(QLabel("Explain label"))
        lr.addWidget(self.label_box)
        lr.addStretch(1)
        self.label_row.setVisible(False)
        self._last: tuple | None = None  # (encoding, used, names) on screen, for a new label choice
        self.plot = style.plot_widget("Shapley attribution φ per modality", left=phi_axis("single-label"),
                                      min_height=150, tooltip=TIP)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6, brushes=[], pen=None)
        self.plot.addItem(self.bars)
        self.plot.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen("#808080")))
        self.value_texts: list[pg.TextItem] = []
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setObjectName("attributionNote")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.header)
        lay.addWidget(self.label_row)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.note)
        self._lim = None
        self.label_box.currentIndexChanged.connect(self._on_label_changed)
        self.clear("Load a model and a sample.")

    # --- inputs ---------------------------------------------------------------------------------------
    def set_context(self, bundle, task: str, class_names: tuple[str, ...]) -> None:
        """The model's dataset (for v(∅), the train prior), task and classes."""
        self.task = task
        self.class_names = tuple(class_names)
        self.prior, self.prior_note = train_prior_of(bundle, task, len(class_names) if task != "regression" else 1)
        self.plot.getPlotItem().getAxis("left").setLabel(phi_axis(task), color="#303030")
        self.label_box.blockSignals(True)
        self.label_box.clear()
        if task == "multi-label":
            self.label_box.addItem(TOP_LABEL, -1)
            for j in label_order(self.class_names):
                self.label_box.addItem(self.class_names[j], j)
        self.label_box.blockSignals(False)
        self.label_row.setVisible(task == "multi-label")

    @property
    def explained_label(self) -> int | None:
        """The label the user chose (multi-label), or None for the top label."""
        j = self.label_box.currentData() if self.task == "multi-label" else None
        return int(j) if j is not None and int(j) >= 0 else None

    def choose_label(self, name: str | None) -> None:
        """Explain label `name` (None: the top label)."""
        i = self.label_box.findText(name) if name is not None else 0
        self.label_box.setCurrentIndex(max(i, 0))

    @Slot(int)
    def _on_label_changed(self, _i: int) -> None:
        if self._last is not None:
            self.show_sample(*self._last)

    def clear(self, message: str = "") -> None:
        self.phi = None
        self.header.setText(f"<span style='color:#606060'>{html.escape(message)}</span>")
        self.bars.setOpts(x=[], height=[], brushes=[])
        self.note.setText("")
        for t in self.value_texts:
            t.setText("")

    def _set_names(self, names: tuple[str, ...]) -> None:
        if names == self._names:
            return
        self._names = names
        style.set_ticks(self.plot, "bottom", names)
        self.plot.setXRange(-0.6, len(names) - 0.4, padding=0)
        for t in self.value_texts:
            self.plot.removeItem(t)
        self.value_texts = []
        for _ in names:
            t = pg.TextItem("", color="#202020", anchor=(0.5, 1.0))
            self.plot.addItem(t)
            self.value_texts.append(t)

    def show_sample(self, encoding, used: tuple[bool, ...], names: tuple[str, ...]) -> SamplePhi | None:
        """φ of the cached `encoding` with the modalities of `used` (toggles ∧ present) on (GUI thread)."""
        if encoding is None or self.prior is None:
            self._last = None
            self.clear("φ needs the sample's encoding and the train prior.")
            return None
        self._set_names(tuple(names))
        self._last = (encoding, tuple(used), tuple(names))
        if not any(used):
            self.clear("No modality selected: nothing to attribute.")
            return None
        chosen = self.explained_label
        phi = sample_phi(encoding, used, self.prior, self.task, "predicted" if chosen is None else chosen)
        self.phi = phi
        v = np.asarray(phi.phi)
        brushes = [style.colour(style.UP if x >= 0 else style.DOWN, 255 if u else style.DISABLED_ALPHA)
                   for x, u in zip(v, used)]
        self.bars.setOpts(x=np.arange(len(v), dtype=float), height=v, brushes=brushes)
        lim = max(0.1, float(np.abs(v).max()) * 1.3)
        if self._lim is None or lim > self._lim or lim < self._lim / 3:
            self.plot.setYRange(-lim, lim, padding=0)
            self._lim = lim
        for i, (t, x, u) in enumerate(zip(self.value_texts, v, used)):
            t.setText(f"{x:+.2f}" if u else "off")
            t.setAnchor((0.5, 1.0) if x >= 0 else (0.5, 0.0))
            t.setPos(i, x)
        self.header.setText(self._header(phi))
        neg = [(n, x) for n, x, u in zip(names, v, used) if u and x < 0]
        if neg:
            what = self._what(phi)
            against = f"the label {what}" if chosen is not None else f"the prediction {what}"
            self.note.setText("<span style='color:#B00020'>⚠ " + ", ".join(
                f"<b>{html.escape(n)}</b> (φ = {x:+.3f})" for n, x in neg)
                + f" pushed against {html.escape(against)}.</span>")
        else:
            self.note.setText("<span style='color:#606060'>No modality pushed against the "
                              + ("chosen label" if chosen is not None else "prediction") + ".</span>")
        return phi

    def _what(self, phi: SamplePhi) -> str:
        if self.task == "regression":
            return "(the score)"
        c = phi.output
        return self.class_names[c] if 0 <= c < len(self.class_names) else str(c)

    def _header(self, phi: SamplePhi) -> str:
        if self.task == "regression":
            target = "the predicted score"
        elif self.task == "multi-label":
            which = "chosen label" if self.explained_label is not None else "top label"
            target = f"log σ of the {which} <b>{html.escape(self._what(phi))}</b>"
        else:
            target = f"log p(<b>{html.escape(self._what(phi))}</b>)"
        note = f" · {html.escape(self.prior_note)}" if self.prior_note else ""
        return (f"φ of {target} · Σφ = v(on) − v(∅) = {phi.v_full:+.3f} − ({phi.v_empty:+.3f}) = "
                f"<b>{phi.v_full - phi.v_empty:+.3f}</b> {html.escape(phi_unit(self.task))}{note}")

    # --- export ---------------------------------------------------------------------------------------
    def plots(self) -> dict[str, pg.PlotWidget]:
        return {"attribution_phi": self.plot}

    def export(self, folder, sample_title: str = "") -> list:
        out = export_plot(self.plot, folder, "attribution_phi")
        if self.phi is not None:
            rows = [[sample_title, n, u, x, self._what(self.phi), self.phi.v_empty, self.phi.v_full]
                    for n, u, x in zip(self._names, self.phi.used, self.phi.phi)]
            from pathlib import Path
            out.append(write_csv(Path(folder) / "attribution_phi.csv",
                                 ["sample", "modality", "on", "phi", "explained", "v_empty", "v_on"], rows))
        return out


def main() -> int:
    from app.views.common.demo import CLASSES, run_panel_demo, synthetic_encoding

    def fill(p: AttributionPanel) -> None:
        enc = synthetic_encoding(m=3)
        enc.logits_mod[2, 7] -= 2.5  # the third modality argues against the predicted class
        p.set_context(None, "single-label", CLASSES)
        p.show_sample(enc, (True, True, True), enc.modality_names)

    return run_panel_demo(AttributionPanel, fill, "Attribution — synthetic sample", size=(520, 360))


if __name__ == "__main__":
    raise SystemExit(main())
