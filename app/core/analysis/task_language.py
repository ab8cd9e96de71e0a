"""The task's language for the explorer's views (Qt-free): what a *flip* is for each task and how one reads,
the order of labels on an axis, a palette with distinct colours for many classes, the title of a sequence
modality, and the unit of an attribution φ.

**Flips** — a test sample *flips* under a modality subset (or a missing-modality mask) when its prediction with
that subset differs, in the task's terms, from its prediction with every (present) modality:

- single-label: the arg-max class changes;
- multi-label: the predicted label set (σ ≥ 0.5 per label) changes by a Jaccard distance
  1 − |A ∩ B| / |A ∪ B| ≥ `JACCARD_FLIP` (0.5) between the full set A and the subset's set B (two empty sets:
  distance 0). With 23 labels and two or three of them on per item, a single borderline label crossing 0.5
  ({Drama, Comedy, Romance} → {Drama, Comedy}: 1/3) is not a flip, while losing or gaining half of the set is
  ({Drama} → {Drama, Comedy}: 1/2; {Comedy} → {Drama}: 1). Shown as ``+Drama −Comedy``;
- regression: the predicted score moves by at least `REGRESSION_FLIP_SD` (1) standard deviation σ of the
  split's target, or — for a target that takes both signs, such as a sentiment score centred at 0 — it crosses
  0 while moving by at least `REGRESSION_SIGN_SD` (0.5) σ (a change of the binary sentiment, not a wobble
  around 0). Shown as ``2.31 → −0.40``.

Samples with none of the subset's modalities are never counted (they have no subset prediction).
"""
from __future__ import annotations

import re

import numpy as np
import torch

from robult_engine.evaluation import EncodedSplit, subset_logits

JACCARD_FLIP = 0.5  # multi-label: a flip when the label sets differ by at least this Jaccard distance
REGRESSION_FLIP_SD = 1.0  # regression: a flip when |Δ score| ≥ this many target standard deviations …
REGRESSION_SIGN_SD = 0.5  # … or the score changes sign (targets of both signs) by at least this many σ
# the views list at most this many flipped samples (the first, by index): each row is worded on the GUI thread
# (0.2 to 0.3 ms for multi-label), and a click on a cell of 8,818 test films filled the list for over a second
MAX_FLIPS_LISTED = 100

MINUS = "\u2212"


# --- flips -----------------------------------------------------------------------------------------------------


def target_sd(target: torch.Tensor) -> float:
    """σ of a regression target (1.0 when it is constant or empty, so the rule stays defined)."""
    t = torch.as_tensor(target).double().reshape(-1)
    t = t[torch.isfinite(t)]
    sd = float(t.std()) if t.numel() > 1 else 0.0
    return sd if sd > 0 and np.isfinite(sd) else 1.0


def centred_target(target: torch.Tensor) -> bool:
    """The target takes both signs (a score centred at 0, e.g. sentiment in [−3, 3])."""
    t = torch.as_tensor(target).double().reshape(-1)
    t = t[torch.isfinite(t)]
    return bool(t.numel() and t.min() < 0 < t.max())


