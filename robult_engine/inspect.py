"""Inspecting a trained model on one sample: the diagnostics the explorer shows live (docs/method.md).

Pure PyTorch (no Qt, no sqlite). The hot path of the app is "toggle a modality → new numbers", so the work
is split in two:

    enc = encode_sample(model, sample)             # one forward pass, all modalities (H, Z, U, logits, S)
    pu  = soft_pu(enc, ref, memory_state, ...)      # subset-independent: needs S, i.e. all modalities
    ins = recombine(enc, subset, task, pu)           # microseconds: mean of per-modality logits over the subset

`SampleInspector` holds the first two for one sample and answers `inspect(subset)`; `inspect_sample` is the
one-call convenience the brief asks for. Everything returned is plain floats / read-only numpy arrays, so
results can cross threads and be stored.

Decisions written down here:
- A subset's prediction is the mean over i ∈ A of c([U^i, Z^i]) (`combine_logits`), exactly what the model
  and `evaluate_subsets` do; for a peer's model (ShaSpec, MMIN) it is its own head's, looked up in the table of
  every subset's logits that `encode_sample` computes once (`SampleEncoding.subset_table`). A modality the
  *sample* lacks (mask 0 in the data) never contributes, even when its toggle is on: `used = subset & present`.
  Nothing on → `Inspection.empty` (NaN probabilities).
- ‖Z^i‖, ‖U^i‖, the per-modality predictions and the reconstruction error are properties of each modality's
  own encoding and do not depend on the subset; the app greys out the ones the subset leaves out.
- Soft-PU is the *training-time* view of the sample: S = g_0(f_0(H)) needs every modality, so the
  pseudo-label ỹ = argmax c_0(S), its confidence, κ and the weights are computed with all modalities and do
  not change with the toggles. A sample that lacks a modality has no valid S (`SoftPU.valid` is False and
  `reason` says why); the numbers are still shown, computed from the zero-filled input, for reference.
- κ is `soft_kappa` over the reference batch plus the sample, against the checkpoint's prototype memory,
  with the run's kernel and bandwidth (the median heuristic then runs over that batch, as in training).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .data.base import Batch, SplitData, make_batch
from .evaluation import EncodedSplit, subset_logits
from .losses import contrastive_classes, pseudo_classes, soft_kappa, soft_pu_weights
from .models.robult import RobultModel, combine_logits, subset_index, subset_masks

__all__ = ["Inspection", "ReferenceEncoding", "SampleEncoding", "SampleInspector", "SoftPU", "encode_reference",
           "encode_sample", "flipped_samples", "inspect_sample", "latent_points", "outputs_to_probs", "pca_2d",
           "recombine", "reference_indices", "soft_pu", "subset_predictions", "weights_version"]


def _ro(a) -> np.ndarray:
    """A read-only float64/int/bool numpy copy (results are shared across threads and must not change)."""
    arr = np.array(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a, copy=True)
    arr.setflags(write=False)
    return arr


def outputs_to_probs(logits: torch.Tensor, task: str) -> torch.Tensor:
    """What a person reads off the head: softmax (single-label), sigmoid per class (multi-label), the score
    itself (regression). logits: (..., C) -> (..., C)."""
    if task == "single-label":
        return torch.softmax(logits.float(), -1)
    if task == "multi-label":
        return torch.sigmoid(logits.float())
    return logits.float()


def _predicted(values: np.ndarray, task: str) -> int:
    """The predicted class of one probability vector (C,): argmax; for regression the sign bin (0 = negative)."""
    if np.isnan(values).any():
        return -1
    if task == "regression":
        return int(values[0] >= 0)
    return int(np.argmax(values))


def weights_version(model: torch.nn.Module) -> int:
    """A counter that changes whenever the model's weights change in place (an optimizer step, a
    `load_state_dict`): the sum of the parameters' autograd version counters. Caches of encodings are keyed
    by (model, weights_version) so they are never reused across a training step."""
    return int(sum(p._version for p in model.parameters()))  # noqa: SLF001 - public enough, stable since 1.0


# ----------------------------------------------------------------------------------------------------------
# One sample: encode once
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleEncoding:
    """One forward pass of one sample with every modality (read-only tensors on the CPU)."""
    modality_names: tuple[str, ...]
    present: torch.Tensor  # (M,) bool, the data's presence mask
    logits_mod: torch.Tensor  # (M, C) c([U^i, Z^i])
    z: torch.Tensor  # (M, d_z)
    u: torch.Tensor  # (M, d_u)
    rec_err: torch.Tensor  # (M,) mean over features of (H^i − r_i([U^i, Z^i]))²
    s: torch.Tensor  # (d_z,) S = g_0(f_0(H)) (meaningful only when every modality is present)
    logits_fused: torch.Tensor  # (C,) c_0(S)
    # (2^M, C) a peer's prediction of every subset (row k: the modalities of the bits of k); None: the mean
    subset_table: torch.Tensor | None = None


def _eval_mode(model: torch.nn.Module):
    """Context: eval mode and no grad, restoring the train flag afterwards (the model may be training)."""
    class _Ctx:
        def __enter__(self):
            self.was = model.training
            model.eval()
            self.ng = torch.no_grad()
            self.ng.__enter__()

        def __exit__(self, *exc):
            self.ng.__exit__(*exc)
            model.train(self.was)
            return False
    return _Ctx()


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def encode_sample(model: RobultModel, sample: SplitData | Batch) -> SampleEncoding:
    """Run the model once on a one-row sample, all modalities, with fusion and reconstruction."""
    if len(sample) != 1:
        raise ValueError(f"encode_sample expects one sample, got {len(sample)}")
    dev = _model_device(model)
    full = torch.ones(1, len(model.modality_names), dtype=torch.bool, device=dev)  # (1, M)
    inputs = {k: v.to(dev) for k, v in sample.inputs.items()}
    lengths = {k: v.to(dev) for k, v in sample.lengths.items()}
    table = None
    with _eval_mode(model):
        out = model(inputs, lengths, full, with_fusion=True, with_reconstruction=True)
        if getattr(model, "subset_head", "mean") != "mean":
            table = model.predict_subsets(out.h, out.z, out.u, subset_masks(len(model.modality_names)))[0]
    rec = out.rec_error()  # (1, M)
    return SampleEncoding(
        modality_names=tuple(model.modality_names), present=sample.mask[0].bool().cpu().clone(),
        logits_mod=out.logits_mod[0].float().cpu(), z=out.z[0].float().cpu(), u=out.u[0].float().cpu(),
        rec_err=rec[0].cpu(), s=out.s[0].float().cpu(), logits_fused=out.logits_fused[0].float().cpu(),
        subset_table=table.float().cpu() if table is not None else None,
    )


# ----------------------------------------------------------------------------------------------------------
# The reference batch for soft-PU
# ----------------------------------------------------------------------------------------------------------


def reference_indices(n: int, labeled_indices: torch.Tensor | np.ndarray | list[int], size: int = 64,
                      n_labeled: int = 16, seed: int = 0) -> torch.Tensor:
    """A fixed reference batch of training samples, like a training batch: `n_labeled` labeled ones (as many
    as exist) and the rest unlabeled, drawn with a seeded generator (never the global RNG). int64 (≤ size,)."""
    lab = torch.as_tensor(labeled_indices, dtype=torch.long).reshape(-1)
    is_lab = torch.zeros(n, dtype=torch.bool)
    if len(lab):
        is_lab[lab] = True
    g = torch.Generator().manual_seed(int(seed))
    lab_pool = is_lab.nonzero().squeeze(1)
    unl_pool = (~is_lab).nonzero().squeeze(1)
    k_lab = min(n_labeled, len(lab_pool), size)
    k_unl = min(size - k_lab, len(unl_pool))
    pick = torch.cat([lab_pool[torch.randperm(len(lab_pool), generator=g)[:k_lab]],
                      unl_pool[torch.randperm(len(unl_pool), generator=g)[:k_unl]]])
    return pick


@dataclass(frozen=True)
class ReferenceEncoding:
    """The reference batch, encoded: what soft-PU compares the sample with."""
    indices: torch.Tensor  # (N,) indices into the training split
    s_n: torch.Tensor  # (N, d_z) normalised S
    s_valid: torch.Tensor  # (N,) bool, every modality present
    labeled: torch.Tensor  # (N,) bool
    classes: torch.Tensor  # (N,) or (N, K): the label where known, else the pseudo-label (ỹ)
    pseudo: torch.Tensor  # (N,) or (N, K): argmax c_0(S) for every sample
    target: torch.Tensor  # (N, ...) the true targets (shown for labeled rows only)


def encode_reference(model: RobultModel, reference: Batch | SplitData, task: str,
                     labeled: torch.Tensor | None = None, indices: torch.Tensor | None = None
                     ) -> ReferenceEncoding:
    """Encode a reference batch. `labeled` (N,) bool defaults to `reference.labeled` for a Batch and to all
    False for a SplitData; `indices` (N,) defaults to `reference.index` for a Batch, else 0..N−1."""
    n = len(reference)
    if isinstance(reference, Batch):
        batch = reference
    else:
        batch = make_batch(reference, torch.arange(n), torch.zeros(n, dtype=torch.bool))
    lab = labeled if labeled is not None else (reference.labeled if isinstance(reference, Batch)
                                               else torch.zeros(n, dtype=torch.bool))
    idx = indices if indices is not None else (reference.index if isinstance(reference, Batch) else torch.arange(n))
    dev = _model_device(model)
    b = batch.to(dev)
    with _eval_mode(model):
        out = model(b.inputs, b.lengths, b.mask, with_fusion=True)
    s_n = F.normalize(out.s.float(), dim=-1).cpu()  # (N, d_z)
    pseudo = pseudo_classes(out.logits_fused.float().cpu(), task)
    cls = contrastive_classes(batch.target.cpu(), task)
    lab = lab.bool().cpu()
    lab_b = lab.view(-1, *([1] * (cls.dim() - 1)))
    classes = torch.where(lab_b, cls.to(pseudo.dtype), pseudo)
    return ReferenceEncoding(indices=idx.long().cpu(), s_n=s_n, s_valid=out.s_valid.cpu(), labeled=lab,
                             classes=classes, pseudo=pseudo, target=batch.target.cpu())


# ----------------------------------------------------------------------------------------------------------
# Soft-PU for one sample
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftPU:
    """The soft Positive-Unlabeled view of one sample against a reference batch (docs/method.md, soft-PU loss).

    Reference rows are indexed 0..N−1 (`ref_indices` maps them to training-split indices); in `matrix` the
    sample is the last row and column (N). Weights: row j = what anchor j gives, column k = what k receives.
    """
    valid: bool  # S is meaningful: every modality of the sample is present
    reason: str  # why not, when not valid ("" otherwise)
    labeled: bool  # the sample is a labeled training sample: ỹ is its label, κ = 1
    pseudo_label: int  # argmax c_0(S) (single-label) / sign bin (regression); −1 for multi-label
    pseudo_label_name: str  # human-readable ỹ (class name, or the set of classes for multi-label)
    confidence: float  # max softmax of c_0(S) (single-label); mean max(p, 1−p) (multi-label); nan (regression)
    kappa: float  # κ of the sample (1 for a labeled sample; 0 if its class has no prototype yet)
    kappa_raw: float  # the kernel value itself, before the labeled override
    sigma: float  # the bandwidth used
    kernel: str
    prototypes_seen: int  # classes with a prototype in the memory (0: the method keeps no memory)
    gives: np.ndarray  # (N,) w[sample, k]
    receives: np.ndarray  # (N,) w[k, sample]
    ref_indices: np.ndarray  # (N,) training-split index of each reference row
    ref_labeled: np.ndarray  # (N,) bool
    ref_class_names: tuple[str, ...]  # (N,) ỹ of each reference row, readable
    ref_kappa: np.ndarray  # (N,) κ of each reference row (1 for labeled rows)
    matrix: np.ndarray  # (N+1, N+1) weights of the batch with the sample appended last
    top: tuple[tuple[int, int, float, str, bool], ...]  # (ref row, split index, weight, ỹ name, labeled), desc
    task: str = "single-label"  # how ỹ is read off c_0(S): argmax, the labels with p ≥ 0.5, or the sign


def _class_name(c: torch.Tensor, class_names: tuple[str, ...], task: str) -> str:
    if c.dim() == 0:
        i = int(c)
        if task == "regression":
            return "≥ 0" if i == 1 else "< 0"
        return class_names[i] if 0 <= i < len(class_names) else str(i)
    on = [class_names[i] for i in (c > 0.5).nonzero().reshape(-1).tolist()]
    return "{" + ", ".join(on) + "}"


def soft_pu(enc: SampleEncoding, ref: ReferenceEncoding, memory_state: dict[str, torch.Tensor] | None, *,
            task: str, class_names: tuple[str, ...], kernel: str = "rbf", bandwidth: float | None = None,
            sample_labeled: bool = False, sample_target: torch.Tensor | None = None, top_k: int = 8) -> SoftPU:
    """Pseudo-label, confidence, κ and the positive weights of a sample among a reference batch."""
    n = len(ref.indices)
    s = F.normalize(enc.s[None].float(), dim=-1)  # (1, d_z)
    lf = enc.logits_fused[None]  # (1, C)
    pseudo = pseudo_classes(lf, task)  # (1,) or (1, K)
    if sample_labeled and sample_target is not None:
        t = sample_target.reshape(1, -1) if sample_target.dim() == 1 else sample_target.reshape(1)  # (1,) / (1, K)
        own = contrastive_classes(t, task).to(pseudo.dtype)
    else:
        own = pseudo
    if task == "single-label":
        p = torch.softmax(lf.float(), -1)[0]
        confidence = float(p.max())
    elif task == "multi-label":
        p = torch.sigmoid(lf.float())[0]
        confidence = float(torch.maximum(p, 1 - p).mean())
    else:
        confidence = float("nan")

    d_z = ref.s_n.shape[1]
    protos = (memory_state or {}).get("protos")
    seen = (memory_state or {}).get("seen")
    n_cls = 2 if task == "regression" else len(class_names)
    if protos is None or seen is None or protos.shape[-1] != d_z:
        protos, seen = torch.zeros(n_cls, d_z), torch.zeros(n_cls, dtype=torch.bool)
    s_all = torch.cat([ref.s_n, s], 0)  # (N+1, d_z)
    cls_all = torch.cat([ref.classes, own.to(ref.classes.dtype)], 0)
    lab_all = torch.cat([ref.labeled, torch.tensor([bool(sample_labeled)])])  # (N+1,)
    kappa, sigma = soft_kappa(s_all, cls_all, protos.float().cpu(), seen.bool().cpu(), kernel, bandwidth)
    w = soft_pu_weights(cls_all, lab_all, kappa)  # (N+1, N+1)
    kap_eff = torch.where(lab_all, torch.ones_like(kappa), kappa)
    gives, receives = w[n, :n], w[:n, n]
    order = torch.argsort(gives, descending=True, stable=True)
    names = tuple(_class_name(c, class_names, task) for c in ref.classes)
    top = tuple((int(r), int(ref.indices[r]), float(gives[r]), names[int(r)], bool(ref.labeled[r]))
                for r in order[:top_k].tolist() if float(gives[r]) > 0)
    valid = bool(enc.present.all())
    missing = [nm for nm, p in zip(enc.modality_names, enc.present.tolist()) if not p]
    reason = "" if valid else (f"the sample lacks {', '.join(missing)}: S = g_0(f_0(H)) needs every modality, "
                               f"so ỹ and κ are computed from zero-filled inputs")
    return SoftPU(
        valid=valid, reason=reason, labeled=bool(sample_labeled),
        pseudo_label=int(own[0]) if own.dim() == 1 else -1, pseudo_label_name=_class_name(own[0], class_names, task),
        confidence=confidence, kappa=float(kap_eff[n]), kappa_raw=float(kappa[n]), sigma=float(sigma),
        kernel=kernel, prototypes_seen=int(seen.sum()), gives=_ro(gives), receives=_ro(receives),
        ref_indices=_ro(ref.indices), ref_labeled=_ro(ref.labeled), ref_class_names=names,
        ref_kappa=_ro(kap_eff[:n]), matrix=_ro(w), top=top, task=task,
    )


# ----------------------------------------------------------------------------------------------------------
# Recombining for a subset
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspection:
    """Everything the explorer shows for one sample under one modality subset (plain, read-only data)."""
    modality_names: tuple[str, ...]
    class_names: tuple[str, ...]
    task: str
    subset: tuple[bool, ...]  # the toggles as asked
    used: tuple[bool, ...]  # subset ∧ present: the modalities that contribute
    present: tuple[bool, ...]  # the sample's own presence mask
    probs: np.ndarray  # (C,) for the subset (NaN when no modality is used)
    probs_all: np.ndarray  # (C,) with every present modality
    delta: np.ndarray  # (C,) probs − probs_all
    pred: int  # predicted class for the subset (−1 when empty); regression: sign bin
    pred_all: int
    z_norm: np.ndarray  # (M,) ‖Z^i‖
    u_norm: np.ndarray  # (M,) ‖U^i‖
    ratio: np.ndarray  # (M,) ‖U^i‖ / ‖Z^i‖
    mod_probs: np.ndarray  # (M, C) c([U^i, Z^i]) as probabilities
    mod_pred: tuple[int, ...]  # (M,)
    rec_err: np.ndarray  # (M,)
    softpu: SoftPU | None = None
    extra: dict = field(default_factory=dict)  # room for the caller (e.g. timings); never used by the engine

    @property
    def empty(self) -> bool:
        """No modality contributes: the "no modality selected" state."""
        return not any(self.used)

    def label_set(self, probs: np.ndarray) -> tuple[str, ...]:
        """Multi-label: the labels predicted on (probability ≥ 0.5), in class order."""
        return tuple(c for c, p in zip(self.class_names, probs) if p >= 0.5)

    def prediction_text(self, which: str = "subset") -> str:
        """The prediction as a person reads it: a class name, a set of labels ({a, b}; {} for none), or a score.
        `which`: "subset", "all", or a modality name (that modality alone). "–" when there is none."""
        if which == "subset":
            probs, pred = self.probs, self.pred
        elif which == "all":
            probs, pred = self.probs_all, self.pred_all
        else:
            i = self.modality_names.index(which)
            probs, pred = self.mod_probs[i], self.mod_pred[i]
        if np.isnan(probs).any():
            return "–"
        if self.task == "regression":
            return f"{float(probs[0]):+.3f}"
        if self.task == "multi-label":
            return "{" + ", ".join(self.label_set(probs)) + "}"
        return self.class_names[pred] if 0 <= pred < len(self.class_names) else "–"

    def summary(self) -> dict:
        """A JSON-able digest (what a session stores as "the prediction")."""
        cls = self.class_names
        name = (lambda i: cls[i] if 0 <= i < len(cls) else None) if self.task != "regression" else (lambda i: None)
        return {
            "subset": [n for n, u in zip(self.modality_names, self.subset) if u],
            "used": [n for n, u in zip(self.modality_names, self.used) if u],
            "pred": self.pred, "pred_name": name(self.pred), "pred_all": self.pred_all,
            "pred_all_name": name(self.pred_all),
            "probs": [None if np.isnan(v) else float(v) for v in self.probs],
            "probs_all": [float(v) for v in self.probs_all],
            "prediction": self.prediction_text("subset"), "prediction_all": self.prediction_text("all"),
        }


def recombine(enc: SampleEncoding, subset: tuple[bool, ...] | list[bool], task: str,
              class_names: tuple[str, ...], softpu: SoftPU | None = None) -> Inspection:
    """The subset's view of an encoded sample: one `combine_logits` on (1, M, C), no model call."""
    m = len(enc.modality_names)
    sub = tuple(bool(x) for x in subset)
    if len(sub) != m:
        raise ValueError(f"subset has {len(sub)} entries, the model has {m} modalities")
    sub_t = torch.tensor(sub, dtype=torch.bool)
    used = sub_t & enc.present  # (M,)
    lm = enc.logits_mod[None]  # (1, M, C)

    def logits_of(mask: torch.Tensor) -> torch.Tensor:  # (M,) bool -> (C,)
        if enc.subset_table is not None:
            return enc.subset_table[int(subset_index(mask))]
        return combine_logits(lm, mask[None])[0]
    probs_all = outputs_to_probs(logits_of(enc.present), task)  # (C,)
    if used.any():
        probs = outputs_to_probs(logits_of(used), task)
    else:
        probs = torch.full_like(probs_all, float("nan"))
    mod_probs = outputs_to_probs(enc.logits_mod, task)  # (M, C)
    zn, un = enc.z.norm(dim=-1), enc.u.norm(dim=-1)  # (M,)
    p_np, pa_np = _ro(probs.double()), _ro(probs_all.double())
    mp = _ro(mod_probs.double())
    return Inspection(
        modality_names=enc.modality_names, class_names=tuple(class_names), task=task, subset=sub,
        used=tuple(used.tolist()), present=tuple(enc.present.tolist()), probs=p_np, probs_all=pa_np,
        delta=_ro(p_np - pa_np), pred=_predicted(p_np, task), pred_all=_predicted(pa_np, task),
        z_norm=_ro(zn.double()), u_norm=_ro(un.double()), ratio=_ro((un / zn.clamp(min=1e-12)).double()),
        mod_probs=mp, mod_pred=tuple(_predicted(row, task) for row in mp), rec_err=_ro(enc.rec_err.double()),
        softpu=softpu,
    )


