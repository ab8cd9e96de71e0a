"""Feature-Synth: two views of pre-extracted, high-dimensional features, as a user with CLIP/BERT-style
embeddings brings them, with a multi-label, regression or single-label target.

Hidden factors per sample: a shared part s (16 dims, seen by both views) and one unique part per view (8 dims
each). View a is a fixed random linear map of [s, u_a] into `dim` features (768 by default) plus Gaussian
noise, scaled to the small magnitudes such embeddings have (per-feature standard deviation about 0.05); view b
the same of [s, u_b]. The target reads all three parts, so each view alone loses what only the other holds:

- multi-label: `labels` genre-like flags, flag k on where a fixed linear score of [s, u_a, u_b] exceeds its
  88th percentile (about 12 % positives per flag, about 2.8 flags per sample, some samples with none);
- regression: one linear score of [s, u_a, u_b], standardised, plus noise (standard deviation 0.1);
- single-label: the arg-max of `labels` linear scores.

A linear model reaches a high score from a few hundred labels, so a method that learns less than that from
5 % of the labels lost signal on the way (what this dataset was made to show). The data are generated from a
fixed seed (0), so every run seed sees the same samples; the run seed draws the labeled indices and the model.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import DatasetBundle, DatasetInfo, ModalitySpec, SplitData

TASKS = ("multi-label", "regression", "single-label")
SHARED, UNIQUE = 16, 8
SCALE = 0.05  # per-feature standard deviation of the views, like L2-normalised 768-d embeddings (≈ 1/√768·1.4)


def make_feature_synth(n_train: int = 3000, task: str = "multi-label", labels: int = 23, dim: int = 768,
                       seed: int = 0) -> DatasetBundle:
    if task not in TASKS:
        raise ValueError(f"feature-synth: task must be one of {', '.join(TASKS)}, got {task!r}")
    rng = np.random.default_rng(seed)
    n_val, n_test = max(50, n_train // 5), max(50, n_train // 3)
    n = n_train + n_val + n_test
    s = rng.normal(size=(n, SHARED))
    u_a, u_b = rng.normal(size=(n, UNIQUE)), rng.normal(size=(n, UNIQUE))
    factors = np.concatenate([s, u_a, u_b], axis=1)  # (n, 32)
    k = SHARED + UNIQUE
    views = {}
    for name, parts in (("a", [s, u_a]), ("b", [s, u_b])):
        mix = rng.normal(size=(k, dim)) / np.sqrt(k)
        x = np.concatenate(parts, axis=1) @ mix + rng.normal(size=(n, dim)) * 0.3
        views[name] = (x * SCALE).astype(np.float32)
    if task == "regression":
        w = rng.normal(size=factors.shape[1])
        score = factors @ w
        y = ((score - score.mean()) / score.std() + rng.normal(size=n) * 0.1).astype(np.float32)
        class_names: tuple[str, ...] = ("score",)
    else:
        w = rng.normal(size=(factors.shape[1], labels))
        scores = factors @ w  # (n, labels)
        if task == "multi-label":
            y = (scores > np.quantile(scores, 0.88, axis=0)).astype(np.float32)
        else:
            y = scores.argmax(axis=1).astype(np.int64)
        class_names = tuple(f"label{j:02d}" for j in range(labels))
    info = DatasetInfo(
        name="feature-synth", task=task, class_names=class_names,
        modalities=(ModalitySpec("a", "vector", (dim,)), ModalitySpec("b", "vector", (dim,))),
        description=(f"Feature-Synth: two {dim}-d views of shared and view-specific factors ({task}"
                     + (f", {labels} labels" if task != "regression" else "") + "), like pre-extracted embeddings"),
        licence="generated data (no licence needed)")
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    splits = {}
    for split, (lo, hi) in bounds.items():
        splits[split] = SplitData(
            inputs={name: torch.from_numpy(np.ascontiguousarray(v[lo:hi])) for name, v in views.items()},
            lengths={}, mask=torch.ones(hi - lo, 2, dtype=torch.bool), target=torch.from_numpy(y[lo:hi]),
            ids=[f"{split}-{i}" for i in range(hi - lo)])
    return DatasetBundle(info, splits)
