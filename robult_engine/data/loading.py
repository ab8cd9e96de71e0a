"""Helpers the dataset loaders share: image decoding, text hashing per split, text+image splits, and a
stratified hold-out. They import nothing from the loaders, so every loader can import them at module level
(format detection and dispatch live in formats.py, which imports the loaders).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import DataError, SplitData
from .text import DEFAULT_BUCKETS, DEFAULT_MAX_LEN, encode_texts

IMAGE_SHAPE = (3, 64, 64)  # modest fixed size for the paper datasets' images (C, H, W)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """A float image in [0, 1] as bytes 0..255 (rounded; at most 1/510 from the float value)."""
    return (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def load_images(paths: Sequence[Path | None], shape: tuple[int, int, int] = IMAGE_SHAPE,
                workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode image files in parallel threads → uint8 (N, C, H, W) (pixel values 0..255) and a bool presence (N,).

    Images are stored as bytes, a quarter of float32's memory (UPMC Food-101 at 3×64×64: 1.1 GB instead of
    4.4 GB); the image encoder reads uint8 input as value / 255, the [0, 1] range of `load_image`.
    A None path is a missing image (zeros, absent). A file that cannot be decoded raises the front-end's
    DataError naming it.
    """
    from .image import load_image

    out = torch.zeros(len(paths), *shape, dtype=torch.uint8)  # (N, C, H, W)
    present = torch.tensor([p is not None for p in paths], dtype=torch.bool)  # (N,)
    todo = [(i, p) for i, p in enumerate(paths) if p is not None]
    if not todo:
        return out, present
    workers = workers or min(8, os.cpu_count() or 1)

    def work(item: tuple[int, Path]) -> tuple[int, torch.Tensor]:
        return item[0], to_uint8(load_image(item[1], shape, digit=False))

    if workers <= 1 or len(todo) < 16:
        results = map(work, todo)
        for i, t in results:
            out[i] = t
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes with the GIL released
            for i, t in pool.map(work, todo, chunksize=32):
                out[i] = t
    return out, present


def encode_text_splits(texts: dict[str, Sequence[str | None]], buckets: int = DEFAULT_BUCKETS,
                       max_len: int = DEFAULT_MAX_LEN) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor,
                                                                                torch.Tensor]], int]:
    """Hash the texts of every split to one common width L.

    Returns {split: (ids (N, L), lengths (N,), present (N,) bool)} and L. A None or blank text is absent.
    """
    encoded = {s: encode_texts([t or "" for t in ts], buckets, max_len) for s, ts in texts.items()}
    width = max([1] + [int(ids.shape[1]) for ids, _ in encoded.values()])
    out = {}
    for s, (ids, lengths) in encoded.items():
        padded = torch.zeros(ids.shape[0], width, dtype=torch.long)  # (N, L)
        padded[:, :ids.shape[1]] = ids
        present = torch.tensor([bool(t and t.strip()) for t in texts[s]], dtype=torch.bool)
        out[s] = (padded, lengths, present)
    return out, width


def text_image_splits(parts: dict[str, tuple]) -> tuple[dict[str, SplitData], int]:
    """SplitData per split for the paper's text + image datasets (Food-101, Hateful Memes).

    parts: {split: (texts, image paths, int labels, ids)}. Returns the splits and the common text width L.
    """
    encoded, width = encode_text_splits({s: parts[s][0] for s in parts})
    splits = {}
    for s, (_texts, images, labels, ids) in parts.items():
        ids_t, lengths, text_present = encoded[s]
        img, img_present = load_images(images, IMAGE_SHAPE)
        splits[s] = SplitData(inputs={"text": ids_t, "image": img}, lengths={"text": lengths},
                              mask=torch.stack([text_present, img_present], dim=1),
                              target=torch.tensor(labels, dtype=torch.long), ids=list(ids),
                              texts={"text": [t or "" for t in _texts]})
    return splits, width


def stratified_holdout(labels: Sequence[object], fraction: float, seed: int = 0,
                       max_size: int | None = None) -> np.ndarray:
    """Pick a seeded, per-label-stratified hold-out: bool (N,) True for held-out samples.

    Each label group gives round(fraction × its size) samples (at least one when the group has ≥ 2 and no
    cap applies, never all of it); the total is capped at about `max_size`. Labels are any hashable (a class name, a tuple of genres …).
    """
    labels = list(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    groups: dict[object, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    scale = 1.0
    if max_size is not None and fraction * n > max_size:
        scale = max_size / (fraction * n)
    held = np.zeros(n, dtype=bool)
    for key in sorted(groups, key=repr):
        idx = np.array(groups[key])
        k = int(round(fraction * scale * len(idx)))
        if k == 0 and fraction > 0 and scale == 1.0:
            k = 1  # every label with ≥ 2 samples shows up in the hold-out
        k = min(k, len(idx) - 1)  # and keeps at least one sample for training
        held[rng.permutation(idx)[:k]] = True
    return held
