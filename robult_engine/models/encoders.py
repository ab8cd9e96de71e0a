"""Modality encoders f_i: X^i → H^i (B, d_h): one built-in encoder per modality kind, or your own.

No batch norm anywhere, so results do not depend on how a batch is split across processes.

Input normalisation (`model.input_norm`, docs/method.md "Input normalisation"): the vector and sequence encoders
start with one of
- "feature": `FeatureStandardise`, (x − mean) / std per input feature, with mean and std fitted once on the
  training split's present samples (`fit_input_norm`, called by the Trainer before the first epoch) and held as
  buffers, so checkpoints carry them;
- "layer": a per-sample LayerNorm over the input features (configs written before `model.input_norm` existed);
- "none": the inputs as they are.
Images (bytes or [0, 1] pixels, GroupNorm after each convolution) and text (token ids) have no input norm.

Your own encoder (docs/custom-encoders.md): `model.encoders` names a factory per modality as
"modality=package.module:function". `build_encoder(..., factory=...)` imports it only when `trust_code`
trusts its module, calls `function(shape=..., d_h=..., dropout=...)` and checks on every forward pass that the
module returns (B, d_h), naming the factory when it does not. Factories inside this module
(`BUILTIN_FACTORIES`) need no trust.

Trust names what it trusts. `trust_code` is one of:
- a collection of module names (`{"mypkg.encoders"}`): exactly those modules may be imported; a file that names
  any other module is refused (`UntrustedCodeError` lists the ones that are not trusted). This is what the
  CLI's `--trust-code MODULE[,MODULE]` and the app's trust dialog pass;
- `False` / empty: no outside module (the default of everything that opens a file);
- `True`: every module the config names, for a config the caller wrote itself (the Trainer with the user's
  own flags or config file). Never pass True for a config read from a file someone else may have written.
"""
from __future__ import annotations

import importlib
from typing import Callable, Iterable, Union

import torch
from torch import nn

from ..config import INPUT_NORMS, ConfigError, parse_encoder_entries
from ..errors import UntrustedCodeError


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    """Two-layer MLP with LayerNorm + GELU, the building block of projectors, reconstructors and heads."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.LayerNorm(d_hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out))


class FeatureStandardise(nn.Module):
    """x ↦ (x − mean) / std over the last axis (the input features), with one mean and std per feature fitted on
    the training data (`fit_input_norm`) and kept as buffers (saved and loaded with the weights). Unfitted it is
    the identity (mean 0, std 1). No learned parameters and no batch statistics: a sample's output depends on
    that sample alone."""

    def __init__(self, d_in: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)  # (..., D) -> (..., D)

    def extra_repr(self) -> str:
        return str(self.mean.numel())


def input_norm_layer(d_in: int, input_norm: str) -> nn.Module:
    """The first layer of a vector or sequence encoder for `model.input_norm` (module docstring)."""
    if input_norm == "feature":
        return FeatureStandardise(d_in)
    if input_norm == "layer":
        return nn.LayerNorm(d_in)
    if input_norm == "none":
        return nn.Identity()
    raise ConfigError(f"model.input_norm: one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")


class VectorEncoder(nn.Module):
    """Input norm (`model.input_norm`) and a two-layer MLP. `input_norm` defaults to "layer", the layout this
    encoder always had, so that factories written before `model.input_norm` existed build what they built."""

    def __init__(self, d_in: int, d_h: int, dropout: float, input_norm: str = "layer") -> None:
        super().__init__()
        self.net = nn.Sequential(input_norm_layer(d_in, input_norm), mlp(d_in, d_h, d_h, dropout))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)  # (B, D) -> (B, d_h)


class ImageEncoder(nn.Module):
    """Small CNN: three 3×3 convolutions (the last two strided), global average pool, linear."""

    def __init__(self, channels: int, d_h: int, dropout: float, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.GroupNorm(8, 2 * width), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2), nn.GroupNorm(8, 2 * width), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width, d_h),
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if not x.is_floating_point():  # images stored as bytes (data.loading.load_images): 0..255 -> [0, 1]
            x = x.float() / 255.0
        return self.net(x)  # (B, C, H, W) -> (B, d_h)


def _masked_pool(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean and max over valid time steps. h: (B, T, D), lengths: (B,) -> (B, 2D)."""
    t = torch.arange(h.shape[1], device=h.device)
    valid = (t[None, :] < lengths.clamp(min=1)[:, None]).unsqueeze(-1)  # (B, T, 1)
    mean = (h * valid).sum(1) / valid.sum(1).clamp(min=1)  # (B, D)
    mx = h.masked_fill(~valid, torch.finfo(h.dtype).min).amax(1)  # (B, D)
    return torch.cat([mean, mx], dim=-1)


