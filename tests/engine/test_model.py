"""The model (docs/method.md): output shapes and a backward pass for every modality subset and every modality kind,
and the gradient routing of each loss (L_rec only into g_i and r_i; L_PU into every encoder, f_0 and g_0)."""
from __future__ import annotations

import itertools

import pytest
import torch

from robult_engine.config import ModelConfig
from robult_engine.data import make_batch
from robult_engine.losses import (PrototypeMemory, pu_contrastive_loss, reconstruction_loss, soft_kappa,
                                  soft_pu_weights)
from robult_engine.models import build_model, combine_logits
from robult_engine.models.encoders import (ConvSequenceEncoder, GRUSequenceEncoder, ImageEncoder, TextEncoder,
                                           VectorEncoder)

SMALL = dict(d_h=16, d_z=8, d_u=6, d_hidden=12, dropout=0.0, text_buckets=64)


def grads_of(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: p.grad for n, p in module.named_parameters()}


def untouched(module: torch.nn.Module) -> bool:
    """No parameter of the module received a gradient (None or exactly zero)."""
    return all(g is None or not g.any() for g in grads_of(module).values())


def every_param_reached(module: torch.nn.Module) -> list[str]:
    """Names of parameters with no gradient, or an all-zero one (empty list when every parameter got one)."""
    return [n for n, g in grads_of(module).items() if g is None or not g.any()]


def robult_pu_loss(out, batch, memory: PrototypeMemory, tau: float = 0.1) -> torch.Tensor:
    """L_PU as the trainer computes it for a one-process batch (labels of labeled samples, else pseudo-labels)."""
    s_n = torch.nn.functional.normalize(out.s, dim=-1)
    z_n = torch.nn.functional.normalize(out.z, dim=-1)
    pseudo = out.logits_fused.detach().argmax(-1)
    cls = torch.where(batch.labeled, batch.target, pseudo)
    memory.update(s_n.detach()[batch.labeled], batch.target[batch.labeled])
    kappa, _ = soft_kappa(s_n.detach(), cls, memory.protos, memory.seen, "rbf", None)
    w = soft_pu_weights(cls, batch.labeled, kappa)
    return pu_contrastive_loss(s_n, z_n, out.mask, w, tau, out.s_valid)


# ----------------------------------------------------------------------------------------------------------
# gradient routing (docs/method.md, "Gradient routing at a glance")
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def pid_model_and_batch(pid_bundle):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), pid_bundle.info)
    split = pid_bundle.splits["train"]
    labeled = torch.zeros(len(split), dtype=torch.bool)
    labeled[::4] = True
    return model, make_batch(split, torch.arange(32), labeled)


@pytest.mark.parametrize("route", ["projector", "branch", "full"])
def test_reconstruction_loss_routes(pid_bundle, route):
    """Every L_rec route trains r_i and g_i and never g_0, f_0, c or c_0; only "projector" keeps the encoders out."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), pid_bundle.info, rec_route=route)
    split = pid_bundle.splits["train"]
    batch = make_batch(split, torch.arange(32), torch.arange(len(split)) % 4 == 0)
    out = model(batch.inputs, batch.lengths, batch.mask, with_fusion=True, with_reconstruction=True)
    reconstruction_loss(out.rec_target, out.h_rec, out.mask).backward()
    assert untouched(model.shared_proj), "L_rec must not move the shared projector g_0"
    assert untouched(model.fusion) and untouched(model.classifier) and untouched(model.fusion_head)
    assert every_param_reached(model.mod_proj) == [], "L_rec trains every modality projector g_i"
    assert every_param_reached(model.reconstructors) == [], "L_rec trains every reconstructor r_i"
    if route == "projector":
        assert untouched(model.encoders), "the projector route must not reach the encoders f_i"
    else:
        for name, enc in model.encoders.items():
            assert every_param_reached(enc) == [], f"the {route} route must reach encoder {name}"
    assert out.rec_target.requires_grad == (route == "full"), "only the full route lets the target carry a gradient"


@pytest.mark.parametrize("route", ["branch", "full"])
def test_reconstruction_target_is_standardised(pid_bundle, route):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), pid_bundle.info, rec_route=route)
    split = pid_bundle.splits["train"]
    out = model(split.inputs, split.lengths, split.mask, with_reconstruction=True)
    t = out.rec_target.detach()
    assert torch.allclose(t.mean(-1), torch.zeros_like(t.mean(-1)), atol=1e-4)
    assert torch.allclose(t.std(-1, unbiased=False), torch.ones_like(t.mean(-1)), atol=1e-2)


def test_rec_route_gradient_differs_between_branch_and_full(pid_bundle):
    """The full route's extra gradient through n(H^i) reaches the encoders: same weights, different grads."""
    grads = {}
    for route in ("branch", "full"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(**SMALL), pid_bundle.info, rec_route=route)
        split = pid_bundle.splits["train"]
        out = model(split.inputs, split.lengths, split.mask, with_reconstruction=True)
        reconstruction_loss(out.rec_target, out.h_rec, out.mask).backward()
        grads[route] = torch.cat([p.grad.flatten() for p in model.encoders.parameters()])
    assert not torch.allclose(grads["branch"], grads["full"])


