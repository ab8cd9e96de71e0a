"""The explorer's requests off the GUI thread: `ExplorerService` (QObject) over the Qt-free `ModelContext` and
`InspectionEngine` of app/core/analysis/context.py.

It runs requests on its own one-thread `QThreadPool`, or, while a run is training, through
`controller.run_on_model(fn, ...)` so inference happens on the training thread (train / eval mode and weights
are shared state there). Each request carries the generation of the explorer state that asked; work whose
generation is already old is skipped, and the panels drop stale results too.
Exception, by design: a toggle on a sample whose encoding is cached is answered at once on the GUI thread —
it is one `combine_logits` over a (1, M, C) tensor (well under a millisecond, no model call, no lock
waited for), and the thread round trip cost more than the work (see benchmarks/toggle_latency.py).
Everything that runs the model (a new sample, a new model, the live training model) goes off the GUI.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal, Slot

from app.background.runner import WorkRunner
from app.core.analysis.context import InspectionEngine, InspectResult, ModelContext, prepare_context
from app.core.analysis.sources import LoadedSample
from app.core.explorer_state import SampleRef
from app.core.state import same_inputs
from app.core.work import Failure


class ExplorerService(QObject):
    """Runs the explorer's requests off the GUI thread and answers with signals (GUI thread).

    The generation of a request is the one of the explorer state (`state.generation`, the only counter):
    work whose generation is no longer the state's is skipped before it starts, and the panel drops answers
    that come back for an older one."""
    sig_context_ready = Signal(object)  # ModelContext
    sig_context_failed = Signal(str)
    sig_result_ready = Signal(object)  # InspectResult
    sig_request_failed = Signal(int, str)  # generation, message

    def __init__(self, parent: QObject | None = None, *, state, controller: QObject | None = None,
                 bundle_getter: Callable | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.runner = WorkRunner(self, max_threads=1)
        self.engine = InspectionEngine()
        self.controller = controller
        self.follow_live = True  # while a compatible run trains, inspect the live model on the training thread
        self.bundle_getter = bundle_getter
        self._context_work = None

    # --- the model ------------------------------------------------------------------------------------
    def set_model(self, loaded) -> None:
        """Prepare the context of a newly loaded model in the background; `sig_context_ready` follows."""
        if self._context_work is not None:
            self._context_work.cancel()  # a newer model was loaded: the older context is dropped
        self.engine.clear()
        getter = self.bundle_getter
        self._context_work = self.runner.start(lambda _w: prepare_context(loaded, getter),
                                               on_result=self._context_done, on_error=self._context_failed)

    def _context_done(self, ctx: ModelContext) -> None:
        self._context_work = None
        self.sig_context_ready.emit(ctx)  # the panel puts it into the explorer state

    def _context_failed(self, failure: Failure) -> None:
        self._context_work = None
        self.sig_context_failed.emit(failure.message)

    # --- requests -------------------------------------------------------------------------------------
    def live_training(self) -> bool:
        """True when requests go to the model being trained: a run is training, its data and architecture
        match the current model's (so the sample fits it), and `follow_live` is on."""
        c, ctx = self.controller, self.state.context
        if not self.follow_live or c is None or ctx is None or not getattr(c, "is_running", False):
            return False
        job = getattr(c, "job", None)
        return same_inputs(getattr(job, "config", None), getattr(ctx.loaded, "config", None))

    def _current(self, generation: int) -> bool:
        return self.state.generation == generation

    def request(self, generation: int, ref: SampleRef, sample: LoadedSample | None, subset: tuple[bool, ...]) -> None:
        """Inspect `ref` under `subset` for the state's `generation`; answers `sig_result_ready` (or
        `sig_request_failed`) unless the state moved on meanwhile."""
        import time
        ctx = self.state.context
        if ctx is None:
            return  # the panel asks again when the context is ready
        t0 = time.perf_counter()
        engine = self.engine
        live = self.live_training()
        if not live and sample is not None and sample.ref == ref:
            # a toggle on a sample already encoded: recombine the cached per-modality logits right here (no
            # model call, well under a millisecond) instead of a round trip through the pool
            hit = engine.try_cached(ctx, sample, subset)
            if hit is not None:
                self.sig_result_ready.emit(InspectResult(generation, sample, hit[0], time.perf_counter() - t0, True,
                                                         encoding=hit[1]))
                return
        current = self._current

        def work(model=None):
            if not current(generation):
                return None  # stale before it started: skip the work
            s, insp, cached, enc = engine.inspect(ctx, ref, sample, subset, model)
            return InspectResult(generation, s, insp, time.perf_counter() - t0, cached, live=model is not None,
                                 encoding=enc)

        def failed(failure: Failure) -> None:
            self.sig_request_failed.emit(generation, failure.message)

        if live:
            self.controller.run_on_model(work, on_result=self._on_done, on_error=failed)
        else:
            self.runner.start(lambda _w: work(), on_result=self._on_done, on_error=failed)

    def _on_done(self, result: InspectResult | None) -> None:
        if result is not None:
            self.sig_result_ready.emit(result)

    def wait(self, timeout_ms: int = 30000) -> bool:
        return self.runner.wait(timeout_ms)

    def shutdown(self) -> None:
        self.runner.shutdown()
