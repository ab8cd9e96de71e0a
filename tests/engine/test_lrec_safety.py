"""L_rec must never cost the supervised signal, on every task type: on two high-dimensional views with a
multi-label target (pre-extracted embeddings, the shape that made supervised + L_rec collapse to F1 0.0),
supervised + L_rec (robult-no-pu) learns as much as supervised alone. Before the fix its test micro-F1 here was
0.03 against supervised's 0.21 (the multi-label loss was a mean over the labels, so the reconstruction
pressure on the encoders outweighed the supervised gradient C times over, from the first step on)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robult_engine.config import RunConfig
from robult_engine.data import load_dataset
from robult_engine.events import Finished
from robult_engine.losses import task_loss
from robult_engine.trainer import Trainer


def test_multi_label_loss_sums_the_labels_binary_cross_entropies():
    """Each label weighs like one binary classification, whatever the number of labels."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 23, generator=g)
    target = (torch.rand(5, 23, generator=g) > 0.8).float()
    per_label = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    assert torch.allclose(task_loss(logits, target, "multi-label"), per_label.sum(1))
    # one label of 23 moves the loss as much as a lone binary label does
    one = task_loss(logits[:, :1], target[:, :1], "multi-label")
    assert torch.allclose(one, per_label[:, 0])


def test_rec_warmup_ramps_lambda_rec_from_zero():
    cfg = RunConfig().replace(**{"data.dataset": "pid-synth", "loss.rec_warmup": 0.5})
    t = Trainer(cfg)
    t.total_steps, t.global_step = 100, 0
    assert abs(t.rec_ramp() - 1 / 50) < 1e-9
    t.global_step = 24
    assert abs(t.rec_ramp() - 0.5) < 1e-9
    t.global_step = 80
    assert t.rec_ramp() == 1.0
    t.cfg = cfg.replace(**{"loss.rec_warmup": 0.0})
    t.global_step = 0
    assert t.rec_ramp() == 1.0


def test_an_old_loss_section_keeps_no_warmup():
    """A config written before the warm-up existed means what it meant: λ_rec from the first step."""
    d = RunConfig().to_dict()
    loss = {k: v for k, v in d["loss"].items() if k != "rec_warmup"}
    assert RunConfig.from_dict({**d, "loss": loss}).loss.rec_warmup == 0.0
    assert RunConfig.from_dict(d).loss.rec_warmup == RunConfig().loss.rec_warmup


def test_reconstruction_does_not_cost_the_supervised_signal_on_high_dimensional_multi_label_views():
    over = {"data.dataset": "feature-synth", "data.synth_n_train": 1500, "data.feature_synth_dim": 768,
            "train.epochs": 6, "data.label_fraction": 0.05}
    bundle = load_dataset(RunConfig().replace(**over).data)
    f1 = {}
    for method in ("supervised", "robult-no-pu"):
        final = Trainer(RunConfig().replace(method=method, **over), bundle).run()
        assert isinstance(final, Finished), final
        f1[method] = final.test_metrics["a+b"]["f1_micro"]
    assert f1["supervised"] > 0.15, f1  # the target is learnable from these labels
    assert f1["robult-no-pu"] >= f1["supervised"] - 0.05, f1
