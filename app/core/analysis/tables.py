"""Qt-free writers of exported tables and files: CSV (cells a spreadsheet would run as formulas neutralised), JSON,
the tables of one inspection, and a file-name-safe title.

Every writer creates its folder, writes to a temporary name and renames, so a failed export never leaves a
half-written file. Plots (PNG, SVG) are written by app/views/common/export.py.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from robult_engine.csvsafe import csv_writer


def safe_name(text: str) -> str:
    """A file name from a title: letters, digits, '-', '_', '+'; never empty."""
    s = re.sub(r"[^A-Za-z0-9_+\-]+", "_", text).strip("_")
    return s[:80] or "plot"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_target(path: Path) -> Path:
    """A temporary file beside `path`, to be renamed onto it. mkstemp makes it private (0600); it gets the mode
    a plain new file would have (0666 less the umask), so an exported file is as readable as any other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.stem + ".", suffix=path.suffix, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # not on Windows, where the mode bits do not apply
            os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def _cell(v) -> str | float | int:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 10))
    if isinstance(v, (np.floating,)):
        return _cell(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return v


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    path = Path(path)
    tmp = atomic_target(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv_writer(f)  # text cells a spreadsheet would run as formulas get a leading '
            w.writerow(list(header))
            for r in rows:
                w.writerow([_cell(v) for v in r])
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(path: str | os.PathLike, data) -> Path:
    path = Path(path)
    tmp = atomic_target(path)
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def _said(insp, which: str) -> str:
    """The prediction as the panels show it (class, label set or score); empty when there is none."""
    text = insp.prediction_text(which)
    return "" if text == "–" else text


def inspection_tables(insp, sample_title: str = "") -> dict[str, tuple[list[str], list[list]]]:
    """CSV tables of one inspection: {file stem: (header, rows)}."""
    names, classes = insp.modality_names, insp.class_names
    subset = "+".join(n for n, u in zip(names, insp.used) if u) or "(none)"
    preds = (["class", "p_subset", "p_all", "delta"],
             [[c, float(p), float(a), float(d)] for c, p, a, d in zip(classes, insp.probs, insp.probs_all, insp.delta)])
    mods = (["modality", "toggle_on", "present", "z_norm", "u_norm", "u_over_z", "rec_error", "own_prediction",
             *[f"p_{c}" for c in classes]],
            [[n, insp.subset[i], insp.present[i], float(insp.z_norm[i]), float(insp.u_norm[i]), float(insp.ratio[i]),
              float(insp.rec_err[i]), _said(insp, n),
              *[float(v) for v in insp.mod_probs[i]]] for i, n in enumerate(names)])
    summary = (["field", "value"], [["sample", sample_title], ["subset", subset],
                                    ["prediction", _said(insp, "subset")],
                                    ["prediction_all_modalities", _said(insp, "all")]])
    out = {"inspection_summary": summary, "inspection_predictions": preds, "inspection_modalities": mods}
    pu = insp.softpu
    if pu is not None:
        summary[1].extend([["pseudo_label", pu.pseudo_label_name], ["confidence", pu.confidence],
                           ["kappa", pu.kappa], ["sigma", pu.sigma], ["kernel", pu.kernel],
                           ["labeled", pu.labeled], ["soft_pu_valid", pu.valid]])
        out["softpu_reference"] = (
            ["ref_row", "train_index", "labeled", "pseudo_or_label", "kappa", "weight_given", "weight_received"],
            [[r, int(pu.ref_indices[r]), bool(pu.ref_labeled[r]), pu.ref_class_names[r], float(pu.ref_kappa[r]),
              float(pu.gives[r]), float(pu.receives[r])] for r in range(len(pu.ref_indices))])
    return out


def write_tables(folder: str | os.PathLike, tables: dict[str, tuple[list[str], list[list]]]) -> list[Path]:
    return [write_csv(Path(folder) / f"{safe_name(stem)}.csv", h, rows) for stem, (h, rows) in tables.items()]
