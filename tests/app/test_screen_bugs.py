"""What a new user sees on screen at six modalities (mfeat) and six runs: images that fit their panel, readable run
names in the robustness matrix, a κ plot cleared for a method without soft-PU, a capped validation legend that
leaves the ★ in view, per-subset tables in modality order, empty plots that say so, and an explorer that fits a
1280 × 800 window."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer_helpers import wait_shown
from robult_engine.events import EpochEnded

MFEAT = ("pix", "fou", "fac", "kar", "zer", "mor")  # mfeat's modality order (pix, the 16 × 15 image, first)


def _subsets(names=MFEAT) -> list[str]:
    from robult_engine.evaluation import modality_subsets
    return [n for n, _ in modality_subsets(names)]


def _epoch(e: int, epochs: int, val: dict, score: float, best: bool, kappa: tuple = (), names=MFEAT) -> EpochEnded:
    edges = tuple(i / len(kappa) for i in range(len(kappa) + 1)) if kappa else ()
    return EpochEnded(epoch=e, epochs=epochs, train_losses={"total": 1.0}, val_metrics=val, val_score=score,
                      is_best=best, z_norm={m: 1.0 for m in names}, u_norm={m: 0.5 for m in names},
                      rec_error={m: 0.1 for m in names}, pu_weight_hist=kappa, pu_weight_edges=edges,
                      pu_weight_mean=0.5, pseudo_label_acc=float("nan"), elapsed_s=float(e + 1))


def _visible_scene_rect(plot):
    """The part of the plot's scene its widget shows."""
    return plot.mapToScene(plot.viewport().rect()).boundingRect()


# ----------------------------------------------------------------------------------------------------------
# 1. an image scales to fit its panel, aspect ratio and pixel grid kept
# ----------------------------------------------------------------------------------------------------------


def _mfeat_like_panel(qtbot, size):
    from robult_engine.data.base import DatasetInfo, ModalitySpec, SplitData
    from app.core.explorer_state import SampleRef
    from app.views.explorer.sample_panel import SamplePanel
    from app.core.analysis.sources import LoadedSample, ModalityView
    dims = {"fou": 76, "fac": 216, "kar": 64, "zer": 47, "mor": 6}
    info = DatasetInfo("mfeat-like", (ModalitySpec("pix", "image", (1, 16, 15)),
                                      *(ModalitySpec(m, "vector", (d,)) for m, d in dims.items())),
                       "single-label", tuple(str(d) for d in range(10)))
    rng = np.random.default_rng(0)
    img = rng.random((16, 15))
    views = (ModalityView("pix", "image", True, image=img, source="dataset"),
             *(ModalityView(m, "vector", True, vector=rng.normal(size=d), source="dataset") for m, d in dims.items()))
    sample = LoadedSample(SampleRef.dataset("test", 0),
                          SplitData({}, {}, torch.ones(1, 6, dtype=torch.bool), torch.zeros(1)), views, "test #0")
    panel = SamplePanel()
    qtbot.addWidget(panel)
    panel.resize(*size)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_context(info)
    panel.show_sample(sample)
    qtbot.wait(50)
    return panel


def _check_image_fits(view):
    label = view.image
    pm = label.pixmap()
    assert not pm.isNull()
    # the whole image is on screen: the drawn image fits the widget, and the widget its modality's box
    assert pm.width() <= label.width() and pm.height() <= label.height(), (pm.size(), label.size())
    assert view.contentsRect().contains(label.geometry())
    # aspect ratio and the pixel grid: 15 × 16 pixels at a whole factor k → 15k × 16k screen pixels
    assert pm.width() % 15 == 0 and pm.height() % 16 == 0 and pm.width() // 15 == pm.height() // 16
    return pm.width() // 15


def test_an_image_scales_to_fit_its_panel_keeping_its_aspect(qtbot):
    panel = _mfeat_like_panel(qtbot, (574, 313))  # the sample panel's part of the explorer at 1280 × 800
    view = panel.views["pix"]
    k = _check_image_fits(view)
    assert k >= 4  # enlarged, pixel by pixel (nearest neighbour)
    img = view.image.pixmap().toImage()
    # nearest neighbour: every k × k block is one colour
    block = {img.pixel(x, y) for x in range(k) for y in range(k)}
    assert len(block) == 1
    # on resize too: a bigger panel draws it bigger, still whole
    panel.resize(1100, 600)
    qtbot.wait(50)
    assert _check_image_fits(view) > k
    panel.resize(500, 260)
    qtbot.wait(50)
    _check_image_fits(view)


