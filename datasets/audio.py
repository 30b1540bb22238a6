"""Decoding audio files into mono float32 waveforms at the model's sample rate.

Everything libsndfile reads is accepted (wav, flac, ogg, and mp3 with libsndfile >= 1.1): channels are
averaged into one, and other sample rates are converted with the soxr resampler.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile
import soxr

from errors import ConfigurationError, UserError

RESAMPLE_QUALITIES = ("HQ", "VHQ")


class AudioError(UserError):
    """A file that cannot be used as audio: missing, unreadable, or without samples."""


def load_audio(path: str | os.PathLike, sample_rate: int, quality: str = "HQ") -> np.ndarray:
    """Read `path` as a mono float32 waveform at `sample_rate` Hz.

    quality: the soxr resampling quality used when the file's rate differs ("HQ" or "VHQ").
    Raises AudioError naming the file when it is missing, not decodable, or holds no samples.
    """
    if quality not in RESAMPLE_QUALITIES:
        raise ConfigurationError(f"resample quality {quality!r} is not one of {RESAMPLE_QUALITIES}")
    try:
        frames, file_rate = soundfile.read(os.fspath(path), dtype="float32", always_2d=True)
    except FileNotFoundError as error:
        raise AudioError(f"{path}: file not found") from error
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(f"{path}: not readable as audio ({error})") from error
    if frames.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio samples")
    waveform = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    if not np.isfinite(waveform).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if file_rate != sample_rate:
        waveform = soxr.resample(waveform, file_rate, sample_rate, quality=quality)
    return np.ascontiguousarray(waveform, dtype=np.float32)
