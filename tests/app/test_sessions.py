"""The session database (migrations, crash marking, corrupt/locked files, inspections) and the sessions view
(sorting, overlay, delete with confirmation, reopen)."""
from __future__ import annotations

import sqlite3

import sqlite_utils
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from app.core import sessions as S
from app.core.sessions import SessionStore, migrations, open_store
from app.core.state import CRASHED, FINISHED, RUNNING, STOPPED
from robult_engine.events import EpochEnded, StepEnded

ALL_MIGRATIONS = ["m001_initial", "m002_inspections_and_ui_state", "m003_epoch_diagnostics", "m004_step_losses",
                  "m005_comparisons", "m006_sweeps", "m007_run_owners",
                  "m008_kappa_quality"]


def _epoch(epoch: int, score: float, best: bool = True, ckpt: str = "") -> EpochEnded:
    return EpochEnded(epoch=epoch, epochs=3, train_losses={"sup": 1.0, "total": 2.0},
                      val_metrics={"a": {"accuracy": score}, "b": {"accuracy": score / 2},
                                   "a+b": {"accuracy": score}},
                      val_score=score, is_best=best, z_norm={"a": 1.0, "b": 2.0}, u_norm={"a": 0.5, "b": 0.7},
                      rec_error={"a": 0.1, "b": 0.2}, pu_weight_hist=(0.25, 0.75), pu_weight_edges=(0.0, 0.5, 1.0),
                      pu_weight_mean=0.6, pseudo_label_acc=float("nan"), elapsed_s=1.0 + epoch,
                      checkpoint_path=ckpt)


def _run(store: SessionStore, tiny, score: float, name: str = "", status: str = FINISHED, epochs: int = 2) -> int:
    rid = store.create_run(tiny(), name=name, run_dir="/nowhere")
    for e in range(epochs):
        store.add_epoch(rid, _epoch(e, score * (e + 1) / epochs))
    store.set_status(rid, status)
    return rid


# --- the database ------------------------------------------------------------------------------------------
def test_migrations_on_an_empty_file(db_path):
    store = SessionStore(db_path)
    assert store.applied_migrations() == ALL_MIGRATIONS
    assert {"runs", "epochs", "inspections", "ui_state"} <= set(store.db.table_names())
    assert {"rec_error", "kappa_edges"} <= {c.name for c in store.db["epochs"].columns}
    store.close()
    # opening again applies nothing twice
    again = SessionStore(db_path)
    assert again.applied_migrations() == ALL_MIGRATIONS
    again.close()


def test_later_migrations_apply_to_a_file_at_the_first_schema(db_path, tiny):
    db_path.parent.mkdir(parents=True)
    old = sqlite_utils.Database(db_path)
    migrations.apply(old, stop_before="m002_inspections_and_ui_state")  # the first shipped schema only
    assert "inspections" not in old.table_names()
    old["runs"].insert({"created": "2026-01-01T00:00:00", "name": "old run", "method": "robult",
                        "dataset": "pid-synth", "config": tiny().to_json(), "seed": 0, "label_fraction": 0.1,
                        "status": FINISHED, "best_score": 0.5, "best_epoch": 0})
    old["epochs"].insert({"run_id": 1, "epoch": 0, "train_losses": "{}", "val_metrics": "{}", "val_score": 0.5,
                          "z_norm": "{}", "u_norm": "{}", "kappa_hist": "[]", "elapsed": 1.0})
    old.close()

    store = SessionStore(db_path)
    assert store.applied_migrations() == ALL_MIGRATIONS
    run = store.get_run(1)
    assert run.name == "old run" and run.best_score == 0.5 and run.epochs_done == 1
    ep = store.epochs(1)[0]
    assert ep["rec_error"] == {} and ep["kappa_edges"] == [] and ep["steps"] == []  # new columns, their defaults
    store.save_inspection(1, {"sample": 3})
    assert store.latest_inspection(1) == {"sample": 3}
    store.close()


def test_runs_epochs_and_the_best_score(store, tiny):
    rid = store.create_run(tiny(), name="r", run_dir="/tmp/r")
    store.add_epoch(rid, _epoch(0, 0.4, ckpt="/tmp/r/best.pt"))
    store.add_epoch(rid, _epoch(1, 0.3, best=False))
    store.add_epoch(rid, _epoch(1, 0.6, ckpt="/tmp/r/best.pt"))  # a resumed run recomputes epoch 1
    row = store.get_run(rid)
    assert row.status == RUNNING and row.epochs_done == 2
    assert row.best_score == 0.6 and row.best_epoch == 1 and row.checkpoint_path == "/tmp/r/best.pt"
    assert store.val_curve(rid) == ([0, 1], [0.4, 0.6])
    eps = store.epochs(rid)
    assert eps[1]["z_norm"] == {"a": 1.0, "b": 2.0} and eps[1]["pseudo_label_acc"] is None
    store.update_run(rid, labeled_indices=[3, 1, 4])
    assert store.run_record(rid)["labeled_indices"] == [3, 1, 4]


