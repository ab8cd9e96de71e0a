"""The methods of the comparison as data: one table read by the trainer, the wizard and the CLI.

Every method trains the same `RobultModel` on the same data stream; a method is only a choice of losses
(docs/method.md, "Methods"). Adding a method means adding a row here and, if it needs a new loss, a branch
in `Trainer.compute_losses` keyed on the row's fields (never on the method's name).
"""
from __future__ import annotations

from dataclasses import dataclass

# config fields every method uses (schedule, data, model); the per-method ones are listed in `options`
_LOSS_PU = ("loss.lambda_pu", "loss.tau", "loss.kernel", "loss.bandwidth", "loss.prototype_momentum")
_LOSS_REC = ("loss.lambda_rec", "loss.rec_route", "loss.lambda_diff")
_LOSS_ST = ("loss.st_warmup",)


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the identifier used in configs, the CLI and the session database
    label: str  # a short human name for tables and legends
    description: str  # one line shown in the wizard and `robult --help`
    # contrastive alignment of Z^i with S: "soft-pu" (the method's L_PU), "supcon" (labeled pairs only) or "none"
    contrastive: str
    uses_rec: bool  # whether L_rec (and L_diff) are trained
    # pseudo-labels for the classifiers: "none", "confident" (threshold on the fused prediction) or "kappa"
    # (c_0's pseudo-label weighted by the soft weight κ)
    pseudo_labels: str
    moddrop: bool  # late fusion trained under random modality dropout instead of per-modality heads
    family: str  # "robult" (Robult and its ablations/variants) or "baseline"
    options: tuple[str, ...]  # config fields that change what this method does (the wizard shows these)

    @property
    def is_robult(self) -> bool:
        return self.family == "robult"

    @property
    def needs_soft_pu_terms(self) -> bool:
        """κ and pseudo-labels are computed when the contrastive loss or κ-weighted pseudo-labels use them."""
        return self.contrastive != "none" or self.pseudo_labels == "kappa"


_SPECS = (
    MethodSpec("robult", "Robult",
               "The full method: soft positive-unlabeled contrastive alignment (L_PU) plus latent reconstruction "
               "(L_rec) on top of the supervised loss.",
               "soft-pu", True, "none", False, "robult", _LOSS_PU + _LOSS_REC),
    MethodSpec("robult-no-rec", "Robult w/o L_rec", "Ablation: Robult without the latent reconstruction loss L_rec.",
               "soft-pu", False, "none", False, "robult", _LOSS_PU),
    MethodSpec("robult-supcon", "Robult SupCon",
               "Ablation: soft-PU replaced by supervised contrastive learning on labeled pairs only.",
               "supcon", True, "none", False, "robult", ("loss.lambda_pu", "loss.tau") + _LOSS_REC),
    MethodSpec("robult-no-pu", "Robult w/o L_PU",
               "Ablation: Robult without the contrastive loss (supervised + reconstruction only).",
               "none", True, "none", False, "robult", _LOSS_REC),
    MethodSpec("supervised", "Supervised",
               "Baseline: the same encoders and late fusion, trained on the labeled samples only.",
               "none", False, "none", False, "baseline", ()),
    MethodSpec("moddrop", "ModDrop", "Baseline: late fusion trained with random modality dropout.",
               "none", False, "none", True, "baseline", ("loss.moddrop_p",)),
    MethodSpec("self-training", "Self-training",
               "Baseline: the same model also trained on its own confident pseudo-labels of unlabeled samples.",
               "none", False, "confident", False, "baseline", ("loss.st_threshold",) + _LOSS_ST),
    MethodSpec("robult-st", "Robult-ST", "Robult that also trains the classifiers on κ-weighted pseudo-labels.",
               "soft-pu", True, "kappa", False, "robult", _LOSS_PU + _LOSS_REC + _LOSS_ST),
)

METHOD_SPECS: dict[str, MethodSpec] = {s.name: s for s in _SPECS}
METHOD_NAMES: tuple[str, ...] = tuple(METHOD_SPECS)


def method_spec(name: str) -> MethodSpec:
    """The spec of a method; an unknown name is a ValueError that lists the known ones."""
    try:
        return METHOD_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; one of {', '.join(METHOD_NAMES)}") from None


__all__ = ["METHOD_NAMES", "METHOD_SPECS", "MethodSpec", "method_spec"]
