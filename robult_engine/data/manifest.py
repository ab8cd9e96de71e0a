"""Your own data: a folder with ``manifest.csv`` or ``manifest.jsonl``.

Columns (CSV header, or JSONL keys):

- ``id`` — unique per row; ``split`` — ``train``, ``val`` or ``test`` (``valid``/``validation``/``dev`` mean
  val); ``label`` — the target; optionally ``task`` — ``single-label``, ``multi-label`` or ``regression``
  (the same in every row);
- every other column is a modality; its kind is inferred from its non-empty values: image paths
  (.png/.jpg/.jpeg/.bmp/…) → "image", audio paths (.wav/.flac) → "sequence" of standardised MFCC frames
  (audio.py), ``.npy`` paths → "vector" (1-D arrays) or "sequence" (2-D arrays (T, D)), ``.npy#<row>``
  references (below) → "vector" or "sequence", anything else → "text" (hashed uni+bi-grams). Paths are
  relative to the manifest's folder. An empty cell is a missing modality for that sample;
- except a column named ``meta:NAME`` (e.g. ``meta:site``, ``meta:age``): a per-sample attribute kept as written
  (`SplitData.meta["NAME"]`), not a modality and never seen by the model; `robult slices` groups samples by it.

Rows of one array (large datasets): a cell ``features/audio.npy#17`` is row 17 (counted from 0) of an array
that holds the modality for many samples, instead of one file per sample:

    id,split,label,audio,vision
    s0,train,1.5,features/audio.npy#0,features/vision.npy#0
    s1,test,-0.4,features/audio.npy#1,

- the array is (R, D) → "vector" (D,), or (R, T, D) → "sequence" (T, D) whose length is the span up to the
  row's last frame holding a non-zero value (zero frames after it are padding, as when sequences of
  different lengths are stacked); a float dtype (float16, float32 or float64; read as float32), C order,
  saved without pickling (``np.save(path, array)``); R may exceed the rows the manifest names;
- a column may name several such files (e.g. one per split) when their rows have the same shape, but it
  holds either ``.npy#<row>`` references or one ``.npy`` file per sample, not both;
- the files are memory-mapped (``np.load(..., mmap_mode="r")``) and never read into memory as a whole:
  loading checks each named row once (NaN / infinite values are refused) and a training or evaluation
  batch reads its own rows (positional file reads: the rows pass through the page cache, never become the
  process's memory), so the memory a run holds does not grow with the dataset (docs/performance.md); passes
  over a whole split (the input norm's and FixMatch's feature statistics, the mnar-value mechanism's signal
  strength, the dataset cache's byte count, a pool appended to the train split, the dataset PID's passes)
  read a few MB of rows at a time or none;
- a missing file, an array that is not float, not 2-D or 3-D, stored in Fortran order, that holds Python
  objects, or has fewer rows than a cell names is a DataError naming the file, the shape expected and the
  shape found.

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
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import (CHUNK_BYTES, DataError, DatasetBundle, DatasetInfo, MappedRows, ModalitySpec, SplitData,
                   take_rows)
from .base import read_rows as read_array_rows
from .loading import load_images, stratified_holdout
from .image import IMAGE_EXTENSIONS

RESERVED = ("id", "split", "label", "task")
META_PREFIX = "meta:"  # columns of per-sample attributes that are not modalities
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
TASKS = ("single-label", "multi-label", "regression")
AUDIO_SUFFIXES = (".wav", ".flac")
IMAGE_SIZE = 64  # images larger than this (or of mixed sizes) are resized to 64×64
MAX_AUDIO_FRAMES = 400  # 10 s at 25 ms per frame; longer recordings are truncated
VAL_FRACTION, TEST_FRACTION, SEED = 0.1, 0.2, 0
NPY_ROW = re.compile(r"^(.*\.npy)#(\d+)$", re.IGNORECASE)  # "features/audio.npy#17": row 17 of that array
KIND_WORDS = {"npy-rows": "'file.npy#<row>' references", "npy": ".npy file paths", "image": "image file paths",
              "audio": "audio file paths"}


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
    if NPY_ROW.match(value):
        return "npy-rows"
    return "text"


def infer_column_kind(path: Path, column: str, rows: list[Row]) -> str:
    """"image", "audio", "npy", "npy-rows" or "text" from the non-empty values of a column."""
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
        raise DataError(f"{_where(path, bad)}: column {column!r} holds {KIND_WORDS[best]}, but this row has "
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


def _npy_header(file: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy file, read from its header alone."""
    with open(file, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
    a = np.load(file, mmap_mode="r", allow_pickle=False)  # other versions: numpy parses the header
    return a.shape, bool(a.flags.f_contiguous and not a.flags.c_contiguous), a.dtype


def _check_npy(path: Path, row: Row, column: str, file: Path) -> tuple[int, ...]:
    """The shape of one sample's .npy (only its header is read); anything unusable is a DataError."""
    try:
        shape, _, dtype = _npy_header(file)
    except FileNotFoundError:
        raise DataError(f"{_where(path, row)}: file {row.values[column]!r} (column {column!r}) does not exist") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{_where(path, row)}: {file} is not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{_where(path, row)}: {file} is not a readable .npy array (it holds Python objects, which "
                        f"only unpickling reads; save a numeric array)")
    if dtype.kind not in "biuf":
        raise DataError(f"{_where(path, row)}: {file} must hold a numeric array, got dtype {dtype}")
    if len(shape) not in (1, 2):
        raise DataError(f"{_where(path, row)}: {file} has shape {shape}; expected (D,) for a vector or "
                        f"(T, D) for a sequence")
    if len(shape) == 2 and shape[0] == 0:
        raise DataError(f"{_where(path, row)}: {file} is a 0-length sequence (shape {shape}); a sequence "
                        f"needs at least one frame")
    if 0 in shape:
        raise DataError(f"{_where(path, row)}: {file} is empty (shape {shape})")
    return tuple(shape)


def _load_npy(path: Path, row: Row, column: str, file: Path) -> np.ndarray:
    """One sample's .npy as float32 (its header checked by `_check_npy` first)."""
    try:
        a = np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{_where(path, row)}: file {row.values[column]!r} (column {column!r}) does not exist") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{_where(path, row)}: {file} is not a readable .npy array ({e})") from None
    a = np.asarray(a, dtype=np.float32)  # no copy when it already is float32
    if not np.isfinite(a).all():
        raise DataError(f"{_where(path, row)}: {file} holds NaN or infinite values")
    return a


