"""What a restart brings back (the working context in the store's ui_state), the ETA of a resumed run, the explorer
following a first training run, and the View / Help menus."""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtGui import QDesktopServices

from app.core.run_session import RunSession, TrainingJob
from app.core.sessions import SessionStore
from app.core.state import FINISHED, STOPPED, SessionState, TrainingBuffers
from robult_engine.events import EpochEnded, Started, StepEnded

WAIT = 60_000


def _epoch(e: int, score: float, ckpt: str = "", elapsed: float = 1.0, epochs: int = 2) -> EpochEnded:
    return EpochEnded(e, epochs, {"total": 1.0}, {"m1": {"accuracy": score}, "m1+m2": {"accuracy": score}},
                      score, True, {"m1": 1.0, "m2": 2.0}, {"m1": 0.5, "m2": 0.4}, {}, (), (), 0.0,
                      float("nan"), elapsed, checkpoint_path=ckpt)


def _stored_run(store: SessionStore, tiny, checkpoint: Path | str, status: str = FINISHED) -> int:
    rid = store.create_run(tiny(), name="inspected last", run_dir=str(Path(checkpoint).parent))
    store.add_epoch(rid, _epoch(0, 0.4, str(checkpoint)))
    store.add_epoch(rid, _epoch(1, 0.6, str(checkpoint)))
    store.set_status(rid, status)
    return rid


def _context():
    from app.core.state import CONTEXT_KEY, WorkingContext
    return CONTEXT_KEY, WorkingContext


def _shown(panel) -> bool:
    return panel.inspection is not None and panel.shown_generation == panel.state.generation


def _title(w, i: int) -> str:
    return w.tabs.tabText(i).replace("●", "").replace("&", "").strip()


def _tab(w, title: str):
    return next(w.tabs.widget(i) for i in range(w.tabs.count()) if _title(w, i) == title)


# --- the working context ------------------------------------------------------------------------------------
def test_the_working_context_survives_closing_and_reopening_the_window(qtbot, make_window, store, tiny,
                                                                        trained_checkpoint):
    CONTEXT_KEY, WorkingContext = _context()
    rid = _stored_run(store, tiny, trained_checkpoint)
    w = make_window()
    with qtbot.waitSignal(w.sig_model_loaded, timeout=WAIT):
        assert w.reopen_session(rid)
    panel = w.explorer
    qtbot.waitUntil(lambda: _shown(panel), timeout=WAIT)
    names = panel.state.modality_names
    assert len(names) >= 2
    enabled = (False,) + (True,) * (len(names) - 1)
    from app.core.explorer_state import SampleRef
    panel.open_sample(SampleRef.dataset("test", 3), enabled)
    qtbot.waitUntil(lambda: _shown(panel) and panel.sample.ref.index == 3, timeout=WAIT)
    w.tab_actions[w.analysis.calibration].trigger()  # View › Calibration
    assert w.tabs.currentWidget() is w.analysis.calibration
    qtbot.waitUntil(lambda: (store.get_ui(CONTEXT_KEY) or {}).get("tab") == "Calibration", timeout=10_000)  # debounced
    w.close()
    ctx = WorkingContext.from_dict(store.get_ui(CONTEXT_KEY))
    assert ctx.checkpoint == str(trained_checkpoint) and ctx.run_id == rid and ctx.dataset == "pid-synth"
    assert ctx.inspection["sample"] == {"kind": "dataset", "split": "test", "index": 3}

    # a restart: the default dataset is another one, yet the window comes back to the last model and its dataset
    w2 = make_window(default_dataset="feature-synth")
    qtbot.waitUntil(lambda: w2.current_model is not None, timeout=WAIT)
    lm = w2.current_model
    assert lm.checkpoint_path == str(trained_checkpoint) and lm.run_id == rid
    p2 = w2.explorer
    qtbot.waitUntil(lambda: _shown(p2), timeout=WAIT)
    assert p2.sample.ref == SampleRef.dataset("test", 3)
    assert p2.state.enabled == enabled
    assert w2.tabs.currentWidget() is w2.analysis.calibration
    assert f"#{rid}" in w2.training_panel.title.text()  # the run's curves, as Reopen shows them
    assert w2.buffers.epoch_x == [1.0, 2.0]
    w2.work.wait(WAIT)  # the default dataset's load has answered too
    qtbot.wait(50)
    status = w2.training_panel.status_panel.text
    assert "Ready to train on feature-synth" not in status and "Restored the last session" in status
    assert "pid-synth" in w2.dataset_label.text() and "feature-synth" not in w2.dataset_label.text()


