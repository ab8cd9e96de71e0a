"""The run queue every training request and every sweep goes through (app/core/run_queue.py): one runs at a time,
the others wait in order, a queued one can be removed, and whatever way the running one ends, the next starts.
First the Qt-free model, then the window: a training asked for while a sweep runs waits for the sweep, the queue
is listed in the Training tab (Delete removes a queued entry), and closing drops only what had not started."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from app.core.run_queue import (CANCELLED, COMPARISON, DONE, FAILED, HISTORY, QUEUED, RESUME, RUNNING, SWEEP,
                                TRAINING, RunQueue, submission_message)
from app.core.state import FINISHED, STOPPED

RUN_TIMEOUT = 90_000  # ms; a tiny run takes seconds, but the machine is shared


class Starts:
    """A starter that records which entries started, and answers what the test says."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.refuse: set[str] = set()

    def __call__(self, name: str):
        def start(entry) -> bool:
            self.started.append(name)
            if name in self.refuse:
                entry.note = f"{name} was refused"
                return False
            return True
        return start


# --- the model (no Qt) ------------------------------------------------------------------------------------


def test_requests_run_one_at_a_time_in_the_order_they_were_made():
    q, starts = RunQueue(), Starts()
    seen = []
    q.subscribe(lambda: seen.append([(e.name, e.state) for e in q.entries]))
    a = q.submit(SWEEP, "a", starts("a"))
    b = q.submit(TRAINING, "b", starts("b"))
    c = q.submit(COMPARISON, "c", starts("c"))
    assert starts.started == ["a"]  # only the first; the others wait
    assert (a.state, b.state, c.state) == (RUNNING, QUEUED, QUEUED)
    assert q.current is a and q.queued == [b, c] and q.position(b) == 1 and q.position(c) == 2
    assert q.position(a) == 0 and seen  # listeners heard of it
    q.finish(a, DONE)
    assert starts.started == ["a", "b"] and q.current is b and q.queued == [c] and q.position(c) == 1
    q.finish(b, CANCELLED)  # stopped by the user: the next one starts all the same
    assert starts.started == ["a", "b", "c"] and q.current is c and b.state == CANCELLED
    q.finish(c, FAILED, note="diverged")
    assert q.current is None and not q.busy and c.note == "diverged"
    assert [e.state for e in q.entries] == [DONE, CANCELLED, FAILED]


def test_a_removed_entry_never_starts_and_a_running_one_cannot_be_removed():
    q, starts = RunQueue(), Starts()
    a = q.submit(TRAINING, "a", starts("a"))
    b = q.submit(TRAINING, "b", starts("b"))
    c = q.submit(SWEEP, "c", starts("c"))
    assert q.remove(a.id) is None and a.state == RUNNING  # the running one ends by its own Stop / Cancel
    assert q.remove(b.id) is b and b.state == CANCELLED and "removed" in b.note
    assert q.remove(b.id) is None  # once
    assert q.queued == [c] and q.position(c) == 1
    q.finish(a, DONE)
    assert starts.started == ["a", "c"] and q.current is c


def test_a_failure_and_a_refused_start_both_let_the_next_request_start():
    q, starts = RunQueue(), Starts()
    starts.refuse = {"b"}
    a = q.submit(TRAINING, "a", starts("a"))
    b = q.submit(RESUME, "b", starts("b"))
    c = q.submit(TRAINING, "c", starts("c"))
    q.finish(a, FAILED)
    # b's start said no: it is failed with its reason, and c started in the same turn
    assert starts.started == ["a", "b", "c"]
    assert (a.state, b.state, c.state) == (FAILED, FAILED, RUNNING) and b.note == "b was refused"

    def broken(entry):
        raise RuntimeError("no disk")
    d = q.submit(SWEEP, "d", broken)
    e = q.submit(TRAINING, "e", starts("e"))
    q.finish(c, DONE)
    assert d.state == FAILED and "no disk" in d.note and e.state == RUNNING  # one broken request stalls nothing


def test_a_request_refused_when_nothing_runs_fails_at_once_and_says_why():
    q, starts = RunQueue(), Starts()
    starts.refuse = {"a"}
    a = q.submit(TRAINING, "a", starts("a"))
    assert a.state == FAILED and not q.busy
    assert submission_message(q, a) == "Training: a did not start: a was refused."
    b = q.submit(TRAINING, "b", starts("b"))
    assert b.state == RUNNING and submission_message(q, b) == ""


def test_the_same_resume_is_not_queued_twice():
    q, starts = RunQueue(), Starts()
    q.submit(TRAINING, "a", starts("a"))
    first = q.submit(RESUME, "run #3", starts("r"), key=(RESUME, 3))
    again = q.submit(RESUME, "run #3", starts("r"), key=(RESUME, 3))
    assert first.state == QUEUED and again.state == CANCELLED and again not in q.entries
    assert "already in the run queue" in submission_message(q, again)
    other = q.submit(RESUME, "run #4", starts("r4"), key=(RESUME, 4))
    assert other.state == QUEUED and q.position(other) == 2


def test_the_status_bar_message_names_the_place_and_what_runs_before():
    q, starts = RunQueue(), Starts()
    q.submit(SWEEP, "pid-synth: robult (2 trainings)", starts("s"))
    t = q.submit(TRAINING, "robult on pid-synth", starts("t"))
    msg = submission_message(q, t)
    assert msg == ("Queued at position 1 of 1: Training: robult on pid-synth — it starts after Sweep: pid-synth: "
                   "robult (2 trainings) (see the Training tab).")
    u = q.submit(RESUME, "run #2", starts("u"))
    assert "position 2 of 2: Resume: run #2 — it starts after Sweep: pid-synth: robult (2 trainings) and the 1 " \
           "waiting before it" in submission_message(q, u)


