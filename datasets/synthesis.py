"""Signal building blocks for the synthetic demo datasets (numpy only, deterministic given an rng)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def response(n_samples: int, sample_rate: int, freqs_hz: Sequence[float], gains_db: Sequence[float]) -> np.ndarray:
    """Magnitude of a smooth frequency response on the rfft bins of an n_samples signal.

    The response is linear in dB over log frequency between the control points (freqs_hz, gains_db)
    and constant beyond them.
    """
    bins = np.fft.rfftfreq(n_samples, 1.0 / sample_rate)
    log_bins = np.log(np.maximum(bins, freqs_hz[0]))
    return 10.0 ** (np.interp(log_bins, np.log(freqs_hz), gains_db) / 20.0)


def filtered(signal: np.ndarray, sample_rate: int, freqs_hz: Sequence[float], gains_db: Sequence[float]) -> np.ndarray:
    """`signal` passed through the response given by (freqs_hz, gains_db) (zero-phase, circular)."""
    spectrum = np.fft.rfft(signal) * response(len(signal), sample_rate, freqs_hz, gains_db)
    return np.fft.irfft(spectrum, n=len(signal))


def colored_noise(
    rng: np.random.Generator, n_samples: int, sample_rate: int, freqs_hz: Sequence[float], gains_db: Sequence[float]
) -> np.ndarray:
    """Gaussian noise with the spectral shape (freqs_hz, gains_db), scaled to unit RMS."""
    noise = filtered(rng.standard_normal(n_samples), sample_rate, freqs_hz, gains_db)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def normalize_rms(signal: np.ndarray, rms: float) -> np.ndarray:
    return signal * (rms / (np.sqrt(np.mean(signal**2)) + 1e-12))


def envelope_adsr(
    n_samples: int, sample_rate: int, attack: float, decay: float, sustain: float, release: float, note_off: float
) -> np.ndarray:
    """Attack-decay-sustain-release amplitude envelope (times in seconds, sustain as a level in 0..1)."""
    t = np.arange(n_samples) / sample_rate
    rise = np.clip(t / max(attack, 1e-4), 0.0, 1.0)
    fall = sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack, 0.0) / max(decay, 1e-4))
    held = np.where(t < attack, rise, fall)
    after = np.exp(-np.maximum(t - note_off, 0.0) / max(release, 1e-4))
    return held * np.where(t < note_off, 1.0, after)
