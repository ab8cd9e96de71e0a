"""The headless CLI (`python -m robult_engine train | eval | compare`), run as a user would, in subprocesses. The
parallel compares (their runs are worker processes either way) and most argument checks call `cli.main` in this
process: a subprocess each would mostly import torch again."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import subprocess

import pytest

from robult_engine.cli import main

TINY_ARGS = ["--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16",
             "--set", "model.d_z=8", "--set", "model.d_u=8", "--set", "model.d_hidden=16", "--batch-size", "16",
             "--label-fraction", "0.1", "--threads", "1", "--quiet"]
SUBSETS = ["m0", "m1", "m2", "m0+m1", "m0+m2", "m1+m2", "m0+m1+m2"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, engine_cli):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = engine_cli("train", "--method", "robult", "--epochs", "2", "--out", str(out), *TINY_ARGS)
    return proc, out


def test_train_writes_a_run_folder(trained_run):
    proc, out = trained_run
    assert proc.returncode == 0, proc.stderr
    assert "best epoch" in proc.stdout and "test split" in proc.stdout
    for s in SUBSETS:
        assert re.search(rf"^{re.escape(s)}\s+[\d.]+\s+[\d.]+$", proc.stdout, re.M), s
    for name in ("best.pt", "last.pt", "config.json", "result.json"):
        assert (out / name).is_file(), name
    result = json.loads((out / "result.json").read_text())
    assert set(result["test"]) == set(SUBSETS) and result["checkpoint"].endswith("best.pt")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["d_h"] == 16 and cfg["train"]["labeled_per_batch"] == 4  # batch 16 // 4
    assert cfg["train"]["epochs"] == 2 and cfg["method"] == "robult"


def test_eval_prints_the_subset_by_metric_table(trained_run, engine_cli, tmp_path):
    _, out = trained_run
    js = tmp_path / "table.json"
    proc = engine_cli("eval", str(out / "best.pt"), "--split", "val", "--json", str(js), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("val split, robult")
    header = lines[1].split()
    assert header == ["subset", "accuracy", "macro_f1"]
    rows = {ln[:20].strip(): ln[20:].split() for ln in lines[2:]}
    assert list(rows) == SUBSETS + ["mean over subsets"]
    assert all(len(v) == 2 and all(0 <= float(x) <= 1 for x in v) for v in rows.values())
    table = json.loads(js.read_text())
    assert set(table) == set(SUBSETS) | {"mean over subsets"}
    assert float(rows["m0+m1+m2"][0]) == pytest.approx(table["m0+m1+m2"]["accuracy"], abs=1e-4)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`robult ARGS` in this process, output captured (with --jobs the runs are still worker processes)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


COMPARE = ["compare", "--methods", "robult,supervised", "--seeds", "2", "--epochs", "1", *TINY_ARGS]


@pytest.fixture(scope="module")
def compared(tmp_path_factory, engine_cli):
    """One serial compare of 2 methods × 2 seeds: its output is checked, and a parallel one must equal it."""
    out = tmp_path_factory.mktemp("cmp") / "one"
    return engine_cli(*COMPARE, "--out", str(out), timeout=300), out


def test_compare_writes_csv_and_json(compared):
    proc, out = compared
    assert proc.returncode == 0, proc.stderr
    assert "(mean ± std over seeds)" in proc.stdout
    table = proc.stdout.split("(mean ± std over seeds)")[1]
    header = table.strip().splitlines()[0].split()
    assert header == ["subset", "robult", "supervised"]
    for s in SUBSETS + ["mean"]:
        assert re.search(rf"^{re.escape(s)}\s+[\d.]+ ± [\d.]+\s+[\d.]+ ± [\d.]+$", table, re.M), s
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == (len(SUBSETS) + 1) * 2
    assert set(rows[0]) == {"subset", "method", "metric", "mean", "std", "seed0", "seed1"}
    for r in rows:
        vals = [float(r["seed0"]), float(r["seed1"])]
        assert float(r["mean"]) == pytest.approx(sum(vals) / 2, abs=1e-5)
        assert float(r["std"]) == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5, abs=1e-5)  # sample std, n=2
    data = json.loads((out / "compare.json").read_text())
    assert data["methods"] == ["robult", "supervised"] and data["seeds"] == 2 and data["metric"] == "accuracy"
    assert set(data["summary"]) == set(SUBSETS) | {"mean"}
    assert len(data["runs"]["robult"]) == 2
    for m in ("robult", "supervised"):
        for seed in (0, 1):
            assert (out / f"{m}-seed{seed}" / "best.pt").is_file()
    # robult minus supervised, paired by seed
    diffs = [a["test"]["mean"]["accuracy"] - b["test"]["mean"]["accuracy"]
             for a, b in zip(data["runs"]["robult"], data["runs"]["supervised"])]
    paired = data["paired_vs_first"]["supervised"]
    assert paired["mean"] == pytest.approx(sum(diffs) / 2) and paired["n"] == 2
    assert paired["wins"] == sum(d > 0 for d in diffs)
    assert re.search(r"robult - supervised\s+[+-][\d.]+ ± [\d.]+\s+robult ahead in \d/2 seeds", proc.stdout)


def test_compare_in_parallel_processes_gives_the_same_results(compared, tmp_path):
    one, out_one = compared
    two = run_cli(*COMPARE, "--out", str(tmp_path / "two"), "--jobs", "2")
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a = json.loads((out_one / "compare.json").read_text())
    b = json.loads((tmp_path / "two" / "compare.json").read_text())
    assert a["summary"] == b["summary"] and a["paired_vs_first"] == b["paired_vs_first"]
    assert [r["seed"] for r in b["runs"]["supervised"]] == [0, 1]
    for m in ("robult", "supervised"):
        for seed in (0, 1):
            assert (tmp_path / "two" / f"{m}-seed{seed}" / "best.pt").is_file()


def test_compare_with_a_grid_tunes_every_method_alike_on_validation(tmp_path):
    out = tmp_path / "grid"
    proc = run_cli("compare", "--methods", "robult,supervised", "--seeds", "2", "--epochs", "1",
                   "--grid", "train.labeled_per_batch=4,2", "--grid", "model.dropout=0.0,0.2", "--out", str(out),
                   "--jobs", "2", *TINY_ARGS)
    assert proc.returncode == 0, proc.stderr
    assert "per setting (* each method's choice)" in proc.stdout and "each method at its chosen setting" in proc.stdout
    data = json.loads((out / "compare.json").read_text())
    assert len(data["grid"]) == 4 and len(data["grid_runs"]) == 8
    for m in ("robult", "supervised"):
        cells = [c for c in data["grid_runs"] if c["method"] == m]
        best = max(cells, key=lambda c: sum(r["val_score"] for r in c["runs"]))  # validation only
        assert data["chosen_setting"][m] == best["setting"]
        assert data["runs"][m] == best["runs"] and [r["seed"] for r in best["runs"]] == [0, 1]
        g = data["grid"].index(best["setting"])
        assert (out / f"{m}-seed1-g{g}" / "best.pt").is_file()
        chosen_line = next(ln for ln in proc.stdout.splitlines()
                           if ln.startswith("labeled_per_batch=" + str(best["setting"]["train.labeled_per_batch"]))
                           and f"dropout={best['setting']['model.dropout']}" in ln)
        assert "*" in chosen_line


@pytest.mark.parametrize("args, message", [
    (["train", "--method", "robust"], "invalid choice: 'robust'"),  # refused by the argument parser
    (["eval", "no/such/run/best.pt"], "no such checkpoint file"),  # refused by the command
])
def test_bad_arguments_exit_2_with_a_clear_message(engine_cli, args, message):
    proc = engine_cli(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def run_main(args, capsys) -> tuple[int, str]:
    """`cli.main(ARGS)` in this process: its exit status (argparse's own errors exit) and its stderr."""
    try:
        rc = main(args)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["compare", "--grid", "train.labeled_per_batch=99", "--batch-size", "16"], "--grid labeled_per_batch=99"),
    (["compare", "--grid", "model.dropout"], "expected SECTION.FIELD=V1,V2"),
    (["compare", "--methods", "robult,magic"], "unknown method 'magic'"),
    (["compare", "--jobs", "0"], "--jobs: must be at least 1"),
    (["train", "--set", "epochs"], "expected SECTION.FIELD=VALUE"),
    (["train", "--set", "model.depth=3"], "unknown field model.depth"),
    (["train", "--set", "loss.tau=-1"], "loss.tau"),
    (["train", "--set", "data.label_fraction=abc"], "data.label_fraction"),
    (["train", "--config", "no/such/config.json"], "cannot read the config file"),
    (["train", "--epochs", "many"], "invalid int value: 'many'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["train", "--rec-route", "encoder"], "invalid choice: 'encoder'"),
    (["train", "--set", "loss.rec_route=encoder"], "loss.rec_route: one of projector, branch, full"),
    (["train", "--lambda-diff", "-1"], "loss.lambda_diff: must be >= 0"),
])
def test_more_bad_arguments_in_process(args, message, capsys):
    """The same contract through `cli.main` (cheaper than a subprocess per case)."""
    rc, err = run_main(args, capsys)
    assert rc == 2 and message in err, (rc, err)
    assert "Traceback" not in err


