"""Engine benchmarks, measured side by side in one run (ratios, so the machine's speed and load cancel out).

1. Training-step time of Robult / the `supervised` baseline on the same encoders, model sizes and batches.
   Both methods run the trainer's own step (`Trainer.compute_losses`, backward, clipping, AdamW, scheduler),
   interleaved step by step (ABAB…, the order alternating), after a warm-up; medians over many steps.
   Settings: PID-Synth (3 vector modalities) at the default config, and a model with image + sequence encoders
   at the default sizes (AV-Digits shapes: a 1×8×8 image and 92×13 MFCC frames; and a larger 3×32×32 image
   with 92×13 frames).
2. All-subsets evaluation (2^M − 1 subsets) / one full-modality evaluation (encode + metrics of the full set),
   interleaved, medians: M = 3 (PID-Synth, a multi-class and a binary task, the latter with AUROC per subset)
   and M = 6 (mfeat's test split, 63 subsets; skipped with a note when its cache cannot be built).

    .venv/bin/python benchmarks/engine_bench.py            # about 2-3 minutes on 2 CPU cores (1 thread)
    .venv/bin/python benchmarks/engine_bench.py --steps 100 --json out.json
    .venv/bin/python benchmarks/engine_bench.py --profile  # cProfile of one Robult step setting

Targets: step ratio ≤ 1.3 on PID-Synth's MLP encoders; evaluation ratio ≤ 1.2 at M = 3 (M = 6 reported).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robult_engine.config import RunConfig  # noqa: E402
from robult_engine.data import DatasetBundle, DatasetInfo, ModalitySpec, SplitData, load_dataset  # noqa: E402
from robult_engine.evaluation import encode_split, evaluate_subsets, subset_logits  # noqa: E402
from robult_engine.metrics import compute_metrics  # noqa: E402
from robult_engine.trainer import Trainer  # noqa: E402


def synthetic_bundle(image_shape: tuple[int, ...], seq_shape: tuple[int, int], n: int = 600,
                     classes: int = 10, seed: int = 0) -> DatasetBundle:
    """image + sequence (+ a small vector modality, so M = 3) with the given shapes; random data (the step time
    does not depend on the values)."""
    g = torch.Generator().manual_seed(seed)
    info = DatasetInfo("bench-img-seq", (ModalitySpec("image", "image", image_shape),
                                         ModalitySpec("audio", "sequence", seq_shape),
                                         ModalitySpec("meta", "vector", (8,))),
                       "single-label", tuple(str(c) for c in range(classes)))

    def split(k: int) -> SplitData:
        lengths = torch.randint(seq_shape[0] // 4, seq_shape[0] + 1, (k,), generator=g)
        seq = torch.randn(k, *seq_shape, generator=g) * (torch.arange(seq_shape[0])[None, :, None]
                                                         < lengths[:, None, None])
        return SplitData(inputs={"image": torch.rand(k, *image_shape, generator=g), "audio": seq,
                                 "meta": torch.randn(k, 8, generator=g)},
                         lengths={"audio": lengths}, mask=torch.ones(k, 3, dtype=torch.bool),
                         target=torch.randint(0, classes, (k,), generator=g))

    return DatasetBundle(info, {"train": split(n), "val": split(n // 4), "test": split(n // 4)})


class StepRunner:
    """One method's trainer, set up, stepping over a fixed list of global batches (the trainer's own step)."""

    def __init__(self, cfg: RunConfig, bundle: DatasetBundle) -> None:
        self.tr = Trainer(cfg, bundle)
        self.tr.setup()
        self.batches = self.tr.sampler.epoch(0)
        self.i = 0

    def step(self) -> float:
        tr = self.tr
        gidx = self.batches[self.i % len(self.batches)]
        self.i += 1
        stats = {"kappa_hist": torch.zeros(20), "kappa_sum": 0.0, "kappa_n": 0, "pl_correct": 0, "pl_n": 0}
        t0 = time.perf_counter()
        batch = tr._step_batch(gidx)
        losses = tr.compute_losses(batch, 0, stats)
        total = losses["total"]
        torch.isfinite(total.detach()).all()
        tr.opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.cfg.train.grad_clip)
        tr.opt.step()
        tr.sched.step()
        return time.perf_counter() - t0


def step_ratio(name: str, cfg: RunConfig, bundle: DatasetBundle, steps: int, warmup: int) -> dict:
    runners = {m: StepRunner(cfg.replace(method=m), bundle) for m in ("robult", "supervised")}
    for _ in range(warmup):
        for r in runners.values():
            r.step()
    times: dict[str, list[float]] = {m: [] for m in runners}
    for i in range(steps):
        order = ("robult", "supervised") if i % 2 == 0 else ("supervised", "robult")
        for m in order:
            times[m].append(runners[m].step())
    med = {m: statistics.median(t) for m, t in times.items()}
    out = {"setting": name, "batch": cfg.train.batch_size, "steps": steps,
           "robult_ms": med["robult"] * 1e3, "supervised_ms": med["supervised"] * 1e3,
           "ratio": med["robult"] / med["supervised"]}
    print(f"  {name:<38} robult {out['robult_ms']:7.2f} ms  supervised {out['supervised_ms']:7.2f} ms  "
          f"ratio {out['ratio']:.2f}", flush=True)
    return out


def eval_ratio(name: str, model, split: SplitData, names: tuple[str, ...], task: str, reps: int) -> dict:
    full = tuple(True for _ in names)

    def one_full() -> None:
        enc = encode_split(model, split, with_latents=False)
        logits, rows = subset_logits(enc, full)
        compute_metrics(logits[rows], enc.target[rows], task)

    def all_subsets() -> None:
        evaluate_subsets(model, split, names, task)

    for _ in range(3):
        one_full()
        all_subsets()
    t_full, t_all = [], []
    for i in range(reps):
        for f, acc in (((one_full, t_full), (all_subsets, t_all)) if i % 2 == 0
                       else ((all_subsets, t_all), (one_full, t_full))):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    mf, ma = statistics.median(t_full), statistics.median(t_all)
    out = {"setting": name, "n": len(split), "full_ms": mf * 1e3, "all_subsets_ms": ma * 1e3, "ratio": ma / mf}
    print(f"  {name:<38} full {out['full_ms']:7.2f} ms  all {2 ** len(names) - 1} subsets {out['all_subsets_ms']:7.2f} ms  "
          f"ratio {out['ratio']:.2f}", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps per method and setting")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--reps", type=int, default=30, help="timed evaluations of each kind")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine, 2 OpenMP threads competing with other "
                        "processes spin at every barrier and inflate small ops 10-50x; 0 leaves torch's default)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--profile", action="store_true", help="also cProfile Robult steps on PID-Synth")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "steps": [], "eval": []}

    base = RunConfig().replace(**{"data.dataset": "pid-synth", "train.device": "cpu"})
    pid = load_dataset(base.data)
    print(f"1. training step, Robult / supervised (default model sizes d_h={base.model.d_h}, "
          f"d_z={base.model.d_z}, d_u={base.model.d_u}; median of {args.steps} interleaved steps)")
    settings = [("PID-Synth (3 vectors), batch %d" % base.train.batch_size, base, pid)]
    for img, seq in (((1, 8, 8), (92, 13)), ((3, 32, 32), (92, 13))):
        b = synthetic_bundle(img, seq)
        cfg = base.replace(**{"data.dataset": "bench"})
        label = f"image {'x'.join(map(str, img))} + seq {seq[0]}x{seq[1]} + vec"
        settings.append((label, cfg, b))
    gru = synthetic_bundle((1, 8, 8), (92, 13))
    settings.append(("image 1x8x8 + seq 92x13 (GRU) + vec", base.replace(**{"model.sequence_encoder": "gru"}), gru))
    for name, cfg, bundle in settings:
        results["steps"].append(step_ratio(name, cfg, bundle, args.steps, args.warmup))

    print(f"2. evaluation, all 2^M - 1 subsets / one full-modality pass (median of {args.reps}, interleaved)")
    tr = Trainer(base, pid)
    tr.setup()
    model = tr.model.eval()
    results["eval"].append(eval_ratio("PID-Synth test split, multi-class", model, pid.splits["test"],
                                      pid.info.modality_names, "single-label", args.reps))
    binary = load_dataset(base.replace(**{"data.synth_unique_bits": 0, "data.synth_synergy_bits": 0}).data)
    trb = Trainer(base, binary)
    trb.setup()
    results["eval"].append(eval_ratio("PID-Synth test split, binary (AUROC)", trb.model.eval(),
                                      binary.splits["test"], binary.info.modality_names, "single-label", args.reps))
    big = synthetic_bundle((3, 32, 32), (92, 13), n=800)
    trc = Trainer(base, big)
    trc.setup()
    results["eval"].append(eval_ratio("image 3x32x32 + seq 92x13 + vec, 200 samples", trc.model.eval(),
                                      big.splits["test"], big.info.modality_names, "single-label", args.reps))

    try:
        from robult_engine.data.mfeat import load_mfeat
        mf = load_mfeat()
    except Exception as e:  # noqa: BLE001 - the M = 6 figure is reported when the data is at hand
        print(f"  (M = 6 skipped: {e})")
    else:
        trm = Trainer(base.replace(**{"data.dataset": "mfeat"}), mf)
        trm.setup()
        results["eval"].append(eval_ratio("mfeat test split (M = 6, 63 subsets)", trm.model.eval(),
                                          mf.splits["test"], mf.info.modality_names, "single-label", args.reps))

    if args.profile:
        runner = StepRunner(base, pid)
        for _ in range(5):
            runner.step()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(50):
            runner.step()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(20)
        print(s.getvalue())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    pid_step = results["steps"][0]["ratio"]
    worst_step = max(r["ratio"] for r in results["steps"])
    m3 = max(r["ratio"] for r in results["eval"] if "M = 6" not in r["setting"])
    m6 = [r["ratio"] for r in results["eval"] if "M = 6" in r["setting"]]
    print(f"step ratio on PID-Synth {pid_step:.2f} (target ≤ 1.3; worst setting {worst_step:.2f}); evaluation ratio "
          f"at M = 3 {m3:.2f} (target ≤ 1.2)" + (f", at M = 6 {m6[0]:.2f}" if m6 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
