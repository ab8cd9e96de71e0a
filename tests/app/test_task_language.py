"""Every explorer view speaks the task's language: flips per task (a label set's change read as +Drama −Comedy,
a score's as 2.31 → −0.40), 23 labels in natural order without overlapping values, distinct colours and a
legend beside the points, sequence titles per modality kind, φ's unit per task, and the latent view saying it
shows a subsample.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from explorer_helpers import dispose

GENRES = ("Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary", "Drama", "Family",
          "Fantasy", "History", "Horror", "Music", "Musical", "Mystery", "News", "Romance", "Sci-Fi", "Short",
          "Sport", "Thriller", "War", "Western")  # 23 labels
TEXT_ORDER = tuple(sorted(f"g{i}" for i in range(23)))  # g0, g1, g10, g11, …, g19, g2, g20, … (as a loader sorts)
NATURAL = tuple(f"g{i}" for i in range(23))


def _enc(logits_mod: torch.Tensor, target: torch.Tensor):
    from robult_engine.evaluation import EncodedSplit
    n, m, _ = logits_mod.shape
    return EncodedSplit(logits_mod, torch.zeros(n, m, 0), torch.zeros(n, m, 0), torch.zeros(n, m),
                        torch.ones(n, m, dtype=torch.bool), target)


def _result(enc, task: str, names=("text", "vision")):
    from app.core.analysis.robustness import RobustnessResult, RunRef
    from robult_engine.evaluation import metrics_from_encoded, modality_subsets
    run = RunRef(1, "#1 robult", "robult", "")
    return RobustnessResult("test", task, names, modality_subsets(names), [run],
                            {run.label: metrics_from_encoded(enc, names, task)}, {run.label: enc})


def _multi_label_split(n: int = 400, seed: int = 0):
    """23 labels, three on per item. For half of the items a fourth, borderline label is on with both
    modalities and off with the text alone (a small change, not a flip); items 5, 15, …, 95 (10) get Drama
    instead of Comedy from the text (a flip)."""
    g = torch.Generator().manual_seed(seed)
    c = len(GENRES)
    comedy, drama = GENRES.index("Comedy"), GENRES.index("Drama")
    lm = torch.full((n, 2, c), -4.0)
    target = torch.zeros(n, c)
    flips = list(range(5, 100, 10))
    for i in range(n):
        others = [j for j in torch.randperm(c, generator=g).tolist() if j not in (comedy, drama)][:3]
        if i in flips:
            on = [comedy, others[0]]
            lm[i, :, on] = 4.0
            lm[i, :, comedy] = torch.tensor([-6.0, 8.0])  # all modalities: Comedy; the text alone: not …
            lm[i, :, drama] = torch.tensor([6.0, -8.0])  # … but Drama
        else:
            on = others
            lm[i, :, on] = 4.0
            if i % 2 == 0:
                w = others[0] + 1 if others[0] + 1 < c and others[0] + 1 not in on else None
                if w is not None and w not in (comedy, drama):
                    lm[i, 0, w], lm[i, 1, w] = -1.0, 1.5  # on with both (mean 0.25), off with the text alone
        target[i, on] = 1.0
    return _enc(lm, target), flips


def _row_of(result, mask):
    return next(i for i, (_, m) in enumerate(result.subsets) if tuple(m) == tuple(mask))


# --- flips ------------------------------------------------------------------------------------------------------


def test_multi_label_flips_are_label_set_changes_read_as_plus_minus_names(qtbot):
    from app.core.analysis.curves import CurveResult
    from app.views.analysis.missing_curves import MissingCurvesPanel
    from app.views.analysis.robustness_panel import RobustnessPanel
    from robult_engine.inspect import flipped_samples
    enc, want = _multi_label_split()
    # any label crossing 0.5 would count about half of the items; the label set rule counts the 10 real ones
    assert len(flipped_samples(enc, (True, False), "multi-label")) > 150
    result = _result(enc, "multi-label")
    panel = RobustnessPanel()
    try:
        panel.class_names = GENRES
        panel.show_result(result)
        idx = panel.select_cell(_row_of(result, (True, False)), 0)
        assert idx.tolist() == want and panel.flips.count() == len(want)
        assert "10 of 400" in panel.flips_title.text() and "Jaccard" in panel.flips_title.text()
        texts = [panel.flips.item(k).text() for k in range(panel.flips.count())]
        assert all("+Drama −Comedy" in t for t in texts), texts[:3]
        assert not any("[" in t or "tensor" in t for t in texts)  # no raw 0/1 vectors
        assert "{" in panel.flips.item(0).toolTip() and "Comedy" in panel.flips.item(0).toolTip()
    finally:
        dispose(qtbot, panel)
    # the missing-rate curves list the same flips under a mask that keeps the text of every sample
    mask = torch.zeros(len(enc.target), 2, dtype=torch.bool)
    mask[:, 0] = True
    curves = CurveResult("test", "multi-label", ("text", "vision"), ["mcar:0.5"], [0.5], [0.5], {"mcar:0.5": mask},
                         result.runs, {}, result.encodings)
    cp = MissingCurvesPanel()
    try:
        cp.class_names = GENRES
        cp.result = curves
        assert cp.show_flips("#1 robult", "mcar:0.5").tolist() == want
        assert all("text: +Drama −Comedy" in cp.flips.item(k).text() for k in range(cp.flips.count()))
    finally:
        dispose(qtbot, cp)


def test_regression_flips_cross_zero_or_move_a_target_sd_and_read_as_scores(qtbot):
    from app.views.analysis.robustness_panel import RobustnessPanel
    n = 50
    g = torch.Generator().manual_seed(3)
    target = torch.randn(n, generator=g)
    target = (target - target.mean()) / target.std()  # σ = 1, centred: a sentiment-like score
    full = torch.linspace(-1.5, 1.5, n)
    text = full.clone()  # the text alone agrees with all modalities …
    full[0], text[0] = 2.31, -0.40  # … except: a large move across 0 (flip)
    full[1], text[1] = 0.10, -0.05  # a wobble around 0 (no flip: 0.15 < 0.5 σ)
    full[2], text[2] = 1.00, 1.30  # a small move (no flip)
    full[3], text[3] = 0.40, -0.30  # across 0 by 0.7 ≥ 0.5 σ (flip)
    full[4], text[4] = 1.20, 2.40  # no sign change but 1.2 ≥ 1 σ (flip)
    lm = torch.stack([text, 2 * full - text], 1)[:, :, None]  # the mean of the two is the full prediction
    result = _result(_enc(lm, target), "regression")
    panel = RobustnessPanel()
    try:
        panel.class_names = ("score",)
        panel.show_result(result)
        idx = panel.select_cell(_row_of(result, (True, False)), 0)
        assert idx.tolist() == [0, 3, 4]
        first = panel.flips.item(0).text()
        assert "2.31 → −0.40" in first and "score" not in first and "→ 1" not in first
        assert "0.40 → −0.30" in panel.flips.item(1).text()
        assert "σ" in panel.flips_title.text()  # the rule is said
    finally:
        dispose(qtbot, panel)


# --- 23 labels: heat map, predictions, latent legend ------------------------------------------------------------


def _sample_encoding(c: int, m: int = 2, seed: int = 0):
    from robult_engine.inspect import SampleEncoding
    g = torch.Generator().manual_seed(seed)
    return SampleEncoding(modality_names=("text", "vision")[:m], present=torch.ones(m, dtype=torch.bool),
                          logits_mod=torch.randn(m, c, generator=g) * 2, z=torch.randn(m, 8, generator=g),
                          u=torch.randn(m, 4, generator=g), rec_err=torch.rand(m, generator=g),
                          s=torch.randn(8, generator=g), logits_fused=torch.randn(c, generator=g))


def _axis_labels(plot, axis: str) -> list[str]:
    ticks = plot.getPlotItem().getAxis(axis)._tickLevels
    return [t for _, t in sorted(ticks[0])] if ticks else []


def _no_overlap(texts) -> bool:
    rects = [t.sceneBoundingRect() for t in texts]
    return not any(rects[i].intersects(rects[j]) for i in range(len(rects)) for j in range(i + 1, len(rects)))


@pytest.mark.parametrize("size", [(700, 600), (360, 300)])
def test_heat_map_of_23_labels_is_in_natural_order_with_values_that_never_overlap(qtbot, size):
    from PySide6.QtCore import QRectF

    from app.views.explorer.latents_panel import LatentsPanel
    from robult_engine.inspect import recombine
    insp = recombine(_sample_encoding(23), (True, True), "multi-label", TEXT_ORDER)
    panel = LatentsPanel()
    qtbot.addWidget(panel)
    panel.resize(*size)
    panel.show()
    qtbot.waitExposed(panel)
    panel.show_inspection(insp)
    qtbot.wait(50)
    labels = max((_axis_labels(panel.modpred, a) for a in ("left", "bottom")), key=len)
    assert labels == list(NATURAL)  # every label named, g2 before g10
    shown = [t for t in panel.cell_texts if t.isVisible() and t.textItem.toPlainText()]
    assert _no_overlap(shown)
    vb = panel.modpred.getPlotItem().getViewBox()
    for t in shown:  # a value lies inside its cell
        x, y = np.floor(t.pos().x()), np.floor(t.pos().y())
        cell = vb.mapViewToScene(QRectF(x, y, 1, 1)).boundingRect()
        assert cell.adjusted(-0.5, -0.5, 0.5, 0.5).contains(t.sceneBoundingRect())
    # the image's values follow the axis: the cell of g10 holds g10's probability
    img = np.asarray(panel.modpred_img.image)
    per_label = img if img.shape[0] == 23 else img.T  # (labels, modalities)
    np.testing.assert_allclose(per_label[10], insp.mod_probs[:, TEXT_ORDER.index("g10")])


def test_prediction_bars_follow_natural_label_order_and_name_what_fits(qtbot):
    from PySide6.QtGui import QFontMetricsF

    from app.views.explorer.predictions_panel import PredictionsPanel
    from robult_engine.inspect import recombine
    insp = recombine(_sample_encoding(23), (True, False), "multi-label", TEXT_ORDER)
    panel = PredictionsPanel()
    qtbot.addWidget(panel)
    panel.resize(460, 420)
    panel.show()
    qtbot.waitExposed(panel)
    panel.show_inspection(insp)
    qtbot.wait(20)
    x = np.asarray(panel.bars_sub.opts["x"], dtype=float)
    assert x[TEXT_ORDER.index("g2")] < x[TEXT_ORDER.index("g10")]
    labels = _axis_labels(panel.plot, "bottom")
    step = NATURAL.index(labels[1]) if len(labels) > 1 else 1
    assert labels == list(NATURAL[::step])  # g0, g1, g2, … (every k-th when they would not fit)
    ax = panel.plot.getPlotItem().getAxis("bottom")
    vb = panel.plot.getPlotItem().getViewBox()
    px = vb.width() / vb.viewRect().width()
    assert step * px >= max(QFontMetricsF(ax.font()).horizontalAdvance(n) for n in labels)  # no overlap
    assert panel.plot.getPlotItem().legend is None  # the colour key is in the title, not over the bars


def _latent_panel(qtbot, classes, task, n=460, seed=0):
    from app.views.analysis.latent_view import LatentViewPanel
    from robult_engine.data.base import DatasetInfo, ModalitySpec
    g = np.random.default_rng(seed)
    info = DatasetInfo("demo", (ModalitySpec("text", "vector", (8,)), ModalitySpec("vision", "vector", (8,))),
                       task, tuple(classes))
    panel = LatentViewPanel()
    panel.loaded = SimpleNamespace(info=info, labeled_indices=[])
    c = len(classes)
    cls = np.arange(n) % c
    if task == "multi-label":
        target = np.zeros((n, c), np.float32)
        target[np.arange(n), cls] = 1
    elif task == "regression":
        target = g.normal(size=n).astype(np.float32)
    else:
        target = cls
    pts = {}
    for key in ("z", "u"):
        xy = np.concatenate([g.normal(size=(n, 2)) + 3 * np.c_[np.cos(cls), np.sin(cls)] for _ in range(2)])
        pts[key] = {"xy": xy, "sample": np.tile(np.arange(n), 2), "modality": np.repeat(np.arange(2), n),
                    "explained": np.array([0.5, 0.2])}
    panel.points = {**pts, "split": "test", "index": np.arange(n), "target": target,
                    "labeled": np.zeros(n, bool), "total": n}
    panel.resize(1000, 520)
    panel.show()
    qtbot.waitExposed(panel)
    panel._draw()
    qtbot.wait(20)
    return panel


def test_latent_view_gives_23_classes_distinct_colours_and_a_legend_beside_the_points(qtbot):
    from PySide6.QtCore import QRect
    panel = _latent_panel(qtbot, TEXT_ORDER, "multi-label")
    try:
        assert panel.colour_names == list(NATURAL)
        assert len(set(panel.colours)) == 23
        brushes = {b.color().name() for b in panel.scatter["z"].data["brush"]}
        assert len(brushes) == 23
        legend = panel.legend
        assert legend.isVisible() and legend.count() >= 23
        for plot in (panel.plot_z, panel.plot_u):
            vb = plot.getPlotItem().getViewBox()
            data_rect = plot.mapFromScene(vb.sceneBoundingRect()).boundingRect()
            data_in_panel = QRect(plot.mapTo(panel, data_rect.topLeft()), data_rect.size())
            legend_in_panel = QRect(legend.mapTo(panel, legend.rect().topLeft()), legend.size())
            assert not data_in_panel.intersects(legend_in_panel)
        panel.legend_btn.click()  # it folds away
        assert not panel.legend.isVisible()
    finally:
        dispose(qtbot, panel)


def test_latent_view_groups_classes_beyond_24_and_names_a_negative_score(qtbot):
    panel = _latent_panel(qtbot, [f"c{i}" for i in range(30)], "single-label")
    try:
        assert len(panel.colour_names) == 24 and panel.colour_names[-1] == "other (7 classes)"
        assert len(set(panel.colours)) == 24
    finally:
        dispose(qtbot, panel)
    panel = _latent_panel(qtbot, ("score",), "regression")
    try:
        items = [panel.legend.item(k).text() for k in range(panel.legend.count())]
        assert "score < 0" in items and "score ≥ 0" in items
    finally:
        dispose(qtbot, panel)


def test_latent_view_says_when_it_shows_a_random_subsample(qtbot, monkeypatch):
    import app.views.analysis.latent_view as lv
    from robult_engine.config import RunConfig
    from robult_engine.data.base import DatasetInfo, ModalitySpec, SplitData
    from robult_engine.models.robult import build_model
    info = DatasetInfo("tiny", (ModalitySpec("a", "vector", (6,)), ModalitySpec("b", "vector", (4,))),
                       "single-label", ("x", "y", "z"))
    cfg = RunConfig().replace(**{"model.d_h": 8, "model.d_z": 4, "model.d_u": 4, "model.d_hidden": 8})
    torch.manual_seed(0)
    model = build_model(cfg.model, info).eval()
    n = 50
    split = SplitData({"a": torch.randn(n, 6), "b": torch.randn(n, 4)}, {}, torch.ones(n, 2, dtype=torch.bool),
                      torch.arange(n) % 3)
    monkeypatch.setattr(lv, "MAX_POINTS", 40)  # 2 modalities: 20 samples of 50
    panel = lv.LatentViewPanel()
    try:
        with qtbot.waitSignal(panel.sig_points_ready, timeout=30_000):
            panel.set_context(SimpleNamespace(model=model, info=info, labeled_indices=[]),
                              SimpleNamespace(splits={"test": split}))
        for plot in (panel.plot_z, panel.plot_u):
            assert "showing 20 of 50 test samples (random subsample" in plot.getPlotItem().titleLabel.text
        assert "showing 20 of 50" in panel.note.text()
    finally:
        dispose(qtbot, panel)


# --- names and units --------------------------------------------------------------------------------------------


def test_sequence_modalities_are_titled_by_their_kind(qtbot):
    from app.views.explorer.sample_panel import SamplePanel
    from robult_engine.data.base import DatasetInfo, ModalitySpec
    info = DatasetInfo("mosei-like", (ModalitySpec("text", "sequence", (50, 300)),
                                      ModalitySpec("audio", "sequence", (50, 74)),
                                      ModalitySpec("vision", "sequence", (50, 35)),
                                      ModalitySpec("speech", "sequence", (90, 13))), "regression", ("score",))
    panel = SamplePanel()
    qtbot.addWidget(panel)
    panel.set_context(info)
    title = {n: panel.views[n].frames.getPlotItem().titleLabel.text for n in info.modality_names}
    assert "text features per token" in title["text"] and "MFCC" not in title["text"]
    assert "audio features per frame" in title["audio"] and "MFCC" not in title["audio"]  # COVAREP, not MFCC
    assert "vision features per frame" in title["vision"] and "MFCC" not in title["vision"]
    assert "audio features per frame (MFCC)" in title["speech"]  # the 13 coefficients of the audio front-end
    assert panel.views["speech"].wave is not None and panel.views["vision"].wave is None
    assert panel.views["text"].frames.getPlotItem().getAxis("bottom").labelText == "token"


@pytest.mark.parametrize("task,unit,absent", [("single-label", "nats of log-probability", "target"),
                                              ("multi-label", "per label", "target"),
                                              ("regression", "units of the target", "nats")])
def test_phi_axes_carry_the_unit_of_the_task(qtbot, task, unit, absent):
    from app.views.explorer.attribution_panel import AttributionPanel
    from app.views.analysis.calibration_panel import CalibrationPanel, synthetic_study
    panel = AttributionPanel()
    qtbot.addWidget(panel)
    panel.set_context(None, task, ("score",) if task == "regression" else GENRES)
    label = panel.plot.getPlotItem().getAxis("left").labelText
    assert unit in label and absent not in label
    cal = CalibrationPanel()
    try:
        cal.show_study(dataclasses.replace(synthetic_study(m=2, n=120), task=task))
        label = cal.attr_plot.getPlotItem().getAxis("left").labelText
        assert unit in label and absent not in label
    finally:
        dispose(qtbot, cal)


def test_phi_of_a_multi_label_model_explains_the_label_the_user_chooses(qtbot):
    from app.views.explorer.attribution_panel import AttributionPanel
    from robult_engine.explain.attribution import shapley_values
    panel = AttributionPanel()
    qtbot.addWidget(panel)
    panel.set_context(None, "multi-label", TEXT_ORDER)
    panel.show()
    enc = _sample_encoding(23)
    top = panel.show_sample(enc, (True, True), enc.modality_names)
    assert panel.label_box.isVisible() and panel.label_box.count() == 24
    assert [panel.label_box.itemText(k) for k in range(1, 24)] == list(NATURAL)
    panel.choose_label("g10")
    j = TEXT_ORDER.index("g10")
    assert panel.phi.output == j
    prior = panel.prior
    want = shapley_values(enc.logits_mod[None], torch.ones(1, 2, dtype=torch.bool), prior, "multi-label",
                          explain=j).phi[0]
    np.testing.assert_allclose(panel.phi.phi, want.numpy(), atol=1e-12)
    assert "chosen label <b>g10</b>" in panel.header.text()
    panel.choose_label(None)  # back to the top label
    assert panel.phi.output == top.output and "top label" in panel.header.text()


def test_the_reliability_plot_says_why_it_is_empty_instead_of_bare_axes(qtbot):
    from app.views.analysis.calibration_panel import CalibrationPanel, synthetic_study
    from app.views.common.plot_util import plot_message
    cal = CalibrationPanel()
    try:
        assert "Press Compute" in plot_message(cal.reliability) and not cal.diagonal.isVisible()
        study = synthetic_study(m=2, n=120)
        cal.show_study(study)
        assert plot_message(cal.reliability) == "" and cal.diagonal.isVisible() and cal.curves
        cal.set_checked_subsets([])
        assert "Tick a modality subset" in plot_message(cal.reliability)
        note = "calibration needs class probabilities; a regression model outputs a point score"
        scores = dataclasses.replace(study, task="regression", note=note, tables={
            run: {name: dataclasses.replace(row, reliability=None) for name, row in table.items()}
            for run, table in study.tables.items()})
        cal.show_study(scores)
        assert plot_message(cal.reliability) == note and not cal.diagonal.isVisible()
        assert not cal.reliability.getPlotItem().getAxis("bottom").isVisible()
    finally:
        dispose(qtbot, cal)
