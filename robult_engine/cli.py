"""Headless command line: `robult train | eval | compare | sweep | tune | pid | export | slices` (also
`python -m robult_engine`).

This module holds `train` and `eval` and registers every command; each other command lives in its own module
(compare.py, sweep.py, tune.py, explain/cli.py, export.py, slices.py), and what they share is in cli_common.py
(flags, config from flags, progress), workers.py (worker processes) and stats.py (statistics, tables). Those never
import this module back. The names that used to live here stay importable from here. Importing this module
loads no torch: the modules that do are imported inside the commands that need them.

Under `torchrun --nproc_per_node N -m robult_engine train ...` training runs data-parallel; rank 0 alone
prints and writes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import __version__
from .cli_common import ProgressPrinter, add_run_args, add_trust_arg, config_from_args, parse_trust, set_threads
from .compare import COMPARE_METHODS, cmd_compare
from .config import METHODS, ConfigError
from .events import Failed, Finished
from .explain.cli import add_eval_options, add_pid_command, eval_explanations
from .stats import format_table
from .sweep import add_missing_args, add_parser as add_sweep_parser, add_ray_arg, eval_missing
from .tune import add_parser as add_tune_parser

# names that lived in this module before the shared parts moved out, importable from here as before
from .cli_common import parse_grid, parse_methods, parse_set_item, setting_label  # noqa: F401
from .compare import read_tune_choice  # noqa: F401
from .stats import mean_std, paired_differences  # noqa: F401
from .workers import (INTERRUPTED_EXIT, TERMINATED_EXIT, RunsTerminated, report_stopped,  # noqa: F401
                      sigterm_raises, worker_pool)


# --- commands ---------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import Trainer
    set_threads(args.threads)
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
    from .evaluation import evaluate_subsets, mean_over_subsets, transfer_mismatches
    set_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt, trust_code=parse_trust(args.trust_code))
    data_cfg = ckpt.config.data
    if args.dataset:
        data_cfg = ckpt.config.replace(**{"data.dataset": args.dataset}).data
    bundle = load_dataset(data_cfg)
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
        return eval_missing(args, model, bundle, args.checkpoint)
    table = evaluate_subsets(model, bundle.splits[args.split], bundle.info.modality_names, bundle.info.task)
    table["mean over subsets"] = mean_over_subsets(table, bundle.info.task)
    _print_metric_table(table, title=f"{args.split} split, {ckpt.config.method}, {args.checkpoint}")
    extra = eval_explanations(args, ckpt, model, bundle, args.split)
    if args.json:
        Path(args.json).write_text(json.dumps({**table, **extra}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robult", description="Robult Studio engine: train, evaluate, compare.")
    p.add_argument("--version", action="version", version=f"robult {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one method")
    t.add_argument("--method", default=None, choices=METHODS)
    t.add_argument("--seed", type=int, help="model seed")
    t.add_argument("--out", help="run folder (best.pt, last.pt, result.json)")
    t.add_argument("--resume", help="resume from a run's last.pt (its config, unless --config is given)")
    add_trust_arg(t, "with --resume")
    add_run_args(t)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a checkpoint on every modality subset")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", help="evaluate on this dataset instead of the training one")
    e.add_argument("--split", default="test")
    e.add_argument("--json", help="also write the table as JSON")
    add_trust_arg(e, "the checkpoint")
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--out", help="with --missing: folder for missing.json and masks.npz")
    add_missing_args(e, with_file=True)
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
    add_run_args(c)
    add_missing_args(c)
    add_ray_arg(c)
    c.set_defaults(func=cmd_compare)
    add_sweep_parser(sub)
    add_pid_command(sub, add_run_args)
    add_tune_parser(sub, add_run_args)
    # export and slices load torch, which importing this module does not: they are imported when the parser is built
    from .export import add_parser as add_export_parser  # `robult export CHECKPOINT --onnx FILE`
    add_export_parser(sub, add_trust_arg)
    from .slices import add_parser as add_slices_parser  # `robult slices`: where the model fails
    add_slices_parser(sub)
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
