"""`robult sweep`: label fraction × missing rate, every method on the same labels and the same masks; and the
missing-modality parts of `robult eval` and `robult compare`.

A sweep trains once per (method, label fraction, seed[, --grid setting]) on identical labeled indices and
batches (the data seed is the run seed, as in `compare`) and evaluates each trained model under every mask of
the missing grid. The masks are drawn once on the test split (robult_engine/missing.py: a pure function of the
split, the spec and the mask seed), saved as `masks.npz` beside the results, and shared by every model; a mask
never zero-fills an input: it is combined with the data's mask and the prediction is the mean of the present
modalities' logits (the path of the explorer's toggles). So the grid costs trainings only along the label axis.

Outputs in `--out DIR`: `sweep.csv`, `sweep.json`, `sweep.png` (metric vs missing rate, one line per method,
one panel per label fraction; drawn with matplotlib's Agg backend, no Qt), `masks.npz` and one folder per run.
Runs go one at a time (with step progress), in `--jobs N` local processes (`workers.run_parallel`, the worker
`compare` uses), or on Ray with `--ray [ADDRESS]` (an optional extra: `pip install 'robult-studio[ray]'`; without
an address a local Ray instance is started; with a cluster, DIR must be on storage every node shares, because
each run's best checkpoint is read back to be evaluated under the masks).

Train/test missingness mismatch (`--train-missing MECH:RATES`, the grammar of `--missing`): η_train becomes an
axis. Every method is trained once per training setting (and seed), with that setting as `data.train_missing`,
and each trained model is evaluated under every test mask, so each (label fraction, method) gets a matrix
η_train × η_test (mean ± std over seeds); the diagonal (tested under the setting it was trained under) is
marked. A training setting missing from the test grid is added to it, so the diagonal is always measured.
Runs live in `lfF/train-SETTING/METHOD-seedS`; their records hold the configuration (train setting included),
so `--resume` works on the axis too. `mcar:0` removes nothing: the training split keeps the data's own mask
only (a dataset with missing entries of its own, such as Movies' `production`, still trains on those).
Without the flag the sweep is the plain one (training as `data.train_missing` of the configuration says).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

from .cli_common import (ProgressPrinter, add_run_args, config_from_args, parse_grid, parse_methods, set_threads,
                         setting_label)
from .config import METHODS, ConfigError, RunConfig
from .csvsafe import csv_writer
from .errors import MissingSpecError
from .events import Failed
from .missing_spec import parse_missing, parse_missing_grid
from .stats import format_table, mean_std
from .workers import RunsTerminated, report_stopped, run_parallel

DEFAULT_MISSING = "mcar:0,0.25,0.5,0.75"


# --- evaluating checkpoints under masks ---------------------------------------------------------------------


class MaskEvaluator:
    """The masks of one split, drawn once (or read from a mask file), and every checkpoint's metrics under them."""

    def __init__(self, bundle, split: str, specs: list[str] | None = None, mask_seed: int = 0,
                 mask_file: str | None = None, batch_size: int = 512) -> None:
        from .missing import draw_masks, load_masks, realised_missing
        if split not in bundle.splits:
            raise ConfigError(f"--split {split}: the dataset has {', '.join(bundle.splits)}")
        self.bundle, self.split_name, self.split = bundle, split, bundle.splits[split]
        self.task = bundle.info.task
        self.batch_size = batch_size
        self.mask_seed = mask_seed
        if mask_file:
            self.masks, meta = load_masks(mask_file, n=len(self.split), modality_names=bundle.info.modality_names)
            self.mask_seed = meta.get("mask_seed", mask_seed)
            if meta.get("fingerprint") and meta["fingerprint"] != bundle.fingerprint():
                raise MissingSpecError(f"{mask_file}: the masks were drawn on other data (fingerprint "
                                       f"{meta['fingerprint']}, this data {bundle.fingerprint()}); evaluate on the "
                                       f"data they were drawn on")
            if meta.get("split") and meta["split"] != split:
                raise MissingSpecError(f"{mask_file}: masks of the {meta['split']} split, not of --split {split}")
        else:
            self.masks = draw_masks(self.split, bundle.info, parse_missing_grid(specs or []), mask_seed)
        self.labels = list(self.masks)
        self.realised = {k: realised_missing(v) for k, v in self.masks.items()}

    def rates(self) -> dict[str, float]:
        """The nominal rate η of each setting (NaN where a setting has none: exclusive, subsets, per-modality)."""
        return {k: parse_missing(k)[0].rate for k in self.labels}

    def evaluate_model(self, model, device: str = "cpu") -> dict[str, dict[str, float]]:
        from .evaluation import encode_split
        from .missing import metrics_under_masks
        enc = encode_split(model, self.split, self.batch_size, device, with_latents=False)  # one pass
        return metrics_under_masks(enc, self.masks, self.task)

    def evaluate_checkpoint(self, path: str | Path, expected) -> dict[str, dict[str, float]]:
        """The metrics under every mask of the checkpoint a run of `expected` (its RunConfig) wrote. The file
        must hold that very configuration (else CheckpointError: a record pointing at another run's checkpoint
        is refused), and only the encoder modules that configuration names may be imported."""
        from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
        from .models.encoders import untrusted_modules
        ckpt = load_checkpoint(path)
        if ckpt.config.to_dict() != expected.to_dict():
            raise CheckpointError(f"{path}: holds a run of another configuration ({ckpt.config.method}, seed "
                                  f"{ckpt.config.seed}, label fraction {ckpt.config.data.label_fraction:g}) than "
                                  f"the run it is recorded for ({expected.method}, seed {expected.seed}, label "
                                  f"fraction {expected.data.label_fraction:g})")
        trust = untrusted_modules(expected.model.encoders)  # the user's own config named these
        return self.evaluate_model(model_from_checkpoint(ckpt, trust_code=trust))

    def save(self, path: str | Path) -> Path:
        from .missing import save_masks
        return save_masks(path, self.masks, modality_names=self.bundle.info.modality_names, split=self.split_name,
                          seed=self.mask_seed, dataset=self.bundle.info.name, fingerprint=self.bundle.fingerprint())

    def row_label(self, label: str) -> str:
        return f"{label} ({self.realised[label]:.0%} missing)"


