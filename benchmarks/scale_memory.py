"""Peak memory and speed at the paper's dataset sizes: load + one training epoch + evaluation.

For every size (samples) and format, synthetic MOSEI-like data are written once, then a fresh Python process
loads them through the engine (`load_dataset`), trains one epoch of the default Robult run (Trainer, CPU) and
evaluates val (after the epoch) and test (at the end). That process reports:

- baseline: its resident memory after importing torch and the engine, before any data (the interpreter,
  torch's libraries, the model code);
- peak: ru_maxrss at its end (the most it ever held resident, file-backed pages of memory maps included);
- peak anonymous: the largest RssAnon seen by a sampler thread (every 20 ms), less RssAnon at the baseline:
  the memory the run adds that is not a file's pages (what a memory-mapped dataset costs once the kernel
  drops the mapped pages it is allowed to drop);
- data: the features' size as float32 (N × T × (300 + 74 + 35) × 4 bytes: the tensors the model reads);
- ratios peak / data and (peak − baseline) / data;
- samples / second of the training epoch (steps × batch size over the time from the first to the last step).

Formats: "pickle" (a MultiBench-style MOSEI pickle: {"train", "valid", "test"} → text (N, T, 300), audio
(N, T, 74) with a few -inf, vision (N, T, 35), labels (N, 1, 1); sequences zero-padded at the front),
"mapped" (a manifest whose cells are ``text.npy#<row>`` references into one (N, T, D) array per modality,
splits interleaved at random), "files" (a manifest with one .npy per sample and modality; slow to write).
The split proportions are MOSEI's (16,326 / 1,871 / 4,659).

    python benchmarks/scale_memory.py                       # 2k, 20k, 60k; pickle and mapped
    python benchmarks/scale_memory.py --sizes 2000,20000 --compare-head   # also the committed code
    python benchmarks/scale_memory.py --smoke               # tiny, seconds
    python benchmarks/scale_memory.py --sizes 20000 --formats mapped --set method=fixmatch \
        --set data.train_missing=mnar-value:0.3               # FixMatch's stds, an mnar-value training mask

`--compare-head` runs every case a second time with the code of the last commit (a temporary
``git worktree`` of HEAD, removed afterwards; the working tree is not touched); `--old-tree PATH` names such a
checkout instead. Formats the old code cannot read are shown as "n/a".

Sizes: 50 steps per sample (MOSEI's) unless a case's features would exceed `--max-gb` (default 3.0 GB), in
which case the steps are reduced to fit (60k samples → 30 steps, 2.9 GB): the committed code held about 2.2×
the data at its peak, so the largest case stays well inside a 24 GB machine shared with other work. The data
folder (`--data`, default a temporary folder) is deleted at the end unless `--keep`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIMS = {"text": 300, "audio": 74, "vision": 35}  # MOSEI's GloVe, COVAREP and Facet features
SPLIT_SHARE = {"train": 16326, "valid": 1871, "test": 4659}  # MOSEI
FORMATS = ("pickle", "mapped", "files")


# --- data ------------------------------------------------------------------------------------------------------
def split_sizes(n: int) -> dict[str, int]:
    total = sum(SPLIT_SHARE.values())
    val = max(2, round(n * SPLIT_SHARE["valid"] / total))
    test = max(2, round(n * SPLIT_SHARE["test"] / total))
    return {"train": n - val - test, "valid": val, "test": test}


def _sequences(rng, n: int, steps: int, d: int, front: bool):
    """(n, steps, d) float32 features with 1..steps valid frames each, zero-padded at the front or the back."""
    import numpy as np
    x = rng.standard_normal((n, steps, d), dtype=np.float32)
    lengths = rng.integers(max(1, steps // 3), steps + 1, size=n)
    pad = np.arange(steps)[None, :] < (steps - lengths)[:, None] if front else \
        np.arange(steps)[None, :] >= lengths[:, None]
    x[pad] = 0.0
    return x


def _labels(rng, x_text):
    import numpy as np
    score = x_text[:, :, :4].sum(axis=(1, 2)) / max(1.0, math.sqrt(x_text.shape[1] * 4))
    return np.clip(score + 0.5 * rng.standard_normal(len(score)), -3, 3).astype(np.float32)


def write_pickle(path: Path, n: int, steps: int, seed: int = 0) -> None:
    import pickle

    import numpy as np
    rng = np.random.default_rng(seed)
    data = {}
    for split, m in split_sizes(n).items():
        part = {k: _sequences(rng, m, steps, d, front=True) for k, d in DIMS.items()}
        part["audio"][rng.random(part["audio"].shape) < 1e-4] = -np.inf  # COVAREP's -inf, zeroed by the loader
        part["labels"] = _labels(rng, part["text"]).reshape(m, 1, 1)
        part["id"] = np.array([[f"{split}{i}", "0"] for i in range(m)])
        data[split] = part
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)


def write_mapped(folder: Path, n: int, steps: int, seed: int = 0) -> None:
    import numpy as np
    from numpy.lib.format import open_memmap
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = split_sizes(n)
    splits = np.array(["train"] * sizes["train"] + ["val"] * sizes["valid"] + ["test"] * sizes["test"])
    rng.shuffle(splits)  # interleaved: no split is a contiguous block of rows
    labels = np.zeros(n, dtype=np.float32)
    chunk = 2048
    arrays = {k: open_memmap(folder / f"{k}.npy", mode="w+", dtype=np.float32, shape=(n, steps, d))
              for k, d in DIMS.items()}
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        for k, d in DIMS.items():
            arrays[k][lo:hi] = _sequences(rng, hi - lo, steps, d, front=False)
        labels[lo:hi] = _labels(rng, np.asarray(arrays["text"][lo:hi]))
    for a in arrays.values():
        a.flush()
    del arrays
    with open(folder / "manifest.csv", "w", encoding="utf-8") as f:
        f.write("id,split,label," + ",".join(DIMS) + "\n")
        for i in range(n):
            f.write(f"s{i},{splits[i]},{labels[i]:.4f}," + ",".join(f"{k}.npy#{i}" for k in DIMS) + "\n")


def write_files(folder: Path, n: int, steps: int, seed: int = 0) -> None:
    import numpy as np
    rng = np.random.default_rng(seed)
    (folder / "f").mkdir(parents=True, exist_ok=True)
    sizes = split_sizes(n)
    splits = np.array(["train"] * sizes["train"] + ["val"] * sizes["valid"] + ["test"] * sizes["test"])
    rng.shuffle(splits)
    with open(folder / "manifest.csv", "w", encoding="utf-8") as f:
        f.write("id,split,label," + ",".join(DIMS) + "\n")
        for lo in range(0, n, 1024):
            hi = min(n, lo + 1024)
            feats = {k: _sequences(rng, hi - lo, steps, d, front=False) for k, d in DIMS.items()}
            labels = _labels(rng, feats["text"])
            for j in range(hi - lo):
                i = lo + j
                length = int((feats["text"][j] != 0).any(axis=1).nonzero()[0].max(initial=0)) + 1
                for k in DIMS:
                    np.save(folder / "f" / f"{k}{i}.npy", feats[k][j, :length])
                f.write(f"s{i},{splits[i]},{labels[j]:.4f}," + ",".join(f"f/{k}{i}.npy" for k in DIMS) + "\n")


def data_path(root: Path, fmt: str, n: int, steps: int) -> Path:
    name = f"{fmt}-{n}-t{steps}"
    return root / (name + ".pkl") if fmt == "pickle" else root / name


def ensure_data(root: Path, fmt: str, n: int, steps: int) -> Path:
    """Write a case's data in a separate process (so this one never holds it), unless it already exists."""
    path = data_path(root, fmt, n, steps)
    done = path.with_name(path.name + ".done")
    if not done.exists():
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import scale_memory as s; "
                f"s.write_{fmt}(__import__('pathlib').Path({str(path)!r}), {n}, {steps})")
        subprocess.run([sys.executable, "-c", code], check=True)
        done.touch()
    return path


