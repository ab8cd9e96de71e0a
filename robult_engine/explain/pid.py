"""Partial information decomposition (PID) of a pair of modalities with respect to the target: how much of
what X1 and X2 tell about Y is redundant (R, either alone tells it), unique to one (U_1, U_2) or synergistic
(S, only the pair tells it).

Definitions (Bertschinger et al. 2014, "Quantifying unique information", as estimated by Liang et al.,
"Quantifying & Modeling Multimodal Interactions: An Information Decomposition Framework", NeurIPS 2023, their
CVX estimator): with Δ_p the set of distributions q(x1, x2, y) that keep the two pairwise marginals p(x1, y)
and p(x2, y),
    q* = argmin_{q ∈ Δ_p} I_q(X1, X2; Y)      (equivalently, argmax H_q(Y | X1, X2))
    R = I(X1; Y) + I(X2; Y) − I_q*(X1, X2; Y),  U_1 = I_q*(X1, X2; Y) − I(X2; Y),
    U_2 = I_q*(X1, X2; Y) − I(X1; Y),          S = I_p(X1, X2; Y) − I_q*(X1, X2; Y),
so R + U_1 = I(X1; Y), R + U_2 = I(X2; Y) and R + U_1 + U_2 + S = I_p(X1, X2; Y). All in bits, on the plug-in
(empirical) distribution of discretised modalities.

The solver (`min_joint_information`): Newton's method on the log barrier of the convex program, minimising
−H_q(Y | X1, X2) over q ≥ 0 with the marginals as linear equality constraints, from q(x1, x2, y) =
p(x1, y) p(x2, y) / p(y) (feasible and positive). The Hessian is block diagonal (one block per (x1, x2)), so
each Newton step is one dense solve of (occupied (x1, x2) pairs + constraints) ≤ 100 + 2·10·|Y| unknowns, and
it stops on a certified duality gap below 1e-11 nats (Lagrange multipliers of the marginals give a lower
bound of the minimum). On mfeat's 15 pairs (1,000 variables each) it takes about 60 steps, well under a second
per pair, where scipy's `trust-constr` (the solver before, kept as the fallback should Newton fail) took
seconds and stopped up to 8e-5 bits above the minimum. Why not cvxpy (which Liang et al. used): the problem is
a small smooth convex program, and cvxpy would bring a modelling layer and three conic solvers for it. SLSQP
was tried and rejected: its dense QP sub-problems took minutes at 1,000 variables. scipy is the optional extra
`explain` (`pip install -e '.[explain]'`; the `test` extra has it).

Discretisation (the estimator needs discrete X): each modality's features become one vector per sample —
vectors as they are, images flattened, sequences pooled to the mean and standard deviation of their valid
frames, text to a bag of its hashed ids folded into 256 buckets (normalised by length) — standardised per
feature, reduced to at most 32 principal components, and clustered by k-means (Lloyd's algorithm from a
k-means++ seeding, the best of 5 seeded restarts by inertia). Every pass reads the features in row chunks
(`CHUNK_BYTES`), so memory stays near the dataset's own size (the note above `modality_features`). A "modality" may also be a group
"a+b": the features of a and b side by side (so a 3-modality synergy becomes visible as the synergy of a
with the group b+c). Only samples with both sides present are used. The number of clusters k, unless given,
is floor(sqrt(N / (2·|Y|))) clipped to [2, 10]: at least two samples per cell of the (x1, x2, y) table on
average. The plug-in estimate of I(X1, X2; Y) is biased upward by about (k1·k2 − 1)(|Y| − 1) / (2 N ln 2)
bits (Miller–Madow), which shows up as spurious synergy; every result reports this `bias_bound`, and
`pid_bootstrap` gives the sampling spread.

Targets: single-label classes; regression scores cut into 4 quantile bins; multi-label needs one chosen
label (a binary target).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import threading
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from . import check_stop

MAX_PCA_DIMS = 32
N_INIT = 5
TEXT_BUCKETS = 256
REGRESSION_BINS = 4


def _require_scipy():
    try:
        import scipy  # noqa: F401
    except ImportError:
        raise ImportError("the PID estimator needs scipy: pip install -e '.[explain]'") from None


@dataclass(frozen=True)
class PIDResult:
    """R, U_1, U_2, S (bits) of one pair, with the mutual informations they add up to."""
    redundancy: float
    unique_1: float
    unique_2: float
    synergy: float
    mi_1: float  # I(X1; Y)
    mi_2: float  # I(X2; Y)
    mi_joint: float  # I_p(X1, X2; Y) = R + U_1 + U_2 + S
    mi_min: float  # min over Δ_p of I_q(X1, X2; Y)
    n: int  # samples
    sizes: tuple[int, int, int]  # occupied values of X1, X2, Y
    bias_bound: float  # Miller–Madow first-order bias of the plug-in I(X1, X2; Y), bits
    solver: str = ""  # the solver's message

    def components(self) -> dict[str, float]:
        return {"R": self.redundancy, "U1": self.unique_1, "U2": self.unique_2, "S": self.synergy}


def _mi_bits(p: np.ndarray) -> float:
    """I(A; B) in bits of a joint table p (A, B) summing to 1."""
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (pa @ pb)[nz])).sum())


def _marginal_constraints(a: np.ndarray, b: np.ndarray, y: np.ndarray, p1: np.ndarray, p2: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The equality constraints of Δ_p on the support cells (a, b, y): one per (x1, y) and per (x2, y) but the
    last x2 of each y (that one is implied: per y, the support is a full product of rows and columns, so the
    constraints have rank rows + cols − 1). Rows ordered by y, then the x1 values, then the x2 values. Returns
    each cell's (x1, y) row and (x2, y) row (−1 where that constraint was the dropped one) and the right-hand
    sides."""
    k1 = p1.shape[0]
    width = k1 + p2.shape[0]
    key1, key2 = y * width + a, y * width + k1 + b
    keys = np.unique(np.concatenate([key1, key2]))
    ky = keys // width
    last_of_y = np.r_[ky[1:] != ky[:-1], True]  # an x2 key: they sort after the x1 keys of their y
    kept = keys[~last_of_y]
    r1 = np.searchsorted(kept, key1)
    pos = np.minimum(np.searchsorted(kept, key2), len(kept) - 1)
    r2 = np.where(kept[pos] == key2, pos, -1)
    v, yy = kept % width, kept // width
    rhs = np.where(v < k1, p1[np.minimum(v, k1 - 1), yy], p2[np.maximum(v - k1, 0), yy])
    return r1, r2, rhs


