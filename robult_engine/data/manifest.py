"""Your own data: a folder with ``manifest.csv`` or ``manifest.jsonl``.

Columns (CSV header, or JSONL keys):

- ``id`` — unique per row; ``split`` — ``train``, ``val`` or ``test`` (``valid``/``validation``/``dev`` mean
  val); ``label`` — the target; optionally ``task`` — ``single-label``, ``multi-label`` or ``regression``
  (the same in every row);
- every other column is a modality; its kind is inferred from its non-empty values: image paths
  (.png/.jpg/.jpeg/.bmp/…) → "image", audio paths (.wav/.flac) → "sequence" of standardised MFCC frames
  (audio.py), ``.npy`` paths → "vector" (1-D arrays) or "sequence" (2-D arrays (T, D)), anything else →
  "text" (hashed uni+bi-grams). Paths are relative to the manifest's folder. An empty cell is a missing
  modality for that sample.

Task when there is no ``task`` column: labels holding ``|`` → multi-label (``comedy|drama``); all labels
numeric with at least one non-integer → regression; otherwise single-label (class names sorted, numerically
when all are integers). Every class of val/test must occur in train.

If val is absent it is carved from train (10 %, stratified, seed 0); if test is absent, 20 % of train
likewise. Every problem is a DataError naming the file, the row (and line), and what was expected.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import DataError, DatasetBundle, DatasetInfo, ModalitySpec, SplitData
from .loading import load_images, stratified_holdout
from .image import IMAGE_EXTENSIONS

RESERVED = ("id", "split", "label", "task")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
TASKS = ("single-label", "multi-label", "regression")
AUDIO_SUFFIXES = (".wav", ".flac")
IMAGE_SIZE = 64  # images larger than this (or of mixed sizes) are resized to 64×64
MAX_AUDIO_FRAMES = 400  # 10 s at 25 ms per frame; longer recordings are truncated
VAL_FRACTION, TEST_FRACTION, SEED = 0.1, 0.2, 0


@dataclass
class Row:
    number: int  # 1-based data row
    line: int  # line in the file
    values: dict[str, str]


def _where(path: Path, row: Row) -> str:
    return f"{path}, row {row.number} (line {row.line})"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


def read_rows(path: Path) -> tuple[list[str], list[Row]]:
    """Columns and rows of manifest.csv / manifest.jsonl; malformed content is a DataError."""
    rows: list[Row] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise DataError(f"{path}: the manifest is empty (expected a header: id,split,label,<modalities>)")
                columns = [h.strip() for h in header]
                dupes = sorted({c for c in columns if columns.count(c) > 1})
                if dupes or "" in columns:
                    raise DataError(f"{path}: header has {'duplicate column ' + repr(dupes[0]) if dupes else 'an empty column name'}")
                line = reader.line_num
                for cells in reader:
                    start, line = line + 1, reader.line_num
                    if not cells or all(not c.strip() for c in cells):
                        continue
                    row = Row(len(rows) + 1, start, {})
                    if len(cells) != len(columns):
                        raise DataError(f"{_where(path, row)}: {len(cells)} cells, but the header has "
                                        f"{len(columns)} columns")
                    row.values = {c: _cell(v) for c, v in zip(columns, cells)}
                    rows.append(row)
        else:
            columns = []
            with open(path, encoding="utf-8") as f:
                for line_no, text in enumerate(f, start=1):
                    if not text.strip():
                        continue
                    row = Row(len(rows) + 1, line_no, {})
                    try:
                        obj = json.loads(text)
                        if not isinstance(obj, dict):
                            raise DataError(f"{_where(path, row)}: expected a JSON object, got {type(obj).__name__}")
                        row.values = {str(k): _cell(v) for k, v in obj.items()}
                    except json.JSONDecodeError as e:
                        raise DataError(f"{_where(path, row)}: not valid JSON ({e.msg} at column {e.colno})") from None
                    except RecursionError:
                        raise DataError(f"{_where(path, row)}: the JSON is nested too deeply (a row is one flat "
                                        f"object of id, split, label and one value per modality)") from None
                    except DataError:
                        raise
                    except ValueError as e:  # e.g. an integer of more digits than Python converts
                        raise DataError(f"{_where(path, row)}: not valid JSON ({e})") from None
                    for k in row.values:
                        if k not in columns:
                            columns.append(k)
                    rows.append(row)
            for row in rows:
                for c in columns:
                    row.values.setdefault(c, "")
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: the manifest has no data rows")
    return columns, rows


def _path_kind(value: str) -> str:
    v = value.lower()
    if v.endswith(IMAGE_EXTENSIONS):
        return "image"
    if v.endswith(AUDIO_SUFFIXES):
        return "audio"
    if v.endswith(".npy"):
        return "npy"
    return "text"


def infer_column_kind(path: Path, column: str, rows: list[Row]) -> str:
    """"image", "audio", "npy" or "text" from the non-empty values of a column."""
    filled = [r for r in rows if r.values[column]]
    if not filled:
        raise DataError(f"{path}: column {column!r} is empty in every row")
    kinds = [_path_kind(r.values[column]) for r in filled]
    path_kinds = [k for k in set(kinds) if k != "text"]
    if not path_kinds:
        return "text"
    best = max(path_kinds, key=kinds.count)
    if kinds.count(best) == len(kinds):
        return best
    if kinds.count(best) * 2 >= len(kinds):  # mostly file paths: the odd ones out are mistakes
        bad = next(r for r, k in zip(filled, kinds) if k != best)
        raise DataError(f"{_where(path, bad)}: column {column!r} holds {best} file paths, but this row has "
                        f"{bad.values[column]!r}")
    return "text"


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _infer_task(path: Path, labels: list[str], declared: str | None) -> str:
    if declared is not None:
        return declared
    if any("|" in lab for lab in labels):
        return "multi-label"
    try:
        values = [float(lab) for lab in labels]
    except ValueError:
        return "single-label"
    if all(math.isfinite(v) for v in values) and any(v != round(v) for v in values):
        return "regression"
    return "single-label"


def _sort_classes(names: set[str]) -> tuple[str, ...]:
    try:
        return tuple(sorted(names, key=lambda s: (float(s), s)))
    except ValueError:
        return tuple(sorted(names))


def _targets(path: Path, rows: list[Row], splits: list[str], task: str) -> tuple[list, tuple[str, ...]]:
    """Per-row targets (int / list of class indices / float) and class names."""
    if task == "regression":
        out = []
        for r in rows:
            try:
                v = float(r.values["label"])
            except ValueError:
                raise DataError(f"{_where(path, r)}: label {r.values['label']!r} is not a number "
                                f"(the task is regression)") from None
            if not math.isfinite(v):
                raise DataError(f"{_where(path, r)}: label {r.values['label']!r} is not a finite number")
            out.append(v)
        return out, ("score",)
    if task == "multi-label":
        parts = [[p.strip() for p in r.values["label"].split("|") if p.strip()] for r in rows]
        for r, p in zip(rows, parts):
            if not p:
                raise DataError(f"{_where(path, r)}: label {r.values['label']!r} names no class")
    else:
        parts = [[r.values["label"]] for r in rows]
    train_classes = {c for p, s in zip(parts, splits) if s == "train" for c in p}
    classes = _sort_classes(train_classes)
    index = {c: i for i, c in enumerate(classes)}
    for r, p, s in zip(rows, parts, splits):
        unknown = [c for c in p if c not in index]
        if unknown:
            raise DataError(f"{_where(path, r)}: label {unknown[0]!r} ({s} split) does not occur in any train "
                            f"row, so no model can learn it (train classes: {', '.join(classes[:20])}"
                            f"{' …' if len(classes) > 20 else ''})")
    if task == "single-label" and len(classes) < 2:
        raise DataError(f"{path}: the train rows hold a single class {classes[0]!r}; a classifier needs at least 2")
    targets = [[index[c] for c in p] if task == "multi-label" else index[p[0]] for p in parts]
    return targets, classes


def _load_npy(path: Path, row: Row, column: str, file: Path) -> np.ndarray:
    try:
        a = np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{_where(path, row)}: file {row.values[column]!r} (column {column!r}) does not exist") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{_where(path, row)}: {file} is not a readable .npy array ({e})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise DataError(f"{_where(path, row)}: {file} must hold a numeric array, got dtype {getattr(a, 'dtype', '?')}")
    if a.ndim not in (1, 2):
        raise DataError(f"{_where(path, row)}: {file} has shape {a.shape}; expected (D,) for a vector or "
                        f"(T, D) for a sequence")
    if a.ndim == 2 and a.shape[0] == 0:
        raise DataError(f"{_where(path, row)}: {file} is a 0-length sequence (shape {a.shape}); a sequence "
                        f"needs at least one frame")
    if a.size == 0:
        raise DataError(f"{_where(path, row)}: {file} is empty (shape {a.shape})")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{_where(path, row)}: {file} holds NaN or infinite values")
    return a


def _modality(path: Path, base: Path, column: str, kind: str, rows: list[Row]
              ) -> tuple[ModalitySpec, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Build one modality for all rows: (spec, data (N, ...), lengths (N,) or None, present (N,))."""
    n = len(rows)
    present = torch.tensor([bool(r.values[column]) for r in rows], dtype=torch.bool)  # (N,)
    files: list[Path | None] = [None] * n
    if kind != "text":
        for i, r in enumerate(rows):
            if r.values[column]:
                f = _resolve(base, r.values[column])
                if not f.is_file():
                    raise DataError(f"{_where(path, r)}: file {r.values[column]!r} (column {column!r}) does not "
                                    f"exist (looked for {f})")
                files[i] = f
    if kind == "text":
        from .text import encode_texts
        ids, lengths = encode_texts([r.values[column] for r in rows])
        return ModalitySpec(column, "text", (int(ids.shape[1]),)), ids, lengths, present
    if kind == "image":
        from .image import image_mode_channels, image_size
        used = [f for f in files if f is not None]
        channels = 1 if all(image_mode_channels(f) == 1 for f in used) else 3
        sizes = {image_size(f) for f in used}
        (h, w) = sizes.pop() if len(sizes) == 1 and max(next(iter(sizes))) <= IMAGE_SIZE else (IMAGE_SIZE, IMAGE_SIZE)
        shape = (channels, h, w)
        try:
            data, _ = load_images(files, shape)
        except DataError as e:
            bad = next((r for r, f in zip(rows, files) if f is not None and str(f) in str(e)), None)
            raise DataError(f"{_where(path, bad)}: {e}" if bad else str(e)) from None
        return ModalitySpec(column, "image", shape), data, None, present
    if kind == "audio":
        from .audio import N_MFCC, audio_file_to_features
        feats: list[np.ndarray | None] = []
        for r, f in zip(rows, files):
            if f is None:
                feats.append(None)
                continue
            try:
                feats.append(audio_file_to_features(f)[:MAX_AUDIO_FRAMES])
            except DataError as e:
                raise DataError(f"{_where(path, r)} (column {column!r}): {e}") from None
        t_max = max(len(a) for a in feats if a is not None)
        data = torch.zeros(n, t_max, N_MFCC)  # (N, T_max, 13)
        lengths = torch.ones(n, dtype=torch.long)
        for i, a in enumerate(feats):
            if a is not None:
                data[i, :len(a)] = torch.from_numpy(a)
                lengths[i] = len(a)
        return ModalitySpec(column, "sequence", (t_max, N_MFCC)), data, lengths, present
    # .npy features
    arrays: list[np.ndarray | None] = []
    first: tuple[Row, tuple[int, ...]] | None = None
    for r, f in zip(rows, files):
        if f is None:
            arrays.append(None)
            continue
        a = _load_npy(path, r, column, f)
        if first is None:
            first = (r, a.shape)
        elif a.ndim != len(first[1]) or a.shape[-1] != first[1][-1]:
            want = f"({first[1][-1]},)" if len(first[1]) == 1 else f"(T, {first[1][-1]})"
            raise DataError(f"{_where(path, r)}: {f} has shape {a.shape}, inconsistent with row {first[0].number} "
                            f"(shape {first[1]}); every .npy of column {column!r} must be {want}")
        arrays.append(a)
    assert first is not None
    if len(first[1]) == 1:
        d = first[1][0]
        data = torch.zeros(n, d)  # (N, D)
        for i, a in enumerate(arrays):
            if a is not None:
                data[i] = torch.from_numpy(a)
        return ModalitySpec(column, "vector", (d,)), data, None, present
    d = first[1][1]
    t_max = max(a.shape[0] for a in arrays if a is not None)
    data = torch.zeros(n, t_max, d)  # (N, T_max, D)
    lengths = torch.ones(n, dtype=torch.long)
    for i, a in enumerate(arrays):
        if a is not None:
            data[i, :len(a)] = torch.from_numpy(a)
            lengths[i] = len(a)
    return ModalitySpec(column, "sequence", (t_max, d)), data, lengths, present


