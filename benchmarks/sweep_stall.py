"""GUI responsiveness while a sweep runs in the app's Sweeps tab, and its wall time against the same sweep run
headless in one process (the CLI's `Sweep.run_serial`), side by side in one run.

    python benchmarks/sweep_stall.py                              # AV-Digits, robult + supervised, 1 seed
    python benchmarks/sweep_stall.py --dataset pid-synth --epochs 5 --screenshot docs/screenshots/sweeps.png

A 10 ms QTimer probe on the GUI thread records when it fires; a gap beyond 10 ms is a stall of the event loop.
The sweep is started through the dialog as a user would (methods, label fraction, rates, seeds, OK). Prints a
JSON report: gap max / p99, gaps over 50 ms, the app's wall time and the headless wall time (measured first,
same request, same thread count) and their ratio; with --screenshot, a grab of the window once the sweep ended
(heat maps) and one of its curves (`<name>-curves.png`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="av-digits")
    p.add_argument("--methods", default="robult,supervised")
    p.add_argument("--label-fractions", default="0.05")
    p.add_argument("--rates", default="0,0.25,0.5,0.75")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--probe-ms", type=int, default=10)
    p.add_argument("--size", default="1500x950")
    p.add_argument("--screenshot", help="save a grab of the Sweeps tab at the end (PNG)")
    p.add_argument("--skip-headless", action="store_true", help="do not run the headless reference")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QTimer

    from app.main import build
    from gui_stall import wait_until  # benchmarks/ is on sys.path when a script in it runs
    from robult_engine.config import RunConfig

    tmp = Path(tempfile.mkdtemp(prefix="robult-sweep-stall-"))
    app, window, store = build(["--db", str(tmp / "sessions.sqlite"), "--settings", str(tmp / "settings.ini"),
                                "--dataset", args.dataset])
    from app.background import gc_policy
    gc_policy.install()
    import torch
    cfg = RunConfig().replace(**{"data.dataset": args.dataset, "train.epochs": args.epochs})
    window.settings.setValue("wizard/last_config", cfg.to_json())
    w, h = (int(v) for v in args.size.split("x"))
    window.resize(w, h)
    window.show()
    methods = tuple(m.strip() for m in args.methods.split(","))

    wait_until(lambda: "(reading" not in window.dataset_label.text(), 300)
    panel = window.sweeps_panel
    window.tabs.setCurrentWidget(panel)
    dlg = panel.new_sweep()
    dlg.set_methods(methods)
    dlg.fractions.setText(args.label_fractions)
    dlg.rates.setText(args.rates)
    dlg.seeds.setValue(args.seeds)
    req = dlg.request()
    assert req is not None, dlg.error.text()

    headless_s = None
    if not args.skip_headless:  # the same sweep without the app, on this (GUI) thread, before the app's run
        from robult_engine.sweep import Sweep
        t0 = time.perf_counter()
        sw = Sweep(req.base, list(req.methods), list(req.label_fractions), tmp / "headless", seeds=req.seeds,
                   missing=list(req.missing), mask_seed=req.mask_seed, bundle=window.get_bundle(req.base.data))
        sw.run_serial()
        headless_s = time.perf_counter() - t0

    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(args.probe_ms)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    load_at_start = os.getloadavg()[0]
    probe.start()
    t0 = time.perf_counter()
    dlg.accept()
    wait_until(lambda: not panel.busy, 24 * 3600)
    app_s = time.perf_counter() - t0
    probe.stop()
    import numpy as np
    gaps = np.diff(np.asarray(ticks)) * 1000.0
    from app.core.sweeps import SweepStore
    res = SweepStore(store).get(panel.selected_id())
    if args.screenshot:
        wait_until(lambda: False, 0.3)
        window.grab().save(args.screenshot)
        panel.plots.views.setCurrentIndex(1)
        wait_until(lambda: False, 0.3)
        window.grab().save(str(Path(args.screenshot).with_name(Path(args.screenshot).stem + "-curves.png")))
    report = {
        "dataset": args.dataset, "methods": list(methods), "label_fractions": args.label_fractions,
        "rates": args.rates, "seeds": args.seeds, "epochs": args.epochs, "runs": res.runs_total,
        "status": res.status, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_avg_1min_at_start": load_at_start, "load_avg_1min_at_end": os.getloadavg()[0],
        "probe_ticks": int(len(ticks)),
        "gap_max_ms": float(gaps.max()) if len(gaps) else None,
        "gap_p99_ms": float(np.percentile(gaps, 99)) if len(gaps) else None,
        "gap_median_ms": float(np.median(gaps)) if len(gaps) else None,
        "gaps_over_50ms": int((gaps > 50).sum()),
        # when each gap over 50 ms ended, in seconds after OK was pressed, and how long it was
        "gaps_over_50ms_at_s": [[round(float(ticks[i + 1] - t0), 3), round(float(gaps[i]), 1)]
                                for i in np.nonzero(gaps > 50)[0]],
        "app_wall_s": app_s, "headless_wall_s": headless_s,
        "app_over_headless": (app_s / headless_s) if headless_s else None,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    window.close()
    store.close()
    return 0 if res.status == "finished" else 1


if __name__ == "__main__":
    raise SystemExit(main())
