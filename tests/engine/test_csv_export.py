"""CSV files a spreadsheet opens must not run formulas: a text cell starting with =, +, -, @, a tab or a carriage
return gets a leading ', while numbers (negative differences included) stay numbers."""
from __future__ import annotations

import contextlib
import csv
import io
import math
import types

import pytest

from robult_engine.cli import main as cli_main

LINK = '=HYPERLINK("http://x")'
TINY = ["--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16", "--set", "model.d_z=8",
        "--set", "model.d_u=8", "--set", "model.d_hidden=16", "--batch-size", "16", "--threads", "1", "--quiet"]


def read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("value, written", [
    (LINK, "'" + LINK), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"), ("-2+3", "'-2+3"), ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("-x", "'-x"),
    ("robult", "robult"), ("m0+m1", "m0+m1"), ("", ""), ("a=b", "a=b"),
    # numbers, as numbers or as the text of one, are left alone
    (-0.0312, -0.0312), (-3, -3), ("-0.031200", "-0.031200"), ("+1.5e-05", "+1.5e-05"), ("-3.12e-05", "-3.12e-05"),
    ("-inf", "-inf"), ("-.5", "-.5"), (None, None), (True, True),
])
def test_safe_cell(value, written):
    from robult_engine.csvsafe import safe_cell
    assert safe_cell(value) == written


def test_safe_cell_keeps_a_nan():
    from robult_engine.csvsafe import safe_cell
    assert math.isnan(safe_cell(float("nan")))


def test_sweep_csv_neutralises_text_cells_and_keeps_negative_numbers(tmp_path):
    from robult_engine.sweep import write_csv
    methods = ["robult", LINK]
    cell = {"methods": {"robult": {"mean": 0.5, "std": 0.01, "seeds": [0.5]},
                        LINK: {"mean": 0.5312, "std": 0.02, "seeds": [0.5312]}},
            "paired_vs_first": {LINK: {"mean": -0.0312, "std": 0.0, "wins": 0, "n": 1}}}
    report = {"cells": {"0.1": {"@mask": cell}}}
    ev = types.SimpleNamespace(labels=["@mask"], realised={"@mask": 0.25}, rates=lambda: {"@mask": float("nan")})
    write_csv(tmp_path / "sweep.csv", report, methods, [0.1], ev, "-metric", 1)
    rows = read(tmp_path / "sweep.csv")
    assert [r["method"] for r in rows] == ["robult", "'" + LINK]
    assert {r["missing"] for r in rows} == {"'@mask"} and {r["metric"] for r in rows} == {"'-metric"}
    assert rows[1]["diff_vs_first_mean"] == "-0.031200" and float(rows[1]["diff_vs_first_mean"]) == -0.0312
    assert rows[1]["seed0"] == "0.531200" and rows[0]["label_fraction"] == "0.1"


def test_compare_csv_neutralises_a_metric_name(tmp_path):
    out = tmp_path / "cmp"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli_main(["compare", "--methods", "supervised", "--seeds", "1", "--epochs", "1", "--metric", LINK, *TINY,
                       "--out", str(out)])
    assert rc == 0, err.getvalue()
    rows = read(out / "compare.csv")
    assert rows and {r["metric"] for r in rows} == {"'" + LINK}
    assert {r["method"] for r in rows} == {"supervised"} and rows[0]["subset"] == "m0"
