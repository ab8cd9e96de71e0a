"""`robult tune`: the same number of Optuna trials per method, selection on the validation split only, the paired
final table, a study that survives a kill, `robult compare --from-tune`, and bad inputs (exit 2)."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

optuna = pytest.importorskip("optuna")

from robult_engine import methods as methods_mod  # noqa: E402
from robult_engine import trainer as trainer_mod  # noqa: E402
from robult_engine import tune as tune_mod  # noqa: E402
from robult_engine.cli import main as cli_main  # noqa: E402
from robult_engine.config import ConfigError, RunConfig  # noqa: E402
from robult_engine.methods import COMMON_SPACE, METHOD_NAMES, method_spec  # noqa: E402
from robult_engine.tune import check_search_space  # noqa: E402

TINY = ["--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16", "--set", "model.d_z=8",
        "--set", "model.d_u=8", "--set", "model.d_hidden=16", "--batch-size", "16", "--threads", "1",
        "--label-fraction", "0.1"]
TUNE = ["tune", "--methods", "robult,supervised", "--trials", "3", "--seeds", "2", "--epochs", "2", *TINY]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def studies(out) -> dict[str, optuna.Study]:
    """The studies of OUT/study.db by method."""
    url = f"sqlite:///{out / 'study.db'}"
    found = {}
    for name in optuna.get_all_study_names(storage=url):
        s = optuna.load_study(study_name=name, storage=url)
        found[s.user_attrs["method"]] = s
    return found


def states(study) -> dict[str, int]:
    return tune_mod.state_counts(study)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tune of 2 methods × 3 trials × 2 seeds, recording every Trainer it builds (its data splits)."""
    out = tmp_path_factory.mktemp("tune") / "t"
    built = []

    class Spy(trainer_mod.Trainer):
        def __init__(self, cfg, bundle=None, **kw):
            built.append({"method": cfg.method, "splits": set(bundle.splits), "out_dir": kw.get("out_dir"),
                          "lr": cfg.train.lr})
            super().__init__(cfg, bundle, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "Trainer", Spy)
        proc = run_cli(*TUNE, "--out", out)
    return proc, out, built


