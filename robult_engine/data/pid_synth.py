"""PID-Synth: seeded 3-modality data with controllable redundancy, uniqueness and synergy.

The class of a sample is the integer formed by three groups of hidden bits:
- redundant bits: every modality sees them;
- unique bits: each is seen by exactly one modality (assigned round-robin over the modalities);
- synergy bits: each is the XOR of one random share per modality, so only the combination reveals it;
- nuisance bits: label-irrelevant factors of each modality (its "style"), which make the mapping from
  features to classes harder to learn from a few labels alone.

Modality i sees the ±1 codes of the bits visible to it, mixed by a fixed random matrix into `dim` features,
passed through tanh and corrupted by Gaussian noise. This is the ground truth for what Z (redundant) and
U (unique) should carry. A note on synergy: the prediction for a modality subset is the mean of unimodal
logits (docs/method.md), so a synergy bit (an XOR across modalities) can never be decoded at inference from
unimodal branches; only the fusion branch S sees it during training. The class therefore stays ambiguous
between 2^synergy_bits values for every method, which bounds every method's accuracy alike.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import DatasetBundle, DatasetInfo, ModalitySpec, SplitData

MODALITIES = ("m0", "m1", "m2")


def _bit_layout(redundant_bits: int, unique_bits: int, synergy_bits: int, m: int) -> list[list[tuple[str, int]]]:
    """For each modality, the list of (group, bit index) it sees (synergy shares are ("s", k))."""
    vis: list[list[tuple[str, int]]] = [[("r", k) for k in range(redundant_bits)] for _ in range(m)]
    for k in range(unique_bits):
        vis[k % m].append(("u", k))
    for i in range(m):
        vis[i].extend(("s", k) for k in range(synergy_bits))
    return vis


def make_pid_synth(n_train: int = 3000, redundant_bits: int = 1, unique_bits: int = 1, synergy_bits: int = 1,
                   noise: float = 0.5, seed: int = 0, dim: int = 16, nuisance_bits: int = 0,
                   n_val: int | None = None,
                   n_test: int | None = None) -> DatasetBundle:
    m = len(MODALITIES)
    n_bits = redundant_bits + unique_bits + synergy_bits
    n_classes = 2 ** n_bits
    n_val = n_val if n_val is not None else max(n_classes * 4, n_train // 5)
    n_test = n_test if n_test is not None else max(n_classes * 8, n_train // 3)
    rng = np.random.default_rng(seed)
    vis = _bit_layout(redundant_bits, unique_bits, synergy_bits, m)
    n_vis = [len(v) + nuisance_bits for v in vis]
    mix = [rng.normal(size=(k, dim)) / np.sqrt(max(k, 1)) * 2.0 for k in n_vis]

    def sample(n: int) -> SplitData:
        r = rng.integers(0, 2, size=(n, redundant_bits))
        u = rng.integers(0, 2, size=(n, unique_bits))
        s = rng.integers(0, 2, size=(n, synergy_bits))
        # shares: m-1 random, the last one makes the XOR equal s
        shares = rng.integers(0, 2, size=(n, m, synergy_bits))
        shares[:, -1] = s ^ (np.bitwise_xor.reduce(shares[:, :-1], axis=1) if m > 1 else 0)
        bits = np.concatenate([r, u, s], axis=1)  # (n, n_bits), most significant first
        y = (bits * (2 ** np.arange(n_bits - 1, -1, -1))).sum(axis=1)
        inputs = {}
        for i, name in enumerate(MODALITIES):
            cols = []
            for g, k in vis[i]:
                cols.append(r[:, k] if g == "r" else u[:, k] if g == "u" else shares[:, i, k])
            # nuisance bits: label-irrelevant factors of variation of this modality alone ("style")
            cols.extend(rng.integers(0, 2, size=n) for _ in range(nuisance_bits))
            code = (np.stack(cols, axis=1) * 2 - 1).astype(np.float64) if cols else np.zeros((n, 0))
            x = np.tanh(code @ mix[i]) + noise * rng.normal(size=(n, dim))  # (n, dim)
            inputs[name] = torch.from_numpy(x.astype(np.float32))
        return SplitData(inputs=inputs, lengths={}, mask=torch.ones(n, m, dtype=torch.bool),
                         target=torch.from_numpy(y.astype(np.int64)), ids=[f"{j}" for j in range(n)])

    splits = {"train": sample(n_train), "val": sample(n_val), "test": sample(n_test)}
    for split_name, split in splits.items():
        split.ids = [f"{split_name}-{j}" for j in range(len(split))]
    groups = [f"{redundant_bits} redundant", f"{unique_bits} unique", f"{synergy_bits} synergistic",
              f"{nuisance_bits} nuisance"]
    info = DatasetInfo(
        name="pid-synth",
        modalities=tuple(ModalitySpec(n, "vector", (dim,)) for n in MODALITIES),
        task="single-label",
        class_names=tuple(format(c, f"0{n_bits}b") for c in range(n_classes)),
        description=f"PID-Synth (seed {seed}): {', '.join(groups)} bit(s); class = bits r|u|s; noise {noise}",
        licence="generated",
    )
    return DatasetBundle(info, splits)


def decode_bits(y: torch.Tensor, redundant_bits: int = 1, unique_bits: int = 1,
                synergy_bits: int = 1) -> dict[str, torch.Tensor]:
    """Split PID-Synth class indices into their bit groups: {"r": (N,), "u": (N,), "s": (N,)} integers.

    The class is the number written by the bits r|u|s, most significant first (see make_pid_synth), so a
    prediction can be scored per information type: did it get the redundant bits right, the unique ones?
    """
    y = torch.as_tensor(y).long()
    s_mask, u_mask = (1 << synergy_bits) - 1, (1 << unique_bits) - 1
    return {"r": y >> (unique_bits + synergy_bits), "u": (y >> synergy_bits) & u_mask, "s": y & s_mask}


def bit_accuracy(pred: torch.Tensor, target: torch.Tensor, redundant_bits: int = 1, unique_bits: int = 1,
                 synergy_bits: int = 1) -> dict[str, float]:
    """Fraction of samples whose predicted class has the right redundant / unique / synergy bits (a group
    with no bits is left out)."""
    sizes = {"r": redundant_bits, "u": unique_bits, "s": synergy_bits}
    p = decode_bits(pred, redundant_bits, unique_bits, synergy_bits)
    t = decode_bits(target, redundant_bits, unique_bits, synergy_bits)
    return {g: float((p[g] == t[g]).float().mean()) for g in ("r", "u", "s") if sizes[g] > 0}
