"""The command-line side of `explain`: `robult eval CKPT --calibration --attribution` and `robult pid`.

`robult_engine.cli` only registers these (`add_eval_options`, `eval_explanations`, `add_pid_command`), so the
explanation code stays in this package; what the commands share comes from cli_common.py and stats.py.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..cli_common import config_from_args, set_threads
from ..stats import format_table


def add_eval_options(e: argparse.ArgumentParser) -> None:
    e.add_argument("--calibration", action="store_true",
                   help="per-subset calibration (ECE, adaptive ECE, Brier, NLL) before and after per-subset "
                        "temperature scaling; the temperatures are fitted on the val split and kept beside the "
                        "checkpoint (best.pt -> best.calibration.json), a stale file is refused and refitted")
    e.add_argument("--attribution", action="store_true",
                   help="mean |Shapley value| of each modality per class over the split")
    e.add_argument("--explain", default="predicted", metavar="WHAT",
                   help="what the Shapley value explains: 'predicted' (default) or 'true' class, or a class name or "
                        "index (log-probability of that class); a regression model's predicted score")


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _explain_target(what: str, info) -> str | int:
    if what in ("predicted", "true"):
        return what
    if what in info.class_names:
        return info.class_names.index(what)
    try:
        return int(what)
    except ValueError:
        raise ValueError(f"--explain {what}: not 'predicted', 'true', a class name or an index "
                         f"(classes: {', '.join(info.class_names[:12])})") from None


def eval_explanations(args: argparse.Namespace, ckpt, model, bundle, split_name: str) -> dict:
    """Print the tables `--calibration` / `--attribution` ask for; return them as JSON-ready data."""
    from ..evaluation import encode_split
    out: dict = {}
    if not (getattr(args, "calibration", False) or getattr(args, "attribution", False)):
        return out
    info = bundle.info
    enc = encode_split(model, bundle.splits[split_name], with_latents=False)
    if args.calibration:
        out.update(_calibration(ckpt, model, bundle, enc, split_name))
    if args.attribution:
        out.update(_attribution(args, bundle, enc, split_name, info))
    return out


def _calibration(ckpt, model, bundle, enc, split_name: str) -> dict:
    from ..evaluation import encode_split
    from .calibration import (CalibrationError, NotApplicable, calibration_path, calibration_table, fit_calibration,
                              load_calibration, save_calibration)
    info = bundle.info
    names, task = info.modality_names, info.task
    try:
        before = calibration_table(enc, names, task)
    except NotApplicable as e:
        print(f"calibration: not applicable ({e})", file=sys.stderr)
        return {"calibration": None, "calibration_note": str(e)}
    own_data = bundle.fingerprint() == ckpt.fingerprint
    side = calibration_path(ckpt.path)
    cal = None
    if own_data:
        try:
            cal = load_calibration(ckpt)
            print(f"using the calibration fitted on the {cal.fitted_on} split ({side})", file=sys.stderr)
        except CalibrationError as e:
            if side.exists():
                print(f"note: {e}; fitting it again", file=sys.stderr)
    if cal is None:
        if "val" not in bundle.splits:
            raise ValueError("--calibration: the dataset has no val split to fit the temperatures on")
        cal = fit_calibration(ckpt, encode_split(model, bundle.splits["val"], with_latents=False), names, task)
        where = "not saved: the data differ from the checkpoint's"
        if own_data:
            try:
                where = f"wrote {save_calibration(cal, ckpt.path)}"
            except OSError as e:
                where = f"could not write {side} ({e.strerror})"
        print(f"fitted per-subset temperatures on the val split ({cal.n_fit} samples); {where}", file=sys.stderr)
    after = calibration_table(enc, names, task, cal.temperatures)
    rows = list(before)
    cols = ["n", "accuracy", "confidence", "ECE", "adaptive ECE", "Brier", "NLL", "T", "ECE after T",
            "aECE after T", "NLL after T"]

    def cell(r: str, c: str) -> str:
        b, a = before[r], after[r]
        v = {"n": b.n, "accuracy": b.accuracy, "confidence": b.mean_confidence, "ECE": b.ece,
             "adaptive ECE": b.adaptive_ece, "Brier": b.brier, "NLL": b.nll, "T": a.temperature,
             "ECE after T": a.ece, "aECE after T": a.adaptive_ece, "NLL after T": a.nll}[c]
        return str(v) if c == "n" else _fmt(v)
    unit = "per-label binary, " if task == "multi-label" else ""
    print(f"\ncalibration, {split_name} split ({unit}15 bins; T fitted per subset on val)")
    print(format_table(rows, cols, cell))
    table = {}
    for r in rows:
        d = before[r].to_dict()
        d.update({"temperature": after[r].temperature, "ece_before": before[r].ece, "ece_after": after[r].ece,
                  "adaptive_ece_after": after[r].adaptive_ece, "brier_after": after[r].brier,
                  "nll_after": after[r].nll, "reliability_after": after[r].to_dict()["reliability"]})
        table[r] = d
    return {"calibration": table, "calibration_file": str(side) if own_data else None}


def _attribution(args, bundle, enc, split_name: str, info) -> dict:
    from .attribution import attribution_summary, train_prior
    explain = _explain_target(args.explain, info)
    prior = train_prior(bundle.splits["train"].target, info.task, info.num_outputs)
    s = attribution_summary(enc, prior, info.modality_names, info.task, info.class_names, explain=explain)
    what = {"single-label": "log-probability (nats) of the {} class", "multi-label": "log σ (nats) of the {} label",
            "regression": "predicted score"}[info.task]
    explained = (info.class_names[explain] if isinstance(explain, int) else explain)
    print(f"\nmean |φ| per modality (Shapley value of the {what.format(explained)}; v(∅) the train prior), "
          f"{split_name} split, {s.n} samples")
    groups = list(s.mean_abs)
    print(format_table(groups, list(s.modalities), lambda g, m: _fmt(s.mean_abs[g][s.modalities.index(m)]),
                       first="class (true)"))
    print("share of samples with φ < 0: " + ", ".join(f"{m} {v:.1%}" for m, v in zip(s.modalities, s.negative_share)))
    return {"attribution": s.to_dict()}


# --- robult pid ----------------------------------------------------------------------------------------------


def add_pid_command(sub, add_run_args) -> None:
    p = sub.add_parser("pid", help="redundancy / uniqueness / synergy of the dataset's modality pairs (PID)")
    p.add_argument("--dataset", help="built-in name (av-digits, pid-synth, ...) or a path")
    p.add_argument("--modalities", help="one pair 'a,b' (a side may be a group 'b+c'); default: every pair")
    p.add_argument("--clusters", type=int,
                   help="k-means clusters per side (default: floor(sqrt(N / (2|Y|))) in [2, 10])")
    p.add_argument("--splits", default="train,val,test", help="splits whose samples are pooled (default: all three)")
    p.add_argument("--label", help="multi-label data: the label (name or index) taken as a binary target")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="also B bootstrap resamples: the sd of each term")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means and the bootstrap")
    p.add_argument("--data-seed", type=int, help="seed of a generated dataset (pid-synth)")
    p.add_argument("--config", help="a JSON config file whose data section is used")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any config field, e.g. --set data.synth_noise=0.2")
    p.add_argument("--json", help="also write the estimates as JSON")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_pid)


def cmd_pid(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from .pid import dataset_pid
    set_threads(args.threads)
    cfg = config_from_args(argparse.Namespace(**{**vars(args), "modalities": None}))
    bundle = load_dataset(cfg.data)
    info = bundle.info
    pairs = None
    if args.modalities:
        sides = [s.strip() for s in args.modalities.split(",") if s.strip()]
        if len(sides) != 2:
            raise ValueError(f"--modalities {args.modalities}: give one pair 'a,b' (a side may be a group 'b+c')")
        for m in "+".join(sides).split("+"):
            if m not in info.modality_names:
                raise ValueError(f"--modalities: unknown modality {m!r}; the dataset has "
                                 f"{', '.join(info.modality_names)}")
        pairs = [tuple(sides)]
    elif info.num_modalities < 2:
        raise ValueError(f"{info.name}: one modality only, no pair to decompose")
    label = None
    if args.label is not None:
        label = info.class_names.index(args.label) if args.label in info.class_names else int(args.label)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    missing = [s for s in splits if s not in bundle.splits]
    if missing:
        raise ValueError(f"--splits: the dataset has no {', '.join(missing)} split ({', '.join(bundle.splits)})")
    results = dataset_pid(bundle, pairs, splits=splits, clusters=args.clusters, label=label, seed=args.seed,
                          n_boot=args.bootstrap)
    print(f"{info.name}: PID of each modality pair with respect to the target, in bits "
          f"(splits {'+'.join(splits)}; plug-in estimate on k-means clusters, barrier Newton solver)")
    rows = [f"{r.pair[0]} × {r.pair[1]}" for r in results]
    cols = ["R (bits)", "U1 (bits)", "U2 (bits)", "S (bits)", "I(X1,X2;Y)", "bias bound", "n"]
    by_row = dict(zip(rows, results))

    def cell(row: str, c: str) -> str:
        r = by_row[row]
        key = {"R (bits)": "R", "U1 (bits)": "U1", "U2 (bits)": "U2", "S (bits)": "S"}.get(c)
        if key:
            v = r.result.components()[key]
            sd = r.bootstrap_sd.get(key)
            return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
        if c == "n":
            return str(r.result.n)
        return f"{r.result.mi_joint:.3f}" if c == "I(X1,X2;Y)" else f"{r.result.bias_bound:.3f}"
    print(format_table(rows, cols, cell, first="pair"))
    print("discretisation:")
    for r in results:
        print(f"  {r.pair[0]} × {r.pair[1]}: {r.features[0]}; {r.features[1]}; standardised, ≤ 32 principal "
              f"components, k-means, k = {r.clusters[0]} (occupied: {r.result.sizes[0]}, {r.result.sizes[1]}; "
              f"{r.result.sizes[2]} target values)")
    print("bias bound: the plug-in's first-order upward bias of I(X1,X2;Y), (k1·k2 − 1)(|Y| − 1) / (2 N ln 2); "
          "synergy below it is not distinguishable from zero" + (f"; ± one bootstrap sd ({args.bootstrap} resamples)"
                                                                 if args.bootstrap > 1 else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": info.name, "splits": list(splits),
                                               "pairs": [r.to_dict() for r in results]}, indent=2))
    return 0


__all__ = ["add_eval_options", "add_pid_command", "cmd_pid", "eval_explanations"]
