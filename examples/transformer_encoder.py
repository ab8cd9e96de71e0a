"""Your own encoder for Robult Studio: a small transformer over a sequence modality.

Name it in the config, per modality, as ``package.module:function`` (docs/custom-encoders.md):

    PYTHONPATH=. robult train --dataset av-digits --encoder audio=examples.transformer_encoder:make_encoder

Robult calls ``make_encoder(shape=..., d_h=..., dropout=...)`` once when it builds the model; ``shape`` is one
sample's shape without the batch axis, (T_max, D) for a sequence modality. The module it returns is called as
``module(x, lengths)`` with ``x`` of shape (B, T_max, D), zero-padded, and ``lengths`` (B,) the valid frames
(>= 1), and must return (B, d_h). It trains jointly with the rest of the model and is saved in the checkpoint's
weights; the checkpoint stores the factory's name only, so loading it imports this module again, and only
when the user trusts it by name (``--trust-code examples.transformer_encoder``).
"""
from __future__ import annotations

import torch
from torch import nn


class TransformerSequenceEncoder(nn.Module):
    """Linear input projection + learned positions, a pre-norm transformer encoder with the padding masked out,
    and a mean over the valid frames. No batch norm, so results do not depend on how a batch is split."""

    def __init__(self, d_in: int, d_h: int, dropout: float, max_len: int, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_h))
        self.pos = nn.Parameter(torch.zeros(1, max_len, d_h))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(d_h, heads, dim_feedforward=2 * d_h, dropout=dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_h)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device)
        valid = t[None, :] < lengths.clamp(min=1)[:, None]  # (B, T)
        h = self.inp(x) + self.pos[:, : x.shape[1]]  # (B, T, d_h)
        h = self.encoder(h, src_key_padding_mask=~valid)  # (B, T, d_h)
        w = valid.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return self.norm((h * w).sum(1) / w.sum(1).clamp(min=1))  # (B, d_h)


def make_encoder(shape: tuple[int, ...], d_h: int, dropout: float) -> nn.Module:
    """The factory Robult calls: shape (T_max, D) of a sequence modality -> a transformer encoder."""
    if len(shape) != 2:
        raise ValueError(f"a transformer encoder needs a sequence modality of shape (T, D), got {shape}")
    t_max, d_in = shape
    heads = next(h for h in (4, 2, 1) if d_h % h == 0)
    return TransformerSequenceEncoder(d_in, d_h, dropout, max_len=t_max, heads=heads)
