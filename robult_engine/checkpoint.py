"""Checkpoints: a versioned dict of state dicts + the config as plain data.

Written to a temporary file in the same folder and renamed (atomic), loaded with
`torch.load(weights_only=True)`, which runs no pickled code: a file that tries is refused.

Integrity, checked on every load; a file that fails a check is refused with a CheckpointError naming it:
- Before anything is unpacked, the sizes the zip archive declares (`check_archive`): a member whose bytes inflate
  more than MAX_RATIO times to more than RATIO_FLOOR (a zip bomb), a stored member whose two declared sizes
  differ, or an archive that would unpack to more than MAX_UNPACKED_BYTES.
- Format version 2 holds a `digest`: SHA-256 over every other entry (`payload_digest`: tensors by name, dtype,
  shape and bytes, in sorted key order; the config, info, metrics and training state as written). A file changed
  after it was written (flipped bytes inside a weight tensor, an edited setting) no longer matches and is
  refused instead of loading other weights. Version 1 files, written before the digest, still load unchecked.
- The config (field types, the model section) and the dataset info (`DatasetInfo.from_dict`) are validated.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, RunConfig, _check_types
from .data.base import DatasetInfo
from .errors import CheckpointError, UntrustedCodeError  # defined in errors.py, importable from here too
from .models.encoders import not_trusted, untrusted_modules as modules_of
from .models.robult import build_model

FORMAT = "robult-checkpoint"
# 1: the first format; 2: adds `digest`, required from version 2 on. Both are read; version 2 is written.
VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED = ("format", "version", "config", "info", "labeled_indices", "fingerprint", "model")
OPTIONAL = ("memory", "epoch", "metrics", "training_state", "digest")

# Bounds on what an archive may unpack to, read from its zip directory before torch.load reads any record.
# torch.save stores every record uncompressed, so a compressed member is already unusual: one that inflates more
# than MAX_RATIO times its stored size to more than RATIO_FLOOR bytes is refused (a zip bomb: a 4 MB file that
# unpacks to 3 GB has a ratio of 750). MAX_UNPACKED_BYTES caps a whole checkpoint: far above the models Robult
# Studio trains (the default model with its optimizer state is a few MB; a text embedding of 2^15 buckets at the
# largest d_h, 8192, with its optimizer state, about 3 GiB).
MAX_RATIO = 100
RATIO_FLOOR = 64 * 2 ** 20
MAX_UNPACKED_BYTES = 16 * 2 ** 30


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
    payload["digest"] = payload_digest(payload)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(path)


def payload_digest(payload: dict) -> str:
    """"sha256:<hex>" over every entry of a checkpoint payload but `digest`: the same for the dict saved and the
    dict `torch.load` gives back, different as soon as any tensor byte, dtype, shape, name or value differs."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "digest"})
    return "sha256:" + h.hexdigest()


