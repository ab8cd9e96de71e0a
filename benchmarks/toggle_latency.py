"""Explorer benchmarks (issue 5).

1. Toggle → all panels updated, on the default model (AV-Digits, Robult): p50 / p95 latency of a modality
   toggle in the ExplorerPanel, from the button click to the end of the slot that updated every panel
   (predictions, latents, soft-PU), measured by the panel itself (`ExplorerPanel.latencies`). Also with a
   synchronous repaint of the whole explorer (what the next frame costs), and the engine-only recombination.
   Target: p95 ≤ 16 ms (one frame at 60 Hz).
2. Robustness matrix for M = 3 (PID-Synth) and 6 runs, against one full evaluation (`evaluate_subsets`).

    python benchmarks/toggle_latency.py [--checkpoint runs/avd-robult/best.pt] [--toggles 200] [--json out.json]
    python benchmarks/toggle_latency.py --dataset mfeat --skip-robustness     # M = 6

Without --checkpoint a default-config Robult model is trained on --dataset (AV-Digits) for --epochs epochs first.
Runs offscreen (QT_QPA_PLATFORM=offscreen) unless a display is set.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def train(cfg, out: Path) -> str:
    from robult_engine.trainer import Trainer
    final = Trainer(cfg, out_dir=out).run()
    if not getattr(final, "checkpoint_path", ""):
        raise SystemExit(f"training failed: {final}")
    return final.checkpoint_path


def bench_toggles(checkpoint: str, n: int) -> dict:
    from PySide6.QtWidgets import QApplication
    from app.background.runner import wait_ms

    from app.views.explorer.explorer_panel import ExplorerPanel
    from app.core.analysis.standalone import loaded_from_checkpoint
    from robult_engine.inspect import SampleInspector

    app = QApplication.instance() or QApplication([])
    from app.background import gc_policy
    gc_policy.install()  # as the app's entry points do
    panel = ExplorerPanel()
    panel.resize(1400, 900)
    panel.show()
    loaded = loaded_from_checkpoint(checkpoint)
    t0 = time.perf_counter()
    panel.set_model(loaded)
    while panel.inspection is None:
        wait_ms(5)
    first = time.perf_counter() - t0
    m = len(loaded.info.modality_names)
    rng = np.random.default_rng(0)

    from PySide6.QtCore import QEventLoop
    idle = QEventLoop.ProcessEventsFlag.WaitForMoreEvents  # block like an idle event loop (GIL released)

    def one_toggle(repaint: bool) -> float:
        i = int(rng.integers(0, m))
        before = len(panel.latencies)
        t = time.perf_counter()
        panel.toggles.buttons[i].click()
        while len(panel.latencies) == before:
            app.processEvents(idle)
        if repaint:
            panel.repaint()  # the whole explorer, synchronously (every plot, changed or not)
            return time.perf_counter() - t
        return panel.latencies[-1]

    for _ in range(20):  # warm-up
        one_toggle(False)
    panel.latencies.clear()
    panel.update_times.clear()
    panel.worker_times.clear()
    upd = [one_toggle(False) for _ in range(n)]
    gui = list(panel.update_times)
    worker = list(panel.worker_times)
    paint = [one_toggle(True) for _ in range(max(20, n // 4))]
    # a new sample each time (encode + soft-PU + recombine), for comparison
    new = []
    for k in range(30):
        before = len(panel.latencies)
        panel.sample_panel.next()
        while len(panel.latencies) == before:
            app.processEvents(idle)
        new.append(panel.latencies[-1])
    # engine only: recombination of a cached encoding
    ctx = panel.context
    insp = SampleInspector(ctx.model, panel.sample.data, task=ctx.task, class_names=ctx.class_names)
    subsets = [tuple(bool(b) for b in rng.integers(0, 2, m)) for _ in range(500)]
    t = time.perf_counter()
    for s in subsets:
        insp.inspect(s)
    engine = (time.perf_counter() - t) / len(subsets)
    panel.shutdown()
    panel.close()
    return {"model": checkpoint, "modalities": list(loaded.info.modality_names), "toggles": n,
            "first_sample_s": first,
            "toggle_to_panels_updated_ms": {"p50": pct(upd, 50), "p95": pct(upd, 95), "max": pct(upd, 100)},
            "of_which_request_to_worker_result_ms": {"p50": pct(worker, 50), "p95": pct(worker, 95)},
            "of_which_gui_panel_updates_ms": {"p50": pct(gui, 50), "p95": pct(gui, 95)},
            "toggle_to_panels_repainted_ms": {"p50": pct(paint, 50), "p95": pct(paint, 95), "max": pct(paint, 100)},
            "new_sample_to_panels_updated_ms": {"p50": pct(new, 50), "p95": pct(new, 95)},
            "engine_recombine_ms": engine * 1000.0}


def bench_robustness(root: Path, n_runs: int = 6) -> dict:
    from app.core.analysis.robustness import RunRef, compute_robustness
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    from robult_engine.config import RunConfig
    from robult_engine.data import load_dataset
    from robult_engine.evaluation import evaluate_subsets

    methods = ["robult", "robult-no-rec", "robult-supcon", "robult-no-pu", "supervised", "moddrop"][:n_runs]
    base = RunConfig().replace(**{"data.dataset": "pid-synth", "train.epochs": 1, "train.device": "cpu"})
    paths = [train(base.replace(method=mm), root / mm) for mm in methods]
    bundle = load_dataset(base.data)
    test = bundle.splits["test"]
    refs = [RunRef(i, f"#{i} {mm}", mm, p) for i, (mm, p) in enumerate(zip(methods, paths))]
    # one full evaluation, as `robult eval` does it (load the checkpoint, all subsets from one pass), for
    # every run, interleaved with the matrix so both see the same machine load; medians of 3 rounds
    def evaluate_all() -> list[float]:
        out = []
        for pth in paths:
            t = time.perf_counter()
            model = model_from_checkpoint(load_checkpoint(pth))
            evaluate_subsets(model, test, bundle.info.modality_names, bundle.info.task)
            out.append(time.perf_counter() - t)
        return out

    evals, times = [], []
    for _ in range(3):
        evals.append(evaluate_all())
        t = time.perf_counter()
        res = compute_robustness(refs, bundle, "test")
        times.append(time.perf_counter() - t)
    one = statistics.median(e for round_ in evals for e in round_)
    all_runs = statistics.median(sum(round_) for round_ in evals)
    total = statistics.median(times)
    # the naive alternative: one forward pass per subset and run
    naive = []
    model = model_from_checkpoint(load_checkpoint(paths[0]))
    from robult_engine.evaluation import modality_subsets
    t = time.perf_counter()
    with torch.no_grad():
        for _, mask in modality_subsets(bundle.info.modality_names):
            mk = torch.tensor([mask] * len(test)) & test.mask
            model(test.inputs, test.lengths, mk)
    naive.append(time.perf_counter() - t)
    return {"dataset": "pid-synth (default size)", "modalities": len(bundle.info.modality_names),
            "subsets": len(res.subsets), "runs": len(res.runs), "test_samples": len(test),
            "one_full_evaluation_s": one, "six_evaluations_s": all_runs, "matrix_s": total,
            "matrix_over_one_evaluation": total / one, "matrix_over_evaluating_each_run": total / all_runs,
            "naive_one_pass_per_subset_s_one_run": naive[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="default: train a Robult model on --dataset first")
    p.add_argument("--dataset", default="av-digits", help="the dataset of that model (mfeat: M = 6)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--toggles", type=int, default=200)
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-robustness", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="robult-bench-"))
    ck = args.checkpoint
    if not ck:
        from robult_engine.config import RunConfig
        ck = train(RunConfig().replace(**{"data.dataset": args.dataset, "train.epochs": args.epochs,
                                          "train.device": "cpu"}), tmp / args.dataset)
    out = {"toggle": bench_toggles(ck, args.toggles),
           "robustness": None if args.skip_robustness else bench_robustness(tmp / "rob", args.runs),
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_average_at_end": os.getloadavg()}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