BARRIER_GAP = 1e-11  # nats: the Newton solver stops once its duality gap is below this

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit = None


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS on one thread while the Newton solver runs, when threadpoolctl is installed (else as it is). Its
    ~300 × 300 dense solves are too small for a thread pool: waking it costs more than the work, and when other
    processes hold the cores each solve waits for them (mfeat on the 2-core VM under load: 27–32 s with the
    pool, 3.5 s without). Shared by concurrent solves: the first in sets the limit, the last out restores it."""
    global _blas_users, _blas_limit
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None:
                _blas_limit.restore_original_limits()
                _blas_limit = None


def _barrier_newton(x0: np.ndarray, group: np.ndarray, r1: np.ndarray, r2: np.ndarray, rhs: np.ndarray,
                    max_steps: int = 1000) -> tuple[np.ndarray, float, int]:
    """min f(x) = Σ x log(x / s_g(x)) (s_g: the sum of x over the cell's group (x1, x2), so f = −H_q(Y | X1, X2)
    in nats) subject to A x = rhs (the rows r1, r2 of `_marginal_constraints`), x ≥ 0, from the feasible,
    positive x0: Newton's method on the log barrier f − μ Σ log x, μ divided by 100 once each centring
    converges, until the duality gap is below BARRIER_GAP. Returns (x, gap in nats, Newton steps).

    The Hessian of f is block diagonal, one block diag(1/x) − 1 1ᵀ / s_g per group, singular along x_g (f is
    homogeneous of degree 1 in each group). So the Newton system is solved with each group's scaling
    ζ_g = 1ᵀ dx_g / s_g as an unknown of its own,
        D dx − Gᵀ ζ + Aᵀ w = −∇,  G dx − s ζ = 0,  A dx = r,     D = diag(1/x + μ/x²),
    eliminating only dx (D is diagonal): an (n_groups + n_constraints) dense system, with no division by the
    vanishing s_g − 1ᵀ D⁻¹ 1_g. The gap is certified: θ = −w are Lagrange multipliers of the marginals, and
    θᵀ r − max(0, max_g log Σ_{cells of g} exp(θ_cell)) is a lower bound of min f (the Lagrangian relaxation:
    min over each group's conditional q(y | x1, x2) of Σ q (log q − θ) is −log Σ exp θ)."""
    n, m = len(x0), len(rhs)
    ng = int(group.max()) + 1
    two = r2 >= 0
    i2, r2v = np.nonzero(two)[0], r2[two]
    # where each cell's Hessian entry lands in C = A D⁻¹ Aᵀ (m × m) and B = G D⁻¹ Aᵀ (n_groups × m)
    c_at = np.concatenate([r1 * m + r1, r2v * m + r2v, r1[i2] * m + r2v, r2v * m + r1[i2]])
    c_of = np.concatenate([np.arange(n), i2, i2, i2])
    b_at = np.concatenate([group * m + r1, group[i2] * m + r2v])
    b_of = np.concatenate([np.arange(n), i2])

    def a_mul(v):
        return np.bincount(r1, v, m) + np.bincount(r2v, v[i2], m)

    def at_mul(w):
        out = w[r1].copy()
        out[i2] += w[r2v]
        return out

    def objective(x):
        s = np.bincount(group, x, ng)
        return float(x @ np.log(x / s[group]))

    def gap_of(x, w):
        theta = -at_mul(w)
        top = np.full(ng, -np.inf)
        np.maximum.at(top, group, theta)
        lse = np.log(np.bincount(group, np.exp(theta - top[group]), ng)) + top
        return objective(x) - (float(-w @ rhs) - max(0.0, float(lse.max())))

    x = x0.copy()
    mu = 1e-2 / n
    gap, steps = math.inf, 0
    while steps < max_steps:
        w = np.zeros(m)
        for _ in range(100):  # centring: Newton on f − μ Σ log x
            s = np.bincount(group, x, ng)
            grad = np.log(x / s[group]) - mu / x
            d = x * x / (x + mu)  # D⁻¹
            t = np.bincount(group, mu * x / (x + mu), ng)  # s_g − 1ᵀ D⁻¹ 1_g, without the cancellation
            bmat = np.bincount(b_at, d[b_of], ng * m).reshape(ng, m)
            cmat = np.bincount(c_at, d[c_of], m * m).reshape(m, m)
            k = np.block([[-np.diag(t), -bmat], [bmat.T, -cmat]])
            dg = d * grad
            sol = np.linalg.solve(k, np.concatenate([np.bincount(group, dg, ng), rhs - a_mul(x) + a_mul(dg)]))
            zeta, w = sol[:ng], sol[ng:]
            dx = d * (zeta[group] - grad - at_mul(w))
            steps += 1
            dec = -float(grad @ dx)  # the Newton decrement², dxᵀ H dx
            if not np.isfinite(dec):
                raise FloatingPointError("the Newton step is not finite")
            neg = dx < 0
            step = min(1.0, 0.99 * float(np.min(-x[neg] / dx[neg]))) if neg.any() else 1.0
            phi = objective(x) - mu * float(np.log(x).sum())
            while True:  # backtracking (Armijo); once the decrement is tiny, the full step
                xn = x + step * dx
                if (xn > 0).all() and (dec < 1e-12 or
                                       objective(xn) - mu * float(np.log(xn).sum()) <= phi - 1e-4 * step * dec):
                    break
                step *= 0.5
                if step < 1e-12:
                    xn = x
                    break
            x = xn
            if dec < 1e-11 or step < 1e-12:
                break
        gap = gap_of(x, w)
        if gap < BARRIER_GAP or mu < 1e-18:
            break
        mu /= 100
    return x, gap, steps


def _trust_constr(p: np.ndarray, a, b, y, r1, r2, rhs, q0) -> tuple[np.ndarray, str]:
    """The same program by scipy.optimize.minimize's `trust-constr` (interior point for q ≥ 0, sparse linear
    equality constraints, exact gradient and sparse Hessian): the fallback should the Newton solver fail. It
    often stops a few 1e-5 bits above the minimum."""
    import scipy.sparse as sp
    from scipy.optimize import Bounds, LinearConstraint, minimize
    k1, k2, c = p.shape
    n = len(a)
    two = r2 >= 0
    A = sp.csr_matrix((np.ones(n + int(two.sum())), (np.concatenate([r1, r2[two]]),
                                                     np.concatenate([np.arange(n), np.nonzero(two)[0]]))),
                      shape=(len(rhs), n))
    group = a * k2 + b
    G = sp.csr_matrix((np.ones(n), (group, np.arange(n))), shape=(k1 * k2, n))  # cell -> (x1, x2)
    tiny = 1e-300

    def f(x):  # −H_q(Y | X1, X2) = Σ q log(q / q(x1, x2)), in nats
        x = np.maximum(x, tiny)
        qg = np.maximum((G @ x)[group], tiny)
        lr = np.log(x / qg)
        return float(x @ lr), lr

    def hess(x, *_):
        x = np.maximum(x, 1e-14)
        qa = np.maximum(G @ x, 1e-14)
        return sp.diags(1 / x) - G.T @ sp.diags(1 / qa) @ G

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trust-constr's notes on its own initial trust radius
        res = minimize(f, q0, jac=True, hess=hess, method="trust-constr",
                       constraints=[LinearConstraint(A, rhs, rhs)], bounds=Bounds(0, np.inf),
                       options={"maxiter": 3000, "gtol": 1e-10, "xtol": 1e-12})
    q = np.zeros_like(p)
    x = np.maximum(res.x, 0)
    q[a, b, y] = x / x.sum()
    return q, f"trust-constr: {res.message}"


def min_joint_information(p: np.ndarray) -> tuple[np.ndarray, str]:
    """q* = argmin over q with q(x1, y) = p(x1, y), q(x2, y) = p(x2, y) of I_q(X1, X2; Y). p: (K1, K2, C)
    summing to 1. Returns (q*, solver message): Newton's method on the log barrier (`_barrier_newton`), to a
    certified duality gap below BARRIER_GAP nats; scipy's trust-constr should it fail."""
    _require_scipy()
    k1, k2, c = p.shape
    p1, p2, py = p.sum(1), p.sum(0), p.sum((0, 1))  # (K1, C), (K2, C), (C,)
    support = (p1[:, None, :] > 0) & (p2[None, :, :] > 0)  # a cell can be non-zero only there
    a, b, y = np.nonzero(support)
    n = len(a)
    q0 = p1[a, y] * p2[b, y] / py[y]  # X1 ⟂ X2 | Y: feasible and positive on the support
    r1, r2, rhs = _marginal_constraints(a, b, y, p1, p2)
    q = np.zeros_like(p)
    if len(rhs) >= n:  # every y has one x1 or one x2 value: Δ_p is the single point q0
        q[a, b, y] = q0
        return q, "unique feasible point"
    _, group = np.unique(a * k2 + b, return_inverse=True)
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"), _one_blas_thread():
            x, gap, steps = _barrier_newton(q0, group.ravel(), r1, r2, rhs)
        if not (np.isfinite(x).all() and gap < 1e-8):
            raise FloatingPointError(f"duality gap {gap:.1e}")
    except (np.linalg.LinAlgError, FloatingPointError):
        return _trust_constr(p, a, b, y, r1, r2, rhs, q0)
    q[a, b, y] = x / x.sum()
    return q, f"barrier Newton: duality gap {max(gap, 0.0):.0e} nats after {steps} steps"


def pid_from_joint(p: np.ndarray, n: int = 0) -> PIDResult:
    """The PID of a joint table p(x1, x2, y) (K1, K2, C), summing to 1; `n` samples it came from (for the
    bias bound; 0 when exact)."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    q, msg = min_joint_information(p)
    k1, k2, c = p.shape
    mi1, mi2 = _mi_bits(p.sum(1)), _mi_bits(p.sum(0))
    mij = _mi_bits(p.reshape(k1 * k2, c))
    miq = _mi_bits(q.reshape(k1 * k2, c))
    miq = min(max(miq, max(mi1, mi2)), mij)  # the solver's tolerance must not break I(X1;Y) ≤ I_q ≤ I_p
    sizes = (int((p.sum((1, 2)) > 0).sum()), int((p.sum((0, 2)) > 0).sum()), int((p.sum((0, 1)) > 0).sum()))
    cells = int((p.sum(2) > 0).sum())
    bias = (cells - 1) * (sizes[2] - 1) / (2 * n * math.log(2)) if n else 0.0
    return PIDResult(redundancy=max(mi1 + mi2 - miq, 0.0), unique_1=max(miq - mi2, 0.0), unique_2=max(miq - mi1, 0.0),
                     synergy=max(mij - miq, 0.0), mi_1=mi1, mi_2=mi2, mi_joint=mij, mi_min=miq, n=int(n),
                     sizes=sizes, bias_bound=bias, solver=msg)


def joint_counts(x1: np.ndarray, x2: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The count table (K1, K2, C) of three discrete label arrays (values compacted to 0..K−1)."""
    _, a = np.unique(np.asarray(x1), return_inverse=True)
    _, b = np.unique(np.asarray(x2), return_inverse=True)
    _, t = np.unique(np.asarray(y), return_inverse=True)
    counts = np.zeros((a.max() + 1, b.max() + 1, t.max() + 1))
    np.add.at(counts, (a.ravel(), b.ravel(), t.ravel()), 1)
    return counts


def pid_from_labels(x1: np.ndarray, x2: np.ndarray, y: np.ndarray) -> PIDResult:
    """The PID of discrete samples (x1, x2, y) under their empirical (plug-in) distribution."""
    if not len(x1) == len(x2) == len(y) or len(y) == 0:
        raise ValueError("x1, x2 and y must be non-empty and of equal length")
    counts = joint_counts(x1, x2, y)
    return pid_from_joint(counts / counts.sum(), n=len(y))


def pid_bootstrap(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, n_boot: int = 20, seed: int = 0,
                  should_stop=None) -> dict[str, float]:
    """Standard deviation of R, U1, U2, S over `n_boot` resamples (with replacement) of the samples."""
    rng = np.random.default_rng(seed)
    n = len(y)
    draws = []
    for _ in range(n_boot):
        check_stop(should_stop)
        idx = rng.integers(0, n, n)
        draws.append(pid_from_labels(x1[idx], x2[idx], y[idx]).components())
    return {k: float(np.std([d[k] for d in draws], ddof=1)) for k in ("R", "U1", "U2", "S")}


# --- discretisation ------------------------------------------------------------------------------------------
#
# Memory: the raw features are never copied whole. Every pass over a modality reads it in row chunks of about
# CHUNK_BYTES as float64 (`chunk_rows` overrides the count), so the estimator's working memory is one chunk
# plus what it keeps: a sequence's (N, 2D) mean/std vectors and a text's (N, 256) bag (both far smaller than
# the (N, T, D) frames they summarise), the (≤ 32)-dimensional PCA projection, and a D × D scatter matrix
# (or, when a side has more features than samples, the N × N Gram matrix, then smaller than the side itself).
# Chunks only change the order of float64 sums: any chunk size gives the same result to rounding.

CHUNK_BYTES = 16 * 1024 ** 2


def _rows_per_chunk(row_bytes: int, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        return int(chunk_rows)
    return max(1, CHUNK_BYTES // max(1, int(row_bytes)))


def _as_array(x) -> np.ndarray:
    """A numpy view of a tensor or array (no copy)."""
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def _lazy(x):
    """Memory-mapped rows (`data.base.MappedRows`) as they are — read a chunk of rows at a time by the passes
    below, never whole — and anything else as a numpy view."""
    from ..data.base import MappedRows
    return x if isinstance(x, MappedRows) else _as_array(x)


def _mapped_take(block, rows: np.ndarray, cols: slice) -> np.ndarray:
    """float64 (len(rows), ·): the rows `rows` of memory-mapped rows, flattened per row, at the columns `cols`,
    read about CHUNK_BYTES of rows at a time (only the selected columns of each chunk are kept)."""
    row_bytes = int(np.prod(block.shape[1:], dtype=np.int64)) * 4
    step = _rows_per_chunk(row_bytes, None)
    parts = []
    for a in range(0, len(rows), step):
        part = block[rows[a:a + step]].numpy()
        parts.append(np.asarray(part.reshape(len(part), -1)[:, cols], dtype=np.float64))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def modality_features(x, kind: str, lengths=None, *, chunk_rows: int | None = None) -> np.ndarray:
    """One float64 vector per sample (N, D) of a modality tensor, as the module docstring describes. Sequences
    and texts are summarised chunk by chunk (`chunk_rows` samples at a time; default: about CHUNK_BYTES of
    float64 frames)."""
    x = _lazy(x)
    n = x.shape[0]
    if kind in ("vector", "image"):
        return _as_array(x).reshape(n, -1).astype(np.float64)  # the (N, D) float64 result is the whole anyway
    if kind == "sequence":
        t, d = x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64))
        ln = np.asarray(_as_array(lengths)) if lengths is not None else np.full(n, t)
        out = np.empty((n, 2 * d))
        step = _rows_per_chunk(t * d * 8, chunk_rows)
        frames = np.arange(t)[None, :]
        for a in range(0, n, step):
            xc = np.array(_as_array(x[a:a + step]), dtype=np.float64).reshape(-1, t, d)  # a copy: changed below
            valid = (frames < ln[a:a + step, None])[..., None]  # (c, T, 1)
            cnt = np.maximum(valid.sum(1), 1)
            mean = np.where(valid, xc, 0.0).sum(1) / cnt
            xc -= mean[:, None]
            np.square(xc, out=xc)
            out[a:a + step, :d] = mean
            out[a:a + step, d:] = np.sqrt(np.maximum(np.where(valid, xc, 0.0).sum(1) / cnt, 0))
        return out
    if kind == "text":
        bag = np.zeros((n, TEXT_BUCKETS))
        step = _rows_per_chunk(x.shape[1] * 8 if x.ndim > 1 else 8, chunk_rows)
        for a in range(0, n, step):
            ids = np.asarray(_as_array(x[a:a + step]), dtype=np.int64)
            rows = np.repeat(np.arange(len(ids)), ids.shape[1])
            flat = ids.reshape(-1)
            keep = flat > 0  # 0 is padding
            part = bag[a:a + step]
            np.add.at(part, (rows[keep], flat[keep] % TEXT_BUCKETS), 1)
            part /= np.maximum(part.sum(1, keepdims=True), 1)
        return bag
    raise ValueError(f"unknown modality kind {kind!r}")


class _Rows:
    """A matrix (N, D) held as row blocks (one per split, in order) and read by rows or columns, as float64,
    without a copy of the whole."""

    def __init__(self, blocks: list) -> None:
        # numpy blocks as (N, D) views; memory-mapped rows (MappedRows) kept lazy, read by the rows a chunk needs
        self.blocks = [b if not isinstance(b, np.ndarray) else b.reshape(len(b), -1) for b in blocks]
        self.starts = np.cumsum([0] + [len(b) for b in self.blocks])
        self.dim = int(np.prod(self.blocks[0].shape[1:], dtype=np.int64)) if self.blocks else 0

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, rows: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """float64 (len(rows), ·) of the sorted global `rows` (and the columns `cols`)."""
        parts = []
        for b, lo, hi in zip(self.blocks, self.starts[:-1], self.starts[1:]):
            a, z = np.searchsorted(rows, [lo, hi])
            if z > a:
                parts.append(np.asarray(b[:, cols][rows[a:z] - lo], dtype=np.float64) if isinstance(b, np.ndarray)
                             else _mapped_take(b, rows[a:z] - lo, cols))
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float64)


