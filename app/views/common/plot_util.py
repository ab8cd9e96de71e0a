"""Small pyqtgraph helpers shared by the window's panels and the explorer (Qt GUI thread only).

- `no_si_prefix`: tick values as they are.
- `show_message` / `clear_message` / `plot_message`: a plot without data shows a short centred message (word
  wrapped, inside the plot, so an export shows it too) instead of meaningless axes and an empty legend.
- `fit_title`: a plot title elided to the plot's width, the full title in its tooltip (a long pyqtgraph title
  otherwise widens the plot beyond its widget and both are clipped).
"""
from __future__ import annotations

import html

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QTextOption
from PySide6.QtWidgets import QGraphicsTextItem

AXES = ("left", "bottom", "top", "right")
MESSAGE_COLOUR = "#606060"


def no_si_prefix(axis: pg.AxisItem) -> None:
    """Tick values as they are: no "(x0.001)" rescaling of small values such as an accuracy of 0.3.
    (pyqtgraph 0.14 ignores enableAutoSIPrefix(False) on axes without units; an empty set of enabling ranges
    turns the rescaling off.)"""
    axis.enableAutoSIPrefix(False)
    if hasattr(axis, "setSIPrefixEnableRanges"):
        axis.setSIPrefixEnableRanges(())


def _plot_item(plot) -> pg.PlotItem:
    return plot.getPlotItem() if hasattr(plot, "getPlotItem") else plot


# --- an empty plot's message -----------------------------------------------------------------------------
class PlotMessage(QGraphicsTextItem):
    """The centred, word-wrapped message of a plot without data (a child of the PlotItem, kept over the middle
    of its view box whatever the plot's size)."""

    def __init__(self, plot_item: pg.PlotItem) -> None:
        super().__init__(plot_item)
        self.plot_item = plot_item
        self.setDefaultTextColor(QColor(MESSAGE_COLOUR))
        f = QFont(self.font())
        f.setPointSizeF(max(8.0, f.pointSizeF()))
        self.setFont(f)
        opt = QTextOption(Qt.AlignmentFlag.AlignHCenter)
        opt.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.document().setDefaultTextOption(opt)
        self.setZValue(1000)
        plot_item.vb.sigResized.connect(self.place)
        plot_item.geometryChanged.connect(self.place)

    def set_message(self, text: str) -> None:
        self.setPlainText(text)
        self.place()

    def place(self, *_args) -> None:
        r = self.plot_item.vb.geometry()  # in the PlotItem's coordinates
        if r.width() <= 0 or r.height() <= 0:
            r = self.plot_item.rect()
        self.setTextWidth(max(40.0, r.width() - 16.0))
        br = self.boundingRect()
        self.setPos(r.center().x() - br.width() / 2, r.center().y() - br.height() / 2)


def show_message(plot, text: str, *, hide=()) -> None:
    """Show `text` centred in the plot and hide its axes (and their grid), its legend and the `hide` items (a
    colour bar, a note); `clear_message` brings back what was shown. Calling it again only changes the text."""
    p = _plot_item(plot)
    state = getattr(p, "_empty_state", None)
    if state is None:
        axes = [name for name in AXES if p.getAxis(name).isVisible()]
        for name in axes:
            p.hideAxis(name)
        legend = p.legend
        legend_shown = legend is not None and legend.isVisible()
        if legend is not None:
            legend.setVisible(False)
        items = [(it, it.isVisible()) for it in hide]
        for it, _ in items:
            it.setVisible(False)
        msg = getattr(p, "_empty_message", None)
        if msg is None:
            msg = PlotMessage(p)
            p._empty_message = msg
        state = p._empty_state = {"axes": axes, "legend": legend_shown, "items": items}
    else:
        for it in hide:  # an item that was not hidden by the first call
            if all(it is not h for h, _ in state["items"]):
                state["items"].append((it, it.isVisible()))
                it.setVisible(False)
    msg = p._empty_message
    if msg.toPlainText() != text:
        msg.set_message(text)
    msg.setVisible(True)
    _refit_title(p)


