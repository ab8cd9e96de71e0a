"""Detect a dataset's format from a path and load it (the helpers the loaders share are in loading.py).

Formats, by what the path looks like:

| format           | path                                                                        | loader            |
|------------------|-----------------------------------------------------------------------------|-------------------|
| "manifest"       | a folder with manifest.csv / manifest.jsonl, or that file                    | manifest.py       |
| "mosi"           | a .pkl/.pickle file (CMU-MOSI/MOSEI, MultiBench/MulT or MMSA variant), or a folder with one | mosi.py |
| "mmimdb-hdf5"    | multimodal_imdb.hdf5 (any .hdf5/.h5), or a folder holding it                | mmimdb.py         |
| "mmimdb-folder"  | a folder with split.json and dataset/<id>.json + <id>.jpeg (or its mmimdb/ child) | mmimdb.py   |
| "food101"        | a folder with images/{train,test}/<class>/ and texts/{train,test}_titles.csv | food101.py       |
| "hateful-memes"  | a folder with train.jsonl and img/ (or a .jsonl file inside it)             | hateful_memes.py  |

Images of the paper datasets are resized to `loading.IMAGE_SHAPE` and texts hashed to uni+bi-gram ids (text.py).
"""
from __future__ import annotations

from pathlib import Path

from .base import DataError, DatasetBundle, check_finite

FORMATS = ("manifest", "mosi", "mmimdb-hdf5", "mmimdb-folder", "food101", "hateful-memes")
PICKLE_SUFFIXES = (".pkl", ".pickle")
HDF5_SUFFIXES = (".hdf5", ".h5")


def _mmimdb_root(path: Path) -> Path | None:
    for cand in (path, path / "mmimdb"):
        if (cand / "split.json").is_file() and (cand / "dataset").is_dir():
            return cand
    return None


def detect_format(path: str | Path) -> str:
    """Name the format of a dataset path (one of FORMATS); DataError says what was looked for."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        suffix = p.suffix.lower()
        if p.name in ("manifest.csv", "manifest.jsonl"):
            return "manifest"
        if suffix in PICKLE_SUFFIXES:
            return "mosi"
        if suffix in HDF5_SUFFIXES:
            return "mmimdb-hdf5"
        if suffix == ".jsonl" and (p.parent / "train.jsonl").is_file():
            return "hateful-memes"
        raise DataError(f"{p}: unknown dataset file type {suffix or '(none)'}; expected a .pkl (MOSI/MOSEI), "
                        f".hdf5 (MM-IMDb), manifest.csv/.jsonl, or a dataset folder")
    if (p / "manifest.csv").is_file() or (p / "manifest.jsonl").is_file():
        return "manifest"
    if (p / "multimodal_imdb.hdf5").is_file():
        return "mmimdb-hdf5"
    if _mmimdb_root(p) is not None:
        return "mmimdb-folder"
    if (p / "images").is_dir() and (p / "texts").is_dir():
        return "food101"
    if (p / "train.jsonl").is_file():
        return "hateful-memes"
    pickles = sorted(q for q in p.iterdir() if q.suffix.lower() in PICKLE_SUFFIXES)
    if len(pickles) == 1:
        return "mosi"
    hint = f" (it holds {len(pickles)} pickles: name one)" if len(pickles) > 1 else ""
    raise DataError(f"{p}: cannot tell the dataset format{hint}. Expected manifest.csv/manifest.jsonl "
                    f"(your own data), a MOSI/MOSEI .pkl, multimodal_imdb.hdf5 or split.json + dataset/ "
                    f"(MM-IMDb), images/ + texts/ (UPMC Food-101), or train.jsonl + img/ (Hateful Memes)")


def load_path(path: str | Path) -> DatasetBundle:
    """Load the dataset at `path` in its detected format; features are checked for NaN/inf."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "manifest":
        from .manifest import load_manifest
        bundle = load_manifest(p)
    elif fmt == "mosi":
        from .mosi import load_mosi
        if p.is_dir():
            p = next(q for q in sorted(p.iterdir()) if q.suffix.lower() in PICKLE_SUFFIXES)
        bundle = load_mosi(p)
    elif fmt == "mmimdb-hdf5":
        from .mmimdb import load_mmimdb_hdf5
        bundle = load_mmimdb_hdf5(p / "multimodal_imdb.hdf5" if p.is_dir() else p)
    elif fmt == "mmimdb-folder":
        from .mmimdb import load_mmimdb_folder
        root = _mmimdb_root(p)
        assert root is not None
        bundle = load_mmimdb_folder(root)
    elif fmt == "food101":
        from .food101 import load_food101
        bundle = load_food101(p)
    else:
        from .hateful_memes import load_hateful_memes
        bundle = load_hateful_memes(p.parent if p.is_file() else p)
    for name, split in bundle.splits.items():
        check_finite(split, name, str(path))
    return bundle
