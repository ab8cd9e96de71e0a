"""The Robult model (docs/method.md): encoders f_i, fusion f_0, shared projector g_0, modality projectors g_i,
reconstructors r_i, shared classifier c and fusion head c_0.

Every method of the comparison (Robult, its ablations and the baselines) uses this same module; they differ
only in their losses. A prediction for any subset A of present modalities is the mean over i ∈ A of
c([U^i, Z^i]); a missing modality contributes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, parse_encoder_entries
from .encoders import build_encoder, mlp, require_trust


@dataclass
class ModelOutput:
    h: torch.Tensor  # (B, M, d_h) encoder outputs H^i
    z: torch.Tensor  # (B, M, d_z) redundant latents Z^i = g_0(H^i)
    u: torch.Tensor  # (B, M, d_u) unique latents U^i = g_i(H^i)
    logits_mod: torch.Tensor  # (B, M, C) per-modality logits c([U^i, Z^i])
    logits: torch.Tensor  # (B, C) subset prediction: mean over present modalities
    mask: torch.Tensor  # (B, M) bool presence mask used
    s: torch.Tensor | None = None  # (B, d_z) S = g_0(f_0(H)) where all modalities are present (rows valid by s_valid)
    s_valid: torch.Tensor | None = None  # (B,) bool
    logits_fused: torch.Tensor | None = None  # (B, C) c_0(S)
    h_rec: torch.Tensor | None = None  # (B, M, d_h) Ĥ^i = r_i([U^i, sg Z^i]), the L_rec path (see `rec_route`)
    rec_target: torch.Tensor | None = None  # (B, M, d_h) what Ĥ^i is compared with (detached unless route "full")

    def rec_error(self) -> torch.Tensor:
        """Per-sample, per-modality reconstruction error ‖target − Ĥ^i‖² / d_h (detached). -> (B, M)."""
        return (self.rec_target.detach().float() - self.h_rec.detach().float()).pow(2).mean(-1)


REC_ROUTES = ("projector", "branch", "full")


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


class RobultModel(nn.Module):
    def __init__(self, modalities: list[tuple[str, str, tuple[int, ...]]], num_outputs: int, *, d_h: int = 128,
                 d_z: int = 64, d_u: int = 32, d_hidden: int = 128, dropout: float = 0.1, classifier: str = "mlp",
                 fusion: str = "mlp", sequence_encoder: str = "conv", text_buckets: int = 2 ** 15,
                 rec_route: str = "full", encoder_factories: dict[str, str] | None = None,
                 trust_code: bool = False) -> None:
        super().__init__()
        if rec_route not in REC_ROUTES:
            raise ValueError(f"rec_route: one of {', '.join(REC_ROUTES)}, got {rec_route!r}")
        self.rec_route = rec_route  # which parameters L_rec trains (docs/method.md, "Latent reconstruction")
        self.modality_names = [m[0] for m in modalities]
        self.modality_kinds = [m[1] for m in modalities]
        m = len(modalities)
        factories = encoder_factories or {}  # modality -> "package.module:function" (model.encoders)
        self.encoders = nn.ModuleDict({
            name: build_encoder(kind, tuple(shape), d_h=d_h, dropout=dropout, sequence_encoder=sequence_encoder,
                                text_buckets=text_buckets, factory=factories.get(name), trust_code=trust_code,
                                modality=name)
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

    def heads(self, h: torch.Tensor, mask: torch.Tensor, *, with_fusion: bool = False,
              with_reconstruction: bool = False) -> ModelOutput:
        """Everything after the encoders. h: (B, M, d_h), mask: (B, M) bool."""
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
        logits_mod = self.classifier(torch.cat([u, z], dim=-1))  # (B, M, C)
        out = ModelOutput(h=h, z=z, u=u, logits_mod=logits_mod, logits=combine_logits(logits_mod, mask),
                          mask=mask)
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
                with_fusion: bool = False, with_reconstruction: bool = False) -> ModelOutput:
        return self.heads(self.encode(inputs, lengths), mask, with_fusion=with_fusion,
                          with_reconstruction=with_reconstruction)


def build_model(model_cfg, info, rec_route: str = "full", *, trust_code: bool = False) -> RobultModel:
    """Turn a ModelConfig and a DatasetInfo into a RobultModel (plain keyword arguments); `rec_route` is the
    run's `loss.rec_route` (it decides the reconstruction target the diagnostics report)."""
    mods = [(m.name, m.kind, tuple(m.shape)) for m in info.modalities]
    # model.encoders: your own encoder factories; code outside robult_engine is imported only when trust_code
    # is true (a config the user wrote is trusted by the Trainer; a checkpoint by model_from_checkpoint's caller)
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
                       trust_code=trust_code)