class SampleInspector:
    """Caches one sample's encoding (and its soft-PU view) and answers `inspect(subset)` without the model."""

    def __init__(self, model: RobultModel, sample: SplitData | Batch, *, task: str, class_names: tuple[str, ...],
                 reference: ReferenceEncoding | None = None, memory_state: dict | None = None,
                 kernel: str = "rbf", bandwidth: float | None = None, sample_labeled: bool = False) -> None:
        self.task = task
        self.class_names = tuple(class_names)
        self.encoding = encode_sample(model, sample)
        self.softpu = None
        if reference is not None:
            self.softpu = soft_pu(self.encoding, reference, memory_state, task=task, class_names=self.class_names,
                                  kernel=kernel, bandwidth=bandwidth, sample_labeled=sample_labeled,
                                  sample_target=sample.target[0] if sample_labeled else None)

    def inspect(self, subset: tuple[bool, ...] | list[bool]) -> Inspection:
        return recombine(self.encoding, subset, self.task, self.class_names, self.softpu)


def inspect_sample(model: RobultModel, sample: SplitData | Batch, subset: tuple[bool, ...], *,
                   memory_state: dict | None = None, reference: Batch | SplitData | ReferenceEncoding | None = None,
                   kernel: str = "rbf", bandwidth: float | None = None, task: str = "single-label",
                   class_names: tuple[str, ...] | None = None, reference_labeled: torch.Tensor | None = None,
                   sample_labeled: bool = False) -> Inspection:
    """Everything about one sample (one row) under one modality subset. For repeated subsets of the same sample
    use `SampleInspector` (encode once, recombine per toggle)."""
    if class_names is None:
        c = int(model.classifier.out_features if isinstance(model.classifier, torch.nn.Linear)
                else model.fusion_head.out_features)
        class_names = tuple(str(i) for i in range(c))
    ref = reference
    if reference is not None and not isinstance(reference, ReferenceEncoding):
        ref = encode_reference(model, reference, task, labeled=reference_labeled)
    return SampleInspector(model, sample, task=task, class_names=class_names, reference=ref,
                           memory_state=memory_state, kernel=kernel, bandwidth=bandwidth,
                           sample_labeled=sample_labeled).inspect(subset)


