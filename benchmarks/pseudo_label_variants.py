#!/usr/bin/env python
"""Diagnostic behind docs/results/README.md: robult-st with other weights for its pseudo-labels on AV-Digits.

Usage: python benchmarks/pseudo_label_variants.py {kappa|ones|conf|conf-late}
"""
# Diagnostic: why does self-training beat robult-st on AV-Digits? Variants of the pseudo-label weighting,
# measured on the test mean over subsets (3 seeds).
import sys, torch
import robult_engine.trainer as T
from robult_engine.config import RunConfig
from robult_engine.data import load_dataset
from robult_engine.evaluation import mean_over_subsets
torch.set_num_threads(1)
variant = sys.argv[1]
orig = T.Trainer.compute_losses
def patched(self, batch, epoch, stats):
    # replace kappa_local by the variant's weight
    orig_terms = T.Trainer._soft_pu_terms
    def terms(self2, out, batch2, stats2):
        d = orig_terms(self2, out, batch2, stats2)
        with torch.no_grad():
            if variant in ("conf", "conf-late"):
                logits = out.logits_fused if variant == "conf" else out.logits
                conf, pred = torch.softmax(logits.float(), -1).max(-1)
                d["kappa_local"] = (conf >= 0.9).float()
                if variant == "conf-late":
                    d["pseudo_local"] = pred
            elif variant == "ones":
                d["kappa_local"] = torch.ones_like(d["kappa_local"])
        return d
    self._soft_pu_terms = terms.__get__(self)
    return orig(self, batch, epoch, stats)
if variant != "kappa":
    T.Trainer.compute_losses = patched
base = RunConfig(method="robult-st")
bundle = load_dataset(base.data)
res = []
for seed in range(3):
    cfg = base.replace(seed=seed, **{"data.seed": seed})
    r = T.Trainer(cfg, bundle).run()
    res.append(mean_over_subsets(r.test_metrics, "single-label")["accuracy"])
    print(variant, seed, {k: round(v["accuracy"], 4) for k, v in r.test_metrics.items()}, flush=True)
print(variant, "MEAN", sum(res) / len(res))
