"""Robult's losses as small pure functions (docs/method.md, "Losses"), plus the prototype memory.

Shapes: B batch, M modalities, C outputs, D latent size, A anchors, N candidate samples.
Every function that reduces takes an optional `denom` so a data-parallel run can divide by the global count
(each process then holds a slice of the global sum, and DDP's gradient averaging times the world size gives
the exact single-process gradient).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------------------
# Supervised loss (docs/method.md, "Supervised loss")
# ----------------------------------------------------------------------------------------------------------


def task_loss(logits: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """Per-sample ℓ: cross-entropy (single-label), BCE summed over the labels (multi-label), L1 (regression).

    Multi-label sums its C binary cross-entropies, so each label weighs like one classification and L_sup keeps
    the scale of the other tasks beside λ_pu L_PU and λ_rec L_rec. (A mean over the labels made the supervised
    gradient C times weaker; with 23 labels the reconstruction term then erased it: docs/results/lrec-multilabel.md.)
    logits: (B, C); target: (B,) int64, (B, C) multi-hot or (B,) float -> (B,)
    """
    if task == "single-label":
        return F.cross_entropy(logits.float(), target, reduction="none")
    if task == "multi-label":
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none").sum(-1)
    if task == "regression":
        return (logits[:, 0].float() - target.float()).abs()
    raise ValueError(f"unknown task {task!r}")


def supervised_loss(logits_mod: torch.Tensor, mod_mask: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                    task: str, logits_fused: torch.Tensor | None = None, fused_valid: torch.Tensor | None = None,
                    denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """L_sup = Σ_j w_j [ ℓ(c_0(S_j), y_j) + (1/|A_j|) Σ_{i∈A_j} ℓ(c([U^i_j, Z^i_j]), y_j) ] / denom.

    With all modalities present |A_j| = M: the (1/M) Σ_i of docs/method.md. `weight` (B,) is 1 for labeled
    samples and 0 otherwise (self-training passes its pseudo-labeled samples with weight 1 too).
    logits_mod: (B, M, C); mod_mask: (B, M) bool; logits_fused: (B, C); fused_valid: (B,) bool.
    denom defaults to Σ_j w_j (the mean over labeled samples).
    """
    b, m = mod_mask.shape
    flat_t = target.repeat_interleave(m, dim=0)  # (B*M, ...)
    per_mod = task_loss(logits_mod.reshape(b * m, -1), flat_t, task).reshape(b, m)  # (B, M)
    mm = mod_mask.to(per_mod.dtype)
    per_sample = (per_mod * mm).sum(1) / mm.sum(1).clamp(min=1.0)  # (B,)
    if logits_fused is not None:
        fv = fused_valid.to(per_mod.dtype) if fused_valid is not None else torch.ones_like(per_sample)
        per_sample = per_sample + task_loss(logits_fused, target, task) * fv
    w = weight.to(per_sample.dtype)
    total = (per_sample * w).sum()
    if denom is None:
        denom = w.sum().clamp(min=1.0)
    return total / denom


def modality_dropout_mask(mask: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Drop each present modality with probability p, keeping at least one per row. mask: (B, M) bool."""
    keep = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device) >= p  # (B, M)
    new = mask & keep
    empty = ~new.any(1)
    if empty.any():
        # keep one random present modality in rows that lost all of them
        scores = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device)
        scores = scores.masked_fill(~mask, -1.0)
        pick = F.one_hot(scores.argmax(1), mask.shape[1]).bool()  # (B, M)
        new = torch.where(empty[:, None], pick & mask, new)
    return new


# ----------------------------------------------------------------------------------------------------------
# Classes, pseudo-labels and the soft weight κ (docs/method.md, "Soft Positive-Unlabeled contrastive loss")
# ----------------------------------------------------------------------------------------------------------


def contrastive_classes(target: torch.Tensor, task: str) -> torch.Tensor:
    """Classes used to define positive pairs: the class (single-label), the sign bin (regression, 0 = negative,
    1 = non-negative), or the multi-hot set itself (multi-label)."""
    if task == "single-label":
        return target.long()
    if task == "regression":
        return (target >= 0).long()
    return (target > 0.5).float()


