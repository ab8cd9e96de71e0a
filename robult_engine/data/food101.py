"""UPMC Food-101 (Wang et al., 2015): recipe-page titles + food photos, 101 classes, single-label.

Layout: ``images/{train,test}/<class>/<file>.jpg`` and ``texts/{train,test}_titles.csv`` whose rows are
``<file>.jpg,<title text>,<class>`` (no header; a header row is skipped if present). A CSV row whose image is
absent on disk has its image missing; an image on disk without a CSV row has its text missing. There is no
official validation split: `VAL_FRACTION` of train (at most `VAL_MAX`, as MMBT's 5,000) is held out,
stratified by class, with seed `SEED`.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .base import DataError, DatasetBundle, DatasetInfo, ModalitySpec
from .loading import IMAGE_SHAPE, stratified_holdout, text_image_splits

SEED = 0
VAL_FRACTION = 0.1
VAL_MAX = 5000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LICENCE = "UPMC Food-101 (Wang et al., 2015): research use; images and texts belong to their web sources."


def _read_titles(csv_path: Path, classes: set[str]) -> list[tuple[str, str, str, int]]:
    """Rows (image file name, text, class, row number) of a *_titles.csv file."""
    rows = []
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            for row_no, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) < 3:
                    raise DataError(f"{csv_path}, row {row_no}: expected 3 columns (image file, text, class), "
                                    f"got {len(row)}")
                image, label = row[0].strip(), row[-1].strip()
                text = ",".join(row[1:-1])  # an unquoted comma inside the title
                if row_no == 1 and label not in classes and not image.lower().endswith(IMAGE_SUFFIXES):
                    continue  # a header row
                if label not in classes:
                    raise DataError(f"{csv_path}, row {row_no}: class {label!r} has no folder under images/ "
                                    f"(known classes: {len(classes)})")
                rows.append((image, text, label, row_no))
    except FileNotFoundError:
        raise DataError(f"{csv_path}: missing; UPMC Food-101 needs texts/train_titles.csv and "
                        f"texts/test_titles.csv") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: not a readable CSV file ({e})") from None
    return rows


def _collect(root: Path, split: str, classes: list[str]) -> tuple[list[str | None], list[Path | None],
                                                                  list[int], list[str]]:
    """Texts, image paths, class indices and ids of one official split."""
    class_index = {c: i for i, c in enumerate(classes)}
    rows = _read_titles(root / "texts" / f"{split}_titles.csv", set(classes))
    texts: list[str | None] = []
    images: list[Path | None] = []
    labels: list[int] = []
    ids: list[str] = []
    seen: set[tuple[str, str]] = set()
    for image, text, label, _ in rows:
        if (label, image) in seen:
            continue
        seen.add((label, image))
        path = root / "images" / split / label / image
        texts.append(text if text.strip() else None)
        images.append(path if path.is_file() else None)
        labels.append(class_index[label])
        ids.append(f"{label}/{image}")
    for label in classes:  # photos without a title
        folder = root / "images" / split / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and (label, path.name) not in seen:
                texts.append(None)
                images.append(path)
                labels.append(class_index[label])
                ids.append(f"{label}/{path.name}")
    for j, (t, p) in enumerate(zip(texts, images)):
        if t is None and p is None:
            raise DataError(f"{root}: sample {ids[j]!r} ({split}) has neither a title nor an image on disk")
    if not labels:
        raise DataError(f"{root}: the {split} split is empty")
    return texts, images, labels, ids


def load_food101(root: Path) -> DatasetBundle:
    """Load UPMC Food-101 with a seeded, stratified validation split carved from train."""

    root = Path(root)
    train_dir = root / "images" / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root}: missing images/train/<class>/ folders")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{train_dir}: found {len(classes)} class folder(s); need at least 2")
    raw = {s: _collect(root, s, classes) for s in ("train", "test")}
    labels_train = raw["train"][2]
    held = stratified_holdout(labels_train, VAL_FRACTION, seed=SEED, max_size=VAL_MAX)
    parts: dict[str, tuple[list, list, list, list]] = {}
    for name, keep in (("train", ~held), ("val", held)):
        idx = np.nonzero(keep)[0]
        parts[name] = tuple([seq[i] for i in idx] for seq in raw["train"])  # type: ignore[assignment]
    parts["test"] = raw["test"]
    if not parts["val"][2]:
        raise DataError(f"{root}: too few training samples to carve a validation split")
    splits, width = text_image_splits(parts)
    info = DatasetInfo(
        name="food-101", modalities=(ModalitySpec("text", "text", (width,)), ModalitySpec("image", "image", IMAGE_SHAPE)),
        task="single-label", class_names=tuple(classes),
        description=(f"UPMC Food-101 ({root}): hashed recipe titles and {IMAGE_SHAPE[1]}x{IMAGE_SHAPE[2]} photos, "
                     f"{len(classes)} classes; {len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} "
                     f"train/val/test (val carved from train, seed {SEED})."),
        licence=LICENCE)
    return DatasetBundle(info, splits)
