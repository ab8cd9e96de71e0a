"""benchmarks/cuda_check.py, the script prepared for a GPU machine: without a GPU it says so and exits 0; its
whole pipeline runs as a dry run on the CPU (the device under test compared with itself), so the first run on a
GPU does not fail on the script's own plumbing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cuda_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would run for real")
def test_no_gpu_is_said_and_exits_cleanly():
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device available" in proc.stdout and "nothing was checked" in proc.stdout


def test_dry_run_on_the_cpu(tmp_path):
    proc = run("--device", "cpu", "--tiny", "--json", str(tmp_path / "cc.json"), "--work", str(tmp_path / "w"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "cc.json").read_text())
    checks = report["checks"]
    assert checks["numerics_pid_synth"]["ok"] and checks["train_pid_synth"]["ok"]
    num = checks["numerics_pid_synth"]
    assert max(num["fp32_rel_err"].values()) == 0.0  # the same device and arithmetic: identical
    assert 0 < max(num["bf16_rel_err"].values()) <= 0.05 and num["bf16_grad_cosine"] > 0.99  # bf16 did round
    assert checks["train_pid_synth"]["diff"] == 0.0  # same seed, same device: the same run
    assert checks["train_pid_synth"]["cpu"]["steps_per_s"] > 0
    assert "PASS  train_pid_synth" in proc.stdout and "2-process nccl: not run" in proc.stdout
