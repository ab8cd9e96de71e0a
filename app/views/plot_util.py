"""Small pyqtgraph helpers shared by the window's panels and the explorer (Qt GUI thread only)."""
from __future__ import annotations

import pyqtgraph as pg


def no_si_prefix(axis: pg.AxisItem) -> None:
    """Tick values as they are: no "(x0.001)" rescaling of small values such as an accuracy of 0.3.
    (pyqtgraph 0.14 ignores enableAutoSIPrefix(False) on axes without units; an empty set of enabling ranges
    turns the rescaling off.)"""
    axis.enableAutoSIPrefix(False)
    if hasattr(axis, "setSIPrefixEnableRanges"):
        axis.setSIPrefixEnableRanges(())