def jaccard_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) 1 − |A ∩ B| / |A ∪ B| of two (N, C) bool label sets; 0 where both are empty."""
    inter = (a & b).sum(-1).double()
    union = (a | b).sum(-1).double()
    return torch.where(union > 0, 1.0 - inter / union.clamp(min=1), torch.zeros_like(union))


def flip_mask(enc: EncodedSplit, subset: tuple[bool, ...] | torch.Tensor, task: str) -> torch.Tensor:
    """(N,) bool: the samples that flip under `subset` (one subset (M,) or a mask per sample (N, M)); see the
    module docstring for the rule of each task."""
    m = enc.mask.shape[1]
    sub, rows = subset_logits(enc, subset)
    full, _ = subset_logits(enc, (True,) * m)
    if task == "single-label":
        diff = sub.argmax(-1) != full.argmax(-1)
    elif task == "multi-label":
        diff = jaccard_distance(full >= 0, sub >= 0) >= JACCARD_FLIP
    else:
        y0, y1 = full[:, 0].double(), sub[:, 0].double()
        sd = target_sd(enc.target)
        d = (y1 - y0).abs()
        diff = d >= REGRESSION_FLIP_SD * sd
        if centred_target(enc.target):
            diff |= ((y0 >= 0) != (y1 >= 0)) & (d >= REGRESSION_SIGN_SD * sd)
    return diff & rows


def task_flips(enc: EncodedSplit, subset: tuple[bool, ...] | torch.Tensor, task: str) -> np.ndarray:
    """Indices (sorted, int64) of the samples that flip under `subset`."""
    return flip_mask(enc, subset, task).nonzero().reshape(-1).numpy().astype(np.int64)


def subset_outputs(enc: EncodedSplit, subset: tuple[bool, ...] | torch.Tensor) -> torch.Tensor:
    """(N, C) the subset's logits (scores for regression), as the engine combines them."""
    return subset_logits(enc, subset)[0]


def listed_note(n_flips: int) -> str:
    """What a flip list says when it lists only the first MAX_FLIPS_LISTED of `n_flips` samples ("" when it
    lists them all)."""
    if n_flips <= MAX_FLIPS_LISTED:
        return ""
    return f"the first {MAX_FLIPS_LISTED:,} of {n_flips:,} are listed"


def flip_rule(task: str, target: torch.Tensor | None = None) -> str:
    """The rule of a flip, in one line for the user."""
    if task == "multi-label":
        return f"the predicted label set changes (Jaccard distance ≥ {JACCARD_FLIP:g})"
    if task == "regression":
        sd = target_sd(target) if target is not None else None
        unit = f" = {sd:.3g}" if sd is not None else ""
        rule = f"the score moves by ≥ {REGRESSION_FLIP_SD:g} σ of the target (σ{unit})"
        if target is None or centred_target(target):
            rule += f", or crosses 0 by ≥ {REGRESSION_SIGN_SD:g} σ"
        return rule
    return "the predicted class changes"


def signed(v: float, digits: int = 2) -> str:
    """A number with a true minus sign: −0.40, 2.31."""
    return f"{float(v):.{digits}f}".replace("-", MINUS)


def label_change(full_on, sub_on, names) -> str:
    """``+Drama −Comedy``: the labels the subset adds, then those it drops (label order); "no change" if none."""
    full_on, sub_on = np.asarray(full_on, bool), np.asarray(sub_on, bool)
    order = label_order(names)
    added = [names[j] for j in order if sub_on[j] and not full_on[j]]
    removed = [names[j] for j in order if full_on[j] and not sub_on[j]]
    return " ".join([f"+{n}" for n in added] + [f"{MINUS}{n}" for n in removed]) or "no change"


def label_set_text(on, names) -> str:
    on = np.asarray(on, bool)
    return "{" + ", ".join(names[j] for j in label_order(names) if on[j]) + "}"


def prediction_text(insp, which: str = "subset") -> str:
    """`Inspection.prediction_text`, with a multi-label set in the order the views draw the labels."""
    if insp.task != "multi-label":
        return insp.prediction_text(which)
    if which == "subset":
        probs = insp.probs
    elif which == "all":
        probs = insp.probs_all
    else:
        probs = insp.mod_probs[insp.modality_names.index(which)]
    probs = np.asarray(probs, dtype=float)
    if np.isnan(probs).any():
        return "–"
    return label_set_text(probs >= 0.5, insp.class_names)


def class_text(i: int, names) -> str:
    return names[i] if 0 <= i < len(names) else str(i)


