"""One writer per run folder: a second training into a folder another process is writing to is refused (exit 2,
a message naming the folder and the holder's pid), and the folder is free again once the holder ends, however it
ended."""
from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robult_engine.cli import main as cli_main
from robult_engine.events import Failed, Finished
from robult_engine.runlock import LOCK_FILE, RunFolderBusy, RunLock, read_holder
from robult_engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]

TINY = ["--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16", "--set", "model.d_z=8",
        "--set", "model.d_u=8", "--set", "model.d_hidden=16", "--batch-size", "16", "--threads", "1", "--quiet"]


def train(out, *extra: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli_main(["train", "--method", "supervised", "--epochs", "1", "--out", str(out), *TINY, *extra])
    return rc, err.getvalue()


def test_a_second_training_into_a_busy_folder_is_refused_until_the_first_ends(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "robult_engine", "train", "--method", "supervised", "--epochs",
                              "100000", "--patience", "0", "--out", str(out), *TINY], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # the first run is set up and training
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first training never started"
            time.sleep(0.2)
        rc, err = train(out)
        assert rc == 2, err
        assert f"another process (pid {first.pid}" in err and f"is writing to {out}; choose another --out" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGKILL)  # a killed holder leaves no stale lock
        first.wait(30)
        first.stderr.close()
    rc, err = train(out)
    assert rc == 0, err
    assert (out / "best.pt").is_file() and (out / "result.json").is_file()
    assert read_holder(out) == {}  # released: no holder recorded


def test_the_lock_conflicts_in_one_process_and_is_released_on_every_exit(tmp_path, tiny_cfg):
    out = tmp_path / "run"
    with RunLock(out):
        assert read_holder(out)["pid"] == os.getpid()
        rc, err = train(out)
        assert rc == 2 and f"another process (pid {os.getpid()}" in err and str(out) in err
        final = Trainer(tiny_cfg, out_dir=out).run()
        assert isinstance(final, Failed) and final.kind == "config" and "is writing to" in final.message
        with pytest.raises(RunFolderBusy, match="choose another --out"):
            RunLock(out).acquire()
    assert (out / LOCK_FILE).is_file() and not (out / "metrics.jsonl").exists()
    # a failed run (a config error found in set-up) releases the folder, and so does a finished one
    bad = Trainer(tiny_cfg.replace(**{"data.modalities": ("nope",)}), out_dir=out).run()
    assert isinstance(bad, Failed) and "nope" in bad.message
    assert isinstance(Trainer(tiny_cfg.replace(**{"train.epochs": 1}), out_dir=out).run(), Finished)
    RunLock(out).acquire().release()
    # a trainer without a folder takes no lock; under torchrun only rank 0 writes, so only rank 0 locks
    assert Trainer(tiny_cfg)._lock_run_folder() is None


def test_only_rank_0_locks_under_torchrun(tmp_path, tiny_cfg, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert Trainer(tiny_cfg, out_dir=tmp_path)._lock_run_folder() is None
    monkeypatch.setenv("RANK", "0")
    lock = Trainer(tiny_cfg, out_dir=tmp_path)._lock_run_folder()
    assert lock is not None and lock.held
    lock.release()