def pseudo_classes(logits_fused: torch.Tensor, task: str) -> torch.Tensor:
    """ỹ from c_0(S) (detached): argmax, sign bin, or multi-hot by thresholding at 0.5."""
    lf = logits_fused.detach().float()
    if task == "single-label":
        return lf.argmax(-1)
    if task == "regression":
        return (lf[:, 0] >= 0).long()
    return (torch.sigmoid(lf) > 0.5).float()


def same_class(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A,) × (N,) class indices -> (A, N) float equality; (A, C) × (N, C) multi-hot -> Jaccard ≥ 0.5."""
    if a.dim() == 1:
        return (a[:, None] == b[None, :]).float()
    inter = a @ b.T  # (A, N)
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    jac = torch.where(union > 0, inter / union.clamp(min=1e-9), torch.ones_like(inter))
    return (jac >= 0.5).float()


class PrototypeMemory(nn.Module):
    """A running memory of labeled class prototypes on the unit sphere (at 5 % labels a batch holds few).

    Buffers travel with the checkpoint, so a resumed run continues with the same memory.
    """

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("protos", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, s: torch.Tensor, classes: torch.Tensor) -> None:
        """s: (L, D) normalised labeled anchors; classes: (L,) indices or (L, K) multi-hot."""
        if s.shape[0] == 0:
            return
        onehot = classes.float() if classes.dim() == 2 else F.one_hot(classes, self.protos.shape[0]).float()
        counts = onehot.sum(0)  # (K,)
        present = counts > 0
        means = (onehot.T @ s.float()) / counts.clamp(min=1)[:, None]  # (K, D)
        mom = torch.where(self.seen, torch.full_like(counts, self.momentum), torch.zeros_like(counts))[:, None]
        new = mom * self.protos + (1 - mom) * means
        new = F.normalize(new, dim=-1)
        self.protos.copy_(torch.where(present[:, None], new, self.protos))
        self.seen |= present


def kernel_weight(d: torch.Tensor, sigma: torch.Tensor | float, kernel: str) -> torch.Tensor:
    """κ = k(d) in (0, 1]: rbf exp(−d²/2σ²), laplacian exp(−d/σ), inverse-l2 1/(1 + d²/σ²)."""
    if kernel == "rbf":
        return torch.exp(-d.pow(2) / (2 * sigma ** 2))
    if kernel == "laplacian":
        return torch.exp(-d / sigma)
    if kernel == "inverse-l2":
        return 1.0 / (1.0 + d.pow(2) / sigma ** 2)
    raise ValueError(f"unknown kernel {kernel!r}")


@torch.no_grad()
def soft_kappa(s: torch.Tensor, classes: torch.Tensor, protos: torch.Tensor, seen: torch.Tensor, kernel: str,
               bandwidth: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """κ_k for every sample k: the kernel of the distance from s_k to the prototype of its class ỹ_k.

    s: (N, D) normalised; classes: (N,) or (N, K) multi-hot (the nearest of its classes' prototypes counts);
    protos: (K, D); seen: (K,) bool. Distance is L1 for the laplacian kernel, L2 otherwise. A sample whose
    class has no prototype yet gets κ = 0. σ: `bandwidth`, or the median of the distances (median heuristic).
    Returns (κ (N,), σ as a 0-dim tensor).
    """
    p = 1.0 if kernel == "laplacian" else 2.0
    dist = torch.cdist(s.float(), protos.float(), p=p)  # (N, K)
    dist = dist.masked_fill(~seen[None, :], float("inf"))
    if classes.dim() == 1:
        d = dist.gather(1, classes[:, None]).squeeze(1)  # (N,)
    else:
        d = dist.masked_fill(classes <= 0.5, float("inf")).amin(1)  # (N,)
    finite = torch.isfinite(d)
    if bandwidth is not None:
        sigma = torch.tensor(float(bandwidth), device=s.device)
    elif finite.any():
        sigma = d[finite].median().clamp(min=1e-3)
    else:
        sigma = torch.tensor(1.0, device=s.device)
    kappa = torch.where(finite, kernel_weight(d.clamp(max=1e6), sigma, kernel), torch.zeros_like(d))
    return kappa, sigma


@torch.no_grad()
def soft_pu_weights(classes_tilde: torch.Tensor, labeled: torch.Tensor, kappa: torch.Tensor,
                    anchor_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Positive weights w_{jk} of candidate sample k for anchor j (docs/method.md, soft-PU loss), detached.

    - 1 if k = j;  1[y_j = y_k] if both are labeled;  otherwise 1[ỹ_j = ỹ_k] · κ_k (κ_k := 1 for labeled k).
    classes_tilde: (N,) or (N, K): the label where known, else the pseudo-label; labeled: (N,) bool;
    kappa: (N,). anchor_rows: (A,) indices of the anchors among the N samples (default: all). -> (A, N).
    """
    n = labeled.shape[0]
    rows = torch.arange(n, device=labeled.device) if anchor_rows is None else anchor_rows
    kap = torch.where(labeled, torch.ones_like(kappa), kappa)  # (N,)
    w = same_class(classes_tilde[rows], classes_tilde) * kap[None, :]  # (A, N)
    # both labeled: the hard label decides (ỹ = y for labeled samples, κ = 1, so w is already 0/1 there)
    w[torch.arange(len(rows), device=w.device), rows] = 1.0
    return w


@torch.no_grad()
def supcon_weights(classes: torch.Tensor, labeled: torch.Tensor, anchor_rows: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """robult-supcon: positives are the sample's own modalities and same-class *labeled* samples only."""
    n = labeled.shape[0]
    rows = torch.arange(n, device=labeled.device) if anchor_rows is None else anchor_rows
    both = (labeled[rows][:, None] & labeled[None, :]).float()
    w = same_class(classes[rows], classes) * both  # (A, N)
    w[torch.arange(len(rows), device=w.device), rows] = 1.0
    return w


# ----------------------------------------------------------------------------------------------------------
# The soft-PU contrastive loss (docs/method.md, "Soft Positive-Unlabeled contrastive loss")
# ----------------------------------------------------------------------------------------------------------


def pu_contrastive_loss(anchors: torch.Tensor, candidates: torch.Tensor, cand_mask: torch.Tensor,
                        weights: torch.Tensor, tau: float, anchor_valid: torch.Tensor | None = None,
                        denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """L_PU = −Σ_j Σ_{(i,k)} w̄_{jk} log softmax_{(i',a)}(s_j · z^{i'}_a / τ) / denom.

    anchors: (A, D) s_j = norm(S_j); candidates: (N, M, D) z^i_k = norm(Z^i_k); cand_mask: (N, M) bool (absent
    modalities are neither positives nor in the softmax); weights: (A, N) detached positive weights per
    candidate *sample*, shared by its modalities; w̄ normalises them over each anchor's positives.
    anchor_valid: (A,) bool (anchors without S, e.g. an incomplete sample, are skipped).
    denom defaults to the number of valid anchors (the mean over anchors).
    """
    a, d = anchors.shape
    n, m, _ = candidates.shape
    sim = anchors.float() @ candidates.reshape(n * m, d).float().T / tau  # (A, N*M)
    present = cand_mask.reshape(1, n * m)  # (1, N*M)
    sim = sim.masked_fill(~present, float("-inf"))
    logp = torch.log_softmax(sim, dim=-1).masked_fill(~present, 0.0)  # (A, N*M)
    w = (weights.detach()[:, :, None] * cand_mask[None].to(weights.dtype)).reshape(a, n * m)  # (A, N*M)
    w_bar = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    per_anchor = -(w_bar * logp).sum(-1)  # (A,)
    valid = torch.ones(a, dtype=torch.bool, device=anchors.device) if anchor_valid is None else anchor_valid
    valid = valid & (w.sum(-1) > 0)
    total = per_anchor.masked_fill(~valid, 0.0).sum()
    if denom is None:
        denom = valid.sum().clamp(min=1)
    return total / denom


# ----------------------------------------------------------------------------------------------------------
# Latent reconstruction (docs/method.md, "Latent reconstruction")
# ----------------------------------------------------------------------------------------------------------


def reconstruction_loss(target: torch.Tensor, h_rec: torch.Tensor, mask: torch.Tensor,
                        denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """L_rec = Σ_j Σ_{i present} ‖T^i_j − Ĥ^i_j‖² / d_h / denom (docs/method.md, "Latent reconstruction").

    T is the route's target as the model made it (`ModelOutput.rec_target`: sg H^i, sg n(H^i) or n(H^i)); it
    is used as given, so the route alone decides whether the target carries a gradient. The squared norm is
    divided by d_h (a mean over features) so λ_rec does not depend on the latent width.
    target, h_rec: (B, M, d_h); mask: (B, M) bool. denom defaults to B (the mean over samples).
    """
    err = (target.float() - h_rec.float()).pow(2).mean(-1)  # (B, M)
    total = (err * mask.to(err.dtype)).sum()
    if denom is None:
        denom = max(target.shape[0], 1)
    return total / denom


def difference_loss(u: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L_diff = mean_i mean_{a,b} (Û^iᵀ Ẑ^i)²_{ab}: soft orthogonality of the unique and redundant latents.

    Û^i, Ẑ^i: the present rows of U^i and Z^i, centred over the batch, then each row L2-normalised (MISA's
    difference loss). It is small when no direction of U^i co-varies with a direction of Z^i over the batch,
    i.e. when U^i holds what Z^i does not. u: (B, M, d_u), z: (B, M, d_z), mask: (B, M) bool -> scalar.
    Modalities with fewer than two present rows in the batch are skipped (a centred single row is zero).
    """
    terms = []
    for i in range(u.shape[1]):
        rows = mask[:, i]
        if int(rows.sum()) < 2:
            continue
        ui, zi = u[rows, i].float(), z[rows, i].float()  # (B_i, d_u), (B_i, d_z)
        ui = ui - ui.mean(0, keepdim=True)
        zi = zi - zi.mean(0, keepdim=True)
        ui = ui / ui.norm(dim=1, keepdim=True).clamp(min=eps)
        zi = zi / zi.norm(dim=1, keepdim=True).clamp(min=eps)
        terms.append((ui.T @ zi).pow(2).mean())  # (d_u, d_z) -> scalar
    if not terms:
        return u.sum() * 0.0
    return torch.stack(terms).mean()


# ----------------------------------------------------------------------------------------------------------
# Peers from the missing-modality literature: ShaSpec and MMIN (docs/method.md, "Peers")
# ----------------------------------------------------------------------------------------------------------


def domain_classification_loss(domain_logits: torch.Tensor, mask: torch.Tensor,
                               denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """ShaSpec's domain classification: L_dom = −Σ_j Σ_{i present} log softmax(D(U^i_j))_i / denom, the modality
    classifier D telling which modality each specific feature came from.

    domain_logits: (B, M, M) D(U^i) for every modality slot i; mask: (B, M) bool (absent slots do not count).
    denom defaults to the number of present slots.
    """
    b, m, k = domain_logits.shape
    target = torch.arange(m, device=domain_logits.device).expand(b, m).reshape(-1)  # slot i is modality i
    ce = F.cross_entropy(domain_logits.float().reshape(b * m, k), target, reduction="none").reshape(b, m)
    total = torch.where(mask, ce, torch.zeros_like(ce)).sum()
    if denom is None:
        denom = mask.sum().clamp(min=1)
    return total / denom


def shared_alignment_loss(z: torch.Tensor, mask: torch.Tensor,
                          denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """ShaSpec's distribution alignment of the shared features: L_align = Σ_j Σ_{i<k, both present}
    mean_d |Z^i_j − Z^k_j| / denom (L1 between the shared features of one sample's modalities).

    z: (B, M, D); mask: (B, M) bool. denom defaults to the number of present pairs (a sample with fewer than two
    present modalities has none).
    """
    m = z.shape[1]
    zf = z.float()
    diff = (zf[:, :, None] - zf[:, None, :]).abs().mean(-1)  # (B, M, M)
    upper = torch.ones(m, m, dtype=torch.bool, device=z.device).triu(diagonal=1)
    pair = mask[:, :, None] & mask[:, None, :] & upper  # (B, M, M)
    total = torch.where(pair, diff, torch.zeros_like(diff)).sum()
    if denom is None:
        denom = pair.sum().clamp(min=1)
    return total / denom


def imagination_loss(imagined: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """MMIN's imagination loss: L_im = Σ_j Σ_{i in mask} ‖T^i_j − Ĥ^i_j‖² / d / denom, on the slots whose true
    latent is known (the modalities dropped from a sample that has them; the cycle term: the kept ones).

    imagined, target: (B, M, d) (the target is used as given: the trainer detaches it); mask: (B, M) bool.
    denom defaults to the number of slots in the mask.
    """
    err = (target.float() - imagined.float()).pow(2).mean(-1)  # (B, M)
    total = torch.where(mask, err, torch.zeros_like(err)).sum()
    if denom is None:
        denom = mask.sum().clamp(min=1)
    return total / denom


# ----------------------------------------------------------------------------------------------------------
# Semi-supervised baselines: FixMatch and co-training (docs/method.md, "FixMatch", "Co-training")
# ----------------------------------------------------------------------------------------------------------


# the most bytes of float32 rows `feature_std` reads at once (its float64 working copy is twice that)
FEATURE_STD_CHUNK_BYTES = 8 << 20


def feature_std(x: torch.Tensor, kind: str, present: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> torch.Tensor:
    """The per-feature standard deviation of one modality over the samples of a split where it is present: the
    scale of FixMatch's feature noise.

    x: (N, ...) the modality's tensor (or a memory-mapped `MappedRows`); present: (N,) bool; lengths: (N,) for a
    sequence. vector (N, D) -> (D,); image (N, C, H, W) -> (C, H, W) (one std per pixel); sequence (N, T, D) ->
    (D,) over the valid steps only; text -> a 0-dim 1 (token ids get no noise). A feature with fewer than two
    present values gets std 0. Streamed over chunks of rows (`x[lo:hi]`, about FEATURE_STD_CHUNK_BYTES each) with
    float64 accumulators merged by Chan's pairwise update, so the split is never held whole and the result is the
    one-pass std to float64 rounding.
    """
    if kind == "text":
        return torch.ones(())
    shape = (x.shape[-1],) if kind == "sequence" else tuple(x.shape[1:])
    row_bytes = 4 * max(1, torch.Size(x.shape[1:]).numel())
    step = max(1, FEATURE_STD_CHUNK_BYTES // row_bytes)
    present = torch.as_tensor(present, dtype=torch.bool).cpu()
    count, mean, m2 = 0, torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    for lo in range(0, len(present), step):
        keep = present[lo:lo + step]
        if not bool(keep.any()):
            continue
        rows = x[lo:lo + step][keep].detach().cpu().double()
        if kind == "sequence":
            t = x.shape[1]
            lens = (lengths[lo:lo + step][keep].cpu() if lengths is not None
                    else torch.full((rows.shape[0],), t, dtype=torch.long)).clamp(max=t)
            rows = rows[torch.arange(t)[None, :] < lens[:, None]]  # (valid steps, D)
        n_b = rows.shape[0]
        if n_b == 0:
            continue
        mean_b = rows.mean(0)
        m2_b = (rows - mean_b).pow_(2).sum(0)
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta.pow(2) * (count * n_b / total)
        count = total
    if count < 2:
        return torch.zeros(shape, dtype=torch.float32)
    return (m2 / (count - 1)).sqrt().float()


def perturb_modality(x: torch.Tensor, kind: str, std: torch.Tensor, noise: float, token_drop: float,
                     draws: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """One modality of FixMatch's strong view.

    vector, image, sequence: x + noise · std · ε, ε = `draws` (standard normal, x's shape), std from
    `feature_std` (a sequence's padding steps stay zero); text: each token id becomes padding (0) where the
    uniform `draws` fall below token_drop (the encoder ignores padding). x: (B, ...) -> (B, ...), same dtype.
    """
    if kind == "text":
        return torch.where(draws < token_drop, torch.zeros_like(x), x)
    eps = draws.float() * std.to(draws.device).float() * noise
    if kind == "sequence" and lengths is not None:
        eps = eps * (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)
    return x + eps.to(x.dtype)


def labeled_prior(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """π: the class frequencies of the labeled samples with add-one smoothing (a class without a labeled sample
    keeps a small share instead of none). target: (L,) int64 -> (C,), summing to 1."""
    counts = torch.bincount(target.long(), minlength=num_classes).float()[:num_classes]
    return (counts + 1.0) / (counts.sum() + num_classes)


@torch.no_grad()
def align_distribution(probs: torch.Tensor, prior: torch.Tensor, running_mean: torch.Tensor,
                       eps: float = 1e-6) -> torch.Tensor:
    """Distribution alignment (Berthelot et al. 2020, ReMixMatch): p̃ = normalise(p · π / p̄).

    probs: (..., C) predicted class probabilities; prior: (C,) the labeled class frequencies π; running_mean: (C,)
    the running mean p̄ of the predictions on unlabeled samples. A class the model over-predicts (p̄_c > π_c) is
    scaled down, an under-predicted one up, so the pseudo-labels' marginal follows the labeled prior and cannot
    collapse onto a few classes. Detached. -> (..., C), each row summing to 1.
    """
    p = probs.detach().float() * (prior.float() / running_mean.float().clamp(min=eps))
    return p / p.sum(-1, keepdim=True).clamp(min=eps)


@torch.no_grad()
def update_running_mean(running_mean: torch.Tensor, prob_sum: torch.Tensor, count: float | torch.Tensor,
                        momentum: float) -> torch.Tensor:
    """p̄ ← m p̄ + (1 − m) prob_sum / count: an exponential moving average of the mean predicted distribution.

    running_mean, prob_sum: (C,) (prob_sum: the sum of a batch's probability rows, so data-parallel processes can
    add theirs first); count: the number of rows summed. No rows leave p̄ unchanged. Returns the new p̄."""
    count = float(count)
    if count <= 0:
        return running_mean
    return momentum * running_mean + (1.0 - momentum) * prob_sum.to(running_mean) / count


@torch.no_grad()
def adaptive_thresholds(learned: torch.Tensor, unused: int | torch.Tensor, threshold: float) -> torch.Tensor:
    """FlexMatch's class-adaptive thresholds (Zhang et al. 2021): τ_c = τ · M(β_c), M(x) = x / (2 − x).

    learned: (C,) σ_c, the number of unlabeled training samples whose latest prediction was class c with
    confidence ≥ τ; unused: the number of unlabeled samples with no such prediction yet. β_c = σ_c /
    max(max_c σ_c, unused) (with the threshold warm-up: while most samples are unused every β_c stays small).
    A class the model has learned well keeps a threshold near τ, a hard or rare one gets a lower one. -> (C,)
    """
    norm = torch.maximum(learned.max(), torch.as_tensor(unused, dtype=learned.dtype)).clamp(min=1)
    beta = learned.float() / norm.float()
    return threshold * beta / (2.0 - beta)


@torch.no_grad()
def class_fair_thresholds(running_mean: torch.Tensor, threshold: float) -> torch.Tensor:
    """FreeMatch's class-wise thresholds (Wang et al. 2023, "self-adaptive local thresholds") on a fixed global
    threshold: τ_c = τ · p̄_c / max_c' p̄_c', p̄ the running mean of the predicted class probabilities on
    unlabeled samples. A class the model predicts less than the most predicted one gets a proportionally lower
    bar, so its pseudo-labels keep coming while the easy classes would otherwise take over; with a balanced p̄
    every τ_c = τ. running_mean: (C,) -> (C,)"""
    return threshold * running_mean / running_mean.max().clamp(min=1e-12)


def labeled_label_rates(target: torch.Tensor) -> torch.Tensor:
    """π_c of a multi-label task: each label's share of positives among the labeled samples, add-one smoothed on
    its two outcomes like `labeled_prior`, (n⁺_c + 1) / (L + 2), so no label's prior is 0 or 1.
    target: (L, C) multi-hot -> (C,)"""
    t = (target.float() > 0.5).float()
    return (t.sum(0) + 1.0) / (t.shape[0] + 2.0)


@torch.no_grad()
def align_label_rates(probs: torch.Tensor, prior: torch.Tensor, running_mean: torch.Tensor,
                      eps: float = 1e-6) -> torch.Tensor:
    """Distribution alignment per label (multi-label): `align_distribution` on each label's two outcomes
    (absent 1 − p, present p) with that label's prior π_c and running mean p̄_c of the predicted positive rate:
    p̃ = p r⁺ / (p r⁺ + (1 − p) r⁻), r⁺ = π_c / p̄_c, r⁻ = (1 − π_c) / (1 − p̄_c). In odds: the odds of each label
    are multiplied by odds(π_c) / odds(p̄_c), so a label the model predicts present less often than its labeled
    prior is raised, one predicted too often lowered. probs: (..., C) sigmoids; prior, running_mean: (C,).
    Detached. -> (..., C)"""
    p = probs.detach().float()
    pi, mean = prior.float(), running_mean.float().clamp(eps, 1.0 - eps)
    pos = p * (pi / mean)
    neg = (1.0 - p) * ((1.0 - pi) / (1.0 - mean))
    return pos / (pos + neg).clamp(min=eps)


@torch.no_grad()
def select_prior_balanced(probs: torch.Tensor, valid: torch.Tensor, prior: torch.Tensor, threshold: float
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-label pseudo-labels admitted label by label in the proportion of the label's prior.

    The candidates of label c are the valid rows with p ≥ τ (present) or p ≤ 1 − τ (absent), n⁺_c and n⁻_c of
    them. The side with more candidates than the prior allows for the other side's count is cut to the most
    confident ceil(n⁻_c π_c / (1 − π_c)) present or ceil(n⁺_c (1 − π_c) / π_c) absent ones, so the admitted
    present share of a label is about π_c: a label with no confident "present" admits no "absent" either, and
    "absent" cannot crowd out a rare label's positives. probs: (N, C) (aligned) sigmoids; valid: (N,) bool, the
    rows that may be pseudo-labeled; prior: (C,) π; threshold: τ. -> (pseudo (N, C) 0/1 float, take (N, C) bool)
    """
    p = probs.detach().float()
    n = p.shape[0]
    pseudo = (p >= 0.5).float()
    if n == 0:
        return pseudo, torch.zeros_like(p, dtype=torch.bool)
    ok = valid.reshape(n, 1).to(torch.bool)
    pos = ok & (p >= threshold)
    neg = ok & (p <= 1.0 - threshold) & ~pos
    pi = prior.float().clamp(1e-6, 1.0 - 1e-6)
    n_pos, n_neg = pos.sum(0).float(), neg.sum(0).float()
    odds = pi / (1.0 - pi)
    k_pos = torch.minimum(n_pos, torch.ceil(n_neg * odds - 1e-6))  # the present ones the absent ones allow
    k_neg = torch.minimum(n_neg, torch.ceil(n_pos / odds - 1e-6))  # and the other way round

    def most_confident(cand: torch.Tensor, score: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        s = torch.where(cand, score, torch.full_like(score, -float("inf")))
        order = s.argsort(dim=0, descending=True, stable=True)  # per label, the candidates first, best first
        rank = torch.empty_like(order)
        rank.scatter_(0, order, torch.arange(n, device=p.device).unsqueeze(1).expand_as(order))
        return cand & (rank < k.unsqueeze(0))

    take = most_confident(pos, p, k_pos) | most_confident(neg, -p, k_neg)
    return pseudo, take


@torch.no_grad()
def select_pseudo_labels(probs: torch.Tensor, task: str, threshold: float | torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Confident pseudo-labels from (aligned) probabilities.

    single-label: probs (N, C) softmax rows; threshold a float or (C,) per class (τ of the predicted class) ->
    (pseudo (N,) int64 argmax, take (N,) bool: max prob ≥ its threshold).
    multi-label: probs (N, C) sigmoids -> (pseudo (N, C) 0/1 float, take (N, C) bool per label: p ≥ τ or
    p ≤ 1 − τ; an undecided label is not trained on).
    """
    p = probs.detach().float()
    if task == "single-label":
        conf, pseudo = p.max(-1)
        thr = threshold[pseudo] if isinstance(threshold, torch.Tensor) and threshold.dim() == 1 else threshold
        return pseudo, conf >= thr
    if task == "multi-label":
        return (p >= 0.5).float(), (p >= threshold) | (p <= 1.0 - threshold)
    raise ValueError(f"no pseudo-labels for the {task!r} task")


@torch.no_grad()
def leave_one_out_probs(probs_mod: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Co-training's teacher of each view: the mean prediction of the sample's OTHER present modalities.

    probs_mod: (B, M, C) per-modality probabilities (softmax or sigmoid); mask: (B, M) bool. Returns
    (q (B, M, C), has_other (B, M) bool): q[j, i] = mean over present k ≠ i of probs_mod[j, k]; where no other
    modality is present q is 0 and has_other False. With two modalities q of one view is the other view's
    prediction; with more, it is their soft agreement.
    """
    w = mask.to(probs_mod.dtype).unsqueeze(-1)  # (B, M, 1)
    p = probs_mod.detach() * w
    others = p.sum(1, keepdim=True) - p  # (B, M, C)
    n_other = w.sum(1, keepdim=True) - w  # (B, M, 1)
    return others / n_other.clamp(min=1.0), n_other.squeeze(-1) > 0


def pseudo_label_loss(logits_mod: torch.Tensor, mod_mask: torch.Tensor, pseudo: torch.Tensor, take: torch.Tensor,
                      task: str, denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """L_u = Σ_j (1/|A_j|) Σ_{i ∈ A_j} ℓ_u(c^i_j, ŷ^i_j) / denom: the unlabeled loss of FixMatch and co-training,
    on per-modality heads like L_sup.

    logits_mod: (B, M, C) the logits being trained (FixMatch: the strong view's; co-training: the sample's own);
    mod_mask: (B, M) bool, A_j (FixMatch: the strong view's modalities); pseudo: the target per head, (B, M) int64
    (single-label), (B, M, C) 0/1 (multi-label) or (B, M) float (regression); take: which targets count, (B, M)
    bool or (B, M, C) bool per label (multi-label). ℓ_u: cross-entropy, BCE summed over the taken labels, or the
    squared error (regression, a consistency term). denom defaults to B (the mean over the samples, taken or not).
    """
    b, m, c = logits_mod.shape
    lf = logits_mod.float()
    tk = take.to(lf.dtype)
    if task == "single-label":
        per = F.cross_entropy(lf.reshape(b * m, c), pseudo.reshape(b * m).long(), reduction="none").reshape(b, m)
        per = per * tk
    elif task == "multi-label":
        per = (F.binary_cross_entropy_with_logits(lf, pseudo.float(), reduction="none") * tk).sum(-1)
    elif task == "regression":
        per = (lf[..., 0] - pseudo.float()).pow(2) * tk
    else:
        raise ValueError(f"unknown task {task!r}")
    mm = mod_mask.to(per.dtype)
    total = ((per * mm).sum(1) / mm.sum(1).clamp(min=1.0)).sum()
    if denom is None:
        denom = max(b, 1)
    return total / denom
