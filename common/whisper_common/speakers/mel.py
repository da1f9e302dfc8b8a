"""The power mel spectrogram resemblyzer's speaker encoder was trained on, in numpy.

It equals `librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)` (centred frames
zero-padded at both ends, a periodic Hann window, |STFT|², Slaney-scale filters with Slaney area normalisation),
which resemblyzer computes through librosa; done here so that the service imports neither librosa nor numba, and
the STFT runs in blocks so a long recording never holds its whole complex spectrum at once.
"""
from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
BLOCK_FRAMES = 4096

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz, 3 mels per 200 Hz ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0  # ... logarithmic above


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    logarithmic = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    logarithmic = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, logarithmic, linear)


@functools.cache
def mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular Slaney filters over 0 Hz .. Nyquist, each normalised to unit area (n_mels × n_fft/2+1)."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


@functools.cache
def _window(n_fft: int = N_FFT) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """Frames × 40 power mel spectrogram of 16 kHz mono audio (one frame per 10 ms, the first centred on 0)."""
    padded = np.pad(np.asarray(samples, dtype=np.float32), N_FFT // 2)
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    filters_t = mel_filters().T
    window = _window()
    out = np.empty((n_frames, N_MELS), dtype=np.float32)
    for start in range(0, n_frames, BLOCK_FRAMES):
        spectrum = np.fft.rfft(frames[start : start + BLOCK_FRAMES] * window, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        out[start : start + BLOCK_FRAMES] = power @ filters_t
    return out
