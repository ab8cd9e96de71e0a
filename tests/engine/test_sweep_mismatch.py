"""`robult sweep --train-missing`: the train/test missingness matrix (η_train × η_test per method) on a tiny
PID-Synth. Its rows are the plain sweeps trained with `--set data.train_missing=<setting>` (same seeds, same
masks, so the very same numbers), a resume takes back only the finished runs of the matching training setting,
and a setting the training cannot take is refused before anything trains."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess

import pytest

from robult_engine.cli import main as cli_main

TINY = ["--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16", "--set", "model.d_z=8",
        "--set", "model.d_u=8", "--set", "model.d_hidden=16", "--batch-size", "16", "--threads", "1"]
BASE = ["sweep", "--methods", "robult,supervised", "--label-fractions", "0.5", "--missing", "mcar:0,0.5",
        "--seeds", "2", "--epochs", "1", *TINY]
TRAIN = ["mcar:0", "mcar:0.25"]
MISMATCH = [*BASE, "--train-missing", "mcar:0,0.25"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def mismatch(tmp_path_factory):
    out = tmp_path_factory.mktemp("mismatch") / "m"
    proc = run_cli(*MISMATCH, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return proc, out, json.loads((out / "sweep.json").read_text())


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The plain sweep trained with each setting as data.train_missing, on the mismatch sweep's test grid (the
    training setting mcar:0.25 joins it there)."""
    out = {}
    for setting in [*TRAIN, ""]:  # "": no data.train_missing at all
        folder = tmp_path_factory.mktemp("plain") / (setting.replace(":", "_") or "none")
        chosen = ["--set", f"data.train_missing={setting}"] if setting else []
        proc = run_cli(*[{"mcar:0,0.5": "mcar:0,0.25,0.5"}.get(a, a) for a in BASE], *chosen, "--out", folder,
                       "--quiet")
        assert proc.returncode == 0, proc.stderr
        out[setting] = (folder, json.loads((folder / "sweep.json").read_text()))
    return out


def test_each_row_of_the_matrix_is_the_plain_sweep_trained_with_that_setting(mismatch, plain):
    _proc, _out, data = mismatch
    assert data["train_missing"] == TRAIN and data["missing"] == ["mcar:0", "mcar:0.25", "mcar:0.5"]
    assert data["test_added"] == ["mcar:0.25"] and data["diagonal"] == [["mcar:0", "mcar:0"],
                                                                      ["mcar:0.25", "mcar:0.25"]]
    for setting in TRAIN:
        _folder, p = plain[setting]
        assert p["missing"] == data["missing"] and p["realised_missing"] == data["realised_missing"]  # same masks
        for test in data["missing"]:
            for m in ("robult", "supervised"):
                got = data["matrix"]["0.5"][setting][test]["methods"][m]
                want = p["cells"]["0.5"][test]["methods"][m]
                assert got["seeds"] == want["seeds"], (setting, test, m)  # exactly: same seeds, same masks
                assert (got["mean"], got["std"]) == (want["mean"], want["std"])
    # η_train = mcar:0 removes nothing: the row is the sweep that sets no training missingness at all
    for test in data["missing"]:
        assert data["matrix"]["0.5"]["mcar:0"][test]["methods"] == plain[""][1]["cells"]["0.5"][test]["methods"]
    # the diagonal cell itself, seed by seed
    diag = data["matrix"]["0.5"]["mcar:0.25"]["mcar:0.25"]["methods"]["robult"]["seeds"]
    assert diag == plain["mcar:0.25"][1]["cells"]["0.5"]["mcar:0.25"]["methods"]["robult"]["seeds"]
    # the two training settings do train differently (the matrix is not one row repeated)
    a = data["matrix_runs"]["0.5"]["mcar:0"]["robult"]
    b = data["matrix_runs"]["0.5"]["mcar:0.25"]["robult"]
    assert [r["val_score"] for r in a] != [r["val_score"] for r in b] or \
        [r["missing"] for r in a] != [r["missing"] for r in b]


