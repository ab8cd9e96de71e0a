"""The Robult model (docs/method.md): encoders f_i, fusion f_0, shared projector g_0, modality projectors g_i,
reconstructors r_i, shared classifier c and fusion head c_0.

Every method of the comparison (Robult, its ablations and the baselines) uses this same module; they differ
only in their losses. A prediction for any subset A of present modalities is the mean over i ∈ A of
c([U^i, Z^i]); a missing modality contributes nothing.

Two peers of the comparison form a subset's prediction differently (`subset_head`, from the method's
MethodSpec; docs/method.md, "Peers"): "shared-substitution" (ShaSpec) stands in for a missing modality with the
mean of the present modalities' shared features Z^j and classifies the fused features with its own head;
"imagination" (MMIN) imagines a missing modality's standardised latent n(H^i) from the present ones and
classifies all M with the fusion branch c_0(g_0(f_0(H̃))). Only those two modes add modules (`substitution`,
`imagination`), so every other method's parameters and checkpoints are unchanged. Either way a missing
modality's input is never read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, parse_encoder_entries
from ..methods import method_spec
from .encoders import Trust, build_encoder, fit_input_norm, mlp, require_trust


@dataclass
class ModelOutput:
    h: torch.Tensor  # (B, M, d_h) encoder outputs H^i
    z: torch.Tensor  # (B, M, d_z) redundant latents Z^i = g_0(H^i)
    u: torch.Tensor  # (B, M, d_u) unique latents U^i = g_i(H^i)
    # (B, M, C) per-modality logits c([U^i, Z^i]); with a peer subset head, the prediction of each modality alone
    # (the subset {i}), None when the forward computed the peer's training terms instead
    logits_mod: torch.Tensor | None
    logits: torch.Tensor  # (B, C) subset prediction: mean over present modalities (or the peer's subset head)
    mask: torch.Tensor  # (B, M) bool presence mask used
    s: torch.Tensor | None = None  # (B, d_z) S = g_0(f_0(H)) where all modalities are present (rows valid by s_valid)
    s_valid: torch.Tensor | None = None  # (B,) bool
    logits_fused: torch.Tensor | None = None  # (B, C) c_0(S)
    h_rec: torch.Tensor | None = None  # (B, M, d_h) Ĥ^i = r_i([U^i, sg Z^i]), the L_rec path (see `rec_route`)
    rec_target: torch.Tensor | None = None  # (B, M, d_h) what Ĥ^i is compared with (detached unless route "full")
    # peer training terms (`with_peer_terms`): ShaSpec's modality classifier on every U^i -> (B, M, M) logits;
    # MMIN's imagined latents n(H^i) for every slot from the mask's modalities (B, M, d_h), its backward
    # imagination of the mask's modalities from the imagined ones (B, M, d_h), and the true latents n(H^i),
    # detached, that both are compared with (B, M, d_h)
    domain_logits: torch.Tensor | None = None
    h_imagined: torch.Tensor | None = None
    h_cycle: torch.Tensor | None = None
    imagine_target: torch.Tensor | None = None

    def rec_error(self) -> torch.Tensor:
        """Per-sample, per-modality reconstruction error ‖target − Ĥ^i‖² / d_h (detached). -> (B, M)."""
        return (self.rec_target.detach().float() - self.h_rec.detach().float()).pow(2).mean(-1)


REC_ROUTES = ("projector", "branch", "full")
# how a subset's prediction is formed: the mean of per-modality logits (Robult, its ablations, the baselines),
# ShaSpec's shared-feature substitution, or MMIN's imagination of the missing modalities (docs/method.md, "Peers")
SUBSET_HEADS = ("mean", "shared-substitution", "imagination")
# a peer subset head is evaluated on every subset as a table of 2^M logits per sample (evaluation.encode_split)
MAX_PEER_MODALITIES = 10


def subset_masks(m: int) -> torch.Tensor:
    """Every subset of M modalities as a mask, row k holding bit i of k: (2^M, M) bool; row 0 is empty."""
    k = torch.arange(2 ** m)
    return (k[:, None] >> torch.arange(m)[None, :]) & 1 == 1


def subset_index(mask: torch.Tensor) -> torch.Tensor:
    """The row of `subset_masks` holding each mask: Σ_i 2^i mask_i. mask: (..., M) bool -> (...,) int64."""
    return (mask.long() << torch.arange(mask.shape[-1], device=mask.device)).sum(-1)


def standardise_features(h: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """n(H): parameter-free per-sample standardisation over the last axis (zero mean, unit variance).

    The L_rec target of the "branch" and "full" routes, so an encoder cannot lower L_rec by shrinking H^i.
    h: (..., d_h) -> (..., d_h).
    """
    return F.layer_norm(h, h.shape[-1:], eps=eps)  # no affine parameters: exactly (h − mean) / sqrt(var + eps)


def combine_logits(logits_mod: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Subset prediction: mean of per-modality logits over present modalities.

    logits_mod: (B, M, C), mask: (B, M) bool -> (B, C). A row with no modality present gives zeros.
    """
    w = mask.to(logits_mod.dtype).unsqueeze(-1)  # (B, M, 1)
    return (logits_mod * w).sum(1) / w.sum(1).clamp(min=1.0)