def _row_chunks(sides: list[_Rows], rows: np.ndarray, step: int):
    """float64 chunks (≤ step rows) of the selected rows, the matrices of `sides` side by side."""
    for a in range(0, len(rows), step):
        take = rows[a:a + step]
        parts = [s.take(take) for s in sides]
        yield parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _column_blocks(sides: list[_Rows], rows: np.ndarray, step: int):
    """(first column, float64 block (n, ≤ step columns)) of the selected rows, the matrices side by side."""
    offset = 0
    for s in sides:
        for a in range(0, s.dim, step):
            yield offset + a, s.take(rows, slice(a, min(s.dim, a + step)))
        offset += s.dim


def reduced_features(sides, rows: np.ndarray | None = None, *, chunk_rows: int | None = None) -> np.ndarray | None:
    """The features of `sides` (one or more (N, D) arrays or tensors side by side; a tensor of more dimensions is
    flattened per sample) at `rows`, standardised per feature (population sd) and reduced to at most
    MAX_PCA_DIMS principal components: float64 (n, ≤ 32), or None when every feature is constant. Streamed in
    row chunks (see the memory note above); the components' signs are arbitrary, as an SVD's are."""
    mats = [s if isinstance(s, _Rows) else _Rows([_lazy(s)]) for s in (sides if isinstance(sides, (list, tuple))
                                                                             else [sides])]
    n_all = len(mats[0])
    rows = np.arange(n_all) if rows is None else np.asarray(rows, dtype=np.int64)
    n, d = len(rows), sum(m.dim for m in mats)
    if n == 0 or d == 0:
        return None
    step = _rows_per_chunk(d * 8, chunk_rows)
    total = np.zeros(d)
    for c in _row_chunks(mats, rows, step):
        total += c.sum(0)
    mean = total / n
    scatter = d > MAX_PCA_DIMS and d <= n  # the D × D scatter matrix (else the variances, or the Gram matrix)
    cov = np.zeros((d, d)) if scatter else None
    sq = np.zeros(d)
    for c in _row_chunks(mats, rows, step):
        c -= mean
        if scatter:
            cov += c.T @ c
        else:
            sq += np.einsum("ij,ij->j", c, c)
    sd = np.sqrt((np.diag(cov) if scatter else sq) / n)
    keep = sd > 1e-12
    if not keep.any():
        return None
    kept = int(keep.sum())
    if kept <= MAX_PCA_DIMS:  # no reduction: the standardised features
        out = np.empty((n, kept))
        for a, c in zip(range(0, n, step), _row_chunks(mats, rows, step)):
            out[a:a + len(c)] = (c[:, keep] - mean[keep]) / sd[keep]
        return out
    mk, sk = mean[keep], sd[keep]
    if scatter:  # principal axes: the top eigenvectors of the standardised scatter matrix
        s = cov[np.ix_(keep, keep)] / np.outer(sk, sk)
        del cov
        w, v = np.linalg.eigh(s)
        top = v[:, np.argsort(w)[::-1][:MAX_PCA_DIMS]]
        out = np.empty((n, top.shape[1]))
        for a, c in zip(range(0, n, step), _row_chunks(mats, rows, step)):
            out[a:a + len(c)] = ((c[:, keep] - mk) / sk) @ top
        return out
    # more features than samples: the Gram matrix of the standardised rows (n × n, smaller than the side); its
    # top eigenvectors scaled by the singular values are the samples' principal coordinates
    gram = np.zeros((n, n))
    col_step = _rows_per_chunk(n * 8, chunk_rows)
    for first, block in _column_blocks(mats, rows, col_step):
        cols = np.arange(first, first + block.shape[1])
        k = keep[cols]
        if k.any():
            z = (block[:, k] - mean[cols][k]) / sd[cols][k]
            gram += z @ z.T
    w, u = np.linalg.eigh(gram)
    order = np.argsort(w)[::-1][:min(MAX_PCA_DIMS, kept)]
    return u[:, order] * np.sqrt(np.maximum(w[order], 0))


