"""SessionsPanel: the runs of the session database in a sortable table, the validation curves of the selected
runs overlaid, their validation metric per modality subset at the best epoch side by side, and Reopen /
Resume / Delete.

One run can be pinned as the baseline (button, context menu or Ctrl+B; kept in the database's ui_state). The
other runs are then shown as differences against it — the baseline minus the run, paired by seed as `robult
compare` prints them (app/core/comparison.py) — in the table's last column, the curves and the per-subset cells,
and selecting one run lists the config keys in which it differs from the baseline.

The table model reads `SessionStore.list_runs()` (GUI thread). Deleting asks for confirmation first. Reopening
and resuming are the window's business: the panel emits `sig_reopen_requested(run_id)` /
`sig_resume_requested(run_id)`.

Run alone: `python -m app.views.sessions [DB]` shows the panel on a database (default: the user's).
"""
from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal, Slot
from PySide6.QtGui import QColor, QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QMenu, QMessageBox, QPushButton,
                               QSplitter, QTableView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.views.common.plot_util import clear_message, no_si_prefix, show_message
from ..core.comparison import (BaselineDifference, RunResult, baseline_differences, by_seed, config_diff,
                               curve_difference, group_key, paired_vs_baseline, seed_group)
from ..core.sessions import RunRow, SessionStore, SessionStoreError
from ..core.state import CRASHED, FAILED, FINISHED, RESUMABLE, RUNNING, STOPPED
from .training import PALETTE

STATUS_COLORS = {RUNNING: "#2b5797", FINISHED: "#1e6b2f", STOPPED: "#7a5200", FAILED: "#a4161a",
                 CRASHED: "#a4161a"}
BETTER_COLOR, WORSE_COLOR = "#1e6b2f", "#a4161a"  # a run ahead of / behind the pinned baseline
BASELINE_BACKGROUND = "#fff3c4"


def subset_rows(keys) -> list[str]:
    """Modality subsets in the order the engine evaluates them (`robult_engine.evaluation.modality_subsets`):
    by size, then by the modalities' order in the dataset, read off the all-modality subset's name ("pix+fou+…";
    the database gives the keys back sorted by name). Names the order does not know go last."""
    from robult_engine.evaluation import modality_subsets
    keys = list(dict.fromkeys(keys))
    full = max(keys, key=lambda k: k.count("+"), default="")
    names = [m for m in full.split("+") if m]
    for k in sorted(keys, key=lambda k: k.count("+")):  # a modality missing from the longest name: after it
        names += [m for m in k.split("+") if m and m not in names]
    have = set(keys)
    ordered = [name for name, _ in modality_subsets(names) if name in have] if len(names) <= 12 else []
    rest = sorted((k for k in keys if k not in set(ordered)), key=lambda k: (k.count("+"), k))
    return ordered + rest


def difference_color(d: BaselineDifference) -> QColor | None:
    """Green where the run is ahead of the baseline, red where it is behind (lower is better for MAE)."""
    better = d.run_better
    return None if better is None else QColor(BETTER_COLOR if better else WORSE_COLOR)


