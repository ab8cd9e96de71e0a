"""The Qt-free core, without a window or a thread: the explorer state (one generation, nothing written back)
and the RunSession (rows, messages and state for a run driven by a fake launcher)."""
from __future__ import annotations

import pytest

from app.core.explorer_state import ExplorerState, SampleRef
from app.core.run_session import RunSession, TrainingJob
from app.core.sessions import SessionStore
from app.core.state import FINISHED, IDLE, PREPARING, RUNNING, STOPPED, TRAINING, SessionState, TrainingBuffers
from robult_engine.events import EpochEnded, Finished, Started, StepEnded


def test_the_explorer_state_bumps_one_generation_per_change_and_not_for_what_is_only_shown():
    st = ExplorerState()
    seen = []
    st.subscribe(seen.append)
    st.set_modalities(("image", "audio"))
    g = st.generation
    st.set_context("ctx")
    st.set_sample(SampleRef.dataset("test", 3), (True, False))  # sample and toggles: one change
    assert st.generation == g + 2 and st.enabled == (True, False) and {"sample", "enabled"} <= seen[-1]
    st.set_enabled((True, False))  # unchanged: no notification, no generation
    assert st.generation == g + 2
    st.set_present((True, True))  # what the answer said: shown, nothing recomputed
    st.restore_sample(SampleRef.dataset("test", 2))
    assert st.generation == g + 2 and "generation" not in seen[-1] and "generation" not in seen[-2]
    st.set_enabled((False, True))
    assert st.is_current(g + 3)
    with pytest.raises(ValueError):
        st.set_enabled((True,))
    st.set_modalities(("image", "audio", "text"))  # a new model: all on, no context, no sample yet
    assert st.enabled == (True, True, True) and st.context is None and st.sample is None and st.present is None


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


def _epoch(e: int, score: float) -> EpochEnded:
    return EpochEnded(e, 3, {"total": 1.0}, {"image": {"accuracy": score}, "image+audio": {"accuracy": score}},
                      score, True, {"image": 1.0, "audio": 2.0}, {"image": 0.5, "audio": 0.4}, {}, (), (), 0.0,
                      float("nan"), 1.0)


def test_a_run_session_writes_the_rows_and_the_state_of_a_run(tmp_path, tiny):
    store = SessionStore(None)
    state, buffers, launcher = SessionState(), TrainingBuffers(), FakeLauncher()
    changes: list[set] = []
    state.subscribe(changes.append)
    run = RunSession(store, state, buffers, launcher, tmp_path / "runs")
    run_id = run.start(tiny(), name="core")
    assert launcher.jobs[0].run_id == run_id and state.activity == PREPARING and state.run_status == RUNNING
    assert store.get_run(run_id).status == RUNNING and "Preparing" in state.message
    assert run.start(tiny()) is None and state.status_tip == "A run is already training."  # one at a time

    run.on_started(launcher.jobs[0])
    run.on_progressed(Started((4, 1, 9), 100, 4, 12, 0, "cpu"))
    assert store.run_record(run_id)["labeled_indices"] == [4, 1, 9]  # from the Started event
    run.on_progressed(StepEnded(0, 0, 1, 12, {"sup": 1.0, "total": 1.0}, 1e-3, 0.1))
    assert state.activity == TRAINING and buffers.global_step == 1
    v = state.runs_version
    run.on_progressed(_epoch(0, 0.7))
    assert [e["epoch"] for e in store.epochs(run_id)] == [0] and len(store.epochs(run_id)[0]["steps"]) == 1
    assert state.runs_version == v + 1  # the Sessions table refreshes

    run.stop()
    assert launcher.stop_requested and "Stopping" in state.message
    run.on_cancelled(Finished(False, True, 0, 0.7, 1, str(tmp_path / "best.pt")))
    assert store.get_run(run_id).status == STOPPED and state.run_status == STOPPED
    assert "Stopped after 1 epoch —" in state.message  # singular
    assert state.best_checkpoint == (str(tmp_path / "best.pt"), run_id, 1)
    launcher.is_running = False
    run.on_stopped()
    assert state.activity == IDLE and run.job is None

    # the stored run replays into the buffers (steps and epochs), e.g. after a restart
    buffers.clear()
    assert run.show_stored(run_id) is not None
    assert buffers.epoch_x == [1.0] and buffers.global_step == 1 and "resumable" in buffers.outcome
    # resume refuses without last.pt, and says why
    assert not run.resume(run_id) and "cannot be resumed" in state.message
    run.forget([run_id])
    assert state.run_id is None
    store.close()