@pytest.mark.parametrize("damage", ["missing", "corrupt", "run deleted"])
def test_a_checkpoint_that_is_gone_starts_clean_with_a_message(qtbot, make_window, store, tiny, tmp_path, dialogs,
                                                               damage):
    CONTEXT_KEY, WorkingContext = _context()
    ck = tmp_path / "gone" / "best.pt"
    ck.parent.mkdir()
    if damage == "corrupt":
        ck.write_bytes(b"not a checkpoint" * 64)
    rid = _stored_run(store, tiny, ck)
    if damage == "run deleted":
        ck.write_bytes(b"x")
        store.delete_run(rid)
    store.set_ui(CONTEXT_KEY, WorkingContext(checkpoint=str(ck), run_id=rid, dataset="pid-synth", tab="Sessions",
                                             inspection={"sample": {"kind": "dataset", "split": "test",
                                                                    "index": 1}}).to_dict())
    w = make_window()
    qtbot.waitUntil(lambda: "could not be restored" in w.statusBar().currentMessage(), timeout=WAIT)
    message = w.statusBar().currentMessage()
    assert "Starting clean" in message and (f"#{rid}" in message)
    assert w.current_model is None and w.state.run_id is None
    assert w.tabs.currentWidget() is w.sessions_panel  # the rest of the context still comes back
    assert w.error_dialog is None and not dialogs.asked  # no dialog at start-up
    if damage != "run deleted":
        assert store.get_run(rid) is not None and len(store.epochs(rid)) == 2  # nothing of the session is lost
    w.work.wait(WAIT)
    qtbot.wait(50)
    assert "could not be restored" in w.training_panel.status_panel.text


def test_a_damaged_context_value_is_ignored(qtbot, make_window, store):
    CONTEXT_KEY, WorkingContext = _context()
    store.set_ui(CONTEXT_KEY, ["not", "a", "context"])
    w = make_window()
    qtbot.waitUntil(lambda: w._context_restored, timeout=10_000)
    assert w.current_model is None
    qtbot.waitUntil(lambda: "Ready to train on pid-synth" in w.training_panel.status_panel.text, timeout=WAIT)
    assert WorkingContext.from_dict({"run_id": True, "checkpoint": 3, "inspection": "x"}) == WorkingContext()


# --- the ETA after Resume ------------------------------------------------------------------------------------
class FakeLauncher:
    def __init__(self) -> None:
        self.jobs: list[TrainingJob] = []
        self.is_running = False
        self.stop_requested = False

    def start(self, job: TrainingJob) -> None:
        self.jobs.append(job)
        self.is_running = True

    def stop(self) -> None:
        self.stop_requested = True


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_eta_after_resume_counts_only_the_epochs_trained_since_resume(tmp_path, tiny):
    """10 epochs of 4 steps; 5 were trained by an earlier process. This one takes 3 s per epoch: 4 epochs are
    left after its first, so 12 s (the trainer's own clock restarted at 0 when the run resumed)."""
    store = SessionStore(None)
    clock = FakeClock()
    state, buffers, launcher = SessionState(), TrainingBuffers(clock=clock), FakeLauncher()
    run = RunSession(store, state, buffers, launcher, tmp_path)
    spe, epochs = 4, 10
    rid = store.create_run(tiny(**{"train.epochs": epochs}), run_dir=str(tmp_path))
    for e in range(5):  # the earlier process: 1 s per epoch
        steps = [StepEnded(e, s, e * spe + s + 1, epochs * spe, {"total": 1.0}, 1e-3, e + (s + 1) / spe)
                 for s in range(spe)]
        store.add_epoch(rid, _epoch(e, 0.1 * e, elapsed=e + 1.0, epochs=epochs), steps)
    store.set_status(rid, STOPPED)
    (tmp_path / "last.pt").write_bytes(b"resume file")
    assert run.resume(rid)
    assert buffers.eta_s() is None  # nothing trained in this process yet
    run.on_started(launcher.jobs[0])
    clock.t += 40.0  # set-up (dataset, model, restore) is not training time
    run.on_progressed(Started((1, 2), 100, spe, epochs * spe, 5, "cpu"))
    for s in range(spe):
        clock.t += 0.75
        run.on_progressed(StepEnded(5, s, 5 * spe + s + 1, epochs * spe, {"total": 1.0}, 1e-3, 40.0 + 0.75 * (s + 1)))
        if s == 1:  # before the first epoch here ends: this process's time per step × the steps left
            assert buffers.eta_s() == pytest.approx(0.75 * (epochs * spe - 22))
    run.on_progressed(_epoch(5, 0.6, elapsed=43.0, epochs=epochs))
    assert buffers.eta_s() == pytest.approx(3.0 * 4)
    clock.t += 6.0  # a slower epoch: 4.5 s per epoch on average now
    run.on_progressed(StepEnded(6, 3, 28, epochs * spe, {"total": 1.0}, 1e-3, 49.0))
    run.on_progressed(_epoch(6, 0.6, elapsed=49.0, epochs=epochs))
    assert buffers.eta_s() == pytest.approx(4.5 * 3)
    store.close()


