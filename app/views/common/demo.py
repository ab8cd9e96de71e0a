"""Synthetic data for running a panel alone (`python -m app.views.explorer.<panel>`), with no model or dataset.

Set ROBULT_DEMO_SCREENSHOT=/path.png to render the panel to that file and exit instead of opening a window
(used for documentation screenshots and as a smoke test).
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import numpy as np
import torch

from robult_engine.inspect import Inspection, ReferenceEncoding, SampleEncoding, recombine, soft_pu

MODALITIES = ("image", "audio")
CLASSES = tuple(str(d) for d in range(10))


def synthetic_encoding(m: int = 2, c: int = 10, seed: int = 0, true_class: int = 7) -> SampleEncoding:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, c, generator=g)
    logits[:, true_class] += torch.linspace(3.0, 1.2, m)  # the first modality is sure, the others less so
    logits[-1, (true_class + 2) % c] += 1.8
    return SampleEncoding(
        modality_names=MODALITIES[:m] if m <= 2 else tuple(f"m{i}" for i in range(m)),
        present=torch.ones(m, dtype=torch.bool), logits_mod=logits,
        z=torch.randn(m, 16, generator=g) * torch.linspace(1.5, 0.8, m)[:, None],
        u=torch.randn(m, 8, generator=g) * torch.linspace(0.6, 1.1, m)[:, None],
        rec_err=torch.rand(m, generator=g) * 0.2, s=torch.randn(16, generator=g),
        logits_fused=logits.mean(0) * 1.5)


def synthetic_reference(n: int = 64, c: int = 10, seed: int = 1, d: int = 16) -> ReferenceEncoding:
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, c, (n,), generator=g)
    centres = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=-1)
    s = torch.nn.functional.normalize(centres[classes] + 0.5 * torch.randn(n, d, generator=g), dim=-1)
    labeled = torch.zeros(n, dtype=torch.bool)
    labeled[:16] = True
    return ReferenceEncoding(indices=torch.arange(100, 100 + n), s_n=s, s_valid=torch.ones(n, dtype=torch.bool),
                             labeled=labeled, classes=classes, pseudo=classes, target=classes)


def synthetic_memory(c: int = 10, seed: int = 1, d: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=-1)
    return {"protos": centres, "seen": torch.ones(c, dtype=torch.bool)}


def synthetic_inspection(subset: tuple[bool, ...] = (True, False), m: int = 2, c: int = 10) -> Inspection:
    enc = synthetic_encoding(m, c)
    ref = synthetic_reference(c=c)
    mem = synthetic_memory(c)
    # put the sample near the prototype of its pseudo-label so κ is visibly > 0
    k = int(enc.logits_fused.argmax())
    enc = SampleEncoding(**{**enc.__dict__, "s": mem["protos"][k] * 3 + 0.3 * enc.s / enc.s.norm()})
    pu = soft_pu(enc, ref, mem, task="single-label", class_names=CLASSES[:c], kernel="rbf", bandwidth=None)
    return recombine(enc, subset[:m] + (True,) * max(0, m - len(subset)), "single-label", CLASSES[:c], pu)


def synthetic_kappa_history(epochs: int = 12, bins: int = 20) -> tuple[list[list[float]], list[float]]:
    edges = [i / bins for i in range(bins + 1)]
    centres = (np.arange(bins) + 0.5) / bins
    hists = []
    for e in range(epochs):
        mu = 0.2 + 0.6 * e / max(1, epochs - 1)
        h = np.exp(-(centres - mu) ** 2 / 0.02)
        hists.append((h / h.sum()).tolist())
    return hists, edges


def run_panel_demo(panel_cls, fill: Callable, title: str, size: tuple[int, int] = (900, 600)) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if os.environ.get("ROBULT_DEMO_SCREENSHOT") else "")
    if not os.environ["QT_QPA_PLATFORM"]:
        del os.environ["QT_QPA_PLATFORM"]
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(sys.argv)
    from app.background import gc_policy
    gc_policy.install()
    panel = panel_cls()
    panel.setWindowTitle(title)
    panel.resize(*size)
    fill(panel)
    panel.show()
    shot = os.environ.get("ROBULT_DEMO_SCREENSHOT")
    if shot:
        for _ in range(3):
            app.processEvents()
        ok = panel.grab().save(shot)
        panel.close()
        return 0 if ok else 1
    return app.exec()
