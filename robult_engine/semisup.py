"""The semi-supervised protocol (docs/method.md): a stratified, seeded labeled subset, and batches that always
hold labeled samples (labeled ones are oversampled)."""
from __future__ import annotations

import math

import torch


def _strata(target: torch.Tensor, task: str) -> torch.Tensor:
    if task == "single-label":
        return target.long()
    if task == "regression":
        return (target >= 0).long()
    # multi-label: stratify by the first positive class (rows without any positive form their own stratum)
    t = target > 0.5
    first = t.float().argmax(1)
    return torch.where(t.any(1), first, torch.full_like(first, t.shape[1]))


def labeled_indices(target: torch.Tensor, task: str, fraction: float, seed: int) -> torch.Tensor:
    """Sorted int64 indices of the samples that keep their labels: `fraction` of each stratum (at least one
    per stratum), drawn with a generator seeded by `seed`. The same inputs give the same indices."""
    n = target.shape[0]
    if fraction >= 1.0:
        return torch.arange(n)
    strata = _strata(target, task)
    g = torch.Generator().manual_seed(int(seed))
    chosen = []
    for s in torch.unique(strata).tolist():
        members = (strata == s).nonzero().squeeze(1)
        k = max(1, int(round(fraction * len(members))))
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(chosen).sort().values


class SemiSupervisedSampler:
    """Global batches of `batch_size` samples, `labeled_per_batch` of them labeled (cycling through the labeled
    set, which is oversampled) and the rest unlabeled (one pass over the unlabeled set per epoch). Each batch is
    shuffled, so a slice of it (one process's share under torchrun) mixes both kinds. Order depends only on
    (seed, epoch): an explicit generator, never the global RNG."""

    def __init__(self, n: int, labeled: torch.Tensor, batch_size: int, labeled_per_batch: int, seed: int) -> None:
        self.n = n
        self.labeled = labeled.long()
        is_lab = torch.zeros(n, dtype=torch.bool)
        is_lab[self.labeled] = True
        self.unlabeled = (~is_lab).nonzero().squeeze(1)
        self.batch_size = batch_size
        self.seed = seed
        if len(self.unlabeled) == 0:  # fully supervised: plain shuffled batches of labeled samples
            self.n_lab = batch_size
        else:
            self.n_lab = min(labeled_per_batch, batch_size - 1)
        n_unl = batch_size - self.n_lab
        pool = len(self.unlabeled) if len(self.unlabeled) else len(self.labeled)
        per = n_unl if len(self.unlabeled) else self.n_lab
        self.steps_per_epoch = max(1, math.ceil(pool / per))

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        steps = self.steps_per_epoch
        lab = self._cycle(self.labeled, steps * self.n_lab, g)
        unl = self._cycle(self.unlabeled, steps * (self.batch_size - self.n_lab), g) if len(self.unlabeled) else None
        out = []
        for s in range(steps):
            parts = [lab[s * self.n_lab:(s + 1) * self.n_lab]]
            if unl is not None:
                k = self.batch_size - self.n_lab
                parts.append(unl[s * k:(s + 1) * k])
            b = torch.cat(parts)
            out.append(b[torch.randperm(len(b), generator=g)])
        return out

    @staticmethod
    def _cycle(idx: torch.Tensor, count: int, g: torch.Generator) -> torch.Tensor:
        reps = math.ceil(count / max(len(idx), 1))
        return torch.cat([idx[torch.randperm(len(idx), generator=g)] for _ in range(reps)])[:count]
