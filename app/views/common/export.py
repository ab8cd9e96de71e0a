"""Plot exports: PNG and SVG of a pyqtgraph view (the tables go through app/core/analysis/tables.py).

PNG goes through pyqtgraph's ImageExporter. SVG tries pyqtgraph's SVGExporter first; with Qt ≥ 6.8 its
post-processing chokes on the closed paths QSvgGenerator now writes ("M… Z", pyqtgraph issues #3485/#3495),
so it falls back to rendering the view straight into a `QSvgGenerator` (still vector, just without
pyqtgraph's coordinate clean-up). Every writer writes to a temporary name and renames, so a failed export never
leaves a half-written file.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyqtgraph as pg
import pyqtgraph.exporters as pg_exporters
from PySide6.QtCore import QRect, QSize
from PySide6.QtGui import QPainter
from PySide6.QtSvg import QSvgGenerator

from app.core.analysis.tables import atomic_target, safe_name


def export_png(view: pg.GraphicsView, path: str | os.PathLike, width: int | None = None) -> Path:
    path = Path(path)
    tmp = atomic_target(path)
    try:
        item = view.getPlotItem() if hasattr(view, "getPlotItem") else view.scene()
        exp = pg_exporters.ImageExporter(item)
        w = int(width or max(640, view.width() * 2))
        exp.parameters()["width"] = w
        exp.export(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _qt_svg(view: pg.GraphicsView, path: Path, title: str) -> None:
    size = view.size()
    if size.width() < 10 or size.height() < 10:
        size = QSize(800, 500)
        view.resize(size)
    gen = QSvgGenerator()
    gen.setFileName(str(path))
    gen.setSize(size)
    gen.setViewBox(QRect(0, 0, size.width(), size.height()))
    gen.setTitle(title)
    gen.setDescription("Robult Studio explorer plot")
    painter = QPainter(gen)
    try:
        view.render(painter)
    finally:
        painter.end()


def export_svg(view: pg.GraphicsView, path: str | os.PathLike, title: str = "") -> Path:
    path = Path(path)
    tmp = atomic_target(path)
    try:
        try:
            item = view.getPlotItem() if hasattr(view, "getPlotItem") else view.scene()
            pg_exporters.SVGExporter(item).export(str(tmp))
        except Exception:  # noqa: BLE001 - pyqtgraph's parser vs. newer Qt SVG output; see the module docstring
            _qt_svg(view, tmp, title or path.stem)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def export_plot(view: pg.GraphicsView, folder: str | os.PathLike, name: str) -> list[Path]:
    """`<folder>/<name>.png` and `.svg`."""
    folder = Path(folder)
    base = safe_name(name)
    return [export_png(view, folder / f"{base}.png"), export_svg(view, folder / f"{base}.svg", name)]