# ----------------------------------------------------------------------------------------------------------
# 2. six runs: their names readable over the columns without scrolling
# ----------------------------------------------------------------------------------------------------------


def _robustness_result(n_runs=6):
    from robult_engine.evaluation import EncodedSplit, modality_subsets
    from app.core.analysis.robustness import RobustnessResult, RunRef
    methods = ["robult", "robult-no-rec", "robult-supcon", "supervised", "moddrop", "self-training"][:n_runs]
    runs = [RunRef(i, f"#{i} {m} · mfeat seed 0", m, "") for i, m in enumerate(methods, 1)]
    subsets = modality_subsets(MFEAT)
    g = np.random.default_rng(0)
    tables = {r.label: {n: {"accuracy": float(g.random())} for n, _ in subsets} for r in runs}
    encs = {r.label: EncodedSplit(torch.randn(20, 6, 10), torch.zeros(20, 6, 0), torch.zeros(20, 6, 0),
                                  torch.zeros(20, 6), torch.ones(20, 6, dtype=torch.bool), torch.randint(0, 10, (20,)))
            for r in runs}
    return RobustnessResult("test", "single-label", MFEAT, subsets, runs, tables, encs)


def test_six_runs_are_named_over_their_columns_without_scrolling(qtbot):
    from PySide6.QtCore import QPoint, QPointF
    from app.views.analysis.robustness_panel import RobustnessPanel
    panel = RobustnessPanel()
    qtbot.addWidget(panel)
    panel.resize(1254, 680)
    panel.show()
    qtbot.waitExposed(panel)
    r = _robustness_result()
    panel.show_result(r)
    qtbot.wait(100)
    assert len(r.subsets) == 63 and panel.plot_scroll.verticalScrollBar().maximum() > 0  # the rows scroll
    header = panel.run_header
    assert header.isVisible() and not panel.plot_scroll.isAncestorOf(header)  # never scrolled away
    cols, texts = header.columns(), header.shown_texts()
    assert len(cols) == 6
    fm = header.fontMetrics()
    vb = panel.plot.getPlotItem().getViewBox()
    for j, (rect, text, run) in enumerate(zip(cols, texts, r.runs)):
        # each name sits over its own column (the heat map's cells), fits it, and is the run's label or its
        # elided start, the whole label in a tooltip
        centre = panel.plot.viewport().mapToGlobal(panel.plot.mapFromScene(vb.mapViewToScene(QPointF(j + 0.5, 0))))
        assert abs(header.mapToGlobal(QPoint(rect.center().x(), 0)).x() - centre.x()) <= 2
        assert fm.horizontalAdvance(text) <= rect.width()
        assert text == run.label or (text.endswith("…") and run.label.startswith(text[:-1]))
        assert header.labels[j] == run.label
        if j:
            assert rect.left() >= cols[j - 1].right()  # no two names overlap
    assert texts[0].startswith("#1 robult")
    # the full names, listed above the matrix too; the column ticks are short and never overlap
    legend = panel.runs_legend.text()
    assert panel.runs_legend.isVisible() and all(run.method in legend for run in r.runs)
    ticks = panel.plot.getPlotItem().getAxis("bottom")._tickLevels[0]
    assert [t for _, t in ticks] == [f"#{i}" for i in range(1, 7)]
    panel.shutdown()


# ----------------------------------------------------------------------------------------------------------
# 3. the κ plots: cleared for a method without soft-PU, their message in full
# ----------------------------------------------------------------------------------------------------------


def _message_unclipped(plot, text_part: str):
    from app.views.common.plot_util import message_item, plot_message
    assert text_part in plot_message(plot)
    item = message_item(plot)
    assert item.isVisible()
    shown = item.mapRectToScene(item.boundingRect())
    assert _visible_scene_rect(plot).contains(shown), (shown, _visible_scene_rect(plot))
    assert item.textWidth() <= plot.getPlotItem().vb.width() + 1  # wrapped to the plot, not cut at its edge
    for name in ("left", "bottom"):
        assert not plot.getPlotItem().getAxis(name).isVisible()


