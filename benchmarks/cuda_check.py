"""CUDA check, prepared for a machine with a GPU: bf16 autocast numerics, training results close to the CPU's,
steps per second GPU vs CPU, and a 2-process nccl job when there are at least 2 GPUs.

    python benchmarks/cuda_check.py                      # everything; about 3-6 minutes on one GPU + 16 cores
    python benchmarks/cuda_check.py --quick              # a 4-epoch smoke version (about 1-2 minutes)
    python benchmarks/cuda_check.py --json out.json      # also write every figure (for docs/cuda.md)
    python benchmarks/cuda_check.py --device cpu --tiny  # the script's own dry run on a CPU (tests do this)

Without a CUDA device it says so and exits with status 0, having checked nothing. Exit status 1 when a check
failed. The AV-Digits cache must already be built (`python -m robult_engine.data.avdigits`, or copy
`assets/cache/av_digits.npz`): a GPU machine without network cannot build it.

What is checked, and why the tolerances are what they are:

1. Numerics, same weights and batch (eval mode, so no dropout): the model's forward outputs and the gradient of
   a fixed loss on CUDA against the CPU.
   - fp32 on CUDA (TF32 off): relative error ≤ 1e-4. Only the order of floating-point reductions differs; with
     fp32's 2^-24 unit roundoff, sums over ≤ 8192 terms and about ten layers stay far below 1e-4.
   - bf16 autocast (what training uses on CUDA): relative error of every output ≤ 0.05 and gradient cosine
     ≥ 0.99. bf16 keeps 8 significant bits (unit roundoff 2^-8 ≈ 0.4 %); matmul inputs are rounded at each of
     about six layers of the deepest path, which gives errors of a few per cent at worst, not more.
2. Training, same seed on both devices (identical labeled split, batch order and initial weights; dropout
   draws and arithmetic differ, so the runs are two different but equally valid trajectories): the test mean
   over modality subsets must differ by at most 3·√2·σ_seed, where σ_seed is the seed-to-seed standard
   deviation measured on the CPU (docs/results/README.md: AV-Digits Robult 0.0115 over 3 seeds, PID-Synth
   Robult 0.0112 over 10 seeds). The difference of two independent runs has standard deviation √2·σ_seed;
   three of those is the 99.7 % band. A real device bug (wrong masking, a broken reduction) moves the result
   by far more (PID-Synth chance level is 0.125, AV-Digits 0.1).
3. Speed: optimizer steps per second inside epochs (evaluation excluded), GPU vs CPU (all CPU threads).
4. With ≥ 2 GPUs: `torchrun --nproc_per_node 2` (nccl) trains the PID-Synth run; it must finish, and its test
   mean must lie within the same band of the 1-GPU run (the two compute the same gradients for the same global
   batch, up to reduction order and per-process dropout draws).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

# seed-to-seed standard deviations of the Robult test mean over subsets, measured on the CPU (docs/results)
SIGMA_SEED = {"av-digits": 0.0115, "pid-synth": 0.0112}
FP32_RTOL = 1e-4
BF16_RTOL = 0.05
BF16_GRAD_COS = 0.99


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def numerics_check(cfg, bundle, device: str = "cuda") -> dict:
    """Forward outputs and gradients of one batch, same weights: `device` fp32 and `device` bf16 autocast vs
    CPU fp32."""
    from robult_engine.data import make_batch
    from robult_engine.models import build_model

    torch.manual_seed(cfg.seed)
    cpu_model = build_model(cfg.model, bundle.info).eval()
    split = bundle.splits["train"]
    batch = make_batch(split, torch.arange(min(64, len(split))))

    def run(device: str, autocast: bool):
        model = build_model(cfg.model, bundle.info).eval()
        model.load_state_dict(cpu_model.state_dict())
        model.to(device)
        b = batch.to(torch.device(device))
        model.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            out = model(b.inputs, b.lengths, b.mask, with_fusion=True, with_reconstruction=True)
            target = b.target if b.target.dim() == 1 else b.target.argmax(-1)
            loss = (torch.nn.functional.cross_entropy(out.logits.float(), target.long())
                    + out.h_rec.float().pow(2).mean() + out.s.float().pow(2).mean())
        loss.backward()
        grads = torch.cat([p.grad.detach().double().flatten().cpu() for p in model.parameters() if p.grad is not None])
        outs = {k: getattr(out, k).detach().float().cpu() for k in ("h", "z", "u", "logits", "s", "h_rec")}
        return outs, grads

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref, g_ref = run("cpu", False)
    fp32, g32 = run(device, False)
    bf16, g16 = run(device, True)
    res = {
        "fp32_rel_err": {k: rel_err(fp32[k], ref[k]) for k in ref},
        "fp32_grad_rel_err": rel_err(g32, g_ref),
        "bf16_rel_err": {k: rel_err(bf16[k], ref[k]) for k in ref},
        "bf16_grad_cosine": float(torch.nn.functional.cosine_similarity(g16, g_ref, dim=0)),
    }
    res["ok"] = (max(res["fp32_rel_err"].values()) <= FP32_RTOL and res["fp32_grad_rel_err"] <= FP32_RTOL
                 and max(res["bf16_rel_err"].values()) <= BF16_RTOL and res["bf16_grad_cosine"] >= BF16_GRAD_COS)
    torch.backends.cuda.matmul.allow_tf32 = True
    return res


class StepClock:
    """Times optimizer steps inside epochs (the first step of each epoch starts its clock: no evaluation in it)."""

    def __init__(self) -> None:
        self.epoch, self.t0, self.last, self.steps, self.secs = -1, 0.0, 0.0, 0, 0.0

    def __call__(self, ev) -> None:
        from robult_engine.events import StepEnded
        if not isinstance(ev, StepEnded):
            return
        now = time.perf_counter()
        if ev.epoch != self.epoch:
            self.epoch, self.t0 = ev.epoch, now
        else:
            self.steps += 1
            self.secs += now - self.last
        self.last = now

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.secs if self.secs > 0 else float("nan")


def train_once(cfg, bundle, device: str, out_dir: Path) -> dict:
    from robult_engine.evaluation import mean_over_subsets
    from robult_engine.events import Finished
    from robult_engine.metrics import primary_metric
    from robult_engine.trainer import Trainer
    clock = StepClock()
    cfg = cfg.replace(**{"train.device": device})
    t0 = time.perf_counter()
    final = Trainer(cfg, bundle, callbacks=[clock], out_dir=out_dir).run()
    wall = time.perf_counter() - t0
    if not isinstance(final, Finished):
        return {"ok": False, "error": final.message}
    metric = primary_metric(bundle.info.task)
    return {"ok": True, "test_mean": mean_over_subsets(final.test_metrics, bundle.info.task)[metric],
            "best_epoch": final.best_epoch, "epochs_run": final.epochs_run, "wall_s": wall,
            "steps_per_s": clock.steps_per_s, "test": final.test_metrics}


def training_check(name: str, cfg, bundle, work: Path, device: str = "cuda") -> dict:
    cpu = train_once(cfg, bundle, "cpu", work / f"{name}-cpu")
    gpu = train_once(cfg, bundle, device, work / f"{name}-{device}")
    res = {"cpu": cpu, "cuda": gpu, "tolerance": 3 * math.sqrt(2) * SIGMA_SEED[name]}
    if cpu["ok"] and gpu["ok"]:
        res["diff"] = gpu["test_mean"] - cpu["test_mean"]
        res["speedup"] = gpu["steps_per_s"] / cpu["steps_per_s"]
        res["ok"] = abs(res["diff"]) <= res["tolerance"]
    else:
        res["ok"] = False
    return res


def ddp_check(cfg_args: list[str], single: dict, tolerance: float, work: Path) -> dict:
    out = work / "pid-synth-ddp2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "robult_engine", "train", "--device", "cuda", "--quiet", "--out", str(out), *cfg_args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    res = {"cmd": " ".join(cmd[1:]), "rc": proc.returncode, "wall_s": time.perf_counter() - t0}
    if proc.returncode != 0:
        res.update(ok=False, stderr=proc.stderr[-2000:])
        return res
    result = json.loads((out / "result.json").read_text())
    from robult_engine.evaluation import mean_over_subsets
    mean = mean_over_subsets(result["test"], "single-label")["accuracy"]
    res.update(test_mean=mean, diff_vs_1gpu=mean - single["test_mean"], tolerance=tolerance,
               ok=abs(mean - single["test_mean"]) <= tolerance)
    return res


def brief(check: dict) -> str:
    """A training check as one line of JSON, without the per-subset tables (they go to --json)."""
    short = {k: ({kk: vv for kk, vv in v.items() if kk != "test"} if isinstance(v, dict) else v)
             for k, v in check.items()}
    return json.dumps(short)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 epochs per run instead of the default schedule")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--work", help="folder for the run folders (default: a temporary folder)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="the device under test (cpu: a dry run of this script, compared with itself)")
    ap.add_argument("--tiny", action="store_true", help="tiny data and models, 1 epoch (with --device cpu: tests)")
    args = ap.parse_args()
    dev = args.device

    if dev == "cuda" and not torch.cuda.is_available():
        print(f"cuda_check: no CUDA device available (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda or 'no'}); nothing was checked.")
        return 0
    from robult_engine.config import RunConfig
    from robult_engine.data import load_dataset
    from robult_engine.data.avdigits import cache_path

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cuda-check-"))
    gpus = torch.cuda.device_count() if dev == "cuda" else 0
    name = torch.cuda.get_device_name(0) if dev == "cuda" else "CPU (dry run)"
    report: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": gpus, "gpu_name": name,
                    "bf16_supported": torch.cuda.is_bf16_supported() if dev == "cuda" else None,
                    "cpu_threads": torch.get_num_threads(), "quick": args.quick, "tiny": args.tiny, "checks": {}}
    print(f"cuda_check: {gpus} × {name}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"{report['cpu_threads']} CPU threads for the CPU runs; runs in {work}", flush=True)
    epochs = {"train.epochs": 4} if args.quick else {}
    if args.tiny:
        epochs = {"train.epochs": 1, "model.d_h": 16, "model.d_z": 8, "model.d_u": 8, "model.d_hidden": 16}
    checks = report["checks"]

    pid_cfg = RunConfig().replace(**{"data.dataset": "pid-synth", **epochs,
                                     **({"data.synth_n_train": 200} if args.tiny else {})}).validate()
    pid = load_dataset(pid_cfg.data)
    checks["numerics_pid_synth"] = numerics_check(pid_cfg, pid, dev)
    print(f"numerics (PID-Synth model): {json.dumps(checks['numerics_pid_synth'])}", flush=True)

    if cache_path().exists():
        av_cfg = RunConfig().replace(**epochs).validate()  # the default run: AV-Digits, Robult, 5 % labels
        av = load_dataset(av_cfg.data)
        checks["numerics_av_digits"] = numerics_check(av_cfg, av, dev)
        print(f"numerics (AV-Digits model: image CNN + audio conv): {json.dumps(checks['numerics_av_digits'])}",
              flush=True)
        checks["train_av_digits"] = training_check("av-digits", av_cfg, av, work, dev)
        print(f"training AV-Digits: {brief(checks['train_av_digits'])}", flush=True)
    elif args.tiny:
        report["av_digits_note"] = f"not run: no AV-Digits cache at {cache_path()}"
    else:
        checks["train_av_digits"] = {"ok": False, "error": f"no AV-Digits cache at {cache_path()}: build it "
                                     f"(python -m robult_engine.data.avdigits) or copy av_digits.npz there"}
        print(f"AV-Digits: {checks['train_av_digits']['error']}", flush=True)

    checks["train_pid_synth"] = training_check("pid-synth", pid_cfg, pid, work, dev)
    print(f"training PID-Synth: {brief(checks['train_pid_synth'])}", flush=True)

    if gpus >= 2 and checks["train_pid_synth"]["cuda"].get("ok"):
        cfg_args = ["--dataset", "pid-synth"] + (["--epochs", "4"] if args.quick else [])
        checks["ddp_nccl_2gpu"] = ddp_check(cfg_args, checks["train_pid_synth"]["cuda"],
                                            checks["train_pid_synth"]["tolerance"], work)
        print(f"2-process nccl: {json.dumps(checks['ddp_nccl_2gpu'])}", flush=True)
    else:
        report["ddp_note"] = f"not run: {gpus} GPU(s)" if gpus < 2 else "not run: the 1-GPU run failed"
        print(f"2-process nccl: {report['ddp_note']}", flush=True)

    print("\nsummary")
    for name, c in checks.items():
        extra = ""
        if "diff" in c:
            extra = (f"  test mean cpu {c['cpu']['test_mean']:.4f} cuda {c['cuda']['test_mean']:.4f} "
                     f"(diff {c['diff']:+.4f}, tolerance ±{c['tolerance']:.4f}); steps/s cpu "
                     f"{c['cpu']['steps_per_s']:.1f} cuda {c['cuda']['steps_per_s']:.1f} (×{c['speedup']:.2f})")
        print(f"  {'PASS' if c.get('ok') else 'FAIL'}  {name}{extra}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0 if all(c.get("ok") for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
