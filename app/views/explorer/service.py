"""The explorer's bridge to the engine: model context, encoding caches, and requests off the GUI thread.

- `ModelContext` (plain data): the loaded model and what soft-PU needs besides it — the checkpoint's
  prototype memory and a fixed reference batch of training samples (64, 16 of them labeled, seed 0).
- `InspectionEngine` (plain Python, thread-safe): caches, per (model, weights version, sample), the
  `SampleInspector` that holds the sample's one encoding; a toggle only recombines. The weights version
  (`robult_engine.inspect.weights_version`) changes with every optimizer step, so a model that is training
  is re-encoded instead of being served a stale cache.
- `ExplorerService` (QObject): runs requests on its own one-thread `QThreadPool`, or, while a run is
  training, through `controller.run_on_model(fn, ...)` so inference happens on the training thread (train /
  eval mode and weights are shared state there). Each request carries the generation of the explorer state
  that asked; work whose generation is already old is skipped, and the panels drop stale results too.
  Exception, by design: a toggle on a sample whose encoding is cached is answered at once on the GUI thread —
  it is one `combine_logits` over a (1, M, C) tensor (well under a millisecond, no model call, no lock
  waited for), and the thread round trip cost more than the work (see benchmarks/toggle_latency.py).
  Everything that runs the model (a new sample, a new model, the live training model) goes off the GUI.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
from PySide6.QtCore import QObject, Signal, Slot

from robult_engine.data.base import Batch, DatasetBundle, make_batch
from robult_engine.data.cache import DatasetCache
from robult_engine.inspect import (Inspection, ReferenceEncoding, SampleInspector, encode_reference,
                                   reference_indices, weights_version)

from app.background.runner import WorkRunner
from app.core.state import same_inputs
from app.core.work import Failure, describe_error

from .sources import LoadedSample, load_sample
from app.core.explorer_state import SampleRef

REFERENCE_SIZE = 64
REFERENCE_LABELED = 16
REFERENCE_SEED = 0
CACHE_SIZE = 64


@dataclass(frozen=True)
class ModelContext:
    """Everything the explorer needs about the current model (built once per loaded model, off the GUI)."""
    loaded: Any  # app.core.state.LoadedModel (or anything with model, config, info, checkpoint_path, run_id, labeled_indices)
    memory_state: dict  # the checkpoint's PrototypeMemory buffers ({} when unavailable)
    bundle: DatasetBundle | None  # the dataset the model was trained on (None if it could not be loaded)
    reference: Batch | None  # the fixed reference batch of training samples
    note: str = ""  # what is unavailable and why

    @property
    def model(self):
        return self.loaded.model

    @property
    def info(self):
        return self.loaded.info

    @property
    def task(self) -> str:
        return self.loaded.info.task

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.loaded.info.class_names)

    @property
    def run_id(self) -> int | None:
        return getattr(self.loaded, "run_id", None)

    @property
    def labeled_indices(self) -> torch.Tensor:
        li = getattr(self.loaded, "labeled_indices", None)
        return torch.as_tensor(li if li is not None else [], dtype=torch.long).reshape(-1)


# The datasets for when the window offers no cache of its own (standalone panels, tests): the engine's cache.
_DATASETS = DatasetCache()


def default_bundle_getter(data_cfg) -> DatasetBundle:
    return _DATASETS.get(data_cfg)


def prepare_context(loaded, bundle_getter: Callable | None = None) -> ModelContext:
    """Load the prototype memory from the checkpoint and pick the reference batch (worker thread)."""
    notes = []
    memory: dict = {}
    path = getattr(loaded, "checkpoint_path", "") or ""
    if path:
        from robult_engine.checkpoint import CheckpointError, load_checkpoint
        try:
            memory = dict(load_checkpoint(path).memory_state)
        except CheckpointError as e:
            notes.append(f"prototype memory unavailable ({e})")
    else:
        notes.append("no checkpoint file: κ has no prototypes")
    bundle = None
    try:
        bundle = (bundle_getter or default_bundle_getter)(loaded.config.data)
    except Exception as e:  # noqa: BLE001 - the explorer still works on the user's own files
        notes.append(f"dataset {loaded.config.data.dataset!r} could not be loaded: {describe_error(e)}")
    if bundle is not None and bundle.info.modality_names != tuple(loaded.info.modality_names):
        try:
            bundle = bundle.select_modalities(tuple(loaded.info.modality_names))
        except KeyError:
            notes.append("the dataset does not have this model's modalities")
            bundle = None
    reference = None
    if bundle is not None and "train" in bundle.splits and len(bundle.splits["train"]):
        train = bundle.splits["train"]
        lab = torch.as_tensor(getattr(loaded, "labeled_indices", []), dtype=torch.long).reshape(-1)
        lab = lab[lab < len(train)]
        idx = reference_indices(len(train), lab, REFERENCE_SIZE, REFERENCE_LABELED, REFERENCE_SEED)
        is_lab = torch.zeros(len(train), dtype=torch.bool)
        is_lab[lab] = True
        reference = make_batch(train, idx, is_lab)
    return ModelContext(loaded, memory, bundle, reference, "; ".join(notes))


@dataclass(frozen=True)
class InspectResult:
    generation: int
    sample: LoadedSample
    inspection: Inspection
    seconds: float  # time spent in the worker
    cached: bool  # the sample's encoding came from the cache
    live: bool = False  # computed on the model being trained (training thread), not the loaded checkpoint
    encoding: Any = None  # the sample's cached SampleEncoding (per-modality logits: φ is recombined from it)


class InspectionEngine:
    """Thread-safe caches of reference encodings and per-sample inspectors."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._lock = threading.Lock()
        self._inspectors: OrderedDict[tuple, SampleInspector] = OrderedDict()
        self._refs: dict[tuple, ReferenceEncoding] = {}
        self.size = size

    def clear(self) -> None:
        with self._lock:
            self._inspectors.clear()
            self._refs.clear()

    def _reference(self, ctx: ModelContext, model, mkey: tuple) -> ReferenceEncoding | None:
        if ctx.reference is None:
            return None
        ref = self._refs.get(mkey)
        if ref is None:
            self._refs.clear()  # one model at a time
            ref = encode_reference(model, ctx.reference, ctx.task)
            self._refs[mkey] = ref
        return ref

    def try_cached(self, ctx: ModelContext, sample: LoadedSample, subset: tuple[bool, ...]
                   ) -> tuple[Inspection, Any] | None:
        """(inspection, encoding) from an already encoded sample, or None — never waits (a worker may hold the
        lock while it encodes) and never calls the model. Cheap enough for the GUI thread (one combine_logits)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            model = ctx.model
            insp = self._inspectors.get((id(model), weights_version(model), sample.ref.key()))
            if insp is None:
                return None
            return insp.inspect(subset), insp.encoding
        finally:
            self._lock.release()

    def inspect(self, ctx: ModelContext, ref: SampleRef, sample: LoadedSample | None, subset: tuple[bool, ...],
                model=None) -> tuple[LoadedSample, Inspection, bool, Any]:
        """(sample, inspection, cached, encoding). `model` defaults to the context's model (the training model when
        called on the training thread)."""
        model = ctx.model if model is None else model
        mkey = (id(model), weights_version(model))
        key = (*mkey, ref.key())
        with self._lock:
            insp = self._inspectors.get(key)
            cached = insp is not None
            if sample is None or sample.ref != ref:
                text_buckets = getattr(getattr(ctx.loaded.config, "model", None), "text_buckets", 2 ** 15)
                sample = load_sample(ref, ctx.info, ctx.bundle, labeled_indices=ctx.labeled_indices,
                                     text_buckets=text_buckets)
            if insp is None:
                reference = self._reference(ctx, model, mkey)
                loss = ctx.loaded.config.loss
                insp = SampleInspector(model, sample.data, task=ctx.task, class_names=ctx.class_names,
                                       reference=reference, memory_state=ctx.memory_state, kernel=loss.kernel,
                                       bandwidth=loss.bandwidth, sample_labeled=sample.labeled)
                self._inspectors[key] = insp
                while len(self._inspectors) > self.size:
                    self._inspectors.popitem(last=False)
            else:
                self._inspectors.move_to_end(key)
            return sample, insp.inspect(subset), cached, insp.encoding


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
