"""Frozen configuration dataclasses with JSON round-trip and validation.

Every hyper-parameter of the method (docs/method.md) is a field here, is shown in the app's wizard, and is stored with
each run. Builders turn configs into keyword arguments; modules never receive a config object.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .errors import ConfigError  # defined in errors.py, importable from here as always
from .methods import METHOD_NAMES
from .missing_spec import parse_missing

METHODS = METHOD_NAMES  # the table of method specs lives in robult_engine/methods.py
REC_ROUTES = ("projector", "branch", "full")
# how the vector and sequence encoders normalise their inputs (docs/method.md, "Input normalisation")
INPUT_NORMS = ("feature", "layer", "none")
KERNELS = ("rbf", "laplacian", "inverse-l2")
# how FixMatch and co-training keep their pseudo-labels from collapsing onto few classes (docs/method.md,
# "Semi-supervised baselines")
PSEUDO_BALANCES = ("none", "da", "flexmatch", "da+flexmatch", "freematch", "da+freematch")
DEVICES = ("auto", "cpu", "cuda")
TASKS = ("single-label", "multi-label", "regression")
# Seeds (`seed`, `data.seed`) are 32-bit unsigned integers: every generator they feed (numpy's, torch's) takes them.
MAX_SEED = 2 ** 32 - 1
# The largest batch (`train.batch_size`), refused beyond it before anything is allocated. A batch may be larger
# than the training split: its samples then repeat within the batch (labeled ones are oversampled anyway).
MAX_BATCH_SIZE = 65_536
# The largest PID-Synth training split (`data.synth_n_train`), generated in memory.
MAX_SYNTH_N_TRAIN = 1_000_000


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _check_seed(value: Any, where: str) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED,
           f"{where}: must be an integer in 0..{MAX_SEED}, got {value!r}")


def _check_types(obj: Any, section: str) -> None:
    """Refuse values of the wrong type (a string in a hand-edited JSON file, `--set x=abc`) by field name."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        ann = str(f.type).replace(" ", "")
        where = f"{section}.{f.name}" if section else f.name
        if dataclasses.is_dataclass(v):
            continue
        optional = ann.endswith("|None")
        base = ann[:-len("|None")] if optional else ann
        if v is None:
            _check(optional, f"{where}: a value is required (got null)")
            continue
        if base.startswith("tuple["):
            _check(isinstance(v, (tuple, list)) and all(isinstance(x, str) for x in v),
                   f"{where}: expected a list of names, got {v!r}")
            continue
        ok = _TYPES.get(base)
        if ok is None:
            continue
        _check(isinstance(v, ok) and not (base != "bool" and isinstance(v, bool)),
               f"{where}: expected {'a number' if base == 'float' else 'an integer' if base == 'int' else 'a ' + base}"
               f", got {v!r}")
        if base == "float":  # NaN, infinity, or an integer no float can hold
            _check(abs(v) <= 1e300, f"{where}: expected a finite number, got {v!r}")