def _npy_modality(path: Path, column: str, rows: list[Row], files: list[Path | None]
                  ) -> tuple[ModalitySpec, torch.Tensor, torch.Tensor | None]:
    """One .npy per sample: the headers are read first (shapes checked, the padded size known), then each file
    is read straight into its row of the modality's tensor (one copy of the data in memory)."""
    shapes: list[tuple[int, ...] | None] = []
    first: tuple[Row, tuple[int, ...]] | None = None
    for r, f in zip(rows, files):
        if f is None:
            shapes.append(None)
            continue
        shape = _check_npy(path, r, column, f)
        if first is None:
            first = (r, shape)
        elif len(shape) != len(first[1]) or shape[-1] != first[1][-1]:
            want = f"({first[1][-1]},)" if len(first[1]) == 1 else f"(T, {first[1][-1]})"
            raise DataError(f"{_where(path, r)}: {f} has shape {shape}, inconsistent with row {first[0].number} "
                            f"(shape {first[1]}); every .npy of column {column!r} must be {want}")
        shapes.append(shape)
    assert first is not None
    n = len(rows)
    vector = len(first[1]) == 1
    d = first[1][-1]
    t_max = 1 if vector else max(sh[0] for sh in shapes if sh is not None)
    data = torch.zeros(n, d) if vector else torch.zeros(n, t_max, d)  # (N, D) or (N, T_max, D)
    lengths = torch.ones(n, dtype=torch.long)
    out = data.numpy()
    for i, (r, f) in enumerate(zip(rows, files)):
        if f is None:
            continue
        a = _load_npy(path, r, column, f)
        if a.shape != shapes[i]:  # the file was replaced after its header was read
            raise DataError(f"{_where(path, r)}: {f} changed while it was read (shape {shapes[i]}, now {a.shape})")
        if vector:
            out[i] = a
        else:
            out[i, :len(a)] = a
            lengths[i] = len(a)
    if vector:
        return ModalitySpec(column, "vector", (d,)), data, None
    return ModalitySpec(column, "sequence", (t_max, d)), data, lengths


