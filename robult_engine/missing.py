"""Missing modalities as data: mechanisms that draw presence masks, a parser for their specs, and mask files.

A missing modality is a presence mask, never a zero-filled input that reaches the classifier: a mask drawn here
is combined with the data's own mask (`EncodedSplit.mask`) and the prediction is the mean of the present
modalities' logits (`evaluation.subset_logits`, the code path of the explorer's toggles). Every mask is a pure
function of (split, mechanism, parameters, mask seed), so every method is measured on the same masks and the
numbers can be regenerated from a saved mask file.

**The rate η is always the fraction of entries MISSING** (η = 0.7 removes 70 % of the (sample, modality)
entries in the draw). A sample never ends up with no modality: where the draw removes every modality a sample
has, one of them, chosen uniformly at random, is restored. So the realised missing fraction is lower than η
when η is high (with 2 modalities at most 1/2 of the entries can be missing); `realised_missing` reports it
and every table prints it beside η. A modality the data itself lacks stays absent.

Spec syntax (`parse_missing`, defined in missing_spec.py and re-exported here); a comma separates the settings
of a grid, a slash the rates of one setting:

- ``mcar:0.5``: each entry missing independently with probability 0.5 (missing completely at random);
  ``mcar:0,0.25,0.5,0.75``: a grid of four settings; ``mcar:0.2/0.7``: one rate per modality, in the dataset's
  modality order; ``mcar:audio=0.7``: named rates (modalities not named keep rate 0).
- ``mnar-class:0.8``: missing not at random, by class: entries of samples of the chosen classes are missing
  with probability 0.8, the others with 0; ``mnar-class:0.8/0.1`` gives the other classes 0.1;
  ``mnar-class:0.8@3+5`` chooses classes 3 and 5 (indices or class names; default: the first half of the
  classes). Multi-label: a sample is in the chosen set when it has any chosen class; regression: classes are
  the sign bins 0 (negative) and 1 (non-negative), default 0.
- ``mnar-value:0.3``: by value: for each modality, the 30 % of the samples with the weakest signal (lowest
  feature RMS; for text, fewest tokens) lose it, ties broken by the seed; ``mnar-value:0.3/0.1`` per modality.
- ``exclusive``: exactly one modality per sample, chosen uniformly among those the sample has.
- ``subsets``: the exhaustive evaluation, one setting per non-empty modality subset (2^M − 1);
  ``subset:audio+image``: one fixed subset.

Masks at different rates of one mechanism and seed share their random draws, so they are nested: an entry
missing at η = 0.25 is also missing at η = 0.5 (up to the restoration of emptied samples). This makes a curve
over η a paired comparison rather than independent noise at each point.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .config import MAX_SEED
from .data.base import DataError, SplitData, concat_rows, row_chunks
from .errors import MissingSpecError
from .evaluation import modality_subsets, subset_logits
from .metrics import compute_metrics
# the text form of the settings (the configuration validates data.train_missing with it), re-exported here
from .missing_spec import MECHANISMS, MissingSpec, parse_missing, parse_missing_grid

MASK_FILE_VERSION = 1


def expand(specs: list[MissingSpec], names: tuple[str, ...]) -> list[MissingSpec]:
    """`subsets` → one `subset:` setting per non-empty subset of `names` (singles first, all last)."""
    out: list[MissingSpec] = []
    for s in specs:
        group = ([MissingSpec("subset", modalities=tuple(n for n, keep in zip(names, sm) if keep))
                  for _, sm in modality_subsets(names)] if s.mechanism == "subsets" else [s])
        out += [g for g in group if g not in out]
    return out


# --- drawing masks -----------------------------------------------------------------------------------------


def _per_modality_rates(spec: MissingSpec, names: tuple[str, ...]) -> torch.Tensor:
    m = len(names)
    if spec.modalities:
        unknown = [n for n in spec.modalities if n not in names]
        if unknown:
            raise MissingSpecError(f"{spec.label}: unknown modality {unknown[0]!r}; the dataset has "
                                   f"{', '.join(names)}")
        r = torch.zeros(m, dtype=torch.float64)
        for n, v in zip(spec.modalities, spec.rates):
            r[names.index(n)] = v
        return r
    if len(spec.rates) == 1:
        return torch.full((m,), spec.rates[0], dtype=torch.float64)
    if len(spec.rates) != m:
        raise MissingSpecError(f"{spec.label}: {len(spec.rates)} per-modality rates, but the dataset has {m} "
                               f"modalities ({', '.join(names)}); give one rate or {m} joined by '/'")
    return torch.tensor(spec.rates, dtype=torch.float64)


def default_mnar_classes(task: str, class_names: tuple[str, ...]) -> tuple[str, ...]:
    """The classes `mnar-class` chooses when its spec names none: the first half of the classes (regression: the
    negative sign bin). Shown to the user wherever a default spec is offered, so the default names its classes."""
    if task == "regression":
        return ("negative",)
    return tuple(class_names[:max(1, len(class_names) // 2)])


def mnar_class_spec(task: str, class_names: tuple[str, ...], rates: str = "0.8/0.1") -> str:
    """`mnar-class:RATES@C1+C2…` with the default classes written out (by name where a name fits the spec's
    syntax, else by index)."""
    import re
    chosen = default_mnar_classes(task, class_names)
    names = ("negative", "non-negative") if task == "regression" else class_names
    parts = [c if re.fullmatch(r"[A-Za-z0-9_\-]+", c) else str(names.index(c)) for c in chosen]
    return f"mnar-class:{rates}@{'+'.join(parts)}"


def _class_rows(spec: MissingSpec, target: torch.Tensor, task: str, class_names: tuple[str, ...]) -> torch.Tensor:
    """(N,) bool: the samples of the chosen classes."""
    if task == "regression":
        k = 2
        cls = (target >= 0).long()
        names = ("negative", "non-negative")
    else:
        k = len(class_names)
        names = class_names
        cls = target.long() if task == "single-label" else None
    chosen = []
    for c in spec.classes:
        if c in names:
            chosen.append(names.index(c))
        elif c.isdecimal() and len(c) <= 18 and int(c) < k:
            chosen.append(int(c))
        else:
            raise MissingSpecError(f"{spec.label}: unknown class {c!r}; the dataset's classes are "
                                   f"{', '.join(names[:20])}{' …' if k > 20 else ''} (or indices 0..{k - 1})")
    if not chosen:
        chosen = [names.index(c) for c in default_mnar_classes(task, tuple(names))]
    sel = torch.zeros(k, dtype=torch.bool)
    sel[chosen] = True
    if task == "multi-label":
        return ((target > 0.5) & sel[None, :]).any(1)
    return sel[cls]


def signal_strength(split, info) -> torch.Tensor:
    """(N, M) float: how strong each modality's own signal is (mnar-value): the RMS of the features (over the
    valid frames of a sequence), the number of tokens of a text. Feature rows are read a chunk at a time
    (`row_chunks`, a few MB each), so a memory-mapped modality is never loaded whole."""
    cols = []
    n = len(split)
    for spec in info.modalities:
        x = split.inputs[spec.name]
        if spec.kind == "text":
            lengths = split.lengths.get(spec.name)
            cols.append((lengths if lengths is not None else (x != 0).sum(1)).double())
            continue
        col = torch.zeros(n, dtype=torch.float64)
        if spec.kind == "sequence":
            lengths = split.lengths[spec.name].clamp(min=1).double()
            for lo, rows in row_chunks(x):
                c = len(rows)
                col[lo:lo + c] = (rows.double().pow(2).sum((1, 2)) / (lengths[lo:lo + c] * x.shape[2])).sqrt()
        else:
            for lo, rows in row_chunks(x):
                col[lo:lo + len(rows)] = rows.double().reshape(len(rows), -1).pow(2).mean(1).sqrt()
        cols.append(col)
    return torch.stack(cols, 1) if cols else torch.zeros(n, 0, dtype=torch.float64)


def _restore_one(mask: torch.Tensor, data_mask: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Rows that lost every modality they had get one back, chosen uniformly by the draws `r` (N, M)."""
    empty = ~mask.any(1) & data_mask.any(1)
    if empty.any():
        pick = r.masked_fill(~data_mask, -1.0).argmax(1)  # (N,)
        back = torch.nn.functional.one_hot(pick, mask.shape[1]).bool() & data_mask
        mask = torch.where(empty[:, None], back, mask)
    return mask


