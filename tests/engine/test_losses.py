"""Hand-computed values of every loss (docs/method.md, "Losses") on tiny inputs, with the arithmetic written out,
and the properties of the soft-PU weights."""
from __future__ import annotations

import math

import pytest
import torch

from robult_engine.losses import (PrototypeMemory, contrastive_classes, kernel_weight, modality_dropout_mask,
                                  pseudo_classes, pu_contrastive_loss, reconstruction_loss, same_class, soft_kappa,
                                  soft_pu_weights, supcon_weights, supervised_loss, task_loss)

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
E = math.e


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# ℓ and L_sup (loss 1)
# ----------------------------------------------------------------------------------------------------------


def test_task_loss_cross_entropy_by_hand():
    # logits [0, 0] -> p = (1/2, 1/2); [ln3, 0] -> p = (3/4, 1/4); [0, ln3] -> p = (1/4, 3/4); all targets 0.
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0], [0.0, LN3]])
    got = task_loss(logits, torch.tensor([0, 0, 0]), "single-label")
    assert close(got, [LN2, math.log(4 / 3), LN4])  # −log(1/2), −log(3/4), −log(1/4)


def test_task_loss_bce_by_hand():
    # σ(0) = 1/2 with target 1: −log(1/2) = ln2; σ(ln3) = 3/4 with target 0: −log(1/4) = ln4; summed over the
    # labels (each label weighs like one binary classification: docs/method.md, "Supervised loss").
    got = task_loss(torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]]), "multi-label")
    assert close(got, [LN2 + LN4])


def test_task_loss_l1_by_hand():
    # |0.5 − 1| = 0.5, |−1 − (−1)| = 0, |2 − 0| = 2; only the first output is the prediction
    got = task_loss(torch.tensor([[0.5], [-1.0], [2.0]]), torch.tensor([1.0, -1.0, 0.0]), "regression")
    assert close(got, [0.5, 0.0, 2.0])


def test_task_loss_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        task_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "ranking")


def test_supervised_loss_by_hand():
    # B = 3 samples, M = 2 modalities, C = 2 classes. Per-row CE values (see above):
    #   [ln3, 0] with y=0 -> ln(4/3); [ln3, 0] with y=1 -> ln4; [0, 0] -> ln2 whatever y.
    a, z = [LN3, 0.0], [0.0, 0.0]
    logits_mod = torch.tensor([[a, z],  # sample 0, y=0: modality CEs ln(4/3), ln2 (both present)
                               [a, z],  # sample 1, y=1: ln4, ln2 but modality 1 absent -> only ln4 counts
                               [a, a]])  # sample 2: unlabeled (weight 0), must not count at all
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    target = torch.tensor([0, 1, 0])
    weight = torch.tensor([1.0, 1.0, 0.0])
    fused = torch.tensor([z, a, z])  # c_0(S): ln2 for sample 0; ln4 for sample 1 but S invalid (incomplete)
    fused_valid = torch.tensor([True, False, True])
    s0 = (math.log(4 / 3) + LN2) / 2 + LN2  # mean over present modalities + fused term
    s1 = LN4 + 0.0  # one present modality, no fused term
    got = supervised_loss(logits_mod, mask, target, weight, "single-label", fused, fused_valid)
    assert close(got, (s0 + s1) / 2)  # default denominator: Σ w = 2 labeled samples
    got4 = supervised_loss(logits_mod, mask, target, weight, "single-label", fused, fused_valid, denom=4.0)
    assert close(got4, (s0 + s1) / 4)  # a global denominator (data-parallel) divides the same sum
    no_fused = supervised_loss(logits_mod, mask, target, weight, "single-label")
    assert close(no_fused, ((math.log(4 / 3) + LN2) / 2 + LN4) / 2)


def test_supervised_loss_no_labeled_sample_is_zero_not_nan():
    got = supervised_loss(torch.zeros(2, 2, 3), torch.ones(2, 2, dtype=torch.bool), torch.tensor([0, 1]),
                          torch.zeros(2), "single-label")
    assert got.item() == 0.0


