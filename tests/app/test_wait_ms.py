"""Scripts that wait for background work (the explorer demo's screenshot, the toggle benchmark) wait through
`app.background.runner.wait_ms`, which releases the GIL like the running app's event loop. `QTest.qWait` keeps
the GIL while it polls: a Python worker (a Dataset PID estimate, an inspection) then crawls, and a screenshot
script saw the Dataset PID tab stuck at its first pair for a minute while the app itself finishes in seconds."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from app.background.runner import wait_ms  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _worker_steps_during(wait, ms: int = 300) -> int:
    """How many loop steps a pure-Python worker thread makes while the calling thread runs `wait(ms)`."""
    count, stop = [0], threading.Event()

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    time.sleep(0.02)
    start = count[0]
    wait(ms)
    steps = count[0] - start
    stop.set()
    t.join()
    return steps


def test_wait_ms_lets_a_python_worker_run_as_sleeping_does(qapp):
    # side by side in one run (the machine is shared): the worker's progress during wait_ms against its
    # progress while this thread sleeps, which releases the GIL entirely
    asleep = _worker_steps_during(lambda ms: time.sleep(ms / 1000))
    waiting = _worker_steps_during(wait_ms)
    assert waiting >= 0.4 * asleep, (waiting, asleep)


def test_wait_ms_runs_the_event_loop(qapp):
    from PySide6.QtCore import QTimer
    fired = []
    QTimer.singleShot(10, lambda: fired.append(True))
    t0 = time.perf_counter()
    wait_ms(120)
    assert fired == [True]
    assert time.perf_counter() - t0 >= 0.1


def test_no_script_waits_with_qtest_qwait():
    """The app and its benchmarks never wait for background work with QTest.qWait (see the module docstring)."""
    offenders = [str(p.relative_to(REPO)) for folder in ("app", "benchmarks") for p in (REPO / folder).rglob("*.py")
                 if re.search(r"\bqWait\s*\(", p.read_text(encoding="utf-8"))]
    assert offenders == []