def test_the_kappa_plot_is_cleared_for_a_method_without_soft_pu(qtbot):
    from app.core.state import TrainingBuffers
    from app.views.training import TrainingPanel
    buf = TrainingBuffers()
    panel = TrainingPanel(buf)
    qtbot.addWidget(panel)
    panel.resize(700, 480)  # a small window: the message must still show whole
    panel.show()
    qtbot.waitExposed(panel)
    subsets = ["a", "b", "a+b"]
    hist = tuple([0.0] * 15 + [40.0] + [0.0] * 4)  # a soft-PU run: 20 epochs of κ histograms, up to 40 %
    for e in range(20):
        buf.add_epoch_event(_epoch(e, 20, {s: {"accuracy": 0.5} for s in subsets}, 0.5, e == 0, hist, ("a", "b")),
                            "accuracy")
    panel.redraw(force=True)
    assert panel.kappa_image.image is not None
    assert panel.plot_kappa.getViewBox().viewRange()[0][1] >= 19
    # the next run's method has no soft-PU: its epochs carry no κ histogram
    buf.clear()
    panel.reset()
    for e in range(3):
        buf.add_epoch_event(_epoch(e, 3, {s: {"accuracy": 0.6} for s in subsets}, 0.6, e == 0, (), ("a", "b")),
                            "accuracy")
    panel.redraw(force=True)
    qtbot.wait(50)
    assert panel.kappa_image.image is None
    assert not panel.kappa_bar.isVisible()  # no colour scale of the earlier run
    assert panel.kappa_bar.levels() == pytest.approx((0.0, 1.0))
    assert panel.plot_kappa.getViewBox().viewRange()[0][1] < 19  # nor its epoch axis
    assert not panel.kappa_legend.isVisible()
    _message_unclipped(panel.plot_kappa, "no soft-PU in this method")


def test_the_soft_pu_panel_is_cleared_for_a_method_without_soft_pu(qtbot):
    from app.views.common.demo import synthetic_inspection
    from app.views.explorer.softpu_panel import NO_SOFT_PU, SoftPUPanel
    panel = SoftPUPanel()
    qtbot.addWidget(panel)
    panel.resize(520, 300)
    panel.show()
    qtbot.waitExposed(panel)
    pu = synthetic_inspection().softpu
    panel.show_softpu(pu)
    assert panel.matrix_img.image is not None and panel.top.rowCount() > 0
    none = dataclasses.replace(pu, prototypes_seen=0, kappa=0.0)
    panel.show_softpu(none)
    qtbot.wait(50)
    assert panel.matrix_img.image is None and panel.top.rowCount() == 0
    assert len(panel.bars_gives.opts["height"]) == 0 and len(panel.bars_recv.opts["height"]) == 0
    assert not any(ln.isVisible() for ln in panel.sample_lines)
    for plot in (panel.weights, panel.matrix):
        _message_unclipped(plot, NO_SOFT_PU)
    # the header says it whole: wrapped, as high as the text needs
    h = panel.header
    assert "No soft-PU" in h.text() and h.wordWrap()
    assert h.height() >= h.heightForWidth(h.width())
    # a run without κ history: the histogram says why, wrapped inside the plot
    panel.set_kappa_history(None, note="run 7 (supervised) recorded no κ: its method has no soft-PU loss")
    qtbot.wait(50)
    _message_unclipped(panel.hist, "recorded no κ")


# ----------------------------------------------------------------------------------------------------------
# 4. M = 6: the validation legend is capped and the ★ stays in view
# ----------------------------------------------------------------------------------------------------------


