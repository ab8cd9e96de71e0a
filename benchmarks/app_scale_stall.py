"""How the app holds up on a large dataset: every user action timed from start to result shown, with a 10 ms
probe on the GUI thread recording how long the event loop stalled during it.

    python benchmarks/app_scale_stall.py --dataset movies                      # trains a 2-epoch model first
    python benchmarks/app_scale_stall.py --dataset movies --checkpoint runs/x/best.pt --json out.json
    python benchmarks/app_scale_stall.py                                       # AV-Digits (the default)
    python benchmarks/app_scale_stall.py --dataset path/to/own_dataset --skip sweep,pid

Without --checkpoint a short Robult model is trained first, in a separate process (`robult train --dataset D
--epochs E --threads 1`). Then one offscreen app process (built as `app.main.build` builds it, with the app's
garbage-collection policy and thread count) goes through what a user does, one action at a time:

    startup         the window built and its default dataset read (another dataset than the measured one)
    idle            the idle window for --idle-s seconds: the stalls the machine's load alone causes
    open            File › Open of the checkpoint: model and dataset loaded, first sample shown in the explorer
    open→latent     … and the Latent space plots drawn (the tab projects the test split as soon as a model opens)
    step            Next ▶ / ◀ Prev, 50 each: sample encoded and every explorer panel updated
    find id/title   the explorer's find field (Enter): the next sample whose id / title matches, shown
    toggle          a modality switched on or off: every explorer panel updated
    latent test/train   the Latent space tab's projection of a split: computed, and every point drawn
    robustness      Robustness › Compute (every subset × every run) until the matrix is drawn
    flip list       a click on the matrix's cell with the most flipped samples: the list of flips filled
    curves          Missing-rate curves › Compute, until drawn
    calibration     Calibration › Compute, until drawn
    slices          Slices › Find slices, until the table is shown
    slice samples   a click on the largest slice: its samples listed
    sweep           a small sweep from the Sweeps tab (robult, one label fraction, rates 0 and 0.5, 1 seed)
    pid             Dataset PID › Compute; cancelled and reported as such after --pid-timeout seconds

For each action: its wall time (interactive ones: p50 / p95 / max over the repetitions), the longest GUI stall
during it (a probe gap minus the 10 ms interval: how long the window could not repaint or react) and the
stall p99. Targets: no stall above 100 ms during background work, interactive actions p95 ≤ 50 ms, every
study done in seconds (≤ 60 s) rather than minutes. Prints the load average, the share of a core the GUI
thread gets (the machine's other work slows every GUI-thread cost by 1 / share), a table and the JSON report
(--json writes it). --stall-stacks adds where the GUI thread (and the other threads) were during the stalls
over 60 ms. Results: docs/results/app-scale.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STALL_TARGET_MS = 100.0
INTERACTIVE_P95_TARGET_MS = 50.0
STUDY_TARGET_S = 60.0
INTERACTIVE = ("step", "find id", "find title", "toggle")
ALL_ACTIONS = ("step", "find", "toggle", "latent", "robustness", "curves", "calibration", "slices", "sweep", "pid")


def train_checkpoint(dataset: str, epochs: int, out: Path) -> str:
    """A short Robult run in its own process (as `robult train` does it); the best checkpoint's path."""
    cmd = [sys.executable, "-m", "robult_engine", "train", "--dataset", dataset, "--epochs", str(epochs),
           "--threads", "1", "--out", str(out), "--quiet"]
    print("training:", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=str(REPO))
    best = out / "best.pt"
    if not best.is_file():
        raise SystemExit(f"training wrote no {best}")
    return str(best)


