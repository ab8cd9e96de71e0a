"""`robult tune`: equal-budget hyper-parameter search, then the paired comparison of the chosen configs.

    robult tune --dataset mfeat --methods robult,supervised --trials 20 --seeds 5 --label-fraction 0.05 \
        --out runs/tune

Every method gets the same budget: `--trials` finished trials (completed or pruned) of Optuna's TPE sampler over
the method's own search space (`MethodSpec.search_space` in robult_engine/methods.py), on the same data, labels
and tuning seeds. Selection uses the validation split only: a trial trains on the tuning seed(s) (`--tune-seeds`,
default seed 0) with a dataset that holds no test split at all, and its value is the run's best validation score
(`Finished.best_score`: the mean over modality subsets of the primary metric, signed so that higher is better;
MAE counts negatively). A run whose loss diverges scores -inf. Each method's best trial is then trained over
`--seeds` (seeds 0..N-1, data seed = run seed) and tested once, exactly as `robult compare` does (its runs, table,
paired differences and compare.json are those of `cmd_compare`, under OUT/final); tune.json and tune.csv hold
each method's study summary and the final test results.

The studies live in an Optuna storage: `sqlite:///OUT/study.db` by default, or `--storage URL` (any database
Optuna's RDB storage opens, e.g. postgresql://user@host/db) shared by workers on several machines, which then
join the same studies (each machine runs the same command with the same --storage; trials are claimed through
the database, and a worker whose heartbeat stops has its trial failed and trained again). One study per method,
named `<dataset>-lf<fraction>-<method>-<hash>`: the hash covers the base config (all but the searched fields, the
run seed, the device and the fields only other methods use), the method's search space and the tuning seeds, so a
changed config starts a new study instead of joining an old one. A stopped command loses no finished trial: the same command continues the studies
(the trials a killed process left running are marked failed and trained again), and the budget counts finished
trials only, so every method ends with exactly --trials of them, also with `--jobs N` worker processes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path

from .cli_common import config_from_args, parse_methods, set_threads
from .compare import cmd_compare, read_tune_choice  # read_tune_choice: importable from here as before
from .config import MAX_SEED, ConfigError, RunConfig
from .csvsafe import csv_writer
from .events import EpochEnded, Failed
from .methods import METHOD_SPECS, SEARCH_KINDS
from .runlock import RunLock
from .stats import format_table
from .sweep import fraction_label
from .workers import RunsTerminated, raise_terminated, report_stopped, sigterm_raises, worker_pool

STUDY_DB = "study.db"  # the default storage, in --out
FINAL_DIR = "final"  # the final compare's runs, compare.json and compare.csv, in --out
HEARTBEAT_S = 30  # a shared storage's heartbeat: a trial not heard of for GRACE_S is failed and redone
GRACE_S = 120
POLL_S = 2.0  # a worker with nothing to claim (the rest of the budget is training elsewhere) looks again after
MEDIAN_STARTUP, MEDIAN_WARMUP = 5, 2  # --pruner median: trials before any pruning, epochs before a trial is judged


class SurplusTrial(Exception):
    """A trial claimed after the budget was already spoken for (by trials running in other workers): it ends at
    once as FAIL, so the finished trials never exceed --trials."""


class TrialRunFailed(Exception):
    """A trial's training failed for a reason other than divergence (data, configuration, memory): the tuning stops
    with its message."""


def import_optuna():
    """Optuna, imported on first use (the engine works without it); its own log lines are silenced (the command
    prints one progress line per trial)."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("robult tune needs Optuna, which is not installed: pip install 'robult-studio[tune]' "
                          "(or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


# --- search spaces ------------------------------------------------------------------------------------------


# fields a search space may not name: the data, the labels and the seeds are the same for every method
_FIXED_FIELDS = ("method", "seed", "data.")


