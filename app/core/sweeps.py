"""Sweeps in the session, Qt-free: what the Sweeps tab runs, stores and draws.

A sweep (robult_engine/sweep.py) trains every method at every label fraction and seed on identical labeled
indices, and evaluates each trained model under every mask setting of a missing-rate grid drawn once on the
test split. The session keeps (migration m006_sweeps):

- `sweeps`: the configuration (base run config, methods, label fractions, mask settings, seeds, mask seed),
  the realised missing fraction of each setting, the run folder, status and progress;
- `sweep_cells`: one metric value per (label fraction, mask setting, method, seed), written as each run
  finishes, so a sweep the app left (closed, killed) keeps every finished run and can be resumed from its
  folder (each run's `sweep_run.json`).

`SweepResult` turns the cells into what the view draws: the label fraction × missing rate grid of one method
(mean and std over seeds), the curve of one label fraction, and the rows of a CSV with the same columns as the
engine's `sweep.csv`. Means and standard deviations (n − 1) are the engine's, so the app's numbers equal the
CLI's for the same seeds. A `sweep.json` written by `robult sweep` is read into the same tables
(`import_sweep_json`).

A train/test missingness mismatch sweep (`robult sweep --train-missing`, or the dialog's train missingness)
trains every method once per training setting η_train. Its training settings are kept in the sweep's `config`
(`"mismatch"`: the settings, their rates and realised fractions on the training split), and each cell's mask
setting is stored as `TRAIN<tab>TEST` (`mismatch_label`), so the schema stays that of m006. `SweepResult.matrix`
gives η_train × η_test per method, `difference` method A − B per cell; the label fraction × η grids and the
curves show the first training setting (the engine's `cells` do the same).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from robult_engine.sweep import MATRIX_CSV_HEADER, fraction_label, mean_std

from .sessions import SessionStore

SWEEP_RUNNING, SWEEP_DONE, SWEEP_CANCELLED = "running", "finished", "cancelled"
SWEEP_FAILED, SWEEP_INTERRUPTED, SWEEP_IMPORTED = "failed", "interrupted", "imported"
SWEEP_RESUMABLE = (SWEEP_CANCELLED, SWEEP_FAILED, SWEEP_INTERRUPTED)

CSV_HEADER = ["label_fraction", "missing", "rate", "realised_missing", "method", "metric", "mean", "std",
              "diff_vs_first_mean", "diff_vs_first_std", "first_ahead_seeds"]


MISMATCH_SEP = "\t"  # no mask setting's label holds a tab


def mismatch_label(train: str, test: str) -> str:
    """The stored mask-setting text of a mismatch cell: trained under `train`, tested under `test`."""
    return f"{train}{MISMATCH_SEP}{test}"


class SweepFileError(ValueError):
    """A sweep file that cannot be read; the message names the file and the problem."""


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _lf_key(lf: float) -> float:
    return round(float(lf), 10)


@dataclass
class SweepResult:
    """One stored sweep and its cells."""
    id: int
    name: str
    status: str
    source: str
    dataset: str
    metric: str
    methods: list[str]
    label_fractions: list[float]
    missing: list[str]  # mask setting labels, in grid order
    seeds: int
    mask_seed: int
    rates: dict[str, float]
    realised: dict[str, float]
    runs_total: int
    runs_done: int
    out_dir: str = ""
    config: dict = field(default_factory=dict)
    created: str = ""
    elapsed_s: float = 0.0
    error: str = ""
    # (label fraction, mask setting, method) -> {seed: value}; the setting is `mismatch_label(train, test)` in a
    # mismatch sweep
    cells: dict[tuple[float, str, str], dict[int, float]] = field(default_factory=dict)
    # a mismatch sweep's training settings (η_train, in order), their rates and realised fractions; [] otherwise
    train_missing: list[str] = field(default_factory=list)
    train_rates: dict[str, float] = field(default_factory=dict)
    train_realised: dict[str, float] = field(default_factory=dict)

    @property
    def mismatch(self) -> bool:
        return bool(self.train_missing)

    @property
    def higher_is_better(self) -> bool:
        from robult_engine.metrics import HIGHER_IS_BETTER
        return HIGHER_IS_BETTER.get(self.metric, True)

    def values(self, lf: float, label: str, method: str, train: str | None = None) -> dict[int, float]:
        """{seed: value} under mask setting `label`; in a mismatch sweep, of the runs trained under `train`
        (default: the first training setting)."""
        if self.train_missing:
            label = mismatch_label(train if train is not None else self.train_missing[0], label)
        return self.cells.get((_lf_key(lf), label, method), {})

    def cell(self, lf: float, label: str, method: str, train: str | None = None) -> tuple[float, float, int]:
        """(mean, std over seeds, number of seeds) — NaN where no run has finished."""
        vals = self.values(lf, label, method, train)
        m, s = mean_std([vals[k] for k in sorted(vals)])
        return m, s, len(vals)

    def matrix(self, lf: float, method: str) -> tuple[list[list[float]], list[list[float]]]:
        """A mismatch sweep's matrix of one method: mean and std over seeds, rows the training settings
        (η_train), columns the test settings (η_test); NaN where no run has finished."""
        means, stds = [], []
        for tr in self.train_missing:
            row = [self.cell(lf, te, method, tr) for te in self.missing]
            means.append([c[0] for c in row])
            stds.append([c[1] for c in row])
        return means, stds

    def difference(self, lf: float, a: str, b: str) -> list[list[float]]:
        """Method `a` minus method `b` per cell of the matrix (difference of the means over seeds)."""
        ma, mb = self.matrix(lf, a)[0], self.matrix(lf, b)[0]
        return [[x - y for x, y in zip(ra, rb)] for ra, rb in zip(ma, mb)]

    def diagonal(self) -> list[tuple[int, int]]:
        """(row, column) of the matrix cells tested under the setting they were trained under."""
        return [(i, self.missing.index(tr)) for i, tr in enumerate(self.train_missing) if tr in self.missing]

    def grid(self, method: str) -> tuple[list[list[float]], list[list[float]]]:
        """Mean and std of one method: rows are label fractions, columns mask settings."""
        means, stds = [], []
        for lf in self.label_fractions:
            row = [self.cell(lf, lab, method) for lab in self.missing]
            means.append([c[0] for c in row])
            stds.append([c[1] for c in row])
        return means, stds

    def curve(self, lf: float, method: str) -> tuple[list[float], list[float]]:
        row = [self.cell(lf, lab, method) for lab in self.missing]
        return [c[0] for c in row], [c[1] for c in row]

    def paired(self, lf: float, label: str, method: str, train: str | None = None) -> dict | None:
        """The first method minus `method`, paired by seed: mean, std, seeds where the first is ahead, n."""
        ref, other = self.values(lf, label, self.methods[0], train), self.values(lf, label, method, train)
        diffs = [ref[s] - other[s] for s in sorted(ref) if s in other
                 and not (math.isnan(ref[s]) or math.isnan(other[s]))]
        if method == self.methods[0] or not diffs:
            return None
        m, s = mean_std(diffs)
        wins = sum((d > 0) if self.higher_is_better else (d < 0) for d in diffs)
        return {"mean": m, "std": s, "wins": wins, "n": len(diffs)}

    def x_values(self) -> tuple[list[float], bool]:
        """The x of each mask setting, as in the engine's sweep.png (`robult_engine.sweep.x_positions`): its
        rate η when the settings are of one mechanism with distinct rates, else its position."""
        from robult_engine.sweep import x_positions
        return x_positions(self.missing, self.rates)

    def csv_rows(self) -> list[list]:
        """The rows of the engine's sweep.csv (same columns, a value per seed after them)."""
        if self.train_missing:
            return self._matrix_csv_rows()
        rows = []
        for lf in self.label_fractions:
            for lab in self.missing:
                rate = self.rates.get(lab, float("nan"))
                for m in self.methods:
                    mean, sd, _n = self.cell(lf, lab, m)
                    d = self.paired(lf, lab, m)
                    vals = self.values(lf, lab, m)
                    rows.append([fraction_label(lf), lab, "" if rate is None or math.isnan(rate) else f"{rate:g}",
                                 f"{self.realised.get(lab, float('nan')):.6f}", m, self.metric, f"{mean:.6f}",
                                 f"{sd:.6f}", f"{d['mean']:.6f}" if d else "", f"{d['std']:.6f}" if d else "",
                                 f"{d['wins']}/{d['n']}" if d else ""]
                                + [f"{vals[s]:.6f}" if s in vals else "" for s in range(self.seeds)])
        return rows

    def _matrix_csv_rows(self) -> list[list]:
        rows = []
        for lf in self.label_fractions:
            for tr in self.train_missing:
                t_rate = self.train_rates.get(tr, float("nan"))
                for lab in self.missing:
                    rate = self.rates.get(lab, float("nan"))
                    for m in self.methods:
                        mean, sd, _n = self.cell(lf, lab, m, tr)
                        d = self.paired(lf, lab, m, tr)
                        vals = self.values(lf, lab, m, tr)
                        rows.append([fraction_label(lf), tr, "" if t_rate is None or math.isnan(t_rate)
                                     else f"{t_rate:g}", f"{self.train_realised.get(tr, float('nan')):.6f}", lab,
                                     "" if rate is None or math.isnan(rate) else f"{rate:g}",
                                     f"{self.realised.get(lab, float('nan')):.6f}", m, self.metric, f"{mean:.6f}",
                                     f"{sd:.6f}", f"{d['mean']:.6f}" if d else "", f"{d['std']:.6f}" if d else "",
                                     f"{d['wins']}/{d['n']}" if d else "", "1" if tr == lab else "0"]
                                    + [f"{vals[s]:.6f}" if s in vals else "" for s in range(self.seeds)])
        return rows

    def csv_header(self) -> list[str]:
        head = MATRIX_CSV_HEADER if self.train_missing else CSV_HEADER
        return head + [f"seed{s}" for s in range(self.seeds)]

    def summary(self) -> str:
        lfs = ", ".join(fraction_label(v) for v in self.label_fractions)
        trained = (f" × trained under {len(self.train_missing)} setting(s) ({', '.join(self.train_missing)}; "
                   f"mcar:0 keeps the data's own missingness only)" if self.train_missing else "")
        return (f"{self.dataset}: {', '.join(self.methods)} × label fractions {lfs}{trained} × {len(self.missing)} "
                f"mask settings ({', '.join(self.missing)}; rates are fractions missing) × {self.seeds} seed(s), "
                f"mask seed {self.mask_seed}; {self.runs_done}/{self.runs_total} runs")


