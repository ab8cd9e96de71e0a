"""Calibration of the prediction of every modality subset: ECE, adaptive ECE, Brier score, NLL, reliability
bins, and per-subset temperature scaling stored beside the checkpoint.

Everything is computed from one encoding pass (`evaluation.encode_split`): the prediction of subset A is the
mean of the present modalities' logits (`evaluation.subset_logits`), exactly what `robult eval` scores.

Definitions (confidence = the largest class probability, correct = the arg-max is the target):
- ECE (Guo et al. 2017): 15 equal-width confidence bins (lo, hi]; Σ_b n_b/N · |accuracy_b − confidence_b|.
- Adaptive ECE (Nixon et al. 2019, "Measuring calibration in deep learning"): the same sum over 15 equal-mass
  bins (the samples sorted by confidence and cut into 15 groups of nearly equal size), so bins are not
  dominated by the crowded high-confidence end.
- Brier score: mean over samples of Σ_c (p_c − 1[y = c])² (0 is perfect, 2 the worst).
- NLL: mean cross-entropy in nats.

Tasks: single-label as above. Multi-label: per-label binary calibration — every (sample, label) pair is one
binary prediction with probability σ(z); ECE and the reliability bins use the confidence max(σ, 1 − σ) of the
thresholded decision, NLL is the mean binary cross-entropy and Brier the mean of (σ(z) − y)² over pairs; one
temperature per subset divides every label's logit. Regression has no class probabilities: `NotApplicable`.

Temperature scaling (Guo et al. 2017): per subset one scalar T > 0, logits / T, fitted on the validation split
by minimising the NLL over log T with L-BFGS (strong-Wolfe line search; the NLL is convex in 1/T, so the
stationary point found is the minimum), constrained to [0.05, 20]. A subset whose validation predictions are
all correct keeps T = 1: its NLL falls without bound as T → 0, so there is no minimum to fit (with at least one
mistake the NLL grows without bound as T → 0 and the minimum is finite).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..evaluation import EncodedSplit, encode_split, modality_subsets, subset_logits

N_BINS = 15
T_MIN, T_MAX = 0.05, 20.0
FORMAT = "robult-calibration"
VERSION = 1


class NotApplicable(ValueError):
    """Calibration does not apply to this task (regression); the message says why."""


class CalibrationError(ValueError):
    """A calibration side file is missing, damaged or was fitted for another checkpoint (stale)."""


@dataclass(frozen=True)
class ReliabilityBins:
    """Reliability-diagram data: per equal-width bin, mean confidence, accuracy and count (NaN where empty)."""
    edges: list[float]  # n_bins + 1 bin edges on [0, 1]
    confidence: list[float]
    accuracy: list[float]
    count: list[int]


@dataclass(frozen=True)
class SubsetCalibration:
    subset: str
    n: int  # predictions scored (samples; (sample, label) pairs for multi-label)
    accuracy: float
    mean_confidence: float
    ece: float
    adaptive_ece: float
    brier: float
    nll: float
    temperature: float = 1.0  # the temperature applied to the logits (1.0: none)
    reliability: ReliabilityBins | None = None

    def to_dict(self, with_bins: bool = True) -> dict:
        d = asdict(self)
        if not with_bins:
            d.pop("reliability")
        return d


# --- the metrics on (N, C) logits ------------------------------------------------------------------------


def _as_classification(logits: torch.Tensor, target: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (K, C) float64, target (K,) int64) of the task's predictions; multi-label becomes K = N·L binary
    predictions with two-class logits [0, z] (their softmax is [1 − σ(z), σ(z)])."""
    if task == "single-label":
        return logits.double(), target.long()
    if task == "multi-label":
        z = logits.double().reshape(-1)  # (N·L,)
        return torch.stack([torch.zeros_like(z), z], dim=1), target.reshape(-1).long()
    raise NotApplicable("calibration needs class probabilities; a regression model outputs a point score, so ECE, "
                        "Brier and temperature scaling do not apply")