def check_search_space(method: str, space=None, base=None) -> tuple:
    """A method's search space (default: its MethodSpec.search_space), checked: every entry is
    (config_field, kind, low, high, log) naming a config field outside data/seeds, with sane bounds that the
    config accepts (checked on `base`, default the default config). Returns the space as a tuple of tuples;
    anything wrong is a ConfigError naming the method and the entry."""
    spec = METHOD_SPECS.get(method)
    if space is None:
        space = spec.search_space if spec is not None else ()
    base = (base or RunConfig()).replace(method=method) if method in METHOD_SPECS else (base or RunConfig())

    def bad(what: str) -> ConfigError:
        return ConfigError(f"method {method}: search space: {what}")

    if not isinstance(space, (tuple, list)) or not space:
        raise bad("empty; give the method a search_space in robult_engine/methods.py (e.g. COMMON_SPACE)")
    out, seen = [], set()
    for entry in space:
        if not isinstance(entry, (tuple, list)) or len(entry) != 5:
            raise bad(f"{entry!r}: expected (config_field, kind, low, high, log)")
        name, kind, low, high, log = entry
        if not isinstance(name, str) or name in seen:
            raise bad(f"{name!r}: give each config field once, by name")
        seen.add(name)
        if name in _FIXED_FIELDS or name.startswith(_FIXED_FIELDS[2]):
            raise bad(f"{name}: the method, the data, the labels and the seeds are the same for every method; "
                      f"they are not searched")
        section, _, field = name.rpartition(".")
        try:
            current = getattr(getattr(base, section), field) if section else getattr(base, field)
            base.replace(**{name: current})
        except (AttributeError, ConfigError):
            raise bad(f"{name}: unknown config field") from None
        if kind not in SEARCH_KINDS:
            raise bad(f"{name}: kind {kind!r} is not one of {', '.join(SEARCH_KINDS)}")
        if kind == "categorical":
            ok = (isinstance(low, (tuple, list)) and len(low) >= 1 and high is None and log is False
                  and all(isinstance(c, (str, int, float, bool)) or c is None for c in low)
                  and len({repr(c) for c in low}) == len(low))
            if not ok:
                raise bad(f"{name}: a categorical entry is ({name!r}, 'categorical', (choice, ...), None, False) "
                          f"with distinct plain values")
            values = tuple(low)
        else:
            num = (int,) if kind == "int" else (int, float)
            if not all(isinstance(v, num) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
                raise bad(f"{name}: low and high must be finite {'integers' if kind == 'int' else 'numbers'}, "
                          f"got {low!r}, {high!r}")
            if not low < high:
                raise bad(f"{name}: low must be below high, got {low!r}, {high!r}")
            if not isinstance(log, bool) or (log and low <= 0):
                raise bad(f"{name}: log must be True or False, and a log scale needs low > 0 (got {low!r})")
            values = (low, high)
        for v in values:
            try:
                base.replace(**{name: v}).validate()
            except ConfigError as e:
                raise bad(f"{name}: the config refuses {v!r} ({e})") from None
        out.append((name, kind, tuple(low) if kind == "categorical" else low, high, log))
    return tuple(out)


# --- names, storage -----------------------------------------------------------------------------------------


def config_hash(base: RunConfig, method: str, space: tuple, tune_seeds: tuple[int, ...]) -> str:
    """8 hex digits of the config a study tunes: the base config without the searched fields, the run seed, the
    device and the fields only other methods use (their MethodSpec.options: a default changed for FixMatch does not
    restart Robult's study), plus the search space and the tuning seeds."""
    d = base.replace(method=method, seed=0).to_dict()
    d["train"].pop("device", None)
    own = set(METHOD_SPECS[method].options) if method in METHOD_SPECS else set()
    others = {f for m, spec in METHOD_SPECS.items() if m != method for f in spec.options} - own
    for name in [*(e[0] for e in space), *sorted(others)]:
        section, _, field = name.rpartition(".")
        (d.get(section, {}) if section else d).pop(field, None)
    payload = json.dumps({"config": d, "space": [list(e) for e in space], "tune_seeds": list(tune_seeds)},
                         sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def study_name(base: RunConfig, method: str, space: tuple, tune_seeds: tuple[int, ...]) -> str:
    """`<dataset>-lf<fraction>-<method>-<hash>`, e.g. mfeat-lf0.05-robult-1a2b3c4d (a dataset path gives its last
    component)."""
    from .data import BUILTIN
    ds = base.data.dataset
    short = ds if ds in BUILTIN else (Path(ds.rstrip("/\\")).name or ds)
    short = re.sub(r"[^A-Za-z0-9._-]+", "_", short)[:40]
    return (f"{short}-lf{fraction_label(base.data.label_fraction)}-{method}-"
            f"{config_hash(base, method, space, tune_seeds)}")


def redact(url: str) -> str:
    """A storage URL without its password (for messages and tune.json)."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def open_storage(url: str, shared: bool):
    """Optuna's RDB storage at `url`; a shared one (--storage) keeps heartbeats so that the trial of a worker that
    died is failed and trained again. One that cannot be opened is a ConfigError."""
    optuna = import_optuna()
    import warnings
    kwargs: dict = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # workers wait for each other's writes
    if shared:
        kwargs.update(heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeats are marked experimental
            return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as e:  # noqa: BLE001 - a missing driver, an unreachable host, a folder that does not exist
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConfigError(f"--storage {redact(url)}: cannot open the study storage ({type(e).__name__}: {first})"
                          ) from None


# --- one study ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StudyJob:
    """Everything a worker needs to tune one method (plain values: it travels to spawned processes)."""
    method: str
    base_json: str  # the base config (the method and seeds are set per trial)
    space: tuple
    tune_seeds: tuple[int, ...]
    n_trials: int
    storage_url: str
    shared: bool
    study: str
    pruner: str  # "none" or "median"
    sampler_seed: int
    quiet: bool = False
    threads: int = 0
    worker: int = 0
    t0: float = 0.0  # time.time() at the command's start
    done_before: int = 0  # trials this command finished on the methods before this one
    remaining_after: int = 0  # trials still to run on the methods after this one
    start_finished: int = 0  # finished trials of this study when the command reached it


_FINISHED = ("COMPLETE", "PRUNED")


def state_counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def trial_id(storage, study: str, number: int) -> int:
    """The storage's id of a study's trial (what the storage's state changes take)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), number)


def _n_finished(counts: dict[str, int]) -> int:
    return sum(counts.get(s, 0) for s in _FINISHED)


def considered_trials(study, n_trials: int) -> list:
    """The trials of the budget: the first `n_trials` finished (completed or pruned) trials by number (a study
    continued with a smaller --trials keeps its budget equal to the other methods')."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED]
    return sorted(done, key=lambda t: t.number)[:n_trials]


def best_trial(trials: list):
    """The completed trial of highest value (the lowest number on a tie), or None."""
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def make_pruner(name: str):
    optuna = import_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=MEDIAN_WARMUP)
    return optuna.pruners.NopPruner()


def _sampler_seed(job: StudyJob, n_existing: int) -> int:
    """TPE's seed: --sampler-seed, the method, the worker and the trials already stored (a continued study or a
    second worker does not draw the same start-up points again)."""
    text = f"{job.sampler_seed}-{job.method}-{job.worker}-{n_existing}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def suggest(trial, space: tuple) -> dict:
    """The trial's config changes: one value per entry of the space."""
    params = {}
    for name, kind, low, high, log in space:
        if kind == "float":
            params[name] = trial.suggest_float(name, low, high, log=log)
        elif kind == "int":
            params[name] = trial.suggest_int(name, low, high, log=log)
        else:
            params[name] = trial.suggest_categorical(name, list(low))
    return params


def default_trial(cfg: RunConfig, space: tuple) -> dict:
    """The config's own values of the space's entries (those inside the searched range): a new study tries them
    first, so that every method's tuning starts from its default and a tuned method is never behind its default
    on validation. Each method gets this one trial inside the same budget."""
    params = {}
    for name, kind, low, high, _log in space:
        obj = cfg
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if kind == "categorical":
            if obj in tuple(low):
                params[name] = obj
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and low <= obj <= high:
            params[name] = int(obj) if kind == "int" else float(obj)
    return params


def default_first_sampler(base, defaults: dict):
    """`base` (TPE), except that a study's first live trial (no other trial complete or running) takes the
    method's default values (`default_trial`). Decided when the trial starts rather than queued as a waiting
    trial: workers in several processes could otherwise both claim the one waiting trial."""
    optuna = import_optuna()
    from optuna.trial import TrialState

    class DefaultFirst(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._first: dict[int, bool] = {}  # trial id → takes the defaults (decided once per trial)

        def _is_first(self, study, trial) -> bool:
            if trial._trial_id not in self._first:
                others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                                  TrialState.PRUNED))
                self._first[trial._trial_id] = not any(t._trial_id != trial._trial_id for t in others)
            return self._first[trial._trial_id]

        def infer_relative_search_space(self, study, trial):
            return base.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return {} if self._is_first(study, trial) else base.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, distribution):
            if name in defaults and self._is_first(study, trial):
                return defaults[name]
            return base.sample_independent(study, trial, name, distribution)

        def before_trial(self, study, trial):
            base.before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            base.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            base.reseed_rng()

    return DefaultFirst()