def _open_rows_file(path: Path, row: Row, column: str, file: Path, need: int) -> np.ndarray:
    """Memory-map the array that ``.npy#<row>`` cells name; `need` rows are named (row numbers 0 .. need-1)."""
    expected = f"a float array (N, D) or (N, T, D) with N ≥ {need}"
    where = f"{_where(path, row)}: {file} (column {column!r})"
    try:
        shape, fortran, dtype = _npy_header(file)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{where} is not a readable .npy array ({e}); expected {expected}") from None
    shape = tuple(int(d) for d in shape)
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (dtype {dtype}, shape {shape}), which only unpickling "
                        f"reads; expected {expected}, saved with np.save(path, array)")
    if dtype.kind != "f":
        raise DataError(f"{where} has dtype {dtype} (shape {shape}); expected {expected} of float16, float32 or "
                        f"float64")
    if len(shape) not in (2, 3):
        raise DataError(f"{where} has shape {shape}; expected (N, D) rows of vectors or (N, T, D) rows of "
                        f"sequences, with N ≥ {need}")
    if 0 in shape[1:]:
        raise DataError(f"{where} has shape {shape}; expected (N, D) or (N, T, D) with T and D at least 1")
    if shape[0] < need:
        raise DataError(f"{where} has shape {shape}, but this row names its row {need - 1}; expected "
                        f"({need} or more, {', '.join(map(str, shape[1:]))})")
    if fortran and int(np.prod(shape[1:])) > 1:
        raise DataError(f"{where} is stored in Fortran (column) order (shape {shape}), so one row is scattered "
                        f"over the whole file; save it in C order: np.save(path, np.ascontiguousarray(array))")
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{where} cannot be memory-mapped ({e})") from None


