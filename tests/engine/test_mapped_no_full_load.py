"""Passes over a whole split of a memory-mapped modality (a manifest's ``file.npy#<row>`` cells, `MappedRows`) read
it a chunk of rows at a time and give the values of the in-memory computation: FixMatch's feature stds, the
mnar-value mechanism's signal strength, a pool appended to the train split, the dataset cache's byte count, and a
FixMatch run under an mnar-value training mask end to end."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import robult_engine.data.base as base
import robult_engine.losses as losses
from robult_engine.config import RunConfig
from robult_engine.data.base import MappedRows, SplitData
from robult_engine.data.cache import bundle_nbytes
from robult_engine.data.formats import load_path
from robult_engine.losses import feature_std
from robult_engine.missing import concat_splits, draw_mask, parse_missing, signal_strength
from robult_engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
VEC_D, SEQ_T, SEQ_D = 40, 6, 5
CHUNK = 2048  # bytes per chunk in these tests: 12 rows of `vec` (160 B each), 17 of `seq` (120 B each)
CHUNK_ROWS = CHUNK // (SEQ_T * SEQ_D * 4)  # the larger of the two


def _mapped_folder(root: Path, n: int = 600, seed: int = 0) -> dict:
    """`vec` (n, 40) float32 around 1000 with spread 0.5 (a one-pass sum of squares would lose the spread); `seq`
    (n, 6, 5) right-padded, in two files (the test rows / the rest), every 9th cell empty. Splits: train 2/5, val
    2/5, test 1/5 of the rows, interleaved."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    vec = (1000.0 + 0.5 * rng.standard_normal((n, VEC_D))).astype(np.float32)
    seq = (3.0 + rng.standard_normal((n, SEQ_T, SEQ_D))).astype(np.float32)
    lengths = rng.integers(1, SEQ_T + 1, size=n)
    for i in range(n):
        seq[i, lengths[i]:] = 0.0
    splits = np.array(["train", "val", "test"])[np.arange(n) % 5 % 3]
    np.save(root / "vec.npy", vec)
    test_rows, other_rows = np.nonzero(splits == "test")[0], np.nonzero(splits != "test")[0]
    np.save(root / "seq_test.npy", seq[test_rows])
    np.save(root / "seq.npy", seq[other_rows])
    where = {int(i): f"seq_test.npy#{k}" for k, i in enumerate(test_rows)}
    where.update({int(i): f"seq.npy#{k}" for k, i in enumerate(other_rows)})
    lines = ["id,split,label,vec,seq"]
    for i in range(n):
        label = "ab"[int(vec[i, 0] + seq[i, 0, 0] > 1003.0)]
        lines.append(f"r{i},{splits[i]},{label},vec.npy#{i},{'' if i % 9 == 0 else where[i]}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return {"vec": vec, "seq": seq, "lengths": lengths}


def _rows(split) -> np.ndarray:
    return np.array([int(i[1:]) for i in split.ids])


def _seq_of(src: dict, rows: np.ndarray) -> np.ndarray:
    """The `seq` rows as the loader gives them: zeros where the cell is empty."""
    x = src["seq"][rows].copy()
    x[rows % 9 == 0] = 0.0
    return x


@pytest.fixture()
def reads(monkeypatch):
    """The number of rows of every read of mapped rows; reading a whole split at once (`materialize`) fails the
    test. Chunks are made small (CHUNK bytes), so a split is many chunks."""
    seen: list[int] = []
    read = MappedRows._read

    def recording_read(self, source, row):
        seen.append(len(source))
        return read(self, source, row)

    def refuse(self):
        raise AssertionError(f"a whole mapped split ({len(self)} rows) was read into memory")

    monkeypatch.setattr(MappedRows, "_read", recording_read)
    monkeypatch.setattr(MappedRows, "materialize", refuse)
    monkeypatch.setattr(base, "CHUNK_BYTES", CHUNK)
    monkeypatch.setattr(losses, "FEATURE_STD_CHUNK_BYTES", CHUNK)
    return seen


def test_feature_std_reads_chunks_and_equals_the_in_memory_std(tmp_path, reads):
    src = _mapped_folder(tmp_path / "d")
    train = load_path(tmp_path / "d").splits["train"]
    rows = _rows(train)
    assert len(rows) == 240 and isinstance(train.inputs["vec"], MappedRows)
    reads.clear()  # loading checked every row once, a chunk at a time

    present = torch.ones(len(rows), dtype=torch.bool)
    present[::4] = False  # rows the data has but the mask leaves out do not count
    got = feature_std(train.inputs["vec"], "vector", present)
    assert reads and max(reads) <= CHUNK_ROWS, f"largest read {max(reads)} rows of {len(rows)}"
    want = torch.from_numpy(src["vec"][rows[present.numpy()]]).double().std(0).float()
    assert want.min() > 0.4  # the spread survived the mean of 1000
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0.0)
    dense = feature_std(torch.from_numpy(src["vec"][rows]), "vector", present)  # an ordinary tensor: same std
    torch.testing.assert_close(dense, want, rtol=1e-6, atol=0.0)

    reads.clear()
    present = train.mask[:, 1] & (torch.arange(len(rows)) % 5 != 1)
    lengths = train.lengths["seq"]
    got = feature_std(train.inputs["seq"], "sequence", present, lengths)
    assert reads and max(reads) <= CHUNK_ROWS, f"largest read {max(reads)} rows of {len(rows)}"
    steps = np.concatenate([src["seq"][r, :lengths[i]] for i, r in enumerate(rows) if present[i]])
    assert len(steps) == int(lengths[present].sum())
    want = torch.from_numpy(steps).double().std(0).float()
    assert want.shape == (SEQ_D,)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0.0)