def find_manifest(path: Path) -> Path:
    if path.is_file():
        return path
    found = [path / n for n in ("manifest.csv", "manifest.jsonl") if (path / n).is_file()]
    if not found:
        raise DataError(f"{path}: no manifest.csv or manifest.jsonl in this folder")
    if len(found) > 1:
        raise DataError(f"{path}: both manifest.csv and manifest.jsonl exist; keep one")
    return found[0]


def load_manifest(path: str | Path, task: str | None = None) -> DatasetBundle:
    """Load a manifest folder (or the manifest file itself). `task` overrides the inferred task."""
    file = find_manifest(Path(path))
    base = file.parent
    columns, rows = read_rows(file)
    missing = [c for c in ("id", "split", "label") if c not in columns]
    if missing:
        raise DataError(f"{file}: missing column {', '.join(repr(m) for m in missing)}; a manifest needs id, split, "
                        f"label and one column per modality (it has {', '.join(columns)})")
    modality_columns = [c for c in columns if c not in RESERVED]
    if not modality_columns:
        raise DataError(f"{file}: no modality columns besides {', '.join(c for c in columns if c in RESERVED)}")
    seen: dict[str, Row] = {}
    splits: list[str] = []
    for r in rows:
        rid = r.values["id"]
        if not rid:
            raise DataError(f"{_where(file, r)}: empty id")
        if rid in seen:
            raise DataError(f"{_where(file, r)}: id {rid!r} is already used by row {seen[rid].number}")
        seen[rid] = r
        split = SPLIT_ALIASES.get(r.values["split"].lower())
        if split is None:
            raise DataError(f"{_where(file, r)}: unknown split {r.values['split']!r}; expected train, val or test")
        splits.append(split)
        if not r.values["label"]:
            raise DataError(f"{_where(file, r)}: empty label")
        if not any(r.values[c] for c in modality_columns):
            raise DataError(f"{_where(file, r)}: every modality is empty; a sample needs at least one")
    declared = task
    if declared is None and "task" in columns:
        values = {r.values["task"] for r in rows if r.values["task"]}
        if len(values) > 1:
            raise DataError(f"{file}: the task column must hold one value, found {', '.join(sorted(values))}")
        declared = values.pop() if values else None
    if declared is not None and declared not in TASKS:
        raise DataError(f"{file}: unknown task {declared!r}; expected {', '.join(TASKS)}")
    if "train" not in splits:
        raise DataError(f"{file}: no row has split 'train'")
    task_name = _infer_task(file, [r.values["label"] for r in rows], declared)

    # Carve missing val / test splits from train (stratified by label, seeded) before classes are fixed.
    note = []
    for name, fraction in (("test", TEST_FRACTION), ("val", VAL_FRACTION)):
        if name in splits:
            continue
        train_idx = [i for i, s in enumerate(splits) if s == "train"]
        keys = [rows[i].values["label"] if task_name == "single-label" else "" for i in train_idx]
        held = stratified_holdout(keys, fraction, seed=SEED)
        if not held.any():
            raise DataError(f"{file}: no {name} rows and too few train rows ({len(train_idx)}) to carve them")
        for i, h in zip(train_idx, held):
            if h:
                splits[i] = name
        note.append(f"{name} carved from train ({int(held.sum())} rows, seed {SEED})")

    targets, classes = _targets(file, rows, splits, task_name)
    kinds = {c: infer_column_kind(file, c, rows) for c in modality_columns}
    specs, data, lengths, present = [], {}, {}, []
    raw_texts = {c: [r.values[c] or "" for r in rows] for c in modality_columns if kinds[c] == "text"}
    for c in modality_columns:
        spec, x, lens, pres = _modality(file, base, c, kinds[c], rows)
        specs.append(spec)
        data[c] = x
        if lens is not None:
            lengths[c] = lens
        present.append(pres)
    mask = torch.stack(present, dim=1)  # (N, M)
    if task_name == "multi-label":
        target_all = torch.zeros(len(rows), len(classes))  # (N, C) multi-hot
        for i, t in enumerate(targets):
            target_all[i, t] = 1.0
    elif task_name == "regression":
        target_all = torch.tensor(targets, dtype=torch.float32)  # (N,)
    else:
        target_all = torch.tensor(targets, dtype=torch.long)  # (N,)
    ids = [r.values["id"] for r in rows]
    out = {}
    for name in ("train", "val", "test"):
        idx = torch.tensor([i for i, s in enumerate(splits) if s == name], dtype=torch.long)
        out[name] = SplitData(inputs={k: v[idx] for k, v in data.items()},
                              lengths={k: v[idx] for k, v in lengths.items()}, mask=mask[idx],
                              target=target_all[idx], ids=[ids[i] for i in idx.tolist()],
                              texts={c: [t[i] for i in idx.tolist()] for c, t in raw_texts.items()})
    desc = (f"Manifest {file}: {len(rows)} rows, modalities "
            f"{', '.join(f'{s.name} ({s.kind} {tuple(s.shape)})' for s in specs)}; {task_name}; "
            f"{len(out['train'])}/{len(out['val'])}/{len(out['test'])} train/val/test"
            + (f"; {'; '.join(note)}" if note else "") + ".")
    info = DatasetInfo(name=base.name or "manifest", modalities=tuple(specs), task=task_name, class_names=classes,
                       description=desc)
    return DatasetBundle(info, out)
