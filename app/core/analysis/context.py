"""The current model's analysis context and the explorer's inspection cache, Qt-free.

- `ModelContext` (plain data): the loaded model and what soft-PU needs besides it — the checkpoint's
  prototype memory and a fixed reference batch of training samples (64, 16 of them labeled, seed 0).
- `prepare_context` builds it (off the GUI thread); `default_bundle_getter` loads a dataset once per process for
  panels that run without a window.
- `InspectionEngine` (plain Python, thread-safe): caches, per (model, weights version, sample), the
  `SampleInspector` that holds the sample's one encoding; a toggle only recombines. The weights version
  (`robult_engine.inspect.weights_version`) changes with every optimizer step, so a model that is training
  is re-encoded instead of being served a stale cache.

The Qt side that runs these off the GUI thread is `ExplorerService` (app/views/explorer/service.py).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

from robult_engine.data.base import Batch, DatasetBundle, make_batch
from robult_engine.data.cache import DatasetCache
from robult_engine.inspect import (Inspection, ReferenceEncoding, SampleInspector, encode_reference,
                                   reference_indices, weights_version)

from app.core.analysis.sources import LoadedSample, load_sample
from app.core.explorer_state import SampleRef
from app.core.work import describe_error

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
