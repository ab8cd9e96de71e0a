"""The methods of the comparison as data: one table read by the trainer, the wizard and the CLI.

Every method trains the same `RobultModel` on the same data stream; a method is only a choice of losses
(docs/method.md, "Methods"). Adding a method means adding a row here and, if it needs a new loss, a branch
in `Trainer.compute_losses` keyed on the row's fields (never on the method's name).
"""
from __future__ import annotations

from dataclasses import dataclass

# config fields every method uses (schedule, data, model); the per-method ones are listed in `options`
_LOSS_PU = ("loss.lambda_pu", "loss.tau", "loss.kernel", "loss.bandwidth", "loss.prototype_momentum")
_LOSS_REC = ("loss.lambda_rec", "loss.rec_route", "loss.rec_warmup", "loss.lambda_diff")
_LOSS_ST = ("loss.st_warmup",)
_LOSS_FIXMATCH = ("loss.fixmatch_threshold", "loss.fixmatch_lambda_u", "loss.fixmatch_noise", "loss.fixmatch_drop_p",
                  "loss.fixmatch_token_drop", "loss.pseudo_balance", "loss.da_momentum")
_LOSS_COTRAIN = ("loss.cotrain_threshold", "loss.cotrain_lambda_u", "loss.pseudo_balance", "loss.da_momentum")

# Search spaces of `robult tune` (robult_engine/tune.py), as data: entries (config_field, kind, low, high, log)
# with kind "float" or "int" (sampled in [low, high], on a log scale when log is True) or "categorical"
# ((config_field, "categorical", (choice, ...), None, False)). Every method's space is COMMON_SPACE plus its own
# loss weights and thresholds; `tune.check_search_space` validates one against the configuration.
SEARCH_KINDS = ("float", "int", "categorical")
COMMON_SPACE = (("train.lr", "float", 1e-4, 3e-3, True),
                ("train.weight_decay", "float", 1e-6, 1e-2, True),
                ("model.dropout", "float", 0.0, 0.5, False))