def test_same_budget_per_method_and_chosen_params_inside_the_spaces(tuned):
    proc, out, _ = tuned
    assert proc.returncode == 0, proc.stderr
    for m in ("robult", "supervised"):  # a progress line per trial, with the best so far and an ETA
        lines = re.findall(rf"^\[tune\] {m} trial (\d)/3 \(#\d\): val [\d.]+, best [\d.]+ \(#\d\), \d+s; "
                           rf"elapsed [\dhms]+, ETA [\dhms]+$", proc.stderr, re.M)
        assert lines == ["1", "2", "3"]
    found = studies(out)
    assert set(found) == {"robult", "supervised"}
    for m, s in found.items():
        assert states(s) == {"COMPLETE": 3}
        assert re.fullmatch(rf"pid-synth-lf0\.1-{m}-[0-9a-f]{{8}}", s.study_name)
    data = json.loads((out / "tune.json").read_text())
    assert data["methods"] == ["robult", "supervised"] and data["trials"] == 3 and data["tune_seeds"] == [0]
    for m in ("robult", "supervised"):
        summary = data["studies"][m]
        assert summary["trials"] == summary["complete"] == 3
        space = check_search_space(m)
        assert set(summary["best_params"]) == {e[0] for e in space}
        for name, kind, low, high, log in space:
            assert low <= summary["best_params"][name] <= high
        values = [t["value"] for t in summary["trial_list"]]
        assert summary["best_value"] == max(values)
        best = next(t for t in summary["trial_list"] if t["number"] == summary["best_trial"])
        assert data["chosen"][m] == best["params"] == found[m].best_trial.params
    with open(out / "tune.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["robult", "supervised"]
    assert rows[0]["loss.lambda_pu"] and rows[1]["loss.lambda_pu"] == ""  # supervised has no L_PU to tune
    assert float(rows[0]["train.lr"]) == pytest.approx(data["chosen"]["robult"]["train.lr"])


def test_selection_uses_the_validation_split_only(tuned):
    proc, out, built = tuned
    assert proc.returncode == 0, proc.stderr
    trials = [b for b in built if b["out_dir"] is None]
    final = [b for b in built if b["out_dir"] is not None]
    assert len(trials) == 2 * 3 and len(final) == 2 * 2
    assert all("test" not in b["splits"] and "val" in b["splits"] for b in trials)  # the trials never see test
    assert all("test" in b["splits"] for b in final)
    data = json.loads((out / "tune.json").read_text())
    for b in final:  # the final runs train the chosen config
        assert b["lr"] == data["chosen"][b["method"]]["train.lr"]


def test_final_table_has_every_method_paired_by_seed(tuned):
    proc, out, _ = tuned
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^study\s+robult\s+supervised$", proc.stdout, re.M)  # the search summary
    assert "2 seeds, each method at its tuned setting, test accuracy" in proc.stdout
    assert re.search(r"^mean\s+[\d.]+ ± [\d.]+\s+[\d.]+ ± [\d.]+$", proc.stdout, re.M)
    assert "robult - supervised" in proc.stdout
    data = json.loads((out / "tune.json").read_text())
    assert set(data["final"]["summary"]["mean"]) == {"robult", "supervised"}
    assert [r["seed"] for r in data["final"]["runs"]["supervised"]] == [0, 1]
    compare = json.loads((out / "final" / "compare.json").read_text())
    assert compare["tuned_settings"] == data["chosen"]


def test_compare_from_tune_trains_the_chosen_settings(tuned, tmp_path):
    _, out, _ = tuned
    data = json.loads((out / "tune.json").read_text())
    proc = run_cli("compare", "--from-tune", out, "--methods", "supervised", "--seeds", "1", "--epochs", "1",
                   "--threads", "1", "--quiet", "--out", tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    cfg = RunConfig.from_dict(json.loads((tmp_path / "c" / "compare.json").read_text())["config"])
    assert cfg.data.synth_n_train == 120 and cfg.model.d_h == 16  # the tuned base config
    from robult_engine.checkpoint import load_checkpoint
    run = load_checkpoint(tmp_path / "c" / "supervised-seed0" / "best.pt").config
    assert run.train.lr == data["chosen"]["supervised"]["train.lr"]
    assert run.model.dropout == data["chosen"]["supervised"]["model.dropout"]
    proc = run_cli("compare", "--from-tune", out, "--methods", "moddrop", "--threads", "1", "--out", tmp_path / "d")
    assert proc.returncode == 2 and "moddrop was not tuned there" in proc.stderr


def test_a_killed_tune_loses_nothing(tmp_path):
    out = tmp_path / "k"
    argv = [sys.executable, "-m", "robult_engine", "tune", "--methods", "supervised,robult", "--trials", "4",
            "--seeds", "1", "--epochs", "1", *TINY, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    kept = []
    try:
        deadline = time.monotonic() + 180  # generous: the machine may be busy (the kill comes at the first trial)
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "study.db").exists():
                try:
                    kept = [(t.number, t.value, t.params) for s in studies(out).values() for t in s.trials
                            if t.state.name == "COMPLETE"]
                except Exception:  # noqa: BLE001 - the database is being created
                    kept = []
                if kept:
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert kept, f"no trial finished before the deadline (exit {proc.returncode}): {err[-2000:]}"
    before = {k[0]: k for k in [(t.number, t.value, t.params) for s in studies(out).values() for t in s.trials
                                if t.state.name == "COMPLETE" and s.user_attrs["method"] == "supervised"]}
    assert 1 <= len(before) < 4
    rerun = run_cli(*argv[3:])
    assert rerun.returncode == 0, rerun.stderr
    found = studies(out)
    for m in ("supervised", "robult"):
        counts = states(found[m])
        assert counts.get("COMPLETE", 0) == 4 and counts.get("PRUNED", 0) == 0
        assert set(counts) <= {"COMPLETE", "FAIL"}  # a trial the kill left running is failed and trained again
    after = {t.number: (t.number, t.value, t.params) for t in found["supervised"].trials}
    for number, kept_trial in before.items():
        assert after[number] == kept_trial  # the trials stored before the kill are kept as they were
    assert "continues with" in rerun.stderr
    assert json.loads((out / "tune.json").read_text())["studies"]["supervised"]["trials"] == 4


class PruneTrialOne(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.number == 1


def test_a_pruned_trial_stops_its_run_and_counts_in_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(tune_mod, "make_pruner", lambda name: PruneTrialOne())
    out = tmp_path / "p"
    proc = run_cli("tune", "--methods", "supervised", "--trials", "3", "--seeds", "1", "--epochs", "3",
                   "--pruner", "median", *TINY, "--out", out)
    assert proc.returncode == 0, proc.stderr
    s = studies(out)["supervised"]
    assert states(s) == {"COMPLETE": 2, "PRUNED": 1}
    pruned = s.trials[1]
    assert pruned.state.name == "PRUNED" and pruned.user_attrs["epochs_run"] == [1]  # stopped through should_stop
    assert [t.user_attrs["epochs_run"] for t in (s.trials[0], s.trials[2])] == [[3], [3]]
    assert re.search(r"supervised trial 2/3 \(#1\): pruned at epoch 1", proc.stderr)


def test_a_trial_claimed_past_the_budget_is_surplus(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    job = tune_mod.StudyJob(method="supervised", base_json=RunConfig().to_json(), space=COMMON_SPACE,
                            tune_seeds=(0,), n_trials=2, storage_url=url, shared=False, study="s", pruner="none",
                            sampler_seed=0)
    objective = tune_mod.Objective(job, study, study._storage, bundle=None)
    t0, t1 = study.ask(), study.ask()  # two workers running the whole budget
    assert not objective.surplus(t0.number) and not objective.surplus(t1.number)
    t2 = study.ask()
    assert objective.surplus(t2.number)  # a third worker's claim would exceed it
    study.tell(t0, state=optuna.trial.TrialState.FAIL)
    assert not objective.surplus(t2.number)  # a failed trial frees its place in the budget


def test_every_method_has_a_valid_search_space():
    for m in METHOD_NAMES:
        space = check_search_space(m)
        assert space == tuple(tuple(e) for e in method_spec(m).search_space)
        assert {e[0] for e in COMMON_SPACE} <= {e[0] for e in space}


@pytest.mark.parametrize("space, message", [
    ((("train.nope", "float", 0.1, 1.0, False),), "method supervised: search space: train.nope: unknown config field"),
    ((("train.lr", "float", 0.0, 1e-2, True),), "train.lr: log must be True or False, and a log scale needs low > 0"),
    ((("train.lr", "float", 1e-2, 1e-3, True),), "train.lr: low must be below high"),
    ((("loss.st_threshold", "float", 0.5, 1.5, False),), "loss.st_threshold: the config refuses 1.5"),
    ((("data.label_fraction", "float", 0.1, 0.5, False),), "data.label_fraction: the method, the data"),
    ((("model.fusion", "categorical", ("mlp", "nope"), None, False),), "model.fusion: the config refuses 'nope'"),
    ((("train.epochs", "lots", 1, 5, False),), "kind 'lots' is not one of float, int, categorical"),
    ((), "search space: empty"),
])
def test_bad_search_spaces_name_the_method(space, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_search_space("supervised", space)


def test_study_names_change_with_the_config():
    base = RunConfig().replace(**{"data.dataset": "mfeat", "data.label_fraction": 0.05})
    space = check_search_space("robult")
    name = tune_mod.study_name(base, "robult", space, (0,))
    assert re.fullmatch(r"mfeat-lf0\.05-robult-[0-9a-f]{8}", name)
    assert tune_mod.study_name(base.replace(seed=3, **{"train.lr": 1e-3}), "robult", space, (0,)) == name
    assert tune_mod.study_name(base.replace(**{"train.epochs": 5}), "robult", space, (0,)) != name
    assert tune_mod.study_name(base, "robult", space, (0, 1)) != name
    assert tune_mod.study_name(base.replace(**{"loss.kernel": "laplacian"}), "robult", space, (0,)) != name
    # a field only other methods use (self-training's threshold) does not restart Robult's study
    assert tune_mod.study_name(base.replace(**{"loss.st_threshold": 0.8}), "robult", space, (0,)) == name
    assert tune_mod.study_name(base.replace(**{"data.dataset": "/data/my set/"}), "robult", space,
                               (0,)).startswith("my_set-lf0.05-robult-")


def test_bad_inputs_exit_2_with_one_message(tmp_path, monkeypatch):
    out = tmp_path / "bad"
    base = ["tune", "--dataset", "pid-synth", "--threads", "1", "--out", str(out)]
    cases = [
        (["--methods", "robult,nope"], "--methods: unknown method 'nope'"),
        (["--trials", "0"], "--trials: must be at least 1, got 0"),
        (["--storage", "postgresql://nohost/db"], "--storage postgresql://nohost/db: cannot open the study storage"),
        (["--storage", "sqlite:////nonexistent/dir/x.db"],
         "--storage sqlite:////nonexistent/dir/x.db: cannot open the study storage"),
        (["--storage", "postgresql://me:secret@nohost/db"], "--storage postgresql://me:***@nohost/db: cannot open"),
        (["--tune-seeds", "0,x"], "--tune-seeds 0,x: 'x' is not an integer"),
    ]
    for extra, message in cases:
        proc = run_cli(*base, *extra)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)
        assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr and "secret" not in proc.stderr
    spec = methods_mod.METHOD_SPECS["supervised"]
    monkeypatch.setitem(methods_mod.METHOD_SPECS, "supervised", dataclasses.replace(
        spec, search_space=COMMON_SPACE + (("loss.no_such_weight", "float", 0.1, 1.0, False),)))
    proc = run_cli(*base, "--methods", "supervised")
    assert proc.returncode == 2
    assert "error: method supervised: search space: loss.no_such_weight: unknown config field" in proc.stderr
    monkeypatch.setitem(methods_mod.METHOD_SPECS, "supervised", spec)
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    proc = run_cli(*base, "--methods", "supervised")
    assert proc.returncode == 2 and "pip install 'robult-studio[tune]'" in proc.stderr
    assert not out.exists()  # nothing was started


def test_every_study_starts_from_its_methods_default_config(tuned):
    """Trial 0 of every method is its default config (inside the space), so tuning never starts behind the
    default and every method gets that one trial within the same budget."""
    _, out, built = tuned
    default = RunConfig()
    for m, study in studies(out).items():
        first = min(study.trials, key=lambda t: t.number)
        assert first.params["train.lr"] == pytest.approx(default.train.lr), m
        assert first.params["model.dropout"] == pytest.approx(default.model.dropout), m
        later = [t.params["train.lr"] for t in study.trials if t.number > 0]
        assert any(v != pytest.approx(default.train.lr) for v in later), m  # the rest is searched
    assert [b["lr"] for b in built if b["method"] == "robult"][0] == pytest.approx(default.train.lr)


def test_default_trial_skips_values_outside_the_space():
    cfg = RunConfig().replace(**{"train.lr": 0.5})
    params = tune_mod.default_trial(cfg, (("train.lr", "float", 1e-4, 3e-3, True),
                                          ("model.dropout", "float", 0.0, 0.5, False)))
    assert "train.lr" not in params and params["model.dropout"] == pytest.approx(cfg.model.dropout)