def kmeans_labels(features, k: int, seed: int = 0, n_init: int = N_INIT, max_iter: int = 100, *,
                  chunk_rows: int | None = None) -> np.ndarray:
    """Cluster labels (N,) of standardised, PCA-reduced features (`reduced_features`): the best (lowest inertia)
    of n_init runs of Lloyd's algorithm from a k-means++ seeding (Arthur & Vassilvitskii 2007), each run until
    no assignment changes."""
    x = _as_array(features)
    reduced = reduced_features([x.reshape(len(x), -1)], chunk_rows=chunk_rows)
    if reduced is None:
        return np.zeros(len(x), dtype=np.int64)
    return kmeans_reduced(reduced, k, seed, n_init, max_iter)


def _squared_distances(x: np.ndarray, centres: np.ndarray, x_sq: np.ndarray | None = None) -> np.ndarray:
    """(N, K) squared Euclidean distances ‖x‖² − 2 x·c + ‖c‖² (clipped at 0): one (N, D) × (D, K) product
    instead of K passes over x (and a row-wise argmin, faster than one down the columns of a (K, N) array);
    `x_sq` is ‖x‖² per row when the caller has it."""
    if x_sq is None:
        x_sq = np.einsum("ij,ij->i", x, x)
    out = x @ centres.T
    out *= -2.0
    out += x_sq[:, None]
    out += np.einsum("ij,ij->i", centres, centres)[None, :]
    np.maximum(out, 0.0, out=out)
    return out


