"""Large datasets in bounded memory: the MOSI/MOSEI pickle converted in place (the values of the copying
conversion, about one copy of the features held), manifests of ``file.npy#<row>`` cells read lazily from
memory-mapped arrays, one .npy per sample read straight into its tensor, and benchmarks/scale_memory.py."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import robult_engine.data.base as base
import robult_engine.data.manifest as manifest
import robult_engine.data.mosi as mosi
from robult_engine.config import RunConfig
from robult_engine.data import DataError, make_batch
from robult_engine.data.base import MappedRows, check_finite
from robult_engine.data.formats import load_path
from robult_engine.data.manifest import load_manifest
from robult_engine.data.mosi import load_mosi
from robult_engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
DIMS = {"text": 7, "audio": 5, "vision": 3}


# --- the pickle ---------------------------------------------------------------------------------------------------
def _reference_split(split: dict) -> dict:
    """The conversion as a chain of copies (astype, zeroed ±inf, each span of non-zero frames copied to the front
    of a zero array): what the loader must still produce, value for value."""
    out = {}
    for key in DIMS:
        x = np.asarray(split[key])
        x = (x[:, None, :] if x.ndim == 2 else x).astype(np.float32)
        x[np.isinf(x)] = 0.0
        if f"{key}_lengths" in split:
            lens = np.maximum(np.asarray(split[f"{key}_lengths"]).reshape(-1).astype(np.int64), 1)
            out[key] = (x, lens)
            continue
        nonzero = np.abs(x).sum(axis=2) > 0
        moved, lens = np.zeros_like(x), np.ones(len(x), dtype=np.int64)
        for i in range(len(x)):
            idx = np.nonzero(nonzero[i])[0]
            if len(idx):
                span = x[i, idx[0]:idx[-1] + 1]
                moved[i, :len(span)] = span
                lens[i] = len(span)
        out[key] = (moved, lens)
    return out


def _mosi_split(rng, n: int, t: int, front: bool, dtype=np.float32, vectors: bool = False) -> dict:
    part = {}
    for key, d in DIMS.items():
        x = rng.normal(size=(n, t, d)).astype(dtype)
        for i in range(n):
            keep = int(rng.integers(0, t + 1))
            if front:
                x[i, :t - keep] = 0.0
            else:
                x[i, keep:] = 0.0
            if i % 3 == 0:
                x[i, int(rng.integers(0, t))] = -0.0  # a zero frame of negative zeros (padding, not data)
        x[1] = 0.0  # a sample with no frame at all
        x[2, -1, 0] = -np.inf
        part[key] = x[:, 0, :] if vectors and key == "vision" else x
    part["labels"] = rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)
    part["id"] = np.array([[f"v{i}", str(i)] for i in range(n)])
    return part


@pytest.mark.parametrize("variant", ["front-padded", "float64-protocol-2", "protocol-5", "mmsa-lengths",
                                     "shorter-test-split"])
def test_pickle_loader_gives_the_values_of_the_copying_conversion(tmp_path, variant):
    rng = np.random.default_rng(3)
    protocol = {"float64-protocol-2": 2, "protocol-5": 5}.get(variant, 4)
    dtype = np.float64 if variant == "float64-protocol-2" else np.float32
    data = {s: _mosi_split(rng, n, 8, front=(s != "valid"), dtype=dtype, vectors=variant == "protocol-5")
            for s, n in (("train", 30), ("valid", 9), ("test", 11))}
    if variant == "mmsa-lengths":
        for part in data.values():
            n = len(part["labels"])
            part["audio_lengths"] = rng.integers(0, 9, size=n)
            part["regression_labels"] = part.pop("labels").reshape(n)
    if variant == "shorter-test-split":
        data["test"] = _mosi_split(rng, 11, 5, front=True)
    expected = {s: _reference_split(pickle.loads(pickle.dumps(p))) for s, p in data.items()}
    path = tmp_path / "mosei_senti_data.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    bundle = load_mosi(path)
    for s, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        split = bundle.splits[s]
        for key in DIMS:
            want, lens = expected[name][key]
            t_max = bundle.info.spec(key).shape[0]
            want = np.pad(want, ((0, 0), (0, t_max - want.shape[1]), (0, 0)))
            got = split.inputs[key].numpy()
            assert got.dtype == np.float32 and got.shape == want.shape
            assert np.array_equal(got.view(np.int32), want.view(np.int32)), (s, key)  # bit for bit, -0.0 too
            assert np.array_equal(split.lengths[key].numpy(), lens), (s, key)
        assert split.ids[0] == "v0_0" and split.target.dtype == torch.float32


def _traced_peak(setup: str, body: str) -> int:
    """Peak of tracemalloc while `body` runs, in a fresh interpreter: tracemalloc counts every thread, so a
    worker thread another test left running in this process would otherwise count against the loader. `setup`
    (the imports) runs before tracing starts."""
    code = ("import tracemalloc\n" + setup + "\ntracemalloc.start()\n" + body + "\n"
            "print(tracemalloc.get_traced_memory()[1])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_pickle_load_holds_about_one_copy_of_the_features(tmp_path, monkeypatch):
    """float32 arrays of the pickle become the tensors; passes over them work a chunk at a time. Counted by
    tracemalloc (numpy's and Python's allocations): the copying conversion peaked at over 2x the features."""
    rng = np.random.default_rng(0)
    data = {}
    for s, n in (("train", 300), ("valid", 60), ("test", 100)):
        part = {k: rng.standard_normal((n, 20, d), dtype=np.float32) for k, d in (("text", 300), ("audio", 74),
                                                                                   ("vision", 35))}
        for x in part.values():
            x[:, :5] = 0.0  # front padding: every span is moved
        part["labels"] = rng.normal(size=(n, 1, 1)).astype(np.float32)
        data[s] = part
    features = sum(x.nbytes for p in data.values() for k, x in p.items() if k != "labels")
    path = tmp_path / "mosei.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    del data
    peak = _traced_peak("import robult_engine.data.mosi as mosi\n"
                        "from robult_engine.data.base import check_finite\n"
                        "mosi.CHUNK_BYTES = 1 << 18",
                        f"bundle = mosi.load_mosi({str(path)!r})\n"
                        f"check_finite(bundle.splits['train'], 'train', {str(path)!r})\n"
                        "assert len(bundle.splits['train']) == 300")
    assert peak < 1.1 * features, f"peak {peak / features:.2f}x the features"


# --- manifests of rows of memory-mapped arrays ------------------------------------------------------------------
def _mapped_folder(root: Path, n: int = 90, seed: int = 0) -> dict:
    """A manifest naming rows of arrays: `vec` (n, 6) float32; `seq` in two files (one for the test rows, one for
    the rest: several files per column), float64 (n, 7, 3) right-padded; every 7th seq cell empty."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    vec = rng.normal(size=(n, 6)).astype(np.float32)
    seq = rng.normal(size=(n, 7, 3))
    lengths = rng.integers(1, 8, size=n)
    for i in range(n):
        seq[i, lengths[i]:] = 0.0
    seq[4, 0] = 0.0  # a leading zero frame is part of the sequence
    splits = rng.choice(["train", "val", "test"], size=n, p=[0.6, 0.2, 0.2])
    splits[:3] = ["train", "val", "test"]
    np.save(root / "vec.npy", vec)
    test_rows = np.nonzero(splits == "test")[0]
    other_rows = np.nonzero(splits != "test")[0]
    np.save(root / "seq_test.npy", seq[test_rows])
    np.save(root / "seq.npy", np.concatenate([seq[other_rows], np.zeros((5, 7, 3))]))  # spare rows are fine
    where = {int(i): f"seq_test.npy#{k}" for k, i in enumerate(test_rows)}
    where.update({int(i): f"seq.npy#{k}" for k, i in enumerate(other_rows)})
    lines = ["id,split,label,vec,seq"]
    for i in range(n):
        cell = "" if i % 7 == 0 else where[i]
        lines.append(f"r{i},{splits[i]},{'ab'[int(vec[i, 0] > 0)]},vec.npy#{i},{cell}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return {"vec": vec, "seq": seq.astype(np.float32), "lengths": lengths, "splits": splits}


def test_mapped_manifest_reads_the_right_rows_and_stays_memory_mapped(tmp_path):
    src = _mapped_folder(tmp_path / "d")
    bundle = load_path(tmp_path / "d")
    assert [(m.name, m.kind, m.shape) for m in bundle.info.modalities] == [("vec", "vector", (6,)),
                                                                        ("seq", "sequence", (7, 3))]
    for name in ("train", "val", "test"):
        split = bundle.splits[name]
        rows = np.array([int(i[1:]) for i in split.ids])
        assert (src["splits"][rows] == name).all() and (np.diff(rows) > 0).all()  # manifest order within a split
        vec, seq = split.inputs["vec"], split.inputs["seq"]
        assert isinstance(vec, MappedRows) and isinstance(seq, MappedRows)
        assert all(isinstance(a, np.memmap) for a in vec.arrays + seq.arrays)  # mapped, never loaded
        assert vec.shape == (len(rows), 6) and len(seq) == len(rows)
        absent = rows % 7 == 0
        want_seq = src["seq"][rows].copy()
        want_seq[absent] = 0.0
        batch = make_batch(split, torch.arange(len(rows)).flip(0))  # what a training or evaluation step reads
        assert torch.equal(batch.inputs["vec"], torch.from_numpy(src["vec"][rows][::-1].copy()))
        assert torch.equal(batch.inputs["seq"], torch.from_numpy(want_seq[::-1].copy()))
        want_len = np.where(absent, 1, src["lengths"][rows])
        assert np.array_equal(split.lengths["seq"].numpy(), want_len)
        assert torch.equal(split.mask[:, 1], torch.from_numpy(~absent))
        assert torch.equal(vec[3], torch.from_numpy(src["vec"][rows[3]]))
        sub = split.subset([2, 0])
        assert isinstance(sub.inputs["seq"], MappedRows)
        assert torch.equal(sub.inputs["seq"][[0, 1]], torch.from_numpy(want_seq[[2, 0]]))
    # the same data as dense tensors: the same fingerprint, the same NaN check
    dense = type(bundle)(bundle.info, {k: type(s)(inputs={m: x.materialize() for m, x in s.inputs.items()},
                                                  lengths=s.lengths, mask=s.mask, target=s.target, ids=s.ids)
                                       for k, s in bundle.splits.items()})
    assert dense.fingerprint() == bundle.fingerprint()
    copy = pickle.loads(pickle.dumps(bundle.splits["test"].inputs["seq"]))  # a spawned worker maps the files again
    assert isinstance(copy.arrays[0], np.memmap) and torch.equal(copy.materialize(),
                                                                 bundle.splits["test"].inputs["seq"].materialize())


def test_training_on_a_mapped_manifest_reads_batches_not_splits(tmp_path, monkeypatch):
    _mapped_folder(tmp_path / "d", n=120)
    reads = []
    monkeypatch.setattr(MappedRows, "materialize", lambda self: reads.append(len(self)) or MappedRows._read(
        self, self.source, self.row))
    cfg = RunConfig().replace(**{"data.dataset": str(tmp_path / "d"), "train.epochs": 1, "train.batch_size": 16,
                                 "train.labeled_per_batch": 4, "model.d_h": 16, "model.d_z": 8, "model.d_u": 8,
                                 "model.d_hidden": 16, "train.device": "cpu",
                                 "data.train_missing": "mcar:0.3"}).validate()
    trainer = Trainer(cfg)
    result = trainer.run()
    assert type(result).__name__ == "Finished" and result.test_metrics
    assert isinstance(trainer.train_split.inputs["seq"], MappedRows)  # train_missing zeroed rows lazily
    assert reads == []  # no step, evaluation or check read a whole split


def test_mapped_manifest_load_holds_no_copy_of_the_data(tmp_path, monkeypatch):
    root = tmp_path / "big"
    root.mkdir()
    n, t, d = 400, 100, 100
    np.save(root / "x.npy", np.random.default_rng(0).standard_normal((n, t, d), dtype=np.float32))  # 16 MB
    lines = ["id,split,label,x"] + [f"r{i},{('train', 'val', 'test')[i % 3]},{i % 2},x.npy#{i}" for i in range(n)]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    peak = _traced_peak("import robult_engine.data.base as base, robult_engine.data.manifest as manifest\n"
                        "from robult_engine.data.formats import load_path\n"
                        "manifest.CHUNK_BYTES = base.CHUNK_BYTES = 1 << 18",
                        f"bundle = load_path({str(root)!r})\n"
                        "for name, split in bundle.splits.items():\n"
                        "    base.check_finite(split, name, 'x')\n"
                        "bundle.fingerprint()")
    assert peak < 0.1 * n * t * d * 4, f"peak {peak / 1e6:.1f} MB"  # a few chunks, whatever the data


def _rss_file_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the kernel's RssFile (Linux)")
def test_reading_every_mapped_row_leaves_no_file_pages_in_the_process(tmp_path):
    """Rows reach a batch by positional reads, not through the mapping (which would make the page-cache folios
    around every row resident in the process: the whole file after one epoch)."""
    root = tmp_path / "d"
    root.mkdir()
    n = 1500
    np.save(root / "x.npy", np.random.default_rng(0).standard_normal((n, 80, 100), dtype=np.float32))  # 48 MB
    lines = ["id,split,label,x"] + [f"r{i},train,{i % 2},x.npy#{i}" for i in range(n)]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    make_batch(load_manifest(root).splits["train"], torch.arange(4))  # code paths warmed up (library pages)
    before = _rss_file_kb()
    split = load_manifest(root).splits["train"]  # checks every row once
    for idx in torch.randperm(len(split)).split(64):  # and an epoch reads every row again
        make_batch(split, idx)
    assert _rss_file_kb() - before < 16 * 1024  # kB; the file is 48 MB (read through the map: +46 MB)


# --- bad input ------------------------------------------------------------------------------------------------
def _one_column(root: Path, array: np.ndarray | None, cells: list[str], name: str = "f.npy",
                allow_pickle: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if array is not None:
        np.save(root / name, array, allow_pickle=allow_pickle)
    lines = ["id,split,label,feat"] + [f"r{i},{('train', 'train', 'val', 'test')[i % 4]},{i % 2},{c}"
                                       for i, c in enumerate(cells)]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


REFS = [f"f.npy#{i}" for i in range(8)]


@pytest.mark.parametrize("array, cells, pattern", [
    (np.zeros((5, 4), np.float32), REFS,
     r"row 8 \(line 9\): .*f\.npy \(column 'feat'\) has shape \(5, 4\), but this row names its row 7; "
     r"expected \(8 or more, 4\)"),
    (np.zeros(8, np.float32), REFS, r"f\.npy \(column 'feat'\) has shape \(8,\); expected \(N, D\) rows of vectors "
                                    r"or \(N, T, D\) rows of sequences, with N ≥ 8"),
    (np.zeros((8, 2, 2, 2), np.float32), REFS, r"f\.npy .*has shape \(8, 2, 2, 2\); expected \(N, D\)"),
    (np.zeros((8, 4), np.int64), REFS, r"f\.npy \(column 'feat'\) has dtype int64 \(shape \(8, 4\)\); expected a float "
                                       r"array \(N, D\) or \(N, T, D\) with N ≥ 8"),
    (np.zeros((8, 0), np.float32), REFS, r"f\.npy .*has shape \(8, 0\); expected \(N, D\) or \(N, T, D\) with T and D"),
    (np.asfortranarray(np.zeros((8, 4), np.float32)), REFS, r"f\.npy .*Fortran .*\(shape \(8, 4\)\).*"
                                                            r"np\.ascontiguousarray"),
    (None, REFS, r"row 1 \(line 2\): file 'f\.npy' \(column 'feat', cell 'f\.npy#0'\) does not exist \(looked for "
                 r".*f\.npy\); expected a float array \(N, D\) or \(N, T, D\) with N ≥ 8"),
    (np.zeros((8, 4), np.float32), REFS[:3] + ["g.npy"] + REFS[4:],
     r"row 4 \(line 5\): column 'feat' holds 'file\.npy#<row>' references, but this row has 'g\.npy'"),
])
def test_bad_row_arrays_are_one_clear_message(tmp_path, array, cells, pattern):
    root = _one_column(tmp_path / "d", array, cells)
    with pytest.raises(DataError, match=pattern):
        load_manifest(root)


def test_pickle_bearing_row_array_is_refused_without_unpickling(tmp_path):
    root = _one_column(tmp_path / "d", np.array([{"a": 1}] * 8, dtype=object), REFS, allow_pickle=True)
    with pytest.raises(DataError, match=r"f\.npy \(column 'feat'\) holds Python objects \(dtype object, shape "
                                        r"\(8,\)\), which only unpickling reads; expected a float array"):
        load_manifest(root)


def test_nan_row_and_mismatched_files_name_the_row(tmp_path):
    x = np.ones((8, 4), np.float32)
    x[5, 2] = np.nan
    with pytest.raises(DataError, match=r"row 6 \(line 7\): row 5 of .*f\.npy \(column 'feat'\) holds NaN"):
        load_manifest(_one_column(tmp_path / "a", x, REFS))
    big = np.full((1, 4), 1e300)  # finite as float64, infinite as float32
    with pytest.raises(DataError, match=r"row 0 of .*f\.npy \(column 'feat'\) holds NaN or infinite values as float32"):
        load_manifest(_one_column(tmp_path / "b", big, ["f.npy#0"] + REFS[:1] * 7))
    root = _one_column(tmp_path / "c", np.ones((4, 4), np.float32), REFS[:4] + [f"g.npy#{i}" for i in range(4)])
    np.save(root / "g.npy", np.ones((4, 5), np.float32))
    with pytest.raises(DataError, match=r"g\.npy \(column 'feat'\) has shape \(4, 5\); expected rows of shape \(4,\), "
                                        r"like the column's first file .*f\.npy \(shape \(4, 4\)\)"):
        load_manifest(root)


def test_cli_refuses_a_short_row_array_with_exit_code_2(tmp_path, capsys):
    from robult_engine.cli import main
    root = _one_column(tmp_path / "d", np.zeros((5, 4), np.float32), REFS)
    rc = main(["train", "--dataset", str(root), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "f.npy (column 'feat') has shape (5, 4)" in err and "Traceback" not in err


# --- one .npy per sample ------------------------------------------------------------------------------------------
def test_one_npy_per_sample_is_read_straight_into_its_tensor(tmp_path):
    """The headers are read first, then every file into its row: no list of arrays beside the tensor (the old
    loader held both, over 1x the features in numpy arrays alone)."""
    root = tmp_path / "d"
    root.mkdir()
    rng = np.random.default_rng(1)
    n, features = 240, 0
    lines = ["id,split,label,seq"]
    for i in range(n):
        a = rng.normal(size=(int(rng.integers(20, 41)), 30)).astype(np.float32)
        features += 40 * 30 * 4
        np.save(root / f"s{i}.npy", a)
        lines.append(f"r{i},{('train', 'val', 'test', 'train')[i % 4]},{i % 2},s{i}.npy")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    peak = _traced_peak("from robult_engine.data.manifest import load_manifest",
                        f"load_manifest({str(root)!r})")
    bundle = load_manifest(root)
    assert peak < 0.5 * features, f"peak {peak / features:.2f}x the features"
    split = bundle.splits["val"]
    first = int(split.ids[0][1:])
    a = np.load(root / f"s{first}.npy")
    assert int(split.lengths["seq"][0]) == len(a)
    assert torch.equal(split.inputs["seq"][0, :len(a)], torch.from_numpy(a))
    assert not split.inputs["seq"][0, len(a):].any()
    storages = {s.inputs["seq"].untyped_storage().data_ptr() for s in bundle.splits.values()}
    assert len(storages) == 1  # every split is a view of one tensor, not a copy of its rows


# --- the benchmark ----------------------------------------------------------------------------------------------
def test_scale_memory_benchmark_runs_tiny(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale_memory.py"), "--smoke", "--json", str(out),
                           "--data", str(tmp_path / "data")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert {r["format"] for r in rows} == {"pickle", "mapped"}
    for r in rows:
        new = r["new"]
        assert new["ok"] and new["peak"] >= new["baseline"] > 0 and new["samples_per_s"] > 0
        assert sum(new["splits"].values()) == r["samples"]
    assert "(peak-base)/data" in proc.stdout and "1.3x" in proc.stdout
