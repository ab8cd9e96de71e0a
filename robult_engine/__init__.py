"""Robult engine: the method, baselines and ablations, datasets, training, evaluation (PyTorch only, no Qt)."""
from __future__ import annotations

from .paths import source_checkout


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its single source); in a source checkout that
    was never installed, the version written in its pyproject.toml; else "0+unknown"."""
    from importlib import metadata
    try:
        return metadata.version("robult-studio")
    except metadata.PackageNotFoundError:
        pass
    root = source_checkout()
    if root is not None and (root / "pyproject.toml").is_file():
        import tomllib
        try:
            return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            pass
    return "0+unknown"


__version__ = _version()
