"""The Sweeps tab: run a label fraction × missing rate sweep from the app, keep it in the session, and read it.

- **New sweep…** (Ctrl+Shift+N) opens `SweepDialog`: dataset, methods, label fractions, the mechanism and its
  rates (fractions *missing*), seeds, mask seed, epochs. The sweep runs on its own background thread (the work
  contract of app/core/work.py) with progress, ETA and cancel (Esc in the tab); each run is written to the
  session as it finishes, so closing the app keeps every finished run, and **Resume** continues from the run
  folder (robult_engine/sweep.py `--resume`).
- A new or resumed sweep goes through the window's run queue (app/core/run_queue.py): it starts at once when
  nothing else trains, else it waits for its turn (it is stored when it starts); the panel reports the end of
  the sweep it runs to the queue, and the next request starts then.
- **Open sweep file…** reads a `sweep.json` written by `robult sweep --out DIR`.
- With a **train missingness** (optional, e.g. `mcar:0,0.5`) the sweep trains every method once per training
  setting η_train and evaluates each model under every test setting η_test; its **Train × test** tab draws the
  matrix η_train (rows) × η_test (columns) of one method, the diagonal (tested as trained) outlined, or method
  A − B per cell on a diverging colour scale centred at 0 (red: A better, also for an error such as MAE), each
  with a colour bar.
- The selected sweep is drawn as one heat map per method (label fraction × missing rate, mean over seeds; or the
  first method minus each other one, paired by seed), all on one colour scale with one colour bar (the metric
  and its direction; bright = better, also for an error such as MAE; red = the first method ahead), and as
  curves (metric against the missing rate, one panel per label fraction, mean ± std over seeds). **Export…**
  writes both as PNG and SVG, and the cells as CSV (the columns of the engine's sweep.csv).

The panel only shows and asks; the numbers come from app/core/sweeps.py (Qt-free) and the engine.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import shiboken6
from PySide6.QtCore import QRectF, Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QGraphicsRectItem, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QMessageBox, QProgressBar, QPushButton, QSpinBox, QSplitter, QTabWidget,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from robult_engine.config import ConfigError
from robult_engine.data import BUILTIN
from robult_engine.methods import METHOD_SPECS
from robult_engine.sweep import fraction_label

from app.background.runner import WorkRunner
from app.core.run_queue import CANCELLED, DONE, FAILED, RUNNING, SWEEP, QueueEntry, RunQueue, submission_message
from app.core.sessions import runs_root
from app.core.sweeps import (SWEEP_CANCELLED, SWEEP_DONE, SWEEP_FAILED, SWEEP_RESUMABLE, SWEEP_RUNNING,
                             SweepFileError, SweepPlanned, SweepProgress, SweepRequest, SweepResult,
                             SweepRunRecorded, SweepStore, format_eta, run_sweep_work)

from app.core.analysis.tables import safe_name, write_csv
from robult_engine.missing_spec import describe_mechanisms
from app.views.analysis.robustness_panel import color_range, matrix_colormap
from app.views.common import style
from app.views.common.export import export_plot
from app.views.common.job_controls import export_to_chosen_folder

# the mechanisms a sweep can take a rate grid of, from the engine's registry
MECHANISMS = {m.name: m.summary for m in describe_mechanisms(curve=True)}
DEFAULT_METHODS = ("robult", "supervised")
STATUS_COLORS = {SWEEP_RUNNING: "#1565C0", SWEEP_DONE: "#2E7D32", SWEEP_CANCELLED: "#8D6E00",
                 SWEEP_FAILED: "#B00020", "interrupted": "#B00020", "imported": "#455A64"}


def parse_fraction_list(text: str, what: str) -> tuple[float, ...]:
    out = []
    for item in str(text).replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            v = float(item)
        except ValueError:
            raise ConfigError(f"{what}: {item!r} is not a number") from None
        if v in out:
            raise ConfigError(f"{what}: {item} is given twice")
        out.append(v)
    return tuple(out)



def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def sweep_summary(runs: int, methods: int, fractions: int, seeds: int, settings: int, train_settings: int = 0
                  ) -> str:
    """The New sweep dialog's one-line plan, with singular and plural right ("1 seed", not "1 seeds")."""
    trained = f" × {_count(train_settings, 'training setting')}" if train_settings else ""
    return (f"{_count(runs, 'training')} ({_count(methods, 'method')} × {_count(fractions, 'label fraction')}"
            f"{trained} × {_count(seeds, 'seed')}), each evaluated under {_count(settings, 'mask setting')} drawn "
            f"once on the test split.")


DIAGONAL_COLOR = "#D81B60"


def diverging_colormap(better_high: bool) -> "pg.ColorMap":
    """Blue–white–red centred at 0 for a difference A − B, red where A is better: reversed where lower is better
    (a negative MAE difference is A ahead). A new ColorMap each time: the cached one of `pg.colormap.get` is never
    changed (see `matrix_colormap`)."""
    stops, colors = pg.colormap.get("CET-D1").getStops()
    cmap = pg.ColorMap(stops.copy(), colors.copy())
    if not better_high:
        cmap.reverse()
    return cmap


def heat_scale(metric: str, better_high: bool, values, difference: bool) -> tuple[tuple[float, float], "pg.ColorMap"]:
    """The one colour scale of a set of sweep heat maps, from every cell they show (all methods, so their colours
    compare): a metric on its own range (`color_range`: [0, 1] for an accuracy, [0, the largest cell] for an
    error such as MAE) on viridis, bright = better; a difference symmetric about 0 at the largest |cell| on the
    diverging map, red where the first method is ahead. The colour maps are new copies (`matrix_colormap`)."""
    values = np.asarray(values, dtype=float)
    if difference:
        finite = np.abs(values[np.isfinite(values)])
        top = max(float(finite.max()) if finite.size else 0.05, 1e-3)
        return (-top, top), diverging_colormap(better_high)
    lo, hi = color_range(metric, values)
    return (float(lo), float(hi)), matrix_colormap(better_high)


def heat_scale_label(metric: str, better_high: bool, first: str | None = None, second: str = "") -> str:
    """A heat map colour bar's label: the metric and which way is better; for a difference, which end is the first
    method ahead."""
    direction = "higher is better" if better_high else "lower is better"
    if first is None:
        return f"test {metric} ({direction}: bright)"
    return f"{first} − {second}, test {metric} ({direction}; red: {first} better)"


