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
