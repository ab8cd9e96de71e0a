#!/usr/bin/env python
"""Memory of the app on a MOSEI-sized dataset: open it, run the Dataset PID, switch to another dataset and
back, and measure the process's resident set (RSS) at each step.

The real CMU-MOSEI (MultiBench's mosei_senti_data.pkl) has 16,326 / 1,871 / 4,659 train / val / test
utterances, each three word-aligned float32 sequences of 50 frames: text 300-d (GloVe), audio 74-d (COVAREP)
and vision 35-d (Facet) — 22,856 × 50 × 409 × 4 bytes = 1.87 GB of features. This script writes a synthetic
pickle of the same layout (a sentiment score in [-3, 3] that every modality partly carries, frames past each
sample's length zero) with `--samples` utterances split in MOSEI's proportions: the features scale linearly,
so `--samples 22856` is the real size and the default (6,000) a quarter of it. The dataset switched to is an
MM-IMDb-sized one (25,959 films: a 300-d text vector and a 4,096-d image vector, 0.46 GB at the real size),
scaled by the same factor.

A fresh interpreter (so nothing of the writer's memory is counted) then does what the app does, through the
app's own Qt-free parts and no widget: the window's `DatasetCache` (robult_engine/data/cache.py) with the
app's byte budget scaled by the same factor (`--cache-bytes` sets it), marking the dataset on screen; the
Dataset PID tab's job (`app.views.analysis.pid_panel.compute_dataset_pid`: the PID of every modality pair and
an (untrained) model's Z/U split on the test split); then the other dataset on screen, and MOSEI again.

Peak RSS is read per step from the kernel's high-water mark (VmHWM, reset between steps through
/proc/self/clear_refs; Linux), so no short peak is missed. It is printed as measured and with the baseline —
the interpreter with torch, numpy, scipy and the app's modules imported, before any data — subtracted; the
ratio to the features' size (the bytes of the loaded dataset's tensors) is given for both. "Held" is the RSS
after switching away (the other dataset on screen, MOSEI's objects dropped as the app drops them).

Usage:
    python benchmarks/app_memory.py                      # 6,000 utterances (0.49 GB of features), ~1 minute
    python benchmarks/app_memory.py --samples 22856      # the real MOSEI size, 1.87 GB
    python benchmarks/app_memory.py --smoke              # 300 utterances, seconds (the tests run this)
    python benchmarks/app_memory.py --json out.json      # also write the figures
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MOSEI_SPLITS = (16326, 1871, 4659)  # train / valid / test utterances of mosei_senti_data.pkl
MOSEI_SAMPLES = sum(MOSEI_SPLITS)  # 22,856
MOSEI_DIMS = {"text": 300, "audio": 74, "vision": 35}
MOSEI_FRAMES = 50
MMIMDB_SPLITS = (15552, 2608, 7799)  # MM-IMDb: 25,959 films
MMIMDB_DIMS = {"text": 300, "vision": 4096}
APP_BUDGET = 2 * 1024 ** 3  # the app's dataset-cache budget on a machine with 8 GiB or more (cache.py)
TARGET_RATIO = 1.5


def _split_sizes(total: int, proportions: tuple[int, ...]) -> list[int]:
    whole = sum(proportions)
    sizes = [max(2, round(total * p / whole)) for p in proportions]
    return sizes


def _mosei_split(n: int, frames: int, rng: np.random.Generator) -> dict:
    """One split of the MOSEI-like pickle (MMSA layout: right-padded frames, per-modality lengths)."""
    score = np.clip(rng.normal(0.2, 1.3, n), -3, 3).astype(np.float32)
    out: dict = {"regression_labels": score}
    shared = score[:, None, None] / 3.0
    for k, (name, d) in enumerate(MOSEI_DIMS.items()):
        x = np.empty((n, frames, d), dtype=np.float32)
        lengths = rng.integers(max(1, frames // 5), frames + 1, n)
        direction = rng.normal(size=(1, 1, d)).astype(np.float32)
        own = rng.normal(size=(n, 1, 1)).astype(np.float32)  # what this modality alone sees
        for a in range(0, n, 2048):  # in blocks: the writer stays small too
            b = min(n, a + 2048)
            block = rng.standard_normal((b - a, frames, d), dtype=np.float32)
            block += (shared[a:b] * (1.0 + 0.5 * k) + 0.5 * own[a:b]) * direction
            block[np.arange(frames)[None, :] >= lengths[a:b, None]] = 0.0
            x[a:b] = block
        out[name], out[f"{name}_lengths"] = x, lengths
    return out


def _mmimdb_split(n: int, rng: np.random.Generator) -> dict:
    """One split of the MM-IMDb-sized dataset: a vector per modality (a sequence of one frame to the loader)."""
    score = np.clip(rng.normal(0.0, 1.0, n), -3, 3).astype(np.float32)
    out: dict = {"regression_labels": score}
    for name, d in MMIMDB_DIMS.items():
        x = rng.standard_normal((n, d), dtype=np.float32)
        x += score[:, None] * rng.normal(size=(1, d)).astype(np.float32) * 0.3
        out[name], out[f"{name}_lengths"] = x, np.ones(n, dtype=np.int64)
    return out


def write_datasets(folder: Path, samples: int, frames: int, seed: int = 0) -> tuple[Path, Path, float]:
    """The MOSEI-like pickle and the MM-IMDb-sized one; returns their paths and the scale (samples / MOSEI)."""
    rng = np.random.default_rng(seed)
    scale = samples / MOSEI_SAMPLES
    mosei = folder / "mosei_like.pkl"
    data = {s: _mosei_split(n, frames, rng) for s, n in zip(("train", "valid", "test"),
                                                             _split_sizes(samples, MOSEI_SPLITS))}
    with open(mosei, "wb") as f:
        pickle.dump(data, f, protocol=5)
    del data
    other = folder / "mmimdb_sized.pkl"
    n_other = max(30, round(sum(MMIMDB_SPLITS) * scale))
    data = {s: _mmimdb_split(n, rng) for s, n in zip(("train", "valid", "test"), _split_sizes(n_other, MMIMDB_SPLITS))}
    with open(other, "wb") as f:
        pickle.dump(data, f, protocol=5)
    return mosei, other, scale


# --- the measuring side (a fresh interpreter) -----------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss() -> int:
    """Resident set size now, bytes."""
    return _status_kib("VmRSS") * 1024


def reset_peak() -> None:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak() -> int:
    return _status_kib("VmHWM") * 1024


def tensors_nbytes(bundle) -> int:
    """Bytes of the dataset's tensors (each storage once): the features' size."""
    seen: dict[int, int] = {}
    for split in bundle.splits.values():
        for t in (*split.inputs.values(), *split.lengths.values(), split.mask, split.target):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def measure(mosei: Path, other: Path, cache_bytes: int | None, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    from robult_engine.config import RunConfig
    from robult_engine.data.cache import DatasetCache
    from robult_engine.models import build_model
    from app.core.state import LoadedModel
    try:
        from app.views.analysis.pid_panel import compute_dataset_pid as job
    except ImportError:  # the tab's job before it took a label
        from app.core.analysis.explain import compute_explain as job
    from app.core.analysis.explain import PIDCache
    import scipy.optimize  # noqa: F401 - imported by the PID's first call; counted in the baseline
    gc.collect()
    baseline = rss()
    try:
        cache = DatasetCache(max_bytes=cache_bytes)
        budget = cache.max_bytes
    except TypeError:  # a cache bounded by count only
        cache, budget = DatasetCache(), None
    show = getattr(cache, "set_shown", lambda _cfg: None)
    cfg_mosei = RunConfig().replace(**{"data.dataset": str(mosei)})
    cfg_other = RunConfig().replace(**{"data.dataset": str(other)})
    steps: dict[str, dict] = {}

    @contextlib.contextmanager
    def step(name: str):
        gc.collect()
        reset_peak()
        t0 = time.perf_counter()
        yield
        gc.collect()
        high, now = peak(), rss()  # the high-water mark is read first: a page touched in between counts in both
        steps[name] = {"peak": max(high, now), "after": now, "seconds": round(time.perf_counter() - t0, 2)}

    with step("open MOSEI"):
        show(cfg_mosei.data)
        bundle = cache.get(cfg_mosei.data)
    data_bytes = tensors_nbytes(bundle)
    with step("Dataset PID"):
        model = build_model(cfg_mosei.model, bundle.info, method=cfg_mosei.method).eval()
        loaded = LoadedModel(model=model, config=cfg_mosei, info=bundle.info, checkpoint_path="", run_id=None,
                             labeled_indices=torch.zeros(0, dtype=torch.long))
        result = job(loaded, bundle, "test", PIDCache())
    pid = {f"{p.pair[0]} x {p.pair[1]}": {k: round(v, 4) for k, v in p.result.components().items()}
           for p in result.pid}
    with step("switch away"):
        del bundle, loaded, model, result  # what the tab and the explorer drop for the new model
        show(cfg_other.data)
        other_bundle = cache.get(cfg_other.data)
    other_bytes = tensors_nbytes(other_bundle)
    keys = getattr(cache, "keys", None)
    mosei_kept = None if keys is None else any(str(mosei.resolve()) in map(str, k) for k in keys())
    with step("switch back"):
        del other_bundle
        show(cfg_mosei.data)
        bundle = cache.get(cfg_mosei.data)
    return {"baseline": baseline, "data_bytes": data_bytes, "other_bytes": other_bytes, "budget": budget,
            "mosei_kept_after_switch": mosei_kept,
            "steps": steps, "pid": pid, "overall_peak_kib": _status_kib("VmHWM")}


# --- the report -------------------------------------------------------------------------------------------------


def gb(n: int | None) -> str:
    return "unbounded" if n is None else f"{n / 1e9:.3f} GB"


def report(fig: dict, samples: int, scale: float) -> str:
    data, base = fig["data_bytes"], fig["baseline"]
    lines = [f"synthetic MOSEI-like dataset: {samples} utterances ({scale:.3f} × the real 22,856; real size 1.87 GB)",
             f"features' size (tensors' bytes): {gb(data)}; the other dataset: {gb(fig['other_bytes'])}",
             f"dataset cache budget: {gb(fig['budget'])} (the app's 2 GiB scaled by {scale:.3f} unless --cache-bytes)",
             f"baseline RSS (interpreter + torch + numpy + scipy + the app's modules, no data): {gb(base)}",
             "",
             f"{'step':<13} {'peak RSS':>10} {'peak-base':>10} {'ratio':>6} {'ratio-base':>10} {'RSS after':>10} "
             f"{'after-base':>10} {'s':>6}"]
    for name, s in fig["steps"].items():
        lines.append(f"{name:<13} {gb(s['peak']):>10} {gb(s['peak'] - base):>10} {s['peak'] / data:>6.2f} "
                     f"{(s['peak'] - base) / data:>10.2f} {gb(s['after']):>10} {gb(s['after'] - base):>10} "
                     f"{s['seconds']:>6.1f}")
    pid_peak = fig["steps"]["Dataset PID"]["peak"]
    held = fig["steps"]["switch away"]["after"]
    worst = max(s["peak"] for s in fig["steps"].values())
    kept = {True: "yes", False: "no", None: "unknown (a cache bounded by count: up to 4 kept)"}[
        fig["mosei_kept_after_switch"]]
    lines += ["",
              f"peak RSS during the Dataset PID: {gb(pid_peak)}, {(pid_peak - base) / data:.2f}× the features' "
              f"size above the baseline ({pid_peak / data:.2f}× as measured); target ≤ {TARGET_RATIO}× above the "
              f"baseline: {'met' if (pid_peak - base) / data <= TARGET_RATIO else 'NOT met'}",
              f"peak RSS over every step: {gb(worst)} ({(worst - base) / data:.2f}× above the baseline)",
              f"RSS held after switching away: {gb(held)} ({gb(held - base)} above the baseline; the other dataset "
              f"is {gb(fig['other_bytes'])}, MOSEI {gb(data)}); MOSEI still cached then: {kept}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=6000, help="utterances (22856: the real MOSEI size)")
    ap.add_argument("--frames", type=int, default=MOSEI_FRAMES, help="frames per sequence (MOSEI: 50)")
    ap.add_argument("--cache-bytes", type=int, help="the dataset cache's budget (default: the app's, scaled)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the measured process")
    ap.add_argument("--smoke", action="store_true", help="300 utterances of 10 frames: a run in seconds")
    ap.add_argument("--json", help="also write the figures as JSON")
    ap.add_argument("--measure", nargs=2, metavar=("MOSEI", "OTHER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:  # the fresh interpreter
        fig = measure(Path(args.measure[0]), Path(args.measure[1]), args.cache_bytes, args.threads)
        print("FIGURES " + json.dumps(fig))
        return 0
    if not Path("/proc/self/clear_refs").exists():
        print("this benchmark reads the RSS high-water mark from /proc (Linux only)", file=sys.stderr)
        return 2
    samples, frames = (300, 10) if args.smoke else (args.samples, args.frames)
    with tempfile.TemporaryDirectory(prefix="robult-app-memory-") as tmp:
        mosei, other, scale = write_datasets(Path(tmp), samples, frames)
        budget = args.cache_bytes if args.cache_bytes is not None else int(APP_BUDGET * scale * frames / MOSEI_FRAMES)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", str(mosei), str(other),
                               "--cache-bytes", str(budget), "--threads", str(args.threads)],
                              capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
        return proc.returncode
    fig = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("FIGURES "))[8:])
    fig.update(samples=samples, frames=frames, scale=scale)
    print(report(fig, samples, scale))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