def without_test(bundle):
    """The dataset of the trials: the same data with no test split (selection sees train and val only)."""
    from .data.base import DatasetBundle
    return DatasetBundle(bundle.info, {k: v for k, v in bundle.splits.items() if k != "test"})


def _fmt_s(s: float) -> str:
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _value_text(v: float | None) -> str:
    if v is None:
        return "n/a"
    return "-inf (diverged)" if v == -math.inf else f"{v:.4f}"


class Objective:
    """One trial: the config the sampler proposes, trained on every tuning seed without the test split; the value
    is the mean of the runs' best validation scores. With a pruner the best score so far is reported after each
    epoch (step = seed index × epochs + epoch) and a pruned trial stops its run through `should_stop`."""

    def __init__(self, job: StudyJob, study, storage, bundle) -> None:
        self.job, self.study, self.storage, self.bundle = job, study, storage, bundle
        self.base = RunConfig.from_json(job.base_json)
        self.current_trial_id: int | None = None

    def surplus(self, number: int) -> bool:
        counted = [t for t in self.study.get_trials(deepcopy=False)
                   if t.state.name in (*_FINISHED, "RUNNING") and t.number < number]
        return len(counted) >= self.job.n_trials

    def __call__(self, trial) -> float:
        from . import trainer as trainer_mod
        optuna = import_optuna()
        self.current_trial_id = trial_id(self.storage, self.job.study, trial.number)
        if self.surplus(trial.number):
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the budget of {self.job.n_trials} trials is taken")
        params = suggest(trial, self.job.space)
        cfg = self.base.replace(**params).replace(method=self.job.method)
        epochs = cfg.train.epochs
        stop = {"pruned": False, "epoch": -1}
        scores, epochs_run = [], []
        for i, seed in enumerate(self.job.tune_seeds):
            best = [-math.inf]

            def on_event(ev, i=i, best=best) -> None:
                if not isinstance(ev, EpochEnded) or stop["pruned"]:
                    return
                if ev.val_score == ev.val_score:  # a NaN score is no progress
                    best[0] = max(best[0], ev.val_score)
                if best[0] > -math.inf:
                    trial.report(best[0], i * epochs + ev.epoch)
                if self.job.pruner != "none" and trial.should_prune():
                    stop["pruned"], stop["epoch"] = True, ev.epoch

            run_cfg = cfg.replace(seed=seed, **{"data.seed": seed})
            # the user's own config (their flags and --config): the encoder code it names is theirs
            final = trainer_mod.Trainer(run_cfg, self.bundle, callbacks=[on_event], should_stop=lambda: stop["pruned"],
                                        trust_code=True).run()
            if isinstance(final, Failed):
                if final.kind == "nan":  # these settings diverge: the worst score, and the search moves on
                    trial.set_user_attr("diverged", final.message.splitlines()[0][:300])
                    trial.set_user_attr("val_scores", scores + [None])
                    return -math.inf
                raise TrialRunFailed(f"{self.job.method} trial {trial.number} (seed {seed}): {final.message}")
            epochs_run.append(final.epochs_run)
            trial.set_user_attr("epochs_run", epochs_run)
            if stop["pruned"]:
                trial.set_user_attr("pruned_at", {"seed": seed, "epoch": stop["epoch"] + 1})
                raise optuna.TrialPruned(f"seed {seed}, epoch {stop['epoch'] + 1}")
            score = final.best_score
            scores.append(score if score == score else -math.inf)
        trial.set_user_attr("val_scores", scores)
        return sum(scores) / len(scores)


