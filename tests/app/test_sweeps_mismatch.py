"""The Sweeps tab on a train/test missingness mismatch sweep: a sweep.json with η_train × η_test opens as a matrix
per method with the diagonal outlined, the difference view shows method A − B per cell on a fixed diverging
scale (red where A is better, also for an error such as MAE), the store's numbers and CSV are the engine's, and
the dialog's train missingness field runs such a sweep."""
from __future__ import annotations

import csv
import json

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QRectF

from app.core.sweeps import SWEEP_DONE, SweepStore
from robult_engine.config import ConfigError
from robult_engine.sweep import Sweep

METHODS = ("robult", "supervised")
TRAIN = ("mcar:0", "mcar:0.5")
TEST = ("mcar:0", "mcar:0.25", "mcar:0.5")


def fake_value(metric: str, method: str, tr: int, te: int, seed: int) -> float:
    """A value per (method, η_train, η_test, seed) that differs in every cell and between the methods."""
    if metric == "mae":  # an error: grows with the missing rate
        return 0.4 + 0.1 * te + 0.03 * tr + (0.05 if method == "supervised" else 0.0) * (1 + te) + 0.01 * seed
    return 0.9 - 0.1 * te - 0.02 * tr * (2 - te) - (0.04 if method == "supervised" else 0.0) * te + 0.01 * seed


def write_fake_sweep(folder, metric: str = "accuracy"):
    """A sweep.json as `robult sweep --train-missing mcar:0,0.5 --missing mcar:0,0.25,0.5` writes it (the parts
    the app reads), and the expected mean of every cell."""
    folder.mkdir(parents=True, exist_ok=True)
    matrix_runs = {"0.1": {tr: {m: [{"seed": s, "val_score": 0.5, "best_epoch": 0,
                                     "missing": {te: {metric: fake_value(metric, m, i, j, s)}
                                                 for j, te in enumerate(TEST)}} for s in (0, 1)]
                                for m in METHODS} for i, tr in enumerate(TRAIN)}}
    data = {"dataset": "pid-synth", "metric": metric, "methods": list(METHODS), "label_fractions": [0.1],
            "seeds": 2, "missing": list(TEST), "mask_seed": 0, "rates": {"mcar:0": 0.0, "mcar:0.25": 0.25,
                                                                          "mcar:0.5": 0.5},
            "realised_missing": {"mcar:0": 0.0, "mcar:0.25": 0.26, "mcar:0.5": 0.45},
            "config": {}, "runs": {"0.1": matrix_runs["0.1"]["mcar:0"]}, "elapsed_s": 1.0,
            "train_missing": list(TRAIN), "train_rates": {"mcar:0": 0.0, "mcar:0.5": 0.5},
            "train_realised_missing": {"mcar:0": 0.0, "mcar:0.5": 0.44}, "matrix_runs": matrix_runs}
    (folder / "sweep.json").write_text(json.dumps(data))
    means = {m: np.array([[np.mean([fake_value(metric, m, i, j, s) for s in (0, 1)]) for j in range(len(TEST))]
                          for i in range(len(TRAIN))]) for m in METHODS}
    return folder / "sweep.json", means


@pytest.fixture
def panel(qtbot, store, tiny):
    from app.views.sweeps import SweepsPanel
    from robult_engine.data import load_dataset
    p = SweepsPanel(store, load_dataset, lambda: tiny(**{"train.epochs": 2}))
    qtbot.addWidget(p)
    p.resize(1100, 700)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()


def stops(name: str):
    s, c = pg.colormap.get(name).getStops()
    return s.copy(), c.copy()


