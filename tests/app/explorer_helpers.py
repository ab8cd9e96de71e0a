"""Helpers shared by the explorer's UI tests (imported by test_explorer*.py; pytest puts this folder on sys.path)."""
from __future__ import annotations

import numpy as np

WAIT = 30_000


def bar_heights(bars) -> np.ndarray:
    return np.asarray(bars.opts["height"], dtype=float)


def dispose(qtbot, *widgets):
    """Shut a panel down and delete it now, collecting its reference cycles on this (the GUI) thread."""
    import gc

    import shiboken6
    for w in widgets:
        if not shiboken6.isValid(w):
            continue  # pytest-qt closed and deleted it already (closeEvent shut it down)
        w.shutdown()
        w.close()
        w.deleteLater()
    qtbot.wait(10)
    gc.collect()


def wait_shown(qtbot, panel, timeout=WAIT):
    """Wait until the panels show the state's newest generation."""
    qtbot.waitUntil(lambda: panel.inspection is not None and panel.shown_generation == panel.state.generation,
                    timeout=timeout)


def show_explorer(qtbot, loaded_model, timeout=WAIT):
    """A standalone ExplorerPanel, shown at 1300×850, on `loaded_model`, once its first sample is on screen."""
    from app.views.explorer.explorer_panel import ExplorerPanel
    panel = ExplorerPanel()
    qtbot.addWidget(panel)
    panel.resize(1300, 850)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_model(loaded_model)
    wait_shown(qtbot, panel, timeout=timeout)
    return panel