def flip_item(task: str, full: torch.Tensor, sub: torch.Tensor, target, names, where: str
              ) -> tuple[str, str, int]:
    """(text, tooltip, verdict) of one flipped sample: `full` and `sub` its (C,) outputs with every modality
    and with `where` (the subset's name or the modalities kept); `target` its truth (or None). verdict: +1 when
    the subset is closer to the truth than all modalities, −1 when further, 0 when equal or unknown."""
    names = tuple(names)
    if task == "multi-label":
        a, b = (full >= 0).numpy(), (sub >= 0).numpy()
        text = f"{where}: {label_change(a, b, names)}"
        tip = f"all modalities {label_set_text(a, names)} → {where} {label_set_text(b, names)}"
        verdict = 0
        if target is not None:
            t = torch.as_tensor(target).reshape(1, -1) > 0.5
            da = float(jaccard_distance(torch.as_tensor(a)[None], t)[0])
            db = float(jaccard_distance(torch.as_tensor(b)[None], t)[0])
            verdict = int(np.sign(da - db))
            tip += f"; true {label_set_text(t[0].numpy(), names)}"
        return text, tip, verdict
    if task == "regression":
        y0, y1 = float(full[0]), float(sub[0])
        truth = f"; true {signed(float(target))}" if target is not None else ""
        text = f"{signed(y0)} → {signed(y1)}   (all → {where}{truth})"
        tip = f"score with all modalities {signed(y0, 3)}, with {where} {signed(y1, 3)}"
        verdict = 0
        if target is not None:
            ea, eb = abs(y0 - float(target)), abs(y1 - float(target))
            verdict = int(np.sign(ea - eb))
            tip += f"; true {signed(float(target), 3)} (error {ea:.3f} → {eb:.3f})"
        return text, tip, verdict
    pa, ps = int(full.argmax()), int(sub.argmax())
    truth = int(target) if target is not None else None
    text = f"all → {class_text(pa, names)},  {where} → {class_text(ps, names)}" + (
        f"   (true {class_text(truth, names)})" if truth is not None else "")
    verdict = 0
    if truth is not None and pa == truth and ps != truth:
        verdict = -1
    elif truth is not None and ps == truth and pa != truth:
        verdict = 1
    tip = {-1: f"correct with all modalities, wrong with {where}",
           1: f"wrong with all modalities, correct with {where}"}.get(verdict, "")
    return text, tip, verdict


# --- labels on an axis, colours --------------------------------------------------------------------------------


