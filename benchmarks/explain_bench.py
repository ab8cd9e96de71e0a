"""Explanations: the cost of exact Shapley attribution, and the calibration study of docs/results/explain.md.

1. `timing` (default): the time to compute φ of one sample from its cached per-modality logits (all 2^M
   coalitions, `explain.attribution.shapley_values`) beside the time of one subset prediction from the same
   cache (combine the present modalities' logits, softmax) and one model forward pass of the sample (what every
   coalition would cost if it were re-encoded), at M = 3 and M = 6 vector modalities (the model at its default
   sizes, 10 classes). Interleaved, medians of many repeats; ratios, so the machine's load cancels out.

       .venv/bin/python benchmarks/explain_bench.py --threads 1

2. `calibration COMPARE_DIR ...`: for every run of `robult compare` folders, the test-split calibration of every
   modality subset before and after per-subset temperature scaling fitted on the validation split; prints the
   tables of docs/results/explain.md (mean ± sd over seeds) and writes them as JSON with --json.

       .venv/bin/python benchmarks/explain_bench.py calibration runs/cmp-av runs/cmp-pid --json explain-cal.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robult_engine.explain.attribution import shapley_values  # noqa: E402
from robult_engine.models.robult import RobultModel, combine_logits  # noqa: E402


def _median_us(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def timing(repeats: int) -> dict:
    rows = {}
    for m in (3, 6):
        torch.manual_seed(0)
        model = RobultModel([(f"v{i}", "vector", (16,)) for i in range(m)], 10).eval()
        inputs = {f"v{i}": torch.randn(1, 16) for i in range(m)}
        present = torch.ones(1, m, dtype=torch.bool)
        with torch.no_grad():
            lm = model(inputs, {}, present).logits_mod  # (1, M, C): the cache
        prior = torch.log(torch.full((10,), 0.1))
        sub = present.clone()
        sub[0, 0] = False

        def one_subset():
            torch.softmax(combine_logits(lm, sub), -1)

        def phi():
            shapley_values(lm, present, prior, "single-label")

        def forward():
            with torch.no_grad():
                model(inputs, {}, sub)

        for fn in (one_subset, phi, forward):  # warm-up
            for _ in range(20):
                fn()
        t = {"one subset prediction": [], "phi": [], "forward pass": []}
        for r in range(repeats):  # interleaved rounds, the order rotating
            fns = [("one subset prediction", one_subset), ("phi", phi), ("forward pass", forward)]
            for name, fn in fns[r % 3:] + fns[:r % 3]:
                t[name].append(_median_us(fn, 20))
        med = {k: statistics.median(v) for k, v in t.items()}
        rows[m] = {**{f"{k} (µs)": v for k, v in med.items()}, "coalitions": 2 ** m,
                   "phi / one subset prediction": med["phi"] / med["one subset prediction"],
                   "phi / forward pass": med["phi"] / med["forward pass"],
                   "naive re-encoding (2^M - 1 forward passes) / phi": (2 ** m - 1) * med["forward pass"] / med["phi"]}
    keys = list(rows[3])
    print(f"{'':52}{'M = 3':>14}{'M = 6':>14}")
    for k in keys:
        print(f"{k:52}" + "".join(f"{rows[m][k]:14.2f}" if isinstance(rows[m][k], float) else f"{rows[m][k]:14d}"
                                   for m in (3, 6)))
    return rows


def calibration_study(dirs: list[str]) -> dict:
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    from robult_engine.config import RunConfig
    from robult_engine.data import load_dataset
    from robult_engine.evaluation import encode_split
    from robult_engine.explain.calibration import calibration_table, fit_temperatures
    out = {}
    for d in dirs:
        meta = json.loads((Path(d) / "compare.json").read_text())
        base = RunConfig.from_dict(meta["config"])
        bundle = load_dataset(base.data)  # the compare's data (run seeds vary labels and models, not the data)
        names, task = bundle.info.modality_names, bundle.info.task
        per = {}
        for method in meta["methods"]:
            for run in meta["runs"][method]:
                ckpt = load_checkpoint(Path(d) / f"{method}-seed{run['seed']}" / "best.pt")
                model = model_from_checkpoint(ckpt)
                val = encode_split(model, bundle.splits["val"], with_latents=False)
                test = encode_split(model, bundle.splits["test"], with_latents=False)
                temps = fit_temperatures(val, names, task)
                before, after = calibration_table(test, names, task), calibration_table(test, names, task, temps)
                for s in before:
                    row = {"accuracy": before[s].accuracy, "confidence": before[s].mean_confidence,
                           "gap": before[s].mean_confidence - before[s].accuracy, "ece": before[s].ece,
                           "adaptive_ece": before[s].adaptive_ece, "nll": before[s].nll, "brier": before[s].brier,
                           "T": temps[s], "ece_after": after[s].ece, "nll_after": after[s].nll}
                    per.setdefault(method, {}).setdefault(s, []).append(row)
        full = "+".join(names)
        singles = [s for s in names]
        print(f"\n{bundle.info.name}: test split, mean ± sd over {len(meta['runs'][meta['methods'][0]])} seeds "
              f"(gap = mean confidence − accuracy; > 0 is over-confident; T fitted per subset on val)")
        print("| method | subset | accuracy | confidence − accuracy | ECE | adaptive ECE | NLL | T | ECE after T |")
        print("|---|---|---|---|---|---|---|---|---|")
        summary = {}
        for method, subsets in per.items():
            def ms(rows, k):
                v = [r[k] for r in rows]
                return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)
            groups = {"single modalities (mean)": [r for s in singles for r in subsets[s]], full: subsets[full]}
            if len(names) <= 3:
                groups = {**{s: subsets[s] for s in singles}, **groups}
            for gname, rows in groups.items():
                cells = {k: ms(rows, k) for k in ("accuracy", "gap", "ece", "adaptive_ece", "nll", "T", "ece_after")}
                summary.setdefault(method, {})[gname] = {k: {"mean": v[0], "sd": v[1]} for k, v in cells.items()}
                print(f"| {method} | {gname} | " + " | ".join(
                    f"{cells[k][0]:{'+' if k == 'gap' else ''}.3f} ± {cells[k][1]:.3f}"
                    for k in ("accuracy", "gap", "ece", "adaptive_ece", "nll", "T", "ece_after")) + " |")
        out[bundle.info.name] = {"summary": summary, "per_subset": per}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", nargs="?", default="timing", choices=("timing", "calibration"))
    p.add_argument("dirs", nargs="*", help="calibration: compare output folders")
    p.add_argument("--repeats", type=int, default=30, help="timing: interleaved rounds (20 calls each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "timing":
        res = timing(args.repeats)
    else:
        if not args.dirs:
            p.error("calibration: give one or more compare folders")
        res = calibration_study(args.dirs)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
