"""Property tests over every parser and file format a user can hand the engine: for arbitrary input, each one
returns a valid object or raises its documented error with a message (ConfigError, DataError, MissingSpecError:
all ValueError subclasses) — never another exception type, never a hang.

Covered: missing-modality specs (`parse_missing`, `parse_missing_grid`, and drawing the masks they describe),
`--set` items (`config_from_args`), JSON config files (`RunConfig.from_json` + `validate`), manifests (CSV and
JSONL, `load_manifest`) and mask files (`load_masks`). The app's sweep.json reader is covered in
tests/app/test_properties_app.py. Each test runs a bounded number of examples (no example database is kept).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from robult_engine.config import ConfigError, RunConfig
from robult_engine.data import DataError
from robult_engine.data.base import DatasetBundle
from robult_engine.data.manifest import load_manifest
from robult_engine.missing import (MECHANISMS, MissingSpec, MissingSpecError, draw_mask, expand, load_masks,
                                   parse_missing, parse_missing_grid, save_masks)


def fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def refused(e: BaseException, kind: type[Exception]) -> None:
    """`e` is the documented error type, a ValueError, with a message."""
    assert isinstance(e, kind), f"{type(e).__name__} instead of {kind.__name__}: {e}"
    assert str(e).strip(), f"{type(e).__name__} without a message"
    event(f"refused ({type(e).__name__})")


def test_the_documented_errors_are_value_errors():
    """The CLI turns ValueError into exit code 2 with its message; every parser's error is one."""
    for kind in (ConfigError, DataError, MissingSpecError):
        assert issubclass(kind, ValueError)
    assert issubclass(MissingSpecError, ConfigError)


# --- strategies ---------------------------------------------------------------------------------------------------

SPECIAL_INTS = st.sampled_from([0, 1, 2, -1, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 63, 10 ** 23, 10 ** 400])
SPECIAL_FLOATS = st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e-300, 1e23, 1e300, float("nan"), float("inf"),
                                  float("-inf")])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), SPECIAL_INTS, st.floats(), SPECIAL_FLOATS,
                    st.text(max_size=12))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=10)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def mostly(draw, usual: st.SearchStrategy, odd: st.SearchStrategy, one_in: int = 12):
    """`usual` most of the time, `odd` about once in `one_in` draws (shrinking towards `usual`)."""
    return draw(odd if draw(st.integers(0, one_in - 1)) == one_in - 1 else usual)


# --- missing-modality specs ---------------------------------------------------------------------------------------

SPEC_PIECES = st.sampled_from(["0", "0.5", "0.25", "0.9999999", "1", "-0.1", "-0", "nan", "inf", "1e400", "1_0",
                               "vec", "img", "seq", "txt", "vec=0.3", "img=0.2", "=", "/", ",", "@", "+", " ",
                               "c0", "c2", "2", "7", "-1", "\u00b2", "\u0661", "x", "99999999999999999999999"])
RATES = st.one_of(st.sampled_from(["0", "0.25", "0.5", "0.75", "0.9999999"]),
                  st.floats(0, 1, exclude_max=True).map(repr))
WELL_FORMED_SPECS = st.one_of(
    st.sampled_from(["exclusive", "subsets", "subset:vec", "subset:img+txt", "subset:vec+img+seq+txt"]),
    st.builds(lambda m, rates: f"{m}:{','.join(rates)}", st.sampled_from(["mcar", "mnar-value", "mnar-class"]),
              st.lists(RATES, min_size=1, max_size=3)),
    st.builds(lambda m, rates: f"{m}:{'/'.join(rates)}", st.sampled_from(["mcar", "mnar-value"]),
              st.lists(RATES, min_size=4, max_size=4)),
    st.builds(lambda names, rates: "mcar:" + "/".join(f"{n}={r}" for n, r in zip(names, rates)),
              st.lists(st.sampled_from(["vec", "img", "seq", "txt"]), min_size=1, max_size=4, unique=True),
              st.lists(RATES, min_size=4, max_size=4)),
    st.builds(lambda hi, lo, cls: f"mnar-class:{hi}{'/' + lo if lo else ''}{'@' + '+'.join(cls) if cls else ''}",
              RATES, st.one_of(st.none(), RATES), st.lists(st.sampled_from(["0", "1", "2", "c0", "c1", "c2"]),
                                                           max_size=2, unique=True)))
SPEC_TEXTS = st.one_of(
    WELL_FORMED_SPECS,
    WELL_FORMED_SPECS,
    st.text(max_size=40),
    st.builds(lambda mech, sep, body: mech + sep + body,
              st.sampled_from(MECHANISMS + ("MCAR", " mcar ", "other", "")), st.sampled_from([":", "", "::"]),
              st.lists(st.one_of(SPEC_PIECES, st.text(max_size=3)), max_size=7).map("".join)))



