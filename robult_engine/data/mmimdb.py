"""MM-IMDb (Arevalo et al., 2017): movie genre classification from plot and poster, multi-label, 23 genres.

Two layouts are read:

- ``multimodal_imdb.hdf5`` (gmu-mmimdb's ``make_dataset.py``, used by MultiBench): datasets ``features``
  (N, 300) — the mean word2vec of the plot —, ``vgg_features`` (N, 4096) — VGG-16 features of the poster —,
  ``genres`` (N, 23) with ``attrs["target_names"]`` (JSON) and optionally ``imdb_ids``; the split is the Fuel
  ``split`` attribute of the file (rows of split/source/start/stop). Without that attribute the file must
  hold the published 25,959 movies, split 15,552 / 2,608 / 7,799 in order (MultiBench's convention).
  Modalities: ``text`` and ``image``, both "vector".
- the raw release folder: ``split.json`` ({"train"|"dev"|"test": [ids]}) and ``dataset/<id>.json`` (with
  ``plot``: a list of plot texts, the longest is used, and ``genres``) + ``dataset/<id>.jpeg``. Modalities:
  ``text`` (hashed n-grams) and ``image`` (resized to loading.IMAGE_SHAPE). A missing poster or an absent
  plot makes that modality missing for the movie; a movie with neither is an error.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .base import DataError, DatasetBundle, DatasetInfo, ModalitySpec, SplitData
from .loading import IMAGE_SHAPE, encode_text_splits, load_images

GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Animation", "Musical",
          "Music", "Western", "Sport", "Short", "Film-Noir")
PUBLISHED_SPLIT = {"train": (0, 15552), "val": (15552, 18160), "test": (18160, 25959)}
SPLIT_ALIASES = {"train": "train", "dev": "val", "valid": "val", "val": "val", "test": "test"}
LICENCE = "MM-IMDb (Arevalo et al., 2017): see the dataset's terms; plots and posters belong to IMDb."


def _hdf5_split(f, n: int, path: Path) -> dict[str, tuple[int, int]]:
    """The split ranges from the Fuel `split` attribute, or the published ranges for the full file."""
    split_attr = f.attrs.get("split")
    if split_attr is not None:
        try:
            ranges: dict[str, tuple[int, int]] = {}
            for row in split_attr:
                name = row["split"].decode() if isinstance(row["split"], bytes) else str(row["split"])
                key = SPLIT_ALIASES.get(name)
                if key is not None:
                    ranges.setdefault(key, (int(row["start"]), int(row["stop"])))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise DataError(f"{path}: unreadable 'split' attribute ({e})") from None
        missing = [s for s in ("train", "val", "test") if s not in ranges]
        if missing:
            raise DataError(f"{path}: the 'split' attribute lacks {', '.join(missing)}")
        for s, (a, b) in ranges.items():
            if not 0 <= a < b <= n:
                raise DataError(f"{path}: split {s!r} range {a}..{b} is outside the {n} samples")
        return ranges
    if n == PUBLISHED_SPLIT["test"][1]:
        return dict(PUBLISHED_SPLIT)
    raise DataError(f"{path}: no 'split' attribute and {n} samples (not the published 25,959), so the "
                    f"train/dev/test split is unknown")


def load_mmimdb_hdf5(path: Path) -> DatasetBundle:
    """Load multimodal_imdb.hdf5 (text: mean word2vec (300), image: VGG-16 features (4096))."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        missing = [k for k in ("genres", "features", "vgg_features") if k not in f]
        if missing:
            raise DataError(f"{path}: the HDF5 file has no dataset {', '.join(repr(m) for m in missing)} "
                            f"(it has {', '.join(sorted(f.keys())) or 'nothing'}); expected MM-IMDb's "
                            f"multimodal_imdb.hdf5 with 'features', 'vgg_features' and 'genres'")
        genres = f["genres"]
        n = int(genres.shape[0])
        for key in ("features", "vgg_features"):
            if f[key].ndim != 2 or f[key].shape[0] != n:
                raise DataError(f"{path}: dataset {key!r} has shape {f[key].shape}; expected ({n}, D)")
        if genres.ndim != 2:
            raise DataError(f"{path}: dataset 'genres' has shape {genres.shape}; expected (N, genres)")
        names = None
        if "target_names" in genres.attrs:
            try:
                names = tuple(str(g) for g in json.loads(genres.attrs["target_names"]))
            except (ValueError, TypeError):
                names = None
        if names is None or len(names) != genres.shape[1]:
            names = GENRES if genres.shape[1] == len(GENRES) else tuple(f"genre {i}" for i in range(genres.shape[1]))
        ranges = _hdf5_split(f, n, path)
        ids_ds = f["imdb_ids"] if "imdb_ids" in f else None
        splits = {}
        for s, (a, b) in ranges.items():
            text = np.asarray(f["features"][a:b], dtype=np.float32)  # (n_s, 300)
            image = np.asarray(f["vgg_features"][a:b], dtype=np.float32)  # (n_s, 4096)
            target = (np.asarray(genres[a:b]) > 0).astype(np.float32)  # (n_s, 23) multi-hot
            ids = ([v.decode() if isinstance(v, bytes) else str(v) for v in ids_ds[a:b]] if ids_ds is not None
                   else [str(i) for i in range(a, b)])
            splits[s] = SplitData(inputs={"text": torch.from_numpy(text), "image": torch.from_numpy(image)},
                                  lengths={}, mask=torch.ones(b - a, 2, dtype=torch.bool),
                                  target=torch.from_numpy(target), ids=ids)
        specs = (ModalitySpec("text", "vector", (int(f["features"].shape[1]),)),
                 ModalitySpec("image", "vector", (int(f["vgg_features"].shape[1]),)))
    info = DatasetInfo(name="mm-imdb", modalities=specs, task="multi-label", class_names=names,
                       description=(f"MM-IMDb ({path.name}): plot word2vec and poster VGG-16 features, "
                                    f"{len(names)} genres; {' / '.join(str(len(splits[s])) for s in ('train', 'val', 'test'))}"
                                    f" train/val/test."), licence=LICENCE)
    return DatasetBundle(info, splits)


