"""SpecAugment's masks as PaSST applies them: one band of mel rows and one span of frames per example.

Per example of a training spectrogram batch (batch, 1, n_mels, frames), one band of frequency rows (width
uniform in [0, freqm), capped at n_mels, start uniform in [0, n_mels - width)) and then one span of frames
(the same with timem) are set to the normalised value of log-mel 0, (0 + 4.5) / 5 = 0.9: PaSST masks in the
log-mel domain before the front-end's normalisation, and masking the normalised spectrogram with the
normalised zero gives the same values. The whole batch is masked with probability p (1, the default,
draws no decision). Widths and starts are drawn from the generator of the batch's device, masks in this
order (rows, then frames), as PaSST's front-end did.

Spectrograms read from a spectrogram cache (basedataset.cache_format='spectrogram') skip the front-end but
not this place: they are masked like computed ones, so the cache format does not change the augmentation
(the front-end's filterbank jitter, which needs the waveform, is the one thing they miss).

Source: Park et al., "SpecAugment", Interspeech 2019; PaSST (Koutini et al., Interspeech 2022,
github.com/kkoutini/PaSST, ``models/preprocess.py``): freqm=48 and timem per experiment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from helpers.augment.method import Method, Place, Setting
from helpers.setting_kinds import COUNT, PROBABILITY
from models.preprocess import NORM_SCALE, NORM_SHIFT

MASKED_VALUE = (0.0 + NORM_SHIFT) / NORM_SCALE  # log-mel 0 after the front-end's normalisation: 0.9
ROWS, FRAMES = 2, 3  # axes of (batch, 1, n_mels, frames)


@dataclass(frozen=True)
class SpecAugment(Method):
    """p: probability that a batch is masked; freqm, timem: mask widths are drawn from [0, freqm) mel rows
    and [0, timem) frames (0: no mask on that axis)."""

    name = "specaugment"
    place = Place.SPECTROGRAM
    settings = {
        "p": Setting(1.0, PROBABILITY, "probability a training batch gets SpecAugment's masks; 0: off"),
        "freqm": Setting(48, COUNT, "frequency mask width drawn from [0, freqm) mel rows (PaSST: 48); 0: none"),
        "timem": Setting(80, COUNT, "time mask width drawn from [0, timem) frames; 0: none"),
    }
    renamed = {"models.mel.freqm": "freqm", "models.mel.timem": "timem"}

    p: float
    freqm: int
    timem: int

    def __call__(self, x: Tensor) -> Tensor:
        """x: spectrogram batch (batch, 1, n_mels, frames); the batch with its masks, with probability p."""
        if self.p < 1 and float(torch.rand(())) >= self.p:
            return x
        x = mask_bands(x, self.freqm, ROWS)
        return mask_bands(x, self.timem, FRAMES)


def mask_bands(x: Tensor, max_width: int, dim: int) -> Tensor:
    """Set one band along ``dim`` (ROWS or FRAMES) of each example of x (batch, 1, n_mels, frames) to
    MASKED_VALUE: width uniform in [0, max_width) (capped at the axis size), start uniform in
    [0, size - width). Draws nothing when max_width is 0."""
    if max_width == 0:
        return x
    batch, size = x.shape[0], x.shape[dim]
    width = (torch.rand(batch, device=x.device) * min(max_width, size)).long()
    start = (torch.rand(batch, device=x.device) * (size - width)).long()
    position = torch.arange(size, device=x.device)
    masked = (position >= start[:, None]) & (position < (start + width)[:, None])
    masked = masked[:, None, :, None] if dim == ROWS else masked[:, None, None, :]
    return x.masked_fill(masked, MASKED_VALUE)
