"""SlicesView: where the loaded model fails. "Find slices" searches the test split for the groups of samples
(conjunctions of feature=value: a modality present / masked / absent, the class, the confidence, κ, the labelled
neighbours, a manifest's meta: columns) whose error is far above the split's (robult_engine/slices.py, SliceLine).

The search runs in the background (the work contract of app/core/work.py, through a WorkRunner: progress,
Cancel, errors shown in the view and the status bar). The table lists the slices: predicate, size, mean error in
the slice and outside it. Selecting a slice lists its samples; activating a slice (double-click, Enter) or a
sample opens it in the explorer, with the modalities its prediction used, and Prev / Next step through the
slice's samples. "Compare with" scores a second checkpoint on the very samples of each slice and shows both
errors side by side.

Run alone: `python -m app.views.analysis.slices_view CHECKPOINT` shows it on a checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from robult_engine.missing import MissingSpecError
from robult_engine.slices import MAX_ORDER, Slice, SliceReport

from app.background.runner import WorkRunner
from app.views.common.job_controls import JobControls, JobOwner

COLUMNS = ("#", "slice", "size", "error in", "error out", "error in (B)", "error out (B)", "score")
COL_B_IN, COL_B_OUT = 5, 6
OTHER_FILE = "Checkpoint file…"
# a slice's samples listed beside the table: the first ones (each row is worded on the GUI thread, and a slice
# of 6,855 Movies films took 0.2 s to list); ◀ Prev / Next ▶ still step through every sample of the slice
MAX_SLICE_SAMPLES_LISTED = 500
MISSING_TIP = ("Optional missing-modality setting, as `robult eval --missing` takes it (one setting): e.g. "
               "mcar:0.5 (50 % of the entries missing), mnar-class:0.8@3, subset:audio. Empty: the data's own "
               "missing modalities only.")


@dataclass
class SlicesResult:
    """A search on the loaded model, and the second model's errors on the same samples (when asked)."""
    report: SliceReport
    class_names: tuple[str, ...]
    modality_names: tuple[str, ...]
    compare_label: str = ""
    compare: list[tuple[float, float]] = field(default_factory=list)  # per slice: (error in, error out)
    compare_errors: np.ndarray | None = None  # (N,) the second model's per-sample errors (NaN: not scored)
    compare_overall: float = float("nan")

    @property
    def slices(self) -> list[Slice]:
        return self.report.slices


def compute_slices(loaded, bundle, memory_state: dict | None, *, split: str = "test", missing: str = "",
                   mask_seed: int = 0, top_k: int = 10, min_support: int | None = None, max_order: int = 2,
                   compare_path: str = "", compare_label: str = "", progress=None, check=None) -> SlicesResult:
    """The work of "Find slices" (any thread; Qt-free): the loaded model's slices and, with `compare_path`, the
    errors of that checkpoint on each slice's samples under the same mask."""
    from robult_engine.slices import find_model_slices, model_errors, one_setting_mask, slice_errors
    if bundle is None:
        raise ValueError("the model's dataset is not available, so there is no split to search")
    mask, label = one_setting_mask(bundle, split, missing or None, mask_seed)
    cfg = loaded.config
    report = find_model_slices(loaded.model, bundle, split=split, spec_mask=mask, missing_label=label,
                               mask_seed=mask_seed, labeled_indices=getattr(loaded, "labeled_indices", None),
                               memory_state=memory_state, method=cfg.method, kernel=cfg.loss.kernel,
                               bandwidth=cfg.loss.bandwidth, top_k=top_k, min_support=min_support,
                               max_order=max_order, progress=progress, check=check)
    report.checkpoint = str(getattr(loaded, "checkpoint_path", "") or "")
    res = SlicesResult(report, tuple(bundle.info.class_names), tuple(bundle.info.modality_names))
    if compare_path:
        from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
        from robult_engine.evaluation import transfer_mismatches
        ckpt = load_checkpoint(compare_path)
        mismatch = transfer_mismatches(ckpt.info, bundle.info)
        if mismatch:
            raise ValueError(f"{compare_path}: cannot be compared on {bundle.info.name}: " + "; ".join(mismatch))
        if check is not None:
            check()
        errs = model_errors(model_from_checkpoint(ckpt), bundle, split, mask)
        res.compare_label = compare_label or Path(compare_path).name
        res.compare = slice_errors(report.slices, errs)
        res.compare_errors = errs
        res.compare_overall = float(np.nanmean(errs)) if np.isfinite(errs).any() else float("nan")
    return res


