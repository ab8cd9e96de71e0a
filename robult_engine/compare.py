"""`robult compare`: several methods × seeds on identical data, labeled indices, batches and masks, with the
paired differences of the first method to each other one; `--grid` tunes every method alike, `--from-tune OUT`
trains each method at the settings `robult tune` chose (and `robult tune` ends with this comparison).

Registered on the command line by robult_engine/cli.py; the runs train here one at a time or in worker processes
(robult_engine/workers.py), the missing-modality evaluation is robult_engine/sweep.py's. Importing this module
loads no torch: the modules that do are imported inside `cmd_compare`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import sweep
from .cli_common import ProgressPrinter, config_from_args, parse_grid, parse_methods, set_threads, setting_label
from .config import ConfigError, RunConfig
from .csvsafe import csv_writer
from .events import Failed
from .stats import format_table, mean_std, paired_differences
from .workers import RunsTerminated, report_stopped, run_parallel


COMPARE_METHODS = "robult,robult-st,supervised,moddrop,self-training"  # `robult compare` without --methods


class _RunFailed(Exception):
    pass


def read_tune_choice(path: str | Path) -> tuple[list[str], RunConfig, dict[str, dict]]:
    """`robult compare --from-tune OUT`: the methods, base config and chosen settings that OUT/tune.json holds."""
    p = Path(path)
    p = p / "tune.json" if p.is_dir() else p
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        methods, chosen = list(data["methods"]), dict(data["chosen"])
        base = RunConfig.from_dict(data["config"])
    except OSError as e:
        raise ConfigError(f"--from-tune {path}: cannot read {p} ({e.strerror or e}); run robult tune first") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--from-tune {path}: {p} is not a tune.json of robult tune ({e})") from None
    for m in methods:
        if not isinstance(chosen.get(m), dict):
            raise ConfigError(f"--from-tune {path}: {p} holds no chosen settings for {m}")
        try:
            base.replace(**chosen[m]).replace(method=m).validate()
        except ConfigError as e:
            raise ConfigError(f"--from-tune {path}: the chosen settings of {m}: {e}") from None
    return methods, base, chosen


def cmd_compare(args: argparse.Namespace) -> int:
    """Several methods × seeds on identical labeled indices, batches and masks (the data seed is the run seed)."""
    from .data import load_dataset
    from .evaluation import mean_over_subsets
    from .metrics import primary_metric
    from .models.encoders import untrusted_modules
    from .trainer import Trainer
    set_threads(args.threads)
    # each method's own settings on top of the base config: those `robult tune` chose (robult_engine/tune.py)
    overrides: dict[str, dict] = dict(getattr(args, "method_overrides", None) or {})
    tuned_base = None
    if getattr(args, "from_tune", None):
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
    missing_ev = sweep.compare_masks(args, bundle, out)  # --missing: drawn once, every method evaluated under them
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
            run_parallel(jobs, configs, base, {key: run_dir(*key) for key in jobs}, args, record,
                         **sweep.ray_kwargs(args))
    except _RunFailed as e:
        print(str(e), file=sys.stderr)
        return 1
    except (KeyboardInterrupt, RunsTerminated) as e:
        return report_stopped(e, out, "compare.csv and compare.json were not written (they need every run)")
    for runs in by_setting.values():
        runs.sort(key=lambda r: r["seed"])
    # each method's setting: the best mean validation score over the seeds (the test split takes no part)
    chosen = {m: max(range(len(grid)), key=lambda g: (mean_std([r["val_score"] for r in by_setting[m, g]])[0], -g))
              for m in methods}
    results: dict[str, list[dict]] = {m: by_setting[m, chosen[m]] for m in methods}
    if len(grid) > 1:
        labels = [setting_label(g) for g in grid]

        def grid_cell(row: str, m: str) -> str:
            g = labels.index(row)
            v = mean_std([x["val_score"] for x in by_setting[m, g]])[0]
            return f"{v:.4f}" + (" *" if chosen[m] == g else "  ")
        print(f"\nmean validation score over {args.seeds} seeds per setting (* each method's choice)")
        print(format_table(labels, methods, grid_cell, first="setting"))
    rows = list(results[methods[0]][0]["test"].keys())
    summary = {r: {m: mean_std([res["test"][r].get(metric, float("nan")) for res in results[m]])
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
    missing_section = (sweep.compare_missing_report(missing_ev, results, methods, metric, args.seeds)
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


__all__ = ["COMPARE_METHODS", "cmd_compare", "read_tune_choice"]