class SweepStore:
    """The sweeps of one session database (the GUI thread's connection, like `SessionStore`)."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.db = store.db

    def create(self, *, name: str, dataset: str, metric: str, methods: list[str], label_fractions: list[float],
               missing: list[str], seeds: int, mask_seed: int, config: dict, out_dir: str, runs_total: int,
               rates: dict[str, float], realised: dict[str, float], source: str = "app",
               status: str = SWEEP_RUNNING, train_missing: list[str] | tuple[str, ...] = (),
               train_rates: dict | None = None, train_realised: dict | None = None) -> int:
        if train_missing:  # a mismatch sweep: its training settings ride in the config (schema of m006)
            config = {**config, "mismatch": _mismatch_entry(train_missing, train_rates, train_realised)}
        with self.db.atomic():
            table = self.db["sweeps"]
            table.insert({
                "created": _now(), "name": name, "status": status, "source": source, "dataset": dataset,
                "metric": metric, "methods": json.dumps(list(methods)),
                "label_fractions": json.dumps([float(v) for v in label_fractions]),
                "missing": json.dumps(list(missing)), "seeds": int(seeds), "mask_seed": int(mask_seed),
                "config": json.dumps(config, sort_keys=True), "out_dir": str(out_dir), "runs_total": int(runs_total),
                "runs_done": 0, "rates": json.dumps({k: (None if v is None or math.isnan(v) else v)
                                                     for k, v in rates.items()}),
                "realised": json.dumps(realised), "elapsed_s": 0.0, "error_message": "",
                **(self.store.owner_fields() if status == SWEEP_RUNNING else {})})
            return int(table.last_pk)

    def set_mismatch(self, sweep_id: int, train_missing, train_rates: dict | None = None,
                     train_realised: dict | None = None) -> None:
        """Store (or update) a mismatch sweep's training settings, their rates and realised fractions."""
        row = self.db.execute("SELECT config FROM sweeps WHERE id = ?", [int(sweep_id)]).fetchone()
        config = _loads_dict(row[0] if row else None)
        config["mismatch"] = _mismatch_entry(train_missing, train_rates, train_realised)
        with self.db.atomic():
            self.db["sweeps"].update(int(sweep_id), {"config": json.dumps(config, sort_keys=True)})

    def add_run(self, sweep_id: int, label_fraction: float, method: str, seed: int,
                missing_metrics: dict[str, dict[str, float]], metric: str, val_score: float = float("nan"),
                best_epoch: int = -1, train_missing: str = "") -> None:
        """One finished run's metric under every mask setting (replacing what an earlier try stored); in a
        mismatch sweep, `train_missing` is the setting the run was trained under."""
        rows = [{"sweep_id": int(sweep_id), "label_fraction": _lf_key(label_fraction),
                 "missing": mismatch_label(train_missing, lab) if train_missing else lab,
                 "method": method, "seed": int(seed), "value": _num(vals.get(metric)),
                 "val_score": _num(val_score), "best_epoch": int(best_epoch)}
                for lab, vals in missing_metrics.items()]
        with self.db.atomic():
            self.db["sweep_cells"].upsert_all(rows, pk=("sweep_id", "label_fraction", "missing", "method", "seed"))
            done = self.db.execute(  # a run is (label fraction, method, seed[, training setting])
                "SELECT count(*) FROM (SELECT DISTINCT label_fraction, method, seed, CASE WHEN instr(missing, "
                "char(9)) > 0 THEN substr(missing, 1, instr(missing, char(9)) - 1) ELSE '' END FROM sweep_cells "
                "WHERE sweep_id = ?)", [int(sweep_id)]).fetchone()[0]
            self.db["sweeps"].update(int(sweep_id), {"runs_done": int(done)})

    def set_status(self, sweep_id: int, status: str, *, error: str = "", elapsed_s: float | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "error_message": error}
        if elapsed_s is not None:
            fields["elapsed_s"] = float(elapsed_s)
        if status == SWEEP_RUNNING:
            fields.update(self.store.owner_fields())  # started or resumed here: this store owns the live sweep
        with self.db.atomic():
            self.db["sweeps"].update(int(sweep_id), fields)

    def clear_cells(self, sweep_id: int) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM sweep_cells WHERE sweep_id = ?", [int(sweep_id)])
            self.db["sweeps"].update(int(sweep_id), {"runs_done": 0})

    def find_imported(self, folder: str | Path) -> int | None:
        row = self.db.execute("SELECT id FROM sweeps WHERE source = 'cli' AND out_dir = ? ORDER BY id DESC",
                              [str(folder)]).fetchone()
        return int(row[0]) if row else None

    def rename(self, sweep_id: int, name: str) -> None:
        with self.db.atomic():
            self.db["sweeps"].update(int(sweep_id), {"name": name})

    def delete(self, sweep_id: int) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM sweep_cells WHERE sweep_id = ?", [int(sweep_id)])
            self.db["sweeps"].delete(int(sweep_id))

    def ids(self) -> list[int]:
        return [int(r[0]) for r in self.db.execute("SELECT id FROM sweeps ORDER BY id").fetchall()]

    def list(self) -> list[SweepResult]:
        """Every sweep, oldest first, without their cells."""
        return [self._from_row(r, with_cells=False) for r in self.db["sweeps"].rows_where(order_by="id")]

    def get(self, sweep_id: int) -> SweepResult | None:
        rows = list(self.db["sweeps"].rows_where("id = ?", [int(sweep_id)]))
        return self._from_row(rows[0]) if rows else None

    def metric_of(self, sweep_id: int) -> str:
        row = self.db.execute("SELECT metric FROM sweeps WHERE id = ?", [int(sweep_id)]).fetchone()
        return str(row[0] or "") if row else ""

    def mark_interrupted(self) -> list[int]:
        """Sweeps left "running" by an app that ended become "interrupted" (resumable); a sweep whose owner may
        still be alive (another app on the same file) is left alone — the rule of runs
        (`SessionStore.owner_gone`). Call once at start."""
        ids = self.store.orphaned("sweeps", SWEEP_RUNNING)
        for i in ids:
            self.set_status(i, SWEEP_INTERRUPTED, error="The app ended while this sweep was running.")
        return ids

    def _from_row(self, r: dict, with_cells: bool = True) -> SweepResult:
        rates = {k: (float("nan") if v is None else float(v)) for k, v in json.loads(r["rates"] or "{}").items()}
        res = SweepResult(
            id=int(r["id"]), name=r["name"] or "", status=r["status"], source=r["source"] or "app",
            dataset=r["dataset"], metric=r["metric"] or "", methods=json.loads(r["methods"]),
            label_fractions=[float(v) for v in json.loads(r["label_fractions"])],
            missing=json.loads(r["missing"]), seeds=int(r["seeds"]), mask_seed=int(r["mask_seed"]), rates=rates,
            realised={k: float(v) for k, v in json.loads(r["realised"] or "{}").items()},
            runs_total=int(r["runs_total"] or 0), runs_done=int(r["runs_done"] or 0), out_dir=r["out_dir"] or "",
            config=json.loads(r["config"] or "{}"), created=r["created"], elapsed_s=float(r["elapsed_s"] or 0.0),
            error=r["error_message"] or "")
        mm = res.config.get("mismatch") if isinstance(res.config, dict) else None
        if isinstance(mm, dict) and mm.get("train_missing"):
            res.train_missing = [str(x) for x in mm["train_missing"]]
            res.train_rates = {str(k): (float("nan") if v is None else float(v))
                               for k, v in (mm.get("train_rates") or {}).items()}
            res.train_realised = {str(k): float(v) for k, v in (mm.get("train_realised") or {}).items()
                                  if v is not None}
        if with_cells:
            for c in self.db.execute("SELECT label_fraction, missing, method, seed, value FROM sweep_cells "
                                     "WHERE sweep_id = ?", [res.id]).fetchall():
                res.cells.setdefault((_lf_key(c[0]), c[1], c[2]), {})[int(c[3])] = (
                    float("nan") if c[4] is None else float(c[4]))
        return res

    # --- a sweep written by `robult sweep` --------------------------------------------------------------
    def import_sweep_json(self, path: str | Path) -> int:
        """Store the sweep of a `sweep.json` (robult sweep --out DIR) in the session; returns its id. Each
        method is taken at the grid setting the sweep chose (the file's `cells`/`runs`); a mismatch sweep's
        runs are those of every training setting (`train_missing`, `matrix_runs`)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise SweepFileError(f"{path}: cannot read the file ({e.strerror or e})") from None
        except ValueError as e:
            raise SweepFileError(f"{path}: not a JSON file ({e})") from None
        except RecursionError:
            raise SweepFileError(f"{path}: not a sweep written by `robult sweep` (its JSON is nested too "
                                 f"deeply)") from None
        need = ("dataset", "methods", "label_fractions", "missing", "seeds", "runs")
        if not isinstance(data, dict) or any(k not in data for k in need):
            lacking = [k for k in need if not isinstance(data, dict) or k not in data]
            raise SweepFileError(f"{path}: not a sweep written by `robult sweep` (it lacks "
                                 f"{', '.join(lacking)})")
        check_sweep_fields(path, data)
        try:
            methods = [str(m) for m in data["methods"]]
            fractions = [float(v) for v in data["label_fractions"]]
            labels = [str(x) for x in data["missing"]]
            seeds = int(data["seeds"])
            metric = str(data.get("metric") or "")
            train = [str(x) for x in data.get("train_missing") or []]
            runs: list[tuple[float, str, int, dict, float, int, str]] = []
            for lf in fractions:
                groups = ([(tr, data["matrix_runs"][fraction_label(lf)][tr]) for tr in train] if train
                          else [("", data["runs"][fraction_label(lf)])])
                for tr, by_method in groups:
                    for m in methods:
                        for run in by_method[m]:
                            missing = run["missing"]
                            absent = [lab for lab in labels if not isinstance(missing.get(lab), dict)]
                            if absent:
                                trained = f" trained under {tr}" if tr else ""
                                raise SweepFileError(f"{path}: the run {m} lf {lf:g}{trained} seed {run['seed']} "
                                                     f"has no result under {', '.join(absent)}")
                            runs.append((lf, m, int(run["seed"]), {lab: missing[lab] for lab in labels},
                                         float(run.get("val_score", float("nan"))), int(run.get("best_epoch", -1)),
                                         tr))
        except SweepFileError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise SweepFileError(f"{path}: the sweep's runs are malformed ({type(e).__name__}: {e})") from None
        if not metric:
            raise SweepFileError(f"{path}: the sweep names no metric")
        rates = {k: (float("nan") if v is None else float(v)) for k, v in (data.get("rates") or {}).items()}
        existing = self.find_imported(path.parent)
        if existing is not None:  # the same file opened again: its sweep is already in the session
            return existing
        sid = self.create(name=f"{path.parent.name}/{path.name}", dataset=str(data["dataset"]),
                          metric=metric, methods=methods, label_fractions=fractions, missing=labels, seeds=seeds,
                          mask_seed=int(data.get("mask_seed", 0)), config=data.get("config") or {},
                          out_dir=str(path.parent),
                          runs_total=len(methods) * len(fractions) * seeds * max(1, len(train)), rates=rates,
                          realised={k: float(v) for k, v in (data.get("realised_missing") or {}).items()},
                          source="cli", status=SWEEP_IMPORTED, train_missing=train,
                          train_rates=data.get("train_rates") or {},
                          train_realised=data.get("train_realised_missing") or {})
        for lf, m, seed, missing, val, best, tr in runs:
            self.add_run(sid, lf, m, seed, missing, metric, val, best, train_missing=tr)
        self.set_status(sid, SWEEP_IMPORTED, elapsed_s=float(data.get("elapsed_s") or 0.0))
        return sid


MAX_SWEEP_SEEDS = 1000  # a sweep.json with more seeds per setting is refused
MAX_BEST_EPOCH = 2 ** 31 - 1


def check_sweep_fields(path: Path, data: dict) -> None:
    """Refuse a `sweep.json` value of the wrong type or out of range (a file edited by hand, or not written by
    `robult sweep`) as a SweepFileError naming the file and the field, before anything is stored: names are
    non-empty texts, label fractions numbers in (0, 1], `seeds` an integer in 1..MAX_SWEEP_SEEDS, each run's
    seed one of 0..seeds-1, `mask_seed` an integer in 0..2^32-1, metric values and scores numbers (or null),
    `best_epoch` an integer in -1..2^31-1. Where the runs' nesting itself is wrong, the caller says so."""
    from robult_engine.config import MAX_SEED

    def bad(field_name: str, what: str, got: Any) -> SweepFileError:
        shown = repr(got)
        return SweepFileError(f"{path}: {field_name} must be {what}, got "
                              f"{shown if len(shown) <= 60 else shown[:57] + '...'}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:  # a JSON number that is a float (not an integer beyond the floats' range)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            float(v)
        except OverflowError:
            return False
        return True

    def names(key: str) -> list:
        v = data[key]
        if not (isinstance(v, list) and v and all(isinstance(x, str) and x for x in v) and len(set(v)) == len(v)):
            raise bad(key, "a non-empty list of distinct names", v)
        return v

    if not isinstance(data["dataset"], str) or not data["dataset"]:
        raise bad("dataset", "a dataset name", data["dataset"])
    if data.get("metric") is not None and not isinstance(data["metric"], str):
        raise bad("metric", "a metric name", data["metric"])
    methods, labels = names("methods"), names("missing")
    fractions = data["label_fractions"]
    if not (isinstance(fractions, list) and fractions and all(is_num(v) and 0.0 < v <= 1.0 for v in fractions)):
        raise bad("label_fractions", "a non-empty list of numbers in (0, 1]", fractions)
    if len({_lf_key(v) for v in fractions}) != len(fractions):
        raise bad("label_fractions", "distinct fractions", fractions)
    seeds = data["seeds"]
    if not (is_int(seeds) and 1 <= seeds <= MAX_SWEEP_SEEDS):
        raise bad("seeds", f"an integer in 1..{MAX_SWEEP_SEEDS}", seeds)
    mask_seed = data.get("mask_seed", 0)
    if not (is_int(mask_seed) and 0 <= mask_seed <= MAX_SEED):
        raise bad("mask_seed", f"an integer in 0..{MAX_SEED}", mask_seed)
    for key in ("rates", "realised_missing"):
        table = data.get(key)
        if table is None:
            continue
        if not isinstance(table, dict) or not all(is_num(v) or (v is None and key == "rates") for v in table.values()):
            raise bad(key, "an object of numbers by mask setting", table)
    if data.get("config") is not None and not isinstance(data["config"], dict):
        raise bad("config", "an object (the base run config)", data["config"])
    elapsed = data.get("elapsed_s")
    if elapsed is not None and not (is_num(elapsed) and 0.0 <= elapsed < float("inf")):
        raise bad("elapsed_s", "a number of seconds", elapsed)
    metric = data.get("metric")
    train = data.get("train_missing")
    groups: list[tuple[str, Any]] = []  # (where, {method: [runs]}) of every label fraction [and training setting]
    if train is not None and train != []:
        train = names("train_missing")
        if any(MISMATCH_SEP in x for x in train):
            raise bad("train_missing", "mask settings (no tabs)", train)
        for key in ("train_rates", "train_realised_missing"):
            table = data.get(key)
            if table is not None and (not isinstance(table, dict) or not all(
                    is_num(v) or (v is None and key == "train_rates") for v in table.values())):
                raise bad(key, "an object of numbers by training setting", table)
        matrix_runs = data.get("matrix_runs")
        if not isinstance(matrix_runs, dict):
            raise bad("matrix_runs", "the runs of every training setting (a sweep with train_missing has them)",
                      matrix_runs)
        for lf in fractions:
            by_train = matrix_runs.get(fraction_label(lf))
            for tr in train:
                by_method = by_train.get(tr) if isinstance(by_train, dict) else None
                if not isinstance(by_method, dict):
                    raise bad(f"matrix_runs[{fraction_label(lf)}][{tr}]", "an object of runs by method", by_method)
                groups.append((f"matrix_runs[{fraction_label(lf)}][{tr}]", by_method))
    else:
        runs = data["runs"] if isinstance(data["runs"], dict) else {}
        groups = [(f"runs[{fraction_label(lf)}]", runs.get(fraction_label(lf))) for lf in fractions]
    for prefix, by_method in groups:
        for m in methods:
            listed = by_method.get(m) if isinstance(by_method, dict) else None
            where = f"{prefix}[{m}]"
            for run in listed if isinstance(listed, list) else ():
                if not isinstance(run, dict):
                    raise bad(where, "a list of run objects", run)
                seed = run.get("seed")
                if not (is_int(seed) and 0 <= seed < seeds):
                    raise bad(f"{where} seed", f"one of the sweep's seeds 0..{seeds - 1}", seed)
                if "val_score" in run and not is_num(run["val_score"]):
                    raise bad(f"{where} seed {seed} val_score", "a number", run["val_score"])
                epoch = run.get("best_epoch", -1)
                if not (is_int(epoch) and -1 <= epoch <= MAX_BEST_EPOCH):
                    raise bad(f"{where} seed {seed} best_epoch", f"an integer in -1..{MAX_BEST_EPOCH}", epoch)
                results = run.get("missing")
                if not isinstance(results, dict):
                    raise bad(f"{where} seed {seed} missing", "an object of results by mask setting", results)
                for lab in labels:
                    vals = results.get(lab)
                    if isinstance(vals, dict) and isinstance(metric, str) and vals.get(metric) is not None \
                            and not is_num(vals[metric]):
                        raise bad(f"{where} seed {seed} {metric} under {lab}", "a number", vals[metric])


def _mismatch_entry(train_missing, train_rates: dict | None, train_realised: dict | None) -> dict:
    def finite(v):
        return None if v is None or not math.isfinite(float(v)) else float(v)
    return {"train_missing": [str(x) for x in train_missing],
            "train_rates": {str(k): finite(v) for k, v in (train_rates or {}).items()},
            "train_realised": {str(k): finite(v) for k, v in (train_realised or {}).items()}}


def _loads_dict(text) -> dict:
    try:
        v = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# --- running a sweep in the background (the work contract of app/core/work.py) ------------------------------


@dataclass(frozen=True)
class SweepRequest:
    """What the Sweeps dialog asks for. `missing` are spec texts (`mcar:0,0.25,0.5`), rates being fractions
    missing; `base` is the run configuration every run starts from (dataset, schedule, model). `train_missing`
    (optional spec texts, e.g. `mcar:0,0.5`) makes it a train/test mismatch sweep: every method is trained once
    per setting (as `data.train_missing`)."""
    base: Any  # RunConfig
    methods: tuple[str, ...]
    label_fractions: tuple[float, ...]
    missing: tuple[str, ...]
    seeds: int = 2
    mask_seed: int = 0
    name: str = ""
    train_missing: tuple[str, ...] = ()

    def train_settings(self) -> list[str]:
        """The training settings' labels ([] for a plain sweep); ConfigError naming the field for a setting the
        training cannot take."""
        if not self.train_missing:
            return []
        from robult_engine.config import ConfigError
        from robult_engine.sweep import parse_train_missing
        try:
            return parse_train_missing(list(self.train_missing), self.base)
        except ConfigError as e:
            text, flag = str(e), "--train-missing"
            raise ConfigError("Train missingness" + text[len(flag):] if text.startswith(flag) else text) from None

    def validate(self) -> "SweepRequest":
        """Raises ConfigError (a `MissingSpecError` for a bad mask spec) naming the field and the problem."""
        from robult_engine.config import METHODS, ConfigError
        from robult_engine.missing import parse_missing_grid
        if not self.methods:
            raise ConfigError("Methods: choose at least one method")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"Methods: unknown method {m!r}")
        if not self.label_fractions:
            raise ConfigError("Label fractions: give at least one, e.g. 0.05,0.2")
        for v in self.label_fractions:
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"Label fractions: each must be in (0, 1], got {v:g}")
        for i, v in enumerate(self.label_fractions):
            for w in self.label_fractions[:i]:
                if w == v:
                    raise ConfigError(f"Label fractions: {fraction_label(v)} is given twice")
                if _lf_key(w) == _lf_key(v):  # the session stores each fraction's cells under _lf_key
                    raise ConfigError(f"Label fractions: {fraction_label(w)} and {fraction_label(v)} are the same "
                                      f"to 10 decimals; give fractions that differ")
        if self.seeds < 1:
            raise ConfigError(f"Seeds: at least 1, got {self.seeds}")
        parse_missing_grid(list(self.missing), where="Missing rates")
        self.train_settings()
        self.base.validate()
        from robult_engine.models.encoders import untrusted_modules
        modules = untrusted_modules(self.base.model.encoders)
        if modules:  # nothing the user did not name in this dialog is imported
            raise ConfigError(f"Configuration: it names encoder code outside Robult Studio ({', '.join(modules)}); "
                              f"sweeps from the app use the built-in encoders. Run `robult sweep` with your own "
                              f"config to sweep with that code")
        return self

    @property
    def runs_total(self) -> int:
        return len(self.methods) * len(self.label_fractions) * self.seeds * max(1, len(self.train_settings()))