def _progress_callback(job: StudyJob):
    def report(study, frozen) -> None:
        if job.quiet or frozen.user_attrs.get("surplus"):
            return
        counts = state_counts(study)
        k = _n_finished(counts)
        best = best_trial(considered_trials(study, job.n_trials))
        if frozen.state.name == "PRUNED":
            at = frozen.user_attrs.get("pruned_at", {})
            value = f"pruned at epoch {at.get('epoch', '?')}"
        elif frozen.state.name == "COMPLETE":
            value = f"val {_value_text(frozen.value)}"
        else:
            value = "failed"
        elapsed = time.time() - job.t0
        done_here = job.done_before + k - job.start_finished
        remaining = max(0, job.n_trials - k) + job.remaining_after
        eta = elapsed / done_here * remaining if done_here > 0 else float("nan")
        took = ((frozen.datetime_complete - frozen.datetime_start).total_seconds()
                if frozen.datetime_complete and frozen.datetime_start else 0.0)
        best_text = f"{_value_text(best.value)} (#{best.number})" if best is not None else "n/a"
        print(f"[tune] {job.method} trial {min(k, job.n_trials)}/{job.n_trials} (#{frozen.number}): {value}, "
              f"best {best_text}, {_fmt_s(took)}; elapsed {_fmt_s(elapsed)}, "
              f"ETA {_fmt_s(eta) if eta == eta else '?'}", file=sys.stderr, flush=True)
    return report


