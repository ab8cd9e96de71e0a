"""Modality encoders f_i: X^i → H^i (B, d_h), one per modality kind (DESIGN.md §1).

No batch norm anywhere, so results do not depend on how a batch is split across processes.
"""
from __future__ import annotations

import torch
from torch import nn


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
        if not x.is_floating_point():  # images stored as bytes (data.formats.load_images): 0..255 -> [0, 1]
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


def build_encoder(kind: str, shape: tuple[int, ...], *, d_h: int, dropout: float, sequence_encoder: str,
                  text_buckets: int) -> nn.Module:
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