@dataclass(frozen=True)
class SweepPlanned:
    """Sent once the dataset is loaded and the masks are drawn: what the stored row still lacks."""
    labels: tuple[str, ...]
    rates: dict
    realised: dict
    metric: str
    runs_total: int
    resumed: int
    # a mismatch sweep: the training settings, their rates and realised fractions on the training split
    train: tuple[str, ...] = ()
    train_rates: dict = field(default_factory=dict)
    train_realised: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SweepRunRecorded:
    """One run finished (or was taken from the folder on resume) and was evaluated under every mask. Durable: the
    runner delivers it even when the sweep was cancelled meanwhile (the run is on disk and must be stored)."""
    durable: ClassVar[bool] = True
    label_fraction: float
    method: str
    seed: int
    missing: dict  # mask setting -> {metric: value}
    val_score: float
    best_epoch: int
    runs_done: int
    runs_total: int
    train_missing: str = ""  # the setting the run was trained under (a mismatch sweep)


@dataclass(frozen=True)
class SweepProgress:
    """Where the sweep is: finished runs, the current run and its step, elapsed time and ETA (seconds, NaN
    before anything can be estimated)."""
    runs_done: int
    runs_total: int
    run_label: str
    step: int
    steps: int
    elapsed_s: float
    eta_s: float

    @property
    def fraction(self) -> float:
        part = self.step / self.steps if self.steps else 0.0
        return min(1.0, (self.runs_done + part) / max(1, self.runs_total))