# --- following a first training run --------------------------------------------------------------------------
def test_following_training_loads_the_first_best_checkpoint_while_the_run_trains(qtbot, make_window, tiny):
    w = make_window()
    panel = w.explorer
    assert panel.live_box.isChecked() and w.current_model is None
    seen = []
    w.sig_model_loaded.connect(lambda lm: seen.append((lm, w.controller.is_running)))
    rid = w.start_training(tiny(**{"train.epochs": 300}), name="first run")
    w.tabs.setCurrentWidget(panel)  # the explorer is on screen while the run trains
    try:
        qtbot.waitUntil(lambda: bool(seen), timeout=WAIT)
        lm, running = seen[0]
        assert running and lm.run_id == rid and Path(lm.checkpoint_path).name == "best.pt"
        qtbot.waitUntil(lambda: panel.inspection is not None, timeout=WAIT)  # the explorer is no longer empty
        assert panel.loaded_model is lm
    finally:
        w.act_stop.trigger()
        qtbot.waitUntil(lambda: not w.controller.is_running, timeout=WAIT)
    qtbot.waitUntil(lambda: w.current_model is not None and w.current_model is not lm, timeout=WAIT)  # the end's

    # another architecture, trained while the Training tab is shown: nothing is loaded until the explorer is
    # looked at (the training keeps the CPU), then the run's best checkpoint is
    seen.clear()
    rid2 = w.start_training(tiny(**{"train.epochs": 300, "model.d_z": 6}), name="second run")
    try:
        qtbot.waitUntil(lambda: w.state.first_checkpoint is not None and w.state.first_checkpoint[1] == rid2,
                        timeout=WAIT)
        qtbot.wait(300)
        assert not seen and w.current_model.run_id == rid
        w.tab_actions[panel].trigger()
        qtbot.waitUntil(lambda: bool(seen), timeout=WAIT)
        assert seen[0][0].run_id == rid2 and seen[0][1]
    finally:
        w.act_stop.trigger()
        qtbot.waitUntil(lambda: not w.controller.is_running, timeout=WAIT)


# --- menus ---------------------------------------------------------------------------------------------------
def test_view_menu_entries_switch_every_tab_and_help_opens_the_docs(qtbot, make_window, monkeypatch):
    w = make_window()
    view = next(a.menu() for a in w.menuBar().actions() if a.text().replace("&", "") == "View")
    titles = [_title(w, i) for i in range(w.tabs.count())]
    assert {"Calibration", "Dataset PID", "Slices"} <= set(titles)
    entries = {a.text().replace("&", ""): a for a in view.actions() if not a.isSeparator()}
    assert list(entries) == titles  # one entry per tab, in tab order
    for title, key in (("Calibration", "Ctrl+7"), ("Dataset PID", "Ctrl+8"), ("Slices", "Ctrl+9")):
        assert entries[title].shortcut().toString() == key
    for title, act in entries.items():
        page = _tab(w, title)
        w.tabs.setCurrentWidget(w.training_panel if page is not w.training_panel else w.sessions_panel)
        act.trigger()
        assert w.tabs.currentWidget() is page
    from PySide6.QtGui import QAction
    keys = [k.toString() for a in w.findChildren(QAction) for k in a.shortcuts() if not k.isEmpty()]
    assert len(keys) == len(set(keys)), sorted(keys)  # no key is bound twice (Qt would fire neither)

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    help_menu = next(a.menu() for a in w.menuBar().actions() if a.text().replace("&", "") == "Help")
    help_entries = {a.text().replace("&", ""): a for a in help_menu.actions()}
    help_entries["Documentation"].trigger()
    assert len(opened) == 1 and opened[0].isLocalFile()
    path = Path(opened[0].toLocalFile())
    assert path.name == "app.md" and path.is_file()

    help_entries["Keyboard shortcuts"].trigger()
    dlg = w.shortcuts_dialog
    assert dlg is not None and dlg.isVisible()
    from PySide6.QtWidgets import QTableWidget
    table = dlg.findChild(QTableWidget, "shortcutsTable")
    rows = {(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())}
    assert ("Ctrl+7", "View › Calibration") in rows and ("Ctrl+9", "View › Slices") in rows
    assert any(k.startswith("Alt+1") for k, _ in rows) and any("Documentation" in d for _, d in rows)
    dlg.reject()
