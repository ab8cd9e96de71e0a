"""Modality dropout respects samples that already miss modalities; resume refuses a changed configuration."""
from __future__ import annotations

from robult_engine.events import Failed, Finished
from robult_engine.trainer import Trainer



def _with_missing(bundle):
    """A copy of the bundle where every third training sample has only modality m0."""
    train = bundle.splits["train"]
    mask = train.mask.clone()
    mask[::3, 1:] = False
    for name in ("m1", "m2"):
        train.inputs[name][::3] = 0.0
    train.mask = mask
    return bundle


def test_moddrop_and_training_dropout_never_empty_a_sample(pid_bundle, make_cfg):
    tiny_config = make_cfg
    import copy
    bundle = _with_missing(copy.deepcopy(pid_bundle))
    cfg = tiny_config(method="moddrop", **{"data.train_modality_dropout": 0.6, "loss.moddrop_p": 0.9,
                                           "train.epochs": 1})
    trainer = Trainer(cfg, bundle)
    trainer.setup()
    for gidx in trainer.sampler.epoch(0):
        batch = trainer._step_batch(gidx)
        data_mask = bundle.splits["train"].mask[gidx]
        assert (batch.mask <= data_mask).all()  # dropout only removes present modalities
        assert batch.mask.any(1).all()  # ... and never all of them
        drop = trainer._drop_mask_local(batch.mask)
        assert (drop <= batch.mask).all() and drop.any(1).all()
    assert isinstance(Trainer(cfg, bundle).run(), Finished)


def test_resume_refuses_a_different_method(tmp_path, pid_bundle, make_cfg):
    tiny_config = make_cfg
    cfg = tiny_config(**{"train.epochs": 1})
    assert isinstance(Trainer(cfg, pid_bundle, out_dir=tmp_path).run(), Finished)
    other = cfg.replace(method="supervised", **{"train.epochs": 2})
    final = Trainer(other, pid_bundle, out_dir=tmp_path, resume_from=tmp_path / "last.pt").run()
    assert isinstance(final, Failed) and final.kind == "config"
    assert "different method" in final.message and "last.pt" in final.message
    # a longer schedule with the same method resumes
    longer = cfg.replace(**{"train.epochs": 2})
    final = Trainer(longer, pid_bundle, out_dir=tmp_path, resume_from=tmp_path / "last.pt").run()
    assert isinstance(final, Finished) and final.epochs_run == 2
