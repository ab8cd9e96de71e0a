"""`robult sweep`, `robult eval --missing` and `robult compare --missing` as a user runs them (subprocesses on a
tiny PID-Synth), plus the transfer check of `robult eval --dataset`."""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import re
import subprocess

import pytest
import torch

from robult_engine.cli import main as cli_main
from robult_engine.data import DatasetInfo, ModalitySpec
from robult_engine.evaluation import transfer_mismatches
from robult_engine.missing import load_masks

TINY = ["--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16", "--set", "model.d_z=8",
        "--set", "model.d_u=8", "--set", "model.d_hidden=16", "--batch-size", "16", "--threads", "1"]
SWEEP = ["sweep", "--methods", "robult,supervised", "--label-fractions", "0.1,0.5", "--missing", "mcar:0,0.5",
         "--seeds", "2", "--epochs", "1", *TINY]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`robult ARGS` in this process (a subprocess would spend most of a test importing torch again)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def sweep_one(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "one"
    return run_cli(*SWEEP, "--out", str(out)), out


def cell_seed(data, lf, label, method, seed):
    return data["cells"][lf][label]["methods"][method]["seeds"][seed]


def test_sweep_writes_table_csv_json_png_and_masks(sweep_one):
    proc, out = sweep_one
    assert proc.returncode == 0, proc.stderr
    # progress with an ETA on stderr, one line per training
    assert len(re.findall(r"^\[\d/8\] (robult|supervised) lf 0\.[15] seed [01]: accuracy mcar:0 [\d.]+  mcar:0\.5 "
                          r"[\d.]+ .*ETA \d+s\)$", proc.stderr, re.M)) == 8
    for lf in ("0.1", "0.5"):
        block = proc.stdout.split(f"label fraction {lf}, 2 seeds")[1]
        assert re.search(r"^mcar:0 \(0% missing\)\s+[\d.]+ ± [\d.]+\s+[\d.]+ ± [\d.]+$", block, re.M)
        assert re.search(r"^mcar:0\.5 \(\d+% missing\)\s+[\d.]+ ± [\d.]+", block, re.M)
        assert re.search(r"robult - supervised", block)
    for name in ("sweep.csv", "sweep.json", "sweep.png", "masks.npz"):
        assert (out / name).is_file(), name
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "sweep.png").stat().st_size > 10_000
    data = json.loads((out / "sweep.json").read_text())
    assert data["methods"] == ["robult", "supervised"] and data["label_fractions"] == [0.1, 0.5]
    assert data["missing"] == ["mcar:0", "mcar:0.5"] and data["rates"] == {"mcar:0": 0.0, "mcar:0.5": 0.5}
    assert data["realised_missing"]["mcar:0"] == 0 and 0.3 < data["realised_missing"]["mcar:0.5"] < 0.5
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2  # label fractions × mask settings × methods
    for r in rows:
        seeds = [float(r["seed0"]), float(r["seed1"])]
        assert float(r["mean"]) == pytest.approx(sum(seeds) / 2, abs=1e-6)
        assert float(r["std"]) == pytest.approx(abs(seeds[0] - seeds[1]) / 2 ** 0.5, abs=1e-6)
        cell = data["cells"][r["label_fraction"]][r["missing"]]
        assert cell["methods"][r["method"]]["seeds"] == pytest.approx(seeds, abs=1e-6)
    # paired differences: robult minus supervised, seed by seed
    for lf, cells in data["cells"].items():
        for lab, cell in cells.items():
            diffs = [a - b for a, b in zip(cell["methods"]["robult"]["seeds"], cell["methods"]["supervised"]["seeds"])]
            assert cell["paired_vs_first"]["supervised"]["mean"] == pytest.approx(sum(diffs) / 2)
    runs = data["runs"]["0.1"]["robult"]
    assert [r["seed"] for r in runs] == [0, 1] and runs[1]["run_dir"].endswith("robult-seed1")
    assert runs[1]["missing"]["mcar:0.5"]["accuracy"] == cell_seed(data, "0.1", "mcar:0.5", "robult", 1)
    assert set(runs[1]["test_subsets"]) == {"m0", "m1", "m2", "m0+m1", "m0+m2", "m1+m2", "m0+m1+m2"}
    # every method's masks are the file's masks; mcar:0 is the data's own mask
    masks, meta = load_masks(out / "masks.npz", n=64, modality_names=("m0", "m1", "m2"))
    assert list(masks) == ["mcar:0", "mcar:0.5"] and masks["mcar:0"].all() and meta["split"] == "test"
    # identical labeled indices for the methods of one (label fraction, seed)
    a = torch.load(out / "lf0.1" / "robult-seed1" / "best.pt", weights_only=True)
    b = torch.load(out / "lf0.1" / "supervised-seed1" / "best.pt", weights_only=True)
    key = next(k for k in a if "labeled" in k)
    assert torch.equal(a[key], b[key])


