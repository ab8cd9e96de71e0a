"""What the commands share on the command line: the run flags, `--trust-code`, `--set`, `--grid` and `--methods`,
the run's config from its flags (`config_from_args`), the progress printer and the thread count.

The command modules (cli, compare, sweep, tune, export, slices, explain/cli) import it; it imports only the
configuration and the events, never a command module.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from pathlib import Path

from .config import _DOTTED, METHODS, ConfigError, RunConfig, labeled_per_batch_for
from .events import EpochEnded, Failed, StepEnded


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a JSON config file (fields below override it)")
    p.add_argument("--dataset", help="built-in name (av-digits, mfeat, movies, pid-synth, feature-synth) or a path")
    p.add_argument("--modalities", help="comma-separated subset of the dataset's modalities")
    p.add_argument("--label-fraction", type=float)
    p.add_argument("--data-seed", type=int, help="seed of the labeled split and batch order")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--patience", type=int)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--lambda-pu", type=float)
    p.add_argument("--lambda-rec", type=float)
    p.add_argument("--rec-route", choices=("full", "branch", "projector"),
                   help="which parameters L_rec trains: full (f_i, g_i, r_i, and the gradient through the "
                        "standardised target too; default), branch (f_i, g_i, r_i against a detached target) or "
                        "projector (g_i, r_i only); docs/method.md")
    p.add_argument("--lambda-diff", type=float, help="weight of the U/Z difference term L_diff (default 0: off)")
    p.add_argument("--tau", type=float)
    p.add_argument("--kernel", choices=("rbf", "laplacian", "inverse-l2"))
    p.add_argument("--bandwidth", type=float, help="kernel bandwidth σ (default: median heuristic)")
    p.add_argument("--dropout", type=float)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any config field, e.g. --set model.d_z=32 (repeatable; value parsed as JSON)")
    p.add_argument("--encoder", action="append", default=[], metavar="MODALITY=MODULE:FUNCTION",
                   help="your own encoder for a modality (repeatable; sets model.encoders), e.g. "
                        "--encoder audio=examples.transformer_encoder:make_encoder (docs/custom-encoders.md)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: leave the default)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files beside each run's metrics.jsonl (needs tensorboardX: "
                        "pip install 'robult-studio[tensorboard]'); tensorboard --logdir on a compare folder shows "
                        "its runs side by side")


def add_trust_arg(p: argparse.ArgumentParser, what: str) -> None:
    """`--trust-code MODULE[,MODULE]` (repeatable): the encoder modules outside robult_engine the user trusts."""
    p.add_argument("--trust-code", action="append", nargs="?", const="", default=[], metavar="MODULE[,MODULE]",
                   help=f"{what}: import these encoder modules outside robult_engine that the checkpoint names "
                        f"(model.encoders), e.g. --trust-code mypkg.encoders; a checkpoint that names any other "
                        f"module is refused and nothing is imported (docs/custom-encoders.md)")


def parse_trust(values: list[str] | None) -> frozenset[str]:
    """The module names of every --trust-code; a bare --trust-code (trust whatever the file names) is refused."""
    names: set[str] = set()
    for v in values or []:
        parts = [m.strip() for m in str(v).split(",")]
        if not any(parts):
            raise ConfigError("--trust-code: name the module(s) you trust, comma-separated, e.g. --trust-code "
                              "mypkg.encoders (a refused checkpoint's message lists the modules it names); trust "
                              "is never given to whatever a file names")
        for m in parts:
            if not m or _DOTTED.fullmatch(m) is None:
                raise ConfigError(f"--trust-code: {m!r} is not a module name (dotted Python identifiers)")
            names.add(m)
    return frozenset(names)


def parse_set_item(item: str) -> tuple[str, object]:
    """One `--set KEY=VALUE` → (KEY, value): KEY is SECTION.FIELD or a top-level FIELD (Python identifiers), the
    value is parsed as JSON (a bare word stays a string; a list becomes a tuple). Malformed items are a
    ConfigError naming the flag; whether KEY is a real field is checked against the config (`RunConfig.replace`)."""
    key, eq, raw = str(item).partition("=")
    key = key.strip()
    shown = item if len(item) <= 80 else item[:77] + "..."
    if not eq or re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", key) is None:
        raise ConfigError(f"--set {shown}: expected SECTION.FIELD=VALUE (e.g. model.d_z=32) or FIELD=VALUE for a "
                          f"top-level field (e.g. seed=3)")
    try:
        val = json.loads(raw)
    except json.JSONDecodeError:
        val = raw
    except RecursionError:
        raise ConfigError(f"--set {key}: the value is nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"--set {key}: unusable value ({e})") from None
    return key, tuple(val) if isinstance(val, list) else val


def config_from_args(args: argparse.Namespace, method: str | None = None, base: RunConfig | None = None
                     ) -> RunConfig:
    """The run's config: `base` (default: the defaults) or --config, then every flag given on top. A bad value
    is a ConfigError naming the field, and the config file or the flag it came from."""
    cfg = base or RunConfig()
    if args.config:
        try:
            cfg = RunConfig.from_json(Path(args.config).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{args.config}: cannot read the config file ({e.strerror or e})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{args.config}: not a UTF-8 text file ({e})") from None
        except ConfigError as e:
            raise ConfigError(f"{args.config}: {e}") from None
    changes = {}
    mapping = {"dataset": "data.dataset", "label_fraction": "data.label_fraction", "data_seed": "data.seed",
               "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
               "patience": "train.patience", "device": "train.device", "lambda_pu": "loss.lambda_pu",
               "lambda_rec": "loss.lambda_rec", "rec_route": "loss.rec_route", "lambda_diff": "loss.lambda_diff",
               "tau": "loss.tau", "kernel": "loss.kernel",
               "bandwidth": "loss.bandwidth", "dropout": "model.dropout"}
    for attr, key in mapping.items():
        v = getattr(args, attr, None)
        if v is not None:
            changes[key] = v
    if getattr(args, "modalities", None):
        changes["data.modalities"] = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    if getattr(args, "encoder", None):
        changes["model.encoders"] = tuple(e.strip() for e in args.encoder)
    for item in args.set:
        key, val = parse_set_item(item)
        try:
            cfg.replace(**{key: val})  # the name only: values are validated below, with everything else
        except ConfigError as e:
            raise ConfigError(f"--set {key}: {str(e).removeprefix('config: ')}") from None
        changes[key] = val
    if method is not None:
        changes["method"] = method
    cfg = cfg.replace(**changes)
    if "train.batch_size" in changes and "train.labeled_per_batch" not in changes:
        batch = cfg.train.batch_size
        if isinstance(batch, int) and not isinstance(batch, bool):  # else validate() names the bad value
            cfg = cfg.replace(**{"train.labeled_per_batch": labeled_per_batch_for(batch, cfg.train.labeled_per_batch)})
    try:
        return cfg.validate()
    except ConfigError as e:
        field = str(e).split(":", 1)[0]
        if args.config and not any(k == field or k.startswith(field + ".") for k in changes):  # the file's value
            raise ConfigError(f"{args.config}: {e}") from None
        raise


class ProgressPrinter:
    """Progress on stderr: a line per epoch, and between them a progress bar redrawn in place (at most twice a
    second) when the stream is a terminal, or a plain line every `interval` seconds when it is not (a CI or
    cluster log gets no carriage returns)."""

    BAR = 24  # characters of the bar

    def __init__(self, label: str = "", quiet: bool = False, stream=None, *, tty: bool | None = None,
                 interval: float = 30.0) -> None:
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self.interval = interval
        self._last = float("-inf")
        self._first: tuple[int, float] | None = None  # (global step, elapsed) before this process's first step
        self._open = False  # an in-place line is on screen without its newline

    def _eta(self, ev) -> float:
        if self._first is None:
            self._first = (ev.global_step - 1, 0.0)  # a resumed run: the rate of the steps run here
        steps, secs = ev.global_step - self._first[0], ev.elapsed_s - self._first[1]
        return secs / max(steps, 1) * (ev.total_steps - ev.global_step)

    def __call__(self, ev) -> None:
        if self.quiet:
            return
        if isinstance(ev, StepEnded):
            eta = self._eta(ev)
            now = time.perf_counter()
            if now - self._last < (0.5 if self.tty else self.interval) and ev.global_step != ev.total_steps:
                return
            self._last = now
            frac = ev.global_step / max(ev.total_steps, 1)
            text = (f"{self.label}epoch {ev.epoch + 1} step {ev.global_step}/{ev.total_steps} "
                    f"loss {ev.losses.get('total', float('nan')):.4f}  {frac:5.1%}  ETA {eta:5.0f}s")
            if self.tty:
                filled = int(round(frac * self.BAR))
                bar = "[" + "=" * filled + " " * (self.BAR - filled) + "] "
                print(f"\r{bar}{text}   ", end="", file=self.stream, flush=True)
                self._open = True
            elif ev.global_step != ev.total_steps:  # the epoch line follows the last step at once
                print(text, file=self.stream, flush=True)
        elif isinstance(ev, EpochEnded):
            best = " *" if ev.is_best else ""
            text = (f"{self.label}epoch {ev.epoch + 1}/{ev.epochs}  train {ev.train_losses.get('total', 0):.4f}  "
                    f"val score {ev.val_score:.4f}{best}  ({ev.elapsed_s:.0f}s)")
            if self.tty:
                text = "\r" + text + " " * (self.BAR + 30)  # overwrite the whole bar line
            print(text, file=self.stream, flush=True)
            self._open = False
        elif isinstance(ev, Failed):
            print(("\n" if self._open else "") + f"{self.label}FAILED: {ev.message}", file=self.stream, flush=True)
            self._open = False


def set_threads(n: int) -> None:
    """`--threads N`: torch's CPU threads (0 leaves torch's default)."""
    if n > 0:
        import torch
        torch.set_num_threads(n)


def parse_grid(items: list[str], base: RunConfig) -> list[dict]:
    """`--grid section.field=v1,v2 …` (repeatable) → every combination as config changes; [{}] without any.
    Each value is parsed as JSON (a bare word stays a string); every combination is validated up front."""
    keys, values = [], []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--grid {item}: expected SECTION.FIELD=V1,V2,...")
        key, raw = item.split("=", 1)
        vals = []
        for v in raw.split(","):
            try:
                val = json.loads(v)
            except json.JSONDecodeError:
                val = v.strip()
            except RecursionError:
                raise ConfigError(f"--grid {key.strip()}: a value is nested too deeply") from None
            except ValueError as e:  # e.g. an integer of more digits than Python converts
                raise ConfigError(f"--grid {key.strip()}: unusable value ({e})") from None
            if val in vals:  # one setting trained twice under two names (0.1,0.1 or 4,4.0)
                raise ConfigError(f"--grid {item}: {v.strip()} is given twice")
            vals.append(val)
        if not vals or key.strip() in keys:
            raise ConfigError(f"--grid {item}: give each field once, with at least one value")
        keys.append(key.strip())
        values.append(vals)
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*values)] if keys else [{}]
    for g in grid:
        try:
            base.replace(**g).validate()
        except ConfigError as e:
            raise ConfigError(f"--grid {setting_label(g)}: {e}") from None
    return grid


def setting_label(setting: dict) -> str:
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in setting.items()) or "default"


def parse_methods(text: str) -> list[str]:
    """`--methods a,b,c` of compare and sweep: known method names, at least one."""
    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    if not methods:
        raise ConfigError("--methods: name at least one method")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"--methods: unknown method {m!r}; one of {', '.join(METHODS)}")
    return methods


__all__ = ["ProgressPrinter", "add_run_args", "add_trust_arg", "config_from_args", "parse_grid",
           "parse_methods", "parse_set_item", "parse_trust", "set_threads", "setting_label"]
