"""Your own data: manifest.csv / manifest.jsonl with image, audio, .npy and text columns."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from robult_engine.config import DataConfig
from robult_engine.data import load_dataset
from robult_engine.data.formats import load_path
from robult_engine.data.manifest import load_manifest


def tone_wav(path: Path, freq: float, sr: int = 8000, seconds: float = 0.4) -> str:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.4 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))).astype(np.float32), sr)
    return path.name


def write_csv(folder: Path, header: list[str], rows: list[list[object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(c) for c in r) for r in rows]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder


def four_kind_folder(root: Path, n_per_split=(6, 2, 2)) -> Path:
    """A manifest with an image, an audio, a vector .npy, a sequence .npy and a text column."""
    rng = np.random.default_rng(0)
    rows, k = [], 0
    for split, n in zip(("train", "val", "test"), n_per_split):
        for i in range(n):
            label = ["cat", "dog"][k % 2]
            rows.append([f"s{k}", split, label, f"img{k}.png", f"a{k}.wav", f"v{k}.npy", f"q{k}.npy",
                         f"a {label} number {i}"])
            k += 1
    root.mkdir(parents=True, exist_ok=True)
    for j, r in enumerate(rows):
        Image.new("L", (10, 12), 40 + 30 * (j % 2)).save(root / r[3])
        tone_wav(root / r[4], 300 + 200 * (j % 2), sr=16000 if j % 3 == 0 else 8000)
        np.save(root / r[5], rng.standard_normal(7).astype(np.float32))
        np.save(root / r[6], rng.standard_normal((3 + j % 4, 5)).astype(np.float32))
    return write_csv(root, ["id", "split", "label", "photo", "voice", "vec", "seq", "caption"], rows)


def test_four_kinds_inferred(tmp_path):
    b = load_path(four_kind_folder(tmp_path / "mine"))
    specs = {m.name: (m.kind, m.shape) for m in b.info.modalities}
    assert specs["photo"] == ("image", (1, 12, 10))  # grey images of one small size keep it
    assert specs["voice"][0] == "sequence" and specs["voice"][1][1] == 13
    assert specs["vec"] == ("vector", (7,))
    assert specs["seq"] == ("sequence", (6, 5))
    assert specs["caption"][0] == "text"
    assert b.info.task == "single-label" and b.info.class_names == ("cat", "dog")
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 6, "val": 2, "test": 2}
    tr = b.splits["train"]
    assert tr.lengths["seq"].tolist() == [3, 4, 5, 6, 3, 4]
    assert tr.mask.all() and tr.ids[0] == "s0"
    assert tr.inputs["voice"].abs().max() < 20  # standardised MFCCs
    assert tr.texts == {"caption": [f"a {['cat', 'dog'][k % 2]} number {k}" for k in range(6)]}
    # the raw text follows a subset and a modality selection; other modalities have none
    sub = tr.subset([4, 1])
    assert sub.texts["caption"] == ["a cat number 4", "a dog number 1"] and sub.ids == ["s4", "s1"]
    only = b.select_modalities(("caption", "vec")).splits["test"]
    assert list(only.texts) == ["caption"] and len(only.texts["caption"]) == 2
    assert b.select_modalities(("vec",)).splits["train"].texts == {}


def test_jsonl_empty_cells_are_missing_modalities(tmp_path):
    root = tmp_path / "j"
    root.mkdir()
    Image.new("RGB", (100, 80), (255, 0, 0)).save(root / "a.jpg")
    Image.new("RGB", (30, 30), (0, 255, 0)).save(root / "b.jpg")
    rows = [{"id": 1, "split": "train", "label": "x", "pic": "a.jpg", "text": "hello there"},
            {"id": 2, "split": "train", "label": "y", "pic": "b.jpg", "text": None},
            {"id": 3, "split": "dev", "label": "x", "pic": "", "text": "only text"},
            {"id": 4, "split": "test", "label": "y", "pic": "b.jpg"}]
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    b = load_dataset(DataConfig(dataset=str(root)))
    assert b.info.modalities[0].shape == (3, 64, 64)  # colour, mixed sizes → 64×64
    assert b.splits["train"].mask.tolist() == [[True, True], [True, False]]
    assert b.splits["val"].mask.tolist() == [[False, True]]
    assert b.splits["test"].mask.tolist() == [[True, False]]
    assert b.splits["val"].lengths["text"].tolist() == [3]  # only, only text, text


def test_multi_label_and_regression(tmp_path):
    rows = [[f"r{i}", "train" if i < 6 else "test", lab, f"text {i}"]
            for i, lab in enumerate(["a|b", "b", "a|c", "c", "b|c", "a", "a|b", "c"])]
    b = load_path(write_csv(tmp_path / "ml", ["id", "split", "label", "t"], rows))
    assert b.info.task == "multi-label" and b.info.class_names == ("a", "b", "c")
    assert b.splits["test"].target.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    rows = [[f"r{i}", ["train", "val", "test"][i % 3], v, f"t {i}"] for i, v in enumerate([0.5, -1.25, 2, 3.5, 0, 1.5])]
    b = load_path(write_csv(tmp_path / "reg", ["id", "split", "label", "t"], rows))
    assert b.info.task == "regression" and b.splits["train"].target.dtype == torch.float32
    assert b.splits["train"].target.tolist() == [0.5, 3.5]


def test_integer_labels_are_classes_sorted_numerically_and_task_column(tmp_path):
    rows = [[f"r{i}", "train", lab, f"t {i}"] for i, lab in enumerate(["10", "2", "1", "2", "10", "1"])]
    rows += [["v", "val", "2", "x"], ["t", "test", "1", "y"]]
    b = load_path(write_csv(tmp_path / "int", ["id", "split", "label", "t"], rows))
    assert b.info.task == "single-label" and b.info.class_names == ("1", "2", "10")
    b = load_manifest(tmp_path / "int", task="regression")
    assert b.info.task == "regression"
    rows2 = [r + ["regression"] for r in rows]
    b = load_path(write_csv(tmp_path / "int2", ["id", "split", "label", "t", "task"], rows2))
    assert b.info.task == "regression"


def test_val_and_test_carved_from_train_seeded(tmp_path):
    rows = [[f"r{i}", "train", "ab"[i % 2], f"text {i}"] for i in range(40)]
    b = load_path(write_csv(tmp_path / "c", ["id", "split", "label", "t"], rows))
    sizes = {k: len(v) for k, v in b.splits.items()}
    assert sizes == {"train": 28, "val": 4, "test": 8}
    assert torch.bincount(b.splits["val"].target).tolist() == [2, 2]
    again = load_path(tmp_path / "c")
    assert again.splits["val"].ids == b.splits["val"].ids
    assert "carved" in b.info.description


def test_real_fsdd_recordings_in_a_manifest(tmp_path, fsdd_dir):
    """The folder loader on real files: spoken digits by speaker, george held out as test."""
    wavs = sorted(fsdd_dir.glob("[0-2]_*_1[0-4].wav"))  # 3 digits × 4 speakers × 5 takes
    rows = []
    for w in wavs:
        digit, speaker = w.name.split("_")[:2]
        shutil.copyfile(w, tmp_path / w.name)
        rows.append([w.stem, "test" if speaker == "george" else "train", digit, w.name])
    b = load_path(write_csv(tmp_path, ["id", "split", "label", "speech"], rows))
    spec = b.info.modalities[0]
    assert spec.kind == "sequence" and spec.shape[1] == 13 and b.info.class_names == ("0", "1", "2")
    assert len(b.splits["test"]) == sum(1 for r in rows if r[1] == "test") and len(b.splits["val"]) > 0