def test_the_validation_legend_is_capped_at_six_modalities_and_the_star_stays_visible(qtbot):
    import pyqtgraph as pg
    from app.core.state import TrainingBuffers
    from app.views.training import VAL_LEGEND_CAP, TrainingPanel
    buf = TrainingBuffers()
    panel = TrainingPanel(buf)
    qtbot.addWidget(panel)
    panel.resize(1268, 690)  # the Training tab of a 1280 × 800 window
    panel.show()
    qtbot.waitExposed(panel)
    subsets = _subsets()
    g = np.random.default_rng(1)
    for e in range(10):  # subsets between 0.6 and 0.95; the mean score low and best at the last epoch, so
        # the ★ sits in the bottom right corner, where the legend goes by default
        val = {s: {"accuracy": 0.6 + 0.35 * (s.count("+") / 5) * (e + 1) / 10 + 0.01 * g.random()} for s in subsets}
        buf.add_epoch_event(_epoch(e, 10, val, 0.1 + 0.005 * e, True), "accuracy")
    panel.redraw(force=True)
    qtbot.wait(100)
    legend = panel.plot_val.getPlotItem().legend
    names = [label.text for _, label in legend.items]
    assert len(names) <= VAL_LEGEND_CAP + 1
    assert "pix+fou+fac+kar+zer+mor" in names and "val score (mean)" in names
    assert len(panel.val_curves) == 63  # every subset is still drawn
    # the ★ is drawn inside the plot, not under the legend
    star = panel.best_marker_point()
    assert star == (10.0, pytest.approx(0.145))
    vb = panel.plot_val.getViewBox()
    at = vb.mapViewToScene(pg.Point(*star))
    assert vb.sceneBoundingRect().contains(at)
    assert not legend.mapRectToScene(legend.boundingRect()).contains(at)
    assert _visible_scene_rect(panel.plot_val).contains(legend.mapRectToScene(legend.boundingRect()))
    # the rest: a list beside the plot, every subset, shown on demand
    assert panel.val_legend_bar.isVisible() and not panel.val_list.isVisible()
    panel.val_list_btn.click()
    assert panel.val_list.isVisible() and panel.val_list.count() == 63
    assert panel.val_list.item(0).text().startswith("pix ")


# ----------------------------------------------------------------------------------------------------------
# 5. the per-subset table of Sessions in modality order
# ----------------------------------------------------------------------------------------------------------


def test_the_per_subset_table_is_in_modality_order(qtbot, store, tiny):
    from app.views.sessions import SessionsPanel
    subsets = _subsets()
    ids = []
    for score in (0.9, 0.7):
        rid = store.create_run(tiny(), name=f"mfeat {score}", run_dir="/nowhere")
        store.add_epoch(rid, _epoch(0, 1, {s: {"accuracy": score} for s in subsets}, score, True))
        store.set_status(rid, "finished")
        ids.append(rid)
    panel = SessionsPanel(store)
    qtbot.addWidget(panel)
    panel.select_runs(ids)
    t = panel.subsets
    rows = [t.verticalHeaderItem(i).text() for i in range(t.rowCount())]
    # the engine's order: single modalities in the dataset's order (pix first), then pairs, …, all six
    assert rows == subsets + ["mean"]
    assert rows[:6] == list(MFEAT) and rows[6] == "pix+fou"


# ----------------------------------------------------------------------------------------------------------
# 6. empty plots say so, without axes or legend
# ----------------------------------------------------------------------------------------------------------


def test_an_empty_plot_shows_a_centred_message_without_axes_or_legend(qtbot):
    import pyqtgraph as pg
    from app.views.common.plot_util import clear_message, message_item, plot_message, show_message
    w = pg.PlotWidget()
    qtbot.addWidget(w)
    w.resize(400, 300)
    w.addLegend()
    w.plot([0, 1], [0, 1], name="a curve")
    w.show()
    qtbot.waitExposed(w)
    p = w.getPlotItem()
    show_message(w, "no run yet")
    qtbot.wait(20)
    assert plot_message(w) == "no run yet"
    assert not p.getAxis("left").isVisible() and not p.getAxis("bottom").isVisible()
    assert not p.legend.isVisible()
    item = message_item(w)
    box = item.mapRectToScene(item.boundingRect())
    centre = p.vb.sceneBoundingRect().center()
    assert abs(box.center().x() - centre.x()) <= 2 and abs(box.center().y() - centre.y()) <= 2
    clear_message(w)
    assert plot_message(w) == "" and not item.isVisible()
    assert p.getAxis("left").isVisible() and p.getAxis("bottom").isVisible() and p.legend.isVisible()


