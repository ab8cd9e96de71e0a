"""The app on a large dataset (Movies: 58,788 films) stays responsive — what benchmarks/app_scale_stall.py found
stalling the GUI thread, pinned here by what the code does rather than by how long it takes:

- the Latent space tab draws its up to 2 × 20,000 points in chunks (never all in one turn of the event loop),
  with one brush per colour (a brush per point rendered one symbol image per point: 3 s for 20,000);
- a click on a robustness cell or a flip-rate choice words at most MAX_FLIPS_LISTED flipped samples, and says
  how many there are;
- a slice of thousands of samples lists the first MAX_SLICE_SAMPLES_LISTED, and Prev / Next still reach all;
- the explorer's find field reads the split's ids and titles once, not on every Enter;
- at 1280 × 800 the explorer's latent plots show their whole titles (smaller type or wrapped), none clipped.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from explorer_helpers import dispose, wait_shown

WAIT = 60_000


# --- the Latent space tab -----------------------------------------------------------------------------------


def _latent_panel_with_points(qtbot, n: int, m: int = 4, classes: int = 7):
    from robult_engine.data.base import DatasetInfo, ModalitySpec

    from app.views.analysis.latent_view import LatentViewPanel
    panel = LatentViewPanel()
    qtbot.addWidget(panel)
    panel.resize(1200, 600)
    panel.show()
    qtbot.waitExposed(panel)
    info = DatasetInfo("films", tuple(ModalitySpec(f"m{i}", "vector", (3,)) for i in range(m)), "multi-label",
                       tuple(f"genre {k}" for k in range(classes)))
    panel.loaded = SimpleNamespace(info=info, labeled_indices=[])
    g = np.random.default_rng(0)
    target = (g.random((n, classes)) < 0.3).astype(np.float32)
    pts = {key: {"xy": g.normal(size=(m * n, 2)), "sample": np.tile(np.arange(n), m),
                 "modality": np.repeat(np.arange(m), n), "explained": np.array([0.5, 0.2])} for key in ("z", "u")}
    panel.points = {**pts, "split": "test", "index": np.arange(n) * 3, "target": target,
                    "labeled": np.zeros(n, bool), "total": 2 * n}
    return panel


def test_latent_view_adds_a_large_projection_in_chunks_sharing_one_brush_per_colour(qtbot):
    from app.views.analysis.latent_view import DRAW_CHUNK, SYMBOLS
    n, m = 5000, 4  # 20,000 points per plot, as Movies' test split gives after subsampling
    panel = _latent_panel_with_points(qtbot, n, m)
    try:
        with qtbot.waitSignal(panel.sig_drawn, timeout=WAIT):
            panel._draw()
            # the call itself adds one chunk; the rest come in later turns of the event loop
            assert len(panel.scatter["z"].data) + len(panel.scatter["u"].data) <= DRAW_CHUNK
            assert panel.drawing
        assert not panel.drawing
        for key in ("z", "u"):
            s = panel.scatter[key]
            assert len(s.data) == n * m
            # each point is the sample it says: (split, index) in the order of the projection
            pos = {(round(x, 9), round(y, 9)): d for x, y, d in zip(s.data["x"], s.data["y"], s.data["data"])}
            xy = panel.points[key]["xy"]
            for k in (0, 1, n * m - 1):
                assert pos[(round(xy[k, 0], 9), round(xy[k, 1], 9))] == ("test", 3 * int(panel.points[key]["sample"][k]))
            # one brush object per colour: the symbol atlas holds a few images, not one per point
            assert len({id(b) for b in s.data["brush"]}) <= len(panel.colours) + 1
            assert len(s.fragmentAtlas) <= (len(panel.colours) + 1) * min(m, len(SYMBOLS))
        # drawn again (another colouring): still no new symbol image per point
        with qtbot.waitSignal(panel.sig_drawn, timeout=WAIT):
            panel.colour_by.setCurrentText("modality")
        assert len(panel.scatter["z"].fragmentAtlas) <= 2 * (len(panel.colours) + 1) * min(m, len(SYMBOLS))
        assert {b.color().name() for b in panel.scatter["z"].data["brush"]} == {c.lower() for c in panel.colours}
    finally:
        dispose(qtbot, panel)
    panel = _latent_panel_with_points(qtbot, 200, 2)  # a small projection is drawn at once, as before
    try:
        with qtbot.waitSignal(panel.sig_drawn, timeout=1000):
            panel._draw()
            assert len(panel.scatter["z"].data) == 400 and not panel.drawing
    finally:
        dispose(qtbot, panel)


# --- flip lists ------------------------------------------------------------------------------------------------


def _all_flip(n: int):
    """An encoded split of n samples whose image-only prediction differs from the full one for every sample."""
    from robult_engine.evaluation import EncodedSplit
    lm = torch.zeros(n, 2, 4)
    lm[:, 0, 0] = 5.0  # the image says class 0
    lm[:, 1, 1] = 12.0  # the audio says class 1, louder: with both, class 1
    target = torch.ones(n, dtype=torch.long)
    return EncodedSplit(lm, torch.zeros(n, 2, 0), torch.zeros(n, 2, 0), torch.zeros(n, 2),
                        torch.ones(n, 2, dtype=torch.bool), target)


def test_a_cell_with_thousands_of_flips_words_only_the_first_ones(qtbot):
    from app.core.analysis.robustness import RobustnessResult, RunRef
    from app.core.analysis.task_language import MAX_FLIPS_LISTED
    from app.views.analysis.robustness_panel import RobustnessPanel
    from robult_engine.evaluation import modality_subsets
    n = 3 * MAX_FLIPS_LISTED + 17
    names = ("image", "audio")
    subsets = modality_subsets(names)
    run = RunRef(1, "#1 robult", "robult", "")
    result = RobustnessResult("test", "single-label", names, subsets, [run],
                              {run.label: {s: {"accuracy": 0.5} for s, _ in subsets}}, {run.label: _all_flip(n)})
    panel = RobustnessPanel()
    qtbot.addWidget(panel)
    try:
        panel.show_result(result)
        row = next(i for i, (_, mask) in enumerate(subsets) if tuple(mask) == (True, False))
        idx = panel.select_cell(row, 0)
        assert len(idx) == n and panel.flip_rows == list(range(n))  # every flip is counted …
        assert panel.flips.count() == MAX_FLIPS_LISTED  # … the first ones are worded
        assert [panel.flips.item(k).text().split(":")[0] for k in (0, MAX_FLIPS_LISTED - 1)] == \
            ["#0", f"#{MAX_FLIPS_LISTED - 1}"]
        title = panel.flips_title.text()
        assert f"{n} of {n}" in title and f"the first {MAX_FLIPS_LISTED:,} of {n:,} are listed" in title
        # a list that fits is listed whole and says nothing more
        result.encodings[run.label] = _all_flip(12)
        panel.show_result(result)
        panel.select_cell(row, 0)
        assert panel.flips.count() == 12 and "are listed" not in panel.flips_title.text()
    finally:
        dispose(qtbot, panel)


def test_the_missing_rate_curves_word_only_the_first_flips_too(qtbot):
    from app.core.analysis.curves import CurveResult
    from app.core.analysis.robustness import RunRef
    from app.core.analysis.task_language import MAX_FLIPS_LISTED
    from app.views.analysis.missing_curves import MissingCurvesPanel
    n = 2 * MAX_FLIPS_LISTED + 5
    mask = torch.zeros(n, 2, dtype=torch.bool)
    mask[:, 0] = True  # the audio is missing for every sample
    run = RunRef(1, "#1 robult", "robult", "")
    curves = CurveResult("test", "single-label", ("image", "audio"), ["mcar:0.5"], [0.5], [0.5],
                         {"mcar:0.5": mask}, [run], {}, {run.label: _all_flip(n)})
    panel = MissingCurvesPanel()
    qtbot.addWidget(panel)
    try:
        panel.result = curves
        assert len(panel.show_flips(run.label, "mcar:0.5")) == n
        assert len(panel.flip_rows) == n and panel.flips.count() == MAX_FLIPS_LISTED
        assert f"the first {MAX_FLIPS_LISTED:,} of {n:,} are listed" in panel.flips_title.text()
    finally:
        dispose(qtbot, panel)


# --- the find field ------------------------------------------------------------------------------------------


class _CountingTexts(dict):
    """A split's texts that count how often they are read."""
    reads = 0

    def values(self):
        type(self).reads += 1
        return super().values()


