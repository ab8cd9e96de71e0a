"""Fixtures of the app tests (pytest-qt, offscreen).

- Qt runs on the offscreen platform (set before anything imports Qt).
- Every test gets a temporary session database path and an INI QSettings file.
- No modal dialog can block a test: QMessageBox's static helpers and QFileDialog are replaced by recorders
  that answer what the test configured (`dialogs.answer`, `dialogs.open_file`, ...).
- A test FAILS when it leaves a training QThread, a pool job or a Python thread running at teardown.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from robult_engine.config import RunConfig  # noqa: E402

APP_TESTS = Path(__file__).resolve().parent
# The offscreen platform plugin warns about a feature it lacks whenever a window is shown.
OFFSCREEN_NOISE = (r"This plugin does not support propagateSizeHints\(\)",)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if APP_TESTS in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.qt_log_ignore(*OFFSCREEN_NOISE))


def tiny_config(**changes) -> RunConfig:
    """A PID-Synth run that trains in seconds on two CPU cores."""
    base = {"data.dataset": "pid-synth", "data.synth_n_train": 200, "data.label_fraction": 0.1,
            "train.epochs": 2, "train.batch_size": 32, "train.labeled_per_batch": 8, "train.patience": 0,
            "train.device": "cpu", "model.d_h": 16, "model.d_z": 8, "model.d_u": 4, "model.d_hidden": 16,
            "model.dropout": 0.0}
    base.update(changes)
    return RunConfig().replace(**base).validate()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread for the app tests: the GUI thread needs a core, and on a busy 2-core machine two
    OpenMP threads spin against each other (a tiny run went from 0.4 s to 20 s)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "data" / "sessions.sqlite"


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings
    s = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    yield s
    s.sync()


@pytest.fixture
def store(db_path):
    from app.core.sessions import SessionStore
    s = SessionStore(db_path)
    yield s
    s.close()


@dataclass
class DialogRecorder:
    """What modal dialogs were asked, and what they answer."""
    answer: object = None  # QMessageBox.question's answer (default: Yes)
    open_file: str = ""  # QFileDialog.getOpenFileName's answer ("" = cancelled)
    open_dir: str = ""  # QFileDialog.getExistingDirectory's answer
    asked: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture(autouse=True)
def dialogs(monkeypatch) -> DialogRecorder:
    from PySide6.QtWidgets import QFileDialog, QMessageBox
    rec = DialogRecorder(answer=QMessageBox.StandardButton.Yes)

    def question(parent, title, text, *args, **kwargs):
        rec.asked.append(("question", f"{title}: {text}"))
        return rec.answer

    def info(kind):
        def f(parent, title, text, *args, **kwargs):
            rec.asked.append((kind, f"{title}: {text}"))
            return QMessageBox.StandardButton.Ok
        return f

    def get_open_file_name(*args, **kwargs):
        rec.asked.append(("open_file", ""))
        return rec.open_file, ""

    def get_existing_directory(*args, **kwargs):
        rec.asked.append(("open_dir", ""))
        return rec.open_dir

    monkeypatch.setattr(QMessageBox, "question", question)
    for kind in ("warning", "critical", "information"):
        monkeypatch.setattr(QMessageBox, kind, info(kind))
    monkeypatch.setattr(QMessageBox, "about", info("about"))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", get_open_file_name)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", get_existing_directory)
    return rec


@pytest.fixture(scope="session", autouse=True)
def gui_thread_gc(qapp):
    """The app's garbage-collection policy, installed once as `app.main.main` does: the tests run the window
    under the same rules as the app (cycles collected on the GUI thread only; why: app/background/gc_policy.py).
    As in the app, the window's modules are imported first, so the policy's freeze takes them in: otherwise the
    full collection after every test walks all of pyqtgraph and the views again."""
    import app.main_window  # noqa: F401
    from app.background import gc_policy
    gc_policy.install()
    yield


@pytest.fixture(autouse=True)
def no_thread_left(request):
    """FAIL the test if it leaves a QThread, a pool job or a Python thread running. Afterwards, collect garbage
    here (no other thread runs now)."""
    import gc
    before = set(threading.enumerate())
    yield
    problems = []
    try:
        from PySide6.QtCore import QThreadPool
    except ImportError:  # pragma: no cover
        return
    from app.background import training as ctl
    if not QThreadPool.globalInstance().waitForDone(15_000):
        problems.append("a QThreadPool job was still running 15 s after the test")
    for t in list(ctl.LIVE_THREADS):
        if t.isRunning():
            problems.append(f"QThread {t.objectName()!r} still running")
            t.quit()
            t.wait(30_000)
    left = [t for t in threading.enumerate()
            if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)]
    for t in left:
        t.join(5)
    left = [t for t in left if t.is_alive()]
    if left:
        problems.append(f"Python threads still running: {[t.name for t in left]}")
    gc.collect()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def make_window(qtbot, db_path, settings):
    """Factory: a MainWindow on the temp database and settings, PID-Synth as default dataset, shown.

    Windows are closed at teardown (a running training is stopped: the close question answers Yes), then
    deleted."""
    from app.main_window import MainWindow
    from app.core.sessions import SessionStore
    made: list = []
    stores: list = []

    def make(store=None, default_dataset: str = "pid-synth", show: bool = True):
        st = store if store is not None else SessionStore(db_path)
        if store is None:
            stores.append(st)
        w = MainWindow(st, settings, default_dataset=default_dataset)
        if show:
            w.show()
            qtbot.waitExposed(w)
        made.append(w)
        return w

    yield make
    import shiboken6
    from app.background.training import wait_for_jobs
    for w in made:
        if not shiboken6.isValid(w):
            continue
        if w.isVisible() or w.controller.is_running:
            w.close()
        w.controller.shutdown()
    wait_for_jobs(15_000)
    for w in made:
        # destroy the window now, while every Python wrapper of it and of its children is intact; left to the
        # garbage collector, a wrapper's state can be cleared before its C++ object (still filtering events)
        if shiboken6.isValid(w):
            shiboken6.delete(w)
    for st in stores:
        st.close()


@pytest.fixture(scope="session")
def train_once(tmp_path_factory):
    """`train_once(cfg)`: the best.pt of `cfg`, trained without the GUI on one torch thread, once per session for
    equal configs (the explorer, explanation and missing-modality tests train the same tiny runs). Session
    fixtures run before the function-scoped `one_torch_thread`: on a busy 2-core machine a tiny run on two
    OpenMP threads took ten times as long. Callers only read the run folders."""
    import torch

    from robult_engine.trainer import Trainer
    done: dict[str, Path] = {}

    def train(cfg: RunConfig) -> Path:
        key = repr(cfg)
        if key not in done:
            out = tmp_path_factory.mktemp(f"trained-{cfg.method}") / "run"
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                final = Trainer(cfg, out_dir=out).run()
            finally:
                torch.set_num_threads(before)
            assert final.checkpoint_path, final
            done[key] = Path(final.checkpoint_path)
        return done[key]
    return train


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A best.pt of a tiny PID-Synth run, trained once per session without the GUI."""
    import torch

    from robult_engine.trainer import Trainer
    out = tmp_path_factory.mktemp("trained") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before the function-scoped one_torch_thread
    try:
        final = Trainer(tiny_config(), out_dir=out).run()
    finally:
        torch.set_num_threads(before)
    assert final.checkpoint_path, final
    return Path(final.checkpoint_path)


@pytest.fixture
def tiny():
    """`tiny(**changes)` builds a seconds-long PID-Synth RunConfig."""
    return tiny_config