def heat_colorbar(levels: tuple[float, float], cmap: "pg.ColorMap", label: str) -> "pg.ColorBarItem":
    """The (fixed, not draggable) colour bar of a heat map's scale."""
    bar = pg.ColorBarItem(values=levels, colorMap=cmap, label=label, interactive=False, colorMapMenu=False,
                          width=18)
    bar.setToolTip(label)
    return bar


class SweepDialog(QDialog):
    """What to sweep. `request()` is the validated `SweepRequest` (None while the form has an error)."""

    def __init__(self, base_config, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New sweep")
        self.base = base_config
        self.dataset = QComboBox()
        self.dataset.setEditable(True)
        names = list(BUILTIN)
        if base_config.data.dataset not in names:
            names.append(base_config.data.dataset)
        self.dataset.addItems(names)
        self.dataset.setCurrentText(base_config.data.dataset)
        self.dataset.setToolTip("A built-in dataset or the path of your own (as in the training wizard)")
        self.methods = QListWidget()
        for spec in METHOD_SPECS.values():
            it = QListWidgetItem(f"{spec.label}  ({spec.name})")
            it.setData(Qt.ItemDataRole.UserRole, spec.name)
            it.setToolTip(spec.description)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if spec.name in DEFAULT_METHODS else Qt.CheckState.Unchecked)
            self.methods.addItem(it)
        self.methods.setMaximumHeight(170)
        self.methods.setToolTip("The first checked method is the reference of the paired differences")
        self.fractions = QLineEdit("0.05,0.2")
        self.fractions.setToolTip("Labeled fractions of the training split, comma-separated, each in (0, 1]")
        self.mechanism = QComboBox()
        for name, tip in MECHANISMS.items():
            self.mechanism.addItem(name)
            self.mechanism.setItemData(self.mechanism.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.rates = QLineEdit("0,0.25,0.5,0.75")
        self.rates.setToolTip("Rates η, comma-separated, each in [0, 1): the fraction of entries MISSING "
                              "(0.7 = 70 % missing). A sample never loses every modality: one comes back, and "
                              "the realised fraction is shown")
        self.train_missing = QLineEdit()
        self.train_missing.setPlaceholderText("optional, e.g. mcar:0,0.5")
        self.train_missing.setToolTip("Train/test mismatch: train every method once per setting (as "
                                      "data.train_missing; rates are fractions missing; mcar:0 keeps the data's "
                                      "own missing entries only) and evaluate each model under every test setting; "
                                      "the result is a matrix η_train × η_test per method. Empty: train as the "
                                      "configuration says")
        self.seeds = QSpinBox()
        self.seeds.setRange(1, 20)
        self.seeds.setValue(2)
        self.seeds.setToolTip("Seeds per (method, label fraction); every method of a seed gets the same labels")
        self.mask_seed = QSpinBox()
        self.mask_seed.setRange(0, 10_000)
        self.mask_seed.setToolTip("Seed of the test masks (one draw, shared by every run)")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 10_000)
        self.epochs.setValue(int(base_config.train.epochs))
        self.epochs.setToolTip("Epochs of each training (early stopping on validation still applies)")
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #B00020")
        form = QFormLayout()
        form.addRow("Dataset", self.dataset)
        form.addRow("Methods", self.methods)
        form.addRow("Label fractions", self.fractions)
        mech = QHBoxLayout()
        mech.addWidget(self.mechanism)
        mech.addWidget(QLabel("rates (fraction missing)"))
        mech.addWidget(self.rates, 1)
        form.addRow("Missing modalities", mech)
        form.addRow("Train missingness", self.train_missing)
        form.addRow("Seeds", self.seeds)
        form.addRow("Mask seed", self.mask_seed)
        form.addRow("Epochs", self.epochs)
        form.addRow("Name", self.name)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Run sweep")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.summary)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)
        for w in (self.fractions, self.rates, self.name, self.train_missing):
            w.textChanged.connect(self._revalidate)
        self.dataset.currentTextChanged.connect(self._revalidate)
        self.mechanism.currentTextChanged.connect(self._revalidate)
        for sp in (self.seeds, self.mask_seed, self.epochs):
            sp.valueChanged.connect(self._revalidate)
        self.methods.itemChanged.connect(self._revalidate)
        self._request: SweepRequest | None = None
        self._revalidate()

    def checked_methods(self) -> tuple[str, ...]:
        return tuple(self.methods.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.methods.count())
                     if self.methods.item(i).checkState() == Qt.CheckState.Checked)

    def set_methods(self, names) -> None:
        for i in range(self.methods.count()):
            it = self.methods.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.data(Qt.ItemDataRole.UserRole) in names
                             else Qt.CheckState.Unchecked)

    def missing_spec(self) -> str:
        rates = ",".join(x.strip() for x in self.rates.text().replace(";", ",").split(",") if x.strip())
        return f"{self.mechanism.currentText()}:{rates}"

    def _build(self) -> SweepRequest:
        dataset = self.dataset.currentText().strip()
        if not dataset:
            raise ConfigError("Dataset: name a built-in dataset or a path")
        base = self.base
        if dataset != base.data.dataset:
            base = base.replace(**{"data.dataset": dataset, "data.modalities": ()})
        base = base.replace(**{"train.epochs": int(self.epochs.value())})
        if not self.rates.text().strip():
            raise ConfigError("Missing rates: give at least one rate, e.g. 0,0.5")
        train = self.train_missing.text().strip()
        if train:  # the field gives the training missingness: it replaces the configuration's own
            base = base.replace(**{"data.train_missing": ""})
        return SweepRequest(base=base, methods=self.checked_methods(),
                            label_fractions=parse_fraction_list(self.fractions.text(), "Label fractions"),
                            missing=(self.missing_spec(),), seeds=int(self.seeds.value()),
                            mask_seed=int(self.mask_seed.value()), name=self.name.text().strip(),
                            train_missing=(train,) if train else ()).validate()

    @Slot()
    def _revalidate(self, *_args) -> None:
        try:
            self._request = self._build()
        except (ConfigError, ValueError) as e:
            self._request = None
            self.error.setText(str(e))
            self.summary.setText("")
        else:
            self.error.setText("")
            r = self._request
            from robult_engine.missing import parse_missing_grid
            test = [x.label for x in parse_missing_grid(list(r.missing))]
            train = r.train_settings()
            self.summary.setText(sweep_summary(r.runs_total, len(r.methods), len(r.label_fractions), r.seeds,
                                               len(test) + len([t for t in train if t not in test]), len(train)))
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(self._request is not None)

    def request(self) -> SweepRequest | None:
        return self._request