def _films_bundle(titles: list[str]):
    from robult_engine.data.base import DatasetBundle, DatasetInfo, ModalitySpec, SplitData
    n = len(titles)
    info = DatasetInfo("films", (ModalitySpec("title", "text", (4,)), ModalitySpec("timing", "vector", (2,))),
                       "multi-label", ("Drama", "Comedy"))
    split = SplitData({"title": torch.zeros(n, 4, dtype=torch.long), "timing": torch.zeros(n, 2)}, {},
                      torch.ones(n, 2, dtype=torch.bool), torch.zeros(n, 2), ids=[f"movies-{100 + i}" for i in range(n)],
                      texts=_CountingTexts(title=list(titles)))
    return info, DatasetBundle(info, {"test": split})


def test_find_reads_the_splits_ids_and_titles_once_not_on_every_enter(qtbot):
    from app.views.explorer.sample_panel import SamplePanel
    titles = ["Love Actually", "The Matrix", "Lovely Bones", "Casablanca", "Glove Story", "Movies 101"]
    info, bundle = _films_bundle(titles)
    panel = SamplePanel()
    qtbot.addWidget(panel)
    _CountingTexts.reads = 0
    panel.set_context(info, bundle)
    assert panel.matches("LOVE").tolist() == [0, 2, 4]  # ignoring case, anywhere in the title
    assert panel.matches("movies-10").tolist() == [0, 1, 2, 3, 4, 5]  # the ids
    assert panel.matches("movies").tolist() == [0, 1, 2, 3, 4, 5]  # ids and the title "Movies 101"
    assert panel.matches("101").tolist() == [1, 5]  # id movies-101 and the title
    assert panel.matches("  ").tolist() == []
    for _ in range(20):
        panel.matches("love")
    assert _CountingTexts.reads == 1  # read once for the split, then searched as prepared
    # another dataset: its own titles
    info2, bundle2 = _films_bundle(["Heat", "Love Story"])
    panel.set_context(info2, bundle2)
    assert panel.matches("love").tolist() == [1]
    panel.find.setText("love")
    with qtbot.waitSignal(panel.sig_sample_requested, timeout=1000) as sig:
        panel.find_next()
    assert sig.args[0].index == 1 and panel.find_info.text() == "1 of 1"


