"""ONNX export of a trained model: `robult export CHECKPOINT --onnx model.onnx` (docs/export.md).

One ONNX graph takes every modality's input and a presence mask (B, M) and returns the prediction of the subset
of modalities each row's mask names, for any subset: the masking of absent modalities and the method's handling
of missing modalities (the mean of per-modality logits c([U^i, Z^i]) for Robult, its ablations and the
baselines; ShaSpec's shared-feature substitution; MMIN's imagination) are operations of the graph, as in
`RobultModel.predict`.

The graph's inputs, in this order (`input_signature`):
- per modality, in the model's order: `<name>`, the batch of that modality as the data interface holds it
  (robult_engine/data/base.py): vector float32 (B, D); image float32 (B, C, H, W) in [0, 1]; sequence float32
  (B, T, D), zero-padded, with `<name>_lengths` int64 (B,), the valid frames; text int64 (B, L) hashed n-gram ids,
  0 = padding. A lengths input is in the graph only when the modality's encoder reads it (the built-in sequence
  encoders do, the built-in text encoder does not); an input the model never reads is left out of the graph.
- `mask` bool (B, M): True where the modality is present, columns in the model's modality order.
The batch axis, a sequence's time axis and a text's token axis are dynamic. The rows of an absent modality are
never read: the graph replaces them with zeros (and a length of 1) before encoding, as the data interface fills
a missing modality.

Outputs: `logits` float32 (B, C), the model's subset prediction (zeros for a row with no modality present), and
`prediction`: softmax probabilities (B, C) for a single-label task, per-label sigmoid probabilities (B, C) for a
multi-label task, the score (B,) for regression.

The exporter is PyTorch's TorchScript-based one (`torch.onnx.export(..., dynamo=False)`): it needs only the
`onnx` package (for the checker and the metadata), exports the built-in GRU encoder's packed sequences (the
torch.export-based exporter cannot: their batch sizes depend on the data) and installs no compiler. The check
(`check=True`) runs the file with onnxruntime on the CPU on a seeded random batch under every non-empty modality
subset, and under a batch of mixed subsets (one row with none) at another batch size and sequence length, and
compares with the PyTorch model's own forward pass; a difference above `tolerance` fails the export. The file
is written to a temporary file beside the target and renamed only once everything passed, so a failed export
leaves no file (and an existing file unchanged).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .checkpoint import load_checkpoint, model_from_checkpoint
from .cli_common import parse_trust
from .config import parse_encoder_entries
from .evaluation import modality_subsets

EXPORT_EXTRA = "pip install 'robult-studio[export]'"  # the extra of pyproject.toml that brings onnx and onnxruntime
OPSET = 17
MIN_OPSET, MAX_OPSET = 9, 20  # what the TorchScript-based exporter writes
TOLERANCE = 1e-5
CHECK_ROWS = 16
FORMAT = "robult-onnx"
FORMAT_VERSION = 1
STANDARDISE_EPS = 1e-5  # models/robult.py standardise_features: the MMIN head's n(H)
# how the second output is formed from the logits, per task
PREDICTIONS = {"single-label": "softmax probabilities (B, C)", "multi-label": "sigmoid probabilities (B, C)",
               "regression": "the score (B,)"}

Progress = Callable[[int, int, str], None]  # (done, total, text); may raise to cancel


class ExportError(ValueError):
    """The model cannot be exported, or the exported graph failed its check; the message names the file and the
    reason. No output file was written."""


class ExportCheckError(ExportError):
    """The exported graph disagrees with the PyTorch model (`.report` holds the check's numbers)."""

    def __init__(self, message: str, report: "ExportReport") -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self):
        return (type(self), (str(self), self.report))


def require_onnx(runtime: bool = True):
    """The `onnx` module (and `onnxruntime` when `runtime`), or an ExportError that says how to install them."""
    missing = []
    try:
        import onnx
    except ImportError:
        onnx, missing = None, ["onnx"]
    ort = None
    if runtime:
        try:
            import onnxruntime as ort
        except ImportError:
            missing.append("onnxruntime")
    if missing:
        raise ExportError(f"ONNX export needs the package{'s' if len(missing) > 1 else ''} {' and '.join(missing)}, "
                          f"which {'are' if len(missing) > 1 else 'is'} not installed: {EXPORT_EXTRA} (or pip "
                          f"install onnx onnxruntime)")
    return onnx, ort


