"""Qt-free missing-rate curves: the metric of every chosen run against the missing rate η of one mechanism, on
masks drawn by the engine (`robult_engine.missing.draw_masks`, a pure function of split, spec and mask seed) or
read from a saved mask file (`masks.npz` of `robult eval/compare/sweep`), so the numbers are those of
`robult eval CKPT --missing SPEC --mask-seed SEED`.

**η is the fraction of entries MISSING** (mcar:0.75 removes 75 % of the (sample, modality) entries in the draw;
a sample that would lose every modality gets one back, so the realised fraction, also reported, is lower).

`compute_missing_curves(runs, bundle, split, spec, mask_seed, ...)` is what the curves panel runs in the
background through the work contract: each run's split is encoded once (`encode_split`; a robustness result of
the same split and checkpoint is reused) and every setting is a recombination of the cached per-modality logits
under its mask (`metrics_under_masks`, the toggles' code path). `progress(done, total, text)` and `check()`
(raises to cancel) are optional hooks.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robult_engine.evaluation import EncodedSplit
from robult_engine.inspect import subset_predictions
from robult_engine.metrics import primary_metric
from robult_engine.missing import (MissingSpecError, draw_masks, expand, load_masks, metrics_under_masks,
                                   parse_missing, realised_missing)
from robult_engine.missing_spec import mechanism_names

from app.core.analysis.robustness import RobustnessResult, RunRef, compute_robustness
from app.core.analysis.task_language import subset_outputs, task_flips

CURVE_MECHANISMS = mechanism_names(curve=True)  # one rate per setting: a curve over η
DEFAULT_RATES = "0, 0.25, 0.5, 0.75"


def curve_spec(mechanism: str, rates_text: str, extra: str = "") -> str:
    """The engine's spec text for a mechanism and a list of rates ("0, 0.25, 0.5"), e.g. ``mcar:0,0.25,0.5``;
    `extra` is appended verbatim (e.g. ``@3+5``, the classes of mnar-class). Rates are fractions missing."""
    rates = ",".join(r.strip() for r in str(rates_text).replace(";", ",").split(",") if r.strip()) or ""
    return f"{mechanism.strip()}:{rates}{extra.strip()}"


def parse_curve_spec(text: str) -> list:
    """The settings of a curve spec; raises MissingSpecError (a message for the user) when it is not a grid of
    one-rate settings of mcar / mnar-class / mnar-value with rates in [0, 1) (fractions missing)."""
    specs = parse_missing(text, where="curve")
    for s in specs:
        if s.mechanism not in CURVE_MECHANISMS:
            raise MissingSpecError(f"curve {text}: a curve needs rates; use one of {', '.join(CURVE_MECHANISMS)}")
        if not math.isfinite(s.rate) or (s.mechanism != "mnar-class" and len(s.rates) != 1):
            raise MissingSpecError(f"curve {text}: give one rate per setting (the fraction missing), not one per "
                                   f"modality ({s.label})")
    return specs


@dataclass
class CurveResult:
    split: str
    task: str
    modality_names: tuple[str, ...]
    specs: list[str]  # spec labels, in the order of the curve (rising η)
    rates: list[float]  # the nominal η of each setting (the x axis)
    realised: list[float]  # the realised fraction missing of each mask (data's own absences included)
    masks: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # spec label -> (N, M) bool
    runs: list[RunRef] = field(default_factory=list)
    tables: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # run -> spec -> metric -> value
    encodings: dict[str, EncodedSplit] = field(repr=False, default_factory=dict)
    source: str = ""  # "drawn, mask seed 0" or the mask file
    mask_seed: int | None = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for t in self.tables.values():
            for row in t.values():
                names += [k for k in row if k not in names]
        prim = primary_metric(self.task)
        return sorted(names, key=lambda k: (k != prim, k))

    def curve(self, run_label: str, metric: str) -> np.ndarray:
        """(settings,) values, NaN where no sample was scored."""
        t = self.tables.get(run_label, {})
        return np.array([float(t.get(s, {}).get(metric, np.nan)) for s in self.specs])

    def flips(self, run_label: str, spec_label: str) -> np.ndarray:
        """Samples whose prediction under the setting's mask flips against all (present) modalities, in the
        task's terms (`task_language`)."""
        return task_flips(self.encodings[run_label], self.masks[spec_label], self.task)

    def outputs(self, run_label: str, spec_label: str | None) -> torch.Tensor:
        """(N, C) the logits (scores for regression) under the setting's mask, or with all modalities."""
        enc = self.encodings[run_label]
        mask = self.masks[spec_label] if spec_label is not None else (True,) * enc.mask.shape[1]
        return subset_outputs(enc, mask)

    def predictions(self, run_label: str, spec_label: str | None) -> torch.Tensor:
        enc = self.encodings[run_label]
        mask = self.masks[spec_label] if spec_label is not None else (True,) * enc.mask.shape[1]
        return subset_predictions(enc, mask, self.task)[0]