# ----------------------------------------------------------------------------------------------------------
# A whole split: flips and the latent view
# ----------------------------------------------------------------------------------------------------------


def subset_predictions(enc: EncodedSplit, subset: tuple[bool, ...] | torch.Tensor, task: str = "single-label"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, rows) for a subset: argmax (single-label), thresholded multi-hot (multi-label) or sign bin
    (regression); rows (N,) bool where at least one modality of the subset is present in the data."""
    logits, rows = subset_logits(enc, subset)
    if task == "single-label":
        return logits.argmax(-1), rows
    if task == "multi-label":
        return (logits > 0).long(), rows
    return (logits[:, 0] >= 0).long(), rows


def flipped_samples(enc_full: EncodedSplit, subset: tuple[bool, ...] | torch.Tensor,
                    task: str = "single-label") -> np.ndarray:
    """Indices (sorted, int64) of the samples whose prediction under `subset` differs from the prediction
    with every (present) modality. Samples with none of the subset's modalities are not counted."""
    m = enc_full.mask.shape[1]
    pred_sub, rows = subset_predictions(enc_full, subset, task)
    pred_all, _ = subset_predictions(enc_full, (True,) * m, task)
    diff = pred_sub != pred_all
    if diff.dim() == 2:
        diff = diff.any(-1)
    return (diff & rows).nonzero().reshape(-1).numpy().astype(np.int64)


