"""ModalityToggles: one checkable switch per modality (Alt+1 … Alt+M) and "all on" (Alt+0).

A switch that is off treats the modality as missing: it contributes nothing to the prediction (the mean of
c([U^i, Z^i]) over the modalities on). A modality the sample itself lacks is shown disabled.
Shortcuts are window shortcuts owned by `shortcut_parent` (the explorer panel): Qt keeps a shortcut inactive
while its parent is hidden, so Alt+1 works exactly when the explorer tab is on screen.
Run alone: `python -m app.views.explorer.toggles`.
"""
from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt, Slot
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from app.core.explorer_state import ExplorerState

STYLE = ("QPushButton { padding: 4px 12px; border: 1px solid #8A8A8A; border-radius: 4px; background: #F2F2F2;"
         " color: #606060; }"
         "QPushButton:checked { background: #0072B2; color: white; border-color: #005A8C; font-weight: bold; }"
         "QPushButton:disabled { background: #FAFAFA; color: #B0B0B0; border-style: dashed; }")


class ModalityToggles(QWidget):
    """Renders `ExplorerState` (modalities, enabled, present) and turns a click into `state.set_enabled`.
    It keeps no state of its own: what it shows is always what the state says."""

    def __init__(self, state: ExplorerState, parent: QWidget | None = None,
                 shortcut_parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.explorer_state = state
        self._shortcut_parent = shortcut_parent or self
        self.buttons: list[QPushButton] = []
        self.shortcuts: list[QShortcut] = []
        self.names: tuple[str, ...] = ()
        self.lay = QHBoxLayout(self)
        self.lay.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel("<b>Modalities</b>")
        self.label.setToolTip("Switch modalities off to see how the prediction copes without them")
        self.lay.addWidget(self.label)
        self.all_btn = QPushButton("All on")
        self.all_btn.setToolTip("Switch every modality on (Alt+0)")
        self.all_btn.clicked.connect(self.all_on)
        self._tail = [self.all_btn]
        self.lay.addStretch(1)
        self.lay.addWidget(self.all_btn)
        sc = QShortcut(QKeySequence("Alt+0"), self._shortcut_parent)
        sc.setContext(Qt.ShortcutContext.WindowShortcut)
        sc.activated.connect(self.all_on)
        self._all_shortcut = sc
        state.subscribe(self._on_explorer_state_changed)
        self._on_explorer_state_changed({"modalities"})

    def _on_explorer_state_changed(self, changed: set[str]) -> None:
        st = self.explorer_state
        if "modalities" in changed and st.modality_names != self.names:
            self._build(st.modality_names)
        if changed & {"modalities", "enabled", "present"}:
            self._show(st.enabled, st.present)

    def _build(self, names: tuple[str, ...] | list[str]) -> None:
        for b in self.buttons:
            self.lay.removeWidget(b)
            b.setParent(None)
            b.deleteLater()
        for sc in self.shortcuts:
            sc.setEnabled(False)
            sc.setParent(None)
            sc.deleteLater()
        self.buttons, self.shortcuts = [], []
        self.names = tuple(names)
        compact = len(self.names) > 4  # M = 6 (mfeat): the buttons must fit beside the status text
        for i, name in enumerate(self.names):
            b = QPushButton((f"{i + 1} {name}" if compact else f"{i + 1}  {name}") if i < 9 else name)
            b.setCheckable(True)
            b.setChecked(True)
            b.setStyleSheet(STYLE)
            b.setObjectName(f"toggle_{name}")
            b.setMinimumWidth(b.fontMetrics().horizontalAdvance(b.text()) + (26 if compact else 34))
            key = f"Alt+{i + 1}" if i < 9 else ""
            b.setToolTip(f"Use the {name} modality in the prediction{f' ({key})' if key else ''}.\n"
                         f"Off: {name} is treated as missing — it contributes nothing to the mean of the "
                         f"per-modality logits c([U^i, Z^i]).")
            b.toggled.connect(self._on_button_toggled)
            self.lay.insertWidget(1 + i, b)
            self.buttons.append(b)
            if key:
                sc = QShortcut(QKeySequence(key), self._shortcut_parent)
                sc.setContext(Qt.ShortcutContext.WindowShortcut)
                sc.activated.connect(b.toggle)
                self.shortcuts.append(sc)

    def state(self) -> tuple[bool, ...]:
        return tuple(b.isChecked() for b in self.buttons)

    def _show(self, enabled: tuple[bool, ...], present: tuple[bool, ...] | None) -> None:
        """Show what the state says, without emitting; switches of modalities the sample lacks are disabled."""
        for i, b in enumerate(self.buttons):
            with QSignalBlocker(b):
                b.setChecked(bool(enabled[i]) if i < len(enabled) else True)
            lacks = present is not None and i < len(present) and not present[i]
            b.setEnabled(not lacks)
            if lacks:
                b.setToolTip(f"This sample has no {self.names[i]}: it is missing whatever the switch says.")

    def toggle(self, i: int) -> None:
        self.buttons[i].toggle()

    @Slot()
    def all_on(self) -> None:
        if self.names:
            self.explorer_state.set_enabled((True,) * len(self.names))

    @Slot(bool)
    def _on_button_toggled(self, _checked: bool) -> None:
        # the user clicked: ask the state for the buttons' new combination; the state's listeners (this widget
        # among them) then show it
        self.explorer_state.set_enabled(self.state())


def main() -> int:
    from app.views.common.demo import run_panel_demo

    def fill(p: ModalityToggles) -> None:
        st = p.explorer_state
        st.set_modalities(("image", "audio", "text"))
        st.set_enabled((True, False, True))
        st.set_present((True, True, False))
    return run_panel_demo(lambda: ModalityToggles(ExplorerState()), fill, "Modality toggles", size=(600, 60))


if __name__ == "__main__":
    raise SystemExit(main())
