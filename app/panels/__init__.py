"""Panels of the main window: each views one thing and can run alone (`python -m app.panels.<name>`)."""
from .sessions import SessionsPanel
from .training import TrainingPanel

__all__ = ["SessionsPanel", "TrainingPanel"]