# --- the graph ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphInput:
    name: str  # the ONNX input's name
    role: str  # "data", "lengths" or "mask"
    modality: str  # the modality it belongs to ("" for the mask)
    dtype: str  # "float32", "int64" or "bool"
    shape: tuple  # ints and axis names ("batch", "time_<modality>", ...)

    def describe(self) -> str:
        return f"{self.name} {self.dtype} ({', '.join(map(str, self.shape))}{',' if len(self.shape) == 1 else ''})"


def input_signature(info) -> list[GraphInput]:
    """Every input the graph can take, in order (module docstring), from a DatasetInfo's modalities. The names
    are the modality names, `<name>_lengths` and `mask`, made unique with trailing underscores if they clash."""
    used: set[str] = set()

    def unique(name: str) -> str:
        while name in used:
            name += "_"
        used.add(name)
        return name

    out: list[GraphInput] = []
    reserved = {"mask"}
    for spec in info.modalities:
        name = spec.name
        while name in reserved:
            name += "_"
        name = unique(name)
        if spec.kind == "vector":
            out.append(GraphInput(name, "data", spec.name, "float32", ("batch", spec.shape[-1])))
        elif spec.kind == "image":
            out.append(GraphInput(name, "data", spec.name, "float32", ("batch",) + tuple(spec.shape)))
        elif spec.kind == "sequence":
            out.append(GraphInput(name, "data", spec.name, "float32", ("batch", f"time_{name}", spec.shape[-1])))
        elif spec.kind == "text":
            out.append(GraphInput(name, "data", spec.name, "int64", ("batch", f"tokens_{name}")))
        else:
            raise ExportError(f"modality {spec.name!r}: kind {spec.kind!r} has no ONNX input")
        if spec.kind in ("sequence", "text"):
            out.append(GraphInput(unique(f"{name}_lengths"), "lengths", spec.name, "int64", ("batch",)))
    out.append(GraphInput(unique("mask"), "mask", "", "bool", ("batch", len(info.modalities))))
    return out


class MeanBag(nn.Module):
    """What an `nn.EmbeddingBag(mode="mean" or "sum", padding_idx=p)` computes for a 2-D batch of ids (B, L), as
    a gather and a masked sum that ONNX can express (the exporter refuses an embedding bag with a padding index):
    the mean (or sum) of the embeddings of each row's non-padding ids, zeros for a row of padding only. Any
    other call goes to the original bag."""

    def __init__(self, bag: nn.EmbeddingBag) -> None:
        super().__init__()
        self.bag = bag

    def forward(self, ids: torch.Tensor, offsets=None, per_sample_weights=None) -> torch.Tensor:
        if offsets is not None or per_sample_weights is not None or ids.dim() != 2:
            return self.bag(ids, offsets, per_sample_weights)
        w = self.bag.weight
        e = F.embedding(ids, w)  # (B, L, d)
        if self.bag.padding_idx is not None:
            keep = (ids != self.bag.padding_idx).unsqueeze(-1).to(w.dtype)  # (B, L, 1)
            e = e * keep
        else:
            keep = torch.ones_like(ids, dtype=w.dtype).unsqueeze(-1)
        total = e.sum(1)
        if self.bag.mode == "sum":
            return total
        return total / keep.sum(1).clamp(min=1.0)


def _exportable_bags(module: nn.Module) -> None:
    """Replace, in place, every embedding bag whose ONNX export the exporter refuses by its `MeanBag`."""
    for name, child in list(module.named_children()):
        if (isinstance(child, nn.EmbeddingBag) and child.mode in ("mean", "sum") and child.max_norm is None
                and not child.include_last_offset):
            setattr(module, name, MeanBag(child))
        else:
            _exportable_bags(child)


