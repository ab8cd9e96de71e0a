"""CMU-MOSI / CMU-MOSEI sentiment pickles, read without executing pickled code.

Two published variants are understood, detected from the keys of each split:

- MultiBench / MulT (``mosi_data.pkl``, ``mosei_senti_data.pkl``, ``mosi_raw.pkl`` …): ``{"train", "valid",
  "test"}`` → ``{"text", "audio", "vision": float (N, T, D), "labels": (N, 1, 1) or (N, 1) or (N,), "id": …}``.
  Word-aligned sequences are zero-padded at the front.
- MMSA (``aligned_50.pkl``, ``unaligned_50.pkl``): the same splits with ``"regression_labels"`` (N,),
  optional ``"audio_lengths"`` / ``"vision_lengths"`` (right-padded sequences) and ``"raw_text"``.

Every modality becomes a "sequence" modality of the shape read from the file (text features as given:
GloVe 300-d or BERT 768-d). Lengths come from the ``*_lengths`` arrays when present, else from the span of
non-zero frames (moved to the front, the padding convention of the encoders). ``-inf`` (and ``+inf``) values,
which MOSI/MOSEI audio features contain, are replaced by 0; NaN is refused. The task is regression of the
sentiment score in [−3, 3]. Splits ``valid``/``val``/``dev`` all map to ``val``.

Memory: the features are converted in place (float32 arrays of the pickle become the tensors without a copy;
other dtypes are converted one array at a time, the pickle's array dropped as soon as it is converted), and
every pass over them (NaN / inf, the span of non-zero frames) works on a few MB at a time, so loading
holds about one copy of the features: the pickle's own arrays.

The pickle is read by `SafeUnpickler`, which only resolves numpy's array/dtype/scalar reconstructors and
plain builtin containers: a pickle that names any other callable (``os.system`` …) is refused with a
DataError before anything is called.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import DataError, DatasetBundle, DatasetInfo, ModalitySpec, SplitData

MODALITY_KEYS = ("text", "audio", "vision")
SPLIT_ALIASES = {"train": "train", "valid": "val", "val": "val", "dev": "val", "test": "test"}


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy callables a pickled ndarray needs, under the module names numpy 1.x and 2.x write."""
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
        from numpy._core import numeric as nm
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nm  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = nm._frombuffer  # protocol-5 pickles of contiguous arrays
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


_BUILTINS = {name: getattr(__import__("builtins"), name)
             for name in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
                          "float", "complex", "bool", "slice", "range")}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler admitting only numpy arrays, dtypes, numpy scalars and builtin containers/values."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if (module, name) == ("collections", "OrderedDict"):
            import collections
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles write bytes as _codecs.encode(str, 'latin1')
            import codecs
            return codecs.encode
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and plain "
                                     f"containers are allowed in a data pickle")


def safe_load_pickle(path: Path) -> Any:
    """Load a pickle with `SafeUnpickler`; any refusal or damage is a DataError naming the file."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: unsafe or invalid pickle ({e})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - damaged bytes raise anything (EOFError, struct.error, MemoryError …)
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def _as_array(value: Any, what: str, path: Path) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: {what} is not an array ({e})") from None


CHUNK_BYTES = 8 << 20  # the largest temporary of a pass over the features


def _chunks(n: int, row_bytes: int):
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)


def _leading_span_to_front(x: np.ndarray, nonzero: np.ndarray) -> np.ndarray:
    """Move each sample's span of non-zero frames to the front, in place, zeroing the frames after it.

    x: float32 (N, T, D), written; nonzero: bool (N, T), whether a frame holds a non-zero value. Returns the
    lengths int64 (N,) (1 for a sample with no non-zero frame, which becomes all zeros)."""
    n, t = nonzero.shape
    any_frame = nonzero.any(axis=1)
    first = nonzero.argmax(axis=1)
    last = t - 1 - nonzero[:, ::-1].argmax(axis=1)
    lengths = np.where(any_frame, last - first + 1, 1).astype(np.int64)
    # the frames after the span are rewritten as +0.0 even where they already are zero frames (-0.0 would
    # otherwise survive), so the result is the same array, bit for bit, as copying the span into zeros
    for i in np.nonzero(~any_frame | (first > 0) | (last < t - 1))[0]:
        if not any_frame[i]:
            x[i] = 0.0
            continue
        length = int(lengths[i])
        if first[i] > 0:
            x[i, :length] = x[i, first[i]:last[i] + 1]  # numpy buffers overlapping copies
        x[i, length:] = 0.0
    return lengths


def _features(split: dict, key: str, name: str, path: Path, n: int) -> np.ndarray:
    """One modality of one split as float32 C-ordered (N, T, D), NaN refused and ±inf zeroed in place.

    The pickle's array is used as it is when it already is writable float32 (no copy); otherwise it is
    converted and the split's reference to it dropped, so its memory is freed before the next array."""
    x = _as_array(split[key], f"{name}/{key}", path)
    if x.ndim == 2:  # utterance-level vectors (N, D): a sequence of one frame
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[0] != n:
        raise DataError(f"{path}: {name}/{key} has shape {x.shape}; expected (N={n}, T, D)")
    if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable or not x.flags.aligned:
        try:
            x = np.array(x, dtype=np.float32, order="C")
        except (ValueError, TypeError) as e:
            raise DataError(f"{path}: {name}/{key} is not numeric ({e})") from None
    split[key] = None  # the converted array is the only reference kept
    row_bytes = x[0].nbytes if n else 1
    for lo, hi in _chunks(n, row_bytes):
        nan = np.isnan(x[lo:hi])
        if nan.any():
            i = lo + int(np.nonzero(nan.reshape(hi - lo, -1).any(axis=1))[0][0])
            raise DataError(f"{path}: {name}/{key} holds NaN (first in sample {i}); clean the features first")
    for lo, hi in _chunks(n, row_bytes):
        chunk = x[lo:hi]
        chunk[np.isinf(chunk)] = 0.0  # MOSI/MOSEI audio (COVAREP) holds -inf: the published loaders zero it too
    return x