def eval_missing(args: argparse.Namespace, model, bundle, checkpoint: str) -> int:
    """`robult eval CKPT --missing SPEC [--mask-seed S] [--masks FILE] [--out DIR] [--json FILE]`."""
    ev = MaskEvaluator(bundle, args.split, args.missing, args.mask_seed, args.masks)
    table = ev.evaluate_model(model)
    cols = sorted({k for r in table.values() for k in r})
    print(f"{args.split} split, {checkpoint}, under {len(ev.labels)} mask setting(s), mask seed {ev.mask_seed} "
          f"(rates are fractions missing; the realised fraction is in brackets)")
    print(format_table([ev.row_label(k) for k in ev.labels], cols,
                       lambda r, c: f"{table[r.rsplit(' (', 1)[0]].get(c, float('nan')):.4f}", first="missing"))
    result = {"checkpoint": str(checkpoint), "dataset": bundle.info.name, "split": args.split,
              "mask_seed": ev.mask_seed, "masks_from": args.masks or "",
              "results": {k: {"realised_missing": ev.realised[k], **table[k]} for k in ev.labels}}
    written = []
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result["masks_file"] = str(ev.save(out / "masks.npz"))
        (out / "missing.json").write_text(json.dumps(result, indent=2))
        written += [result["masks_file"], str(out / "missing.json")]
    if args.json:
        js = Path(args.json)
        if "masks_file" not in result:
            result["masks_file"] = str(ev.save(js.with_name(js.stem + ".masks.npz")))
            written.append(result["masks_file"])
        js.write_text(json.dumps(result, indent=2))
        written.append(str(js))
    if written:
        print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 0


def compare_missing_report(ev: MaskEvaluator, results: dict[str, list[dict]], methods: list[str], metric: str,
                           seeds: int) -> dict:
    """`robult compare --missing`: print setting × method (mean ± std over seeds) and the first method minus each
    other one per setting, paired by seed; return the JSON section."""
    summary = {k: {m: mean_std([r["missing"][k].get(metric, float("nan")) for r in results[m]]) for m in methods}
               for k in ev.labels}
    print(f"\nunder missing modalities ({ev.split_name} split, same masks for every method, mask seed "
          f"{ev.mask_seed}; rates are fractions missing), {metric} (mean ± std over {seeds} seeds)")
    print(format_table([ev.row_label(k) for k in ev.labels], methods,
                       lambda r, c: "{:.4f} ± {:.4f}".format(*summary[r.rsplit(" (", 1)[0]][c]), first="missing"))
    paired = {k: _paired(results, methods, metric, k) for k in ev.labels}
    if len(methods) > 1:
        ref = methods[0]
        print(f"\n{ref} minus each method per setting, paired by seed:")
        print(format_table([ev.row_label(k) for k in ev.labels], [f"{ref} - {m}" for m in methods[1:]],
                           lambda r, c: _diff_cell(paired[r.rsplit(" (", 1)[0]].get(c.split(" - ", 1)[1])),
                           first="missing"))
    return {"mask_seed": ev.mask_seed, "split": ev.split_name, "masks_file": "masks.npz",
            "realised_missing": ev.realised,
            "summary": {k: {m: {"mean": summary[k][m][0], "std": summary[k][m][1]} for m in methods}
                        for k in ev.labels},
            "paired_vs_first": paired}


# --- statistics ---------------------------------------------------------------------------------------------


# `mean_std` (robult_engine/stats.py) stays importable from here: the app reads sweeps with it


def _paired(results: dict[str, list[dict]], methods: list[str], metric: str, label: str) -> dict[str, dict]:
    """First method minus each other one under one mask setting, paired by seed."""
    from .metrics import HIGHER_IS_BETTER
    higher = HIGHER_IS_BETTER.get(metric, True)
    ref = {r["seed"]: r["missing"][label].get(metric, float("nan")) for r in results[methods[0]]}
    out = {}
    for m in methods[1:]:
        diffs = [ref[r["seed"]] - r["missing"][label].get(metric, float("nan")) for r in results[m]
                 if r["seed"] in ref]
        diffs = [d for d in diffs if not math.isnan(d)]
        if diffs:
            mean, sd = mean_std(diffs)
            out[m] = {"mean": mean, "std": sd, "wins": sum((d > 0) if higher else (d < 0) for d in diffs),
                      "n": len(diffs)}
    return out


def _diff_cell(d: dict | None) -> str:
    return "—" if not d else f"{d['mean']:+.4f} ± {d['std']:.4f} ({d['wins']}/{d['n']})"


# --- running the trainings ----------------------------------------------------------------------------------


def compare_masks(args: argparse.Namespace, bundle, out: Path) -> MaskEvaluator | None:
    """`robult compare --missing`: the test-split masks every method is evaluated under (saved to
    out/masks.npz), or None without --missing."""
    if not getattr(args, "missing", None):
        return None
    ev = MaskEvaluator(bundle, "test", args.missing, args.mask_seed)
    ev.save(out / "masks.npz")
    return ev


def ray_kwargs(args: argparse.Namespace) -> dict:
    """Extra arguments of `workers.run_parallel` for `--ray [ADDRESS]` ({} without it)."""
    address = getattr(args, "ray", None)
    return {} if address is None else {"pool_factory": ray_pool_factory(address)}


def ray_pool_factory(address: str | None):
    """A `multiprocessing.Pool`-compatible factory backed by Ray (each run a Ray task), for `run_parallel`."""
    try:
        from ray.util.multiprocessing import Pool as RayPool
    except ImportError:
        raise ConfigError("--ray: Ray is not installed; pip install 'robult-studio[ray]' (or pip install ray)") from None

    def make(processes: int):
        return RayPool(processes=processes, ray_address=address or None)
    return make


def _trainer_extras(args: argparse.Namespace) -> dict:
    # the CLI's runs train the user's own config (flags, --config): the encoder code it names is theirs
    return {"tensorboard": bool(getattr(args, "tensorboard", False)), "trust_code": True}


# --- the sweep ----------------------------------------------------------------------------------------------

RUN_RECORD = "sweep_run.json"  # written in each run's folder when its result is recorded (what --resume reads)


def parse_fractions(text: str) -> list[float]:
    out = []
    for item in str(text).split(","):
        try:
            v = float(item)
        except ValueError:
            raise ConfigError(f"--label-fractions {text}: {item.strip()!r} is not a number") from None
        if not 0.0 < v <= 1.0:
            raise ConfigError(f"--label-fractions {text}: each fraction must be in (0, 1], got {item.strip()}")
        if v in out:
            raise ConfigError(f"--label-fractions {text}: {item.strip()} is given twice")
        out.append(v)
    return out


def parse_train_missing(items, base, modality_names: tuple[str, ...] | None = None) -> list[str]:
    """`--train-missing MECH:RATES` (repeatable; the grammar of `--missing`): the training settings of a mismatch
    sweep, as canonical labels. Each must be a setting `data.train_missing` accepts (one setting, not 'subsets';
    with `modality_names`, only modalities the dataset has and one rate or one per modality); a configuration
    that already sets `data.train_missing` is refused (the setting would be given twice). ConfigError names the
    flag and the problem."""
    items = [items] if isinstance(items, str) else [str(x) for x in (items or [])]
    shown = " ".join(items)
    specs = parse_missing_grid(items, where="--train-missing")
    if not specs:
        raise ConfigError("--train-missing: give at least one training setting, e.g. mcar:0,0.3,0.6")
    if base.data.train_missing:
        raise ConfigError(f"--train-missing {shown}: the configuration already sets data.train_missing="
                          f"{base.data.train_missing}; give the training missingness in one place")
    for spec in specs:
        if spec.mechanism == "subsets":
            raise ConfigError(f"--train-missing {shown}: 'subsets' is an evaluation over every modality subset, "
                              f"not a training setting; name one subset (subset:A+B) or a rate (mcar:0.5)")
        try:
            base.replace(**{"data.train_missing": spec.label}).data.validate(modality_names)
        except ConfigError as e:
            why = str(e)
            for prefix in (f"data.train_missing: {spec.label}: ", "data.train_missing: "):
                if why.startswith(prefix):
                    why = why[len(prefix):]
                    break
            which = "" if spec.label == shown else f"{spec.label}: "
            raise ConfigError(f"--train-missing {shown}: {which}cannot be trained on: {why}") from None
    return [s.label for s in specs]


