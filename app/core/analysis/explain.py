"""Qt-free explanations for the app: the φ of the sample on screen, the calibration and attribution
study of the session's runs, and the dataset's PID beside the model's Z/U split. The numbers are the engine's
(`robult_engine.explain`); this module only gathers what each view needs, for background jobs (`fn(work)`,
app/core/work.py) or, for φ, the GUI thread (a few hundred microseconds at M = 6).

- `train_prior_of(bundle, task, n_outputs)`: v(∅), the train-split prior (uniform when there is no train split).
- `sample_phi(encoding, used, prior, task)`: φ of one cached encoding (`robult_engine.inspect.SampleEncoding`)
  with only the modalities of `used` present — the toggles: a modality switched off is absent from every
  coalition, so it is a dummy with φ = 0 and Σφ = v(used) − v(∅).
- `compute_calibration(runs, bundle, split, progress=, check=)`: per run, the calibration table of every subset
  (`calibration_table`) and the attribution summary (`attribution_summary`), from one encoding pass per run.
- `compute_explain(loaded, bundle, split, cache, progress=, check=)`: the dataset's PID of every modality pair
  (cached per dataset fingerprint in a `PIDCache`) and the model's mean ‖Z^i‖ / ‖U^i‖ and mean |φ_i|.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from robult_engine.explain.attribution import AttributionSummary, attribution_summary, shapley_values, train_prior
from robult_engine.explain.calibration import NotApplicable, SubsetCalibration, calibration_table
from robult_engine.explain.pid import PairPID, all_pairs, dataset_pid

from app.core.analysis.robustness import RunRef, compute_robustness


# --- φ of one sample -----------------------------------------------------------------------------------------


def train_prior_of(bundle, task: str, n_outputs: int) -> tuple[torch.Tensor, str]:
    """(v(∅) per output, a note). The train split's prior (`robult_engine.explain.attribution.train_prior`);
    without a train split (the dataset could not be loaded) a uniform prior, and the note says so."""
    if bundle is not None and "train" in bundle.splits and len(bundle.splits["train"]):
        return train_prior(bundle.splits["train"].target, task, n_outputs), ""
    if task == "regression":
        return torch.zeros(1, dtype=torch.float64), "no train split: v(∅) = 0"
    if task == "multi-label":
        return torch.full((n_outputs,), math.log(0.5), dtype=torch.float64), "no train split: v(∅) = log ½"
    return torch.full((n_outputs,), -math.log(n_outputs), dtype=torch.float64), "no train split: v(∅) uniform"


@dataclass(frozen=True)
class SamplePhi:
    """φ of one sample under the toggles (plain data)."""
    phi: tuple[float, ...]  # (M,)
    output: int  # the class / label explained (the subset's prediction)
    v_empty: float
    v_full: float  # v(used): the subset's value
    used: tuple[bool, ...]


def sample_phi(encoding, used: tuple[bool, ...], prior: torch.Tensor, task: str,
               explain: str | int = "predicted") -> SamplePhi:
    """Exact Shapley values of the cached encoding's modalities, with only `used` present; `explain`: the
    predicted class / top label, or a class / label index (multi-label: the label the user chose)."""
    present = torch.tensor([tuple(bool(u) for u in used)], dtype=torch.bool)
    table = getattr(encoding, "subset_table", None)  # a peer's subset predictions (robult_engine/inspect.py)
    a = shapley_values(encoding.logits_mod[None], present, prior, task, explain=explain,
                       subset_table=table[None] if table is not None else None)
    return SamplePhi(phi=tuple(float(v) for v in a.phi[0]), output=int(a.output[0]), v_empty=float(a.v_empty[0]),
                     v_full=float(a.v_full[0]), used=tuple(bool(u) for u in used))


# --- calibration and attribution of the session's runs ---------------------------------------------------------


@dataclass
class CalibrationStudy:
    split: str
    task: str
    modality_names: tuple[str, ...]
    runs: list[RunRef]
    tables: dict[str, dict[str, SubsetCalibration]]  # run label -> subset -> calibration (with reliability bins)
    attribution: dict[str, AttributionSummary]  # run label -> mean |φ_i| (all, per class)
    subsets: list[str] = field(default_factory=list)  # row order (modality_subsets: singles first)
    skipped: list[str] = field(default_factory=list)
    note: str = ""  # e.g. why calibration does not apply
    seconds: float = 0.0


def _guard(check: Callable[[], None] | None):
    """should_stop for the engine: runs `check()` (which raises the app's Cancelled) and never returns True."""
    def should_stop() -> bool:
        if check is not None:
            check()
        return False
    return should_stop


def compute_calibration(runs: list[RunRef], bundle, split: str = "test",
                        progress: Callable[[int, int, str], None] | None = None,
                        check: Callable[[], None] | None = None) -> CalibrationStudy:
    """Calibration per subset and the attribution summary of every run (one encoding pass per run)."""
    t0 = time.perf_counter()
    info = bundle.info
    names, task = tuple(info.modality_names), info.task
    total = 2 * len(runs)

    def enc_progress(done, _total, text):
        if progress is not None:
            progress(done, total, text)

    rob = compute_robustness(runs, bundle, split, progress=enc_progress, check=check)
    prior, _ = train_prior_of(bundle, task, len(info.class_names) if task != "regression" else 1)
    study = CalibrationStudy(split=split, task=task, modality_names=names, runs=list(rob.runs), tables={},
                             attribution={}, subsets=[n for n, _ in rob.subsets], skipped=list(rob.skipped))
    for k, run in enumerate(rob.runs):
        if check is not None:
            check()
        if progress is not None:
            progress(len(runs) + k, total, f"calibration of {run.label}")
        enc = rob.encodings[run.label]
        try:
            study.tables[run.label] = calibration_table(enc, names, task)
        except NotApplicable as e:
            study.note = str(e)
        study.attribution[run.label] = attribution_summary(enc, prior, names, task, tuple(info.class_names),
                                                           should_stop=_guard(check))
    if progress is not None:
        progress(total, total, "done")
    study.seconds = time.perf_counter() - t0
    return study


# --- the dataset's PID beside the model's Z/U split ------------------------------------------------------------


class PIDCache:
    """The PID of a dataset's modality pairs, in memory, keyed by (dataset fingerprint, pairs, clusters): a
    dataset is estimated once per app session (thread-safe; the estimate takes seconds to minutes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple, list[PairPID]] = {}

    @staticmethod
    def key(bundle, pairs, clusters=None) -> tuple:
        return (bundle.fingerprint(), tuple(tuple(p) for p in pairs), clusters)

    def get(self, key: tuple) -> list[PairPID] | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple, value: list[PairPID]) -> None:
        with self._lock:
            self._items[key] = list(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


PID_CACHE = PIDCache()  # one per app session


@dataclass
class ExplainResult:
    """What the dataset-PID view shows: the PID per pair, and the current model's Z/U split and φ summary."""
    dataset: str
    fingerprint: str
    modality_names: tuple[str, ...]
    pid: list[PairPID]
    pid_cached: bool  # the PID came from the cache (no estimate ran)
    split: str
    z_norm: list[float]  # mean ‖Z^i‖ over the split's samples where modality i is present
    u_norm: list[float]
    attribution: AttributionSummary | None
    pid_seconds: float = 0.0
    seconds: float = 0.0


def compute_explain(loaded, bundle, split: str = "test", cache: PIDCache | None = None, *,
                    pairs: list[tuple[str, str]] | None = None, clusters: int | None = None,
                    progress: Callable[[int, int, str], None] | None = None,
                    check: Callable[[], None] | None = None) -> ExplainResult:
    """The dataset's PID (every pair unless `pairs`; from `cache` when it has it) and the model's Z/U norms and
    attribution summary on `split`. `progress(done, total, text)`: one step per pair, one for the model."""
    from robult_engine.evaluation import encode_split
    t0 = time.perf_counter()
    info = bundle.info
    names = tuple(info.modality_names)
    pairs = list(pairs) if pairs else all_pairs(names)
    total = len(pairs) + 1
    cache = PID_CACHE if cache is None else cache
    key = cache.key(bundle, pairs, clusters)
    pid = cache.get(key)
    cached = pid is not None
    if pid is None:
        def on_pair(done, n):
            if progress is not None:
                progress(done, total, f"PID {done}/{n} pairs")
        if progress is not None:
            progress(0, total, "PID of the first pair")
        pid = dataset_pid(bundle, pairs, clusters=clusters, should_stop=_guard(check), progress=on_pair)
        cache.put(key, pid)
    t_pid = time.perf_counter() - t0
    if check is not None:
        check()
    if progress is not None:
        progress(len(pairs), total, f"encoding the {split} split")
    if split not in bundle.splits:
        raise ValueError(f"{info.name} has no {split!r} split")
    enc = encode_split(loaded.model, bundle.splits[split], with_latents=True)
    m = enc.mask.double()  # (N, M)
    cnt = m.sum(0).clamp(min=1)
    zn = (enc.z.double().norm(dim=-1) * m).sum(0) / cnt
    un = (enc.u.double().norm(dim=-1) * m).sum(0) / cnt
    task = info.task
    prior, _ = train_prior_of(bundle, task, len(info.class_names) if task != "regression" else 1)
    summary = attribution_summary(enc, prior, names, task, tuple(info.class_names), should_stop=_guard(check))
    if progress is not None:
        progress(total, total, "done")
    return ExplainResult(dataset=info.name, fingerprint=bundle.fingerprint(), modality_names=names, pid=pid,
                         pid_cached=cached, split=split, z_norm=zn.tolist(), u_norm=un.tolist(),
                         attribution=summary, pid_seconds=t_pid, seconds=time.perf_counter() - t0)


__all__ = ["CalibrationStudy", "ExplainResult", "PIDCache", "PID_CACHE", "SamplePhi", "compute_calibration",
           "compute_explain", "sample_phi", "train_prior_of"]