def clear_message(plot) -> None:
    """Undo `show_message`: the axes, legend and items it hid are shown again, the message hidden."""
    p = _plot_item(plot)
    state = getattr(p, "_empty_state", None)
    if state is None:
        return
    p._empty_state = None
    for name in state["axes"]:
        p.showAxis(name)
    if p.legend is not None and state["legend"]:
        p.legend.setVisible(True)
    for it, shown in state["items"]:
        it.setVisible(shown)
    p._empty_message.setPlainText("")
    p._empty_message.setVisible(False)
    _refit_title(p)


def plot_message(plot) -> str:
    """The message a plot shows for want of data ("" when it shows data)."""
    p = _plot_item(plot)
    if getattr(p, "_empty_state", None) is None:
        return ""
    return p._empty_message.toPlainText()


def message_item(plot) -> PlotMessage | None:
    """The plot's message item (None before a message was ever shown)."""
    return getattr(_plot_item(plot), "_empty_message", None)


# --- a title that fits ------------------------------------------------------------------------------------
class _TitleFitter(QObject):
    """Elides the plot's title to the widget's width before pyqtgraph lays the plot out (a resize event of the
    PlotWidget), so the title never widens the plot beyond its widget."""

    def __init__(self, widget: pg.PlotWidget) -> None:
        super().__init__(widget)
        self.widget = widget
        self.text = ""
        self.shown = ""
        self.args: dict = {}
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        if obj is self.widget and event.type() == QEvent.Type.Resize:
            self.apply(event.size().width())
        return False

    def apply(self, width: int | None = None) -> None:
        """Elide the title to `width` (the widget's new width, from its resize event) or to the widget's width
        now; then the plot is laid out again in the widget (pyqtgraph only does that when the widget resizes)."""
        p = self.widget.getPlotItem()
        resizing = width is not None
        width = self.widget.width() if width is None else width
        label = p.titleLabel
        f = QFont(label.item.font())
        size = str(self.args.get("size", ""))
        if size.endswith("pt"):
            f.setPointSizeF(float(size[:-2]))
        if self.args.get("bold"):
            f.setBold(True)
        fm = QFontMetricsF(f)
        # the title sits over the view box only: what the other columns (axes, a colour bar) need comes off, and
        # the text item's margins
        others = max(0.0, p.effectiveSizeHint(Qt.SizeHint.MinimumSize).width() - label.minimumWidth())
        avail = max(30.0, width - others - 12.0)
        shown = fm.elidedText(self.text, Qt.TextElideMode.ElideRight, avail)
        changed = shown != self.shown or label.text != html.escape(shown)
        if changed:
            p.setTitle(html.escape(shown), **self.args)
        label.setToolTip(self.text if shown != self.text else "")
        self.shown = shown
        if (changed or p.width() > width + 0.5) and not resizing and not getattr(self.widget, "closed", False):
            pg.GraphicsView.setRange(self.widget, self.widget.range, padding=0, disableAutoPixel=False)


def _refit_title(p: pg.PlotItem) -> None:
    """The axes beside the title came or went: the title's room changed."""
    fitter = getattr(p, "_title_fitter", None)
    if fitter is not None:
        fitter.apply()


def fit_title(plot: pg.PlotWidget, text: str, **args) -> None:
    """Set the plot's title (plain text), elided with "…" to the widget's width, the full title in its tooltip;
    the title follows the widget's size. `args`: pyqtgraph's title options (size, color, bold)."""
    fitter = getattr(plot, "_title_fitter", None)
    if fitter is None:
        fitter = _TitleFitter(plot)
        plot._title_fitter = fitter
        plot.getPlotItem()._title_fitter = fitter
    elif fitter.text == text and fitter.args == args:
        return
    fitter.text = text
    fitter.args = dict(args)
    fitter.shown = None  # set the title again, with these options
    fitter.apply()


def title_text(plot: pg.PlotWidget) -> tuple[str, str]:
    """(the full title, the title shown) of a plot titled with `fit_title`."""
    fitter = getattr(plot, "_title_fitter", None)
    if fitter is None:
        t = plot.getPlotItem().titleLabel.text
        return t, t
    return fitter.text, fitter.shown