def test_the_outputs_carry_the_training_axis_and_mark_the_diagonal(mismatch, plain):
    proc, out, data = mismatch
    # runs in one folder per training setting, each record holding its setting
    rec = json.loads((out / "lf0.5" / "train-mcar_0.25" / "supervised-seed1" / "sweep_run.json").read_text())
    assert rec["config"]["data"]["train_missing"] == "mcar:0.25" and rec["seed"] == 1
    assert data["train_realised_missing"]["mcar:0"] == 0.0
    assert 0.15 < data["train_realised_missing"]["mcar:0.25"] < 0.3
    # `cells` (what a reader of plain sweeps shows) is the first training setting's row
    assert data["cells_train_missing"] == "mcar:0"
    for test in data["missing"]:
        assert data["cells"]["0.5"][test]["methods"] == data["matrix"]["0.5"]["mcar:0"][test]["methods"]
    # the CSV: the plain sweep's columns plus the training setting and a diagonal flag
    with open(out / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3 * 2  # η_train × η_test × methods
    with open(plain["mcar:0"][0] / "sweep.csv") as fh:
        old_columns = next(csv.reader(fh))
    assert set(old_columns) <= set(rows[0]) and "train_missing" not in old_columns
    for r in rows:
        assert r["diagonal"] == ("1" if r["train_missing"] == r["missing"] else "0")
        cell = data["matrix"][r["label_fraction"]][r["train_missing"]][r["missing"]]["methods"][r["method"]]
        assert [float(r["seed0"]), float(r["seed1"])] == pytest.approx(cell["seeds"], abs=1e-6)
    # a plain sweep's JSON stays as it was
    assert "matrix" not in plain["mcar:0"][1] and "train_missing" not in plain["mcar:0"][1]
    # the printed tables: one per method, the diagonal in brackets, then robult minus supervised
    for m in ("robult", "supervised"):
        block = proc.stdout.split(f"label fraction 0.5, {m}: test accuracy")[1].split("\n\n")[0]
        lines = [ln for ln in block.splitlines() if ln.startswith("train ")]
        assert len(lines) == 2
        assert lines[0].count("[") == 1 and lines[0].split("(0%)", 1)[1].lstrip().startswith("[")
        assert lines[1].count("[") == 1
        assert lines[1].index("[") > lines[0].index("[")  # mcar:0.25 is the second column
    assert "robult minus supervised per cell" in proc.stdout
    assert "× 2 training setting(s) (mcar:0, mcar:0.25)" in proc.stderr
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_trains_only_the_unfinished_cells(mismatch, tmp_path, monkeypatch):
    import robult_engine.trainer as trainer_mod
    _proc, out, data = mismatch
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for f in ("sweep.json", "sweep.csv", "sweep.png"):
        (copy / f).unlink()
    shutil.rmtree(copy / "lf0.5" / "train-mcar_0.25" / "supervised-seed1")  # killed before this run finished
    # a record of the other training setting in this run's folder is not taken for it
    shutil.copy(copy / "lf0.5" / "train-mcar_0" / "robult-seed0" / "sweep_run.json",
                copy / "lf0.5" / "train-mcar_0.25" / "robult-seed0" / "sweep_run.json")
    trained = []
    real_run = trainer_mod.Trainer.run

    def counting_run(self):
        trained.append((self.cfg.method, self.cfg.data.train_missing, self.cfg.seed))
        return real_run(self)
    monkeypatch.setattr(trainer_mod.Trainer, "run", counting_run)
    again = run_cli(*MISMATCH, "--out", copy, "--resume")
    assert again.returncode == 0, again.stderr
    assert sorted(trained) == [("robult", "mcar:0.25", 0), ("supervised", "mcar:0.25", 1)]
    assert "resumed 6 finished run(s)" in again.stderr
    b = json.loads((copy / "sweep.json").read_text())
    assert b["resumed_runs"] == 6 and b["matrix"] == data["matrix"]


def test_a_cancelled_mismatch_sweep_resumes_from_its_recorded_runs(tmp_path, pid_bundle):
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.sweep import Sweep
    base = config_from_args(build_parser().parse_args(["train", "--epochs", "1", *TINY]), "supervised")
    kw = dict(seeds=1, missing=["mcar:0,0.5"], train_missing=["mcar:0,0.5"], bundle=pid_bundle)
    sw = Sweep(base, ["supervised"], [0.5], tmp_path, **kw)
    assert sw.jobs == [(0, 0, 0, "supervised", 0), (0, 0, 0, "supervised", 1)]
    seen = []
    assert sw.run_serial(should_stop=lambda: bool(seen), on_run=lambda k, key, run: seen.append(key)) is False
    assert seen == [sw.jobs[0]] and sw.pending() == [sw.jobs[1]]
    again = Sweep(base, ["supervised"], [0.5], tmp_path, resume=True, **kw)
    assert again.resumed == [sw.jobs[0]] and again.pending() == [sw.jobs[1]]
    assert again.run_serial() is True
    payload = again.finish(print_tables=False)
    assert payload["resumed_runs"] == 1 and set(payload["matrix"]["0.5"]) == {"mcar:0", "mcar:0.5"}
    # the same folder swept with other training settings trains again: the records hold another configuration
    other = Sweep(base, ["supervised"], [0.5], tmp_path, resume=True, **{**kw, "train_missing": ["mcar:0.25"]})
    assert other.resumed == [] and len(other.pending()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--train-missing", "subsets"], "--train-missing subsets: 'subsets' is an evaluation over every modality "
                                     "subset, not a training setting"),
    (["--train-missing", "mcar:audio=0.5"], "--train-missing mcar:audio=0.5: cannot be trained on: unknown "
                                            "modality 'audio'; the dataset has m0, m1, m2"),
    (["--train-missing", "mcar:0,0.2/0.7"], "--train-missing mcar:0,0.2/0.7: mcar:0.2/0.7: cannot be trained on: "
                                            "give one rate or one per modality"),
    (["--train-missing", "mcar:1.2"], "--train-missing mcar:1.2: a rate must be in [0, 1)"),
    (["--train-missing", "often:0.3"], "--train-missing often:0.3: unknown mechanism 'often'"),
    (["--train-missing", "mcar:0.3", "--set", "data.train_missing=mcar:0.5"],
     "--train-missing mcar:0.3: the configuration already sets data.train_missing=mcar:0.5"),
    (["--train-missing", "mcar:0.3", "--grid", "loss.tau=0.05,0.1"], "--train-missing: cannot be combined with "
                                                                     "--grid"),
])
def test_a_setting_the_training_cannot_take_exits_2_before_anything_trains(tmp_path, monkeypatch, extra, message):
    import robult_engine.trainer as trainer_mod

    def no_training(self):
        raise AssertionError("trained")
    monkeypatch.setattr(trainer_mod.Trainer, "run", no_training)
    out = tmp_path / "out"
    proc = run_cli(*BASE, *extra, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not out.exists()
