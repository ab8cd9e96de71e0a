"""One sample from a user's own files, shaped like the dataset, runs through a model built for that dataset."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image, ImageDraw

from robult_engine.config import ModelConfig
from robult_engine.data import DataError, DatasetInfo, ModalitySpec
from robult_engine.data.avdigits import info as av_info
from robult_engine.data.frontends import sample_from_sources
from robult_engine.models.robult import build_model


@pytest.fixture
def digit_files(tmp_path):
    img = Image.new("RGB", (120, 160), (245, 245, 240))
    ImageDraw.Draw(img).line([(60, 20), (60, 140)], fill=(10, 10, 10), width=14)
    img.save(tmp_path / "one.jpg")
    t = np.arange(int(44100 * 2.0)) / 44100  # 2 s at 44.1 kHz, stereo, silence around a vowel-like burst
    burst = np.sin(2 * np.pi * 180 * t) * np.exp(-((t - 1.0) / 0.15) ** 2) * 0.5
    sf.write(tmp_path / "one.wav", np.stack([burst, burst], 1).astype(np.float32), 44100)
    return tmp_path / "one.jpg", tmp_path / "one.wav"


def test_av_digits_sample_from_photo_and_recording(digit_files):
    info = av_info()
    img, wav = digit_files
    s = sample_from_sources(info, {"image": str(img), "audio": str(wav)})
    assert len(s) == 1 and s.mask.tolist() == [[True, True]]
    assert s.inputs["image"].shape == (1, 1, 8, 8) and float(s.inputs["image"].max()) == 1.0
    assert s.inputs["audio"].shape == (1, 92, 13)
    n = int(s.lengths["audio"][0])
    assert 5 <= n < 40  # the silence around the burst is trimmed
    assert float(s.inputs["audio"][0, n:].abs().sum()) == 0.0
    model = build_model(ModelConfig(d_h=16, d_z=8, d_u=8, d_hidden=16), info).eval()
    with torch.no_grad():
        out = model(s.inputs, s.lengths, s.mask)
    assert out.logits.shape == (1, 10) and bool(torch.isfinite(out.logits).all())


def test_missing_modality_gets_mask_zero(digit_files):
    s = sample_from_sources(av_info(), {"audio": str(digit_files[1])})
    assert s.mask.tolist() == [[False, True]]
    assert float(s.inputs["image"].abs().sum()) == 0.0
    s = sample_from_sources(av_info(), {"image": str(digit_files[0]), "audio": ""})
    assert s.mask.tolist() == [[True, False]] and s.lengths["audio"].tolist() == [1]


def test_long_recordings_are_truncated_to_t_max(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "long.wav", (0.3 * rng.standard_normal(8000 * 6)).astype(np.float32), 8000)
    s = sample_from_sources(av_info(), {"audio": str(tmp_path / "long.wav")})
    assert s.lengths["audio"].tolist() == [92]


def test_text_vector_and_npy_sequence_modalities(tmp_path):
    info = DatasetInfo("mine", (ModalitySpec("caption", "text", (6,)), ModalitySpec("feat", "vector", (4,)),
                                ModalitySpec("traj", "sequence", (5, 2))), "multi-label", ("a", "b", "c"))
    np.save(tmp_path / "f.npy", np.arange(4, dtype=np.float32))
    np.save(tmp_path / "t.npy", np.ones((8, 2), dtype=np.float32))
    s = sample_from_sources(info, {"caption": "a rather long caption indeed", "feat": str(tmp_path / "f.npy"),
                                   "traj": str(tmp_path / "t.npy")})
    assert s.inputs["caption"].shape == (1, 6) and int(s.lengths["caption"][0]) == 6
    assert s.inputs["feat"].tolist() == [[0.0, 1.0, 2.0, 3.0]]
    assert s.lengths["traj"].tolist() == [5] and s.target.shape == (1, 3)
    np.save(tmp_path / "bad.npy", np.ones(5, dtype=np.float32))
    with pytest.raises(DataError, match="needs 4"):
        sample_from_sources(info, {"feat": str(tmp_path / "bad.npy")})


def test_unknown_modality_and_nothing_given():
    with pytest.raises(DataError, match="unknown modality 'video'"):
        sample_from_sources(av_info(), {"video": "x.mp4"})
    with pytest.raises(DataError, match="at least one"):
        sample_from_sources(av_info(), {})


def test_wrong_file_kind_for_a_sequence(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="audio file"):
        sample_from_sources(av_info(), {"audio": str(tmp_path / "notes.txt")})
