"""Checkpoints: a versioned dict of state dicts + the config as plain data.

Written to a temporary file in the same folder and renamed (atomic), loaded with
`torch.load(weights_only=True)`, which runs no pickled code: a file that tries is refused.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, RunConfig
from .data.base import DatasetInfo

FORMAT = "robult-checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "config", "info", "labeled_indices", "fingerprint", "model")
OPTIONAL = ("memory", "epoch", "metrics", "training_state")


class CheckpointError(ValueError):
    """The file is not a usable Robult checkpoint; the message names the file and the reason."""


class UntrustedCodeError(CheckpointError):
    """The checkpoint's config names encoder code outside robult_engine (`model.encoders`), and the caller did
    not trust it: nothing was imported. `.modules` lists the module names (for a dialog that names them),
    `.source` is the checkpoint file (or the config field) that names them."""

    def __init__(self, source: str, modules: list[str] | tuple[str, ...]) -> None:
        self.source = str(source)
        self.modules = list(modules)
        names = ", ".join(self.modules)
        super().__init__(
            f"{self.source}: uses encoder code from outside Robult Studio (model.encoders): module"
            f"{'s' if len(self.modules) > 1 else ''} {names}. Loading it would import and run that code, so "
            f"nothing was imported. If you trust {names}, load it with --trust-code (robult eval, robult train "
            f"--resume) or model_from_checkpoint(ckpt, trust_code=True).")

    def __reduce__(self):  # picklable across processes despite the custom __init__
        return (type(self), (self.source, self.modules))


@dataclass
class Checkpoint:
    path: str
    config: RunConfig
    info: DatasetInfo
    labeled_indices: torch.Tensor
    fingerprint: str
    model_state: dict[str, torch.Tensor]
    memory_state: dict[str, torch.Tensor] = field(default_factory=dict)
    epoch: int = -1
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"val": {...}, "test": {...}, "best_score": ..}
    training_state: dict[str, Any] = field(default_factory=dict)  # optimizer, scheduler, rng, counters (resume)


def save_checkpoint(path: str | os.PathLike, *, model_state: dict, config: RunConfig, info: DatasetInfo,
                    labeled_indices: torch.Tensor, fingerprint: str, memory_state: dict | None = None,
                    epoch: int = -1, metrics: dict | None = None, training_state: dict | None = None) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_json(),
        "info": json.dumps(info.to_dict()),
        "labeled_indices": labeled_indices.detach().cpu().long(),
        "fingerprint": fingerprint,
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "memory": {k: v.detach().cpu() for k, v in (memory_state or {}).items()},
        "epoch": int(epoch),
        "metrics": json.dumps(metrics or {}),
        "training_state": training_state or {},
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a Robult checkpoint (not a PyTorch zip archive)")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused — the file holds pickled code or objects that a Robult checkpoint "
                              f"never contains, so it was not loaded ({first})") from None
    except Exception as e:  # truncated archive, wrong records, ...
        raise CheckpointError(f"{path}: could not be read as a checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a Robult checkpoint (a PyTorch file of another kind)")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    if raw["version"] != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {raw['version']} is not supported "
                              f"(this Robult Studio reads version {VERSION})")
    unknown = sorted(str(k) for k in raw if k not in REQUIRED + OPTIONAL)
    if unknown:
        raise CheckpointError(f"{path}: damaged checkpoint, unexpected entries {', '.join(unknown)}")
    idx = raw["labeled_indices"]
    if not (isinstance(idx, torch.Tensor) and idx.dim() == 1 and not idx.is_floating_point()):
        raise CheckpointError(f"{path}: damaged checkpoint, labeled_indices is not a 1-D integer tensor")
    for key in ("model", "memory"):
        state = raw.get(key, {})
        if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
            raise CheckpointError(f"{path}: damaged checkpoint, {key} is not a dict of tensors")
    try:
        config = RunConfig.from_json(raw["config"])
        info = DatasetInfo.from_dict(json.loads(raw["info"]))
        metrics = json.loads(raw.get("metrics", "{}"))
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({e})") from None
    return Checkpoint(path=str(path), config=config, info=info, labeled_indices=raw["labeled_indices"],
                      fingerprint=str(raw["fingerprint"]), model_state=raw["model"],
                      memory_state=raw.get("memory", {}), epoch=int(raw.get("epoch", -1)), metrics=metrics,
                      training_state=raw.get("training_state", {}))


def untrusted_modules(ckpt: Checkpoint) -> list[str]:
    """The modules outside robult_engine that rebuilding this checkpoint's model would import (its
    `model.encoders` factories), sorted; [] for a model of built-in encoders only. Imports nothing."""
    from .models.encoders import untrusted_modules as modules_of
    try:
        return modules_of(ckpt.config.model.encoders)
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.path}: damaged checkpoint metadata ({e})") from None


def require_trust(ckpt: Checkpoint, trust_code: bool) -> None:
    """Raise `UntrustedCodeError` naming the modules when the checkpoint names outside code and `trust_code`
    is false; do nothing otherwise. Imports nothing."""
    modules = untrusted_modules(ckpt)
    if modules and not trust_code:
        raise UntrustedCodeError(ckpt.path, modules)


def model_from_checkpoint(ckpt: Checkpoint, trust_code: bool = False):
    """Rebuild the trained model (eval mode, CPU) from a loaded checkpoint; strict about keys.

    A checkpoint whose `model.encoders` names code outside robult_engine raises `UntrustedCodeError` (with
    `.modules`) before anything is imported, unless `trust_code` is true: opening a file never runs code the
    user did not choose."""
    from .models.robult import build_model
    require_trust(ckpt, trust_code)
    try:
        model = build_model(ckpt.config.model, ckpt.info, rec_route=ckpt.config.loss.rec_route,
                            trust_code=trust_code)
    except ConfigError as e:  # a factory that is gone, fails or returns no module: name the file too
        raise CheckpointError(f"{ckpt.path}: cannot rebuild the model ({e})") from None
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.path}: the weights do not match the model the config describes ({e})") from None
    model.eval()
    return model
