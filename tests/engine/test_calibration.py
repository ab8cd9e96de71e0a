"""Calibration per modality subset: the metrics by hand, temperature scaling against its definition, the side
file beside the checkpoint (stale files refused) and `robult eval --calibration`."""
from __future__ import annotations

import json
import math

import pytest
import torch

from robult_engine.evaluation import encode_split, metrics_from_encoded, subset_logits, modality_subsets
from robult_engine.explain.calibration import (CalibrationError, NotApplicable, adaptive_calibration_error,
                                               calibration_metrics, calibration_path, calibration_table,
                                               expected_calibration_error, fit_calibration, fit_temperature,
                                               load_calibration, reliability_bins, save_calibration)


def _two_class_logits(p1: list[float]) -> torch.Tensor:
    """Logits whose softmax gives probability p1 to class 1."""
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)


def test_metrics_by_hand_on_four_predictions():
    # probabilities of class 1: 0.93, 0.82, 0.27, 0.64; targets 1, 0, 0, 1 (no confidence on a bin edge)
    logits = _two_class_logits([0.93, 0.82, 0.27, 0.64])
    target = torch.tensor([1, 0, 0, 1])
    r = calibration_metrics(logits, target, "single-label", n_bins=10)
    # confidences 0.93, 0.82, 0.73, 0.64 (each alone in its bin); correct 1, 0, 1, 1
    assert r.accuracy == pytest.approx(0.75) and r.mean_confidence == pytest.approx(0.78)
    assert r.ece == pytest.approx((0.07 + 0.82 + 0.27 + 0.36) / 4)
    # Brier: Σ_c (p_c - y_c)^2 = 2 (1 - p_true)^2 for two classes; p_true = 0.93, 0.18, 0.73, 0.64
    assert r.brier == pytest.approx(2 * (0.07 ** 2 + 0.82 ** 2 + 0.27 ** 2 + 0.36 ** 2) / 4)
    assert r.nll == pytest.approx(-(math.log(0.93) + math.log(0.18) + math.log(0.73) + math.log(0.64)) / 4)
    # equal-mass, 2 bins: {0.64, 0.73} (accuracy 1, confidence 0.685), {0.82, 0.93} (0.5, 0.875)
    assert calibration_metrics(logits, target, "single-label", n_bins=2).adaptive_ece == pytest.approx(0.345)
    # equal-mass with 2 bins: {0.6, 0.7} (acc 1, conf 0.65) and {0.8, 0.9} (acc 0.5, conf 0.85)
    conf, correct = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 1]).bool()
    assert adaptive_calibration_error(conf, correct, 2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.35)
    assert expected_calibration_error(conf, correct, 2) == pytest.approx(0.0)  # one bin (0.5, 1]: |0.75 - 0.75|


def test_reliability_bins_are_half_open_and_count_everything():
    conf = torch.tensor([0.0, 0.2, 0.2000001, 0.5, 1.0], dtype=torch.float64)
    correct = torch.tensor([0, 1, 0, 1, 1]).bool()
    b = reliability_bins(conf, correct, n_bins=5)  # edges 0, .2, .4, .6, .8, 1
    assert b.count == [2, 1, 1, 0, 1]  # 0 and 0.2 fall in (0, .2]; 0.2000001 in (.2, .4]
    assert b.accuracy[0] == pytest.approx(0.5) and b.confidence[0] == pytest.approx(0.1)
    assert math.isnan(b.accuracy[3]) and b.edges[0] == 0 and b.edges[-1] == 1


