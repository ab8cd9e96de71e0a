"""One sample from a user's own files, shaped like a dataset's modalities (for the app's "try your own" panel).

`sample_from_sources(info, {"image": "photo.jpg", "audio": "me.wav"})` returns a one-sample SplitData that a
model trained on `info` can consume: images resized to the modality's (C, H, W) (a handwritten-digit photo is
converted to the optdigits form for the AV-Digits shape (1, 8, 8)), audio turned into standardised MFCC frames
padded/truncated to the modality's T_max, `.npy` files for vector/sequence modalities, and the text itself
for text modalities. Modalities not given get mask 0. The target is a placeholder (0 / zeros).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import DataError, DatasetInfo, ModalitySpec, SplitData


def _sequence_from_file(spec: ModalitySpec, path: Path) -> np.ndarray:
    from .audio import AUDIO_EXTENSIONS, audio_file_to_features

    suffix = path.suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        feats = audio_file_to_features(path)  # (T, 13)
    elif suffix == ".npy":
        feats = _load_npy(path, 2)
    else:
        raise DataError(f"{path}: modality {spec.name!r} takes an audio file (.wav/.flac) or a (T, D) .npy array")
    if feats.shape[1] != spec.shape[1]:
        raise DataError(f"{path}: gives {feats.shape[1]} features per frame, but modality {spec.name!r} has "
                        f"{spec.shape[1]}")
    return feats


def _load_npy(path: Path, ndim: int) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if a.dtype.kind not in "biuf" or a.ndim != ndim or a.shape[0] == 0:
        raise DataError(f"{path}: expected a non-empty numeric array with {ndim} dimension(s), got shape "
                        f"{a.shape} and dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{path}: holds NaN or infinite values")
    return a


def sample_from_sources(info: DatasetInfo, sources: dict[str, str], *, text_buckets: int = 2 ** 15) -> SplitData:
    """Build a one-sample SplitData from file paths (or, for text modalities, the text itself).

    `text_buckets` must match the model's ModelConfig.text_buckets. Raises DataError for an unknown modality
    name, an unreadable file, a shape that does not fit the modality, or when no modality is given.
    """
    unknown = [k for k in sources if k not in info.modality_names]
    if unknown:
        raise DataError(f"unknown modality {unknown[0]!r}; {info.name} has {', '.join(info.modality_names)}")
    inputs: dict[str, torch.Tensor] = {}
    lengths: dict[str, torch.Tensor] = {}
    mask = torch.zeros(1, info.num_modalities, dtype=torch.bool)  # (1, M)
    for m, spec in enumerate(info.modalities):
        value = sources.get(spec.name)
        given = value is not None and str(value).strip() != ""
        if spec.kind == "image":
            x = torch.zeros(1, *spec.shape)  # (1, C, H, W)
            if given:
                from .image import load_image
                x[0] = load_image(Path(str(value)), spec.shape)  # type: ignore[arg-type]
        elif spec.kind == "sequence":
            t_max, d = spec.shape
            x = torch.zeros(1, t_max, d)  # (1, T_max, D)
            lengths[spec.name] = torch.ones(1, dtype=torch.long)
            if given:
                feats = _sequence_from_file(spec, Path(str(value)))[:t_max]  # truncate to the modality's T_max
                x[0, :len(feats)] = torch.from_numpy(feats)
                lengths[spec.name][0] = len(feats)
        elif spec.kind == "vector":
            x = torch.zeros(1, spec.shape[0])  # (1, D)
            if given:
                a = _load_npy(Path(str(value)), 1)
                if a.shape[0] != spec.shape[0]:
                    raise DataError(f"{value}: vector of size {a.shape[0]}, modality {spec.name!r} needs {spec.shape[0]}")
                x[0] = torch.from_numpy(a)
        elif spec.kind == "text":
            from .text import hash_ngrams
            x = torch.zeros(1, spec.shape[0], dtype=torch.long)  # (1, L)
            lengths[spec.name] = torch.ones(1, dtype=torch.long)
            if given:
                ids = hash_ngrams(str(value), buckets=text_buckets, max_len=spec.shape[0])
                if len(ids) == 0:
                    raise DataError(f"modality {spec.name!r}: the text has no words")
                x[0, :len(ids)] = ids
                lengths[spec.name][0] = len(ids)
        else:
            raise DataError(f"modality {spec.name!r} has unknown kind {spec.kind!r}")
        inputs[spec.name] = x
        mask[0, m] = given
    if not mask.any():
        raise DataError(f"give at least one of {', '.join(info.modality_names)}")
    if info.task == "single-label":
        target = torch.zeros(1, dtype=torch.long)  # (1,) placeholder
    elif info.task == "multi-label":
        target = torch.zeros(1, len(info.class_names))  # (1, C) placeholder
    else:
        target = torch.zeros(1)  # (1,) placeholder
    ids = [" + ".join(Path(str(v)).name if info.spec(k).kind != "text" else "text" for k, v in sources.items() if v)]
    return SplitData(inputs=inputs, lengths=lengths, mask=mask, target=target, ids=ids)
