"""Missing modalities in the app (issue 11): the explorer's drawn MCAR mask and the robustness tab's curves.

The drawn mask is checked against `robult_engine.missing.draw_mask` (same split, spec and seed), against η and
against the data's own mask, and the panels against the model called directly; the curve values against
`metrics_under_masks` on the same masks. Tiny PID-Synth models are trained once per session.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from explorer_helpers import WAIT, bar_heights, dispose, show_explorer, wait_shown
from robult_engine.config import RunConfig

TINY = {"data.dataset": "pid-synth", "data.synth_n_train": 200, "train.epochs": 2, "model.d_h": 32,
        "model.d_z": 16, "model.d_u": 8, "model.d_hidden": 32, "train.device": "cpu"}


def tiny_cfg(method: str = "robult", **changes) -> RunConfig:
    return RunConfig().replace(method=method, **{**TINY, **changes}).validate()


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    from robult_engine.trainer import Trainer
    root = tmp_path_factory.mktemp("missing-runs")
    out = {}
    for m in ("robult", "supervised"):
        final = Trainer(tiny_cfg(m), out_dir=root / m).run()
        assert final.checkpoint_path, final
        out[m] = Path(final.checkpoint_path)
    return out


def loaded(path, run_id=None):
    from app.views.explorer.standalone import loaded_from_checkpoint
    return loaded_from_checkpoint(str(path), run_id)


@pytest.fixture
def explorer(qtbot, runs):
    panel = show_explorer(qtbot, loaded(runs["robult"]))
    yield panel
    dispose(qtbot, panel)


# ----------------------------------------------------------------------------------------------------------
# explorer: apply a mechanism
# ----------------------------------------------------------------------------------------------------------


def test_drawn_mcar_mask_is_the_engines_and_updates_every_panel(qtbot, explorer):
    from robult_engine.missing import draw_mask, parse_missing
    ctl = explorer.mechanism
    ctx = explorer.context
    split = ctx.bundle.splits["test"]
    seen = set()
    for seed in range(6):
        ctl.eta.setText("0.5")
        ctl.seed.setValue(seed)
        gen = explorer.state.generation
        mask = ctl.draw()
        want = tuple(draw_mask(split, ctx.bundle.info, parse_missing("mcar:0.5")[0], seed)[0].tolist())
        assert mask == want and ctl.last_seed == seed
        assert ctl.seed.value() == seed + 1  # the next click draws a new mask
        assert explorer.state.enabled == want and explorer.toggles.state() == want
        assert any(want)  # a sample never loses every modality
        seen.add(want)
        if explorer.state.generation != gen:  # a new mask: the panels follow, as on a click
            wait_shown(qtbot, explorer)
        insp = explorer.inspection
        assert insp.subset == want
        data = explorer.sample.data
        with torch.no_grad():
            out = ctx.model(data.inputs, data.lengths, torch.tensor([want]) & data.mask)
        np.testing.assert_allclose(bar_heights(explorer.predictions.bars_sub),
                                   torch.softmax(out.logits[0], -1).numpy(), atol=1e-5)
        gone = [n for n, k in zip(explorer.state.modality_names, want) if not k]
        assert (", ".join(gone) + " missing" if gone else "nothing missing") in ctl.result.text()
    assert len(seen) > 1  # different seeds, different masks


def test_drawn_mask_respects_eta_and_the_datas_own_mask():
    from types import SimpleNamespace

    from app.core.explorer_state import ExplorerState, SampleRef
    from app.views.explorer.mechanism_control import MechanismControl
    st = ExplorerState()
    st.set_modalities(("a", "b", "c"))
    st.set_context(SimpleNamespace(loaded=SimpleNamespace(config=tiny_cfg()), bundle=None))
    st.set_sample(SampleRef.sources(files={"a": "/x.npy", "c": "/y.npy"}))
    st.set_present((True, False, True))  # the sample itself lacks b
    ctl = MechanismControl(st)
    for eta in (0.0, 0.3, 0.7):
        masks = np.array([ctl.draw_mask_for_sample(str(eta), s) for s in range(600)])
        assert not masks[:, 1].any()  # never present where the data lacks it
        assert masks.any(1).all()  # never empty: one modality comes back
        # a and c are each missing with probability η, except that an emptied sample gets one back
        missing = 1 - masks[:, [0, 2]].mean()
        assert missing == pytest.approx(eta - eta ** 2 / 2, abs=0.05)
    ctl.deleteLater()


def test_bad_eta_is_refused_with_a_clear_message(qtbot, explorer):
    ctl = explorer.mechanism
    before = explorer.state.enabled
    messages = []
    ctl.sig_message.connect(lambda text, kind: messages.append((text, kind)))
    for bad in ("1", "1.5", "-0.1", "abc"):
        ctl.eta.setText(bad)
        assert ctl.draw() is None
        assert explorer.state.enabled == before
        text = ctl.result.text()
        assert "[0, 1)" in text and "missing" in text, text
        assert messages[-1][1] == "error"


def test_training_mechanism_is_shown(explorer):
    from app.views.explorer.mechanism_control import training_mechanism
    assert "complete training samples" in explorer.mechanism.trained.text()
    cfg = RunConfig().replace(**{"data.train_missing": "mcar:0.3", "data.train_pool": True})
    line = training_mechanism(cfg)
    assert "train_missing = mcar:0.3 (fraction missing)" in line and "train_pool on" in line


def test_sessions_table_names_the_training_mechanism(store):
    from PySide6.QtCore import Qt

    from app.views.sessions import RunsTableModel
    store.create_run(tiny_cfg().replace(**{"data.train_missing": "mcar:0.3"}), name="incomplete")
    store.create_run(tiny_cfg(), name="complete")
    model = RunsTableModel(store)
    model.refresh()
    tips = {r.name: model.data(model.index(i, 0), Qt.ItemDataRole.ToolTipRole) for i, r in enumerate(model.rows)}
    assert "train_missing = mcar:0.3 (fraction missing)" in tips["incomplete"]
    assert "complete training samples" in tips["complete"]
