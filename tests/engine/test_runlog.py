"""Run logs: every run with an out_dir writes metrics.jsonl (one strict-JSON line per epoch, the same numbers as
the events), resuming never duplicates an epoch, TensorBoard event files when asked (skipped without
tensorboardX), and `robult compare` leaves one log per run folder."""
from __future__ import annotations

import json
import struct
import sys

import pytest

from robult_engine.events import EpochEnded, Failed, Finished, StepEnded
from robult_engine.runlog import RUNLOG_FILE, RunLog, epoch_record, read_run_log
from robult_engine.trainer import Trainer

SUBSETS = ["m0", "m1", "m2", "m0+m1", "m0+m2", "m1+m2", "m0+m1+m2"]


def strict_lines(path):
    """Every line parsed as strict JSON (NaN / Infinity refused)."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def train(cfg, bundle, **kw):
    events = []
    final = Trainer(cfg, bundle, callbacks=[events.append], **kw).run()
    return final, events


def test_every_epoch_is_a_line_with_the_events_numbers(make_cfg, pid_bundle, tmp_path):
    final, events = train(make_cfg(**{"train.epochs": 3}), pid_bundle, out_dir=tmp_path)
    assert isinstance(final, Finished), final
    lines = strict_lines(tmp_path / RUNLOG_FILE)
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    steps = [e for e in events if isinstance(e, StepEnded)]
    assert [r["epoch"] for r in lines] == [0, 1, 2] == [e.epoch for e in epochs]
    for rec, ev in zip(lines, epochs):
        assert rec["val"] == ev.val_metrics and set(rec["val"]) == set(SUBSETS)
        assert rec["val_score"] == ev.val_score and rec["is_best"] == ev.is_best
        assert rec["train"] == ev.train_losses and {"sup", "pu", "rec", "total"} <= set(rec["train"])
        assert rec["z_norm"] == ev.z_norm and rec["u_norm"] == ev.u_norm and rec["rec_error"] == ev.rec_error
        assert set(rec["z_norm"]) == {"m0", "m1", "m2"}
        assert rec["kappa_mean"] == ev.pu_weight_mean and len(rec["kappa_hist"]) == 20
        assert rec["elapsed_s"] == ev.elapsed_s and rec["method"] == "robult" and rec["epochs"] == 3
    last_step = [s for s in steps if s.epoch == 2][-1]
    assert lines[-1]["step"] == last_step.global_step and lines[-1]["lr"] == last_step.lr
    assert read_run_log(tmp_path) == lines


def test_not_a_number_is_null(make_cfg, pid_bundle, tmp_path):
    """The supervised baseline has no pseudo-labels (nan in the event): the line says null, still strict JSON."""
    final, events = train(make_cfg(method="supervised", **{"train.epochs": 1}), pid_bundle, out_dir=tmp_path)
    assert isinstance(final, Finished), final
    (rec,) = strict_lines(tmp_path / RUNLOG_FILE)
    assert rec["pseudo_label_acc"] is None and rec["kappa_mean"] is None
    ev = next(e for e in events if isinstance(e, EpochEnded))
    assert epoch_record(ev)["pseudo_label_acc"] is None


def test_resume_appends_without_duplicate_epochs(make_cfg, pid_bundle, tmp_path):
    cfg = make_cfg(**{"train.epochs": 3})
    steps = {"n": 0}

    def stop_in_second_epoch() -> bool:
        steps["n"] += 1
        return steps["n"] > 10  # 8 steps per epoch: stops inside epoch 1
    final = Trainer(cfg, pid_bundle, out_dir=tmp_path, should_stop=stop_in_second_epoch).run()
    assert isinstance(final, Finished) and final.cancelled and final.epochs_run == 1
    assert [r["epoch"] for r in read_run_log(tmp_path)] == [0]
    # a line of an epoch that never reached last.pt (killed between the two), and a torn last line
    with open(tmp_path / RUNLOG_FILE, "a") as f:
        f.write(json.dumps({**read_run_log(tmp_path)[0], "epoch": 1}) + "\n" + '{"epoch": 2, "val')
    final = Trainer(cfg, pid_bundle, out_dir=tmp_path, resume_from=tmp_path / "last.pt").run()
    assert isinstance(final, Finished), final
    lines = strict_lines(tmp_path / RUNLOG_FILE)
    assert [r["epoch"] for r in lines] == [0, 1, 2]

    # resumed into another folder: the log starts with the history of the folder it resumes from
    other = tmp_path / "continued"
    final = Trainer(cfg.replace(**{"train.epochs": 4}), pid_bundle, out_dir=other,
                    resume_from=tmp_path / "last.pt").run()
    assert isinstance(final, Finished), final
    assert [r["epoch"] for r in read_run_log(other)] == [0, 1, 2, 3]
    assert read_run_log(other)[:3] == lines


def test_a_fresh_run_in_a_used_folder_starts_a_new_log(make_cfg, pid_bundle, tmp_path):
    cfg = make_cfg(**{"train.epochs": 2})
    train(cfg, pid_bundle, out_dir=tmp_path)
    train(cfg.replace(**{"train.epochs": 1}), pid_bundle, out_dir=tmp_path)
    assert [r["epoch"] for r in read_run_log(tmp_path)] == [0]


def test_no_out_dir_no_log(make_cfg, pid_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    final, _ = train(make_cfg(**{"train.epochs": 1}), pid_bundle)
    assert isinstance(final, Finished) and not list(tmp_path.rglob(RUNLOG_FILE))


def test_tensorboard_without_the_library_is_explained(make_cfg, pid_bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if it were not installed
    final, _ = train(make_cfg(**{"train.epochs": 1}), pid_bundle, out_dir=tmp_path, tensorboard=True)
    assert isinstance(final, Failed) and final.kind == "config"
    assert "tensorboardX" in final.message and "robult-studio[tensorboard]" in final.message


def read_events(folder) -> dict[str, list[tuple[int, float]]]:
    """Scalars of every TensorBoard event file in `folder`: {tag: [(step, value), ...]} (TFRecord framing:
    u64 length, u32 crc, payload, u32 crc; payload an Event protobuf)."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_tensorboard_event_files(make_cfg, pid_bundle, tmp_path):
    pytest.importorskip("tensorboardX")
    final, events = train(make_cfg(**{"train.epochs": 2}), pid_bundle, out_dir=tmp_path, tensorboard=True)
    assert isinstance(final, Finished), final
    scalars = read_events(tmp_path)
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [s for s, _ in scalars["val/score"]] == [1, 2]
    assert [v for _, v in scalars["val/score"]] == pytest.approx([e.val_score for e in epochs], abs=1e-6)
    assert [v for _, v in scalars["val/m0_m1_m2/accuracy"]] == pytest.approx(
        [e.val_metrics["m0+m1+m2"]["accuracy"] for e in epochs], abs=1e-6)
    for tag in ("train/total", "train/pu", "train/lr", "diag/z_norm/m0", "diag/u_norm/m2", "diag/rec_error/m1",
                "diag/kappa_mean"):
        assert len(scalars[tag]) == 2, tag
    assert scalars["test/m0_m1_m2/accuracy"] == [(final.best_epoch + 1, pytest.approx(
        final.test_metrics["m0+m1+m2"]["accuracy"], abs=1e-6))]