def test_closing_drops_what_waits_and_starts_nothing_more():
    q, starts = RunQueue(), Starts()
    a = q.submit(TRAINING, "a", starts("a"))
    b = q.submit(SWEEP, "b", starts("b"))
    assert q.close() == [b] and b.state == CANCELLED and "closed" in b.note
    q.finish(a, CANCELLED)  # the running one stops as the app closes: nothing follows
    assert starts.started == ["a"] and not q.busy
    late = q.submit(TRAINING, "late", starts("late"))
    assert late.state == CANCELLED and starts.started == ["a"]


def test_only_the_last_ended_entries_are_kept_for_the_list():
    q, starts = RunQueue(), Starts()
    for i in range(HISTORY + 3):
        q.finish(q.submit(TRAINING, f"r{i}", starts(f"r{i}")), DONE)
    assert [e.name for e in q.entries] == [f"r{i}" for i in range(3, HISTORY + 3)]
    with pytest.raises(ValueError):
        q.finish(q.submit(TRAINING, "x", starts("x")), RUNNING)


# --- the window -------------------------------------------------------------------------------------------


def queue_texts(w) -> list[str]:
    lst = w.queue_view.list
    return [lst.item(i).text() for i in range(lst.count())]


def test_a_training_asked_for_while_a_sweep_runs_waits_and_starts_when_the_sweep_ends(qtbot, make_window, tiny):
    from app.core.sweeps import SWEEP_DONE, SweepRequest, SweepStore
    w = make_window()
    w.tabs.setCurrentWidget(w.training_panel)
    panel = w.sweeps_panel
    req = SweepRequest(base=tiny(**{"train.epochs": 1}), methods=("supervised",), label_fractions=(0.1,),
                       missing=("mcar:0",), seeds=1).validate()
    sid = panel.start(req)
    assert sid is not None and panel.busy and w.run_queue.current.kind == SWEEP
    assert w.queue_view.isVisible()  # a sweep runs: the Training tab says so

    assert w.new_training() is not None  # the wizard opens (it used to be refused while a sweep ran)
    w.wizard.reject()
    assert w.start_training(tiny(), name="after the sweep") is None  # not started now ...
    assert not w.controller.is_running and w.store.list_runs() == []
    (entry,) = w.run_queue.queued  # ... but queued, not refused
    assert entry.kind == TRAINING and entry.name == "after the sweep"
    msg = w.statusBar().currentMessage()
    assert "Queued at position 1 of 1: Training: after the sweep" in msg and "Sweep:" in msg
    assert queue_texts(w) == [f"running · Sweep: {req.base.data.dataset}: supervised (1 training)",
                              "queued #1 · Training: after the sweep"]

    qtbot.waitUntil(lambda: w.controller.is_running or entry.state != QUEUED, timeout=RUN_TIMEOUT)
    assert entry.state == RUNNING and not panel.busy
    assert SweepStore(w.store).get(sid).status == SWEEP_DONE  # the sweep ended first, then the training began
    qtbot.waitUntil(lambda: entry.state == DONE, timeout=RUN_TIMEOUT)
    (row,) = w.store.list_runs()
    assert row.name == "after the sweep" and row.status == FINISHED
    assert not w.queue_view.isVisible()  # nothing waits any more


def test_delete_removes_a_queued_training_and_closing_drops_only_what_had_not_started(qtbot, make_window, tiny,
                                                                                      dialogs):
    w = make_window()
    w.tabs.setCurrentWidget(w.training_panel)
    long = tiny(**{"train.epochs": 300})
    first = w.start_training(long, name="first")
    assert first is not None and w.controller.is_running
    assert not w.queue_view.isVisible()  # one training and nothing waiting: the curves say it all
    assert w.start_training(long, name="second") is None and w.start_training(long, name="third") is None
    assert "Queued at position 2 of 2: Training: third" in w.statusBar().currentMessage()
    assert w.queue_view.isVisible()
    assert queue_texts(w) == ["running · Training: first", "queued #1 · Training: second",
                              "queued #2 · Training: third"]

    lst = w.queue_view.list
    w.activateWindow()
    lst.setFocus()
    qtbot.waitUntil(lst.hasFocus, timeout=5_000)
    lst.setCurrentRow(1)
    qtbot.keyClick(lst, Qt.Key.Key_Delete)  # removes "second"
    assert [e.name for e in w.run_queue.queued] == ["third"]
    assert queue_texts(w)[:2] == ["running · Training: first", "queued #1 · Training: third"]
    assert "cancelled · Training: second" in queue_texts(w)
    lst.setCurrentRow(0)
    assert not w.queue_view.remove_btn.isEnabled() and not w.queue_view.remove_selected()  # the running one stays

    w.act_stop.trigger()  # the first run stops: "third" starts (never "second")
    qtbot.waitUntil(lambda: len(w.store.list_runs()) == 2 and w.controller.is_running, timeout=RUN_TIMEOUT)
    assert [r.name for r in sorted(w.store.list_runs(), key=lambda r: r.id)] == ["first", "third"]
    assert w.start_training(long, name="fourth") is None  # waits behind "third"

    dialogs.answer = QMessageBox.StandardButton.No
    w.close()  # the question names what will not start; No keeps everything
    assert w.isVisible() and [e.name for e in w.run_queue.queued] == ["fourth"]
    assert any("will not start" in t and "Training: fourth" in t for _k, t in dialogs.asked)
    dialogs.answer = QMessageBox.StandardButton.Yes
    w.close()
    assert not w.controller.is_running
    rows = sorted(w.store.list_runs(), key=lambda r: r.id)
    assert [(r.name, r.status) for r in rows] == [("first", STOPPED), ("third", STOPPED)]  # "fourth" never made