class OnnxGraph(nn.Module):
    """The exported function: flat tensors in (`input_signature` order, those the model reads), the subset
    prediction out. Wraps a copy of the model (its embedding bags made exportable); eval mode only."""

    def __init__(self, model: nn.Module, info, signature: list[GraphInput]) -> None:
        super().__init__()
        self.model = model
        self.task = info.task
        self.names = list(model.modality_names)
        self.kinds = list(model.modality_kinds)
        self.signature = signature
        self.d_h = int(model.d_h)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        by_role = {(g.role, g.modality): a for g, a in zip(self.signature, args)}
        mask = by_role[("mask", "")].to(torch.bool)  # (B, M)
        inputs, lengths = {}, {}
        for i, name in enumerate(self.names):
            present = mask[:, i]
            x = by_role[("data", name)]
            keep = present.view((-1,) + (1,) * (x.dim() - 1))
            inputs[name] = torch.where(keep, x, torch.zeros_like(x))  # an absent modality's rows are never read
            if ("lengths", name) in by_role:
                lens = by_role[("lengths", name)]
                lengths[name] = torch.where(present, lens, torch.ones_like(lens))
        m = self.model
        h = m.encode(inputs, lengths)  # (B, M, d_h)
        z = m.shared_proj(h)
        u = m.project_unique(h)
        if m.subset_head == "imagination":
            # RobultModel._imagine with n(H) written with a constant feature width (the exporter cannot take the
            # width from the traced shape); the check compares it with the model's own forward
            hn = F.layer_norm(h, (self.d_h,), eps=STANDARDISE_EPS)
            h_im = m.imagination(hn, mask)
            h_full = torch.where(mask.unsqueeze(-1), hn, h_im)
            logits = m.fusion_head(m.shared_proj(m.fusion(h_full)))
            logits = torch.where(mask.any(1, keepdim=True), logits, torch.zeros_like(logits))
        else:
            logits = m.predict(h, z, u, mask)  # (B, C)
        return logits, prediction_of(logits, self.task)


def prediction_of(logits: torch.Tensor, task: str) -> torch.Tensor:
    """The task's output from the subset logits (B, C): softmax (single-label), sigmoid (multi-label), score (B,)."""
    if task == "single-label":
        return torch.softmax(logits, dim=-1)
    if task == "multi-label":
        return torch.sigmoid(logits)
    return logits[:, 0]