def pca_2d(x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of x (N, D) onto their first two principal components by an exact SVD of the centred data
    (deterministic, unlike torch.pca_lowrank). Signs are fixed so the largest loading of each axis is positive.
    Returns (coords (N, 2), explained variance ratio (2,)); fewer than 2 dimensions are padded with zeros."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    n = t.shape[0]
    if n == 0:
        return np.zeros((0, 2)), np.zeros(2)
    xc = t - t.mean(0, keepdim=True)  # (N, D)
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)  # vh: (K, D)
    k = min(2, vh.shape[0])
    comps = vh[:k]  # (k, D)
    idx = comps.abs().argmax(1)
    signs = torch.sign(comps[torch.arange(k), idx])
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    coords = xc @ comps.T  # (N, k)
    var = s.pow(2)
    ratio = (var[:k] / var.sum().clamp(min=1e-300)).numpy()
    if k < 2:
        coords = torch.cat([coords, torch.zeros(n, 2 - k, dtype=coords.dtype)], 1)
        ratio = np.concatenate([ratio, np.zeros(2 - k)])
    return coords.numpy(), ratio


def latent_points(enc: EncodedSplit, which: str = "z") -> dict[str, np.ndarray]:
    """Points of the latent view: one per (sample, present modality) for Z^i or U^i, projected by PCA.

    Returns {"xy": (P, 2), "sample": (P,) sample index, "modality": (P,) modality index, "explained": (2,)}.
    Z^i of all modalities share one space (g_0), so one PCA over them shows whether modalities align; U^i live
    in different spaces (g_i), projected together here only to show how separate they are.
    """
    lat = enc.z if which == "z" else enc.u  # (N, M, D)
    if lat.numel() == 0:
        raise ValueError("the encoded split holds no latents (encode with with_latents=True)")
    n, m, _ = lat.shape
    keep = enc.mask.reshape(-1)  # (N*M,)
    flat = lat.reshape(n * m, -1)[keep]
    xy, ratio = pca_2d(flat)
    sample = torch.arange(n).repeat_interleave(m)[keep].numpy()
    modality = torch.arange(m).repeat(n)[keep].numpy()
    return {"xy": xy, "sample": sample, "modality": modality, "explained": ratio}