def test_difference_loss_reaches_branch_not_g_0_when_z_detached(pid_model_and_batch):
    from robult_engine.losses import difference_loss
    model, batch = pid_model_and_batch
    out = model(batch.inputs, batch.lengths, batch.mask)
    difference_loss(out.u, out.z.detach(), out.mask).backward()
    assert untouched(model.shared_proj) and untouched(model.classifier)
    assert every_param_reached(model.mod_proj) == []
    for name, enc in model.encoders.items():
        assert every_param_reached(enc) == [], f"L_diff must reach encoder {name}"


def test_pu_loss_reaches_every_encoder_fusion_and_g_0(pid_model_and_batch):
    model, batch = pid_model_and_batch
    out = model(batch.inputs, batch.lengths, batch.mask, with_fusion=True, with_reconstruction=True)
    memory = PrototypeMemory(model.fusion_head.out_features, model.d_z)
    robult_pu_loss(out, batch, memory).backward()
    for name, enc in model.encoders.items():
        assert every_param_reached(enc) == [], f"L_PU must reach encoder {name}"
    assert every_param_reached(model.fusion) == [], "L_PU must reach the fusion branch f_0"
    assert every_param_reached(model.shared_proj) == [], "L_PU must reach g_0"
    # it says nothing about the unique branch, the classifier, the reconstructors or c_0
    assert untouched(model.mod_proj) and untouched(model.reconstructors)
    assert untouched(model.classifier) and untouched(model.fusion_head)


def test_gated_fusion_gets_pu_gradient(pid_bundle):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, fusion="gated"), pid_bundle.info)
    split = pid_bundle.splits["train"]
    batch = make_batch(split, torch.arange(16), torch.arange(len(split)) % 3 == 0)
    out = model(batch.inputs, batch.lengths, batch.mask, with_fusion=True)
    robult_pu_loss(out, batch, PrototypeMemory(8, model.d_z)).backward()
    assert every_param_reached(model.fusion) == []


# ----------------------------------------------------------------------------------------------------------
# every modality kind, every subset
# ----------------------------------------------------------------------------------------------------------


def all_masks(m: int):
    for k in range(1, m + 1):
        for combo in itertools.combinations(range(m), k):
            yield tuple(i in combo for i in range(m))


@pytest.mark.parametrize("sequence_encoder", ["conv", "gru"])
def test_every_subset_every_kind_shapes_and_backward(four_kind_bundle, sequence_encoder):
    info = four_kind_bundle.info
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, sequence_encoder=sequence_encoder), info)
    split = four_kind_bundle.splits["train"]
    b, m, c = 6, 4, info.num_outputs
    batch = make_batch(split, torch.arange(b))
    names = info.modality_names
    for sub in all_masks(m):
        model.zero_grad(set_to_none=True)
        mask = torch.tensor(sub).expand(b, m)
        out = model(batch.inputs, batch.lengths, mask, with_fusion=True, with_reconstruction=True)
        assert out.h.shape == (b, m, 16) and out.z.shape == (b, m, 8) and out.u.shape == (b, m, 6)
        assert out.logits_mod.shape == (b, m, c) and out.logits.shape == (b, c)
        assert out.s.shape == (b, 8) and out.logits_fused.shape == (b, c) and out.h_rec.shape == (b, m, 16)
        assert out.s_valid.tolist() == [all(sub)] * b
        # the subset prediction is the mean of c([U^i, Z^i]) over the subset, nothing else
        expect = out.logits_mod[:, list(sub)].mean(1)
        assert torch.allclose(out.logits, expect, atol=1e-6)
        out.logits.square().sum().backward()
        for i, name in enumerate(names):
            if sub[i]:
                assert every_param_reached(model.encoders[name]) == [], f"{name} in {sub} got no gradient"
            else:
                assert untouched(model.encoders[name]), f"absent {name} must not influence the prediction"
        assert every_param_reached(model.shared_proj) == [] and every_param_reached(model.classifier) == []
        for i in range(m):
            assert (every_param_reached(model.mod_proj[i]) == []) == sub[i]