def _feed(h, obj: Any) -> None:
    """Hash `obj` unambiguously: a type tag, then a length or fixed-size encoding, then the content. Dicts in
    sorted key order; tensors by dtype, shape and their bytes in little-endian order (so the digest does not
    depend on the machine); numbers, text and None by value."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        t = (t.to_dense() if t.layout != torch.strided else t).cpu().resolve_conj().resolve_neg().contiguous()
        h.update(b"T" + f"{t.dtype}{tuple(t.shape)}".encode())
        raw = t.reshape(-1).view(torch.uint8)
        if sys.byteorder == "big" and t.element_size() > 1:
            raw = raw.view(-1, t.element_size()).flip(1).reshape(-1)
        h.update(struct.pack("<Q", raw.numel()))
        h.update(raw.numpy())
    elif obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, int):
        b = obj.to_bytes(obj.bit_length() // 8 + 1, "little", signed=True)
        h.update(b"I" + struct.pack("<Q", len(b)) + b)
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, (str, bytes)):
        b = obj.encode("utf-8", "surrogatepass") if isinstance(obj, str) else obj
        h.update((b"S" if isinstance(obj, str) else b"Y") + struct.pack("<Q", len(b)) + b)
    elif isinstance(obj, (list, tuple)):
        h.update((b"L" if isinstance(obj, list) else b"U") + struct.pack("<Q", len(obj)))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, dict):
        h.update(b"D" + struct.pack("<Q", len(obj)))
        for k, v in sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))):
            _feed(h, k)
            _feed(h, v)
    else:  # nothing Robult writes; a type the safe unpickler allows (torch.dtype, ...) by its repr
        h.update(b"O" + f"{type(obj).__module__}.{type(obj).__qualname__}:{obj!r}".encode("utf-8", "replace"))


def check_archive(path: Path) -> None:
    """Refuse a zip archive whose declared sizes are impossible or would unpack to too much (see MAX_RATIO,
    RATIO_FLOOR, MAX_UNPACKED_BYTES), reading only its directory."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except Exception as e:  # noqa: BLE001 - any unreadable directory is a damaged file
        raise CheckpointError(f"{path}: could not be read as a checkpoint (damaged zip archive: "
                              f"{type(e).__name__}: {e})") from None
    total = 0
    for m in members:
        name = repr(m.filename[-80:])
        if m.compress_type == zipfile.ZIP_STORED and m.file_size != m.compress_size:
            raise CheckpointError(f"{path}: refused — archive member {name} declares {m.file_size} bytes but "
                                  f"stores {m.compress_size} (a damaged or forged archive), so it was not loaded")
        if m.file_size > RATIO_FLOOR and m.file_size > MAX_RATIO * m.compress_size:
            raise CheckpointError(f"{path}: refused — archive member {name} would inflate from {m.compress_size} "
                                  f"to {m.file_size} bytes (ratio {m.file_size / max(1, m.compress_size):.0f}; a "
                                  f"member of more than {RATIO_FLOOR // 2 ** 20} MiB may inflate at most "
                                  f"{MAX_RATIO} times): a zip bomb or a damaged archive, so it was not loaded")
        total += m.file_size
    stored = sum(m.compress_size for m in members)
    if stored > size:
        raise CheckpointError(f"{path}: refused — the archive declares {stored} stored bytes but the file has "
                              f"{size} (a damaged or forged archive), so it was not loaded")
    if total > MAX_UNPACKED_BYTES:
        raise CheckpointError(f"{path}: refused — the archive would unpack to {total} bytes, more than the "
                              f"{MAX_UNPACKED_BYTES} a checkpoint may hold, so it was not loaded")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a Robult checkpoint (not a PyTorch zip archive)")
    check_archive(path)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused — the file holds pickled code or objects that a Robult checkpoint "
                              f"never contains, so it was not loaded ({first})") from None
    except Exception as e:  # truncated archive, wrong records, ...
        raise CheckpointError(f"{path}: could not be read as a checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("format"), str) or raw["format"] != FORMAT:
        raise CheckpointError(f"{path}: not a Robult checkpoint (a PyTorch file of another kind)")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    version = raw["version"]
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: checkpoint format version {str(version)[:20]} is not supported "
                              f"(this Robult Studio reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    unknown = sorted(str(k) for k in raw if k not in REQUIRED + OPTIONAL)
    if unknown:
        raise CheckpointError(f"{path}: damaged checkpoint, unexpected entries {', '.join(unknown)}")
    if version >= 2 and "digest" not in raw:
        raise CheckpointError(f"{path}: damaged checkpoint, missing digest (every version {version} checkpoint "
                              f"holds one)")
    if "digest" in raw:
        try:
            actual = payload_digest(raw)
        except Exception as e:  # noqa: BLE001 - a structure no saved checkpoint has (nested too deeply, ...)
            raise CheckpointError(f"{path}: damaged checkpoint, its contents cannot be checked "
                                  f"({type(e).__name__})") from None
        if not isinstance(raw["digest"], str) or raw["digest"] != actual:
            raise CheckpointError(f"{path}: weights damaged: digest mismatch — the weights or settings in the file "
                                  f"are not the ones that were saved (it was corrupted or changed after it was "
                                  f"written), so it was not loaded")
    idx = raw["labeled_indices"]
    if not (isinstance(idx, torch.Tensor) and idx.dim() == 1 and not idx.is_floating_point()):
        raise CheckpointError(f"{path}: damaged checkpoint, labeled_indices is not a 1-D integer tensor")
    for key in ("model", "memory"):
        state = raw.get(key, {})
        if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
            raise CheckpointError(f"{path}: damaged checkpoint, {key} is not a dict of tensors")
    for key, kind, what in (("epoch", int, "an integer"), ("fingerprint", str, "text"),
                            ("training_state", dict, "a dict")):
        if key in raw and not (isinstance(raw[key], kind) and not isinstance(raw[key], bool)):
            raise CheckpointError(f"{path}: damaged checkpoint, {key} is not {what}")
    try:
        config = RunConfig.from_json(raw["config"])
        _check_config(config)
        info = DatasetInfo.from_dict(json.loads(raw["info"]))
        metrics = json.loads(raw.get("metrics", "{}"))
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics: expected an object, got {type(metrics).__name__}")
    except (ConfigError, KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({e})") from None
    return Checkpoint(path=str(path), config=config, info=info, labeled_indices=raw["labeled_indices"],
                      fingerprint=str(raw["fingerprint"]), model_state=raw["model"],
                      memory_state=raw.get("memory", {}), epoch=int(raw.get("epoch", -1)), metrics=metrics,
                      training_state=raw.get("training_state", {}))


def _check_config(config: RunConfig) -> None:
    """What loading needs of a stored config: every field of its type (a hand-edited "d_h": "16" is refused) and
    a valid model section, which the model is rebuilt from. The value ranges of the other sections are checked
    where they are used (training validates the whole config), so a model stays loadable for evaluation."""
    _check_types(config, "")
    for section in ("data", "model", "loss", "train"):
        _check_types(getattr(config, section), section)
    config.model.validate()


def untrusted_modules(ckpt: Checkpoint) -> list[str]:
    """The modules outside robult_engine that rebuilding this checkpoint's model would import (its
    `model.encoders` factories), sorted; [] for a model of built-in encoders only. Imports nothing."""
    try:
        return modules_of(ckpt.config.model.encoders)
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.path}: damaged checkpoint metadata ({e})") from None


def require_trust(ckpt: Checkpoint, trust_code) -> None:
    """Raise `UntrustedCodeError` naming the modules that `trust_code` does not trust (see
    robult_engine/models/encoders.py: a collection of module names, or False) when the checkpoint names
    outside code; do nothing otherwise. Imports nothing."""
    refused = not_trusted(untrusted_modules(ckpt), trust_code)
    if refused:
        raise UntrustedCodeError(ckpt.path, refused)


def model_from_checkpoint(ckpt: Checkpoint, trust_code=False):
    """Rebuild the trained model (eval mode, CPU) from a loaded checkpoint; strict about keys.

    A checkpoint whose `model.encoders` names code outside robult_engine raises `UntrustedCodeError` (with
    `.modules`) before anything is imported, unless `trust_code` names every one of those modules (a
    collection of module names): opening a file never runs code the user did not name."""
    require_trust(ckpt, trust_code)
    try:
        model = build_model(ckpt.config.model, ckpt.info, rec_route=ckpt.config.loss.rec_route,
                            trust_code=trust_code, method=ckpt.config.method)
    except ConfigError as e:  # a factory that is gone, fails or returns no module: name the file too
        raise CheckpointError(f"{ckpt.path}: cannot rebuild the model ({e})") from None
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.path}: the weights do not match the model the config describes ({e})") from None
    model.eval()
    return model