def reliability_bins(conf: torch.Tensor, correct: torch.Tensor, n_bins: int = N_BINS) -> ReliabilityBins:
    """Equal-width bins (lo, hi] over [0, 1] (a confidence of exactly 0 falls in the first). conf, correct: (K,)."""
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf.double(), edges[1:-1], right=False)  # edges[i-1] < c <= edges[i] -> bin i
    count = torch.bincount(idx, minlength=n_bins).double()
    s_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf.double())
    s_acc = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct.double())
    nz = count > 0
    nan = torch.full((n_bins,), float("nan"), dtype=torch.float64)
    return ReliabilityBins(edges=edges.tolist(), confidence=torch.where(nz, s_conf / count.clamp(min=1), nan).tolist(),
                           accuracy=torch.where(nz, s_acc / count.clamp(min=1), nan).tolist(),
                           count=[int(c) for c in count.tolist()])


def expected_calibration_error(conf: torch.Tensor, correct: torch.Tensor, n_bins: int = N_BINS) -> float:
    """ECE over equal-width bins. conf, correct: (K,)."""
    if conf.numel() == 0:
        return float("nan")
    bins = reliability_bins(conf, correct, n_bins)
    k = conf.numel()
    return float(sum(n / k * abs(a - c) for n, a, c in zip(bins.count, bins.accuracy, bins.confidence) if n > 0))


def adaptive_calibration_error(conf: torch.Tensor, correct: torch.Tensor, n_bins: int = N_BINS) -> float:
    """ECE over equal-mass bins: the predictions sorted by confidence, cut into n_bins groups whose sizes differ
    by at most one (as numpy.array_split cuts). conf, correct: (K,)."""
    k = conf.numel()
    if k == 0:
        return float("nan")
    order = torch.argsort(conf.double(), stable=True)
    c, a = conf.double()[order], correct.double()[order]
    total = 0.0
    for cb, ab in zip(torch.tensor_split(c, n_bins), torch.tensor_split(a, n_bins)):
        if cb.numel():
            total += cb.numel() / k * abs(float(ab.mean()) - float(cb.mean()))
    return total


def calibration_metrics(logits: torch.Tensor, target: torch.Tensor, task: str, *, temperature: float = 1.0,
                        n_bins: int = N_BINS, subset: str = "") -> SubsetCalibration:
    """All calibration figures of one prediction set. logits: (N, C) (multi-label: (N, L)); target as in the
    dataset; the logits are divided by `temperature` first."""
    lg, t = _as_classification(logits, target, task)
    lg = lg / float(temperature)
    logp = torch.log_softmax(lg, dim=-1)  # (K, C)
    p = logp.exp()
    conf, pred = p.max(dim=-1)
    correct = pred == t
    onehot = F.one_hot(t, lg.shape[1]).double()
    brier = float(((p - onehot) ** 2).sum(-1).mean()) if len(t) else float("nan")
    if task == "multi-label":
        brier /= 2  # the two-class sum counts (σ − y)² twice: report the per-label binary Brier
    return SubsetCalibration(
        subset=subset, n=int(len(t)), accuracy=float(correct.double().mean()) if len(t) else float("nan"),
        mean_confidence=float(conf.mean()) if len(t) else float("nan"),
        ece=expected_calibration_error(conf, correct, n_bins),
        adaptive_ece=adaptive_calibration_error(conf, correct, n_bins),
        brier=brier, nll=float(-logp.gather(1, t[:, None]).mean()) if len(t) else float("nan"),
        temperature=float(temperature), reliability=reliability_bins(conf, correct, n_bins))