def kmeans_reduced(x: np.ndarray, k: int, seed: int = 0, n_init: int = N_INIT, max_iter: int = 100) -> np.ndarray:
    """k-means (as `kmeans_labels` describes) of features already reduced, float64 (N, ≤ 32). The distances and
    the centres' sums are matrix products on one BLAS thread (`_one_blas_thread`: BLAS's own thread pool waits
    for a core when other processes hold them); at Movies' 41k training films this is about ten times faster
    than one elementwise pass per centre. The k-means++ draws are torch's seeded generator's."""
    import torch
    x = np.ascontiguousarray(x, dtype=np.float64)  # (N, D)
    n, dim = x.shape
    k = max(1, min(k, n))
    g = torch.Generator().manual_seed(seed)
    best, best_inertia = None, math.inf
    with _one_blas_thread():
        x_sq = np.einsum("ij,ij->i", x, x)
        for _ in range(n_init):
            centres = x[[int(torch.randint(n, (1,), generator=g))]]  # k-means++: each next centre drawn ∝ D(x)²
            d2 = _squared_distances(x, centres, x_sq)[:, 0]
            for _ in range(1, k):
                if float(d2.sum()) <= 0:
                    break
                centres = np.concatenate([centres, x[[int(torch.multinomial(torch.from_numpy(d2), 1, generator=g))]]])
                d2 = np.minimum(d2, _squared_distances(x, centres[-1:], x_sq)[:, 0])
            labels = _squared_distances(x, centres, x_sq).argmin(1)
            for _ in range(max_iter):
                counts = np.bincount(labels, minlength=len(centres)).astype(np.float64)
                onehot = np.zeros((len(centres), n))
                onehot[labels, np.arange(n)] = 1.0
                sums = onehot @ x
                centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
                new = _squared_distances(x, centres, x_sq).argmin(1)
                if np.array_equal(new, labels):
                    break
                labels = new
            diff = x - centres[labels]
            inertia = float(np.einsum("ij,ij->", diff, diff))
            if inertia < best_inertia:
                best, best_inertia = labels, inertia
    return best.astype(np.int64)


