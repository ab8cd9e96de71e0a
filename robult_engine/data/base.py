"""The dataset interface every loader implements.

A dataset is held in memory as one `SplitData` per split. Every modality is a dense tensor over the split's
samples; missing modalities are data (a presence mask), not control flow. Modality kinds:

| kind       | tensor per split            | extra                      | encoder              |
|------------|-----------------------------|----------------------------|----------------------|
| "vector"   | float32 (N, D)              |                            | MLP                  |
| "image"    | float32 (N, C, H, W) in [0,1]|                           | small CNN            |
| "sequence" | float32 (N, T, D), padded   | lengths int64 (N,)         | 1-D conv or GRU      |
| "text"     | int64 (N, L) hashed n-gram ids, 0 = padding | lengths int64 (N,) | EmbeddingBag |

Targets: int64 (N,) class index for "single-label"; float32 (N, C) multi-hot for "multi-label";
float32 (N,) for "regression". A sample whose modality is missing has zeros in that tensor, length 1 for
sequences/text (never 0, so encoders never divide by zero) and mask 0.

A "vector" or "sequence" modality may instead be a `MappedRows`: the split's rows of memory-mapped ``.npy``
arrays (a manifest's ``file.npy#<row>`` cells), read a batch at a time (`read_rows`). It answers ``shape``, ``len``,
``x[idx]`` (a float32 tensor of those rows) and `SplitData.subset` without reading the data; any other tensor
operation reads the whole split into one tensor first.
"""
from __future__ import annotations

import hashlib
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError  # the engine's error types live in robult_engine/errors.py