# --- temperature scaling -----------------------------------------------------------------------------------


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, task: str, *, t_min: float = T_MIN,
                    t_max: float = T_MAX) -> float:
    """The T in [t_min, t_max] minimising the mean NLL of logits / T (L-BFGS on log T from T = 1, then clipped;
    the NLL is convex in 1/T, so it is unimodal in log T and clipping gives the constrained minimum)."""
    lg, t = _as_classification(logits, target, task)
    if len(t) == 0 or bool((lg.argmax(-1) == t).all()):
        # no mistake to fit on: the NLL then falls without bound as T → 0 (no finite minimum), and a sharpened
        # model would pay for its first test mistake with a huge NLL; keep T = 1
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lg * torch.exp(-log_t), t)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    value = float(torch.exp(log_t.detach()))
    value = float(min(max(value, t_min), t_max)) if math.isfinite(value) else t_max
    # where the minimum lies beyond a bound, L-BFGS stops once the gradient is below its tolerance, short of the
    # bound: keep whichever of the three points has the lowest NLL (the bound, when the minimum lies beyond it)
    with torch.no_grad():
        nll = {tt: float(F.cross_entropy(lg / tt, t)) for tt in (value, t_min, t_max)}
    return min(nll, key=nll.get)


def _subset_rows(enc: EncodedSplit, names: tuple[str, ...]):
    for name, sm in modality_subsets(names):
        logits, rows = subset_logits(enc, sm)
        if rows.any():
            yield name, logits[rows], enc.target[rows]


def fit_temperatures(enc_val: EncodedSplit, names: tuple[str, ...], task: str) -> dict[str, float]:
    """{subset: T} fitted on the (validation) encodings, one scalar per subset, over the rows where the subset
    has a present modality."""
    _as_classification(enc_val.logits_mod[:0, 0], enc_val.target[:0], task)  # NotApplicable for regression
    return {name: fit_temperature(lg, t, task) for name, lg, t in _subset_rows(enc_val, names)}


def calibration_table(enc: EncodedSplit, names: tuple[str, ...], task: str,
                      temperatures: dict[str, float] | None = None,
                      n_bins: int = N_BINS) -> dict[str, SubsetCalibration]:
    """{subset: SubsetCalibration} for every non-empty subset, singles first (the order of `modality_subsets`);
    with `temperatures`, each subset's logits are divided by its T (a subset without one keeps T = 1)."""
    temps = temperatures or {}
    return {name: calibration_metrics(lg, t, task, temperature=temps.get(name, 1.0), n_bins=n_bins, subset=name)
            for name, lg, t in _subset_rows(enc, names)}


def summary_columns(table: dict[str, SubsetCalibration]) -> dict[str, dict[str, float]]:
    """{subset: {ece, adaptive_ece, brier, nll}} plus "mean over subsets" (the columns `compare` stores)."""
    keys = ("ece", "adaptive_ece", "brier", "nll")
    out = {name: {k: getattr(row, k) for k in keys} for name, row in table.items()}
    if out:
        out["mean over subsets"] = {k: sum(r[k] for r in out.values()) / len(out) for k in keys}
    return out


# --- the side file beside the checkpoint -------------------------------------------------------------------


def calibration_path(checkpoint_path: str | os.PathLike) -> Path:
    """`runs/x/best.pt` → `runs/x/best.calibration.json`."""
    p = Path(checkpoint_path)
    return p.with_name((p.stem if p.suffix else p.name) + ".calibration.json")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Calibration:
    """Per-subset temperatures fitted for one checkpoint (the content of its side file)."""
    temperatures: dict[str, float]
    checkpoint_sha256: str
    fingerprint: str  # the data fingerprint stored in the checkpoint
    epoch: int  # the checkpoint's epoch
    task: str
    fitted_on: str = "val"
    n_fit: int = 0
    nll_before: dict[str, float] = field(default_factory=dict)  # validation NLL at T = 1 and at the fitted T
    nll_after: dict[str, float] = field(default_factory=dict)

    def apply(self, logits: torch.Tensor, subset: str) -> torch.Tensor:
        """The subset's logits divided by its temperature (unchanged for a subset without one)."""
        return logits / self.temperatures.get(subset, 1.0)


