"""Modality encoders f_i: X^i → H^i (B, d_h): one built-in encoder per modality kind, or your own.

No batch norm anywhere, so results do not depend on how a batch is split across processes.

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

from ..config import ConfigError, parse_encoder_entries


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    """Two-layer MLP with LayerNorm + GELU, the building block of projectors, reconstructors and heads."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.LayerNorm(d_hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out))


class VectorEncoder(nn.Module):
    def __init__(self, d_in: int, d_h: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_in), mlp(d_in, d_h, d_h, dropout))

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
    """1-D convolutions over time, masked mean+max pooling over the valid frames."""

    def __init__(self, d_in: int, d_h: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
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
    """Bidirectional GRU over packed sequences; masked mean+max pooling of its outputs."""

    def __init__(self, d_in: int, d_h: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
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
def vector(shape: tuple[int, ...], d_h: int, dropout: float) -> nn.Module:
    return VectorEncoder(shape[-1], d_h, dropout)


def image(shape: tuple[int, ...], d_h: int, dropout: float) -> nn.Module:
    return ImageEncoder(shape[0], d_h, dropout)


def conv_sequence(shape: tuple[int, ...], d_h: int, dropout: float) -> nn.Module:
    return ConvSequenceEncoder(shape[-1], d_h, dropout)


def gru_sequence(shape: tuple[int, ...], d_h: int, dropout: float) -> nn.Module:
    return GRUSequenceEncoder(shape[-1], d_h, dropout)


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
        from ..checkpoint import UntrustedCodeError
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
                  modality: str = "") -> nn.Module:
    """The encoder of one modality: the built-in one of its kind, or the module `factory` (a
    "package.module:function" name, imported only when `trust_code` trusts its module or it is built in)
    makes."""
    if factory is not None:
        made_for = BUILTIN_KINDS.get(factory)
        if made_for is not None and made_for != kind:
            fitting = [k for k, v in BUILTIN_KINDS.items() if v == kind]
            hint = (f"choose {' or '.join(fitting)}" if fitting else
                    f"leave it out to use the built-in {kind} encoder")
            raise ConfigError(f"model.encoders: modality {modality!r} is a {kind} modality (shape {tuple(shape)}), "
                              f"and {factory} builds an encoder for {made_for} modalities; {hint}")
        fn = load_factory(factory, trust_code=trust_code)
        try:
            module = fn(shape=tuple(shape), d_h=d_h, dropout=dropout)
        except Exception as e:  # noqa: BLE001 - the user's factory failed: say which one and how it was called
            raise ConfigError(f"model.encoders: {factory}(shape={tuple(shape)}, d_h={d_h}, dropout={dropout}) for "
                              f"modality {modality!r} failed ({type(e).__name__}: {e})") from e
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model.encoders: {factory} returned a {type(module).__name__} for modality "
                              f"{modality!r}; an encoder factory must return a torch.nn.Module")
        module.register_forward_hook(_output_check(factory, modality, d_h))
        return module
    if kind == "vector":
        return VectorEncoder(shape[-1], d_h, dropout)
    if kind == "image":
        return ImageEncoder(shape[0], d_h, dropout)
    if kind == "sequence":
        cls = ConvSequenceEncoder if sequence_encoder == "conv" else GRUSequenceEncoder
        return cls(shape[-1], d_h, dropout)
    if kind == "text":
        return TextEncoder(text_buckets, d_h, dropout)
    raise ValueError(f"unknown modality kind {kind!r}")
