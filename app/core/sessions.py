"""Sessions in SQLite: runs, per-epoch metrics, the explorer's inspections, UI state.

One file, opened through sqlite-utils with its `Migrations` (set "robult-studio"); migrations are ordered
functions named `mNNN_...` that are never renamed once shipped. The connection belongs to the thread that
opened it (the GUI thread): every write happens there, in a `BEGIN IMMEDIATE` transaction, as the worker's
events arrive. The file is in WAL mode with synchronous=NORMAL, so a killed app keeps every committed epoch.
Runs a killed app left "running" become "crashed" on the next start (`mark_interrupted_runs`), and can be
resumed from their run folder's last.pt.

What the store promises (docs/app.md, "What the session store promises"; tests/app/test_store_faults.py):

- A write that finds the file locked by another program waits at most WRITE_BUSY_TIMEOUT_S (the GUI thread
  never freezes for the length of the lock), then is queued in order and retried with backoff
  (`flush_pending`: the window's timer, and every later write). A queued epoch is never dropped, and a run's
  final status is queued behind its epochs, so the file never says "finished" while an epoch is missing.
  `catch_up_epochs` adds the epochs the database lacks from the run folder's metrics.jsonl.
- A file that is read-only, damaged (`PRAGMA quick_check` at open), locked, not a database, or written by a
  newer version (migrations this one does not know) is never written: `open_store` shows what can still be
  read from a read-only or damaged file in an in-memory copy (else an empty in-memory database), and returns a
  message that names the file and what is wrong.
- A live run (or sweep) has one owner: its row records the owning process (pid, host, start time), a random
  token per opened store and a heartbeat renewed at each epoch and every HEARTBEAT_S. `mark_interrupted_runs`
  marks "crashed" only the runs whose owner is provably gone (`SessionStore.owner_gone`), so a second app on
  the same file leaves the first one's live run alone.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import secrets
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils
from sqlite_utils import Migrations

from .state import CRASHED, RUNNING

APP_NAME = "RobultStudio"
DB_ENV = "ROBULT_STUDIO_DB"
DB_FILENAME = "sessions.sqlite"
LOCK_TIMEOUT_S = 2.0  # at open: how long to wait for another process's lock before the file counts as locked
WRITE_BUSY_TIMEOUT_S = 0.25  # a write on the GUI thread waits this long for a lock, then is queued and retried
RETRY_MIN_S, RETRY_MAX_S = 0.25, 4.0  # backoff between two tries of the queued writes
CLOSE_FLUSH_TIMEOUT_S = 5.0  # how long `close` waits for a lock to write what is still queued
HEARTBEAT_S = 30.0  # the owner of a live run or sweep renews its heartbeat at least this often
STALE_AFTER_S = 600.0  # a live row whose heartbeat is older than this belongs to an owner that is gone (or hung)
SALVAGE_MAX_FAILURES = 2000  # unreadable spots skipped per table when copying what a damaged file still holds

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


@migrations()
def m007_run_owners(db: sqlite_utils.Database) -> None:
    """Who drives a live run or sweep: the owning process (pid, host, start time), a random token per opened
    store, and a heartbeat (unix time) renewed at each epoch and every HEARTBEAT_S, so that a second app on the
    same file leaves a live run alone (`SessionStore.owner_gone`)."""
    for table in ("runs", "sweeps"):
        db[table].add_column("owner_pid", int, not_null_default=0)
        db[table].add_column("owner_host", str, not_null_default="")
        db[table].add_column("owner_started", str, not_null_default="")
        db[table].add_column("owner_token", str, not_null_default="")
        db[table].add_column("heartbeat", float, not_null_default=0.0)


@migrations()
def m008_kappa_quality(db: sqlite_utils.Database) -> None:
    """The quality of the soft weights κ per epoch (robult_engine/diagnostics.py): the κ-weighted precision of
    unlabeled positive pairs and the AUC of κ for right pseudo-labels (NULL where not measured)."""
    db["epochs"].add_column("kappa_precision", float)
    db["epochs"].add_column("kappa_auc", float)


OWNER_COLUMNS = ("owner_pid", "owner_host", "owner_started", "owner_token", "heartbeat")
BASELINE_KEY = "sessions/baseline"  # ui_state: the run pinned as the sessions view's baseline


class SessionStoreError(RuntimeError):
    """The session database cannot be used (or a write cannot be done now); the message names the file and the
    reason. `kind`: "locked", "readonly", "corrupt" (damaged pages), "notdb" (not a SQLite database), "newer"
    (written by a newer version), "busy" (the run is live in another app) or "other"."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True)


def _finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


_BAD = object()


def _loads(text: Any, default: Any) -> Any:
    """The JSON of a stored column; `default` for a value that is not JSON (a damaged or hand-edited row)."""
    if not isinstance(text, (str, bytes)) or not text:
        return default
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return default


def _lenient_text(raw: bytes) -> str:
    """TEXT values as str: bytes that are not UTF-8 (a damaged page) are replaced instead of failing the read."""
    return raw.decode("utf-8", "replace")


def _as_int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return default


def _as_float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _as_str(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else str(v))


# what reading a damaged file may raise: SQLite's errors, and a message of one quoting bytes that are not UTF-8
_READ_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def _retryable(e: sqlite3.Error) -> bool:
    """Errors a write may outlive — a lock, a busy or full disk, an I/O error, a file made read-only — as opposed
    to a constraint or a programming error, which would fail the same way again."""
    return type(e) in (sqlite3.OperationalError, sqlite3.DatabaseError)


