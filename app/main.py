"""Entry point of the desktop app: `python main.py`, `robult-studio`, or `python -m app.main`.

    robult-studio [--db PATH] [--settings PATH] [--dataset NAME] [--threads N] [--switch-interval S]

--db (or $ROBULT_STUDIO_DB) picks the session database (default: the user data directory, via platformdirs);
--settings an INI file for QSettings (default: the platform's native settings). `torch.set_num_threads` is
set once here, never inside the engine (it is process-wide). Once shown, the window brings back the working
context the last one left in the database (model, dataset, sample, toggles, tab: `MainWindow.restore_context`).
"""
from __future__ import annotations

import argparse
import os
import sys

APP_NAME = "Robult Studio"
ORG_NAME = "Robult"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="robult-studio", description="Robult Studio: train and inspect robust "
                                                                  "multimodal models with missing modalities.")
    p.add_argument("--db", help="session database file (default: $ROBULT_STUDIO_DB, else the user data directory)")
    p.add_argument("--settings", help="INI file for the window settings (default: the platform's settings store)")
    p.add_argument("--dataset", default="av-digits", help="default dataset of the training wizard "
                                                          "(default: av-digits)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for PyTorch (default: all cores but one, so the window stays responsive)")
    p.add_argument("--switch-interval", type=float, default=0.001, metavar="S",
                   help="Python's thread switch interval (default 0.001 s instead of 0.005 s: the GUI thread waits "
                        "less for the GIL while the training thread runs Python code)")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("--quit-after", type=int, default=0, metavar="MS", help=argparse.SUPPRESS)  # smoke tests
    return p.parse_args(argv)


def _version() -> str:
    try:
        from robult_engine import __version__
    except ImportError:
        return "unknown"
    return str(__version__)


def default_threads() -> int:
    """All cores but one: the GUI thread keeps a core, and intra-op threads never spin against it."""
    return max(1, (os.cpu_count() or 1) - 1)


def build(argv: list[str] | None = None):
    """Create (or reuse) the QApplication, open the session database and the main window (not shown).

    Returns (app, window, store). A database that cannot be used becomes an in-memory one, and the window
    shows a notice naming the file (which is left untouched)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch
    torch.set_num_threads(args.threads if args.threads > 0 else default_threads())
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)

    from PySide6.QtCore import QSettings
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from .main_window import ICON_PATH, MainWindow, app_version
    from .core.sessions import default_db_path, open_store

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "robult-studio"])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setApplicationVersion(app_version())
    app.setDesktopFileName("robult-studio")  # assets/robult-studio.desktop: the icon and name desktops show
    if ICON_PATH.exists():
        app.setWindowIcon(QIcon(str(ICON_PATH)))
    settings = (QSettings(args.settings, QSettings.Format.IniFormat) if args.settings
                else QSettings(ORG_NAME, APP_NAME))
    store, problem = open_store(args.db or default_db_path())
    window = MainWindow(store, settings, default_dataset=args.dataset)
    if problem:
        window.add_notice("error", problem)
        print(problem, file=sys.stderr)
    window.quit_after_ms = args.quit_after
    return app, window, store


GUI_MODULES = ("PySide6", "pyqtgraph", "sqlite_utils")  # what the `gui` extra installs


def missing_gui_modules() -> list[str]:
    """The app's own dependencies that are not installed (the engine and `robult` work without them)."""
    import importlib.util
    return [m for m in GUI_MODULES if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    missing = missing_gui_modules()
    if missing:
        print(f"robult-studio: the desktop app needs the 'gui' extra, and {', '.join(missing)} "
              f"{'is' if len(missing) == 1 else 'are'} not installed. Install it with "
              f"pip install 'robult-studio[gui]' (from a checkout: pip install -e '.[gui]'). The engine and the "
              f"`robult` command work without it.", file=sys.stderr)
        return 2
    app, window, store = build(argv)
    from .background import gc_policy
    gc_policy.install()  # cycles collected on the GUI thread only: why, in app/background/gc_policy.py
    window.show()
    if window.quit_after_ms > 0:
        from PySide6.QtCore import QTimer
        QTimer.singleShot(window.quit_after_ms, window.close)
    rc = app.exec()
    store.close()
    return int(rc)


if __name__ == "__main__":
    raise SystemExit(main())