MODALITY_KINDS = ("vector", "image", "sequence", "text")
TASKS = ("single-label", "multi-label", "regression")
# the number of axes of one sample of each kind (see the table above), and the largest size of one axis
MODALITY_RANKS = {"vector": 1, "image": 3, "sequence": 2, "text": 1}
MAX_AXIS = 2 ** 31 - 1


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: str  # one of MODALITY_KINDS
    # Shape of one sample without the batch axis: (D,), (C, H, W), (T_max, D) or (L_max,).
    shape: tuple[int, ...]

    @property
    def feature_dim(self) -> int:
        """D for vector/sequence, C for image, vocabulary-free for text (returns L_max)."""
        return self.shape[-1] if self.kind in ("vector", "sequence") else self.shape[0]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    modalities: tuple[ModalitySpec, ...]
    task: str  # "single-label" | "multi-label" | "regression"
    class_names: tuple[str, ...]  # classes (single/multi-label); ("score",) for regression
    description: str = ""
    licence: str = ""

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "regression" else len(self.class_names)

    def spec(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "class_names": list(self.class_names),
            "modalities": [{"name": m.name, "kind": m.kind, "shape": list(m.shape)} for m in self.modalities],
            "description": self.description,
            "licence": self.licence,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetInfo":
        """The inverse of `to_dict`, checked: anything that does not describe a usable dataset (a missing or
        unknown field, a shape that is not positive integers of the kind's rank, an unknown task or modality
        kind, a name given twice, no classes) raises a DataError naming the field; no other error escapes."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise DataError(f"dataset info: {msg}")

        def fields_of(obj: object, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
            need(isinstance(obj, dict), f"{where}: expected an object, got {type(obj).__name__}")
            missing = [k for k in required if k not in obj]
            need(not missing, f"{where}: missing {', '.join(missing)}")
            unknown = [str(k) for k in obj if k not in required + optional]
            need(not unknown, f"{where}: unknown field {', '.join(unknown)[:80]}")

        fields_of(d, "info", ("name", "task", "class_names", "modalities"), ("description", "licence"))
        for key in ("name", "description", "licence"):
            need(isinstance(d.get(key, ""), str), f"{key}: expected text, got {type(d.get(key)).__name__}")
        need(d["task"] in TASKS, f"task: one of {', '.join(TASKS)}, got {str(d['task'])[:40]!r}")
        names = d["class_names"]
        need(isinstance(names, (list, tuple)) and all(isinstance(c, str) for c in names),
             f"class_names: expected a list of names, got {str(names)[:60]}")
        need(len(names) >= 1, "class_names: the dataset has no classes")
        need(len(set(names)) == len(names), "class_names: a class is named twice")
        mods = d["modalities"]
        need(isinstance(mods, (list, tuple)) and len(mods) >= 1, "modalities: expected a non-empty list")
        specs = []
        for i, m in enumerate(mods):
            fields_of(m, f"modalities[{i}]", ("name", "kind", "shape"))
            name, kind, shape = m["name"], m["kind"], m["shape"]
            need(isinstance(name, str) and name != "", f"modalities[{i}].name: expected a name, got {name!r}"[:120])
            need(kind in MODALITY_KINDS, f"modality {name!r}: kind one of {', '.join(MODALITY_KINDS)}, "
                                         f"got {str(kind)[:40]!r}")
            need(isinstance(shape, (list, tuple)) and all(type(s) is int and 1 <= s <= MAX_AXIS for s in shape),
                 f"modality {name!r}: shape must be a list of positive integers, got {str(shape)[:60]}")
            need(len(shape) == MODALITY_RANKS[kind],
                 f"modality {name!r}: a {kind} modality has {MODALITY_RANKS[kind]} axes, got shape {list(shape)}")
            specs.append(ModalitySpec(name, kind, tuple(shape)))
        need(len({m.name for m in specs}) == len(specs), "modalities: a modality is named twice")
        return cls(name=d["name"], task=d["task"], class_names=tuple(names), modalities=tuple(specs),
                   description=d.get("description", ""), licence=d.get("licence", ""))


CHUNK_BYTES = 8 << 20  # the largest temporary a whole-split pass (a check, a copy) holds at once
_fd_lock = threading.Lock()


def _row_file(arr: np.ndarray) -> int | None:
    """A read-only descriptor of the file behind a memory-mapped, C-ordered array (opened once, closed with the
    array), or None where positional reads are unavailable."""
    fd = getattr(arr, "_row_fd", None)
    if fd is not None:
        return fd
    name = getattr(arr, "filename", None)
    if name is None or not hasattr(os, "preadv") or not arr.flags.c_contiguous:
        return None
    with _fd_lock:
        fd = getattr(arr, "_row_fd", None)
        if fd is None:
            fd = os.open(name, os.O_RDONLY)
            arr._row_fd = fd
            weakref.finalize(arr, os.close, fd)
    return fd


def read_rows(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """arr[rows] of a memory-mapped .npy array, `rows` ascending, as a new array of arr's dtype.

    The rows are read from the file with positional reads (one per run of consecutive rows), not through the
    mapping: a mapped read makes whole page-cache folios (up to 2 MB around each row) resident pages of the
    process, so reading every row once would grow its resident memory by the size of the file. Read this way
    the data stay in the page cache only, which the kernel shares and reclaims."""
    rows = np.asarray(rows, dtype=np.int64)
    fd = _row_file(arr)
    if fd is None:
        return np.array(arr[rows])
    out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
    if len(rows) == 0 or out.size == 0:
        return out
    flat = out.reshape(len(rows), -1).view(np.uint8)  # (n, bytes per row)
    row_bytes = flat.shape[1]
    breaks = np.nonzero(np.diff(rows) != 1)[0] + 1
    for lo, hi in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])):
        view = memoryview(flat[lo:hi]).cast("B")
        at, done = arr.offset + int(rows[lo]) * row_bytes, 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], at + done)
            if got <= 0:
                raise OSError(f"{arr.filename}: the file ended before row {int(rows[hi - 1])} (was it truncated?)")
            done += got
    return out


class MappedRows:
    """The (N, ...) float32 rows of one modality of a split, read lazily from memory-mapped ``.npy`` arrays.

    arrays: the memory-mapped arrays (np.load(..., mmap_mode="r")), each (R_k, D) or (R_k, T, D), float;
    source: int32 (N,) which array holds each sample (-1: the modality is absent, a row of zeros);
    row: int64 (N,) the sample's row in that array.

    ``x[idx]`` reads the rows `idx` (an int, a slice, a bool mask or integer indices) into a new float32
    tensor; `take` selects rows without reading them; ``x[rows] = 0`` (on a `clone`) marks rows absent. Every
    other attribute or torch function reads the whole split into a tensor first (`materialize`).
    """

    def __init__(self, arrays: tuple[np.ndarray, ...], source: np.ndarray, row: np.ndarray,
                 finite_checked: bool = False) -> None:
        self.arrays = tuple(arrays)
        self.source = np.asarray(source, dtype=np.int32)
        self.row = np.asarray(row, dtype=np.int64)
        self.sample_shape = tuple(int(d) for d in self.arrays[0].shape[1:])
        # set by a loader that checked every referenced row for NaN / inf (check_finite then skips the pass)
        self.finite_checked = finite_checked

    # --- what a tensor answers without reading data ----------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.source), *self.sample_shape))

    dtype = torch.float32
    device = torch.device("cpu")
    requires_grad = False

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def is_floating_point(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        files = ", ".join(sorted({str(getattr(a, "filename", "?")) for a in self.arrays}))
        return f"MappedRows(shape={tuple(self.shape)}, files={files})"

    # --- selecting and reading rows --------------------------------------------------------------------
    def _rows(self, key) -> np.ndarray | slice:
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        if isinstance(key, slice):
            return key
        key = np.asarray(key)
        if key.dtype != bool and key.dtype.kind not in "iu":
            raise IndexError(f"rows of a mapped modality are selected by integers or a bool mask, got {key.dtype}")
        return key

    def take(self, key) -> "MappedRows":
        """The rows `key` as a new MappedRows (nothing is read)."""
        k = self._rows(key)
        return MappedRows(self.arrays, np.array(self.source[k], ndmin=1), np.array(self.row[k], ndmin=1),
                          self.finite_checked)

    def clone(self) -> "MappedRows":
        return self.take(slice(None))

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, tuple):  # rows and then axes of a sample: read the rows first
            return self[key[0]][(slice(None),) + key[1:]] if key else self.materialize()
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.dim() == 0):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} of {len(self)}")
            return self._read(self.source[[i]], self.row[[i]])[0]
        k = self._rows(key)
        return self._read(np.array(self.source[k], ndmin=1), np.array(self.row[k], ndmin=1))

    def __setitem__(self, key, value) -> None:
        """``x[rows] = 0`` makes those rows absent (zeros); nothing else may be written into mapped data."""
        if not (np.isscalar(value) or (isinstance(value, torch.Tensor) and value.numel() == 1)) or float(value) != 0:
            raise TypeError("mapped rows are read-only: only x[rows] = 0 (removing samples) is supported")
        self.source[self._rows(key)] = -1

    def materialize(self) -> torch.Tensor:
        """The whole split as one float32 tensor (N, ...)."""
        return self._read(self.source, self.row)

    def numpy(self) -> np.ndarray:
        return self.materialize().numpy()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def _read(self, source: np.ndarray, row: np.ndarray) -> torch.Tensor:
        out = np.zeros((len(source), *self.sample_shape), dtype=np.float32)
        per_row = max(1, int(np.prod(self.sample_shape)) * 4)
        step = max(1, CHUNK_BYTES // per_row)
        for k, arr in enumerate(self.arrays):
            where = np.nonzero(source == k)[0]
            if len(where) == 0:
                continue
            order = np.argsort(row[where], kind="stable")  # ascending file offsets
            where, rows = where[order], row[where][order]
            for lo in range(0, len(where), step):
                with np.errstate(over="ignore"):  # cast to float32 on assignment
                    out[where[lo:lo + step]] = read_rows(arr, rows[lo:lo + step])
        return torch.from_numpy(out)

    def chunks(self):
        """(start, rows as a float32 tensor) over the whole split, CHUNK_BYTES at a time."""
        step = max(1, CHUNK_BYTES // max(1, int(np.prod(self.sample_shape)) * 4))
        for lo in range(0, len(self), step):
            yield lo, self._read(self.source[lo:lo + step], self.row[lo:lo + step])

    # --- everything else: read the split into a tensor -------------------------------------------------
    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        def dense(a):
            if isinstance(a, MappedRows):
                return a.materialize()
            if isinstance(a, (list, tuple)):
                return type(a)(dense(v) for v in a)
            if isinstance(a, dict):
                return {k: dense(v) for k, v in a.items()}
            return a
        return func(*dense(args), **dense(kwargs or {}))

    def __reduce__(self):  # a copy in another process maps the same files again
        return (_reopen_mapped, ([str(a.filename) for a in self.arrays], self.source, self.row, self.finite_checked))


def _reopen_mapped(files: list[str], source: np.ndarray, row: np.ndarray, finite_checked: bool) -> MappedRows:
    return MappedRows(tuple(np.load(Path(f), mmap_mode="r", allow_pickle=False) for f in files), source, row,
                      finite_checked)


def take_rows(x, idx):
    """x[idx] for a tensor; for MappedRows the selected rows, still unread."""
    return x.take(idx) if isinstance(x, MappedRows) else x[idx]


def concat_rows(a, b):
    """The rows of `a` followed by those of `b`: torch.cat for tensors; two MappedRows of the same sample shape
    give one MappedRows over both sets of files (nothing is read). A MappedRows beside a dense tensor is read."""
    if isinstance(a, MappedRows) and isinstance(b, MappedRows) and a.sample_shape == b.sample_shape:
        shift = np.where(b.source >= 0, b.source + len(a.arrays), -1).astype(np.int32)
        return MappedRows(a.arrays + b.arrays, np.concatenate([a.source, shift]), np.concatenate([a.row, b.row]),
                          a.finite_checked and b.finite_checked)
    return torch.cat([a, b])


@dataclass
class SplitData:
    """All samples of one split, as dense tensors (see module docstring for dtypes and shapes)."""
    inputs: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor]  # only for "sequence" and "text" modalities
    mask: torch.Tensor  # bool (N, M), modality order of DatasetInfo.modalities
    target: torch.Tensor
    ids: list[str] = field(default_factory=list)  # a human-readable id per sample (file name, row id)
    # the raw text of each sample per text modality, when the loader read it ("" where absent); only for showing
    # a sample to a person: the model sees the hashed ids in `inputs`
    texts: dict[str, list[str]] = field(default_factory=dict)
    # per-sample values of a manifest's extra columns (``meta:NAME``), as written ("" where empty), by NAME: not
    # modalities, never seen by the model; the failure slices (robult_engine/slices.py) group samples by them
    meta: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def subset(self, idx: torch.Tensor | np.ndarray | list[int]) -> "SplitData":
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return SplitData(
            inputs={k: take_rows(v, idx_t) for k, v in self.inputs.items()},
            lengths={k: v[idx_t] for k, v in self.lengths.items()},
            mask=self.mask[idx_t], target=self.target[idx_t],
            ids=[self.ids[i] for i in idx_t.tolist()] if self.ids else [],
            texts={k: [v[i] for i in idx_t.tolist()] for k, v in self.texts.items()},
            meta={k: [v[i] for i in idx_t.tolist()] for k, v in self.meta.items()},
        )

    def select_modalities(self, names: tuple[str, ...], all_names: tuple[str, ...]) -> "SplitData":
        cols = [all_names.index(n) for n in names]
        return SplitData(
            inputs={n: self.inputs[n] for n in names},
            lengths={n: self.lengths[n] for n in names if n in self.lengths},
            mask=self.mask[:, cols], target=self.target, ids=self.ids,
            texts={n: self.texts[n] for n in names if n in self.texts}, meta=self.meta,
        )


@dataclass
class DatasetBundle:
    """What a loader returns: the info and the train / val / test splits (and an optional pool)."""
    info: DatasetInfo
    splits: dict[str, SplitData]  # "train", "val", "test"; optionally "pool" (incomplete-modality samples)

    def fingerprint(self) -> str:
        """A short hash of the data, stored in checkpoints to tell whether a model was trained on it."""
        h = hashlib.sha256()
        h.update(repr(self.info.to_dict()).encode())
        for split in ("train", "val", "test"):
            if split not in self.splits:
                continue
            s = self.splits[split]
            h.update(split.encode())
            h.update(str(len(s)).encode())
            for name in self.info.modality_names:
                # hash a strided sample of values: cheap for large data, still changes when data changes
                h.update(np.ascontiguousarray(_strided_values(s.inputs[name])).tobytes())
            h.update(np.ascontiguousarray(s.target.numpy()).tobytes())
        return h.hexdigest()[:16]

    def select_modalities(self, names: tuple[str, ...]) -> "DatasetBundle":
        """Keep only the named modalities (in the given order)."""
        if not names or tuple(names) == self.info.modality_names:
            return self
        all_names = self.info.modality_names
        info = DatasetInfo(self.info.name, tuple(self.info.spec(n) for n in names), self.info.task,
                           self.info.class_names, self.info.description, self.info.licence)
        return DatasetBundle(info, {k: v.select_modalities(tuple(names), all_names) for k, v in self.splits.items()})


@dataclass
class Batch:
    """A mini-batch: inputs and lengths per modality, presence mask, targets, labeled flags, sample indices."""
    inputs: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor]
    mask: torch.Tensor  # bool (B, M)
    target: torch.Tensor
    labeled: torch.Tensor  # bool (B,)
    index: torch.Tensor  # int64 (B,), index into the split

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            inputs={k: v.to(device, non_blocking=True) for k, v in self.inputs.items()},
            lengths={k: v.to(device, non_blocking=True) for k, v in self.lengths.items()},
            mask=self.mask.to(device), target=self.target.to(device),
            labeled=self.labeled.to(device), index=self.index.to(device),
        )

    def __len__(self) -> int:
        return int(self.mask.shape[0])


def make_batch(split: SplitData, idx: torch.Tensor, labeled: torch.Tensor | None = None) -> Batch:
    """Gather the samples `idx` (int64 (B,)) of a split into a Batch; `labeled` is a bool (N,) over the split."""
    lab = labeled[idx] if labeled is not None else torch.ones(len(idx), dtype=torch.bool)
    return Batch(
        inputs={k: v[idx] for k, v in split.inputs.items()},
        lengths={k: v[idx] for k, v in split.lengths.items()},
        mask=split.mask[idx], target=split.target[idx], labeled=lab, index=idx,
    )


def row_chunks(t):
    """(start, rows) over a tensor or MappedRows, a few MB (CHUNK_BYTES) at a time: how a pass over a whole split
    (a check, a statistic) reads it without holding it whole."""
    if isinstance(t, MappedRows):
        yield from t.chunks()
        return
    step = max(1, CHUNK_BYTES // max(1, t[0].numel() * t.element_size())) if len(t) else 1
    for lo in range(0, len(t), step):
        yield lo, t[lo:lo + step]


def _strided_values(t) -> np.ndarray:
    """t.reshape(-1)[::step].numpy() with step = max(1, numel // 65536), read a chunk of rows at a time."""
    numel = int(np.prod(t.shape))
    step = max(1, numel // 65536)
    if not isinstance(t, MappedRows):
        return t.reshape(-1)[::step].numpy()
    per_row = numel // max(1, len(t))
    parts = []
    for lo, rows in row_chunks(t):
        first = lo * per_row
        start = (-first) % step  # the first multiple of step at or after this chunk's first value
        parts.append(rows.reshape(-1)[start::step].numpy().copy())  # a copy: the chunk itself is let go
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def check_finite(split: SplitData, split_name: str, source: str) -> None:
    """Refuse NaN/inf features with a message naming the source, split, modality and first bad sample.
    Reads a chunk of rows at a time (no temporary the size of the data)."""
    for name, t in split.inputs.items():
        if t.is_floating_point() and not getattr(t, "finite_checked", False):
            bad = torch.zeros(len(t), dtype=torch.bool)
            for lo, rows in row_chunks(t):
                bad[lo:lo + len(rows)] = ~torch.isfinite(rows.reshape(len(rows), -1)).all(dim=1)
            if bad.any():
                i = int(bad.nonzero()[0])
                sid = split.ids[i] if split.ids else str(i)
                raise DataError(f"{source}: modality {name!r} of sample {sid!r} ({split_name} split) holds NaN or "
                                f"infinite values ({int(bad.sum())} samples affected); clean the features first")
