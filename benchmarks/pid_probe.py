#!/usr/bin/env python
"""What do the learned latents hold? Linear probes on PID-Synth (docs/results/README.md, "Why").

Each method is trained as `robult compare` trains it (5 % labels, its best validation epoch). Then the model
is frozen and a linear probe is fitted per modality and per information type on the *whole* training split
with its true bits (an oracle that the methods never see), and scored on the test split:
  - the redundant bit r from Z^i and from U^i of every modality,
  - the unique bit u (seen by m0 only) from Z^0 and U^0,
  - and, for reference, the same probes on the raw inputs X^i and on an untrained model.
A probe accuracy says how linearly available that bit is in the representation; the gap between it and the
method's own classifier (trained on 150 labels) says how much the few labels limit the classifier head.
Each probe is also fitted on the run's own labeled samples only ("few-label"): how label-efficient the
representation is, compared with the raw inputs and an untrained model given the same 150 labels.

Usage: python benchmarks/pid_probe.py [--methods robult,supervised,...] [--seeds 3] [--set k=v ...] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robult_engine.config import RunConfig  # noqa: E402
from robult_engine.data import load_dataset  # noqa: E402
from robult_engine.data.pid_synth import bit_accuracy, decode_bits  # noqa: E402
from robult_engine.evaluation import encode_split, modality_subsets, subset_logits  # noqa: E402
from robult_engine.models import build_model  # noqa: E402
from robult_engine.semisup import labeled_indices  # noqa: E402
from robult_engine.trainer import Trainer, seed_everything  # noqa: E402


def probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
          steps: int = 300) -> float:
    """Test accuracy of a logistic-regression probe (standardised features, full-batch L-BFGS, small L2)."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    k = int(max(train_y.max(), test_y.max())) + 1
    lin = torch.nn.Linear(a.shape[1], k)
    opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(a), train_y) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(b).argmax(-1) == test_y).float().mean())


def probes_of(enc_tr, enc_te, bits_tr, bits_te, names, labeled: torch.Tensor) -> dict[str, float]:
    """Oracle probes (all training labels) and few-label probes (the run's labeled samples only) of [U^i, Z^i],
    Z^i and U^i per modality."""
    out = {}
    for i, name in enumerate(names):
        feats_tr = {"Z": enc_tr.z[:, i], "U": enc_tr.u[:, i], "UZ": torch.cat([enc_tr.u[:, i], enc_tr.z[:, i]], -1)}
        feats_te = {"Z": enc_te.z[:, i], "U": enc_te.u[:, i], "UZ": torch.cat([enc_te.u[:, i], enc_te.z[:, i]], -1)}
        for part in feats_tr:
            for g in ("r", "u"):
                out[f"{g}|{part}[{name}]"] = probe(feats_tr[part], bits_tr[g], feats_te[part], bits_te[g])
                out[f"{g}|{part}[{name}] few-label"] = probe(feats_tr[part][labeled], bits_tr[g][labeled],
                                                             feats_te[part], bits_te[g])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="robult,robult-st,supervised,moddrop,self-training")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--out", default="")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 on a machine busy with other work)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    methods = [m for m in args.methods.split(",") if m]
    rows: dict[str, list[dict]] = {}
    for seed in range(args.seeds):
        base = RunConfig(seed=seed).replace(**{"data.dataset": "pid-synth", "data.seed": seed, **extra}).validate()
        bundle = load_dataset(base.data)
        names = bundle.info.modality_names
        d = base.data
        tr, te = bundle.splits["train"], bundle.splits["test"]
        bits_tr = decode_bits(tr.target, d.synth_redundant_bits, d.synth_unique_bits, d.synth_synergy_bits)
        bits_te = decode_bits(te.target, d.synth_redundant_bits, d.synth_unique_bits, d.synth_synergy_bits)
        # reference rows: raw inputs and an untrained model of the same architecture
        labeled = labeled_indices(tr.target, "single-label", d.label_fraction, d.seed)  # the runs' labeled split
        raw = {}
        for name in names:
            for g in ("r", "u"):
                raw[f"{g}|X[{name}]"] = probe(tr.inputs[name], bits_tr[g], te.inputs[name], bits_te[g])
                raw[f"{g}|X[{name}] few-label"] = probe(tr.inputs[name][labeled], bits_tr[g][labeled],
                                                        te.inputs[name], bits_te[g])
        rows.setdefault("raw inputs", []).append(raw)
        seed_everything(seed)
        untrained = build_model(base.model, bundle.info)
        rows.setdefault("untrained", []).append(probes_of(encode_split(untrained, tr), encode_split(untrained, te),
                                                         bits_tr, bits_te, names, labeled))
        for m in methods:
            cfg = base.replace(method=m).validate()
            trainer = Trainer(cfg, bundle)
            result = trainer.run()
            enc_tr, enc_te = encode_split(trainer.model, tr), encode_split(trainer.model, te)
            assert torch.equal(trainer.labeled_idx, labeled)
            row = probes_of(enc_tr, enc_te, bits_tr, bits_te, names, labeled)
            # the method's own classifier, for the same bits (mean over the subsets that can see them)
            own = {name: bit_accuracy(subset_logits(enc_te, sm)[0].argmax(-1), te.target, d.synth_redundant_bits,
                                      d.synth_unique_bits, d.synth_synergy_bits)
                   for name, sm in modality_subsets(names)}
            row["r|own classifier, single modalities"] = statistics.mean(own[n]["r"] for n in names)
            row["u|own classifier, m0"] = own["m0"]["u"]
            row["best epoch"] = result.best_epoch + 1
            rows.setdefault(m, []).append(row)
            print(f"seed {seed} {m}: " + " ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)

    keys = sorted({k for rs in rows.values() for r in rs for k in r}, key=lambda k: (k.split("|")[0], k))
    print(f"\nprobe accuracy on the test split (mean over {args.seeds} seeds); bit|representation")
    for k in keys:
        cells = []
        for name, rs in rows.items():
            v = [r[k] for r in rs if k in r]
            cells.append(f"{name} {statistics.mean(v):.3f}" if v else "")
        print(f"  {k:<40} " + "  ".join(c for c in cells if c))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "pid_probe.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