# ----------------------------------------------------------------------------------------------------------
# modality dropout
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9, 0.999])
def test_modality_dropout_never_empties_a_row(p):
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(500, 3, generator=g) > 0.3
    mask[0] = torch.tensor([False, True, False])  # a single present modality is always kept
    mask[1] = False  # a row with nothing present stays empty: dropout never invents a modality
    new = modality_dropout_mask(mask, p, torch.Generator().manual_seed(1))
    assert new.dtype == torch.bool and new.shape == mask.shape
    assert not (new & ~mask).any(), "dropout may only remove modalities"
    had = mask.any(1)
    assert new[had].any(1).all(), "a row that had a modality must keep at least one"
    assert not new[1].any()
    assert new[0].tolist() == [False, True, False]
    if p == 0.0:
        assert torch.equal(new, mask)
    if p == 0.5:  # ~half of the present modalities of full rows are dropped
        full = mask.all(1)
        frac = new[full].float().mean().item()
        assert 0.45 < frac < 0.7  # 0.5 kept + the rescued rows (1/8 of rows lose all, then keep one)


def test_modality_dropout_is_reproducible_and_leaves_global_rng_alone():
    mask = torch.ones(64, 3, dtype=torch.bool)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = modality_dropout_mask(mask, 0.5, torch.Generator().manual_seed(7))
    b = modality_dropout_mask(mask, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(before, torch.get_rng_state())


# ----------------------------------------------------------------------------------------------------------
# classes, kernel, κ
# ----------------------------------------------------------------------------------------------------------


def test_contrastive_and_pseudo_classes():
    assert contrastive_classes(torch.tensor([2, 0]), "single-label").tolist() == [2, 0]
    assert contrastive_classes(torch.tensor([-0.5, 0.0, 1.2]), "regression").tolist() == [0, 1, 1]  # sign bins
    assert contrastive_classes(torch.tensor([[1.0, 0.0]]), "multi-label").tolist() == [[1.0, 0.0]]
    assert pseudo_classes(torch.tensor([[0.1, 2.0, -1.0]]), "single-label").tolist() == [1]
    assert pseudo_classes(torch.tensor([[-0.3], [0.2]]), "regression").tolist() == [0, 1]
    assert pseudo_classes(torch.tensor([[1.0, -1.0]]), "multi-label").tolist() == [[1.0, 0.0]]


def test_same_class_multilabel_jaccard():
    a = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    got = same_class(a, b)
    # {0,1} vs {0}: 1/2 ≥ 0.5 -> 1;  {0,1} vs {2}: 0 -> 0;  {0,1,2} vs {0}: 1/3 -> 0;  {0,1,2} vs {2}: 1/3 -> 0
    # ∅ vs ∅: the same (empty) set -> 1;  ∅ vs {0}: 0
    assert got.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_kernel_weight_by_hand():
    d = torch.tensor([0.0, 1.0, 2.0])
    assert close(kernel_weight(d, 1.0, "rbf"), [1.0, math.exp(-0.5), math.exp(-2.0)])  # exp(−d²/2)
    assert close(kernel_weight(d, 2.0, "rbf"), [1.0, math.exp(-1 / 8), math.exp(-0.5)])  # exp(−d²/8)
    assert close(kernel_weight(d, 1.0, "laplacian"), [1.0, math.exp(-1.0), math.exp(-2.0)])  # exp(−d)
    assert close(kernel_weight(d, 2.0, "laplacian"), [1.0, math.exp(-0.5), math.exp(-1.0)])  # exp(−d/2)
    assert close(kernel_weight(d, 1.0, "inverse-l2"), [1.0, 0.5, 0.2])  # 1/(1+d²)
    assert close(kernel_weight(d, 2.0, "inverse-l2"), [1.0, 0.8, 0.5])  # 1/(1+d²/4)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_weight(d, 1.0, "cosine")


# prototypes p0 = (1, 0), p1 = (0, 1); samples s0 = (1, 0) of class 0, s1 = (0, 1) of class 0,
# s2 = (0.6, 0.8) of class 1. L2 distances to their class prototype: 0, √2, √(0.36 + 0.04) = √0.4.
# L1 distances (laplacian): 0, 1 + 1 = 2, 0.6 + 0.2 = 0.8.
PROTOS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
S3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
CLS3 = torch.tensor([0, 0, 1])
SEEN = torch.tensor([True, True])


def test_soft_kappa_fixed_bandwidth_by_hand():
    kappa, sigma = soft_kappa(S3, CLS3, PROTOS, SEEN, "rbf", 1.0)
    assert close(sigma, 1.0)
    assert close(kappa, [1.0, math.exp(-2 / 2), math.exp(-0.4 / 2)], 1e-5)  # exp(−d²/2σ²)
    kappa, _ = soft_kappa(S3, CLS3, PROTOS, SEEN, "inverse-l2", 1.0)
    assert close(kappa, [1.0, 1 / 3, 1 / 1.4], 1e-5)  # 1/(1 + d²)
    kappa, _ = soft_kappa(S3, CLS3, PROTOS, SEEN, "laplacian", 1.0)
    assert close(kappa, [1.0, math.exp(-2.0), math.exp(-0.8)], 1e-5)  # exp(−d_L1)


def test_soft_kappa_median_bandwidth_by_hand():
    # median of (0, √0.4, √2) is √0.4, so σ² = 0.4: κ = exp(−d²/0.8) = (1, exp(−2/0.8), exp(−0.4/0.8))
    kappa, sigma = soft_kappa(S3, CLS3, PROTOS, SEEN, "rbf", None)
    assert close(sigma, math.sqrt(0.4), 1e-6)
    assert close(kappa, [1.0, math.exp(-2.5), math.exp(-0.5)], 1e-5)
    # laplacian: median of the L1 distances (0, 0.8, 2) is 0.8: κ = exp(−d/0.8)
    kappa, sigma = soft_kappa(S3, CLS3, PROTOS, SEEN, "laplacian", None)
    assert close(sigma, 0.8, 1e-6)
    assert close(kappa, [1.0, math.exp(-2 / 0.8), math.exp(-1.0)], 1e-5)


def test_soft_kappa_unseen_prototype_and_multilabel():
    # class 1 has no prototype yet: κ = 0 for s2; σ from the finite distances only
    kappa, _ = soft_kappa(S3, CLS3, PROTOS, torch.tensor([True, False]), "rbf", 1.0)
    assert close(kappa, [1.0, math.exp(-1.0), 0.0], 1e-5)
    # multi-hot classes: the nearest prototype of the sample's classes counts. s1 = (0, 1) in {0, 1}: d = 0.
    multi = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    kappa, _ = soft_kappa(S3, multi, PROTOS, SEEN, "rbf", 1.0)
    assert close(kappa, [1.0, 1.0, math.exp(-0.2)], 1e-5)


# ----------------------------------------------------------------------------------------------------------
# soft-PU and SupCon weights
# ----------------------------------------------------------------------------------------------------------


def test_soft_pu_weights_by_hand():
    # ỹ = (0, 0, 1); samples 0 and 2 labeled; κ = (0.3, 0.5, 0.7) -> labeled ones count as κ = 1: (1, 0.5, 1)
    cls = torch.tensor([0, 0, 1])
    labeled = torch.tensor([True, False, True])
    kappa = torch.tensor([0.3, 0.5, 0.7])
    w = soft_pu_weights(cls, labeled, kappa)
    assert close(w, [[1.0, 0.5, 0.0],  # anchor 0 (y=0): itself 1, unlabeled 1 of the same ỹ: κ=0.5, labeled 2: 0
                     [1.0, 1.0, 0.0],  # anchor 1 (ỹ=0): labeled 0 of the same class: 1; itself 1
                     [0.0, 0.0, 1.0]])  # anchor 2 (y=1): only itself
    # a slice of anchors (one process's rows under torchrun) gets the same rows, diagonal at its own columns
    w12 = soft_pu_weights(cls, labeled, kappa, anchor_rows=torch.tensor([1, 2]))
    assert close(w12, w[1:])


def test_supcon_weights_by_hand():
    # classes (0, 0, 1, 0), sample 3 unlabeled: positives are itself and same-class *labeled* samples only
    w = supcon_weights(torch.tensor([0, 0, 1, 0]), torch.tensor([True, True, True, False]))
    assert w.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    w = supcon_weights(torch.tensor([0, 0, 1, 0]), torch.tensor([True, True, True, False]),
                       anchor_rows=torch.tensor([3]))
    assert w.tolist() == [[0, 0, 0, 1]]


@pytest.mark.parametrize("kernel", ["rbf", "laplacian", "inverse-l2"])
@pytest.mark.parametrize("bandwidth", [None, 0.7])
def test_soft_pu_weight_properties(kernel, bandwidth):
    g = torch.Generator().manual_seed(3)
    n, k, d = 40, 4, 8
    s = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_(True)
    protos = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=-1)
    y = torch.randint(0, k, (n,), generator=g)
    labeled = torch.rand(n, generator=g) < 0.3
    pseudo = torch.randint(0, k, (n,), generator=g)
    cls_tilde = torch.where(labeled, y, pseudo)
    kappa, sigma = soft_kappa(s, cls_tilde, protos, torch.ones(k, dtype=torch.bool), kernel, bandwidth)
    assert not kappa.requires_grad and not sigma.requires_grad
    assert ((kappa > 0) & (kappa <= 1)).all(), "κ must lie in (0, 1] for samples whose class has a prototype"
    w = soft_pu_weights(cls_tilde, labeled, kappa)
    assert not w.requires_grad, "the weights are constants for the loss"
    assert torch.equal(w.diagonal(), torch.ones(n)), "a sample's own modalities are always positives"
    both = labeled[:, None] & labeled[None, :]
    hard = (y[:, None] == y[None, :]).float()
    assert torch.equal(w[both], hard[both]), "labeled pairs are hard 0/1 by their labels"
    assert ((w >= 0) & (w <= 1)).all()
    unl = ~labeled
    off = unl[None, :] & ~torch.eye(n, dtype=torch.bool)
    same = cls_tilde[:, None] == cls_tilde[None, :]
    assert torch.allclose(w[off], (same.float() * kappa[None, :])[off]), "unlabeled k: 1[ỹ_j = ỹ_k]·κ_k"