def test_the_numbers_regenerate_from_the_saved_masks(sweep_one, tmp_path):
    _, out = sweep_one
    data = json.loads((out / "sweep.json").read_text())
    js = tmp_path / "again.json"
    # seed 0: PID-Synth is generated with the data seed, and a sweep's runs all use the seed-0 data
    proc = run_cli("eval", str(out / "lf0.5" / "robult-seed0" / "best.pt"), "--masks", str(out / "masks.npz"),
                      "--json", str(js), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(js.read_text())["results"]
    for lab in ("mcar:0", "mcar:0.5"):
        assert again[lab]["accuracy"] == pytest.approx(data["cells"]["0.5"][lab]["methods"]["robult"]["seeds"][0])
    # a seed-1 checkpoint's own config generates other PID-Synth data: the masks are refused, not misapplied
    proc = run_cli("eval", str(out / "lf0.5" / "robult-seed1" / "best.pt"), "--masks", str(out / "masks.npz"),
                      "--threads", "1")
    assert proc.returncode == 2 and "masks.npz: the masks were drawn on other data" in proc.stderr


def test_sweep_in_two_processes_gives_the_same_results(sweep_one, tmp_path):
    _, out_one = sweep_one
    # the (label fraction 0.5, seed 0) runs of the sweep, both at once in two processes
    args = [{"0.1,0.5": "0.5", "2": "1"}.get(a, a) for a in SWEEP]
    assert args[args.index("--seeds") + 1] == "1"
    proc = run_cli(*args, "--out", str(tmp_path / "two"), "--jobs", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    a = json.loads((out_one / "sweep.json").read_text())["cells"]["0.5"]
    b = json.loads((tmp_path / "two" / "sweep.json").read_text())["cells"]
    assert list(b) == ["0.5"]
    for lab in ("mcar:0", "mcar:0.5"):
        for m in ("robult", "supervised"):
            assert b["0.5"][lab]["methods"][m]["seeds"] == a[lab]["methods"][m]["seeds"][:1]


def test_sweep_with_a_grid_reports_every_setting_and_marks_the_choice(tmp_path):
    out = tmp_path / "grid"
    proc = run_cli("sweep", "--methods", "robult,supervised", "--label-fractions", "0.2", "--missing", "exclusive",
                      "--missing", "mcar:0.3", "--seeds", "1", "--epochs", "1", "--grid", "loss.tau=0.05,0.2",
                      "--out", str(out), "--quiet", *TINY, "--set", "data.synth_n_train=60")
    assert proc.returncode == 0, proc.stderr
    assert "per setting (* each method's choice)" in proc.stdout and "each method at its chosen setting" in proc.stdout
    assert "[tau=0.05]" in proc.stdout and "[tau=0.2]" in proc.stdout
    data = json.loads((out / "sweep.json").read_text())
    assert data["missing"] == ["exclusive", "mcar:0.3"] and len(data["grid_cells"]) == 2
    for m in ("robult", "supervised"):
        cells = [c for c in data["grid_cells"] if c["label_fraction"] == 0.2]
        best = max(cells, key=lambda c: c["cells"]["exclusive"]["methods"][m]["val_score"])  # validation only
        assert data["chosen_setting"][f"{m}@0.2"] == best["setting"] and m in best["chosen_by"]
        assert data["cells"]["0.2"]["exclusive"]["methods"][m] == best["cells"]["exclusive"]["methods"][m]
    assert data["realised_missing"]["exclusive"] == pytest.approx(2 / 3)  # 3 modalities, one kept


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (an optional extra: pip install 'robult-studio[ray]')")
def test_sweep_on_local_ray_matches_one_process(engine_cli, tmp_path):
    args = ["sweep", "--methods", "robult,supervised", "--label-fractions", "0.2", "--missing", "mcar:0,0.5",
            "--seeds", "1", "--epochs", "1", "--quiet", *TINY]
    one = engine_cli(*args, "--out", str(tmp_path / "one"), "--jobs", "1", timeout=300)
    ray = engine_cli(*args, "--out", str(tmp_path / "ray"), "--ray", "--jobs", "2", timeout=600)
    assert one.returncode == 0 and ray.returncode == 0, ray.stderr
    a = json.loads((tmp_path / "one" / "sweep.json").read_text())
    b = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert a["cells"] == b["cells"]


# --- eval and compare under missing modalities ---------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    proc = run_cli("train", "--method", "robult", "--epochs", "1", "--out", str(out), "--quiet",
                      "--label-fraction", "0.1", *TINY)
    assert proc.returncode == 0, proc.stderr
    return out / "best.pt"


def test_eval_under_every_mechanism_writes_the_masks_beside_the_results(checkpoint, tmp_path):
    out = tmp_path / "ev"
    proc = run_cli("eval", str(checkpoint), "--missing", "mcar:0.25,0.5", "--missing", "mnar-class:0.8/0.1@0+1",
                      "--missing", "mnar-value:0.3", "--missing", "exclusive", "--missing", "subsets",
                      "--mask-seed", "5", "--out", str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "mask seed 5 (rates are fractions missing" in proc.stdout
    labels = ["mcar:0.25", "mcar:0.5", "mnar-class:0.8/0.1@0+1", "mnar-value:0.3", "exclusive", "subset:m0",
              "subset:m1", "subset:m2", "subset:m0+m1", "subset:m0+m2", "subset:m1+m2", "subset:m0+m1+m2"]
    for lab in labels:
        assert re.search(rf"^{re.escape(lab)} \(\d+% missing\)\s+[\d.]+\s+[\d.]+$", proc.stdout, re.M), lab
    result = json.loads((out / "missing.json").read_text())
    assert list(result["results"]) == labels and result["mask_seed"] == 5
    masks, meta = load_masks(out / "masks.npz", n=64, modality_names=("m0", "m1", "m2"))
    assert list(masks) == labels and meta["mask_seed"] == 5
    # the subset settings agree with the subset table the training wrote (same test split, same code path)
    table = json.loads((checkpoint.parent / "result.json").read_text())["test"]
    for name in ("m0", "m0+m2", "m0+m1+m2"):
        assert result["results"][f"subset:{name}"]["accuracy"] == pytest.approx(table[name]["accuracy"])
    # --json alone puts the masks next to it
    js = tmp_path / "r.json"
    assert run_cli("eval", str(checkpoint), "--missing", "mcar:0.5", "--json", str(js), "--threads", "1"
                      ).returncode == 0
    assert (tmp_path / "r.masks.npz").is_file() and json.loads(js.read_text())["masks_file"].endswith("r.masks.npz")


@pytest.mark.parametrize("args, message", [
    (["--missing", "mcar:1.0"], "--missing mcar:1.0: a rate must be in [0, 1) (the fraction of entries missing)"),
    (["--missing", "mcar:0.5,1.2"], "a rate must be in [0, 1)"),
    (["--missing", "drop:0.5"], "unknown mechanism 'drop'; one of mcar, mnar-class, mnar-value"),
    (["--missing", "mcar:0.1/0.2"], "mcar:0.1/0.2: 2 per-modality rates, but the dataset has 3 modalities"),
])
def test_eval_bad_missing_specs_exit_2_with_a_clear_message(checkpoint, args, message):
    proc = run_cli("eval", str(checkpoint), *args, "--threads", "1")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_eval_refuses_a_mask_file_of_the_wrong_shape(checkpoint, tmp_path):
    from robult_engine.missing import save_masks
    bad = save_masks(tmp_path / "m.npz", {"mcar:0.5": torch.ones(10, 3, dtype=torch.bool)},
                     modality_names=("m0", "m1", "m2"), split="test", seed=0)
    proc = run_cli("eval", str(checkpoint), "--masks", str(bad), "--threads", "1")
    assert proc.returncode == 2 and "m.npz: masks of 10 samples × 3 modalities, the split has 64 samples" in proc.stderr
    other = save_masks(tmp_path / "o.npz", {"exclusive": torch.ones(64, 2, dtype=torch.bool)},
                       modality_names=("image", "audio"), split="test", seed=0)
    proc = run_cli("eval", str(checkpoint), "--masks", str(other), "--threads", "1")
    assert proc.returncode == 2 and "masks made for modalities (image, audio), the data has (m0, m1, m2)" in proc.stderr


def test_compare_gives_every_method_the_same_masks(tmp_path):
    out = tmp_path / "cmp"
    proc = run_cli("compare", "--methods", "robult,supervised", "--seeds", "2", "--epochs", "1", "--missing",
                      "mcar:0.25,0.75", "--missing", "exclusive", "--out", str(out), "--quiet",
                      "--label-fraction", "0.1", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "under missing modalities (test split, same masks for every method" in proc.stdout
    assert re.search(r"^mcar:0\.75 \(\d+% missing\)\s+[\d.]+ ± [\d.]+\s+[\d.]+ ± [\d.]+$", proc.stdout, re.M)
    data = json.loads((out / "compare.json").read_text())
    sec = data["missing"]
    assert list(sec["summary"]) == ["mcar:0.25", "mcar:0.75", "exclusive"] and (out / "masks.npz").is_file()
    for m in ("robult", "supervised"):
        assert [sorted(r["missing"]) for r in data["runs"][m]] == [sorted(sec["summary"])] * 2
    diffs = [a["missing"]["exclusive"]["accuracy"] - b["missing"]["exclusive"]["accuracy"]
             for a, b in zip(data["runs"]["robult"], data["runs"]["supervised"])]
    assert sec["paired_vs_first"]["exclusive"]["supervised"]["mean"] == pytest.approx(sum(diffs) / 2)


# --- zero-shot transfer ------------------------------------------------------------------------------------


def _info(mods, task="single-label", classes=("a", "b")):
    return DatasetInfo("x", tuple(ModalitySpec(*m) for m in mods), task, classes)


def test_transfer_mismatches_name_what_differs():
    base = _info([("audio", "sequence", (92, 13)), ("image", "image", (1, 8, 8))])
    assert transfer_mismatches(base, base) == []
    # a sequence's length and a text's width are padded: they may differ
    assert transfer_mismatches(base, _info([("audio", "sequence", (50, 13)), ("image", "image", (1, 8, 8))])) == []
    got = transfer_mismatches(base, _info([("audio", "sequence", (92, 20)), ("image", "vector", (64,))]))
    assert got == ["modality 'audio': feature width (13,) in training, (20,) in the data",
                   "modality 'image': kind image in training, vector in the data"]
    got = transfer_mismatches(base, _info([("image", "image", (1, 8, 8)), ("audio", "sequence", (92, 13))]))
    assert got == ["modalities: trained on (audio, image), the data has (image, audio)"]
    got = transfer_mismatches(base, _info([("audio", "sequence", (92, 13)), ("image", "image", (3, 8, 8))],
                                          classes=("a", "b", "c")))
    assert got == ["modality 'image': shape (1, 8, 8) in training, (3, 8, 8) in the data",
                   "classes: 2 in training (a, b), 3 in the data (a, b, c)"]
    got = transfer_mismatches(base, _info([("audio", "sequence", (92, 13)), ("image", "image", (1, 8, 8))],
                                          task="regression", classes=("score",)))
    assert got == ["task: single-label in training, regression in the data"]


def test_eval_on_another_dataset_says_what_does_not_match(checkpoint):
    proc = run_cli("eval", str(checkpoint), "--dataset", "av-digits", "--threads", "1")
    assert proc.returncode == 2, proc.stderr
    assert ("a model trained on pid-synth cannot be evaluated on av-digits: modalities: trained on (m0, m1, m2), "
            "the data has (image, audio); classes: 8 in training") in proc.stderr


def test_sweep_resume_keeps_finished_runs_and_trains_the_rest(sweep_one, tmp_path, monkeypatch):
    """`--resume` takes each run whose sweep_run.json holds the same configuration and trains only the others;
    the report equals the uninterrupted sweep's."""
    import shutil
    import robult_engine.trainer as trainer_mod
    proc, out = sweep_one
    assert proc.returncode == 0, proc.stderr
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for f in ("sweep.json", "sweep.csv", "sweep.png"):
        (copy / f).unlink()
    shutil.rmtree(copy / "lf0.5" / "supervised-seed1")  # an interrupted sweep: one run never finished
    (copy / "lf0.1" / "robult-seed0" / "sweep_run.json").write_text(
        (copy / "lf0.1" / "robult-seed0" / "sweep_run.json").read_text().replace('"epochs": 1', '"epochs": 7'))
    trained = []
    real_run = trainer_mod.Trainer.run

    def counting_run(self):
        trained.append((self.cfg.method, self.cfg.data.label_fraction, self.cfg.seed))
        return real_run(self)
    monkeypatch.setattr(trainer_mod.Trainer, "run", counting_run)
    again = run_cli(*SWEEP, "--out", str(copy), "--resume")
    assert again.returncode == 0, again.stderr
    # the missing run, and the one whose recorded configuration differs, are trained; the other six are not
    assert sorted(trained) == [("robult", 0.1, 0), ("supervised", 0.5, 1)]
    assert "resumed 6 finished run(s)" in again.stderr
    a = json.loads((out / "sweep.json").read_text())
    b = json.loads((copy / "sweep.json").read_text())
    assert b["resumed_runs"] == 6
    assert a["cells"] == b["cells"]  # training is deterministic per seed, so the grid is the same


def test_sweep_object_cancels_and_resumes(tmp_path):
    """The engine API the app's background sweep drives: `run_serial` stops when asked, records nothing for the
    cancelled run, and a new Sweep on the folder with resume=True continues from the recorded runs."""
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.sweep import Sweep
    args = build_parser().parse_args(["train", "--epochs", "1", *TINY])
    base = config_from_args(args, "robult")
    sw = Sweep(base, ["robult", "supervised"], [0.5], tmp_path, seeds=1, missing=["mcar:0,0.5"])
    seen = []
    stop = {"now": False}

    def on_run(k, key, run):
        seen.append(key)
        stop["now"] = True  # cancel after the first recorded run
    assert sw.run_serial(should_stop=lambda: stop["now"], on_run=on_run) is False
    assert len(seen) == 1 and len(sw.pending()) == 1
    with pytest.raises(Exception, match="not complete: 1 of 2"):
        sw.finish(print_tables=False)
    sw2 = Sweep(base, ["robult", "supervised"], [0.5], tmp_path, seeds=1, missing=["mcar:0,0.5"], resume=True)
    assert sw2.resumed == seen and sw2.pending() == [k for k in sw2.jobs if k not in seen]
    assert sw2.run_serial() is True
    payload = sw2.finish(print_tables=False)
    assert set(payload["cells"]["0.5"]["mcar:0.5"]["methods"]) == {"robult", "supervised"}
    assert (tmp_path / "sweep.json").is_file() and payload["resumed_runs"] == 1


def test_a_rerun_into_the_same_folder_forgets_the_old_records(sweep_one, tmp_path):
    """A sweep that trains a run again first removes that run's sweep_run.json, so an interruption can never
    leave an older record beside a half-overwritten checkpoint for --resume to take; unreadable records and
    checkpoints are trained again instead of stopping the resume."""
    import shutil
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.sweep import RUN_RECORD, Sweep
    proc, out = sweep_one
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    args = build_parser().parse_args(SWEEP[:1] + SWEEP[1:] + ["--out", str(copy)])
    base = config_from_args(args, "robult")
    kw = dict(seeds=2, missing=["mcar:0,0.5"])
    (copy / "lf0.1" / "robult-seed1" / RUN_RECORD).write_text("{broken")
    (copy / "lf0.5" / "robult-seed0" / "best.pt").write_bytes(b"not a checkpoint")
    sw = Sweep(base, ["robult", "supervised"], [0.1, 0.5], copy, resume=True, **kw)
    assert len(sw.resumed) == 6 and sorted(k[1:] for k in sw.pending()) == [(0, 1, "robult"), (1, 0, "robult")]
    assert not (copy / "lf0.1" / "robult-seed1" / RUN_RECORD).exists()  # about to be trained: no stale record
    assert not (copy / "lf0.5" / "robult-seed0" / RUN_RECORD).exists()
    fresh = Sweep(base, ["robult", "supervised"], [0.1, 0.5], copy, **kw)  # no --resume: every run trains again
    assert len(fresh.pending()) == 8 and not list(copy.rglob(RUN_RECORD))


def test_x_positions_use_the_rate_only_where_it_orders_the_settings():
    from robult_engine.sweep import x_positions
    nan = float("nan")
    assert x_positions(["mcar:0.5", "mcar:0", "mcar:0.25"], {"mcar:0.5": 0.5, "mcar:0": 0.0, "mcar:0.25": 0.25}) \
        == ([0.5, 0.0, 0.25], True)
    assert x_positions(["mnar-class:0.8/0.1", "mnar-class:0.8/0.3"],
                       {"mnar-class:0.8/0.1": 0.8, "mnar-class:0.8/0.3": 0.8}) == ([0.0, 1.0], False)
    assert x_positions(["mcar:0", "mnar-value:0.5"], {"mcar:0": 0.0, "mnar-value:0.5": 0.5})[1] is False
    assert x_positions(["exclusive", "mcar:0.2/0.7"], {"exclusive": nan, "mcar:0.2/0.7": nan}) == ([0.0, 1.0], False)


def test_the_sweep_report_is_written_without_matplotlib(tmp_path, monkeypatch):
    """matplotlib is the optional `plot` extra: without it the tables and the JSON are written, and the PNG is
    skipped with a message (the app's Sweeps tab draws its own plots)."""
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "s"
    proc = run_cli("sweep", "--methods", "supervised", "--label-fractions", "0.5", "--missing", "mcar:0",
                   "--seeds", "1", "--epochs", "1", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "sweep.png not drawn: matplotlib is not installed" in proc.stderr
    assert (out / "sweep.csv").is_file() and not (out / "sweep.png").exists()
    assert json.loads((out / "sweep.json").read_text())["plot"] == ""


def test_a_resume_stopped_while_taking_back_runs_leaves_every_record(sweep_one, tmp_path):
    import shutil
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.sweep import RUN_RECORD, Sweep
    _proc, out = sweep_one
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    base = config_from_args(build_parser().parse_args(SWEEP + ["--out", str(copy)]), "robult")
    seen = []
    calls = iter([False, False, True])  # stop after two runs were looked at
    sw = Sweep(base, ["robult", "supervised"], [0.1, 0.5], copy, seeds=2, missing=["mcar:0,0.5"], resume=True,
               should_stop=lambda: next(calls), on_resume_progress=lambda k, n: seen.append((k, n)))
    assert sw.stopped and len(sw.resumed) == 2 and seen == [(0, 8), (1, 8)]
    assert len(list(copy.rglob(RUN_RECORD))) == 8  # nothing forgotten: the next resume takes them all


def test_resume_refuses_a_record_that_points_outside_its_run_or_at_another_run(sweep_one, tmp_path, monkeypatch):
    """A `sweep_run.json` is data anyone could have edited: its checkpoint must be a file of the run's own folder
    and hold that run's configuration. A record pointing at another run's checkpoint (which would report that
    run's numbers as this one's) or at a checkpoint that names outside encoder code is trained again, and no
    module is imported."""
    import shutil
    from robult_engine.checkpoint import load_checkpoint, save_checkpoint
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.sweep import RUN_RECORD, Sweep
    proc, out = sweep_one
    assert proc.returncode == 0, proc.stderr
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    base = config_from_args(build_parser().parse_args(SWEEP[:1] + SWEEP[1:] + ["--out", str(copy)]), "robult")

    def edit_record(run: str, checkpoint: str) -> None:
        path = copy / "lf0.1" / run / RUN_RECORD
        rec = json.loads(path.read_text())
        rec["checkpoint"] = checkpoint
        path.write_text(json.dumps(rec))
    # 1. supervised's record points at robult's checkpoint through '..'
    edit_record("supervised-seed0", "../robult-seed0/best.pt")
    # 2. supervised seed 1: a file inside its folder, but a copy of robult's checkpoint (another configuration)
    shutil.copy(copy / "lf0.1" / "robult-seed1" / "best.pt", copy / "lf0.1" / "supervised-seed1" / "other.pt")
    edit_record("supervised-seed1", "other.pt")
    # 3. robult seed 0: a checkpoint of the same run, rewritten to name an encoder module nobody named
    marker = tmp_path / "imported.txt"
    (tmp_path / "planted_encoder.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "from robult_engine.models.encoders import VectorEncoder\n"
        "def make(shape, d_h, dropout):\n    return VectorEncoder(shape[-1], d_h, dropout)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ck = load_checkpoint(copy / "lf0.1" / "robult-seed0" / "best.pt")
    save_checkpoint(copy / "lf0.1" / "robult-seed0" / "planted.pt", model_state=ck.model_state,
                    config=ck.config.replace(**{"model.encoders": ("m1=planted_encoder:make",)}), info=ck.info,
                    labeled_indices=ck.labeled_indices, fingerprint=ck.fingerprint, memory_state=ck.memory_state,
                    epoch=ck.epoch, metrics=ck.metrics)
    edit_record("robult-seed0", "planted.pt")
    # 4. robult seed 1: an absolute path
    edit_record("robult-seed1", str(copy / "lf0.5" / "robult-seed1" / "best.pt"))

    sw = Sweep(base, ["robult", "supervised"], [0.1, 0.5], copy, seeds=2, missing=["mcar:0,0.5"], resume=True)
    refused = sorted(k[2:] for k in sw.retrained)
    assert refused == [(0, "robult"), (0, "supervised"), (1, "robult"), (1, "supervised")], sw.retrained
    assert sorted(k[1:] for k in sw.pending()) == [(0, 0, "robult"), (0, 0, "supervised"), (0, 1, "robult"),
                                                    (0, 1, "supervised")]
    assert len(sw.resumed) == 4  # the label fraction 0.5 runs, untouched
    assert not marker.exists()  # nothing the sweep did not name was imported
    reasons = "\n".join(sw.retrained.values())
    assert "not a file of the run's folder" in reasons and "another configuration" in reasons


# --- label fractions and grid values that must stay apart ------------------------------------------------------


def test_label_fractions_that_print_alike_get_their_own_folders_and_cells(tmp_path, pid_bundle):
    """`:g` shows 0.5 and 0.5000001 alike: each distinct fraction gets its own run folder, report cell and CSV
    rows; ordinary fractions keep their short names (so existing sweep folders still resume)."""
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.sweep import Sweep, fraction_label
    assert [fraction_label(v) for v in (0.05, 0.2, 1.0, 0.1, 1e-05)] == ["0.05", "0.2", "1", "0.1", "1e-05"]
    assert fraction_label(0.5000001) == "0.5000001" and fraction_label(0.1 + 1e-12) == repr(0.1 + 1e-12)
    base = config_from_args(build_parser().parse_args(["train", "--epochs", "1", *TINY]), "supervised")
    plain = Sweep(base, ["supervised"], [0.05, 0.2, 1.0], tmp_path / "plain", seeds=1, missing=["mcar:0"],
                  bundle=pid_bundle)
    assert sorted({p.parent.name for p in plain.run_dirs.values()}) == ["lf0.05", "lf0.2", "lf1"]
    out = tmp_path / "close"
    proc = run_cli("sweep", "--methods", "supervised", "--label-fractions", "0.5,0.5000001", "--missing", "mcar:0",
                   "--seeds", "1", "--epochs", "1", "--quiet", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "lf0.5" / "supervised-seed0" / "best.pt").is_file()
    assert (out / "lf0.5000001" / "supervised-seed0" / "best.pt").is_file()
    data = json.loads((out / "sweep.json").read_text())
    assert list(data["cells"]) == ["0.5", "0.5000001"] and list(data["runs"]) == ["0.5", "0.5000001"]
    with open(out / "sweep.csv") as f:
        assert [r["label_fraction"] for r in csv.DictReader(f)] == ["0.5", "0.5000001"]


@pytest.mark.parametrize("args, message", [
    (["--label-fractions", "0.1,0.1"], "--label-fractions 0.1,0.1: 0.1 is given twice"),
    (["--label-fractions", "0.2,0.20"], "--label-fractions 0.2,0.20: 0.20 is given twice"),
    (["--grid", "model.dropout=0.1,0.1"], "--grid model.dropout=0.1,0.1: 0.1 is given twice"),
    (["--grid", "train.labeled_per_batch=4,4.0"], "--grid train.labeled_per_batch=4,4.0: 4.0 is given twice"),
])
def test_a_value_given_twice_is_refused(tmp_path, args, message):
    proc = run_cli("sweep", "--methods", "supervised", "--missing", "mcar:0", "--seeds", "1", "--epochs", "1",
                   *TINY, *args, "--out", str(tmp_path / "s"))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "s").exists()
    if args[0] == "--grid":  # compare reads its grid the same way
        proc = run_cli("compare", "--methods", "supervised", "--seeds", "1", "--epochs", "1", *TINY, *args,
                       "--out", str(tmp_path / "c"))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_the_sweep_object_refuses_a_fraction_given_twice(tmp_path, pid_bundle):
    from robult_engine.cli import build_parser, config_from_args
    from robult_engine.config import ConfigError
    from robult_engine.sweep import Sweep
    base = config_from_args(build_parser().parse_args(["train", "--epochs", "1", *TINY]), "supervised")
    with pytest.raises(ConfigError, match="--label-fractions: 0.1 is given twice"):
        Sweep(base, ["supervised"], [0.1, 0.5, 0.1], tmp_path, seeds=1, missing=["mcar:0"], bundle=pid_bundle)


# --- stopping a parallel sweep -----------------------------------------------------------------------------------


def _workers_of(pid: int) -> list[int]:
    """The multiprocessing workers among a process's children (not its resource tracker)."""
    from pathlib import Path
    kids = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(x) for x in children.read_text().split()]
        except OSError:
            pass
    out = []
    for k in kids:
        try:
            if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                out.append(k)
        except OSError:
            pass
    return out


def _running(pid: int) -> bool:
    from pathlib import Path
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="reads the process tree in /proc")
def test_sigterm_of_a_parallel_sweep_ends_its_workers_and_says_how_to_resume(tmp_path):
    import os
    import signal
    import sys
    import time
    from pathlib import Path
    out = tmp_path / "s"
    err_file = open(tmp_path / "stderr", "w")  # a file, not a pipe: workers left behind would hold a pipe open
    proc = subprocess.Popen(
        [sys.executable, "-m", "robult_engine", "sweep", "--methods", "robult,supervised", "--label-fractions", "0.5",
         "--missing", "mcar:0", "--seeds", "1", "--epochs", "100000", "--patience", "0", "--jobs", "2", *TINY,
         "--out", str(out)],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL, stderr=err_file,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while True:  # both workers exist and are training
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "the workers never started training"
            workers = _workers_of(proc.pid)
            if len(workers) == 2 and all((out / "lf0.5" / f"{m}-seed0" / "metrics.jsonl").exists()
                                         for m in ("robult", "supervised")):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        stderr = (tmp_path / "stderr").read_text()
        deadline = time.monotonic() + 10
        while any(_running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _running(w)], "workers still training after the sweep was terminated"
        assert proc.returncode == 143, stderr
        assert f"the runs that finished are kept in {out}" in stderr and "--resume" in stderr
        assert "Traceback" not in stderr
    finally:
        for w in workers:
            if _running(w):
                os.kill(w, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err_file.close()


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_ctrl_c_of_a_parallel_run_terminates_the_pool_and_says_what_is_kept(tmp_path, monkeypatch, command):
    import robult_engine.sweep as sweep_mod

    class Pool:  # stands in for the worker pool: Ctrl+C arrives while the parent waits for a result
        terminated = joined = False

        def __init__(self, n):
            pass

        def imap_unordered(self, fn, work):
            raise KeyboardInterrupt

        def close(self):
            pass

        def terminate(self):
            Pool.terminated = True

        def join(self):
            Pool.joined = True
    monkeypatch.setattr(sweep_mod, "ray_kwargs", lambda args: {"pool_factory": Pool})
    extra = ["--label-fractions", "0.5", "--missing", "mcar:0"] if command == "sweep" else []
    out = tmp_path / command
    proc = run_cli(command, "--methods", "supervised", "--seeds", "1", "--epochs", "1", "--jobs", "2", *extra, *TINY,
                   "--out", str(out))
    assert proc.returncode == 130 and Pool.terminated and Pool.joined
    assert f"interrupted: the runs that finished are kept in {out}" in proc.stderr
    assert ("--resume" in proc.stderr) == (command == "sweep")
