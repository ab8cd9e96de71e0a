"""Exact Shapley attribution over modalities, from the per-modality logits (no re-encoding).

The game: the players are the M modalities; the value of a coalition A is what the model says about the
explained output with only the modalities of A present:
- single-label: v(A) = log p_A(c), the log-probability of class c under the subset prediction of A (the mean
  of the present modalities' logits, `models.robult.combine_logits`), with c the predicted class of the full
  prediction (default), the true class, or a chosen class;
- multi-label: v(A) = log σ(z_A,c) of one label c (the highest-scoring label of the full prediction by
  default, the chosen one otherwise);
- regression: v(A) = the predicted score of A.
v(∅) is the train-split prior: the log class frequency (Laplace-smoothed, (n_c + 1) / (N + C), so a class the
train split lacks is not −∞), the log label frequency (multi-label), or the train mean (regression).

φ_i = Σ_{A ⊆ M∖{i}} |A|! (M − |A| − 1)! / M! · (v(A ∪ {i}) − v(A)). All 2^M coalitions are recombinations
of the cached (N, M, C) logits, so φ for N samples is one (N, 2^M, M) × (N, M, C) product, one log-softmax and one
(N, 2^M) × (2^M, M) product with a fixed coefficient matrix. A modality absent from a sample's data counts as
absent in every coalition (v(A) = v(A ∩ present)); it is then a dummy player and gets φ = 0.
Properties (tested): efficiency Σ_i φ_i = v(all) − v(∅), symmetry, dummy, and equality with a naive
implementation that runs `RobultModel.forward` with each coalition's mask.
A peer's model (ShaSpec, MMIN: docs/method.md, "Peers") predicts a subset with its own head: its cached table of
every subset's logits (`EncodedSplit.subset_table`, passed as `subset_table`) gives v(A) instead of the mean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import check_stop
from ..evaluation import EncodedSplit


def coalition_masks(m: int) -> torch.Tensor:
    """(2^M, M) bool: row b is the coalition whose members are the set bits of b (row 0 is ∅)."""
    b = torch.arange(2 ** m)[:, None]
    return (b >> torch.arange(m)[None, :]) & 1 == 1


def shapley_coefficients(m: int) -> torch.Tensor:
    """(2^M, M) float64 K with φ = v @ K for v (…, 2^M) over the coalitions of `coalition_masks`:
    K[B, i] = w(|B| − 1) if i ∈ B, −w(|B|) otherwise, with w(s) = s! (M − s − 1)! / M!."""
    masks = coalition_masks(m)
    size = masks.sum(1)  # (2^M,)

    def w(s: torch.Tensor) -> torch.Tensor:
        return torch.tensor([math.factorial(int(k)) * math.factorial(m - int(k) - 1) / math.factorial(m)
                             if 0 <= k <= m - 1 else 0.0 for k in s.tolist()], dtype=torch.float64)

    return torch.where(masks, w(size - 1)[:, None], -w(size)[:, None])


def train_prior(train_target: torch.Tensor, task: str, num_outputs: int) -> torch.Tensor:
    """v(∅) per output: (C,) log class frequencies (single-label), (L,) log label frequencies (multi-label),
    both Laplace-smoothed; (1,) train mean (regression)."""
    if task == "single-label":
        counts = torch.bincount(train_target.long(), minlength=num_outputs).double()
        return torch.log((counts + 1) / (counts.sum() + num_outputs))
    if task == "multi-label":
        t = train_target.double()
        return torch.log((t.sum(0) + 1) / (t.shape[0] + 2))
    if task == "regression":
        return train_target.double().mean().reshape(1)
    raise ValueError(f"unknown task {task!r}")


@dataclass(frozen=True)
class Attribution:
    """φ for N samples: phi (N, M); explained output index per sample; v(∅) and v(all modalities)."""
    phi: torch.Tensor  # (N, M) float64
    output: torch.Tensor  # (N,) int64: the class / label explained (0 for regression)
    v_empty: torch.Tensor  # (N,) float64
    v_full: torch.Tensor  # (N,) float64
    values: torch.Tensor  # (N, 2^M) float64 v of every coalition (order of coalition_masks)


def _table_logits(subset_table: torch.Tensor, eff: torch.Tensor) -> torch.Tensor:
    """The rows of a peer's subset table (N, 2^M, C) for the masks eff (N, S, M) bool -> (N, S, C) float64."""
    idx = (eff.long() << torch.arange(eff.shape[-1], device=eff.device)).sum(-1)  # (N, S), as coalition_masks
    return subset_table.double().gather(1, idx[..., None].expand(-1, -1, subset_table.shape[2]))


