"""RunQueueView: the run queue (app/core/run_queue.py) as a small list in the Training tab.

One line per entry — its state, its kind and its name — the running one first, then the queued ones in the
order they will start, then the last few that ended (with why, in the tooltip). **Remove** (or Delete in the
list) takes the selected queued entry off the queue. The view shows itself only while it has something to say:
an entry waits, or a sweep is running (the Training tab's curves do not show it).

Run alone: `python -m app.views.training_queue` shows it on a demo queue.
"""
from __future__ import annotations

import shiboken6
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QVBoxLayout, QWidget)

from ..core.run_queue import (CANCELLED, DONE, FAILED, QUEUED, RUNNING, SWEEP, QueueEntry, RunQueue)

STATE_COLORS = {RUNNING: "#1565C0", QUEUED: "#333333", DONE: "#2E7D32", FAILED: "#B00020", CANCELLED: "#8D6E00"}
ROWS_SHOWN = 4  # the list's height, in rows (it scrolls beyond)


class RunQueueView(QWidget):
    """The run queue of the window (see the module docstring)."""

    sig_message = Signal(str, str)  # text, level

    def __init__(self, queue: RunQueue, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("runQueue")
        self.queue = queue
        self.title = QLabel("<b>Run queue</b> — one training or sweep at a time; the next starts when the "
                            "current one ends.")
        self.title.setWordWrap(True)
        self.list = QListWidget()
        self.list.setObjectName("runQueueList")
        self.list.setAccessibleName("Run queue")
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setToolTip("Requests run one at a time, in order. Delete removes the selected queued entry.")
        self.remove_btn = QPushButton("Remove")
        self.remove_btn.setToolTip("Take the selected queued entry off the queue; it never starts (Delete)")
        self.act_remove = QAction("Remove from the queue", self.list)
        self.act_remove.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        self.act_remove.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.list.addAction(self.act_remove)
        col = QVBoxLayout()
        col.addWidget(self.remove_btn)
        col.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        row.addLayout(col)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.title)
        lay.addLayout(row)
        self.act_remove.triggered.connect(self.remove_selected)
        self.remove_btn.clicked.connect(self.remove_selected)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        queue.subscribe(self._on_queue_changed)
        self.refresh()

    def _on_queue_changed(self) -> None:
        if shiboken6.isValid(self):
            self.refresh()
        else:  # the widget is gone; the queue outlived it
            self.queue.unsubscribe(self._on_queue_changed)

    # --- the list -------------------------------------------------------------------------------------------
    def entries_shown(self) -> list[QueueEntry]:
        """The entries in the order of the list: the running one, the queued ones, then the ended ones (newest
        first)."""
        q = self.queue
        ended = [e for e in q.entries if e.state not in (RUNNING, QUEUED)]
        return ([q.current] if q.current is not None else []) + q.queued + ended[::-1]

    def wanted(self) -> bool:
        """Shown while an entry waits or a sweep runs."""
        cur = self.queue.current
        return bool(self.queue.queued) or (cur is not None and cur.kind == SWEEP)

    @Slot()
    def refresh(self) -> None:
        keep = self.selected_entry()
        self.list.blockSignals(True)
        self.list.clear()
        chosen = None
        for e in self.entries_shown():
            pos = self.queue.position(e)
            state = f"queued #{pos}" if e.state == QUEUED else e.state
            it = QListWidgetItem(f"{state} · {e.label}")
            it.setData(Qt.ItemDataRole.UserRole, e.id)
            it.setForeground(QColor(STATE_COLORS.get(e.state, "#333333")))
            it.setToolTip(f"{e.label} — {e.state}" + (f": {e.note}" if e.note else ""))
            self.list.addItem(it)
            if keep is not None and e.id == keep.id:
                chosen = it
        if chosen is None and self.queue.queued:  # the first queued entry, so Delete has something to act on
            chosen = next((self.list.item(i) for i in range(self.list.count())
                           if self.list.item(i).data(Qt.ItemDataRole.UserRole) == self.queue.queued[0].id), None)
        if chosen is not None:
            self.list.setCurrentItem(chosen)
        self.list.blockSignals(False)
        rows = min(max(self.list.count(), 1), ROWS_SHOWN)
        self.list.setFixedHeight(self.list.sizeHintForRow(0) * rows + 2 * self.list.frameWidth() + 4
                                 if self.list.count() else 24)
        if self.parentWidget() is not None or not self.wanted():  # never pops up as a window of its own
            self.setVisible(self.wanted())
        self._update_buttons()

    def selected_entry(self) -> QueueEntry | None:
        items = self.list.selectedItems()
        return self.queue.get(int(items[0].data(Qt.ItemDataRole.UserRole))) if items else None

    @Slot()
    def _update_buttons(self) -> None:
        e = self.selected_entry()
        ok = e is not None and e.state == QUEUED
        self.remove_btn.setEnabled(ok)
        self.act_remove.setEnabled(ok)

    @Slot()
    def remove_selected(self) -> bool:
        """Remove the selected queued entry (Delete); False when the selection is not a queued entry."""
        e = self.selected_entry()
        if e is None or e.state != QUEUED:
            return False
        removed = self.queue.remove(e.id)
        if removed is not None:
            self.sig_message.emit(f"Removed from the run queue: {removed.label} (it had not started).", "info")
        return removed is not None


def _demo() -> int:  # pragma: no cover - manual check
    import sys

    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(sys.argv)
    q = RunQueue()
    q.submit(SWEEP, "pid-synth: robult, supervised (8 trainings)", lambda e: True)
    q.submit("training", "robult on pid-synth", lambda e: True)
    q.submit("resume", "run #3", lambda e: True)
    view = RunQueueView(q)
    view.resize(700, 160)
    view.show()
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_demo())