def features_bytes(n: int, steps: int) -> int:
    return n * steps * sum(DIMS.values()) * 4


# --- the measured process --------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child(tree: str, dataset: str, threads: int, overrides: dict) -> dict:
    """Load + one epoch + evaluation of `dataset` with the engine found in `tree`; returns the measurements."""
    import resource
    import threading
    sys.path.insert(0, tree)
    import torch

    import robult_engine
    from robult_engine.config import RunConfig
    from robult_engine.data import load_dataset
    from robult_engine.events import StepEnded
    from robult_engine.trainer import Trainer
    torch.set_num_threads(threads)

    def maxrss_bytes() -> int:
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux

    peak_anon = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_anon[0] = max(peak_anon[0], _status_kb("RssAnon") * 1024)
            stop.wait(0.02)

    cfg = RunConfig().replace(**{"data.dataset": dataset, "train.epochs": 1, "train.device": "cpu",
                                 **overrides}).validate()
    baseline = _status_kb("VmRSS") * 1024 or maxrss_bytes()
    baseline_anon = _status_kb("RssAnon") * 1024
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    bundle = load_dataset(cfg.data)
    load_s = time.perf_counter() - t0
    after_load = maxrss_bytes()
    steps: list[float] = []
    batch = cfg.train.batch_size
    trainer = Trainer(cfg, bundle, callbacks=[lambda e: steps.append(time.perf_counter())
                                              if isinstance(e, StepEnded) else None])
    t1 = time.perf_counter()
    result = trainer.run()
    run_s = time.perf_counter() - t1
    stop.set()
    sampler.join()
    peak_anon[0] = max(peak_anon[0], _status_kb("RssAnon") * 1024)
    if len(steps) >= 2:
        rate = (len(steps) - 1) * batch / (steps[-1] - steps[0])
    else:
        rate = float("nan")
    return {"engine": str(Path(robult_engine.__file__).parent), "ok": type(result).__name__ == "Finished",
            "baseline": baseline, "baseline_anon": baseline_anon, "peak": maxrss_bytes(),
            "peak_after_load": after_load, "peak_anon": peak_anon[0], "load_s": load_s, "run_s": run_s,
            "samples_per_s": rate, "steps": len(steps), "splits": {s: len(v) for s, v in bundle.splits.items()},
            "test": getattr(result, "test_metrics", {}).get("text+audio+vision", {})}


