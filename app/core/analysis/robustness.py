"""Qt-free robustness computation: the metric of every modality subset for every run with a checkpoint on the
same dataset, from one encoding pass per run (what `robult eval` prints for each of them).

`compute_robustness(runs, bundle, split, progress=..., check=...)` is what the robustness panel runs in the
background; `progress(done, total, text)` and `check()` (raises to cancel) are optional hooks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robult_engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from robult_engine.data.base import DatasetBundle
from robult_engine.evaluation import EncodedSplit, encode_split, metrics_from_encoded, modality_subsets
from robult_engine.inspect import subset_predictions
from robult_engine.metrics import primary_metric

from app.core.analysis.task_language import subset_outputs, task_flips


@dataclass(frozen=True)
class RunRef:
    """A column of the matrix: a run of the session (or the model loaded from a file)."""
    run_id: int | None
    label: str  # e.g. "#3 robult"
    method: str
    checkpoint_path: str
    config_json: str = ""


@dataclass
class RobustnessResult:
    split: str
    task: str
    modality_names: tuple[str, ...]
    subsets: list[tuple[str, tuple[bool, ...]]]  # rows, as modality_subsets gives them
    runs: list[RunRef]  # columns (only those evaluated)
    tables: dict[str, dict[str, dict[str, float]]]  # run label -> subset -> metric -> value
    encodings: dict[str, EncodedSplit] = field(repr=False, default_factory=dict)  # run label -> per-modality logits
    configs: dict[str, dict] = field(default_factory=dict)  # run label -> config (plain data)
    skipped: list[str] = field(default_factory=list)  # "label: why"
    seconds: float = 0.0
    eval_seconds: dict[str, float] = field(default_factory=dict)  # run label -> encode + metrics time

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for t in self.tables.values():
            for row in t.values():
                for k in row:
                    if k not in names:
                        names.append(k)
        prim = primary_metric(self.task)
        return sorted(names, key=lambda k: (k != prim, k))

    def matrix(self, metric: str) -> np.ndarray:
        """(subsets, runs) values, NaN where a subset had no sample."""
        out = np.full((len(self.subsets), len(self.runs)), np.nan)
        for j, r in enumerate(self.runs):
            t = self.tables.get(r.label, {})
            for i, (name, _) in enumerate(self.subsets):
                v = t.get(name, {}).get(metric)
                if v is not None:
                    out[i, j] = float(v)
        return out

    def flips(self, run_label: str, subset: tuple[bool, ...]) -> np.ndarray:
        """Samples whose prediction under `subset` flips against all modalities, in the task's terms
        (`task_language`: class, label set by Jaccard distance, score by the target's σ)."""
        return task_flips(self.encodings[run_label], subset, self.task)

    def outputs(self, run_label: str, subset: tuple[bool, ...]) -> torch.Tensor:
        """(N, C) the subset's logits (scores for regression)."""
        return subset_outputs(self.encodings[run_label], subset)

    def predictions(self, run_label: str, subset: tuple[bool, ...]) -> torch.Tensor:
        return subset_predictions(self.encodings[run_label], subset, self.task)[0]


def compute_robustness(runs: list[RunRef], bundle: DatasetBundle, split: str = "test",
                       progress: Callable[[int, int, str], None] | None = None,
                       check: Callable[[], None] | None = None) -> RobustnessResult:
    t0 = time.perf_counter()
    info = bundle.info
    names = info.modality_names
    if split not in bundle.splits:
        raise ValueError(f"{info.name} has no {split!r} split")
    data = bundle.splits[split]
    fingerprint = bundle.fingerprint()
    res = RobustnessResult(split=split, task=info.task, modality_names=names, subsets=modality_subsets(names),
                           runs=[], tables={})
    total = len(runs)
    for k, run in enumerate(runs):
        if check is not None:
            check()
        if progress is not None:
            progress(k, total, f"evaluating {run.label}")
        t1 = time.perf_counter()
        try:
            ckpt = load_checkpoint(run.checkpoint_path)
        except CheckpointError as e:
            res.skipped.append(f"{run.label}: {e}")
            continue
        if tuple(ckpt.info.modality_names) != tuple(names):
            res.skipped.append(f"{run.label}: trained on modalities {', '.join(ckpt.info.modality_names)}, "
                               f"not {', '.join(names)}")
            continue
        if ckpt.fingerprint != fingerprint:
            res.skipped.append(f"{run.label}: trained on other data (fingerprint {ckpt.fingerprint}, "
                               f"this dataset {fingerprint})")
            continue
        try:
            model = model_from_checkpoint(ckpt)
        except CheckpointError as e:
            res.skipped.append(f"{run.label}: {e}")
            continue
        enc = encode_split(model, data, with_latents=False)
        res.tables[run.label] = metrics_from_encoded(enc, names, info.task)
        res.encodings[run.label] = enc
        res.configs[run.label] = ckpt.config.to_dict()
        res.runs.append(run)
        res.eval_seconds[run.label] = time.perf_counter() - t1
    if progress is not None:
        progress(total, total, "done")
    res.seconds = time.perf_counter() - t0
    return res


def runs_from_store(store, dataset: str, current=None) -> list[RunRef]:
    """The session's runs with an existing checkpoint on `dataset` (newest first), plus the current model when
    it is not one of them (a checkpoint opened from elsewhere)."""
    out: list[RunRef] = []
    seen_paths: set[str] = set()
    if store is not None:
        for r in store.list_runs():
            if not r.checkpoint_path or r.dataset != dataset or not Path(r.checkpoint_path).is_file():
                continue
            label = f"#{r.id} {r.method}" + (f" ({r.name})" if r.name else "")
            out.append(RunRef(r.id, label, r.method, r.checkpoint_path, r.config_json))
            seen_paths.add(str(Path(r.checkpoint_path).resolve()))
    # columns: Robult, its ablations, then the baselines (config.METHODS order), oldest run first
    from robult_engine.config import METHODS
    out.sort(key=lambda r: (METHODS.index(r.method) if r.method in METHODS else len(METHODS), r.run_id or 0))
    if current is not None and current.checkpoint_path and Path(current.checkpoint_path).is_file():
        if str(Path(current.checkpoint_path).resolve()) not in seen_paths:
            out.insert(0, RunRef(current.run_id, f"current ({current.config.method})", current.config.method,
                                 current.checkpoint_path, current.config.to_json()))
    return out
