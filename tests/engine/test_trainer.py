"""The training loop: events, cooperative cancel, NaN failures, early stopping, resume, every method, determinism
and identical data across methods."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import robult_engine.trainer as trainer_mod
from robult_engine.checkpoint import load_checkpoint
from robult_engine.config import METHODS
from robult_engine.events import EpochEnded, Failed, Finished, Started, StepEnded
from robult_engine.trainer import Trainer


def run(cfg, bundle, **kw):
    events = []
    final = Trainer(cfg, bundle, callbacks=[events.append], **kw).run()
    assert events and events[-1] is final, "the final event is also sent to the callbacks, last"
    return final, events


def assert_plain(value, where="event"):
    """Events carry plain data only: no tensors, no modules, nothing live."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return
    if isinstance(value, (tuple, list)):
        for v in value:
            assert_plain(v, where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{where}: key {k!r}"
            assert_plain(v, f"{where}.{k}")
        return
    raise AssertionError(f"{where}: {type(value).__name__} is not plain data")


def test_events_in_order_with_diagnostics(make_cfg, pid_bundle, tmp_path):
    cfg = make_cfg()
    final, events = run(cfg, pid_bundle, out_dir=tmp_path)
    assert isinstance(final, Finished), final
    kinds = [type(e).__name__ for e in events]
    n_steps = sum(isinstance(e, StepEnded) for e in events) // cfg.train.epochs
    assert n_steps >= 2
    expect = ["Started"] + (["StepEnded"] * n_steps + ["EpochEnded"]) * cfg.train.epochs + ["Finished"]
    assert kinds == expect
    step_events = [e for e in events if isinstance(e, StepEnded)]
    assert [e.global_step for e in step_events] == list(range(1, 2 * n_steps + 1))
    assert all(e.total_steps == 2 * n_steps for e in step_events)
    assert [e.step for e in step_events[:n_steps]] == list(range(n_steps))
    assert all(set(e.losses) == {"sup", "pu", "rec", "total"} for e in step_events)
    assert all(math.isfinite(v) for e in step_events for v in e.losses.values())
    assert all(e.lr > 0 for e in step_events)
    times = [e.elapsed_s for e in events[1:]]
    assert times == sorted(times), "elapsed time never goes back"
    names = pid_bundle.info.modality_names
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [e.epoch for e in epochs] == [0, 1] and all(e.epochs == 2 for e in epochs)
    for e in epochs:
        assert set(e.train_losses) == {"sup", "pu", "rec", "total"}
        assert len(e.val_metrics) == 2 ** len(names) - 1 and "m0+m1+m2" in e.val_metrics
        assert set(e.z_norm) == set(e.u_norm) == set(e.rec_error) == set(names)
        assert all(v > 0 and math.isfinite(v) for d in (e.z_norm, e.u_norm, e.rec_error) for v in d.values())
        assert len(e.pu_weight_hist) == 20 and len(e.pu_weight_edges) == 21
        assert sum(e.pu_weight_hist) == pytest.approx(1.0)
        assert 0.0 <= e.pu_weight_mean <= 1.0
        assert 0.0 <= e.pseudo_label_acc <= 1.0
        assert math.isfinite(e.val_score)
        assert_plain(dataclasses.asdict(e), "EpochEnded")
    assert epochs[0].is_best and epochs[0].checkpoint_path == str(tmp_path / "best.pt")
    assert_plain(dataclasses.asdict(step_events[0]), "StepEnded")
    assert_plain(dataclasses.asdict(final), "Finished")
    assert final.epochs_run == 2 and not final.cancelled and not final.stopped_early
    assert final.checkpoint_path == str(tmp_path / "best.pt") and (tmp_path / "last.pt").is_file()
    assert set(final.test_metrics) == set(epochs[0].val_metrics)
    # the best checkpoint also stores the test metrics of the model it holds
    assert load_checkpoint(final.checkpoint_path).metrics["test"] == final.test_metrics
    with pytest.raises(dataclasses.FrozenInstanceError):
        final.best_epoch = 3  # events are immutable


def test_cooperative_cancel_keeps_best_checkpoint(make_cfg, pid_bundle, tmp_path):
    cfg = make_cfg(**{"train.epochs": 5})
    steps_seen = []

    def should_stop():
        # stop in the middle of the second epoch
        return len([e for e in steps_seen if isinstance(e, EpochEnded)]) >= 1 and \
            sum(isinstance(e, StepEnded) and e.epoch == 1 for e in steps_seen) >= 2

    final = Trainer(cfg, pid_bundle, callbacks=[steps_seen.append], should_stop=should_stop,
                    out_dir=tmp_path).run()
    assert isinstance(final, Finished) and final.cancelled and not final.stopped_early
    assert final.epochs_run == 1, "the interrupted epoch does not count"
    assert final.best_epoch == 0 and final.checkpoint_path == str(tmp_path / "best.pt")
    ck = load_checkpoint(final.checkpoint_path)
    assert ck.epoch == 0 and "test" in ck.metrics
    assert isinstance(steps_seen[-1], Finished)
    assert sum(isinstance(e, StepEnded) and e.epoch == 1 for e in steps_seen) == 2
    assert not any(isinstance(e, EpochEnded) and e.epoch == 1 for e in steps_seen)


def test_cancel_before_first_step(make_cfg, pid_bundle, tmp_path):
    final, events = run(make_cfg(), pid_bundle, should_stop=lambda: True, out_dir=tmp_path)
    assert isinstance(final, Finished) and final.cancelled
    assert final.best_epoch == -1 and final.checkpoint_path == "" and final.epochs_run == 0
    assert final.test_metrics == {} and len(events) == 2 and isinstance(events[0], Started)


def test_nan_loss_fails_cleanly_and_keeps_best(make_cfg, pid_bundle, tmp_path, monkeypatch):
    real = trainer_mod.reconstruction_loss
    state = {"epoch": 0}

    def rec_loss(*a, **k):
        v = real(*a, **k)
        return v * float("nan") if state["epoch"] >= 1 else v

    def track(ev):
        if isinstance(ev, EpochEnded):
            state["epoch"] = ev.epoch + 1

    monkeypatch.setattr(trainer_mod, "reconstruction_loss", rec_loss)
    events = []
    final = Trainer(make_cfg(**{"train.epochs": 3}), pid_bundle, callbacks=[track, events.append],
                    out_dir=tmp_path).run()
    assert isinstance(final, Failed) and final.kind == "nan", final
    assert "NaN" in final.message and "epoch 2" in final.message and "rec=nan" in final.message
    assert final.epoch == 1
    assert final.checkpoint_path == str(tmp_path / "best.pt") and load_checkpoint(final.checkpoint_path).epoch == 0
    assert events[-1] is final and not any(isinstance(e, Finished) for e in events)


def test_huge_learning_rate_fails_with_nan(make_cfg, pid_bundle):
    final, _ = run(make_cfg(**{"train.lr": 1e30}), pid_bundle)
    assert isinstance(final, Failed) and final.kind == "nan", final
    assert "learning rate" in final.message


def test_huge_feature_values_fail_with_nan_not_an_exception(make_cfg, pid_bundle):
    bad = dataclasses.replace(pid_bundle, splits=dict(pid_bundle.splits))
    train = bad.splits["train"].subset(torch.arange(len(bad.splits["train"])))
    train.inputs["m0"][:] = 3e38  # finite, but every sample's variance overflows float32
    bad.splits["train"] = train
    # the per-sample LayerNorm overflows on such values; the default feature-wise input norm (fitted in float64)
    # centres this constant feature to 0 and trains on (tests/engine/test_input_norm.py)
    final, _ = run(make_cfg(**{"model.input_norm": "layer"}), bad)
    assert isinstance(final, Failed) and final.kind == "nan", final


def test_non_finite_data_is_a_data_error(make_cfg, pid_bundle):
    bad = dataclasses.replace(pid_bundle, splits=dict(pid_bundle.splits))
    val = bad.splits["val"].subset(torch.arange(len(bad.splits["val"])))
    val.inputs["m2"][3, 0] = float("nan")
    bad.splits["val"] = val
    final, _ = run(make_cfg(), bad)
    assert isinstance(final, Failed) and final.kind == "data"
    assert "'m2'" in final.message and "val" in final.message and "val-3" in final.message


def test_invalid_config_is_a_failed_event(make_cfg, pid_bundle):
    cfg = dataclasses.replace(make_cfg(), method="magic")
    final, _ = run(cfg, pid_bundle)
    assert isinstance(final, Failed) and final.kind == "config" and "magic" in final.message


def test_early_stopping(make_cfg, pid_bundle, monkeypatch):
    # the validation score never improves after the first epoch: patience 2 stops after epoch 3
    monkeypatch.setattr(trainer_mod, "selection_score", lambda table, task: 0.5)
    final, events = run(make_cfg(**{"train.epochs": 10, "train.patience": 2}), pid_bundle)
    assert isinstance(final, Finished) and final.stopped_early and not final.cancelled
    assert final.epochs_run == 3 and final.best_epoch == 0
    assert [e.is_best for e in events if isinstance(e, EpochEnded)] == [True, False, False]


def test_no_early_stopping_when_patience_is_zero(make_cfg, pid_bundle, monkeypatch):
    monkeypatch.setattr(trainer_mod, "selection_score", lambda table, task: 0.5)
    final, _ = run(make_cfg(**{"train.epochs": 3, "train.patience": 0}), pid_bundle)
    assert not final.stopped_early and final.epochs_run == 3


def test_resume_from_last_continues_the_run(make_cfg, pid_bundle, tmp_path):
    cfg = make_cfg(**{"train.epochs": 2})
    # reference: two epochs in one go
    full, _ = run(cfg, pid_bundle, out_dir=tmp_path / "full")
    assert isinstance(full, Finished)
    # the same run cancelled after its first epoch, then resumed from last.pt
    state = {"epochs": 0}

    def count(ev):
        if isinstance(ev, EpochEnded):
            state["epochs"] += 1

    part = Trainer(cfg, pid_bundle, callbacks=[count], should_stop=lambda: state["epochs"] >= 1,
                   out_dir=tmp_path / "part").run()
    assert part.cancelled and part.epochs_run == 1
    assert load_checkpoint(tmp_path / "part" / "last.pt").training_state["next_epoch"] == 1
    resumed, events = run(cfg, pid_bundle, out_dir=tmp_path / "part", resume_from=tmp_path / "part" / "last.pt")
    assert isinstance(resumed, Finished), resumed
    assert [e.epoch for e in events if isinstance(e, EpochEnded)] == [1], "the epoch count continues"
    steps = [e for e in events if isinstance(e, StepEnded)]
    assert steps[0].epoch == 1 and steps[0].global_step == steps[0].total_steps // 2 + 1
    assert resumed.epochs_run == 2
    # same weights, memory and best score as the uninterrupted run
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    for k in a.model_state:
        assert torch.allclose(a.model_state[k], b.model_state[k], atol=1e-6, rtol=0), k
    for k in a.memory_state:
        assert torch.allclose(a.memory_state[k].float(), b.memory_state[k].float(), atol=1e-6), k
    assert resumed.best_epoch == full.best_epoch
    assert resumed.best_score == pytest.approx(full.best_score)
    assert torch.equal(a.labeled_indices, b.labeled_indices)


def test_resume_refuses_a_checkpoint_without_training_state(make_cfg, pid_bundle, tmp_path):
    run(make_cfg(**{"train.epochs": 1}), pid_bundle, out_dir=tmp_path)
    final, _ = run(make_cfg(), pid_bundle, resume_from=tmp_path / "best.pt")
    assert isinstance(final, Failed) and "last.pt" in final.message


def test_resume_refuses_other_data(make_cfg, pid_bundle, tmp_path):
    run(make_cfg(**{"train.epochs": 1}), pid_bundle, out_dir=tmp_path)
    from robult_engine.data import load_dataset
    other = load_dataset(make_cfg(**{"data.seed": 5}).data)
    final, _ = run(make_cfg(), other, resume_from=tmp_path / "last.pt")
    assert isinstance(final, Failed) and "other data" in final.message


EXPECTED_LOSSES = {
    "robult": {"sup", "pu", "rec", "total"},
    "robult-no-rec": {"sup", "pu", "total"},
    "robult-supcon": {"sup", "pu", "rec", "total"},
    "robult-no-pu": {"sup", "rec", "total"},
    "supervised": {"sup", "total"},
    "moddrop": {"sup", "total"},
    "self-training": {"sup", "total"},
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_one_epoch(make_cfg, pid_bundle, method):
    final, events = run(make_cfg(method=method, **{"train.epochs": 1, "loss.st_warmup": 0.0}), pid_bundle)
    assert isinstance(final, Finished), final
    steps = [e for e in events if isinstance(e, StepEnded)]
    expected = EXPECTED_LOSSES.get(method, {"sup", "total"})  # a newer method: at least these
    assert steps and all(expected <= set(e.losses) for e in steps)
    if method in EXPECTED_LOSSES:
        assert all(set(e.losses) == expected for e in steps)
    assert all(math.isfinite(v) for e in steps for v in e.losses.values())
    assert final.test_metrics and all(0 <= r["accuracy"] <= 1 for r in final.test_metrics.values())


@pytest.mark.parametrize("task", ["multi-label", "regression"])
@pytest.mark.parametrize("method", ["robult", "robult-supcon", "self-training", "moddrop"])
def test_other_tasks_train(make_cfg, make_bundle, task, method):
    bundle = make_bundle(n=24, task=task, num_classes=3, missing=0.3)
    cfg = make_cfg(method=method, **{"data.dataset": "four-kinds", "train.epochs": 1, "train.batch_size": 12,
                                     "model.text_buckets": 64, "loss.st_warmup": 0.0, "loss.st_threshold": 0.5})
    final, events = run(cfg, bundle)
    assert isinstance(final, Finished), final
    assert final.test_metrics and all(math.isfinite(v) for e in events if isinstance(e, StepEnded)
                                      for v in e.losses.values())


def test_training_with_modality_dropout_and_kernels(make_cfg, pid_bundle):
    for kernel, bw in (("laplacian", None), ("inverse-l2", 0.5)):
        cfg = make_cfg(**{"train.epochs": 1, "data.train_modality_dropout": 0.3, "loss.kernel": kernel,
                          "loss.bandwidth": bw})
        final, _ = run(cfg, pid_bundle)
        assert isinstance(final, Finished), final


def test_same_seed_same_results(make_cfg, pid_bundle, tmp_path):
    cfg = make_cfg(**{"train.epochs": 2, "model.dropout": 0.2, "data.train_modality_dropout": 0.2})
    a, ev_a = run(cfg, pid_bundle, out_dir=tmp_path / "a")
    torch.rand(5)  # the global RNG's state before a run must not matter
    b, ev_b = run(cfg, pid_bundle, out_dir=tmp_path / "b")
    la = [e.losses for e in ev_a if isinstance(e, StepEnded)]
    lb = [e.losses for e in ev_b if isinstance(e, StepEnded)]
    assert la == lb
    assert a.test_metrics == b.test_metrics and a.best_score == b.best_score
    wa, wb = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert all(torch.equal(wa.model_state[k], wb.model_state[k]) for k in wa.model_state)
    # another seed gives another run
    c, ev_c = run(cfg.replace(seed=1), pid_bundle)
    assert [e.losses for e in ev_c if isinstance(e, StepEnded)] != la


def test_all_methods_see_identical_labels_and_batches(make_cfg, pid_bundle):
    ref_idx = ref_batches = None
    for method in METHODS:
        tr = Trainer(make_cfg(method=method), pid_bundle)
        tr.setup()
        batches = tr.sampler.epoch(0) + tr.sampler.epoch(1)
        if ref_idx is None:
            ref_idx, ref_batches = tr.labeled_idx, batches
            continue
        assert torch.equal(tr.labeled_idx, ref_idx), method
        assert len(batches) == len(ref_batches) and all(torch.equal(x, y) for x, y in zip(batches, ref_batches))
    # the model seed changes the initialisation, never the labeled indices or the batches
    tr = Trainer(make_cfg().replace(seed=9), pid_bundle)
    tr.setup()
    assert torch.equal(tr.labeled_idx, ref_idx)
    # stratified: ~10 % of every class keeps its label, at least one each
    y = pid_bundle.splits["train"].target
    for c in y.unique():
        n_c, l_c = int((y == c).sum()), int((y[ref_idx] == c).sum())
        assert l_c == max(1, round(0.1 * n_c))
    # every batch holds labeled samples
    lab = torch.zeros(len(y), dtype=torch.bool)
    lab[ref_idx] = True
    assert all(lab[b].sum() == 4 for b in ref_batches)


def test_training_on_a_modality_subset(make_cfg, pid_bundle):
    final, events = run(make_cfg(**{"train.epochs": 1, "data.modalities": ("m2", "m0")}), pid_bundle)
    assert isinstance(final, Finished), final
    assert set(final.test_metrics) == {"m2", "m0", "m2+m0"}


def test_test_split_is_scored_on_the_best_epoch_with_or_without_a_folder(make_cfg, pid_bundle, tmp_path, monkeypatch):
    # only the first epoch counts as an improvement, so epochs 2..3 move the weights away from the best ones
    scores = iter([0.9, 0.1, 0.1])
    monkeypatch.setattr(trainer_mod, "selection_score", lambda table, task: next(scores))
    on_disk, _ = run(make_cfg(**{"train.epochs": 3, "train.patience": 0}), pid_bundle, out_dir=tmp_path)
    scores = iter([0.9, 0.1, 0.1])
    in_memory, _ = run(make_cfg(**{"train.epochs": 3, "train.patience": 0}), pid_bundle)
    assert on_disk.best_epoch == in_memory.best_epoch == 0 and in_memory.checkpoint_path == ""
    assert in_memory.test_metrics and in_memory.test_metrics == on_disk.test_metrics
    # and scoring the last weights instead would have given something else
    scores = iter([0.1, 0.1, 0.9])
    last, _ = run(make_cfg(**{"train.epochs": 3, "train.patience": 0}), pid_bundle)
    assert last.best_epoch == 2 and last.test_metrics != in_memory.test_metrics


def test_started_event_carries_the_labeled_indices(make_cfg, pid_bundle, tmp_path):
    events = []
    final = Trainer(make_cfg(**{"train.epochs": 1}), pid_bundle, callbacks=[events.append], out_dir=tmp_path).run()
    assert isinstance(final, Finished)
    started = [e for e in events if isinstance(e, Started)]
    assert len(started) == 1 and events[0] is started[0]
    ckpt = load_checkpoint(final.checkpoint_path)
    assert list(started[0].labeled_indices) == ckpt.labeled_indices.tolist()
    assert started[0].n_train == len(pid_bundle.splits["train"]) and started[0].start_epoch == 0
    steps = [e for e in events if isinstance(e, StepEnded)]
    assert started[0].total_steps == steps[-1].total_steps and started[0].steps_per_epoch == len(steps)


def test_methods_table_drives_every_method():
    from robult_engine.methods import METHOD_SPECS, method_spec
    assert tuple(METHOD_SPECS) == METHODS
    assert method_spec("robult-no-rec").uses_rec is False and method_spec("robult").uses_rec
    assert method_spec("robult-supcon").contrastive == "supcon"
    assert method_spec("self-training").pseudo_labels == "confident"
    assert method_spec("robult-st").pseudo_labels == "kappa" and method_spec("moddrop").moddrop
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        method_spec("nope")


@pytest.mark.parametrize("route", ["projector", "branch", "full"])
def test_every_rec_route_trains_and_is_stored_with_the_run(make_cfg, pid_bundle, tmp_path, route):
    cfg = make_cfg(**{"train.epochs": 1, "loss.rec_route": route, "loss.lambda_diff": 0.5})
    final, events = run(cfg, pid_bundle, out_dir=tmp_path)
    assert isinstance(final, Finished), final
    steps = [e for e in events if isinstance(e, StepEnded)]
    assert all(set(e.losses) == {"sup", "pu", "rec", "diff", "total"} for e in steps)
    assert all(math.isfinite(e.losses["diff"]) and e.losses["diff"] >= 0 for e in steps)
    ckpt = load_checkpoint(final.checkpoint_path)
    assert ckpt.config.loss.rec_route == route and ckpt.config.loss.lambda_diff == 0.5
    from robult_engine.checkpoint import model_from_checkpoint
    assert model_from_checkpoint(ckpt).rec_route == route


def test_methods_without_rec_train_no_diff_term(make_cfg, pid_bundle):
    final, events = run(make_cfg(method="robult-no-rec", **{"train.epochs": 1, "loss.lambda_diff": 0.5}), pid_bundle)
    assert isinstance(final, Finished)
    assert all("diff" not in e.losses and "rec" not in e.losses for e in events if isinstance(e, StepEnded))


def test_the_pseudo_labels_taken_are_reported_per_epoch(make_cfg, pid_bundle, tmp_path):
    """Self-training reports which fraction of the unlabeled samples it took as pseudo-labels, and their
    accuracy; before its warm-up, and for a method without pseudo-labels, there is nothing to report."""
    from robult_engine.runlog import read_run_log
    every = make_cfg(method="self-training", **{"train.epochs": 2, "loss.st_warmup": 0.5, "loss.st_threshold": 0.01})
    final, events = run(every, pid_bundle, out_dir=tmp_path / "st")
    assert isinstance(final, Finished), final
    ep = [e for e in events if isinstance(e, EpochEnded)]
    assert math.isnan(ep[0].pseudo_labels_taken) and math.isnan(ep[0].pseudo_label_acc)  # the warm-up epoch
    assert ep[1].pseudo_labels_taken == 1.0  # a max softmax is never below 1/C: every complete unlabeled sample is taken
    assert 0.0 <= ep[1].pseudo_label_acc <= 1.0
    log = read_run_log(tmp_path / "st")
    assert log[0]["pseudo_labels_taken"] is None and log[1]["pseudo_labels_taken"] == 1.0
    never = make_cfg(method="self-training", **{"train.epochs": 1, "loss.st_warmup": 0.0, "loss.st_threshold": 1.0})
    ep = [e for e in run(never, pid_bundle)[1] if isinstance(e, EpochEnded)]
    assert ep[0].pseudo_labels_taken < 0.05  # a softmax is never fully sure
    ep = [e for e in run(make_cfg(method="supervised", **{"train.epochs": 1}), pid_bundle)[1]
          if isinstance(e, EpochEnded)]
    assert math.isnan(ep[0].pseudo_labels_taken)
    ep = [e for e in run(make_cfg(method="robult-st", **{"train.epochs": 1, "loss.st_warmup": 0.0}), pid_bundle)[1]
          if isinstance(e, EpochEnded)]
    assert 0.0 < ep[0].pseudo_labels_taken <= 1.0  # the κ-weighted share of the unlabeled samples
