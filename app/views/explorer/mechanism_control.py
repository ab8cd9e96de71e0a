"""MechanismControl: "apply a mechanism" beside the explorer's modality toggles, and the run's training mechanism.

*Draw mask* draws a mask of the chosen mechanism for the sample on screen with the engine's
`robult_engine.missing.draw_mask` and applies it through the explorer's one state object
(`ExplorerState.set_enabled`): the toggles then show the drawn mask and every panel updates as on a click.
The mechanisms are those of `robult eval --missing`: `mcar` (missing completely at random at rate η),
`mnar-value` (per modality, the samples of the split with the weakest signal go first), `mnar-class` (the rate depends on the
sample's class: `0.8/0.1@3+5` is 0.8 for classes 3 and 5, 0.1 for the others) and `exclusive` (one modality
kept). **η is the fraction of modalities MISSING** (η = 0.7: each modality is missing with probability 0.7), as
everywhere in Robult Studio and the engine. The MNAR mechanisms depend on the split (feature norms, labels), so
they are drawn for dataset samples only.

For a dataset sample the mask is row `index` of `draw_mask(split, info, mcar:η, seed)` on the whole split, i.e.
exactly the mask `robult eval --missing mcar:η --mask-seed seed` gives that sample; so it respects the data's own
mask (a modality the sample lacks stays missing) and a sample never loses every modality it has (one is given
back, as in the engine). For the user's own files the same draw runs on a one-row split of what was given.
The mask seed advances after each draw, so the next click draws a new mask; the label names the seed used.

The second line shows how the run was trained with respect to missing modalities: `data.train_missing` (the
mechanism applied to the training split) and `data.train_pool` (AV-Digits' unpaired pool as unlabeled samples).

Run alone: `python -m app.views.explorer.mechanism_control`.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout,
                               QWidget)

from robult_engine.missing import MissingSpecError, draw_mask, mnar_class_spec, parse_missing
from robult_engine.missing_spec import describe_mechanisms, mechanism_names

from app.core.explorer_state import ExplorerState

MECHANISMS = mechanism_names(per_sample=True)  # those a mask can be drawn with for one sample
NEEDS_SPLIT = tuple(m.name for m in describe_mechanisms(per_sample=True) if m.needs_split)  # feature norms, labels
ETA_TIP = ("η = the fraction of modalities MISSING (0 ≤ η < 1): each modality of this sample is missing with "
           "probability η (MCAR, missing completely at random). η = 0.7 removes about 70 % of them. A modality the "
           "sample lacks stays missing, and a sample never loses every modality (one is given back, as in "
           "`robult eval --missing`).")


def training_mechanism(config) -> str:
    """One line on how a run was trained with respect to missing modalities (from its RunConfig, or the config
    as a dict or JSON text, as the session database stores it)."""
    if isinstance(config, str):
        import json
        try:
            config = json.loads(config) if config else {}
        except ValueError:
            return ""
    if isinstance(config, dict):
        data = config.get("data") if isinstance(config.get("data"), dict) else None
        tm, pool = (str(data.get("train_missing") or ""), bool(data.get("train_pool"))) if data else ("", False)
    else:
        data = getattr(config, "data", None)
        tm = str(getattr(data, "train_missing", "") or "")
        pool = bool(getattr(data, "train_pool", False))
    if data is None:
        return ""
    parts = [f"train_missing = {tm} (fraction missing)" if tm else "complete training samples (no train_missing)"]
    if pool:
        parts.append("train_pool on (unpaired samples as unlabeled)")
    return "Trained with " + "; ".join(parts)


class MechanismControl(QWidget):
    """Draws a mask for the sample in `state` and applies it with `state.set_enabled`; keeps no mask itself."""

    sig_message = Signal(str, str)  # text, kind
    sig_mask_drawn = Signal(tuple)  # the mask applied

    def __init__(self, state: ExplorerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.explorer_state = state
        self.last_mask: tuple[bool, ...] | None = None
        self.last_seed: int | None = None
        self.eta = QLineEdit("0.5")
        self.eta.setObjectName("mcar_eta")
        self.eta.setMaximumWidth(52)
        self.eta.setToolTip(ETA_TIP)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setMaximumWidth(80)
        self.seed.setToolTip("Mask seed: with the same η and seed the draw is the mask `robult eval --missing "
                             "mcar:η --mask-seed SEED` gives this sample. It advances after each draw.")
        self.mechanism = QComboBox()
        self.mechanism.setObjectName("mask_mechanism")
        self.mechanism.addItems(MECHANISMS)
        self.mechanism.setToolTip("Mechanism of the drawn mask, as in `robult eval --missing` (mnar-class: η depends "
                                  "on the class, e.g. 0.8/0.1@3+5)")
        for i, m in enumerate(describe_mechanisms(per_sample=True)):
            self.mechanism.setItemData(i, m.summary, Qt.ItemDataRole.ToolTipRole)
        self.mechanism.currentTextChanged.connect(self._on_mechanism_changed)
        self.draw_btn = QPushButton("Draw mask")
        self.draw_btn.setToolTip(ETA_TIP)
        self.draw_btn.clicked.connect(self.draw)
        self.eta.returnPressed.connect(self.draw)
        eta_label = QLabel("η missing")
        eta_label.setToolTip(ETA_TIP)
        self.result = QLabel("")
        self.result.setObjectName("mechanism_result")
        self.trained = QLabel("")
        self.trained.setObjectName("training_mechanism")
        self.trained.setStyleSheet("color: #505050")
        self.trained.setToolTip("How the run was trained with respect to missing modalities (its config: "
                                "data.train_missing, data.train_pool)")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        for w in (self.mechanism, eta_label, self.eta, QLabel("seed"), self.seed, self.draw_btn, self.result):
            row.addWidget(w)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(row)
        lay.addWidget(self.trained)
        state.subscribe(self._on_state_changed)
        self._on_state_changed({"context"})

    @Slot(str)
    def _on_mechanism_changed(self, mech: str) -> None:
        self.eta.setEnabled(mech != "exclusive")
        if mech == "mnar-class" and "/" not in self.eta.text():
            # the default names its classes (the engine's default: the first half), so the user sees them
            ctx = self.explorer_state.context
            info = ctx.loaded.info if ctx is not None else None
            self.eta.setText(mnar_class_spec(info.task, tuple(info.class_names)).split(":", 1)[1]
                             if info is not None else "0.8/0.1")
        elif mech != "mnar-class" and "/" in self.eta.text():
            self.eta.setText("0.5")
        self.eta.setMaximumWidth(220 if mech == "mnar-class" else 52)

    def spec_text(self, eta_text: str | None = None) -> str:
        mech = self.mechanism.currentText()
        eta = str(self.eta.text() if eta_text is None else eta_text).strip()
        return mech if mech == "exclusive" else f"{mech}:{eta}"

    def _on_state_changed(self, changed: set[str]) -> None:
        st = self.explorer_state
        if "context" in changed:
            ctx = st.context
            self.trained.setText(training_mechanism(ctx.loaded.config) if ctx is not None else "")
        self.draw_btn.setEnabled(st.context is not None and st.sample is not None and bool(st.modality_names))
        if changed & {"sample", "modalities"}:
            self.result.setText("")

    def _say(self, text: str, kind: str) -> None:
        colour = {"error": "#B00020", "warning": "#8A5A00"}.get(kind, "#202020")
        self.result.setText(f"<span style='color:{colour}'>{text}</span>")
        self.sig_message.emit(text, kind)

    def draw_mask_for_sample(self, eta_text: str, seed: int) -> tuple[bool, ...]:
        """The mask of the chosen mechanism at η (`eta_text`, the fraction missing) and mask seed for the sample
        on screen. Raises MissingSpecError with a message for the user on a bad η; ValueError without a sample
        (or for an MNAR mechanism on the user's own files)."""
        st = self.explorer_state
        mech = self.mechanism.currentText()
        spec = parse_missing(self.spec_text(eta_text), where="η (fraction missing):")
        if len(spec) != 1:
            raise MissingSpecError(f"η (fraction missing): give one rate in [0, 1), got {eta_text.strip()!r}")
        spec = spec[0]
        ctx, ref, names = st.context, st.sample, st.modality_names
        if ctx is None or ref is None:
            raise ValueError("no sample on screen")
        bundle = getattr(ctx, "bundle", None)
        if ref.is_dataset and bundle is not None and ref.split in bundle.splits \
                and 0 <= ref.index < len(bundle.splits[ref.split]):
            mask = draw_mask(bundle.splits[ref.split], bundle.info, spec, seed)[ref.index]
        elif mech in NEEDS_SPLIT:
            raise ValueError(f"{mech} depends on the dataset split (feature norms or the label); pick a dataset "
                             f"sample, or use mcar or exclusive for your own files")
        else:  # the user's own files: the same draw on a one-row split of what was given
            present = st.present if st.present is not None else (True,) * len(names)
            one = SimpleNamespace(mask=torch.tensor([present], dtype=torch.bool), target=torch.zeros(1))
            info = SimpleNamespace(modality_names=names, task="single-label", class_names=())
            mask = draw_mask(one, info, spec, seed)[0]
        return tuple(bool(x) for x in mask.tolist())

    @Slot()
    def draw(self) -> tuple[bool, ...] | None:
        """Draw at the η and seed shown, apply it to the state, advance the seed. Bad η: a message, no change."""
        st = self.explorer_state
        seed = int(self.seed.value())
        try:
            mask = self.draw_mask_for_sample(self.eta.text(), seed)
        except MissingSpecError as e:
            self._say(str(e), "error")
            return None
        except ValueError as e:
            self._say(f"Cannot draw a mask: {e}", "warning")
            return None
        self.last_mask, self.last_seed = mask, seed
        st.set_enabled(mask)
        names = st.modality_names
        gone = [n for n, keep in zip(names, mask) if not keep]
        self._say(f"{self.spec_text()} seed {seed}: "
                  + (f"{', '.join(gone)} missing" if gone else "nothing missing"), "info")
        self.seed.setValue(seed + 1 if seed < self.seed.maximum() else 0)
        self.sig_mask_drawn.emit(mask)
        return mask


def main() -> int:
    from app.views.common.demo import run_panel_demo

    def fill(p: MechanismControl) -> None:
        st = p.explorer_state
        st.set_modalities(("image", "audio", "text"))
        p.trained.setText(training_mechanism(SimpleNamespace(data=SimpleNamespace(train_missing="mcar:0.3",
                                                                                  train_pool=True))))
    return run_panel_demo(lambda: MechanismControl(ExplorerState()), fill, "Apply a mechanism", size=(700, 70))


if __name__ == "__main__":
    raise SystemExit(main())