def draw_mask(split, info, spec: MissingSpec, seed: int) -> torch.Tensor:
    """The (N, M) bool presence mask of `spec` on `split` (a `SplitData` of the dataset `info`) for a mask seed.

    A pure function: the same arguments give the same mask. The result is never True where the data's own
    mask is False, and every sample the data gives a modality keeps at least one (except under `subset:`,
    where a sample without any of the kept modalities has none and is left out of the metrics).
    """
    names = tuple(info.modality_names)
    data_mask = split.mask.bool()
    n, m = data_mask.shape
    if m != len(names):
        raise MissingSpecError(f"{spec.label}: the split's mask has {m} columns, the dataset {len(names)} modalities")
    try:
        seed_ok = not isinstance(seed, bool) and int(seed) == seed and 0 <= int(seed) <= MAX_SEED
    except (TypeError, ValueError, OverflowError):
        seed_ok = False
    if not seed_ok:
        raise MissingSpecError(f"mask seed (--mask-seed): must be an integer in 0..{MAX_SEED}, got {seed!r}")
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(n, m, generator=g, dtype=torch.float64)  # the draws deciding which entries go missing
    r = torch.rand(n, m, generator=g, dtype=torch.float64)  # restoration / exclusive choice / tie breaks
    mech = spec.mechanism
    if mech == "subset":
        unknown = [x for x in spec.modalities if x not in names]
        if unknown:
            raise MissingSpecError(f"{spec.label}: unknown modality {unknown[0]!r}; the dataset has {', '.join(names)}")
        keep = torch.tensor([x in spec.modalities for x in names])
        return data_mask & keep[None, :]
    if mech == "subsets":
        raise MissingSpecError("subsets: expand it into one setting per subset first (missing.expand)")
    if mech == "exclusive":
        pick = r.masked_fill(~data_mask, -1.0).argmax(1)
        return torch.nn.functional.one_hot(pick, m).bool() & data_mask
    if mech == "mcar":
        rates = _per_modality_rates(spec, names)  # (M,)
        drawn = u >= rates[None, :]
    elif mech == "mnar-class":
        hi = spec.rates[0]
        lo = spec.rates[1] if len(spec.rates) > 1 else 0.0
        rows = _class_rows(spec, split.target, info.task, tuple(info.class_names))
        rate = torch.where(rows, torch.tensor(hi, dtype=torch.float64), torch.tensor(lo, dtype=torch.float64))
        drawn = u >= rate[:, None]
    elif mech == "mnar-value":
        rates = _per_modality_rates(spec, names)
        strength = signal_strength(split, info)  # (N, M)
        drawn = torch.ones(n, m, dtype=torch.bool)
        for i in range(m):
            present = data_mask[:, i].nonzero().squeeze(1)
            k = int(round(float(rates[i]) * len(present)))
            if k == 0:
                continue
            # weakest first; ties (e.g. equal text lengths) broken by the seeded draws
            order = np.lexsort((r[present, i].numpy(), strength[present, i].numpy()))
            drawn[present[torch.as_tensor(order[:k])], i] = False
    else:  # pragma: no cover - parse_missing refuses other names
        raise MissingSpecError(f"unknown mechanism {mech!r}")
    return _restore_one(data_mask & drawn, data_mask, r)