def format_eta(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "ETA –"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"ETA {seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"ETA {seconds // 60} min {seconds % 60:02d} s"
    return f"ETA {seconds} s"


def run_sweep_work(work, request: SweepRequest, out_dir: str | Path, get_bundle, resume: bool = False,
                   min_interval_s: float = 0.25) -> dict:
    """The body of a background sweep: load the data (`get_bundle(data_cfg)`), draw the masks, train every
    pending run one after another on this thread and evaluate it under the masks. Reports `SweepPlanned`,
    `SweepRunRecorded` (each run, so the caller stores it at once) and `SweepProgress` (at most every
    `min_interval_s`) through `work.emit`; stops within a training step of `work.cancel()` (the current run is
    not recorded, `Cancelled` is raised). Returns the engine's sweep.json payload."""
    import time

    from robult_engine.events import StepEnded
    from robult_engine.sweep import Sweep
    from .work import Cancelled
    work.check()
    bundle = get_bundle(request.base.data)
    work.check()
    t_resume = time.perf_counter()

    def resume_progress(k: int, n: int) -> None:  # re-evaluating the runs the folder holds (resume only)
        work.emit(SweepProgress(k, n, "checking the finished runs in the folder", 0, 0,
                                time.perf_counter() - t_resume, float("nan")))
    sweep = Sweep(request.base, list(request.methods), list(request.label_fractions), out_dir, seeds=request.seeds,
                  missing=list(request.missing), mask_seed=request.mask_seed, bundle=bundle, resume=resume,
                  should_stop=lambda: work.cancelled, on_resume_progress=resume_progress,
                  train_missing=list(request.train_missing) or None)
    work.check()
    ev = sweep.ev
    from robult_engine.missing import parse_missing
    work.emit(SweepPlanned(tuple(ev.labels), ev.rates(), dict(ev.realised), sweep.metric, sweep.n_runs,
                           len(sweep.resumed), tuple(sweep.train),
                           {lab: parse_missing(lab)[0].rate for lab in sweep.train},
                           sweep.train_realised() if sweep.mismatch else {}))

    def recorded(key, run) -> SweepRunRecorded:
        _g, f, seed, m, t = sweep.parts(key)
        return SweepRunRecorded(sweep.fractions[f], m, seed, run["missing"], run["val_score"], run["best_epoch"],
                                len(sweep.done), sweep.n_runs, sweep.train[t] if sweep.mismatch else "")

    for key in sweep.resumed:
        g, f, seed, m, t = sweep.parts(key)
        run = next(r for r in sweep.cells[m, f, g, t] if r["seed"] == seed)
        work.emit(recorded(key, run))
    t0 = time.perf_counter()
    n_new = len(sweep.pending())
    state = {"last": 0.0, "trained": 0, "label": ""}

    def progress_of(step: int, steps: int) -> SweepProgress:
        elapsed = time.perf_counter() - t0
        done_here = state["trained"] + (step / steps if steps else 0.0)
        eta = elapsed / done_here * (n_new - done_here) if done_here > 0.02 else float("nan")
        return SweepProgress(len(sweep.done), sweep.n_runs, state["label"], step, steps, elapsed, eta)

    def callbacks_for(k, key):
        _g, f, seed, m, t = sweep.parts(key)
        trained = f" · trained under {sweep.train[t]}" if sweep.mismatch else ""
        state["label"] = f"{m} · label fraction {sweep.fractions[f]:g}{trained} · seed {seed}"
        work.emit(progress_of(0, 0))

        def on_event(ev_) -> None:
            if isinstance(ev_, StepEnded):
                now = time.perf_counter()
                if now - state["last"] >= min_interval_s:
                    state["last"] = now
                    work.emit(progress_of(ev_.global_step, ev_.total_steps))
        return [on_event]

    def on_run(k, key, run) -> None:
        state["trained"] += 1
        work.emit(recorded(key, run))
        work.emit(progress_of(0, 0))

    from robult_engine.sweep import SweepRunFailed
    try:
        finished = sweep.run_serial(callbacks_for=callbacks_for, should_stop=lambda: work.cancelled, on_run=on_run)
    except SweepRunFailed as e:
        raise ValueError(str(e)) from None  # shown as it stands (a run diverged, or ended without a checkpoint)
    if not finished:
        raise Cancelled()
    return sweep.finish(print_tables=False)
