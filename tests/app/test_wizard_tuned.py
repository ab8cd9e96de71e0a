"""A comparison started from the wizard can run each method at the settings a `robult tune` study chose, as
`robult compare --from-tune` does: the study's methods are ticked, each run's config is the wizard's with the
method's chosen settings on top, an untuned method is refused with its reason, and a file that is not a study's
is named in the error line without changing anything."""
from __future__ import annotations

import json

from robult_engine.config import RunConfig
from robult_engine.data import load_dataset


def _wizard(qtbot, initial: RunConfig):
    from app.views.wizard import TrainingWizard
    wiz = TrainingWizard(load_dataset, initial, cuda_available=False)
    qtbot.addWidget(wiz)
    wiz.show()
    qtbot.waitUntil(lambda: not wiz.page_dataset.is_loading, timeout=20_000)
    return wiz


def _study(tmp_path, base: RunConfig) -> tuple:
    chosen = {"robult": {"train.lr": 0.00123, "loss.lambda_pu": 0.37},
              "fixmatch": {"train.lr": 0.0021, "loss.fixmatch_threshold": 0.91}}
    folder = tmp_path / "tune"
    folder.mkdir()
    (folder / "tune.json").write_text(json.dumps({"methods": ["robult", "fixmatch"], "chosen": chosen,
                                                  "config": base.to_dict()}), encoding="utf-8")
    return folder, chosen


def test_a_comparison_runs_each_method_at_the_studys_chosen_settings(qtbot, tiny, tmp_path):
    from robult_engine.compare import read_tune_choice
    wiz = _wizard(qtbot, tiny().replace(method="supervised"))
    folder, chosen = _study(tmp_path, tiny().replace(**{"data.label_fraction": 0.2}))
    page = wiz.page_method
    assert page.load_tuned(str(folder))
    # the study's methods are ticked; the chosen method becomes a tuned one
    assert page.method == "robult" and page.compared_methods() == ["robult", "fixmatch"]
    assert page.errors() == []
    page.spin_seeds.setValue(2)
    queue = wiz.comparison()
    assert len(queue) == 4
    _, _, read = read_tune_choice(folder)
    for cfg, name in queue:
        want = wiz.config().replace(**read[cfg.method]).replace(method=cfg.method, seed=cfg.seed,
                                                                **{"data.seed": cfg.seed})
        assert cfg == want, name
        for key, value in chosen[cfg.method].items():
            section, field = key.split(".")
            assert getattr(getattr(cfg, section), field) == value
    # the wizard's data stay: the study tuned at 20 % labels, the summary says that this run differs
    text = wiz.describe(wiz.config())
    assert "Tuned:" in text and "lambda_pu 0.37" in text and "tuned at 20% labels" in text
    # an untuned method is refused with the reason
    page.compare_checks["supervised"].setChecked(True)
    assert any("supervised was not tuned" in e for e in page.errors())
    page.clear_tuned()
    assert page.errors() == [] and wiz.comparison()[0][0].train.lr == wiz.config().train.lr


def test_a_folder_without_a_study_is_named_and_changes_nothing(qtbot, tiny, tmp_path):
    wiz = _wizard(qtbot, tiny())
    page = wiz.page_method
    bad = tmp_path / "not-a-study"
    bad.mkdir()
    (bad / "tune.json").write_text("{\"methods\": 3}", encoding="utf-8")
    before = page.compared_methods()
    assert not page.load_tuned(str(bad))
    assert "not a tune.json" in page.tuned_note.text() and str(bad) in page.tuned_note.text()
    assert page.tuned is None and page.compared_methods() == before
    assert not page.load_tuned(str(tmp_path / "nowhere"))
    assert "cannot read" in page.tuned_note.text()
