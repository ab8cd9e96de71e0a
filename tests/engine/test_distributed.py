"""Data-parallel training under torchrun (2 gloo processes on the CPU) matches a one-process run with the same
global batch.

Why the weights should match: every process builds the same global batch and keeps its contiguous half; the
contrastive loss sees the whole global batch through a differentiable all-gather; every loss is divided by its
global count and the backward pass is scaled by the world size, which DDP's gradient averaging undoes; the
modality-dropout draws and the prototype memory updates are the same on every process; the model has no batch
norm and runs with dropout 0. So the two runs compute the same gradients up to the order of float32 additions
(a sum split in two halves and all-reduced, instead of one sum).

Tolerance 1e-4 on the weights after 2 epochs: float32 reduction-order noise is ~1e-7 relative per gradient;
Adam turns each step into at most ~lr = 2e-3 per weight, so noise in near-zero gradient entries could move a
weight by a small fraction of one step. We observe ~5e-6. An actual mistake (a local instead of a global
denominator, a missing or doubled gradient path, different batches on the two processes) changes the relative
weighting of the gradient terms and moves weights by whole steps (≥ 1e-3), far above 1e-4.

Runs in CI (the default `pytest` run); about 15-30 s on 2 cores.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from robult_engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build"),
    pytest.mark.skipif(dist.is_available() and not dist.is_gloo_available(), reason="the gloo backend is missing"),
    pytest.mark.timeout(240),
]

ARGS = ["train", "--dataset", "pid-synth", "--set", "data.synth_n_train=200", "--set", "data.label_fraction=0.1",
        "--dropout", "0", "--epochs", "2", "--batch-size", "32", "--patience", "0", "--device", "cpu",
        "--threads", "1"]
TOL = 1e-4


def _run(cmd: list[str], out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd + ARGS + ["--out", str(out)], capture_output=True, text=True, timeout=200, env=env,
                          cwd=REPO)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _epoch_lines(stderr: str) -> list[tuple[float, float]]:
    """(train loss, val score) of each 'epoch k/n  train X  val score Y' progress line."""
    return [(float(a), float(b)) for a, b in re.findall(r"epoch \d+/\d+\s+train ([-\d.]+)\s+val score ([-\d.]+)",
                                                        stderr)]


@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None, reason="torchrun not found")
def test_two_process_gloo_run_matches_one_process(tmp_path):
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    one = _run([sys.executable, "-m", "robult_engine"], tmp_path / "one")
    two = _run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "robult_engine"], tmp_path / "two")

    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(tmp_path / "one" / name), load_checkpoint(tmp_path / "two" / name)
        assert a.epoch == b.epoch
        assert torch.equal(a.labeled_indices, b.labeled_indices) and a.fingerprint == b.fingerprint
        assert a.config == b.config
        assert a.model_state.keys() == b.model_state.keys()
        worst = max(float((a.model_state[k] - b.model_state[k]).abs().max()) for k in a.model_state)
        assert worst < TOL, f"{name}: weights differ by up to {worst:.3g} between 1 and 2 processes"
        for k in a.memory_state:  # the prototype memory saw the same labeled anchors
            assert torch.allclose(a.memory_state[k].float(), b.memory_state[k].float(), atol=TOL), k
    # the per-epoch mean training loss (local shares all-reduced) and the validation score agree as well
    la, lb = _epoch_lines(one.stderr), _epoch_lines(two.stderr)
    assert len(la) == len(lb) == 2, (one.stderr, two.stderr)
    for (ta, va), (tb, vb) in zip(la, lb):
        assert abs(ta - tb) <= 2e-4 and abs(va - vb) <= 2e-4
    # rank 0 alone prints the result
    assert two.stdout.count("best epoch") == 1