class ConvSequenceEncoder(nn.Module):
    """Input norm per frame, 1-D convolutions over time, masked mean+max pooling over the valid frames."""

    def __init__(self, d_in: int, d_h: int, dropout: float, input_norm: str = "layer") -> None:
        super().__init__()
        self.norm = input_norm_layer(d_in, input_norm)
        self.conv = nn.Sequential(
            nn.Conv1d(d_in, d_h, 5, padding=2), nn.GELU(),
            nn.Conv1d(d_h, d_h, 5, padding=2), nn.GELU(),
        )
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * d_h, d_h))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device)
        valid = (t[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
        x = self.norm(x) * valid  # (B, T, D), padding zeroed so it does not leak through the convolution
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, d_h)
        return self.out(_masked_pool(h, lengths))  # (B, d_h)


class GRUSequenceEncoder(nn.Module):
    """Input norm per frame, a bidirectional GRU over packed sequences; masked mean+max pooling of its outputs."""

    def __init__(self, d_in: int, d_h: int, dropout: float, input_norm: str = "layer") -> None:
        super().__init__()
        self.norm = input_norm_layer(d_in, input_norm)
        self.gru = nn.GRU(d_in, d_h // 2, batch_first=True, bidirectional=True)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * (d_h // 2), d_h))  # mean+max of both directions

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lens = lengths.clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.norm(x), lens, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, d_h)
        return self.out(_masked_pool(h, lengths))  # (B, d_h)


class TextEncoder(nn.Module):
    """Hashed bag of n-grams: EmbeddingBag (mean, padding id 0 excluded) followed by an MLP."""

    def __init__(self, buckets: int, d_h: int, dropout: float) -> None:
        super().__init__()
        self.buckets = buckets
        self.emb = nn.EmbeddingBag(buckets, d_h, mode="mean", padding_idx=0)
        self.net = nn.Sequential(nn.LayerNorm(d_h), mlp(d_h, d_h, d_h, dropout))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # ids come hashed into the data's own bucket count; fold them into this encoder's (0 stays padding)
        ids = torch.where(ids > 0, (ids - 1) % (self.buckets - 1) + 1, ids)  # (B, L)
        return self.net(self.emb(ids))  # (B, L) -> (B, d_h)


# --- factories -------------------------------------------------------------------------------------------
# The built-in encoders as factories, so `model.encoders` can also pick one per modality (e.g. a GRU for one
# sequence modality and convolutions for another) without trusting any code.
# `input_norm` is the run's `model.input_norm` when `build_encoder` calls them; called as factories of your own
# code (without it) they keep the layout they always had ("layer").
def vector(shape: tuple[int, ...], d_h: int, dropout: float, input_norm: str = "layer") -> nn.Module:
    return VectorEncoder(shape[-1], d_h, dropout, input_norm)


def image(shape: tuple[int, ...], d_h: int, dropout: float, input_norm: str = "layer") -> nn.Module:
    return ImageEncoder(shape[0], d_h, dropout)  # no input norm (module docstring)


def conv_sequence(shape: tuple[int, ...], d_h: int, dropout: float, input_norm: str = "layer") -> nn.Module:
    return ConvSequenceEncoder(shape[-1], d_h, dropout, input_norm)


def gru_sequence(shape: tuple[int, ...], d_h: int, dropout: float, input_norm: str = "layer") -> nn.Module:
    return GRUSequenceEncoder(shape[-1], d_h, dropout, input_norm)


BUILTIN_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    f"{__name__}:{f.__name__}": f for f in (vector, image, conv_sequence, gru_sequence)
}
# the modality kind each built-in factory is made for (its input layout: (D,), (C, H, W) or (T, D))
BUILTIN_KINDS = {f"{__name__}:{f.__name__}": kind for f, kind in
                 ((vector, "vector"), (image, "image"), (conv_sequence, "sequence"), (gru_sequence, "sequence"))}


def untrusted_modules(entries: Iterable[str]) -> list[str]:
    """Modules that the `model.encoders` entries would import (every factory outside `BUILTIN_FACTORIES`),
    sorted and unique. Parses the names only: nothing is imported."""
    refs = parse_encoder_entries(tuple(entries)).values()
    return sorted({ref.partition(":")[0] for ref in refs if ref not in BUILTIN_FACTORIES})


Trust = Union[bool, Iterable[str], None]  # see the module docstring