def test_pu_loss_sends_no_gradient_through_weights():
    g = torch.Generator().manual_seed(0)
    anchors = torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=-1).requires_grad_(True)
    cands = torch.nn.functional.normalize(torch.randn(4, 2, 3, generator=g), dim=-1).requires_grad_(True)
    w = torch.rand(4, 4, generator=g).requires_grad_(True)
    loss = pu_contrastive_loss(anchors, cands, torch.ones(4, 2, dtype=torch.bool), w, 0.1)
    loss.backward()
    assert w.grad is None
    assert anchors.grad is not None and cands.grad is not None


# ----------------------------------------------------------------------------------------------------------
# L_PU (loss 2)
# ----------------------------------------------------------------------------------------------------------


def test_pu_contrastive_loss_by_hand():
    # D = 2, τ = 0.5, N = 2 samples × M = 2 modalities; candidate (modality 1 of sample 1) is absent.
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # s_0, s_1
    cands = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],  # z^0_0, z^1_0
                          [[0.0, 1.0], [1.0, 0.0]]])  # z^0_1, z^1_1 (absent)
    cmask = torch.tensor([[True, True], [True, False]])
    weights = torch.tensor([[1.0, 0.0],  # anchor 0: only its own sample
                            [0.5, 1.0]])  # anchor 1: sample 0 with weight 0.5, itself 1
    # anchor 0: logits s·z/τ over present candidates = (2, 0, 0); positives z^0_0, z^1_0 with w̄ = 1/2 each
    #   L_0 = −½[log(e²/(e²+2)) + log(1/(e²+2))] = log(e²+2) − 1
    # anchor 1: logits (0, 2, 2); weights per candidate (0.5, 0.5, 1) -> w̄ = (1/4, 1/4, 1/2)
    #   L_1 = −[¼ log(1/(1+2e²)) + ¼ log(e²/(1+2e²)) + ½ log(e²/(1+2e²))] = log(1+2e²) − 1.5
    l0 = math.log(E ** 2 + 2) - 1
    l1 = math.log(1 + 2 * E ** 2) - 1.5
    got = pu_contrastive_loss(anchors, cands, cmask, weights, tau=0.5)
    assert close(got, (l0 + l1) / 2, 1e-5)
    # an invalid anchor (no S) is skipped, the mean is over valid anchors
    got = pu_contrastive_loss(anchors, cands, cmask, weights, tau=0.5, anchor_valid=torch.tensor([True, False]))
    assert close(got, l0, 1e-5)
    # a global denominator divides the same sum (data-parallel)
    got = pu_contrastive_loss(anchors, cands, cmask, weights, tau=0.5, denom=4.0)
    assert close(got, (l0 + l1) / 4, 1e-5)
    # weights are normalised per anchor: scaling a row changes nothing
    got = pu_contrastive_loss(anchors, cands, cmask, weights * torch.tensor([[3.0], [0.25]]), tau=0.5)
    assert close(got, (l0 + l1) / 2, 1e-5)