def _classify(e: Exception) -> tuple[str, str]:
    """(kind, reason for the user) of an error met while opening a file."""
    if isinstance(e, UnicodeDecodeError):
        return "corrupt", "the file is damaged (its schema cannot be read)"
    msg = str(e)
    if "locked" in msg or "busy" in msg:
        return "locked", "it is locked by another program (is Robult Studio already running?)"
    if "not a database" in msg or "encrypted" in msg:
        return "notdb", "the file is not a valid SQLite database (corrupt or of another kind)"
    if "malformed" in msg or "corrupt" in msg:
        return "corrupt", f"the file is damaged ({msg})"
    if "readonly" in msg or "read-only" in msg:
        return "readonly", "the file is read-only"
    return "other", msg


def _first_problem(lines: list[str]) -> str:
    found = [ln.strip() for text in lines for ln in str(text).splitlines()
             if ln.strip() and not ln.startswith("***")]
    return found[0] if found else "not ok"


def _known_migrations() -> set[str]:
    return {m.name for m in migrations.pending(sqlite_utils.Database(memory=True))}


def _unknown_migrations(conn: sqlite3.Connection) -> list[str]:
    """The migrations of this app's set that the file has and this version does not know (a newer version)."""
    table = Migrations.migrations_table
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone():
        return []
    names = {str(n) for (n,) in conn.execute(f"SELECT name FROM [{table}] WHERE migration_set = ?",
                                              [migrations.name])}
    return sorted(names - _known_migrations())


_EXPECTED_COLUMNS: dict[str, set[str]] = {}


def _schema_problem(conn: sqlite3.Connection, migrated: bool) -> str | None:
    """What is wrong with a file's schema that `PRAGMA quick_check` does not look at (None: nothing): its text
    must be UTF-8 and, once `migrated`, every table and column this version's migrations make must be there."""
    for name, sql in conn.execute("SELECT CAST(name AS BLOB), CAST(sql AS BLOB) FROM sqlite_master"):
        try:
            bytes(name or b"").decode("utf-8")
            bytes(sql or b"").decode("utf-8")
        except UnicodeDecodeError:
            return "its schema is damaged"
    if not migrated:
        return None
    if not _EXPECTED_COLUMNS:
        fresh = sqlite_utils.Database(memory=True)
        migrations.apply(fresh)
        _EXPECTED_COLUMNS.update({t: {c.name for c in fresh[t].columns} for t in COPIED_TABLES})
    for table, expected in _EXPECTED_COLUMNS.items():
        missing = expected - {str(r[1]) for r in conn.execute(f"PRAGMA table_info([{table}])")}
        if missing:
            return f"its schema is damaged (the table {table} lacks {', '.join(sorted(missing))})"
    return None


def _newer_message(path: Path, unknown: list[str]) -> str:
    return (f"{path}: cannot use the session database: it was written by a newer Robult Studio (it has "
            f"migration{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}, which this version does not know), "
            f"and was not modified")


def _read_only_reason(path: Path) -> str | None:
    """Why the app must not write `path` (None: it may). A file without any write permission bit counts as
    read-only even for a user who could write it anyway (root): the app honours the file's mode."""
    if path.exists():
        try:
            mode = path.stat().st_mode
        except OSError:
            return None
        if not os.access(path, os.W_OK) or not mode & 0o222:
            return "the file is read-only"
    folder = path.parent
    if folder.is_dir() and not os.access(folder, os.W_OK):
        return f"its folder {folder} is read-only (SQLite keeps its journal next to the file)"
    return None


# --- the owner of a live run -----------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks after boot) of a process, from /proc (Linux); None without it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_started(pid: int) -> str:
    """An identity of the process `pid` that a later process with the same pid does not share (the boot id and
    the process's start time, Linux); "" where the platform does not tell."""
    st = _proc_stat(pid)
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{boot}/{st[1]}" if st and boot else ""


