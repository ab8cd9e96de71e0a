"""Headless command line: `robult train | eval | compare` (also `python -m robult_engine`).

Under `torchrun --nproc_per_node N -m robult_engine train ...` training runs data-parallel; rank 0 alone
prints and writes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

from .config import METHODS, ConfigError, RunConfig, labeled_per_batch_for
from .csvsafe import csv_writer
from .events import EpochEnded, Failed, Finished, StepEnded


def _add_run_args(p: argparse.ArgumentParser) -> None:
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
    from .config import _DOTTED
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
    import re
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

def format_table(rows: list[str], cols: list[str], cell, first: str = "subset") -> str:
    """A plain-text table: one row per subset, one column per method/metric."""
    w0 = max([len(first)] + [len(r) for r in rows])
    widths = [max(len(c), 15) for c in cols]
    lines = [first.ljust(w0) + "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    for r in rows:
        lines.append(r.ljust(w0) + "  " + "  ".join(cell(r, c).rjust(w) for c, w in zip(cols, widths)))
    return "\n".join(lines)


def _set_threads(n: int) -> None:
    if n > 0:
        import torch
        torch.set_num_threads(n)


# --- commands ---------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import Trainer
    _set_threads(args.threads)
    base = None
    if args.resume and not args.config:
        # resuming continues the run as it was configured (its checkpoint's config; flags may change the
        # schedule); encoder code that config names outside robult_engine runs only with --trust-code
        from .checkpoint import load_checkpoint, require_trust
        ckpt = load_checkpoint(args.resume)
        trust = parse_trust(args.trust_code)
        require_trust(ckpt, trust)
        base = ckpt.config
    else:
        trust = True  # the config is the user's own: their flags and config file name the code they chose
    cfg = config_from_args(args, args.method, base=base)
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    rank = int(os.environ.get("RANK", "0"))
    trainer = Trainer(cfg, callbacks=[ProgressPrinter(quiet=args.quiet)], out_dir=out, resume_from=args.resume,
                      tensorboard=args.tensorboard, trust_code=trust)
    final = trainer.run()
    from . import distributed
    distributed.shutdown()
    if rank != 0:
        return 0 if isinstance(final, Finished) else 1
    if isinstance(final, Failed):
        if args.quiet:  # the progress printer is silent then, but a failure must still be said
            print(f"error: {final.message}", file=sys.stderr)
        # a run refused in set-up (its config, its data, a run folder another process is writing to) is a bad
        # input like the ones main() reports: exit 2; a run that failed while training exits 1
        return 2 if final.kind in ("config", "data") else 1
    print(f"best epoch {final.best_epoch + 1}, checkpoint {final.checkpoint_path}")
    if final.test_metrics:
        _print_metric_table(final.test_metrics, title="test split")
    (out / "config.json").write_text(cfg.to_json())
    (out / "result.json").write_text(json.dumps({"test": final.test_metrics, "best_epoch": final.best_epoch,
                                                 "best_score": final.best_score,
                                                 "checkpoint": final.checkpoint_path}, indent=2))
    return 0


def _print_metric_table(table: dict[str, dict[str, float]], title: str = "") -> None:
    rows = list(table)
    cols = sorted({k for r in table.values() for k in r})
    if title:
        print(title)
    print(format_table(rows, cols, lambda r, c: f"{table[r].get(c, float('nan')):.4f}"))


def cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .data import load_dataset
    from .evaluation import evaluate_subsets, mean_over_subsets
    _set_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt, trust_code=parse_trust(args.trust_code))
    data_cfg = ckpt.config.data
    if args.dataset:
        data_cfg = ckpt.config.replace(**{"data.dataset": args.dataset}).data
    bundle = load_dataset(data_cfg)
    from .evaluation import transfer_mismatches
    mismatch = transfer_mismatches(ckpt.info, bundle.info)
    if mismatch:
        raise ConfigError(f"{args.checkpoint}: a model trained on {ckpt.info.name} cannot be evaluated on "
                          f"{bundle.info.name}: " + "; ".join(mismatch))
    if bundle.fingerprint() != ckpt.fingerprint:
        print(f"note: the data differ from the data this model was trained on (fingerprint "
              f"{bundle.fingerprint()} vs {ckpt.fingerprint})", file=sys.stderr)
    if args.split not in bundle.splits:
        raise ConfigError(f"--split {args.split}: the dataset has {', '.join(bundle.splits)}")
    if args.missing or args.masks:  # under missing-modality masks instead of the subset table
        from .sweep import eval_missing
        return eval_missing(args, model, bundle, args.checkpoint)
    table = evaluate_subsets(model, bundle.splits[args.split], bundle.info.modality_names, bundle.info.task)
    table["mean over subsets"] = mean_over_subsets(table, bundle.info.task)
    _print_metric_table(table, title=f"{args.split} split, {ckpt.config.method}, {args.checkpoint}")
    from .explain.cli import eval_explanations  # --calibration / --attribution
    extra = eval_explanations(args, ckpt, model, bundle, args.split)
    if args.json:
        Path(args.json).write_text(json.dumps({**table, **extra}, indent=2))
    return 0


def _mean_std(vals: list[float]) -> tuple[float, float]:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


class _RunFailed(Exception):
    pass


def parse_grid(items: list[str], base: RunConfig) -> list[dict]:
    """`--grid section.field=v1,v2 …` (repeatable) → every combination as config changes; [{}] without any.
    Each value is parsed as JSON (a bare word stays a string); every combination is validated up front."""
    import itertools
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


def paired_differences(results: dict[str, list[dict]], methods: list[str], metric: str) -> dict[str, dict]:
    """The first method minus each other one on the mean over subsets, seed by seed (the runs of a seed share
    labeled indices and batch order, so the paired difference removes the split's own luck)."""
    from .metrics import HIGHER_IS_BETTER
    ref = methods[0]
    by_seed = {r["seed"]: r["test"]["mean"].get(metric, float("nan")) for r in results[ref]}
    out = {}
    for m in methods[1:]:
        diffs = [by_seed[r["seed"]] - r["test"]["mean"].get(metric, float("nan")) for r in results[m]
                 if r["seed"] in by_seed]
        diffs = [d for d in diffs if not math.isnan(d)]
        if diffs:
            mean, sd = _mean_std(diffs)
            higher = HIGHER_IS_BETTER.get(metric, True)  # MAE: the first method is ahead when its error is lower
            out[m] = {"mean": mean, "std": sd, "wins": sum((d > 0) if higher else (d < 0) for d in diffs),
                      "n": len(diffs)}
    return out


_WORKER_DATA = None  # a worker process's DatasetCache (robult_engine/data/cache.py), made on its first job


def _compare_worker(job: tuple) -> tuple:
    """One compare run in a worker process (spawned: nothing is inherited but this job). The data comes from
    the compare's base config, as in a sequential compare: for PID-Synth the run seeds vary the labeled split
    and the model, not the generated dataset."""
    key, cfg_json, base_json, out_dir, threads, tensorboard = job
    import torch
    torch.set_num_threads(threads)
    from .data.cache import DatasetCache
    from .trainer import Trainer
    global _WORKER_DATA
    if _WORKER_DATA is None:
        _WORKER_DATA = DatasetCache(max_items=2)
    bundle = _WORKER_DATA.get(RunConfig.from_json(base_json).data)  # loaded once per worker process
    # the parent's own config (the user's flags and --config): the encoder code it names is the user's choice
    return key, Trainer(RunConfig.from_json(cfg_json), bundle, out_dir=out_dir, tensorboard=tensorboard,
                        trust_code=True).run()


class RunsTerminated(BaseException):
    """SIGTERM arrived while runs trained in worker processes. Like KeyboardInterrupt it is no Exception, so no
    `except Exception` keeps the runs going; the command ends with `TERMINATED_EXIT`."""


TERMINATED_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
INTERRUPTED_EXIT = 130  # 128 + SIGINT


def _raise_terminated(signum, frame) -> None:
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the workers' clean-up short
    raise RunsTerminated()


def report_stopped(e: BaseException, out: Path, then: str) -> int:
    """The one message of a compare or sweep stopped by SIGTERM or Ctrl+C, and its exit status."""
    terminated = isinstance(e, RunsTerminated)
    print(f"\n{'terminated' if terminated else 'interrupted'}: the runs that finished are kept in {out}; {then}",
          file=sys.stderr, flush=True)
    return TERMINATED_EXIT if terminated else INTERRUPTED_EXIT


def _worker_init(parent_pid: int) -> None:
    """Set-up of each worker process: Ctrl+C is the parent's to handle (it terminates the workers), and on Linux
    the worker gets SIGTERM when its parent dies, however the parent ended (even by SIGKILL)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent_pid:  # the parent died before the line above took effect
            os._exit(1)


@contextlib.contextmanager
def sigterm_raises():
    """While open, SIGTERM raises `RunsTerminated` in the main thread (elsewhere no handler can be set), so the
    code around can end its workers before the command ends; the previous handler comes back afterwards."""
    import signal
    import threading
    installed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if installed else None
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def worker_pool(n: int, pool_factory=None):
    """`n` spawned worker processes (or `pool_factory(n)`, e.g. a Ray pool) that never outlive the command:
    SIGTERM (`sigterm_raises`), Ctrl+C or any error terminates them; a normal end closes and joins them. The
    workers also die with this process (`_worker_init`)."""
    import multiprocessing as mp
    with sigterm_raises():
        pool = (pool_factory(n) if pool_factory is not None else
                mp.get_context("spawn").Pool(n, initializer=_worker_init, initargs=(os.getpid(),)))
        try:
            yield pool
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()


def _compare_parallel(jobs, configs, base: RunConfig, run_dirs: dict, args: argparse.Namespace, record,
                      pool_factory=None) -> None:
    """Runs of a compare (or a sweep) in `--jobs` processes at once; each prints nothing, the parent reports each
    result. `pool_factory(n)` replaces the multiprocessing pool, e.g. a Ray pool (robult_engine.sweep, --ray).
    While the runs train, SIGTERM raises `RunsTerminated` here (in the main thread); it and Ctrl+C terminate the
    workers before they propagate, so no run keeps training after the command has ended (`worker_pool`)."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    work = [(key, configs[key].to_json(), base.to_json(), str(run_dirs[key]), threads, args.tensorboard)
            for key in jobs]
    if not args.quiet:
        print(f"{len(work)} runs, {args.jobs} at a time, {threads} thread(s) each", file=sys.stderr, flush=True)
    with worker_pool(args.jobs, pool_factory) as pool:
        for k, (key, final) in enumerate(pool.imap_unordered(_compare_worker, work), 1):
            record(k, key, final)