def _split_arrays(split: Any, name: str, path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                              np.ndarray, list[str]]:
    if not isinstance(split, dict):
        raise DataError(f"{path}: split {name!r} is a {type(split).__name__}, expected a dict of arrays")
    present = [k for k in MODALITY_KEYS if k in split]
    if not present:
        raise DataError(f"{path}: split {name!r} has none of the modalities {', '.join(MODALITY_KEYS)} "
                        f"(keys: {', '.join(map(str, split))})")
    if "regression_labels" in split:
        labels = _as_array(split["regression_labels"], f"{name}/regression_labels", path)
    elif "labels" in split:
        labels = _as_array(split["labels"], f"{name}/labels", path)
    else:
        raise DataError(f"{path}: split {name!r} has no 'labels' or 'regression_labels'")
    n = labels.shape[0] if labels.ndim else 0
    if labels.size != n or n == 0:
        raise DataError(f"{path}: {name} labels have shape {labels.shape}; expected one score per sample "
                        f"((N,), (N, 1) or (N, 1, 1))")
    try:
        target = labels.reshape(n).astype(np.float32)
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: {name} labels are not numbers ({e})") from None
    if not np.isfinite(target).all():
        raise DataError(f"{path}: {name} labels hold NaN or infinite values")
    inputs, lengths = {}, {}
    for key in present:
        x = _features(split, key, name, path, n)
        len_key = f"{key}_lengths"
        if len_key in split:
            lens = _as_array(split[len_key], f"{name}/{len_key}", path).reshape(-1).astype(np.int64)
            if lens.shape != (n,) or (lens < 0).any() or (lens > x.shape[1]).any():
                raise DataError(f"{path}: {name}/{len_key} must hold {n} lengths in 0..{x.shape[1]}")
            lens = np.maximum(lens, 1)
        else:
            nonzero = np.zeros(x.shape[:2], dtype=bool)  # (N, T)
            for lo, hi in _chunks(n, x[0].nbytes):
                nonzero[lo:hi] = (x[lo:hi] != 0).any(axis=2)
            lens = _leading_span_to_front(x, nonzero)
        inputs[key], lengths[key] = x, lens
    return inputs, lengths, target, _ids(split.get("id"), n, name)


def _ids(raw: Any, n: int, split_name: str) -> list[str]:
    """Readable sample ids from an 'id' entry ((N,) or (N, k) of str/bytes); positions when unusable."""
    fallback = [f"{split_name}-{i}" for i in range(n)]
    if raw is None:
        return fallback
    try:
        arr = np.asarray(raw, dtype=object)
        if arr.size == 0 or arr.size % n:
            return fallback
        rows = arr.reshape(n, -1)
    except (ValueError, TypeError):
        return fallback
    return ["_".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in row) for row in rows]


def load_mosi(path: Path) -> DatasetBundle:
    """Load a MOSI/MOSEI pickle (either variant) as a regression DatasetBundle."""
    path = Path(path)
    data = safe_load_pickle(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of splits ('train', 'valid', 'test'), got {type(data).__name__}")
    found = {SPLIT_ALIASES[k]: k for k in data if isinstance(k, str) and k in SPLIT_ALIASES}
    missing = [s for s in ("train", "val", "test") if s not in found]
    if missing:
        raise DataError(f"{path}: missing split(s) {', '.join(missing)}; the pickle holds "
                        f"{', '.join(map(str, data)) or 'nothing'} (expected 'train', 'valid' and 'test')")
    raw = {s: _split_arrays(data[k], k, path) for s, k in found.items()}
    del data  # what is left of the pickle (ids, texts) is not kept
    names = [k for k in MODALITY_KEYS if all(k in raw[s][0] for s in raw)]
    if not names:
        raise DataError(f"{path}: no modality is present in every split")
    specs = []
    for key in names:
        dims = {raw[s][0][key].shape[2] for s in raw}
        if len(dims) != 1:
            raise DataError(f"{path}: {key} features have different sizes across splits: {sorted(dims)}")
        t_max = max(raw[s][0][key].shape[1] for s in raw)
        specs.append(ModalitySpec(key, "sequence", (t_max, dims.pop())))
    splits = {}
    for s, (inputs, lengths, target, ids) in raw.items():
        tensors = {}
        for spec in specs:
            x = inputs.pop(spec.name)
            if x.shape[1] < spec.shape[0]:  # a split of shorter sequences: padded (a new array, the old freed)
                x = np.pad(x, ((0, 0), (0, spec.shape[0] - x.shape[1]), (0, 0)))
            tensors[spec.name] = torch.from_numpy(x)  # (N, T, D) float32, C-ordered: no copy
        n = len(target)
        splits[s] = SplitData(inputs=tensors, lengths={k: torch.from_numpy(lengths[k]) for k in names},
                              mask=torch.ones(n, len(specs), dtype=torch.bool), target=torch.from_numpy(target),
                              ids=ids)
    kind = "MOSEI" if "mosei" in path.name.lower() else "MOSI/MOSEI"
    info = DatasetInfo(
        name=path.stem, modalities=tuple(specs), task="regression", class_names=("score",),
        description=(f"CMU-{kind} sentiment pickle {path.name}: {', '.join(names)} sequences; sentiment "
                     f"regression in [-3, 3]; {len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} "
                     f"train/val/test."),
        licence="CMU-MultimodalSDK data: see the CMU-MOSI/MOSEI terms of use.")
    return DatasetBundle(info, splits)