def curve_masks(bundle, split: str, spec_text: str, mask_seed: int = 0, masks_path: str | Path | None = None
                ) -> tuple[list[str], list[float], dict[str, torch.Tensor], str]:
    """(labels, rates, masks, source) of a curve: drawn from (split, spec, seed), or read from a mask file (then
    `spec_text` is ignored and every one-rate setting of the file is used, in rising η)."""
    data = bundle.splits[split]
    names = tuple(bundle.info.modality_names)
    if masks_path:
        loaded, meta = load_masks(masks_path, n=len(data), modality_names=names)
        pairs = []
        for label, m in loaded.items():
            try:
                (s,) = parse_missing(label, where=str(masks_path))
            except (MissingSpecError, ValueError):
                continue
            if s.mechanism in CURVE_MECHANISMS and math.isfinite(s.rate):
                pairs.append((s.rate, label, m))
        if not pairs:
            raise MissingSpecError(f"{masks_path}: no setting with one rate (mcar / mnar-class / mnar-value) in "
                                   f"the file ({', '.join(loaded)})")
        mechs = {lab.split(":", 1)[0] for _, lab, _ in pairs}
        if len(mechs) > 1:  # one curve, one mechanism: the first one of the file
            first = pairs[0][1].split(":", 1)[0]
            pairs = [p for p in pairs if p[1].startswith(first + ":")]
        pairs.sort(key=lambda p: p[0])
        if (meta.get("split") or split) != split:
            raise MissingSpecError(f"{masks_path}: masks of the {meta.get('split')} split, not {split}")
        return ([p[1] for p in pairs], [p[0] for p in pairs], {p[1]: p[2] for p in pairs},
                f"{Path(masks_path).name} (mask seed {meta.get('mask_seed')})")
    specs = sorted(expand(parse_curve_spec(spec_text), names), key=lambda s: s.rate)
    masks = draw_masks(data, bundle.info, specs, int(mask_seed))
    return [s.label for s in specs], [s.rate for s in specs], masks, f"drawn, mask seed {int(mask_seed)}"


def compute_missing_curves(runs: list[RunRef], bundle, split: str = "test", spec_text: str = "mcar:0,0.25,0.5,0.75",
                           mask_seed: int = 0, *, masks_path: str | Path | None = None,
                           cached: RobustnessResult | None = None,
                           progress: Callable[[int, int, str], None] | None = None,
                           check: Callable[[], None] | None = None) -> CurveResult:
    t0 = time.perf_counter()
    info = bundle.info
    if split not in bundle.splits:
        raise ValueError(f"{info.name} has no {split!r} split")
    labels, rates, masks, source = curve_masks(bundle, split, spec_text, mask_seed, masks_path)
    res = CurveResult(split=split, task=info.task, modality_names=tuple(info.modality_names), specs=labels,
                      rates=rates, realised=[realised_missing(masks[k]) for k in labels], masks=masks, source=source,
                      mask_seed=None if masks_path else int(mask_seed))
    total = len(runs)
    for k, run in enumerate(runs):
        if check is not None:
            check()
        if progress is not None:
            progress(k, total, f"{run.label}")
        enc = None
        if cached is not None and cached.split == split and run.label in cached.encodings \
                and any(r.label == run.label and r.checkpoint_path == run.checkpoint_path for r in cached.runs):
            enc = cached.encodings[run.label]  # the robustness tab encoded this run's split already
        else:
            one = compute_robustness([run], bundle, split, check=check)
            res.skipped += one.skipped
            enc = one.encodings.get(run.label)
        if enc is None:
            continue
        if check is not None:
            check()
        res.tables[run.label] = metrics_under_masks(enc, masks, info.task)
        res.encodings[run.label] = enc
        res.runs.append(run)
    if progress is not None:
        progress(total, total, "done")
    res.seconds = time.perf_counter() - t0
    return res
