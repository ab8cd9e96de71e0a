"""φ in the explorer's toggle path (issue 12): runs `benchmarks/toggle_latency.py` (toggle → all panels updated,
which includes the attribution panel: φ is recombined from the cached encoding inside the same slot) and also
reports the attribution panel's own share, timed around `AttributionPanel.show_sample` (φ over all 2^M
coalitions + its bar update) on every result the explorer showed.

    python benchmarks/phi_latency.py --checkpoint /path/pid-synth/best.pt --skip-robustness    # M = 3
    python benchmarks/phi_latency.py --checkpoint /path/mfeat/best.pt --skip-robustness        # M = 6

Arguments are those of toggle_latency.py; the φ figures are printed after its JSON (and added to --json).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import toggle_latency  # noqa: E402

from app.views.explorer.attribution_panel import AttributionPanel  # noqa: E402

TIMES: list[float] = []
M: list[int] = []


def _timed(orig):
    def show_sample(self, encoding, used, names):
        t = time.perf_counter()
        out = orig(self, encoding, used, names)
        TIMES.append(time.perf_counter() - t)
        M.append(len(names))
        return out
    return show_sample


def main(argv=None) -> int:
    AttributionPanel.show_sample = _timed(AttributionPanel.show_sample)
    rc = toggle_latency.main(argv)
    phi = {"modalities": M[-1] if M else None, "calls": len(TIMES),
           "phi_panel_ms": {"p50": toggle_latency.pct(TIMES, 50), "p95": toggle_latency.pct(TIMES, 95),
                            "max": toggle_latency.pct(TIMES, 100)} if TIMES else None}
    print(json.dumps({"phi": phi}, indent=2))
    args = sys.argv[1:] if argv is None else argv
    if "--json" in args:
        path = Path(args[args.index("--json") + 1])
        data = json.loads(path.read_text())
        data["phi"] = phi
        path.write_text(json.dumps(data, indent=2))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