def default_clusters(n: int, n_classes: int) -> int:
    """floor(sqrt(N / (2·|Y|))) clipped to [2, 10] (see the module docstring)."""
    return int(min(10, max(2, math.floor(math.sqrt(n / (2 * max(n_classes, 1)))))))


def discrete_target(target, task: str, label: int | None = None) -> np.ndarray:
    """Y as integers: classes (single-label), quantile bins (regression), one chosen label (multi-label)."""
    t = np.asarray(target.numpy() if hasattr(target, "numpy") else target)
    if task == "single-label":
        return t.astype(np.int64)
    if task == "regression":
        edges = np.quantile(t, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1])
        return np.searchsorted(edges, t, side="right").astype(np.int64)
    if task == "multi-label":
        if label is None:
            raise ValueError("a multi-label target has no single Y: choose one label (--label NAME)")
        return (t[:, label] > 0.5).astype(np.int64)
    raise ValueError(f"unknown task {task!r}")


@dataclass(frozen=True)
class PairPID:
    """The PID of one pair of modalities (or modality groups "a+b") of a dataset, with its discretisation."""
    pair: tuple[str, str]
    result: PIDResult
    clusters: tuple[int, int]  # k asked for each side
    features: tuple[str, str]  # how each side was turned into a vector
    bootstrap_sd: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"pair": list(self.pair), **self.result.components(), **{k: v for k, v in asdict(self.result).items()
                if k not in ("redundancy", "unique_1", "unique_2", "synergy")},
                "clusters": list(self.clusters), "features": list(self.features), "bootstrap_sd": self.bootstrap_sd}