def _calibrated_sample(n: int, c: int, seed: int, temperature: float = 1.0):
    """Logits z and labels drawn from softmax(z / temperature): a model with logits z is calibrated when
    temperature = 1 and over-confident by that factor otherwise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    y = torch.multinomial(torch.softmax(z / temperature, -1), 1, generator=g)[:, 0]
    return z, y


def test_a_calibrated_model_has_small_ece_within_its_sampling_error():
    z, y = _calibrated_sample(20000, 5, seed=0)
    r = calibration_metrics(z, y, "single-label")
    # per bin, the observed accuracy of a calibrated model deviates from the mean confidence by sampling error
    # alone, sd sqrt(c (1 - c) / n_b); 4 sd per bin bounds the ECE
    bins = r.reliability
    bound = sum(n / len(y) * 4 * math.sqrt(max(cf * (1 - cf), 1e-12) / n)
                for n, cf in zip(bins.count, bins.confidence) if n > 0)
    assert r.ece < bound
    z2, y2 = _calibrated_sample(20000, 5, seed=0, temperature=2.0)
    over = calibration_metrics(z2, y2, "single-label")
    assert over.ece > 5 * bound and over.mean_confidence > over.accuracy  # over-confident, and seen as such


def test_temperature_fit_recovers_the_generating_temperature():
    z, y = _calibrated_sample(20000, 5, seed=1, temperature=2.0)
    t = fit_temperature(z, y, "single-label")
    # the maximum-likelihood β = 1/T has asymptotic sd 1 / sqrt(N · E[Var_p(z)]) (the Fisher information of β)
    p = torch.softmax(z / 2.0, -1)
    var = ((p * z ** 2).sum(-1) - (p * z).sum(-1) ** 2).mean()
    sd_beta = float(1 / torch.sqrt(len(y) * var))
    assert abs(1 / t - 0.5) < 4 * sd_beta
    # it is the minimum of the NLL: the derivative in β vanishes and no grid point does better
    beta = torch.tensor(1 / t, dtype=torch.float64)
    grad = float(((torch.softmax(beta * z, -1) * z).sum(-1) - z.gather(1, y[:, None])[:, 0]).mean())
    assert abs(grad) < 1e-6
    nll = lambda tt: float(torch.nn.functional.cross_entropy(z / tt, y))  # noqa: E731
    assert all(nll(t) <= nll(tt) + 1e-12 for tt in torch.linspace(0.5, 5, 91).tolist())
    after = calibration_metrics(z, y, "single-label", temperature=t)
    assert after.ece < calibration_metrics(z, y, "single-label").ece / 3


def test_temperature_without_a_finite_minimum():
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    assert fit_temperature(z, torch.tensor([0, 1, 0]), "single-label") == 1.0  # all correct: NLL falls as T → 0
    # one near-tie mistake among correct predictions: the minimum is finite (about T = 0.03, found on a grid) but
    # below the bound, so the fit returns the bound
    z = torch.tensor([[1.0, 0.0]] * 50 + [[0.0, 1e-12]], dtype=torch.float64)
    y = torch.zeros(51, dtype=torch.long)
    nll = lambda tt: float(torch.nn.functional.cross_entropy(z / tt, y))  # noqa: E731
    grid = torch.logspace(-3, 1, 400).tolist()
    assert min(grid, key=nll) < 0.05
    assert fit_temperature(z, y, "single-label") == 0.05
    # a mistake with a clear margin: an interior minimum, which the fit finds
    z2 = torch.tensor([[1.0, 0.0]] * 50 + [[0.0, 1e-3]], dtype=torch.float64)
    nll2 = lambda tt: float(torch.nn.functional.cross_entropy(z2 / tt, y))  # noqa: E731
    t2 = fit_temperature(z2, y, "single-label")
    assert 0.05 < t2 < 20 and all(nll2(t2) <= nll2(tt) + 1e-12 for tt in grid)


def test_multi_label_is_per_label_binary_calibration():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = (torch.rand(40, 3, generator=g) > 0.5).float()
    r = calibration_metrics(z, y, "multi-label")
    p = torch.sigmoid(z)
    assert r.n == 120
    assert r.brier == pytest.approx(float(((p - y) ** 2).mean()))
    assert r.nll == pytest.approx(float(torch.nn.functional.binary_cross_entropy(p, y.double())))
    assert r.accuracy == pytest.approx(float(((p > 0.5) == (y > 0.5)).double().mean()))
    conf = torch.maximum(p, 1 - p).reshape(-1)
    assert r.ece == pytest.approx(expected_calibration_error(conf, ((p > 0.5) == (y > 0.5)).reshape(-1)))


def test_regression_is_not_applicable():
    with pytest.raises(NotApplicable, match="regression"):
        calibration_metrics(torch.zeros(3, 1), torch.zeros(3), "regression")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Robult run on PID-Synth (2 epochs): its best checkpoint and the bundle."""
    from robult_engine.data import load_dataset
    from robult_engine.trainer import Trainer
    from conftest import tiny_config
    cfg = tiny_config()
    bundle = load_dataset(cfg.data)
    out = tmp_path_factory.mktemp("cal")
    final = Trainer(cfg, bundle, out_dir=out).run()
    return final.checkpoint_path, bundle


