"""The one object that turns a waveform into logits: a front-end, an input transform and a network.

Training, inference, export and the benchmarks all run this module, so a change to the front-end reaches
them all. The front-end maps (batch, samples) waveforms to (batch, n_mels, frames) log-mel spectrograms
(:class:`models.preprocess.AugmentMelSTFT`, or an export-friendly equivalent); the input transform maps
the (batch, 1, n_mels, frames) spectrograms to the network's input of the same shape, in training and
evaluation alike (a normalisation; the identity unless one is given); the network maps that input to
(logits, embedding) (:class:`models.transformer.PaSST`).
"""

from __future__ import annotations

from torch import Tensor, nn


class AudioModel(nn.Module):
    """waveform (batch, samples) -> (logits, embedding)."""

    def __init__(self, front_end: nn.Module, net: nn.Module, input_transform: nn.Module | None = None):
        """
        front_end: waveform (batch, samples) -> log-mel (batch, n_mels, frames).
        net: log-mel (batch, 1, n_mels, frames) -> (logits, embedding).
        input_transform: log-mel (batch, 1, n_mels, frames) -> the network's input, same shape, in every mode;
            None: the identity.
        """
        super().__init__()
        self.front_end = front_end
        self.input_transform = nn.Identity() if input_transform is None else input_transform
        self.net = net

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        return self.classify(self.spectrogram(waveform))

    def spectrogram(self, waveform: Tensor) -> Tensor:
        """The front-end's log-mel of ``waveform``: (batch, 1, n_mels, frames)."""
        return self.front_end(waveform).unsqueeze(1)

    def classify(self, spectrogram: Tensor, net: nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """(logits, embedding) of a spectrogram batch (batch, 1, n_mels, frames) through the input transform
        and ``net`` (by default the model's network; e.g. its weight average)."""
        return (self.net if net is None else net)(self.input_transform(spectrogram))