def fit_calibration(ckpt, enc_val: EncodedSplit, names: tuple[str, ...], task: str) -> Calibration:
    """Fit the per-subset temperatures of a loaded checkpoint on its validation encodings."""
    temps = fit_temperatures(enc_val, names, task)
    before = calibration_table(enc_val, names, task)
    after = calibration_table(enc_val, names, task, temps)
    return Calibration(temperatures=temps, checkpoint_sha256=file_sha256(ckpt.path), fingerprint=ckpt.fingerprint,
                       epoch=int(ckpt.epoch), task=task, fitted_on="val", n_fit=len(enc_val.target),
                       nll_before={k: v.nll for k, v in before.items()}, nll_after={k: v.nll for k, v in after.items()})


def save_calibration(calibration: Calibration, checkpoint_path: str | os.PathLike) -> Path:
    """Write the side file beside the checkpoint (temporary file + rename, as checkpoints are written)."""
    path = calibration_path(checkpoint_path)
    payload = {"format": FORMAT, "version": VERSION, "checkpoint": Path(checkpoint_path).name, **asdict(calibration)}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_calibration(ckpt) -> Calibration:
    """The side file of a loaded checkpoint; `CalibrationError` when it is missing, damaged, or stale (fitted
    for other weights: the checkpoint file's SHA-256, data fingerprint or epoch differ)."""
    path = calibration_path(ckpt.path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no calibration file (fit one with `robult eval {ckpt.path} --calibration`)")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT or raw.get("version") != VERSION:
            raise CalibrationError(f"{path}: not a Robult calibration file of version {VERSION}")
        cal = Calibration(temperatures={str(k): float(v) for k, v in raw["temperatures"].items()},
                          checkpoint_sha256=str(raw["checkpoint_sha256"]), fingerprint=str(raw["fingerprint"]),
                          epoch=int(raw["epoch"]), task=str(raw["task"]), fitted_on=str(raw.get("fitted_on", "val")),
                          n_fit=int(raw.get("n_fit", 0)), nll_before=dict(raw.get("nll_before", {})),
                          nll_after=dict(raw.get("nll_after", {})))
    except CalibrationError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CalibrationError(f"{path}: damaged calibration file ({type(e).__name__}: {e})") from None
    if not all(math.isfinite(t) and t > 0 for t in cal.temperatures.values()):
        raise CalibrationError(f"{path}: damaged calibration file (a temperature is not a positive number)")
    stale = []
    if cal.epoch != ckpt.epoch:
        stale.append(f"fitted for epoch {cal.epoch + 1}, the checkpoint is epoch {ckpt.epoch + 1}")
    if cal.fingerprint != ckpt.fingerprint:
        stale.append(f"fitted on data {cal.fingerprint}, the checkpoint's data is {ckpt.fingerprint}")
    if cal.checkpoint_sha256 != file_sha256(ckpt.path):
        stale.append("the checkpoint file has changed since")
    if stale:
        raise CalibrationError(f"{path}: stale calibration, refused ({'; '.join(stale)})")
    return cal


def checkpoint_calibration_summary(checkpoint_path: str | os.PathLike, bundle, split: str = "test",
                                   trust_code=False) -> dict[str, dict[str, float]]:
    """`summary_columns` of a checkpoint on one split of `bundle` (no temperature): the hook `compare` uses.
    An empty dict for regression. `trust_code` as in `model_from_checkpoint` (compare passes the modules the
    run's own config names: the user's config, whose encoder code the user chose)."""
    if bundle.info.task == "regression":
        return {}
    ckpt = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(ckpt, trust_code=trust_code)
    enc = encode_split(model, bundle.splits[split], with_latents=False)
    return summary_columns(calibration_table(enc, bundle.info.modality_names, bundle.info.task))


__all__ = ["Calibration", "CalibrationError", "NotApplicable", "ReliabilityBins", "SubsetCalibration",
           "adaptive_calibration_error", "calibration_metrics", "calibration_path", "calibration_table",
           "checkpoint_calibration_summary", "expected_calibration_error", "fit_calibration", "fit_temperature",
           "fit_temperatures", "load_calibration", "reliability_bins", "save_calibration", "summary_columns"]