def _read_movie(json_path: Path) -> tuple[str | None, list[str]]:
    """(longest plot or None, genres) of one movie JSON file."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{json_path}: listed in split.json but the file does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: expected a JSON object with 'plot' and 'genres'")
    plots = data.get("plot") or []
    if isinstance(plots, str):
        plots = [plots]
    plots = [p for p in plots if isinstance(p, str) and p.strip()]
    genres = data.get("genres") or []
    if not isinstance(genres, list):
        raise DataError(f"{json_path}: 'genres' must be a list of names")
    return (max(plots, key=len) if plots else None), [str(g) for g in genres]


def load_mmimdb_folder(root: Path) -> DatasetBundle:
    """Load the raw MM-IMDb release: split.json + dataset/<id>.json + dataset/<id>.jpeg."""

    root = Path(root)
    split_file = root / "split.json"
    try:
        split = json.loads(split_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{split_file}: not valid JSON ({e})") from None
    if not isinstance(split, dict):
        raise DataError(f"{split_file}: expected an object {{'train': [...], 'dev': [...], 'test': [...]}}")
    found = {SPLIT_ALIASES[k]: k for k in split if k in SPLIT_ALIASES}
    missing = [s for s in ("train", "val", "test") if s not in found]
    if missing:
        raise DataError(f"{split_file}: missing split(s) {', '.join(missing)} (expected train, dev, test)")
    genre_index = {g: i for i, g in enumerate(GENRES)}
    texts, images, targets, ids = {}, {}, {}, {}
    for s, key in found.items():
        movie_ids = [str(m) for m in split[key]]
        if not movie_ids:
            raise DataError(f"{split_file}: split {key!r} is empty")
        texts[s], images[s], ids[s] = [], [], movie_ids
        targets[s] = np.zeros((len(movie_ids), len(GENRES)), dtype=np.float32)
        for j, mid in enumerate(movie_ids):
            plot, genres = _read_movie(root / "dataset" / f"{mid}.json")
            poster = root / "dataset" / f"{mid}.jpeg"
            if plot is None and not poster.is_file():
                raise DataError(f"{root / 'dataset' / mid}: movie {mid} has neither a plot nor a poster")
            texts[s].append(plot)
            images[s].append(poster if poster.is_file() else None)
            for g in genres:
                if g in genre_index:
                    targets[s][j, genre_index[g]] = 1.0
    encoded, width = encode_text_splits(texts)
    splits = {}
    for s in found:
        ids_t, lengths, text_present = encoded[s]
        img, img_present = load_images(images[s], IMAGE_SHAPE)
        splits[s] = SplitData(inputs={"text": ids_t, "image": img}, lengths={"text": lengths},
                              mask=torch.stack([text_present, img_present], dim=1),
                              target=torch.from_numpy(targets[s]), ids=ids[s],
                              texts={"text": [t or "" for t in texts[s]]})
    info = DatasetInfo(name="mm-imdb", modalities=(ModalitySpec("text", "text", (width,)),
                                                   ModalitySpec("image", "image", IMAGE_SHAPE)),
                       task="multi-label", class_names=GENRES,
                       description=(f"MM-IMDb ({root}): hashed plot n-grams and {IMAGE_SHAPE[1]}x{IMAGE_SHAPE[2]} "
                                    f"posters, 23 genres; {' / '.join(str(len(splits[s])) for s in ('train', 'val', 'test'))}"
                                    f" train/val/test."), licence=LICENCE)
    return DatasetBundle(info, splits)