_FEATURE_NOTE = {"vector": "as is", "image": "flattened", "sequence": "mean+std of valid frames",
                 "text": f"bag of hashed ids ({TEXT_BUCKETS} buckets)"}


def all_pairs(names: tuple[str, ...]) -> list[tuple[str, str]]:
    return list(itertools.combinations(names, 2))


def dataset_pid(bundle, pairs: list[tuple[str, str]] | None = None, *,
                splits: tuple[str, ...] = ("train", "val", "test"),
                clusters: int | None = None, label: int | None = None, seed: int = 0, n_boot: int = 0,
                should_stop=None, progress=None, chunk_rows: int | None = None) -> list[PairPID]:
    """The PID of each pair (default: every pair of modalities) over the samples of `splits` (concatenated)
    where both sides are present. A side "a+b" is the group of modalities a and b. The features are read in
    chunks of `chunk_rows` samples (default: about CHUNK_BYTES of float64 each; see the memory note above the
    discretisation); the chunk size changes nothing but rounding.

    A side's clusters depend only on the side, the samples used and k, so a side shared by several pairs over
    the same samples (every pair of M modalities when none is missing) is reduced and clustered once, not once
    per pair: its labels (N int64) are kept until the last pair that needs them."""
    info = bundle.info
    names = info.modality_names
    pairs = list(pairs) if pairs else all_pairs(names)
    use = [bundle.splits[s] for s in splits if s in bundle.splits]
    target = np.concatenate([np.asarray(s.target.numpy()) for s in use])
    y_all = discrete_target(target, info.task, label)
    mask = np.concatenate([s.mask.numpy() for s in use])
    feats: dict[str, _Rows] = {}

    def features(name: str) -> _Rows:
        """Vectors and images as they are stored (views, no copy); sequences and texts summarised once."""
        if name not in feats:
            spec = info.spec(name)
            if spec.kind in ("vector", "image"):
                blocks = [_lazy(s.inputs[name]) for s in use]
            else:
                blocks = [modality_features(s.inputs[name], spec.kind, s.lengths.get(name), chunk_rows=chunk_rows)
                          for s in use]
            feats[name] = _Rows(blocks)
        return feats[name]

    def side(group: str) -> tuple[np.ndarray, str]:
        """Where the side is present, and how its features are made."""
        members = group.split("+")
        for m in members:
            if m not in names:
                raise ValueError(f"unknown modality {m!r}; the dataset has {', '.join(names)}")
        cols = [names.index(m) for m in members]
        note = " + ".join(f"{m}: {_FEATURE_NOTE[info.spec(m).kind]}" for m in members)
        return mask[:, cols].all(1), note

    def samples(g1: str, g2: str) -> np.ndarray:
        """The samples where both sides are present (a boolean mask)."""
        return side(g1)[0] & side(g2)[0]

    # every pair's k first (no sample index kept: N/8 bytes of bitmap per pair): a side's clustering is keyed by
    # (side, k, the samples' bitmap), and counted, so its labels go as soon as the last pair using them is done
    plans, uses = [], {}
    for g1, g2 in pairs:
        both = samples(g1, g2)
        k = clusters or default_clusters(int(both.sum()), len(np.unique(y_all[both])))
        at = np.packbits(both).tobytes()
        keys = ((g1, k, at), (g2, k, at))
        for key in keys:
            uses[key] = uses.get(key, 0) + 1
        plans.append(((g1, g2), k, keys))
    kept: dict[tuple, np.ndarray] = {}

    def labels_of(key: tuple, rows: np.ndarray) -> np.ndarray:
        group, k, _ = key
        if key not in kept:
            reduced = reduced_features([features(m) for m in group.split("+")], rows, chunk_rows=chunk_rows)
            kept[key] = (np.zeros(len(rows), dtype=np.int64) if reduced is None else
                         kmeans_reduced(reduced, k, seed))
        labels = kept[key]
        uses[key] -= 1
        if not uses[key]:  # no later pair needs them
            del kept[key]
        return labels

    out = []
    for i, (pair, k, (key1, key2)) in enumerate(plans):
        check_stop(should_stop)
        rows = np.nonzero(samples(*pair))[0]
        y = y_all[rows]
        l1 = labels_of(key1, rows)
        check_stop(should_stop)
        l2 = labels_of(key2, rows)
        check_stop(should_stop)
        res = pid_from_labels(l1, l2, y)
        sd = pid_bootstrap(l1, l2, y, n_boot, seed, should_stop) if n_boot > 1 else {}
        out.append(PairPID(pair=pair, result=res, clusters=(k, k), features=(side(pair[0])[1], side(pair[1])[1]),
                           bootstrap_sd=sd))
        if progress is not None:
            progress(i + 1, len(pairs))
    return out


__all__ = ["CHUNK_BYTES", "PIDResult", "PairPID", "all_pairs", "dataset_pid", "default_clusters", "discrete_target",
           "joint_counts", "kmeans_labels", "kmeans_reduced", "min_joint_information", "modality_features",
           "pid_bootstrap", "pid_from_joint", "pid_from_labels", "reduced_features"]