def run_child(tree: Path, dataset: Path, threads: int, overrides: dict, timeout: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(tree), str(dataset), str(threads),
           json.dumps(overrides)]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tree, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"ok": False, "error": tail[:200]}
    return json.loads(lines[-1])


# --- the table -------------------------------------------------------------------------------------------------
def gb(b: float) -> str:
    return f"{b / 1e9:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="2000,20000,60000", help="comma-separated sample counts")
    p.add_argument("--formats", default="pickle,mapped", help=f"comma-separated, of {', '.join(FORMATS)}")
    p.add_argument("--steps", type=int, default=50, help="frames per sample (MOSEI: 50)")
    p.add_argument("--max-gb", type=float, default=3.0, help="fewer steps for a case whose features exceed this")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the measured process")
    p.add_argument("--data", help="folder for the generated data (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the generated data")
    p.add_argument("--old-tree", help="a checkout of the code to compare with (e.g. a git worktree)")
    p.add_argument("--compare-head", action="store_true", help="compare with the last commit (a temporary worktree)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per measured process")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and model: checks that the script runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config field of the measured run (repeatable; value parsed as JSON, else a string), "
                        "e.g. --set method=fixmatch --set data.train_missing=mnar-value:0.3")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        tree, dataset, threads, overrides = args.child
        print(json.dumps(child(tree, dataset, int(threads), json.loads(overrides))), flush=True)
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not sizes or min(sizes) < 50:
        p.error(f"unknown format {bad[0]!r}" if bad else "--sizes: sample counts of at least 50")
    overrides: dict = {}
    if args.smoke:
        sizes, args.steps = [min(sizes[0], 300)], 6
        overrides = {"model.d_h": 16, "model.d_z": 8, "model.d_u": 8, "model.d_hidden": 16,
                     "train.batch_size": 32, "train.labeled_per_batch": 8}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            p.error(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value

    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="scale_memory_"))
    root.mkdir(parents=True, exist_ok=True)
    worktree: Path | None = None
    old = Path(args.old_tree).resolve() if args.old_tree else None
    if args.compare_head and old is None:
        worktree = Path(tempfile.mkdtemp(prefix="scale_old_")) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree), "HEAD"], check=True)
        old = worktree
    results = []
    try:
        print(f"load + 1 epoch + evaluation, default Robult run on the CPU, {args.threads} torch thread(s); "
              f"data in {root}" + (f"; config {', '.join(args.set)}" if args.set else ""))
        for n in sizes:
            steps = args.steps
            while steps > 1 and features_bytes(n, steps) > args.max_gb * 1e9:
                steps -= 1
            for fmt in formats:
                t0 = time.perf_counter()
                path = ensure_data(root, fmt, n, steps)
                made_s = time.perf_counter() - t0
                row = {"samples": n, "steps": steps, "format": fmt, "data": features_bytes(n, steps),
                       "write_s": made_s}
                row["new"] = run_child(REPO, path, args.threads, overrides, args.timeout)
                if old is not None:
                    row["old"] = (run_child(old, path, args.threads, overrides, args.timeout)
                                  if fmt != "mapped" else {"ok": False, "error": "n/a (no .npy#row manifests)"})
                results.append(row)
                print_row(row, old is not None)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        print_notes(results)
    finally:
        if worktree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
            shutil.rmtree(worktree.parent, ignore_errors=True)
        if not args.keep and not args.data:
            shutil.rmtree(root, ignore_errors=True)
    failed = [r for r in results if not r["new"].get("ok")]
    for r in failed:
        print(f"FAILED {r['format']} {r['samples']}: {r['new'].get('error')}", file=sys.stderr)
    return 1 if failed else 0