class RunsTableModel(QAbstractTableModel):
    COLUMNS = ("ID", "Name", "Created", "Method", "Dataset", "Labels", "Status", "Best score", "Best epoch",
               "Epochs", "vs baseline")
    BASELINE_COL = 10
    SORT_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, store: SessionStore, parent=None) -> None:
        super().__init__(parent)
        self.store = store
        self.rows: list[RunRow] = []
        self.baseline_id: int | None = None  # set by the panel before `refresh`
        self.results: list[RunResult] = []  # every run's config and test metrics, while a baseline is pinned
        self.metric = ""  # the baseline's test metric
        self.diffs: dict[int, BaselineDifference | str] = {}

    def refresh(self) -> None:
        self.beginResetModel()
        self.rows = self.store.list_runs()
        if self.baseline_id is not None and not any(r.id == self.baseline_id for r in self.rows):
            self.baseline_id = None  # deleted (the store unpinned it with the run)
        if self.baseline_id is None:
            self.results, self.metric, self.diffs = [], "", {}
        else:
            self.results = [RunResult.from_record(r) for r in self.store.run_results()]
            self.metric, self.diffs = baseline_differences(self.baseline_id, self.results)
        self.endResetModel()

    def difference_text(self, run_id: int) -> str:
        """What the last column shows for a run ("" without a baseline)."""
        d = self.diffs.get(run_id)
        if d is None:
            return ""
        if isinstance(d, str):
            return "pinned baseline" if run_id == self.baseline_id else "baseline (its seeds)"
        return d.text()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt API
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            if section == self.BASELINE_COL and self.baseline_id is not None:
                return f"test {self.metric or 'metric'}: baseline − run"
            return self.COLUMNS[section]
        if (orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole
                and section == self.BASELINE_COL):
            return ("The pinned baseline minus the run on the test metric's mean over modality subsets, as robult "
                    "compare prints it: the mean of the per-seed differences over the seeds both have (a run "
                    "stands for the runs of its comparison with the same config at other seeds), else the "
                    "difference of their means (unpaired). Green: the run is ahead; red: behind.")
        return None

    def _values(self, r: RunRow) -> tuple:
        dataset = r.dataset if len(r.dataset) <= 28 else "…" + r.dataset[-27:]
        return (r.id, r.name, r.created.replace("T", " ")[:19], r.method, dataset, r.label_fraction, r.status,
                r.best_score, r.best_epoch, r.epochs_done, self.difference_text(r.id))

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        col = index.column()
        v = self._values(r)[col]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 5:
                return f"{v:.1%}"
            if col == 7:
                return "–" if v is None or not math.isfinite(v) else f"{v:.4f}"
            if col == 8:
                return "–" if v is None or v < 0 else str(v + 1)
            return str(v)
        if role == self.SORT_ROLE:
            if col == 7:
                return float("-inf") if v is None else float(v)
            if col == self.BASELINE_COL:
                d = self.diffs.get(r.id)
                return d.mean if isinstance(d, BaselineDifference) and d.available else float("-inf")
            return v
        if role == Qt.ItemDataRole.ForegroundRole and col == 6:
            return QColor(STATUS_COLORS.get(r.status, "#333"))
        d = self.diffs.get(r.id)
        if role == Qt.ItemDataRole.ForegroundRole and col == self.BASELINE_COL and isinstance(d, BaselineDifference):
            return difference_color(d)
        if r.id == self.baseline_id and role == Qt.ItemDataRole.BackgroundRole:
            return QColor(BASELINE_BACKGROUND)
        if r.id == self.baseline_id and role == Qt.ItemDataRole.FontRole:
            f = QFont()
            f.setBold(True)
            return f
        if role == Qt.ItemDataRole.ToolTipRole and col == self.BASELINE_COL and d is not None:
            return self._difference_tip(r, d)
        if role == Qt.ItemDataRole.ToolTipRole:
            if r.error_message:
                return r.error_message
            from app.views.explorer.mechanism_control import training_mechanism
            lines = [x for x in (r.checkpoint_path or r.run_dir, training_mechanism(r.config_json)) if x]
            return "\n".join(lines) or None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (0, 5, 7, 8, 9, self.BASELINE_COL):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _difference_tip(self, r: RunRow, d: BaselineDifference | str) -> str:
        b = f"#{self.baseline_id}"
        if isinstance(d, str):
            return (f"The pinned baseline {b}" if r.id == self.baseline_id else
                    f"A run of the baseline {b}'s setting at another seed: part of the baseline")
        if not d.available:
            return (f"No test {d.metric or 'metric'} to compare with the baseline {b} (the run did not finish, or "
                    f"is of another task)")
        ahead = "the run is ahead" if d.run_better else "the baseline is ahead" if d.run_better is False else "level"
        lower = " (lower is better)" if not d.higher_is_better else ""
        if d.paired:
            return (f"baseline {b} − run #{r.id}, test {d.metric}{lower}, mean over modality subsets, paired by "
                    f"seed: {d.mean:+.4f} ± {d.std:.4f} over {d.n} seed{'s' if d.n != 1 else ''}; the baseline "
                    f"ahead in {d.wins} of {d.n} ({ahead})")
        return (f"baseline {b} − run #{r.id}, test {d.metric}{lower}, mean over modality subsets: {d.mean:+.4f}, "
                f"the difference of the means over seeds — {d.note} ({ahead})")

    def run_at(self, row: int) -> RunRow:
        return self.rows[row]


