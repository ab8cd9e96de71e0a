"""DatasetPIDPanel: how the *data* splits — redundancy R, uniqueness U1 / U2 and synergy S (bits) of every pair
of modalities with respect to the target (the engine's PID estimator, `robult_engine.explain.pid`) — next to
how the *model* splits: its mean ‖Z^i‖ (redundant part) and ‖U^i‖ (unique part) per modality and its mean
|φ_i| (Shapley summary) over a split. So a user can ask "the data is mostly redundant; does the model's Z
carry most of it?".

Computed in the background (Cancel; the progress names the pair being estimated, "pair 3/15: fou × kar",
elided to the bar's width); the PID is cached per dataset (in memory, keyed by the
dataset fingerprint, `explain.PID_CACHE`), so a second model on the same data only encodes the split. Pairs are
rows of stacked horizontal bars, so the 15 pairs of M = 6 stay legible (each named, R U1 U2 S in order).

The target is the one `robult pid` takes: single-label classes; a regression score cut into quantile bins
(`robult_engine.explain.pid.REGRESSION_BINS`); for multi-label data, one label present or absent — the Label
box (shown only then, the dataset's class names in its order) chooses it, like `robult pid --label NAME`, and
the cache keeps one PID per label. A new model or dataset clears what was shown: nothing stands for the new
data until it is computed. `compute_dataset_pid` is the tab's job, Qt-free.

Run alone: `python -m app.views.analysis.pid_panel` shows it on a synthetic result (M = 6).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSplitter, QVBoxLayout, QWidget

from app.background.runner import WorkRunner
from robult_engine.explain.pid import REGRESSION_BINS, all_pairs, dataset_pid

from app.core.analysis.explain import PID_CACHE, ExplainResult, PIDCache, compute_explain
from app.core.analysis.tables import write_csv
from app.core.analysis.task_language import phi_axis
from app.views.common import style
from app.views.common.plot_util import clear_message, show_message
from app.views.common.export import export_plot
from app.views.common.job_controls import JobControls, JobOwner, export_to_chosen_folder

PARTS = ("R", "U1", "U2", "S")
PART_COLOURS = {"R": style.Z_COLOUR, "U1": style.U_COLOUR, "U2": "#F5C77E", "S": "#CC79A7"}
PART_NAMES = {"R": "R redundant", "U1": "U1 unique to the first", "U2": "U2 unique to the second",
              "S": "S synergy"}
NOT_COMPUTED = "not computed yet"


def pair_progress_texts(pairs: list[tuple[str, str]], fit=lambda text: text) -> list[str]:
    """The progress text while the pair `i` of n is estimated, "pair 3/15: fou × kar", each passed through `fit`
    (the progress bar's elision to its width)."""
    n = len(pairs)
    return [fit(f"pair {i + 1}/{n}: {a} × {b}") for i, (a, b) in enumerate(pairs)]


def clip_text(text: str, chars: int) -> str:
    """`text` cut to `chars` characters, the last one "…" when cut."""
    return text if len(text) <= chars else text[:max(chars - 1, 0)] + "…"


def target_note(info, label: int | None = None) -> str:
    """What Y is in the PID of a dataset (`info`: DatasetInfo), as `robult pid` takes it."""
    if info.task == "regression":
        return f"the score cut into {REGRESSION_BINS} quantile bins"
    if info.task == "multi-label":
        if label is None:
            return "one label, to choose"
        return f"the label {info.class_names[label]} (present / absent)"
    return f"the {len(info.class_names)} classes"


class _LabelPIDCache:
    """A view of a PIDCache whose keys also name the multi-label target's label."""

    def __init__(self, cache: PIDCache, label: int) -> None:
        self.cache, self.label = cache, label

    def key(self, bundle, pairs, clusters=None) -> tuple:
        return (*self.cache.key(bundle, pairs, clusters), ("label", self.label))

    def get(self, key: tuple):
        return self.cache.get(key)

    def put(self, key: tuple, value) -> None:
        self.cache.put(key, value)


def compute_dataset_pid(loaded, bundle, split: str = "test", cache: PIDCache | None = None, *,
                        label: int | None = None, progress=None, check=None) -> ExplainResult:
    """The tab's job (Qt-free, a background worker's): `explain.compute_explain` — the dataset's PID of every
    modality pair and the model's Z/U split and |φ| on `split` — with the target `robult pid` uses. Multi-label
    data needs `label` (an index into the class names): the PID is of that label present or absent, cached per
    label; a regression score is binned by the engine (`discrete_target`)."""
    if bundle.info.task != "multi-label":
        return compute_explain(loaded, bundle, split, cache, progress=progress, check=check)
    names = bundle.info.class_names
    if label is None or not 0 <= int(label) < len(names):
        raise ValueError(f"{bundle.info.name} is multi-label: choose the label whose PID to estimate "
                         f"({', '.join(names[:5])}{', …' if len(names) > 5 else ''})")
    label = int(label)
    view = _LabelPIDCache(PID_CACHE if cache is None else cache, label)
    pairs = all_pairs(bundle.info.modality_names)
    key = view.key(bundle, pairs)
    t0 = time.perf_counter()
    fresh = view.get(key) is None
    if fresh:
        total = len(pairs) + 1

        def on_pair(done, n):
            if progress is not None:
                progress(done, total, f"PID {done}/{n} pairs ({names[label]})")

        def should_stop() -> bool:
            if check is not None:
                check()
            return False

        if progress is not None:
            progress(0, total, f"PID of the first pair ({names[label]})")
        view.put(key, dataset_pid(bundle, pairs, label=label, should_stop=should_stop, progress=on_pair))
    t_pid = time.perf_counter() - t0
    result = compute_explain(loaded, bundle, split, view, progress=progress, check=check)
    result.pid_cached = not fresh
    result.pid_seconds = t_pid
    result.seconds += t_pid
    return result


class DatasetPIDPanel(JobOwner, QWidget):
    sig_result_ready = Signal(object)  # ExplainResult
    sig_message = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, *, cache: PIDCache | None = None) -> None:
        super().__init__(parent)
        self.runner = WorkRunner(self, max_threads=1)
        self.cache = PID_CACHE if cache is None else cache
        self.loaded = None
        self.bundle = None
        self.result: ExplainResult | None = None
        self.result_target = ""  # what Y was in the result shown
        self.compute_fn = compute_dataset_pid  # the job's function (tests replace it to see errors shown)
        self._generation = 0  # bumped with every new model / dataset / label: older jobs' results are dropped

        self.split = QComboBox()
        self.split.addItems(["test", "val"])
        self.split.setToolTip("The split the model's ‖Z‖ / ‖U‖ and |φ| are averaged over (the PID uses every split)")
        self.label_box = QComboBox()
        self.label_box.setToolTip("Multi-label data has no single target: the PID is of this label, present or "
                                  "absent (as robult pid --label NAME); each label's PID is cached")
        self.label_caption = QLabel("Label")
        self.jobs = JobControls(self, self.runner, "Dataset PID",
                                compute_tip="Estimate the dataset's PID per modality pair (cached per dataset) and "
                                            "the model's Z/U split and Shapley summary, in the background")
        self.compute_btn, self.cancel_btn, self.progress = self.jobs.compute_btn, self.jobs.cancel_btn, \
            self.jobs.progress
        # room for "16/16 pair 3/15: fou × kar" (at its size hint, about 100 px, the bar cut its text short)
        self.progress.setMinimumWidth(min(240, self.progress.maximumWidth()))
        self.export_btn = QPushButton("Export…")
        self.export_btn.setEnabled(False)
        bar = QHBoxLayout()
        for w in (QLabel("Split"), self.split, self.label_caption, self.label_box, self.compute_btn, self.cancel_btn,
                  self.progress):
            bar.addWidget(w)
        self.label_caption.setVisible(False)
        self.label_box.setVisible(False)
        bar.addStretch(1)
        bar.addWidget(self.export_btn)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.pid_plot = style.plot_widget("Dataset PID per modality pair (bits)", bottom="bits", min_height=220,
                                          tooltip="Partial information decomposition of I(X1, X2; Y) for each pair "
                                                  "X1 × X2 of discretised modalities (Liang et al. 2023): R "
                                                  "redundant, U1 / U2 unique to the first / second, S synergy. "
                                                  "A bar's whole length is I(X1,X2;Y); the plug-in bias bound is "
                                                  "in the exported table.")
        self.pid_plot.getPlotItem().invertY(True)
        self.pid_plot.getPlotItem().addLegend(offset=(-10, 10), labelTextColor="#303030")
        self.pid_bars: dict[str, pg.BarGraphItem] = {}
        for part in PARTS:
            b = pg.BarGraphItem(x0=[], y=[], width=[], height=0.7, brush=PART_COLOURS[part], pen=None,
                                name=PART_NAMES[part])
            self.pid_plot.addItem(b)
            self.pid_bars[part] = b
        self.zu_plot = style.plot_widget("Model: mean ‖Z^i‖ (green, redundant) and ‖U^i‖ (orange, unique)", left="norm",
                                         min_height=160, tooltip=style.TIP_Z + "\n" + style.TIP_U)
        self.bars_z = pg.BarGraphItem(x=[], height=[], width=0.38, brush=style.Z_COLOUR, pen=None, name="‖Z‖")
        self.bars_u = pg.BarGraphItem(x=[], height=[], width=0.38, brush=style.U_COLOUR, pen=None, name="‖U‖")
        self.zu_plot.addItem(self.bars_z)
        self.zu_plot.addItem(self.bars_u)
        self.phi_plot = style.plot_widget("Model: mean |φ_i| per modality (Shapley summary)", left="nats",
                                          min_height=160,
                                          tooltip="Mean over the split of |φ_i|, the Shapley value of modality i "
                                                  "for the log-probability of the predicted class.")
        self.bars_phi = pg.BarGraphItem(x=[], height=[], width=0.6, brush=style.SUBSET, pen=None)
        self.phi_plot.addItem(self.bars_phi)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.zu_plot)
        right.addWidget(self.phi_plot)
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(self.pid_plot)
        main.addWidget(right)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(bar)
        lay.addWidget(self.info)
        lay.addWidget(main, 1)
        self.compute_btn.clicked.connect(self.compute)
        self.cancel_btn.clicked.connect(self.cancel)
        self.export_btn.clicked.connect(self._on_export_clicked)
        self.label_box.currentIndexChanged.connect(self._on_label_box_current_index_changed)
        self.compute_btn.setEnabled(False)
        self.info.setText("Load a model: the dataset's PID is shown beside the model's Z/U split.")
        self._show_empty()

    # --- inputs ---------------------------------------------------------------------------------------
    def set_context(self, loaded, bundle) -> None:
        """The current model and its dataset (from the explorer's context). What was shown belongs to the
        previous model or dataset: it is cleared, and a job still running for them is cancelled."""
        if loaded is self.loaded and bundle is self.bundle:
            return
        multi = bundle is not None and bundle.info.task == "multi-label"
        old_labels = tuple(self.label_box.itemText(i) for i in range(self.label_box.count()))
        new_labels = tuple(bundle.info.class_names) if multi else ()
        self.loaded, self.bundle = loaded, bundle  # before the label box changes (its slot reads them)
        if new_labels != old_labels:
            self.label_box.blockSignals(True)
            self.label_box.clear()
            self.label_box.addItems(list(new_labels))
            self.label_box.setCurrentIndex(0 if new_labels else -1)
            self.label_box.blockSignals(False)
        self.label_caption.setVisible(multi)
        self.label_box.setVisible(multi)
        self._clear("new model")

    def label(self) -> int | None:
        """The chosen label's index (multi-label data), else None."""
        if self.bundle is None or self.bundle.info.task != "multi-label" or self.label_box.currentIndex() < 0:
            return None
        return self.label_box.currentIndex()

    def set_label(self, name: str) -> None:
        """Choose the multi-label target's label by name."""
        i = self.label_box.findText(name)
        if i < 0:
            raise ValueError(f"no label {name!r}")
        self.label_box.setCurrentIndex(i)

    @Slot(int)
    def _on_label_box_current_index_changed(self, _index: int) -> None:
        self._clear("another label")

    def _clear(self, why: str) -> None:
        """Forget the result shown and any job running: nothing is computed yet for what is chosen now."""
        self._generation += 1
        self.result_target = ""
        if self.jobs.busy:
            self.jobs.cancel()
            self.jobs.finish()
        self.show_result(None)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(NOT_COMPUTED)
        bundle = self.bundle
        if bundle is None:
            self.info.setText("The model's dataset could not be loaded: no PID." if self.loaded is not None else
                              "Load a model: the dataset's PID is shown beside the model's Z/U split.")
            self.compute_btn.setEnabled(False)
            return
        info = bundle.info
        pairs = len(info.modality_names) * (len(info.modality_names) - 1) // 2
        self.compute_btn.setEnabled(self._can_compute())
        if not pairs:
            self.info.setText(f"<b>{info.name}</b>: one modality only, no pair to decompose.")
            return
        self.info.setText(f"<b>{info.name}</b>: {pairs} modality pair{'s' if pairs != 1 else ''}; target: "
                          f"{target_note(info, self.label())}. Nothing is computed yet for this "
                          f"{'label' if why == 'another label' else 'dataset and model'}: Compute estimates the "
                          "PID (seconds to minutes; cached for this dataset) and the model's Z/U split.")

    # --- computing ------------------------------------------------------------------------------------

    def _can_compute(self) -> bool:
        return self.bundle is not None and len(self.bundle.info.modality_names) >= 2

    @Slot()
    def compute(self) -> None:
        if self.loaded is None or not self._can_compute() or self.jobs.busy:
            return
        loaded, bundle, split, cache, fn = self.loaded, self.bundle, self.split.currentText(), self.cache, \
            self.compute_fn
        label = self.label()
        extra = {"label": label} if bundle.info.task == "multi-label" else {}
        generation, target = self._generation, target_note(bundle.info, label)

        m = len(bundle.info.modality_names)
        steps = m * (m - 1) // 2 + 1
        texts, chars = self._progress_texts(bundle.info.modality_names, steps)

        def progress(job, done: int, total: int, text: str) -> None:
            # while the pairs are estimated (steps 0 … n − 1: the pair `done` is next), its name; then the job's own
            # words, both within the bar's width
            job.progress(done, total, texts[done] if done < len(texts) else clip_text(text, chars))

        def work(job):
            return generation, target, fn(loaded, bundle, split, cache, check=job.check,
                                          progress=lambda done, total, text: progress(job, done, total, text),
                                          **extra)

        self.info.setText(f"<b>{bundle.info.name}</b>: estimating the PID of {steps - 1} modality "
                          f"pair{'s' if steps != 2 else ''} on the {split} split; target: {target} …")
        self.jobs.start(work, steps, self._on_done)
        self._show_empty()

    def _progress_texts(self, names, steps: int) -> tuple[list[str], int]:
        """The per-pair progress texts, elided to what the bar has room for after the "done/total " that the job
        controls put in front, and that room in characters (for the other texts, cut in the worker thread)."""
        bar = self.progress
        width = min(bar.width() if bar.isVisible() else bar.maximumWidth(), bar.maximumWidth())
        metrics = bar.fontMetrics()
        room = max(width - metrics.horizontalAdvance(f"{steps}/{steps} ") - 16, 40)
        texts = pair_progress_texts(all_pairs(tuple(names)),
                                    lambda text: metrics.elidedText(text, Qt.TextElideMode.ElideRight, room))
        return texts, max(room // max(metrics.averageCharWidth(), 1), 4)

    def _on_done(self, value) -> None:
        generation, target, result = value
        if generation != self._generation:  # computed for a model, dataset or label no longer chosen
            return
        self.progress.setFormat(f"done in {result.seconds:.1f} s" + (" (PID cached)" if result.pid_cached else ""))
        self.result_target = target
        self.show_result(result)
        self.sig_result_ready.emit(result)

    # --- showing --------------------------------------------------------------------------------------
    def show_result(self, result: ExplainResult | None) -> None:
        self.result = result
        self.export_btn.setEnabled(result is not None)
        if result is None:  # empty plots, no axis labels left over from another dataset
            for b in self.pid_bars.values():
                b.setOpts(x0=[], y=[], width=[])
            for b in (self.bars_z, self.bars_u, self.bars_phi):
                b.setOpts(x=[], height=[])
            style.set_ticks(self.pid_plot, "left", [])
            self.pid_plot.setMinimumHeight(220)
            for w in (self.zu_plot, self.phi_plot):
                style.set_ticks(w, "bottom", [])
            for w in (self.pid_plot, self.zu_plot, self.phi_plot):
                w.getPlotItem().enableAutoRange()
            self._show_empty()
            return
        for w in (self.pid_plot, self.zu_plot, self.phi_plot):
            clear_message(w)
        self.phi_plot.setLabel("left", phi_axis(self.bundle.info.task if self.bundle is not None else
                                                "single-label", mean_abs=True))
        labels = [f"{a} × {b}" for a, b in (p.pair for p in result.pid)]
        y = np.arange(len(labels), dtype=float)
        x0 = np.zeros(len(labels))
        for part in PARTS:
            w = np.array([p.result.components()[part] for p in result.pid], float)
            self.pid_bars[part].setOpts(x0=x0.copy(), y=y, width=w, height=0.7)
            x0 = x0 + w
        style.set_ticks(self.pid_plot, "left", labels, max_labels=len(labels))
        self.pid_plot.setYRange(-0.6, len(labels) - 0.4, padding=0)
        # room on the right for the legend, clear of the longest bar
        self.pid_plot.setXRange(0, max(float(x0.max()) if len(x0) else 1.0, 0.1) * 1.45, padding=0)
        self.pid_plot.setMinimumHeight(max(220, 26 * len(labels) + 80))
        names = result.modality_names
        x = np.arange(len(names), dtype=float)
        self.bars_z.setOpts(x=x - 0.2, height=np.asarray(result.z_norm))
        self.bars_u.setOpts(x=x + 0.2, height=np.asarray(result.u_norm))
        phi = np.asarray(result.attribution.mean_abs["all"]) if result.attribution is not None else np.zeros(len(x))
        self.bars_phi.setOpts(x=x, height=phi)
        for w in (self.zu_plot, self.phi_plot):
            style.set_ticks(w, "bottom", names)
            w.setXRange(-0.6, len(names) - 0.4, padding=0)
        tot = {part: sum(p.result.components()[part] for p in result.pid) for part in PARTS}
        s = sum(tot.values()) or 1.0
        z, u = float(np.sum(result.z_norm)), float(np.sum(result.u_norm))
        self.info.setText(
            f"<b>{result.dataset}</b> ({len(result.pid)} pair{'s' if len(result.pid) != 1 else ''}"
            f"{', PID from the cache' if result.pid_cached else ''}"
            f"{'; target: ' + self.result_target if self.result_target else ''}): over the pairs, "
            f"R {tot['R'] / s:.0%}, U {(tot['U1'] + tot['U2']) / s:.0%}, S {tot['S'] / s:.0%} of the information. "
            f"The model on the "
            f"{result.split} split: ‖Z‖ is {z / max(z + u, 1e-12):.0%} of ‖Z‖ + ‖U‖. "
            f"<span style='color:#606060'>Synergy at or below the bias bound "
            f"({max(p.result.bias_bound for p in result.pid):.3f} bits) is not distinguishable from zero.</span>")

    def _show_error(self, text: str) -> None:
        super()._show_error(text)
        if self.result is None:
            self._show_empty()

    def _message(self, text: str, level: str) -> None:
        super()._message(text, level)
        if self.result is None and not self.jobs.busy:  # a job ended (cancelled): the plots no longer say "Estimating…"
            self._show_empty()

    def _show_empty(self) -> None:
        """What the empty plots say instead of bare 0–1 axes: why nothing is shown, or that it is computing."""
        if self.bundle is None:
            text = "Load a model to see its dataset's PID."
        elif not self._can_compute():
            text = "The PID needs at least two modalities."
        elif self.jobs.busy:
            text = "Estimating…"
        else:
            text = "Press Compute to estimate."
        for w in (self.pid_plot, self.zu_plot, self.phi_plot):
            show_message(w, text)

    # --- export ---------------------------------------------------------------------------------------
    def tables(self) -> dict[str, tuple[list[str], list[list]]]:
        r = self.result
        if r is None:
            return {}
        pid = [[a, b, *(p.result.components()[k] for k in PARTS), p.result.mi_joint, p.result.bias_bound, p.result.n,
                p.clusters[0], p.features[0], p.features[1], self.result_target]
               for p, (a, b) in ((p, p.pair) for p in r.pid)]
        model = [[n, z, u, (r.attribution.mean_abs["all"][i] if r.attribution else "")]
                 for i, (n, z, u) in enumerate(zip(r.modality_names, r.z_norm, r.u_norm))]
        return {"dataset_pid": (["modality_1", "modality_2", *PARTS, "I_joint", "bias_bound", "n", "clusters",
                                 "features_1", "features_2", "target"], pid),
                "model_split": (["modality", "mean_z_norm", "mean_u_norm", "mean_abs_phi"], model)}

    def export(self, folder) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out: list[Path] = []
        for name, w in (("dataset_pid", self.pid_plot), ("model_zu", self.zu_plot), ("model_phi", self.phi_plot)):
            out += export_plot(w, folder, name)
        for name, (header, rows) in self.tables().items():
            out.append(write_csv(folder / f"{name}.csv", header, rows))
        return out

    @Slot()
    def _on_export_clicked(self) -> None:
        if self.result is not None:
            export_to_chosen_folder(self, "Export the dataset PID plots and tables to…", f"pid-{self.result.dataset}",
                                    self.export, self._message)

    def shutdown(self) -> None:
        self.runner.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)