class SlicesView(JobOwner, QWidget):
    sig_open_sample = Signal(str, int, tuple)  # split, index, the modalities its prediction used
    sig_result_ready = Signal(object)  # SlicesResult
    sig_message = Signal(str, str)  # text, level

    def __init__(self, parent: QWidget | None = None, *, bundle_getter=None) -> None:
        super().__init__(parent)
        self.runner = WorkRunner(self, max_threads=1)
        self.bundle_getter = bundle_getter
        self.loaded = None
        self.bundle = None
        self.memory_state: dict | None = None
        self.result: SlicesResult | None = None
        self.runs: list = []  # RunRef of the session (app.core.analysis.robustness)
        self.compare_path = ""  # a checkpoint file chosen with "Checkpoint file…"
        self.current_slice: int = -1
        self.sample_rows: list[int] = []
        self._sample_pos = -1  # the position in sample_rows of the slice sample opened last

        self.split = QComboBox()
        self.split.addItems(["test", "val"])
        self.split.setToolTip("The split to search (the test split is what `robult slices` uses by default)")
        self.missing = QLineEdit()
        self.missing.setObjectName("slices_missing")
        self.missing.setPlaceholderText("the data's own gaps (e.g. mcar:0.5)")
        self.missing.setToolTip(MISSING_TIP)
        self.missing.setMinimumWidth(170)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Mask seed of the missing-modality setting (as `--mask-seed`)")
        self.top = QSpinBox()
        self.top.setRange(1, 100)
        self.top.setValue(10)
        self.top.setToolTip("How many slices to list")
        self.support = QSpinBox()
        self.support.setRange(0, 1_000_000)
        self.support.setSpecialValueText("auto")
        self.support.setToolTip("Fewest samples in a slice (auto: max(10, 1 % of the scored samples))")
        self.order = QSpinBox()
        self.order.setRange(1, MAX_ORDER)
        self.order.setValue(2)
        self.order.setToolTip("Most predicates per slice")
        self.compare_box = QComboBox()
        self.compare_box.setToolTip("Compare with run…: also score this model on the very samples of each slice")
        self.compare_box.setMinimumWidth(160)
        self.jobs = JobControls(self, self.runner, "Slice search", compute_text="Find slices",
                                compute_tip="Search the split for the slices where the model fails (in the "
                                            "background)")
        self.find_btn, self.cancel_btn, self.progress = self.jobs.compute_btn, self.jobs.cancel_btn, \
            self.jobs.progress
        self.progress.setTextVisible(True)
        self.progress.setMinimumWidth(240)  # "2/6 labelled neighbours" fits on one line
        self.progress.setMaximumWidth(360)
        # two rows, so that the tab fits a 1280-px window: what to search, then how and the actions
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        for w in (QLabel("Split"), self.split, QLabel("Missing"), self.missing, QLabel("seed"), self.seed,
                  QLabel("Compare with"), self.compare_box):
            row1.addWidget(w)
        row1.addStretch(1)
        for w in (QLabel("Top"), self.top, QLabel("Min. support"), self.support, QLabel("Predicates"), self.order,
                  self.find_btn, self.cancel_btn, self.progress):
            row2.addWidget(w)
        row2.addStretch(1)
        bar = QVBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addLayout(row1)
        bar.addLayout(row2)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setObjectName("slices_info")
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip("Double-click a slice (or press Enter) to open its first sample in the explorer")
        self.table.setColumnHidden(COL_B_IN, True)
        self.table.setColumnHidden(COL_B_OUT, True)

        self.samples_title = QLabel("<b>Samples of the slice</b>")
        self.samples_title.setWordWrap(True)
        self.samples = QListWidget()
        self.samples.setMinimumWidth(260)
        self.samples.setToolTip("Click a sample to open it in the explorer, with the modalities its prediction used")
        self.prev_btn = QPushButton("◀ Prev")
        self.prev_btn.setToolTip("The previous sample of the slice")
        self.next_btn = QPushButton("Next ▶")
        self.next_btn.setToolTip("The next sample of the slice")
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.samples_title)
        sl.addWidget(self.samples, 1)
        nav = QHBoxLayout()
        nav.addWidget(self.prev_btn)
        nav.addWidget(self.next_btn)
        sl.addLayout(nav)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(bar)
        lay.addWidget(self.info)
        lay.addWidget(split, 1)

        self.find_btn.clicked.connect(self.compute)
        self.cancel_btn.clicked.connect(self.cancel)
        self.compare_box.activated.connect(self._on_compare_activated)
        self.table.currentCellChanged.connect(self._on_current_cell_changed)
        self.table.cellActivated.connect(self._on_cell_activated)
        self.table.cellDoubleClicked.connect(self._on_cell_activated)
        self.samples.itemClicked.connect(self._on_sample_clicked)
        self.samples.itemActivated.connect(self._on_sample_clicked)
        self.prev_btn.clicked.connect(self.previous)
        self.next_btn.clicked.connect(self.next)
        self._fill_compare_box()
        self._set_nav_enabled()
        self.find_btn.setEnabled(False)
        self._say("Load a model: “Find slices” searches its test split for the groups of samples where it fails.")

    # --- inputs ---------------------------------------------------------------------------------------
    def set_context(self, loaded, bundle, memory_state: dict | None = None) -> None:
        """The current model, its dataset (None when unavailable) and its prototype memory."""
        if self._job is not None:
            self.jobs.cancel()
        self.loaded, self.bundle, self.memory_state = loaded, bundle, memory_state
        self.result = None
        self._show_table()
        self.find_btn.setEnabled(self._can_compute() and self._job is None)
        if bundle is None:
            self._say("The model's dataset is not available, so there is no split to search.", "warning")
        else:
            method = getattr(loaded.config, "method", "model")
            self._say(f"{method} on {bundle.info.name}: “Find slices” searches the chosen split.")

    def set_runs(self, runs: list) -> None:
        """The session's runs with a checkpoint on the current dataset: what "Compare with" offers."""
        self.runs = list(runs)
        self._fill_compare_box()

    def _fill_compare_box(self) -> None:
        current = self.compare_box.currentData()
        self.compare_box.blockSignals(True)
        self.compare_box.clear()
        self.compare_box.addItem("no comparison", "")
        for r in self.runs:
            if getattr(r, "checkpoint_path", ""):
                self.compare_box.addItem(r.label, r.checkpoint_path)
        if self.compare_path:
            self.compare_box.addItem(Path(self.compare_path).name, self.compare_path)
        self.compare_box.addItem(OTHER_FILE, None)
        i = self.compare_box.findData(current) if current is not None else -1
        self.compare_box.setCurrentIndex(max(0, i))
        self.compare_box.blockSignals(False)

    @Slot(int)
    def _on_compare_activated(self, i: int) -> None:
        if self.compare_box.itemData(i) is None:  # "Checkpoint file…"
            path, _ = QFileDialog.getOpenFileName(self, "Compare with the checkpoint", "", "Checkpoints (*.pt)")
            self.set_compare_path(path or "")

    def set_compare_path(self, path: str) -> None:
        """Compare with this checkpoint file ("" for no comparison)."""
        self.compare_path = str(path or "")
        self._fill_compare_box()
        self.compare_box.setCurrentIndex(max(0, self.compare_box.findData(self.compare_path)))

    def compare_choice(self) -> tuple[str, str]:
        """(checkpoint path, label) of the chosen comparison; ("", "") for none."""
        path = self.compare_box.currentData() or ""
        return str(path), (self.compare_box.currentText() if path else "")

    def _say(self, text: str, kind: str = "info") -> None:
        colour = {"error": "#B00020", "warning": "#8A5A00"}.get(kind)
        self.info.setText(f"<span style='color:{colour}'>{text}</span>" if colour else text)
        if kind in ("error", "warning"):
            self.sig_message.emit(text, kind)

    # --- computing ------------------------------------------------------------------------------------
    @Slot()
    def compute(self) -> bool:
        """Start the search; False (and a message) when the input is bad or there is nothing to search."""
        if self._job is not None or not self._can_compute():
            return False
        missing = self.missing.text().strip()
        if missing:
            try:
                from robult_engine.missing import parse_missing_grid
                specs = parse_missing_grid([missing])
                if len(specs) != 1 or specs[0].mechanism == "subsets":
                    raise MissingSpecError(f"--missing {missing}: slices are found under one setting; give one, "
                                           f"e.g. mcar:0.5")
            except MissingSpecError as e:
                self._say(f"Bad missing-modality setting: {e}", "error")
                return False
        split = self.split.currentText()
        if split not in self.bundle.splits:
            self._say(f"The dataset has no {split} split.", "warning")
            return False
        loaded, bundle, memory = self.loaded, self.bundle, self.memory_state
        seed, top, order = int(self.seed.value()), int(self.top.value()), int(self.order.value())
        support = int(self.support.value()) or None
        path, label = self.compare_choice()

        def work(job):
            return compute_slices(loaded, bundle, memory, split=split, missing=missing, mask_seed=seed, top_k=top,
                                  min_support=support, max_order=order, compare_path=path, compare_label=label,
                                  progress=job.progress, check=job.check)

        self._say("Searching…")
        self.jobs.start(work, 4 + order, self._on_done)
        return True

    # what JobControls asks of its owner (and JobOwner's cancel, _show_error, _message)
    def _can_compute(self) -> bool:
        return self.loaded is not None and self.bundle is not None

    def _on_done(self, result: SlicesResult) -> None:
        self.progress.setFormat(f"done in {result.report.seconds:.1f} s")
        self.show_result(result)
        self.sig_result_ready.emit(result)

    # --- showing --------------------------------------------------------------------------------------
    def show_result(self, result: SlicesResult) -> None:
        self.result = result
        rep = result.report
        under = f"under {rep.missing} (mask seed {rep.mask_seed})" if rep.missing else "with the data's own gaps"
        feats = ", ".join(f.name for f in rep.inputs.features)
        msg = (f"{rep.split} split {under}: {rep.n} samples scored, {rep.error_name} {rep.error_overall:.4f} "
               f"overall. Slices of at least {rep.min_support} samples, up to {rep.max_order} predicates; "
               f"features: {feats}.")
        if result.compare_label:
            msg += f" B = {result.compare_label} ({rep.error_name} {result.compare_overall:.4f} overall)."
        if rep.notes:
            msg += "<br><span style='color:#606060'>" + "; ".join(rep.notes) + "</span>"
        if not rep.slices:
            msg += "<br>No slice has a higher error than the whole split at this support."
        self._say(msg)
        self._show_table()

    def _show_table(self) -> None:
        r = self.result
        self.table.blockSignals(True)
        self.table.clearContents()
        slices = r.slices if r is not None else []
        self.table.setRowCount(len(slices))
        compare = bool(r is not None and r.compare_label)
        self.table.setColumnHidden(COL_B_IN, not compare)
        self.table.setColumnHidden(COL_B_OUT, not compare)
        if compare:
            self.table.setHorizontalHeaderItem(COL_B_IN, QTableWidgetItem(f"error in ({r.compare_label})"))
            self.table.setHorizontalHeaderItem(COL_B_OUT, QTableWidgetItem(f"error out ({r.compare_label})"))
        for k, s in enumerate(slices):
            cells = [str(k + 1), s.text, str(s.size), f"{s.error_in:.4f}", f"{s.error_out:.4f}", "", "",
                     f"{s.score:.4f}"]
            if compare and k < len(r.compare):
                cells[COL_B_IN], cells[COL_B_OUT] = (f"{r.compare[k][0]:.4f}", f"{r.compare[k][1]:.4f}")
            for c, text in enumerate(cells):
                it = QTableWidgetItem(text)
                if c != 1:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                it.setToolTip(f"{s.text}: {s.size} samples, mean error {s.error_in:.4f} inside, "
                              f"{s.error_out:.4f} outside (SliceLine score {s.score:.4f})")
                self.table.setItem(k, c, it)
        self.table.blockSignals(False)
        self.current_slice = -1
        self._fill_samples(-1)
        if slices:
            self.table.selectRow(0)
            if self.current_slice != 0:
                self._fill_samples(0)

    @Slot(int, int, int, int)
    def _on_current_cell_changed(self, row: int, _col: int, _prow: int, _pcol: int) -> None:
        if row != self.current_slice:
            self._fill_samples(row)

    @Slot(int, int)
    def _on_cell_activated(self, row: int, _col: int = 0) -> None:
        self.activate_row(row)

    def activate_row(self, row: int) -> int | None:
        """Open the slice's first sample in the explorer (its samples listed beside the table); the index."""
        if self.result is None or not 0 <= row < len(self.result.slices):
            return None
        if row != self.current_slice:
            self.table.selectRow(row)
            self._fill_samples(row)
        return self.open_sample_at(0)

    def _fill_samples(self, row: int) -> None:
        self.samples.clear()
        self.sample_rows = []
        self._sample_pos = -1
        self.current_slice = row
        r = self.result
        if r is None or not 0 <= row < len(r.slices):
            self.samples_title.setText("<b>Samples of the slice</b><br><span style='color:#606060'>find slices, "
                                       "then choose one</span>")
            self._set_nav_enabled()
            return
        s = r.slices[row]
        inp = r.report.inputs
        split = self.bundle.splits.get(r.report.split) if self.bundle is not None else None
        self.sample_rows = [int(i) for i in s.indices.tolist()]
        for i in self.sample_rows[:MAX_SLICE_SAMPLES_LISTED]:
            it = QListWidgetItem(self._sample_text(i, inp, split))
            it.setData(Qt.ItemDataRole.UserRole, int(i))
            if inp.task != "regression" and inp.errors_all[i] >= 0.5:
                it.setForeground(QColor("#B00020"))  # wrong (or mostly wrong labels)
            self.samples.addItem(it)
        listed = (f"<br><span style='color:#606060'>the first {MAX_SLICE_SAMPLES_LISTED:,} of "
                  f"{len(self.sample_rows):,} are listed; ◀ Prev / Next ▶ step through all</span>"
                  if len(self.sample_rows) > MAX_SLICE_SAMPLES_LISTED else "")
        self.samples_title.setText(f"<b>{s.size} samples</b> of <b>{s.text}</b>, mean error {s.error_in:.3f} "
                                   f"(outside {s.error_out:.3f}){listed}")
        self._set_nav_enabled()

    def _sample_text(self, i: int, inp, split) -> str:
        err = inp.errors_all[i]
        names = self.result.class_names
        task = inp.task
        bits = [f"#{i}"]
        if split is not None and task == "single-label":
            t = int(split.target[i])
            p = int(inp.predicted[i])
            bits.append(f"{names[t] if 0 <= t < len(names) else t} → {names[p] if 0 <= p < len(names) else p}")
        elif split is not None and task == "regression":
            bits.append(f"true {float(split.target[i]):+.3f}, predicted {float(inp.predicted[i]):+.3f}")
        bits.append(f"error {err:.3g}")
        if self.result.compare_errors is not None:
            bits.append(f"B {self.result.compare_errors[i]:.3g}")
        used = "+".join(n for n, u in zip(self.result.modality_names, inp.used_mask[i].tolist()) if u)
        bits.append(f"[{used}]")
        return "  ".join(bits)

    def _set_nav_enabled(self) -> None:
        on = len(self.sample_rows) > 1
        self.prev_btn.setEnabled(on)
        self.next_btn.setEnabled(on)

    def open_sample_at(self, pos: int) -> int | None:
        """Open the slice's sample at list position `pos` in the explorer; its split index."""
        if not self.sample_rows or self.result is None:
            return None
        pos = pos % len(self.sample_rows)
        self._sample_pos = pos
        self.samples.setCurrentRow(pos if pos < self.samples.count() else -1)  # -1: beyond the listed ones
        i = self.sample_rows[pos]
        used = tuple(bool(x) for x in self.result.report.inputs.used_mask[i].tolist())
        self.sig_open_sample.emit(self.result.report.split, i, used)
        return i

    @Slot(QListWidgetItem)
    def _on_sample_clicked(self, item: QListWidgetItem) -> None:
        self.open_sample_at(self.samples.row(item))

    def _position(self) -> int:
        """The slice sample on screen: the list's current row, else (beyond the listed ones) the last opened."""
        row = self.samples.currentRow()
        return row if row >= 0 else self._sample_pos

    @Slot()
    def next(self) -> int | None:
        return self.open_sample_at(self._position() + 1)

    @Slot()
    def previous(self) -> int | None:
        return self.open_sample_at(max(0, self._position()) - 1)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API; a view shown on its own (tests, `-m`)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        self.runner.shutdown()


def main() -> int:
    """`python -m app.views.analysis.slices_view CHECKPOINT`: the view on a checkpoint, standalone."""
    import sys

    from PySide6.QtWidgets import QApplication

    from app.core.analysis.context import default_bundle_getter, prepare_context
    from app.core.analysis.standalone import loaded_from_checkpoint
    if len(sys.argv) < 2:
        print("usage: python -m app.views.analysis.slices_view CHECKPOINT", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(sys.argv)
    view = SlicesView()
    loaded = loaded_from_checkpoint(sys.argv[1])
    ctx = prepare_context(loaded, default_bundle_getter)
    view.set_context(loaded, ctx.bundle, ctx.memory_state)
    view.resize(1300, 600)
    view.show()
    rc = app.exec()
    view.shutdown()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
