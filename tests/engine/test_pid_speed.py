"""The dataset PID's speed-ups keep its results: a side shared by several pairs over the same samples is reduced
and clustered once (not once per pair) with the labels the per-pair path gives; k-means runs on numpy (no torch
intra-op threads) with the clusters of the torch version it replaced; the barrier Newton solver reaches the
minimum that an independent solver finds, where trust-constr stopped short of it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")

from robult_engine.data.base import DatasetBundle, DatasetInfo, ModalitySpec, SplitData  # noqa: E402
from robult_engine.explain import pid  # noqa: E402


def _bundle(missing: str | None = None, seed: int = 0) -> DatasetBundle:
    """Four vector / image / sequence modalities sharing a 3-class signal, in two splits; `missing`: that modality
    is absent on every fourth sample."""
    rng = np.random.default_rng(seed)
    specs = (ModalitySpec("a", "vector", (12,)), ModalitySpec("b", "vector", (40,)),
             ModalitySpec("c", "image", (1, 5, 5)), ModalitySpec("d", "sequence", (4, 3)))
    splits = {}
    for name, n in (("train", 90), ("test", 60)):
        y = rng.integers(0, 3, n)
        arrays = {"a": rng.normal(size=(n, 12)) + y[:, None],
                  "b": rng.normal(size=(n, 40)) + y[:, None] * rng.normal(size=40),
                  "c": rng.normal(size=(n, 1, 5, 5)) + y[:, None, None, None],
                  "d": rng.normal(size=(n, 4, 3)) - y[:, None, None]}
        inputs = {m: torch.from_numpy(v.astype(np.float32)) for m, v in arrays.items()}
        mask = torch.ones(n, 4, dtype=torch.bool)
        if missing is not None:
            mask[::4, "abcd".index(missing)] = False
        splits[name] = SplitData(inputs=inputs, lengths={"d": torch.from_numpy(rng.integers(1, 5, n))}, mask=mask,
                                 target=torch.from_numpy(y))
    return DatasetBundle(DatasetInfo("four", specs, "single-label", ("x", "y", "z")), splits)


def _counting(monkeypatch) -> dict[str, int]:
    calls = {"reduced_features": 0, "kmeans_reduced": 0}
    for name in calls:
        real = getattr(pid, name)

        def counted(*args, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(*args, **kw)
        monkeypatch.setattr(pid, name, counted)
    return calls


def _per_pair(bundle, pairs, clusters):
    """The PID of each pair as computed before the reuse: both sides reduced and clustered for every pair."""
    out = []
    names = bundle.info.modality_names
    use = list(bundle.splits.values())
    mask = np.concatenate([s.mask.numpy() for s in use])
    y_all = np.concatenate([s.target.numpy() for s in use]).astype(np.int64)
    for g1, g2 in pairs:
        ok = np.ones(len(y_all), dtype=bool)
        for m in (g1 + "+" + g2).split("+"):
            ok &= mask[:, names.index(m)]
        rows = np.nonzero(ok)[0]
        labels = []
        for g in (g1, g2):
            blocks = []
            for m in g.split("+"):
                spec = bundle.info.spec(m)
                if spec.kind in ("vector", "image"):
                    blocks.append(pid._Rows([pid._as_array(s.inputs[m]) for s in use]))
                else:
                    blocks.append(pid._Rows([pid.modality_features(s.inputs[m], spec.kind, s.lengths.get(m))
                                             for s in use]))
            reduced = pid.reduced_features(blocks, rows)
            labels.append(pid.kmeans_reduced(reduced, clusters, 0))
        out.append(pid.pid_from_labels(labels[0], labels[1], y_all[rows]))
    return out


def _assert_same(got, want):
    for g, w in zip(got, want):
        for k, v in w.components().items():
            assert g.result.components()[k] == pytest.approx(v, abs=1e-12), (g.pair, k)
        assert (g.result.mi_1, g.result.mi_2, g.result.mi_joint) == (w.mi_1, w.mi_2, w.mi_joint)
        assert g.result.sizes == w.sizes and g.result.n == w.n


def test_each_modality_is_reduced_and_clustered_once_across_its_pairs(monkeypatch):
    bundle = _bundle()
    pairs = pid.all_pairs(bundle.info.modality_names)  # 6 pairs of 4 modalities, every sample has all four
    want = _per_pair(bundle, pairs, 3)
    calls = _counting(monkeypatch)
    got = pid.dataset_pid(bundle, clusters=3)
    assert calls == {"reduced_features": 4, "kmeans_reduced": 4}  # once per modality, not 2 × 6 times
    assert [g.pair for g in got] == pairs
    _assert_same(got, want)


def test_a_side_is_shared_only_over_the_same_samples(monkeypatch):
    """With b absent on some samples, the pairs with b use fewer samples: a, c and d are clustered once over all
    samples (for the pairs among them) and once more over the samples with b."""
    bundle = _bundle(missing="b", seed=1)
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d"), ("a", "d"), ("b", "d"), ("a", "c+d"), ("c+d", "b")]
    want = _per_pair(bundle, pairs, 3)
    calls = _counting(monkeypatch)
    got = pid.dataset_pid(bundle, pairs, clusters=3)
    # over all samples: a, c, d, c+d; over the samples with b: a, b, c, d, c+d
    assert calls == {"reduced_features": 9, "kmeans_reduced": 9}
    _assert_same(got, want)
    assert got[0].result.n == got[2].result.n < got[1].result.n


def _kmeans_torch(x, k, seed=0, n_init=pid.N_INIT, max_iter=100):
    """The torch k-means that `kmeans_reduced` replaced (cdist, index_add_), for its clusters."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    n = len(xt)
    k = max(1, min(k, n))
    g = torch.Generator().manual_seed(seed)
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        centres = xt[torch.randint(n, (1,), generator=g)]
        d2 = torch.cdist(xt, centres).pow(2).min(1).values
        for _ in range(1, k):
            if float(d2.sum()) <= 0:
                break
            centres = torch.cat([centres, xt[torch.multinomial(d2, 1, generator=g)]])
            d2 = torch.minimum(d2, (xt - centres[-1]).pow(2).sum(1))
        labels = torch.cdist(xt, centres).argmin(1)
        for _ in range(max_iter):
            counts = torch.bincount(labels, minlength=len(centres)).double()
            sums = torch.zeros_like(centres).index_add_(0, labels, xt)
            centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
            new = torch.cdist(xt, centres).argmin(1)
            if torch.equal(new, labels):
                break
            labels = new
        inertia = float((xt - centres[labels]).pow(2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best.numpy().astype(np.int64)


def test_kmeans_runs_on_numpy_with_the_torch_versions_clusters(monkeypatch):
    rng = np.random.default_rng(4)
    cases = []
    for n, d, groups in ((300, 8, 4), (500, 32, 10), (40, 3, 2)):
        centres = rng.normal(size=(groups, d)) * 3
        cases.append(centres[rng.integers(0, groups, n)] + rng.normal(size=(n, d)))
    cases.append(np.round(cases[0]))  # repeated points
    want = {(i, k): _kmeans_torch(x, k) for i, x in enumerate(cases) for k in (2, 5, 10)}

    def no_threads(*_a, **_k):
        raise AssertionError("k-means must not use torch's intra-op thread pool")
    for name in ("cdist", "where", "bincount"):
        monkeypatch.setattr(torch, name, no_threads)
    for (i, k), labels in want.items():
        np.testing.assert_array_equal(pid.kmeans_reduced(cases[i], k), labels)


def _table(seed: int = 0) -> np.ndarray:
    """A 5 × 5 × 4 table whose minimum lies on the boundary (many cells of q* are 0)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 600)
    x1, x2 = (y + rng.integers(0, 3, 600)) % 5, (2 * y + rng.integers(0, 2, 600)) % 5
    t = np.zeros((5, 5, 4))
    np.add.at(t, (x1, x2, y), 1)
    return t / t.sum()


def test_the_solver_reaches_the_minimum_an_independent_solver_finds():
    """SLSQP (numerical gradients of I_q itself, 100 variables) as the reference: the old trust-constr stopped
    6e-5 bits above it on this table."""
    from scipy.optimize import minimize
    p = _table()
    k1, k2, c = p.shape
    p1, p2 = p.sum(1), p.sum(0)
    a, b, y = np.nonzero((p1[:, None, :] > 0) & (p2[None, :, :] > 0))
    q0 = p1[a, y] * p2[b, y] / p.sum((0, 1))[y]

    def embed(x):
        q = np.zeros_like(p)
        q[a, b, y] = np.maximum(x, 0)
        return q

    rows2 = p2 > 0  # the marginals on the support, less one implied x2 row per y (SLSQP needs full rank)
    rows2[rows2.shape[0] - 1 - np.argmax(rows2[::-1], axis=0), np.arange(c)] = False
    cons = [{"type": "eq", "fun": lambda x: (embed(x).sum(1) - p1)[p1 > 0]},
            {"type": "eq", "fun": lambda x: (embed(x).sum(0) - p2)[rows2]}]
    ref = minimize(lambda x: pid._mi_bits(embed(x).reshape(k1 * k2, c)), q0, method="SLSQP", constraints=cons,
                   bounds=[(0, None)] * len(q0), options={"ftol": 1e-15, "maxiter": 5000})
    assert ref.success, ref.message
    q, msg = pid.min_joint_information(p)
    assert np.allclose(q.sum(1), p1, atol=1e-12) and np.allclose(q.sum(0), p2, atol=1e-12) and q.min() >= 0
    assert pid._mi_bits(q.reshape(k1 * k2, c)) == pytest.approx(ref.fun, abs=1e-9)
    assert msg.startswith("barrier Newton: duality gap")


def test_the_trust_constr_fallback_still_solves(monkeypatch):
    def fail(*_a, **_k):
        raise FloatingPointError("the Newton step is not finite")
    monkeypatch.setattr(pid, "_barrier_newton", fail)
    p = _table(1)
    q, msg = pid.min_joint_information(p)
    assert msg.startswith("trust-constr")
    assert np.allclose(q.sum(1), p.sum(1), atol=1e-8) and np.allclose(q.sum(0), p.sum(0), atol=1e-8)


def test_the_newton_solves_run_on_one_blas_thread_then_restore_it():
    """Its small dense solves on a thread pool cost more than they do, and stall when other processes hold the
    cores: one BLAS thread while it runs (when threadpoolctl is installed), the original count after. Measured in a
    fresh interpreter, as `robult pid` runs: the BLAS pools of this test process are whatever earlier tests left."""
    pytest.importorskip("threadpoolctl")
    code = """
import numpy as np, threadpoolctl
from robult_engine.explain import pid
def blas():
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
rng = np.random.default_rng(0)
y = rng.integers(0, 4, 600)
x1, x2 = (y + rng.integers(0, 3, 600)) % 5, (2 * y + rng.integers(0, 2, 600)) % 5
t = np.zeros((5, 5, 4)); np.add.at(t, (x1, x2, y), 1); t /= t.sum()
before, seen, real = blas(), [], pid._barrier_newton
def spy(*a, **k):
    seen.append(blas())
    return real(*a, **k)
pid._barrier_newton = spy
pid.min_joint_information(t)
assert seen and seen[0] and all(n == 1 for n in seen[0]), seen
assert blas() == before, (blas(), before)
print("ok")
"""
    import subprocess
    import sys
    from pathlib import Path
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
