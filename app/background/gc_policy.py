"""The app's garbage-collection policy: cycles are collected on the GUI thread only.

Installed once, by the entry points (`app.main.main` and the `python -m` mains of the panels), never as a
side effect of importing or constructing something.

Why it is needed: CPython starts a cyclic collection on whichever thread crosses the allocation threshold.
The trainer's Python loop allocates a lot, so most collections would start on the training thread (or a pool
thread) and free the dead Qt wrappers that sit in reference cycles there (discarded widgets, pyqtgraph
items). Their C++ destructors then take Qt's signal/slot locks off the GUI thread while asking for the GIL,
and deadlock against the GUI thread (seen: `QObject::~QObject` of a QAction on the GUI thread waiting for a
mutex held by the training thread, which waited for the GIL inside `gc_collect_main`). With automatic
collection off, a 20 ms QTimer on the GUI thread collects instead, following Python's own thresholds for
generations 0 and 1 (often enough that each collection finds few young objects: with a 0.1 s timer one took
up to 73 ms while a run trained, with 20 ms at most 25 ms; docs/app.md); a full collection (which walks every object of the process: torch, numpy, pyqtgraph…)
runs at most every `FULL_GC_EVERY_S`, and the objects alive once the app is up are frozen (`gc.freeze`), so
a full collection only walks what came later. `benchmarks/gui_stall.py --gc-policy off` measures the app
without it (docs/app.md has the figures).
"""
from __future__ import annotations

import gc
import time

FULL_GC_EVERY_S = 60.0  # a full (generation 2) collection at most this often

_INSTALLED = None


def install(interval_s: float = 0.02) -> bool:
    """Switch automatic collection off and collect from a QTimer on the GUI thread (call on the GUI thread,
    after the QApplication exists, before any worker thread starts). Idempotent; returns True the first time."""
    global _INSTALLED
    if _INSTALLED is not None:
        return False
    from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Slot

    app = QCoreApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        raise RuntimeError("gc_policy.install() must run on the GUI thread of an existing QApplication")

    class _GuiThreadCollector(QObject):
        def __init__(self) -> None:
            super().__init__(app)
            self.last_full = time.monotonic()
            self.timer = QTimer(self)
            self.timer.setInterval(int(interval_s * 1000))
            self.timer.timeout.connect(self._on_timer_timeout)
            self.timer.start()

        @Slot()
        def _on_timer_timeout(self) -> None:
            c0, c1, c2 = gc.get_count()
            t0, t1, t2 = gc.get_threshold()
            if c0 <= t0:
                return
            generation = 0
            if c1 > t1:
                generation = 1
                if c2 > t2 and time.monotonic() - self.last_full >= FULL_GC_EVERY_S:
                    generation = 2
                    self.last_full = time.monotonic()
            gc.collect(generation)

    gc.collect()
    gc.freeze()  # start-up objects: long-lived, never garbage; collections no longer walk them
    gc.disable()
    _INSTALLED = _GuiThreadCollector()
    return True


def installed() -> bool:
    return _INSTALLED is not None
