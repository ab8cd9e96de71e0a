"""Run logs other tools read: `metrics.jsonl` (one JSON object per epoch) and, when asked, TensorBoard events.

The Trainer opens a `RunLog` for every run that has an out_dir (CLI, compare, the app) and feeds it the
events it emits. Each line of `<out_dir>/metrics.jsonl`:

    {"epoch": 0, "epochs": 30, "step": 47, "lr": 0.0019, "elapsed_s": 3.2, "is_best": true, "val_score": 0.81,
     "train": {"sup": .., "pu": .., "rec": .., "total": ..},             # epoch means of the step losses
     "val": {"image": {"accuracy": .., "macro_f1": ..}, "audio": {..}, "image+audio": {..}},
     "z_norm": {"image": .., "audio": ..}, "u_norm": {..}, "rec_error": {..},
     "kappa_mean": .., "kappa_hist": [20 fractions], "pseudo_label_acc": .., "pseudo_labels_taken": .., "method": "robult", "seed": 0}

`epoch` is 0-based, as in the engine's events and checkpoints; `step` counts optimizer steps so far; `lr` is the
rate of the epoch's last step; `elapsed_s` counts from the start of this process's part of the run. A value
that is not a finite number (no pseudo-labels for a baseline) is written as null, so every line is strict JSON.

Resuming keeps the lines of the epochs before the resumed one and drops any later ones (an epoch that was
logged but not checkpointed is trained again), so the file never holds an epoch twice. A run resumed into
another folder starts its log with the history of the folder it resumes from.

TensorBoard (`tensorboard=True`, `--tensorboard` on the CLI) writes event files into the same folder with
tensorboardX (the optional extra `pip install 'robult-studio[tensorboard]'`); the step of an epoch's scalars is
epoch + 1 (epochs completed). Tags: `val/<subset>/<metric>`, `val/score`, `train/<loss>`, `train/lr`,
`diag/z_norm/<modality>`, `diag/u_norm/..`, `diag/rec_error/..`, `diag/kappa_mean`, `diag/pseudo_label_acc`, and
at the end `test/<subset>/<metric>` at the best epoch (a subset "image+audio" is tagged "image_audio", as
TensorBoard allows no "+"). `tensorboard --logdir` on a compare folder shows its
`<method>-seed<k>` runs side by side.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .config import ConfigError
from .events import EpochEnded, Failed, Finished, StepEnded

RUNLOG_FILE = "metrics.jsonl"
_TAG_BAD = re.compile(r"[^-/\w.]")  # TensorBoard tags: letters, digits, _ - . /


def _clean(v: Any) -> Any:
    """Plain JSON values: floats that are not finite become None; containers are cleaned recursively."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    try:
        return _clean(float(v))  # numpy / torch scalars
    except (TypeError, ValueError):
        return str(v)


def epoch_record(ev: EpochEnded, *, step: int = 0, lr: float = float("nan"), method: str = "",
                 seed: int = 0) -> dict:
    """The metrics.jsonl line of one epoch (a plain dict; non-finite numbers become None)."""
    return _clean({
        "epoch": ev.epoch, "epochs": ev.epochs, "step": step, "lr": lr, "elapsed_s": ev.elapsed_s,
        "is_best": ev.is_best, "val_score": ev.val_score, "train": dict(ev.train_losses),
        "val": {s: dict(m) for s, m in ev.val_metrics.items()}, "z_norm": dict(ev.z_norm),
        "u_norm": dict(ev.u_norm), "rec_error": dict(ev.rec_error), "kappa_mean": ev.pu_weight_mean,
        "kappa_hist": list(ev.pu_weight_hist), "pseudo_label_acc": ev.pseudo_label_acc,
        "pseudo_labels_taken": getattr(ev, "pseudo_labels_taken", float("nan")),
        "kappa_precision": getattr(ev, "kappa_precision", float("nan")),
        "kappa_auc": getattr(ev, "kappa_auc", float("nan")), "method": method, "seed": seed,
    })


