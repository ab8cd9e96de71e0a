"""ExplorerPanel: one sample, its modalities switched on and off, and every diagnostic updating together.

    sample panel ─┐                         ┌─ predictions (subset vs all, Δ)
                  ├─ ExplorerState ─ service ┼─ latents (‖Z‖, ‖U‖, U/Z, c([U,Z]) per modality, rec. error)
    toggles ──────┘   (generation)   (pool)  └─ soft-PU (ỹ, κ, weights, matrix, κ over training)

Every change of the sample or the toggles bumps the state's generation and sends one request off the GUI
thread; a result whose generation is not the newest is dropped, so rapid toggling always ends on the last
state. The inspection shown is remembered in the session (`store.save_inspection`, debounced) and restored
when the session's model is loaded again. The window keeps the sample and toggles in its working context too
(`inspection_context`), and gives them back at start-up (`expect_inspection`) before the model is loaded.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QTimer, Qt, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QHBoxLayout, QLabel, QPushButton, QSplitter, QVBoxLayout,
                               QWidget)

from .attribution_panel import AttributionPanel
from app.core.analysis.tables import inspection_tables, write_json, write_tables
from app.views.common.job_controls import choose_export_folder
from .latents_panel import LatentsPanel
from .mechanism_control import MechanismControl
from .predictions_panel import PredictionsPanel
from .sample_panel import SamplePanel
from .service import ExplorerService
from app.core.analysis.context import InspectResult, ModelContext
from .softpu_panel import SoftPUPanel
from app.core.explorer_state import ExplorerState, SampleRef
from .toggles import ModalityToggles

SAVE_DELAY_MS = 600  # inspections are written to the session this long after the last change


class ExplorerPanel(QWidget):
    sig_inspection_shown = Signal(int)  # generation
    sig_message = Signal(str, str)  # text, kind ("info" | "ok" | "warning" | "error")
    sig_context_ready = Signal(object)  # ModelContext

    def __init__(self, parent: QWidget | None = None, *, store=None, controller=None, bundle_getter=None) -> None:
        super().__init__(parent)
        self.store = store
        self.state = ExplorerState()
        self.service = ExplorerService(self, state=self.state, controller=controller, bundle_getter=bundle_getter)
        self.loaded_model = None
        self.sample = None  # LoadedSample on screen
        self.inspection = None  # Inspection on screen
        self.shown_generation = -1
        self.dropped_results = 0
        self.latencies: list[float] = []  # seconds from a change to all panels updated
        self.update_times: list[float] = []  # seconds the GUI thread spent updating the panels
        self.worker_times: list[float] = []  # seconds from the request to the worker's result
        self._asked_at: dict[int, float] = {}
        self._pending_restore: dict | None = None
        self._reopen_run: int | None = None
        self._expected: tuple[str, dict] | None = None  # (checkpoint path, inspection) to restore when it loads
        self._last_saved: dict | None = None
        self._shut = False
        self._create_widgets()
        self._create_shortcuts()
        self._connect()
        self.live_box.setVisible(controller is not None)

    # --- construction -----------------------------------------------------------------------------------
    def _create_widgets(self) -> None:
        self.toggles = ModalityToggles(self.state, shortcut_parent=self)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.export_btn = QPushButton("Export…")
        self.export_btn.setToolTip("Save every plot of the explorer (PNG + SVG) and its tables (CSV) to a folder")
        self.live_box = QCheckBox("Follow training")
        self.live_box.setChecked(True)
        self.live_box.setToolTip("While a run of the same dataset and architecture trains, inspect the live model "
                                 "(on the training thread, between steps) instead of the loaded checkpoint")
        self.live_tag = QLabel("")
        top = QHBoxLayout()
        top.addWidget(self.toggles, 0)
        top.addWidget(self.status, 1)
        top.addWidget(self.live_tag)
        top.addWidget(self.live_box)
        top.addWidget(self.export_btn)
        # "apply a mechanism" (a drawn MCAR mask, through self.state) and the run's training mechanism
        self.mechanism = MechanismControl(self.state)

        self.sample_panel = SamplePanel()
        self.predictions = PredictionsPanel()
        self.latents = LatentsPanel()
        self.softpu = SoftPUPanel()
        self.attribution = AttributionPanel()  # φ per modality: recombined from the cached encoding, per toggle
        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(self.sample_panel)
        upper.addWidget(self.predictions)
        upper.addWidget(self.attribution)
        upper.setStretchFactor(0, 1)
        upper.setStretchFactor(1, 1)
        upper.setStretchFactor(2, 1)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.latents)
        lower.addWidget(self.softpu)
        lower.setStretchFactor(0, 2)
        lower.setStretchFactor(1, 3)
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(upper)
        main.addWidget(lower)
        main.setStretchFactor(0, 1)
        main.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(top)
        lay.addWidget(self.mechanism)
        lay.addWidget(main, 1)
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)

    def _create_shortcuts(self) -> None:
        self.shortcuts = []
        for keys, slot in ((("Alt+Left", "PgUp"), self.sample_panel.previous),
                           (("Alt+Right", "PgDown"), self.sample_panel.next)):
            for k in keys:
                sc = QShortcut(QKeySequence(k), self)
                sc.setContext(Qt.ShortcutContext.WindowShortcut)  # inactive while the explorer is hidden
                sc.activated.connect(slot)
                self.shortcuts.append(sc)

    def _connect(self) -> None:
        self.state.subscribe(self._on_state_changed)
        self.sample_panel.sig_sample_requested.connect(self._on_sample_requested)
        self.sample_panel.sig_message.connect(self._on_panel_message)
        self.mechanism.sig_message.connect(self.sig_message)
        self.service.sig_context_ready.connect(self._on_context_ready)
        self.service.sig_context_failed.connect(self._on_context_failed)
        self.service.sig_result_ready.connect(self._on_result_ready)
        self.service.sig_request_failed.connect(self._on_request_failed)
        self.export_btn.clicked.connect(self._on_export_clicked)
        self.live_box.toggled.connect(self._on_live_box_toggled)
        self._save_timer.timeout.connect(self.save_inspection)

    # --- model ------------------------------------------------------------------------------------------
    def set_model(self, loaded) -> None:
        """A new current model (app.core.state.LoadedModel): reset toggles, prepare its context in the background,
        then restore the session's last inspection (or show the first test sample)."""
        self.save_inspection()  # the previous model's state, if a change is pending
        self.loaded_model = loaded
        self.sample = self.inspection = None
        self._last_saved = None
        self.state.set_modalities(tuple(loaded.info.modality_names))
        run_id = getattr(loaded, "run_id", None)
        self._pending_restore = None
        expected, self._expected = self._expected, None
        if expected is not None and expected[0] == str(getattr(loaded, "checkpoint_path", "") or ""):
            self._pending_restore = expected[1]
        elif run_id is not None and self.store is not None:
            try:
                self._pending_restore = self.store.latest_inspection(run_id)
            except Exception as e:  # noqa: BLE001 - a damaged row must not block the model
                self._message(f"Could not read the session's last inspection: {e}", "warning")
        for p in (self.predictions,):
            p.clear("Preparing the model…")
        self.latents.clear()
        self.attribution.clear("Preparing the model…")
        self.softpu.clear("Preparing the reference batch…")
        self._message(f"Loading {getattr(loaded.config, 'method', 'model')} on {loaded.info.name}…", "info")
        self.service.set_model(loaded)

    def session_reopened(self, run_id: int) -> None:
        """The window reopened a session: restore its inspection once that run's model is current."""
        self._reopen_run = int(run_id)
        if self.loaded_model is not None and getattr(self.loaded_model, "run_id", None) == run_id:
            if self.store is not None:
                self._pending_restore = self.store.latest_inspection(run_id)
            if self.context is not None:
                self._restore_or_default()

    def expect_inspection(self, checkpoint_path: str | None, inspection: dict | None) -> None:
        """When the model of `checkpoint_path` is loaded next, show `inspection` (a sample and its toggles, as
        `inspection_context` gives them) rather than its run's last saved one. None forgets it."""
        self._expected = (str(checkpoint_path), dict(inspection)) if checkpoint_path and inspection else None

    def inspection_context(self, checkpoint_path: str | None = None) -> dict | None:
        """The sample and toggles asked for on the current model ({"sample": …, "enabled": {modality: on}}), if
        that model is the one of `checkpoint_path` (any, when None); None when there is no sample."""
        lm = self.loaded_model
        if lm is None or self.state.sample is None:
            return None
        if checkpoint_path is not None and str(getattr(lm, "checkpoint_path", "") or "") != str(checkpoint_path):
            return None
        d = self.state.to_dict()
        return {"sample": d["sample"], "enabled": d["enabled"]}

    @property
    def follows_training(self) -> bool:
        """"Follow training" is ticked: the explorer shows the run being trained."""
        return bool(self.service.follow_live)

    @property
    def context(self) -> ModelContext | None:
        """The current model's context (it lives in the state)."""
        return self.state.context

    @Slot(object)
    def _on_context_ready(self, ctx: ModelContext) -> None:
        self.state.set_context(ctx)  # no sample yet (set_model cleared it): the sample is chosen below
        self.attribution.set_context(ctx.bundle, ctx.task, ctx.class_names)
        self.sample_panel.set_context(ctx.info, ctx.bundle, ctx.labeled_indices.tolist())
        self._load_kappa_history()
        if ctx.note:
            self._message(ctx.note, "warning")
        else:
            self._message("", "info")
        self._restore_or_default()
        self.sig_context_ready.emit(ctx)

    @Slot(str)
    def _on_context_failed(self, message: str) -> None:
        self._message(f"The model could not be prepared: {message}", "error")

    def _restore_or_default(self) -> None:
        names = self.state.modality_names
        ref, enabled = ExplorerState.parse(self._pending_restore, names)
        self._pending_restore = None
        if ref is None and self.context is not None and self.context.bundle is not None:
            for split in ("test", "val", "train"):
                if split in self.context.bundle.splits and len(self.context.bundle.splits[split]):
                    ref = SampleRef.dataset(split, 0)
                    break
        if ref is None:
            self.predictions.clear("Open or drop your own files to inspect a sample.")
            return
        self.open_sample(ref, enabled)

    def _load_kappa_history(self) -> None:
        run_id = self.context.run_id if self.context else None
        if run_id is None or self.store is None:
            self.softpu.set_kappa_history(None, note="this model was not trained in the app,\n"
                                                      "so the session holds no epoch records")
            return
        try:
            rows = self.store.epochs(run_id)
        except Exception as e:  # noqa: BLE001
            self.softpu.set_kappa_history(None, note=f"reading the session failed ({e})")
            return
        rows = [r for r in rows if r.get("kappa_hist") and any(v > 0 for v in r["kappa_hist"])]
        if not rows:
            method = getattr(self.context.loaded.config, "method", "")
            self.softpu.set_kappa_history(None, note=f"run {run_id} ({method}) recorded no κ\n"
                                                      "(its method does not use soft-PU weights)")
            return
        self.softpu.set_kappa_history([r["kappa_hist"] for r in rows], rows[-1].get("kappa_edges") or None,
                                      [int(r["epoch"]) + 1 for r in rows])

    # --- requests ---------------------------------------------------------------------------------------
    def open_sample(self, ref: SampleRef, enabled: tuple[bool, ...] | None = None) -> None:
        """Show a sample (and optionally a toggle state) — one request, one generation."""
        self.state.set_sample(ref, enabled)

    def set_enabled(self, enabled: tuple[bool, ...]) -> None:
        self.state.set_enabled(enabled)

    def toggle(self, i: int) -> None:
        self.toggles.toggle(i)  # through the button, exactly as a click

    @Slot(object)
    def _on_sample_requested(self, ref: SampleRef) -> None:
        self.open_sample(ref)

    def _on_state_changed(self, changed: set[str]) -> None:
        if "generation" not in changed or self.state.sample is None or self.context is None:
            return  # nothing to recompute
        gen = self.state.generation
        self._asked_at[gen] = time.perf_counter()
        if len(self._asked_at) > 256:
            for k in sorted(self._asked_at)[:-64]:
                del self._asked_at[k]
        same = self.sample is not None and self.sample.ref == self.state.sample
        self.service.request(gen, self.state.sample, self.sample if same else None, self.state.enabled)

    @Slot(object)
    def _on_result_ready(self, result: InspectResult) -> None:
        if not self.state.is_current(result.generation):
            self.dropped_results += 1
            return
        t_update = time.perf_counter()
        new_sample = self.sample is None or self.sample.ref != result.sample.ref
        self.sample = result.sample
        self.inspection = insp = result.inspection
        if new_sample:
            self.sample_panel.show_sample(result.sample)
        self.state.set_present(insp.present)
        self.predictions.show_inspection(insp, result.sample.target_name)
        self.latents.show_inspection(insp)
        self.attribution.show_sample(result.encoding, insp.used, insp.modality_names)
        self.softpu.show_softpu(insp.softpu, "prototype memory of the loaded checkpoint" if result.live else "")
        self.shown_generation = result.generation
        self.live_tag.setText("<b style='color:#D55E00'>● live model (training)</b>" if result.live else "")
        t0 = self._asked_at.pop(result.generation, None)
        now = time.perf_counter()
        self.update_times.append(now - t_update)
        self.worker_times.append(result.seconds)
        del self.update_times[:-1000], self.worker_times[:-1000]
        if t0 is not None:
            self.latencies.append(now - t0)
            del self.latencies[:-1000]
        if self.status.property("kind") == "error" and new_sample:
            self._message("", "info")
        self._save_timer.start()
        self.sig_inspection_shown.emit(result.generation)

    @Slot(int, str)
    def _on_request_failed(self, generation: int, message: str) -> None:
        if not self.state.is_current(generation):
            self.dropped_results += 1
            return
        # keep the last good sample on screen; the state goes back to it quietly
        failed = self.state.sample
        self.state.restore_sample(self.sample.ref if self.sample is not None else None)
        self._message(f"Could not use that sample: {message}", "error")
        if self.sample is None and failed is not None and not failed.is_dataset:
            # e.g. a restored inspection whose files are gone: show a dataset sample instead of nothing
            self._pending_restore = None
            text = self.status.text()
            self._restore_or_default()
            self.status.setText(text)

    @Slot(bool)
    def _on_live_box_toggled(self, on: bool) -> None:
        self.service.follow_live = on
        self.state.refresh()  # show the other model's view now

    # --- messages ---------------------------------------------------------------------------------------
    def _message(self, text: str, kind: str = "info") -> None:
        colour = {"error": "#B00020", "warning": "#8A5A00", "ok": "#1A7F37"}.get(kind, "#404040")
        self.status.setText(f"<span style='color:{colour}'>{text}</span>" if text else "")
        self.status.setProperty("kind", kind if text else "")
        if text and kind != "info":
            self.sig_message.emit(text, kind)

    @Slot(str, str)
    def _on_panel_message(self, text: str, kind: str) -> None:
        self._message(text, kind)

    @property
    def message(self) -> str:
        from PySide6.QtGui import QTextDocumentFragment
        return QTextDocumentFragment.fromHtml(self.status.text()).toPlainText()

    # --- sessions ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        pred = self.inspection.summary() if self.inspection is not None else None
        return self.state.to_dict(pred)

    @Slot()
    def save_inspection(self) -> int | None:
        """Write the inspection on screen to the session (GUI thread; skipped when unchanged)."""
        self._save_timer.stop()
        run_id = getattr(self.loaded_model, "run_id", None)
        if self.store is None or run_id is None or self.inspection is None or self.sample is None:
            return None
        d = self.state_dict()
        if d == self._last_saved:
            return None
        try:
            rid = self.store.save_inspection(run_id, d)
        except Exception as e:  # noqa: BLE001 - a full disk must not take the explorer down
            self._message(f"Could not save the inspection in the session: {e}", "warning")
            return None
        self._last_saved = d
        return rid

    # --- export -----------------------------------------------------------------------------------------
    def export_all(self, folder) -> list[Path]:
        folder = Path(folder)
        title = self.sample.title if self.sample is not None else ""
        out: list[Path] = []
        out += self.predictions.export(folder, title)
        out += self.latents.export(folder, title)
        out += self.attribution.export(folder, title)
        out += self.softpu.export(folder, title)
        if self.inspection is not None:
            out += write_tables(folder, {k: v for k, v in inspection_tables(self.inspection, title).items()
                                         if k == "inspection_summary"})
            out.append(write_json(folder / "inspection.json", self.state_dict()))
        return out

    @Slot()
    def _on_export_clicked(self) -> None:
        folder = choose_export_folder(self, "Export the explorer's plots and tables to…")
        if folder:
            try:
                files = self.export_all(folder)
            except OSError as e:
                self._message(f"Export failed: {e}", "error")
                return
            self._message(f"Exported {len(files)} files to {folder}", "ok")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API; a panel shown on its own (tests, `-m`)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        if self._shut:
            return
        self._shut = True
        self.save_inspection()
        self.service.shutdown()


def main() -> int:
    """`python -m app.views.explorer.explorer_panel [checkpoint.pt]`: the explorer on a checkpoint, standalone."""
    import os
    import sys

    from PySide6.QtWidgets import QApplication

    from app.core.analysis.standalone import loaded_from_checkpoint
    app = QApplication.instance() or QApplication(sys.argv)
    from app.background import gc_policy
    gc_policy.install()
    panel = ExplorerPanel()
    panel.resize(1400, 900)
    if len(sys.argv) > 1:
        panel.set_model(loaded_from_checkpoint(sys.argv[1]))
    panel.show()
    shot = os.environ.get("ROBULT_DEMO_SCREENSHOT")
    if shot:
        from app.background.runner import wait_ms
        for _ in range(200):
            wait_ms(50)
            if panel.inspection is not None:
                break
        wait_ms(200)
        panel.grab().save(shot)
        panel.shutdown()
        return 0
    rc = app.exec()
    panel.shutdown()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