@pytest.mark.parametrize("sequence_encoder", ["conv", "gru"])
@pytest.mark.parametrize("fusion", ["mlp", "gated"])
def test_full_robult_loss_reaches_every_parameter(four_kind_bundle, make_cfg, sequence_encoder, fusion):
    """One Robult training step on all four kinds: every parameter gets a gradient."""
    from robult_engine.trainer import Trainer
    cfg = make_cfg(**{"data.dataset": "four-kinds", "model.sequence_encoder": sequence_encoder,
                      "model.fusion": fusion, "model.text_buckets": 64, "model.dropout": 0.0,
                      "train.batch_size": 12, "data.label_fraction": 0.5})
    tr = Trainer(cfg, four_kind_bundle)
    tr.setup()
    stats = {"kappa_hist": torch.zeros(20), "kappa_sum": 0.0, "kappa_n": 0, "pl_correct": 0, "pl_n": 0}
    batch = tr._step_batch(tr.sampler.epoch(0)[0])
    assert batch.labeled.any() and (~batch.labeled).any()
    losses = tr.compute_losses(batch, 0, stats)
    assert set(losses) == {"sup", "pu", "rec", "total"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    assert every_param_reached(tr.model) == []


@pytest.mark.parametrize("kind", ["vector", "image", "conv", "gru", "text"])
def test_encoder_shapes_and_padding(kind):
    torch.manual_seed(0)
    b, d_h = 3, 16
    if kind == "vector":
        enc, x, lengths = VectorEncoder(5, d_h, 0.0), torch.randn(b, 5), None
    elif kind == "image":
        enc, x, lengths = ImageEncoder(3, d_h, 0.0), torch.rand(b, 3, 12, 10), None
    elif kind in ("conv", "gru"):
        enc = (ConvSequenceEncoder if kind == "conv" else GRUSequenceEncoder)(4, d_h, 0.0)
        x, lengths = torch.randn(b, 9, 4), torch.tensor([9, 3, 1])
    else:
        enc, x, lengths = TextEncoder(64, d_h, 0.0), torch.randint(1, 64, (b, 7)), torch.tensor([7, 7, 7])
    enc.eval()
    h = enc(x, lengths)
    assert h.shape == (b, d_h) and torch.isfinite(h).all()
    h.sum().backward()
    assert every_param_reached(enc) == [] or kind == "text"  # EmbeddingBag: only used rows get gradient
    if kind in ("conv", "gru"):
        # what lies beyond a sequence's length does not change its encoding
        x2 = x.clone()
        x2[1, 3:] = 100.0
        x2[2, 1:] = -7.0
        assert torch.allclose(enc(x2, lengths), h, atol=1e-5)
    if kind == "text":
        # padding id 0 is excluded from the bag
        padded = torch.cat([x, torch.zeros(b, 5, dtype=torch.long)], dim=1)
        assert torch.allclose(enc(padded), h, atol=1e-6)


def test_combine_logits_ignores_absent_modalities():
    logits_mod = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    got = combine_logits(logits_mod, torch.tensor([[True, True, False]]))
    assert torch.equal(got, torch.tensor([[2.0, 3.0]]))
    assert torch.equal(combine_logits(logits_mod, torch.zeros(1, 3, dtype=torch.bool)), torch.zeros(1, 2))


def test_missing_modality_values_do_not_change_prediction(four_kind_bundle):
    """Whatever a missing modality's tensor holds, the prediction without it is the same."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), four_kind_bundle.info).eval()
    batch = make_batch(four_kind_bundle.splits["train"], torch.arange(4))
    mask = torch.tensor([True, False, True, False]).expand(4, 4)
    a = model(batch.inputs, batch.lengths, mask).logits
    inputs = dict(batch.inputs)
    inputs["img"] = torch.randn_like(inputs["img"]) * 50
    inputs["txt"] = torch.randint(1, 64, inputs["txt"].shape)
    b = model(inputs, batch.lengths, mask).logits
    assert torch.allclose(a, b, atol=1e-6)