def trusted_modules(trust_code: Trust) -> frozenset[str] | None:
    """The module names `trust_code` trusts: None for every module (True), else a frozenset (empty for
    False/None). A single string is one module name (or several, comma-separated)."""
    if trust_code is True:
        return None
    if not trust_code:
        return frozenset()
    if isinstance(trust_code, str):
        trust_code = trust_code.split(",")
    return frozenset(m.strip() for m in trust_code if m and m.strip())


def not_trusted(modules: Iterable[str], trust_code: Trust) -> list[str]:
    """Those of `modules` that `trust_code` does not trust, in order."""
    allowed = trusted_modules(trust_code)
    return [m for m in modules if allowed is not None and m not in allowed]


def require_trust(entries: Iterable[str], trust_code: Trust, source: str = "model.encoders") -> None:
    """Raise `UntrustedCodeError` (naming `source` and the modules that are not trusted) when the entries name
    code outside robult_engine that `trust_code` does not trust. Imports nothing."""
    refused = not_trusted(untrusted_modules(entries), trust_code)
    if refused:
        raise UntrustedCodeError(source, refused)


def load_factory(ref: str, *, trust_code: Trust) -> Callable[..., nn.Module]:
    """The function named by "package.module:function"; imports its module only when `trust_code` trusts it
    (built-in factories need no trust)."""
    if ref in BUILTIN_FACTORIES:
        return BUILTIN_FACTORIES[ref]
    module_name, _, attr = ref.partition(":")
    require_trust([f"_={ref}"], trust_code, f"model.encoders ({ref})")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - ModuleNotFoundError, or any error raised by the user's module
        raise ConfigError(f"model.encoders: cannot import {module_name!r} for the encoder factory {ref} "
                          f"({type(e).__name__}: {e}); the module must be importable: install its package, or "
                          f"add its folder to PYTHONPATH") from e
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"model.encoders: module {module_name!r} has no {attr!r} (the encoder factory {ref})")
    if not callable(obj):
        raise ConfigError(f"model.encoders: {ref} is not callable (an encoder factory is a function or class)")
    return obj


def _output_check(ref: str, modality: str, d_h: int):
    """A forward hook that refuses an output other than a floating (B, d_h) tensor, naming the factory."""
    def hook(module: nn.Module, args: tuple, output) -> None:
        x = args[0] if args else None
        b = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() > 0 else None
        ok = (isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[1] == d_h
              and (b is None or output.shape[0] == b) and output.is_floating_point())
        if not ok:
            got = (f"a {output.dtype} tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor)
                   else f"a {type(output).__name__}")
            raise ConfigError(f"model.encoders: the encoder of modality {modality!r} made by {ref} returned {got}; "
                              f"expected a floating tensor of shape (B, d_h) = ({b if b is not None else 'B'}, "
                              f"{d_h}) for an input of shape {tuple(x.shape) if isinstance(x, torch.Tensor) else '?'}")
    return hook


def build_encoder(kind: str, shape: tuple[int, ...], *, d_h: int, dropout: float, sequence_encoder: str,
                  text_buckets: int, factory: str | None = None, trust_code: Trust = False,
                  modality: str = "", input_norm: str = "feature") -> nn.Module:
    """The encoder of one modality: the built-in one of its kind, or the module `factory` (a
    "package.module:function" name, imported only when `trust_code` trusts its module or it is built in)
    makes. `input_norm` (`model.input_norm`) reaches the built-in encoders and built-in factories; a factory of
    your own is called without it."""
    if input_norm not in INPUT_NORMS:
        raise ConfigError(f"model.input_norm: one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
    if factory is not None:
        made_for = BUILTIN_KINDS.get(factory)
        if made_for is not None and made_for != kind:
            fitting = [k for k, v in BUILTIN_KINDS.items() if v == kind]
            hint = (f"choose {' or '.join(fitting)}" if fitting else
                    f"leave it out to use the built-in {kind} encoder")
            raise ConfigError(f"model.encoders: modality {modality!r} is a {kind} modality (shape {tuple(shape)}), "
                              f"and {factory} builds an encoder for {made_for} modalities; {hint}")
        fn = load_factory(factory, trust_code=trust_code)
        extra = {"input_norm": input_norm} if factory in BUILTIN_FACTORIES else {}
        try:
            module = fn(shape=tuple(shape), d_h=d_h, dropout=dropout, **extra)
        except Exception as e:  # noqa: BLE001 - the user's factory failed: say which one and how it was called
            raise ConfigError(f"model.encoders: {factory}(shape={tuple(shape)}, d_h={d_h}, dropout={dropout}) for "
                              f"modality {modality!r} failed ({type(e).__name__}: {e})") from e
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model.encoders: {factory} returned a {type(module).__name__} for modality "
                              f"{modality!r}; an encoder factory must return a torch.nn.Module")
        module.register_forward_hook(_output_check(factory, modality, d_h))
        return module
    if kind == "vector":
        return VectorEncoder(shape[-1], d_h, dropout, input_norm)
    if kind == "image":
        return ImageEncoder(shape[0], d_h, dropout)
    if kind == "sequence":
        cls = ConvSequenceEncoder if sequence_encoder == "conv" else GRUSequenceEncoder
        return cls(shape[-1], d_h, dropout, input_norm)
    if kind == "text":
        return TextEncoder(text_buckets, d_h, dropout)
    raise ValueError(f"unknown modality kind {kind!r}")


