"""The result scripts behind docs/results run end to end on a tiny PID-Synth (so they do not rot), and the
schedule study chooses each method's setting on validation only."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "data.synth_n_train=120", "--set", "train.epochs=2", "--set", "model.d_h=16",
        "--set", "model.d_z=8", "--set", "model.d_u=8", "--set", "model.d_hidden=16",
        "--set", "train.batch_size=16"]


def _run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_schedule_study_selects_on_validation(tmp_path):
    proc = _run("schedule_study.py", "--methods", "robult,supervised", "--seeds", "1", "--grid", "pid-choice",
                "--workers", "1", "--out", str(tmp_path), *TINY)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "schedule_study.json").read_text())
    assert len(data["runs"]) == 4 and all("error" not in r for r in data["runs"])
    for method, chosen in data["selected"].items():
        runs = [r for r in data["runs"] if r["method"] == method]
        best = max(runs, key=lambda r: r["val"])  # one seed: the chosen setting is the best validation run
        assert chosen["setting"] == best["setting"] and chosen["test_mean"] == best["test"]
        assert set(chosen["bits"]) == {"r", "u"} and all(0 <= v <= 1 for v in chosen["bits"].values())
    assert "selected on validation" in proc.stdout


def test_pid_probe_runs_and_reports_each_probe(tmp_path):
    # one thread: 84 small L-BFGS probes on two OpenMP threads crawl when the other core is busy
    proc = _run("pid_probe.py", "--methods", "robult", "--seeds", "1", "--threads", "1", "--out", str(tmp_path),
                *TINY)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "pid_probe.json").read_text())
    assert set(rows) == {"raw inputs", "untrained", "robult"}
    robult = rows["robult"][0]
    for key in ("r|UZ[m0] few-label", "u|U[m0]", "r|own classifier, single modalities", "u|own classifier, m0"):
        assert 0.0 <= robult[key] <= 1.0, key
    assert 0.0 <= rows["raw inputs"][0]["u|X[m0]"] <= 1.0
