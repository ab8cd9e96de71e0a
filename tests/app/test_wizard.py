"""The training wizard, page by page: values, refusals with the engine's reason, the dataset info job."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWizard

from robult_engine.config import RunConfig
from robult_engine.data import load_dataset
from robult_engine.methods import METHOD_SPECS


def _wizard(qtbot, initial: RunConfig, cuda_available: bool = False, loader=load_dataset):
    from app.views.wizard import TrainingWizard
    wiz = TrainingWizard(loader, initial, cuda_available=cuda_available)
    qtbot.addWidget(wiz)
    wiz.show()
    qtbot.waitExposed(wiz)
    qtbot.waitUntil(lambda: not wiz.page_dataset.is_loading, timeout=20_000)
    return wiz


def _next_enabled(wiz) -> bool:
    return wiz.button(QWizard.WizardButton.NextButton).isEnabled()


def test_wizard_end_to_end_refuses_invalid_values_on_their_page(qtbot, tiny):
    wiz = _wizard(qtbot, tiny())
    p = wiz.page_dataset
    # dataset page: info read off the GUI thread, modalities and task shown
    assert p.info is not None and p.info.modality_names == ("m0", "m1", "m2")
    assert "single-label" in p.info_label.text()
    assert p.modality_list.count() == 3
    assert _next_enabled(wiz)
    # too few PID-Synth samples: refused with the engine's reason
    p.spin_n_train.setValue(5)
    assert not _next_enabled(wiz)
    assert "synth_n_train" in p.error_label.text()
    p.spin_n_train.setValue(200)
    qtbot.waitUntil(lambda: p.info is not None and _next_enabled(wiz), timeout=20_000)
    # no modality checked: refused
    for i in range(3):
        p.modality_list.item(i).setCheckState(Qt.CheckState.Unchecked)
    assert not _next_enabled(wiz)
    assert "at least one modality" in p.error_label.text()
    p.modality_list.item(0).setCheckState(Qt.CheckState.Checked)
    p.modality_list.item(2).setCheckState(Qt.CheckState.Checked)
    assert _next_enabled(wiz) and p.error_label.text() == ""
    wiz.next()

    # method page: every method, each with its one-line explanation
    m = wiz.page_method
    assert wiz.currentPage() is m
    assert list(m.buttons) == list(METHOD_SPECS)  # the engine's table of methods, in its order
    assert all(b.toolTip() == METHOD_SPECS[name].description for name, b in m.buttons.items())
    m.buttons["robult-no-rec"].click()
    assert m.method == "robult-no-rec"
    wiz.next()

    # Robult knobs
    r = wiz.page_robult
    assert METHOD_SPECS["robult-no-rec"].label in r.method_note.text()
    # the knobs the method's spec lists are enabled, the others greyed out (robult-no-rec trains no L_rec)
    assert r.spin_lambda_pu.isEnabled() and r.spin_tau.isEnabled() and r.combo_kernel.isEnabled()
    assert not r.spin_lambda_rec.isEnabled() and not r.combo_rec_route.isEnabled()
    assert "lambda_rec" in r.method_note.text()
    r.spin_tau.setValue(0.0)
    assert not _next_enabled(wiz) and "loss.tau" in r.error_label.text()
    r.spin_tau.setValue(0.2)
    r.check_median.setChecked(False)
    assert r.spin_bandwidth.isEnabled()
    r.spin_bandwidth.setValue(0.0)
    assert not _next_enabled(wiz) and "loss.bandwidth" in r.error_label.text()
    r.spin_bandwidth.setValue(0.7)
    r.spin_d_z.setValue(0)
    assert not _next_enabled(wiz) and "model.d_z" in r.error_label.text()
    r.spin_d_z.setValue(12)
    r.combo_kernel.setCurrentText("laplacian")
    r.spin_lambda_pu.setValue(0.5)
    assert r.combo_rec_route.currentText() == "full"  # the default route
    r.combo_rec_route.setCurrentText("branch")
    r.spin_lambda_diff.setValue(0.25)
    assert _next_enabled(wiz)
    wiz.next()

    # semi-supervised split
    s = wiz.page_semisup
    s.spin_fraction.setValue(0.0)
    assert not _next_enabled(wiz) and "label_fraction" in s.error_label.text()
    s.spin_fraction.setValue(20.0)
    assert "keep their labels" in s.count_label.text()
    s.spin_seed.setValue(7)
    assert _next_enabled(wiz)
    wiz.next()

    # training
    t = wiz.page_training
    t.edit_lr.setText("fast")
    assert not _next_enabled(wiz) and "train.lr" in t.error_label.text()
    t.edit_lr.setText("3e-3")
    t.spin_batch.setValue(1)
    assert not _next_enabled(wiz) and "train.batch_size" in t.error_label.text()
    t.spin_batch.setValue(40)
    t.spin_epochs.setValue(0)
    assert not _next_enabled(wiz) and "train.epochs" in t.error_label.text()
    t.spin_epochs.setValue(3)
    assert _next_enabled(wiz)
    wiz.next()

    # summary
    sp = wiz.page_summary
    assert wiz.currentPage() is sp
    assert "robult-no-rec" in sp.text.toPlainText() and "laplacian" in sp.text.toPlainText()
    assert sp.edit_name.text()
    assert wiz.button(QWizard.WizardButton.FinishButton).isEnabled()
    cfg = wiz.config()
    assert cfg.method == "robult-no-rec"
    assert cfg.data.dataset == "pid-synth" and cfg.data.modalities == ("m0", "m2")
    assert cfg.data.label_fraction == 0.2 and cfg.data.seed == 7
    assert cfg.loss.tau == 0.2 and cfg.loss.bandwidth == 0.7 and cfg.loss.kernel == "laplacian"
    assert cfg.loss.lambda_pu == 0.5 and cfg.model.d_z == 12
    assert cfg.loss.rec_route == "branch" and cfg.loss.lambda_diff == 0.25
    # robult-no-rec trains no L_rec: its summary does not list the L_rec settings it ignores
    assert "route branch" not in sp.text.toPlainText() and "λ_diff" not in sp.text.toPlainText()
    assert "λ_pu 0.5" in sp.text.toPlainText() and "τ 0.2" in sp.text.toPlainText()
    assert cfg.train.lr == 3e-3 and cfg.train.batch_size == 40 and cfg.train.epochs == 3
    assert cfg.train.labeled_per_batch == 8  # a quarter of the batch at most (the initial 8 here)
    assert cfg.model.d_h == 16  # fields the wizard does not show keep their initial values
    cfg.validate()


def test_cuda_is_disabled_and_explained_without_a_gpu(qtbot, tiny):
    wiz = _wizard(qtbot, tiny(), cuda_available=False)
    t = wiz.page_training
    item = t.combo_device.model().item(t.combo_device.findData("cuda"))
    assert not item.isEnabled()
    assert "CUDA is unavailable" in t.device_note.text()
    assert t.combo_device.currentData() in ("auto", "cpu")


def test_cuda_is_offered_with_a_gpu(qtbot, tiny):
    wiz = _wizard(qtbot, tiny(), cuda_available=True)
    t = wiz.page_training
    assert t.combo_device.model().item(t.combo_device.findData("cuda")).isEnabled()
    assert t.device_note.text() == ""


def test_a_missing_dataset_path_is_refused_with_the_reason(qtbot, tiny, tmp_path, dialogs):
    wiz = _wizard(qtbot, tiny())
    p = wiz.page_dataset
    dialogs.open_dir = str(tmp_path / "nowhere")
    p.btn_folder.click()
    assert p.dataset == str(tmp_path / "nowhere")
    qtbot.waitUntil(lambda: not p.is_loading, timeout=20_000)
    assert not _next_enabled(wiz)
    assert "cannot be used" in p.error_label.text() and "no such" in p.error_label.text()
    # going back to a built-in dataset makes the page complete again
    p.set_dataset("pid-synth")
    qtbot.waitUntil(lambda: _next_enabled(wiz), timeout=20_000)


def test_a_file_is_offered_through_the_file_dialog(qtbot, tiny, tmp_path, dialogs):
    bad = tmp_path / "notes.csv"
    bad.write_text("this,is\nnot,a dataset\n")
    wiz = _wizard(qtbot, tiny())
    dialogs.open_file = str(bad)
    wiz.page_dataset.btn_file.click()
    assert ("open_file", "") in dialogs.asked
    qtbot.waitUntil(lambda: not wiz.page_dataset.is_loading, timeout=20_000)
    assert not _next_enabled(wiz)
    assert wiz.page_dataset.error_label.text().startswith("The dataset cannot be used")


def test_stale_dataset_answers_are_dropped(qtbot, tiny):
    """A slow answer for a dataset the user has left must not overwrite the newer one."""
    import threading
    gate = threading.Event()

    def loader(cfg):
        if cfg.synth_n_train == 300:
            gate.wait(10)
        return load_dataset(cfg)

    from app.views.wizard import TrainingWizard
    wiz = TrainingWizard(loader, tiny(), cuda_available=False)
    qtbot.addWidget(wiz)
    p = wiz.page_dataset
    qtbot.waitUntil(lambda: p.info is not None, timeout=20_000)
    p.spin_n_train.setValue(300)  # slow
    qtbot.waitUntil(lambda: p.is_loading, timeout=5_000)
    p.spin_n_train.setValue(400)  # fast
    qtbot.waitUntil(lambda: p.info is not None, timeout=20_000)
    assert p.split_sizes["train"] == 400
    gate.set()
    from app.background.training import wait_for_jobs
    assert wait_for_jobs(20_000)
    qtbot.wait(50)
    assert p.split_sizes["train"] == 400


def test_the_wizard_offers_every_builtin_dataset_and_greys_out_what_a_method_does_not_use(qtbot):
    from robult_engine.data import BUILTIN
    wiz = _wizard(qtbot, RunConfig().replace(**{"data.dataset": "pid-synth", "data.synth_n_train": 100}))
    combo = wiz.page_dataset.combo
    assert [combo.itemData(i) for i in range(combo.count()) if combo.itemData(i) in BUILTIN] == list(BUILTIN)
    assert "mfeat" in BUILTIN
    r = wiz.page_robult
    r.set_method("supervised")  # a baseline: no contrastive loss, no reconstruction
    assert not any(getattr(r, a).isEnabled() for a in ("spin_lambda_pu", "spin_tau", "combo_kernel",
                                                        "spin_lambda_rec", "spin_lambda_diff"))
    assert r.spin_d_z.isEnabled() and r.spin_d_u.isEnabled()  # latent sizes apply to every method
    r.set_method("robult")
    assert all(getattr(r, a).isEnabled() for a in ("spin_lambda_pu", "spin_tau", "spin_lambda_rec"))


def test_the_summary_lists_only_the_losses_the_method_uses():
    """A supervised run's summary used to list λ_pu, λ_rec and τ, which it never uses."""
    from app.views.wizard import TrainingWizard
    from robult_engine.config import RunConfig
    from robult_engine.methods import METHOD_SPECS
    sup = TrainingWizard._losses_of(RunConfig().replace(method="supervised"), METHOD_SPECS["supervised"], "-")
    assert sup == "the supervised loss only"
    rob = TrainingWizard._losses_of(RunConfig().replace(method="robult"), METHOD_SPECS["robult"], "median")
    assert "λ_pu 1" in rob and "λ_rec 1" in rob and "τ 0.1" in rob and "σ median" in rob
    st = TrainingWizard._losses_of(RunConfig().replace(method="self-training"), METHOD_SPECS["self-training"], "-")
    assert "threshold 0.9" in st and "λ_pu" not in st


