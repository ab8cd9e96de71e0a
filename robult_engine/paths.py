"""Where Robult Studio keeps its files: the dataset cache and the shipped assets (icon, licences, .desktop).

    cache_dir()                      -> $ROBULT_CACHE_DIR, else <checkout>/assets/cache, else the user cache dir
    asset_path("icons/robult-studio.svg")  -> the shipped file, in a source checkout or an installed wheel

One function decides the cache location for every built-in dataset, so a source checkout keeps its cache in
the repository (git-ignored) and a `pip install` never writes inside site-packages. Everything is read at
call time (tests and users change `$ROBULT_CACHE_DIR` while the process runs).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent  # .../robult_engine
CACHE_ENV = "ROBULT_CACHE_DIR"
APP_DIR_NAME = "RobultStudio"  # the same folder name the app uses for its user data (app/sessions.py)


def source_checkout() -> Path | None:
    """The repository root when the package runs from a source checkout (a pyproject.toml or .git beside
    the package folder), else None (an installed wheel: the package sits in site-packages)."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() or (root / ".git").exists():
        return root
    return None


def cache_dir() -> Path:
    """Folder of the built-in dataset caches (AV-Digits, and any other dataset the engine builds itself).

    `$ROBULT_CACHE_DIR` when set; else `<checkout>/assets/cache` when run from a source checkout; else the
    platform's user cache directory (platformdirs: e.g. ~/.cache/RobultStudio on Linux). Not created here.
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    root = source_checkout()
    if root is not None:
        return root / "assets" / "cache"
    from platformdirs import user_cache_path
    return user_cache_path(APP_DIR_NAME, appauthor=False)


def assets_dir() -> Path:
    """The shipped assets: `robult_engine/assets/` inside an installed wheel (package data, see setup.py),
    `<checkout>/assets/` in a source checkout."""
    inside = PACKAGE_DIR / "assets"
    if inside.is_dir():
        return inside
    return PACKAGE_DIR.parent / "assets"


def asset_path(relative: str) -> Path:
    """A shipped asset by its path under assets/, e.g. "icons/robult-studio.svg", "AV-DIGITS-LICENSE.md",
    "robult-studio.desktop", "THIRD-PARTY-NOTICES.md". The path may not exist if the file is not shipped."""
    return assets_dir() / relative