class MismatchMatrix(QWidget):
    """A mismatch sweep's matrix: η_train (rows) × η_test (columns) of one method (mean over seeds; bright =
    better, also for an error), or method A − B per cell (blue–white–red centred at 0, red where A is better);
    the diagonal (tested as trained) outlined; a colour bar with the fixed scale and what it shows."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: SweepResult | None = None
        self.fraction = QComboBox()
        self.fraction.setToolTip("Label fraction of the matrix")
        self.mode = QComboBox()
        self.mode.addItems(["metric (mean over seeds)", "difference A − B (mean over seeds)"])
        self.mode.setToolTip("One method's matrix, or one method minus another per cell")
        self.method_a = QComboBox()
        self.method_a.setToolTip("The method shown (A in the difference)")
        self.method_b = QComboBox()
        self.method_b.setToolTip("The method subtracted (B in the difference)")
        self.minus = QLabel("minus")
        self.plot = pg.GraphicsLayoutWidget()
        self.plot.setBackground("w")
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        row = QHBoxLayout()
        for text, w in (("Label fraction", self.fraction), ("Show", self.mode), ("Method", self.method_a)):
            row.addWidget(QLabel(text))
            row.addWidget(w)
        row.addWidget(self.minus)
        row.addWidget(self.method_b)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.caption)
        lay.addWidget(self.plot, 1)
        # what is drawn (read by the export and the tests)
        self.values = np.zeros((0, 0))
        self.levels: tuple[float, float] = (0.0, 1.0)
        self.colormap: pg.ColorMap | None = None
        self.diagonal_cells: list[tuple[int, int]] = []
        self.diagonal_items: list[QGraphicsRectItem] = []
        self.image: pg.ImageItem | None = None
        self.colorbar: pg.ColorBarItem | None = None
        self.texts: list[list[pg.TextItem]] = []
        for box in (self.fraction, self.mode, self.method_a, self.method_b):
            box.currentIndexChanged.connect(self._draw)

    @property
    def difference_mode(self) -> bool:
        r = self.result
        return self.mode.currentIndex() == 1 and r is not None and len(r.methods) > 1

    def set_result(self, result: SweepResult | None) -> None:
        """Show a sweep (nothing for a plain one); the selections stay where they still apply."""
        self.result = result
        boxes = (self.fraction, self.method_a, self.method_b)
        for b in boxes:
            b.blockSignals(True)
        try:
            items = {self.fraction: [fraction_label(v) for v in result.label_fractions] if result else [],
                     self.method_a: list(result.methods) if result else [],
                     self.method_b: list(result.methods) if result else []}
            for box, names in items.items():
                if [box.itemText(i) for i in range(box.count())] != names:
                    keep = box.currentText()
                    box.clear()
                    box.addItems(names)
                    if keep in names:
                        box.setCurrentText(keep)
                    elif box is self.method_b and len(names) > 1:
                        box.setCurrentIndex(1)
        finally:
            for b in boxes:
                b.blockSignals(False)
        self._draw()

    @Slot()
    def _draw(self, *_a) -> None:
        self.plot.clear()
        self.image = self.colorbar = None
        self.diagonal_cells, self.diagonal_items, self.texts = [], [], []
        self.values = np.zeros((0, 0))
        self.caption.setText("")
        r = self.result
        diff = self.difference_mode
        self.minus.setVisible(diff)
        self.method_b.setVisible(diff)
        if r is None or not r.mismatch or not r.methods or not r.missing:
            return
        lf = r.label_fractions[max(0, self.fraction.currentIndex())]
        a = self.method_a.currentText() or r.methods[0]
        b = self.method_b.currentText() or r.methods[-1]
        higher = r.higher_is_better
        if diff:
            vals = np.array(r.difference(lf, a, b), dtype=float)
            # one scale for every pair of methods at this label fraction, symmetric about 0: switching A or B
            # keeps the colours comparable
            every = np.array([r.difference(lf, x, y) for x in r.methods for y in r.methods if x != y], dtype=float)
            label = heat_scale_label(r.metric, higher, a, b)
            title = f"{a} − {b}, label fraction {fraction_label(lf)}"
        else:
            vals = np.array(r.matrix(lf, a)[0], dtype=float)
            every = np.array([r.matrix(lf, m)[0] for m in r.methods], dtype=float)
            label = heat_scale_label(r.metric, higher)
            title = f"{a}, label fraction {fraction_label(lf)}"
        levels, cmap = heat_scale(r.metric, higher, every, diff)
        self.values, self.levels, self.colormap = vals, (float(levels[0]), float(levels[1])), cmap
        p = self.plot.addPlot(row=0, col=0)
        p.setTitle(title, size="9pt")
        self.caption.setText(f"{title}: trained under η_train (rows), tested under η_test (columns), mean over "
                             f"{r.seeds} seed(s); outlined: tested as trained (the diagonal).")
        img = pg.ImageItem(axisOrder="row-major")
        p.addItem(img)
        img.setImage(vals, levels=self.levels, lut=cmap.getLookupTable(nPts=256))  # NaN: transparent
        self.image = img
        n_rows, n_cols = vals.shape
        for i in range(n_rows):
            row = []
            for j in range(n_cols):
                v = vals[i, j]
                t = pg.TextItem("–" if not np.isfinite(v) else (f"{v:+.3f}" if diff else f"{v:.3f}"),
                                anchor=(0.5, 0.5))
                frac = (v - levels[0]) / ((levels[1] - levels[0]) or 1.0)
                light = not diff and np.isfinite(v) and (frac < 0.6 if higher else frac > 0.4)
                t.setColor("w" if light else "k")
                t.setPos(j + 0.5, i + 0.5)
                p.addItem(t, ignoreBounds=True)
                row.append(t)
            self.texts.append(row)
        for i, j in r.diagonal():
            rect = QGraphicsRectItem(QRectF(j, i, 1, 1))
            rect.setPen(pg.mkPen(DIAGONAL_COLOR, width=3))
            rect.setZValue(10)
            p.addItem(rect)
            self.diagonal_cells.append((i, j))
            self.diagonal_items.append(rect)

        def with_realised(lab: str, realised: dict) -> str:
            v = realised.get(lab)
            return f"{lab} ({v:.0%})" if v is not None and math.isfinite(v) else lab
        p.getAxis("bottom").setTicks([[(j + 0.5, with_realised(lab, r.realised))
                                       for j, lab in enumerate(r.missing)]])
        p.getAxis("left").setTicks([[(i + 0.5, with_realised(lab, r.train_realised))
                                     for i, lab in enumerate(r.train_missing)]])
        p.setLabel("bottom", "η_test (fraction missing at test; realised)")
        p.setLabel("left", "η_train (fraction missing in training; realised)")
        p.setMouseEnabled(False, False)
        p.hideButtons()
        p.vb.disableAutoRange()
        p.setRange(xRange=(0, n_cols), yRange=(0, n_rows), padding=0)
        bar = heat_colorbar(self.levels, cmap, label)
        self.plot.addItem(bar, row=0, col=1)
        self.colorbar = bar


class SweepPlots(QWidget):
    """The heat maps (one per method) and the curves (one panel per label fraction) of one sweep."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: SweepResult | None = None
        self.mode = QComboBox()
        self.mode.addItems(["metric (mean over seeds)", "first method minus each (paired by seed)"])
        self.mode.setToolTip("What the heat maps show")
        self.mode.currentIndexChanged.connect(self._draw_heat)
        self.heat = pg.GraphicsLayoutWidget()
        self.heat.setBackground("w")
        self.curves = pg.GraphicsLayoutWidget()
        self.curves.setBackground("w")
        self.views = QTabWidget()
        heat_box = QWidget()
        hl = QVBoxLayout(heat_box)
        hl.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show"))
        row.addWidget(self.mode)
        row.addStretch(1)
        hl.addLayout(row)
        hl.addWidget(self.heat, 1)
        self.views.addTab(heat_box, "Heat maps")
        self.views.addTab(self.curves, "Curves")
        self.matrix = MismatchMatrix()
        self.matrix_tab = self.views.addTab(self.matrix, "Train × test")
        self.views.setTabToolTip(self.matrix_tab, "A mismatch sweep: η_train × η_test per method, or A − B")
        self.views.setTabVisible(self.matrix_tab, False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.views)
        self._heat: dict[str, tuple[pg.ImageItem, list[list[pg.TextItem]]]] = {}
        self._curves: dict[tuple[float, str], tuple[pg.PlotDataItem, pg.ErrorBarItem]] = {}
        self._curve_plots: list = []
        self._heat_plots: list = []
        self._heat_key = self._curves_key = None
        # the heat maps' one colour scale (read by the tests)
        self.heat_colorbar: pg.ColorBarItem | None = None
        self.heat_levels: tuple[float, float] = (0.0, 1.0)
        self.heat_colormap: pg.ColorMap | None = None

    def set_result(self, result: SweepResult | None) -> None:
        """Show a sweep. The plots are built once per sweep layout (methods, label fractions, mask settings, mode)
        and only their data change as runs finish, so a finished run costs the GUI a few milliseconds."""
        before = self.result.id if self.result is not None else None
        self.result = result
        self._draw_heat()
        self._draw_curves()
        mismatch = result is not None and result.mismatch
        self.views.setTabVisible(self.matrix_tab, mismatch)
        self.matrix.set_result(result if mismatch else None)
        if mismatch and result.id != before:  # a mismatch sweep opens on its matrix
            self.views.setCurrentIndex(self.matrix_tab)

    def _x_ticks(self, r: SweepResult, sep: str = " ") -> list[tuple[float, str]]:
        xs, numeric = r.x_values()
        out = []
        for x, lab in zip(xs, r.missing):
            real = r.realised.get(lab)
            head = f"{r.rates[lab]:g}" if numeric else lab
            out.append((x, f"{head}{sep}({real:.0%})" if real is not None and math.isfinite(real) else head))
        return out

    def _layout_key(self, r: SweepResult | None, what: str) -> tuple | None:
        if r is None or not r.methods:
            return None
        return (what, r.id, tuple(r.methods), tuple(r.label_fractions), tuple(r.missing), r.x_values()[1],
                self.mode.currentIndex() if what == "heat" else 0)

    @Slot()
    def _draw_heat(self, *_a) -> None:
        r = self.result
        key = self._layout_key(r, "heat")
        if key != self._heat_key:
            self._build_heat(r)
            self._heat_key = key
        if r is None or not r.methods:
            return
        diff = self.mode.currentIndex() == 1 and len(r.methods) > 1
        grids = {}
        for m in self._heat:
            if diff:
                grids[m] = np.array([[(d["mean"] if (d := r.paired(lf, lab, m)) else np.nan) for lab in r.missing]
                                     for lf in r.label_fractions], dtype=float)
            else:
                grids[m] = np.array(r.grid(m)[0], dtype=float)
        allv = np.concatenate([g.ravel() for g in grids.values()]) if grids else np.array([])
        # one scale for every method's map (colours compare across them); bright / red = better, also for an
        # error such as MAE (the map reversed, a copy), the numbers as they are
        levels, cmap = heat_scale(r.metric, r.higher_is_better, allv, diff)
        label = heat_scale_label(r.metric, r.higher_is_better, *((r.methods[0], "each") if diff else ()))
        self.heat_levels, self.heat_colormap = levels, cmap
        lut = cmap.getLookupTable(nPts=256)
        bar = self.heat_colorbar
        if bar is not None:
            bar.setColorMap(cmap)
            bar.setLevels(levels)
            if bar.getAxis("left").labelText != label:  # a new label lays the bar out again
                bar.getAxis("left").setLabel(label)
                bar.setToolTip(label)
        ticks_x = [(i + 0.5, t) for i, (_x, t) in enumerate(self._x_ticks(r))]  # the realised fractions arrive
        for p in self._heat_plots:                                               # once the masks are drawn
            p.getAxis("bottom").setTicks([ticks_x])
        for m, (img, texts) in self._heat.items():
            g = grids[m]
            # NaN (no finished run yet) is drawn transparent; in the difference view red is "first method better"
            img.setImage(g, levels=levels, lut=lut)
            for j in range(g.shape[0]):
                for i in range(g.shape[1]):
                    v = g[j, i]
                    t = texts[j][i]
                    t.setText("–" if not np.isfinite(v) else (f"{v:+.3f}" if diff else f"{v:.3f}"))
                    frac = (v - levels[0]) / ((levels[1] - levels[0]) or 1.0)
                    light = not diff and np.isfinite(v) and (frac < 0.6 if r.higher_is_better else frac > 0.4)
                    t.setColor("w" if light else "k")

    def _build_heat(self, r: SweepResult | None) -> None:
        self.heat.clear()
        self._heat, self._heat_plots = {}, []
        self.heat_colorbar = None
        if r is None or not r.methods:
            return
        diff = self.mode.currentIndex() == 1 and len(r.methods) > 1
        methods = r.methods[1:] if diff else r.methods
        cols = min(3, len(methods))
        ticks_x = [(i + 0.5, t) for i, (_x, t) in enumerate(self._x_ticks(r))]
        ticks_y = [(j + 0.5, fraction_label(lf)) for j, lf in enumerate(r.label_fractions)]
        n_rows, n_cols = len(r.label_fractions), len(r.missing)
        for k, m in enumerate(methods):
            p = self.heat.addPlot(row=k // cols, col=k % cols)
            trained = f" (trained under {r.train_missing[0]})" if r.mismatch else ""
            p.setTitle((f"{r.methods[0]} − {m}" if diff else m) + trained, size="10pt")
            img = pg.ImageItem(axisOrder="row-major")
            p.addItem(img)
            texts = []
            for j in range(n_rows):
                row = []
                for i in range(n_cols):
                    t = pg.TextItem("", color="k", anchor=(0.5, 0.5))
                    t.setPos(i + 0.5, j + 0.5)
                    p.addItem(t, ignoreBounds=True)
                    row.append(t)
                texts.append(row)
            self._heat[m] = (img, texts)
            self._heat_plots.append(p)
            p.getAxis("bottom").setTicks([ticks_x])
            p.getAxis("left").setTicks([ticks_y])
            p.setLabel("bottom", "η (fraction missing; realised)" if r.x_values()[1]
                       else "mask setting (realised fraction missing)")
            p.setLabel("left", "label fraction")
            p.setMouseEnabled(False, False)
            p.hideButtons()
            p.vb.disableAutoRange()
            p.setRange(xRange=(0, n_cols), yRange=(0, n_rows), padding=0)
        # the scale shared by every map, right of them (levels, colours and label set as the cells are drawn)
        self.heat_colorbar = heat_colorbar((0.0, 1.0), matrix_colormap(True), "")
        self.heat.addItem(self.heat_colorbar, row=0, col=cols, rowspan=(len(methods) + cols - 1) // cols)

    @property
    def heat_items(self) -> dict[str, pg.ImageItem]:
        return {m: img for m, (img, _t) in self._heat.items()}

    @Slot()
    def _draw_curves(self) -> None:
        r = self.result
        key = self._layout_key(r, "curves")
        if key != self._curves_key:
            self._build_curves(r)
            self._curves_key = key
        if r is None or not r.methods:
            return
        xs0, _numeric = r.x_values()
        order = sorted(range(len(xs0)), key=lambda i: xs0[i])  # lines run left to right
        xs = [xs0[i] for i in order]
        lo, hi = math.inf, -math.inf
        for (lf, m), (line, err) in self._curves.items():
            mean0, sd0 = r.curve(lf, m)
            mean, sd = [mean0[i] for i in order], [sd0[i] for i in order]
            if any(math.isfinite(v) for v in mean):
                line.setData(xs, mean, connect="finite")
                err.setData(x=np.array(xs), y=np.nan_to_num(np.array(mean)),
                            height=2 * np.nan_to_num(np.array(sd)))
                err.setVisible(True)
                for a, b in zip(mean, sd):
                    if math.isfinite(a):
                        b = b if math.isfinite(b) else 0.0
                        lo, hi = min(lo, a - b), max(hi, a + b)
            else:  # no run of this method at this label fraction has finished yet
                line.setData([], [])
                err.setVisible(False)
        if not math.isfinite(lo):
            lo, hi = 0.0, 1.0
        pad = max(0.02, 0.05 * (hi - lo))
        span = (max(xs) - min(xs)) or 1.0
        ticks = self._x_ticks(r, sep="\n")
        for p in self._curve_plots:
            p.getAxis("bottom").setTicks([ticks])
            p.setRange(xRange=(min(xs) - 0.2 * span, max(xs) + 0.2 * span), yRange=(lo - pad, hi + pad), padding=0)

    def _build_curves(self, r: SweepResult | None) -> None:
        self.curves.clear()
        self._curves, self._curve_plots = {}, []
        if r is None or not r.methods:
            return
        xs, numeric = r.x_values()
        ticks = self._x_ticks(r, sep="\n")
        span = (max(xs) - min(xs)) or 1.0
        for f, lf in enumerate(r.label_fractions):
            p = self.curves.addPlot(row=0, col=f)
            p.setTitle(f"label fraction {fraction_label(lf)}", size="10pt")
            if f == 0:
                p.addLegend(offset=(5, 5))
                p.setLabel("left", f"test {r.metric}")
            for k, m in enumerate(r.methods):
                color = style.CATEGORICAL[k % len(style.CATEGORICAL)]
                line = p.plot([], [], pen=pg.mkPen(color, width=2), symbol="o", symbolSize=6, symbolBrush=color,
                              name=m)
                err = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), height=np.zeros(0),
                                      pen=pg.mkPen(color, width=1), beam=0.015 * span)
                p.addItem(err)
                self._curves[lf, m] = (line, err)
            for ax in ("bottom", "left"):
                p.getAxis(ax).enableAutoSIPrefix(False)
            p.getAxis("bottom").setTicks([ticks])
            p.setLabel("bottom", "η (fraction missing; realised)" if numeric else "mask setting")
            p.showGrid(x=True, y=True, alpha=0.3)
            p.vb.disableAutoRange()
            self._curve_plots.append(p)

    @property
    def curve_items(self) -> dict[tuple[float, str], pg.PlotDataItem]:
        return {k: line for k, (line, _e) in self._curves.items() if line.xData is not None and len(line.xData)}

    def export(self, folder: Path) -> list[Path]:
        r = self.result
        files: list[Path] = []
        if r is None:
            return files
        name = safe_name(f"sweep-{r.id}-{Path(r.dataset).name or r.dataset}")
        files += export_plot(self.heat, folder, f"{name}-heatmaps")
        files += export_plot(self.curves, folder, f"{name}-curves")
        if r.mismatch:
            files += export_plot(self.matrix.plot, folder, f"{name}-train-test")
        files.append(write_csv(folder / f"{safe_name(name)}.csv", r.csv_header(), r.csv_rows()))
        return files