def test_eval_refuses_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    rc, err = run_main(["eval", str(bad)], capsys)
    assert rc == 2 and "not a Robult checkpoint" in err and "Traceback" not in err


def test_unknown_modality_fails_clearly(capsys):
    """Caught once the dataset is loaded (inside the run), so it is a failed run (exit 1) with the message."""
    from robult_engine.cli import main
    rc = main(["train", "--modalities", "m0,audio", "--dataset", "pid-synth", "--quiet"])
    err = capsys.readouterr().err
    assert rc in (1, 2) and "unknown modality 'audio'; the dataset has m0, m1, m2" in err


def test_paired_differences_know_which_way_is_better():
    from robult_engine.cli import paired_differences

    def runs(vals, key):
        return [{"seed": i, "test": {"mean": {key: v}}} for i, v in enumerate(vals)]
    acc = paired_differences({"a": runs([0.9, 0.7, 0.8], "accuracy"), "b": runs([0.8, 0.8, 0.8], "accuracy")},
                             ["a", "b"], "accuracy")["b"]
    assert acc["mean"] == pytest.approx(0.0) and acc["wins"] == 1 and acc["n"] == 3
    mae = paired_differences({"a": runs([0.5, 0.7], "mae"), "b": runs([0.6, 0.6], "mae")}, ["a", "b"], "mae")["b"]
    assert mae["wins"] == 1  # a lower error is ahead


def test_rec_route_and_lambda_diff_reach_the_config():
    from robult_engine.cli import build_parser, config_from_args
    args = build_parser().parse_args(["train", "--rec-route", "full", "--lambda-diff", "0.5"])
    cfg = config_from_args(args, "robult")
    assert cfg.loss.rec_route == "full" and cfg.loss.lambda_diff == 0.5
    default = config_from_args(build_parser().parse_args(["train"]), "robult")
    assert default.loss.rec_route == "full" and default.loss.lambda_diff == 0.0
