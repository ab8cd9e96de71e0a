"""Fault injection on the session store (app/core/sessions.py): what a user's database survives.

Each test damages a real database file the way the world does — a write lock held by another process, a
corrupt page, a read-only file, a process killed while writing, a file from a newer version, a second app on
the same file — and checks what docs/app.md ("What the session store promises") says: the app opens, the user
is told which file and what is wrong, the file is never overwritten, and no committed (or reported) epoch is
lost. The Hypothesis properties drive the same paths with random lock interruptions and random damaged pages.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from app.core import sessions as S
from app.core.run_session import RunSession
from app.core.sessions import SessionStore, open_store
from app.core.state import CRASHED, FINISHED, RUNNING, SessionState, TrainingBuffers
from robult_engine.config import RunConfig
from robult_engine.events import EpochEnded, Finished, StepEnded

ROOT = Path(__file__).resolve().parents[2]


# --- helpers -----------------------------------------------------------------------------------------------
def _epoch(e: int, score: float = 0.5, epochs: int = 25, best: bool = False) -> EpochEnded:
    return EpochEnded(epoch=e, epochs=epochs, train_losses={"sup": 1.0, "total": 2.0},
                      val_metrics={"a": {"accuracy": score}, "a+b": {"accuracy": score}}, val_score=score,
                      is_best=best, z_norm={"a": 1.0}, u_norm={"a": 0.5}, rec_error={"a": 0.1},
                      pu_weight_hist=(0.25, 0.75), pu_weight_edges=(0.0, 0.5, 1.0), pu_weight_mean=0.6,
                      pseudo_label_acc=float("nan"), elapsed_s=1.0 + e)


def _steps(e: int, n: int = 40) -> list[StepEnded]:
    return [StepEnded(e, s, e * n + s + 1, 25 * n, {"sup": 1.0 / (s + 1), "total": 2.0}, 1e-3, 0.01 * s)
            for s in range(n)]


def _populate(path: Path, tiny, runs: int = 4, epochs: int = 25) -> list[int]:
    """A real database with a few finished runs of many epochs (their step rows fill many pages)."""
    store = SessionStore(path)
    ids = []
    for r in range(runs):
        rid = store.create_run(tiny(), name=f"run {r}", run_dir=str(path.parent / f"run{r}"))
        for e in range(epochs):
            store.add_epoch(rid, _epoch(e, 0.5 + 0.01 * e), _steps(e))
        store.set_status(rid, FINISHED)
        ids.append(rid)
    store.close()
    return ids


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count(path: Path, sql: str, args=()) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as c:
        return int(c.execute(sql, args).fetchone()[0])


def _status(path: Path, run_id: int) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as c:
        return c.execute("SELECT status FROM runs WHERE id = ?", [run_id]).fetchone()[0]


def _corrupt_a_page_of(path: Path, table: str) -> int:
    """Overwrite the middle leaf page of `table` with garbage; returns the page number."""
    with sqlite3.connect(path) as c:
        pages = [p for (p,) in c.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' "
                                         "ORDER BY pageno", [table])]
        size = c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    page = pages[len(pages) // 2]
    with open(path, "r+b") as f:
        f.seek((page - 1) * size + 8)  # keep the page header's first bytes, garble the cell pointers and cells
        f.write(bytes((i * 37 + 11) % 256 for i in range(size - 8)))
    return page


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _set_owner(path: Path, table: str, row_id: int, *, pid: int, host: str, heartbeat: float) -> None:
    with sqlite3.connect(path, timeout=5) as c:
        c.execute(f"UPDATE {table} SET owner_pid = ?, owner_host = ?, owner_started = ?, owner_token = 'elsewhere', "
                  f"heartbeat = ? WHERE id = ?", [pid, host, S.process_started(pid), heartbeat, row_id])
    c.close()


class FakeLauncher:
    def __init__(self) -> None:
        self.jobs: list = []
        self.is_running = False
        self.stop_requested = False

    def start(self, job) -> None:
        self.jobs.append(job)
        self.is_running = True

    def stop(self) -> None:
        self.stop_requested = True


def _close_window(w, store) -> None:
    import shiboken6

    from app.background.training import wait_for_jobs
    w.close()
    wait_for_jobs(15_000)
    shiboken6.delete(w)
    store.close()


# --- a corrupt page ----------------------------------------------------------------------------------------
def test_a_corrupt_page_opens_what_can_be_read_and_leaves_the_file_alone(tmp_path, tiny):
    path = tmp_path / "sessions.sqlite"
    ids = _populate(path, tiny)
    _corrupt_a_page_of(path, "epochs")
    before = _sha(path)
    store, problem = open_store(path)
    try:
        assert problem and str(path) in problem and "damaged" in problem and "untouched" in problem
        runs = store.list_runs()  # crashed with "database disk image is malformed"
        assert sorted(r.id for r in runs) == sorted(ids)
        kept = sum(r.epochs_done for r in runs)
        assert 0 < kept < 4 * 25  # what the damaged page held is lost, the rest is shown
        for r in runs:
            store.epochs(r.id)
        assert store.in_memory and "memory" in store.location
        store.create_run(tiny())  # usable (in memory)
    finally:
        store.close()
    assert _sha(path) == before


def test_the_app_starts_on_a_database_with_a_corrupt_page(qtbot, tmp_path, tiny):
    from app.main import build
    path = tmp_path / "sessions.sqlite"
    _populate(path, tiny, runs=3)
    _corrupt_a_page_of(path, "epochs")
    before = _sha(path)
    app, w, store = build(["--db", str(path), "--settings", str(tmp_path / "s.ini"), "--dataset", "pid-synth"])
    try:
        assert str(path) in w.notice_label.text() and "damaged" in w.notice_label.text()
        assert w.sessions_panel.proxy.rowCount() == 3
    finally:
        _close_window(w, store)
    assert _sha(path) == before


# --- a read-only file --------------------------------------------------------------------------------------
def test_a_read_only_database_holding_a_running_run_opens_read_only(tmp_path, tiny):
    """chmod a-w: the app honours the file's mode even where it could write anyway (as root)."""
    path = tmp_path / "sessions.sqlite"
    ids = _populate(path, tiny, runs=2, epochs=3)
    with sqlite3.connect(path) as c:
        c.execute("UPDATE runs SET status = ? WHERE id = ?", [RUNNING, ids[0]])  # left running by a killed app
    c.close()
    os.chmod(path, 0o444)
    before = _sha(path)
    try:
        store, problem = open_store(path)
        try:
            assert problem and str(path) in problem and "read-only" in problem
            assert sorted(r.id for r in store.list_runs()) == sorted(ids)  # its rows are shown
            store.mark_interrupted_runs()  # crashed at start
            new = store.create_run(tiny())  # a new run goes to the copy in memory, never to the file
            store.add_epoch(new, _epoch(0))
            assert store.in_memory and "memory" in store.location
        finally:
            store.close()
        assert _sha(path) == before and (os.stat(path).st_mode & 0o777) == 0o444
        assert _count(path, "SELECT count(*) FROM runs") == 2
    finally:
        os.chmod(path, 0o644)


