"""How good Robult's soft weights κ are, measured against the true labels of the unlabeled training samples
(benchmarks know them; the model never sees them). The method's stated break condition is noisy pseudo-labels
early in training: these two numbers per epoch show whether it happens (docs/method.md, "Why, not only who
wins")."""
from __future__ import annotations

import torch


@torch.no_grad()
def kappa_pair_precision(weights: torch.Tensor, classes: torch.Tensor, labeled: torch.Tensor,
                         anchor_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the positive weight the soft-PU loss gives to UNLABELED candidates (pairs j ≠ k with k unlabeled), how
    much falls on pairs whose true classes match. Returns (Σ w, Σ w·1[y_j = y_k]) over those pairs as 0-d
    tensors on the weights' device, so the steps of an epoch are summed there and read once (no host sync in
    the training step).

    weights: (A, N) soft-PU weights w_jk of anchor j (row `anchor_rows[j]` of the N samples) for candidate k;
    classes: (N,) true classes; labeled: (N,) bool; anchor_rows: (A,)."""
    w = weights.float() * (~labeled).float()[None, :]  # unlabeled candidates only (a new tensor)
    w[torch.arange(len(anchor_rows), device=w.device), anchor_rows] = 0.0  # a sample with itself says nothing
    same = classes[anchor_rows][:, None] == classes[None, :]
    return w.sum(), torch.where(same, w, 0.0).sum()


def kappa_auc(kappas: list[torch.Tensor], right: list[torch.Tensor]) -> float:
    """The AUC of κ as a score for "this unlabeled sample's pseudo-label is its true class": the probability that
    a right pseudo-label gets a higher κ than a wrong one (ties count half). NaN when either group is empty.
    kappas, right: lists of (n_b,) tensors collected over an epoch (floats, bools)."""
    if not kappas:
        return float("nan")
    k = torch.cat([t.float().reshape(-1).cpu() for t in kappas])
    r = torch.cat([t.bool().reshape(-1).cpu() for t in right])
    n_pos, n_neg = int(r.sum()), int((~r).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U with average ranks for ties
    order = torch.argsort(k)
    ks = k[order]
    ranks = torch.empty_like(k, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(ks, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2  # the mean rank of each run of ties
    ranks[order] = avg[inverse]
    u = float(ranks[r].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)
