"""The dataset interface every loader implements.

A dataset is held in memory as one `SplitData` per split. Every modality is a dense tensor over the split's
samples; missing modalities are data (a presence mask), not control flow. Modality kinds:

| kind       | tensor per split            | extra                      | encoder              |
|------------|-----------------------------|----------------------------|----------------------|
| "vector"   | float32 (N, D)              |                            | MLP                  |
| "image"    | float32 (N, C, H, W) in [0,1]|                           | small CNN            |
| "sequence" | float32 (N, T, D), padded   | lengths int64 (N,)         | 1-D conv or GRU      |
| "text"     | int64 (N, L) hashed n-gram ids, 0 = padding | lengths int64 (N,) | EmbeddingBag |

Targets: int64 (N,) class index for "single-label"; float32 (N, C) multi-hot for "multi-label";
float32 (N,) for "regression". A sample whose modality is missing has zeros in that tensor, length 1 for
sequences/text (never 0, so encoders never divide by zero) and mask 0.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

MODALITY_KINDS = ("vector", "image", "sequence", "text")
TASKS = ("single-label", "multi-label", "regression")
# the number of axes of one sample of each kind (see the table above), and the largest size of one axis
MODALITY_RANKS = {"vector": 1, "image": 3, "sequence": 2, "text": 1}
MAX_AXIS = 2 ** 31 - 1


class DataError(ValueError):
    """Bad input data; the message names the file (and row) and what was expected."""


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: str  # one of MODALITY_KINDS
    # Shape of one sample without the batch axis: (D,), (C, H, W), (T_max, D) or (L_max,).
    shape: tuple[int, ...]

    @property
    def feature_dim(self) -> int:
        """D for vector/sequence, C for image, vocabulary-free for text (returns L_max)."""
        return self.shape[-1] if self.kind in ("vector", "sequence") else self.shape[0]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    modalities: tuple[ModalitySpec, ...]
    task: str  # "single-label" | "multi-label" | "regression"
    class_names: tuple[str, ...]  # classes (single/multi-label); ("score",) for regression
    description: str = ""
    licence: str = ""

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "regression" else len(self.class_names)

    def spec(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "class_names": list(self.class_names),
            "modalities": [{"name": m.name, "kind": m.kind, "shape": list(m.shape)} for m in self.modalities],
            "description": self.description,
            "licence": self.licence,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetInfo":
        """The inverse of `to_dict`, checked: anything that does not describe a usable dataset (a missing or
        unknown field, a shape that is not positive integers of the kind's rank, an unknown task or modality
        kind, a name given twice, no classes) raises a DataError naming the field; no other error escapes."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise DataError(f"dataset info: {msg}")

        def fields_of(obj: object, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
            need(isinstance(obj, dict), f"{where}: expected an object, got {type(obj).__name__}")
            missing = [k for k in required if k not in obj]
            need(not missing, f"{where}: missing {', '.join(missing)}")
            unknown = [str(k) for k in obj if k not in required + optional]
            need(not unknown, f"{where}: unknown field {', '.join(unknown)[:80]}")

        fields_of(d, "info", ("name", "task", "class_names", "modalities"), ("description", "licence"))
        for key in ("name", "description", "licence"):
            need(isinstance(d.get(key, ""), str), f"{key}: expected text, got {type(d.get(key)).__name__}")
        need(d["task"] in TASKS, f"task: one of {', '.join(TASKS)}, got {str(d['task'])[:40]!r}")
        names = d["class_names"]
        need(isinstance(names, (list, tuple)) and all(isinstance(c, str) for c in names),
             f"class_names: expected a list of names, got {str(names)[:60]}")
        need(len(names) >= 1, "class_names: the dataset has no classes")
        need(len(set(names)) == len(names), "class_names: a class is named twice")
        mods = d["modalities"]
        need(isinstance(mods, (list, tuple)) and len(mods) >= 1, "modalities: expected a non-empty list")
        specs = []
        for i, m in enumerate(mods):
            fields_of(m, f"modalities[{i}]", ("name", "kind", "shape"))
            name, kind, shape = m["name"], m["kind"], m["shape"]
            need(isinstance(name, str) and name != "", f"modalities[{i}].name: expected a name, got {name!r}"[:120])
            need(kind in MODALITY_KINDS, f"modality {name!r}: kind one of {', '.join(MODALITY_KINDS)}, "
                                         f"got {str(kind)[:40]!r}")
            need(isinstance(shape, (list, tuple)) and all(type(s) is int and 1 <= s <= MAX_AXIS for s in shape),
                 f"modality {name!r}: shape must be a list of positive integers, got {str(shape)[:60]}")
            need(len(shape) == MODALITY_RANKS[kind],
                 f"modality {name!r}: a {kind} modality has {MODALITY_RANKS[kind]} axes, got shape {list(shape)}")
            specs.append(ModalitySpec(name, kind, tuple(shape)))
        need(len({m.name for m in specs}) == len(specs), "modalities: a modality is named twice")
        return cls(name=d["name"], task=d["task"], class_names=tuple(names), modalities=tuple(specs),
                   description=d.get("description", ""), licence=d.get("licence", ""))


@dataclass
class SplitData:
    """All samples of one split, as dense tensors (see module docstring for dtypes and shapes)."""
    inputs: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor]  # only for "sequence" and "text" modalities
    mask: torch.Tensor  # bool (N, M), modality order of DatasetInfo.modalities
    target: torch.Tensor
    ids: list[str] = field(default_factory=list)  # a human-readable id per sample (file name, row id)
    # the raw text of each sample per text modality, when the loader read it ("" where absent); only for showing
    # a sample to a person: the model sees the hashed ids in `inputs`
    texts: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def subset(self, idx: torch.Tensor | np.ndarray | list[int]) -> "SplitData":
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return SplitData(
            inputs={k: v[idx_t] for k, v in self.inputs.items()},
            lengths={k: v[idx_t] for k, v in self.lengths.items()},
            mask=self.mask[idx_t], target=self.target[idx_t],
            ids=[self.ids[i] for i in idx_t.tolist()] if self.ids else [],
            texts={k: [v[i] for i in idx_t.tolist()] for k, v in self.texts.items()},
        )

    def select_modalities(self, names: tuple[str, ...], all_names: tuple[str, ...]) -> "SplitData":
        cols = [all_names.index(n) for n in names]
        return SplitData(
            inputs={n: self.inputs[n] for n in names},
            lengths={n: self.lengths[n] for n in names if n in self.lengths},
            mask=self.mask[:, cols], target=self.target, ids=self.ids,
            texts={n: self.texts[n] for n in names if n in self.texts},
        )