def test_runs_left_running_become_crashed(store, tiny):
    a = store.create_run(tiny())
    b = store.create_run(tiny())
    store.set_status(b, STOPPED)
    assert store.mark_interrupted_runs() == [a]
    assert store.get_run(a).status == CRASHED and "ended while" in store.get_run(a).error_message
    assert store.get_run(b).status == STOPPED
    assert store.mark_interrupted_runs() == []


def test_inspections_and_ui_state(store, tiny):
    rid = store.create_run(tiny())
    assert store.latest_inspection(rid) is None
    store.save_inspection(rid, {"sample": 1, "enabled": [True, False]})
    store.save_inspection(rid, {"sample": 2, "enabled": [True, True]})
    assert store.latest_inspection(rid) == {"sample": 2, "enabled": [True, True]}
    store.set_ui("sessions/sort", [7, "desc"])
    assert store.get_ui("sessions/sort") == [7, "desc"] and store.get_ui("missing", 1) == 1
    store.delete_run(rid)
    assert store.latest_inspection(rid) is None and store.get_run(rid) is None


def test_a_corrupt_file_falls_back_to_memory_and_is_left_untouched(tmp_path):
    bad = tmp_path / "sessions.sqlite"
    content = b"definitely not sqlite\x00" * 200
    bad.write_bytes(content)
    store, problem = open_store(bad)
    assert store.in_memory and problem
    assert str(bad) in problem and "not a valid SQLite database" in problem and "untouched" in problem
    assert bad.read_bytes() == content
    store.create_run(__import__("robult_engine.config", fromlist=["RunConfig"]).RunConfig())  # still usable
    store.close()


