"""Device impulse response (DIR) augmentation: training waveforms convolved with recorded impulse responses.

Morocutti et al., "Device-Robust Acoustic Scene Classification via Impulse Response Augmentation",
EUSIPCO 2023 (arXiv 2305.07499), convolve training clips of the reference device (device "a" of TAU Urban
Acoustic Scenes 2022 Mobile) with the impulse responses of other microphones (66 of the MicIRP collection,
not bundled here) to simulate recordings by more devices. In their code (github.com/theMoro/DIRAugmentation,
``datasets/dataset.py``, and CP-JKU's DCASE 2023 system, github.com/fschmid56/cpjku_dcase23,
``datasets/dcase23.py``), each clip of device "a" is convolved with probability p with an impulse response
drawn uniformly from the collection; the result is the full linear convolution cut to the clip's length
(its first samples: the impulse response is not re-aligned at its peak), and neither the impulse responses
nor the result are re-normalised. Their PaSST pipeline and CP-JKU's DCASE 2023 systems use p = 0.6, their
CP-ResNet pipeline p = 0.4. This module does the same: an impulse response with a delay before its peak
delays the clip by as much, and one with a gain other than 1 changes the clip's level; trim or scale the
files if that is not wanted.

The impulse responses are every audio file (wav, flac, ogg, mp3) under a folder, searched recursively and
sorted by path, so a seed draws the same file whatever order the file system lists them in; names starting
with "." (hidden files, macOS "._" resource files) are ignored. They are decoded like the dataset's audio
(datasets.audio: mono, resampled to the data's sample rate). Files that cannot be used are reported
together before any training, as unusable dataset audio is (datasets.cache.BadFilesError).

Random numbers come from torch's generator (``torch.rand``, ``torch.randint``), which the DataLoader seeds
in each worker from the run's seed, so augmented items are reproducible like the random crops of
datasets.base.ClipDataset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.audio import AudioError, load_audio
from datasets.cache import BadFilesError, bad_files_summary
from errors import ConfigurationError

logger = logging.getLogger(__name__)

IR_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class BadImpulseResponsesError(BadFilesError):
    """Impulse response files that are missing, unreadable, empty or silent."""


@dataclass(frozen=True)
class ImpulseResponse:
    """One impulse response: name, its path relative to the folder; samples, mono float32 at the data's rate."""

    name: str
    samples: np.ndarray