class GatedFusion(nn.Module):
    """f_0 alternative: a softmax gate over modalities weighting their (projected) H^i."""

    def __init__(self, m: int, d_h: int, d_hidden: int, dropout: float) -> None:
        super().__init__()
        self.gate = nn.Linear(m * d_h, m)
        self.proj = mlp(d_h, d_hidden, d_h, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        g = torch.softmax(self.gate(h.flatten(1)), dim=-1)  # (B, M)
        return self.proj((g.unsqueeze(-1) * h).sum(1))  # (B, d_h)


class MLPFusion(nn.Module):
    def __init__(self, m: int, d_h: int, d_hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = mlp(m * d_h, d_hidden, d_h, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.flatten(1))  # (B, M*d_h) -> (B, d_h)


class SharedSubstitutionHead(nn.Module):
    """ShaSpec's fusion (docs/method.md, "Peers"): per modality, a residual block over its specific and shared
    features, F^i = P_i([U^i, Z^i]) + U^i; a missing modality's specific feature is absent (zero) and its shared
    feature is the mean of the present modalities' Z^j. The M fused features are concatenated and classified.
    `domain` is the modality classifier of the domain-classification loss (on specific features)."""

    def __init__(self, m: int, d_z: int, d_u: int, d_hidden: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(d_u + d_z, d_u) for _ in range(m)])  # P_i
        self.head = mlp(m * d_u, d_hidden, num_outputs, dropout)  # fusion of the concatenated F^i + classifier
        self.domain = nn.Linear(d_u, m)  # which modality a specific feature came from

    def forward(self, z: torch.Tensor, u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z: (B, M, d_z), u: (B, M, d_u), mask: (B, M) bool -> (B, C). Absent rows of z and u are never read
        (selected away with `where`, so even a NaN there leaves the prediction unchanged)."""
        present = mask.unsqueeze(-1)  # (B, M, 1)
        z_p = torch.where(present, z, torch.zeros_like(z))
        z_bar = z_p.sum(1, keepdim=True) / mask.sum(1).clamp(min=1).to(z.dtype)[:, None, None]  # (B, 1, d_z)
        z_t = torch.where(present, z, z_bar)  # a missing modality's shared feature: the present ones' mean
        u_t = torch.where(present, u, torch.zeros_like(u))  # a missing modality has no specific feature
        uz = torch.cat([u_t, z_t], dim=-1)  # (B, M, d_u + d_z)
        fused = torch.stack([p(uz[:, i]) for i, p in enumerate(self.proj)], dim=1) + u_t  # (B, M, d_u)
        return self.head(fused.flatten(1))


class ImaginationNet(nn.Module):
    """MMIN's imagination module (docs/method.md, "Peers"): a cascade of residual autoencoders over the
    concatenated latents (the model passes n(H^i)). The input holds the present modalities' latents (a missing
    one's slot is zero) and the mask; each block adds its correction, x_{k+1} = x_k + A_k([x_k, mask]); the
    output has an imagined latent in every slot."""

    def __init__(self, m: int, d_h: int, d_hidden: int, blocks: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([mlp(m * d_h + m, d_hidden, m * d_h, dropout) for _ in range(blocks)])

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h: (B, M, d_h), mask: (B, M) bool -> imagined (B, M, d_h). Absent rows of h are never read."""
        b, m, d = h.shape
        x = torch.where(mask.unsqueeze(-1), h, torch.zeros_like(h)).reshape(b, m * d)
        mf = mask.to(x.dtype)
        for block in self.blocks:
            x = x + block(torch.cat([x, mf], dim=-1))
        return x.reshape(b, m, d)


class RobultModel(nn.Module):
    def __init__(self, modalities: list[tuple[str, str, tuple[int, ...]]], num_outputs: int, *, d_h: int = 128,
                 d_z: int = 64, d_u: int = 32, d_hidden: int = 128, dropout: float = 0.1, classifier: str = "mlp",
                 fusion: str = "mlp", sequence_encoder: str = "conv", text_buckets: int = 2 ** 15,
                 rec_route: str = "full", encoder_factories: dict[str, str] | None = None,
                 trust_code: Trust = False, subset_head: str = "mean", input_norm: str = "feature") -> None:
        super().__init__()
        if rec_route not in REC_ROUTES:
            raise ValueError(f"rec_route: one of {', '.join(REC_ROUTES)}, got {rec_route!r}")
        if subset_head not in SUBSET_HEADS:
            raise ValueError(f"subset_head: one of {', '.join(SUBSET_HEADS)}, got {subset_head!r}")
        if subset_head != "mean" and len(modalities) > MAX_PEER_MODALITIES:
            raise ValueError(f"the {subset_head} subset head is evaluated on all 2^M modality subsets and supports "
                             f"at most {MAX_PEER_MODALITIES} modalities, got {len(modalities)}")
        self.subset_head = subset_head  # how a subset's prediction is formed (module docstring)
        self.rec_route = rec_route  # which parameters L_rec trains (docs/method.md, "Latent reconstruction")
        self.modality_names = [m[0] for m in modalities]
        self.modality_kinds = [m[1] for m in modalities]
        m = len(modalities)
        factories = encoder_factories or {}  # modality -> "package.module:function" (model.encoders)
        self.encoders = nn.ModuleDict({
            name: build_encoder(kind, tuple(shape), d_h=d_h, dropout=dropout, sequence_encoder=sequence_encoder,
                                text_buckets=text_buckets, factory=factories.get(name), trust_code=trust_code,
                                modality=name, input_norm=input_norm)
            for name, kind, shape in modalities
        })
        self.fusion = (MLPFusion if fusion == "mlp" else GatedFusion)(m, d_h, d_hidden, dropout)  # f_0
        self.shared_proj = mlp(d_h, d_hidden, d_z, dropout)  # g_0
        self.mod_proj = nn.ModuleList([mlp(d_h, d_hidden, d_u, dropout) for _ in range(m)])  # g_i
        self.reconstructors = nn.ModuleList([mlp(d_u + d_z, d_hidden, d_h) for _ in range(m)])  # r_i
        self.classifier = (nn.Linear(d_u + d_z, num_outputs) if classifier == "linear"
                           else mlp(d_u + d_z, d_hidden, num_outputs, dropout))  # c
        self.fusion_head = nn.Linear(d_z, num_outputs)  # c_0
        self.d_h, self.d_z, self.d_u = d_h, d_z, d_u
        # the peers' own modules, created only for them (no new parameters for any other method)
        if subset_head == "shared-substitution":
            self.substitution = SharedSubstitutionHead(m, d_z, d_u, d_hidden, num_outputs, dropout)
        elif subset_head == "imagination":
            self.imagination = ImaginationNet(m, d_h, d_hidden, dropout=dropout)

    def fit_input_norm(self, split) -> dict[str, int]:
        """Fit the feature-wise input norm of the vector and sequence encoders (`model.input_norm` "feature") to
        `split`, a SplitData of the training data: per feature, over the samples where the modality is present
        (docs/method.md, "Input normalisation"). Returns the number of values per fitted modality."""
        return fit_input_norm(self.encoders, zip(self.modality_names, self.modality_kinds), split.inputs,
                              split.mask, split.lengths)

    # --- pieces ---------------------------------------------------------------------------------------------
    def encode(self, inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]) -> torch.Tensor:
        """H^i for every modality (computed for all rows; the mask decides what is used). -> (B, M, d_h)."""
        return torch.stack([self.encoders[n](inputs[n], lengths.get(n)) for n in self.modality_names], dim=1)

    def project_unique(self, h: torch.Tensor) -> torch.Tensor:
        """U^i = g_i(H^i). h: (B, M, d_h) -> (B, M, d_u)."""
        return torch.stack([g(h[:, i]) for i, g in enumerate(self.mod_proj)], dim=1)

    def reconstruct(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Ĥ^i = r_i([U^i, Z^i]). u: (B, M, d_u), z: (B, M, d_z) -> (B, M, d_h)."""
        uz = torch.cat([u, z], dim=-1)  # (B, M, d_u + d_z)
        return torch.stack([r(uz[:, i]) for i, r in enumerate(self.reconstructors)], dim=1)

    def predict(self, h: torch.Tensor, z: torch.Tensor, u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The prediction of the subset each row's mask names, by the model's subset head. h: (B, M, d_h),
        z: (B, M, d_z), u: (B, M, d_u), mask: (B, M) bool -> (B, C); a row with no modality gives zeros."""
        if self.subset_head == "mean":
            return combine_logits(self.classifier(torch.cat([u, z], dim=-1)), mask)
        if self.subset_head == "shared-substitution":
            logits = self.substitution(z, u, mask)
        else:
            logits = self._imagine(h, mask)[0]
        return torch.where(mask.any(1, keepdim=True), logits, torch.zeros_like(logits))

    def _imagine(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MMIN: (logits c_0(g_0(f_0(H̃))) (B, C), imagined latents (B, M, d_h)). The latents are the standardised
        encoder outputs n(H^i) (encoders of different kinds differ widely in output scale); H̃ holds the present
        modalities' n(H^i) and the imagined ones of the missing modalities."""
        hn = standardise_features(h)
        h_im = self.imagination(hn, mask)
        h_full = torch.where(mask.unsqueeze(-1), hn, h_im)
        return self.fusion_head(self.shared_proj(self.fusion(h_full))), h_im

    def predict_subsets(self, h: torch.Tensor, z: torch.Tensor, u: torch.Tensor, masks: torch.Tensor,
                        max_rows: int = 8192) -> torch.Tensor:
        """The prediction of each of S subsets for every row: masks (S, M) bool -> (B, S, C), in chunks of at
        most `max_rows` (row, subset) pairs. An empty subset gives zeros."""
        b, s = h.shape[0], masks.shape[0]
        masks = masks.to(h.device)
        step = max(1, max_rows // max(b, 1))
        out = []
        for k in range(0, s, step):
            mk = masks[k:k + step]  # (n, M)
            n = mk.shape[0]

            def rows(t: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B*n, ...), each row n times
                return t.unsqueeze(1).expand(b, n, *t.shape[1:]).reshape(b * n, *t.shape[1:])
            pred = self.predict(rows(h), rows(z), rows(u), mk.unsqueeze(0).expand(b, n, -1).reshape(b * n, -1))
            out.append(pred.reshape(b, n, -1))
        return torch.cat(out, dim=1)

    def heads(self, h: torch.Tensor, mask: torch.Tensor, *, with_fusion: bool = False,
              with_reconstruction: bool = False, with_peer_terms: bool = False) -> ModelOutput:
        """Everything after the encoders. h: (B, M, d_h), mask: (B, M) bool. `with_peer_terms` (a peer subset
        head only): also the terms its training losses need, instead of the per-modality predictions."""
        b = h.shape[0]
        z = self.shared_proj(h)  # (B, M, d_z)
        projector_route = with_reconstruction and self.rec_route == "projector"
        if projector_route:
            # U^i for the classifier and g_i(sg H^i) for L_rec in one call per projector (the rows are independent:
            # no batch statistics), instead of running every g_i twice
            u, u_rec = self.project_unique(torch.cat([h, h.detach()], dim=0)).split(b)  # (B, M, d_u) each
        else:
            u = self.project_unique(h)  # (B, M, d_u)
            u_rec = u
        h_im = None
        if self.subset_head == "mean":
            logits_mod = self.classifier(torch.cat([u, z], dim=-1))  # (B, M, C)
            logits = combine_logits(logits_mod, mask)
        else:
            if self.subset_head == "imagination":
                logits, h_im = self._imagine(h, mask)
                logits = torch.where(mask.any(1, keepdim=True), logits, torch.zeros_like(logits))
            else:
                logits = self.predict(h, z, u, mask)
            # each modality alone, the peers' counterpart of c([U^i, Z^i]) (M more passes of the subset head)
            logits_mod = None if with_peer_terms else self.predict_subsets(
                h, z, u, torch.eye(len(self.modality_names), dtype=torch.bool))
        out = ModelOutput(h=h, z=z, u=u, logits_mod=logits_mod, logits=logits, mask=mask)
        if with_peer_terms and self.subset_head == "shared-substitution":
            out.domain_logits = self.substitution.domain(u)  # (B, M, M)
        if with_peer_terms and self.subset_head == "imagination":
            out.h_imagined = h_im
            out.imagine_target = standardise_features(h.detach())
            # backward imagination: the modalities of the mask, from the imagined ones alone
            out.h_cycle = self.imagination(h_im, ~mask)
        if with_fusion:
            out.s_valid = mask.all(dim=1)  # (B,)
            out.s = self.shared_proj(self.fusion(h))  # (B, d_z)
            out.logits_fused = self.fusion_head(out.s)  # (B, C)
        if with_reconstruction:
            # Z^i is always detached, so L_rec never reaches g_0 (nor f_0 or c, which it does not pass through).
            # projector: Ĥ from g_i(sg H^i), target sg H^i: only g_i and r_i learn (the first version's route).
            # branch:    Ĥ from U^i = g_i(H^i), target sg n(H^i): f_i, g_i and r_i learn; the standardised
            #            target cannot be met by shrinking H^i.
            # full:      as branch, and the gradient also flows through the target n(H^i) (MISA-style).
            out.h_rec = self.reconstruct(u_rec, z.detach())  # (B, M, d_h)
            if projector_route:
                out.rec_target = h.detach()
            else:
                target = standardise_features(h)
                out.rec_target = target if self.rec_route == "full" else target.detach()
        return out

    def forward(self, inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor], mask: torch.Tensor, *,
                with_fusion: bool = False, with_reconstruction: bool = False,
                with_peer_terms: bool = False) -> ModelOutput:
        return self.heads(self.encode(inputs, lengths), mask, with_fusion=with_fusion,
                          with_reconstruction=with_reconstruction, with_peer_terms=with_peer_terms)


def build_model(model_cfg, info, rec_route: str = "full", *, trust_code: Trust = False,
                method: str | None = None) -> RobultModel:
    """Turn a ModelConfig and a DatasetInfo into a RobultModel (plain keyword arguments); `rec_route` is the
    run's `loss.rec_route` (it decides the reconstruction target the diagnostics report); `method` the run's
    method, whose MethodSpec.subset_head decides how subsets are predicted (and whether the peers' modules
    exist). None: the mean of per-modality logits."""
    try:
        subset_head = method_spec(method).subset_head if method is not None else "mean"
    except ValueError as e:
        raise ConfigError(str(e)) from None
    mods = [(m.name, m.kind, tuple(m.shape)) for m in info.modalities]
    if subset_head != "mean" and len(mods) > MAX_PEER_MODALITIES:
        raise ConfigError(f"method {method}: evaluates every one of the 2^M modality subsets and supports at most "
                          f"{MAX_PEER_MODALITIES} modalities; {info.name} has {len(mods)} (data.modalities picks some)")
    # model.encoders: your own encoder factories; code outside robult_engine is imported only when trust_code
    # trusts its module (a config the user wrote is trusted by the Trainer; a checkpoint's modules by name, by
    # model_from_checkpoint's caller)
    factories = parse_encoder_entries(model_cfg.encoders)
    unknown = [name for name in factories if name not in info.modality_names]
    if unknown:
        raise ConfigError(f"model.encoders: no modality {unknown[0]!r} in {info.name}; it has "
                          f"{', '.join(info.modality_names)}")
    require_trust(model_cfg.encoders, trust_code)
    return RobultModel(mods, info.num_outputs, d_h=model_cfg.d_h, d_z=model_cfg.d_z, d_u=model_cfg.d_u,
                       d_hidden=model_cfg.d_hidden, dropout=model_cfg.dropout, classifier=model_cfg.classifier,
                       fusion=model_cfg.fusion, sequence_encoder=model_cfg.sequence_encoder,
                       text_buckets=model_cfg.text_buckets, rec_route=rec_route, encoder_factories=factories,
                       trust_code=trust_code, subset_head=subset_head, input_norm=model_cfg.input_norm)