def test_a_locked_file_falls_back_to_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "LOCK_TIMEOUT_S", 0.2)
    path = tmp_path / "sessions.sqlite"
    SessionStore(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        store, problem = open_store(path)
        assert store.in_memory and "locked" in problem and str(path) in problem
        store.close()
    finally:
        other.execute("ROLLBACK")
        other.close()


# --- the sessions view -------------------------------------------------------------------------------------
def test_the_sessions_view_sorts_overlays_and_deletes_with_confirmation(qtbot, store, tiny, dialogs):
    from app.views.sessions import RunsTableModel, SessionsPanel
    a = _run(store, tiny, 0.9, "a")
    b = _run(store, tiny, 0.2, "b", status=STOPPED, epochs=3)
    c = _run(store, tiny, 0.55, "c")
    panel = SessionsPanel(store)
    qtbot.addWidget(panel)
    assert panel.proxy.rowCount() == 3

    # sort by best score (numeric), descending
    col = RunsTableModel.COLUMNS.index("Best score")
    panel.table.sortByColumn(col, Qt.SortOrder.DescendingOrder)
    ids = [panel.proxy.data(panel.proxy.index(r, 0), RunsTableModel.SORT_ROLE) for r in range(3)]
    assert ids == [a, c, b]
    assert panel.proxy.data(panel.proxy.index(0, col)) == "0.9000"
    assert panel.proxy.data(panel.proxy.index(2, RunsTableModel.COLUMNS.index("Epochs"))) == "3"

    # nothing selected: the plot says what draws a curve instead of showing bare axes
    from app.views.common.plot_util import plot_message
    assert "Select runs" in plot_message(panel.plot)
    assert not panel.plot.getPlotItem().getAxis("bottom").isVisible()
    # several selected runs: their validation curves are overlaid
    panel.select_runs([a, b])
    assert sorted(panel.overlay_ids) == sorted([a, b])
    assert plot_message(panel.plot) == "" and panel.plot.getPlotItem().getAxis("bottom").isVisible()
    assert not panel.btn_reopen.isEnabled()  # reopen takes one run
    # ... and compared per modality subset at their best epochs (a: 0.9 at epoch 2; b: 0.2 at epoch 3)
    t = panel.subsets
    rows = [t.verticalHeaderItem(i).text() for i in range(t.rowCount())]
    assert rows == ["a", "b", "a+b", "mean"] and t.columnCount() == 2
    heads = [t.horizontalHeaderItem(j).text().split()[0] for j in range(2)]
    col_a, col_b = heads.index(f"#{a}"), heads.index(f"#{b}")
    assert t.item(0, col_a).text() == "0.9000" and t.item(1, col_a).text() == "0.4500"
    assert t.item(3, col_a).text() == f"{(0.9 + 0.45 + 0.9) / 3:.4f}" and t.item(0, col_b).text() == "0.2000"
    assert t.item(0, col_a).font().bold() and not t.item(0, col_b).font().bold()
    assert "validation accuracy" in panel.subsets_title.text()
    panel.plot.getPlotItem().vb.autoRange()  # scores below 1 are drawn as they are, not as "(x0.001)"
    assert panel.plot.getAxis("left").autoSIPrefixScale == 1.0
    panel.select_runs([b])
    assert panel.btn_resume.isEnabled()  # stopped: resumable

    # delete asks first; No keeps the run
    panel.select_runs([c])
    dialogs.answer = QMessageBox.StandardButton.No
    panel.btn_delete.click()
    assert store.get_run(c) is not None
    dialogs.answer = QMessageBox.StandardButton.Yes
    with qtbot.waitSignal(panel.sig_runs_deleted) as deleted:
        panel.btn_delete.click()
    assert deleted.args[0] == [c] and store.get_run(c) is None
    assert panel.proxy.rowCount() == 2
    assert sum(kind == "question" for kind, _ in dialogs.asked) == 2

    # the sort order is kept in the database (ui_state) for the next session
    assert store.get_ui("sessions/sort") == [col, "desc"]
    again = SessionsPanel(store)
    qtbot.addWidget(again)
    assert again.table.horizontalHeader().sortIndicatorSection() == col


def test_reopening_a_session_loads_its_best_checkpoint(qtbot, make_window, store, tiny, trained_checkpoint):
    rid = store.create_run(tiny(), name="trained earlier", run_dir=str(trained_checkpoint.parent))
    store.add_epoch(rid, _epoch(0, 0.3, ckpt=str(trained_checkpoint)))
    store.add_epoch(rid, _epoch(1, 0.5, ckpt=str(trained_checkpoint)))
    store.set_status(rid, FINISHED)
    w = make_window(store=store)
    w.tabs.setCurrentWidget(w.sessions_panel)
    w.sessions_panel.select_runs([rid])
    assert w.sessions_panel.btn_reopen.isEnabled()
    with qtbot.waitSignal(w.sig_session_reopened, timeout=30_000) as reopened, \
            qtbot.waitSignal(w.sig_model_loaded, timeout=30_000) as loaded:
        w.sessions_panel.btn_reopen.click()
    assert reopened.args == [rid]
    lm = loaded.args[0]
    assert lm.run_id == rid and lm.checkpoint_path == str(trained_checkpoint) and not lm.model.training
    assert w.current_model is lm
    assert w.tabs.currentWidget() is w.training_panel
    assert w.buffers.epoch_x == [1.0, 2.0] and w.buffers.best_score == 0.5
    w.training_panel.redraw(force=True)
    assert w.training_panel.curve_point_counts()["val:a+b"] == 2
    assert f"#{rid}" in w.training_panel.title.text()
    assert "run #" in w.model_label.text()


def test_killing_the_app_mid_training_keeps_finished_epochs_and_the_run_resumes(qtbot, tmp_path, tiny, make_window):
    """SIGKILL the real app while it trains: the epochs it finished are in the database, the run becomes
    "crashed" at the next start, and it resumes from its last.pt (no completed epoch is recomputed)."""
    import os
    import subprocess
    import sys
    import time
    db = tmp_path / "killed.sqlite"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(tiny(**{"train.epochs": 400}).to_json())
    code = (
        "import sys\n"
        "from app.main import build\n"
        "from robult_engine.config import RunConfig\n"
        f"app, w, store = build(['--db', {str(db)!r}, '--settings', {str(tmp_path / 's.ini')!r}, "
        "'--dataset', 'pid-synth', '--threads', '1'])\n"
        f"w.start_training(RunConfig.from_json(open({str(cfg_file)!r}).read()), name='to be killed')\n"
        "app.exec()\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if db.exists():
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
                        done = c.execute("SELECT count(*) FROM epochs").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if done >= 2:
                    break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert done >= 2
    finally:
        proc.kill()
        proc.wait(30)

    store = SessionStore(db)
    w = make_window(store=store)
    try:
        run = store.list_runs()[0]
        assert run.status == CRASHED and run.epochs_done >= 2
        assert run.checkpoint_path and (tmp_path / run.checkpoint_path).is_file()
        kept = run.epochs_done
        assert w.notice_label.isVisible() and f"#{run.id}" in w.notice_label.text()  # "did not end cleanly"
        with qtbot.waitSignal(w.controller.sig_progressed, timeout=60_000,
                              check_params_cb=lambda ev: isinstance(ev, StepEnded)) as first:
            assert w.resume_run(run.id), w.training_panel.status_panel.text
        assert first.args[0].epoch >= kept - 1  # continues from last.pt, not from scratch
        assert not w.notice_label.isVisible()  # the resumed run is training: the notice is gone
        with qtbot.waitSignal(w.controller.sig_stopped, timeout=60_000):
            w.stop_training()
        assert store.get_run(run.id).status == STOPPED
        assert store.get_run(run.id).epochs_done >= kept
    finally:
        w.close()
        store.close()
