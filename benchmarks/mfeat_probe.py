"""What each mfeat view carries, measured without any network: a ridge-regression probe (one-hot targets,
closed form) per view and on all six views concatenated, trained on the train split with all labels and with
a stratified 5 % of them (the same labeled indices `robult train` uses for a seed), scored on the test split.

    python benchmarks/mfeat_probe.py [--seeds 5] [--alpha 1.0]

The views are the standardised features the models see (pix flattened, in [0, 1]).
"""
from __future__ import annotations

import argparse

import torch

from robult_engine.data.mfeat import load_mfeat
from robult_engine.semisup import labeled_indices


def ridge_accuracy(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor,
                   alpha: float) -> float:
    x_tr, x_te = x_tr.double(), x_te.double()
    mu = x_tr.mean(0)
    a = torch.cat([x_tr - mu, torch.ones(len(x_tr), 1, dtype=torch.float64)], 1)  # (N, D + 1)
    t = torch.nn.functional.one_hot(y_tr, 10).double()  # (N, 10)
    reg = alpha * torch.eye(a.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0.0  # the intercept is not penalised
    w = torch.linalg.solve(a.T @ a + reg, a.T @ t)
    pred = (torch.cat([x_te - mu, torch.ones(len(x_te), 1, dtype=torch.float64)], 1) @ w).argmax(1)
    return float((pred == y_te).double().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=1.0)
    args = ap.parse_args(argv)
    b = load_mfeat()
    tr, te = b.splits["train"], b.splits["test"]
    names = list(b.info.modality_names)

    def feats(split, ns):
        return torch.cat([split.inputs[n].flatten(1) for n in ns], 1)

    print(f"ridge probe on mfeat (alpha {args.alpha}), test accuracy; 5 %: mean ± std over {args.seeds} labeled "
          f"subsets (seeds 0..{args.seeds - 1})")
    print(f"{'view':<8} {'all labels':>10} {'5 % labels':>16}")
    for label, ns in [(n, [n]) for n in names] + [("all six", names)]:
        full = ridge_accuracy(feats(tr, ns), tr.target, feats(te, ns), te.target, args.alpha)
        few = []
        for s in range(args.seeds):
            idx = labeled_indices(tr.target, "single-label", 0.05, s)
            few.append(ridge_accuracy(feats(tr, ns)[idx], tr.target[idx], feats(te, ns), te.target, args.alpha))
        m = sum(few) / len(few)
        sd = (sum((v - m) ** 2 for v in few) / max(1, len(few) - 1)) ** 0.5
        print(f"{label:<8} {full:>10.3f} {m:>9.3f} ± {sd:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
