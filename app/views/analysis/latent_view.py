"""LatentViewPanel: a 2-D PCA of the redundant latents Z^i and the unique latents U^i of a split, one point per
(sample, modality), coloured by class, by modality, or labeled / unlabeled (train split). Click a point to open
that sample in the explorer.

Z^i of all modalities share one space (g_0), so one PCA over them shows whether the modalities of a class
meet; the U^i come from separate projectors g_i and are projected together only to show how far apart they
stay. Run alone: `python -m app.views.analysis.latent_view` shows synthetic points.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QSize, QTimer, Signal, Slot
from PySide6.QtGui import QBrush, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QToolButton, QVBoxLayout, QWidget)

from robult_engine.evaluation import encode_split
from robult_engine.inspect import latent_points

from app.background.runner import WorkRunner

from app.views.common import style
from app.views.common.export import export_plot
from app.core.analysis.tables import write_csv
from app.core.analysis.task_language import group_categories, label_order

SYMBOLS = ("o", "t", "s", "d", "+", "x", "star", "p", "h")
LEGEND_MAX_WIDTH = 240  # pixels; longer names are cut (the list scrolls sideways)
MAX_POINTS = 20000  # per plot; beyond this the split is subsampled (seeded) to keep the view responsive
DRAW_CHUNK = 4000  # points added to the plots per turn of the event loop (about 15 ms of the GUI thread)


class LatentViewPanel(QWidget):
    sig_open_sample = Signal(str, int)  # split, index
    sig_points_ready = Signal()  # a projection was computed (its drawing has begun)
    sig_drawn = Signal()  # every point of both plots is on screen
    TITLES = {"z": "Z<sup>i</sup> = g<sub>0</sub>(H<sup>i</sup>) — redundant, shared space",
              "u": "U<sup>i</sup> = g<sub>i</sub>(H<sup>i</sup>) — unique parts"}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = WorkRunner(self, max_threads=1)
        self.loaded = None
        self.bundle = None
        self.points: dict | None = None  # {"z": {...}, "u": {...}, "split", "target", "labeled"}
        self._work = None  # the projection being computed
        self._draw_queue: list[tuple] = []  # chunks of points still to add to the plots (`_draw_more`)
        self._brushes: dict[tuple[str, int], QBrush] = {}
        self._draw_timer = QTimer(self)
        self._draw_timer.setSingleShot(True)
        self._draw_timer.setInterval(0)
        self._draw_timer.timeout.connect(self._draw_more)

        self.split = QComboBox()
        self.split.addItems(["test", "train"])
        self.split.setToolTip("Split to project (labeled / unlabeled colouring needs the train split)")
        self.colour_by = QComboBox()
        self.colour_by.addItems(["class", "modality", "labeled / unlabeled"])
        self.colour_by.setToolTip("Colour of the points; with 'class' the marker shape tells the modality")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        bar = QHBoxLayout()
        for w in (QLabel("Split"), self.split, QLabel("Colour by"), self.colour_by):
            bar.addWidget(w)
        bar.addWidget(self.note, 1)

        self.plot_z = style.plot_widget(self.TITLES["z"], left="PC 2", bottom="PC 1", tooltip=style.TIP_Z)
        self.plot_u = style.plot_widget(self.TITLES["u"], left="PC 2", bottom="PC 1", tooltip=style.TIP_U)
        self.scatter: dict[str, pg.ScatterPlotItem] = {}
        for key, w in (("z", self.plot_z), ("u", self.plot_u)):
            w.getPlotItem().setMouseEnabled(x=True, y=True)  # zoom into clusters
            s = pg.ScatterPlotItem(size=7, pen=None, hoverable=True, hoverPen=pg.mkPen("#000000", width=1.5),
                                   tip=None)
            s.sigClicked.connect(self._on_points_clicked)
            w.addItem(s)
            self.scatter[key] = s
        # the legend lives beside the plots (never over the points): scrollable, and it folds away
        self.legend = QListWidget()
        self.legend.setObjectName("latent_legend")
        self.legend.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.legend.setIconSize(QSize(12, 12))
        self.legend.setToolTip("Colours (and, colouring by class, marker shapes) of both plots")
        self.legend_btn = QToolButton()
        self.legend_btn.setText("Legend")
        self.legend_btn.setCheckable(True)
        self.legend_btn.setChecked(True)
        self.legend_btn.setToolTip("Show or fold away the legend")
        self.legend_btn.toggled.connect(self.legend.setVisible)
        self.colour_names: list[str] = []  # the legend's colour entries, in order
        self.colours: list[str] = []
        plots = QHBoxLayout()
        plots.addWidget(self.plot_z)
        plots.addWidget(self.plot_u)
        plots.addWidget(self.legend)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        bar.addWidget(self.legend_btn)
        lay.addLayout(bar)
        lay.addLayout(plots, 1)
        self.split.currentIndexChanged.connect(self._on_split_changed)
        self.colour_by.currentIndexChanged.connect(self._on_colour_changed)
        self.note.setText("Load a model to see its latent spaces.")

    # --- inputs ---------------------------------------------------------------------------------------
    def set_context(self, loaded, bundle) -> None:
        self.loaded, self.bundle = loaded, bundle
        self.points = None
        self._stop_drawing()
        for s in self.scatter.values():
            s.clear()
        if bundle is None:
            self.note.setText("The dataset is not available, so there is no split to project.")
            return
        self.compute()

    @Slot(int)
    def _on_split_changed(self, _i: int) -> None:
        self.compute()

    @Slot(int)
    def _on_colour_changed(self, _i: int) -> None:
        self._draw()

    def compute(self) -> None:
        if self.loaded is None or self.bundle is None:
            return
        split = self.split.currentText()
        if split not in self.bundle.splits:
            self.note.setText(f"The dataset has no {split} split.")
            return
        if self._work is not None:
            self._work.cancel()  # a newer request replaces it: its answer is dropped
        model, data = self.loaded.model, self.bundle.splits[split]
        lab = torch.as_tensor(getattr(self.loaded, "labeled_indices", []), dtype=torch.long).reshape(-1)

        def work(job):
            idx = torch.arange(len(data))
            m = data.mask.shape[1]
            if len(data) * m > MAX_POINTS:  # subsample samples, seeded (never the global RNG)
                g = torch.Generator().manual_seed(0)
                idx = torch.randperm(len(data), generator=g)[:MAX_POINTS // m].sort().values
            sub = data.subset(idx)
            enc = encode_split(model, sub, with_latents=True)
            job.check()
            pts = {"z": latent_points(enc, "z"), "u": latent_points(enc, "u")}
            labeled = torch.zeros(len(data), dtype=torch.bool)
            if split == "train" and len(lab):
                labeled[lab[lab < len(data)]] = True
            return {**pts, "split": split, "index": idx.numpy(), "target": sub.target.numpy(),
                    "labeled": labeled[idx].numpy(), "total": len(data)}

        self.note.setText(f"Encoding the {split} split…")
        self._work = self.runner.start(work, on_result=self._on_done, on_error=self._on_failed)

    def _on_done(self, pts) -> None:
        self._work = None
        self.points = pts
        ez, eu = pts["z"]["explained"], pts["u"]["explained"]
        self.note.setText(f"{self.sample_text()} · PCA explains {100 * ez.sum():.0f} % of Z's variance, "
                          f"{100 * eu.sum():.0f} % of U's · click a point to open the sample")
        self._draw()
        self.sig_points_ready.emit()

    def _on_failed(self, failure) -> None:
        self._work = None
        self.note.setText(f"<span style='color:#B00020'>Could not compute the projection: {failure.message}</span>")

    def sample_text(self) -> str:
        """How many samples the plots show: "showing N of M (random subsample)" when the split was
        subsampled (more than MAX_POINTS points), else "N samples"."""
        p = self.points
        if p is None:
            return ""
        n = len(p["index"])
        total = int(p.get("total", n))
        if n < total:
            return f"showing {n:,} of {total:,} {p['split']} samples (random subsample, seed 0)"
        return f"{n:,} {p['split']} samples"

    # --- drawing --------------------------------------------------------------------------------------
    def _categories(self, key: str) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
        """(category per point, category names, their colours, symbol index per point)."""
        p = self.points
        pts = p[key]
        sample_pos = pts["sample"]  # position within the (sub)sampled split
        mod = pts["modality"]
        names = list(self.loaded.info.modality_names)
        mode = self.colour_by.currentText()
        if mode == "modality":
            cat, names, colours = group_categories(mod, names)
            return cat, names, colours, np.zeros_like(mod)
        if mode.startswith("labeled"):
            if p["split"] != "train":
                return (np.zeros_like(mod), ["test samples (labeled / unlabeled applies to the train split)"],
                        ["#0072B2"], mod)
            lab = p["labeled"][sample_pos].astype(int)
            return 1 - lab, ["labeled", "unlabeled"], ["#D55E00", "#A0A0A0"], mod
        info = self.loaded.info
        target = p["target"][sample_pos]
        if info.task == "regression":
            return (np.asarray(target) >= 0).astype(int), ["score < 0", "score ≥ 0"], ["#D55E00", "#0072B2"], mod
        classes = list(info.class_names)
        order = np.asarray(label_order(classes), dtype=int)  # the legend lists the classes in this order
        if info.task == "single-label":
            cat = np.asarray(target).astype(int)
        else:  # multi-label: the sample's first label in that order (−1: no label)
            t = np.asarray(target)[:, order] > 0.5
            cat = np.where(t.any(1), order[np.argmax(t, axis=1)], -1)
        rank = np.empty(len(order), dtype=int)
        rank[order] = np.arange(len(order))
        cat = np.where((cat >= 0) & (cat < len(classes)), rank[np.clip(cat, 0, len(classes) - 1)], -1)
        cat, shown, colours = group_categories(cat, [classes[j] for j in order])
        if (cat < 0).any():
            cat = np.where(cat < 0, len(shown), cat)
            shown, colours = shown + ["no label"], colours + ["#D8D8D8"]
        return cat, shown, colours, mod

    def _brush(self, colour: str, alpha: int) -> QBrush:
        """One QBrush per colour, kept across redraws: the scatter's symbol atlas keys on the brush object, so
        a brush per point would render (and keep) one symbol image per point."""
        key = (colour, alpha)
        b = self._brushes.get(key)
        if b is None:
            b = self._brushes[key] = pg.mkBrush(style.colour(colour, alpha))
        return b

    def _draw(self) -> None:
        """Draw both plots: the points go in in chunks of at most DRAW_CHUNK per turn of the event loop (a
        20,000-point plot takes a few hundred ms of the GUI thread; in one piece the window would freeze that
        long), `sig_drawn` once every point is on screen."""
        if self.points is None or self.loaded is None:
            return
        mode = self.colour_by.currentText()
        subsample = self.sample_text()
        self._draw_queue = []
        split, index = self.points["split"], self.points["index"]
        for key in ("z", "u"):
            pts = self.points[key]
            cat, names, colour_list, sym = self._categories(key)
            alphas = [255, 90] if names[:2] == ["labeled", "unlabeled"] else [170] * len(colour_list)
            lut = np.empty(len(colour_list) + 1, dtype=object)  # the brush of each category, then "other"
            for i, (c, a) in enumerate(zip(colour_list, alphas)):
                lut[i] = self._brush(c, a)
            lut[-1] = self._brush("#000000", 255)
            cat = np.asarray(cat)
            order = np.argsort(-cat, kind="stable") if names[:2] == ["labeled", "unlabeled"] else np.arange(len(cat))
            brushes = lut[np.where((cat >= 0) & (cat < len(colour_list)), cat, len(colour_list))[order]].tolist()
            symbols = np.asarray(SYMBOLS, dtype=object)[np.asarray(sym)[order] % len(SYMBOLS)].tolist()
            data = list(zip([split] * len(order), np.asarray(index)[pts["sample"][order]].tolist()))
            x, y = pts["xy"][order, 0], pts["xy"][order, 1]
            size = 7 if len(cat) < 3000 else 4
            for start in range(0, max(len(order), 1), DRAW_CHUNK):
                end = start + DRAW_CHUNK
                self._draw_queue.append((key, start == 0, x[start:end], y[start:end], brushes[start:end],
                                         symbols[start:end], data[start:end], size))
            w = self.plot_z if key == "z" else self.plot_u
            base = self.TITLES[key]
            w.getPlotItem().setTitle(f"{base}<br><span style='font-size:9pt; color:#505050'>{subsample}</span>",
                                     color="#202020", size="10pt")
            w.getPlotItem().enableAutoRange()
        self.colour_names, self.colours = list(names), list(colour_list)
        self._fill_legend(names, colour_list, mode == "class")
        if sum(len(chunk[2]) for chunk in self._draw_queue) <= DRAW_CHUNK:
            self._draw_more()  # a small projection: drawn now
            return
        # a large one: its chunks from the next turn of the event loop on, and the plots painted once, with every
        # point (each repaint of a growing scatter would cost a turn as much as its chunk)
        for sc in self.scatter.values():
            sc.setVisible(False)
        self._draw_timer.start()

    def _stop_drawing(self) -> None:
        """Drop the chunks not drawn yet (the plots show what they have)."""
        self._draw_timer.stop()
        self._draw_queue = []
        for sc in self.scatter.values():
            sc.setVisible(True)

    @property
    def drawing(self) -> bool:
        """Points are still being added to the plots."""
        return bool(self._draw_queue)

    @Slot()
    def _draw_more(self) -> None:
        """Add the next chunks of points (at most DRAW_CHUNK in all; a plot's first chunk replaces what it
        showed), and come back in the next turn of the event loop for the rest."""
        budget = DRAW_CHUNK
        while self._draw_queue and (budget == DRAW_CHUNK or len(self._draw_queue[0][2]) <= budget):
            key, first, x, y, brushes, symbols, data, size = self._draw_queue.pop(0)
            s = self.scatter[key]
            if first:
                s.setData(x=x, y=y, brush=brushes, symbol=symbols, data=data, size=size)
            else:
                s.addPoints(x=x, y=y, brush=brushes, symbol=symbols, data=data, size=size)
            budget -= len(x)
        if self._draw_queue:
            self._draw_timer.start()
        else:
            for key, sc in self.scatter.items():
                if not sc.isVisible():
                    sc.setVisible(True)
                    (self.plot_z if key == "z" else self.plot_u).getPlotItem().enableAutoRange()
            self.sig_drawn.emit()

    def _fill_legend(self, names: list[str], colours: list[str], shapes: bool) -> None:
        """The legend beside the plots: one row per colour (plain text: "< 0" stays "< 0"), then, colouring by
        class, one row per modality's marker shape."""
        from pyqtgraph.graphicsItems.ScatterPlotItem import renderSymbol
        self.legend.clear()

        def icon(symbol: str, colour: str) -> QIcon:
            img = renderSymbol(symbol, 10, pg.mkPen(None), pg.mkBrush(colour))
            return QIcon(QPixmap.fromImage(img))

        mode = self.colour_by.currentText()
        by_class = {"multi-label": "first true label", "regression": "sign of the true score"}.get(
            self.loaded.info.task, "true class")
        head = QListWidgetItem("Colour: " + {"class": by_class, "modality": "modality"}.get(mode,
                                                                                           "labeled / unlabeled"))
        f = head.font()
        f.setBold(True)
        head.setFont(f)
        self.legend.addItem(head)
        for name, c in zip(names, colours):
            self.legend.addItem(QListWidgetItem(icon("o", c), name))
        if shapes:
            sh = QListWidgetItem("Marker: modality")
            sh.setFont(f)
            self.legend.addItem(sh)
            for i, name in enumerate(self.loaded.info.modality_names):
                self.legend.addItem(QListWidgetItem(icon(SYMBOLS[i % len(SYMBOLS)], "#606060"), name))
        self.legend.setFixedWidth(min(LEGEND_MAX_WIDTH, max(110, self.legend.sizeHintForColumn(0) + 28)))

    @Slot(object, object, object)
    def _on_points_clicked(self, _item, points, _ev=None) -> None:
        if points is None or len(points) == 0:
            return
        split, index = points[0].data()
        self.sig_open_sample.emit(split, int(index))

    # --- export ---------------------------------------------------------------------------------------
    def plots(self) -> dict[str, pg.PlotWidget]:
        return {"latent_pca_z": self.plot_z, "latent_pca_u": self.plot_u}

    def export(self, folder) -> list:
        from pathlib import Path
        out = []
        for name, w in self.plots().items():
            out += export_plot(w, folder, name)
        if self.points is not None:
            p = self.points
            for key in ("z", "u"):
                pts = p[key]
                out.append(write_csv(Path(folder) / f"latent_pca_{key}.csv",
                                     ["split", "index", "modality", "pc1", "pc2", "target"],
                                     [[p["split"], int(p["index"][s]), self.loaded.info.modality_names[m],
                                       float(x), float(y), p["target"][s].tolist()]
                                      for (x, y), s, m in zip(pts["xy"], pts["sample"], pts["modality"])]))
        return out

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API; a panel shown on its own (tests, `-m`)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        self._stop_drawing()
        self.runner.shutdown()


