"""One writer per run folder: an exclusive lock on `<run folder>/.lock` for as long as a run writes there.

    with RunLock("runs/x"):          # RunFolderBusy (a ConfigError) when another process holds it
        ...                          # train, write metrics.jsonl, best.pt, last.pt

The lock is an OS lock on the open file (`fcntl.flock` on POSIX, `msvcrt.locking` on Windows), so it goes
away with the process that held it, however that process ended: a killed run never leaves a stale lock. The
file holds the holder's pid, host and start time, for the message of a process that is refused. The file
itself stays in the folder (removing it would let two processes lock two different files of the same name).
Two locks on one folder conflict within one process too (each `RunLock` opens the file anew).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from .config import ConfigError

LOCK_FILE = ".lock"

try:  # POSIX
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class RunFolderBusy(ConfigError):
    """Another process (or another run of this one) is writing to the run folder."""


def _try_lock(fd: int) -> bool | None:
    """True: locked; False: another holder has it; None: this file system cannot lock files."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # byte 0; the holder's details follow it
    except OSError as e:
        if fcntl is not None and e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return None
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def read_holder(folder: str | Path) -> dict:
    """The details the current holder wrote ({} when there are none or they cannot be read)."""
    try:
        with open(Path(folder) / LOCK_FILE, "rb") as f:
            f.seek(1)  # byte 0 is the one Windows locks
            data = json.loads(f.read().decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return "another process"
    where = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    since = f", since {holder['started']}" if holder.get("started") else ""
    return f"another process (pid {pid}{where}{since})"


class RunLock:
    """The exclusive lock of one run folder (created if needed). `acquire()` raises `RunFolderBusy` naming the
    folder and the holder; `release()` is idempotent; also a context manager."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._pid = 0  # the process that took the lock (a forked child inherits the descriptor, not the lock's use)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        locked = _try_lock(fd)
        if locked is None:  # e.g. a network file system without locks: the run goes on unguarded
            os.close(fd)
            return self
        if not locked:
            os.close(fd)
            raise RunFolderBusy(f"{_describe(read_holder(self.folder))} is writing to {self.folder}; choose "
                                f"another --out or wait for it to finish")
        try:
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 1)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, b"\n" + json.dumps(info).encode("utf-8"))
        except OSError:  # the details are only for the message; the lock is what counts
            pass
        self._fd, self._pid = fd, os.getpid()
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if os.getpid() != self._pid:  # a forked child: unlocking would free the folder under its parent
            os.close(fd)
            return
        try:
            os.ftruncate(fd, 1)  # no holder any more
        except OSError:
            pass
        try:
            _unlock(fd)
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release() still lets the folder go
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
