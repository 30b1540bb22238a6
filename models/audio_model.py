"""The one object that turns a waveform into logits: a front-end and a network.

Training, inference, export and the benchmarks all run this module, so a change to the front-end reaches
them all. The front-end maps (batch, samples) waveforms to (batch, n_mels, frames) log-mel spectrograms
(:class:`models.preprocess.AugmentMelSTFT`, or an export-friendly equivalent); the network maps
(batch, 1, n_mels, frames) spectrograms to (logits, embedding) (:class:`models.transformer.PaSST`).
"""

from __future__ import annotations

from torch import Tensor, nn


class AudioModel(nn.Module):
    """waveform (batch, samples) -> (logits, embedding)."""

    def __init__(self, front_end: nn.Module, net: nn.Module):
        """
        front_end: waveform (batch, samples) -> log-mel (batch, n_mels, frames).
        net: log-mel (batch, 1, n_mels, frames) -> (logits, embedding).
        """
        super().__init__()
        self.front_end = front_end
        self.net = net

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(self.spectrogram(waveform))

    def spectrogram(self, waveform: Tensor) -> Tensor:
        """The network's input for ``waveform``: (batch, 1, n_mels, frames)."""
        return self.front_end(waveform).unsqueeze(1)