COMPARE_METHODS = "robult,robult-st,supervised,moddrop,self-training"  # `robult compare` without --methods


def parse_methods(text: str) -> list[str]:
    """`--methods a,b,c` of compare and sweep: known method names, at least one."""
    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    if not methods:
        raise ConfigError("--methods: name at least one method")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"--methods: unknown method {m!r}; one of {', '.join(METHODS)}")
    return methods


def cmd_compare(args: argparse.Namespace) -> int:
    """Several methods × seeds on identical labeled indices, batches and masks (the data seed is the run seed)."""
    from .data import load_dataset
    from .evaluation import mean_over_subsets
    from .metrics import primary_metric
    from .models.encoders import untrusted_modules
    from .trainer import Trainer
    _set_threads(args.threads)
    # each method's own settings on top of the base config: those `robult tune` chose (robult_engine/tune.py)
    overrides: dict[str, dict] = dict(getattr(args, "method_overrides", None) or {})
    tuned_base = None
    if getattr(args, "from_tune", None):
        from .tune import read_tune_choice
        tuned_methods, tuned_base, overrides = read_tune_choice(args.from_tune)
        if args.grid:
            raise ConfigError("--from-tune: each method already has its tuned setting; leave out --grid")
        args.methods = args.methods or ",".join(tuned_methods)
        untuned = [m for m in parse_methods(args.methods) if m not in overrides]
        if untuned:
            raise ConfigError(f"--from-tune {args.from_tune}: {', '.join(untuned)} was not tuned there (tuned: "
                              f"{', '.join(tuned_methods)})")
    methods = parse_methods(args.methods or COMPARE_METHODS)
    if args.jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {args.jobs}")
    base = config_from_args(args, methods[0], base=tuned_base)  # --from-tune: the tuned base, flags on top
    grid = parse_grid(args.grid, base)  # [{}] without --grid
    bundle = load_dataset(base.data)
    task = bundle.info.task
    metric = args.metric or primary_metric(task)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    from .sweep import compare_masks
    missing_ev = compare_masks(args, bundle, out)  # --missing: drawn once, every method evaluated under them
    t0 = time.perf_counter()
    jobs = [(g, seed, m) for g in range(len(grid)) for seed in range(args.seeds) for m in methods]
    n_runs = len(jobs)
    configs = {(g, seed, m): base.replace(**grid[g]).replace(**overrides.get(m, {}))
               .replace(method=m, seed=seed, **{"data.seed": seed}) for g, seed, m in jobs}
    by_setting: dict[tuple[str, int], list[dict]] = {(m, g): [] for m in methods for g in range(len(grid))}

    def run_dir(g: int, seed: int, m: str) -> Path:
        return out / (f"{m}-seed{seed}" if len(grid) == 1 else f"{m}-seed{seed}-g{g}")

    def label_of(k: int, g: int, seed: int, m: str) -> str:
        where = f" [{setting_label(grid[g])}]" if len(grid) > 1 else ""
        return f"[{k}/{n_runs}] {m} seed {seed}{where}: "

    def record(k: int, key: tuple, final) -> None:
        g, seed, m = key
        label = label_of(k, g, seed, m)
        if isinstance(final, Failed):
            raise _RunFailed(f"{label}failed: {final.message}")
        table = dict(final.test_metrics)
        table["mean"] = mean_over_subsets(final.test_metrics, task)
        by_setting[m, g].append({"seed": seed, "test": table, "best_epoch": final.best_epoch,
                                 "val_score": final.best_score, "elapsed_s": final.elapsed_s})
        if task != "regression":  # ECE, adaptive ECE, Brier, NLL per subset on the test split (no temperature)
            from .explain.calibration import checkpoint_calibration_summary
            # the run's own config (the user's) names the only modules its checkpoint may import
            by_setting[m, g][-1]["calibration"] = checkpoint_calibration_summary(
                final.checkpoint_path, bundle, trust_code=untrusted_modules(configs[key].model.encoders))
        if missing_ev is not None:
            by_setting[m, g][-1]["missing"] = missing_ev.evaluate_checkpoint(final.checkpoint_path, configs[key])
        if not args.quiet:
            print(f"{label}mean {metric} {table['mean'].get(metric, float('nan')):.4f} "
                  f"(best epoch {final.best_epoch + 1}, {final.elapsed_s:.0f}s, total {time.perf_counter() - t0:.0f}s)",
                  file=sys.stderr, flush=True)

    try:
        if args.jobs <= 1 and args.ray is None:
            for k, key in enumerate(jobs, 1):
                final = Trainer(configs[key], bundle, callbacks=[ProgressPrinter(label_of(k, *key), args.quiet)],
                                out_dir=run_dir(*key), tensorboard=args.tensorboard, trust_code=True).run()
                record(k, key, final)
        else:
            from .sweep import ray_kwargs
            _compare_parallel(jobs, configs, base, {key: run_dir(*key) for key in jobs}, args, record,
                              **ray_kwargs(args))
    except _RunFailed as e:
        print(str(e), file=sys.stderr)
        return 1
    except (KeyboardInterrupt, RunsTerminated) as e:
        return report_stopped(e, out, "compare.csv and compare.json were not written (they need every run)")
    for runs in by_setting.values():
        runs.sort(key=lambda r: r["seed"])
    # each method's setting: the best mean validation score over the seeds (the test split takes no part)
    chosen = {m: max(range(len(grid)), key=lambda g: (_mean_std([r["val_score"] for r in by_setting[m, g]])[0], -g))
              for m in methods}
    results: dict[str, list[dict]] = {m: by_setting[m, chosen[m]] for m in methods}
    if len(grid) > 1:
        labels = [setting_label(g) for g in grid]

        def grid_cell(row: str, m: str) -> str:
            g = labels.index(row)
            v = _mean_std([x["val_score"] for x in by_setting[m, g]])[0]
            return f"{v:.4f}" + (" *" if chosen[m] == g else "  ")
        print(f"\nmean validation score over {args.seeds} seeds per setting (* each method's choice)")
        print(format_table(labels, methods, grid_cell, first="setting"))
    rows = list(results[methods[0]][0]["test"].keys())
    summary = {r: {m: _mean_std([res["test"][r].get(metric, float("nan")) for res in results[m]])
                   for m in methods} for r in rows}
    at = ", each method at its chosen setting" if len(grid) > 1 else ", each method at its tuned setting" if overrides else ""
    print(f"\n{bundle.info.name}, label fraction {base.data.label_fraction}, {args.seeds} seeds{at}, test {metric} "
          f"(mean ± std over seeds)")
    print(format_table(rows, methods, lambda r, c: f"{summary[r][c][0]:.4f} ± {summary[r][c][1]:.4f}"))
    paired = paired_differences(results, methods, metric)
    if paired:
        ref = methods[0]
        print(f"\n{ref} minus each method on the mean over subsets, paired by seed (same labels and batches):")
        for m, d in paired.items():
            print(f"  {ref} - {m:<14} {d['mean']:+.4f} ± {d['std']:.4f}   {ref} ahead in {d['wins']}/{d['n']} seeds")
    from .sweep import compare_missing_report
    missing_section = (compare_missing_report(missing_ev, results, methods, metric, args.seeds)
                       if missing_ev is not None else {})
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv_writer(f)  # names become text a spreadsheet cannot run
        w.writerow(["subset", "method", "metric", "mean", "std"] + [f"seed{s}" for s in range(args.seeds)])
        for r in rows:
            for m in methods:
                w.writerow([r, m, metric, f"{summary[r][m][0]:.6f}", f"{summary[r][m][1]:.6f}"]
                           + [f"{res['test'][r].get(metric, float('nan')):.6f}" for res in results[m]])
    (out / "compare.json").write_text(json.dumps({
        "dataset": bundle.info.name, "label_fraction": base.data.label_fraction, "metric": metric,
        "seeds": args.seeds, "methods": methods, "config": base.to_dict(),
        "summary": {r: {m: {"mean": summary[r][m][0], "std": summary[r][m][1]} for m in methods} for r in rows},
        "paired_vs_first": paired, "runs": results,
        "grid": [dict(g) for g in grid] if len(grid) > 1 else [],
        "chosen_setting": {m: dict(grid[chosen[m]]) for m in methods} if len(grid) > 1 else {},
        "grid_runs": ([{"method": m, "setting": dict(grid[g]), "runs": by_setting[m, g]}
                       for m in methods for g in range(len(grid))] if len(grid) > 1 else []),
        "tuned_settings": {m: overrides[m] for m in methods if m in overrides},
        "missing": missing_section, "elapsed_s": time.perf_counter() - t0}, indent=2))
    print(f"\nwrote {out / 'compare.csv'} and {out / 'compare.json'} ({time.perf_counter() - t0:.0f}s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="robult", description="Robult Studio engine: train, evaluate, compare.")
    p.add_argument("--version", action="version", version=f"robult {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one method")
    t.add_argument("--method", default=None, choices=METHODS)
    t.add_argument("--seed", type=int, help="model seed")
    t.add_argument("--out", help="run folder (best.pt, last.pt, result.json)")
    t.add_argument("--resume", help="resume from a run's last.pt (its config, unless --config is given)")
    add_trust_arg(t, "with --resume")
    _add_run_args(t)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a checkpoint on every modality subset")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", help="evaluate on this dataset instead of the training one")
    e.add_argument("--split", default="test")
    e.add_argument("--json", help="also write the table as JSON")
    add_trust_arg(e, "the checkpoint")
    e.add_argument("--threads", type=int, default=0)
    from .sweep import add_missing_args, add_parser as add_sweep_parser, add_ray_arg
    e.add_argument("--out", help="with --missing: folder for missing.json and masks.npz")
    add_missing_args(e, with_file=True)
    from .explain.cli import add_eval_options, add_pid_command
    add_eval_options(e)
    e.set_defaults(func=cmd_eval)
    c = sub.add_parser("compare", help="several methods × seeds on identical data, labels and masks")
    c.add_argument("--methods", help=f"comma-separated methods (default {COMPARE_METHODS}; with --from-tune, "
                                     f"the tuned ones)")
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--metric", help="metric of the table (default: the task's primary metric)")
    c.add_argument("--out", help="folder for compare.csv, compare.json and the runs")
    c.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                   help="tune every method alike: train each combination of these values (repeatable) and report "
                        "each method at its best setting on the validation split, e.g. --grid "
                        "train.labeled_per_batch=16,4 --grid model.dropout=0.1,0.3")
    c.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once in separate processes (default 1: one at a time, with step progress)")
    c.add_argument("--from-tune", metavar="OUT",
                   help="train each method at the settings `robult tune --out OUT` chose (OUT/tune.json), on its "
                        "base config (flags still apply on top)")
    _add_run_args(c)
    add_missing_args(c)
    add_ray_arg(c)
    c.set_defaults(func=cmd_compare)
    add_sweep_parser(sub)
    add_pid_command(sub, _add_run_args)
    from .tune import add_parser as add_tune_parser
    add_tune_parser(sub, _add_run_args)
    from .export import add_parser as add_export_parser  # `robult export CHECKPOINT --onnx FILE`
    add_export_parser(sub, add_trust_arg)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # DataError, CheckpointError and file problems carry readable messages
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
