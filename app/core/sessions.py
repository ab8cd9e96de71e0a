"""Sessions in SQLite: runs, per-epoch metrics, the explorer's inspections, UI state.

One file, opened through sqlite-utils with its `Migrations` (set "robult-studio"); migrations are ordered
functions named `mNNN_...` that are never renamed once shipped. The connection belongs to the thread that
opened it (the GUI thread): every write happens there, inside `db.atomic()`, as the worker's events arrive,
so a killed app loses at most the epoch in progress (the file is in WAL mode with synchronous=NORMAL). Runs a killed app left "running" become "crashed" on the
next start (`mark_interrupted_runs`), and can be resumed from their run folder's last.pt.

A database file that is corrupt, locked or unwritable is never deleted or overwritten: `open_store` falls back
to an in-memory database and returns a message that names the bad file.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils
from sqlite_utils import Migrations

from .state import CRASHED, RUNNING

APP_NAME = "RobultStudio"
DB_ENV = "ROBULT_STUDIO_DB"
DB_FILENAME = "sessions.sqlite"
LOCK_TIMEOUT_S = 2.0  # how long a write waits for another process's lock before the file counts as locked

migrations = Migrations("robult-studio")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    """Runs and their per-epoch metrics (the first shipped schema)."""
    db["runs"].create({
        "id": int, "created": str, "name": str, "method": str, "dataset": str, "config": str, "seed": int,
        "label_fraction": float, "labeled_indices": str, "package_versions": str, "status": str,
        "best_score": float, "best_epoch": int, "checkpoint_path": str, "run_dir": str, "error_message": str,
    }, pk="id", not_null={"created", "method", "dataset", "config", "status"},
        defaults={"status": RUNNING, "best_epoch": -1, "labeled_indices": "[]", "package_versions": "{}",
                  "checkpoint_path": "", "run_dir": "", "error_message": "", "name": ""})
    db["epochs"].create({
        "run_id": int, "epoch": int, "train_losses": str, "val_metrics": str, "val_score": float,
        "z_norm": str, "u_norm": str, "kappa_hist": str, "elapsed": float,
    }, pk=("run_id", "epoch"), foreign_keys=[("run_id", "runs", "id")])
    db["runs"].create_index(["status"])


@migrations()
def m002_inspections_and_ui_state(db: sqlite_utils.Database) -> None:
    """What the explorer saves per run (so a reopened session comes back as it was left), and UI state."""
    db["inspections"].create({"id": int, "run_id": int, "created": str, "state": str}, pk="id",
                             not_null={"run_id", "created", "state"}, foreign_keys=[("run_id", "runs", "id")])
    db["inspections"].create_index(["run_id", "id"])
    db["ui_state"].create({"key": str, "value": str}, pk="key")


@migrations()
def m003_epoch_diagnostics(db: sqlite_utils.Database) -> None:
    """Keep the reconstruction error and κ statistics of each epoch too (added after the first schema)."""
    db["epochs"].add_column("rec_error", str, not_null_default="{}")
    db["epochs"].add_column("kappa_edges", str, not_null_default="[]")
    db["epochs"].add_column("pu_weight_mean", float)
    db["epochs"].add_column("pseudo_label_acc", float)


@migrations()
def m004_step_losses(db: sqlite_utils.Database) -> None:
    """The per-step losses of each epoch (what the loss plot drew), so a reopened run shows its step curves."""
    db["epochs"].add_column("steps", str, not_null_default="[]")


@migrations()
def m005_comparisons(db: sqlite_utils.Database) -> None:
    """Runs queued together as one comparison (methods × seeds) share an id; the test metrics of each run are
    kept, so the paired differences can be shown."""
    db["runs"].add_column("comparison", str, not_null_default="")
    db["runs"].add_column("test_metrics", str, not_null_default="{}")


@migrations()
def m006_sweeps(db: sqlite_utils.Database) -> None:
    """Label fraction × missing rate sweeps (app/core/sweeps.py): the sweep's configuration and its masks' seed,
    and every cell: one metric value per (label fraction, mask setting, method, seed)."""
    db["sweeps"].create({
        "id": int, "created": str, "name": str, "status": str, "source": str, "dataset": str, "metric": str,
        "methods": str, "label_fractions": str, "missing": str, "seeds": int, "mask_seed": int, "config": str,
        "out_dir": str, "runs_total": int, "runs_done": int, "realised": str, "rates": str, "elapsed_s": float,
        "error_message": str,
    }, pk="id", not_null={"created", "status", "dataset", "methods", "label_fractions", "missing"},
        defaults={"name": "", "source": "app", "metric": "", "seeds": 1, "mask_seed": 0, "config": "{}",
                  "out_dir": "", "runs_total": 0, "runs_done": 0, "realised": "{}", "rates": "{}",
                  "elapsed_s": 0.0, "error_message": ""})
    db["sweep_cells"].create({
        "sweep_id": int, "label_fraction": float, "missing": str, "method": str, "seed": int, "value": float,
        "val_score": float, "best_epoch": int,
    }, pk=("sweep_id", "label_fraction", "missing", "method", "seed"), foreign_keys=[("sweep_id", "sweeps", "id")])


class SessionStoreError(RuntimeError):
    """The session database cannot be used; the message names the file and the reason."""


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True)


def _finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def package_versions() -> dict[str, str]:
    """Versions stored with each run, so a result can be traced to the software that produced it."""
    from importlib import metadata
    out = {"python": platform.python_version()}
    for dist in ("robult-studio", "torch", "numpy", "PySide6-Essentials", "pyqtgraph", "sqlite-utils"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def default_db_path() -> Path:
    """$ROBULT_STUDIO_DB, else <user data dir>/RobultStudio/sessions.sqlite (platformdirs)."""
    env = os.environ.get(DB_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path
    return user_data_path(APP_NAME, appauthor=False) / DB_FILENAME


@dataclass(frozen=True)
class RunRow:
    """A run as the sessions view shows it (plain data)."""
    id: int
    created: str
    name: str
    method: str
    dataset: str
    config_json: str
    seed: int
    label_fraction: float
    status: str
    best_score: float | None
    best_epoch: int
    checkpoint_path: str
    run_dir: str
    error_message: str
    epochs_done: int = 0
    comparison: str = ""  # the comparison the run was queued in ("" for a single run)

    @classmethod
    def from_row(cls, r: dict, epochs_done: int = 0) -> "RunRow":
        return cls(id=int(r["id"]), created=r["created"] or "", name=r["name"] or "", method=r["method"],
                   dataset=r["dataset"], config_json=r["config"], seed=int(r["seed"] or 0),
                   label_fraction=float(r["label_fraction"] or 0.0), status=r["status"],
                   best_score=r["best_score"], best_epoch=int(r["best_epoch"] if r["best_epoch"] is not None else -1),
                   checkpoint_path=r["checkpoint_path"] or "", run_dir=r["run_dir"] or "",
                   error_message=r["error_message"] or "", epochs_done=epochs_done,
                   comparison=r.get("comparison") or "")


class SessionStore:
    """The session database. Use from the thread that created it (the GUI thread)."""

    def __init__(self, path: str | os.PathLike | None, *, apply_migrations: bool = True) -> None:
        """`path` None or ":memory:" gives an in-memory database. Raises SessionStoreError for a file that is
        not a database, is locked by another process, or cannot be created."""
        self.in_memory = path is None or str(path) == ":memory:"
        self.path = None if self.in_memory else Path(path).expanduser()
        try:
            if self.in_memory:
                conn = sqlite3.connect(":memory:")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=LOCK_TIMEOUT_S)
        except (OSError, sqlite3.Error) as e:
            raise SessionStoreError(f"{path}: cannot open the session database ({e})") from None
        try:
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA foreign_keys = ON")
            # reading the schema fails at once on a file that is not a SQLite database
            self.db.execute("SELECT count(*) FROM sqlite_master").fetchall()
            if not self.in_memory:
                # a write lock taken and released at once: fails (after the timeout) when another process
                # holds the file locked, instead of failing later in the middle of a run
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("ROLLBACK")
                # write-ahead log, fsync only at checkpoints: a commit no longer blocks the GUI thread on the
                # disk, and a killed app still keeps every committed epoch (only a power loss could lose the
                # last commits)
                self.db.enable_wal()
                self.db.execute("PRAGMA synchronous = NORMAL")
            if apply_migrations:
                migrations.apply(self.db)
        except sqlite3.DatabaseError as e:
            conn.close()
            msg = str(e)
            if "locked" in msg or "busy" in msg:
                reason = "it is locked by another program (is Robult Studio already running?)"
            elif "not a database" in msg or "malformed" in msg or "encrypted" in msg:
                reason = "the file is not a valid SQLite database (corrupt or of another kind)"
            elif "readonly" in msg or "read-only" in msg:
                reason = "the file is read-only"
            else:
                reason = msg
            raise SessionStoreError(f"{self.path}: cannot use the session database: {reason}") from None

    @property
    def location(self) -> str:
        return "memory (not saved)" if self.in_memory else str(self.path)

    def close(self) -> None:
        self.db.close()

    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self.db)]

    # --- runs -------------------------------------------------------------------------------------------
    def create_run(self, config, *, name: str = "", run_dir: str = "", dataset: str | None = None) -> int:
        """A new run row with status "running"; `config` is a RunConfig. Returns the run id."""
        with self.db.atomic():
            table = self.db["runs"]
            table.insert({
                "created": _now(), "name": name, "method": config.method,
                "dataset": dataset if dataset is not None else config.data.dataset, "config": config.to_json(),
                "seed": int(config.seed), "label_fraction": float(config.data.label_fraction),
                "labeled_indices": "[]", "package_versions": _json(package_versions()), "status": RUNNING,
                "best_score": None, "best_epoch": -1, "checkpoint_path": "", "run_dir": run_dir,
                "error_message": "",
            })
            return int(table.last_pk)

    def update_run(self, run_id: int, **fields: Any) -> None:
        allowed = {"name", "status", "best_score", "best_epoch", "checkpoint_path", "run_dir", "error_message",
                   "labeled_indices", "config", "comparison", "test_metrics"}
        bad = set(fields) - allowed
        if bad:
            raise KeyError(f"runs: cannot update {', '.join(sorted(bad))}")
        if "labeled_indices" in fields and not isinstance(fields["labeled_indices"], str):
            fields["labeled_indices"] = _json([int(i) for i in fields["labeled_indices"]])
        if "best_score" in fields:
            fields["best_score"] = _finite_or_none(fields["best_score"])
        if "test_metrics" in fields and not isinstance(fields["test_metrics"], str):
            fields["test_metrics"] = _json(fields["test_metrics"])
        with self.db.atomic():
            self.db["runs"].update(run_id, fields)

    def set_status(self, run_id: int, status: str, *, error: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status}
        if error is not None:
            fields["error_message"] = error
        self.update_run(run_id, **fields)

    def add_epoch(self, run_id: int, ev, steps: Iterable[Any] = ()) -> None:
        """Record an EpochEnded event (and the run's best so far) in one transaction; `steps` are the epoch's
        StepEnded events, kept as [step, global step, total steps, elapsed s, lr, {loss: value}] rows."""
        step_rows = [[int(s.step), int(s.global_step), int(s.total_steps), round(float(s.elapsed_s), 4),
                      float(s.lr), {k: _finite_or_none(v) for k, v in s.losses.items()}] for s in steps]
        row = {
            "run_id": run_id, "epoch": int(ev.epoch), "train_losses": _json(ev.train_losses),
            "val_metrics": _json(ev.val_metrics), "val_score": _finite_or_none(ev.val_score),
            "z_norm": _json(ev.z_norm), "u_norm": _json(ev.u_norm), "kappa_hist": _json(list(ev.pu_weight_hist)),
            "elapsed": float(ev.elapsed_s), "rec_error": _json(ev.rec_error),
            "kappa_edges": _json(list(ev.pu_weight_edges)), "pu_weight_mean": _finite_or_none(ev.pu_weight_mean),
            "pseudo_label_acc": _finite_or_none(ev.pseudo_label_acc), "steps": _json(step_rows),
        }
        with self.db.atomic():
            self.db["epochs"].upsert(row, pk=("run_id", "epoch"))
            if ev.is_best:
                upd: dict[str, Any] = {"best_score": _finite_or_none(ev.val_score), "best_epoch": int(ev.epoch)}
                if ev.checkpoint_path:
                    upd["checkpoint_path"] = ev.checkpoint_path
                self.db["runs"].update(run_id, upd)

    def get_run(self, run_id: int) -> RunRow | None:
        try:
            r = self.db["runs"].get(run_id)
        except sqlite_utils.db.NotFoundError:
            return None
        return RunRow.from_row(r, self._epoch_count(run_id))

    def run_record(self, run_id: int) -> dict:
        """The full row with JSON columns decoded (labeled_indices, package_versions, config as dict)."""
        r = dict(self.db["runs"].get(run_id))
        for k in ("labeled_indices", "package_versions", "config", "test_metrics"):
            r[k] = json.loads(r[k]) if r.get(k) else None
        return r

    def comparison_runs(self, comparison: str) -> list[dict]:
        """The finished runs of a comparison, in the order they were queued: (method, seed, test metrics)."""
        rows = self.db.execute("SELECT method, seed, test_metrics FROM runs WHERE comparison = ? AND status = ? "
                               "ORDER BY id", [comparison, "finished"]).fetchall()
        return [(m, int(sd or 0), json.loads(tm) if tm else {}) for m, sd, tm in rows]

    def _epoch_count(self, run_id: int) -> int:
        return int(self.db.execute("SELECT count(*) FROM epochs WHERE run_id = ?", [run_id]).fetchone()[0])

    def list_runs(self) -> list[RunRow]:
        counts = dict(self.db.execute("SELECT run_id, count(*) FROM epochs GROUP BY run_id").fetchall())
        return [RunRow.from_row(r, counts.get(r["id"], 0)) for r in self.db["runs"].rows_where(order_by="id desc")]

    def epochs(self, run_id: int) -> list[dict]:
        """Epoch rows of a run in order, JSON columns decoded."""
        out = []
        for r in self.db["epochs"].rows_where("run_id = ?", [run_id], order_by="epoch"):
            d = dict(r)
            for k in ("train_losses", "val_metrics", "z_norm", "u_norm", "kappa_hist", "rec_error", "kappa_edges",
                      "steps"):
                if k in d:
                    d[k] = json.loads(d[k]) if d[k] else ({} if k not in ("kappa_hist", "kappa_edges", "steps") else [])
            if d.get("val_score") is None:
                d["val_score"] = float("nan")
            out.append(d)
        return out

    def val_curve(self, run_id: int) -> tuple[list[int], list[float]]:
        rows = self.db.execute("SELECT epoch, val_score FROM epochs WHERE run_id = ? ORDER BY epoch",
                               [run_id]).fetchall()
        return [int(e) for e, _ in rows], [float(v) if v is not None else float("nan") for _, v in rows]

    def delete_run(self, run_id: int) -> None:
        """Delete a run and everything recorded about it (its run folder on disk is left alone)."""
        with self.db.atomic():
            self.db.execute("DELETE FROM inspections WHERE run_id = ?", [run_id])
            self.db.execute("DELETE FROM epochs WHERE run_id = ?", [run_id])
            self.db.execute("DELETE FROM runs WHERE id = ?", [run_id])

    def mark_interrupted_runs(self) -> list[int]:
        """Runs left "running" by an app that was killed become "crashed" (resumable). Call once at start."""
        ids = [int(r[0]) for r in self.db.execute("SELECT id FROM runs WHERE status = ?", [RUNNING]).fetchall()]
        if ids:
            with self.db.atomic():
                for i in ids:
                    self.db["runs"].update(i, {"status": CRASHED,
                                               "error_message": "The app ended while this run was training."})
        return ids

    def find_run_by_checkpoint(self, path: str) -> int | None:
        try:
            target = str(Path(path).resolve())
        except OSError:
            target = str(path)
        for rid, ck in self.db.execute("SELECT id, checkpoint_path FROM runs WHERE checkpoint_path != ''"):
            try:
                if str(Path(ck).resolve()) == target:
                    return int(rid)
            except OSError:
                continue
        return None

    # --- inspections (written by the explorer) ----------------------------------------------------------
    def save_inspection(self, run_id: int, state: dict) -> int:
        """Store the explorer's state (plain JSON data) for a run; returns the inspection id."""
        with self.db.atomic():
            table = self.db["inspections"]
            table.insert({"run_id": int(run_id), "created": _now(), "state": _json(state)})
            return int(table.last_pk)

    def latest_inspection(self, run_id: int) -> dict | None:
        row = self.db.execute("SELECT state FROM inspections WHERE run_id = ? ORDER BY id DESC LIMIT 1",
                              [int(run_id)]).fetchone()
        return json.loads(row[0]) if row else None

    # --- UI state ---------------------------------------------------------------------------------------
    def set_ui(self, key: str, value: Any) -> None:
        with self.db.atomic():
            self.db["ui_state"].upsert({"key": key, "value": _json(value)}, pk="key")

    def get_ui(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM ui_state WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default


def open_store(path: str | os.PathLike | None = None) -> tuple[SessionStore, str | None]:
    """Open the session database at `path` (default: `default_db_path()`).

    Returns (store, problem): when the file cannot be used, `store` is an in-memory database and `problem` a
    message for the user naming the file (which is left untouched)."""
    target = Path(path).expanduser() if path is not None else default_db_path()
    try:
        return SessionStore(target), None
    except SessionStoreError as e:
        return SessionStore(None), (f"{e}. Sessions of this run of the app are kept in memory only and will be "
                                    f"lost when it closes; the file was left untouched — move or repair it and "
                                    f"restart.")


def runs_root(store: SessionStore) -> Path:
    """Where run folders (checkpoints) go: next to the database file, or in the user data dir."""
    if store.path is not None:
        return store.path.parent / "runs"
    from platformdirs import user_data_path
    return user_data_path(APP_NAME, appauthor=False) / "runs"


def decode_indices(text_or_list: str | Iterable[int] | None) -> list[int]:
    if text_or_list is None:
        return []
    if isinstance(text_or_list, str):
        return [int(i) for i in json.loads(text_or_list or "[]")]
    return [int(i) for i in text_or_list]