@pytest.mark.parametrize("metric", ["accuracy", "mae"])
def test_a_mismatch_sweep_draws_its_matrix_with_the_diagonal_and_the_difference_a_minus_b(panel, tmp_path, metric):
    from app.views.sweeps import DIAGONAL_COLOR
    viridis, d1 = stops("viridis"), stops("CET-D1")
    path, means = write_fake_sweep(tmp_path / "cli", metric)
    sid = panel.open_sweep_file(str(path))
    assert sid is not None
    plots = panel.plots
    mm = plots.matrix
    assert plots.views.isTabVisible(plots.matrix_tab) and plots.views.currentIndex() == plots.matrix_tab
    # one method's matrix: rows η_train, columns η_test, the means over seeds
    assert mm.method_a.currentText() == "robult" and mm.values.shape == (2, 3)
    np.testing.assert_allclose(mm.values, means["robult"], atol=1e-12)
    assert mm.image.image.shape == (2, 3)
    # the diagonal: trained under mcar:0 tested under mcar:0 (row 0, column 0), mcar:0.5 under mcar:0.5 (1, 2)
    assert mm.diagonal_cells == [(0, 0), (1, 2)]
    for (i, j), item in zip(mm.diagonal_cells, mm.diagonal_items):
        assert item.rect() == QRectF(j, i, 1, 1) and item.scene() is not None
        assert item.pen().color().name().lower() == DIAGONAL_COLOR.lower() and item.pen().widthF() >= 2
    assert mm.texts[1][2].toPlainText() == f"{means['robult'][1, 2]:.3f}"
    # bright = better whatever the metric's direction
    lut = mm.colormap.getLookupTable(nPts=256)
    low, high = lut[0].astype(int).sum(), lut[-1].astype(int).sum()
    assert (high > low) if metric == "accuracy" else (low > high)
    assert "lower is better" in mm.colorbar.getAxis("left").labelText or metric == "accuracy"
    mm.method_a.setCurrentText("supervised")
    np.testing.assert_allclose(mm.values, means["supervised"], atol=1e-12)
    # the difference view: A − B per cell, a fixed scale symmetric about 0, red where A is better
    mm.method_a.setCurrentText("robult")
    mm.mode.setCurrentIndex(1)
    assert mm.method_b.isVisible() and mm.method_b.currentText() == "supervised"
    want = means["robult"] - means["supervised"]
    np.testing.assert_allclose(mm.values, want, atol=1e-12)
    assert np.any(np.abs(want) > 1e-6) and mm.texts[0][1].toPlainText() == f"{want[0, 1]:+.3f}"
    top = float(np.abs(want).max())
    assert mm.levels == pytest.approx((-top, top))
    assert mm.colorbar is not None and tuple(mm.colorbar.levels()) == pytest.approx((-top, top))
    label = mm.colorbar.getAxis("left").labelText
    assert "robult − supervised" in label and "red: robult better" in label
    lut = mm.colormap.getLookupTable(nPts=256).astype(int)
    better_end = lut[-1] if metric == "accuracy" else lut[0]  # accuracy: A − B > 0 is A ahead; MAE: < 0
    worse_end = lut[0] if metric == "accuracy" else lut[-1]
    assert better_end[0] > better_end[2] + 60 and worse_end[2] > worse_end[0] + 60
    assert mm.diagonal_cells == [(0, 0), (1, 2)]  # outlined in the difference view too
    mm.method_a.setCurrentText("supervised")
    mm.method_b.setCurrentText("robult")
    np.testing.assert_allclose(mm.values, -want, atol=1e-12)
    assert mm.levels == pytest.approx((-top, top))  # the same scale for every pair
    # the shared colour maps are left as they were (each matrix draws with its own copy)
    for name, before in (("viridis", viridis), ("CET-D1", d1)):
        after = stops(name)
        assert np.array_equal(after[0], before[0]) and np.array_equal(after[1], before[1]), name


def test_a_plain_sweep_has_no_matrix_tab(panel, tmp_path):
    path, _means = write_fake_sweep(tmp_path / "mm")
    panel.open_sweep_file(str(path))
    data = json.loads(path.read_text())
    for key in ("train_missing", "train_rates", "train_realised_missing", "matrix_runs"):
        del data[key]
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "sweep.json").write_text(json.dumps(data))
    sid = panel.open_sweep_file(str(tmp_path / "plain" / "sweep.json"))
    res = SweepStore(panel.store).get(sid)
    assert not res.mismatch and res.runs_total == 4
    assert not panel.plots.views.isTabVisible(panel.plots.matrix_tab)
    assert panel.plots.matrix.values.shape == (0, 0) and panel.plots.matrix.diagonal_items == []


