"""Loaders of the paper's datasets, each on small fixture files written here in the real layout."""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from robult_engine.config import DataConfig
from robult_engine.data import DataError, load_dataset
from robult_engine.data.formats import detect_format, load_path
from robult_engine.data.loading import stratified_holdout
from robult_engine.data.mmimdb import GENRES


# --- fixture writers (shared with test_bad_input.py) -----------------------------------------------------
def write_image(path: Path, color=(200, 30, 30), size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def mosi_split(n: int, rng: np.random.Generator, t: int = 6, variant: str = "multibench") -> dict:
    text = rng.standard_normal((n, t, 5)).astype(np.float32)
    audio = rng.standard_normal((n, t, 3)).astype(np.float32)
    vision = rng.standard_normal((n, t, 4)).astype(np.float32)
    for i in range(n):  # word-aligned MulT data: zero-padded at the front
        k = i % 3
        text[i, :k] = audio[i, :k] = vision[i, :k] = 0.0
    audio[0, -1, 0] = -np.inf  # COVAREP features hold -inf
    labels = rng.uniform(-3, 3, size=n).astype(np.float32)
    if variant == "multibench":
        return {"text": text, "audio": audio, "vision": vision, "labels": labels.reshape(n, 1, 1),
                "id": np.array([[f"vid{i}", str(i)] for i in range(n)], dtype=object)}
    return {"text": text, "audio": audio, "vision": vision, "regression_labels": labels,
            "classification_labels": (labels > 0).astype(np.float32), "raw_text": np.array(["w"] * n, dtype=object),
            "audio_lengths": np.full(n, t - 1), "vision_lengths": [t] * n, "id": [f"clip_{i}" for i in range(n)]}


def write_mosi(path: Path, variant: str = "multibench", protocol: int = 4, splits=("train", "valid", "test")) -> Path:
    rng = np.random.default_rng(0)
    data = {s: mosi_split(n, rng, variant=variant) for s, n in zip(splits, (12, 5, 6))}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def write_mmimdb_hdf5(path: Path, with_split_attr: bool = True, n: int = 20) -> Path:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rng.standard_normal((n, 300)).astype(np.float32))
        f.create_dataset("vgg_features", data=rng.random((n, 4096)).astype(np.float32))
        g = f.create_dataset("genres", data=(rng.random((n, 23)) > 0.8).astype(np.int32))
        g.attrs["target_names"] = json.dumps(list(GENRES))
        f.create_dataset("imdb_ids", data=np.array([f"{i:07d}" for i in range(n)], dtype="S7"))
        if with_split_attr:
            dt = np.dtype([("split", "S5"), ("source", "S12"), ("start", np.int64), ("stop", np.int64)])
            rows = [(s, src, a, b) for s, (a, b) in (("train", (0, 12)), ("dev", (12, 15)), ("test", (15, n)))
                    for src in ("features", "vgg_features", "genres")]
            f.attrs["split"] = np.array([(s.encode(), src.encode(), a, b) for s, src, a, b in rows], dtype=dt)
    return path


def write_mmimdb_folder(root: Path, missing_poster: str | None = None) -> Path:
    ids = {"train": ["0000001", "0000002", "0000003"], "dev": ["0000004"], "test": ["0000005", "0000006"]}
    (root / "dataset").mkdir(parents=True)
    (root / "split.json").write_text(json.dumps(ids))
    for k, mid in enumerate(sum(ids.values(), [])):
        movie = {"plot": ["Short plot.", f"A longer plot about movie {mid} and its hero."],
                 "genres": ["Drama", "Comedy"] if k % 2 else ["Horror", "Not-A-Genre"], "title": f"Movie {mid}"}
        (root / "dataset" / f"{mid}.json").write_text(json.dumps(movie))
        if mid != missing_poster:
            write_image(root / "dataset" / f"{mid}.jpeg", color=(20 * k, 100, 200))
    return root


