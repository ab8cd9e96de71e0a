"""Training in the window: from the wizard to the best checkpoint, stop/resume, failures, closing during a run,
and inference requests on the live model."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtWidgets import QMessageBox

from app.background.training import LIVE_THREADS, NoModelError
from app.core.state import FAILED, FINISHED, STOPPED
from app.core.work import Failure
from robult_engine.events import EpochEnded, StepEnded

RUN_TIMEOUT = 90_000  # ms; a tiny run takes seconds, but the machine is shared


def _is_epoch(ev) -> bool:
    return isinstance(ev, EpochEnded)


def _is_step(ev) -> bool:
    return isinstance(ev, StepEnded)


def _finish_wizard(qtbot, wiz) -> None:
    qtbot.waitUntil(lambda: not wiz.page_dataset.is_loading and wiz.page_dataset.info is not None, timeout=20_000)
    for _ in range(5):
        wiz.next()
    assert wiz.currentPage() is wiz.page_summary
    wiz.page_summary.edit_name.setText("from the wizard")
    wiz.accept()


def test_a_run_from_the_wizard_trains_draws_and_is_recorded(qtbot, make_window, settings, tiny):
    settings.setValue("wizard/last_config", tiny().to_json())  # the wizard starts from the last config
    w = make_window()
    wiz = w.new_training()
    with qtbot.waitSignal(w.controller.sig_finished, timeout=RUN_TIMEOUT) as fin, \
            qtbot.waitSignal(w.sig_model_loaded, timeout=RUN_TIMEOUT) as loaded:
        _finish_wizard(qtbot, wiz)
        assert w.controller.is_running
        assert w.act_new.isEnabled() and w.act_stop.isEnabled()  # a new run asked for now would be queued
    ev = fin.args[0]
    assert not ev.cancelled and ev.checkpoint_path and Path(ev.checkpoint_path).is_file()
    qtbot.waitUntil(lambda: not w.controller.is_running, timeout=10_000)

    # curves received points
    w.training_panel.redraw(force=True)
    counts = w.training_panel.curve_point_counts()
    assert counts["loss:total"] > 0 and counts["loss:sup"] > 0 and counts["loss:pu"] > 0 and counts["loss:rec"] > 0
    assert counts["val:m0+m1+m2"] == 2 and counts["norm:Z:m0"] == 2 and counts["norm:U:m2"] == 2
    assert counts["kappa:epochs"] >= 1
    # the quality of κ beside its histogram: one point per epoch for each line, and the legend shown
    assert counts["kappa:precision"] == 2 and counts["kappa:auc"] == 2
    assert w.training_panel.kappa_legend.isVisible()
    assert w.training_panel.progress.value() == 1000
    assert "Finished" in w.training_panel.status_panel.text
    # the status bar names the dataset this run trained on (not the default the app opened with)
    assert w.dataset_label.text().startswith("Dataset: pid-synth (m0, m1, m2; single-label)")

    # the session row and the epoch rows
    run_id = w.state.run_id
    row = w.store.get_run(run_id)
    assert row.status == FINISHED and row.name == "from the wizard"
    assert row.best_epoch == ev.best_epoch and row.checkpoint_path == ev.checkpoint_path
    rec = w.store.run_record(run_id)
    assert len(rec["labeled_indices"]) > 0 and "torch" in rec["package_versions"]
    assert rec["config"]["data"]["dataset"] == "pid-synth"
    epochs = w.store.epochs(run_id)
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert set(epochs[0]["train_losses"]) >= {"sup", "pu", "rec", "total"}
    assert "m0+m1+m2" in epochs[0]["val_metrics"] and len(epochs[0]["kappa_hist"]) == 20
    assert all(0.0 <= e["kappa_auc"] <= 1.0 and 0.0 <= e["kappa_precision"] <= 1.0 for e in epochs)

    # the best checkpoint became the current model
    lm = loaded.args[0]
    assert w.current_model is lm and lm.run_id == run_id and not lm.model.training
    assert next(lm.model.parameters()).device.type == "cpu"
    assert lm.labeled_indices.tolist() == rec["labeled_indices"]
    w.tabs.setCurrentWidget(w.sessions_panel)  # the table refreshes when shown
    assert w.sessions_panel.model.rowCount() == 1
    assert w.sessions_panel.model.run_at(0).status == FINISHED

    # the step losses are stored with their epochs: reopening the run draws the same loss curves
    live_x = list(w.buffers.step_x)
    live = {k: list(v) for k, v in w.buffers.step_losses.items()}
    stored = [s for e in epochs for s in e["steps"]]
    assert len(stored) == len(live_x) > 0 and [s[1] for s in stored] == list(range(1, len(stored) + 1))
    w.buffers.clear()
    w.reopen_session(run_id)
    qtbot.waitUntil(lambda: not w.controller.is_running and w.current_model is not None, timeout=10_000)
    assert w.buffers.step_x == pytest.approx(live_x)
    for k, v in live.items():
        np.testing.assert_allclose(w.buffers.step_losses[k], v, rtol=1e-12)
    w.training_panel.redraw(force=True)
    again = w.training_panel.curve_point_counts()
    assert again["loss:total"] == counts["loss:total"]
    assert again["kappa:precision"] == 2 and again["kappa:auc"] == 2  # the reopened run shows κ's quality too


def test_stop_keeps_the_best_checkpoint_and_resume_completes_the_run(qtbot, make_window, tiny):
    w = make_window()
    cfg = tiny(**{"train.epochs": 8})
    with qtbot.waitSignal(w.controller.sig_progressed, timeout=RUN_TIMEOUT, check_params_cb=_is_epoch):
        run_id = w.start_training(cfg, name="stop me")
    with qtbot.waitSignal(w.controller.sig_cancelled, timeout=RUN_TIMEOUT) as fin:
        w.act_stop.trigger()
        assert "Stopping" in w.training_panel.status_panel.text
    assert fin.args[0].cancelled
    qtbot.waitUntil(lambda: not w.controller.is_running, timeout=10_000)
    row = w.store.get_run(run_id)
    assert row.status == STOPPED and row.checkpoint_path and Path(row.checkpoint_path).is_file()
    done = [e["epoch"] for e in w.store.epochs(run_id)]
    assert done and done[0] == 0 and len(done) < 8
    assert w.act_resume.isEnabled()
    assert "Resume" in w.training_panel.status_panel.text

    with qtbot.waitSignal(w.controller.sig_finished, timeout=RUN_TIMEOUT) as fin2:
        w.act_resume.trigger()
        assert w.store.get_run(run_id).status == "running"
    assert not fin2.args[0].cancelled
    qtbot.waitUntil(lambda: not w.controller.is_running, timeout=10_000)
    assert w.store.get_run(run_id).status == FINISHED
    assert [e["epoch"] for e in w.store.epochs(run_id)] == list(range(8))
    assert w.buffers.epoch_x == [float(e) for e in range(1, 9)]
    assert len(w.store.list_runs()) == 1  # the same session row


def test_a_diverging_run_ends_with_a_readable_error_not_a_crash(qtbot, make_window, tiny, monkeypatch):
    from robult_engine.trainer import Trainer
    real = Trainer.compute_losses

    def nan_losses(self, batch, epoch, stats):
        losses = real(self, batch, epoch, stats)
        losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(Trainer, "compute_losses", nan_losses)
    w = make_window()
    with qtbot.waitSignal(w.controller.sig_failed, timeout=RUN_TIMEOUT) as failed:
        run_id = w.start_training(tiny())
    assert failed.args[0].kind == "nan"
    qtbot.waitUntil(lambda: not w.controller.is_running, timeout=10_000)
    panel = w.training_panel.status_panel
    assert panel.kind == "error" and panel.isVisible()
    assert "diverged" in panel.text and "learning rate" in panel.text
    row = w.store.get_run(run_id)
    assert row.status == FAILED and "[nan]" in row.error_message
    assert w.act_new.isEnabled() and w.isVisible()


def test_a_dataset_that_cannot_be_loaded_fails_the_run_readably(qtbot, make_window, tiny, tmp_path):
    w = make_window()
    with qtbot.waitSignal(w.controller.sig_failed, timeout=RUN_TIMEOUT) as failed:
        run_id = w.start_training(tiny(**{"data.dataset": str(tmp_path / "missing-folder")}))
    assert failed.args[0].kind == "data"
    qtbot.waitUntil(lambda: not w.controller.is_running, timeout=10_000)
    assert "could not be loaded" in w.training_panel.status_panel.text
    assert w.store.get_run(run_id).status == FAILED


def test_closing_during_training_asks_then_stops_cleanly(qtbot, make_window, tiny, dialogs, store):
    w = make_window(store=store)
    with qtbot.waitSignal(w.controller.sig_progressed, timeout=RUN_TIMEOUT, check_params_cb=_is_step):
        run_id = w.start_training(tiny(**{"train.epochs": 50}), name="closed")
    # answering No keeps the window and the run
    dialogs.answer = QMessageBox.StandardButton.No
    w.close()
    assert w.isVisible() and w.controller.is_running
    assert any("A run is training" in text for _, text in dialogs.asked)
    # answering Yes stops the worker and records the run as stopped
    dialogs.answer = QMessageBox.StandardButton.Yes
    w.close()
    assert not w.isVisible()
    assert not w.controller.is_running
    assert not any(t.isRunning() for t in LIVE_THREADS)
    assert store.get_run(run_id).status == STOPPED


def test_inference_requests_run_on_the_training_thread_in_eval_mode(qtbot, make_window, tiny):
    w = make_window()
    seen = {}

    def probe(model):
        seen["thread"] = threading.get_ident()
        seen["training"] = model.training
        seen["grad"] = torch.is_grad_enabled()
        return sum(p.numel() for p in model.parameters())

    def boom(model):
        raise RuntimeError("bad request")

    with qtbot.waitSignal(w.controller.sig_progressed, timeout=RUN_TIMEOUT, check_params_cb=_is_epoch):
        w.start_training(tiny(**{"train.epochs": 30}))
    results, cancelled = {}, []

    def answer(key):
        return lambda value: results.__setitem__(key, value)

    w.controller.run_on_model(probe, on_result=answer(1), on_error=answer(1))
    w.controller.run_on_model(boom, on_result=answer(2), on_error=answer(2))
    dropped = w.controller.run_on_model(probe, on_result=answer(3), on_error=answer(3),
                                        on_cancelled=cancelled.append)
    dropped.cancel()  # before the training thread serves it: it never runs, and says so
    qtbot.waitUntil(lambda: len(results) == 2 and bool(cancelled), timeout=RUN_TIMEOUT)
    assert seen["thread"] != threading.get_ident()
    assert seen["training"] is False and seen["grad"] is False
    assert isinstance(results[1], int) and results[1] > 0
    assert isinstance(results[2], Failure) and "bad request" in results[2].message
    assert 3 not in results and cancelled == [None]
    with qtbot.waitSignal(w.controller.sig_stopped, timeout=RUN_TIMEOUT):
        w.stop_training()
    qtbot.waitUntil(lambda: w.current_model is not None, timeout=RUN_TIMEOUT)

    # no training: answered on the pool with the current model
    w.controller.run_on_model(probe, on_result=answer(4), on_error=answer(4))
    qtbot.waitUntil(lambda: 4 in results, timeout=20_000)
    assert results[4] == results[1]
    assert seen["training"] is False


def test_requests_without_any_model_get_a_no_model_error(qtbot, make_window):
    w = make_window()
    got = []
    w.controller.run_on_model(lambda model: 1, on_result=got.append, on_error=got.append)
    assert len(got) == 1 and isinstance(got[0], Failure) and isinstance(got[0].exception, NoModelError)


def test_the_controller_forwards_the_worker_signal_to_signal_and_reports_the_labeled_indices(qtbot, make_window,
                                                                                           tiny):
    w = make_window()
    kinds = []
    w.controller.sig_started.connect(lambda job: kinds.append("started"))
    w.controller.sig_progressed.connect(lambda ev: kinds.append(type(ev).__name__))
    w.controller.sig_finished.connect(lambda ev: kinds.append("finished"))
    with qtbot.waitSignal(w.controller.sig_stopped, timeout=RUN_TIMEOUT):
        run_id = w.start_training(tiny())
    assert kinds[0] == "started" and kinds[1] == "Started" and kinds[-1] == "finished"
    assert "StepEnded" in kinds and kinds.count("EpochEnded") == 2
    assert not [name for name in dir(w.controller) if name.startswith("_on_worker_") and "request" not in name
                and "release" not in name]  # no relay slots
    labeled = w.store.run_record(run_id)["labeled_indices"]
    assert labeled and labeled == sorted(labeled)


def test_the_engine_imports_no_qt():
    import subprocess
    import sys
    code = ("import sys, robult_engine.trainer, robult_engine.cli, robult_engine.evaluation, "
            "robult_engine.checkpoint; bad=[m for m in sys.modules if m.split('.')[0] in ('PySide6','app','sqlite_utils','pyqtgraph')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_curve_colours_follow_the_modality_order_not_the_order_rows_come_back_in(qtbot):
    """A live run sends its dicts in the model's order (image, audio); the database gives them back sorted
    (audio, image). The curves of a modality keep their colour either way (a resumed run used to swap them)."""
    from app.core.state import TrainingBuffers
    from app.views.training import TrainingPanel

    def colours(order):
        buf = TrainingBuffers()
        buf.set_plan(3)
        panel = TrainingPanel(buf)
        qtbot.addWidget(panel)
        subsets = {"image": {"accuracy": 0.5}, "audio": {"accuracy": 0.6}, "image+audio": {"accuracy": 0.7}}
        norms = {"image": 1.0, "audio": 2.0}
        buf.add_epoch(0, {"total": 1.0}, {k: subsets[k] for k in order(list(subsets))}, 0.6,
                      {k: norms[k] for k in order(list(norms))}, {k: norms[k] for k in order(list(norms))}, (), (),
                      True, "accuracy")
        panel.redraw(force=True)
        return panel.curve_colours()

    live = colours(lambda keys: keys)
    stored = colours(sorted)
    assert live == stored
    assert live["norm:Z:image"] != live["norm:Z:audio"]


def test_a_comparison_from_the_wizard_runs_queued_and_shows_paired_differences(qtbot, make_window, settings, tiny):
    settings.setValue("wizard/last_config", tiny().to_json())
    w = make_window()
    wiz = w.new_training()
    qtbot.waitUntil(lambda: not wiz.page_dataset.is_loading and wiz.page_dataset.info is not None, timeout=20_000)
    wiz.next()
    m = wiz.page_method
    m.compare_box.setChecked(True)
    for name, cb in m.compare_checks.items():  # robult (selected above) against supervised only, 2 seeds
        cb.setChecked(name == "supervised")
    m.spin_seeds.setValue(2)
    assert m.compared_methods() == ["robult", "supervised"]
    for _ in range(4):
        wiz.next()
    wiz.accept()
    qtbot.waitUntil(lambda: w.state.comparison_done != "" and not w.controller.is_running, timeout=4 * RUN_TIMEOUT)
    rows = sorted(w.store.list_runs(), key=lambda r: r.id)
    assert [(r.method, r.seed, r.status) for r in rows] == [("robult", 0, FINISHED), ("supervised", 0, FINISHED),
                                                            ("robult", 1, FINISHED), ("supervised", 1, FINISHED)]
    assert len({r.comparison for r in rows}) == 1
    assert rows[1].name == "pid-synth · 10% labels · supervised · seed 0"  # no other method's name in it
    recs = [w.store.run_record(r.id) for r in rows]
    assert recs[0]["labeled_indices"] == recs[1]["labeled_indices"] != recs[2]["labeled_indices"]  # per seed
    w.tabs.setCurrentWidget(w.sessions_panel)
    qtbot.waitUntil(lambda: w.sessions_panel.comparison_summary is not None, timeout=10_000)
    s = w.sessions_panel.comparison_summary
    assert [x.method for x in s.methods] == ["robult", "supervised"] and s.differences[0].n == 2
    assert "robult − supervised" in w.sessions_panel.comparison_label.text()


def test_closing_mid_comparison_keeps_the_finished_runs_and_starts_no_other(qtbot, make_window, tiny, store):
    from app.core.comparison import comparison_configs
    w = make_window(store=store)
    items = comparison_configs(tiny(**{"train.epochs": 2}), ["supervised", "robult"], 1)
    items[1] = (items[1][0].replace(**{"train.epochs": 200}), items[1][1])  # the second one is still training
    w.start_comparison(items)
    qtbot.waitUntil(lambda: len(store.list_runs()) == 2 and w.buffers.global_step > 0, timeout=2 * RUN_TIMEOUT)
    w.run.queue.append(items[0])  # one more queued: it must not start while the window closes
    w.close()
    assert not w.controller.is_running
    rows = sorted(store.list_runs(), key=lambda r: r.id)
    assert [(r.method, r.status) for r in rows] == [("supervised", FINISHED), ("robult", STOPPED)]


def test_the_status_bar_names_the_dataset_of_the_current_model_not_the_default(qtbot, make_window):
    """It used to say the default dataset ("Dataset: av-digits …") whatever was being trained or inspected."""
    import torch

    from app.core.state import LoadedModel
    from robult_engine.config import RunConfig
    from robult_engine.data.feature_synth import make_feature_synth
    from robult_engine.models import build_model
    w = make_window()  # opened on pid-synth
    qtbot.waitUntil(lambda: "pid-synth (m0, m1, m2" in w.dataset_label.text(), timeout=20_000)
    bundle = make_feature_synth(n_train=60, dim=8, labels=3)
    cfg = RunConfig().replace(**{"data.dataset": "feature-synth"})
    model = build_model(cfg.model, bundle.info).eval()
    w.set_current_model(LoadedModel(model, cfg, bundle.info, "x.pt", None, torch.zeros(0, dtype=torch.long)))
    assert w.dataset_label.text() == "Dataset: feature-synth (a, b; multi-label)"