def draw_masks(split, info, specs: list[MissingSpec], seed: int) -> dict[str, torch.Tensor]:
    """{spec label: mask} for every setting (`subsets` expanded)."""
    return {s.label: draw_mask(split, info, s, seed) for s in expand(list(specs), tuple(info.modality_names))}


def realised_missing(mask: torch.Tensor) -> float:
    """The fraction of the (sample, modality) entries that are missing (the data's own absences included)."""
    return float(1.0 - mask.float().mean()) if mask.numel() else 0.0


def apply_mask(split, mask: torch.Tensor):
    """A copy of `split` whose presence mask is `mask` (which must lie within the data's mask). Removed entries
    are zeroed (sequences and texts get length 1), as the data interface stores a missing modality, so an
    entry removed here is indistinguishable from one the data never had."""
    mask = mask.bool()
    if mask.shape != split.mask.shape:
        raise MissingSpecError(f"mask of shape {tuple(mask.shape)} for a split of shape {tuple(split.mask.shape)}")
    if (mask & ~split.mask).any():
        raise MissingSpecError("a mask may only remove modalities the data has, not add absent ones")
    removed = split.mask & ~mask
    inputs, lengths = dict(split.inputs), dict(split.lengths)
    for i, name in enumerate(inputs):
        gone = removed[:, i]
        if not gone.any():
            continue
        x = inputs[name].clone()
        x[gone] = 0
        inputs[name] = x
        if name in lengths:
            ln = lengths[name].clone()
            ln[gone] = 1
            lengths[name] = ln
    return SplitData(inputs=inputs, lengths=lengths, mask=mask.clone(), target=split.target, ids=split.ids,
                     texts=split.texts)