def fast_with_fixtures(n: int) -> settings:
    """`fast`, for tests whose fixtures are factories or constants (the same for every example)."""
    return settings(fast(n), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.function_scoped_fixture])


@fast_with_fixtures(300)
@given(text=SPEC_TEXTS)
def test_missing_specs_parse_or_refuse_and_parsed_specs_draw_or_refuse(make_bundle, text):
    try:
        specs = parse_missing(text)
    except Exception as e:  # noqa: BLE001 - the property is about the type
        refused(e, MissingSpecError)
        return
    event("parsed")
    assert specs and all(isinstance(s, MissingSpec) for s in specs)
    bundle = make_bundle(n=24, missing=0.3)  # vec, img, seq, txt; classes c0, c1, c2; some modalities missing
    split, info = bundle.splits["test"], bundle.info
    for s in specs:
        assert parse_missing(s.label)[0] == s  # the canonical text reads back as the setting
        for one in expand([s], tuple(info.modality_names)):
            try:
                mask = draw_mask(split, info, one, seed=3)
            except Exception as e:  # noqa: BLE001
                refused(e, MissingSpecError)
                continue
            assert mask.shape == split.mask.shape and mask.dtype == torch.bool
            assert not (mask & ~split.mask).any()


@fast_with_fixtures(100)
@given(items=st.lists(SPEC_TEXTS, max_size=4), seed=st.one_of(st.integers(), SPECIAL_INTS))
def test_missing_grids_parse_or_refuse(make_bundle, items, seed):
    try:
        specs = parse_missing_grid(items)
    except Exception as e:  # noqa: BLE001
        refused(e, MissingSpecError)
        return
    assert len(set(specs)) == len(specs)
    bundle = make_bundle(n=24, missing=0.3)
    split, info = bundle.splits["test"], bundle.info
    for s in expand(specs, tuple(info.modality_names))[:3]:
        try:
            draw_mask(split, info, s, seed=seed)
        except Exception as e:  # noqa: BLE001
            refused(e, MissingSpecError)


# --- --set and JSON config files -----------------------------------------------------------------------------------

def _field_names() -> list[str]:
    cfg = RunConfig()
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out += ([f"{f.name}.{g.name}" for g in dataclasses.fields(v)] if dataclasses.is_dataclass(v) else [f.name])
    return out


FIELDS = _field_names()
BAD_KEYS = st.one_of(st.sampled_from(["", " ", ".", "..", ".x", "model.", "a.b.c", "data", "model", "train", "foo",
                                        " seed ", "model.d_z.x"]), st.text(max_size=15))
ODD_VALUES = st.one_of(st.text(max_size=20), JSON_VALUES.map(json.dumps), st.just(deep(2000)), st.just("1" * 5000),
                       st.sampled_from(["1e23", "-1", "4294967296", "1e9", "1000000000", "NaN", "Infinity", "true",
                                        "null", "[]", "{}", '"x"']))
# values that fit each kind of field, so that valid configurations are common too
FITTING_VALUES = st.one_of(st.integers(0, 70_000).map(str), st.floats(0, 2).map(repr),
                           st.sampled_from(["0", "1", "2", "16", "64", "0.1", "0.5", "true", "false", "null", "[]",
                                            "mlp", "gated", "gru", "linear", "rbf", "laplacian", "cpu", "auto",
                                            "full", "branch", "projector", "pid-synth", "robult", "supervised",
                                            "mcar:0.3", '["m0"]', '["audio=examples.transformer_encoder:make"]']))
SET_KEYS = mostly(st.sampled_from(FIELDS), BAD_KEYS, 6)
SET_VALUES = mostly(FITTING_VALUES, ODD_VALUES, 4)


@fast(300)
@given(SET_KEYS, SET_VALUES, mostly(st.just(True), st.just(False), 8))
def test_set_items_configure_or_refuse(key, value, with_equals):
    from robult_engine.cli import build_parser, config_from_args
    item = f"{key}={value}" if with_equals else key
    args = build_parser().parse_args(["train", f"--set={item}"])
    try:
        cfg = config_from_args(args, "robult")
    except Exception as e:  # noqa: BLE001
        refused(e, ConfigError)
        return
    event("configured")
    assert isinstance(cfg, RunConfig)
    assert RunConfig.from_json(cfg.to_json()) == cfg  # a valid config survives its own file