# --- inputs for tracing and checking ----------------------------------------------------------------------------
def random_batch(info, rows: int, *, seed: int = 0, time_scale: float = 1.0, text_buckets: int = 2 ** 15
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A seeded random batch of every modality, laid out as the data interface holds it: vectors and sequence
    frames standard normal, images uniform in [0, 1], sequences and texts zero-padded after random lengths (at
    least 1), text ids in 1..text_buckets − 1. `time_scale` scales every sequence and text length axis."""
    g = torch.Generator().manual_seed(seed)
    inputs, lengths = {}, {}
    for spec in info.modalities:
        if spec.kind == "vector":
            inputs[spec.name] = torch.randn(rows, spec.shape[-1], generator=g)
        elif spec.kind == "image":
            inputs[spec.name] = torch.rand((rows,) + tuple(spec.shape), generator=g)
        else:
            t = max(1, int(round(spec.shape[0] * time_scale)))
            lens = torch.randint(1, t + 1, (rows,), generator=g)
            lens[0] = t  # one full-length row
            valid = torch.arange(t)[None, :] < lens[:, None]  # (rows, T)
            if spec.kind == "sequence":
                inputs[spec.name] = torch.randn(rows, t, spec.shape[-1], generator=g) * valid.unsqueeze(-1)
            else:
                inputs[spec.name] = torch.randint(1, text_buckets, (rows, t), generator=g) * valid
            lengths[spec.name] = lens
    return inputs, lengths


def _flat_args(signature: list[GraphInput], inputs, lengths, mask) -> tuple[torch.Tensor, ...]:
    out = []
    for g in signature:
        out.append(mask if g.role == "mask" else inputs[g.modality] if g.role == "data" else lengths[g.modality])
    return tuple(out)


def _feed(signature: list[GraphInput], graph_inputs: list[str], inputs, lengths, mask) -> dict:
    flat = _flat_args(signature, inputs, lengths, mask)
    return {g.name: a.numpy() for g, a in zip(signature, flat) if g.name in graph_inputs}


# --- export ---------------------------------------------------------------------------------------------------
@dataclass
class ExportReport:
    path: str
    source: str
    opset: int
    inputs: list[str]  # descriptions of the graph's inputs
    outputs: list[str]
    mask_columns: list[str]
    task: str
    bytes: int = 0
    seconds: float = 0.0
    checked: bool = False
    rows: int = 0
    tolerance: float = TOLERANCE
    subsets: list[tuple[str, float]] = field(default_factory=list)  # (subset, max |ONNX − PyTorch|)
    mixed: float | None = None  # the batch of mixed subsets
    runtime: str = ""
    # the encoder whose graph holds only at the data's sequence/text lengths, when those axes had to be fixed
    fixed_time: str = ""

    @property
    def max_diff(self) -> float:
        diffs = [d for _, d in self.subsets] + ([self.mixed] if self.mixed is not None else [])
        return max(diffs) if diffs else 0.0

    @property
    def passed(self) -> bool:
        return self.checked and self.max_diff <= self.tolerance

    def text(self) -> str:
        lines = [f"exported {self.source} to {self.path} ({self.bytes / 2 ** 20:.2f} MiB, ONNX opset {self.opset}, "
                 f"{self.seconds:.1f} s)",
                 f"inputs:  {'; '.join(self.inputs)}",
                 f"         mask columns: {', '.join(self.mask_columns)} (True = present)",
                 f"outputs: {'; '.join(self.outputs)}"]
        if self.fixed_time:
            lines.append(f"note:    sequence and text axes fixed at the data's lengths (pad every batch to them): "
                         f"{self.fixed_time} does not export with a variable length")
        if not self.checked:
            lines.append("check:   not run (--no-check)")
            return "\n".join(lines)
        worst = max(self.subsets, key=lambda s: s[1]) if self.subsets else ("", 0.0)
        verdict = "passed" if self.passed else "FAILED"
        lines.append(f"check:   onnxruntime {self.runtime} (CPU) against PyTorch on {self.rows} random rows under "
                     f"each of the {len(self.subsets)} modality subsets and a batch of mixed subsets: max |difference| "
                     f"{self.max_diff:.2e} (tolerance {self.tolerance:.0e}) — {verdict}")
        if len(self.subsets) <= 15:
            w = max([len(s) for s, _ in self.subsets] + [len("mixed subsets")])
            lines += [f"         {s.ljust(w)}  {d:.2e}" for s, d in self.subsets]
            if self.mixed is not None:
                lines.append(f"         {'mixed subsets'.ljust(w)}  {self.mixed:.2e}")
        else:
            lines.append(f"         worst subset: {worst[0]} ({worst[1]:.2e}); mixed subsets {self.mixed:.2e}")
        return "\n".join(lines)


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip()
    line = text.splitlines()[0].strip() if text else ""
    line = line or type(e).__name__
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _encoder_label(model: nn.Module, name: str, refs: dict[str, str]) -> str:
    enc = model.encoders[name]
    if name in refs:
        return f"{refs[name]} ({type(enc).__name__})"
    return f"built-in {type(enc).__name__}"


def _torch_export(module: nn.Module, args: tuple, input_names: list[str], output_names: list[str],
                  dynamic_axes: dict, opset: int) -> bytes:
    """torch.onnx.export with the TorchScript-based exporter, into memory; its warnings (the exporter's own
    deprecation notice, tracer warnings of code it records) are not shown: the check judges the graph."""
    buf = io.BytesIO()
    kwargs = dict(input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                  opset_version=opset, do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    # with gradients enabled, as in training: under no_grad some modules take fused inference kernels that have
    # no ONNX form (nn.TransformerEncoderLayer's fast path)
    with warnings.catch_warnings(), torch.enable_grad(), _quiet_exporter_log():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, buf, **kwargs)
    return buf.getvalue()


@contextlib.contextmanager
def _quiet_exporter_log():
    """Keep the exporter from printing its whole TorchScript graph when it fails (its log is always on): the
    failure is reported as one message instead."""
    c = torch._C
    original = getattr(c, "_jit_onnx_log", None)
    if original is None:
        yield
        return
    c._jit_onnx_log = lambda *args: None
    try:
        yield
    finally:
        c._jit_onnx_log = original


class _EncoderOnly(nn.Module):
    def __init__(self, enc: nn.Module) -> None:
        super().__init__()
        self.enc = enc

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.enc(x, lengths)


class _RunFailed(Exception):
    """onnxruntime could not run the graph on a batch (the message is the runtime's first line)."""


Batch = tuple  # (inputs by modality, lengths by modality)


def _diagnose_encoders(graph: OnnxGraph, trace: Batch, probe: Batch | None, refs: dict[str, str], opset: int,
                       ort=None, dynamic_time: bool = True) -> tuple[str, str] | None:
    """The first modality whose encoder alone cannot be exported from the `trace` batch, or (with `ort` and a
    `probe` batch) whose exported encoder fails or disagrees with PyTorch on the probe: (a description naming
    the modality and the encoder, the reason). None when every encoder holds alone."""
    m = graph.model
    for name, kind in zip(graph.names, graph.kinds):
        enc = m.encoders[name]
        varies = dynamic_time and kind in ("sequence", "text")

        def args_of(batch: Batch) -> tuple:
            inputs, lengths = batch
            return (inputs[name],) if lengths.get(name) is None else (inputs[name], lengths[name])

        args = args_of(trace)
        names = ["x", "lengths"][:len(args)]
        axes = {"x": {0: "batch", 1: "time"} if varies else {0: "batch"}, "lengths": {0: "batch"}}
        what = f"the encoder of modality {name!r} ({_encoder_label(m, name, refs)})"
        try:
            blob = _torch_export(_EncoderOnly(enc), args, names, ["h"], {n: axes[n] for n in names}, opset)
        except Exception as e:  # noqa: BLE001 - any failure of the exporter is the answer sought
            return what, _first_line(e)
        if ort is None or probe is None:
            continue
        probe_args = args_of(probe)
        try:
            sess = _session(ort, blob)
            taken = {i.name for i in sess.get_inputs()}
            got = torch.from_numpy(sess.run(None, {n: a.numpy() for n, a in zip(names, probe_args) if n in taken})[0])
            with torch.no_grad():
                want = enc(*probe_args).float()
        except Exception as e:  # noqa: BLE001
            return what, f"its graph does not run on a batch of another size or length ({_first_line(e, 160)})"
        if got.shape != want.shape or not torch.isfinite(got).all() or float((got - want).abs().max()) > TOLERANCE:
            return what, ("its ONNX graph computes something else than its PyTorch code on a batch other than the "
                          "one it was traced with (Python control flow on tensor values, or values the tracer "
                          "recorded as constants)")
    return None


def _session(ort, blob: bytes):
    so = ort.SessionOptions()
    so.log_severity_level = 4  # a failed run is reported as an exception, not also logged
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.inter_op_num_threads = 1
    return ort.InferenceSession(blob, sess_options=so, providers=["CPUExecutionProvider"])


def _subset_name(names: list[str], mask_row: torch.Tensor) -> str:
    return "+".join(n for n, on in zip(names, mask_row.tolist()) if on) or "no modality"


def export_onnx(model: nn.Module, info, path: str | os.PathLike, *, check: bool = True,
                tolerance: float = TOLERANCE, rows: int = CHECK_ROWS, seed: int = 0, opset: int = OPSET,
                source: str = "the model", metadata: dict[str, str] | None = None,
                encoder_refs: dict[str, str] | None = None, progress: Progress | None = None) -> ExportReport:
    """Export `model` (a RobultModel of the dataset `info`) to the ONNX file `path` and, with `check`, compare
    onnxruntime's outputs with the model's on every non-empty modality subset. Returns the report; raises
    ExportError (nothing written) when the model cannot be exported, and ExportCheckError when the graph
    disagrees with the model by more than `tolerance`. The model itself is not changed (a copy is exported).
    `progress(done, total, text)` is called between steps and may raise to stop the export.

    Sequence and text axes are exported dynamic. When the graph then holds at the data's lengths but not at
    other lengths (an encoder whose trace fixed its length), it is exported again with those axes fixed at the
    data's lengths (T_max, L_max), checked again, and the report says so (`fixed_time`)."""
    t0 = time.perf_counter()
    path = Path(path)
    onnx, ort = require_onnx(runtime=check)
    if not (isinstance(rows, int) and 1 <= rows <= 4096):
        raise ExportError(f"the check batch needs 1..4096 rows, got {rows!r}")
    if not (isinstance(opset, int) and MIN_OPSET <= opset <= MAX_OPSET):
        raise ExportError(f"ONNX opset {opset!r}: the exporter writes opsets {MIN_OPSET}..{MAX_OPSET}")
    if not (tolerance > 0):
        raise ExportError(f"the check's tolerance must be positive, got {tolerance!r}")
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; name the .onnx file to write")
    for attr in ("modality_names", "modality_kinds", "encoders", "subset_head", "predict"):
        if not hasattr(model, attr):
            raise ExportError(f"{source}: not a Robult model (it has no {attr})")
    names = list(model.modality_names)
    if tuple(names) != tuple(info.modality_names):
        raise ExportError(f"{source}: the model's modalities ({', '.join(names)}) are not the dataset's "
                          f"({', '.join(info.modality_names)})")
    refs = dict(encoder_refs or {})
    m = len(names)
    masks = _subset_rows(m)
    has_time = any(spec.kind in ("sequence", "text") for spec in info.modalities)
    total = 2 + (len(masks) + 1 if check else 0)
    step = [0]

    def tick(text: str) -> None:
        if progress is not None:
            progress(min(step[0], total - 1), total, text)
        step[0] += 1

    # the reference: the model as it is, in eval mode on the CPU; the graph: a copy with exportable bags
    reference = copy.deepcopy(model).cpu().eval()
    traced = copy.deepcopy(reference)
    _exportable_bags(traced)
    signature = input_signature(info)
    graph = OnnxGraph(traced, info, signature).eval()
    buckets = max([int(getattr(e, "buckets", 0)) for e in reference.encoders.values()] + [16])
    trace = random_batch(info, 3, seed=seed + 1, text_buckets=buckets)
    trace_mask = torch.ones(3, m, dtype=torch.bool)
    meta = {"robult.format": FORMAT, "robult.format_version": str(FORMAT_VERSION), "robult.task": info.task,
            "robult.modalities": json.dumps([{"name": s.name, "kind": s.kind, "shape": list(s.shape)}
                                             for s in info.modalities]),
            "robult.class_names": json.dumps(list(info.class_names)),
            "robult.prediction": PREDICTIONS[info.task], **(metadata or {})}

    def build(dynamic_time: bool) -> tuple[bytes, list[str]]:
        """The graph as ONNX bytes (checked by onnx, with the metadata) and the names of its inputs."""
        dynamic = {g.name: {i: a for i, a in enumerate(g.shape)
                            if isinstance(a, str) and (dynamic_time or a == "batch")} for g in signature}
        dynamic["logits"] = {0: "batch"}
        dynamic["prediction"] = {0: "batch"}
        try:
            blob = _torch_export(graph, _flat_args(signature, *trace, trace_mask), [g.name for g in signature],
                                 ["logits", "prediction"], dynamic, opset)
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; the culprit is named below
            culprit = _diagnose_encoders(graph, trace, None, refs, opset, dynamic_time=dynamic_time)
            if culprit is not None:
                raise ExportError(f"{source}: cannot export {culprit[0]} to ONNX: {culprit[1]}. Only encoders made "
                                  f"of operations ONNX opset {opset} can express, without data-dependent Python "
                                  f"control flow, can be exported") from None
            raise ExportError(f"{source}: cannot be exported to ONNX ({_first_line(e)})") from None
        try:
            proto = onnx.load_from_string(blob)
            inputs = [i.name for i in proto.graph.input]
            extra = {"robult.inputs": json.dumps([{"name": g.name, "role": g.role, "modality": g.modality,
                                                   "dtype": g.dtype, "shape": list(g.shape)}
                                                  for g in signature if g.name in inputs]),
                     "robult.time_axes": "dynamic" if dynamic_time else "fixed"}
            for k, v in {**meta, **extra}.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = str(k), str(v)
            proto.producer_name, proto.producer_version = "robult-studio", __version__
            proto.doc_string = (f"Robult Studio model ({info.name}, {info.task}): an input per modality and a "
                                f"presence mask (B, M); outputs logits and prediction ({PREDICTIONS[info.task]}) "
                                f"of the modality subset each row's mask names (docs/export.md)")
            onnx.checker.check_model(proto)
            return proto.SerializeToString(), inputs
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{source}: the exported ONNX graph is not valid ({_first_line(e)})") from None

    tick("exporting the graph")
    blob, graph_inputs = build(dynamic_time=True)
    tick("checking the graph")
    report = ExportReport(path=str(path), source=source, opset=opset, inputs=[], mask_columns=names,
                          outputs=[f"logits float32 (batch, {info.num_outputs})",
                                   f"prediction float32 "
                                   f"{'(batch,)' if info.task == 'regression' else f'(batch, {info.num_outputs})'} = "
                                   f"{PREDICTIONS[info.task].rsplit(' (', 1)[0]}"],
                          task=info.task, tolerance=tolerance, rows=rows)

    if check:
        report.checked = True
        report.runtime = getattr(ort, "__version__", "")
        full = random_batch(info, rows, seed=seed, text_buckets=buckets)
        n_mixed = max(2, min(len(masks) + 1, 64))
        pick = torch.randint(0, len(masks), (n_mixed,), generator=torch.Generator().manual_seed(seed + 2))
        mixed_mask = torch.stack([masks[int(i)] for i in pick])
        mixed_mask[0] = False  # a row with no modality: zeros

        def run_checks(blob: bytes, graph_inputs: list[str], time_scale: float, ticks: bool) -> Batch:
            """Fill the report's numbers for `blob`; returns the mixed batch. Raises _RunFailed."""
            try:
                sess = _session(ort, blob)
            except Exception as e:  # noqa: BLE001
                raise ExportError(f"{source}: onnxruntime cannot load the exported graph ({_first_line(e)})") from None
            report.subsets = []
            for sm in masks:
                subset = _subset_name(names, sm)
                if ticks:
                    tick(f"subset {subset}")
                mask = sm.unsqueeze(0).expand(rows, m).contiguous()
                report.subsets.append((subset, _compare(sess, reference, signature, graph_inputs, *full, mask,
                                                        info.task, subset, source)))
            if ticks:
                tick("mixed subsets")
            # every row its own subset (one row none), another batch size and other sequence lengths
            mixed = random_batch(info, n_mixed, seed=seed + 3, time_scale=time_scale, text_buckets=buckets)
            report.mixed = _compare(sess, reference, signature, graph_inputs, *mixed, mixed_mask, info.task,
                                    "mixed subsets", source)
            return mixed

        def failure(e: _RunFailed | None, probe: Batch, dynamic_time: bool) -> ExportError:
            culprit = _diagnose_encoders(graph, trace, probe, refs, opset, ort=ort, dynamic_time=dynamic_time)
            why = f"; {culprit[0]}: {culprit[1]}" if culprit is not None else ""
            if e is not None:
                return ExportError(f"{source}: onnxruntime failed to run the exported graph ({e}){why}; nothing "
                                   f"was written")
            worst = max(report.subsets + [("mixed subsets", report.mixed)], key=lambda s: s[1])
            return ExportCheckError(f"{source}: the exported ONNX graph differs from the PyTorch model by "
                                    f"{report.max_diff:.3g} (worst on {worst[0]}), more than the tolerance "
                                    f"{tolerance:g}{why}; nothing was written", report)

        short = 0.5 if has_time else 1.0
        error = None
        try:
            probe = run_checks(blob, graph_inputs, short, ticks=True)
        except _RunFailed as e:
            error, probe = e, random_batch(info, n_mixed, seed=seed + 3, time_scale=short, text_buckets=buckets)
        subsets_ok = len(report.subsets) == len(masks) and all(d <= tolerance for _, d in report.subsets)
        if (error is not None or not report.passed) and has_time and subsets_ok:
            # it holds at the data's lengths but not at others: fix the sequence and text axes at those lengths
            culprit = _diagnose_encoders(graph, trace, probe, refs, opset, ort=ort)
            blob, graph_inputs = build(dynamic_time=False)
            error = None
            try:
                probe = run_checks(blob, graph_inputs, 1.0, ticks=False)
            except _RunFailed as e:
                error = e
            if error is None and report.passed:
                report.fixed_time = culprit[0] if culprit is not None else "the graph"
            else:
                raise failure(error, full, False)
        elif error is not None or not report.passed:
            raise failure(error, full if not subsets_ok else probe, True)

    used = {g.name for g in signature} & set(graph_inputs)
    for g in signature:
        if g.name in used:
            shape = g.shape if not report.fixed_time else tuple(
                a if not isinstance(a, str) or a == "batch" else _data_length(info, g.modality) for a in g.shape)
            report.inputs.append(GraphInput(g.name, g.role, g.modality, g.dtype, shape).describe())
    if progress is not None:
        progress(total, total, "writing the file")  # the last point where the export can still be stopped
    _write_atomic(path, blob)
    report.bytes = len(blob)
    report.seconds = time.perf_counter() - t0
    return report


def _data_length(info, modality: str) -> int:
    return int(info.spec(modality).shape[0])


def _subset_rows(m: int) -> list[torch.Tensor]:
    """Every non-empty subset as a (M,) bool mask: singles first, the full set last (evaluation's order)."""
    return [torch.tensor(mask, dtype=torch.bool) for _, mask in modality_subsets([str(i) for i in range(m)])]


def _compare(sess, reference: nn.Module, signature, graph_inputs, inputs, lengths, mask, task, what,
             source: str = "the model") -> float:
    """max |ONNX − PyTorch| over both outputs for one batch; NaN/inf or a shape mismatch counts as infinite.
    Raises _RunFailed when onnxruntime cannot run the batch."""
    try:
        got_logits, got_pred = (torch.from_numpy(a) for a in sess.run(None, _feed(signature, graph_inputs, inputs,
                                                                                   lengths, mask)))
    except Exception as e:  # noqa: BLE001
        raise _RunFailed(f"on {what}: {_first_line(e, 200)}") from None
    try:
        with torch.no_grad():
            logits = reference(inputs, lengths, mask).logits.float()
    except Exception as e:  # noqa: BLE001 - e.g. a custom encoder that refuses the random check batch
        raise ExportError(f"{source}: the PyTorch model fails on the check batch ({what}: {type(e).__name__}: "
                          f"{_first_line(e, 200)})") from None
    pred = prediction_of(logits, task)
    diff = 0.0
    for got, want in ((got_logits, logits), (got_pred, pred)):
        if got.shape != want.shape or not torch.isfinite(got).all():
            return float("inf")
        diff = max(diff, float((got.float() - want).abs().max()) if want.numel() else 0.0)
    return diff


def _write_atomic(path: Path, blob: bytes) -> None:
    """Write `blob` to a temporary file beside `path` and rename it into place (no partial file, ever). The file
    gets the permissions of any new file (the umask's), as it is meant to be handed on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{path}: cannot write the ONNX file ({e.strerror or e})") from None
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise ExportError(f"{path}: cannot write the ONNX file ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def export_checkpoint(checkpoint: str | os.PathLike, path: str | os.PathLike, *, trust_code=False,
                      **kwargs) -> ExportReport:
    """Load a checkpoint (refusing anything that is not one, and encoder code outside robult_engine that
    `trust_code` does not name) and `export_onnx` its model. Keyword arguments go to `export_onnx`."""
    require_onnx(runtime=kwargs.get("check", True))  # say what to install before anything is loaded
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, trust_code=trust_code)
    meta = {"robult.method": ckpt.config.method, "robult.dataset": ckpt.info.name,
            "robult.fingerprint": ckpt.fingerprint, "robult.epoch": str(ckpt.epoch)}
    meta.update(kwargs.pop("metadata", None) or {})
    return export_onnx(model, ckpt.info, path, source=str(checkpoint), metadata=meta,
                       encoder_refs=parse_encoder_entries(ckpt.config.model.encoders), **kwargs)


# --- command line ----------------------------------------------------------------------------------------------
def add_parser(sub, add_trust_arg) -> None:
    """`robult export CHECKPOINT --onnx FILE` (registered by robult_engine/cli.py)."""
    import argparse
    p = sub.add_parser("export", help="export a checkpoint's model to ONNX (every modality subset in one graph)",
                       description="Export a trained model to one ONNX graph that takes every modality's input and "
                                   "a presence mask (B, M) and returns the prediction of any modality subset, then "
                                   "check it with onnxruntime against PyTorch on every subset (docs/export.md). "
                                   f"Needs onnx and onnxruntime: {EXPORT_EXTRA}.")
    p.add_argument("checkpoint", help="a checkpoint written by robult train or the app (best.pt, last.pt)")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write (e.g. model.onnx)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the graph with onnxruntime on a random batch under every modality subset and compare "
                        "with PyTorch; a difference above the tolerance fails the export (default: --check)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"largest |ONNX − PyTorch| allowed "
                                                                      f"(default {TOLERANCE:g})")
    p.add_argument("--rows", type=int, default=CHECK_ROWS, help=f"rows of the check batch (default {CHECK_ROWS})")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    add_trust_arg(p, "the checkpoint")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and onnxruntime (0: the default)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    import sys
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    trust = parse_trust(args.trust_code)
    if not 1 <= args.rows <= 4096:
        raise ExportError(f"--rows: the check batch needs 1..4096 rows, got {args.rows}")
    if not args.tolerance > 0:
        raise ExportError(f"--tolerance: must be positive, got {args.tolerance}")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise ExportError(f"--opset: the exporter writes ONNX opsets {MIN_OPSET}..{MAX_OPSET}, got {args.opset}")
    try:
        report = export_checkpoint(args.checkpoint, args.onnx, trust_code=trust, check=args.check,
                                   tolerance=args.tolerance, rows=args.rows, opset=args.opset)
    except ExportCheckError as e:
        print(e.report.text(), file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.text())
    return 0


__all__ = ["EXPORT_EXTRA", "ExportCheckError", "ExportError", "ExportReport", "GraphInput", "OnnxGraph",
           "export_checkpoint", "export_onnx", "input_signature", "prediction_of", "random_batch", "require_onnx"]