def synthetic_result(m: int = 6, seed: int = 0) -> ExplainResult:
    """A made-up PID of M modalities (for `python -m` only)."""
    import itertools

    from robult_engine.explain.attribution import AttributionSummary
    from robult_engine.explain.pid import PairPID, PIDResult
    rng = np.random.default_rng(seed)
    names = tuple(("pix", "fou", "fac", "kar", "zer", "mor")[:m]) if m <= 6 else tuple(f"m{i}" for i in range(m))
    pid = []
    for a, b in itertools.combinations(names, 2):
        r, u1, u2, s = rng.uniform(0.8, 2.0), rng.uniform(0.1, 1.0), rng.uniform(0.1, 1.0), rng.uniform(0.05, 0.3)
        res = PIDResult(redundancy=r, unique_1=u1, unique_2=u2, synergy=s, mi_1=r + u1, mi_2=r + u2,
                        mi_joint=r + u1 + u2 + s, mi_min=r + u1 + u2, n=2000, sizes=(10, 10, 10), bias_bound=0.25)
        pid.append(PairPID(pair=(a, b), result=res, clusters=(10, 10), features=("as is", "as is")))
    phi = rng.uniform(0.3, 0.6, m).tolist()
    summ = AttributionSummary(modalities=list(names), explain="predicted", n=400, mean_abs={"all": phi},
                              mean={"all": phi}, count={"all": 400}, negative_share=[0.1] * m)
    return ExplainResult(dataset="synthetic", fingerprint="0", modality_names=names, pid=pid, pid_cached=False,
                         split="test", z_norm=rng.uniform(3, 5, m).tolist(), u_norm=rng.uniform(1, 3, m).tolist(),
                         attribution=summ)


def main() -> int:
    from app.views.common.demo import run_panel_demo
    return run_panel_demo(DatasetPIDPanel, lambda p: p.show_result(synthetic_result()), "Dataset PID — synthetic",
                          size=(1200, 700))


if __name__ == "__main__":
    raise SystemExit(main())