def write_food101(root: Path, classes=("apple_pie", "pizza", "sushi"), per_class: int = 6) -> Path:
    for split in ("train", "test"):
        n = per_class if split == "train" else 2
        rows = []
        for c in classes:
            for i in range(n):
                name = f"{c}_{i}.jpg"
                write_image(root / "images" / split / c / name, color=(40 * len(c), 10 * i, 90))
                rows.append([name, f"Best {c.replace('_', ' ')} recipe, number {i}", c])
        (root / "texts").mkdir(parents=True, exist_ok=True)
        with open(root / "texts" / f"{split}_titles.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


def write_hateful_memes(root: Path, test_labelled: bool = True) -> Path:
    def rows(prefix: str, n: int, labelled: bool = True):
        out = []
        for i in range(n):
            mid = f"{prefix}{i:03d}"
            write_image(root / "img" / f"{mid}.png", color=(i * 20 % 255, 50, 50))
            row = {"id": mid, "img": f"img/{mid}.png", "text": f"meme text {i} {prefix}"}
            if labelled:
                row["label"] = i % 2
            out.append(json.dumps(row))
        return "\n".join(out) + "\n"
    (root / "img").mkdir(parents=True)
    (root / "train.jsonl").write_text(rows("1", 10))
    (root / "dev.jsonl").write_text(rows("2", 6))
    (root / "test.jsonl").write_text(rows("3", 4, labelled=test_labelled))
    return root


# --- detection ---------------------------------------------------------------------------------------------
def test_detect_format(tmp_path):
    assert detect_format(write_mosi(tmp_path / "mosi_data.pkl")) == "mosi"
    assert detect_format(write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5")) == "mmimdb-hdf5"
    assert detect_format(tmp_path) == "mmimdb-hdf5"  # the folder holding multimodal_imdb.hdf5
    assert detect_format(write_mmimdb_folder(tmp_path / "raw" / "mmimdb")) == "mmimdb-folder"
    assert detect_format(tmp_path / "raw") == "mmimdb-folder"
    assert detect_format(write_food101(tmp_path / "food")) == "food101"
    assert detect_format(write_hateful_memes(tmp_path / "hm")) == "hateful-memes"
    assert detect_format(tmp_path / "hm" / "dev.jsonl") == "hateful-memes"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.csv").write_text("id,split,label,x\n")
    assert detect_format(tmp_path / "m") == "manifest"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        detect_format(tmp_path / "empty")


# --- MOSI / MOSEI ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_mosi_multibench_variant(tmp_path, protocol):
    b = load_path(write_mosi(tmp_path / "mosi_data.pkl", protocol=protocol))
    assert b.info.task == "regression" and b.info.class_names == ("score",)
    assert [(m.name, m.kind, m.shape) for m in b.info.modalities] == [("text", "sequence", (6, 5)),
                                                                      ("audio", "sequence", (6, 3)),
                                                                      ("vision", "sequence", (6, 4))]
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 12, "val": 5, "test": 6}
    tr = b.splits["train"]
    assert tr.target.shape == (12,) and tr.target.dtype == torch.float32
    assert float(tr.target.abs().max()) <= 3.0
    assert bool(torch.isfinite(tr.inputs["audio"]).all())  # -inf → 0
    # front padding detected: sample 1 had 1 leading zero frame, sample 2 had 2
    assert tr.lengths["text"][:3].tolist() == [6, 5, 4]
    assert float(tr.inputs["text"][2, 4:].abs().sum()) == 0.0 and float(tr.inputs["text"][2, 0].abs().sum()) > 0
    assert tr.ids[0] == "vid0_0"


def test_mosi_mmsa_variant(tmp_path):
    b = load_dataset(DataConfig(dataset=str(write_mosi(tmp_path / "unaligned_50.pkl", variant="mmsa"))))
    tr = b.splits["train"]
    assert tr.lengths["audio"].tolist() == [5] * 12  # from audio_lengths
    assert tr.lengths["vision"].tolist() == [6] * 12
    assert tr.ids[:2] == ["clip_0", "clip_1"]
    assert b.info.task == "regression"


def test_mosi_folder_with_one_pickle(tmp_path):
    write_mosi(tmp_path / "mosei_senti_data.pkl")
    assert detect_format(tmp_path) == "mosi"
    assert len(load_path(tmp_path).splits["test"]) == 6


# --- MM-IMDb -----------------------------------------------------------------------------------------------
def test_mmimdb_hdf5(tmp_path):
    b = load_path(write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5"))
    assert b.info.task == "multi-label" and b.info.class_names == GENRES
    assert [(m.name, m.kind, m.shape) for m in b.info.modalities] == [("text", "vector", (300,)),
                                                                      ("image", "vector", (4096,))]
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 12, "val": 3, "test": 5}
    t = b.splits["test"]
    assert t.target.shape == (5, 23) and set(t.target.unique().tolist()) <= {0.0, 1.0}
    assert t.ids[0] == "0000015"


def test_mmimdb_hdf5_without_split_needs_the_published_size(tmp_path):
    with pytest.raises(DataError, match="split"):
        load_path(write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5", with_split_attr=False))


def test_mmimdb_folder(tmp_path):
    root = write_mmimdb_folder(tmp_path / "mmimdb", missing_poster="0000002")
    b = load_path(root)
    assert [(m.name, m.kind) for m in b.info.modalities] == [("text", "text"), ("image", "image")]
    assert b.info.modalities[1].shape == (3, 64, 64)
    tr = b.splits["train"]
    assert tr.mask.tolist() == [[True, True], [True, False], [True, True]]  # poster of 0000002 missing
    assert float(tr.inputs["image"][1].abs().sum()) == 0.0
    assert tr.target[0, GENRES.index("Horror")] == 1 and tr.target[0].sum() == 1  # unknown genre ignored
    assert tr.target[1, GENRES.index("Drama")] == 1 and tr.target[1, GENRES.index("Comedy")] == 1
    # the longest plot is used: its ids are longer than the short one's would be
    assert int(tr.lengths["text"][0]) > 5
    assert tr.texts["text"][0] == "A longer plot about movie 0000001 and its hero."  # kept for showing


# --- Food-101 ----------------------------------------------------------------------------------------------
def test_food101(tmp_path):
    root = write_food101(tmp_path / "food")
    (root / "images" / "train" / "pizza" / "pizza_5.jpg").unlink()  # listed in the CSV, image gone
    write_image(root / "images" / "test" / "sushi" / "extra.jpg")  # image without a title
    b = load_path(root)
    assert b.info.class_names == ("apple_pie", "pizza", "sushi") and b.info.task == "single-label"
    sizes = {k: len(v) for k, v in b.splits.items()}
    assert sizes["train"] + sizes["val"] == 18 and sizes["val"] == 3 and sizes["test"] == 7
    assert torch.bincount(b.splits["val"].target, minlength=3).tolist() == [1, 1, 1]  # stratified
    all_train = {i: m for s in ("train", "val") for i, m in zip(b.splits[s].ids, b.splits[s].mask.tolist())}
    assert all_train["pizza/pizza_5.jpg"] == [True, False]
    t = b.splits["test"]
    assert t.mask[t.ids.index("sushi/extra.jpg")].tolist() == [False, True]
    # the carve is seeded: loading again gives the same validation ids
    assert load_path(root).splits["val"].ids == b.splits["val"].ids
    # the raw titles stay aligned with their samples through the carve ("" where a sample has no title)
    for split in b.splits.values():
        for sid, text, present in zip(split.ids, split.texts["text"], split.mask[:, 0].tolist()):
            if present:
                c, i = sid.split("/")[0], sid.rsplit("_", 1)[1].split(".")[0]
                assert text == f"Best {c.replace('_', ' ')} recipe, number {i}", (sid, text)
            else:
                assert text == ""


def test_food101_header_row_is_skipped(tmp_path):
    root = write_food101(tmp_path / "food")
    p = root / "texts" / "test_titles.csv"
    p.write_text("image_name,text,food\n" + p.read_text())
    assert len(load_path(root).splits["test"]) == 6


# --- Hateful Memes -------------------------------------------------------------------------------------------
def test_hateful_memes(tmp_path):
    b = load_path(write_hateful_memes(tmp_path / "hm"))
    assert b.info.class_names == ("not hateful", "hateful")
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 10, "val": 6, "test": 4}
    assert b.splits["train"].target.tolist() == [0, 1] * 5
    assert b.splits["train"].inputs["image"].shape == (10, 3, 64, 64)


def test_images_are_stored_as_bytes_and_read_as_the_float_image(tmp_path):
    """uint8 storage (a quarter of float32's memory) loses at most half a grey level against load_image."""
    from robult_engine.data.image import load_image
    from robult_engine.models.encoders import ImageEncoder
    root = write_hateful_memes(tmp_path / "hm")
    b = load_path(root)
    imgs = b.splits["train"].inputs["image"]
    assert imgs.dtype == torch.uint8 and imgs.element_size() == 1
    exact = load_image(root / "img" / "1003.png", (3, 64, 64), digit=False)
    row = b.splits["train"].ids.index("1003")
    assert (imgs[row].float() / 255 - exact).abs().max() <= 0.5 / 255 + 1e-6
    assert int(imgs.max()) > 1  # bytes 0..255, not a [0, 1] float cast to integers
    enc = ImageEncoder(3, 16, 0.0).eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(imgs[:4]), enc(imgs[:4].float() / 255))


def test_hateful_memes_unlabelled_test_uses_half_of_dev(tmp_path):
    b = load_path(write_hateful_memes(tmp_path / "hm", test_labelled=False))
    assert len(b.splits["val"]) + len(b.splits["test"]) == 6
    assert "half of dev" in b.info.description
    assert set(b.splits["test"].ids).isdisjoint(b.splits["val"].ids)
    for split in b.splits.values():  # raw texts follow their samples into the halves of dev
        assert split.texts["text"] == [f"meme text {int(i[1:])} {i[0]}" for i in split.ids]


def test_stratified_holdout():
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 2
    held = stratified_holdout(labels, 0.2, seed=0)
    assert [sum(h for h, lab in zip(held, labels) if lab == c) for c in "abc"] == [2, 2, 1]
    assert (held == stratified_holdout(labels, 0.2, seed=0)).all()
    assert stratified_holdout(["x"], 0.5).tolist() == [False]  # a lone sample stays in training
