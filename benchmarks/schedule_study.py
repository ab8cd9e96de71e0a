#!/usr/bin/env python
"""Schedule study: the same grid of training settings for every method, each method's setting chosen on
validation only, then its test accuracy reported (docs/results/README.md, "PID-Synth schedule study").

Every (method, setting, seed) run uses the identical data, labeled indices and batch order of that seed.
For each method the setting with the best mean *validation* score over the seeds is selected; the test
table below the grid never takes part in the choice.

Usage:
  python benchmarks/schedule_study.py [--dataset pid-synth] [--methods robult,supervised,...]
                                      [--seeds 3] [--grid default] [--workers 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Settings are changes to RunConfig fields; every method sees every setting.
GRIDS = {
    "default": {
        "train.labeled_per_batch": [16, 4],
        "train.lr": [2e-3, 5e-4],
        "model.dropout": [0.1, 0.3],
    },
    "quick": {
        "train.labeled_per_batch": [16, 4],
        "model.dropout": [0.1, 0.3],
    },
    # an explicit list: the defaults against the setting every method chose on PID-Synth
    "pid-choice": [
        {"train.labeled_per_batch": 16, "model.dropout": 0.1},
        {"train.labeled_per_batch": 4, "model.dropout": 0.3},
    ],
}
DEFAULT_METHODS = "robult,robult-st,supervised,moddrop,self-training"


def settings(grid: dict | list) -> list[dict]:
    if isinstance(grid, list):
        return [dict(g) for g in grid]
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def label(setting: dict) -> str:
    short = {"train.labeled_per_batch": "lpb", "train.lr": "lr", "model.dropout": "drop",
             "train.weight_decay": "wd", "train.patience": "pat"}
    return " ".join(f"{short.get(k, k)}={v:g}" if isinstance(v, float) else f"{short.get(k, k)}={v}"
                    for k, v in setting.items())


def _run(job: tuple) -> dict:
    import torch
    torch.set_num_threads(1)
    from robult_engine.config import RunConfig
    from robult_engine.data import load_dataset
    from robult_engine.events import EpochEnded, Finished
    from robult_engine.evaluation import mean_over_subsets
    from robult_engine.trainer import Trainer

    dataset, method, seed, setting, extra = job
    cfg = RunConfig(method=method, seed=seed).replace(**{"data.dataset": dataset, "data.seed": seed,
                                                         **extra, **setting}).validate()
    curve: list[float] = []
    t0 = time.perf_counter()
    bundle = load_dataset(cfg.data)
    trainer = Trainer(cfg, bundle,
                      callbacks=[lambda e: curve.append(e.val_score) if isinstance(e, EpochEnded) else None])
    result = trainer.run()
    if not isinstance(result, Finished):
        return {"method": method, "seed": seed, "setting": setting, "error": result.message}
    row = {"method": method, "seed": seed, "setting": setting, "val": result.best_score,
           "best_epoch": result.best_epoch, "curve": curve,
           "test": mean_over_subsets(result.test_metrics, bundle.info.task)["accuracy"],
           "test_subsets": {k: v["accuracy"] for k, v in result.test_metrics.items()},
           "seconds": time.perf_counter() - t0}
    if bundle.info.name == "pid-synth":  # which information types the (best) model decodes, per subset
        from robult_engine.data.pid_synth import bit_accuracy
        from robult_engine.evaluation import encode_split, modality_subsets, subset_logits
        test = bundle.splits["test"]
        enc = encode_split(trainer.model, test, with_latents=False)
        d = cfg.data
        row["bits"] = {name: bit_accuracy(subset_logits(enc, sm)[0].argmax(-1), test.target, d.synth_redundant_bits,
                                          d.synth_unique_bits, d.synth_synergy_bits)
                       for name, sm in modality_subsets(bundle.info.modality_names)}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="pid-synth")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--grid", default="default", choices=sorted(GRIDS))
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="a change applied to every run (value parsed as JSON)")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    extra = {}
    for item in args.set:
        k, v = item.split("=", 1)
        extra[k] = json.loads(v)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    grid = settings(GRIDS[args.grid])
    jobs = [(args.dataset, m, s, g, extra) for g in grid for s in range(args.seeds) for m in methods]
    from robult_engine.data import load_dataset  # build the cached data once, before the workers start
    from robult_engine.config import DataConfig
    load_dataset(DataConfig(dataset=args.dataset))
    t0 = time.perf_counter()
    results = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for i, r in enumerate(pool.imap_unordered(_run, jobs), 1):
            results.append(r)
            msg = r.get("error") or f"val {r['val']:.4f} test {r['test']:.4f} best epoch {r['best_epoch'] + 1}"
            print(f"[{i}/{len(jobs)}] {r['method']:<14} seed {r['seed']} {label(r['setting']):<28} {msg} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)

    def cell(m: str, g: dict, key: str) -> list[float]:
        return [r[key] for r in results if r["method"] == m and r["setting"] == g and key in r]

    print(f"\n{args.dataset}: mean validation score (test mean over subsets) per method and setting, "
          f"{args.seeds} seeds")
    width = max(len(label(g)) for g in grid)
    print(f"{'setting':<{width}}  " + "  ".join(f"{m:>17}" for m in methods))
    for g in grid:
        row = []
        for m in methods:
            v, t = cell(m, g, "val"), cell(m, g, "test")
            row.append(f"{statistics.mean(v):.4f} ({statistics.mean(t):.4f})" if v else f"{'failed':>17}")
        print(f"{label(g):<{width}}  " + "  ".join(f"{c:>17}" for c in row))
    print("\nselected on validation (test mean ± std over seeds):")
    chosen = {}
    for m in methods:
        scored = [(statistics.mean(cell(m, g, "val")), i) for i, g in enumerate(grid) if cell(m, g, "val")]
        if not scored:
            continue
        _, i = max(scored)
        t = cell(m, grid[i], "test")
        sd = statistics.stdev(t) if len(t) > 1 else 0.0
        chosen[m] = {"setting": grid[i], "test_mean": statistics.mean(t), "test_std": sd}
        bits = [r["bits"] for r in results if r["method"] == m and r["setting"] == grid[i] and "bits" in r]
        extra_txt = ""
        if bits:  # per information type, mean over subsets and seeds (u: subsets holding the modality with it)
            chosen[m]["bits"] = {}
            for g in ("r", "u"):
                vals = [b[k][g] for b in bits for k in b if g in b[k] and (g != "u" or "m0" in k.split("+"))]
                if vals:
                    chosen[m]["bits"][g] = statistics.mean(vals)
            extra_txt = "  bit accuracy " + " ".join(f"{g} {v:.3f}" for g, v in chosen[m]["bits"].items())
        print(f"  {m:<14} {label(grid[i]):<{width}}  test {statistics.mean(t):.4f} ± {sd:.4f}{extra_txt}")
    print(f"\n{len(jobs)} runs in {time.perf_counter() - t0:.0f}s with {args.workers} workers")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "schedule_study.json").write_text(json.dumps(
            {"dataset": args.dataset, "seeds": args.seeds, "grid": GRIDS[args.grid], "extra": extra,
             "runs": results, "selected": chosen}, indent=1))
        print(f"wrote {out / 'schedule_study.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