def main() -> int:
    from types import SimpleNamespace

    from robult_engine.data.base import DatasetInfo, ModalitySpec

    from app.views.common.demo import run_panel_demo

    def fill(p: LatentViewPanel) -> None:
        g = np.random.default_rng(0)
        info = DatasetInfo("demo", (ModalitySpec("image", "image", (1, 8, 8)), ModalitySpec("audio", "sequence", (9, 13))),
                           "single-label", tuple(str(d) for d in range(10)))
        p.loaded = SimpleNamespace(info=info, labeled_indices=[])
        n = 300
        target = g.integers(0, 10, n)
        centres = g.normal(size=(10, 2)) * 4
        pts = {}
        for key, spread in (("z", 0.8), ("u", 2.0)):
            xy = np.concatenate([centres[target] + g.normal(size=(n, 2)) * spread + (0 if key == "z" else 6) * m
                                 for m in range(2)])
            pts[key] = {"xy": xy, "sample": np.tile(np.arange(n), 2), "modality": np.repeat(np.arange(2), n),
                        "explained": np.array([0.5, 0.2])}
        p.points = {**pts, "split": "test", "index": np.arange(n), "target": target, "labeled": np.zeros(n, bool)}
        p._draw()
    return run_panel_demo(LatentViewPanel, fill, "Latent space — synthetic points", size=(1000, 500))


if __name__ == "__main__":
    raise SystemExit(main())