def test_pu_loss_anchor_without_positive_is_skipped():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cands = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    weights = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # anchor 1 has no positive at all
    got = pu_contrastive_loss(anchors, cands, torch.ones(2, 1, dtype=torch.bool), weights, tau=1.0)
    # anchor 0: logits (1, 0), positive the first: −log(e/(e+1))
    assert close(got, -math.log(E / (E + 1)), 1e-6)


# ----------------------------------------------------------------------------------------------------------
# L_rec (loss 3)
# ----------------------------------------------------------------------------------------------------------


def test_reconstruction_loss_by_hand():
    h = torch.tensor([[[1.0, 2.0], [0.0, 0.0]],
                      [[3.0, 1.0], [1.0, 1.0]]], requires_grad=True)
    h_rec = torch.tensor([[[0.0, 2.0], [5.0, 5.0]],
                          [[1.0, 1.0], [1.0, 0.0]]], requires_grad=True)
    mask = torch.tensor([[True, False], [True, True]])
    # squared errors averaged over d_h = 2: (1 + 0)/2 = 0.5, (masked), (4 + 0)/2 = 2, (0 + 1)/2 = 0.5
    # sum 3, mean over B = 2 samples: 1.5
    got = reconstruction_loss(h.detach(), h_rec, mask)
    assert close(got, 1.5)
    assert close(reconstruction_loss(h.detach(), h_rec, mask, denom=6.0), 0.5)
    got.backward()
    assert h.grad is None, "a detached target gets no gradient"
    # ∂/∂Ĥ = 2(Ĥ − H)/d_h/B on present entries: (−1, 0)/2 for [0,0]; masked [0,1] gets 0
    assert close(h_rec.grad[0, 0], [-0.5, 0.0]) and close(h_rec.grad[0, 1], [0.0, 0.0])
    # a target that carries a gradient (the "full" route) gets the opposite one: ∂/∂T = 2(T − Ĥ)/d_h/B
    h_rec.grad = None
    reconstruction_loss(h, h_rec, mask).backward()
    assert close(h.grad[0, 0], [0.5, 0.0]) and close(h.grad[0, 1], [0.0, 0.0])
    assert close(h.grad[1, 0], [1.0, 0.0]) and close(h.grad[1, 1], [0.0, 0.5])