# --- fitting the feature-wise input norm ---------------------------------------------------------------
# A feature whose std on the training data is at most this fraction of (1 + |mean|) is constant up to rounding:
# it is only centred (std 1), so that a value it never took in training cannot blow up to ±1e6 (the choice of
# scikit-learn's StandardScaler for zero-variance features).
CONSTANT_FEATURE = 1e-6
# Elements (samples × frames × features) converted to float64 at once while fitting: bounds the extra memory of
# a fit to about 32 MB, whatever the size of the training split.
FIT_CHUNK_ELEMENTS = 2 ** 22


def feature_moments(x: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None,
                    chunk_elements: int = FIT_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and (population) variance of every feature over the samples where the modality is present, streamed
    over chunks of samples with float64 accumulators (chunks merged by Chan's pairwise update, so a feature with
    a large mean and a small spread keeps its variance).

    x: (N, D) vector or (N, T, D) sequence (only the first `lengths[n]` frames of a sequence count); present:
    (N,) bool. Returns (mean (D,) float64, var (D,) float64, count of values per feature); with no present
    value, mean 0 and var 1."""
    d = x.shape[-1]
    n_frames = x.shape[1] if x.dim() == 3 else 1
    step = max(1, chunk_elements // max(1, n_frames * d))
    count, mean, m2 = 0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    for start in range(0, x.shape[0], step):
        keep = present[start:start + step].to(torch.bool).cpu()
        if not bool(keep.any()):
            continue
        rows = x[start:start + step][keep].detach().cpu()
        if x.dim() == 3:
            t = torch.arange(x.shape[1])
            lens = (lengths[start:start + step][keep].cpu() if lengths is not None
                    else torch.full((rows.shape[0],), x.shape[1]))
            rows = rows[t[None, :] < lens[:, None]]  # (valid frames, D)
        rows = rows.reshape(-1, d).to(torch.float64)
        n_b = rows.shape[0]
        if n_b == 0:
            continue
        mean_b = rows.mean(0)
        m2_b = ((rows - mean_b) ** 2).sum(0)
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta ** 2 * (count * n_b / total)
        count = total
    if count == 0:
        return mean, torch.ones(d, dtype=torch.float64), 0
    return mean, m2 / count, count


def standardiser_stats(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, std) a `FeatureStandardise` holds, float32: std = √var, and 1 for a constant feature
    (`CONSTANT_FEATURE`)."""
    std = var.clamp(min=0).sqrt()
    std = torch.where(std > CONSTANT_FEATURE * (1 + mean.abs()), std, torch.ones_like(std))
    return mean.float(), std.float()


def fit_input_norm(encoders: nn.ModuleDict, modalities: Iterable[tuple[str, str]], inputs: dict[str, torch.Tensor],
                   present: torch.Tensor, lengths: dict[str, torch.Tensor] | None = None) -> dict[str, int]:
    """Fit every `FeatureStandardise` inside the encoders of the vector and sequence modalities to the given
    samples (the training split: its inputs, its presence mask (N, M) in the order of `modalities` — pairs of
    (name, kind) — and its sequence lengths). Missing samples (mask 0, zero-filled) never enter the statistics.
    Returns the number of values each fitted modality's statistics came from (empty when there is nothing to
    fit, e.g. with `model.input_norm` "layer" or "none")."""
    lengths = lengths or {}
    fitted: dict[str, int] = {}
    for i, (name, kind) in enumerate(modalities):
        if kind not in ("vector", "sequence") or name not in encoders:
            continue
        x = inputs[name]
        norms = [m for m in encoders[name].modules()
                 if isinstance(m, FeatureStandardise) and m.mean.numel() == x.shape[-1]]
        if not norms:
            continue
        mean, var, count = feature_moments(x, present[:, i], lengths.get(name) if kind == "sequence" else None)
        mean, std = standardiser_stats(mean, var)
        with torch.no_grad():
            for m in norms:
                m.mean.copy_(mean.to(m.mean.device))
                m.std.copy_(std.to(m.std.device))
        fitted[name] = count
    return fitted
