"""A readable training loop for every method (docs/method.md), with plain events and a cooperative stop.

    trainer = Trainer(cfg, callbacks=[print], should_stop=lambda: False, out_dir="runs/x")
    final = trainer.run()          # a Finished or a Failed event (also sent to the callbacks)

Methods differ only in their losses (see `Trainer.compute_losses`); they share the model, the data stream
(identical labeled indices and batches for a given seed), the optimiser, the schedule and early stopping.
Under `torchrun` the same loop runs data-parallel: every process builds the same global batch, keeps its
contiguous share, and the contrastive loss sees the whole global batch through a differentiable all-gather.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from . import distributed as D
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, RunConfig
from .data import load_dataset
from .data.base import Batch, DataError, DatasetBundle, check_finite, make_batch
from .evaluation import autocast_ctx, encode_split, metrics_from_encoded, selection_score
from .events import EpochEnded, Event, Failed, Finished, Started, StepEnded
from .losses import (PrototypeMemory, adaptive_thresholds, align_distribution, align_label_rates,
                     class_fair_thresholds, contrastive_classes, difference_loss, domain_classification_loss,
                     feature_std, imagination_loss, labeled_label_rates, labeled_prior, leave_one_out_probs,
                     modality_dropout_mask, perturb_modality, pseudo_classes, pseudo_label_loss, pu_contrastive_loss,
                     reconstruction_loss, select_prior_balanced, select_pseudo_labels, shared_alignment_loss,
                     soft_kappa, soft_pu_weights, supcon_weights, supervised_loss, update_running_mean)
from .diagnostics import kappa_auc, kappa_pair_precision
from .methods import method_spec
from .models.robult import ModelOutput, RobultModel, build_model, combine_logits
from .missing import apply_mask, concat_splits, draw_mask, parse_missing, soft_pu_points
from .runlock import RunFolderBusy, RunLock
from .runlog import RUNLOG_FILE, RunLog
from .semisup import SemiSupervisedSampler, labeled_indices

HIST_EDGES = tuple(i / 20 for i in range(21))


class TrainingFailed(RuntimeError):
    def __init__(self, message: str, kind: str, epoch: int = -1) -> None:
        super().__init__(message)
        self.kind = kind
        self.epoch = epoch  # 0-based epoch the failure happened in (-1: before training)


def seed_everything(seed: int) -> int:
    """Seed torch's global generators (model init, dropout) and return the seed used."""
    torch.manual_seed(seed)
    return seed


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device: CUDA was asked for but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def lr_lambda(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    warm = max(1, int(round(total_steps * warmup_frac)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def _ratio(num, den) -> float:
    """num / den of two sums kept on the device over an epoch (read once, here); NaN without a denominator."""
    if den is None or float(den) <= 0:
        return float("nan")
    return float(num) / float(den)


def _taken_fraction(stats: dict) -> float:
    """The fraction of unlabeled samples seen that were taken as pseudo-labels this epoch (NaN if none seen).
    FixMatch and co-training count in their own units (`Trainer._unlabeled_loss`): samples, or (sample, head)
    pairs for co-training, and a multi-label sample's labels as fractions of it."""
    taken = stats["st_taken"] + stats["kappa_taken"] + stats.get("ul_taken", 0.0)
    seen = stats["st_seen"] + stats["kappa_seen"] + stats.get("ul_seen", 0)
    return taken / seen if seen else float("nan")


# the training state `Trainer._save_last` writes into last.pt: its counters (with their smallest valid value)
TRAINING_STATE_COUNTERS = {"next_epoch": 0, "global_step": 0, "best_epoch": -1, "bad_epochs": 0}
TRAINING_STATE_KEYS = ("optimizer", "scheduler", "gen_state", "torch_rng", "best_score", *TRAINING_STATE_COUNTERS)
ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")  # what AdamW keeps of every parameter it has stepped


def _is_number(v: object) -> bool:
    """A real number: an int or float (not a bool), or a one-element real tensor (an optimizer may hold those)."""
    if isinstance(v, torch.Tensor):
        return v.numel() == 1 and not v.dtype.is_complex and v.dtype != torch.bool
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, int) and abs(v) > 2 ** 63)


def check_training_state(ts: object, source: str | Path) -> None:
    """Refuse the training state of a resume file that `Trainer._restore` could not apply as written: an entry
    missing, a counter or score of the wrong type, a random-generator state that is not one (tried on a scratch
    generator), an optimizer or schedule state of the wrong shape. Raises a CheckpointError that names the file and
    the entry; changes nothing."""
    def bad(what: str) -> None:
        raise CheckpointError(f"{source}: damaged training state: {what}; resume from an intact last.pt of the run "
                              f"(or start the run again)")

    if not isinstance(ts, dict):
        bad(f"expected a dict, got {type(ts).__name__}")
    missing = [k for k in TRAINING_STATE_KEYS if k not in ts]
    if missing:
        bad(f"missing {', '.join(missing)}")
    for key, low in TRAINING_STATE_COUNTERS.items():
        if type(ts[key]) is not int or ts[key] < low:
            bad(f"{key} must be an integer >= {low}, got {str(ts[key])[:40]}")
    score = ts["best_score"]
    if isinstance(score, torch.Tensor) or not _is_number(score) or math.isnan(score):
        bad(f"best_score must be a number, got {str(score)[:40]}")
    for key in ("gen_state", "torch_rng"):
        v = ts[key]
        if not (isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 1):
            what = f"a {v.dtype} tensor of shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            bad(f"{key} is not a random-generator state (a 1-D byte tensor), got {what}")
        try:
            torch.Generator().set_state(v)
        except (RuntimeError, TypeError, ValueError) as e:
            bad(f"{key} is not a valid random-generator state ({str(e).strip().splitlines()[0][:120]})")
    opt = ts["optimizer"]
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)
            and opt["param_groups"]):
        bad("optimizer is not an optimizer state (a dict of state and parameter groups)")
    for i, g in enumerate(opt["param_groups"]):
        if not (isinstance(g, dict) and isinstance(g.get("params"), list)
                and all(type(x) is int for x in g["params"])):
            bad(f"optimizer: parameter group {i} does not list its parameters")
        for name in ("lr", "weight_decay", "eps"):
            if not _is_number(g.get(name)):
                bad(f"optimizer: {name} of parameter group {i} is not a number ({str(g.get(name))[:40]})")
        betas = g.get("betas")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(map(_is_number, betas))):
            bad(f"optimizer: betas of parameter group {i} are not two numbers ({str(betas)[:40]})")
    ids = [x for g in opt["param_groups"] for x in g["params"]]
    for k, state in opt["state"].items():
        if type(k) is not int or k not in ids or not isinstance(state, dict):
            bad(f"optimizer: the state of parameter {str(k)[:20]} belongs to no parameter group")
        if state and not all(isinstance(state.get(n), torch.Tensor) for n in ADAMW_STATE):
            bad(f"optimizer: the state of parameter {k} lacks one of {', '.join(ADAMW_STATE)}")
    sched = ts["scheduler"]
    if not isinstance(sched, dict) or "optimizer" in sched:
        bad("scheduler is not a learning-rate schedule state")
    for name in ("last_epoch", "_step_count"):
        if (name in sched or name == "last_epoch") and type(sched.get(name)) is not int:
            bad(f"scheduler: {name} is not an integer ({str(sched.get(name))[:40]})")
    for name in ("base_lrs", "_last_lr"):
        if name in sched and not (isinstance(sched[name], list) and len(sched[name]) == len(opt["param_groups"])
                                  and all(map(_is_number, sched[name]))):
            bad(f"scheduler: {name} is not one learning rate per parameter group")