def train_folder(label: str) -> str:
    """The folder of a training setting's runs: `train-` and the setting with every character a file name may
    not hold replaced (mcar:0.5 → train-mcar_0.5)."""
    return "train-" + re.sub(r"[^A-Za-z0-9._=+@-]", "_", label)


def fraction_label(v: float) -> str:
    """A label fraction as folder names, report keys and CSV cells show it: `:g` (0.05, 0.2, 1) where that
    gives the value back, else the shortest text that does (0.5000001 is not 0.5), so distinct fractions never
    share a run folder or a cell."""
    v = float(v)
    short = f"{v:g}"
    return short if float(short) == v else repr(v)


class Sweep:
    """One sweep: its runs (method × label fraction × seed × grid setting, identical labeled indices per seed,
    and with `train_missing` × training setting), the test masks every run is evaluated under, the results
    recorded so far, and the report. The CLI (`cmd_sweep`) and the app's background sweep both drive it:
    `pending()` lists the runs still to train, `record(key, final)` evaluates a finished run under the masks (and
    writes its `sweep_run.json`, so a sweep that was stopped can resume), `finish()` writes sweep.csv /
    sweep.json / sweep.png and returns the payload.

    A key is `(grid index, label-fraction index, seed, method)`, and `(…, training-setting index)` in a mismatch
    sweep (`train_missing` given); `parts(key)` gives all five in either case.
    """

    def __init__(self, base, methods: list[str], fractions: list[float], out: str | Path, seeds: int = 3,
                 missing: list[str] | None = None, mask_seed: int = 0, grid: list[dict] | None = None,
                 metric: str | None = None, bundle=None, resume: bool = False,
                 should_stop=None, on_resume_progress=None, trainer_extras: dict | None = None,
                 train_missing: list[str] | str | None = None) -> None:
        from .data import load_dataset
        from .metrics import primary_metric
        for m in methods:
            if m not in METHODS:
                raise ConfigError(f"--methods: unknown method {m!r}; one of {', '.join(METHODS)}")
        if not methods:
            raise ConfigError("--methods: name at least one method")
        if seeds < 1:
            raise ConfigError(f"--seeds: must be at least 1, got {seeds}")
        if not fractions:
            raise ConfigError("--label-fractions: name at least one fraction")
        for v in fractions:
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"--label-fractions: each fraction must be in (0, 1], got {v:g}")
        for i, v in enumerate(fractions):
            if v in fractions[:i]:
                raise ConfigError(f"--label-fractions: {fraction_label(v)} is given twice")
        mismatch = bool(train_missing)
        if mismatch:
            if grid and len(grid) > 1:
                raise ConfigError("--train-missing: cannot be combined with --grid (each training setting would "
                                  "get its own chosen setting); sweep the grid without it first")
            parse_train_missing(train_missing, base)  # the spec itself, before the data is loaded
        self.base, self.methods, self.fractions, self.seeds = base, list(methods), list(fractions), seeds
        self.trainer_extras = dict(trainer_extras or {})  # more Trainer arguments (the CLI's --tensorboard)
        self.grid = list(grid) if grid else [{}]
        self.bundle = bundle if bundle is not None else load_dataset(base.data)
        if "test" not in self.bundle.splits or len(self.bundle.splits["test"]) == 0:
            raise ConfigError(f"{self.bundle.info.name}: a sweep evaluates on the test split, and the dataset has none")
        # the training settings (η_train) of a mismatch sweep; [] for a plain one
        self.train: list[str] = (parse_train_missing(train_missing, base, tuple(self.bundle.info.modality_names))
                                 if mismatch else [])
        specs = list(missing or [DEFAULT_MISSING])
        self.added_to_test = self._test_settings_for_diagonal(specs) if mismatch else []
        self.ev = MaskEvaluator(self.bundle, "test", specs + self.added_to_test, mask_seed)
        if self.added_to_test:
            self.ev.labels = _ordered_settings(self.ev.labels)
        self.metric = metric or primary_metric(self.bundle.info.task)
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ev.save(self.out / "masks.npz")
        n_train = len(self.train) or 1
        if mismatch:
            self.jobs = [(g, f, seed, m, t) for f in range(len(self.fractions)) for g in range(len(self.grid))
                         for t in range(n_train) for seed in range(seeds) for m in self.methods]
        else:
            self.jobs = [(g, f, seed, m) for f in range(len(self.fractions)) for g in range(len(self.grid))
                         for seed in range(seeds) for m in self.methods]
        self.configs = {}
        self.run_dirs = {}
        for key in self.jobs:
            g, f, seed, m, t = self.parts(key)
            changes = {"data.seed": seed, "data.label_fraction": self.fractions[f]}
            if mismatch:
                changes["data.train_missing"] = self.train[t]
            self.configs[key] = base.replace(**self.grid[g]).replace(method=m, seed=seed, **changes).validate()
            folder = self.out / f"lf{fraction_label(self.fractions[f])}"
            if mismatch:
                folder = folder / self._train_folders()[t]
            self.run_dirs[key] = folder / (f"{m}-seed{seed}" + (f"-g{g}" if len(self.grid) > 1 else ""))
        # (method, label fraction, grid setting, training setting) -> the recorded runs, one per seed
        self.cells: dict[tuple[str, int, int, int], list[dict]] = {
            (m, f, g, t): [] for m in self.methods for f in range(len(self.fractions)) for g in range(len(self.grid))
            for t in range(n_train)}
        self.done: set[tuple] = set()
        self.resumed: list[tuple] = []
        self.retrained: dict[tuple, str] = {}  # resume: runs whose record was refused, and why
        self.stopped = False  # should_stop() said so while the finished runs were being taken back
        if resume:
            self._resume(should_stop, on_resume_progress)
        if not self.stopped:  # a stopped resume leaves every record as it was, for the next one
            self.forget_pending()
        self.t0 = time.perf_counter()  # after the resumed runs' re-evaluation: elapsed and ETA count training

    @property
    def mismatch(self) -> bool:
        """A train/test missingness mismatch sweep (η_train is an axis)."""
        return bool(self.train)

    @staticmethod
    def parts(key: tuple) -> tuple[int, int, int, str, int]:
        """(grid index, label-fraction index, seed, method, training-setting index) of a key (0 for the last in
        a plain sweep)."""
        return (*key, 0) if len(key) == 4 else tuple(key)

    def _train_folders(self) -> list[str]:
        names: list[str] = []
        for t, lab in enumerate(self.train):  # two settings whose names clash get the index too
            name = train_folder(lab)
            names.append(name if name not in names else f"{name}-{t}")
        return names

    def _test_settings_for_diagonal(self, specs: list[str]) -> list[str]:
        """The training settings the test grid lacks (added to it, so every row of the matrix has its diagonal
        cell)."""
        from .missing import expand
        have = {s.label for s in expand(parse_missing_grid(specs), tuple(self.bundle.info.modality_names))}
        return [lab for lab in self.train if lab not in have]

    def train_realised(self) -> dict[str, float]:
        """Each training setting's realised missing fraction on the training split (mean over the seeds: the
        mask is drawn with the data seed), the data's own absences included."""
        from .missing import draw_mask, realised_missing
        split = self.bundle.splits["train"]
        out = {}
        for lab in self.train:
            spec = parse_missing(lab)[0]
            out[lab] = sum(realised_missing(draw_mask(split, self.bundle.info, spec, seed))
                           for seed in range(self.seeds)) / self.seeds
        return out

    @property
    def n_runs(self) -> int:
        return len(self.jobs)

    def pending(self) -> list[tuple]:
        return [key for key in self.jobs if key not in self.done]

    def label_of(self, k: int, key: tuple) -> str:
        g, f, seed, m, t = self.parts(key)
        where = f" [{setting_label(self.grid[g])}]" if len(self.grid) > 1 else ""
        trained = f" train {self.train[t]}" if self.mismatch else ""
        return f"[{k}/{self.n_runs}] {m} lf {fraction_label(self.fractions[f])}{trained} seed {seed}{where}: "

    def describe(self) -> str:
        axis = f" × {len(self.train)} training setting(s) ({', '.join(self.train)})" if self.mismatch else ""
        added = (f"; the test grid also gets {', '.join(self.added_to_test)} (training settings, for the "
                 f"diagonal)" if self.added_to_test else "")
        return (f"sweep: {len(self.methods)} method(s) × {len(self.fractions)} label fraction(s){axis} × "
                f"{self.seeds} seed(s)" + (f" × {len(self.grid)} settings" if len(self.grid) > 1 else "")
                + f" = {self.n_runs} trainings, each evaluated under {len(self.ev.labels)} mask setting(s) "
                f"({', '.join(self.ev.labels)}; rates are fractions missing){added}")

    def record(self, key: tuple, final) -> dict:
        """Evaluate a finished run under the masks and keep its cell; raises `SweepRunFailed` for a failed run."""
        g, f, seed, m, t = self.parts(key)
        label = self.label_of(len(self.done) + 1, key)
        if isinstance(final, Failed):
            raise SweepRunFailed(f"{label}failed: {final.message}")
        if not final.checkpoint_path:
            raise SweepRunFailed(f"{label}finished without a checkpoint (no completed epoch)")
        run = {"seed": seed, "missing": self.ev.evaluate_checkpoint(final.checkpoint_path, self.configs[key]),
               "test_subsets": final.test_metrics, "val_score": final.best_score, "best_epoch": final.best_epoch,
               "elapsed_s": final.elapsed_s, "run_dir": str(self.run_dirs[key])}
        if self.mismatch:
            run["train_missing"] = self.train[t]
        self._keep(key, run)
        record = {"config": self.configs[key].to_dict(), "checkpoint": Path(final.checkpoint_path).name,
                  **{k: run[k] for k in ("seed", "test_subsets", "val_score", "best_epoch", "elapsed_s")}}
        path = self.run_dirs[key] / RUN_RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        return run

    def _keep(self, key: tuple, run: dict) -> None:
        g, f, seed, m, t = self.parts(key)
        cell = self.cells[m, f, g, t]
        cell[:] = [r for r in cell if r["seed"] != seed] + [run]
        self.done.add(key)

    def _resume(self, should_stop=None, progress=None) -> None:
        """Take every run whose folder holds a `sweep_run.json` of the same configuration (its checkpoint is
        evaluated again under this sweep's masks); a folder of another configuration, or a record or checkpoint
        that cannot be read, is trained again."""
        for k, key in enumerate(self.jobs):
            if should_stop is not None and should_stop():
                self.stopped = True
                return
            if progress is not None:
                progress(k, len(self.jobs))
            path = self.run_dirs[key] / RUN_RECORD
            if not path.exists():
                continue
            try:
                rec = json.loads(path.read_text())
                same = RunConfig.from_dict(rec["config"]).to_dict() == self.configs[key].to_dict()
                if not same:
                    continue
                ckpt = self._recorded_checkpoint(key, rec.get("checkpoint", "best.pt"))
                if ckpt is None or not ckpt.exists():
                    continue
                # the checkpoint must hold this very run's configuration, and only the modules that
                # configuration names may be imported (MaskEvaluator.evaluate_checkpoint)
                run = {"seed": self.parts(key)[2], "missing": self.ev.evaluate_checkpoint(ckpt, self.configs[key]),
                       "test_subsets": rec.get("test_subsets", {}), "val_score": float(rec["val_score"]),
                       "best_epoch": int(rec["best_epoch"]), "elapsed_s": float(rec.get("elapsed_s", 0.0)),
                       "run_dir": str(self.run_dirs[key]), "resumed": True}
                if self.mismatch:
                    run["train_missing"] = self.train[self.parts(key)[4]]
            except Exception as e:  # noqa: BLE001 - anything unreadable or refused is simply trained again
                self.retrained[key] = f"{path}: {e}"
                continue
            self._keep(key, run)
            self.resumed.append(key)

    def _recorded_checkpoint(self, key: tuple, name) -> Path | None:
        """The checkpoint a run's record names, confined to that run's folder: a bare file name of a file
        directly inside it (no separators, no '..', no link leading elsewhere); None otherwise."""
        run_dir = self.run_dirs[key]
        if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name \
                or "/" in name or "\\" in name:
            self.retrained[key] = f"{run_dir / RUN_RECORD}: its checkpoint {name!r} is not a file of the run's folder"
            return None
        path = run_dir / name
        try:
            inside = path.resolve().parent == run_dir.resolve()
        except OSError:
            inside = False
        if not inside:
            self.retrained[key] = f"{run_dir / RUN_RECORD}: its checkpoint {name!r} leads outside the run's folder"
            return None
        return path

    def forget_pending(self) -> None:
        """Remove the `sweep_run.json` of every run about to be trained, so a run that is interrupted this time
        can never be taken later with a record of an older try (its folder's checkpoint is being overwritten)."""
        for key in self.pending():
            try:
                (self.run_dirs[key] / RUN_RECORD).unlink(missing_ok=True)
            except OSError:
                pass

    def progress_line(self, k: int, key: tuple, run: dict, n_new: int, k_new: int) -> str:
        """One line per finished run: its metric under the first mask settings, elapsed and ETA (over the runs
        trained in this process)."""
        spent = time.perf_counter() - self.t0
        eta = spent / max(k_new, 1) * (n_new - k_new)
        vals = "  ".join(f"{lab} {run['missing'][lab].get(self.metric, float('nan')):.3f}"
                         for lab in self.ev.labels[:6])
        more = " …" if len(self.ev.labels) > 6 else ""
        return (f"{self.label_of(k, key)}{self.metric} {vals}{more}  (best epoch {run['best_epoch'] + 1}, "
                f"{run['elapsed_s']:.0f}s; {len(self.done)}/{self.n_runs} done, {spent:.0f}s elapsed, "
                f"ETA {eta:.0f}s)")

    def chosen(self) -> dict[tuple[str, int], int]:
        """Each (method, label fraction): the grid setting with the best mean validation score (test takes no
        part)."""
        return {(m, f): max(range(len(self.grid)), key=lambda g: (
            mean_std([r["val_score"] for r in self.cells[m, f, g, 0]])[0], -g))
            for m in self.methods for f in range(len(self.fractions))}

    def finish(self, print_tables: bool = True) -> dict:
        """The report of every recorded run: sweep.csv, sweep.json and sweep.png in the folder; returns the
        JSON payload. Every run must have been recorded."""
        missing = self.pending()
        if missing:
            raise ConfigError(f"the sweep is not complete: {len(missing)} of {self.n_runs} runs are still to train")
        for runs in self.cells.values():
            runs.sort(key=lambda r: r["seed"])
        chosen = self.chosen()
        ev, metric = self.ev, self.metric
        # a mismatch sweep's `cells` / `runs` are those of its first training setting (what a reader of plain
        # sweeps shows); its matrix is in `matrix` / `matrix_runs`
        first = {(m, f, g): runs for (m, f, g, t), runs in self.cells.items() if t == 0}
        report = build_report(first, chosen, self.methods, self.fractions, self.grid, ev, metric)
        matrix = build_matrix(self.cells, self.methods, self.fractions, self.train, ev, metric) \
            if self.mismatch else None
        train_realised = self.train_realised() if self.mismatch else {}
        if print_tables and matrix is not None:
            print_matrix(matrix, self.methods, self.fractions, self.train, train_realised, ev, metric,
                         self.bundle.info.name, self.seeds)
        elif print_tables:
            print_report(report, self.methods, self.fractions, self.grid, ev, metric, self.bundle.info.name,
                         self.seeds, chosen)
        if matrix is not None:
            write_matrix_csv(self.out / "sweep.csv", matrix, self.methods, self.fractions, self.train,
                             train_realised, ev, metric, self.seeds)
        else:
            write_csv(self.out / "sweep.csv", report, self.methods, self.fractions, ev, metric, self.seeds)
        payload = {"dataset": self.bundle.info.name, "metric": metric, "methods": self.methods,
                   "label_fractions": self.fractions, "seeds": self.seeds, "missing": ev.labels,
                   "mask_seed": ev.mask_seed, "masks_file": "masks.npz", "realised_missing": ev.realised,
                   "rates": ev.rates(), "config": self.base.to_dict(),
                   "grid": [dict(g) for g in self.grid] if len(self.grid) > 1 else [],
                   "chosen_setting": ({f"{m}@{fraction_label(self.fractions[f])}": dict(self.grid[chosen[m, f]])
                                       for m in self.methods for f in range(len(self.fractions))}
                                      if len(self.grid) > 1 else {}),
                   "cells": report["cells"], "grid_cells": report["grid_cells"], "runs": report["runs"],
                   "elapsed_s": time.perf_counter() - self.t0, "resumed_runs": len(self.resumed)}
        if matrix is not None:
            payload.update({
                "train_missing": list(self.train),
                "train_rates": {lab: parse_missing(lab)[0].rate for lab in self.train},
                "train_realised_missing": train_realised, "test_added": list(self.added_to_test),
                "cells_train_missing": self.train[0], "diagonal": matrix["diagonal"],
                "matrix": matrix["cells"], "matrix_runs": matrix["runs"]})
        try:
            if matrix is not None:
                plot_matrix(self.out / "sweep.png", matrix, self.methods, self.fractions, self.train,
                            train_realised, ev, metric, self.bundle.info.name, self.seeds)
            else:
                plot_sweep(self.out / "sweep.png", report, self.methods, self.fractions, ev, metric,
                           self.bundle.info.name, self.seeds)
            payload["plot"] = "sweep.png"
        except ImportError:  # matplotlib is the optional `plot` extra; the tables do not need it
            payload["plot"] = ""
            print("sweep.png not drawn: matplotlib is not installed (pip install 'robult-studio[plot]')",
                  file=sys.stderr)
        (self.out / "sweep.json").write_text(json.dumps(payload, indent=2))
        return payload

    def run_serial(self, callbacks_for=None, should_stop=None, on_run=None) -> bool:
        """Train the pending runs one after another in this process (the app's worker thread, or the CLI
        without --jobs). `callbacks_for(k, key)` gives a run's trainer callbacks, `should_stop()` cancels (the
        current run stops at its next step and is not recorded), `on_run(k, key, run)` sees each recorded run.
        Returns False when cancelled."""
        from .trainer import Trainer
        for key in self.pending():
            if should_stop is not None and should_stop():
                return False
            k = len(self.done) + 1
            final = Trainer(self.configs[key], self.bundle,
                            callbacks=list(callbacks_for(k, key)) if callbacks_for else [],
                            should_stop=should_stop, out_dir=self.run_dirs[key],
                            **self.trainer_extras).run()
            if getattr(final, "cancelled", False):
                return False
            run = self.record(key, final)
            if on_run is not None:
                on_run(k, key, run)
        return True


