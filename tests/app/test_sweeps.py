"""The Sweeps tab as a user drives it: a sweep started from the dialog runs in the background, is stored cell by
cell, survives closing the window, can be cancelled and resumed, equals the CLI's numbers for the same seeds, and
a CLI sweep.json opens in it; plus the Qt-free store (app/core/sweeps.py)."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.core.sessions import SessionStore
from app.core.sweeps import (SWEEP_CANCELLED, SWEEP_DONE, SWEEP_IMPORTED, SWEEP_INTERRUPTED, SweepFileError,
                             SweepRequest, SweepStore)
from robult_engine.config import ConfigError
from robult_engine.sweep import Sweep


METHODS = ("robult", "supervised")


def engine_sweep(base, out, fractions=(0.1,), seeds=2, missing=("mcar:0,0.5",), mask_seed=0) -> dict:
    """What `robult sweep` computes for the same request (in this process)."""
    sw = Sweep(base, list(METHODS), list(fractions), out, seeds=seeds, missing=list(missing), mask_seed=mask_seed)
    assert sw.run_serial() is True
    return sw.finish(print_tables=False)


def assert_same_cells(res, payload) -> None:
    for lf in res.label_fractions:
        for lab in res.missing:
            for m in res.methods:
                want = payload["cells"][f"{lf:g}"][lab]["methods"][m]
                mean, sd, n = res.cell(lf, lab, m)
                assert n == len(want["seeds"])
                assert mean == pytest.approx(want["mean"], abs=1e-9), (lf, lab, m)
                assert sd == pytest.approx(want["std"], abs=1e-9), (lf, lab, m)


@pytest.fixture
def tiny_window(make_window, settings, tiny):
    settings.setValue("wizard/last_config", tiny(**{"train.epochs": 2}).to_json())

    def make(**kw):
        w = make_window(**kw)
        w.tabs.setCurrentWidget(w.sweeps_panel)
        return w
    return make


def fill_dialog(dlg, fractions="0.1", rates="0,0.5", seeds=2) -> None:
    dlg.set_methods(METHODS)
    dlg.fractions.setText(fractions)
    dlg.mechanism.setCurrentText("mcar")
    dlg.rates.setText(rates)
    dlg.seeds.setValue(seeds)


def start_and_wait_for_a_run(qtbot, w):
    """Start the dialog's sweep (robult + supervised, 1 label fraction, 2 seeds) and wait for its first run;
    returns (sweep id, request)."""
    dlg = w.sweeps_panel.new_sweep()
    fill_dialog(dlg)
    req = dlg.request()
    dlg.accept()
    sid = w.sweeps_panel.job_sweep_id
    qtbot.waitUntil(lambda: SweepStore(w.store).get(sid).runs_done >= 1, timeout=240_000)
    return sid, req


# --- the store (no Qt) ------------------------------------------------------------------------------------


def test_the_store_keeps_every_cell_and_computes_the_engines_statistics(store):
    sweeps = SweepStore(store)
    sid = sweeps.create(name="s", dataset="pid-synth", metric="accuracy", methods=["robult", "supervised"],
                        label_fractions=[0.05, 0.2], missing=["mcar:0", "mcar:0.5"], seeds=2, mask_seed=3,
                        config={}, out_dir="", runs_total=8, rates={"mcar:0": 0.0, "mcar:0.5": 0.5},
                        realised={"mcar:0": 0.0, "mcar:0.5": 0.4})
    vals = {("robult", 0): (0.9, 0.8), ("robult", 1): (0.7, 0.6), ("supervised", 0): (0.5, 0.3),
            ("supervised", 1): (0.6, 0.2)}
    for (m, seed), (a, b) in vals.items():
        sweeps.add_run(sid, 0.05, m, seed, {"mcar:0": {"accuracy": a}, "mcar:0.5": {"accuracy": b}}, "accuracy")
    sweeps.add_run(sid, 0.05, "robult", 1, {"mcar:0": {"accuracy": 0.75}, "mcar:0.5": {"accuracy": 0.6}},
                   "accuracy")  # a second try of the same run replaces the first
    res = sweeps.get(sid)
    assert res.runs_done == 4 and res.runs_total == 8 and res.mask_seed == 3
    mean, sd, n = res.cell(0.05, "mcar:0", "robult")
    assert (mean, n) == (pytest.approx(0.825), 2) and sd == pytest.approx(abs(0.9 - 0.75) / math.sqrt(2))
    assert math.isnan(res.cell(0.2, "mcar:0", "robult")[0])  # nothing finished there yet
    grid_mean, _ = res.grid("supervised")
    assert grid_mean[0] == pytest.approx([0.55, 0.25]) and all(math.isnan(v) for v in grid_mean[1])
    d = res.paired(0.05, "mcar:0.5", "supervised")  # robult minus supervised, seed by seed: 0.5 and 0.4
    assert d["mean"] == pytest.approx(0.45) and d["wins"] == 2 and d["n"] == 2
    rows = res.csv_rows()
    assert len(rows) == 2 * 2 * 2 and res.csv_header()[-2:] == ["seed0", "seed1"]
    first = rows[0]
    assert first[:5] == ["0.05", "mcar:0", "0", "0.000000", "robult"] and first[-2:] == ["0.900000", "0.750000"]
    assert [r.id for r in sweeps.list()] == [sid] and sweeps.list()[0].cells == {}
    sweeps.delete(sid)
    assert sweeps.get(sid) is None
    assert store.db.execute("SELECT count(*) FROM sweep_cells").fetchone()[0] == 0


def test_a_cli_sweep_json_opens_with_the_same_numbers(store, tmp_path, tiny):
    base = tiny(**{"train.epochs": 1})
    payload = engine_sweep(base, tmp_path / "cli", fractions=(0.1, 0.5))
    sid = SweepStore(store).import_sweep_json(tmp_path / "cli" / "sweep.json")
    res = SweepStore(store).get(sid)
    assert res.status == SWEEP_IMPORTED and res.source == "cli" and res.runs_done == res.runs_total == 8
    assert res.missing == ["mcar:0", "mcar:0.5"] and res.realised == pytest.approx(payload["realised_missing"])
    assert_same_cells(res, payload)
    with open(tmp_path / "cli" / "sweep.csv") as f:
        engine_rows = list(csv.reader(f))
    assert engine_rows[0] == res.csv_header()
    assert engine_rows[1:] == res.csv_rows()  # the app's CSV export is the engine's sweep.csv


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a JSON file"),
    (json.dumps({"dataset": "x"}), "not a sweep written by `robult sweep` (it lacks methods"),
    (json.dumps({"dataset": "x", "methods": ["robult"], "label_fractions": [0.1], "missing": ["mcar:0"],
                 "seeds": 1, "metric": "accuracy", "runs": {"0.1": {"robult": [{"seed": 0, "missing": {}}]}}}),
     "has no result under mcar:0"),
    (json.dumps({"dataset": "x", "methods": ["robult"], "label_fractions": [0.1], "missing": ["mcar:0"],
                 "seeds": 1, "metric": "accuracy", "runs": {}}), "the sweep's runs are malformed"),
])
def test_bad_sweep_files_name_the_file_and_the_problem(store, tmp_path, content, message):
    path = tmp_path / "sweep.json"
    path.write_text(content)
    with pytest.raises(SweepFileError, match="sweep.json: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        SweepStore(store).import_sweep_json(path)
    assert SweepStore(store).list() == []


def test_a_request_with_bad_values_says_which_field(tiny):
    base = tiny()
    with pytest.raises(ConfigError, match="Missing rates mcar:0,1: a rate must be in \\[0, 1\\)"):
        SweepRequest(base, METHODS, (0.1,), ("mcar:0,1",)).validate()
    with pytest.raises(ConfigError, match="Label fractions: each must be in \\(0, 1\\]"):
        SweepRequest(base, METHODS, (0.0,), ("mcar:0",)).validate()
    with pytest.raises(ConfigError, match="Methods: choose at least one"):
        SweepRequest(base, (), (0.1,), ("mcar:0",)).validate()
    with pytest.raises(ConfigError, match="unknown mechanism|unknown"):
        SweepRequest(base, METHODS, (0.1,), ("sometimes:0.5",)).validate()


# --- the tab ------------------------------------------------------------------------------------------------


def test_the_dialog_refuses_bad_input_with_a_message(qtbot, tiny_window):
    w = tiny_window()
    dlg = w.sweeps_panel.new_sweep()
    qtbot.addWidget(dlg)
    ok = dlg.buttons.button(dlg.buttons.StandardButton.Ok)
    fill_dialog(dlg)
    assert ok.isEnabled() and dlg.error.text() == "" and "4 trainings" in dlg.summary.text()
    dlg.rates.setText("0,1.2")
    assert not ok.isEnabled() and "fraction of entries missing" in dlg.error.text()
    dlg.rates.setText("0,0.5")
    dlg.fractions.setText("0.1,abc")
    assert not ok.isEnabled() and "Label fractions: 'abc' is not a number" in dlg.error.text()
    dlg.fractions.setText("0.1")
    dlg.set_methods(())
    assert not ok.isEnabled() and "Methods" in dlg.error.text()
    dlg.reject()


def test_a_sweep_from_the_app_equals_the_cli_and_comes_back_after_reopening(qtbot, tiny_window, db_path,
                                                                            tmp_path):
    w = tiny_window()
    panel = w.sweeps_panel
    w.sweeps_panel.act_new.trigger()  # Ctrl+Shift+N
    dlg = panel.dialog
    fill_dialog(dlg)
    req = dlg.request()
    dlg.accept()
    assert panel.busy and panel.new_btn.isEnabled() and panel.cancel_btn.isEnabled()  # another is queued
    qtbot.waitUntil(lambda: not panel.busy, timeout=240_000)
    res = SweepStore(w.store).get(panel.selected_id())
    assert res.status == SWEEP_DONE and res.runs_done == res.runs_total == 4, res.error
    assert res.metric == "accuracy" and 0.3 < res.realised["mcar:0.5"] < 0.5
    payload = engine_sweep(req.base, tmp_path / "cli")  # the CLI's computation for the same seeds
    assert_same_cells(res, payload)
    shown = panel.plots.heat_items["robult"].image  # rows: label fractions, columns: mask settings
    assert shown[0] == pytest.approx([payload["cells"]["0.1"][lab]["methods"]["robult"]["mean"]
                                      for lab in ("mcar:0", "mcar:0.5")])
    assert ("0.1", "robult") in {(f"{lf:g}", m) for lf, m in panel.plots.curve_items}
    w.close()
    w2 = tiny_window()  # a new window on the same session database
    res2 = SweepStore(w2.store).get(res.id)
    assert res2.status == SWEEP_DONE and res2.cells == res.cells
    assert w2.sweeps_panel.selected_id() == res.id
    assert np.array_equal(w2.sweeps_panel.plots.heat_items["robult"].image, shown)


def test_cancel_keeps_the_finished_runs_and_resume_completes_the_same_sweep(qtbot, tiny_window, tmp_path):
    w = tiny_window()
    panel = w.sweeps_panel
    sid, req = start_and_wait_for_a_run(qtbot, w)
    assert w.act_stop.isEnabled()  # Esc on the Sweeps tab cancels the sweep
    w.act_stop.trigger()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    res = SweepStore(w.store).get(sid)
    assert res.status == SWEEP_CANCELLED and 1 <= res.runs_done < 4
    kept = dict(res.cells)
    assert panel.resume_btn.isEnabled()
    panel.resume_btn.click()
    qtbot.waitUntil(lambda: not panel.busy, timeout=240_000)
    res = SweepStore(w.store).get(sid)
    assert res.status == SWEEP_DONE and res.runs_done == 4
    assert all(res.cells[k][seed] == v for k, by_seed in kept.items() for seed, v in by_seed.items())
    assert_same_cells(res, engine_sweep(req.base, tmp_path / "cli"))


def test_closing_the_window_mid_sweep_keeps_it_resumable(qtbot, tiny_window, dialogs):
    from PySide6.QtWidgets import QMessageBox
    w = tiny_window()
    panel = w.sweeps_panel
    sid, _req = start_and_wait_for_a_run(qtbot, w)
    dialogs.answer = QMessageBox.StandardButton.No
    w.close()  # asks first; No keeps the window and the sweep
    assert any("A sweep is running. Stop it and quit?" in t for _k, t in dialogs.asked)
    assert w.isVisible() and panel.busy
    dialogs.answer = QMessageBox.StandardButton.Yes
    w.close()  # stops the sweep within a step; the finished runs are in the database
    assert not panel.busy
    w2 = tiny_window()
    res = SweepStore(w2.store).get(sid)
    assert res.status == SWEEP_INTERRUPTED and res.runs_done >= 1 and "Resume" in res.error
    w2.sweeps_panel.refresh(select=sid)
    assert w2.sweeps_panel.resume_btn.isEnabled()


def test_export_writes_the_plots_and_the_engines_csv(qtbot, tiny_window, dialogs, tmp_path, tiny):
    w = tiny_window()
    base = tiny(**{"train.epochs": 1})
    engine_sweep(base, tmp_path / "cli")
    dialogs.open_file = str(tmp_path / "cli" / "sweep.json")
    sid = w.sweeps_panel.open_sweep_file()
    assert sid is not None and w.sweeps_panel.selected_id() == sid
    dialogs.open_dir = str(tmp_path / "out")
    folder = w.sweeps_panel.export_selected()
    files = sorted(p.name for p in folder.iterdir())
    assert [f for f in files if f.endswith(".png")] == [f"sweep-{sid}-pid-synth-curves.png",
                                                         f"sweep-{sid}-pid-synth-heatmaps.png"]
    assert len([f for f in files if f.endswith(".svg")]) == 2
    for f in files:
        if f.endswith(".png"):
            assert (folder / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(folder / f"sweep-{sid}-pid-synth.csv") as a, open(tmp_path / "cli" / "sweep.csv") as b:
        assert list(csv.reader(a)) == list(csv.reader(b))


def test_a_bad_sweep_file_is_refused_and_the_app_keeps_running(qtbot, tiny_window, dialogs, tmp_path):
    w = tiny_window()
    bad = tmp_path / "broken.json"
    bad.write_text("{oops")
    dialogs.open_file = str(bad)
    assert w.sweeps_panel.open_sweep_file() is None
    assert any(kind == "warning" and "broken.json: not a JSON file" in text for kind, text in dialogs.asked)
    assert SweepStore(w.store).list() == [] and w.isVisible()


def test_ctrl_6_shows_the_sweeps_tab_after_the_explorer_tabs(qtbot, tiny_window):
    from PySide6.QtGui import QKeySequence
    w = tiny_window()
    titles = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert titles.index("Sweeps") > titles.index("Latent space")  # Ctrl+3 … Ctrl+5 stay the explorer's
    assert w.act_sweeps_tab.shortcut() == QKeySequence("Ctrl+6")
    w.tabs.setCurrentIndex(0)
    w.act_sweeps_tab.trigger()
    assert w.tabs.currentWidget() is w.sweeps_panel
    assert w.sweeps_panel.act_new in w.m_train.actions()
    assert w.sweeps_panel.act_new.shortcut() == QKeySequence("Ctrl+Shift+N")


def test_the_same_sweep_file_opened_twice_is_one_sweep(store, tmp_path, tiny):
    engine_sweep(tiny(**{"train.epochs": 1}), tmp_path / "cli", seeds=1)
    sweeps = SweepStore(store)
    first = sweeps.import_sweep_json(tmp_path / "cli" / "sweep.json")
    assert sweeps.import_sweep_json(tmp_path / "cli" / "sweep.json") == first and len(sweeps.list()) == 1


def test_a_sweep_and_a_training_run_never_run_at_once(qtbot, tiny_window, tiny):
    """Two trainers on two threads would share torch's global random generator, so neither would reproduce: a
    training run asked for while a sweep runs waits in the run queue (app/core/run_queue.py) and starts once the
    sweep has ended, and a sweep asked for while a training run goes waits for it."""
    from app.core.run_queue import QUEUED, RUNNING
    w = tiny_window()
    panel = w.sweeps_panel
    dlg = panel.new_sweep()
    fill_dialog(dlg)
    dlg.accept()
    assert panel.busy
    wiz = w.new_training()  # the wizard opens; what it asks for is queued
    assert wiz is not None
    wiz.reject()
    long_run = tiny(**{"train.epochs": 300})  # still training when the next sweep is asked for
    assert w.start_training(long_run, name="queued run") is None and not w.controller.is_running
    assert "Queued at position 1" in w.statusBar().currentMessage()
    (training,) = w.run_queue.queued
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert training.state == RUNNING and w.controller.is_running  # the sweep ended: the training started
    dlg = panel.new_sweep()  # a sweep asked for while the training goes waits for it
    fill_dialog(dlg, seeds=1)
    dlg.accept()
    assert not panel.busy and "Queued at position 1" in w.statusBar().currentMessage()
    (sweep,) = w.run_queue.queued
    assert sweep.state == QUEUED
    w.act_stop.trigger()
    qtbot.waitUntil(lambda: panel.busy, timeout=120_000)
    assert not w.controller.is_running and sweep.state == RUNNING
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)


def test_durable_progress_of_cancelled_work_is_still_delivered(qtbot):
    """A finished run of a cancelled sweep is on disk and must reach the session: progress payloads marked
    durable are delivered after cancel, any other progress is dropped, and the work still ends cancelled."""
    import threading

    from app.background.runner import WorkRunner
    from app.core.sweeps import SweepRunRecorded
    runner = WorkRunner(max_threads=1)
    go, running = threading.Event(), threading.Event()
    got, ended = [], []

    def fn(work):
        running.set()
        go.wait(10)
        work.progress(1, 2, "plain")  # dropped: the work was cancelled meanwhile
        work.emit(SweepRunRecorded(0.1, "robult", 0, {"mcar:0": {"accuracy": 1.0}}, 0.5, 0, 1, 2))
        return "result"
    work = runner.start(fn, on_result=ended.append, on_error=ended.append, on_progress=got.append,
                        on_cancelled=lambda p: ended.append("cancelled"))
    assert running.wait(10)
    work.cancel()
    go.set()
    qtbot.waitUntil(lambda: ended == ["cancelled"], timeout=10_000)
    assert [type(p).__name__ for p in got] == ["SweepRunRecorded"]
    runner.shutdown()


def test_resume_after_the_folder_was_deleted_trains_everything_and_keeps_no_stale_cell(qtbot, tiny_window,
                                                                                     tmp_path):
    import shutil
    w = tiny_window()
    panel = w.sweeps_panel
    sid, req = start_and_wait_for_a_run(qtbot, w)
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    shutil.rmtree(SweepStore(w.store).get(sid).out_dir)
    seen = []
    panel.sig_message.connect(lambda text, level: seen.append(text))
    panel.resume_btn.click()
    qtbot.waitUntil(lambda: not panel.busy, timeout=240_000)
    res = SweepStore(w.store).get(sid)
    assert res.status == SWEEP_DONE and res.runs_done == 4
    assert any("no finished run found in its folder" in t for t in seen)
    assert_same_cells(res, engine_sweep(req.base, tmp_path / "cli"))


def test_label_fractions_given_twice_or_equal_to_10_decimals_are_refused(tiny):
    """The store keys a cell by its label fraction rounded to 10 decimals: two fractions that round alike would
    share cells, and a fraction given twice would train every run twice into one folder."""
    from app.views.sweeps import parse_fraction_list
    with pytest.raises(ConfigError, match="Label fractions: 0.1 is given twice"):
        parse_fraction_list("0.1, 0.05,0.1", "Label fractions")
    base = tiny()
    with pytest.raises(ConfigError, match="Label fractions: 0.1 is given twice"):
        SweepRequest(base, METHODS, (0.1, 0.1), ("mcar:0",)).validate()
    with pytest.raises(ConfigError, match="Label fractions: 0.1 and 0.10000000000100001 are the same to 10 "
                                          "decimals"):
        SweepRequest(base, METHODS, (0.1, 0.1 + 1e-12), ("mcar:0",)).validate()
    assert SweepRequest(base, METHODS, (0.5, 0.5000001), ("mcar:0",)).validate().label_fractions == (0.5, 0.5000001)


def test_a_cli_sweep_of_fractions_that_print_alike_opens_with_each_its_own_cells(store, tmp_path, tiny):
    base = tiny(**{"train.epochs": 1, "data.synth_n_train": 60})
    payload = engine_sweep(base, tmp_path / "cli", fractions=(0.5, 0.5000001), seeds=1, missing=("mcar:0",))
    assert list(payload["cells"]) == ["0.5", "0.5000001"]
    res = SweepStore(store).get(SweepStore(store).import_sweep_json(tmp_path / "cli" / "sweep.json"))
    assert res.label_fractions == [0.5, 0.5000001]
    with open(tmp_path / "cli" / "sweep.csv") as f:
        assert list(csv.reader(f))[1:] == res.csv_rows()
    assert [r[0] for r in res.csv_rows()] == ["0.5", "0.5", "0.5000001", "0.5000001"]
    # the two fractions train alike here; mark one run's value to see that each is read from its own cell
    data = json.loads((tmp_path / "cli" / "sweep.json").read_text())
    data["runs"]["0.5000001"]["robult"][0]["missing"]["mcar:0"]["accuracy"] = 0.99
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "sweep.json").write_text(json.dumps(data))
    res = SweepStore(store).get(SweepStore(store).import_sweep_json(tmp_path / "edited" / "sweep.json"))
    assert res.cell(0.5000001, "mcar:0", "robult")[0] == 0.99
    assert res.cell(0.5, "mcar:0", "robult")[0] == payload["cells"]["0.5"]["mcar:0"]["methods"]["robult"]["mean"]


def test_the_sweep_plan_says_1_seed_not_1_seeds():
    from app.views.sweeps import sweep_summary
    assert sweep_summary(2, 2, 1, 1, 1) == ("2 trainings (2 methods × 1 label fraction × 1 seed), each evaluated "
                                            "under 1 mask setting drawn once on the test split.")
    assert "3 seeds" in sweep_summary(18, 2, 3, 3, 4) and "4 mask settings" in sweep_summary(18, 2, 3, 3, 4)