def test_the_app_starts_on_a_read_only_database_holding_a_running_run(qtbot, tmp_path, tiny):
    from app.main import build
    path = tmp_path / "sessions.sqlite"
    ids = _populate(path, tiny, runs=2, epochs=2)
    with sqlite3.connect(path) as c:
        c.execute("UPDATE runs SET status = ? WHERE id = ?", [RUNNING, ids[1]])
    c.close()
    os.chmod(path, 0o444)
    before = _sha(path)
    try:
        app, w, store = build(["--db", str(path), "--settings", str(tmp_path / "s.ini"), "--dataset", "pid-synth"])
        try:
            assert str(path) in w.notice_label.text() and "read-only" in w.notice_label.text()
            assert w.sessions_panel.proxy.rowCount() == 2 and "memory" in w.db_label.text()
        finally:
            _close_window(w, store)
        assert _sha(path) == before
    finally:
        os.chmod(path, 0o644)


# --- a newer schema ----------------------------------------------------------------------------------------
def test_a_database_from_a_newer_version_is_refused_and_left_unmodified(tmp_path, tiny):
    path = tmp_path / "sessions.sqlite"
    _populate(path, tiny, runs=1, epochs=1)
    with sqlite3.connect(path) as c:  # what a later version's migration did: a column its inserts require
        c.execute("ALTER TABLE runs ADD COLUMN project TEXT")
        c.execute("CREATE TRIGGER runs_need_a_project BEFORE INSERT ON runs WHEN NEW.project IS NULL "
                  "BEGIN SELECT RAISE(ABORT, 'NOT NULL constraint failed: runs.project'); END")
        c.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES "
                  "('robult-studio', 'm099_projects', '2030-01-01')")
    c.close()
    before = _sha(path)
    store, problem = open_store(path)
    try:
        assert problem and str(path) in problem and "written by a newer Robult Studio" in problem
        assert "m099_projects" in problem
        assert store.in_memory
        store.create_run(tiny())  # no IntegrityError: the run goes to memory
    finally:
        store.close()
    assert _sha(path) == before