class Probe:
    """A QTimer on the GUI thread that records when it fires."""

    def __init__(self, interval_ms: int) -> None:
        from PySide6.QtCore import QTimer
        self.interval_ms = interval_ms
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def start(self) -> None:
        self.ticks.append(time.perf_counter())
        self.timer.start()

    def stall_stats(self, t0: float, t1: float) -> dict:
        """The GUI stalls (probe gap minus the interval) of the gaps that overlap [t0, t1]."""
        import numpy as np
        t = np.asarray(self.ticks)
        if len(t) < 2:
            return {"stall_max_ms": None, "stall_p99_ms": None, "stalls_over_100ms": 0}
        start, end = t[:-1], t[1:]
        sel = (end > t0) & (start < t1)
        gaps = (end[sel] - start[sel]) * 1000.0
        stalls = np.maximum(gaps - self.interval_ms, 0.0)
        if not len(stalls):  # the action ran inside one probe interval
            return {"stall_max_ms": 0.0, "stall_p99_ms": 0.0, "stalls_over_100ms": 0}
        return {"stall_max_ms": round(float(stalls.max()), 1),
                "stall_p99_ms": round(float(np.percentile(stalls, 99)), 1),
                "stalls_over_100ms": int((stalls > STALL_TARGET_MS).sum())}


class StallSampler:
    """Where the GUI thread is while it stalls: a Python thread looks every `every_ms`, and when the probe has not
    fired for `threshold_ms` it records the GUI thread's innermost frames of the project and of pyqtgraph (a
    frame in this file means Qt itself: painting, layout, or waiting for the GIL). One sample ≈ `every_ms` of
    stall. For finding what stalls, not for the figures."""

    def __init__(self, probe: Probe, threshold_ms: float = 60.0, every_ms: float = 10.0) -> None:
        import collections
        import threading
        self.probe = probe
        self.threshold = threshold_ms / 1000.0
        self.every = every_ms / 1000.0
        self.gui_ident = threading.main_thread().ident
        self.counts: collections.Counter = collections.Counter()
        self.action = "?"
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stall-sampler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            ticks = self.probe.ticks
            if not ticks or time.perf_counter() - ticks[-1] < self.threshold:
                continue
            frames_now = sys._current_frames()
            frame = frames_now.get(self.gui_ident)
            if frame is None:
                continue
            key = self._where(frame, 5)
            # what the other threads are doing meanwhile (one may hold the GIL the GUI thread waits for)
            others = sorted({self._where(f, 2) for ident, f in frames_now.items()
                             if ident not in (self.gui_ident, self.thread.ident)} - {""})
            self.counts[(self.action, key, " | ".join(others))] += 1

    @staticmethod
    def _where(frame, depth: int) -> str:
        import traceback
        frames = [f for f in traceback.extract_stack(frame)
                  if any(k in f.filename for k in ("/app/", "/robult_engine/", "pyqtgraph", "app_scale_stall",
                                                    "torch/nn", "numpy/lib"))]
        return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-depth:]))

    def top(self, n: int = 25) -> list[dict]:
        return [{"action": a, "samples": c, "approx_ms": round(c * self.every * 1000), "stack": k, "others": o}
                for (a, k, o), c in self.counts.most_common(n)]


def wait_until(pred, timeout_s: float) -> bool:
    """Run the event loop (the probe fires meanwhile) until `pred()` holds or `timeout_s` passed. It blocks as an
    idle event loop does (GIL released) until the next event: at the latest the probe's, every 10 ms."""
    from PySide6.QtCore import QEventLoop
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance()
    deadline = time.perf_counter() + timeout_s
    idle = QEventLoop.ProcessEventsFlag.WaitForMoreEvents
    while not pred():
        if time.perf_counter() > deadline:
            return False
        app.processEvents(idle)
    return True


def settle(seconds: float) -> None:
    """Let the event loop run (paints, queued signals) for a while."""
    end = time.perf_counter() + seconds
    wait_until(lambda: time.perf_counter() >= end, seconds + 1)