class SessionsPanel(QWidget):
    sig_reopen_requested = Signal(int)
    sig_resume_requested = Signal(int)
    sig_runs_deleted = Signal(object)  # list[int]

    def __init__(self, store: SessionStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.model = RunsTableModel(store, self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(RunsTableModel.SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        col, order = self._saved_sort()
        self.table.sortByColumn(col, order)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip("Runs of this session database. Select several to compare their validation curves; "
                              "double-click to reopen one.")
        self.btn_reopen = QPushButton("Reopen")
        self.btn_reopen.setToolTip("Load the run's best checkpoint as the current model and show its curves")
        self.btn_resume = QPushButton("Resume")
        self.btn_resume.setToolTip("Continue a stopped, failed or crashed run from its last completed epoch")
        self.btn_delete = QPushButton("Delete…")
        self.btn_delete.setToolTip("Delete the selected runs from the database (their folders stay on disk)")
        self.btn_refresh = QPushButton("Refresh")
        self.btn_pin = QPushButton("Pin baseline")
        self.btn_pin.setToolTip("Pin the selected run as the baseline: the other runs are shown as differences "
                                "against it, paired by seed (Ctrl+B; again to unpin)")
        self.baseline_label = QLabel("")
        self.baseline_label.setStyleSheet("color: #555;")
        self.info_label = QLabel("")
        self.info_label.setStyleSheet("color: #555;")
        buttons = QHBoxLayout()
        for b in (self.btn_reopen, self.btn_resume, self.btn_delete, self.btn_refresh, self.btn_pin):
            buttons.addWidget(b)
        buttons.addWidget(self.baseline_label)
        buttons.addStretch(1)
        buttons.addWidget(self.info_label)
        self.baseline_id: int | None = store.baseline_run_id()
        self.shortcut_pin = QShortcut(QKeySequence("Ctrl+B"), self)
        self.shortcut_pin.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.shortcut_pin.activated.connect(self.toggle_baseline)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

        self.plot = pg.PlotWidget()
        self.plot.setTitle("Validation score of the selected runs", size="10pt")
        self.plot.setLabel("bottom", "epoch")
        self.plot.setLabel("left", "val score")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        for side in ("left", "bottom"):
            no_si_prefix(self.plot.getAxis(side))
        self.plot.addLegend(offset=(-10, -10), labelTextSize="8pt")
        self.overlay_ids: list[int] = []
        # with a baseline: per drawn run, (epochs, baseline − run of the validation score, seed pairs; 0: unpaired)
        self.curve_diffs: dict[int, tuple[list[int], list[float], int]] = {}

        # the selected runs side by side: validation metric per modality subset at each run's best epoch
        self.subsets = QTableWidget(0, 0)
        self.subsets.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.subsets.setAlternatingRowColors(True)
        self.subsets.setToolTip("Validation metric of each modality subset at the run's best epoch (the "
                                "checkpoint the run keeps); bold: the best run for that subset.")
        self.subsets_title = QLabel("<b>Per modality subset</b> (select runs)")
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.subsets_title)
        rl.addWidget(self.subsets)
        self.comparison_label = QLabel("")
        self.comparison_label.setWordWrap(True)
        self.comparison_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.comparison_label.setToolTip("Runs queued together from the wizard: mean ± std over seeds and the paired "
                                         "differences seed by seed, as robult compare prints them")
        self.comparison_label.setVisible(False)
        self.comparison_summary = None  # app.core.comparison.ComparisonSummary of the selected comparison
        rl.addWidget(self.comparison_label)
        self.config_diff_label = QLabel("")
        self.config_diff_label.setWordWrap(True)
        self.config_diff_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.config_diff_label.setToolTip("The config keys in which the selected run differs from the pinned "
                                          "baseline (key: baseline → this run)")
        self.config_diff_label.setVisible(False)
        self.config_diff: list[tuple[str, str, str]] = []  # (key, the baseline's value, the selected run's)
        # with a baseline: per selected run, per subset row, the baseline minus the run (validation, best epoch)
        self.subset_diffs: dict[int, dict[str, BaselineDifference]] = {}
        rl.addWidget(self.config_diff_label)

        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.table)
        tl.addLayout(buttons)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.plot)
        bottom.addWidget(right)
        bottom.setSizes([560, 440])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(bottom)
        split.setSizes([300, 260])
        lay = QVBoxLayout(self)
        lay.addWidget(split)

        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.table.doubleClicked.connect(self._on_table_double_clicked)
        self.btn_reopen.clicked.connect(self._on_btn_reopen_clicked)
        self.btn_resume.clicked.connect(self._on_btn_resume_clicked)
        self.btn_delete.clicked.connect(self._on_btn_delete_clicked)
        self.btn_refresh.clicked.connect(self.refresh)
        self.btn_pin.clicked.connect(self.toggle_baseline)
        self.table.customContextMenuRequested.connect(self._on_table_context_menu_requested)
        header.sortIndicatorChanged.connect(self._on_header_sort_indicator_changed)
        self.busy_run_id: int | None = None  # the run training now (cannot be deleted or resumed)
        self._dirty = False
        self.refresh()

    # --- API ------------------------------------------------------------------------------------------
    @Slot()
    def refresh(self) -> None:
        self._dirty = False
        selected = self.selected_run_ids()
        self.model.baseline_id = self.baseline_id
        self.model.refresh()
        self.baseline_id = self.model.baseline_id  # None once the pinned run is gone
        if selected:
            sm = self.table.selectionModel()
            for row in range(self.proxy.rowCount()):
                rid = self.proxy.data(self.proxy.index(row, 0), RunsTableModel.SORT_ROLE)
                if rid in selected:
                    sm.select(self.proxy.index(row, 0), sm.SelectionFlag.Select | sm.SelectionFlag.Rows)
        n = len(self.model.rows)
        self.info_label.setText(f"{n} run{'s' if n != 1 else ''} · {self.store.location}")
        base = self.store.get_run(self.baseline_id) if self.baseline_id is not None else None
        self.baseline_label.setText(f"Baseline: #{base.id} {base.method} · seed {base.seed}"
                                    + (f" ({base.name[:24]})" if base.name else "") if base is not None else "")
        self._update_buttons()
        self._update_overlay()

    def request_refresh(self) -> None:
        """Refresh now if the panel is visible, else when it is next shown (saves GUI time during training)."""
        if self.isVisible():
            self.refresh()
        else:
            self._dirty = True

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self._dirty:
            self.refresh()
        super().showEvent(event)

    def selected_run_ids(self) -> list[int]:
        rows = sorted({self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.run_at(r).id for r in rows]

    def select_runs(self, run_ids: list[int]) -> None:
        sm = self.table.selectionModel()
        sm.clearSelection()
        for row in range(self.proxy.rowCount()):
            rid = self.proxy.data(self.proxy.index(row, 0), RunsTableModel.SORT_ROLE)
            if rid in run_ids:
                sm.select(self.proxy.index(row, 0), sm.SelectionFlag.Select | sm.SelectionFlag.Rows)

    def pin_baseline(self, run_id: int | None) -> None:
        """Pin a run as the baseline (None: unpin); kept in the session database for the next start."""
        self.store.pin_baseline(run_id)
        self.baseline_id = run_id
        self.refresh()

    @Slot()
    def toggle_baseline(self) -> None:
        """Pin the one selected run, or unpin it when it is the baseline (the button and Ctrl+B)."""
        ids = self.selected_run_ids()
        if len(ids) != 1:
            return
        self.pin_baseline(None if ids[0] == self.baseline_id else ids[0])

    def baseline_menu(self, run_id: int | None) -> QMenu:
        """The table's context menu for the run under the pointer (None: no run there)."""
        menu = QMenu(self)
        if run_id is not None and run_id != self.baseline_id:
            menu.addAction(f"Pin #{run_id} as baseline", lambda: self.pin_baseline(run_id))
        if self.baseline_id is not None:
            menu.addAction(f"Unpin baseline #{self.baseline_id}", lambda: self.pin_baseline(None))
        return menu

    def set_busy_run(self, run_id: int | None) -> None:
        self.busy_run_id = run_id
        self._update_buttons()

    def _saved_sort(self) -> tuple[int, Qt.SortOrder]:
        """The table's sort column and order, kept in the database's ui_state table."""
        saved = self.store.get_ui("sessions/sort", [0, "desc"])
        try:
            col = int(saved[0]) if 0 <= int(saved[0]) < len(RunsTableModel.COLUMNS) else 0
            order = Qt.SortOrder.AscendingOrder if saved[1] == "asc" else Qt.SortOrder.DescendingOrder
        except (TypeError, ValueError, IndexError):
            col, order = 0, Qt.SortOrder.DescendingOrder
        return col, order

    # --- slots ----------------------------------------------------------------------------------------
    @Slot(int, Qt.SortOrder)
    def _on_header_sort_indicator_changed(self, column: int, order: Qt.SortOrder) -> None:
        self.store.set_ui("sessions/sort", [column, "asc" if order == Qt.SortOrder.AscendingOrder else "desc"])

    @Slot()
    def _on_selection_changed(self) -> None:
        self._update_buttons()
        self._update_overlay()

    @Slot(object)
    def _on_table_context_menu_requested(self, pos) -> None:
        index = self.table.indexAt(pos)
        run_id = self.model.run_at(self.proxy.mapToSource(index).row()).id if index.isValid() else None
        menu = self.baseline_menu(run_id)
        if not menu.isEmpty():
            menu.exec(self.table.viewport().mapToGlobal(pos))
        menu.deleteLater()

    @Slot(QModelIndex)
    def _on_table_double_clicked(self, index: QModelIndex) -> None:
        row = self.model.run_at(self.proxy.mapToSource(index).row())
        self.sig_reopen_requested.emit(row.id)

    @Slot()
    def _on_btn_reopen_clicked(self) -> None:
        ids = self.selected_run_ids()
        if len(ids) == 1:
            self.sig_reopen_requested.emit(ids[0])

    @Slot()
    def _on_btn_resume_clicked(self) -> None:
        ids = self.selected_run_ids()
        if len(ids) == 1:
            self.sig_resume_requested.emit(ids[0])

    @Slot()
    def _on_btn_delete_clicked(self) -> None:
        ids = [i for i in self.selected_run_ids() if i != self.busy_run_id]
        if not ids:
            return
        names = ", ".join(f"#{i}" for i in ids)
        answer = QMessageBox.question(
            self, "Delete runs", f"Delete run{'s' if len(ids) > 1 else ''} {names} from the session database?\n\n"
            "Their metrics and inspections are removed; checkpoint folders on disk are kept.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return
        deleted = []
        for i in ids:
            try:
                self.store.delete_run(i)
            except SessionStoreError as e:  # locked, or training in another app: nothing of it was deleted
                QMessageBox.warning(self, "Delete runs", f"{e}.")
                break
            deleted.append(i)
        self.refresh()
        if deleted:
            self.sig_runs_deleted.emit(deleted)

    # --- helpers --------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        ids = self.selected_run_ids()
        one = self.store.get_run(ids[0]) if len(ids) == 1 else None
        self.btn_reopen.setEnabled(one is not None and bool(one.checkpoint_path))
        self.btn_resume.setEnabled(one is not None and one.status in RESUMABLE and one.id != self.busy_run_id
                                   and bool(one.run_dir))
        self.btn_delete.setEnabled(bool([i for i in ids if i != self.busy_run_id]))
        self.btn_pin.setEnabled(len(ids) == 1)
        self.btn_pin.setText("Unpin baseline" if len(ids) == 1 and ids[0] == self.baseline_id else "Pin baseline")

    def _update_overlay(self) -> None:
        self.plot.clear()
        legend = self.plot.getPlotItem().legend
        if legend is not None:
            legend.clear()
        self.overlay_ids = []
        self.curve_diffs = {}
        base = self._baseline_run()
        if base is not None:
            clear_message(self.plot)
            self._draw_difference_curves(base)
        else:
            self.plot.setTitle("Validation score of the selected runs", size="10pt")
            self.plot.setLabel("left", "val score")
            for i, rid in enumerate(self.selected_run_ids()[:len(PALETTE)]):
                epochs, scores = self.store.val_curve(rid)
                if not epochs:
                    continue
                run = self.store.get_run(rid)
                color = PALETTE[i % len(PALETTE)]
                label = f"#{rid} {run.name}" if run and run.name else f"#{rid}"
                self.plot.plot(np.asarray(epochs, dtype=float) + 1, np.asarray(scores, dtype=float),
                               pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5, symbolBrush=color,
                               symbolPen=None, name=label[:40], connect="finite")
                self.overlay_ids.append(rid)
            if self.overlay_ids:
                clear_message(self.plot)
            else:  # no curve: say what would draw one, not bare axes
                show_message(self.plot, "Select runs in the table to overlay their validation curves."
                             if self.model.rows else "No runs in this session yet.")
        self._update_subset_table()
        self._update_comparison()
        self._update_config_diff()

    # --- the pinned baseline --------------------------------------------------------------------------
    def _baseline_run(self) -> RunResult | None:
        return next((r for r in self.model.results if r.id == self.baseline_id), None)

    def _result(self, run_id: int) -> RunResult | None:
        return next((r for r in self.model.results if r.id == run_id), None)

    def _seed_runs(self, run: RunResult) -> dict[int, RunResult]:
        """The runs of `run`'s setting, one per seed (itself at its seed)."""
        return by_seed(run, seed_group(run, self.model.results))

    def _curve(self, run_id: int) -> dict[int, float]:
        epochs, scores = self.store.val_curve(run_id)
        return {e: v for e, v in zip(epochs, scores) if math.isfinite(v)}

    def _best_val_metrics(self, run_id: int) -> dict:
        """The run's validation metrics per subset at its best epoch ({} without one)."""
        run = self.store.get_run(run_id)
        if run is None or run.best_epoch is None or run.best_epoch < 0:
            return {}
        best = next((e for e in self.store.epochs(run_id) if e["epoch"] == run.best_epoch), None)
        return best["val_metrics"] if best and isinstance(best["val_metrics"], dict) else {}

    def _draw_difference_curves(self, base: RunResult) -> None:
        """The selected runs' validation score as the baseline minus the run, paired by seed (the baseline's
        own setting is the zero line)."""
        self.plot.setTitle("Validation score: baseline − run, paired by seed (below 0: the run is ahead)",
                           size="10pt")
        self.plot.setLabel("left", "baseline − run")
        self.plot.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen("#888", width=1,
                                                                      style=Qt.PenStyle.DashLine)))
        base_key = group_key(base)
        base_curves = {s: self._curve(r.id) for s, r in self._seed_runs(base).items()}
        base_curves = {s: c for s, c in base_curves.items() if c}
        for i, rid in enumerate(self.selected_run_ids()[:len(PALETTE)]):
            run = self._result(rid)
            if run is None or group_key(run) == base_key:
                continue
            curves = {s: self._curve(r.id) for s, r in self._seed_runs(run).items()}
            epochs, diffs, pairs = curve_difference(base_curves, {s: c for s, c in curves.items() if c})
            if not epochs:
                continue
            color = PALETTE[i % len(PALETTE)]
            how = f"{pairs} pair{'s' if pairs != 1 else ''}" if pairs else "unpaired"
            label = f"#{rid} {run.method} ({how})"
            self.plot.plot(np.asarray(epochs, dtype=float) + 1, np.asarray(diffs, dtype=float),
                           pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5, symbolBrush=color,
                           symbolPen=None, name=label[:48], connect="finite")
            self.curve_diffs[rid] = (epochs, diffs, pairs)
            self.overlay_ids.append(rid)

    def _update_config_diff(self) -> None:
        """One selected run other than the baseline: the config keys in which it differs (baseline → this)."""
        ids = self.selected_run_ids()
        base = self._baseline_run()
        run = self._result(ids[0]) if len(ids) == 1 else None
        self.config_diff = []
        if base is None or run is None or run.id == base.id:
            self.config_diff_label.setVisible(False)
            return
        self.config_diff = config_diff(base.config, run.config)

        def short(v: str) -> str:
            return html.escape(v if len(v) <= 60 else v[:59] + "…")
        lines = [f"{html.escape(k)}: {short(a)} → {short(b)}" for k, a, b in self.config_diff]
        self.config_diff_label.setText(f"<b>Config of #{run.id} against the baseline #{base.id}</b> (the keys that "
                                       f"differ, baseline → this):<br>"
                                       + ("<br>".join(lines) if lines else "the same config as the baseline"))
        self.config_diff_label.setVisible(True)

    def _update_comparison(self) -> None:
        """When the selected runs belong to one comparison: its summary and paired differences (test split)."""
        from app.core.comparison import summarise
        from robult_engine.metrics import PRIMARY
        rows = [self.store.get_run(rid) for rid in self.selected_run_ids()]
        cids = {r.comparison for r in rows if r is not None}
        self.comparison_summary = None
        if len(cids) != 1 or not next(iter(cids)):
            self.comparison_label.setVisible(False)
            return
        cid = next(iter(cids))
        runs = self.store.comparison_runs(cid)
        metric = next((m for m in PRIMARY.values() if any(m in row for _, _, tm in runs for row in tm.values())), "")
        if not runs or not metric:
            self.comparison_label.setText(f"<b>Comparison {cid}</b>: no finished run yet.")
        else:
            self.comparison_summary = summarise(cid, runs, metric)
            self.comparison_label.setText(self.comparison_summary.text())
        self.comparison_label.setVisible(True)

    def select_comparison(self, comparison: str) -> None:
        """Select every run of a comparison (the view then shows it as one)."""
        self.refresh()
        self.select_runs([r.id for r in self.model.rows if r.comparison == comparison])

    def _update_subset_table(self) -> None:
        """Rows: modality subsets, then their mean; columns: the selected runs (best-epoch validation)."""
        self.subset_diffs = {}
        base = self._baseline_run()
        if base is not None and self.selected_run_ids():
            self._update_subset_differences(base)
            return
        from robult_engine.metrics import HIGHER_IS_BETTER, PRIMARY
        cols: list[tuple[str, dict]] = []
        metric = ""
        for rid in self.selected_run_ids()[:12]:
            run = self.store.get_run(rid)
            if run is None or run.best_epoch is None or run.best_epoch < 0:
                continue
            best = next((e for e in self.store.epochs(rid) if e["epoch"] == run.best_epoch), None)
            if not best or not best["val_metrics"]:
                continue
            names = [m for m in PRIMARY.values() if any(m in row for row in best["val_metrics"].values())]
            if not names or (metric and names[0] != metric):
                continue  # runs of another task are not comparable in one column set
            metric = names[0]
            cols.append((f"#{rid} {run.method}" + (f"\n{run.name[:24]}" if run.name else ""), best["val_metrics"]))
        self.subsets.clear()
        if not cols:
            self.subsets.setRowCount(0)
            self.subsets.setColumnCount(0)
            self.subsets_title.setText("<b>Per modality subset</b> (select runs with a finished epoch)")
            return
        subsets: list[str] = []
        for _, table in cols:
            for k in table:
                if k not in subsets:
                    subsets.append(k)
        subsets = subset_rows(subsets)  # single modalities first, in the dataset's order, as `robult eval` lists them
        rows = subsets + ["mean"]
        self.subsets.setRowCount(len(rows))
        self.subsets.setColumnCount(len(cols))
        self.subsets.setVerticalHeaderLabels(rows)
        self.subsets.setHorizontalHeaderLabels([c[0] for c in cols])
        higher = HIGHER_IS_BETTER.get(metric, True)
        for i, r in enumerate(rows):
            vals = []
            for _, table in cols:
                if r == "mean":
                    got = [table[k][metric] for k in subsets if k in table and table[k].get(metric) is not None]
                    vals.append(sum(got) / len(got) if got else float("nan"))
                else:
                    v = table.get(r, {}).get(metric)
                    vals.append(float("nan") if v is None else float(v))
            finite = [v for v in vals if math.isfinite(v)]
            best_v = (max(finite) if higher else min(finite)) if finite else None
            for j, v in enumerate(vals):
                item = QTableWidgetItem("–" if not math.isfinite(v) else f"{v:.4f}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if best_v is not None and len(cols) > 1 and math.isfinite(v) and v == best_v:
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                self.subsets.setItem(i, j, item)
        self.subsets.resizeColumnsToContents()
        self.subsets_title.setText(f"<b>Per modality subset</b> · validation {metric} at each run's best epoch"
                                   + ("" if higher else " (lower is better)"))


    def _update_subset_differences(self, base: RunResult) -> None:
        """With a pinned baseline: its validation metric per subset at its best epoch, then, per selected run,
        the baseline minus the run per subset, paired by seed over the runs of the two settings."""
        from robult_engine.metrics import HIGHER_IS_BETTER, PRIMARY
        base_tables = {s: self._best_val_metrics(r.id) for s, r in self._seed_runs(base).items()}
        own = self._best_val_metrics(base.id)
        metric = next((m for m in PRIMARY.values() if any(m in row for row in own.values())), "")
        self.subsets.clear()
        if not metric:
            self.subsets.setRowCount(0)
            self.subsets.setColumnCount(0)
            self.subsets_title.setText(f"<b>Per modality subset</b> (the baseline #{base.id} has no finished epoch)")
            return
        base_key = group_key(base)
        cols: list[tuple[str, dict[int, dict]]] = []
        for rid in self.selected_run_ids()[:12]:
            run = self._result(rid)
            if run is None or group_key(run) == base_key:
                continue
            tables = {s: self._best_val_metrics(r.id) for s, r in self._seed_runs(run).items()}
            tables = {s: t for s, t in tables.items() if any(metric in row for row in t.values())}
            if not tables:
                continue  # no finished epoch, or another task
            pairs = len(set(tables) & {s for s, t in base_tables.items() if t})
            how = f"{pairs} pair{'s' if pairs != 1 else ''}" if pairs else "no seed in common: unpaired"
            cols.append((f"#{rid} {run.method}\nbaseline − run · {how}", tables))
            self.subset_diffs[rid] = {}
        subsets = list(own)
        for _, tables in cols:
            for t in tables.values():
                subsets += [k for k in t if k not in subsets]
        subsets = subset_rows(subsets)
        rows = subsets + ["mean"]
        self.subsets.setRowCount(len(rows))
        self.subsets.setColumnCount(1 + len(cols))
        self.subsets.setVerticalHeaderLabels(rows)
        self.subsets.setHorizontalHeaderLabels([f"#{base.id} {base.method}\n(baseline)"] + [c[0] for c in cols])
        higher = HIGHER_IS_BETTER.get(metric, True)

        def value(table: dict, r: str) -> float:
            if r == "mean":
                got = [float(row[metric]) for row in table.values() if isinstance(row, dict)
                       and isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])]
                return sum(got) / len(got) if got else float("nan")
            v = table.get(r, {}).get(metric) if isinstance(table.get(r), dict) else None
            return float(v) if isinstance(v, (int, float)) else float("nan")
        col_ids = list(self.subset_diffs)
        for i, r in enumerate(rows):
            v = value(own, r)
            item = QTableWidgetItem("—" if not math.isfinite(v) else f"{v:.4f}")
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setBackground(QColor(BASELINE_BACKGROUND))
            self.subsets.setItem(i, 0, item)
            for j, (_, tables) in enumerate(cols):
                d = paired_vs_baseline({s: value(t, r) for s, t in base_tables.items()},
                                       {s: value(t, r) for s, t in tables.items()}, metric)
                self.subset_diffs[col_ids[j]][r] = d
                item = QTableWidgetItem("—" if not d.available else f"{d.mean:+.4f}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                color = difference_color(d)
                if color is not None:
                    item.setForeground(color)
                item.setToolTip("no validation metric to compare" if not d.available else
                                f"baseline − run: {d.mean:+.4f} over {d.n} seed pair{'s' if d.n != 1 else ''}"
                                if d.paired else f"baseline − run: {d.mean:+.4f} ({d.note})")
                self.subsets.setItem(i, 1 + j, item)
        self.subsets.resizeColumnsToContents()
        self.subsets_title.setText(f"<b>Per modality subset</b> · validation {metric} at the best epoch: the "
                                   f"baseline, then baseline − run, paired by seed"
                                   + ("" if higher else " (lower is better)") + "; green: the run is ahead")


def _main() -> int:  # pragma: no cover - manual check
    import sys

    from PySide6.QtWidgets import QApplication

    from ..core.sessions import open_store
    app = QApplication(sys.argv)
    from ..background import gc_policy
    gc_policy.install()
    store, problem = open_store(sys.argv[1] if len(sys.argv) > 1 else None)
    if problem:
        print(problem)
    panel = SessionsPanel(store)
    panel.resize(1000, 700)
    panel.show()
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