# --- a write lock held by another process ------------------------------------------------------------------
def _run_session(store, tmp_path):
    state, buffers, launcher = SessionState(), TrainingBuffers(), FakeLauncher()
    return RunSession(store, state, buffers, launcher, tmp_path / "runs"), state, launcher


def test_a_lock_held_mid_run_loses_no_epoch_and_the_end_waits_for_them(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(S, "WRITE_BUSY_TIMEOUT_S", 0.02, raising=False)
    path = tmp_path / "sessions.sqlite"
    store = SessionStore(path)
    run, state, launcher = _run_session(store, tmp_path)
    rid = run.start(tiny(**{"train.epochs": 25}))
    for e in range(3):
        run.on_progressed(_epoch(e))
    other = sqlite3.connect(path, isolation_level=None, timeout=5)
    other.execute("BEGIN EXCLUSIVE")  # another program writes for a long while
    try:
        t0 = time.monotonic()
        for e in range(3, 25):
            run.on_progressed(_epoch(e))  # raised "database is locked" and the epoch was lost
        assert time.monotonic() - t0 < 3.0  # the GUI thread is not frozen for the length of the lock
        run.on_finished(Finished(False, False, 24, 0.5, 25, "", {}, 30.0))
        assert state.message_kind == "warning" and "not yet saved" in state.message and str(path) in state.message
        assert other.execute("SELECT status FROM runs WHERE id = ?", [rid]).fetchone()[0] == RUNNING
        assert other.execute("SELECT count(*) FROM epochs WHERE run_id = ?", [rid]).fetchone()[0] == 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    run.tick_store(force=True)  # the window's timer
    assert _count(path, "SELECT count(*) FROM epochs WHERE run_id = ?", [rid]) == 25
    assert _status(path, rid) == FINISHED and store.pending_writes() == 0
    assert state.message_kind == "ok" and "Finished" in state.message
    store.close()


LOCKER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("COMMIT")
"""


def test_a_lock_held_by_another_process_is_waited_out_with_retries(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(S, "WRITE_BUSY_TIMEOUT_S", 0.02, raising=False)
    path = tmp_path / "sessions.sqlite"
    store = SessionStore(path)
    run, state, _ = _run_session(store, tmp_path)
    rid = run.start(tiny(**{"train.epochs": 12}))
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(path), "0.8"], stdout=subprocess.PIPE, text=True)
    waited = 0
    try:
        assert locker.stdout.readline().strip() == "locked"
        for e in range(12):  # epochs arrive while the other process holds the lock, then after it let go
            run.on_progressed(_epoch(e))
            waited = max(waited, store.pending_writes())
            run.tick_store()
            time.sleep(0.1)
        locker.wait(10)
        deadline = time.monotonic() + 10
        while store.pending_writes() and time.monotonic() < deadline:
            run.tick_store()  # retried with backoff, as the window's timer does
            time.sleep(0.05)
    finally:
        locker.kill()
        locker.wait()
    assert waited > 0 and store.pending_writes() == 0  # the lock was met, and waited out
    assert [e["epoch"] for e in store.epochs(rid)] == list(range(12))
    store.close()


def test_epochs_missing_from_the_database_are_restored_from_the_run_log_at_the_end(tmp_path, tiny):
    from robult_engine.runlog import RunLog
    store = SessionStore(tmp_path / "sessions.sqlite")
    run, state, launcher = _run_session(store, tmp_path)
    rid = run.start(tiny(**{"train.epochs": 5}))
    log = RunLog(launcher.jobs[0].out_dir)  # what the engine writes in the run folder
    for e in range(5):
        log(_epoch(e, 0.1 * e, best=True))
    for e in range(2):  # only two epochs reached the database (a write failed, the app lost the rest)
        run.on_progressed(_epoch(e, 0.1 * e, best=True))
    run.on_finished(Finished(False, False, 4, 0.4, 5, "", {}, 10.0))
    assert [e["epoch"] for e in store.epochs(rid)] == [0, 1, 2, 3, 4]
    assert store.epochs(rid)[3]["val_score"] == pytest.approx(0.3)
    assert store.get_run(rid).status == FINISHED
    assert "metrics.jsonl" in state.message and "3 epochs" in state.message
    store.close()


def test_a_crashed_run_gets_its_missing_epochs_from_the_run_log(tmp_path, tiny):
    from robult_engine.runlog import RunLog
    path = tmp_path / "sessions.sqlite"
    store = SessionStore(path)
    rid = store.create_run(tiny(), run_dir=str(tmp_path / "r"))
    log = RunLog(tmp_path / "r")
    for e in range(4):
        log(_epoch(e))
    store.add_epoch(rid, _epoch(0))
    store.close()
    # the app was killed with epochs 1-3 not yet in the database
    _set_owner(path, "runs", rid, pid=_dead_pid(), host=socket.gethostname(), heartbeat=time.time())
    again = SessionStore(path)
    assert again.mark_interrupted_runs() == [rid]
    assert again.get_run(rid).status == CRASHED and again.get_run(rid).epochs_done == 4
    again.close()


# --- a process killed while writing ------------------------------------------------------------------------
WRITER = """
import sys
from app.core.sessions import SessionStore
from robult_engine.config import RunConfig
from robult_engine.events import EpochEnded, StepEnded
store = SessionStore(sys.argv[1])
rid = store.create_run(RunConfig(), run_dir="")
print(rid, flush=True)
e = 0
while True:
    steps = [StepEnded(e, s, s + 1, 100, {"total": 1.0}, 1e-3, 0.1) for s in range(30)]
    store.add_epoch(rid, EpochEnded(e, 10**6, {"total": 1.0}, {"a": {"accuracy": 0.5}}, 0.5, False, {"a": 1.0},
                                    {"a": 1.0}, {"a": 0.1}, (1.0,), (0.0, 1.0), 0.5, float("nan"), 1.0))
    print(e, flush=True)  # committed
    e += 1
"""


def test_a_process_killed_mid_write_leaves_every_committed_epoch(tmp_path):
    path = tmp_path / "sessions.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        rid = int(proc.stdout.readline())
        committed = -1
        while committed < 40:
            committed = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of the next epochs' writes
    finally:
        proc.kill()
        proc.wait(10)
    store, problem = open_store(path)  # quick_check passes: the file is not damaged
    try:
        assert problem is None and not store.in_memory
        epochs = [e["epoch"] for e in store.epochs(rid)]
        assert epochs[: committed + 1] == list(range(committed + 1))  # every committed epoch, in order
        assert epochs == list(range(len(epochs)))
        assert store.mark_interrupted_runs() == [rid]  # its owner is gone
        assert store.get_run(rid).status == CRASHED
    finally:
        store.close()


# --- a second instance on the same file --------------------------------------------------------------------
def test_a_second_instance_leaves_the_first_ones_live_run_alone(db_path, tiny):
    first = SessionStore(db_path)
    rid = first.create_run(tiny())
    first.add_epoch(rid, _epoch(0))
    second = SessionStore(db_path)  # another app on the same file (here: same process, another instance)
    try:
        assert second.mark_interrupted_runs() == []
        assert second.get_run(rid).status == RUNNING
        with pytest.raises(S.SessionStoreError, match="training in another Robult Studio"):
            second.delete_run(rid)  # nor deletes it under the first one's feet
        first.add_epoch(rid, _epoch(1))
        assert first.get_run(rid).status == RUNNING and first.get_run(rid).epochs_done == 2
    finally:
        second.close()
        first.close()


def test_only_runs_whose_owner_is_provably_gone_are_marked_crashed(db_path, tiny):
    store = SessionStore(db_path)
    here = socket.gethostname()
    dead = store.create_run(tiny())
    alive_here = store.create_run(tiny())
    stale_elsewhere = store.create_run(tiny())
    fresh_elsewhere = store.create_run(tiny())
    now = time.time()
    _set_owner(db_path, "runs", dead, pid=_dead_pid(), host=here, heartbeat=now)
    _set_owner(db_path, "runs", alive_here, pid=os.getppid(), host=here, heartbeat=now)
    _set_owner(db_path, "runs", stale_elsewhere, pid=1, host="another-host", heartbeat=now - 2 * S.STALE_AFTER_S)
    _set_owner(db_path, "runs", fresh_elsewhere, pid=1, host="another-host", heartbeat=now - 5)
    store.close()
    again = SessionStore(db_path)
    try:
        assert sorted(again.mark_interrupted_runs()) == sorted([dead, stale_elsewhere])
        assert again.get_run(alive_here).status == RUNNING and again.get_run(fresh_elsewhere).status == RUNNING
    finally:
        again.close()


def test_sweeps_follow_the_same_owner_rule(db_path):
    from app.core.sweeps import SWEEP_INTERRUPTED, SWEEP_RUNNING, SweepStore
    first = SessionStore(db_path)
    sweeps = SweepStore(first)
    kw = dict(dataset="pid-synth", metric="accuracy", methods=["robult"], label_fractions=[0.1], missing=["none"],
              seeds=1, mask_seed=0, config={}, out_dir="", runs_total=1, rates={}, realised={})
    live = sweeps.create(name="live", **kw)
    gone = sweeps.create(name="gone", **kw)
    _set_owner(db_path, "sweeps", gone, pid=_dead_pid(), host=socket.gethostname(), heartbeat=time.time())
    second = SessionStore(db_path)
    try:
        assert SweepStore(second).mark_interrupted() == [gone]
        assert SweepStore(second).get(live).status == SWEEP_RUNNING
        assert SweepStore(second).get(gone).status == SWEEP_INTERRUPTED
    finally:
        second.close()
        first.close()


def test_a_second_window_on_the_same_file_does_not_call_a_live_run_crashed(qtbot, make_window, store, tiny):
    rid = store.create_run(tiny(), name="training in the first window")
    w = make_window()  # its own SessionStore on the same file
    assert not any("crashed" in text for _, text in w.notices)
    assert w.store.get_run(rid).status == RUNNING


# --- properties --------------------------------------------------------------------------------------------
@hsettings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(writes=st.lists(st.tuples(st.integers(0, 7), st.booleans(), st.booleans()), min_size=1, max_size=16))
def test_any_epoch_writes_under_random_locks_end_with_every_epoch_stored(writes):
    """Epoch writes (an epoch may be written again, as a resumed run does) interleaved with another connection
    taking and releasing the write lock: once the lock is gone, the database holds the last value written for
    every epoch, and the run never reads `finished` while an epoch is still waiting."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.sqlite"
        store = SessionStore(path)
        store.db.execute("PRAGMA busy_timeout = 5")
        rid = store.create_run(RunConfig())
        other = sqlite3.connect(path, isolation_level=None, timeout=5)
        held, expected = False, {}
        for i, (epoch, lock, tick) in enumerate(writes):
            if lock and not held:
                other.execute("BEGIN IMMEDIATE")
            elif not lock and held:
                other.execute("COMMIT")
            held = lock
            store.add_epoch(rid, _epoch(epoch, score=float(i)))
            expected[epoch] = float(i)
            if tick:
                store.flush_pending()
        store.set_status(rid, FINISHED)
        if held:
            assert store.pending_writes() > 0
            assert other.execute("SELECT status FROM runs WHERE id = ?", [rid]).fetchone()[0] == RUNNING
            other.execute("COMMIT")
        assert store.flush_pending(force=True)
        assert {e["epoch"]: e["val_score"] for e in store.epochs(rid)} == expected
        assert store.get_run(rid).status == FINISHED
        other.close()
        store.close()


_SOUND: dict[str, bytes] = {}


def _sound_file(tiny) -> bytes:
    if "db" not in _SOUND:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "s.sqlite"
            _populate(path, tiny, runs=3, epochs=10)
            _SOUND["db"] = path.read_bytes()
    return _SOUND["db"]


@hsettings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(page=st.integers(1, 200), offset=st.integers(0, 4000), junk=st.binary(min_size=1, max_size=600))
def test_any_damaged_page_opens_without_an_exception_and_leaves_the_file_alone(page, offset, junk):
    from app.core.sweeps import SweepStore
    data = bytearray(_sound_file(RunConfig))
    size = 4096
    page = 1 + (page - 1) % (len(data) // size)
    start = (page - 1) * size + offset
    data[start:start + len(junk)] = junk[: max(0, min(len(junk), len(data) - start))]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.sqlite"
        path.write_bytes(bytes(data))
        before = _sha(path)
        store, problem = open_store(path)
        try:
            for r in store.list_runs():
                store.epochs(r.id)
                store.get_run(r.id)
            SweepStore(store).list()
            store.mark_interrupted_runs()
            store.create_run(RunConfig())
        finally:
            store.close()
        if problem is not None:
            assert str(path) in problem
            assert _sha(path) == before  # never written when it is not usable
