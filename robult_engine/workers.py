"""Runs in worker processes: the pool of `--jobs` processes (or a Ray pool) that compare, sweep and tune train in,
and how SIGTERM and Ctrl+C end those runs (`RunsTerminated`, `report_stopped`) so no run outlives its command.
Importing this module loads no torch; a worker process imports the trainer when it gets its first job.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from .config import RunConfig


_WORKER_DATA = None  # a worker process's DatasetCache (robult_engine/data/cache.py), made on its first job


def _train_job(job: tuple) -> tuple:
    """One compare or sweep run in a worker process (spawned: nothing is inherited but this job). The data comes
    from the command's base config, as in a sequential compare: for PID-Synth the run seeds vary the labeled split
    and the model, not the generated dataset."""
    key, cfg_json, base_json, out_dir, threads, tensorboard = job
    import torch
    torch.set_num_threads(threads)
    from .data.cache import DatasetCache
    from .trainer import Trainer
    global _WORKER_DATA
    if _WORKER_DATA is None:
        _WORKER_DATA = DatasetCache(max_items=2)
    bundle = _WORKER_DATA.get(RunConfig.from_json(base_json).data)  # loaded once per worker process
    # the parent's own config (the user's flags and --config): the encoder code it names is the user's choice
    return key, Trainer(RunConfig.from_json(cfg_json), bundle, out_dir=out_dir, tensorboard=tensorboard,
                        trust_code=True).run()


class RunsTerminated(BaseException):
    """SIGTERM arrived while runs trained in worker processes. Like KeyboardInterrupt it is no Exception, so no
    `except Exception` keeps the runs going; the command ends with `TERMINATED_EXIT`."""


TERMINATED_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
INTERRUPTED_EXIT = 130  # 128 + SIGINT


def raise_terminated(signum, frame) -> None:
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the workers' clean-up short
    raise RunsTerminated()


def report_stopped(e: BaseException, out: Path, then: str) -> int:
    """The one message of a compare or sweep stopped by SIGTERM or Ctrl+C, and its exit status."""
    terminated = isinstance(e, RunsTerminated)
    print(f"\n{'terminated' if terminated else 'interrupted'}: the runs that finished are kept in {out}; {then}",
          file=sys.stderr, flush=True)
    return TERMINATED_EXIT if terminated else INTERRUPTED_EXIT


def _worker_init(parent_pid: int) -> None:
    """Set-up of each worker process: Ctrl+C is the parent's to handle (it terminates the workers), and on Linux
    the worker gets SIGTERM when its parent dies, however the parent ended (even by SIGKILL)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent_pid:  # the parent died before the line above took effect
            os._exit(1)


@contextlib.contextmanager
def sigterm_raises():
    """While open, SIGTERM raises `RunsTerminated` in the main thread (elsewhere no handler can be set), so the
    code around can end its workers before the command ends; the previous handler comes back afterwards."""
    import signal
    import threading
    installed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if installed else None
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def worker_pool(n: int, pool_factory=None):
    """`n` spawned worker processes (or `pool_factory(n)`, e.g. a Ray pool) that never outlive the command:
    SIGTERM (`sigterm_raises`), Ctrl+C or any error terminates them; a normal end closes and joins them. The
    workers also die with this process (`_worker_init`)."""
    import multiprocessing as mp
    with sigterm_raises():
        pool = (pool_factory(n) if pool_factory is not None else
                mp.get_context("spawn").Pool(n, initializer=_worker_init, initargs=(os.getpid(),)))
        try:
            yield pool
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()


def run_parallel(jobs, configs, base: RunConfig, run_dirs: dict, args: argparse.Namespace, record,
                 pool_factory=None) -> None:
    """Runs of a compare (or a sweep) in `--jobs` processes at once; each prints nothing, the parent reports each
    result. `pool_factory(n)` replaces the multiprocessing pool, e.g. a Ray pool (robult_engine/sweep.py, --ray).
    While the runs train, SIGTERM raises `RunsTerminated` here (in the main thread); it and Ctrl+C terminate the
    workers before they propagate, so no run keeps training after the command has ended (`worker_pool`)."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    work = [(key, configs[key].to_json(), base.to_json(), str(run_dirs[key]), threads, args.tensorboard)
            for key in jobs]
    if not args.quiet:
        print(f"{len(work)} runs, {args.jobs} at a time, {threads} thread(s) each", file=sys.stderr, flush=True)
    with worker_pool(args.jobs, pool_factory) as pool:
        for k, (key, final) in enumerate(pool.imap_unordered(_train_job, work), 1):
            record(k, key, final)


__all__ = ["INTERRUPTED_EXIT", "TERMINATED_EXIT", "RunsTerminated", "raise_terminated", "report_stopped",
           "run_parallel", "sigterm_raises", "worker_pool"]
