"""`RunQueue`: the one queue every training request and every sweep of the app goes through. Qt-free.

The app trains in one process on few cores: two trainings at once would each run at half speed (and measure the
contention, not the method), and would share torch's global random generator, so neither would be reproducible.
So every request — a training run, a comparison (its runs train one after another inside the entry), a resume,
a sweep (new or resumed) — is an entry of this queue, and one entry runs at a time:

    entry.kind     TRAINING / COMPARISON / RESUME / SWEEP
    entry.name     what the user asked for, in words
    entry.state    QUEUED → RUNNING → DONE / FAILED / CANCELLED (a queued entry removed by the user is CANCELLED)

`submit(kind, name, start)` starts the entry at once when nothing runs, else queues it. `start(entry)` is called
on the GUI thread when the entry's turn comes and returns True when the work started (False: refused, the entry
is FAILED with the reason the starter gave in `entry.note`, and the next one starts). Whoever started the work
reports its end with `finish(entry, state)`; the next queued entry starts then. `close()` (the app quits) drops
the queued entries — they had not started, so nothing stored is lost — and starts nothing any more.

Listeners (`subscribe`) are called after every change; all calls happen on the GUI thread.
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from typing import Callable, Hashable

TRAINING, COMPARISON, RESUME, SWEEP = "training", "comparison", "resume", "sweep"
KIND_LABELS = {TRAINING: "Training", COMPARISON: "Comparison", RESUME: "Resume", SWEEP: "Sweep"}
TRAINING_KINDS = (TRAINING, COMPARISON, RESUME)  # the kinds the window's training controller runs

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ENDED = (DONE, FAILED, CANCELLED)
HISTORY = 5  # ended entries kept for the list on screen (the newest ones)


@dataclass(eq=False)
class QueueEntry:
    """One request of the queue."""
    id: int
    kind: str
    name: str
    start: Callable[["QueueEntry"], bool] = field(repr=False)
    key: Hashable = None  # the same key cannot be queued or running twice (e.g. the resume of one run)
    state: str = QUEUED
    note: str = ""  # why it failed or was cancelled, or what it did

    @property
    def label(self) -> str:
        return f"{KIND_LABELS.get(self.kind, self.kind.capitalize())}: {self.name}"


class RunQueue:
    """Requests run one at a time, in the order they were made (see the module docstring)."""

    def __init__(self) -> None:
        self.entries: list[QueueEntry] = []
        self._listeners: list[Callable[[], None]] = []
        self._next_id = 1
        self._advancing = False
        self.closed = False

    # --- observing ------------------------------------------------------------------------------------------
    def subscribe(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def unsubscribe(self, fn: Callable[[], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _changed(self) -> None:
        for fn in list(self._listeners):
            fn()

    @property
    def current(self) -> QueueEntry | None:
        """The entry running now (None when idle)."""
        return next((e for e in self.entries if e.state == RUNNING), None)

    @property
    def queued(self) -> list[QueueEntry]:
        """The entries waiting, in the order they will start."""
        return [e for e in self.entries if e.state == QUEUED]

    @property
    def busy(self) -> bool:
        return self.current is not None

    def get(self, entry_id: int) -> QueueEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def find(self, key: Hashable) -> QueueEntry | None:
        """The queued or running entry with this key (None if there is none)."""
        if key is None:
            return None
        return next((e for e in self.entries if e.key == key and e.state in (QUEUED, RUNNING)), None)

    def position(self, entry: QueueEntry) -> int:
        """1 for the next entry to start, 2 for the one after it, … (0 when the entry is not queued)."""
        waiting = self.queued
        return waiting.index(entry) + 1 if entry in waiting else 0

    # --- commands -------------------------------------------------------------------------------------------
    def submit(self, kind: str, name: str, start: Callable[[QueueEntry], bool], key: Hashable = None) -> QueueEntry:
        """Add a request: it starts now when nothing runs (its state is then RUNNING, or FAILED when `start`
        refused), else it waits (QUEUED). A closed queue, or a key already queued or running, gives a CANCELLED
        entry that is not kept (its note says why)."""
        entry = QueueEntry(self._next_id, kind, name, start, key)
        self._next_id += 1
        if self.closed:
            entry.state, entry.note = CANCELLED, "the app is closing"
            return entry
        if self.find(key) is not None:
            entry.state, entry.note = CANCELLED, f"{entry.label} is already in the run queue"
            return entry
        self.entries.append(entry)
        self._changed()
        self._advance()
        return entry

    def remove(self, entry_id: int) -> QueueEntry | None:
        """Take a queued entry off the queue (it never starts); None when it is not queued (a running entry is
        stopped by its own Stop / Cancel)."""
        entry = self.get(entry_id)
        if entry is None or entry.state != QUEUED:
            return None
        entry.state, entry.note = CANCELLED, "removed from the queue before it started"
        self._trim()
        self._changed()
        return entry

    def finish(self, entry: QueueEntry | None, state: str, note: str = "") -> None:
        """The work of a running entry has ended (DONE, FAILED or CANCELLED): the next queued entry starts."""
        if state not in ENDED:
            raise ValueError(f"an entry ends done, failed or cancelled, not {state!r}")
        if entry is None or entry.state != RUNNING:
            return
        entry.state = state
        if note:
            entry.note = note
        self._trim()
        self._changed()
        self._advance()

    def close(self) -> list[QueueEntry]:
        """The app closes: the queued entries are dropped (CANCELLED; none had started, so nothing stored is
        lost) and nothing starts any more. Returns the dropped entries."""
        self.closed = True
        dropped = self.queued
        for e in dropped:
            e.state, e.note = CANCELLED, "not started: the app was closed"
        if dropped:
            self._changed()
        return dropped

    # --- internals ------------------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Start queued entries until one runs (or none is left)."""
        if self._advancing:  # a start that reported its own end: the loop below goes on
            return
        self._advancing = True
        try:
            while not self.closed and self.current is None:
                entry = next((e for e in self.entries if e.state == QUEUED), None)
                if entry is None:
                    break
                entry.state = RUNNING
                self._changed()
                try:
                    started = bool(entry.start(entry))
                except Exception as e:  # noqa: BLE001 - one broken request must not stall the queue
                    traceback.print_exc(file=sys.stderr)
                    started, entry.note = False, f"{type(e).__name__}: {e}"
                if not started and entry.state == RUNNING:
                    entry.state = FAILED
                    entry.note = entry.note or "it did not start"
                    self._trim()
                    self._changed()
        finally:
            self._advancing = False

    def _trim(self) -> None:
        """Keep the last `HISTORY` ended entries (the queued and running ones are all kept)."""
        ended = [e for e in self.entries if e.state in ENDED]
        for e in ended[:-HISTORY]:
            self.entries.remove(e)


def submission_message(queue: RunQueue, entry: QueueEntry) -> str:
    """What the status bar says of a request just submitted: its place in the queue when it waits, why when it
    was not taken or did not start ("" when it started: the work says the rest)."""
    if entry.state == QUEUED:
        pos, cur = queue.position(entry), queue.current
        ahead = cur.label if cur is not None else "the current request"
        if pos > 1:
            ahead += f" and the {pos - 1} waiting before it"
        return (f"Queued at position {pos} of {len(queue.queued)}: {entry.label} — it starts after {ahead} (see "
                f"the Training tab).")
    if entry.state == CANCELLED:
        return f"Not queued: {entry.note}."
    if entry.state == FAILED:
        return f"{entry.label} did not start: {entry.note}."
    return ""