def coalition_values(logits_mod: torch.Tensor, present: torch.Tensor, prior: torch.Tensor, task: str,
                     output: torch.Tensor, subset_table: torch.Tensor | None = None) -> torch.Tensor:
    """v for every coalition: (N, 2^M) float64. logits_mod: (N, M, C); present: (N, M) bool (the data's mask);
    prior: as `train_prior`; output: (N,) int64, the class / label explained (ignored for regression);
    subset_table: (N, 2^M, C), a peer's prediction of every subset (then used instead of the mean)."""
    n, m, _ = logits_mod.shape
    masks = coalition_masks(m).to(logits_mod.device)  # (S, M)
    eff = (masks[None, :, :] & present[:, None, :]).double()  # (N, S, M) coalition ∩ present
    k = eff.sum(-1)  # (N, S) members present
    if subset_table is not None:
        logits = _table_logits(subset_table.to(logits_mod.device), eff.bool())  # (N, S, C)
    else:
        logits = torch.einsum("nsm,nmc->nsc", eff, logits_mod.double()) / k.clamp(min=1)[..., None]  # (N, S, C)
    prior = prior.double().to(logits.device)
    if task == "single-label":
        v = torch.log_softmax(logits, -1).gather(2, output.view(n, 1, 1).expand(n, logits.shape[1], 1))[..., 0]
        v0 = prior[output]
    elif task == "multi-label":
        z = logits.gather(2, output.view(n, 1, 1).expand(n, logits.shape[1], 1))[..., 0]  # (N, S)
        v = torch.nn.functional.logsigmoid(z)
        v0 = prior[output]
    elif task == "regression":
        v = logits[..., 0]
        v0 = prior[0].expand(n)
    else:
        raise ValueError(f"unknown task {task!r}")
    return torch.where(k > 0, v, v0[:, None])  # an empty effective coalition has the prior's value