# --- the explorer at 1280 × 800 ----------------------------------------------------------------------------------


def test_the_explorer_latent_plots_show_their_whole_titles_at_1280_by_800(qtbot, make_window, trained_checkpoint):
    from app.core.analysis.standalone import loaded_from_checkpoint
    w = make_window()
    w.resize(1280, 800)
    explorer = w.explorer
    w.tabs.setCurrentWidget(explorer)
    w.set_current_model(loaded_from_checkpoint(str(trained_checkpoint)))
    wait_shown(qtbot, explorer, timeout=WAIT)
    qtbot.wait(200)
    lat = explorer.latents
    full = {"norms": "redundant · ", "rec": "Reconstruction error ‖H − Ĥ‖²", "modpred": "Each modality alone"}
    for toggle in (None, 0):
        if toggle is not None:  # the modalities' own predictions change the title with the toggles
            gen = explorer.state.generation
            explorer.toggle(toggle)
            qtbot.waitUntil(lambda: explorer.shown_generation > gen, timeout=WAIT)
            qtbot.wait(50)
        for key, plot in (("norms", lat.norms), ("rec", lat.rec), ("modpred", lat.modpred)):
            item = plot.getPlotItem()
            label = item.titleLabel
            # the plot item is no wider than its widget (a wide title pushed it out: title and axes clipped) …
            assert item.width() <= plot.width() + 1, (key, item.width(), plot.width())
            # … the title lies within the plot, over its view box …
            rect = label.mapRectToScene(label.itemRect())
            vb = item.getViewBox().sceneBoundingRect()
            assert rect.left() >= item.sceneBoundingRect().left() - 1 and rect.right() <= vb.right() + 6, \
                (key, rect, vb)
            # … and says all it has to say (no text cut off or elided)
            assert full[key] in label.text and "…" not in label.text
            assert lat.titles[key].point_size >= 8


