"""Hateful Memes (Kiela et al., 2020): meme image + its overlaid text, binary (hateful or not).

Layout: ``train.jsonl``, ``dev.jsonl`` or ``dev_seen.jsonl`` / ``dev_unseen.jsonl``, ``test.jsonl`` or
``test_seen.jsonl`` / ``test_unseen.jsonl``, each line ``{"id", "img": "img/<id>.png", "label": 0|1, "text"}``,
and the ``img/`` folder. Splits: train = train.jsonl; val = dev_seen, else dev, else dev_unseen; test = the
first *labelled* file of test_seen, test_unseen, test (the original test.jsonl has no labels), else
dev_unseen when it is not the val file; else half of val (seeded) becomes test.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import DataError, DatasetBundle, DatasetInfo, ModalitySpec
from .loading import IMAGE_SHAPE, stratified_holdout, text_image_splits

SEED = 0
CLASS_NAMES = ("not hateful", "hateful")
LICENCE = "Hateful Memes (Facebook AI, 2020): licensed for research under the dataset's own licence agreement."


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line; a malformed line is a DataError naming it."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {line_no}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}, line {line_no}: expected a JSON object, got {type(obj).__name__}")
                rows.append((line_no, obj))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    return rows


def _is_labelled(rows: list[tuple[int, dict]]) -> bool:
    return bool(rows) and all("label" in obj for _, obj in rows)


def _parse(path: Path, rows: list[tuple[int, dict]], root: Path) -> tuple[list[str | None], list[Path | None],
                                                                          list[int], list[str]]:
    texts: list[str | None] = []
    images: list[Path | None] = []
    labels: list[int] = []
    ids: list[str] = []
    for line_no, obj in rows:
        where = f"{path}, line {line_no}"
        missing = [k for k in ("id", "img", "label") if k not in obj]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)} (expected id, img, label, text)")
        label = obj["label"]
        if label not in (0, 1) or isinstance(label, bool):
            raise DataError(f"{where}: label must be 0 or 1, got {label!r}")
        img = root / str(obj["img"])
        if not img.is_file():
            raise DataError(f"{where}: image {obj['img']!r} does not exist ({img})")
        text = obj.get("text")
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: text must be a string, got {type(text).__name__}")
        texts.append(text if text and text.strip() else None)
        images.append(img)
        labels.append(int(label))
        ids.append(str(obj["id"]))
    return texts, images, labels, ids


def load_hateful_memes(root: Path) -> DatasetBundle:
    """Load the Hateful Memes folder (see module docstring for how splits are chosen)."""

    root = Path(root)
    files = {name: root / f"{name}.jsonl" for name in
             ("train", "dev_seen", "dev", "dev_unseen", "test_seen", "test_unseen", "test")}
    rows = {name: read_jsonl(p) for name, p in files.items() if p.is_file()}
    if "train" not in rows:
        raise DataError(f"{root}: missing train.jsonl")
    val_name = next((n for n in ("dev_seen", "dev", "dev_unseen") if n in rows), None)
    if val_name is None:
        raise DataError(f"{root}: missing dev.jsonl (or dev_seen.jsonl / dev_unseen.jsonl)")
    for name in ("train", val_name):
        if not _is_labelled(rows[name]):
            raise DataError(f"{files[name]}: every line needs a 'label' (0 or 1)")
    test_name = next((n for n in ("test_seen", "test_unseen", "test") if n in rows and _is_labelled(rows[n])), None)
    if test_name is None and "dev_unseen" in rows and val_name != "dev_unseen" and _is_labelled(rows["dev_unseen"]):
        test_name = "dev_unseen"
    parts = {"train": _parse(files["train"], rows["train"], root)}
    val = _parse(files[val_name], rows[val_name], root)
    note = ""
    if test_name is not None:
        parts["val"], parts["test"] = val, _parse(files[test_name], rows[test_name], root)
    else:  # no labelled test file: split the dev file in two, stratified and seeded
        held = stratified_holdout(val[2], 0.5, seed=SEED)
        if held.all() or not held.any():
            raise DataError(f"{root}: no labelled test file and too few dev samples to split into val and test")
        parts["val"] = tuple([seq[i] for i in np.nonzero(~held)[0]] for seq in val)  # type: ignore[assignment]
        parts["test"] = tuple([seq[i] for i in np.nonzero(held)[0]] for seq in val)  # type: ignore[assignment]
        note = f" No labelled test file: half of {val_name}.jsonl (seed {SEED}) is the test split."
    splits, width = text_image_splits(parts)
    info = DatasetInfo(
        name="hateful-memes",
        modalities=(ModalitySpec("text", "text", (width,)), ModalitySpec("image", "image", IMAGE_SHAPE)),
        task="single-label", class_names=CLASS_NAMES,
        description=(f"Hateful Memes ({root}): hashed meme text and {IMAGE_SHAPE[1]}x{IMAGE_SHAPE[2]} images; "
                     f"train.jsonl / {val_name}.jsonl / {test_name + '.jsonl' if test_name else 'half of dev'}: "
                     f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} train/val/test.{note}"),
        licence=LICENCE)
    return DatasetBundle(info, splits)