class SweepRunFailed(Exception):
    pass


def cmd_sweep(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    methods = parse_methods(args.methods)
    if args.jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {args.jobs}")
    base = config_from_args(args, methods[0])
    fractions = parse_fractions(args.label_fractions) if args.label_fractions else [base.data.label_fraction]
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    train_missing = getattr(args, "train_missing", None) or None
    if train_missing:
        parse_train_missing(train_missing, base)  # a bad spec is refused before the data is loaded
    sweep = Sweep(base, methods, fractions, out, seeds=args.seeds, missing=args.missing, mask_seed=args.mask_seed,
                  grid=parse_grid(args.grid, base), metric=args.metric, resume=getattr(args, "resume", False),
                  trainer_extras=_trainer_extras(args), train_missing=train_missing)
    if not args.quiet:
        print(sweep.describe(), file=sys.stderr, flush=True)
        if sweep.resumed:
            print(f"resumed {len(sweep.resumed)} finished run(s) from {out}; {len(sweep.pending())} to train",
                  file=sys.stderr, flush=True)
    for why in sweep.retrained.values():  # said even with --quiet: a record was refused
        print(f"note: trained again, the record was refused: {why}", file=sys.stderr, flush=True)
    pending = sweep.pending()
    n_new = len(pending)
    counter = {"k": 0}

    def on_run(_k: int, key: tuple, run: dict) -> None:
        counter["k"] += 1
        if not args.quiet:
            print(sweep.progress_line(len(sweep.done), key, run, n_new, counter["k"]), file=sys.stderr, flush=True)

    def record(k: int, key: tuple, final) -> None:  # a result of the --jobs / --ray workers
        on_run(k, key, sweep.record(key, final))

    try:
        if getattr(args, "ray", None) is None and args.jobs <= 1:
            sweep.run_serial(callbacks_for=lambda k, key: [ProgressPrinter(sweep.label_of(k, key), args.quiet)],
                             on_run=on_run)
        elif pending:
            run_parallel(pending, sweep.configs, base, sweep.run_dirs, args, record, **ray_kwargs(args))
    except SweepRunFailed as e:
        print(str(e), file=sys.stderr)
        return 1
    except (KeyboardInterrupt, RunsTerminated) as e:  # each finished run has its sweep_run.json
        return report_stopped(e, out, "run the same command with --resume to continue")
    payload = sweep.finish()
    png = f"{out / 'sweep.png'}, " if payload.get("plot") else ""
    print(f"\nwrote {out / 'sweep.csv'}, {out / 'sweep.json'}, {png}and {out / 'masks.npz'} "
          f"({time.perf_counter() - sweep.t0:.0f}s)")
    return 0


def _summarise(runs_by_method: dict[str, list[dict]], ev: MaskEvaluator, metric: str) -> dict:
    """Per mask setting: each method's mean, std and per-seed values, and the first method minus each other one
    paired by seed."""
    out = {}
    for lab in ev.labels:
        row = {}
        for m, runs in runs_by_method.items():
            vals = [r["missing"][lab].get(metric, float("nan")) for r in runs]
            mean, sd = mean_std(vals)
            row[m] = {"mean": mean, "std": sd, "seeds": vals, "val_score": mean_std(
                [r["val_score"] for r in runs])[0]}
        out[lab] = {"methods": row, "paired_vs_first": _paired(runs_by_method, list(runs_by_method), metric, lab)
                    if len(runs_by_method) > 1 else {}}
    return out


def build_report(cells, chosen, methods, fractions, grid, ev: MaskEvaluator, metric: str) -> dict:
    """Per (label fraction, mask setting, method) at the chosen grid setting: mean, std, per-seed values, and the
    first method minus each other one paired by seed; plus every grid setting's cells."""

    def summarise(runs_by_method: dict[str, list[dict]]) -> dict:
        return _summarise(runs_by_method, ev, metric)

    report = {"cells": {}, "grid_cells": [], "runs": {}}
    for f, lf in enumerate(fractions):
        at_choice = {m: cells[m, f, chosen[m, f]] for m in methods}
        report["cells"][fraction_label(lf)] = summarise(at_choice)
        report["runs"][fraction_label(lf)] = at_choice
        if len(grid) > 1:
            for g in range(len(grid)):
                report["grid_cells"].append({
                    "label_fraction": lf, "setting": dict(grid[g]), "setting_label": setting_label(grid[g]),
                    "chosen_by": [m for m in methods if chosen[m, f] == g],
                    "cells": summarise({m: cells[m, f, g] for m in methods})})
    return report


def print_report(report, methods, fractions, grid, ev: MaskEvaluator, metric, dataset, seeds, chosen) -> None:
    ref = methods[0]
    for f, lf in enumerate(fractions):
        key = fraction_label(lf)
        if len(grid) > 1:
            labels = [setting_label(g) for g in grid]
            gc = {c["setting_label"]: c for c in report["grid_cells"] if c["label_fraction"] == lf}

            def grid_cell(row: str, m: str) -> str:
                v = gc[row]["cells"][ev.labels[0]]["methods"][m]["val_score"]
                return f"{v:.4f}" + (" *" if chosen[m, f] == labels.index(row) else "  ")
            print(f"\nlabel fraction {key}: mean validation score over {seeds} seeds per setting "
                  f"(* each method's choice)")
            print(format_table(labels, methods, grid_cell, first="setting"))
            for lab_g in labels:  # every setting's test metric under the masks, so no setting is hidden
                c = gc[lab_g]["cells"]
                print(f"  [{lab_g}] " + "; ".join(
                    f"{m}: " + " ".join(f"{c[x]['methods'][m]['mean']:.3f}" for x in ev.labels) for m in methods))
        cell = report["cells"][key]
        at = ", each method at its chosen setting" if len(grid) > 1 else ""
        print(f"\n{dataset}, label fraction {key}, {seeds} seeds{at}: test {metric} under missing modalities "
              f"(mean ± std over seeds; rates are fractions missing, realised fraction in brackets)")
        print(format_table([ev.row_label(x) for x in ev.labels], methods,
                           lambda r, c: "{mean:.4f} ± {std:.4f}".format(**cell[r.rsplit(' (', 1)[0]]["methods"][c]),
                           first="missing"))
        if len(methods) > 1:
            print(f"{ref} minus each method, paired by seed (mean ± std, {ref} ahead in k/n seeds):")
            print(format_table([ev.row_label(x) for x in ev.labels], [f"{ref} - {m}" for m in methods[1:]],
                               lambda r, c: _diff_cell(cell[r.rsplit(" (", 1)[0]]["paired_vs_first"].get(
                                   c.split(" - ", 1)[1])), first="missing"))


def write_csv(path: Path, report, methods, fractions, ev: MaskEvaluator, metric, seeds) -> None:
    with open(path, "w", newline="") as fh:
        w = csv_writer(fh)  # names become text a spreadsheet cannot run
        w.writerow(["label_fraction", "missing", "rate", "realised_missing", "method", "metric", "mean", "std",
                    "diff_vs_first_mean", "diff_vs_first_std", "first_ahead_seeds"]
                   + [f"seed{s}" for s in range(seeds)])
        rates = ev.rates()
        for lf in fractions:
            cell = report["cells"][fraction_label(lf)]
            for lab in ev.labels:
                for m in methods:
                    c = cell[lab]["methods"][m]
                    d = cell[lab]["paired_vs_first"].get(m)
                    w.writerow([fraction_label(lf), lab, "" if math.isnan(rates[lab]) else f"{rates[lab]:g}",
                                f"{ev.realised[lab]:.6f}", m, metric, f"{c['mean']:.6f}", f"{c['std']:.6f}",
                                f"{d['mean']:.6f}" if d else "", f"{d['std']:.6f}" if d else "",
                                f"{d['wins']}/{d['n']}" if d else ""]
                               + [f"{v:.6f}" for v in c["seeds"]])


def x_positions(labels: list[str], rates: dict) -> tuple[list[float], bool]:
    """The x of each mask setting in a plot: its rate η when the settings are of one mechanism and each has its
    own rate (`mcar:0,0.25,...`), else its position in the grid (exclusive, per-modality rates, settings of
    several mechanisms, or two settings with the same first rate such as mnar-class 0.8/0.1 and 0.8/0.3)."""
    vals = [rates.get(lab) for lab in labels]
    mechs = {lab.split(":", 1)[0] for lab in labels}
    numeric = (len(mechs) == 1 and all(v is not None and not math.isnan(v) for v in vals)
               and len(set(vals)) == len(vals))
    return ([float(v) for v in vals] if numeric else [float(i) for i in range(len(labels))]), numeric


def plot_sweep(path: Path, report, methods, fractions, ev: MaskEvaluator, metric, dataset, seeds) -> Path:
    """The curves: metric vs missing rate, one line per method (mean ± std over seeds as a band), one panel per
    label fraction. x is the nominal rate η where every setting has one (realised fraction in the tick labels),
    else the settings in order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no display, no Qt, no pyplot state
    from matplotlib.figure import Figure
    rates = ev.rates()
    xs, numeric = x_positions(ev.labels, rates)
    ticks = ([f"{rates[lab]:g}\n({ev.realised[lab]:.0%})" for lab in ev.labels] if numeric
             else [f"{lab}\n({ev.realised[lab]:.0%})" for lab in ev.labels])
    order = sorted(range(len(xs)), key=lambda i: xs[i])  # a line runs left to right whatever the grid's order
    mechs = sorted({lab.split(":", 1)[0] for lab in ev.labels})
    n = len(fractions)
    fig = Figure(figsize=(max(4.2 * n, 5.5), 4.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False, sharey=True)
    for f, lf in enumerate(fractions):
        ax = axes[0][f]
        cell = report["cells"][fraction_label(lf)]
        for m in methods:
            labs = [ev.labels[i] for i in order]
            x = [xs[i] for i in order]
            mean = [cell[lab]["methods"][m]["mean"] for lab in labs]
            sd = [cell[lab]["methods"][m]["std"] for lab in labs]
            line, = ax.plot(x, mean, marker="o", label=m)
            ax.fill_between(x, [a - b for a, b in zip(mean, sd)], [a + b for a, b in zip(mean, sd)],
                            color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_title(f"label fraction {fraction_label(lf)}")
        ax.set_xticks(xs)
        ax.set_xticklabels(ticks, fontsize=8, rotation=0 if numeric else 30)
        ax.set_xlabel(f"{'/'.join(mechs)} rate η (fraction missing; realised)" if numeric
                      else "mask setting (realised fraction missing)")
        ax.grid(alpha=0.3)
        if f == 0:
            ax.set_ylabel(f"test {metric}")
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{dataset}: {metric} under missing modalities, mean ± std over {seeds} seed(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# --- the train/test mismatch matrix -------------------------------------------------------------------------

MATRIX_CSV_HEADER = ["label_fraction", "train_missing", "train_rate", "train_realised_missing", "missing", "rate",
                     "realised_missing", "method", "metric", "mean", "std", "diff_vs_first_mean",
                     "diff_vs_first_std", "first_ahead_seeds", "diagonal"]


def _ordered_settings(labels: list[str]) -> list[str]:
    """Mask settings in the order of their rate where they are of one mechanism with distinct rates (the
    training settings added to a test grid fall in place), else as given."""
    rates = [parse_missing(lab)[0].rate for lab in labels]
    one_mech = len({lab.split(":", 1)[0] for lab in labels}) == 1
    if one_mech and not any(math.isnan(r) for r in rates) and len(set(rates)) == len(rates):
        return [lab for _r, lab in sorted(zip(rates, labels))]
    return list(labels)


def build_matrix(cells, methods, fractions, train: list[str], ev: MaskEvaluator, metric: str) -> dict:
    """Per label fraction and training setting, the summary of every test setting (`_summarise`: each method's
    mean, std, per-seed values, the first method minus each other one paired by seed), the runs, and the
    diagonal (the cells tested under the setting they were trained under)."""
    out: dict = {"cells": {}, "runs": {}, "diagonal": [[lab, lab] for lab in train if lab in ev.labels]}
    for f, lf in enumerate(fractions):
        key = fraction_label(lf)
        out["cells"][key], out["runs"][key] = {}, {}
        for t, lab in enumerate(train):
            by_method = {m: cells[m, f, 0, t] for m in methods}
            out["cells"][key][lab] = _summarise(by_method, ev, metric)
            out["runs"][key][lab] = by_method
    return out


def print_matrix(matrix, methods, fractions, train: list[str], train_realised: dict, ev: MaskEvaluator, metric,
                 dataset, seeds) -> None:
    """One table per (label fraction, method): η_train rows × η_test columns, mean ± std over seeds, the diagonal
    in [brackets]; then the first method minus each other one per cell, paired by seed."""
    rows = {f"train {lab} ({train_realised.get(lab, float('nan')):.0%})": lab for lab in train}

    def table(text_of) -> str:  # every cell the same width, the diagonal's in [brackets]
        texts = {(tr, te): text_of(tr, te) for tr in train for te in ev.labels}
        width = max(len(t) for t in texts.values()) + 2
        cols = {f"{te} ({ev.realised[te]:.0%})".rjust(width): te for te in ev.labels}
        return format_table(list(rows), list(cols), lambda r, c: (
            f"[{texts[rows[r], cols[c]]}]" if rows[r] == cols[c] else f"{texts[rows[r], cols[c]]} "),
            first="η_train \\ η_test")
    for lf in fractions:
        key = fraction_label(lf)
        cells = matrix["cells"][key]
        for m in methods:
            print(f"\n{dataset}, label fraction {key}, {m}: test {metric}, trained under η_train (rows) and tested "
                  f"under η_test (columns), mean ± std over {seeds} seed(s); [brackets]: the diagonal, tested as "
                  f"trained; realised fraction missing in parentheses")
            print(table(lambda tr, te, m=m: "{mean:.4f} ± {std:.4f}".format(**cells[tr][te]["methods"][m])))
        for other in methods[1:]:
            print(f"\n{dataset}, label fraction {key}: {methods[0]} minus {other} per cell, paired by seed (mean ± "
                  f"std, {methods[0]} ahead in k/n seeds; [brackets]: the diagonal)")
            print(table(lambda tr, te, o=other: _diff_cell(cells[tr][te]["paired_vs_first"].get(o))))


def write_matrix_csv(path: Path, matrix, methods, fractions, train: list[str], train_realised: dict,
                     ev: MaskEvaluator, metric, seeds) -> None:
    """sweep.csv of a mismatch sweep: the columns of the plain one plus the training setting (its rate and
    realised fraction) and a diagonal flag; one row per (label fraction, η_train, η_test, method)."""
    with open(path, "w", newline="") as fh:
        w = csv_writer(fh)
        w.writerow(MATRIX_CSV_HEADER + [f"seed{s}" for s in range(seeds)])
        rates = ev.rates()
        for lf in fractions:
            key = fraction_label(lf)
            for tl in train:
                t_rate = parse_missing(tl)[0].rate
                for lab in ev.labels:
                    cell = matrix["cells"][key][tl][lab]
                    for m in methods:
                        c = cell["methods"][m]
                        d = cell["paired_vs_first"].get(m)
                        w.writerow([key, tl, "" if math.isnan(t_rate) else f"{t_rate:g}",
                                    f"{train_realised.get(tl, float('nan')):.6f}", lab,
                                    "" if math.isnan(rates[lab]) else f"{rates[lab]:g}", f"{ev.realised[lab]:.6f}",
                                    m, metric, f"{c['mean']:.6f}", f"{c['std']:.6f}",
                                    f"{d['mean']:.6f}" if d else "", f"{d['std']:.6f}" if d else "",
                                    f"{d['wins']}/{d['n']}" if d else "", "1" if tl == lab else "0"]
                                   + [f"{v:.6f}" for v in c["seeds"]])


def plot_matrix(path: Path, matrix, methods, fractions, train: list[str], train_realised: dict, ev: MaskEvaluator,
                metric, dataset, seeds) -> Path:
    """The matrices as heat maps: one panel per (label fraction, method), η_train rows × η_test columns, the
    values written in the cells and the diagonal outlined; one colour scale for every panel (bright = better,
    also for an error such as MAE)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from .metrics import HIGHER_IS_BETTER
    import numpy as np
    higher = HIGHER_IS_BETTER.get(metric, True)
    grids = {(lf, m): np.array([[matrix["cells"][fraction_label(lf)][tl][te]["methods"][m]["mean"]
                                 for te in ev.labels] for tl in train], dtype=float)
             for lf in fractions for m in methods}
    allv = np.concatenate([g.ravel() for g in grids.values()])
    finite = allv[np.isfinite(allv)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    nr, nc = len(fractions), len(methods)
    fig = Figure(figsize=(max(4.6 * nc, 5.5), 1.0 + (1.3 + 0.42 * len(train)) * nr), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nr, nc, squeeze=False)
    image = None
    for i, lf in enumerate(fractions):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            g = grids[lf, m]
            image = ax.imshow(g, origin="lower", cmap="viridis" if higher else "viridis_r", vmin=lo, vmax=hi,
                              aspect="auto")
            for r in range(g.shape[0]):
                for c in range(g.shape[1]):
                    if np.isfinite(g[r, c]):
                        frac = (g[r, c] - lo) / (hi - lo)
                        dark = frac < 0.6 if higher else frac > 0.4
                        ax.text(c, r, f"{g[r, c]:.3f}", ha="center", va="center", fontsize=7,
                                color="white" if dark else "black")
                    if train[r] == ev.labels[c]:
                        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#D81B60", lw=2))
            ax.set_xticks(range(len(ev.labels)))
            ax.set_xticklabels([f"{lab}\n({ev.realised[lab]:.0%})" for lab in ev.labels], fontsize=7)
            ax.set_yticks(range(len(train)))
            ax.set_yticklabels([f"{lab} ({train_realised.get(lab, float('nan')):.0%})" if j == 0 else ""
                                for lab in train], fontsize=7)
            ax.set_title(f"{m}, label fraction {fraction_label(lf)}", fontsize=9)
            if i == nr - 1:
                ax.set_xlabel("η_test (realised fraction missing)", fontsize=8)
            if j == 0:
                ax.set_ylabel("η_train (realised)", fontsize=8)
    if image is not None:
        bar = fig.colorbar(image, ax=[a for row in axes for a in row], shrink=0.9)
        bar.set_label(f"test {metric}" + ("" if higher else " (lower is better)"), fontsize=8)
    fig.suptitle(f"{dataset}: train/test missingness, {metric} (mean over {seeds} seed(s)); outlined: tested as "
                 f"trained", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


# --- the command line ---------------------------------------------------------------------------------------


MISSING_HELP = ("missing modalities: MECHANISM:RATES, the rate being the fraction of entries MISSING (0.7 = 70 %% "
                "missing); a comma makes a grid, a slash gives per-modality rates: mcar:0.5, mcar:0,0.25,0.5,0.75, "
                "mcar:0.2/0.7, mcar:audio=0.7, mnar-class:0.8[/0.1][@3+5], mnar-value:0.3, exclusive, subsets, "
                "subset:audio (repeatable). A sample never loses all its modalities: one is restored, and the "
                "realised fraction is reported")


def add_missing_args(p: argparse.ArgumentParser, with_file: bool = False) -> None:
    p.add_argument("--missing", action="append", default=[], metavar="SPEC", help=MISSING_HELP)
    p.add_argument("--mask-seed", type=int, default=0, help="seed of the missing-modality masks (default 0)")
    if with_file:
        p.add_argument("--masks", metavar="FILE.npz",
                       help="evaluate under the masks saved by an earlier eval/compare/sweep (masks.npz)")


def add_ray_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the trainings as Ray tasks, --jobs at a time (optional extra: pip install "
                        "'robult-studio[ray]'); no ADDRESS starts a local Ray instance; on a cluster --out must be "
                        "on storage every node shares")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `robult sweep` on the CLI's subparsers."""
    s = sub.add_parser("sweep", help="label fraction × missing rate: every method on the same labels and masks",
                       description="Trains once per (method, label fraction, seed) on identical labeled indices "
                                   "and evaluates each model under every mask of the --missing grid (rates are "
                                   "fractions MISSING). Writes sweep.csv, sweep.json, sweep.png and masks.npz.")
    s.add_argument("--methods", default="robult,supervised")
    s.add_argument("--label-fractions", metavar="F1,F2,...",
                   help="labeled fractions of the training split, e.g. 0.01,0.05,0.2,1 (default: --label-fraction)")
    s.add_argument("--seeds", type=int, default=3)
    s.add_argument("--metric", help="metric of the tables and the plot (default: the task's primary metric)")
    s.add_argument("--out", help="folder for sweep.csv, sweep.json, sweep.png, masks.npz and the runs")
    s.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                   help="as in compare: train each combination (repeatable) and report each method at its best "
                        "validation setting per label fraction, every setting listed, e.g. --grid loss.tau=0.05,0.1")
    s.add_argument("--train-missing", action="append", default=[], metavar="SPEC",
                   help="train/test mismatch: train every method once per setting (as data.train_missing), e.g. "
                        "mcar:0,0.3,0.6 (the grammar of --missing; rates are fractions missing; mcar:0 keeps the "
                        "data's own mask only), and report each method's matrix η_train × η_test, the diagonal "
                        "marked; the training settings join the test grid (repeatable)")
    s.add_argument("--jobs", type=int, default=1, help="trainings at once in separate processes (default 1)")
    s.add_argument("--resume", action="store_true",
                   help="keep the runs of --out that finished with the same configuration (their sweep_run.json) "
                        "and train only the rest, e.g. after an interruption")
    add_ray_arg(s)
    add_missing_args(s)
    add_run_args(s)
    s.set_defaults(func=cmd_sweep)
    return s