def explained_output(logits_mod: torch.Tensor, present: torch.Tensor, task: str, target: torch.Tensor | None,
                     explain: str | int = "predicted", subset_table: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) int64: which class / label v(A) is about. explain: "predicted" (the full prediction's arg-max),
    "true" (the target; single-label only) or a class / label index."""
    n = logits_mod.shape[0]
    if task == "regression":
        return torch.zeros(n, dtype=torch.long)
    if isinstance(explain, int) and not isinstance(explain, bool):
        if not 0 <= explain < logits_mod.shape[2]:
            raise ValueError(f"class {explain} out of range (the model has {logits_mod.shape[2]} outputs)")
        return torch.full((n,), explain, dtype=torch.long)
    if explain == "true":
        if task != "single-label" or target is None:
            raise ValueError("explaining the true class needs a single-label target")
        return target.long().reshape(n)
    if explain == "predicted" and subset_table is not None:
        return _table_logits(subset_table, present.bool()[:, None, :])[:, 0].argmax(-1)
    if explain == "predicted":
        w = present.to(logits_mod.dtype).unsqueeze(-1)
        full = (logits_mod * w).sum(1) / w.sum(1).clamp(min=1)  # (N, C)
        return full.argmax(-1)
    raise ValueError(f"explain must be 'predicted', 'true' or a class index, got {explain!r}")


def shapley_values(logits_mod: torch.Tensor, present: torch.Tensor, prior: torch.Tensor, task: str, *,
                   target: torch.Tensor | None = None, explain: str | int = "predicted",
                   subset_table: torch.Tensor | None = None) -> Attribution:
    """Exact Shapley values of the M modalities for N samples. logits_mod: (N, M, C) (one sample: (1, M, C));
    present: (N, M) bool; prior: `train_prior(...)`; subset_table: a peer's (N, 2^M, C) subset predictions or
    None; see the module docstring for v."""
    if logits_mod.dim() != 3 or present.shape != logits_mod.shape[:2]:
        raise ValueError(f"expected logits (N, M, C) and a presence mask (N, M), got {tuple(logits_mod.shape)} "
                         f"and {tuple(present.shape)}")
    m = logits_mod.shape[1]
    output = explained_output(logits_mod, present, task, target, explain, subset_table)
    values = coalition_values(logits_mod, present.bool(), prior, task, output, subset_table)  # (N, S)
    phi = values @ shapley_coefficients(m).to(values.device)  # (N, M)
    return Attribution(phi=phi, output=output, v_empty=values[:, 0], v_full=values[:, -1], values=values)


def shapley_sample(enc: EncodedSplit, index: int, prior: torch.Tensor, task: str,
                   explain: str | int = "predicted") -> dict:
    """φ of one cached sample as plain data: {"phi": [M floats], "output": int, "v_empty", "v_full"}."""
    table = enc.subset_table[index:index + 1] if enc.subset_table is not None else None
    a = shapley_values(enc.logits_mod[index:index + 1], enc.mask[index:index + 1], prior, task,
                       target=enc.target[index:index + 1] if task == "single-label" else None, explain=explain,
                       subset_table=table)
    return {"phi": a.phi[0].tolist(), "output": int(a.output[0]), "v_empty": float(a.v_empty[0]),
            "v_full": float(a.v_full[0])}


@dataclass(frozen=True)
class AttributionSummary:
    """Dataset-level attribution: mean |φ_i| (and mean φ_i) per modality, over all samples and per group
    (the true class for single-label; "all" only otherwise)."""
    modalities: list[str]
    explain: str
    n: int
    mean_abs: dict[str, list[float]]  # {"all" | class name: [M floats]}
    mean: dict[str, list[float]]
    count: dict[str, int] = field(default_factory=dict)
    negative_share: list[float] = field(default_factory=list)  # fraction of samples with φ_i < 0, per modality

    def to_dict(self) -> dict:
        return {"modalities": self.modalities, "explain": self.explain, "n": self.n, "count": self.count,
                "mean_abs_phi": {g: dict(zip(self.modalities, v)) for g, v in self.mean_abs.items()},
                "mean_phi": {g: dict(zip(self.modalities, v)) for g, v in self.mean.items()},
                "negative_share": dict(zip(self.modalities, self.negative_share))}


def attribution_summary(enc: EncodedSplit, prior: torch.Tensor, names: tuple[str, ...], task: str,
                        class_names: tuple[str, ...] = (), *, explain: str | int = "predicted",
                        chunk: int = 1024, should_stop=None, progress=None) -> AttributionSummary:
    """Mean |φ_i| per modality and per true class over a split's cached encodings, in chunks of samples
    (`progress(done, total)` after each, `should_stop()` before each: raises `Cancelled`)."""
    n = len(enc.target)
    phis = []
    for start in range(0, n, chunk):
        check_stop(should_stop)
        sl = slice(start, min(start + chunk, n))
        a = shapley_values(enc.logits_mod[sl], enc.mask[sl], prior, task,
                           target=enc.target[sl] if task == "single-label" else None, explain=explain,
                           subset_table=enc.subset_table[sl] if enc.subset_table is not None else None)
        phis.append(a.phi)
        if progress is not None:
            progress(sl.stop, n)
    phi = torch.cat(phis) if phis else torch.zeros(0, len(names), dtype=torch.float64)
    groups = {"all": torch.ones(n, dtype=torch.bool)}
    if task == "single-label":
        for c, cname in enumerate(class_names):
            sel = enc.target.long() == c
            if sel.any():
                groups[cname] = sel
    mean_abs = {g: phi[s].abs().mean(0).tolist() if s.any() else [float("nan")] * len(names)
                for g, s in groups.items()}
    mean = {g: phi[s].mean(0).tolist() if s.any() else [float("nan")] * len(names) for g, s in groups.items()}
    neg = (phi < 0).double().mean(0).tolist() if n else [float("nan")] * len(names)
    return AttributionSummary(modalities=list(names), explain=str(explain), n=n, mean_abs=mean_abs, mean=mean,
                              count={g: int(s.sum()) for g, s in groups.items()}, negative_share=neg)


__all__ = ["Attribution", "AttributionSummary", "attribution_summary", "coalition_masks", "coalition_values",
           "explained_output", "shapley_coefficients", "shapley_sample", "shapley_values", "train_prior"]