def test_a_finished_run_is_recorded_and_its_best_checkpoint_asked_for(tmp_path, tiny):
    store = SessionStore(None)
    state, buffers, launcher = SessionState(), TrainingBuffers(), FakeLauncher()
    run = RunSession(store, state, buffers, launcher, tmp_path)
    run_id = run.start(tiny())
    run.on_progressed(_epoch(0, 0.5))
    run.on_finished(Finished(True, False, 0, 0.5, 1, "best.pt", {"image+audio": {"accuracy": 0.6}}, 3.0))
    row = store.get_run(run_id)
    assert row.status == FINISHED and row.best_epoch == 0 and row.checkpoint_path == "best.pt"
    assert state.message_kind == "ok" and "early stopping" in state.message and "0.6000" in state.message
    assert state.best_checkpoint[:2] == ("best.pt", run_id)
    store.close()


def test_comparison_configs_share_labels_and_batches_per_seed_and_paired_differences(tiny):
    from app.core.comparison import comparison_configs, summarise
    items = comparison_configs(tiny(), ["robult", "supervised"], 2)
    assert [(c.method, c.seed, c.data.seed) for c, _ in items] == [("robult", 0, 0), ("supervised", 0, 0),
                                                                   ("robult", 1, 1), ("supervised", 1, 1)]
    assert items[0][1] == "robult · seed 0"

    def tm(a, b):
        return {"m0": {"accuracy": a}, "m0+m1": {"accuracy": b}}
    s = summarise("cmp-x", [("robult", 0, tm(0.8, 0.9)), ("supervised", 0, tm(0.7, 0.8)),
                            ("robult", 1, tm(0.6, 0.7)), ("supervised", 1, tm(0.65, 0.75))], "accuracy")
    assert [m.method for m in s.methods] == ["robult", "supervised"]
    assert s.methods[0].mean == pytest.approx(0.75) and s.methods[0].n == 2
    d = s.differences[0]
    assert d.method == "supervised" and d.mean == pytest.approx((0.1 - 0.05) / 2) and (d.wins, d.n) == (1, 2)
    assert "robult − supervised: +0.0250" in s.text() and "ahead in 1 of 2" in s.text()
    mae = summarise("c", [("a", 0, {"m0": {"mae": 1.0}}), ("b", 0, {"m0": {"mae": 2.0}})], "mae")
    assert mae.differences[0].wins == 1  # lower error: the reference is ahead


def test_a_queued_comparison_runs_one_after_another_and_a_stop_drops_the_rest(tmp_path, tiny):
    from app.core.comparison import comparison_configs
    store = SessionStore(None)
    state, buffers, launcher = SessionState(), TrainingBuffers(), FakeLauncher()
    run = RunSession(store, state, buffers, launcher, tmp_path)
    items = comparison_configs(tiny(), ["robult", "supervised", "moddrop"], 2)
    first = run.start_queue(items, "cmp-1")
    assert len(launcher.jobs) == 1 and len(store.list_runs()) == 1  # rows are made as runs start
    assert "run 1 of 6" in state.message and store.get_run(first).comparison == "cmp-1"
    run.on_finished(Finished(False, False, 0, 0.5, 1, "", {"m0": {"accuracy": 0.5}}))
    launcher.is_running = False
    run.on_stopped()
    assert len(launcher.jobs) == 2 and launcher.jobs[1].config.method == "supervised"
    assert store.comparison_runs("cmp-1") == [("robult", 0, {"m0": {"accuracy": 0.5}})]
    run.stop()  # the user stops: this run ends, the 4 queued ones never start
    assert "4 queued runs" in state.message
    run.on_cancelled(Finished(False, True, -1, float("nan"), 0, ""))
    launcher.is_running = False
    run.on_stopped()
    assert len(launcher.jobs) == 2 and len(store.list_runs()) == 2 and state.comparison_done == "cmp-1"
    store.close()