def process_alive(pid: int, started: str = "") -> bool:
    """Whether the process `pid` of this host still runs — and is the one that recorded `started`, when given
    (a pid reused after the owner ended, or after a reboot, is not the owner)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return False
    st = _proc_stat(pid)
    if st is not None and st[0] in ("Z", "X"):
        return False  # ended, not yet reaped by its parent
    if started:
        now = process_started(pid)
        if now and now != started:
            return False
    return True


def _windows_process_alive(pid: int) -> bool:
    import ctypes
    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


@dataclass(frozen=True)
class Owner:
    """The owner a store records on the runs and sweeps it starts or resumes."""
    pid: int
    host: str
    started: str  # process_started(pid)
    token: str  # random, one per opened store

    @classmethod
    def this_process(cls) -> "Owner":
        return cls(os.getpid(), socket.gethostname(), process_started(os.getpid()), secrets.token_hex(8))


@dataclass
class _Write:
    """One logical write — statements run in one transaction — as the queue keeps it."""
    statements: list[tuple[str, list]]
    run_id: int | None = None
    epochs: tuple[int, ...] = ()


# --- reading what a read-only or damaged file still holds ------------------------------------------------------
COPIED_TABLES = ("runs", "epochs", "inspections", "ui_state", "sweeps", "sweep_cells")
_JSON_COLUMNS = {
    "runs": ("config", "labeled_indices", "package_versions", "test_metrics"),
    "epochs": ("train_losses", "val_metrics", "z_norm", "u_norm", "kappa_hist", "rec_error", "kappa_edges", "steps"),
    "inspections": ("state",), "ui_state": ("value",),
    "sweeps": ("methods", "label_fractions", "missing", "config", "realised", "rates"),
}
_INT_COLUMNS = {"runs": ("id",), "epochs": ("run_id", "epoch"), "inspections": ("id", "run_id"), "sweeps": ("id",),
                "sweep_cells": ("sweep_id", "seed")}
_TEXT_COLUMNS = {"runs": ("created", "method", "dataset", "status"), "ui_state": ("key",),
                 "sweeps": ("created", "status", "dataset"), "sweep_cells": ("missing", "method")}


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write `path`: `immutable=1` (no lock taken, no -wal or -shm file made) unless a
    write-ahead log next to it holds content, which `mode=ro` reads."""
    if not path.is_file():
        raise SessionStoreError(f"{path}: cannot open the session database (there is no such file)")
    wal = path.with_name(path.name + "-wal")
    modes = ["mode=ro", "immutable=1"] if wal.is_file() and wal.stat().st_size > 0 else ["immutable=1", "mode=ro"]
    error: Exception | None = None
    for mode in modes:
        conn = None
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=LOCK_TIMEOUT_S)
            conn.text_factory = _lenient_text
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            return conn
        except _READ_ERRORS as e:
            error = e
            if conn is not None:
                conn.close()
    kind, reason = _classify(error)
    raise SessionStoreError(f"{path}: nothing can be read from the session database: {reason}",
                            "notdb" if kind in ("notdb", "corrupt") else kind)


def _readable_rows(src: sqlite3.Connection, table: str, cols: list[str]) -> list[tuple]:
    """The rows of `table` that can still be read, in rowid order. A scan that meets a damaged page resumes
    past it (one rowid at a time, then in growing jumps), so a bad page costs only the rows it held."""
    select = (f"SELECT rowid, {', '.join(f'[{c}]' for c in cols)} FROM [{table}] WHERE rowid >= ? "
              f"ORDER BY rowid")
    out: list[tuple] = []
    pos, failures, top = -(2 ** 63), 0, 2 ** 63 - 1
    while True:
        try:
            for row in src.execute(select, [pos]):
                out.append(tuple(row[1:]))
                pos = min(top, int(row[0]) + 1)
            return out
        except _READ_ERRORS:
            failures += 1
            if failures > SALVAGE_MAX_FAILURES or pos >= top:
                return out
            pos = min(top, pos + (1 if failures <= 64 else 2 ** min(failures - 64, 62)))


def _plausible(table: str, row: dict) -> bool:
    """Whether a row read from a damaged file can be shown: keys are integers, names are texts, JSON is JSON."""
    if any(not isinstance(row.get(c), int) for c in _INT_COLUMNS.get(table, ()) if c in row):
        return False
    if any(not isinstance(row.get(c), str) for c in _TEXT_COLUMNS.get(table, ()) if c in row):
        return False
    return all(row.get(c) is None or _loads(row[c], _BAD) is not _BAD for c in _JSON_COLUMNS.get(table, ())
               if c in row)


def _nan_for_none(v: Any) -> Any:
    """metrics.jsonl writes a number that is not finite as null; the database keeps NaN (the app's curves)."""
    if isinstance(v, dict):
        return {str(k): _nan_for_none(x) for k, x in v.items()}
    return float("nan") if v is None else v