class SweepsPanel(QWidget):
    """The Sweeps tab (see the module docstring)."""

    sig_message = Signal(str, str)  # text, level
    sig_busy_changed = Signal(bool)

    def __init__(self, store, get_bundle, base_config_getter, parent: QWidget | None = None,
                 run_queue: RunQueue | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.sweeps = SweepStore(store)
        self.get_bundle = get_bundle
        self.base_config_getter = base_config_getter
        self.runner = WorkRunner(self, max_threads=1)
        self.job = None
        self.job_sweep_id: int | None = None
        self.dialog: SweepDialog | None = None
        self._resuming = False
        self._cells_before = False
        # sweeps start through the run queue the window shares with its training runs: one trainer at a time
        # (two on two threads would share torch's global random generator, and each would run at half speed)
        self._own_queue = run_queue is None
        self.run_queue = run_queue if run_queue is not None else RunQueue()
        self._entry: QueueEntry | None = None  # the queue's entry of the sweep running here

        self.new_btn = QPushButton("New sweep…")
        self.new_btn.setToolTip("Train methods × label fractions × seeds and evaluate each under a missing-rate "
                                "grid (Ctrl+Shift+N); while a training or a sweep runs, it is queued")
        self.open_btn = QPushButton("Open sweep file…")
        self.open_btn.setToolTip("Read a sweep.json written by `robult sweep --out DIR`")
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("Continue a cancelled or interrupted sweep: finished runs are kept (queued while "
                                   "a training or a sweep runs)")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop the running sweep after the current training step (Esc); finished runs "
                                   "stay")
        self.delete_btn = QPushButton("Delete")
        self.delete_btn.setToolTip("Remove the sweep from the session (its run folder stays on disk)")
        self.export_btn = QPushButton("Export…")
        self.export_btn.setToolTip("Heat maps and curves as PNG and SVG, the cells as CSV")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.eta = QLabel("")
        bar = QHBoxLayout()
        for w in (self.new_btn, self.open_btn, self.resume_btn, self.cancel_btn, self.delete_btn):
            bar.addWidget(w)
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.eta)
        bar.addWidget(self.export_btn)

        self.list = QTreeWidget()
        self.list.setHeaderLabels(["#", "Status", "Runs", "Dataset", "Name"])
        self.list.setRootIsDecorated(False)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setMinimumWidth(320)
        self.list.itemSelectionChanged.connect(self._on_selection)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plots = SweepPlots()
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.summary)
        rl.addWidget(self.plots, 1)
        split = QSplitter()
        split.addWidget(self.list)
        split.addWidget(right)
        split.setStretchFactor(1, 3)
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(split, 1)

        self.act_new = QAction("New sweep…", self)
        self.act_new.setShortcut(QKeySequence("Ctrl+Shift+N"))
        self.act_new.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.act_new.triggered.connect(self.new_sweep)
        self.addAction(self.act_new)  # Esc (the window's Stop action) cancels the sweep while this tab is shown
        self.new_btn.clicked.connect(self.new_sweep)
        self.open_btn.clicked.connect(self.open_sweep_file)
        self.resume_btn.clicked.connect(self.resume_selected)
        self.cancel_btn.clicked.connect(self.cancel)
        self.delete_btn.clicked.connect(self.delete_selected)
        self.export_btn.clicked.connect(self.export_selected)
        self.sweeps.mark_interrupted()
        self.run_queue.subscribe(self._on_queue_changed)
        self.refresh()

    def _on_queue_changed(self) -> None:
        if shiboken6.isValid(self):
            self._update_buttons()
        else:  # the panel is gone; the window's queue outlived it
            self.run_queue.unsubscribe(self._on_queue_changed)

    # --- the list -----------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None

    def selected_id(self) -> int | None:
        items = self.list.selectedItems()
        return int(items[0].data(0, Qt.ItemDataRole.UserRole)) if items else None

    def refresh(self, select: int | None = None) -> None:
        keep = select if select is not None else self.selected_id()
        self.list.blockSignals(True)
        self.list.clear()
        chosen = None
        for s in self.sweeps.list():
            it = QTreeWidgetItem([str(s.id), s.status, f"{s.runs_done}/{s.runs_total}", s.dataset, s.name or ""])
            it.setData(0, Qt.ItemDataRole.UserRole, s.id)
            it.setForeground(1, pg.mkColor(STATUS_COLORS.get(s.status, "#333")))
            it.setToolTip(4, s.name or "")
            if s.error:
                it.setToolTip(1, s.error)
            self.list.addTopLevelItem(it)
            if s.id == keep:
                chosen = it
        for c in range(5):
            self.list.resizeColumnToContents(c)
        if chosen is None and self.list.topLevelItemCount():
            chosen = self.list.topLevelItem(self.list.topLevelItemCount() - 1)
        if chosen is not None:
            self.list.setCurrentItem(chosen)
        self.list.blockSignals(False)
        self._on_selection()  # once, whatever the list did meanwhile

    def _update_row(self, res: SweepResult) -> None:
        for i in range(self.list.topLevelItemCount()):
            it = self.list.topLevelItem(i)
            if int(it.data(0, Qt.ItemDataRole.UserRole)) == res.id:
                it.setText(1, res.status)
                it.setText(2, f"{res.runs_done}/{res.runs_total}")
                it.setForeground(1, pg.mkColor(STATUS_COLORS.get(res.status, "#333")))

    @Slot()
    def _on_selection(self) -> None:
        sid = self.selected_id()
        res = self.sweeps.get(sid) if sid is not None else None
        self.plots.set_result(res)
        self._show_summary(res)
        self._update_buttons(res)

    def _show_summary(self, res: SweepResult | None) -> None:
        if res is None:
            self.summary.setText("No sweep yet: New sweep… trains one here; Open sweep file… reads one made by "
                                 "`robult sweep`.")
        else:
            extra = f"<br><span style='color:#B00020'>{res.error}</span>" if res.error else ""
            where = f"<br>Runs: {res.out_dir}" if res.out_dir else ""
            self.summary.setText(f"<b>#{res.id} {res.name}</b> — {res.status}. {res.summary()}.{where}{extra}")

    def _update_buttons(self, res: SweepResult | None = None) -> None:
        if res is None:
            sid = self.selected_id()
            res = self.sweeps.get(sid) if sid is not None else None
        self.cancel_btn.setEnabled(self.busy)
        self.resume_btn.setEnabled(res is not None and res.status in SWEEP_RESUMABLE and res.source == "app"
                                   and self.run_queue.find((SWEEP, res.id)) is None)
        self.delete_btn.setEnabled(res is not None and not (self.busy and res.id == self.job_sweep_id))
        self.export_btn.setEnabled(res is not None and res.runs_done > 0)

    # --- starting, resuming, cancelling ---------------------------------------------------------------------
    @Slot()
    def new_sweep(self) -> SweepDialog | None:
        """Open the New sweep dialog (window-modal, not blocking); OK starts the sweep, or queues it while a
        training or another sweep runs."""
        dlg = SweepDialog(self.base_config_getter(), self)
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.accepted.connect(self._on_dialog_accepted)
        self.dialog = dlg
        dlg.open()
        return dlg

    @Slot()
    def _on_dialog_accepted(self) -> None:
        dlg = self.dialog
        req = dlg.request() if dlg is not None else None
        if req is not None:
            self.start(req)

    def start(self, req: SweepRequest) -> int | None:
        """Run a sweep through the run queue: stored and started in the background now when nothing else runs,
        else queued (the status bar says its place) and stored when its turn comes. Returns its id when it
        started now (None when it was queued)."""
        name = req.name or f"{req.base.data.dataset}: {', '.join(req.methods)}"
        entry = self.run_queue.submit(SWEEP, f"{name} ({_count(req.runs_total, 'training')})",
                                      lambda e: self._start_now(e, req, name))
        self._say_submitted(entry)
        return self.job_sweep_id if entry.state == RUNNING and self._entry is entry else None

    def _say_submitted(self, entry: QueueEntry) -> None:
        text = submission_message(self.run_queue, entry)
        if text:
            self.sig_message.emit(text, "info" if entry.state not in (FAILED, CANCELLED) else "warn")

    def _start_now(self, entry: QueueEntry, req: SweepRequest, name: str) -> bool:
        """The queue's turn of a new sweep: store it and start its background work."""
        from robult_engine.missing import parse_missing_grid
        labels = [s.label for s in parse_missing_grid(list(req.missing))]
        sid = self.sweeps.create(name=name, dataset=req.base.data.dataset, metric="",
                                 methods=list(req.methods), label_fractions=list(req.label_fractions),
                                 missing=labels, seeds=req.seeds, mask_seed=req.mask_seed,
                                 config={"request": {"methods": list(req.methods),
                                                     "label_fractions": list(req.label_fractions),
                                                     "missing": list(req.missing), "seeds": req.seeds,
                                                     "mask_seed": req.mask_seed, "name": req.name,
                                                     "train_missing": list(req.train_missing)},
                                         "base": req.base.to_dict()},
                                 out_dir="", runs_total=req.runs_total, rates={}, realised={},
                                 train_missing=req.train_settings())
        import datetime as _dt
        # a new folder per sweep: an id freed by a deleted sweep is given again, its folder stays on disk
        out = runs_root(self.store) / "sweeps" / f"sweep-{sid}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
        with self.store.db.atomic():
            self.store.db["sweeps"].update(sid, {"out_dir": str(out)})
        self._run(sid, req, out, resume=False, entry=entry)
        return True

    def _run(self, sid: int, req: SweepRequest, out: Path, resume: bool, entry: QueueEntry | None = None) -> None:
        self._entry = entry
        self.job_sweep_id = sid
        self._resuming = resume
        before = self.sweeps.get(sid)
        self._cells_before = bool(before and before.runs_done)
        self.sweeps.set_status(sid, SWEEP_RUNNING)
        self.progress.setValue(0)
        self.progress.setFormat("loading the data and drawing the masks…")
        self.eta.setText("")
        get_bundle = self.get_bundle
        self.job = self.runner.start(lambda work: run_sweep_work(work, req, out, get_bundle, resume=resume),
                                     on_result=self._on_result, on_error=self._on_error,
                                     on_progress=self._on_progress, on_cancelled=self._on_cancelled)
        self.refresh(select=sid)
        self.sig_busy_changed.emit(True)
        self.sig_message.emit(f"Sweep #{sid}: {req.runs_total} trainings started.", "info")

    @Slot()
    def resume_selected(self) -> None:
        """Resume the selected sweep through the run queue (now, or once what runs before it has ended)."""
        sid = self.selected_id()
        res = self.sweeps.get(sid) if sid is not None else None
        if res is None or res.status not in SWEEP_RESUMABLE or self._request_of(res) is None:
            return
        entry = self.run_queue.submit(SWEEP, f"resume #{sid} {res.name}".rstrip(),
                                      lambda e: self._resume_now(e, sid), key=(SWEEP, sid))
        self._say_submitted(entry)

    def _request_of(self, res: SweepResult) -> SweepRequest | None:
        try:
            return request_of(res)
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            self.sig_message.emit(f"Sweep #{res.id} cannot be resumed: {e}", "error")
            return None

    def _resume_now(self, entry: QueueEntry, sid: int) -> bool:
        """The queue's turn of a resume: the sweep as it is now (it may have been deleted meanwhile)."""
        res = self.sweeps.get(sid)
        if res is None or res.status not in SWEEP_RESUMABLE:
            entry.note = f"sweep #{sid} is {'gone' if res is None else res.status}, nothing to resume"
            self.sig_message.emit(f"Sweep #{sid} was not resumed: {entry.note}.", "warn")
            return False
        req = self._request_of(res)
        if req is None:
            entry.note = f"sweep #{sid} cannot be resumed"
            return False
        self._run(sid, req, Path(res.out_dir), resume=True, entry=entry)
        return True

    @Slot()
    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.progress.setFormat("cancelling after the current step…")

    # --- the job's reports (GUI thread) ----------------------------------------------------------------------
    def _on_progress(self, p) -> None:
        sid = self.job_sweep_id
        if sid is None:
            return
        if isinstance(p, SweepPlanned):
            if self._resuming:  # the runs the folder still holds come right after this; nothing else is kept
                self.sweeps.clear_cells(sid)
                if p.resumed == 0 and self._cells_before:
                    self.sig_message.emit(f"Sweep #{sid}: no finished run found in its folder; all {p.runs_total} "
                                          f"runs train again.", "warn")
            with self.store.db.atomic():
                self.store.db["sweeps"].update(sid, {
                    "missing": _dumps(list(p.labels)), "metric": p.metric, "runs_total": p.runs_total,
                    "rates": _dumps({k: (None if v is None or math.isnan(v) else v) for k, v in p.rates.items()}),
                    "realised": _dumps(p.realised)})
            if p.train:
                self.sweeps.set_mismatch(sid, list(p.train), p.train_rates, p.train_realised)
            if p.resumed:
                self.sig_message.emit(f"Sweep #{sid}: {p.resumed} finished run(s) kept from its folder.", "info")
        elif isinstance(p, SweepRunRecorded):
            metric = self.sweeps.metric_of(sid)
            self.sweeps.add_run(sid, p.label_fraction, p.method, p.seed, p.missing, metric, p.val_score,
                                p.best_epoch, train_missing=p.train_missing)
            res = self.sweeps.get(sid)
            self._update_row(res)
            if self.selected_id() == sid:  # only the data of the plots change (app/views/sweeps.py SweepPlots)
                self.plots.set_result(res)
                self._show_summary(res)
        elif isinstance(p, SweepProgress):
            self.progress.setValue(int(1000 * p.fraction))
            self.progress.setFormat(f"{p.runs_done}/{p.runs_total} runs · {p.run_label}"
                                    + (f" · step {p.step}/{p.steps}" if p.steps else ""))
            self.eta.setText(format_eta(p.eta_s))

    def _finish(self, status: str, text: str, level: str, error: str = "", elapsed: float | None = None) -> None:
        sid = self.job_sweep_id
        entry, self._entry = self._entry, None
        self.job = None
        self.job_sweep_id = None
        if sid is not None:
            self.sweeps.set_status(sid, status, error=error, elapsed_s=elapsed)
        self.progress.setFormat(text)
        self.eta.setText("")
        self.refresh(select=sid)
        self.sig_busy_changed.emit(False)
        self.sig_message.emit(f"Sweep #{sid}: {text}", level)
        # the next request of the run queue starts now
        self.run_queue.finish(entry, {SWEEP_DONE: DONE, SWEEP_FAILED: FAILED}.get(status, CANCELLED), note=text)

    def _on_result(self, payload: dict) -> None:
        self.progress.setValue(1000)
        self._finish(SWEEP_DONE, "finished", "ok", elapsed=float(payload.get("elapsed_s", 0.0)))

    def _on_error(self, failure) -> None:
        self._finish(SWEEP_FAILED, f"failed: {failure.message}", "error", error=failure.message)

    def _on_cancelled(self, _payload=None) -> None:
        self._finish(SWEEP_CANCELLED, "cancelled (finished runs kept; Resume continues)", "info",
                     error="Cancelled; Resume continues from the finished runs.")

    # --- files -------------------------------------------------------------------------------------------------
    @Slot()
    def open_sweep_file(self, path: str | None = None) -> int | None:
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Open a sweep", "", "Sweep (sweep.json);;JSON (*.json)")
            if not path:
                return None
        try:
            sid = self.sweeps.import_sweep_json(path)
        except SweepFileError as e:
            self.sig_message.emit(str(e), "error")
            QMessageBox.warning(self, "Cannot open the sweep", str(e))
            return None
        self.refresh(select=sid)
        self.sig_message.emit(f"Sweep #{sid} read from {path}.", "ok")
        return sid

    @Slot()
    def export_selected(self) -> Path | None:
        if self.plots.result is None:
            return None
        return export_to_chosen_folder(self, "Export the sweep to a folder", f"sweep-{self.plots.result.id}",
                                       self.plots.export, self.sig_message.emit)

    @Slot()
    def delete_selected(self) -> None:
        sid = self.selected_id()
        if sid is None or (self.busy and sid == self.job_sweep_id):
            return
        self.sweeps.delete(sid)
        self.refresh()
        self.sig_message.emit(f"Sweep #{sid} removed from the session (its folder stays on disk).", "info")

    def shutdown(self, timeout_ms: int = 15_000) -> bool:
        """Cancel the running sweep and wait (bounded) for its thread; finished runs are already stored. (The
        window closes the run queue first, so nothing queued starts meanwhile.)"""
        if self._own_queue:
            self.run_queue.close()
        if self.job is not None:
            self.job.cancel()
        ok = self.runner.shutdown(timeout_ms)
        if self.job_sweep_id is not None:
            self.sweeps.set_status(self.job_sweep_id, "interrupted",
                                   error="The app was closed while this sweep ran; Resume continues.")
            self.job = None
            self.job_sweep_id = None
            entry, self._entry = self._entry, None
            self.run_queue.finish(entry, CANCELLED, note="interrupted: the app was closed while it ran")
        return ok


def request_of(res: SweepResult) -> SweepRequest:
    """The request a stored app sweep was started with (to resume it)."""
    from robult_engine.config import RunConfig
    r = res.config["request"]
    base = RunConfig.from_dict(res.config["base"])
    return SweepRequest(base=base, methods=tuple(r["methods"]), label_fractions=tuple(r["label_fractions"]),
                        missing=tuple(r["missing"]), seeds=int(r["seeds"]), mask_seed=int(r["mask_seed"]),
                        name=r.get("name", ""), train_missing=tuple(r.get("train_missing") or ())).validate()


def _dumps(v) -> str:
    import json
    return json.dumps(v, sort_keys=True)
