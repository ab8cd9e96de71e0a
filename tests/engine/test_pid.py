"""The PID estimator: identities, the convex program against a brute-force search, and ground truth — discrete
bits whose redundancy / uniqueness / synergy is known, and PID-Synth (k-means discretised) with only redundant,
only unique and only synergistic bits. Tolerances come from the data: the plug-in estimator's first-order
(Miller–Madow) bias bound, 4 bootstrap standard deviations, and the solver's 1e-6."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("scipy")

from robult_engine.data.pid_synth import make_pid_synth  # noqa: E402
from robult_engine.explain.pid import (dataset_pid, discrete_target, joint_counts, kmeans_labels,  # noqa: E402
                                       min_joint_information, modality_features, pid_bootstrap, pid_from_joint,
                                       pid_from_labels)

SOLVER_TOL = 1e-6


def _tolerance(res, sd: dict[str, float]) -> dict[str, float]:
    return {k: res.bias_bound + 4 * sd[k] + SOLVER_TOL for k in ("R", "U1", "U2", "S")}


def _check(res, sd, truth: dict[str, float]) -> None:
    tol = _tolerance(res, sd)
    got = res.components()
    for k, v in truth.items():
        assert abs(got[k] - v) <= tol[k], (k, got, truth, tol)


def _bits(n: int, seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2, n) for _ in range(count)]


N = 4000


@pytest.mark.parametrize("case", ["redundant", "unique", "synergy", "mixed"])
def test_discrete_ground_truth(case):
    r, u1, u2, s1 = _bits(N, {"redundant": 0, "unique": 1, "synergy": 2, "mixed": 3}[case], 4)
    if case == "redundant":  # both see the bit, Y is the bit: R = 1
        x1, x2, y, truth = r, r, r, {"R": 1, "U1": 0, "U2": 0, "S": 0}
    elif case == "unique":  # Y = (u1, u2), each modality sees its own bit: U1 = U2 = 1
        x1, x2, y, truth = u1, u2, 2 * u1 + u2, {"R": 0, "U1": 1, "U2": 1, "S": 0}
    elif case == "synergy":  # Y = u1 XOR u2: S = 1
        x1, x2, y, truth = u1, u2, u1 ^ u2, {"R": 0, "U1": 0, "U2": 0, "S": 1}
    else:  # Y = (r, u1, s1 XOR s2) with X1 = (r, u1, s1), X2 = (r, s2): 1 bit of each but U2
        s2 = _bits(N, 9, 1)[0]
        x1, x2 = r * 4 + u1 * 2 + s1, r * 2 + s2
        y, truth = r * 4 + u1 * 2 + (s1 ^ s2), {"R": 1, "U1": 1, "U2": 0, "S": 1}
    res = pid_from_labels(x1, x2, y)
    _check(res, pid_bootstrap(x1, x2, y, n_boot=10, seed=1), truth)


def test_identities_symmetry_and_relabelling():
    rng = np.random.default_rng(5)
    x1, x2 = rng.integers(0, 3, 3000), rng.integers(0, 4, 3000)
    y = (x1 + (x2 > 1) + rng.integers(0, 2, 3000)) % 3
    res = pid_from_labels(x1, x2, y)
    assert res.redundancy + res.unique_1 == pytest.approx(res.mi_1, abs=1e-9)
    assert res.redundancy + res.unique_2 == pytest.approx(res.mi_2, abs=1e-9)
    assert sum(res.components().values()) == pytest.approx(res.mi_joint, abs=1e-9)
    swapped = pid_from_labels(x2, x1, y)
    assert swapped.unique_1 == pytest.approx(res.unique_2, abs=1e-6)
    assert swapped.synergy == pytest.approx(res.synergy, abs=1e-6)
    relabelled = pid_from_labels(10 - x1, x2 * 7, (y + 1) % 3)  # a bijection of every alphabet changes nothing
    for k, v in res.components().items():
        assert relabelled.components()[k] == pytest.approx(v, abs=1e-6)


def test_the_convex_program_against_a_brute_force_search():
    """Binary X1, X2, Y: for each y, the 2×2 tables with fixed margins form a segment q(0,0,y) = t_y ∈ [lo, hi];
    a grid over (t_0, t_1) finds the minimum of I_q(X1, X2; Y) that the solver must match."""
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(8)).reshape(2, 2, 2)
    q, _ = min_joint_information(p)
    p1, p2 = p.sum(1), p.sum(0)
    assert np.allclose(q.sum(1), p1, atol=1e-9) and np.allclose(q.sum(0), p2, atol=1e-9) and q.min() >= 0

    def table(y, t):
        return np.array([[t, p1[0, y] - t], [p2[0, y] - t, p1[1, y] - p2[0, y] + t]])

    def mi(qq):
        m = qq.reshape(4, 2)
        pa, pb = m.sum(1, keepdims=True), m.sum(0, keepdims=True)
        nz = m > 0
        return float((m[nz] * np.log2(m[nz] / (pa @ pb)[nz])).sum())

    grids = []
    for y in range(2):
        lo, hi = max(0, p2[0, y] - p1[1, y]), min(p1[0, y], p2[0, y])
        grids.append(np.linspace(lo, hi, 401))
    best = min(mi(np.stack([table(0, a), table(1, b)], axis=-1)) for a, b in itertools.product(*grids))
    got = mi(q)
    assert got <= best + 1e-9  # no point of the grid does better (the constraints hold, so none can do worse)
    assert pid_from_joint(p).mi_min == pytest.approx(got, abs=1e-9)


def _synth_pid(pairs, seed=0, **bits):
    bundle = make_pid_synth(noise=0.2, seed=seed, **bits)
    return dataset_pid(bundle, pairs, n_boot=10)


def test_pid_synth_redundant_bits_only():
    for pp in _synth_pid(None, redundant_bits=1, unique_bits=0, synergy_bits=0):  # all three pairs
        _check(pp.result, pp.bootstrap_sd, {"R": 1, "U1": 0, "U2": 0, "S": 0})
        assert pp.clusters == (10, 10)


def test_pid_synth_unique_bits_only():
    # two unique bits: bit 0 is seen by m0, bit 1 by m1 (round-robin), m2 sees none
    a, b = _synth_pid([("m0", "m1"), ("m0", "m2")], redundant_bits=0, unique_bits=2, synergy_bits=0)
    _check(a.result, a.bootstrap_sd, {"R": 0, "U1": 1, "U2": 1, "S": 0})
    _check(b.result, b.bootstrap_sd, {"R": 0, "U1": 1, "U2": 0, "S": 0})


def test_pid_synth_synergy_bits_only():
    # the bit is the XOR of one share per modality: no pair of single modalities sees any of it, but m0 and the
    # group m1+m2 (whose shares' XOR is visible jointly) hold it as pure synergy
    pair, group = _synth_pid([("m0", "m1"), ("m0", "m1+m2")], redundant_bits=0, unique_bits=0, synergy_bits=1)
    _check(pair.result, pair.bootstrap_sd, {"R": 0, "U1": 0, "U2": 0, "S": 0})
    _check(group.result, group.bootstrap_sd, {"R": 0, "U1": 0, "U2": 0, "S": 1})
    assert "m1: as is + m2: as is" in group.features[1]


def test_features_of_every_modality_kind():
    seq = np.zeros((2, 4, 1))
    seq[0, :2, 0] = [1, 3]  # two valid frames
    seq[1, :, 0] = [2, 2, 2, 2]
    f = modality_features(seq, "sequence", lengths=np.array([2, 4]))
    assert np.allclose(f, [[2, 1], [2, 0]])  # mean and std of the valid frames only
    txt = modality_features(np.array([[3, 3, 0], [259, 0, 0]]), "text")
    assert txt[0, 3] == 1 and txt[1, 3] == 1 and txt.shape == (2, 256)  # 259 folds onto bucket 3; 0 is padding
    assert modality_features(np.zeros((3, 1, 2, 2)), "image").shape == (3, 4)
    with pytest.raises(ValueError, match="kind"):
        modality_features(np.zeros((2, 2)), "graph")


def test_kmeans_separates_well_separated_groups_and_targets_discretise():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 40)) * 10  # more dimensions than the PCA keeps
    truth = rng.integers(0, 4, 500)
    labels = kmeans_labels(centres[truth] + rng.normal(size=(500, 40)), 4)
    assert len(joint_counts(labels, truth, truth).nonzero()[0]) == 4  # a bijection between labels and groups
    assert set(discrete_target(np.linspace(-1, 1, 8), "regression")) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="choose one label"):
        discrete_target(np.zeros((3, 2)), "multi-label")
    assert list(discrete_target(np.array([[1, 0], [0, 1.0]]), "multi-label", label=1)) == [0, 1]


def test_cli_pid_prints_the_decomposition_and_the_discretisation(capsys, tmp_path):
    import json
    from robult_engine.cli import main
    js = tmp_path / "pid.json"
    assert main(["pid", "--dataset", "pid-synth", "--set", "data.synth_n_train=300", "--modalities", "m0,m1",
                 "--clusters", "4", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "m0 × m1" in out and "k-means, k = 4" in out and "R (bits)" in out
    data = json.loads(js.read_text())
    assert data["pairs"][0]["pair"] == ["m0", "m1"] and data["pairs"][0]["clusters"] == [4, 4]
    assert main(["pid", "--dataset", "pid-synth", "--set", "data.synth_n_train=300", "--clusters", "3"]) == 0
    out = capsys.readouterr().out
    assert all(f"{a} × {b}" in out for a, b in (("m0", "m1"), ("m0", "m2"), ("m1", "m2")))
    assert main(["pid", "--dataset", "pid-synth", "--modalities", "m0,zz"]) == 2
    assert "unknown modality" in capsys.readouterr().err


def test_kmeans_by_matrix_products_equals_the_elementwise_lloyd_iteration():
    """kmeans_reduced computes distances as ‖x‖² − 2x·c + ‖c‖² and the centres' sums as a product: the same
    partition as the textbook loop (direct distances, per-centre sums) from the same k-means++ draws."""
    import math

    import numpy as np
    import torch

    from robult_engine.explain.pid import kmeans_reduced

    def reference(x, k, seed, n_init=5, max_iter=100):
        n = len(x)
        g = torch.Generator().manual_seed(seed)
        dist = lambda c: ((x[:, None, :] - c[None]) ** 2).sum(-1)  # noqa: E731 - (N, K)
        best, best_inertia = None, math.inf
        for _ in range(n_init):
            centres = x[[int(torch.randint(n, (1,), generator=g))]]
            d2 = dist(centres)[:, 0]
            for _ in range(1, k):
                centres = np.concatenate([centres, x[[int(torch.multinomial(torch.from_numpy(d2), 1, generator=g))]]])
                d2 = np.minimum(d2, dist(centres[-1:])[:, 0])
            labels = dist(centres).argmin(1)
            for _ in range(max_iter):
                centres = np.stack([x[labels == j].mean(0) if (labels == j).any() else centres[j]
                                    for j in range(len(centres))])
                new = dist(centres).argmin(1)
                if np.array_equal(new, labels):
                    break
                labels = new
            inertia = float(((x - centres[labels]) ** 2).sum())
            if inertia < best_inertia:
                best, best_inertia = labels, inertia
        return best

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(loc, 1.0, size=(300, 6)) for loc in (-4.0, 0.0, 5.0, 9.0)])
    for k, seed in ((4, 0), (7, 1), (10, 2)):
        got = kmeans_reduced(x, k, seed)
        assert np.array_equal(got, reference(x, k, seed)), (k, seed)
    assert len(np.unique(kmeans_reduced(x, 4, 0))) == 4