def test_signal_strength_and_mnar_value_mask_read_chunks(tmp_path, reads):
    src = _mapped_folder(tmp_path / "d")
    bundle = load_path(tmp_path / "d")
    train = bundle.splits["train"]
    rows = _rows(train)
    reads.clear()
    got = signal_strength(train, bundle.info)
    assert reads and max(reads) <= CHUNK_ROWS, f"largest read {max(reads)} rows of {len(rows)}"
    vec = src["vec"][rows].astype(np.float64)
    seq = _seq_of(src, rows).astype(np.float64)
    lengths = train.lengths["seq"].numpy()
    want = np.stack([np.sqrt((vec ** 2).mean(1)), np.sqrt((seq ** 2).sum((1, 2)) / (lengths * SEQ_D))], 1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)

    reads.clear()
    spec = parse_missing("mnar-value:0.3/0")[0]  # vec: the weakest 30 %; seq kept
    mask = draw_mask(train, bundle.info, spec, seed=4)
    assert max(reads) <= CHUNK_ROWS
    dense = SplitData(inputs={"vec": torch.from_numpy(src["vec"][rows]), "seq": torch.from_numpy(_seq_of(src, rows))},
                      lengths=train.lengths, mask=train.mask, target=train.target, ids=train.ids)
    assert torch.equal(mask, draw_mask(dense, bundle.info, spec, seed=4))  # the mask of the in-memory split
    both = train.mask.all(1).numpy()  # rows with seq too: a removed vec is never restored there
    gone = ~mask[:, 0].numpy()
    assert mask[:, 1].equal(train.mask[:, 1]) and not gone[~both].any()
    weakest = np.argsort(want[:, 0], kind="stable")[:round(0.3 * len(rows))]
    assert np.array_equal(np.nonzero(gone)[0], np.sort(weakest[both[weakest]]))  # the weakest 30 % of vec


def test_a_pool_appended_to_mapped_train_rows_stays_mapped(tmp_path, reads):
    src = _mapped_folder(tmp_path / "d")
    bundle = load_path(tmp_path / "d")
    train, pool = bundle.splits["train"], bundle.splits["test"]  # seq: the two splits' rows are in two files
    reads.clear()
    joined = concat_splits(train, pool)
    assert reads == []  # nothing is read to join them
    assert all(isinstance(joined.inputs[k], MappedRows) for k in ("vec", "seq"))
    assert len(joined) == len(train) + len(pool) and joined.inputs["seq"].shape == (len(joined), SEQ_T, SEQ_D)
    rows = np.concatenate([_rows(train), _rows(pool)])
    idx = torch.tensor([0, len(train) - 1, len(train), len(joined) - 1, 5, len(train) + 7])
    assert torch.equal(joined.inputs["vec"][idx], torch.from_numpy(src["vec"][rows[idx.numpy()]]))
    assert torch.equal(joined.inputs["seq"][idx], torch.from_numpy(_seq_of(src, rows[idx.numpy()])))
    assert torch.equal(joined.mask, torch.cat([train.mask, pool.mask]))