def natural_key(s: str) -> tuple:
    """Sort key that reads the digits of a name as a number: g2 < g10."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", str(s)) if p)


def label_order(names) -> list[int]:
    """The order in which to show the classes / labels: the dataset's own order, except when that order is
    plain text order (a loader that sorted the names as strings: g0, g1, g10, g11, …, g2) — then natural order
    (g0, g1, g2, …, g10)."""
    names = [str(n) for n in names]
    idx = list(range(len(names)))
    if names != sorted(names):
        return idx  # the dataset chose this order
    return sorted(idx, key=lambda j: natural_key(names[j]))


# 24 distinct colours (Okabe–Ito first, then Tol's and Kelly's contrasts); beyond 24 classes the rarest share
# OTHER_COLOUR under "other".
PALETTE_24 = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442",
              "#882255", "#44AA99", "#117733", "#999933", "#AA4499", "#332288", "#88CCEE", "#DDCC77",
              "#661100", "#6699CC", "#8C564B", "#E377C2", "#BCBD22", "#17BECF", "#B2DF8A", "#FB9A99")
OTHER_COLOUR = "#B0B0B0"


def group_categories(cat: np.ndarray, names, max_distinct: int = len(PALETTE_24)
                     ) -> tuple[np.ndarray, list[str], list[str]]:
    """(category per point, legend names, colours): up to `max_distinct` categories keep their own colour;
    beyond that the most frequent `max_distinct − 1` keep theirs (in the order given) and the rest become one
    grey "other (k classes)". A category outside the names (e.g. −1) stays −1."""
    cat = np.asarray(cat, dtype=int)
    names = [str(n) for n in names]
    if len(names) <= max_distinct:
        return cat, names, list(PALETTE_24[:len(names)])
    counts = np.bincount(cat[(cat >= 0) & (cat < len(names))], minlength=len(names))
    top = set(np.argsort(-counts, kind="stable")[:max_distinct - 1].tolist())
    keep = sorted(top)  # in the order given
    remap = np.full(len(names), len(keep), dtype=int)
    for new, j in enumerate(keep):
        remap[j] = new
    out = np.where((cat >= 0) & (cat < len(names)), remap[np.clip(cat, 0, len(names) - 1)], -1)
    rest = len(names) - len(keep)
    return out, [names[j] for j in keep] + [f"other ({rest} classes)"], list(PALETTE_24[:len(keep)]) + [OTHER_COLOUR]


# --- modalities and units ----------------------------------------------------------------------------------------

_AUDIO = ("audio", "acoustic", "speech", "sound", "voice", "wav", "recording", "mfcc", "covarep")
_VISION = ("vision", "visual", "video", "face", "facet", "frame", "image", "camera")
_TEXT = ("text", "language", "word", "token", "caption", "lyric", "transcript", "glove", "bert", "sentence")


def _has(name: str, words) -> bool:
    n = name.lower()
    return any(w in n for w in words)


def is_mfcc(spec) -> bool:
    """A sequence modality of MFCC frames: the audio front-end's 13 coefficients (AV-Digits, a recording
    column of a manifest folder) — a 13-feature sequence not named for vision or text (the rule by which the
    explorer feeds a dropped recording to a modality), or one named after MFCCs. MOSI/MOSEI's audio (COVAREP,
    74 features) is audio but not MFCC."""
    from robult_engine.data.audio import N_MFCC
    name = spec.name.lower()
    if spec.kind != "sequence":
        return False
    if "mfcc" in name:
        return True
    return spec.feature_dim == N_MFCC and (_has(name, _AUDIO) or not (_has(name, _VISION) or _has(name, _TEXT)))


def sequence_labels(spec) -> dict[str, str]:
    """Title and axis names of a sequence modality's frame heat map, by the modality's kind and name:
    {"title", "rows" (the feature axis), "steps" (the time axis), "what" (for tooltips)}."""
    name = spec.name
    if is_mfcc(spec):
        return {"title": f"{name}: audio features per frame (MFCC)", "rows": "coef.", "steps": "frame",
                "what": "MFCC coefficients"}
    if _has(name, _AUDIO):
        return {"title": f"{name}: audio features per frame", "rows": "feature", "steps": "frame",
                "what": "audio features"}
    if _has(name, _TEXT):
        return {"title": f"{name}: text features per token", "rows": "feature", "steps": "token",
                "what": "text features"}
    if _has(name, _VISION):
        return {"title": f"{name}: vision features per frame", "rows": "feature", "steps": "frame",
                "what": "vision features"}
    return {"title": f"{name}: features per step", "rows": "feature", "steps": "step", "what": "features"}


def phi_unit(task: str) -> str:
    """The unit of φ (and of v) for a task."""
    if task == "regression":
        return "units of the target"
    if task == "multi-label":
        return "nats of log σ, per label"
    return "nats of log-probability"


def phi_axis(task: str, mean_abs: bool = False) -> str:
    return f"{'mean |φ|' if mean_abs else 'φ'} ({phi_unit(task)})"


__all__ = ["JACCARD_FLIP", "OTHER_COLOUR", "PALETTE_24", "REGRESSION_FLIP_SD", "REGRESSION_SIGN_SD", "flip_item",
           "flip_mask", "flip_rule", "group_categories", "is_mfcc", "jaccard_distance", "label_change",
           "label_order", "natural_key", "phi_axis", "phi_unit", "prediction_text", "sequence_labels", "signed",
           "subset_outputs", "target_sd", "task_flips"]
