"""PID-Synth's ground truth: which modality reveals which bits, and the per-bit scoring of predictions."""
from __future__ import annotations

import pytest
import torch

from robult_engine.data.pid_synth import bit_accuracy, decode_bits, make_pid_synth


def _groups(rows: torch.Tensor) -> list[torch.Tensor]:
    """Indices of identical rows (noise-free inputs are a function of the bits a modality sees)."""
    _, inv = torch.unique(rows, dim=0, return_inverse=True)
    return [torch.nonzero(inv == g).flatten() for g in range(int(inv.max()) + 1)]


def _determined(rows: torch.Tensor, values: torch.Tensor) -> float:
    """Fraction of samples whose value is fixed by their input row (1.0: the input reveals it)."""
    hits = 0
    for idx in _groups(rows):
        v = values[idx]
        hits += int(max((v == k).sum() for k in v.unique()))
    return hits / len(values)


def test_each_modality_reveals_exactly_its_bits():
    b = make_pid_synth(n_train=2000, noise=0.0, nuisance_bits=0, seed=3)
    tr = b.splits["train"]
    bits = decode_bits(tr.target)
    x = {k: v for k, v in tr.inputs.items()}
    for name in ("m0", "m1", "m2"):
        assert _determined(x[name], bits["r"]) == 1.0, f"{name} sees the redundant bit"
        assert _determined(x[name], bits["s"]) < 0.6, f"{name} alone does not reveal the synergy bit"
    assert _determined(x["m0"], bits["u"]) == 1.0, "m0 sees the unique bit"
    for name in ("m1", "m2"):
        assert _determined(x[name], bits["u"]) < 0.6, f"{name} does not see the unique bit"
    joint = torch.cat([x["m0"], x["m1"], x["m2"]], dim=1)
    assert _determined(joint, bits["s"]) == 1.0, "all modalities together reveal the synergy bit"
    assert _determined(torch.cat([x["m0"], x["m1"]], dim=1), bits["s"]) < 0.6


def test_same_seed_same_data_and_nuisance_bits_add_style():
    a, b = make_pid_synth(n_train=100, seed=1, nuisance_bits=4), make_pid_synth(n_train=100, seed=1, nuisance_bits=4)
    assert torch.equal(a.splits["train"].inputs["m0"], b.splits["train"].inputs["m0"])
    assert torch.equal(a.splits["test"].target, b.splits["test"].target)
    clean = make_pid_synth(n_train=2000, noise=0.0, nuisance_bits=0, seed=3).splits["train"].inputs["m1"]
    styled = make_pid_synth(n_train=2000, noise=0.0, nuisance_bits=3, seed=3).splits["train"].inputs["m1"]
    assert len(_groups(clean)) == 4 and len(_groups(styled)) == 4 * 2 ** 3


def test_decode_bits_and_bit_accuracy():
    y = torch.tensor([0b101, 0b010, 0b111, 0b000])
    d = decode_bits(y)
    assert d["r"].tolist() == [1, 0, 1, 0] and d["u"].tolist() == [0, 1, 1, 0] and d["s"].tolist() == [1, 0, 1, 0]
    wide = decode_bits(torch.tensor([0b10_011_0]), redundant_bits=2, unique_bits=3, synergy_bits=1)
    assert (int(wide["r"]), int(wide["u"]), int(wide["s"])) == (0b10, 0b011, 0)
    pred = torch.tensor([0b100, 0b000, 0b011, 0b001])  # r wrong on the 3rd, u on the 2nd, s on the 1st and 4th
    assert bit_accuracy(pred, y) == pytest.approx({"r": 0.75, "u": 0.75, "s": 0.5})
    assert set(bit_accuracy(pred, y, 1, 2, 0)) == {"r", "u"}