def _json_or_text(text: str):
    """What `--set` makes of a value: JSON, else the bare word."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _config_doc(changes: dict) -> dict:
    d = RunConfig().to_dict()
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name and isinstance(d.get(section), dict):
            d[section][name] = value
        else:
            d[section] = value
    return d


CONFIG_TEXTS = mostly(
    st.dictionaries(mostly(st.sampled_from(FIELDS), st.text(max_size=10), 6),
                    mostly(FITTING_VALUES.map(_json_or_text), st.one_of(JSON_VALUES, SPECIAL_INTS, SPECIAL_FLOATS), 4),
                    max_size=3).map(lambda ch: json.dumps(_config_doc(ch))),
    st.one_of(st.text(max_size=60), JSON_VALUES.map(json.dumps), st.just('{"seed": ' + deep(100_000) + "}"),
              st.just('{"seed": ' + "1" * 5000 + "}")), 3)


@fast(300)
@given(CONFIG_TEXTS)
def test_json_config_files_load_or_refuse(text):
    try:
        cfg = RunConfig.from_json(text).validate()
    except Exception as e:  # noqa: BLE001
        refused(e, ConfigError)
        return
    event("loaded")
    assert isinstance(cfg, RunConfig) and RunConfig.from_json(cfg.to_json()) == cfg


# --- manifests -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifest_dirs(tmp_path_factory) -> dict[str, Path]:
    """Two folders (one for manifest.csv, one for manifest.jsonl) holding a small image, a recording and a
    vector .npy that manifest rows may name."""
    out = {}
    for kind in ("csv", "jsonl"):
        d = tmp_path_factory.mktemp(f"manifest_{kind}")
        Image.new("L", (6, 5), 90).save(d / "x.png")
        t = np.arange(2400) / 8000
        sf.write(d / "y.wav", (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000)
        np.save(d / "z.npy", np.arange(4, dtype=np.float32))
        np.save(d / "q.npy", np.ones((3, 2), dtype=np.float32))
        out[kind] = d
    return out


CELLS = st.one_of(st.sampled_from(["a", "b", "c", "train", "val", "test", "dev", "training", "", " ", "0.5", "1",
                                   "2", "-3.25", "nan", "inf", "1e400", "a|b", "|", "x.png", "y.wav", "z.npy",
                                   "q.npy", "missing.png", "single-label", "multi-label", "regression", "r1"]),
                  st.text(max_size=10))
COLUMNS = st.one_of(st.sampled_from(["id", "split", "label", "task", "t", "u", "img", "ID", ""]), st.text(max_size=6))
SPLITS = st.sampled_from(["train"] * 6 + ["val", "test", "dev", "valid", "TEST"])


def _rows(draw_cells, n_cols: int) -> st.SearchStrategy:
    return st.lists(st.lists(draw_cells, min_size=n_cols, max_size=n_cols), max_size=12)


LABELS = {"single": st.sampled_from(["a", "b", "c"]), "multi": st.sampled_from(["a", "b", "a|b", "b|c"]),
          "regression": st.sampled_from(["0.5", "1.5", "-2.25", "3"])}
USUAL_CELLS = {"t": st.text(min_size=1, max_size=8), "img": mostly(st.just("x.png"), st.just(""), 15),
               "voice": mostly(st.just("y.wav"), st.just(""), 15), "vec": mostly(st.just("z.npy"), st.just(""), 15),
               "seq": mostly(st.just("q.npy"), st.just(""), 15)}


@st.composite
def manifest_tables(draw) -> tuple[list[str], list[list[str]]]:
    """A header that usually has id/split/label plus modality columns, and rows that usually fit it (an odd
    value now and then), or a table of arbitrary cells."""
    if draw(st.integers(0, 3)):
        header = ["id", "split", "label"] + draw(st.lists(st.sampled_from(list(USUAL_CELLS)), min_size=1, max_size=3,
                                                           unique=True))
        labels = LABELS[draw(st.sampled_from(list(LABELS)))]
        rows = []
        for i in range(draw(mostly(st.integers(6, 14), st.integers(0, 5), 6))):
            row = [draw(mostly(st.just(f"r{i}"), CELLS, 30)), draw(mostly(SPLITS, CELLS, 30)),
                   draw(mostly(labels, CELLS, 30))]
            row += [draw(mostly(USUAL_CELLS[c], CELLS, 30)) for c in header[3:]]
            rows.append(row)
        return header, rows
    header = draw(st.lists(COLUMNS, max_size=6))
    return header, draw(_rows(CELLS, max(1, len(header))))


def _manifest_outcome(folder: Path) -> None:
    try:
        bundle = load_manifest(folder)
    except Exception as e:  # noqa: BLE001
        refused(e, DataError)
        return
    event("loaded")
    assert isinstance(bundle, DatasetBundle)
    assert set(bundle.splits) == {"train", "val", "test"} and bundle.info.modalities


@fast(120)
@given(manifest_tables(), st.booleans(), st.one_of(st.none(), st.text(max_size=80)))
def test_csv_manifests_load_or_refuse(manifest_dirs, table, quoted, raw):
    folder = manifest_dirs["csv"]
    header, rows = table
    if raw is not None and not rows:
        text = raw  # arbitrary text as the whole file
    elif quoted:
        buf = io.StringIO()
        csv.writer(buf).writerows([header] + rows)
        text = buf.getvalue()
    else:
        text = "\n".join(",".join(r) for r in [header] + rows) + "\n"
    (folder / "manifest.csv").write_text(text, encoding="utf-8", errors="surrogatepass")
    _manifest_outcome(folder)


JSONL_LINES = st.one_of(
    st.text(max_size=30),
    JSON_VALUES.map(json.dumps),
    st.just(deep(100_000)),
    st.just('{"id": ' + "1" * 5000 + "}"),
    st.just('{"t": ' + deep(5000) + "}"))


@fast(120)
@given(manifest_tables(), st.lists(st.tuples(st.integers(0, 20), JSONL_LINES), max_size=3),
       st.dictionaries(st.sampled_from(["id", "split", "label", "t", "img", ""]), JSON_VALUES, max_size=3))
def test_jsonl_manifests_load_or_refuse(manifest_dirs, table, odd_lines, odd_values):
    folder = manifest_dirs["jsonl"]
    header, rows = table
    lines = [json.dumps({**dict(zip(header, r)), **(odd_values if i == 0 else {})}) for i, r in enumerate(rows)]
    for at, line in odd_lines:
        lines.insert(min(at, len(lines)), line)
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    _manifest_outcome(folder)


# --- mask files ----------------------------------------------------------------------------------------------------

MASK_NAMES = ("vec", "img", "seq", "txt")


@pytest.fixture(scope="module")
def mask_file_bytes(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("masks")
    g = torch.Generator().manual_seed(0)
    masks = {"mcar:0.5": torch.rand(12, 4, generator=g) > 0.5, "exclusive": torch.rand(12, 4, generator=g) > 0.3}
    return save_masks(d / "masks.npz", masks, modality_names=MASK_NAMES, split="test", seed=4).read_bytes()


def _mask_outcome(path: Path, n: int | None = None) -> None:
    try:
        masks, meta = load_masks(path, n=n, modality_names=MASK_NAMES if n is not None else None)
    except Exception as e:  # noqa: BLE001
        refused(e, MissingSpecError)
        return
    event(f"loaded ({len(masks)} settings)")
    assert isinstance(meta, dict)
    for label, m in masks.items():
        assert isinstance(label, str) and m.dtype == torch.bool and m.ndim == 2


@fast(150)
@given(st.data())
def test_damaged_mask_files_load_or_refuse(tmp_path_factory, mask_file_bytes, data):
    raw = bytearray(mask_file_bytes)
    how = data.draw(st.sampled_from(["truncate", "flip", "both", "garbage"]))
    if how in ("truncate", "both"):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    if how in ("flip", "both") and raw:
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if how == "garbage":
        raw = bytearray(data.draw(st.binary(max_size=200)))
    path = tmp_path_factory.mktemp("damaged", numbered=True) / "masks.npz"
    path.write_bytes(bytes(raw))
    _mask_outcome(path, n=data.draw(st.sampled_from([None, 12])))


META_CHANGES = st.dictionaries(st.sampled_from(["version", "specs", "modalities", "n", "split", "mask_seed",
                                                "fingerprint", "extra"]),
                               st.one_of(JSON_VALUES, SPECIAL_INTS, st.lists(st.sampled_from(
                                   ["mcar:0.5", "exclusive", "subset:vec", "nonsense", "", "mcar:0.5"]), max_size=3)),
                               max_size=3)
MASK_ARRAYS = hnp.arrays(dtype=st.sampled_from([np.uint8, np.bool_, np.int8, np.int64, np.float32, np.float64,
                                                np.dtype("U3")]),
                         shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=14))


@fast(150)
@given(st.data())
def test_written_mask_files_with_odd_contents_load_or_refuse(tmp_path_factory, data):
    meta = {"version": 1, "specs": ["mcar:0.5", "exclusive"], "modalities": list(MASK_NAMES), "n": 12,
            "split": "test", "mask_seed": 4}
    meta.update(data.draw(mostly(st.just({}), META_CHANGES, 3)))
    meta_array = data.draw(mostly(st.just(np.array(json.dumps(meta))),
                                  st.one_of(st.just(np.array(json.dumps(meta)[:-2])), MASK_ARRAYS), 4))
    arrays = {"meta": meta_array}
    for j in range(data.draw(mostly(st.just(2), st.integers(0, 3), 4))):
        arrays[f"mask{j}"] = data.draw(mostly(hnp.arrays(np.uint8, (12, 1)), MASK_ARRAYS, 4))
    path = tmp_path_factory.mktemp("written", numbered=True) / "masks.npz"
    (np.savez_compressed if data.draw(st.booleans()) else np.savez)(path, **arrays)
    _mask_outcome(path, n=data.draw(st.sampled_from([None, 12])))