def optimize_study(job: StudyJob, bundle) -> None:
    """Run trials of one study until it has `n_trials` finished ones (bundle: the data without its test split).
    Several of these may run at once, in processes on one or several machines: a worker claims a trial only while
    finished plus running trials fall short of the budget, a trial claimed in a race ends at once (SurplusTrial),
    and while the rest of the budget trains elsewhere the worker waits (if one of those fails, it is redone)."""
    optuna = import_optuna()
    import warnings
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    storage = open_storage(job.storage_url, job.shared)
    n_existing = len(storage.get_all_trials(storage.get_study_id_from_name(job.study), deepcopy=False))
    defaults = default_trial(RunConfig.from_json(job.base_json).replace(method=job.method), job.space)
    sampler = default_first_sampler(optuna.samplers.TPESampler(seed=_sampler_seed(job, n_existing)), defaults)
    study = optuna.load_study(study_name=job.study, storage=storage, pruner=make_pruner(job.pruner),
                              sampler=sampler)
    objective = Objective(job, study, storage, bundle)
    callbacks = [MaxTrialsCallback(job.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                 _progress_callback(job)]
    try:
        while True:
            if job.shared:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    optuna.storages.fail_stale_trials(study)
            counts = state_counts(study)
            finished = _n_finished(counts)
            if finished >= job.n_trials:
                return
            if finished + counts.get("RUNNING", 0) >= job.n_trials:
                time.sleep(POLL_S)
                continue
            objective.current_trial_id = None
            study.optimize(objective, n_trials=1, catch=(SurplusTrial,), callbacks=callbacks)
    except BaseException:
        # stopped (Ctrl+C, SIGTERM) or failed in the middle of a trial: the trial is marked failed now, so that
        # no worker waits for it (a killed process's trial is failed by the next command, or by its heartbeat)
        tid = objective.current_trial_id
        if tid is not None:
            try:
                if storage.get_trial(tid).state == TrialState.RUNNING:
                    storage.set_trial_state_values(tid, state=TrialState.FAIL)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        raise


_WORKER_DATA = None  # a worker process's DatasetCache, made on its first job


def _tune_worker(job: StudyJob) -> int:
    """One `--jobs` worker process (spawned): load the data once, then claim trials of the study until its budget
    is reached. Ctrl+C belongs to the parent; SIGTERM (the parent's terminate, or its death) fails the running
    trial and ends the process quietly."""
    import signal

    import torch

    from .data.cache import DatasetCache
    global _WORKER_DATA
    if job.threads > 0:
        torch.set_num_threads(job.threads)
    if _WORKER_DATA is None:
        _WORKER_DATA = DatasetCache(max_items=2)
    bundle = without_test(_WORKER_DATA.get(RunConfig.from_json(job.base_json).data))
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        optimize_study(job, bundle)
    except (KeyboardInterrupt, RunsTerminated):
        os._exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return job.worker


@contextlib.contextmanager
def trial_runner(n_jobs: int, bundle):
    """A function that runs a study's trials to its budget: here (n_jobs 1, `bundle` the data without its test
    split), or in `n_jobs` spawned processes kept for every study of the command (each `optuna.load_study` on the
    same storage). While it is open SIGTERM raises RunsTerminated here; the running trials are marked failed and
    the workers terminated."""
    with sigterm_raises():
        if n_jobs <= 1:
            yield lambda job: optimize_study(job, bundle)
            return
        with worker_pool(n_jobs) as pool:
            def run(job: StudyJob) -> None:
                for _ in pool.imap_unordered(_tune_worker,
                                             [dataclasses.replace(job, worker=w) for w in range(n_jobs)]):
                    pass
            yield run


# --- the command --------------------------------------------------------------------------------------------


def parse_seeds(text: str) -> tuple[int, ...]:
    """`--tune-seeds 0,1`: distinct seeds (integers >= 0)."""
    out: list[int] = []
    for item in str(text).split(","):
        try:
            v = int(item)
        except ValueError:
            raise ConfigError(f"--tune-seeds {text}: {item.strip()!r} is not an integer") from None
        if not 0 <= v <= MAX_SEED or v in out:
            raise ConfigError(f"--tune-seeds {text}: give distinct seeds in 0..{MAX_SEED}")
        out.append(v)
    return tuple(out)


def _study_summary(study, n_trials: int, space: tuple) -> dict:
    trials = considered_trials(study, n_trials)
    best = best_trial(trials)

    def clean(v):
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
    return {
        "study": study.study_name, "trials": len(trials),
        "complete": sum(t.state.name == "COMPLETE" for t in trials),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "diverged": sum("diverged" in t.user_attrs for t in trials),
        "best_trial": best.number if best is not None else None,
        "best_value": clean(best.value) if best is not None else None,
        "best_params": dict(best.params) if best is not None else {},
        "space": [list(e) for e in space],
        "trial_list": [{"number": t.number, "state": t.state.name, "value": clean(t.value), "params": dict(t.params),
                        "val_scores": [clean(v) for v in t.user_attrs.get("val_scores", [])]} for t in trials],
    }


def _print_studies(studies: dict[str, dict], methods: list[str], n_trials: int, metric_desc: str) -> None:
    fields = []
    for m in methods:
        for name, *_ in studies[m]["space"]:
            if name not in fields:
                fields.append(name)
    rows = ["trials (pruned)", "best trial", "best val score"] + fields

    def cell(r: str, m: str) -> str:
        s = studies[m]
        if r == "trials (pruned)":
            return f"{s['trials']} ({s['pruned']})"
        if r == "best trial":
            return "—" if s["best_trial"] is None else f"#{s['best_trial']}"
        if r == "best val score":
            return _value_text(s["best_value"]) if s["best_value"] is not None else "-inf"
        v = s["best_params"].get(r)
        return "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    print(f"\nsearch: {n_trials} trials per method, each method's best validation score ({metric_desc}) and chosen "
          f"settings")
    print(format_table(rows, methods, cell, first="study"))