class Trainer:
    def __init__(self, cfg: RunConfig, bundle: DatasetBundle | None = None, *,
                 callbacks: Iterable[Callable[[Event], None]] = (), should_stop: Callable[[], bool] | None = None,
                 out_dir: str | Path | None = None, resume_from: str | Path | None = None,
                 eval_batch_size: int = 512, trust_code=False, tensorboard: bool = False) -> None:
        self.cfg = cfg
        self.bundle = bundle
        self.callbacks = list(callbacks)
        self.should_stop = should_stop or (lambda: False)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.eval_batch_size = eval_batch_size
        # the encoder modules outside robult_engine the config (model.encoders) may import: none by default
        # (UntrustedCodeError names them); the module names the user trusts; or True for a config the user
        # wrote themselves (the CLI's flags and --config file; robult_engine/models/encoders.py)
        self.trust_code = trust_code
        # with an out_dir every run writes <out_dir>/metrics.jsonl; tensorboard=True adds TensorBoard event files
        # (robult_engine/runlog.py); the log is fed the events this trainer emits
        self.tensorboard = tensorboard
        self.runlog = None
        self.model: RobultModel | None = None
        self.device = torch.device("cpu")
        self.dist = D.DistInfo()
        self.best_path = ""
        self._best_state: dict | None = None  # in-memory copy of the best epoch when there is no out_dir

    # --- events -----------------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if not self.dist.is_main:
            return
        for cb in self.callbacks:
            cb(event)

    # --- set-up -----------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        cfg.validate()
        self.device = resolve_device(cfg.train.device)
        self.dist = D.init_from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if cfg.train.batch_size % self.dist.world:
            raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the "
                              f"{self.dist.world} processes")
        if self.bundle is None:
            self.bundle = load_dataset(cfg.data)
        elif cfg.data.modalities:
            self.bundle = self.bundle.select_modalities(tuple(cfg.data.modalities))
        info = self.bundle.info
        cfg.validate(info.modality_names)
        for name in ("train", "val"):
            if name not in self.bundle.splits or len(self.bundle.splits[name]) == 0:
                raise DataError(f"{info.name}: the {name} split is empty")
            check_finite(self.bundle.splits[name], name, info.name)
        self.train_split = self._training_split(self.bundle)  # data.train_missing and data.train_pool applied
        self.val_split = self.bundle.splits["val"]
        self.task = info.task
        n = len(self.train_split)

        ckpt = None
        if self.resume_from is not None:
            ckpt = load_checkpoint(self.resume_from)
            if ckpt.fingerprint != self.bundle.fingerprint():
                raise CheckpointError(f"{self.resume_from}: this run was trained on other data "
                                      f"(fingerprint {ckpt.fingerprint}); cannot resume on {info.name}")
            for section in ("method", "data", "model", "loss"):
                if getattr(ckpt.config, section) != getattr(cfg, section):
                    raise ConfigError(f"{self.resume_from}: cannot resume with a different {section} configuration "
                                      f"than the run was started with (only the training schedule may change)")
            if not ckpt.training_state:
                raise CheckpointError(f"{self.resume_from}: holds no training state to resume from "
                                      f"(resume from last.pt of a run folder)")
        if ckpt is not None:
            self.labeled_idx = ckpt.labeled_indices.long()
        else:
            # drawn on the data's train split alone: a pool appended by data.train_pool is never labeled
            self.labeled_idx = labeled_indices(self.bundle.splits["train"].target, self.task,
                                               cfg.data.label_fraction, cfg.data.seed)
        self.is_labeled = torch.zeros(n, dtype=torch.bool)
        self.is_labeled[self.labeled_idx] = True
        self.sampler = SemiSupervisedSampler(n, self.labeled_idx, cfg.train.batch_size,
                                             cfg.train.labeled_per_batch, cfg.data.seed)

        seed_everything(cfg.seed)
        self.model = build_model(cfg.model, info, rec_route=cfg.loss.rec_route,
                                 trust_code=self.trust_code, method=cfg.method).to(self.device)
        if ckpt is None:
            # model.input_norm "feature": each input feature's mean and std on the training split's present
            # samples, fitted once before the first epoch (a resume restores them with the weights); every process
            # of a data-parallel run fits the same numbers from the same split
            self.model.fit_input_norm(self.train_split)
        n_protos = 2 if self.task == "regression" else info.num_outputs
        self.memory = PrototypeMemory(n_protos, cfg.model.d_z, cfg.loss.prototype_momentum).to(self.device)
        self.net = (DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                        find_unused_parameters=True) if self.dist.enabled else self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                     foreach=True)
        self.total_steps = cfg.train.epochs * self.sampler.steps_per_epoch
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(self.total_steps, cfg.train.warmup_frac))
        self.gen = torch.Generator().manual_seed(cfg.seed * 7919 + 17)  # modality dropout draws
        self._setup_pseudo_labels()
        self.start_epoch = 0
        self.global_step = 0
        self.best_score = float("-inf")
        self.best_epoch = -1
        self.bad_epochs = 0
        if ckpt is not None:
            self._restore(ckpt)
        if self.out_dir is not None and self.dist.is_main and self.runlog is None:
            history = self.resume_from.parent / RUNLOG_FILE if self.resume_from is not None else None
            self.runlog = RunLog(self.out_dir, start_epoch=self.start_epoch, tensorboard=self.tensorboard,
                                 history_from=history, method=cfg.method, seed=cfg.seed)
            self.callbacks.append(self.runlog)

    def _training_split(self, bundle: DatasetBundle):
        """The data's train split with `data.train_missing` applied to its mask (drawn once, with the data seed as
        the mask seed, so every method of a seed sees the same incomplete samples) and, with `data.train_pool`,
        the dataset's `pool` split appended as unlabeled samples (after the train rows, so labeled indices keep
        pointing into `train`; the pool's own labels are never used). train_missing does not touch the pool."""
        cfg = self.cfg.data
        train = bundle.splits["train"]
        if cfg.train_missing:
            spec = parse_missing(cfg.train_missing, where="data.train_missing:")[0]
            train = apply_mask(train, draw_mask(train, bundle.info, spec, cfg.seed))
        if cfg.train_pool:
            pool = bundle.splits.get("pool")
            if pool is None or len(pool) == 0:
                raise ConfigError(f"data.train_pool: {bundle.info.name} has no pool split of incomplete samples "
                                  f"(its splits: {', '.join(bundle.splits)})")
            check_finite(pool, "pool", bundle.info.name)
            train = concat_splits(train, pool)
        return train

    def _restore(self, ckpt) -> None:
        """Continue from a resume file: its weights, memory and training state. Whatever cannot be applied is
        refused with a CheckpointError naming the file and the part (`check_training_state` first, so a damaged
        state changes nothing)."""
        ts = ckpt.training_state
        check_training_state(ts, ckpt.path)

        def apply(what: str, load: Callable[[], object]) -> None:
            try:
                load()
            except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise CheckpointError(f"{ckpt.path}: {what} ({first})") from None

        apply("the weights do not match the model the config describes",
              lambda: self.model.load_state_dict(ckpt.model_state))
        apply("the prototype memory does not match the model", lambda: self.memory.load_state_dict(ckpt.memory_state))
        apply("damaged training state: the optimizer state does not fit the model",
              lambda: self.opt.load_state_dict(ts["optimizer"]))
        for group in self.opt.param_groups:
            for param in group["params"]:
                for name, v in self.opt.state.get(param, {}).items():
                    if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != param.shape:
                        raise CheckpointError(f"{ckpt.path}: damaged training state: the optimizer's {name} of a "
                                              f"parameter of shape {tuple(param.shape)} has shape {tuple(v.shape)}")
        apply("damaged training state: the scheduler state cannot be restored",
              lambda: self.sched.load_state_dict(ts["scheduler"]))
        self.gen.set_state(ts["gen_state"])  # both checked on a scratch generator above
        torch.set_rng_state(ts["torch_rng"])
        pseudo_state = ts.get("pseudo_state", {})  # FixMatch and co-training (`_setup_pseudo_labels`)
        for key, value in (pseudo_state.items() if isinstance(pseudo_state, dict) else [("", None)]):
            cur = self.pl_state.get(key)
            if cur is None or not isinstance(value, torch.Tensor) or value.shape != cur.shape:
                raise CheckpointError(f"{ckpt.path}: damaged training state: the pseudo-label state {key!r} does not "
                                      f"fit this run")
            self.pl_state[key] = value.to(cur.device, cur.dtype)
        self.start_epoch = int(ts["next_epoch"])
        self.global_step = int(ts["global_step"])
        self.best_score = float(ts["best_score"])
        self.best_epoch = int(ts["best_epoch"])
        self.bad_epochs = int(ts["bad_epochs"])
        if self.out_dir is not None and (self.out_dir / "best.pt").exists():
            self.best_path = str(self.out_dir / "best.pt")

    # --- losses -----------------------------------------------------------------------------------------
    def rec_ramp(self) -> float:
        """The share of λ_rec applied at this step: a linear ramp from 0 to 1 over the first `loss.rec_warmup`
        of the training steps (docs/method.md, "Latent reconstruction"), then 1."""
        warm = self.cfg.loss.rec_warmup * getattr(self, "total_steps", 0)
        if warm < 1:
            return 1.0
        return min(1.0, (getattr(self, "global_step", 0) + 1) / warm)

    def compute_losses(self, batch: Batch, epoch: int, stats: dict) -> dict[str, torch.Tensor]:
        """The method's losses on one (local share of a global) batch. Returns scalar tensors incl. "total".

        `batch` holds this process's rows; denominators are global so gradients match a one-process run.
        """
        cfg, task, di = self.cfg, self.task, self.dist
        spec = method_spec(cfg.method)
        if spec.subset_head != "mean":
            return self._peer_losses(batch, spec)
        mask = batch.mask
        lam_pu = cfg.loss.lambda_pu if spec.contrastive != "none" else 0.0
        lam_rec = cfg.loss.lambda_rec * self.rec_ramp() if spec.uses_rec else 0.0
        lam_diff = cfg.loss.lambda_diff if spec.uses_rec else 0.0
        strong = None
        if spec.pseudo_labels == "fixmatch":
            # the weak view (the batch as is) and FixMatch's strong view in one pass (docs/method.md, "FixMatch")
            out, strong = self._forward_weak_and_strong(batch, lam_rec > 0)
        else:
            out = self.net(batch.inputs, batch.lengths, mask, with_fusion=True, with_reconstruction=lam_rec > 0)

        labeled = batch.labeled
        weight = labeled.float()
        target = batch.target
        losses: dict[str, torch.Tensor] = {}
        after_warmup = epoch >= int(cfg.train.epochs * cfg.loss.st_warmup)

        pu = None
        if spec.needs_soft_pu_terms and (lam_pu > 0 or spec.pseudo_labels == "kappa"):
            pu = self._soft_pu_terms(out, batch, stats)
        if spec.pseudo_labels == "confident" and after_warmup:
            # confident fused predictions of unlabeled samples become their targets
            with torch.no_grad():
                conf, pseudo = self._confident_pseudo(out.logits.detach())
                take = (~labeled) & conf & out.mask.all(1)
            target = torch.where(take.view(-1, *([1] * (target.dim() - 1))), pseudo.to(target.dtype), target)
            weight = weight + take.float()
            stats["st_taken"] = stats.get("st_taken", 0) + int(take.sum())
            stats["st_seen"] = stats.get("st_seen", 0) + int((~labeled).sum())
            if pseudo.dim() == 1 and batch.target.dim() == 1:  # diagnostic: accuracy of the taken pseudo-labels
                right = int((pseudo[take] == batch.target[take].long()).sum())
                stats["st_correct"] = stats.get("st_correct", 0) + right
        if spec.pseudo_labels == "kappa" and after_warmup:
            # beyond the paper: unlabeled samples train the classifiers on their pseudo-label ỹ = c_0(S),
            # weighted by their soft weight κ (how close they lie to the labeled prototype of that class)
            kappa_local, pseudo_local = pu["kappa_local"], pu["pseudo_local"]
            if self.task == "regression":
                pseudo_local = out.logits_fused.detach()[:, 0].float()
            take = (~labeled) & out.s_valid
            target = torch.where(take.view(-1, *([1] * (target.dim() - 1))), pseudo_local.to(target.dtype), target)
            weight = weight + take.float() * kappa_local
            stats["kappa_taken"] = stats.get("kappa_taken", 0.0) + float((take.float() * kappa_local).sum())
            stats["kappa_seen"] = stats.get("kappa_seen", 0) + int((~labeled).sum())
        denom_sup = D.all_reduce_sum(weight.sum().detach(), di).clamp(min=1.0)
        if spec.moddrop:
            # the late-fusion prediction trained under random modality dropout, plus the fused head
            drop = self._drop_mask_local(mask)
            logits_mod = combine_logits(out.logits_mod, drop).unsqueeze(1)  # (B, 1, C)
            sup_mask = torch.ones(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
        else:
            logits_mod, sup_mask = out.logits_mod, mask
        losses["sup"] = supervised_loss(logits_mod, sup_mask, target, weight, task, out.logits_fused, out.s_valid,
                                        denom=denom_sup)
        if pu is not None and lam_pu > 0:
            losses["pu"] = pu_contrastive_loss(pu["anchors"], pu["candidates"], pu["cand_mask"], pu["weights"],
                                               cfg.loss.tau, pu["anchor_valid"], denom=pu["denom"])
        if lam_rec > 0:
            losses["rec"] = reconstruction_loss(out.rec_target, out.h_rec, out.mask,
                                                denom=float(mask.shape[0] * di.world))
        if lam_diff > 0:
            # Z^i detached: like L_rec, the difference term trains the modality's own branch, not g_0. Under
            # data parallel it is computed on each process's share of the batch (its centring is per process).
            losses["diff"] = difference_loss(out.u, out.z.detach(), out.mask)

        lam_u = 0.0
        if spec.pseudo_labels in ("fixmatch", "cotrain"):
            lam_u = cfg.loss.fixmatch_lambda_u if spec.pseudo_labels == "fixmatch" else cfg.loss.cotrain_lambda_u
            losses["unsup"] = self._unlabeled_loss(spec.pseudo_labels, batch, out, strong, stats)

        total = (losses["sup"] + lam_pu * losses.get("pu", 0.0) + lam_rec * losses.get("rec", 0.0)
                 + lam_diff * losses.get("diff", 0.0) + lam_u * losses.get("unsup", 0.0))
        losses["total"] = total
        return losses

    def _soft_pu_terms(self, out, batch: Batch, stats: dict) -> dict:
        """Everything the soft-PU loss needs, over the global batch (docs/method.md, soft-PU loss)."""
        cfg, task, di = self.cfg, self.task, self.dist
        labeled = batch.labeled
        s_all = D.gather_with_grad(out.s, di)  # (Bg, d_z)
        z_all = D.gather_with_grad(out.z, di)  # (Bg, M, d_z)
        s_n = torch.nn.functional.normalize(s_all.float(), dim=-1)
        z_n = torch.nn.functional.normalize(z_all.float(), dim=-1)
        mask_all = D.gather(out.mask, di)
        lab_all = D.gather(labeled, di)
        valid_all = D.gather(out.s_valid, di)
        cls_all = contrastive_classes(D.gather(batch.target, di), task)
        # an incomplete sample has no S: its κ point and pseudo-class come from its present modalities
        kappa_points, pseudo_logits = soft_pu_points(s_n, z_n, mask_all, valid_all,
                                                     D.gather(out.logits_fused.detach().float(), di),
                                                     D.gather(out.logits.detach().float(), di))
        pseudo_all = pseudo_classes(pseudo_logits, task)
        lab_b = lab_all.view(-1, *([1] * (cls_all.dim() - 1)))
        cls_tilde = torch.where(lab_b, cls_all.to(pseudo_all.dtype), pseudo_all)
        # the memory of labeled prototypes first sees this batch's labeled anchors (identical on all processes)
        self.memory.update(s_n.detach()[lab_all & valid_all], cls_all[lab_all & valid_all])
        b_local = out.s.shape[0]
        rows = torch.arange(b_local, device=s_all.device) + di.rank * b_local
        kappa, _sigma = soft_kappa(kappa_points, cls_tilde, self.memory.protos, self.memory.seen,
                                   cfg.loss.kernel, cfg.loss.bandwidth)
        if method_spec(cfg.method).contrastive == "supcon":
            w = supcon_weights(cls_all, lab_all, rows)
            anchor_valid = out.s_valid & labeled
        else:
            w = soft_pu_weights(cls_tilde, lab_all, kappa, rows)
            anchor_valid = out.s_valid
            unl = ~lab_all
            if unl.any():
                k_unl = kappa[unl].float().cpu()
                stats["kappa_hist"] += torch.histc(k_unl, bins=20, min=0.0, max=1.0)
                stats["kappa_sum"] += float(k_unl.sum())
                stats["kappa_n"] += int(unl.sum())
                true_cls = cls_all[unl]
                if true_cls.dim() == 1:  # diagnostic only: pseudo-label accuracy on unlabeled samples
                    right = pseudo_all[unl] == true_cls
                    stats["pl_correct"] += int(right.sum())
                    stats["pl_n"] += int(unl.sum())
                    # the quality of κ itself (events.EpochEnded.kappa_precision / kappa_auc)
                    stats.setdefault("kq_kappa", []).append(k_unl)
                    stats.setdefault("kq_right", []).append(right)  # moved to the host once, at epoch end
                    pos, true_pos = kappa_pair_precision(w.detach(), cls_all, lab_all, rows)
                    stats["kq_pos"] = stats.get("kq_pos", 0.0) + pos
                    stats["kq_true_pos"] = stats.get("kq_true_pos", 0.0) + true_pos
        denom = D.all_reduce_sum(anchor_valid.sum().float().detach(), di).clamp(min=1.0)
        return {"anchors": s_n[rows], "candidates": z_n, "cand_mask": mask_all, "weights": w,
                "anchor_valid": anchor_valid, "denom": denom, "kappa_local": kappa[rows],
                "pseudo_local": pseudo_all[rows]}

    # --- FixMatch and co-training (docs/method.md, "FixMatch", "Co-training") -----------------------------
    def _setup_pseudo_labels(self) -> None:
        """FixMatch's and co-training's state: on a single-label task the labeled class prior π and the running mean
        p̄ of distribution alignment (starting at π), and FlexMatch's memory of every training sample's latest
        confident class (−1: none yet); on a multi-label task each label's labeled positive rate π and the running
        mean p̄ of its predicted positive rate (starting at π); for FixMatch, each modality's feature std on the
        training split (the scale of the strong view's noise). Empty for the other methods."""
        spec = method_spec(self.cfg.method)
        self.pl_state: dict[str, torch.Tensor] = {}
        self.feature_stds: dict[str, torch.Tensor] = {}
        if spec.pseudo_labels not in ("fixmatch", "cotrain"):
            return
        if self.task == "single-label":
            prior = labeled_prior(self.bundle.splits["train"].target[self.labeled_idx],
                                  self.bundle.info.num_outputs).to(self.device)
            self.pl_state = {"prior": prior, "mean": prior.clone(),
                             "flex": torch.full((len(self.train_split),), -1, dtype=torch.long)}
        elif self.task == "multi-label":
            prior = labeled_label_rates(self.bundle.splits["train"].target[self.labeled_idx]).to(self.device)
            self.pl_state = {"prior": prior, "mean": prior.clone()}
        if spec.pseudo_labels == "fixmatch":
            split = self.train_split
            for i, m in enumerate(self.bundle.info.modalities):
                self.feature_stds[m.name] = feature_std(split.inputs[m.name], m.kind, split.mask[:, i],
                                                        split.lengths.get(m.name)).to(self.device)

    def _strong_view(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """FixMatch's strong view of this process's rows: modality dropout of the presence mask with
        `loss.fixmatch_drop_p` (never emptying a row), Gaussian noise of `loss.fixmatch_noise` feature stds on
        vector, image and sequence inputs, token dropout (`loss.fixmatch_token_drop`) on text. Drawn for the global
        batch from the trainer's generator and sliced, so the processes of a data-parallel run share one draw.
        Returns (inputs, mask (B, M) bool)."""
        cfg = self.cfg.loss
        b, r, w = batch.mask.shape[0], self.dist.rank, self.dist.world
        mask = modality_dropout_mask(self._global_mask, cfg.fixmatch_drop_p, self.gen)[r * b:(r + 1) * b]
        inputs = {}
        for m in self.bundle.info.modalities:
            x = batch.inputs[m.name]
            amount = cfg.fixmatch_token_drop if m.kind == "text" else cfg.fixmatch_noise
            if amount == 0:
                inputs[m.name] = x
                continue
            shape = (b * w, *x.shape[1:])
            draw = torch.rand if m.kind == "text" else torch.randn  # token dropout: uniform; noise: normal
            draws = draw(shape, generator=self.gen)
            inputs[m.name] = perturb_modality(x, m.kind, self.feature_stds[m.name], cfg.fixmatch_noise,
                                              cfg.fixmatch_token_drop, draws[r * b:(r + 1) * b].to(x.device),
                                              batch.lengths.get(m.name))
        return inputs, mask.to(batch.mask.device)

    def _forward_weak_and_strong(self, batch: Batch, with_reconstruction: bool) -> tuple[ModelOutput, ModelOutput]:
        """The model on the weak view (the batch as is) and on the strong view (`_strong_view`) in one forward pass
        over 2B rows: the built-in layers are per-sample (no batch statistics), so this equals two passes, and a
        data-parallel step keeps one forward per backward. Returns (weak output, strong output)."""
        s_inputs, s_mask = self._strong_view(batch)
        both = self.net({k: torch.cat([v, s_inputs[k]]) for k, v in batch.inputs.items()},
                        {k: torch.cat([v, v]) for k, v in batch.lengths.items()}, torch.cat([batch.mask, s_mask]),
                        with_fusion=True, with_reconstruction=with_reconstruction)
        b = batch.mask.shape[0]

        def rows(sl: slice) -> ModelOutput:
            return ModelOutput(**{f.name: (v[sl] if isinstance(v := getattr(both, f.name), torch.Tensor) else v)
                                  for f in dataclasses.fields(both)})
        return rows(slice(0, b)), rows(slice(b, None))

    def _flex_thresholds(self, threshold: float) -> torch.Tensor:
        """FlexMatch's per-class thresholds from the memory of the unlabeled samples' latest confident class."""
        mem = self.pl_state["flex"][self.sampler.unlabeled]
        counts = torch.bincount(mem + 1, minlength=self.bundle.info.num_outputs + 1).float()
        return adaptive_thresholds(counts[1:], counts[0], threshold).to(self.device)

    def _unlabeled_loss(self, kind: str, batch: Batch, out: ModelOutput, strong: ModelOutput | None,
                        stats: dict) -> torch.Tensor:
        """L_u on this process's rows (the mean over the global batch's unlabeled samples).

        FixMatch (kind "fixmatch"): the weak view's subset prediction of an unlabeled sample is its pseudo-label;
        every head of the strong view is trained on it where it is confident. Co-training ("cotrain"): each head of
        an unlabeled sample is trained on the mean prediction of the sample's other present modalities where that
        is confident. Single-label pseudo-labels are balanced by `loss.pseudo_balance` (distribution alignment,
        FreeMatch's class-wise or FlexMatch's class-adaptive thresholds); multi-label ones are taken label by label
        (p ≥ τ or p ≤ 1 − τ), under `loss.pseudo_balance` aligned and admitted in each label's prior proportion
        (`_balanced_multi_label`); on a regression task FixMatch trains a consistency term (every strong head toward
        the weak prediction) and co-training has nothing to train. Counts the pseudo-labels taken, and how good the
        taken ones are against the training target, in `stats` (ul_taken / ul_seen; ul_correct / ul_checked: the
        accuracy, or on a multi-label task the micro-F1 as 2 TP / (2 TP + FP + FN))."""
        cfg, task, di = self.cfg.loss, self.task, self.dist
        unl = ~batch.labeled  # (B,)
        n_unl = D.all_reduce_sum(unl.sum().float(), di).clamp(min=1.0)  # global: the denominators are global
        if kind == "fixmatch":
            logits, heads, thr = strong.logits_mod, strong.mask, cfg.fixmatch_threshold
            rows = unl[:, None]  # (B, 1): one pseudo-label per sample, shared by the strong view's heads
            weak = out.logits.detach().float()[:, None, :]  # (B, 1, C)
        else:
            logits, heads, thr = out.logits_mod, out.mask, cfg.cotrain_threshold
            rows = unl[:, None] & out.mask  # (B, M): one pseudo-label per present head
            weak = out.logits_mod.detach().float()  # (B, M, C)
        if task == "regression":
            if kind != "fixmatch":  # a regression output has no confidence to select pseudo-labels by
                return logits.sum() * 0.0
            return pseudo_label_loss(logits, heads, weak[..., 0].expand(heads.shape), unl[:, None].expand(heads.shape),
                                     task, denom=n_unl)
        p = torch.softmax(weak, -1) if task == "single-label" else torch.sigmoid(weak)
        valid = rows
        if kind != "fixmatch":
            p, has_other = leave_one_out_probs(p, out.mask)
            valid = rows & has_other
        threshold: float | torch.Tensor = thr
        balance = set(cfg.pseudo_balance.split("+"))
        if task == "single-label" and cfg.pseudo_balance != "none":
            st = self.pl_state
            if balance & {"da", "freematch"}:  # both read the running mean of the raw predictions
                vf = valid.to(p.dtype).unsqueeze(-1)
                st["mean"] = update_running_mean(st["mean"], D.all_reduce_sum((p * vf).sum((0, 1)), di),
                                                 D.all_reduce_sum(vf.sum(), di), cfg.da_momentum)
            if "freematch" in balance:
                threshold = class_fair_thresholds(st["mean"], thr)
            if "da" in balance:
                p = align_distribution(p, st["prior"], st["mean"])
            if "flexmatch" in balance:
                threshold = self._flex_thresholds(thr)
                # the memory: each unlabeled sample's latest class predicted with confidence ≥ τ (FixMatch: the
                # weak prediction; co-training: the mean over its heads' teachers)
                full = p[:, 0] if kind == "fixmatch" else ((p * valid.unsqueeze(-1)).sum(1)
                                                           / valid.sum(1, keepdim=True).clamp(min=1))
                conf, cls = full.max(-1)
                hit = D.gather(unl & valid.any(1) & (conf >= thr), di).cpu()
                self.pl_state["flex"][D.gather(batch.index, di).cpu()[hit]] = D.gather(cls, di).cpu()[hit]
        k = p.shape[1]
        if task == "multi-label" and cfg.pseudo_balance != "none":
            pseudo, take = self._balanced_multi_label(p, valid, thr, balance)
        else:
            pseudo, take = select_pseudo_labels(p.reshape(-1, p.shape[-1]), task, threshold)
            pseudo = pseudo.reshape(p.shape[:2] + pseudo.shape[1:])  # (B, k) or (B, k, C)
            take = take.reshape(pseudo.shape) & (valid if task == "single-label" else valid.unsqueeze(-1))
        # diagnostics: the share taken and the quality of the taken pseudo-labels against the training targets
        # (known on benchmarks; never used for training): single-label their accuracy, multi-label their micro-F1
        # (2 TP / (2 TP + FP + FN) over the taken labels: a per-label accuracy stays near 1 − π even when every
        # pseudo-label says "absent")
        truth = batch.target.long() if task == "single-label" else (batch.target > 0.5).float()
        per = float(p.shape[-1]) if task == "multi-label" else 1.0
        stats["ul_taken"] = stats.get("ul_taken", 0.0) + float(take.sum()) / per
        stats["ul_seen"] = stats.get("ul_seen", 0) + int(rows.sum())
        if task == "multi-label":
            t, tk = truth.unsqueeze(1).expand_as(pseudo), take.to(pseudo.dtype)
            tp = int((pseudo * t * tk).sum())
            stats["ul_correct"] = stats.get("ul_correct", 0) + 2 * tp
            stats["ul_checked"] = stats.get("ul_checked", 0) + 2 * tp + int(((pseudo != t).to(tk.dtype) * tk).sum())
        else:
            right = (pseudo == truth.unsqueeze(1)) & take
            stats["ul_correct"] = stats.get("ul_correct", 0) + int(right.sum())
            stats["ul_checked"] = stats.get("ul_checked", 0) + int(take.sum())
        if k != heads.shape[1]:  # FixMatch: the sample's pseudo-label for every head of its strong view
            pseudo = pseudo.expand(-1, heads.shape[1], *pseudo.shape[2:])
            take = take.expand(-1, heads.shape[1], *take.shape[2:])
        return pseudo_label_loss(logits, heads, pseudo, take, task, denom=n_unl)

    def _balanced_multi_label(self, p: torch.Tensor, valid: torch.Tensor, thr: float, balance: set[str]
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-label pseudo-labels under `loss.pseudo_balance` (docs/method.md, "FixMatch"): "da" aligns each
        label's predicted positive rate with its labeled prior (`align_label_rates`, p̄ the running mean of the raw
        predictions), any threshold balance ("freematch", "flexmatch") admits each label's confident "present" and
        "absent" in the proportion of its prior (`select_prior_balanced`, over the global batch so the processes
        of a data-parallel run agree); without one every label is taken where p̃ ≥ τ or p̃ ≤ 1 − τ.
        p: (B, k, C) sigmoids of the teachers; valid: (B, k) bool. -> (pseudo (B, k, C), take (B, k, C) bool)"""
        cfg, di, st = self.cfg.loss, self.dist, self.pl_state
        b, k, c = p.shape
        if "da" in balance:
            vf = valid.to(p.dtype).unsqueeze(-1)
            st["mean"] = update_running_mean(st["mean"], D.all_reduce_sum((p * vf).sum((0, 1)), di),
                                             D.all_reduce_sum(vf.sum(), di), cfg.da_momentum)
            p = align_label_rates(p, st["prior"], st["mean"])
        if balance & {"freematch", "flexmatch"}:
            gp, gv = D.gather(p, di), D.gather(valid, di)
            pseudo, take = select_prior_balanced(gp.reshape(-1, c), gv.reshape(-1), st["prior"], thr)
            r = di.rank
            return pseudo.reshape(gp.shape)[r * b:(r + 1) * b], take.reshape(gp.shape)[r * b:(r + 1) * b]
        pseudo, take = select_pseudo_labels(p.reshape(-1, c), "multi-label", thr)
        return pseudo.reshape(b, k, c), take.reshape(b, k, c) & valid.unsqueeze(-1)

    def _confident_pseudo(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        thr = self.cfg.loss.st_threshold
        if self.task == "single-label":
            p = torch.softmax(logits.float(), -1)
            conf, pred = p.max(-1)
            return conf >= thr, pred
        if self.task == "multi-label":
            p = torch.sigmoid(logits.float())
            conf = ((p >= thr) | (p <= 1 - thr)).all(-1)
            return conf, (p > 0.5).float()
        # regression has no confidence: self-training uses no pseudo-labels there
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device), logits[:, 0]

    def _drop_mask_local(self, mask: torch.Tensor) -> torch.Tensor:
        """Modality dropout drawn on the global batch's presence mask (same draw on every process, never
        emptying a row that had a modality), sliced to this process."""
        b = mask.shape[0]
        drop = modality_dropout_mask(self._global_mask, self.cfg.loss.moddrop_p, self.gen)
        return drop[self.dist.rank * b:(self.dist.rank + 1) * b].to(mask.device)

    def _peer_losses(self, batch: Batch, spec) -> dict[str, torch.Tensor]:
        """A peer's losses (docs/method.md, "Peers"): the task loss of its subset head under random modality
        dropout (`loss.moddrop_p`: the papers train with missing modalities) on the labeled samples, plus its
        own terms on every sample, labeled or not: ShaSpec's domain classification and shared-feature alignment,
        MMIN's forward and backward (cycle) imagination of the dropped modalities."""
        cfg, di, mask = self.cfg, self.dist, batch.mask
        drop = self._drop_mask_local(mask)  # (B, M) within the data's mask, never emptying a row
        out = self.net(batch.inputs, batch.lengths, drop, with_peer_terms=True)
        weight = batch.labeled.float()
        denom_sup = D.all_reduce_sum(weight.sum().detach(), di).clamp(min=1.0)
        one = torch.ones(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
        losses = {"sup": supervised_loss(out.logits.unsqueeze(1), one, batch.target, weight, self.task,
                                         denom=denom_sup)}
        total = losses["sup"]

        def count(x: torch.Tensor) -> torch.Tensor:  # a global count (every process's share), at least 1
            return D.all_reduce_sum(x.sum().float().detach(), di).clamp(min=1.0)

        if spec.subset_head == "shared-substitution":
            # on the data's mask: the features of every modality a sample has, dropped for the task loss or not
            k = mask.sum(1)
            losses["domain"] = domain_classification_loss(out.domain_logits, mask, denom=count(mask))
            losses["align"] = shared_alignment_loss(out.z, mask, denom=count(k * (k - 1) // 2))
            total = total + cfg.loss.lambda_domain * losses["domain"] + cfg.loss.lambda_align * losses["align"]
        elif spec.subset_head == "imagination":
            target = out.imagine_target  # the true latents n(H^i), detached
            dropped = mask & ~drop  # modalities the sample has but the imagination did not see: H^i is known
            losses["imagine"] = imagination_loss(out.h_imagined, target, dropped, denom=count(dropped))
            total = total + cfg.loss.lambda_imagine * losses["imagine"]
            if cfg.loss.lambda_cycle > 0:
                kept = drop & dropped.any(1, keepdim=True)  # the seen modalities, back from the imagined ones
                losses["cycle"] = imagination_loss(out.h_cycle, target, kept, denom=count(kept))
                total = total + cfg.loss.lambda_cycle * losses["cycle"]
        losses["total"] = total
        return losses

    # --- the loop ---------------------------------------------------------------------------------------
    def run(self) -> Finished | Failed:
        """Train; returns (and emits) a Finished or a Failed event. With an out_dir the run folder is locked for
        the whole run (robult_engine/runlock.py): a folder another process is writing to is refused with a
        Failed of kind "config" before anything is written, and the lock is released however the run ends."""
        try:
            lock = self._lock_run_folder()
        except RunFolderBusy as e:
            final = Failed(str(e), "config")
            self.emit(final)
            return final
        except OSError as e:  # the folder cannot be made or written
            final = Failed(f"{self.out_dir}: cannot write to the run folder ({e.strerror or e})", "config")
            self.emit(final)
            return final
        try:
            return self._run()
        finally:
            if lock is not None:
                lock.release()

    def _lock_run_folder(self):
        """The lock of the run folder (a held `RunLock`), or None without an out_dir or on a torchrun process
        other than rank 0 (only rank 0 writes). Raises `RunFolderBusy` when another process holds it."""
        if self.out_dir is None:
            return None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
            return None
        return RunLock(self.out_dir).acquire()

    def _run(self) -> Finished | Failed:
        t0 = time.perf_counter()
        try:
            self.setup()
            self.emit(Started(labeled_indices=tuple(int(i) for i in self.labeled_idx.tolist()),
                              n_train=len(self.train_split), steps_per_epoch=self.sampler.steps_per_epoch,
                              total_steps=self.total_steps, start_epoch=self.start_epoch, device=str(self.device)))
            final = self._loop(t0)
        except TrainingFailed as e:
            final = Failed(str(e), e.kind, e.epoch, self.best_path)
        except (DataError, CheckpointError) as e:
            final = Failed(str(e), "data")
        except ConfigError as e:
            final = Failed(str(e), "config")
        except torch.OutOfMemoryError as e:
            final = Failed(f"Out of memory: {str(e).splitlines()[0]}. Lower the batch size or the latent sizes.",
                           "oom", checkpoint_path=self.best_path)
        except MemoryError:
            final = Failed("Out of memory. Lower the batch size or the latent sizes.", "oom",
                           checkpoint_path=self.best_path)
        except Exception as e:  # noqa: BLE001 - any other failure ends the run with a readable message
            tb = traceback.format_exc(limit=3)
            final = Failed(f"{type(e).__name__}: {e}\n{tb}", "error", checkpoint_path=self.best_path)
        self.emit(final)
        return final

    def _step_batch(self, global_idx: torch.Tensor) -> Batch:
        b = len(global_idx) // self.dist.world
        local = global_idx[self.dist.rank * b:(self.dist.rank + 1) * b]
        batch = make_batch(self.train_split, local, self.is_labeled)
        gmask = self.train_split.mask[global_idx]  # (Bg, M) the global batch's presence mask
        if self.cfg.data.train_modality_dropout > 0:
            gmask = modality_dropout_mask(gmask, self.cfg.data.train_modality_dropout, self.gen)
            batch.mask = gmask[self.dist.rank * b:(self.dist.rank + 1) * b]
        self._global_mask = gmask
        return batch.to(self.device)

    def _loop(self, t0: float) -> Finished:
        cfg = self.cfg
        names = self.bundle.info.modality_names
        cancelled = stopped_early = False
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.train.epochs):
            self.model.train()
            stats = {"kappa_hist": torch.zeros(20), "kappa_sum": 0.0, "kappa_n": 0, "pl_correct": 0, "pl_n": 0,
                     "st_taken": 0, "st_seen": 0, "st_correct": 0, "kappa_taken": 0, "kappa_seen": 0}
            sums: dict[str, float] = {}
            batches = self.sampler.epoch(epoch)
            for step, gidx in enumerate(batches):
                if D.broadcast_flag(bool(self.should_stop()), self.dist, self.device):
                    cancelled = True
                    break
                batch = self._step_batch(gidx)
                with autocast_ctx(self.device):
                    losses = self.compute_losses(batch, epoch, stats)
                total = losses["total"]
                if not torch.isfinite(total.detach()).all():
                    bad = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                    raise TrainingFailed(f"The loss became NaN or infinite at epoch {epoch + 1}, step {step + 1} "
                                         f"({bad}). Try a lower learning rate or check the data for extreme "
                                         f"values.", "nan", epoch)
                self.opt.zero_grad(set_to_none=True)
                (total * self.dist.world).backward()  # × world: DDP averages, our denominators are global
                if cfg.train.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip, foreach=True)
                self.opt.step()
                lr = float(self.opt.param_groups[0]["lr"])  # the rate this step used (the scheduler moves on next)
                self.sched.step()
                self.global_step += 1
                vals = {k: float(v.detach()) for k, v in losses.items()}
                if self.dist.enabled:
                    red = D.all_reduce_sum(torch.tensor(list(vals.values()), device=self.device), self.dist)
                    vals = dict(zip(vals.keys(), red.tolist()))  # local shares of global sums add up
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + v
                self.emit(StepEnded(epoch, step, self.global_step, self.total_steps, vals,
                                    lr, time.perf_counter() - t0))
            if cancelled:
                epoch -= 1  # the interrupted epoch is not completed: epochs_run counts finished epochs only
                break
            n_steps = max(1, len(batches))
            improved = self._end_epoch(epoch, {k: v / n_steps for k, v in sums.items()}, stats, names, t0)
            self.bad_epochs = 0 if improved else self.bad_epochs + 1
            self._save_last(epoch)
            if cfg.train.patience and self.bad_epochs >= cfg.train.patience:
                stopped_early = True
                break
        return self._finish(t0, epoch, cancelled, stopped_early)

    def _end_epoch(self, epoch: int, train_losses: dict[str, float], stats: dict, names: tuple[str, ...],
                   t0: float) -> bool:
        enc = encode_split(self.model, self.val_split, self.eval_batch_size, self.device)
        table = metrics_from_encoded(enc, names, self.task)
        score = selection_score(table, self.task)
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch = score, epoch
            if self.out_dir is not None and self.dist.is_main:
                self.best_path = self._save(self.out_dir / "best.pt", epoch, {"val": table, "best_score": score})
            elif self.out_dir is None:  # without a folder the test split is still scored on the best epoch
                self._best_state = {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                                    "memory": {k: v.detach().clone() for k, v in self.memory.state_dict().items()}}
        present = enc.mask.float()
        z_norm = (enc.z.norm(dim=-1) * present).sum(0) / present.sum(0).clamp(min=1)  # (M,)
        u_norm = (enc.u.norm(dim=-1) * present).sum(0) / present.sum(0).clamp(min=1)
        rec = (enc.rec_err * present).sum(0) / present.sum(0).clamp(min=1)
        hist = stats["kappa_hist"]
        hist = hist / hist.sum() if hist.sum() > 0 else hist
        self.emit(EpochEnded(
            epoch=epoch, epochs=self.cfg.train.epochs, train_losses=train_losses, val_metrics=table, val_score=score,
            is_best=improved, z_norm=dict(zip(names, z_norm.tolist())), u_norm=dict(zip(names, u_norm.tolist())),
            rec_error=dict(zip(names, rec.tolist())), pu_weight_hist=tuple(hist.tolist()),
            pu_weight_edges=HIST_EDGES,
            pu_weight_mean=stats["kappa_sum"] / stats["kappa_n"] if stats["kappa_n"] else float("nan"),
            pseudo_label_acc=(stats["pl_correct"] / stats["pl_n"] if stats["pl_n"]
                              else stats["st_correct"] / stats["st_taken"] if stats["st_taken"]
                              else stats["ul_correct"] / stats["ul_checked"] if stats.get("ul_checked")
                              else float("nan")),
            elapsed_s=time.perf_counter() - t0, checkpoint_path=self.best_path,
            pseudo_labels_taken=_taken_fraction(stats),
            kappa_precision=_ratio(stats.get("kq_true_pos"), stats.get("kq_pos")),
            kappa_auc=kappa_auc(stats.get("kq_kappa", []), stats.get("kq_right", [])),
        ))
        return improved

    def _save(self, path: Path, epoch: int, metrics: dict, training_state: dict | None = None) -> str:
        return save_checkpoint(path, model_state=self.model.state_dict(), config=self.cfg, info=self.bundle.info,
                               labeled_indices=self.labeled_idx, fingerprint=self.bundle.fingerprint(),
                               memory_state=self.memory.state_dict(), epoch=epoch, metrics=metrics,
                               training_state=training_state)

    def _save_last(self, epoch: int) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        ts = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
              "gen_state": self.gen.get_state(), "torch_rng": torch.get_rng_state(), "next_epoch": epoch + 1,
              "global_step": self.global_step, "best_score": self.best_score, "best_epoch": self.best_epoch,
              "bad_epochs": self.bad_epochs}
        if self.pl_state:  # FixMatch and co-training: the running class mean and FlexMatch's memory
            ts["pseudo_state"] = {k: v.detach().cpu().clone() for k, v in self.pl_state.items() if k != "prior"}
        self._save(self.out_dir / "last.pt", epoch, {"best_score": self.best_score}, ts)

    def _finish(self, t0: float, last_epoch: int, cancelled: bool, stopped_early: bool) -> Finished:
        test_metrics: dict = {}
        if self.best_path:
            best = load_checkpoint(self.best_path)
            self.model.load_state_dict(best.model_state)
            self.memory.load_state_dict(best.memory_state)
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state["model"])
            self.memory.load_state_dict(self._best_state["memory"])
        if "test" in self.bundle.splits and len(self.bundle.splits["test"]) and self.best_epoch >= 0:
            enc = encode_split(self.model, self.bundle.splits["test"], self.eval_batch_size, self.device,
                               with_latents=False)
            test_metrics = metrics_from_encoded(enc, self.bundle.info.modality_names, self.task)
            if self.best_path and self.dist.is_main:
                b = load_checkpoint(self.best_path)
                self._save(Path(self.best_path), b.epoch, {**b.metrics, "test": test_metrics})
        return Finished(stopped_early=stopped_early, cancelled=cancelled, best_epoch=self.best_epoch,
                        best_score=self.best_score, epochs_run=last_epoch + 1, checkpoint_path=self.best_path,
                        test_metrics=test_metrics, elapsed_s=time.perf_counter() - t0)