def test_table_from_cached_encodings_matches_the_subset_predictions(trained):
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint
    path, bundle = trained
    ckpt = load_checkpoint(path)
    split = bundle.splits["test"]
    split.mask = split.mask.clone()
    split.mask[::3, 0] = False  # some samples lack m0: its rows differ per subset
    enc = encode_split(model_from_checkpoint(ckpt), split)
    names = bundle.info.modality_names
    table = calibration_table(enc, names, "single-label")
    acc = metrics_from_encoded(enc, names, "single-label")
    assert list(table) == [n for n, _ in modality_subsets(names)]
    for name, sm in modality_subsets(names):
        logits, rows = subset_logits(enc, sm)
        ref = calibration_metrics(logits[rows], split.target[rows], "single-label")
        assert table[name].n == int(rows.sum()) and table[name].ece == pytest.approx(ref.ece)
        assert table[name].accuracy == pytest.approx(acc[name]["accuracy"])
    split.mask[:] = True


def test_side_file_round_trip_and_stale_files_are_refused(trained, tmp_path):
    import shutil
    from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    path, bundle = trained
    ckpt_path = tmp_path / "best.pt"
    shutil.copy(path, ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    enc = encode_split(model_from_checkpoint(ckpt), bundle.splits["val"])
    cal = fit_calibration(ckpt, enc, bundle.info.modality_names, "single-label")
    written = save_calibration(cal, ckpt_path)
    assert written == tmp_path / "best.calibration.json" == calibration_path(ckpt_path)
    back = load_calibration(ckpt)
    assert back.temperatures == cal.temperatures and back.epoch == ckpt.epoch
    for name, t in cal.temperatures.items():  # the fit lowered (or kept) every subset's validation NLL
        assert cal.nll_after[name] <= cal.nll_before[name] + 1e-9 and 0.05 <= t <= 20
    # the checkpoint rewritten at another epoch (as training does with best.pt): refused
    save_checkpoint(ckpt_path, model_state=ckpt.model_state, config=ckpt.config, info=ckpt.info,
                    labeled_indices=ckpt.labeled_indices, fingerprint=ckpt.fingerprint, epoch=ckpt.epoch + 1)
    with pytest.raises(CalibrationError, match="stale.*epoch"):
        load_calibration(load_checkpoint(ckpt_path))
    written.write_text("{not json")
    with pytest.raises(CalibrationError, match="damaged"):
        load_calibration(load_checkpoint(ckpt_path))
    written.unlink()
    with pytest.raises(CalibrationError, match="no calibration file"):
        load_calibration(load_checkpoint(ckpt_path))


def test_cli_eval_calibration_fits_writes_and_reuses_the_side_file(trained, tmp_path, capsys):
    import shutil
    from robult_engine.cli import main
    path, _ = trained
    ckpt_path = tmp_path / "best.pt"
    shutil.copy(path, ckpt_path)
    js = tmp_path / "eval.json"
    assert main(["eval", str(ckpt_path), "--calibration", "--json", str(js), "--threads", "1"]) == 0
    out = capsys.readouterr()
    assert "fitted per-subset temperatures on the val split" in out.err
    assert "ECE after T" in out.out and "m0+m1+m2" in out.out
    side = json.loads((tmp_path / "best.calibration.json").read_text())
    assert set(side["temperatures"]) == {"m0", "m1", "m2", "m0+m1", "m0+m2", "m1+m2", "m0+m1+m2"}
    data = json.loads(js.read_text())
    row = data["calibration"]["m0"]
    assert row["temperature"] == pytest.approx(side["temperatures"]["m0"]) and "ece_before" in row
    assert main(["eval", str(ckpt_path), "--calibration", "--threads", "1"]) == 0
    assert "using the calibration fitted" in capsys.readouterr().err


def test_compare_stores_the_calibration_columns_of_every_run(tmp_path, capsys):
    from robult_engine.cli import main
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "robult,supervised", "--seeds", "1", "--epochs", "1", "--out", str(out),
                 "--dataset", "pid-synth", "--set", "data.synth_n_train=120", "--set", "model.d_h=16",
                 "--set", "train.batch_size=16", "--set", "train.labeled_per_batch=4", "--quiet",
                 "--threads", "1"]) == 0
    data = json.loads((out / "compare.json").read_text())
    for method in ("robult", "supervised"):
        cal = data["runs"][method][0]["calibration"]
        assert set(cal) == {"m0", "m1", "m2", "m0+m1", "m0+m2", "m1+m2", "m0+m1+m2", "mean over subsets"}
        assert set(cal["m0"]) == {"ece", "adaptive_ece", "brier", "nll"} and 0 <= cal["m0"]["ece"] <= 1
        assert cal["mean over subsets"]["nll"] == pytest.approx(
            sum(cal[s]["nll"] for s in cal if s != "mean over subsets") / 7)