def test_dataset_cache_counts_mapped_rows_without_reading_them(tmp_path, reads):
    src = _mapped_folder(tmp_path / "d")
    bundle = load_path(tmp_path / "d")
    reads.clear()
    size = bundle_nbytes(bundle)
    assert reads == []
    index = sum(s.inputs[k].source.nbytes + s.inputs[k].row.nbytes for s in bundle.splits.values() for k in s.inputs)
    dense = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for s in bundle.splits.values()
             for t in (*s.lengths.values(), s.mask, s.target)}
    assert size == index + sum(dense.values())
    assert size < (src["vec"].nbytes + src["seq"].nbytes) / 4  # the features themselves stay in the files


def test_fixmatch_with_an_mnar_value_training_mask_and_a_pool_reads_batches_only(tmp_path, reads):
    _mapped_folder(tmp_path / "d")
    bundle = load_path(tmp_path / "d")
    bundle.splits["pool"] = bundle.splits["test"].subset(np.arange(0, 120, 2))
    cfg = RunConfig().replace(**{
        "method": "fixmatch", "data.dataset": str(tmp_path / "d"), "data.train_missing": "mnar-value:0.3",
        "data.train_pool": True, "train.epochs": 1, "train.batch_size": 16, "train.labeled_per_batch": 4,
        "train.device": "cpu", "model.d_h": 16, "model.d_z": 8, "model.d_u": 8, "model.d_hidden": 16,
        "model.input_norm": "layer"}).validate()
    reads.clear()
    trainer = Trainer(cfg, bundle, eval_batch_size=16)
    result = trainer.run()
    assert type(result).__name__ == "Finished" and result.test_metrics
    assert isinstance(trainer.train_split.inputs["seq"], MappedRows) and len(trainer.train_split) == 240 + 60
    assert trainer.feature_stds["vec"].shape == (VEC_D,) and float(trainer.feature_stds["vec"].min()) > 0.4
    assert max(reads) <= CHUNK_ROWS, f"largest read {max(reads)} rows"  # batches and chunks, never a split


def test_feature_std_and_signal_strength_hold_no_copy_of_the_split(tmp_path):
    """Counted by tracemalloc in a fresh interpreter (numpy's allocations, where mapped rows are read into): a
    16 MB mapped sequence modality; reading the present rows whole took at least their size."""
    root = tmp_path / "big"
    root.mkdir()
    n, t, d = 400, 100, 100
    np.save(root / "x.npy", np.random.default_rng(0).standard_normal((n, t, d), dtype=np.float32))
    lines = ["id,split,label,x"] + [f"r{i},train,{i % 2},x.npy#{i}" for i in range(n)]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    code = ("import tracemalloc\n"
            "import torch\n"
            "torch.set_num_threads(1)  # many small chunks: no thread hand-offs on a busy machine\n"
            "import robult_engine.data.base as base, robult_engine.losses as losses\n"
            "from robult_engine.data.formats import load_path\n"
            "from robult_engine.missing import signal_strength\n"
            "base.CHUNK_BYTES = losses.FEATURE_STD_CHUNK_BYTES = 1 << 18\n"
            f"bundle = load_path({str(root)!r})\n"
            "split = bundle.splits['train']\n"
            "tracemalloc.start()\n"
            "std = losses.feature_std(split.inputs['x'], 'sequence', split.mask[:, 0], split.lengths['x'])\n"
            "strength = signal_strength(split, bundle.info)\n"
            "assert std.shape == (100,) and float(std.min()) > 0.9 and strength.shape == (len(split), 1)\n"
            "print(tracemalloc.get_traced_memory()[1])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak < 0.1 * n * t * d * 4, f"peak {peak / 1e6:.1f} MB"


def test_dataset_pid_reads_chunks_and_equals_the_pid_of_the_in_memory_data(tmp_path, reads, monkeypatch):
    import dataclasses

    import robult_engine.explain.pid as pid
    monkeypatch.setattr(pid, "CHUNK_BYTES", CHUNK)
    _mapped_folder(tmp_path / "d")
    bundle = load_path(tmp_path / "d")
    reads.clear()
    got = pid.dataset_pid(bundle)
    assert reads and max(reads) <= CHUNK_ROWS, f"largest read {max(reads)} rows"
    monkeypatch.undo()  # the same data in memory, read as ordinary tensors
    dense = dataclasses.replace(bundle, splits={
        name: dataclasses.replace(s, inputs={k: (v.materialize() if isinstance(v, MappedRows) else v)
                                             for k, v in s.inputs.items()})
        for name, s in bundle.splits.items()})
    want = pid.dataset_pid(dense)
    assert [p.pair for p in got] == [p.pair for p in want]
    for g, w in zip(got, want):
        for part, value in w.result.components().items():
            assert g.result.components()[part] == pytest.approx(value, abs=1e-9)
