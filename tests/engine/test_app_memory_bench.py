"""benchmarks/app_memory.py runs end to end (--smoke) and reports what it promises: the features' size, the
peak RSS per step with and without the baseline, and that the MOSEI-like dataset is released from the cache
once another dataset is on screen."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("scipy")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads the RSS high-water mark from /proc")
def test_app_memory_smoke(tmp_path):
    out = tmp_path / "memory.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "app_memory.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    fig = json.loads(out.read_text())
    assert fig["samples"] == 300 and fig["data_bytes"] > 0 and fig["baseline"] > 0
    assert list(fig["steps"]) == ["open MOSEI", "Dataset PID", "switch away", "switch back"]
    for step in fig["steps"].values():
        assert step["peak"] >= step["after"] > 0
    assert set(fig["pid"]) == {"text x audio", "text x vision", "audio x vision"}
    assert fig["budget"] is not None and fig["mosei_kept_after_switch"] is False  # released: not on screen
    for text in ("features' size", "baseline RSS", "peak RSS during the Dataset PID", "RSS held after switching"):
        assert text in proc.stdout