def test_the_semi_supervised_baselines_are_offered_with_their_own_settings(qtbot):
    wiz = _wizard(qtbot, RunConfig().replace(method="fixmatch", **{"data.dataset": "pid-synth",
                                                                     "data.synth_n_train": 100}))
    assert {"fixmatch", "co-training"} <= set(wiz.page_method.buttons)
    r = wiz.page_robult
    for method, field, value in (("fixmatch", "loss.fixmatch_threshold", 0.95),
                                 ("co-training", "loss.cotrain_threshold", 0.9)):
        r.set_method(method)
        assert r.own_box.isVisibleTo(r) and r._own_value(r.own_widgets[field]) == value
        assert r._own_value(r.own_widgets["loss.pseudo_balance"]) == "da+freematch"
        assert not r.spin_lambda_pu.isEnabled()
    assert wiz.config().method == "fixmatch"


def test_a_methods_own_settings_are_fields_the_run_uses(qtbot):
    wiz = _wizard(qtbot, RunConfig().replace(method="fixmatch", **{"data.dataset": "pid-synth",
                                                                     "data.synth_n_train": 100}))
    r = wiz.page_robult
    r.set_method("fixmatch")
    r.own_widgets["loss.fixmatch_threshold"].setValue(0.8)
    r.own_widgets["loss.fixmatch_noise"].setValue(0.25)
    cfg = wiz.config()
    assert cfg.loss.fixmatch_threshold == 0.8 and cfg.loss.fixmatch_noise == 0.25
    # another method shows its own fields; coming back keeps what was set
    r.set_method("shaspec")
    assert set(r.own_widgets) == {"loss.moddrop_p", "loss.lambda_domain", "loss.lambda_align"}
    r.set_method("supervised")
    assert not r.own_box.isVisibleTo(r)
    r.set_method("fixmatch")
    assert r.own_widgets["loss.fixmatch_threshold"].value() == 0.8
    # a value the engine refuses is refused on the page with the engine's reason
    r.own_widgets["loss.pseudo_balance"].setText("nonsense")
    assert any("pseudo_balance" in e for e in r.errors())