def concat_splits(a, b):
    """The samples of `a` followed by those of `b` (same modalities), e.g. the train split and a pool. Memory-mapped
    modalities stay mapped (`concat_rows`)."""
    if list(a.inputs) != list(b.inputs) or a.mask.shape[1] != b.mask.shape[1]:
        raise DataError(f"cannot join splits with modalities {list(a.inputs)} and {list(b.inputs)}")
    texts = {k: list(a.texts.get(k, [""] * len(a))) + list(b.texts.get(k, [""] * len(b)))
             for k in set(a.texts) | set(b.texts)}
    return SplitData(
        inputs={k: concat_rows(a.inputs[k], b.inputs[k]) for k in a.inputs},
        lengths={k: torch.cat([a.lengths[k], b.lengths[k]]) for k in a.lengths},
        mask=torch.cat([a.mask, b.mask]), target=torch.cat([a.target, b.target]),
        ids=(list(a.ids) + list(b.ids)) if (a.ids and b.ids) else [], texts=texts)


@torch.no_grad()
def soft_pu_points(s_n: torch.Tensor, z_n: torch.Tensor, mask: torch.Tensor, s_valid: torch.Tensor,
                   logits_fused: torch.Tensor, logits_present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each sample sits for its soft weight κ, and the logits of its pseudo-class ỹ (both detached).

    S and c_0(S) need every modality, so they are used for complete samples only (`s_valid`). An incomplete
    sample still enters L_PU as a candidate through its present Z^i: its point is the normalised mean of its
    present Z^i (Z^i and S share the projector g_0 and the sphere the prototypes live on), and its pseudo-class
    comes from the mean of its present modalities' logits (the prediction the model makes for it).
    s_n: (N, D) normalised S; z_n: (N, M, D) normalised Z^i; mask: (N, M) bool; s_valid: (N,) bool;
    logits_fused, logits_present: (N, C). -> (points (N, D), logits (N, C)).
    """
    w = mask.to(z_n.dtype).unsqueeze(-1)  # (N, M, 1)
    z_mean = torch.nn.functional.normalize((z_n * w).sum(1) / w.sum(1).clamp(min=1.0), dim=-1)  # (N, D)
    valid = s_valid.bool().unsqueeze(-1)
    return (torch.where(valid, s_n.detach().to(z_mean.dtype), z_mean.detach()),
            torch.where(valid, logits_fused.detach().float(), logits_present.detach().float()))


# --- mask files --------------------------------------------------------------------------------------------


def save_masks(path: str | Path, masks: dict[str, torch.Tensor], *, modality_names: tuple[str, ...], split: str,
               seed: int, dataset: str = "", fingerprint: str = "") -> Path:
    """Write masks as a packed (N, M) bitmask per setting (`numpy.packbits` along the modalities) in one .npz,
    with a JSON header: the settings' specs in order, the modality names, N, the split, the mask seed and the
    realised missing fraction of each setting. `load_masks` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = list(masks)
    shapes = {tuple(v.shape) for v in masks.values()}
    if len(shapes) > 1:
        raise MissingSpecError(f"{path}: masks of different shapes {sorted(shapes)}")
    n = next(iter(shapes))[0] if shapes else 0
    meta = {"version": MASK_FILE_VERSION, "specs": labels, "modalities": list(modality_names), "n": n,
            "split": split, "mask_seed": int(seed), "dataset": dataset, "fingerprint": fingerprint,
            "realised_missing": {k: realised_missing(v) for k, v in masks.items()},
            "note": "presence masks: True = the modality is present; rates are fractions missing"}
    arrays = {f"mask{j}": np.packbits(masks[k].numpy().astype(bool), axis=1) for j, k in enumerate(labels)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)
    return path


def load_masks(path: str | Path, *, n: int | None = None, modality_names: tuple[str, ...] | None = None
               ) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a mask file → ({spec label: (N, M) bool mask}, header). With `n` / `modality_names` given, a file
    made for another split size or other modalities is refused, naming the file and what differs."""
    import zipfile
    import zlib
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            files = dict(z.items())
    except FileNotFoundError:
        raise MissingSpecError(f"{path}: no such mask file") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, MemoryError) as e:  # MemoryError: a damaged array header
        raise MissingSpecError(f"{path}: not a mask file (.npz written by robult eval/compare/sweep): the archive "
                               f"is truncated or damaged ({type(e).__name__}: {e})") from None
    except (OSError, ValueError, NotImplementedError) as e:  # not an .npz, pickled arrays, unknown compression
        raise MissingSpecError(f"{path}: not a mask file (.npz written by robult eval/compare/sweep): {e}") from None
    if "meta" not in files:
        raise MissingSpecError(f"{path}: not a mask file (no 'meta' header)")
    try:
        if files["meta"].dtype.kind != "U" or files["meta"].ndim != 0:
            raise ValueError(f"a {files['meta'].dtype} array of shape {files['meta'].shape}, expected a JSON text")
        meta = json.loads(str(files["meta"]))
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, expected an object")
        labels, names, rows = meta["specs"], meta["modalities"], meta["n"]
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise MissingSpecError(f"{path}: unreadable mask-file header ({type(e).__name__}: {e})") from None
    if not (isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)
            and len(set(labels)) == len(labels)):
        raise MissingSpecError(f"{path}: unreadable mask-file header: 'specs' must be a list of distinct spec texts")
    for label in labels:
        parse_missing(label, where=f"{path}: setting")
    if not (isinstance(names, list) and names and all(isinstance(x, str) and x for x in names)):
        raise MissingSpecError(f"{path}: unreadable mask-file header: 'modalities' must be a list of modality names")
    names = tuple(names)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise MissingSpecError(f"{path}: unreadable mask-file header: 'n' must be a number of samples, got {rows!r}")
    seed = meta.get("mask_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise MissingSpecError(f"{path}: unreadable mask-file header: 'mask_seed' must be an integer in "
                               f"0..{MAX_SEED}, got {seed if isinstance(seed, (int, float)) else repr(seed)[:40]}")
    if modality_names is not None and tuple(modality_names) != names:
        raise MissingSpecError(f"{path}: masks made for modalities ({', '.join(names)}), the data has "
                               f"({', '.join(modality_names)})")
    if n is not None and rows != n:
        raise MissingSpecError(f"{path}: masks of {rows} samples × {len(names)} modalities, the split has {n} "
                               f"samples")
    out = {}
    for j, label in enumerate(labels):
        packed = files.get(f"mask{j}")
        if packed is not None and packed.dtype != np.uint8:
            raise MissingSpecError(f"{path}: setting {label!r} holds {packed.dtype} values, expected packed bits "
                                   f"(uint8)")
        if packed is None or packed.ndim != 2 or packed.shape[0] != rows or packed.shape[1] != (len(names) + 7) // 8:
            raise MissingSpecError(f"{path}: setting {label!r} has shape "
                                   f"{None if packed is None else tuple(packed.shape)}, expected a packed "
                                   f"({rows}, {len(names)}) mask")
        out[label] = torch.from_numpy(np.unpackbits(packed, axis=1, count=len(names)).astype(bool))
    return out, meta


# --- evaluation under masks --------------------------------------------------------------------------------


def metrics_under_masks(enc, masks: dict[str, torch.Tensor], task: str) -> dict[str, dict[str, float]]:
    """{spec label: metrics} of an encoded split (`evaluation.encode_split`, one pass) under each mask: the mask
    is combined with the data's mask and the prediction is the mean of the present modalities' logits, as with
    the explorer's toggles. Samples left with no modality are not scored."""
    out = {}
    for label, mask in masks.items():
        if tuple(mask.shape) != tuple(enc.mask.shape):
            raise MissingSpecError(f"{label}: a mask of shape {tuple(mask.shape)} for a split of shape "
                                   f"{tuple(enc.mask.shape)}")
        logits, rows = subset_logits(enc, mask)
        out[label] = compute_metrics(logits[rows], enc.target[rows], task) if rows.any() else {}
    return out


__all__ = ["MECHANISMS", "MissingSpec", "MissingSpecError", "apply_mask", "concat_splits", "draw_mask", "draw_masks", "expand",
           "load_masks", "metrics_under_masks", "parse_missing", "parse_missing_grid", "realised_missing",
           "save_masks", "signal_strength", "soft_pu_points"]