_HEADER_DONE = [False]


def print_row(row: dict, with_old: bool) -> None:
    if not _HEADER_DONE[0]:
        cols = ("samples", "format", "T", "data GB", "baseline GB", "peak GB", "peak/data", "(peak-base)/data",
                "(anon peak-base)/data", "samples/s", "load s")
        if with_old:
            cols += ("old peak GB", "old peak/data", "old (peak-base)/data", "old samples/s", "old load s")
        print(" | ".join(cols))
        _HEADER_DONE[0] = True
    d = row["data"]

    def cells(r: dict) -> list[str]:
        if not r.get("ok"):
            return [r.get("error", "failed")] + [""] * 4
        return [gb(r["peak"]), f"{r['peak'] / d:.2f}", f"{(r['peak'] - r['baseline']) / d:.2f}",
                f"{r['samples_per_s']:.0f}", f"{r['load_s']:.1f}"]

    new = row["new"]
    out = [str(row["samples"]), row["format"], str(row["steps"]), gb(d)]
    if new.get("ok"):
        c = cells(new)
        out += [gb(new["baseline"]), c[0], c[1], c[2], f"{(new['peak_anon'] - new['baseline_anon']) / d:.2f}",
                c[3], c[4]]
    else:
        out += [new.get("error", "failed")] + [""] * 6
    if with_old:
        c = cells(row["old"])
        out += c
    print(" | ".join(out), flush=True)


def print_notes(results: list[dict]) -> None:
    ok = [r for r in results if r["new"].get("ok")]
    if not ok:
        return
    print("\nbaseline: the measured process after importing torch and the engine, before any data. The 1.3x target "
          "is read on (peak - baseline) / data, the memory the data adds; peak/data also counts the baseline.")
    for fmt in dict.fromkeys(r["format"] for r in ok):
        largest = max((r for r in ok if r["format"] == fmt), key=lambda r: r["samples"])
        new = largest["new"]
        held = largest["data"] if fmt != "mapped" else 0  # mapped data are read a batch at a time, never held
        extra = new["peak"] - new["baseline"] - held
        ratio = (new["peak"] - new["baseline"]) / largest["data"]
        beside = "the data" if held else "the baseline"
        print(f"  {fmt}, {largest['samples']} samples: (peak - baseline) / data {ratio:.2f}; beside {beside} the "
              f"run held {extra / 1e9:.2f} GB (model, batches, the evaluation batch, allocator), which does not grow "
              f"with the data: it dominates the ratios of small data.")
    print("'anon' leaves out file pages (libraries, memory maps), which the kernel can drop. samples/s depends on "
          "the machine's load (other work shares its cores); the memory figures do not.")


if __name__ == "__main__":
    sys.exit(main())
