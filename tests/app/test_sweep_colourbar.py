"""The Sweeps tab's heat maps (label fraction × missing rate, one per method) share one colour scale with a
colour bar: labelled with the metric and its direction, its limits taken from every method's cells (not only the
first map's), bright = better also for an error such as MAE (the map reversed on a copy: pyqtgraph's shared
colour maps are left as they were), and in the difference view symmetric about 0, red where the first method is
ahead."""
from __future__ import annotations

import json

import numpy as np
import pyqtgraph as pg
import pytest

from app.core.sweeps import SweepStore

METHODS = ("robult", "supervised", "self-training")
FRACTIONS = (0.05, 0.2)
MISSING = ("mcar:0", "mcar:0.25", "mcar:0.5")


def cell(metric: str, method: str, f: int, j: int, seed: int) -> float:
    """A value per cell and seed; the third method has the largest MAE and the lowest accuracy (so the scale's
    limits come from a map that is not the first), and the largest gap to the first."""
    k = METHODS.index(method)
    if metric == "mae":
        return 0.3 + 0.1 * j - 0.05 * f + 0.08 * k * (1 + j) + 0.01 * seed
    return 0.92 - 0.1 * j + 0.03 * f - 0.07 * k * (1 + j) + 0.01 * seed


def write_sweep(folder, metric: str):
    """A plain sweep.json as `robult sweep --out DIR` writes it (the parts the app reads) and every cell's mean."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = {f"{lf:g}": {m: [{"seed": s, "val_score": 0.5, "best_epoch": 0,
                             "missing": {lab: {metric: cell(metric, m, f, j, s)} for j, lab in enumerate(MISSING)}}
                            for s in (0, 1)] for m in METHODS} for f, lf in enumerate(FRACTIONS)}
    data = {"dataset": "pid-synth", "metric": metric, "methods": list(METHODS), "label_fractions": list(FRACTIONS),
            "seeds": 2, "missing": list(MISSING), "mask_seed": 0,
            "rates": {"mcar:0": 0.0, "mcar:0.25": 0.25, "mcar:0.5": 0.5},
            "realised_missing": {"mcar:0": 0.0, "mcar:0.25": 0.26, "mcar:0.5": 0.49},
            "config": {}, "runs": runs, "elapsed_s": 1.0}
    (folder / "sweep.json").write_text(json.dumps(data))
    means = {m: np.array([[np.mean([cell(metric, m, f, j, s) for s in (0, 1)]) for j in range(len(MISSING))]
                          for f in range(len(FRACTIONS))]) for m in METHODS}
    return folder / "sweep.json", means


def stops(name: str):
    s, c = pg.colormap.get(name).getStops()
    return s.copy(), c.copy()


def brightness(rgb) -> int:
    return int(np.asarray(rgb[:3], dtype=int).sum())


@pytest.fixture
def plots(qtbot):
    from app.views.sweeps import SweepPlots
    p = SweepPlots()
    qtbot.addWidget(p)
    p.resize(1100, 600)
    p.show()
    qtbot.waitExposed(p)
    return p


@pytest.mark.parametrize("metric", ["accuracy", "mae"])
def test_the_heat_maps_share_one_labelled_colour_bar(plots, store, tmp_path, metric):
    viridis, d1 = stops("viridis"), stops("CET-D1")
    path, means = write_sweep(tmp_path / metric, metric)
    res = SweepStore(store).get(SweepStore(store).import_sweep_json(path))
    assert not res.mismatch and res.metric == metric
    plots.set_result(res)
    bar = plots.heat_colorbar
    assert bar is not None and bar.scene() is plots.heat.scene()  # drawn beside the maps
    label = bar.getAxis("left").labelText
    assert f"test {metric}" in label
    assert ("higher is better" in label) == (metric == "accuracy") and ("lower is better" in label) == (metric == "mae")
    every = np.concatenate([means[m].ravel() for m in METHODS])
    # one scale for every method: an accuracy on its own range [0, 1]; an error from 0 to its largest cell, which
    # is in the third method's map
    want = (0.0, 1.0) if metric == "accuracy" else (0.0, float(every.max()))
    assert metric == "accuracy" or float(every.max()) > float(means[METHODS[0]].max())
    assert tuple(bar.levels()) == pytest.approx(want, abs=1e-12) and plots.heat_levels == pytest.approx(want)
    lut = plots.heat_colormap.getLookupTable(nPts=256)
    assert np.array_equal(bar.colorMap().getLookupTable(nPts=256), lut)
    for m, img in plots.heat_items.items():
        np.testing.assert_allclose(img.image, means[m], atol=1e-12)
        assert tuple(img.levels) == pytest.approx(want, abs=1e-12) and np.array_equal(img.lut, lut)
    # bright = better: the high end for an accuracy, the low end (reversed) for MAE
    low, high = brightness(lut[0]), brightness(lut[-1])
    assert (high > low) if metric == "accuracy" else (low > high)

    # the difference view: first method minus each other one, symmetric about 0 at the largest |difference| over
    # every map (the third method's), red where the first method is ahead
    plots.mode.setCurrentIndex(1)
    diffs = {m: means[METHODS[0]] - means[m] for m in METHODS[1:]}
    top = max(float(np.abs(d).max()) for d in diffs.values())
    assert top > float(np.abs(diffs[METHODS[1]]).max())
    bar = plots.heat_colorbar
    assert tuple(bar.levels()) == pytest.approx((-top, top), abs=1e-12)
    label = bar.getAxis("left").labelText
    assert f"test {metric}" in label and "red: robult better" in label
    assert ("higher is better" in label) == (metric == "accuracy")
    lut = bar.colorMap().getLookupTable(nPts=256).astype(int)
    for m, img in plots.heat_items.items():
        np.testing.assert_allclose(img.image, diffs[m], atol=1e-12)  # the differences as they are
        assert tuple(img.levels) == pytest.approx((-top, top), abs=1e-12) and np.array_equal(img.lut, lut)
    ahead = lut[-1] if metric == "accuracy" else lut[0]  # accuracy: a positive difference; MAE: a negative one
    behind = lut[0] if metric == "accuracy" else lut[-1]
    assert ahead[0] > ahead[2] + 60 and behind[2] > behind[0] + 60
    # the shared colour maps are left as they were
    for name, before in (("viridis", viridis), ("CET-D1", d1)):
        after = stops(name)
        assert np.array_equal(after[0], before[0]) and np.array_equal(after[1], before[1]), name
