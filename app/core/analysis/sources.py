"""Qt-free loading of the explorer's sample: a dataset row or the user's own files, plus what to *show* of it.

`load_sample(ref, ...)` returns a `LoadedSample`: the one-row SplitData the model consumes and, per modality,
a `ModalityView` in the form a person wants to see (the image, the waveform and MFCC frames, the text). The
conversion of files into model inputs is the data engineer's `robult_engine.data.frontends`; this module only
decides which file goes to which modality and keeps the raw signal for display. Errors are `DataError`s
naming the file and what was expected; they never leave a half-loaded sample behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robult_engine.data.base import DataError, DatasetBundle, DatasetInfo, SplitData

from app.core.explorer_state import SampleRef

AUDIO_EXT = (".wav", ".flac", ".ogg", ".aiff", ".aif")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TEXT_EXT = (".txt",)
ARRAY_EXT = (".npy",)
MAX_TEXT_FILE = 1 << 20  # a dropped .txt larger than 1 MiB is not a caption


@dataclass(frozen=True)
class ModalityView:
    """What the sample panel draws for one modality."""
    name: str
    kind: str  # "image" | "sequence" | "vector" | "text"
    present: bool
    image: np.ndarray | None = None  # (H, W) grey or (H, W, 3|4) in [0, 1]
    frames: np.ndarray | None = None  # (T, D) sequence features (MFCC for audio), valid frames only
    waveform: np.ndarray | None = None  # (n,) the recording as the front-end read it (files only)
    sample_rate: int = 0
    vector: np.ndarray | None = None  # (D,)
    text: str = ""  # typed text, or a note for hashed ids
    source: str = ""  # file path, "typed text" or "dataset"


@dataclass(frozen=True)
class LoadedSample:
    ref: SampleRef
    data: SplitData  # one row, the model's input
    views: tuple[ModalityView, ...]
    title: str
    target: int | None = None  # the true class (dataset samples, single-label)
    target_name: str = ""
    labeled: bool = False  # a training sample that kept its label in the run
    extra: dict = field(default_factory=dict)


def _is_audio_modality(info: DatasetInfo, name: str) -> bool:
    spec = info.spec(name)
    return spec.kind == "sequence" and ("audio" in name.lower() or spec.feature_dim == 13)


def assign_paths(info: DatasetInfo, paths: list[str] | tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """Decide which modality each dropped/opened file feeds, by its extension and the modalities' kinds.

    Returns (files {modality: path}, texts {modality: text read from a .txt}). Raises DataError for a file
    type no modality of this model takes, or two files for one modality.
    """
    files: dict[str, str] = {}
    texts: dict[str, str] = {}
    kinds = {m.name: m.kind for m in info.modalities}

    def pick(candidates: list[str], p: Path, what: str) -> str:
        free = [c for c in candidates if c not in files and c not in texts]
        if not candidates:
            raise DataError(f"{p}: {what} file, but this model's modalities ({', '.join(info.modality_names)}) "
                            f"take no {what}")
        if not free:
            raise DataError(f"{p}: a second {what} file; modality {candidates[0]!r} already has one")
        return free[0]

    for raw in paths:
        p = Path(raw)
        ext = p.suffix.lower()
        if ext in AUDIO_EXT:
            cands = [n for n in info.modality_names if _is_audio_modality(info, n)]
            files[pick(cands, p, "audio")] = str(p)
        elif ext in IMAGE_EXT:
            files[pick([n for n, k in kinds.items() if k == "image"], p, "image")] = str(p)
        elif ext in TEXT_EXT:
            name = pick([n for n, k in kinds.items() if k == "text"], p, "text")
            if not p.is_file():
                raise DataError(f"{p}: no such file")
            if p.stat().st_size > MAX_TEXT_FILE:
                raise DataError(f"{p}: {p.stat().st_size} bytes is too long for a text input (at most 1 MiB)")
            try:
                texts[name] = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{p}: not UTF-8 text") from None
        elif ext in ARRAY_EXT:
            cands = [n for n, k in kinds.items() if k in ("vector", "sequence")]
            files[pick(cands, p, "array (.npy)")] = str(p)
        else:
            accepted = sorted({*(AUDIO_EXT if any(_is_audio_modality(info, n) for n in info.modality_names) else ()),
                               *(IMAGE_EXT if "image" in kinds.values() else ()),
                               *(TEXT_EXT if "text" in kinds.values() else ()),
                               *(ARRAY_EXT if {"vector", "sequence"} & set(kinds.values()) else ())})
            raise DataError(f"{p}: unsupported file type {ext or '(none)'}; this model takes "
                            f"{', '.join(accepted) or 'no files'}")
    return files, texts


def _dataset_view(info: DatasetInfo, split: SplitData, name: str) -> ModalityView:
    m = info.modality_names.index(name)
    spec = info.spec(name)
    present = bool(split.mask[0, m])
    x = split.inputs[name][0]
    if spec.kind == "image":
        img = (x.float() / 255.0 if not x.is_floating_point() else x.float()).numpy()  # (C, H, W) in [0, 1]
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
        return ModalityView(name, "image", present, image=img, source="dataset")
    if spec.kind == "sequence":
        n = int(split.lengths[name][0]) if name in split.lengths else x.shape[0]
        return ModalityView(name, "sequence", present, frames=x[:n].float().numpy(), source="dataset")
    if spec.kind == "vector":
        return ModalityView(name, "vector", present, vector=x.float().numpy(), source="dataset")
    raw = split.texts.get(name)
    if raw:  # the loader kept the text as read
        return ModalityView(name, "text", present, text=raw[0] if present else "", source="dataset")
    n = int(split.lengths[name][0]) if name in split.lengths else int((x != 0).sum())
    return ModalityView(name, "text", present, text=f"({n} hashed word n-gram ids; this dataset format keeps no "
                                                    f"raw text)", source="dataset")


def load_dataset_sample(bundle: DatasetBundle, split: str, index: int,
                        labeled_indices: torch.Tensor | list[int] | None = None) -> LoadedSample:
    if split not in bundle.splits:
        raise DataError(f"{bundle.info.name}: no {split!r} split (it has {', '.join(bundle.splits)})")
    data = bundle.splits[split]
    if not 0 <= index < len(data):
        raise DataError(f"{bundle.info.name}: {split} has {len(data)} samples, no #{index}")
    row = data.subset([index])
    info = bundle.info
    views = tuple(_dataset_view(info, row, n) for n in info.modality_names)
    target = target_name = None
    if info.task == "single-label":
        target = int(row.target[0])
        target_name = info.class_names[target]
    elif info.task == "multi-label":
        target_name = "{" + ", ".join(c for c, v in zip(info.class_names, row.target[0].tolist()) if v > 0.5) + "}"
    else:
        target_name = f"{float(row.target[0]):+.3f}"
    labeled = False
    if split == "train" and labeled_indices is not None:
        labeled = index in set(torch.as_tensor(labeled_indices).reshape(-1).tolist())
    sid = row.ids[0] if row.ids else ""
    title = f"{split} #{index}" + (f" · {sid}" if sid else "")
    return LoadedSample(SampleRef.dataset(split, index), row, views, title, target, target_name or "", labeled)


def load_file_sample(info: DatasetInfo, ref: SampleRef, text_buckets: int = 2 ** 15) -> LoadedSample:
    """A sample from the user's files and typed text (modalities not given are missing: mask 0)."""
    from robult_engine.data.frontends import sample_from_sources

    files, texts = dict(ref.files), dict(ref.texts)
    sources = {**files, **texts}
    data = sample_from_sources(info, sources, text_buckets=text_buckets)
    views = []
    for m, spec in enumerate(info.modalities):
        present = bool(data.mask[0, m])
        base = _dataset_view(info, data, spec.name)
        src = files.get(spec.name, "typed text" if spec.name in texts else "")
        if spec.kind == "text":
            views.append(ModalityView(spec.name, "text", present, text=texts.get(spec.name, ""), source=src))
            continue
        wave, sr = None, 0
        if spec.kind == "sequence" and present and Path(src).suffix.lower() in AUDIO_EXT:
            from robult_engine.data.audio import load_audio, trim_silence
            sig, sr = load_audio(src)
            wave = trim_silence(sig, sr).astype(np.float32)  # what the MFCC front-end saw
        views.append(ModalityView(spec.name, base.kind, present, image=base.image, frames=base.frames,
                                  vector=base.vector, waveform=wave, sample_rate=sr, source=src))
    return LoadedSample(ref, data, tuple(views), title=ref.label())


def load_sample(ref: SampleRef, info: DatasetInfo, bundle: DatasetBundle | None, *,
                labeled_indices=None, text_buckets: int = 2 ** 15) -> LoadedSample:
    if ref.is_dataset:
        if bundle is None:
            raise DataError(f"the dataset {info.name!r} is not loaded, so {ref.label()} cannot be shown")
        return load_dataset_sample(bundle, ref.split, ref.index, labeled_indices)
    return load_file_sample(info, ref, text_buckets)
