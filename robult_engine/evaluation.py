"""Evaluation over every non-empty modality subset (docs/method.md, "Evaluation").

Each modality is encoded once per sample; the 2^M − 1 subset predictions are recombinations of the
per-modality logits (the prediction for A is the mean of c([U^i, Z^i]) over i ∈ A), so evaluating all
subsets costs little more than one full pass. A model whose subset head is a peer's (ShaSpec, MMIN:
models/robult.py) predicts a subset with its own head, which is not such a recombination: its encoding holds
the prediction of every subset, computed from the cached encoder outputs (`EncodedSplit.subset_table`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .data.base import SplitData, make_batch
from .metrics import compute_metrics, primary_metric, score_of
from .models.robult import RobultModel, combine_logits, subset_index, subset_masks


def modality_subsets(names: tuple[str, ...] | list[str]) -> list[tuple[str, tuple[bool, ...]]]:
    """All non-empty subsets as (name, mask): singles first, the full set last; names joined by '+'."""
    m = len(names)
    out = []
    for k in range(1, m + 1):
        for combo in itertools.combinations(range(m), k):
            mask = tuple(i in combo for i in range(m))
            out.append(("+".join(names[i] for i in combo), mask))
    return out


@dataclass
class EncodedSplit:
    """Per-sample, per-modality outputs of one pass over a split (all on the CPU)."""
    logits_mod: torch.Tensor  # (N, M, C)
    z: torch.Tensor  # (N, M, d_z)
    u: torch.Tensor  # (N, M, d_u)
    rec_err: torch.Tensor  # (N, M) mean squared error of r_i([U^i, Z^i]) against H^i
    mask: torch.Tensor  # (N, M) bool, the data's presence mask
    target: torch.Tensor
    # (N, 2^M, C) the prediction of every subset (row k: the modalities of the bits of k, `subset_masks`) for a
    # model with a peer subset head; None for the mean of per-modality logits (the recombination of logits_mod)
    subset_table: torch.Tensor | None = None


def autocast_ctx(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def encode_split(model: RobultModel, split: SplitData, batch_size: int = 512,
                 device: torch.device | str = "cpu", with_latents: bool = True) -> EncodedSplit:
    device = torch.device(device)
    was_training = model.training
    model.eval()
    lm, zs, us, errs, tables = [], [], [], [], []
    peer = getattr(model, "subset_head", "mean") != "mean"
    masks = subset_masks(split.mask.shape[1]) if peer else None
    try:
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            batch = make_batch(split, idx).to(device)
            with autocast_ctx(device):
                out = model(batch.inputs, batch.lengths, batch.mask, with_reconstruction=with_latents)
            lm.append(out.logits_mod.float().cpu())
            if peer:  # every subset through the peer's head, from this batch's encoder outputs
                with autocast_ctx(device):
                    tables.append(model.predict_subsets(out.h, out.z, out.u, masks).float().cpu())
            if with_latents:
                zs.append(out.z.float().cpu())
                us.append(out.u.float().cpu())
                errs.append(out.rec_error().cpu())
    finally:
        model.train(was_training)
    n, m = len(split), split.mask.shape[1]
    empty = torch.zeros(n, m, 0)
    return EncodedSplit(
        logits_mod=torch.cat(lm), z=torch.cat(zs) if zs else empty, u=torch.cat(us) if us else empty,
        rec_err=torch.cat(errs) if errs else torch.zeros(n, m), mask=split.mask.clone(), target=split.target,
        subset_table=torch.cat(tables) if tables else None,
    )


def subset_logits(enc: EncodedSplit, subset_mask: tuple[bool, ...] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, C), rows (N,) bool where at least one modality of the subset is present in the data).

    `subset_mask` is one subset for every sample (M,) or a mask per sample (N, M), e.g. a missing-modality
    mechanism's draw (robult_engine.missing); either way it is combined with the data's own mask."""
    sm = torch.as_tensor(subset_mask, dtype=torch.bool)
    sm = sm[None, :] if sm.dim() == 1 else sm  # (1, M) or (N, M)
    eff = enc.mask & sm  # (N, M)
    if enc.subset_table is not None:  # a peer's head: look each row's subset up (row 0, no modality: zeros)
        idx = subset_index(eff)  # (N,)
        logits = enc.subset_table.gather(1, idx.view(-1, 1, 1).expand(-1, 1, enc.subset_table.shape[2]))[:, 0]
        return logits, eff.any(1)
    return combine_logits(enc.logits_mod, eff), eff.any(1)


def metrics_from_encoded(enc: EncodedSplit, names: tuple[str, ...], task: str) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name, sm in modality_subsets(names):
        logits, rows = subset_logits(enc, sm)
        if rows.any():
            table[name] = compute_metrics(logits[rows], enc.target[rows], task)
    return table


def evaluate_subsets(model: RobultModel, split: SplitData, names: tuple[str, ...], task: str,
                     batch_size: int = 512, device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """{subset name: {metric: value}} for every non-empty subset, from one encoding pass."""
    enc = encode_split(model, split, batch_size, device, with_latents=False)
    return metrics_from_encoded(enc, names, task)


def mean_over_subsets(table: dict[str, dict[str, float]], task: str) -> dict[str, float]:
    """Mean of every metric over the subsets (the robustness summary)."""
    keys = sorted({k for row in table.values() for k in row})
    return {k: float(torch.tensor([row[k] for row in table.values() if k in row]).nanmean()) for k in keys}


def selection_score(table: dict[str, dict[str, float]], task: str) -> float:
    """Early stopping / model selection: mean over subsets of the primary metric, higher is better."""
    if not table:
        return float("-inf")
    return float(sum(score_of(row, task) for row in table.values()) / len(table))


def transfer_mismatches(trained, data) -> list[str]:
    """What keeps a model trained on the dataset `trained` (a DatasetInfo) from being evaluated on `data`: the
    modality names (and order), each modality's kind and shape, the task and the classes. [] when it can.

    Shapes that the encoders do not depend on are not compared: a sequence's length T_max and a text's L_max
    (both are padded and masked); a vector's width, a sequence's feature width and an image's (C, H, W) are."""
    def names(xs, k=12):
        xs = list(xs)
        return ", ".join(xs[:k]) + (f", … ({len(xs)} in all)" if len(xs) > k else "")
    out = []
    if tuple(trained.modality_names) != tuple(data.modality_names):
        out.append(f"modalities: trained on ({names(trained.modality_names)}), the data has "
                   f"({names(data.modality_names)})")
    else:
        for a, b in zip(trained.modalities, data.modalities):
            if a.kind != b.kind:
                out.append(f"modality {a.name!r}: kind {a.kind} in training, {b.kind} in the data")
                continue
            sa, sb = tuple(a.shape), tuple(b.shape)
            if a.kind == "sequence":
                sa, sb = sa[-1:], sb[-1:]
                what = "feature width"
            elif a.kind == "text":
                continue
            else:
                what = "shape"
            if sa != sb:
                out.append(f"modality {a.name!r}: {what} {sa} in training, {sb} in the data")
    if trained.task != data.task:
        out.append(f"task: {trained.task} in training, {data.task} in the data")
    elif trained.task != "regression" and tuple(trained.class_names) != tuple(data.class_names):
        out.append(f"classes: {len(trained.class_names)} in training ({names(trained.class_names)}), "
                   f"{len(data.class_names)} in the data ({names(data.class_names)})")
    return out


__all__ = ["EncodedSplit", "encode_split", "evaluate_subsets", "mean_over_subsets", "metrics_from_encoded",
           "modality_subsets", "primary_metric", "selection_score", "subset_logits", "transfer_mismatches"]