def test_standardise_features_by_hand():
    from robult_engine.models.robult import standardise_features
    h = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]])
    # row 0: mean 2, var 1 -> (-1, 1)/sqrt(1 + eps); row 1: var 0 -> zeros; row 2: mean 2, var 4 -> (-1, 1)
    got = standardise_features(h, eps=0.0 + 1e-12)
    assert close(got[0], [-1.0, 1.0], 1e-5) and close(got[1], [0.0, 0.0]) and close(got[2], [-1.0, 1.0], 1e-5)
    # scale-free: shrinking H does not change the target
    assert close(standardise_features(h[:1] * 0.01, eps=1e-12), got[:1], 1e-4)


def test_difference_loss_by_hand():
    from robult_engine.losses import difference_loss
    # one modality, 2 rows: U = [[1], [3]] -> centred [[-1], [1]] -> normalised [[-1], [1]];
    # Z = [[0, 2], [2, 0]] -> centred [[-1, 1], [1, -1]] -> normalised rows [[-1, 1], [1, -1]] / sqrt 2
    # Ûᵀ Ẑ = [-1, 1] @ [[-1, 1], [1, -1]] / sqrt 2 = [2, -2] / sqrt 2 -> squares [2, 2], mean 2
    u = torch.tensor([[[1.0]], [[3.0]]])
    z = torch.tensor([[[0.0, 2.0]], [[2.0, 0.0]]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    assert close(difference_loss(u, z, mask), 2.0, 1e-5)
    # orthogonal over the batch: U varies along rows where Z does not co-vary -> 0
    u2 = torch.tensor([[[1.0]], [[-1.0]], [[1.0]], [[-1.0]]])
    z2 = torch.tensor([[[1.0]], [[1.0]], [[-1.0]], [[-1.0]]])
    assert close(difference_loss(u2, z2, torch.ones(4, 1, dtype=torch.bool)), 0.0, 1e-6)
    # a modality with fewer than two present rows is skipped; none left gives 0 (not NaN)
    assert close(difference_loss(u, z, torch.tensor([[True], [False]])), 0.0)


# ----------------------------------------------------------------------------------------------------------
# prototype memory
# ----------------------------------------------------------------------------------------------------------


def test_prototype_memory_update_by_hand():
    mem = PrototypeMemory(num_classes=3, dim=2, momentum=0.5)
    # first update: class 0 = mean of (1,0), (0,1) = (½, ½) -> normalised (1/√2, 1/√2); class 1 = (0.6, 0.8);
    # the memory starts empty, so the first mean is taken as is (no momentum towards the zero vector)
    mem.update(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), torch.tensor([0, 0, 1]))
    r = 1 / math.sqrt(2)
    assert close(mem.protos, [[r, r], [0.6, 0.8], [0.0, 0.0]])
    assert mem.seen.tolist() == [True, True, False]
    # second update, class 0 only: ½·(1/√2, 1/√2) + ½·(1, 0), normalised = the bisector of 0° and 45°,
    # (cos 22.5°, sin 22.5°); class 1 is untouched, class 2 still unseen
    mem.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    assert close(mem.protos, [[c, s], [0.6, 0.8], [0.0, 0.0]], 1e-6)
    # an empty batch of labeled anchors changes nothing
    before = mem.protos.clone()
    mem.update(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert torch.equal(mem.protos, before)
    # multi-hot: a sample updates every class it belongs to
    mem2 = PrototypeMemory(num_classes=2, dim=2, momentum=0.9)
    mem2.update(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]]))
    assert close(mem2.protos, [[0.0, 1.0], [0.0, 1.0]]) and mem2.seen.all()


def test_prototype_memory_travels_in_state_dict():
    mem = PrototypeMemory(2, 3)
    mem.update(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([1]))
    other = PrototypeMemory(2, 3)
    other.load_state_dict(mem.state_dict())
    assert torch.equal(other.protos, mem.protos) and torch.equal(other.seen, mem.seen)
