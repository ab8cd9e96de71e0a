"""Robult Studio desktop app (PySide6 + pyqtgraph) over `robult_engine`. The layout (docs/app.md):

    main.py          entry point: arguments, settings, the session database, the GC policy, the main window
    main_window.py   MainWindow: the table of contents — actions, menus, tabs, and the wiring between them
    core/            Qt-free: SessionState / TrainingBuffers / LoadedModel (state.py), the explorer's state
                     (explorer_state.py), the session store (sessions.py), RunSession (run_session.py),
                     the background-work contract (work.py)
    background/      the Qt side of work off the GUI thread: WorkRunner (runner.py), TrainingController and
                     its worker (training.py), the garbage-collection policy (gc_policy.py)
    views/           one module per view, each runnable alone (`python -m app.views.<view>`): training,
                     sessions, wizard, and the explorer's panels (views/explorer/)
"""
from __future__ import annotations