def test_runlog_alone_writes_and_closes(tmp_path):
    """RunLog is a plain callback: any loop that emits the engine's events gets the same log."""
    ev = EpochEnded(epoch=0, epochs=1, train_losses={"total": 1.5}, val_metrics={"a": {"accuracy": 0.5}},
                    val_score=0.5, is_best=True, z_norm={"a": 1.0}, u_norm={"a": 2.0}, rec_error={"a": 0.1},
                    pu_weight_hist=(1.0,), pu_weight_edges=(0.0, 1.0), pu_weight_mean=float("nan"),
                    pseudo_label_acc=float("inf"), elapsed_s=1.0)
    log = RunLog(tmp_path, method="m", seed=3)
    log(StepEnded(0, 0, 7, 7, {"total": 1.5}, 0.01, 0.5))
    log(ev)
    log(Finished(False, False, 0, 0.5, 1, ""))
    (rec,) = strict_lines(tmp_path / RUNLOG_FILE)
    assert rec["step"] == 7 and rec["lr"] == 0.01 and rec["seed"] == 3 and rec["kappa_mean"] is None
    assert rec["pseudo_label_acc"] is None and rec["val"] == {"a": {"accuracy": 0.5}}


def test_compare_writes_one_log_per_run_folder(tmp_path, capsys):
    """Each `<method>-seed<k>` folder gets its metrics.jsonl and event files: TensorBoard on the compare folder
    shows the methods side by side. (`robult compare` in this process: its runs are worker processes.)"""
    pytest.importorskip("tensorboardX")
    from robult_engine.cli import main
    out = tmp_path / "cmp"
    rc = main(["compare", "--methods", "robult,supervised", "--seeds", "1", "--epochs", "2", "--out", str(out),
               "--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16",
               "--set", "model.d_z=8", "--set", "model.d_u=8", "--set", "model.d_hidden=16",
               "--batch-size", "16", "--label-fraction", "0.1", "--threads", "1", "--quiet", "--tensorboard",
               "--jobs", "2"])  # worker processes get the flag too
    assert rc == 0, capsys.readouterr().err
    for run in ("robult-seed0", "supervised-seed0"):
        assert [r["epoch"] for r in strict_lines(out / run / RUNLOG_FILE)] == [0, 1]
        assert [s for s, _ in read_events(out / run)["val/score"]] == [1, 2]
