"""Explanations of a trained model and of its data: calibration per modality subset, Shapley attribution over
modalities, and the partial information decomposition (PID) of a dataset's modality pairs.

Every function here is Qt-free and takes cached encodings (`evaluation.EncodedSplit`), tensors or a split, and
returns plain dataclasses of floats and lists, so a background job (the app) and the CLI call the same code.
The slow ones (`attribution_summary`, `dataset_pid`) accept a `should_stop()` and a `progress(done, total)`
callback; a stop raises `Cancelled`.

- `calibration`: ECE, adaptive ECE, Brier, NLL, reliability bins, per-subset temperature scaling and its side
  file beside the checkpoint (`best.pt` → `best.calibration.json`).
- `attribution`: exact Shapley values of the modalities for one sample or a whole split, from the
  per-modality logits (2^M recombinations, no re-encoding).
- `pid`: redundancy, uniqueness and synergy of a pair of modalities with respect to the target (the convex
  estimator of Liang et al., NeurIPS 2023), on k-means-discretised features. Needs scipy (the `explain` extra).
"""
from __future__ import annotations


class Cancelled(Exception):
    """A long explanation was stopped by its `should_stop()` callback."""


def check_stop(should_stop) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("stopped")


__all__ = ["Cancelled", "check_stop"]