def test_the_store_reads_the_engines_matrix_and_writes_its_csv(store, tmp_path, tiny):
    base = tiny(**{"train.epochs": 1})
    sw = Sweep(base, list(METHODS), [0.1], tmp_path / "cli", seeds=1, missing=["mcar:0,0.5"],
               train_missing=["mcar:0,0.25"])
    assert sw.run_serial() is True
    payload = sw.finish(print_tables=False)
    sweeps = SweepStore(store)
    res = sweeps.get(sweeps.import_sweep_json(tmp_path / "cli" / "sweep.json"))
    assert res.mismatch and res.train_missing == ["mcar:0", "mcar:0.25"]
    assert res.missing == ["mcar:0", "mcar:0.25", "mcar:0.5"] and res.runs_done == res.runs_total == 4
    assert res.train_realised == pytest.approx(payload["train_realised_missing"])
    for m in METHODS:
        got = res.matrix(0.1, m)[0]
        want = [[payload["matrix"]["0.1"][tr][te]["methods"][m]["mean"] for te in res.missing]
                for tr in res.train_missing]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    diff = res.difference(0.1, "robult", "supervised")
    np.testing.assert_allclose(diff, np.subtract(res.matrix(0.1, "robult")[0], res.matrix(0.1, "supervised")[0]))
    assert res.diagonal() == [(0, 0), (1, 1)]
    with open(tmp_path / "cli" / "sweep.csv") as fh:
        engine_rows = list(csv.reader(fh))
    assert engine_rows[0] == res.csv_header() and "train_missing" in engine_rows[0]
    assert engine_rows[1:] == res.csv_rows()
    # the heat maps and curves of the label fraction × η grid show the first training setting
    assert res.cell(0.1, "mcar:0.5", "robult")[0] == payload["cells"]["0.1"]["mcar:0.5"]["methods"]["robult"]["mean"]


def test_a_bad_matrix_in_a_sweep_file_is_refused(store, tmp_path):
    from app.core.sweeps import SweepFileError
    path, _ = write_fake_sweep(tmp_path / "bad")
    data = json.loads(path.read_text())
    del data["matrix_runs"]["0.1"]["mcar:0.5"]
    path.write_text(json.dumps(data))
    with pytest.raises(SweepFileError, match=r"sweep.json: matrix_runs\[0.1\]\[mcar:0.5\] must be an object"):
        SweepStore(store).import_sweep_json(path)
    assert SweepStore(store).list() == []


def test_the_dialog_runs_a_mismatch_sweep_with_the_engines_numbers(qtbot, panel, tmp_path):
    dlg = panel.new_sweep()
    qtbot.addWidget(dlg)
    ok = dlg.buttons.button(dlg.buttons.StandardButton.Ok)
    dlg.set_methods(METHODS)
    dlg.fractions.setText("0.1")
    dlg.rates.setText("0,0.5")
    dlg.seeds.setValue(1)
    dlg.train_missing.setText("subsets")
    assert not ok.isEnabled() and dlg.error.text().startswith("Train missingness subsets:")
    dlg.train_missing.setText("mcar:0,0.25")
    assert ok.isEnabled(), dlg.error.text()
    assert "4 trainings (2 methods × 1 label fraction × 2 training settings × 1 seed)" in dlg.summary.text()
    assert "3 mask settings" in dlg.summary.text()
    req = dlg.request()
    assert req.train_missing == ("mcar:0,0.25",) and req.runs_total == 4
    dlg.accept()
    qtbot.waitUntil(lambda: not panel.busy, timeout=240_000)
    res = SweepStore(panel.store).get(panel.selected_id())
    assert res.status == SWEEP_DONE and res.runs_done == res.runs_total == 4, res.error
    assert res.train_missing == ["mcar:0", "mcar:0.25"] and res.missing == ["mcar:0", "mcar:0.25", "mcar:0.5"]
    sw = Sweep(req.base, list(METHODS), [0.1], tmp_path / "cli", seeds=1, missing=list(req.missing),
               train_missing=list(req.train_missing))
    assert sw.run_serial() is True
    payload = sw.finish(print_tables=False)
    for m in METHODS:
        want = [[payload["matrix"]["0.1"][tr][te]["methods"][m]["mean"] for te in res.missing]
                for tr in res.train_missing]
        assert res.matrix(0.1, m)[0] == want  # the same seeds and masks: the same numbers
    np.testing.assert_allclose(panel.plots.matrix.values, np.array(res.matrix(0.1, "robult")[0]))
    assert panel.plots.matrix.diagonal_cells == [(0, 0), (1, 1)]


def test_a_request_names_the_train_missingness_field(tiny):
    from app.core.sweeps import SweepRequest
    base = tiny()
    with pytest.raises(ConfigError, match=r"Train missingness mcar:1\.5: a rate must be in \[0, 1\)"):
        SweepRequest(base, METHODS, (0.1,), ("mcar:0",), train_missing=("mcar:1.5",)).validate()
    with pytest.raises(ConfigError, match="Train missingness mcar:0.3: the configuration already sets "
                                          "data.train_missing=mcar:0.5"):
        SweepRequest(base.replace(**{"data.train_missing": "mcar:0.5"}), METHODS, (0.1,), ("mcar:0",),
                     train_missing=("mcar:0.3",)).validate()
    assert SweepRequest(base, METHODS, (0.1,), ("mcar:0",), seeds=2, train_missing=("mcar:0,0.3,0.6",)
                        ).runs_total == 2 * 1 * 2 * 3
