"""The pinned baseline of the sessions view: kept in the session database, every other run shown as the baseline
minus the run — paired by seed exactly as `robult compare` prints it — in the table, the curves and the
per-subset cells, the config keys that differ, and a pinned run that is deleted unpins."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.core.comparison import UNPAIRED_NOTE, config_diff
from app.core.sessions import BASELINE_KEY, SessionStore
from app.core.state import FINISHED, STOPPED
from robult_engine.cli import paired_differences
from robult_engine.evaluation import mean_over_subsets
from robult_engine.events import EpochEnded


def _epoch(epoch: int, val: dict, score: float) -> EpochEnded:
    return EpochEnded(epoch=epoch, epochs=2, train_losses={"total": 1.0}, val_metrics=val, val_score=score,
                      is_best=True, z_norm={}, u_norm={}, rec_error={}, pu_weight_hist=(), pu_weight_edges=(),
                      pu_weight_mean=float("nan"), pseudo_label_acc=float("nan"), elapsed_s=1.0, checkpoint_path="")


def _run(store: SessionStore, tiny, method: str, seed: int, test: dict | None, *, comparison: str = "",
         scores: tuple[float, ...] = (0.5, 0.6), status: str = FINISHED, **changes) -> int:
    """A run of `method` at `seed` with the test metrics `test`, and one epoch per validation score (every
    subset's accuracy at an epoch is that score, b's is half of it)."""
    rid = store.create_run(tiny(method=method, seed=seed, **{"data.seed": seed}, **changes), run_dir="/nowhere")
    for e, s in enumerate(scores):
        store.add_epoch(rid, _epoch(e, {"a": {"accuracy": s}, "b": {"accuracy": s / 2}, "a+b": {"accuracy": s}}, s))
    store.update_run(rid, status=status, comparison=comparison, test_metrics=test or {})
    return rid


def _acc(a: float, b: float, ab: float) -> dict:
    return {"a": {"accuracy": a}, "b": {"accuracy": b}, "a+b": {"accuracy": ab}}


def _cell(panel, run_id: int, role=Qt.ItemDataRole.DisplayRole):
    from app.views.sessions import RunsTableModel
    row = next(i for i, r in enumerate(panel.model.rows) if r.id == run_id)
    return panel.model.data(panel.model.index(row, RunsTableModel.BASELINE_COL), role)


def _panel(qtbot, store):
    from app.views.sessions import SessionsPanel
    panel = SessionsPanel(store)
    qtbot.addWidget(panel)
    return panel


# robult (the baseline) at seeds 0, 1, 2; supervised at seeds 0, 1: the paired differences are those of seeds 0, 1
ROBULT = {0: _acc(0.80, 0.60, 0.90), 1: _acc(0.70, 0.50, 0.90), 2: _acc(0.90, 0.90, 0.90)}
SUPERVISED = {0: _acc(0.70, 0.50, 0.80), 1: _acc(0.70, 0.40, 0.88)}
SCORES = {("robult", 0): (0.5, 0.7), ("robult", 1): (0.6, 0.8), ("robult", 2): (0.4, 0.9),
          ("supervised", 0): (0.4, 0.5), ("supervised", 1): (0.5, 0.9)}


@pytest.fixture
def comparison(store, tiny):
    ids = {}
    for seed in (0, 1, 2):
        for method, tables in (("robult", ROBULT), ("supervised", SUPERVISED)):
            if seed in tables:
                ids[method, seed] = _run(store, tiny, method, seed, tables[seed], comparison="cmp-1",
                                         scores=SCORES[method, seed])
    return ids


def test_the_pin_is_kept_in_the_database_and_survives_a_restart(qtbot, db_path, tiny):
    store = SessionStore(db_path)
    a = _run(store, tiny, "robult", 0, ROBULT[0])
    b = _run(store, tiny, "supervised", 0, SUPERVISED[0])
    panel = _panel(qtbot, store)
    assert panel.baseline_id is None and _cell(panel, b) == ""
    panel.select_runs([a])
    assert panel.btn_pin.text() == "Pin baseline"
    panel.btn_pin.click()
    assert panel.baseline_id == a and store.baseline_run_id() == a
    assert _cell(panel, a) == "pinned baseline" and _cell(panel, b).endswith("· 1 pair")
    assert panel.btn_pin.text() == "Unpin baseline" and f"#{a}" in panel.baseline_label.text()
    store.close()

    again = SessionStore(db_path)  # the next start of the app
    assert again.baseline_run_id() == a
    panel = _panel(qtbot, again)
    assert panel.baseline_id == a and _cell(panel, a) == "pinned baseline"

    # the context menu pins another run and unpins; Ctrl+B toggles the selected run
    texts = [act.text() for act in panel.baseline_menu(b).actions()]
    assert texts == [f"Pin #{b} as baseline", f"Unpin baseline #{a}"]
    panel.baseline_menu(b).actions()[0].trigger()
    assert panel.baseline_id == b and again.baseline_run_id() == b
    panel.baseline_menu(None).actions()[0].trigger()
    assert panel.baseline_id is None and again.baseline_run_id() is None and _cell(panel, a) == ""
    assert panel.shortcut_pin.key().toString() == "Ctrl+B"
    panel.select_runs([a])
    panel.shortcut_pin.activated.emit()
    assert again.baseline_run_id() == a
    panel.shortcut_pin.activated.emit()
    assert again.baseline_run_id() is None
    again.close()
    assert SessionStore(db_path).baseline_run_id() is None


def test_the_differences_are_those_robult_compare_prints(qtbot, store, comparison):
    # what `robult compare` computes from the same runs: its result rows and its paired_differences
    results = {m: [{"seed": s, "test": {**t, "mean": mean_over_subsets(t, "single-label")}}
                   for s, t in sorted(tables.items())]
               for m, tables in (("robult", ROBULT), ("supervised", SUPERVISED))}
    expected = paired_differences(results, ["robult", "supervised"], "accuracy")["supervised"]
    # by hand: seed 0: 0.7667 − 0.6667 = 0.1; seed 1: 0.7 − 0.66 = 0.04 (seed 2: robult only)
    assert expected["n"] == 2 and expected["mean"] == pytest.approx(0.07, abs=1e-6) and expected["wins"] == 2

    panel = _panel(qtbot, store)
    panel.pin_baseline(comparison["robult", 0])
    header = panel.model.headerData(panel.model.BASELINE_COL, Qt.Orientation.Horizontal)
    assert header == "test accuracy: baseline − run"
    for seed in (0, 1):  # each supervised run stands for its comparison's supervised seeds
        rid = comparison["supervised", seed]
        d = panel.model.diffs[rid]
        assert (d.mean, d.std, d.wins, d.n) == (expected["mean"], expected["std"], expected["wins"], expected["n"])
        assert _cell(panel, rid) == f"{expected['mean']:+.4f} · 2 pairs" == "+0.0700 · 2 pairs"
    assert _cell(panel, comparison["robult", 2]) == "baseline (its seeds)"  # the baseline's own setting

    # the curves: per epoch, the mean over seeds 0 and 1 of baseline − run of the validation score
    panel.select_runs([comparison["supervised", 0]])
    epochs, diffs, pairs = panel.curve_diffs[comparison["supervised", 0]]
    assert epochs == [0, 1] and pairs == 2
    assert diffs == pytest.approx([((0.5 - 0.4) + (0.6 - 0.5)) / 2, ((0.7 - 0.5) + (0.8 - 0.9)) / 2])
    # the per-subset cells: validation at the best (last) epoch, paired the same way; the baseline's own first
    cells = panel.subset_diffs[comparison["supervised", 0]]
    assert cells["a"].mean == pytest.approx(((0.7 - 0.5) + (0.8 - 0.9)) / 2) and cells["a"].n == 2
    assert cells["b"].mean == pytest.approx(((0.7 - 0.5) + (0.8 - 0.9)) / 4)
    t = panel.subsets
    assert "(baseline)" in t.horizontalHeaderItem(0).text() and t.item(0, 0).text() == "0.7000"
    assert "2 pairs" in t.horizontalHeaderItem(1).text() and t.item(0, 1).text() == "+0.0500"


def test_no_seed_in_common_is_unpaired_and_a_run_without_metrics_shows_a_dash(qtbot, store, tiny):
    base = _run(store, tiny, "robult", 0, ROBULT[0])
    other = _run(store, tiny, "supervised", 5, SUPERVISED[1])  # seed 5 only: nothing to pair with
    stopped = _run(store, tiny, "moddrop", 0, None, status=STOPPED)  # no test metrics
    panel = _panel(qtbot, store)
    panel.pin_baseline(base)
    d = panel.model.diffs[other]
    assert not d.paired and d.note == UNPAIRED_NOTE
    assert d.mean == pytest.approx((0.8 + 0.6 + 0.9) / 3 - (0.7 + 0.4 + 0.88) / 3, abs=1e-6)
    assert _cell(panel, other) == f"{d.mean:+.4f} · no seed in common: unpaired"
    assert _cell(panel, stopped) == "—"
    # the curves and cells say so too, without failing
    panel.select_runs([other, stopped])
    assert panel.curve_diffs[other][2] == 0 and panel.curve_diffs[stopped][2] == 1  # unpaired; seed 0 paired
    heads = [panel.subsets.horizontalHeaderItem(j).text() for j in range(panel.subsets.columnCount())]
    assert any(f"#{other}" in h and "unpaired" in h for h in heads)


def test_lower_is_better_flips_the_colour_not_the_sign(qtbot, store, tiny):
    from app.views.sessions import BETTER_COLOR, WORSE_COLOR

    def mae(v: float) -> dict:
        return {"a": {"mae": v, "pearson_r": 0.5}, "b": {"mae": v}}
    base = _run(store, tiny, "robult", 0, mae(1.0))
    better = _run(store, tiny, "supervised", 0, mae(0.8))  # a lower error: the run is ahead
    worse = _run(store, tiny, "moddrop", 0, mae(1.5))
    panel = _panel(qtbot, store)
    panel.pin_baseline(base)
    assert panel.model.headerData(panel.model.BASELINE_COL, Qt.Orientation.Horizontal) == "test mae: baseline − run"
    assert _cell(panel, better) == "+0.2000 · 1 pair" and _cell(panel, worse) == "-0.5000 · 1 pair"
    assert panel.model.diffs[better].run_better is True and panel.model.diffs[worse].run_better is False
    fg = Qt.ItemDataRole.ForegroundRole
    assert _cell(panel, better, fg).name() == BETTER_COLOR and _cell(panel, worse, fg).name() == WORSE_COLOR
    assert "lower is better" in _cell(panel, better, Qt.ItemDataRole.ToolTipRole)

    # accuracy (higher is better): the same sign means the opposite
    acc_base = _run(store, tiny, "robult", 1, ROBULT[1])
    acc_run = _run(store, tiny, "supervised", 1, SUPERVISED[1])  # 0.04 below the baseline
    panel.pin_baseline(acc_base)
    assert _cell(panel, acc_run).startswith("+0.0400")
    assert _cell(panel, acc_run, fg).name() == WORSE_COLOR and panel.model.diffs[acc_run].run_better is False


def test_the_config_diff_lists_only_the_keys_that_differ(qtbot, store, tiny):
    base = _run(store, tiny, "robult", 0, ROBULT[0])
    other = _run(store, tiny, "supervised", 0, SUPERVISED[0], **{"loss.lambda_pu": 0.5, "train.lr": 0.01})
    panel = _panel(qtbot, store)
    panel.pin_baseline(base)
    panel.select_runs([other])
    assert panel.config_diff == [("loss.lambda_pu", "1.0", "0.5"), ("method", '"robult"', '"supervised"'),
                                 ("train.lr", "0.002", "0.01")]
    text = panel.config_diff_label.text()
    assert "loss.lambda_pu: 1.0 → 0.5" in text and "train.lr: 0.002 → 0.01" in text
    assert "train.epochs" not in text and "data.dataset" not in text
    assert not panel.config_diff_label.isHidden()
    panel.select_runs([base])  # the baseline itself: nothing to list
    assert panel.config_diff == [] and panel.config_diff_label.isHidden()
    # a key one config lacks (an older run's config) is listed as absent
    assert config_diff({"a": {"x": 1}, "b": 2}, {"a": {"x": 1}}) == [("b", "2", "(absent)")]


def test_deleting_the_pinned_run_unpins_it(qtbot, db_path, tiny, dialogs):
    store = SessionStore(db_path)
    keep = _run(store, tiny, "supervised", 0, SUPERVISED[0])
    pinned = _run(store, tiny, "robult", 0, ROBULT[0])
    panel = _panel(qtbot, store)
    panel.pin_baseline(pinned)
    assert _cell(panel, keep).endswith("1 pair")
    panel.select_runs([pinned])
    with qtbot.waitSignal(panel.sig_runs_deleted):
        panel.btn_delete.click()
    assert panel.baseline_id is None and store.baseline_run_id() is None
    assert store.get_ui(BASELINE_KEY) is None and panel.model.diffs == {} and _cell(panel, keep) == ""
    assert panel.model.headerData(panel.model.BASELINE_COL, Qt.Orientation.Horizontal) == "vs baseline"
    # SQLite gives the next run the deleted run's id: it must not come back pinned
    again = _run(store, tiny, "robult", 1, ROBULT[1])
    assert again == pinned and store.baseline_run_id() is None
    # deleting another run leaves the pin alone
    panel.pin_baseline(keep)
    store.delete_run(again)
    assert store.baseline_run_id() == keep
    store.close()
