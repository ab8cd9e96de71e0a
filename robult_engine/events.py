"""Plain, immutable progress events the trainer emits to callbacks (never live tensors or the model)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Started:
    """Sent once, after set-up and before the first step (also when a run resumes)."""
    labeled_indices: tuple[int, ...]  # indices into the training split that keep their labels
    n_train: int  # training samples
    steps_per_epoch: int
    total_steps: int  # planned steps of the whole run
    start_epoch: int  # 0 for a new run, the next epoch for a resumed one
    device: str  # "cpu", "cuda", "cuda:1"


@dataclass(frozen=True)
class StepEnded:
    epoch: int  # 0-based
    step: int  # step within the epoch, 0-based
    global_step: int  # 1-based count of optimizer steps so far
    total_steps: int  # planned steps of the whole run (epochs × steps per epoch)
    losses: dict[str, float]  # "sup", "pu", "rec", "total" (and "unsup": the unlabeled loss of fixmatch, co-training)
    lr: float
    elapsed_s: float


@dataclass(frozen=True)
class EpochEnded:
    epoch: int  # 0-based
    epochs: int  # planned number of epochs
    train_losses: dict[str, float]  # epoch means of the step losses
    # validation metrics per modality subset: {"image+audio": {"accuracy": .., "macro_f1": ..}, ...}
    val_metrics: dict[str, dict[str, float]]
    val_score: float  # the early-stopping score: mean over subsets of the primary metric (higher is better)
    is_best: bool
    # diagnostics (docs/method.md): per modality name
    z_norm: dict[str, float]  # mean ‖Z^i‖ over the validation split
    u_norm: dict[str, float]  # mean ‖U^i‖
    rec_error: dict[str, float]  # mean ‖H^i − r_i([U^i, Z^i])‖² per modality
    pu_weight_hist: tuple[float, ...]  # histogram (counts, normalised) of the soft weights κ of unlabeled pairs
    pu_weight_edges: tuple[float, ...]  # bin edges of that histogram (len = len(hist) + 1)
    pu_weight_mean: float
    # accuracy of c_0 pseudo-labels on the unlabeled training samples seen (soft-PU methods), or of the pseudo-labels
    # taken (self-training, fixmatch, co-training; measured against the training split's targets; on a multi-label
    # task the micro-F1 of the taken label decisions, so that all-"absent" pseudo-labels score 0); nan if n/a
    pseudo_label_acc: float
    elapsed_s: float
    checkpoint_path: str = ""  # the best checkpoint so far ("" when not saving)
    # self-training and robult-st after their warm-up, fixmatch and co-training: the fraction of the unlabeled
    # training samples seen this epoch that were taken as pseudo-labels (co-training: of their present (sample, head)
    # pairs; multi-label: of their labels); NaN before the warm-up and for the other methods
    pseudo_labels_taken: float = float("nan")
    # soft-PU methods, single-label, where the unlabeled training samples carry their true labels (benchmarks):
    # how good the soft weights κ were this epoch (docs/method.md, "Why, not only who wins"). kappa_precision:
    # the κ-weighted share of unlabeled positive pairs whose true classes match; kappa_auc: the AUC of κ as a
    # score for "this unlabeled sample's pseudo-label is right" (0.5: κ tells nothing). NaN where n/a.
    kappa_precision: float = float("nan")
    kappa_auc: float = float("nan")


@dataclass(frozen=True)
class Finished:
    stopped_early: bool  # patience ran out
    cancelled: bool  # should_stop() said so
    best_epoch: int
    best_score: float
    epochs_run: int
    checkpoint_path: str
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Failed:
    message: str  # readable, shown to the user as is
    kind: str  # "nan", "data", "oom", "config", "error"
    epoch: int = -1
    checkpoint_path: str = ""  # the best checkpoint written before the failure, if any


Event = Started | StepEnded | EpochEnded | Finished | Failed