_SPACE_PU = (("loss.lambda_pu", "float", 0.1, 3.0, True), ("loss.tau", "float", 0.05, 0.5, True))
_SPACE_REC = (("loss.lambda_rec", "float", 0.1, 3.0, True), ("loss.rec_warmup", "float", 0.0, 0.5, False))
_SPACE_ST = (("loss.st_warmup", "float", 0.0, 0.5, False),)


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the identifier used in configs, the CLI and the session database
    label: str  # a short human name for tables and legends
    description: str  # one line shown in the wizard and `robult --help`
    # contrastive alignment of Z^i with S: "soft-pu" (the method's L_PU), "supcon" (labeled pairs only) or "none"
    contrastive: str
    uses_rec: bool  # whether L_rec (and L_diff) are trained
    # pseudo-labels for the classifiers: "none", "confident" (threshold on the fused prediction), "kappa"
    # (c_0's pseudo-label weighted by the soft weight κ), "fixmatch" (the weak view's confident prediction trains
    # the strong view's heads) or "cotrain" (the other modalities' confident prediction trains each modality's head)
    pseudo_labels: str
    moddrop: bool  # late fusion trained under random modality dropout instead of per-modality heads
    # "robult" (Robult and its ablations/variants), "baseline" or "peer" (a method from the missing-modality
    # literature, docs/method.md "Peers")
    family: str
    options: tuple[str, ...]  # config fields that change what this method does (the wizard shows these)
    # what `robult tune` searches for this method: (config_field, kind, low, high, log) entries (see COMMON_SPACE);
    # () means the method cannot be tuned
    search_space: tuple = ()
    # how a modality subset is predicted (models/robult.py SUBSET_HEADS): "mean" of per-modality logits, ShaSpec's
    # "shared-substitution" or MMIN's "imagination"; a peer head adds its own modules and training branch
    subset_head: str = "mean"

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
               "soft-pu", True, "none", False, "robult", _LOSS_PU + _LOSS_REC,
               search_space=COMMON_SPACE + _SPACE_PU + _SPACE_REC),
    MethodSpec("robult-no-rec", "Robult w/o L_rec", "Ablation: Robult without the latent reconstruction loss L_rec.",
               "soft-pu", False, "none", False, "robult", _LOSS_PU, search_space=COMMON_SPACE + _SPACE_PU),
    MethodSpec("robult-supcon", "Robult SupCon",
               "Ablation: soft-PU replaced by supervised contrastive learning on labeled pairs only.",
               "supcon", True, "none", False, "robult", ("loss.lambda_pu", "loss.tau") + _LOSS_REC,
               search_space=COMMON_SPACE + _SPACE_PU + _SPACE_REC),
    MethodSpec("robult-no-pu", "Robult w/o L_PU",
               "Ablation: Robult without the contrastive loss (supervised + reconstruction only).",
               "none", True, "none", False, "robult", _LOSS_REC, search_space=COMMON_SPACE + _SPACE_REC),
    MethodSpec("supervised", "Supervised",
               "Baseline: the same encoders and late fusion, trained on the labeled samples only.",
               "none", False, "none", False, "baseline", (), search_space=COMMON_SPACE),
    MethodSpec("moddrop", "ModDrop", "Baseline: late fusion trained with random modality dropout.",
               "none", False, "none", True, "baseline", ("loss.moddrop_p",),
               search_space=COMMON_SPACE + (("loss.moddrop_p", "float", 0.1, 0.8, False),)),
    MethodSpec("self-training", "Self-training",
               "Baseline: the same model also trained on its own confident pseudo-labels of unlabeled samples.",
               "none", False, "confident", False, "baseline", ("loss.st_threshold",) + _LOSS_ST,
               search_space=COMMON_SPACE + (("loss.st_threshold", "float", 0.7, 0.99, False),) + _SPACE_ST),
    MethodSpec("robult-st", "Robult-ST", "Robult that also trains the classifiers on κ-weighted pseudo-labels.",
               "soft-pu", True, "kappa", False, "robult", _LOSS_PU + _LOSS_REC + _LOSS_ST,
               search_space=COMMON_SPACE + _SPACE_PU + _SPACE_REC + _SPACE_ST),
    MethodSpec("fixmatch", "FixMatch",
               "Baseline: FixMatch with distribution alignment and class-wise thresholds; the weak view's confident "
               "prediction of an unlabeled sample trains the heads on its strong view (modality dropout plus "
               "feature noise).",
               "none", False, "fixmatch", False, "baseline", _LOSS_FIXMATCH,
               search_space=COMMON_SPACE + (("loss.fixmatch_threshold", "float", 0.7, 0.99, False),
                                            ("loss.fixmatch_lambda_u", "float", 0.1, 3.0, True),
                                            ("loss.fixmatch_noise", "float", 0.0, 1.0, False))),
    MethodSpec("co-training", "Co-training",
               "Baseline: multi-view co-training; the other modalities' confident prediction of an unlabeled sample "
               "trains each modality's head, with distribution alignment and class-wise thresholds.",
               "none", False, "cotrain", False, "baseline", _LOSS_COTRAIN,
               search_space=COMMON_SPACE + (("loss.cotrain_threshold", "float", 0.7, 0.99, False),
                                            ("loss.cotrain_lambda_u", "float", 0.1, 3.0, True))),
    MethodSpec("shaspec", "ShaSpec",
               "Peer (Wang et al., CVPR 2023): shared and specific features per modality; a missing modality's "
               "feature is the mean of the present ones' shared features; trained under random modality dropout.",
               "none", False, "none", False, "peer", ("loss.moddrop_p", "loss.lambda_domain", "loss.lambda_align"),
               search_space=COMMON_SPACE + (("loss.moddrop_p", "float", 0.1, 0.8, False),
                                            ("loss.lambda_domain", "float", 0.01, 1.0, True),
                                            ("loss.lambda_align", "float", 0.01, 1.0, True)),
               subset_head="shared-substitution"),
    MethodSpec("mmin", "MMIN",
               "Peer (Zhao et al., ACL 2021): a missing modality's latent is imagined from the present ones by a "
               "cascaded residual autoencoder, then all modalities are fused; trained under random dropout.",
               "none", False, "none", False, "peer", ("loss.moddrop_p", "loss.lambda_imagine", "loss.lambda_cycle"),
               search_space=COMMON_SPACE + (("loss.moddrop_p", "float", 0.1, 0.8, False),
                                            ("loss.lambda_imagine", "float", 0.1, 10.0, True),
                                            ("loss.lambda_cycle", "float", 0.0, 2.0, False)),
               subset_head="imagination"),
)

METHOD_SPECS: dict[str, MethodSpec] = {s.name: s for s in _SPECS}
METHOD_NAMES: tuple[str, ...] = tuple(METHOD_SPECS)


def method_spec(name: str) -> MethodSpec:
    """The spec of a method; an unknown name is a ValueError that lists the known ones."""
    try:
        return METHOD_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; one of {', '.join(METHOD_NAMES)}") from None


__all__ = ["COMMON_SPACE", "METHOD_NAMES", "METHOD_SPECS", "MethodSpec", "SEARCH_KINDS", "method_spec"]