def read_run_log(path: str | os.PathLike) -> list[dict]:
    """The epoch records of a metrics.jsonl file (or of the run folder holding one), in file order; a torn last
    line (a process killed while writing) is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / RUNLOG_FILE
    out = []
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
            out.append(rec)
    return out


def _tensorboard_writer(out_dir: Path, purge_step: int | None):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard: writing TensorBoard event files needs the tensorboardX package, which is "
                          "not installed: pip install 'robult-studio[tensorboard]' (or pip install tensorboardX)"
                          ) from None
    return SummaryWriter(logdir=str(out_dir), purge_step=purge_step, flush_secs=30)


class RunLog:
    """metrics.jsonl (and TensorBoard events) of one run folder; call it with the Trainer's events."""

    def __init__(self, out_dir: str | os.PathLike, *, start_epoch: int = 0, tensorboard: bool = False,
                 history_from: str | os.PathLike | None = None, method: str = "", seed: int = 0) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RUNLOG_FILE
        self.method, self.seed = method, seed
        self._step, self._lr = 0, float("nan")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        source = self.path
        if not self.path.is_file() and history_from is not None and Path(history_from).is_file():
            source = Path(history_from)
        kept = [r for r in read_run_log(source) if r["epoch"] < start_epoch] if start_epoch > 0 else []
        self._rewrite(kept)
        # a resumed run tells TensorBoard to drop the events of epochs it trains again (steps >= start + 1)
        self.writer = _tensorboard_writer(self.out_dir, start_epoch + 1 if start_epoch > 0 else None) \
            if tensorboard else None

    def _rewrite(self, records: list[dict]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=RUNLOG_FILE + ".", suffix=".tmp", dir=self.out_dir)
        try:
            with os.fdopen(fd, "w") as f:
                for r in records:
                    f.write(json.dumps(r, allow_nan=False) + "\n")
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def __call__(self, ev) -> None:
        if isinstance(ev, StepEnded):
            self._step, self._lr = ev.global_step, ev.lr
        elif isinstance(ev, EpochEnded):
            self.epoch_ended(ev)
        elif isinstance(ev, Finished):
            self.finished(ev)
        elif isinstance(ev, Failed):
            self.close()

    def epoch_ended(self, ev: EpochEnded) -> dict:
        rec = epoch_record(ev, step=self._step, lr=self._lr, method=self.method, seed=self.seed)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, allow_nan=False) + "\n")
            f.flush()
        if self.writer is not None:
            step = ev.epoch + 1
            scalars = {"val/score": ev.val_score, "train/lr": self._lr,
                       "diag/kappa_mean": ev.pu_weight_mean, "diag/pseudo_label_acc": ev.pseudo_label_acc,
                       "diag/pseudo_labels_taken": getattr(ev, "pseudo_labels_taken", float("nan")),
                       "diag/kappa_precision": getattr(ev, "kappa_precision", float("nan")),
                       "diag/kappa_auc": getattr(ev, "kappa_auc", float("nan"))}
            scalars.update({f"train/{k}": v for k, v in ev.train_losses.items()})
            for subset, metrics in ev.val_metrics.items():
                scalars.update({f"val/{subset}/{k}": v for k, v in metrics.items()})
            for name in ("z_norm", "u_norm", "rec_error"):
                scalars.update({f"diag/{name}/{m}": v for m, v in getattr(ev, name).items()})
            self._scalars(scalars, step)
            self.writer.flush()
        return rec

    def finished(self, final: Finished) -> None:
        if self.writer is not None and final.test_metrics and final.best_epoch >= 0:
            self._scalars({f"test/{subset}/{k}": v for subset, metrics in final.test_metrics.items()
                           for k, v in metrics.items()}, final.best_epoch + 1)
        self.close()

    def _scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, v in scalars.items():
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v):
                self.writer.add_scalar(_TAG_BAD.sub("_", tag), v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
