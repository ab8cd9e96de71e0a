"""Robult Studio desktop app (PySide6 + pyqtgraph) over `robult_engine` (DESIGN.md §3).

Layout:
    main.py          entry point: arguments, settings, the session database, the main window
    main_window.py   MainWindow: menus, tabs, the current model, the dataset cache; the explorer plugs in here
    state.py         Qt-free state: SessionState, LoadedModel, TrainingBuffers (what the panels draw)
    sessions.py      SessionStore: runs, epochs, inspections and UI state in SQLite (sqlite-utils + migrations)
    controller.py    TrainingController + TrainingWorker (a QObject on a QThread) and one-shot pool jobs
    wizard.py        the training wizard
    panels/          TrainingPanel (live curves), SessionsPanel (the runs table)
"""
from __future__ import annotations

import sys

__all__ = ["protect_none"]


def protect_none() -> bool:
    """Guard against a PySide6 6.12 binding bug on CPython < 3.12: a Qt method returning void hands back `None`
    without a new reference, so each call lowers None's reference count by one (harmless where None is
    immortal, 3.12+). A window that redraws plots reaches zero within minutes and the process aborts with
    "Fatal Python error: none_dealloc" (10,000 `QLabel.setText` calls are enough). Giving None a huge
    reference count makes it effectively immortal, as in 3.12. Process-wide, idempotent (the explorer applies
    the same guard), and a no-op on Python >= 3.12. Returns True when the guard is in place."""
    if sys.version_info >= (3, 12):
        return False
    import ctypes
    ref = ctypes.c_ssize_t.from_address(id(None))  # ob_refcnt is the first field of every PyObject
    if ref.value < 1 << 40:
        ref.value += 1 << 40
    return True


protect_none()  # before any Qt object exists: every entry point imports the `app` package first