def test_the_panels_plots_say_what_is_missing(qtbot):
    from app.core.state import TrainingBuffers
    from app.views.analysis.robustness_panel import RobustnessPanel
    from app.views.explorer.softpu_panel import SoftPUPanel
    from app.views.common.plot_util import plot_message
    from app.views.training import TrainingPanel
    buf = TrainingBuffers()
    training = TrainingPanel(buf)
    qtbot.addWidget(training)
    training.redraw(force=True)
    plots = (training.plot_losses, training.plot_val, training.plot_norms, training.plot_kappa)
    assert [plot_message(p) for p in plots] == ["no run yet"] * 4
    assert not any(p.getPlotItem().getAxis("left").isVisible() for p in plots)
    # the first epoch: its plots show data (axes back), the per-step losses of a stored run say why not
    buf.add_epoch_event(_epoch(0, 2, {"a": {"accuracy": 0.5}}, 0.5, True, (), ("a",)), "accuracy")
    training.redraw(force=True)
    assert plot_message(training.plot_val) == "" and training.plot_val.getPlotItem().getAxis("left").isVisible()
    assert plot_message(training.plot_norms) == ""
    assert "stored run" in plot_message(training.plot_losses)
    softpu = SoftPUPanel()
    qtbot.addWidget(softpu)
    assert softpu.plot_messages()["softpu_weights"] == "no sample yet"
    assert "unavailable" in softpu.plot_messages()["kappa_history"]
    robustness = RobustnessPanel()
    qtbot.addWidget(robustness)
    assert plot_message(robustness.plot) == "no run yet" and not robustness.color_bar.isVisible()
    robustness.show_result(_robustness_result(2))
    assert plot_message(robustness.plot) == "" and robustness.color_bar.isVisible()
    robustness.shutdown()


# ----------------------------------------------------------------------------------------------------------
# 7. the explorer at 1280 × 800 with six modalities
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mfeat_checkpoint(tmp_path_factory) -> Path:
    """A tiny mfeat model (six modalities), or a skip when the mfeat cache is not built."""
    try:
        from robult_engine.data.mfeat import load_mfeat
        load_mfeat(build=False)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"mfeat cache not available ({e})")
    from robult_engine.config import RunConfig
    from robult_engine.trainer import Trainer
    cfg = RunConfig().replace(**{"data.dataset": "mfeat", "train.epochs": 1, "model.d_h": 16, "model.d_z": 8,
                                 "model.d_u": 4, "model.d_hidden": 16, "train.device": "cpu",
                                 "train.batch_size": 64, "data.label_fraction": 0.2}).validate()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        final = Trainer(cfg, out_dir=tmp_path_factory.mktemp("mfeat") / "run").run()
    finally:
        torch.set_num_threads(before)
    assert final.checkpoint_path
    return Path(final.checkpoint_path)


def test_the_explorer_fits_a_1280_by_800_window_at_six_modalities(qtbot, make_window, mfeat_checkpoint):
    import pyqtgraph as pg
    from app.core.analysis.standalone import loaded_from_checkpoint
    w = make_window()
    w.resize(1280, 800)
    explorer = w.explorer
    w.tabs.setCurrentWidget(explorer)
    w.set_current_model(loaded_from_checkpoint(str(mfeat_checkpoint)))
    wait_shown(qtbot, explorer, timeout=60_000)
    qtbot.wait(200)
    assert len(explorer.context.info.modalities) == 6
    # the window did not have to grow for the explorer: everything fits 800 pixels of height, and 1280 of width
    assert w.height() == 800
    hint = explorer.minimumSizeHint()
    assert hint.height() <= explorer.height() and hint.width() <= 1280 - 12
    for panel in (explorer.sample_panel, explorer.softpu):
        assert panel.width() >= panel.minimumSizeHint().width()
        assert panel.height() >= panel.minimumSizeHint().height()
        for plot in panel.findChildren(pg.PlotWidget):
            if plot.isVisible():  # no plot (or its title) is wider or taller than its widget: nothing is cut off
                item = plot.getPlotItem()
                assert item.width() <= plot.width() + 1 and item.height() <= plot.height() + 1, \
                    (item.titleLabel.text, plot.size(), item.size())
    # the 16 × 15 image whole in its view
    assert _check_image_fits(explorer.sample_panel.views["pix"]) >= 4
    for name, view in explorer.sample_panel.views.items():
        assert view.width() >= view.minimumSizeHint().width(), name