def find_impulse_response_files(folder: str | os.PathLike) -> list[Path]:
    """The audio files under `folder` (recursively, hidden names excluded), sorted by relative path.

    Raises ConfigurationError when the folder does not exist, is not a folder, or holds no audio file.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise ConfigurationError(
            f"dir_folder={os.fspath(folder)!r} does not exist: set it to the folder of impulse response audio "
            f"files ({', '.join(IR_EXTENSIONS)}), e.g. the MicIRP collection, or set dir_p=0"
        )
    if not root.is_dir():
        raise ConfigurationError(f"dir_folder={os.fspath(folder)!r} is a file, not a folder of impulse response files")
    files = sorted(
        (path for path in root.rglob("*") if path.suffix.lower() in IR_EXTENSIONS and not path.is_dir()),
        key=lambda path: path.relative_to(root).as_posix(),
    )
    files = [path for path in files if not any(part.startswith(".") for part in path.relative_to(root).parts)]
    if not files:
        raise ConfigurationError(
            f"dir_folder={os.fspath(folder)!r} holds no impulse response files ({', '.join(IR_EXTENSIONS)}, "
            "searched in subfolders too): put the impulse responses there, or set dir_p=0"
        )
    return files


def load_impulse_responses(
    folder: str | os.PathLike,
    sample_rate: int,
    skip_bad_files: bool = False,
    resample_quality: str = "HQ",
) -> list[ImpulseResponse]:
    """Every impulse response file under `folder` as mono float32 at `sample_rate` Hz, sorted by path.

    Files that are missing (dangling links), empty, not decodable, non-finite or all zeros raise
    BadImpulseResponsesError listing them, unless skip_bad_files, in which case they are left out with a
    warning (an error remains when no file is usable). resample_quality: soxr quality, "HQ" or "VHQ".
    """
    root = Path(folder).expanduser()
    files = find_impulse_response_files(root)
    impulse_responses, bad = [], []
    for path in files:
        name = path.relative_to(root).as_posix()
        try:
            samples = _read(path, sample_rate, resample_quality)
        except AudioError as error:
            bad.append((name, str(error).removeprefix(f"{path}: ")))
            continue
        impulse_responses.append(ImpulseResponse(name, samples))
    _report_bad_files(bad, len(files), root, skip_bad_files, usable=len(impulse_responses))
    longest = max(impulse_responses, key=lambda ir: len(ir.samples))
    logger.info(
        "%d impulse responses from %s (longest: %s, %.3f s)",
        len(impulse_responses), root, longest.name, len(longest.samples) / sample_rate,
    )
    return impulse_responses


def convolve(waveform: np.ndarray, impulse_response: np.ndarray) -> np.ndarray:
    """The first len(waveform) samples of the full linear convolution, by FFT, as float32.

    The transform length is the smallest 2^a 3^b 5^c >= len(waveform) + len(impulse_response) - 1, so the
    circular convolution of the FFT equals the linear one on the samples kept.
    """
    n_samples = len(waveform)
    if n_samples == 0:
        return np.zeros(0, dtype=np.float32)
    length = _fft_length(n_samples + len(impulse_response) - 1)
    spectrum = np.fft.rfft(np.asarray(waveform, dtype=np.float32), length)
    spectrum *= np.fft.rfft(np.asarray(impulse_response, dtype=np.float32), length)
    return np.fft.irfft(spectrum, length)[:n_samples].astype(np.float32, copy=False)


class ImpulseResponseAugment:
    """Convolves training waveforms with a random impulse response from a folder, with probability p.

    Applied per training example (in the loader workers); loads and checks every impulse response when
    constructed, so a missing folder or unusable file stops the run before any training.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        sample_rate: int,
        p: float,
        domains: Sequence[str] | None = None,
        skip_bad_files: bool = False,
        resample_quality: str = "HQ",
    ):
        """
        folder: the impulse response files (searched recursively); sample_rate: Hz of the waveforms;
        p: probability that an example of an augmented domain is convolved (Morocutti et al.: 0.6 for PaSST);
        domains: the domains (recording devices, instrument sources) whose examples are augmented, e.g. the
        reference device ["a"] as in the paper; None: every training example;
        skip_bad_files: leave out unusable impulse response files with a warning instead of stopping;
        resample_quality: soxr quality ("HQ" or "VHQ") for files at another sample rate.
        """
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ConfigurationError(
                f"dir_p={p!r}: expected the probability that an example is convolved with an impulse response, "
                "in [0, 1] (0 turns it off; Morocutti et al. 2023 use 0.6 with PaSST)"
            )
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ConfigurationError(f"sample_rate={sample_rate!r}: expected a positive number of samples per second")
        if domains is not None and (
            isinstance(domains, str) or not domains or not all(isinstance(domain, str) for domain in domains)
        ):
            raise ConfigurationError(
                f"dir_domains={domains!r}: expected a non-empty list of domain names whose training examples are "
                "convolved, e.g. ['a'] (the reference device), or None for every training example"
            )
        self.p = float(p)
        self.sample_rate = sample_rate
        self.domains = None if domains is None else frozenset(domains)
        self.impulse_responses = load_impulse_responses(folder, sample_rate, skip_bad_files, resample_quality)

    def check_domains(self, known: Sequence[str], domain_kind: str = "domain") -> None:
        """Raise ConfigurationError when `domains` names one that is not in `known` (e.g. the training domains),
        which would silently leave its examples unaugmented."""
        unknown = sorted(self.domains - set(known)) if self.domains is not None else []
        if unknown:
            raise ConfigurationError(
                f"dir_domains={sorted(self.domains)!r}: {unknown} are not {domain_kind}s of the training data, "
                f"which holds {list(known)}; names are case-sensitive"
            )

    def applies_to(self, domain: str) -> bool:
        """Whether examples of `domain` may be convolved."""
        return self.domains is None or domain in self.domains

    def __call__(self, waveform: np.ndarray, domain: str) -> np.ndarray:
        """waveform: (samples,) float audio of one training example of `domain`.

        Returns it as it is (not copied) when its domain is not augmented or the draw says no, else its
        convolution with a uniformly drawn impulse response: float32, same length. Draws one uniform
        number and then one index from torch's generator, and nothing for domains not augmented or p = 0.
        """
        is_mono_float = isinstance(waveform, np.ndarray) and waveform.ndim == 1 and waveform.dtype.kind == "f"
        if not is_mono_float:
            raise ValueError(
                f"impulse response augmentation expects one mono float waveform (samples,), got "
                f"{type(waveform).__name__} of shape {getattr(waveform, 'shape', None)}"
            )
        if not self.applies_to(domain) or self.p == 0 or float(torch.rand(())) >= self.p:
            return waveform
        index = int(torch.randint(len(self.impulse_responses), ()))
        return convolve(waveform, self.impulse_responses[index].samples)


def _read(path: Path, sample_rate: int, resample_quality: str) -> np.ndarray:
    """One impulse response file as float32; AudioError for a dangling link, empty file or silent response."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise AudioError(f"{path}: file not found") from error
    if size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    samples = load_audio(path, sample_rate, resample_quality)
    if not np.any(samples):
        raise AudioError(f"{path}: all samples are zero (a silent impulse response would silence every clip)")
    return samples


def _report_bad_files(bad: Sequence[tuple[str, str]], n_files: int, root: Path, skip: bool, usable: int) -> None:
    if not bad:
        return
    summary = bad_files_summary(bad, n_files, f"impulse response files in {root} (dir_folder)")
    if skip and usable:
        logger.warning("%s\nThey are left out (skip_bad_files=True).", summary)
        return
    if usable:
        fix = "Replace or delete these files, or set basedataset.skip_bad_files=True to leave them out."
    else:
        fix = "No usable impulse response is left: replace these files, or set dir_p=0."
    raise BadImpulseResponsesError(f"{summary}\n{fix}")


def _fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (lengths numpy's FFT computes fastest)."""
    best = 1 << max(n - 1, 0).bit_length()
    power_of_5 = 1
    while power_of_5 < best:
        power_of_3 = power_of_5
        while power_of_3 < best:
            candidate = power_of_3
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power_of_3 *= 3
        power_of_5 *= 5
    return best