def cmd_tune(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    methods = parse_methods(args.methods)
    if args.trials < 1:
        raise ConfigError(f"--trials: must be at least 1, got {args.trials}")
    if args.seeds < 1:
        raise ConfigError(f"--seeds: must be at least 1, got {args.seeds}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {args.jobs}")
    tune_seeds = parse_seeds(args.tune_seeds)
    base = config_from_args(args, methods[0])
    spaces = {m: check_search_space(m, base=base) for m in methods}
    import_optuna()  # said before any data is loaded
    out = Path(args.out) if args.out else Path("runs") / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    shared = bool(args.storage)
    storage = open_storage(args.storage, True) if shared else None  # a shared storage is refused before --out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot make the folder ({e.strerror or e})") from None
    url = args.storage or f"sqlite:///{(out / STUDY_DB).resolve()}"
    storage = storage or open_storage(url, False)
    lock = RunLock(out).acquire()  # one command per --out (a second one would fail the first one's trials)
    try:
        return _tune(args, methods, base, spaces, tune_seeds, out, url, shared, storage)
    except TrialRunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, RunsTerminated) as e:
        return report_stopped(e, out, "the finished trials are stored; run the same command to continue")
    finally:
        lock.release()


def _tune(args, methods, base, spaces, tune_seeds, out: Path, url: str, shared: bool, storage) -> int:
    from .data import load_dataset
    from .metrics import primary_metric
    optuna = import_optuna()
    t0 = time.time()
    bundle = load_dataset(base.data)
    metric_desc = f"mean over subsets of {primary_metric(bundle.info.task)}"
    n = args.trials
    studies, stale_n = {}, {}
    for m in methods:
        name = study_name(base, m, spaces[m], tune_seeds)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ConfigError(f"--storage {redact(url)}: study {name} exists and is not maximised (not a study of "
                              f"robult tune)")
        if not shared:  # this command holds --out: whatever is still running was left by a stopped command
            stale = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
            for t in stale:
                storage.set_trial_state_values(trial_id(storage, name, t.number), state=optuna.trial.TrialState.FAIL)
            stale_n[m] = len(stale)
        study.set_user_attr("method", m)
        study.set_user_attr("config", json.loads(base.replace(method=m).to_json()))
        study.set_user_attr("space", [list(e) for e in spaces[m]])
        study.set_user_attr("tune_seeds", list(tune_seeds))
        studies[m] = study
    start = {m: _n_finished(state_counts(studies[m])) for m in methods}
    if not args.quiet:
        print(f"tuning {', '.join(methods)}: {n} trials each (TPE, sampler seed {args.sampler_seed}"
              f"{', median pruner' if args.pruner == 'median' else ''}), objective: the best validation score "
              f"({metric_desc}) on tuning seed(s) {', '.join(map(str, tune_seeds))}; storage {redact(url)}",
              file=sys.stderr, flush=True)
        for m in methods:
            how = f"continues with {min(start[m], n)}/{n} finished trials" if start[m] else "new"
            if stale_n.get(m):
                how += (f"; {stale_n[m]} trial(s) left running by a stopped command are marked failed and trained "
                        f"again")
            print(f"{m}: study {studies[m].study_name} ({how})", file=sys.stderr, flush=True)
    done_before = 0
    with trial_runner(args.jobs, without_test(bundle)) as run_trials:
        for i, m in enumerate(methods):
            job = StudyJob(method=m, base_json=base.to_json(), space=spaces[m], tune_seeds=tune_seeds, n_trials=n,
                           storage_url=url, shared=shared, study=studies[m].study_name, pruner=args.pruner,
                           sampler_seed=args.sampler_seed, quiet=args.quiet,
                           threads=args.threads or max(1, (os.cpu_count() or 1) // args.jobs), t0=t0,
                           done_before=done_before,
                           remaining_after=sum(max(0, n - start[x]) for x in methods[i + 1:]),
                           start_finished=start[m])
            run_trials(job)
            done_before += max(0, _n_finished(state_counts(studies[m])) - start[m])
    summaries = {m: _study_summary(studies[m], n, spaces[m]) for m in methods}
    _print_studies(summaries, methods, n, metric_desc)
    chosen = {m: summaries[m]["best_params"] for m in methods}
    for m in methods:
        if summaries[m]["best_trial"] is None:
            raise TrialRunFailed(f"{m}: none of its {n} trials completed (all pruned); nothing to choose")

    # the final comparison: each method's chosen config over --seeds, tested once (robult compare's machinery)
    final = None
    if not args.search_only:
        cargs = argparse.Namespace(**vars(args))
        cargs.methods = ",".join(methods)
        cargs.out = str(out / FINAL_DIR)
        cargs.grid, cargs.missing, cargs.mask_seed, cargs.ray, cargs.from_tune = [], [], 0, None, None
        cargs.method_overrides = chosen
        rc = cmd_compare(cargs)
        if rc != 0:
            return rc
        final = json.loads((out / FINAL_DIR / "compare.json").read_text())
    payload = {
        "dataset": bundle.info.name, "label_fraction": base.data.label_fraction,
        "metric": final["metric"] if final else args.metric or primary_metric(bundle.info.task),
        "methods": methods, "trials": n, "tune_seeds": list(tune_seeds), "seeds": args.seeds,
        "pruner": args.pruner, "sampler": {"name": "TPE", "seed": args.sampler_seed},
        "objective": f"best validation score ({metric_desc}, higher is better), mean over the tuning seeds",
        "storage": redact(url), "config": base.to_dict(), "studies": summaries, "chosen": chosen,
        "final": {"out": str(out / FINAL_DIR), "summary": final["summary"],
                  "paired_vs_first": final["paired_vs_first"], "runs": final["runs"]} if final else None,
        "elapsed_s": time.time() - t0,
    }
    (out / "tune.json").write_text(json.dumps(payload, indent=2))
    _write_csv(out / "tune.csv", payload, methods)
    print(f"\nwrote {out / 'tune.json'} and {out / 'tune.csv'} ({_fmt_s(time.time() - t0)})")
    return 0


def _write_csv(path: Path, payload: dict, methods: list[str]) -> None:
    metric, final = payload["metric"], payload["final"]
    seeds = payload["seeds"] if final else 0
    fields = []
    for m in methods:
        for name, *_ in payload["studies"][m]["space"]:
            if name not in fields:
                fields.append(name)
    with open(path, "w", newline="") as f:
        w = csv_writer(f)
        w.writerow(["method", "study", "trials", "pruned", "best_trial", "best_val"] + fields
                   + [f"test_{metric}_mean", f"test_{metric}_std"] + [f"seed{s}" for s in range(seeds)])
        for m in methods:
            s = payload["studies"][m]
            mean = final["summary"]["mean"][m] if final else {"mean": math.nan, "std": math.nan}
            runs = final["runs"][m] if final else []
            w.writerow([m, s["study"], s["trials"], s["pruned"], s["best_trial"],
                        "" if s["best_value"] is None else f"{s['best_value']:.6f}"]
                       + ["" if s["best_params"].get(k) is None else s["best_params"][k] for k in fields]
                       + ([f"{mean['mean']:.6f}", f"{mean['std']:.6f}"] if final else ["", ""])
                       + [f"{r['test']['mean'].get(metric, float('nan')):.6f}" for r in runs])


def add_parser(sub, add_run_args) -> argparse.ArgumentParser:
    """Register `robult tune` on the CLI's subparsers (add_run_args: the CLI's shared run flags)."""
    t = sub.add_parser(
        "tune", help="equal-budget tuning: the same number of Optuna trials per method, then a paired comparison",
        description="Tunes each method with the same number of Optuna TPE trials over its search space "
                    "(MethodSpec.search_space), choosing on the validation split only (the trials never see the "
                    "test split), then trains each method's chosen config over --seeds and tests it once, as "
                    "robult compare. The studies live in OUT/study.db (or --storage) and continue when the "
                    "command is run again. Needs Optuna: pip install 'robult-studio[tune]'.")
    t.add_argument("--methods", default="robult,supervised")
    t.add_argument("--trials", type=int, default=20, help="finished trials per method, the same for every method "
                                                          "(default 20)")
    t.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 of the final comparison (default 5)")
    t.add_argument("--tune-seeds", default="0", metavar="S1,S2",
                   help="seeds each trial trains on, its value the mean of their best validation scores "
                        "(default 0)")
    t.add_argument("--pruner", choices=("none", "median"), default="none",
                   help=f"median: stop a trial whose best validation score after an epoch is below the median of "
                        f"the earlier trials at that epoch (after {MEDIAN_STARTUP} trials and {MEDIAN_WARMUP} "
                        f"epochs); a pruned trial counts in the budget")
    t.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    t.add_argument("--storage", metavar="URL",
                   help="Optuna storage of the studies (default sqlite:///OUT/study.db); a database URL shared by "
                        "workers on several machines (e.g. postgresql://user@host/db) makes them join the same "
                        "studies")
    t.add_argument("--jobs", type=int, default=1,
                   help="trials trained at once in separate processes on this machine (default 1); the final "
                        "runs too")
    t.add_argument("--metric", help="metric of the final table (default: the task's primary metric)")
    t.add_argument("--search-only", action="store_true",
                   help="stop after the search: write tune.json and tune.csv without the final runs (e.g. on the "
                        "extra machines of a shared --storage; one machine runs the command without it)")
    t.add_argument("--out", help="folder for study.db, tune.json, tune.csv and the final runs (final/)")
    add_run_args(t)
    t.set_defaults(func=cmd_tune)
    return t


__all__ = ["StudyJob", "add_parser", "check_search_space", "cmd_tune", "config_hash", "read_tune_choice",
           "study_name"]