@dataclass
class DatasetBundle:
    """What a loader returns: the info and the train / val / test splits (and an optional pool)."""
    info: DatasetInfo
    splits: dict[str, SplitData]  # "train", "val", "test"; optionally "pool" (incomplete-modality samples)

    def fingerprint(self) -> str:
        """A short hash of the data, stored in checkpoints to tell whether a model was trained on it."""
        h = hashlib.sha256()
        h.update(repr(self.info.to_dict()).encode())
        for split in ("train", "val", "test"):
            if split not in self.splits:
                continue
            s = self.splits[split]
            h.update(split.encode())
            h.update(str(len(s)).encode())
            for name in self.info.modality_names:
                t = s.inputs[name]
                # hash a strided sample of values: cheap for large data, still changes when data changes
                flat = t.reshape(-1)
                step = max(1, flat.numel() // 65536)
                h.update(np.ascontiguousarray(flat[::step].numpy()).tobytes())
            h.update(np.ascontiguousarray(s.target.numpy()).tobytes())
        return h.hexdigest()[:16]

    def select_modalities(self, names: tuple[str, ...]) -> "DatasetBundle":
        """Keep only the named modalities (in the given order)."""
        if not names or tuple(names) == self.info.modality_names:
            return self
        all_names = self.info.modality_names
        info = DatasetInfo(self.info.name, tuple(self.info.spec(n) for n in names), self.info.task,
                           self.info.class_names, self.info.description, self.info.licence)
        return DatasetBundle(info, {k: v.select_modalities(tuple(names), all_names) for k, v in self.splits.items()})


@dataclass
class Batch:
    """A mini-batch: inputs and lengths per modality, presence mask, targets, labeled flags, sample indices."""
    inputs: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor]
    mask: torch.Tensor  # bool (B, M)
    target: torch.Tensor
    labeled: torch.Tensor  # bool (B,)
    index: torch.Tensor  # int64 (B,), index into the split

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            inputs={k: v.to(device, non_blocking=True) for k, v in self.inputs.items()},
            lengths={k: v.to(device, non_blocking=True) for k, v in self.lengths.items()},
            mask=self.mask.to(device), target=self.target.to(device),
            labeled=self.labeled.to(device), index=self.index.to(device),
        )

    def __len__(self) -> int:
        return int(self.mask.shape[0])


def make_batch(split: SplitData, idx: torch.Tensor, labeled: torch.Tensor | None = None) -> Batch:
    """Gather the samples `idx` (int64 (B,)) of a split into a Batch; `labeled` is a bool (N,) over the split."""
    lab = labeled[idx] if labeled is not None else torch.ones(len(idx), dtype=torch.bool)
    return Batch(
        inputs={k: v[idx] for k, v in split.inputs.items()},
        lengths={k: v[idx] for k, v in split.lengths.items()},
        mask=split.mask[idx], target=split.target[idx], labeled=lab, index=idx,
    )


def check_finite(split: SplitData, split_name: str, source: str) -> None:
    """Refuse NaN/inf features with a message naming the source, split, modality and first bad sample."""
    for name, t in split.inputs.items():
        if t.is_floating_point():
            bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
            if bad.any():
                i = int(bad.nonzero()[0])
                sid = split.ids[i] if split.ids else str(i)
                raise DataError(f"{source}: modality {name!r} of sample {sid!r} ({split_name} split) holds NaN or "
                                f"infinite values ({int(bad.sum())} samples affected); clean the features first")