def _mapped_modality(path: Path, base: Path, column: str, rows: list[Row]
                     ) -> tuple[ModalitySpec, MappedRows, torch.Tensor | None]:
    """A column of ``file.npy#<row>`` cells: the arrays memory-mapped, every named row checked once (NaN / inf,
    a sequence's length); only the row numbers and lengths are held in memory."""
    n = len(rows)
    refs: dict[Path, list[tuple[int, Row, int]]] = {}  # file → (sample, manifest row, row of the array)
    for i, r in enumerate(rows):
        cell = r.values[column]
        if cell:
            m = NPY_ROW.match(cell)
            assert m is not None  # the column's kind says every filled cell is a reference
            refs.setdefault(_resolve(base, m.group(1)), []).append((i, r, int(m.group(2))))
    arrays, source, row_of = [], np.full(n, -1, dtype=np.int32), np.zeros(n, dtype=np.int64)
    first: tuple[Path, tuple[int, ...]] | None = None
    for k, (file, uses) in enumerate(refs.items()):
        top = max(uses, key=lambda u: u[2])  # the largest row named: the array needs at least top + 1 rows
        if not file.is_file():
            raise DataError(f"{_where(path, uses[0][1])}: file {file.name!r} (column {column!r}, cell "
                            f"{uses[0][1].values[column]!r}) does not exist (looked for {file}); expected a float "
                            f"array (N, D) or (N, T, D) with N ≥ {top[2] + 1}")
        arr = _open_rows_file(path, top[1], column, file, top[2] + 1)
        if first is None:
            first = (file, tuple(arr.shape))
        elif tuple(arr.shape[1:]) != first[1][1:]:
            raise DataError(f"{_where(path, uses[0][1])}: {file} (column {column!r}) has shape {tuple(arr.shape)}; "
                            f"expected rows of shape {first[1][1:]}, like the column's first file {first[0]} "
                            f"(shape {first[1]})")
        arrays.append(arr)
        for i, _, j in uses:
            source[i], row_of[i] = k, j
    assert first is not None
    mapped = MappedRows(tuple(arrays), source, row_of, finite_checked=True)
    sequence = len(first[1]) == 3
    lengths = np.ones(n, dtype=np.int64)
    for arr, (file, uses) in zip(arrays, refs.items()):  # every named row read once, in file order, in chunks
        uses = sorted(uses, key=lambda u: u[2])
        step = max(1, CHUNK_BYTES // max(1, int(np.prod(arr.shape[1:])) * 4))
        for lo in range(0, len(uses), step):
            part = uses[lo:lo + step]
            with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused below
                x = read_array_rows(arr, np.array([u[2] for u in part])).astype(np.float32, copy=False)
            finite = np.isfinite(x.reshape(len(part), -1)).all(axis=1)
            if not finite.all():
                _, r, j = part[int(np.argmin(finite))]
                raise DataError(f"{_where(path, r)}: row {j} of {file} (column {column!r}) holds NaN or infinite "
                                f"values{' as float32' if arr.dtype != np.float32 else ''}")
            if sequence:
                frames = (x != 0).any(axis=2)  # (B, T) frames holding a non-zero value
                last = frames.shape[1] - frames[:, ::-1].argmax(axis=1)
                lengths[[u[0] for u in part]] = np.where(frames.any(axis=1), last, 1)
    if not sequence:
        return ModalitySpec(column, "vector", (first[1][1],)), mapped, None
    return ModalitySpec(column, "sequence", first[1][1:]), mapped, torch.from_numpy(lengths)


def _modality(path: Path, base: Path, column: str, kind: str, rows: list[Row]
              ) -> tuple[ModalitySpec, torch.Tensor | MappedRows, torch.Tensor | None, torch.Tensor]:
    """Build one modality for all rows: (spec, data (N, ...), lengths (N,) or None, present (N,))."""
    n = len(rows)
    present = torch.tensor([bool(r.values[column]) for r in rows], dtype=torch.bool)  # (N,)
    if kind == "npy-rows":
        spec, mapped, lengths = _mapped_modality(path, base, column, rows)
        return spec, mapped, lengths, present
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
    # .npy features, one file per sample
    spec, data, lengths = _npy_modality(path, column, rows, files)
    return spec, data, lengths, present


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
    meta_columns = [c for c in columns if c.startswith(META_PREFIX)]
    meta_names = [c[len(META_PREFIX):].strip() for c in meta_columns]
    for c, name in zip(meta_columns, meta_names):
        if not name:
            raise DataError(f"{file}: column {c!r} names no attribute (write {META_PREFIX}NAME, e.g. "
                            f"{META_PREFIX}site)")
        if meta_names.count(name) > 1:
            raise DataError(f"{file}: the attribute {name!r} is named by two columns")
    modality_columns = [c for c in columns if c not in RESERVED and c not in meta_columns]
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
    # the rows in split order (train, val, test; the manifest's order within a split), so that each split is a
    # slice of the modality tensors built below: a view, not a copy of the data
    order = sorted(range(len(rows)), key=lambda i: ("train", "val", "test").index(splits[i]))
    rows = [rows[i] for i in order]
    splits = [splits[i] for i in order]
    targets = [targets[i] for i in order]
    specs, data, lengths, present = [], {}, {}, []
    raw_texts = {c: [r.values[c] or "" for r in rows] for c in modality_columns if kinds[c] == "text"}
    meta = {c[len(META_PREFIX):].strip(): [r.values[c] for r in rows] for c in meta_columns}
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
    lo = 0
    for name in ("train", "val", "test"):
        part = slice(lo, lo + splits.count(name))
        lo = part.stop
        out[name] = SplitData(inputs={k: take_rows(v, part) for k, v in data.items()},
                              lengths={k: v[part] for k, v in lengths.items()}, mask=mask[part],
                              target=target_all[part], ids=ids[part],
                              texts={c: t[part] for c, t in raw_texts.items()},
                              meta={c: v[part] for c, v in meta.items()})
    desc = (f"Manifest {file}: {len(rows)} rows, modalities "
            f"{', '.join(f'{s.name} ({s.kind} {tuple(s.shape)})' for s in specs)}; {task_name}; "
            f"{len(out['train'])}/{len(out['val'])}/{len(out['test'])} train/val/test"
            + (f"; {'; '.join(note)}" if note else "") + ".")
    info = DatasetInfo(name=base.name or "manifest", modalities=tuple(specs), task=task_name, class_names=classes,
                       description=desc)
    return DatasetBundle(info, out)
