"""Whisper's log-mel spectrogram in plain numpy.

Smart Turn v3 is a Whisper-tiny encoder with a classifier head, so it expects exactly the features Whisper's
feature extractor makes: 16 kHz audio, 25 ms Hann windows (400 samples, periodic) every 10 ms (160 samples),
centred with reflect padding, power spectrum, 80 Slaney-style mel filters up to 8 kHz, log10, clamped to
8 decades below the peak, then scaled by (x + 4) / 4. Written here so the provider needs neither torch nor
transformers (a test checks it against pipecat's copy when pipecat is installed).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_region = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz >= 1000.0, log_region, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_region = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0))
    return np.where(mel >= 15.0, log_region, linear)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular filters, area-normalised (Slaney), shape (n_fft // 2 + 1, n_mels)."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    offsets = edges[None, :] - fft_freqs[:, None]  # (freqs, n_mels + 2)
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= 2.0 / (edges[2:] - edges[:-2])
    filters.setflags(write=False)
    return filters


@lru_cache(maxsize=4)
def _hann(length: int) -> np.ndarray:
    """Periodic Hann window (the DFT-even one that spectrogram code uses)."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    window.setflags(write=False)
    return window


def log_mel(audio: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    """Whisper features of float audio in [-1, 1] at 16 kHz: shape (80, len(audio) // 160).

    ``normalize`` scales the waveform to zero mean and unit variance first (the feature extractor's
    ``do_normalize``, which Smart Turn was trained with).
    """
    x = np.asarray(audio, dtype=np.float32)
    if normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    pad = N_FFT // 2
    padded = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _hann(N_FFT), n=N_FFT, axis=-1)) ** 2  # (frames, freqs)
    mel = np.maximum(power @ mel_filters(), 1e-10).T  # (n_mels, frames)
    spec = np.log10(mel)[:, :-1]  # the last frame only covers padding
    spec = np.maximum(spec, spec.max() - 8.0)
    features: np.ndarray = ((spec + 4.0) / 4.0).astype(np.float32)
    return features


def fit_to_seconds(audio: np.ndarray, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Keep the last ``seconds`` of audio, or left-pad with silence to that length (the end is what matters)."""
    n = int(seconds * sample_rate)
    if audio.size >= n:
        return audio[audio.size - n :]
    return np.concatenate([np.zeros(n - audio.size, dtype=audio.dtype), audio])
