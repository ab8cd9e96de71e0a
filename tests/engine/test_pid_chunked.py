"""The PID estimator streams the features in chunks: any chunk size gives the unchunked result (to rounding),
the PCA equals the in-memory SVD of the standardised features, and no float64 copy of a modality's raw data is
made."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")

from robult_engine.data.base import DatasetBundle, DatasetInfo, ModalitySpec, SplitData  # noqa: E402
from robult_engine.explain.pid import (MAX_PCA_DIMS, dataset_pid, kmeans_labels, modality_features,  # noqa: E402
                                       reduced_features)


def mixed_bundle(n_splits=(70, 25, 30), seed: int = 0, wide: int = 0) -> DatasetBundle:
    """Every modality kind, a shared signal, some modalities missing; `wide`: a vector of that many features
    (more than the samples: the Gram path)."""
    rng = np.random.default_rng(seed)
    specs = [ModalitySpec("seq", "sequence", (6, 5)), ModalitySpec("txt", "text", (9,)),
             ModalitySpec("vec", "vector", (40,)), ModalitySpec("img", "image", (1, 6, 6))]
    if wide:
        specs.append(ModalitySpec("wide", "vector", (wide,)))
    splits = {}
    for name, n in zip(("train", "val", "test"), n_splits):
        y = rng.integers(0, 3, n)
        inputs, lengths = {}, {}
        seq = rng.normal(size=(n, 6, 5)).astype(np.float32) + y[:, None, None]
        ln = rng.integers(1, 7, n)
        seq[np.arange(6)[None, :] >= ln[:, None]] = 0
        inputs["seq"], lengths["seq"] = torch.from_numpy(seq), torch.from_numpy(ln)
        txt = rng.integers(1, 600, (n, 9)) + 17 * y[:, None]
        lt = rng.integers(1, 10, n)
        txt[np.arange(9)[None, :] >= lt[:, None]] = 0
        inputs["txt"], lengths["txt"] = torch.from_numpy(txt), torch.from_numpy(lt)
        vec = rng.normal(size=(n, 40)) + y[:, None] * rng.normal(size=40)
        inputs["vec"] = torch.from_numpy(vec.astype(np.float32))
        inputs["vec"][:, 3] = 1.5  # a constant feature: left out by the standardisation
        inputs["img"] = torch.from_numpy(rng.normal(size=(n, 1, 6, 6)).astype(np.float32) + y[:, None, None, None])
        if wide:
            inputs["wide"] = torch.from_numpy(rng.normal(size=(n, wide)).astype(np.float32) + y[:, None])
        mask = torch.from_numpy(rng.random((n, len(specs))) > 0.1)
        splits[name] = SplitData(inputs=inputs, lengths=lengths, mask=mask, target=torch.from_numpy(y))
    info = DatasetInfo("mixed", tuple(specs), "single-label", ("a", "b", "c"))
    return DatasetBundle(info, splits)


def _same_pid(a, b, tol=1e-9):
    assert [x.pair for x in a] == [x.pair for x in b]
    for x, y in zip(a, b):
        for k, v in x.result.components().items():
            assert y.result.components()[k] == pytest.approx(v, abs=tol), (x.pair, k)
        assert x.result.n == y.result.n and x.result.sizes == y.result.sizes


def test_chunked_pid_equals_the_unchunked_one():
    b = mixed_bundle()
    pairs = [("seq", "txt"), ("vec", "img"), ("seq", "vec+img"), ("txt+seq", "img")]
    whole = dataset_pid(b, pairs, clusters=3, chunk_rows=10 ** 9)
    for rows in (1, 3, 7, 64):
        _same_pid(whole, dataset_pid(b, pairs, clusters=3, chunk_rows=rows))
    _same_pid(whole, dataset_pid(b, pairs, clusters=3))  # the default chunk (CHUNK_BYTES)


def test_chunked_features_equal_the_in_memory_ones():
    b = mixed_bundle()
    s = b.splits["train"]
    x, ln = s.inputs["seq"].numpy().astype(np.float64), s.lengths["seq"].numpy()
    want_mean = np.stack([x[i, :ln[i]].mean(0) for i in range(len(x))])
    want_std = np.stack([x[i, :ln[i]].std(0) for i in range(len(x))])
    for rows in (None, 1, 4):
        got = modality_features(s.inputs["seq"], "sequence", s.lengths["seq"], chunk_rows=rows)
        np.testing.assert_allclose(got, np.concatenate([want_mean, want_std], 1), rtol=1e-12, atol=1e-12)
        bag = modality_features(s.inputs["txt"], "text", chunk_rows=rows)
        assert bag.shape == (len(x), 256)
        np.testing.assert_allclose(bag, modality_features(s.inputs["txt"], "text"), atol=0)
    before = x.copy()
    modality_features(x, "sequence", ln, chunk_rows=3)  # float64 input: read, never changed in place
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("n, d", [(120, 40), (150, 36), (60, 300), (20, 50)])  # scatter path; Gram path (d > n)
def test_the_streamed_pca_equals_the_svd_of_the_standardised_features(n, d):
    rng = np.random.default_rng(d)
    x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 5, d) + rng.normal(size=d)).astype(np.float32)
    x[:, 1] = -2.0  # constant
    z = x.astype(np.float64)
    sd = z.std(0)
    keep = sd > 1e-12
    z = (z[:, keep] - z[:, keep].mean(0)) / sd[keep]
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    want = z @ vt[:MAX_PCA_DIMS].T
    for rows in (None, 1, 13):
        got = reduced_features([x], chunk_rows=rows)
        k = min(got.shape[1], want.shape[1])
        good = s[:k] > 1e-6 * s[0]  # rank-deficient directions (n < 32) have no defined axis
        assert got.shape[1] == min(MAX_PCA_DIMS, n, int(keep.sum()))
        np.testing.assert_allclose(np.abs(got[:, :k][:, good]), np.abs(want[:, :k][:, good]), atol=1e-7)
        # the distances k-means sees are the same
        np.testing.assert_allclose(np.linalg.norm(got[:, None] - got[None], axis=-1),
                                   np.linalg.norm(want[:, None] - want[None], axis=-1), atol=1e-6)


def test_chunked_kmeans_labels_and_a_wide_modality():
    b = mixed_bundle(wide=260)  # 125 samples, 260 features: the Gram path
    _same_pid(dataset_pid(b, [("wide", "vec"), ("wide+seq", "img")], clusters=3, chunk_rows=10 ** 9),
              dataset_pid(b, [("wide", "vec"), ("wide+seq", "img")], clusters=3, chunk_rows=5))
    x = b.splits["train"].inputs["img"]
    np.testing.assert_array_equal(kmeans_labels(x, 3, chunk_rows=4), kmeans_labels(x, 3, chunk_rows=10 ** 9))


def test_no_float64_copy_of_the_raw_features():
    """A sequence modality of 16 MB (float32) and a 4 MB vector: the estimator's own allocations (numpy's, which
    tracemalloc sees) stay far below the data (a float64 copy of either would be twice its size)."""
    rng = np.random.default_rng(1)
    n, t, d = 2000, 50, 40
    seq = torch.from_numpy(rng.normal(size=(n, t, d)).astype(np.float32))
    vec = torch.from_numpy(rng.normal(size=(n, 500)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 2, n))
    info = DatasetInfo("big", (ModalitySpec("seq", "sequence", (t, d)), ModalitySpec("vec", "vector", (500,))),
                       "single-label", ("no", "yes"))
    split = SplitData(inputs={"seq": seq, "vec": vec}, lengths={"seq": torch.full((n,), t)},
                      mask=torch.ones(n, 2, dtype=torch.bool), target=y)
    bundle = DatasetBundle(info, {"train": split})
    data = seq.nbytes + vec.nbytes
    import scipy.optimize  # noqa: F401 - imported on the first PID; its import is not the estimator's memory
    import scipy.sparse  # noqa: F401
    dataset_pid(bundle, splits=("train",), clusters=2, chunk_rows=100)  # warm (torch's and scipy's first calls)
    tracemalloc.start()
    try:
        dataset_pid(bundle, splits=("train",), clusters=2, chunk_rows=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * data, (peak, data)  # today 7 MB: one chunk, the (N, 2D) summaries, the 500 × 500 scatter
