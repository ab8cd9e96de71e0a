"""The Dataset PID tab: a new model or dataset clears what was shown (rows, axes, "done in …") and says nothing
is computed yet; a late answer for the previous one is dropped; multi-label data gets a Label box (the class
names in the dataset's order) whose label the PID is of, as `robult pid --label`; a regression target is
binned as `robult pid` bins it, and the tab says so."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from explorer_helpers import dispose
from robult_engine.config import RunConfig
from robult_engine.data.base import DatasetBundle, DatasetInfo, ModalitySpec, SplitData

pytest.importorskip("scipy")

TINY_MODEL = {"model.d_h": 16, "model.d_z": 8, "model.d_u": 4, "model.d_hidden": 16, "model.dropout": 0.0}


def small_bundle(task: str, name: str, seed: int = 0, n: int = 90) -> DatasetBundle:
    """Three vector modalities and a target of `task` (multi-label: three labels, each seen by one modality)."""
    rng = np.random.default_rng(seed)
    classes = {"single-label": ("no", "yes"), "multi-label": ("Drama", "Comedy", "Horror"),
               "regression": ("score",)}[task]
    splits = {}
    for split, k in (("train", n), ("val", n // 3), ("test", n // 3)):
        bits = rng.integers(0, 2, (k, 3))
        inputs = {f"m{i}": torch.from_numpy((rng.normal(size=(k, 6)) + 2 * bits[:, [i]]).astype(np.float32))
                  for i in range(3)}
        if task == "multi-label":
            target = torch.from_numpy(bits.astype(np.float32))
        elif task == "regression":
            target = torch.from_numpy(bits.sum(1).astype(np.float32) + rng.normal(size=k).astype(np.float32) * 0.1)
        else:
            target = torch.from_numpy(bits[:, 0].astype(np.int64))
        splits[split] = SplitData(inputs=inputs, lengths={}, mask=torch.ones(k, 3, dtype=torch.bool), target=target)
    info = DatasetInfo(name, tuple(ModalitySpec(f"m{i}", "vector", (6,)) for i in range(3)), task, classes)
    return DatasetBundle(info, splits)


def loaded_for(bundle):
    from app.core.state import LoadedModel
    from robult_engine.models import build_model
    cfg = RunConfig().replace(**TINY_MODEL)
    torch.manual_seed(0)
    model = build_model(cfg.model, bundle.info, method=cfg.method).eval()
    return LoadedModel(model=model, config=cfg, info=bundle.info, checkpoint_path="", run_id=None,
                       labeled_indices=torch.zeros(0, dtype=torch.long))


@pytest.fixture
def panel(qtbot):
    from app.core.analysis.explain import PIDCache
    from app.views.analysis.pid_panel import DatasetPIDPanel
    p = DatasetPIDPanel(cache=PIDCache())
    qtbot.addWidget(p)
    p.resize(1100, 650)
    p.show()
    yield p
    dispose(qtbot, p)


def left_ticks(p) -> list[str]:
    levels = p.pid_plot.getPlotItem().getAxis("left")._tickLevels
    return [text for level in (levels or []) for _, text in level]


def compute(qtbot, p, timeout=120_000):
    with qtbot.waitSignal(p.sig_result_ready, timeout=timeout):
        p.compute()
    return p.result


def assert_cleared(p, dataset: str) -> None:
    assert p.result is None and not p.export_btn.isEnabled()
    assert len(p.pid_bars["R"].opts["width"]) == 0 and len(p.bars_z.opts["height"]) == 0
    assert left_ticks(p) == []  # no pair of the previous dataset on the axis
    assert "done" not in p.progress.format() and p.progress.value() <= 0
    assert "Nothing is computed yet" in p.info.text() and dataset in p.info.text()
    assert p.compute_btn.isEnabled()


def test_a_new_dataset_or_model_clears_the_previous_result(qtbot, panel):
    from app.views.analysis.pid_panel import synthetic_result
    a, b = small_bundle("single-label", "first"), small_bundle("single-label", "second", seed=1)
    lm_a = loaded_for(a)
    panel.set_context(lm_a, a)
    panel.compute_fn = lambda *_a, **_k: synthetic_result()
    compute(qtbot, panel)
    assert "done in" in panel.progress.format() and left_ticks(panel)  # the pairs are on the axis
    panel.set_context(loaded_for(b), b)  # another dataset (and its model)
    assert_cleared(panel, "second")
    assert panel.progress.format() == "not computed yet"
    compute(qtbot, panel)
    panel.set_context(loaded_for(b), b)  # another model on the same dataset
    assert_cleared(panel, "second")


def test_an_answer_for_the_previous_dataset_is_dropped(qtbot, panel):
    from app.views.analysis.pid_panel import synthetic_result
    a, b = small_bundle("single-label", "first"), small_bundle("single-label", "second", seed=1)
    release = threading.Event()

    def slow(*_a, **_k):  # ignores the cancel: its answer arrives after the switch
        release.wait(30)
        return synthetic_result()

    panel.set_context(loaded_for(a), a)
    panel.compute_fn = slow
    seen = []
    panel.sig_result_ready.connect(seen.append)
    panel.compute()
    panel.set_context(loaded_for(b), b)
    release.set()
    panel.runner.wait(30_000)
    qtbot.wait(100)
    assert seen == [] and panel.result is None
    assert "Nothing is computed yet" in panel.info.text() and "second" in panel.info.text()


def test_multi_label_data_gets_a_label_box_and_its_pid_is_of_that_label(qtbot, panel):
    from robult_engine.explain.pid import dataset_pid
    single, multi = small_bundle("single-label", "single"), small_bundle("multi-label", "genres", n=120)
    panel.set_context(loaded_for(single), single)
    assert panel.label_box.isHidden()  # no label to choose
    panel.set_context(loaded_for(multi), multi)
    assert not panel.label_box.isHidden() and not panel.label_caption.isHidden()
    assert [panel.label_box.itemText(i) for i in range(panel.label_box.count())] == ["Drama", "Comedy", "Horror"]
    assert panel.label() == 0 and "Drama" in panel.info.text()
    panel.set_label("Comedy")
    assert panel.label() == 1 and "Comedy" in panel.info.text()
    r = compute(qtbot, panel)
    assert not r.pid_cached and panel.progress.format().startswith("done")
    want = dataset_pid(multi, label=1)
    assert [x.pair for x in r.pid] == [x.pair for x in want]
    for got, w in zip(r.pid, want):
        for k, v in w.result.components().items():
            assert got.result.components()[k] == pytest.approx(v, abs=1e-9)
    assert "Comedy" in panel.info.text() and panel.tables()["dataset_pid"][1][0][-1] == panel.result_target
    # only m1 sees Comedy: its information is unique to m1 in the pairs with m1
    m0m1 = next(x for x in r.pid if x.pair == ("m0", "m1")).result
    assert m0m1.unique_2 > 0.5 and m0m1.unique_1 < 0.1
    # another label: the shown result is cleared, and its PID is estimated and cached separately
    panel.set_label("Horror")
    assert_cleared(panel, "genres")
    r2 = compute(qtbot, panel)
    assert not r2.pid_cached and len(panel.cache) == 2
    for got, w in zip(r2.pid, dataset_pid(multi, label=2)):
        for k, v in w.result.components().items():
            assert got.result.components()[k] == pytest.approx(v, abs=1e-9)
    panel.set_label("Comedy")
    assert compute(qtbot, panel).pid_cached and "PID cached" in panel.progress.format()


def test_a_regression_target_is_binned_like_robult_pid_and_the_tab_says_so(qtbot, panel):
    from robult_engine.explain.pid import REGRESSION_BINS, dataset_pid
    b = small_bundle("regression", "sentiment")
    panel.set_context(loaded_for(b), b)
    assert panel.label_box.isHidden()
    assert f"{REGRESSION_BINS} quantile bins" in panel.info.text()
    messages = []
    panel.sig_message.connect(lambda text, level: messages.append((text, level)))
    r = compute(qtbot, panel)
    assert not [m for m in messages if m[1] == "error"]
    for got, w in zip(r.pid, dataset_pid(b)):
        for k, v in w.result.components().items():
            assert got.result.components()[k] == pytest.approx(v, abs=1e-9)
    assert f"{REGRESSION_BINS} quantile bins" in panel.info.text()


def test_the_job_without_a_label_on_multi_label_data_says_what_to_do():
    from app.core.analysis.explain import PIDCache
    from app.views.analysis.pid_panel import compute_dataset_pid
    b = small_bundle("multi-label", "genres")
    with pytest.raises(ValueError, match="multi-label: choose the label") as e:
        compute_dataset_pid(loaded_for(b), b, "test", PIDCache())
    assert "--label" not in str(e.value)


def test_empty_plots_say_why_instead_of_bare_axes_and_phi_is_in_the_tasks_unit(qtbot, panel):
    from app.core.analysis.task_language import phi_unit
    from app.views.common.plot_util import plot_message
    plots = (panel.pid_plot, panel.zu_plot, panel.phi_plot)
    assert all(plot_message(w) == "Load a model to see its dataset's PID." for w in plots)
    assert not panel.pid_plot.getPlotItem().getAxis("bottom").isVisible()
    b = small_bundle("regression", "sentiment")
    panel.set_context(loaded_for(b), b)
    assert all(plot_message(w) == "Press Compute to estimate." for w in plots)
    release = threading.Event()
    real = panel.compute_fn

    def slow(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)
    panel.compute_fn = slow
    with qtbot.waitSignal(panel.sig_result_ready, timeout=120_000):
        panel.compute()
        assert all(plot_message(w) == "Estimating…" for w in plots)
        release.set()
    assert all(plot_message(w) == "" for w in plots)
    assert panel.pid_plot.getPlotItem().getAxis("bottom").isVisible()
    assert phi_unit("regression") in panel.phi_plot.getPlotItem().getAxis("left").labelText
    assert "nats" not in panel.phi_plot.getPlotItem().getAxis("left").labelText