def cpu_share(seconds: float = 0.5) -> float:
    """How much of a core the GUI thread gets when it computes (thread CPU time / wall time of a busy loop): about
    1 on an idle machine, lower when other processes share the cores, and every GUI-thread cost then takes
    1 / share times longer on the clock."""
    w0, c0 = time.perf_counter(), time.thread_time()
    x = 0
    while time.perf_counter() - w0 < seconds:
        for i in range(10_000):
            x += i
    return round((time.thread_time() - c0) / (time.perf_counter() - w0), 2)


def pct(values_s: list[float], q: float) -> float:
    import numpy as np
    return round(float(np.percentile(np.asarray(values_s) * 1000.0, q)), 1)


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.rows: list[dict] = []
        self.sampler: StallSampler | None = None
        self.cpu_share: float | None = None

    # --- recording ----------------------------------------------------------------------------------------
    def record(self, action: str, t0: float, t1: float, *, n: int = 1, latencies: list[float] | None = None,
               note: str = "", **extra) -> dict:
        if not self.probe.ticks or self.probe.ticks[-1] < t1:  # the gap the action ends in must close first
            t_close = time.perf_counter() + 0.5
            wait_until(lambda: self.probe.ticks[-1] >= t1 or time.perf_counter() > t_close, 1.0)
        row = {"action": action, "n": n, "wall_s": round(t1 - t0, 3), **self.probe.stall_stats(t0, t1)}
        if latencies:
            row.update({"p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95), "max_ms": pct(latencies, 100)})
        row.update(extra)
        if note:
            row["note"] = note
        row["verdict"] = self.verdict(row)
        self.rows.append(row)
        print(f"  {action:<16} {self.line(row)}", file=sys.stderr, flush=True)
        return row

    @staticmethod
    def verdict(row: dict) -> str:
        misses = []
        if row.get("stall_max_ms") is not None and row["stall_max_ms"] > STALL_TARGET_MS:
            misses.append(f"stall > {STALL_TARGET_MS:g} ms")
        if row["action"] in INTERACTIVE and row.get("p95_ms", 0) > INTERACTIVE_P95_TARGET_MS:
            misses.append(f"p95 > {INTERACTIVE_P95_TARGET_MS:g} ms")
        if row["action"] not in INTERACTIVE and row.get("wall_s", 0) > STUDY_TARGET_S:
            misses.append(f"> {STUDY_TARGET_S:g} s")
        if row.get("timed_out"):
            misses.append("did not finish")
        return "ok" if not misses else "MISS: " + ", ".join(misses)

    @staticmethod
    def line(row: dict) -> str:
        lat = (f"p50 {row['p50_ms']:>7.1f}  p95 {row['p95_ms']:>7.1f}  max {row['max_ms']:>7.1f} ms"
               if "p50_ms" in row else f"{'':>41}")
        return (f"wall {row['wall_s']:>8.2f} s  {lat}  stall max {row['stall_max_ms']!s:>7} ms  "
                f"p99 {row['stall_p99_ms']!s:>6} ms  {row['verdict']}")

    # --- the app ------------------------------------------------------------------------------------------
    def build(self, tmp: Path) -> None:
        from PySide6.QtCore import qInstallMessageHandler

        from app.main import build

        def quiet(_mode, _context, message: str) -> None:  # the offscreen platform's warning on every show
            if "propagateSizeHints" not in message:
                print(message, file=sys.stderr)
        qInstallMessageHandler(quiet)
        from robult_engine.config import RunConfig
        other = "pid-synth" if self.args.dataset != "pid-synth" else "av-digits"
        argv = ["--db", str(tmp / "sessions.sqlite"), "--settings", str(tmp / "settings.ini"), "--dataset", other]
        if self.args.threads:
            argv += ["--threads", str(self.args.threads)]
        self.probe = Probe(self.args.probe_ms)
        t0 = time.perf_counter()
        self.app, self.win, self.store = build(argv)
        from app.background import gc_policy
        gc_policy.install()
        w, h = (int(v) for v in self.args.size.split("x"))
        self.win.resize(w, h)
        self.win.settings.setValue("wizard/last_config",
                                   RunConfig().replace(**{"data.dataset": self.args.dataset}).to_json())
        self.win.show()
        self.probe.start()
        wait_until(lambda: "(reading" not in self.win.dataset_label.text(), 300)
        self.record("startup", t0, time.perf_counter(), note=f"window + default dataset {other}")
        if self.args.idle_s > 0:  # the machine's own noise: the idle window, nothing asked of it
            settle(1.0)
            t0 = time.perf_counter()
            settle(self.args.idle_s)
            self.record("idle", t0, time.perf_counter(), note="nothing to do: the machine's own noise")
        self.cpu_share = cpu_share()
        self.shown: list[tuple[int, float]] = []
        self.win.explorer.sig_inspection_shown.connect(self._on_shown)
        # the Latent space tab's plots drawn: every point on screen (`sig_drawn`, where the view draws in chunks;
        # else its points are drawn in the slot that announces them)
        self.latent_ready: list[float] = []
        lv = self.win.analysis.latent_view
        getattr(lv, "sig_drawn", lv.sig_points_ready).connect(lambda: self.latent_ready.append(time.perf_counter()))

    def _on_shown(self, generation: int) -> None:
        self.shown.append((generation, time.perf_counter()))

    def wait_shown(self, before: int, timeout_s: float = 120) -> float | None:
        """When the explorer showed the state's current generation (after `before` results); None on time-out."""
        ex = self.win.explorer

        def done() -> bool:
            return any(g == ex.state.generation for g, _ in self.shown[before:])
        if not wait_until(done, timeout_s):
            return None
        return next(t for g, t in self.shown[before:] if g == ex.state.generation)

    def open_model(self, checkpoint: str) -> None:
        win = self.win
        win.tabs.setCurrentWidget(win.explorer)
        before, lat_before = len(self.shown), len(self.latent_ready)
        t0 = time.perf_counter()
        win.open_checkpoint(checkpoint)
        t1 = self.wait_shown(before, 600)
        if t1 is None:
            raise SystemExit("the model did not open in 600 s")
        ctx = win.explorer.context
        self.record("open", t0, t1, note=f"{ctx.info.name}: " + ", ".join(
            f"{k} {len(s):,}" for k, s in ctx.bundle.splits.items()))
        wait_until(lambda: len(self.latent_ready) > lat_before, 600)
        settle(0.3)
        if len(self.latent_ready) > lat_before:
            self.record("open→latent", t0, self.latent_ready[-1],
                        note="the Latent space tab projects the test split when a model opens")
        settle(1.0)

    # --- interactive actions ------------------------------------------------------------------------------
    def timed_clicks(self, name: str, actions, note: str = "") -> None:
        """Each action (a click) timed until the explorer showed its result. An action that asked for nothing
        (no match, the sample already shown) counts with the time it took itself."""
        ex = self.win.explorer
        lat = []
        t_start = time.perf_counter()
        timeouts = 0
        for act in actions:
            before, generation = len(self.shown), ex.state.generation
            t0 = time.perf_counter()
            act()
            if ex.state.generation == generation:
                lat.append(time.perf_counter() - t0)
                continue
            t1 = self.wait_shown(before, 60)
            if t1 is None:
                timeouts += 1
                continue
            lat.append(t1 - t0)
            settle(self.args.pause_s)  # the user's pace: the next click comes after the panels were painted
        self.record(name, t_start, time.perf_counter(), n=len(lat), latencies=lat, note=note,
                    timed_out=timeouts or None)

    def steps(self) -> None:
        sp = self.win.explorer.sample_panel
        ex = self.win.explorer
        n = self.args.steps
        w0, u0 = len(ex.worker_times), len(ex.update_times)
        self.timed_clicks("step", [sp.next_btn.click] * n + [sp.prev_btn.click] * n,
                          note=f"{n} × Next, {n} × Prev on the {sp.current_split} split")
        worker, update = ex.worker_times[w0:], ex.update_times[u0:]
        if worker and update:  # where a step's time goes: the encoding (pool thread), the panels (GUI thread)
            self.rows[-1].update({"worker_p50_ms": pct(worker, 50), "worker_p95_ms": pct(worker, 95),
                                  "gui_update_p50_ms": pct(update, 50), "gui_update_p95_ms": pct(update, 95)})

    def finds(self) -> None:
        import numpy as np
        sp = self.win.explorer.sample_panel
        data = sp.bundle.splits[sp.current_split]
        ids = list(data.ids or [])
        rng = np.random.default_rng(0)

        def find(text: str):
            def act():
                sp.find.setText(text)
                sp.find_next()
            return act

        if ids:
            picks = [str(ids[int(i)]) for i in rng.integers(0, len(ids), self.args.finds)]
            self.timed_clicks("find id", [find(p) for p in picks],
                              note=f"{len(picks)} ids of the {sp.current_split} split ({len(data):,} samples)")
        texts = next(iter((data.texts or {}).values()), None)
        if texts:
            word = self.args.find_word
            self.timed_clicks("find title", [find(word)] * self.args.finds,
                              note=f"'{word}' (Enter again: the next match), {sp.current_split} split")

    def toggles(self) -> None:
        import numpy as np
        ex = self.win.explorer
        m = len(ex.toggles.buttons)
        rng = np.random.default_rng(0)

        def click() -> None:  # a switch the sample has (one it lacks is disabled)
            enabled = [b for b in ex.toggles.buttons if b.isEnabled()]
            if enabled:
                enabled[int(rng.integers(0, len(enabled)))].click()
        self.timed_clicks("toggle", [click] * self.args.toggles,
                          note=f"{self.args.toggles} random toggles of {m} modalities")
        if not all(ex.state.enabled):
            ex.set_enabled((True,) * m)
            settle(0.2)

    # --- studies ------------------------------------------------------------------------------------------
    def latent(self) -> None:
        lv = self.win.analysis.latent_view
        self.win.tabs.setCurrentWidget(lv)
        settle(0.3)
        for split in ("test", "train"):
            if split not in self.win.explorer.context.bundle.splits:
                continue
            before = len(self.latent_ready)
            t0 = time.perf_counter()
            if lv.split.currentText() != split:
                lv.split.setCurrentText(split)  # computes
            else:
                lv.compute()
            ok = wait_until(lambda: len(self.latent_ready) > before, 600)
            t1 = self.latent_ready[-1] if ok else time.perf_counter()
            n_pts = sum(len(lv.points[k]["sample"]) for k in ("z", "u")) if lv.points else 0
            self.record(f"latent {split}", t0, t1, timed_out=None if ok else True,
                        note=f"{n_pts:,} points drawn; {lv.sample_text()}")
        before = len(self.latent_ready)
        lv.split.setCurrentText("test")
        wait_until(lambda: len(self.latent_ready) > before, 600)
        settle(0.5)

    def job_study(self, name: str, panel, start, tab=None, timeout_s: float = 900, note: str = "") -> bool:
        """Start a background study, wait for it to finish (or cancel it after timeout_s), draw it."""
        self.win.tabs.setCurrentWidget(tab if tab is not None else panel)
        settle(0.3)
        t0 = time.perf_counter()
        started = start()
        if started is False:
            self.record(name, t0, time.perf_counter(), note="did not start: " + panel.info.text()[:120])
            return False
        ok = wait_until(lambda: not panel.jobs.busy, timeout_s)
        if not ok:
            t1 = time.perf_counter()
            panel.cancel()
            self.record(name, t0, t1, timed_out=True,
                        note=f"not done after {timeout_s:g} s: cancelled ({panel.progress.format()})")
            wait_until(lambda: not panel.jobs.busy, 60)
            return False
        panel.grab()
        t1 = time.perf_counter()
        self.record(name, t0, t1, note=(note + " " if note else "") + panel.progress.format())
        settle(0.5)
        return True

    def robustness(self) -> None:
        rp = self.win.analysis.robustness
        self.job_study("robustness", rp, rp.compute, note=f"{len(rp.runs)} run(s);")
        if rp.result is None or not rp.result.runs:
            return
        # the cell whose subset flips the most samples: the longest list to fill
        counts = [len(rp.result.flips(rp.result.runs[0].label, mask)) for _, mask in rp.result.subsets]
        row = int(max(range(len(counts)), key=counts.__getitem__))
        t0 = time.perf_counter()
        rp.select_cell(row, 0)
        rp.flips.grab()
        t1 = time.perf_counter()
        self.record("flip list", t0, t1, note=f"{counts[row]:,} flips of '{rp.result.subsets[row][0]}'")
        settle(0.5)

    def curves(self) -> None:
        mc = self.win.analysis.curves
        self.win.analysis.robustness.views.setCurrentWidget(mc)
        self.job_study("curves", mc, mc.compute, tab=self.win.analysis.robustness, note=mc.spec_text() + ";")
        self.win.analysis.robustness.views.setCurrentIndex(0)

    def calibration(self) -> None:
        cp = self.win.analysis.calibration
        self.job_study("calibration", cp, cp.compute)

    def slices(self) -> None:
        sv = self.win.analysis.slices
        self.job_study("slices", sv, sv.compute)
        if sv.result is None or not sv.result.slices:
            return
        # a click on the largest slice: its samples listed beside the table
        sizes = [s.size for s in sv.result.slices]
        row = int(max(range(len(sizes)), key=sizes.__getitem__))
        t0 = time.perf_counter()
        sv.table.selectRow(row)
        sv.samples.grab()
        t1 = time.perf_counter()
        self.record("slice samples", t0, t1, note=f"{sv.samples.count():,} of the {sizes[row]:,} samples of "
                                                  f"'{sv.result.slices[row].text}' listed")
        settle(0.5)

    def pid(self) -> None:
        pp = self.win.analysis.pid
        self.job_study("pid", pp, pp.compute, timeout_s=self.args.pid_timeout)

    def sweep(self) -> None:
        panel = getattr(self.win, "sweeps_panel", None)
        if panel is None:
            return
        self.win.tabs.setCurrentWidget(panel)
        settle(0.3)
        dlg = panel.new_sweep()
        if dlg is None:
            self.record("sweep", time.perf_counter(), time.perf_counter(), note="the Sweeps tab refused to start")
            return
        dlg.dataset.setCurrentText(self.args.dataset)
        dlg.set_methods(("robult",))
        dlg.fractions.setText(self.args.sweep_fraction)
        dlg.rates.setText(self.args.sweep_rates)
        dlg.seeds.setValue(1)
        dlg.epochs.setValue(self.args.sweep_epochs)
        req = dlg.request()
        if req is None:
            self.record("sweep", time.perf_counter(), time.perf_counter(), note="bad sweep: " + dlg.error.text())
            dlg.reject()
            return
        t0 = time.perf_counter()
        dlg.accept()
        wait_until(lambda: panel.busy, 30)
        ok = wait_until(lambda: not panel.busy, self.args.sweep_timeout)
        if not ok:
            panel.cancel()
            wait_until(lambda: not panel.busy, 120)
        panel.grab()
        t1 = time.perf_counter()
        self.record("sweep", t0, t1, timed_out=None if ok else True,
                    note=f"{req.runs_total} training(s) of {self.args.sweep_epochs} epoch(s): robult, label fraction "
                         f"{self.args.sweep_fraction}, rates {self.args.sweep_rates}; training dominates the time")
        settle(0.5)

    # --- the report ---------------------------------------------------------------------------------------
    def table(self) -> str:
        head = (f"| action | n | wall s | p50 ms | p95 ms | max ms | GUI stall max ms | stall p99 ms | verdict |\n"
                f"|---|---:|---:|---:|---:|---:|---:|---:|---|")
        lines = [head]
        for r in self.rows:
            lines.append(f"| {r['action']} | {r['n']} | {r['wall_s']:.2f} | {r.get('p50_ms', '')} | "
                         f"{r.get('p95_ms', '')} | {r.get('max_ms', '')} | {r['stall_max_ms']} | "
                         f"{r['stall_p99_ms']} | {r['verdict']} |")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="av-digits", help="built-in name (movies, av-digits, mfeat, …) or a path")
    p.add_argument("--checkpoint", help="a model of --dataset (default: train one for --epochs first)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the model trained without --checkpoint")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the app (0: the app's default)")
    p.add_argument("--probe-ms", type=int, default=10)
    p.add_argument("--size", default="1280x800", help="window size WxH")
    p.add_argument("--steps", type=int, default=50, help="Next ×N then Prev ×N")
    p.add_argument("--toggles", type=int, default=100)
    p.add_argument("--finds", type=int, default=10)
    p.add_argument("--find-word", default="love", help="the title search")
    p.add_argument("--pause-s", type=float, default=0.05, help="idle time between two interactive actions")
    p.add_argument("--idle-s", type=float, default=5.0, help="probe the idle window this long first (0: skip)")
    p.add_argument("--sweep-epochs", type=int, default=1)
    p.add_argument("--sweep-fraction", default="0.05")
    p.add_argument("--sweep-rates", default="0,0.5")
    p.add_argument("--sweep-timeout", type=float, default=1800)
    p.add_argument("--pid-timeout", type=float, default=120, help="seconds after which the PID is cancelled")
    p.add_argument("--skip", default="", help=f"comma-separated actions to leave out: {','.join(ALL_ACTIONS)}")
    p.add_argument("--stall-stacks", action="store_true",
                   help="also sample where the GUI thread is during each stall over 60 ms (in the report)")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(ALL_ACTIONS)
    if unknown:
        p.error(f"--skip: unknown action(s) {', '.join(sorted(unknown))}")

    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="robult-app-scale-"))
    checkpoint = args.checkpoint
    train_s = None
    if not checkpoint:
        t = time.perf_counter()
        checkpoint = train_checkpoint(args.dataset, args.epochs, tmp / "model")
        train_s = time.perf_counter() - t

    bench = Bench(args)
    bench.build(tmp)
    if args.stall_stacks:
        bench.sampler = StallSampler(bench.probe)
        bench.sampler.start()
        bench.sampler.action = "open"
    bench.open_model(checkpoint)
    steps = {"step": bench.steps, "find": bench.finds, "toggle": bench.toggles, "latent": bench.latent,
             "robustness": bench.robustness, "curves": bench.curves, "calibration": bench.calibration,
             "slices": bench.slices, "sweep": bench.sweep, "pid": bench.pid}
    for name in ALL_ACTIONS:
        if name not in skip:
            if bench.sampler is not None:
                bench.sampler.action = name
            steps[name]()
    bench.probe.timer.stop()

    import torch
    report = {"dataset": args.dataset, "checkpoint": checkpoint, "train_s": train_s, "window": args.size,
              "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg(),
              "gui_thread_cpu_share": bench.cpu_share,
              "targets": {"stall_max_ms": STALL_TARGET_MS, "interactive_p95_ms": INTERACTIVE_P95_TARGET_MS,
                          "study_s": STUDY_TARGET_S},
              "actions": bench.rows}
    if bench.sampler is not None:
        bench.sampler.stop()
        report["stall_stacks"] = bench.sampler.top()
    print(f"{args.dataset}: load average {load_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
          f"({os.cpu_count()} cores); the GUI thread got {bench.cpu_share} of a core when computing")
    print(bench.table())
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # a study cancelled mid-way (the PID) must not hold the process at exit


if __name__ == "__main__":
    raise SystemExit(main())