def test_a_slice_of_thousands_lists_its_first_samples_and_steps_through_all(qtbot):
    from robult_engine.slices import Slice

    from app.views.analysis.slices_view import MAX_SLICE_SAMPLES_LISTED, SlicesResult, SlicesView
    n = 3 * MAX_SLICE_SAMPLES_LISTED + 7
    rows = np.arange(0, 2 * n, 2)  # the slice's samples: every second one of the split
    inputs = SimpleNamespace(task="multi-label", features=[], errors_all=np.full(2 * n, 0.25),
                             used_mask=np.ones((2 * n, 2), dtype=bool), predicted=np.full(2 * n, -1))
    big = Slice((("production", "absent"),), n, 0.4, 0.2, 1.0, rows)
    small = Slice((("timing", "long"),), 3, 0.5, 0.2, 0.5, np.array([1, 5, 9]))
    report = SimpleNamespace(slices=[big, small], inputs=inputs, split="test", task="multi-label",
                             error_name="hamming", n=2 * n, error_overall=0.2, min_support=3, max_order=2,
                             alpha=0.95, missing="", mask_seed=0, notes=[])
    view = SlicesView()
    qtbot.addWidget(view)
    opened = []
    view.sig_open_sample.connect(lambda split, i, used: opened.append(i))
    try:
        view.show_result(SlicesResult(report, ("Drama", "Comedy"), ("title", "timing")))
        assert view.current_slice == 0 and view.sample_rows == rows.tolist()  # every sample is kept …
        assert view.samples.count() == MAX_SLICE_SAMPLES_LISTED  # … the first ones are listed
        assert f"the first {MAX_SLICE_SAMPLES_LISTED:,} of {n:,} are listed" in view.samples_title.text()
        # Prev from nothing wraps to the slice's last sample, beyond the listed ones; Next and Prev go on from there
        assert view.previous() == int(rows[-1]) and view.samples.currentRow() == -1
        assert view.next() == int(rows[0]) and view.samples.currentRow() == 0
        view.open_sample_at(MAX_SLICE_SAMPLES_LISTED - 1)
        assert view.next() == int(rows[MAX_SLICE_SAMPLES_LISTED]) and view.samples.currentRow() == -1
        assert view.next() == int(rows[MAX_SLICE_SAMPLES_LISTED + 1])
        assert view.previous() == int(rows[MAX_SLICE_SAMPLES_LISTED])
        assert view.previous() == int(rows[MAX_SLICE_SAMPLES_LISTED - 1])
        assert view.samples.currentRow() == MAX_SLICE_SAMPLES_LISTED - 1
        assert opened[-1] == int(rows[MAX_SLICE_SAMPLES_LISTED - 1])
        # a small slice is listed whole, as before
        view.table.selectRow(1)
        assert view.current_slice == 1 and view.samples.count() == 3 and "are listed" not in view.samples_title.text()
    finally:
        dispose(qtbot, view)