def _epoch_row_from_log(run_id: int, rec: dict) -> dict:
    """The epochs row of one metrics.jsonl record (robult_engine/runlog.py); the log keeps neither the step
    losses nor the κ bin edges, so those are empty."""
    def obj(key: str, default: Any) -> Any:
        v = rec.get(key)
        return v if isinstance(v, type(default)) else default

    def num(key: str) -> float | None:
        v = rec.get(key)
        return _finite_or_none(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return {"run_id": int(run_id), "epoch": int(rec["epoch"]), "train_losses": _json(_nan_for_none(obj("train", {}))),
            "val_metrics": _json(_nan_for_none(obj("val", {}))), "val_score": num("val_score"),
            "z_norm": _json(_nan_for_none(obj("z_norm", {}))), "u_norm": _json(_nan_for_none(obj("u_norm", {}))),
            "kappa_hist": _json(obj("kappa_hist", [])), "elapsed": num("elapsed_s") or 0.0,
            "rec_error": _json(_nan_for_none(obj("rec_error", {}))), "kappa_edges": "[]",
            "pu_weight_mean": num("kappa_mean"), "pseudo_label_acc": num("pseudo_label_acc"), "steps": "[]",
            "kappa_precision": num("kappa_precision"), "kappa_auc": num("kappa_auc")}


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
        # every value is coerced: a row of a damaged or hand-edited file is shown as well as it can be
        return cls(id=_as_int(r["id"]), created=_as_str(r["created"]), name=_as_str(r["name"]),
                   method=_as_str(r["method"]), dataset=_as_str(r["dataset"]), config_json=_as_str(r["config"]),
                   seed=_as_int(r["seed"]), label_fraction=_as_float(r["label_fraction"]) or 0.0,
                   status=_as_str(r["status"]), best_score=_as_float(r["best_score"]),
                   best_epoch=_as_int(r["best_epoch"], -1), checkpoint_path=_as_str(r["checkpoint_path"]),
                   run_dir=_as_str(r["run_dir"]), error_message=_as_str(r["error_message"]),
                   epochs_done=epochs_done, comparison=_as_str(r.get("comparison")))


class SessionStore:
    """The session database. Use from the thread that created it (the GUI thread)."""

    def __init__(self, path: str | os.PathLike | None, *, apply_migrations: bool = True) -> None:
        """`path` None or ":memory:" gives an in-memory database. Raises SessionStoreError (with its `kind`)
        for a file that is read-only, damaged, not a database, locked by another process, written by a newer
        version, or cannot be created — before anything is written to it."""
        self.in_memory = path is None or str(path) == ":memory:"
        self.path = None if self.in_memory else Path(path).expanduser()
        self.source: Path | None = None  # for a copy in memory (`copy_of`): the file it was read from
        self.owner = Owner.this_process()
        self._pending: list[_Write] = []  # writes that met a lock, in order (`flush_pending`)
        self._retry_at = 0.0
        self._backoff = 0.0
        self.last_write_error = ""  # why the queued writes wait ("" when none does)
        self._heartbeat_at = 0.0
        self.closed = False
        if not self.in_memory:
            why = _read_only_reason(self.path)
            if why:
                raise SessionStoreError(f"{self.path}: cannot use the session database: {why}", "readonly")
        try:
            if self.in_memory:
                conn = sqlite3.connect(":memory:")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=LOCK_TIMEOUT_S)
        except (OSError, sqlite3.Error) as e:
            raise SessionStoreError(f"{path}: cannot open the session database ({e})") from None
        conn.text_factory = _lenient_text
        try:
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA foreign_keys = ON")
            # reading the schema fails at once on a file that is not a SQLite database
            self.db.execute("SELECT count(*) FROM sqlite_master").fetchall()
            if not self.in_memory:
                # nothing is written before the file is known to be sound and of a schema this version knows:
                # quick_check reads every page (O(file size), a fraction of a second for a session file)
                problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(10)").fetchall()]
                if problems != ["ok"]:
                    raise SessionStoreError(f"{self.path}: cannot use the session database: the file is damaged "
                                            f"(SQLite's integrity check: {_first_problem(problems)})", "corrupt")
                why = _schema_problem(conn, migrated=False)
                if why:
                    raise SessionStoreError(f"{self.path}: cannot use the session database: the file is damaged "
                                            f"({why})", "corrupt")
                unknown = _unknown_migrations(conn)
                if unknown:
                    raise SessionStoreError(_newer_message(self.path, unknown), "newer")
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
                why = None if self.in_memory else _schema_problem(conn, migrated=True)
                if why:
                    raise SessionStoreError(f"{self.path}: cannot use the session database: the file is damaged "
                                            f"({why})", "corrupt")
            # from now on a write waits only briefly for another program's lock (the GUI thread must not
            # freeze), then is queued and retried (`flush_pending`)
            conn.execute(f"PRAGMA busy_timeout = {int(WRITE_BUSY_TIMEOUT_S * 1000)}")
            self._owned = "owner_token" in {c.name for c in self.db["runs"].columns}
        except SessionStoreError:
            conn.close()
            raise
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            conn.close()
            kind, reason = _classify(e)
            raise SessionStoreError(f"{self.path}: cannot use the session database: {reason}", kind) from None

    @classmethod
    def copy_of(cls, path: str | os.PathLike) -> tuple["SessionStore", dict[str, int]]:
        """An in-memory store holding what can still be read from the file at `path` (read-only or damaged),
        which is opened read-only and never written. Returns (store, rows copied per table). Rows of a damaged
        page are skipped, and so are rows that cannot be shown (keys that are not integers, JSON that is not
        JSON). Raises SessionStoreError when nothing can be read (kind "notdb"), or for a file of a newer
        version (kind "newer")."""
        path = Path(path).expanduser()
        src = _open_read_only(path)
        try:
            try:
                tables = {str(n) for (n,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            except _READ_ERRORS as e:
                raise SessionStoreError(f"{path}: nothing can be read from the session database: "
                                        f"{_classify(e)[1]}", "notdb") from None
            try:
                unknown = _unknown_migrations(src)
            except _READ_ERRORS:
                unknown = []  # the record of migrations is unreadable: copy what fits this version's tables
            if unknown:
                raise SessionStoreError(_newer_message(path, unknown), "newer")
            store = cls(None)
            counts = store._copy_rows(src, tables)
        finally:
            src.close()
        store.source = path
        return store, counts

    def _copy_rows(self, src: sqlite3.Connection, tables: set[str]) -> dict[str, int]:
        conn = self.db.conn
        conn.execute("PRAGMA foreign_keys = OFF")  # a run may be lost with a damaged page and its epochs not
        counts: dict[str, int] = {}
        for table in COPIED_TABLES:
            if table not in tables:
                continue
            try:
                src_cols = [str(r[1]) for r in src.execute(f"PRAGMA table_info([{table}])")]
            except _READ_ERRORS:
                continue
            ours = {c.name for c in self.db[table].columns}
            cols = [c for c in src_cols if c in ours]
            if not cols:
                continue
            insert = (f"INSERT OR IGNORE INTO [{table}] ({', '.join(f'[{c}]' for c in cols)}) "
                      f"VALUES ({', '.join('?' * len(cols))})")
            kept = 0
            conn.execute("BEGIN")
            for values in _readable_rows(src, table, cols):
                if not _plausible(table, dict(zip(cols, values))):
                    continue
                try:
                    kept += conn.execute(insert, values).rowcount
                except sqlite3.Error:
                    continue
            conn.execute("COMMIT")
            counts[table] = kept
        conn.execute("PRAGMA foreign_keys = ON")
        return counts

    @property
    def location(self) -> str:
        if self.source is not None:
            return f"memory (a copy of {self.source}, not saved)"
        return "memory (not saved)" if self.in_memory else str(self.path)

    def close(self) -> None:
        """Write what is still queued (waiting up to CLOSE_FLUSH_TIMEOUT_S for a lock), then close. What still
        cannot be written is reported on stderr: the run folders' metrics.jsonl keep those epochs, and the next
        start adds them to the database when it marks their run crashed."""
        if self._pending:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute(f"PRAGMA busy_timeout = {int(CLOSE_FLUSH_TIMEOUT_S * 1000)}")
                self.flush_pending(force=True)
            if self._pending:
                print(f"robult-studio: {self.pending_summary()} could not be written to {self.location} "
                      f"({self.last_write_error}); the run folders' metrics.jsonl keep the epochs, and the next "
                      f"start adds them to the database.", file=sys.stderr)
        self.closed = True
        self.db.close()

    # --- writes: at once, or queued and retried ---------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE … COMMIT: the write lock is taken first (waiting up to the busy timeout), so a
        transaction never fails half-way for a lock; anything that raises rolls it back. Inside a transaction
        the caller opened (sqlite-utils' `db.atomic()`), a savepoint of it instead."""
        conn = self.db.conn
        if conn.in_transaction:
            with self.db.atomic():
                yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _submit(self, write: _Write) -> bool:
        """Write now or, when the file is locked (or full, or failing), queue the write behind those already
        waiting. Returns True when it is in the database."""
        if self._pending:
            self._pending.append(write)
            return self.flush_pending()
        try:
            with self._transaction() as conn:
                for sql, args in write.statements:
                    conn.execute(sql, args)
        except sqlite3.Error as e:
            if not _retryable(e):
                raise
            self._pending.append(write)
            self._wait_after(e)
            return False
        return True

    def _write_now(self, statements: list[tuple[str, list]], what: str) -> sqlite3.Cursor:
        """Write at once (after what is queued) or raise SessionStoreError: for writes the caller needs done
        now (a new run's id, a deletion the user sees)."""
        try:
            if not self.flush_pending(force=True):
                raise sqlite3.OperationalError(self.last_write_error)
            with self._transaction() as conn:
                cur = None
                for sql, args in statements:
                    cur = conn.execute(sql, args)
            return cur
        except sqlite3.Error as e:
            if not _retryable(e):
                raise
            kind, reason = _classify(e)
            raise SessionStoreError(f"{self.location}: cannot {what}: {reason}", kind) from None

    def _wait_after(self, e: sqlite3.Error) -> None:
        self.last_write_error = str(e)
        self._backoff = min(RETRY_MAX_S, max(RETRY_MIN_S, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff

    def flush_pending(self, force: bool = False) -> bool:
        """Write the queued writes, in order and in one transaction — when their backoff (RETRY_MIN_S doubling
        to RETRY_MAX_S) allows, or at once with `force`. Returns True when nothing waits any more."""
        if not self._pending:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        try:
            with self._transaction() as conn:
                for w in self._pending:
                    for sql, args in w.statements:
                        conn.execute(sql, args)
        except sqlite3.Error as e:
            if not _retryable(e):
                raise
            self._wait_after(e)
            return False
        self._pending.clear()
        self._backoff, self._retry_at, self.last_write_error = 0.0, 0.0, ""
        return True

    def pending_writes(self) -> int:
        """How many writes wait in the queue."""
        return len(self._pending)

    def pending_epochs(self, run_id: int | None = None) -> list[int]:
        """The epochs (of `run_id`, or of every run) that wait in the queue."""
        return [e for w in self._pending if run_id is None or w.run_id == run_id for e in w.epochs]

    def pending_summary(self) -> str:
        """"3 epochs and 1 other change" — what waits in the queue, for a message."""
        epochs = len({(w.run_id, e) for w in self._pending for e in w.epochs})
        others = sum(1 for w in self._pending if not w.epochs)
        parts = ([_plural(epochs, "epoch")] if epochs else []) + ([_plural(others, "other change")] if others else [])
        return " and ".join(parts) or "nothing"

    def tick(self, force: bool = False) -> bool:
        """What the window's timer calls (GUI thread): retry the queued writes when their backoff allows, and
        renew the heartbeat of the live runs and sweeps this store owns every HEARTBEAT_S. Returns True when
        nothing waits."""
        if self.closed:
            return True
        done = self.flush_pending(force=force)
        now = time.monotonic()
        if done and now >= self._heartbeat_at:
            self._heartbeat_at = now + HEARTBEAT_S
            self.heartbeat()
        return done

    # --- owners of live runs and sweeps ----------------------------------------------------------------------
    def owner_fields(self) -> dict[str, Any]:
        """The owner columns of a run or sweep this store starts or resumes now ({} on a file without them)."""
        if not self._owned:
            return {}
        o = self.owner
        return {"owner_pid": o.pid, "owner_host": o.host, "owner_started": o.started, "owner_token": o.token,
                "heartbeat": time.time()}

    def owner_gone(self, pid: Any, host: Any, started: Any, token: Any, heartbeat: Any,
                   now: float | None = None) -> bool:
        """Whether the owner recorded on a live row is provably gone, so the row may be marked crashed (or
        interrupted): it is this very store (rows are marked at start, before the store owns a live one); or
        its heartbeat is older than STALE_AFTER_S, or missing (a row of an older version); or it is a process
        of this host that no longer runs (`process_alive`). A live owner on another host keeps its row until
        its heartbeat is stale."""
        now = time.time() if now is None else now
        if token and token == self.owner.token:
            return True
        beat = _as_float(heartbeat) or 0.0
        if beat <= 0.0 or now - beat > STALE_AFTER_S:
            return True
        if host == self.owner.host:
            return not process_alive(_as_int(pid), _as_str(started))
        return False

    def orphaned(self, table: str, status: str = RUNNING) -> list[int]:
        """The ids of the rows of `table` ("runs" or "sweeps") with `status` whose owner is provably gone."""
        cols = ", ".join(OWNER_COLUMNS) if self._owned else "0, '', '', '', 0"
        rows = self.db.execute(f"SELECT id, {cols} FROM [{table}] WHERE status = ? ORDER BY id", [status]).fetchall()
        return [_as_int(r[0]) for r in rows if self.owner_gone(*r[1:])]

    def heartbeat(self) -> None:
        """Renew the heartbeat of the live runs and sweeps this store owns (best effort: a lock skips it)."""
        if not self._owned:
            return
        tables = [t for t in ("runs", "sweeps") if t in self.db.table_names()]
        args = [RUNNING, self.owner.token]
        try:
            if not any(self.db.execute(f"SELECT 1 FROM [{t}] WHERE status = ? AND owner_token = ? LIMIT 1",
                                       args).fetchone() for t in tables):
                return
            with self._transaction() as conn:
                for t in tables:
                    conn.execute(f"UPDATE [{t}] SET heartbeat = ? WHERE status = ? AND owner_token = ?",
                                 [time.time(), *args])
        except sqlite3.Error as e:
            if not _retryable(e):
                raise

    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self.db)]

    # --- runs -------------------------------------------------------------------------------------------
    def create_run(self, config, *, name: str = "", run_dir: str = "", dataset: str | None = None) -> int:
        """A new run row with status "running", owned by this store; `config` is a RunConfig. Returns the run
        id. Raises SessionStoreError when the file stays locked (the run is then not started)."""
        row = {
            "created": _now(), "name": name, "method": config.method,
            "dataset": dataset if dataset is not None else config.data.dataset, "config": config.to_json(),
            "seed": int(config.seed), "label_fraction": float(config.data.label_fraction),
            "labeled_indices": "[]", "package_versions": _json(package_versions()), "status": RUNNING,
            "best_score": None, "best_epoch": -1, "checkpoint_path": "", "run_dir": run_dir,
            "error_message": "", **self.owner_fields(),
        }
        sql = f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
        return int(self._write_now([(sql, list(row.values()))], "record a new run").lastrowid)

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
        if fields.get("status") == RUNNING:
            fields.update(self.owner_fields())  # started or resumed here: this store owns the live run
        sets = ", ".join(f"{k} = ?" for k in fields)
        return self._submit(_Write([(f"UPDATE runs SET {sets} WHERE id = ?", [*fields.values(), int(run_id)])],
                                   run_id=int(run_id)))

    def set_status(self, run_id: int, status: str, *, error: str | None = None) -> bool:
        fields: dict[str, Any] = {"status": status}
        if error is not None:
            fields["error_message"] = error
        return self.update_run(run_id, **fields)

    def add_epoch(self, run_id: int, ev, steps: Iterable[Any] = ()) -> bool:
        """Record an EpochEnded event (and the run's best so far, and the owner's heartbeat) in one transaction;
        `steps` are the epoch's StepEnded events, kept as [step, global step, total steps, elapsed s, lr,
        {loss: value}] rows. Returns False when the write was queued (the file is locked): it is kept, in order,
        and written by a later `flush_pending`."""
        step_rows = [[int(s.step), int(s.global_step), int(s.total_steps), round(float(s.elapsed_s), 4),
                      float(s.lr), {k: _finite_or_none(v) for k, v in s.losses.items()}] for s in steps]
        row = {
            "run_id": run_id, "epoch": int(ev.epoch), "train_losses": _json(ev.train_losses),
            "val_metrics": _json(ev.val_metrics), "val_score": _finite_or_none(ev.val_score),
            "z_norm": _json(ev.z_norm), "u_norm": _json(ev.u_norm), "kappa_hist": _json(list(ev.pu_weight_hist)),
            "elapsed": float(ev.elapsed_s), "rec_error": _json(ev.rec_error),
            "kappa_edges": _json(list(ev.pu_weight_edges)), "pu_weight_mean": _finite_or_none(ev.pu_weight_mean),
            "pseudo_label_acc": _finite_or_none(ev.pseudo_label_acc), "steps": _json(step_rows),
            "kappa_precision": _finite_or_none(getattr(ev, "kappa_precision", None)),
            "kappa_auc": _finite_or_none(getattr(ev, "kappa_auc", None)),
        }
        statements = [_upsert_epoch(row)]
        if ev.is_best:
            upd: dict[str, Any] = {"best_score": _finite_or_none(ev.val_score), "best_epoch": int(ev.epoch)}
            if ev.checkpoint_path:
                upd["checkpoint_path"] = ev.checkpoint_path
            statements.append((f"UPDATE runs SET {', '.join(f'{k} = ?' for k in upd)} WHERE id = ?",
                               [*upd.values(), int(run_id)]))
        if self._owned:
            statements.append(("UPDATE runs SET heartbeat = ? WHERE id = ? AND owner_token = ?",
                               [time.time(), int(run_id), self.owner.token]))
        return self._submit(_Write(statements, run_id=int(run_id), epochs=(int(ev.epoch),)))

    def catch_up_epochs(self, run_id: int) -> int:
        """Add the epochs that the run folder's metrics.jsonl (robult_engine/runlog.py) holds and the database
        lacks — neither stored nor queued — without their step losses and κ bin edges, which the log does not
        keep; the run's best moves to the log's last best epoch when that epoch is among them. Returns how many
        were added (written now, or queued behind a lock)."""
        row = self.db.execute("SELECT run_dir, best_epoch FROM runs WHERE id = ?", [int(run_id)]).fetchone()
        if row is None or not isinstance(row[0], str) or not row[0]:
            return 0
        from robult_engine.runlog import read_run_log
        try:
            records = {int(r["epoch"]): r for r in read_run_log(row[0])}
        except (OSError, ValueError, TypeError):
            return 0
        have = {_as_int(e) for (e,) in self.db.execute("SELECT epoch FROM epochs WHERE run_id = ?", [int(run_id)])}
        have |= set(self.pending_epochs(int(run_id)))
        statements, added = [], []
        for epoch in sorted(set(records) - have):
            try:
                statements.append(_upsert_epoch(_epoch_row_from_log(int(run_id), records[epoch]), replace=False))
            except (TypeError, ValueError, KeyError):
                continue
            added.append(epoch)
        if not added:
            return 0
        bests = [e for e, r in records.items() if r.get("is_best") is True]
        if bests and max(bests) in added and max(bests) >= _as_int(row[1], -1):
            rec = records[max(bests)]
            score = rec.get("val_score") if isinstance(rec.get("val_score"), (int, float)) else None
            statements.append(("UPDATE runs SET best_score = ?, best_epoch = ? WHERE id = ?",
                               [_finite_or_none(score), max(bests), int(run_id)]))
        self._submit(_Write(statements, run_id=int(run_id), epochs=tuple(added)))
        return len(added)

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
            r[k] = _loads(r.get(k), None)
        return r

    def comparison_runs(self, comparison: str) -> list[dict]:
        """The finished runs of a comparison, in the order they were queued: (method, seed, test metrics)."""
        rows = self.db.execute("SELECT method, seed, test_metrics FROM runs WHERE comparison = ? AND status = ? "
                               "ORDER BY id", [comparison, "finished"]).fetchall()
        return [(m, _as_int(sd), _loads(tm, {})) for m, sd, tm in rows]

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
                    empty = [] if k in ("kappa_hist", "kappa_edges", "steps") else {}
                    d[k] = _loads(d[k], empty)
                    if not isinstance(d[k], type(empty)):  # a damaged or hand-edited row
                        d[k] = empty
            d["epoch"] = _as_int(d.get("epoch"))
            d["val_score"] = _as_float(d.get("val_score"))
            if d["val_score"] is None:
                d["val_score"] = float("nan")
            out.append(d)
        return out

    def val_curve(self, run_id: int) -> tuple[list[int], list[float]]:
        rows = self.db.execute("SELECT epoch, val_score FROM epochs WHERE run_id = ? ORDER BY epoch",
                               [run_id]).fetchall()
        return [_as_int(e) for e, _ in rows], [_as_float(v) if _as_float(v) is not None else float("nan")
                                                for _, v in rows]

    def delete_run(self, run_id: int) -> None:
        """Delete a run and everything recorded about it (its run folder on disk is left alone). Raises
        SessionStoreError when the file stays locked, or when the run is training in another app (its owner is
        not gone); nothing is deleted then."""
        if self._owned:
            row = self.db.execute(f"SELECT status, {', '.join(OWNER_COLUMNS)} FROM runs WHERE id = ?",
                                  [int(run_id)]).fetchone()
            if row is not None and row[0] == RUNNING and not self.owner_gone(*row[1:]):
                raise SessionStoreError(f"{self.location}: run #{run_id} is training in another Robult Studio "
                                        f"(process {row[1]} on {row[2]}); stop it there first", "busy")
        # a pinned baseline that is deleted is unpinned in the same transaction
        self._write_now([("DELETE FROM inspections WHERE run_id = ?", [run_id]),
                         ("DELETE FROM epochs WHERE run_id = ?", [run_id]),
                         ("DELETE FROM ui_state WHERE key = ? AND value = ?", [BASELINE_KEY, _json(int(run_id))]),
                         ("DELETE FROM runs WHERE id = ?", [run_id])], f"delete run #{run_id}")

    # --- the pinned baseline (the sessions view) ---------------------------------------------------------
    def pin_baseline(self, run_id: int | None) -> None:
        """Pin a run as the sessions view's baseline (None: unpin), kept in ui_state; queued like any UI state
        when the file is locked."""
        if run_id is None:
            self._submit(_Write([("DELETE FROM ui_state WHERE key = ?", [BASELINE_KEY])]))
        else:
            self.set_ui(BASELINE_KEY, int(run_id))

    def baseline_run_id(self) -> int | None:
        """The pinned baseline's run id; None when none is pinned or its run is gone."""
        v = self.get_ui(BASELINE_KEY)
        if not isinstance(v, int) or isinstance(v, bool):
            return None
        return v if self.db.execute("SELECT 1 FROM runs WHERE id = ?", [v]).fetchone() else None

    def run_results(self) -> list[dict]:
        """Every run as the baseline comparison reads it: id, method, seed, comparison, status, config and test
        metrics (JSON decoded; a damaged value reads as empty), in id order."""
        rows = self.db.execute("SELECT id, method, seed, comparison, status, config, test_metrics FROM runs "
                               "ORDER BY id").fetchall()
        return [{"id": _as_int(i), "method": _as_str(m), "seed": _as_int(sd), "comparison": _as_str(c),
                 "status": _as_str(st), "config": _loads(cfg, {}), "test_metrics": _loads(tm, {})}
                for i, m, sd, c, st, cfg, tm in rows]

    def mark_interrupted_runs(self) -> list[int]:
        """Runs left "running" by an app that is gone become "crashed" (resumable), with the epochs their run
        folder's metrics.jsonl holds that the database lacks (`catch_up_epochs`). A run whose owner may still
        be alive — another app on the same file — is left alone (`owner_gone`). Call once at start, before
        this store starts a run. A lock only delays the writes (they are queued)."""
        ids = self.orphaned("runs")
        for i in ids:
            self.catch_up_epochs(i)
            self.update_run(i, status=CRASHED, error_message="The app ended while this run was training.")
        return ids

    def find_run_by_checkpoint(self, path: str) -> int | None:
        try:
            target = str(Path(path).resolve())
        except (OSError, ValueError):
            target = str(path)
        for rid, ck in self.db.execute("SELECT id, checkpoint_path FROM runs WHERE checkpoint_path != ''"):
            try:
                if str(Path(ck).resolve()) == target:
                    return int(rid)
            except (OSError, ValueError, TypeError):
                continue
        return None

    # --- inspections (written by the explorer) ----------------------------------------------------------
    def save_inspection(self, run_id: int, state: dict) -> int:
        """Store the explorer's state (plain JSON data) for a run; returns the inspection id. Raises
        SessionStoreError when the file stays locked."""
        return int(self._write_now([("INSERT INTO inspections (run_id, created, state) VALUES (?, ?, ?)",
                                     [int(run_id), _now(), _json(state)])], "save the inspection").lastrowid)

    def latest_inspection(self, run_id: int) -> dict | None:
        row = self.db.execute("SELECT state FROM inspections WHERE run_id = ? ORDER BY id DESC LIMIT 1",
                              [int(run_id)]).fetchone()
        return _loads(row[0], None) if row else None

    # --- UI state ---------------------------------------------------------------------------------------
    def set_ui(self, key: str, value: Any) -> None:
        """Queued like an epoch when the file is locked."""
        self._submit(_Write([("INSERT INTO ui_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                              "value = excluded.value", [key, _json(value)])]))

    def get_ui(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM ui_state WHERE key = ?", [key]).fetchone()
        return _loads(row[0], default) if row else default


def _upsert_epoch(row: dict, replace: bool = True) -> tuple[str, list]:
    """The statement that writes an epochs row: replacing an earlier row of the same epoch (a resumed run
    trains it again), or, with replace=False, only where there is none."""
    cols = list(row)
    sql = f"INSERT INTO epochs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) ON CONFLICT(run_id, epoch) "
    sql += ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("run_id", "epoch"))
            if replace else "DO NOTHING")
    return sql, [row[c] for c in cols]


_ADVICE = {
    "readonly": "make it writable (or move it to a writable folder) and restart to record runs in it",
    "corrupt": "keep it for repair (the sqlite3 shell's .recover command reads what is left), move it away and "
               "restart to begin a new one",
    "newer": "open it with the newer Robult Studio that wrote it, or start this one with another file (--db or "
             "$ROBULT_STUDIO_DB)",
}


def open_store(path: str | os.PathLike | None = None) -> tuple[SessionStore, str | None]:
    """Open the session database at `path` (default: `default_db_path()`).

    Returns (store, problem). When the file cannot be used it is left untouched (never written, deleted or
    moved), and `problem` is a message for the user that names the file, says what is wrong and what the app
    does instead:

    - read-only or damaged: `store` is a copy in memory of what can still be read from the file (its runs are
      shown; new runs and changes are kept in memory only);
    - locked, not a database, written by a newer version, or unreadable: `store` is an empty in-memory
      database."""
    target = Path(path).expanduser() if path is not None else default_db_path()
    try:
        return SessionStore(target), None
    except SessionStoreError as e:
        err = e
    if err.kind in ("readonly", "corrupt"):
        try:
            store, counts = SessionStore.copy_of(target)
        except SessionStoreError as e:
            if e.kind == "newer":
                err = e
        else:
            held = f"{_plural(counts.get('runs', 0), 'run')}, {_plural(counts.get('epochs', 0), 'epoch')}"
            shown = (f"Its runs ({held}) are shown from a copy in memory" if err.kind == "readonly" else
                     f"What could still be read ({held}) is shown from a copy in memory; what the damaged pages "
                     f"held is lost")
            return store, (f"{err}. {shown}. New runs and changes are kept in memory only and will be lost when "
                           f"the app closes; the file was left untouched — {_ADVICE[err.kind]}.")
    return SessionStore(None), (f"{err}. Sessions of this run of the app are kept in memory only and will be "
                                f"lost when it closes; the file was left untouched — "
                                f"{_ADVICE.get(err.kind, 'move or repair it and restart')}.")


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
