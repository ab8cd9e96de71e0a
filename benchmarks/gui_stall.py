"""GUI responsiveness while a default training runs in the app, and the wall time from the wizard to the best
checkpoint.

    python benchmarks/gui_stall.py                         # AV-Digits, default config (30 epochs, patience 8)
    python benchmarks/gui_stall.py --dataset pid-synth --epochs 5
    python benchmarks/gui_stall.py --screenshot docs/screenshots/training.png

A 10 ms QTimer probe on the GUI thread records when it fires; a gap beyond 10 ms is a stall of the event loop
(the trainer's Python loop competes with the GUI thread for the GIL, and redraws cost GUI time). The run is
started through the wizard exactly as a user would (defaults, Finish), on a temporary session database.
Prints a JSON report: stall max / p99 / p99.9 / mean, how many gaps exceeded 50 ms, the wall time from
pressing Finish to the trainer's Finished event (best checkpoint written and reloaded), and the time until the
app had loaded that checkpoint as the current model.
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


def wait_until(pred, timeout_s: float) -> bool:
    """Run the Qt event loop until `pred()` holds or `timeout_s` passed; returns `pred()`."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    deadline = time.perf_counter() + timeout_s
    poll = QTimer()
    poll.setInterval(20)

    def check() -> None:
        if pred() or time.perf_counter() > deadline:
            loop.quit()
    poll.timeout.connect(check)
    poll.start()
    loop.exec()
    poll.stop()
    return bool(pred())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="av-digits")
    p.add_argument("--epochs", type=int, default=0, help="override the default number of epochs (0: keep)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the app's default)")
    p.add_argument("--switch-interval", type=float, default=0.0,
                   help="sys.setswitchinterval in seconds (0: the app's default, 0.001; Python's own is 0.005)")
    p.add_argument("--probe-ms", type=int, default=10)
    p.add_argument("--screenshot", help="save a grab of the window at the end (PNG)")
    p.add_argument("--screenshot-at", type=float, default=1.0,
                   help="fraction of the run at which to grab the screenshot (1: at the end)")
    p.add_argument("--size", default="1400x900", help="window size WxH")
    p.add_argument("--baseline-s", type=float, default=10.0,
                   help="first probe the idle window this long (the machine's own noise), 0 to skip")
    p.add_argument("--gc-policy", choices=("on", "off"), default="on",
                   help="on: the app's policy (app.main.main installs it: collections on the GUI thread only); "
                        "off: Python's automatic collection on whatever thread allocates")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QTimer

    from app.main import build
    from robult_engine.config import RunConfig

    tmp = Path(tempfile.mkdtemp(prefix="robult-gui-stall-"))
    argv_app = ["--db", str(tmp / "sessions.sqlite"), "--settings", str(tmp / "settings.ini"),
                "--dataset", args.dataset]
    if args.threads:
        argv_app += ["--threads", str(args.threads)]
    if args.switch_interval > 0:
        argv_app += ["--switch-interval", str(args.switch_interval)]
    app, window, store = build(argv_app)
    if args.gc_policy == "on":
        from app.background import gc_policy
        gc_policy.install()
    cfg = RunConfig().replace(**{"data.dataset": args.dataset})
    if args.epochs:
        cfg = cfg.replace(**{"train.epochs": args.epochs})
    window.settings.setValue("wizard/last_config", cfg.to_json())
    w, h = (int(v) for v in args.size.split("x"))
    window.resize(w, h)
    window.show()

    # garbage collections (the app runs them on the GUI thread): how long each took
    import gc
    gc_times: list[tuple[int, float]] = []
    gc_t0 = {}

    def gc_callback(phase, info) -> None:
        if phase == "start":
            gc_t0["t"] = time.perf_counter()
        elif "t" in gc_t0:
            gc_times.append((info["generation"], (time.perf_counter() - gc_t0.pop("t")) * 1000.0))
    gc.callbacks.append(gc_callback)

    # the probe
    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(args.probe_ms)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))

    marks: dict[str, float] = {}
    final: dict = {}
    shot_taken = {"done": False}

    def on_finished(ev) -> None:
        marks["finished"] = time.perf_counter()
        final["event"] = ev

    def on_failed(ev) -> None:
        marks["finished"] = time.perf_counter()
        final["failed"] = ev

    def on_loaded(_lm) -> None:
        marks.setdefault("model_loaded", time.perf_counter())

    def on_step(ev) -> None:
        marks.setdefault("first_step", time.perf_counter())
        if (args.screenshot and not shot_taken["done"] and args.screenshot_at < 1.0
                and ev.global_step >= args.screenshot_at * ev.total_steps):
            shot_taken["done"] = True
            marks["screenshot_due"] = time.perf_counter()

    epoch_marks: list[float] = []

    def on_epoch(_ev) -> None:
        epoch_marks.append(time.perf_counter())

    from robult_engine.events import EpochEnded, StepEnded

    def on_progress(ev) -> None:
        if isinstance(ev, StepEnded):
            on_step(ev)
        elif isinstance(ev, EpochEnded):
            on_epoch(ev)

    window.controller.sig_progressed.connect(on_progress)
    window.controller.sig_finished.connect(on_finished)
    window.controller.sig_cancelled.connect(on_finished)
    window.controller.sig_failed.connect(on_failed)
    window.sig_model_loaded.connect(on_loaded)

    # the wizard, as a user would go through it: defaults, Finish
    wait_until(lambda: "(reading" not in window.dataset_label.text(), 120)
    baseline: list[float] = []
    if args.baseline_s > 0:
        probe.start()
        wait_until(lambda: False, args.baseline_s)
        probe.stop()
        baseline, ticks[:] = list(ticks), []
    wiz = window.new_training()
    wait_until(lambda: not wiz.page_dataset.is_loading and wiz.page_dataset.info is not None, 120)
    for _ in range(5):
        wiz.next()
    load_at_start = os.getloadavg()[0]
    probe.start()
    marks["start"] = time.perf_counter()
    wiz.accept()
    if args.screenshot and args.screenshot_at < 1.0:
        wait_until(lambda: "screenshot_due" in marks or "finished" in marks, 24 * 3600)
        window.training_panel.redraw(force=True)
        window.grab().save(args.screenshot)
    wait_until(lambda: "finished" in marks, 24 * 3600)
    marks["probe_end"] = time.perf_counter()
    probe.stop()
    wait_until(lambda: "model_loaded" in marks or "failed" in final, 120)
    if args.screenshot and args.screenshot_at >= 1.0:
        wait_until(lambda: False, 0.3)  # let the last redraw happen
        window.training_panel.redraw(force=True)
        window.grab().save(args.screenshot)

    import numpy as np
    if os.environ.get("ROBULT_GUI_STALL_TICKS"):  # raw probe times, for digging into single gaps
        np.save(os.environ["ROBULT_GUI_STALL_TICKS"], np.asarray(ticks))
    gaps_ms = np.diff(np.asarray(ticks)) * 1000.0
    base_ms = np.diff(np.asarray(baseline)) * 1000.0 if len(baseline) > 1 else np.zeros(0)
    stalls = np.maximum(gaps_ms - args.probe_ms, 0.0)
    ev = final.get("event")
    # where the long gaps happened: near an epoch end (validation, database write, epoch plots) or mid-epoch
    t_ticks = np.asarray(ticks)
    long_idx = np.nonzero(gaps_ms > 50)[0]
    near_epoch = 0
    for i in long_idx:
        t_end = t_ticks[i + 1]
        if any(-0.05 <= (t_end - e) <= 1.0 for e in epoch_marks):
            near_epoch += 1
    import torch
    report = {
        "dataset": args.dataset,
        "config_epochs": cfg.train.epochs,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_at_end": os.getloadavg()[0],
        "switch_interval_s": sys.getswitchinterval(),
        "probe_interval_ms": args.probe_ms,
        "probe_ticks": int(len(ticks)),
        "gap_max_ms": float(gaps_ms.max()) if len(gaps_ms) else None,
        "gap_p99_ms": float(np.percentile(gaps_ms, 99)) if len(gaps_ms) else None,
        "gap_p999_ms": float(np.percentile(gaps_ms, 99.9)) if len(gaps_ms) else None,
        "gap_median_ms": float(np.median(gaps_ms)) if len(gaps_ms) else None,
        "stall_max_ms": float(stalls.max()) if len(stalls) else None,
        "stall_p99_ms": float(np.percentile(stalls, 99)) if len(stalls) else None,
        "gaps_over_50ms": int((gaps_ms > 50).sum()),
        "gaps_over_50ms_fraction": float((gaps_ms > 50).mean()) if len(gaps_ms) else None,
        "gaps_over_50ms_near_epoch_end": near_epoch,
        "idle_baseline_s": args.baseline_s,
        "idle_gap_max_ms": float(base_ms.max()) if len(base_ms) else None,
        "idle_gap_p99_ms": float(np.percentile(base_ms, 99)) if len(base_ms) else None,
        "idle_gaps_over_50ms": int((base_ms > 50).sum()),
        "load_avg_1min_at_start": load_at_start,
        "wall_s_wizard_to_first_step": marks.get("first_step", float("nan")) - marks["start"],
        "wall_s_wizard_to_finished": marks["finished"] - marks["start"],
        "wall_s_wizard_to_model_loaded": marks.get("model_loaded", float("nan")) - marks["start"],
        "trainer_elapsed_s": getattr(ev, "elapsed_s", None),
        "epochs_run": getattr(ev, "epochs_run", None),
        "stopped_early": getattr(ev, "stopped_early", None),
        "best_epoch": getattr(ev, "best_epoch", None),
        "best_val_score": getattr(ev, "best_score", None),
        "failed": str(final["failed"].message) if "failed" in final else None,
        "gc_policy": args.gc_policy,
        "gc_collections": len(gc_times),
        "gc_max_ms": max((t for _, t in gc_times), default=None),
        "gc_gen2_count": sum(1 for g, _ in gc_times if g == 2),
        "gc_gen2_max_ms": max((t for g, t in gc_times if g == 2), default=None),
        "redraws": window.training_panel.redraw_count,
        "redraw_setdata_total_s": window.training_panel.redraw_time_total,
        "redraw_setdata_max_ms": window.training_panel.redraw_time_max * 1000,
        "steps_seen": window.buffers.global_step,
        "screenshot": args.screenshot,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    window.close()
    store.close()
    return 0 if "failed" not in final else 1


if __name__ == "__main__":
    raise SystemExit(main())