@dataclass(frozen=True)
class DataConfig:
    # Which dataset: a built-in name ("av-digits", "pid-synth") or a path to a file/folder whose format is detected.
    dataset: str = "av-digits"
    # Fraction of the training split that keeps its labels (5 % is the paper's headline setting).
    label_fraction: float = 0.05
    # Modalities to use; empty means all modalities of the dataset.
    modalities: tuple[str, ...] = ()
    # Seed of the labeled split, batch order and PID-Synth generation.
    seed: int = 0
    # Probability of dropping each modality of a training sample (beyond the paper; 0 keeps the paper setting).
    train_modality_dropout: float = 0.0
    # Missing modalities in the training split, as a mechanism spec (robult_engine/missing.py), e.g. "mcar:0.3"
    # (rates are fractions MISSING); "" keeps the data's own mask. Drawn once with the mask seed `seed`, so every
    # method of a seed trains on the same incomplete samples.
    train_missing: str = ""
    # Add the dataset's `pool` split (AV-Digits: 1,317 real audio-only and image-only samples) to training as
    # incomplete UNLABELED samples (their labels are never used; the labeled indices stay those of `train`).
    train_pool: bool = False
    # PID-Synth only: number of training samples, and the bits of each information type.
    synth_n_train: int = 3000
    synth_redundant_bits: int = 1
    synth_unique_bits: int = 1
    synth_synergy_bits: int = 1
    synth_noise: float = 0.5
    # PID-Synth only: label-irrelevant bits per modality, and the feature width of each modality.
    synth_nuisance_bits: int = 8
    synth_dim: int = 32
    # Feature-Synth only (robult_engine/data/feature_synth.py; its training size is synth_n_train): the task
    # ("multi-label", "regression" or "single-label"), the number of labels / classes, the width of each view.
    feature_synth_task: str = "multi-label"
    feature_synth_labels: int = 23
    feature_synth_dim: int = 768

    def validate(self, known_modalities: tuple[str, ...] | None = None) -> None:
        _check_types(self, "data")
        _check(isinstance(self.dataset, str) and self.dataset.strip() != "", "data.dataset: must name a dataset or a path")
        _check(0.0 < self.label_fraction <= 1.0,
               f"data.label_fraction: must be in (0, 1], got {self.label_fraction}")
        _check_seed(self.seed, "data.seed")
        _check(0.0 <= self.train_modality_dropout < 1.0,
               f"data.train_modality_dropout: must be in [0, 1), got {self.train_modality_dropout}")
        if self.train_missing:
            specs = parse_missing(self.train_missing, where="data.train_missing:")
            _check(len(specs) == 1 and specs[0].mechanism not in ("subsets",),
                   f"data.train_missing: {self.train_missing}: give one setting (not a grid, not 'subsets')")
            if known_modalities is not None:
                names = specs[0].modalities
                unknown = [m for m in names if m not in known_modalities]
                _check(not unknown, f"data.train_missing: {self.train_missing}: unknown modality "
                       f"{unknown[0] if unknown else ''!r}; the dataset has {', '.join(known_modalities)}")
                _check(specs[0].mechanism == "subset" or names or len(specs[0].rates) in (1, len(known_modalities))
                       or specs[0].mechanism == "mnar-class",
                       f"data.train_missing: {self.train_missing}: give one rate or one per modality "
                       f"({len(known_modalities)}: {', '.join(known_modalities)})")
        _check(len(set(self.modalities)) == len(self.modalities), f"data.modalities: duplicates in {self.modalities}")
        if known_modalities is not None and self.modalities:
            unknown = [m for m in self.modalities if m not in known_modalities]
            if unknown:
                raise ConfigError(f"data.modalities: unknown modality {unknown[0]!r}; "
                                  f"the dataset has {', '.join(known_modalities)}")
        _check(20 <= self.synth_n_train <= MAX_SYNTH_N_TRAIN,
               f"data.synth_n_train: must be in 20..{MAX_SYNTH_N_TRAIN}, got {self.synth_n_train}")
        for name in ("synth_redundant_bits", "synth_unique_bits", "synth_synergy_bits"):
            _check(0 <= getattr(self, name) <= 4, f"data.{name}: must be in 0..4")
        _check(self.synth_redundant_bits + self.synth_unique_bits + self.synth_synergy_bits > 0,
               "data: PID-Synth needs at least one information bit")
        _check(self.synth_noise >= 0, "data.synth_noise: must be >= 0")
        _check(0 <= self.synth_nuisance_bits <= 16, "data.synth_nuisance_bits: must be in 0..16")
        _check(2 <= self.synth_dim <= 1024, "data.synth_dim: must be in 2..1024")
        _check(self.feature_synth_task in ("multi-label", "regression", "single-label"),
               f"data.feature_synth_task: one of multi-label, regression, single-label; got {self.feature_synth_task!r}")
        _check(2 <= self.feature_synth_labels <= 64, "data.feature_synth_labels: must be in 2..64")
        _check(2 <= self.feature_synth_dim <= 4096, "data.feature_synth_dim: must be in 2..4096")


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def parse_encoder_entries(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`model.encoders` entries "modality=package.module:function" -> {modality: "package.module:function"}.

    Checks the syntax only (never imports anything); the message names the entry and what is wrong."""
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, ref = str(entry).partition("=")
        name, ref = name.strip(), ref.strip()
        module, colon, func = ref.partition(":")
        _check(bool(sep) and bool(name) and bool(colon),
               f"model.encoders: {entry!r}: expected MODALITY=package.module:function, e.g. "
               f"'audio=examples.transformer_encoder:make_encoder'")
        _check(_DOTTED.fullmatch(module) is not None,
               f"model.encoders: {entry!r}: {module!r} is not a module name (dotted Python identifiers)")
        _check(_DOTTED.fullmatch(func) is not None,
               f"model.encoders: {entry!r}: {func!r} is not a function name (a Python identifier)")
        _check(name not in out, f"model.encoders: modality {name!r} is given twice")
        out[name] = f"{module}:{func}"
    return out


@dataclass(frozen=True)
class ModelConfig:
    # Width of every encoder output H^i and of the fusion output H^0.
    d_h: int = 128
    # Size of the redundant latent Z^i (shared projector g_0).
    d_z: int = 64
    # Size of the unique latent U^i (modality projectors g_i).
    d_u: int = 32
    # Hidden width of the projectors, reconstructors and the MLP classifier.
    d_hidden: int = 128
    # Dropout inside encoders and heads (0 keeps runs bit-reproducible across process counts).
    dropout: float = 0.1
    # Classifier c: "linear" or "mlp".
    classifier: str = "mlp"
    # Fusion branch f_0: "mlp" (concatenation) or "gated".
    fusion: str = "mlp"
    # Sequence encoder: "conv" (1-D conv + masked mean pool) or "gru".
    sequence_encoder: str = "conv"
    # Hashed n-gram text encoder: number of hash buckets.
    text_buckets: int = 2 ** 15
    # Your own encoders, one "modality=package.module:function" entry per modality: the function is called as
    # function(shape=..., d_h=..., dropout=...) and returns a torch.nn.Module mapping (input, lengths) to
    # (B, d_h). Modalities not named keep the built-in encoder of their kind. Stored by name in checkpoints;
    # a checkpoint naming code outside robult_engine imports it only when trusted (docs/custom-encoders.md).
    encoders: tuple[str, ...] = ()
    # Input normalisation of the vector and sequence encoders (docs/method.md, "Input normalisation"): "feature"
    # standardises each input feature with its mean and std on the training split's present samples (fitted
    # before the first epoch, stored in checkpoints); "layer" is a per-sample LayerNorm over the input features
    # (right for high-dimensional embeddings, destructive for a few tabular features; configs written before
    # this field get it); "none" feeds the inputs as they are.
    input_norm: str = "feature"

    def validate(self) -> None:
        _check_types(self, "model")
        for name in ("d_h", "d_z", "d_u", "d_hidden"):
            v = getattr(self, name)
            _check(isinstance(v, int) and 1 <= v <= 8192, f"model.{name}: must be an integer in 1..8192, got {v}")
        _check(0.0 <= self.dropout < 1.0, f"model.dropout: must be in [0, 1), got {self.dropout}")
        _check(self.classifier in ("linear", "mlp"), f"model.classifier: 'linear' or 'mlp', got {self.classifier!r}")
        _check(self.fusion in ("mlp", "gated"), f"model.fusion: 'mlp' or 'gated', got {self.fusion!r}")
        _check(self.sequence_encoder in ("conv", "gru"),
               f"model.sequence_encoder: 'conv' or 'gru', got {self.sequence_encoder!r}")
        _check(self.text_buckets >= 16, "model.text_buckets: must be >= 16")
        parse_encoder_entries(self.encoders)  # syntax only: nothing is imported here
        _check(self.input_norm in INPUT_NORMS,
               f"model.input_norm: one of {', '.join(INPUT_NORMS)}, got {self.input_norm!r}")


@dataclass(frozen=True)
class LossConfig:
    # Weight of the soft-PU contrastive loss L_PU.
    lambda_pu: float = 1.0
    # Weight of the latent reconstruction loss L_rec.
    lambda_rec: float = 1.0
    # Which parameters L_rec trains (docs/method.md, "Latent reconstruction"): "branch" reaches the modality's
    # own branch f_i, g_i, r_i against a detached, per-sample standardised H^i; "projector" only g_i and r_i
    # (H^i detached as g_i's input too); "full" (the default, the route validation picked on every built-in
    # dataset, docs/results/README.md) also lets the gradient through the standardised target.
    rec_route: str = "full"
    # Fraction of the training steps over which λ_rec ramps linearly from 0 to its value (docs/method.md,
    # "Latent reconstruction"): early U^i and Z^i are noise, and reconstructing H^i from them pulls the encoders
    # toward that noise before the labels have shaped them. 0 applies λ_rec from the first step.
    rec_warmup: float = 0.3
    # Weight of the difference term ‖Û^T Ẑ‖²_F (batch-centred, normalised U^i and Z^i); 0 disables it.
    lambda_diff: float = 0.0
    # Temperature τ of the contrastive softmax.
    tau: float = 0.1
    # Kernel turning the distance to the class prototype into the soft weight κ.
    kernel: str = "rbf"
    # Bandwidth σ of the kernel; None uses the median heuristic over the batch.
    bandwidth: float | None = None
    # Momentum of the running memory of labeled class prototypes.
    prototype_momentum: float = 0.9
    # Self-training: confidence a pseudo-label needs before it is trained on (robult-st weights by κ instead).
    st_threshold: float = 0.9
    # Self-training and robult-st: fraction of the epochs before pseudo-labels are trained on.
    st_warmup: float = 0.2
    # Modality dropout baseline, and the training-time missingness of the peers shaspec and mmin: probability of
    # dropping each modality (at least one is kept).
    moddrop_p: float = 0.5
    # ShaSpec (docs/method.md, "Peers"): weights of the domain-classification loss on the specific features U^i and
    # of the distribution alignment (L1) of the shared features Z^i of a sample's modalities.
    lambda_domain: float = 0.1
    lambda_align: float = 0.1
    # MMIN (docs/method.md, "Peers"): weights of the forward imagination loss (MSE of an imagined H^i of a dropped
    # modality to its true, detached H^i) and of the backward (cycle) imagination loss.
    lambda_imagine: float = 1.0
    lambda_cycle: float = 0.5
    # FixMatch (docs/method.md, "FixMatch"): confidence the weak view's pseudo-label needs, weight of the unlabeled
    # loss, Gaussian feature noise of the strong view (its std relative to each feature's std on the training
    # split; vector, image and sequence inputs), the strong view's modality dropout, and its text token dropout.
    fixmatch_threshold: float = 0.95
    fixmatch_lambda_u: float = 1.0
    fixmatch_noise: float = 0.5
    fixmatch_drop_p: float = 0.5
    fixmatch_token_drop: float = 0.2
    # Co-training (docs/method.md, "Co-training"): confidence the other views' mean prediction needs before it
    # pseudo-labels a modality's head, and the weight of that loss.
    cotrain_threshold: float = 0.9
    cotrain_lambda_u: float = 1.0
    # FixMatch and co-training (docs/method.md, "Semi-supervised baselines"): "da" aligns the pseudo-labels' class
    # distribution with the labeled prior (ReMixMatch), "freematch" lowers the threshold of the classes predicted
    # less often (FreeMatch's class-wise thresholds on the fixed τ), "flexmatch" uses FlexMatch's class-adaptive
    # thresholds, "da+freematch" (the default) and "da+flexmatch" combine, "none" is the paper's FixMatch. On a
    # multi-label task "da" aligns each label's positive rate with its labeled prior, and "freematch" or
    # "flexmatch" admit each label's confident present / absent pseudo-labels in the ratio of that prior.
    pseudo_balance: str = "da+freematch"
    # Momentum (per step) of the running mean of predicted class probabilities that distribution alignment divides
    # by and the class-wise thresholds scale with; 0.9 follows a model that starts to collapse within an epoch
    # (0.99 lagged behind it at 1 % labels).
    da_momentum: float = 0.9

    def validate(self) -> None:
        _check_types(self, "loss")
        _check(self.lambda_pu >= 0, f"loss.lambda_pu: must be >= 0, got {self.lambda_pu}")
        _check(self.lambda_rec >= 0, f"loss.lambda_rec: must be >= 0, got {self.lambda_rec}")
        _check(self.rec_route in REC_ROUTES,
               f"loss.rec_route: one of {', '.join(REC_ROUTES)}, got {self.rec_route!r}")
        _check(self.lambda_diff >= 0, f"loss.lambda_diff: must be >= 0, got {self.lambda_diff}")
        _check(0.0 <= self.rec_warmup < 1.0, f"loss.rec_warmup: must be in [0, 1), got {self.rec_warmup}")
        _check(self.tau > 0, f"loss.tau: the temperature must be > 0, got {self.tau}")
        _check(self.kernel in KERNELS, f"loss.kernel: one of {', '.join(KERNELS)}, got {self.kernel!r}")
        _check(self.bandwidth is None or self.bandwidth > 0,
               f"loss.bandwidth: must be > 0 or null (median heuristic), got {self.bandwidth}")
        _check(0.0 <= self.prototype_momentum < 1.0, "loss.prototype_momentum: must be in [0, 1)")
        _check(0.0 < self.st_threshold <= 1.0, "loss.st_threshold: must be in (0, 1]")
        _check(0.0 <= self.st_warmup < 1.0, "loss.st_warmup: must be in [0, 1)")
        _check(0.0 <= self.moddrop_p < 1.0, "loss.moddrop_p: must be in [0, 1)")
        for name in ("lambda_domain", "lambda_align", "lambda_imagine", "lambda_cycle"):
            v = getattr(self, name)
            _check(0 <= v < float("inf"), f"loss.{name}: must be a finite number >= 0, got {v}")
        _check(0.0 < self.fixmatch_threshold <= 1.0, "loss.fixmatch_threshold: must be in (0, 1]")
        _check(self.fixmatch_lambda_u >= 0, f"loss.fixmatch_lambda_u: must be >= 0, got {self.fixmatch_lambda_u}")
        _check(self.fixmatch_noise >= 0, f"loss.fixmatch_noise: must be >= 0, got {self.fixmatch_noise}")
        _check(0.0 <= self.fixmatch_drop_p < 1.0, "loss.fixmatch_drop_p: must be in [0, 1)")
        _check(0.0 <= self.fixmatch_token_drop < 1.0, "loss.fixmatch_token_drop: must be in [0, 1)")
        _check(0.0 < self.cotrain_threshold <= 1.0, "loss.cotrain_threshold: must be in (0, 1]")
        _check(self.cotrain_lambda_u >= 0, f"loss.cotrain_lambda_u: must be >= 0, got {self.cotrain_lambda_u}")
        _check(self.pseudo_balance in PSEUDO_BALANCES,
               f"loss.pseudo_balance: one of {', '.join(PSEUDO_BALANCES)}, got {self.pseudo_balance!r}")
        _check(0.0 <= self.da_momentum < 1.0, "loss.da_momentum: must be in [0, 1)")


def labeled_per_batch_for(batch_size: int, labeled_per_batch: int) -> int:
    """The labeled share of a batch after its size changed: at most a quarter of the batch, at least 1."""
    return max(1, min(labeled_per_batch, batch_size // 4)) if batch_size >= 2 else 1


@dataclass(frozen=True)
class TrainConfig:
    # Maximum number of epochs (an epoch is one pass over the training split).
    epochs: int = 30
    # Global batch size (split across processes under torchrun).
    batch_size: int = 64
    # Labeled samples in every batch (labeled ones are oversampled so each batch has some).
    labeled_per_batch: int = 16
    # AdamW learning rate and weight decay.
    lr: float = 2e-3
    weight_decay: float = 1e-4
    # Fraction of the steps used for linear warm-up before the cosine decay.
    warmup_frac: float = 0.05
    # Gradient-norm clipping (0 disables it).
    grad_clip: float = 5.0
    # Early stopping: epochs without improvement of the validation score before stopping (0 disables it).
    patience: int = 8
    # "auto" uses CUDA when present (bf16 autocast), else the CPU.
    device: str = "auto"

    def validate(self) -> None:
        _check_types(self, "train")
        _check(isinstance(self.epochs, int) and self.epochs >= 1, f"train.epochs: must be >= 1, got {self.epochs}")
        _check(isinstance(self.batch_size, int) and 2 <= self.batch_size <= MAX_BATCH_SIZE,
               f"train.batch_size: must be in 2..{MAX_BATCH_SIZE}, got {self.batch_size}")
        _check(1 <= self.labeled_per_batch <= self.batch_size,
               f"train.labeled_per_batch: must be in 1..batch_size, got {self.labeled_per_batch}")
        _check(self.lr > 0, f"train.lr: the learning rate must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "train.weight_decay: must be >= 0")
        _check(0.0 <= self.warmup_frac < 1.0, "train.warmup_frac: must be in [0, 1)")
        _check(self.grad_clip >= 0, "train.grad_clip: must be >= 0")
        _check(self.patience >= 0, "train.patience: must be >= 0")
        _check(self.device in DEVICES, f"train.device: one of {', '.join(DEVICES)}, got {self.device!r}")


@dataclass(frozen=True)
class RunConfig:
    # Method to train: Robult, an ablation or a baseline (see METHODS).
    method: str = "robult"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Seed of the model initialisation and dropout.
    seed: int = 0

    def validate(self, known_modalities: tuple[str, ...] | None = None) -> "RunConfig":
        _check_types(self, "")
        _check(isinstance(self.method, str) and self.method in METHODS, f"method: unknown method {self.method!r}; one of {', '.join(METHODS)}")
        _check_seed(self.seed, "seed")
        self.data.validate(known_modalities)
        self.model.validate()
        self.loss.validate()
        self.train.validate()
        return self

    # --- plain data round trip -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        if not isinstance(d, Mapping):
            raise ConfigError(f"config: expected a JSON object, got {type(d).__name__}")
        sub = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key == "loss" and isinstance(value, Mapping):
                value = _legacy_loss(value)
            if key == "model" and isinstance(value, Mapping):
                value = _legacy_model(value)
            if key in sub:
                kwargs[key] = _sub_from_dict(sub[key], value, key)
            elif key in ("method", "seed"):
                kwargs[key] = value
            else:
                raise ConfigError(f"config: unknown field {key!r}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config: not valid JSON ({e})") from None
        except ValueError as e:  # e.g. an integer of more digits than Python converts
            raise ConfigError(f"config: unusable JSON ({e})") from None
        except RecursionError:
            raise ConfigError("config: the JSON is nested too deeply") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "RunConfig":
        """Copy with changes; nested fields by dotted names, e.g. replace(**{"train.epochs": 3}). A name that is
        not a field (or a whole section given a value other than its config object) is a ConfigError."""
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        own = {f.name: getattr(self, f.name) for f in fields(self)}
        sections = [n for n, v in own.items() if dataclasses.is_dataclass(v)]
        for key, value in changes.items():
            if "." in key:
                section, name = key.split(".", 1)
                nested.setdefault(section, {})[name] = value
            elif key not in own:
                raise ConfigError(f"config: unknown field {key!r}; the top-level fields are "
                                  f"{', '.join(n for n in own if n not in sections)}, the sections "
                                  f"{', '.join(sections)} (SECTION.FIELD)")
            elif key in sections and not isinstance(value, type(own[key])):
                raise ConfigError(f"config: {key} is a section; set its fields one by one ({key}.FIELD)")
            else:
                top[key] = value
        for section, values in nested.items():
            cur = getattr(self, section, None) if section in sections else None
            if not dataclasses.is_dataclass(cur):
                raise ConfigError(f"config: unknown section {section!r}; one of {', '.join(sections)}")
            names = {f.name for f in fields(cur)}
            for n in values:
                if n not in names:
                    raise ConfigError(f"config: unknown field {section}.{n}")
            top[section] = dataclasses.replace(cur, **values)
        return dataclasses.replace(self, **top)


# every field a loss section held before `rec_route` and `lambda_diff` existed (written whole by `to_json`)
_LEGACY_LOSS_FIELDS = frozenset({"lambda_pu", "lambda_rec", "tau", "kernel", "bandwidth", "prototype_momentum",
                                 "st_threshold", "st_warmup", "moddrop_p"})


def _legacy_loss(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """A loss section written by a version before L_rec had routes (all of its fields, none of the new ones) was
    trained with the route now called "projector": keep it so, so that its checkpoints, resumes and session rows
    mean what they meant. A hand-written partial section gets the current defaults."""
    if set(value) == _LEGACY_LOSS_FIELDS:
        return {**value, "rec_route": "projector", "rec_warmup": 0.0}
    # written whole by a version with routes but before the L_rec warm-up: no warm-up (a section this version
    # writes always holds rec_warmup; a hand-written partial one lacks some of the older fields)
    if _LEGACY_LOSS_FIELDS | {"rec_route", "lambda_diff"} <= set(value) and "rec_warmup" not in value:
        return {**value, "rec_warmup": 0.0}
    return value


# every field a model section held before `input_norm` existed (written whole by `to_json`; `encoders` came later)
_LEGACY_MODEL_FIELDS = frozenset({"d_h", "d_z", "d_u", "d_hidden", "dropout", "classifier", "fusion",
                                  "sequence_encoder", "text_buckets"})


def _legacy_model(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """A model section written whole by a version before `input_norm` existed (every older field, no input_norm)
    was trained with a per-sample LayerNorm over the inputs: keep it so, so that its checkpoints load and predict
    as before and its resumes continue the same model. A hand-written partial section gets the current default."""
    if _LEGACY_MODEL_FIELDS <= set(value) and "input_norm" not in value:
        return {**value, "input_norm": "layer"}
    return value


def _sub_from_dict(cls: type, value: Any, section: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(f"config.{section}: expected an object, got {type(value).__name__}")
    names = {f.name: f for f in fields(cls)}
    kwargs = {}
    for k, v in value.items():
        if k not in names:
            raise ConfigError(f"config.{section}: unknown field {k!r}")
        if isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)
