"""Relaxed instance frequency-wise normalisation (RFN) of the network's input spectrogram.

For the network's input x (batch, channels, n_mels, frames), per example i:

    IFN(x)_i = (x_i - mu_i[f]) / sqrt(var_i[f] + eps)      statistics per mel bin f over channels and frames
    LN(x)_i  = (x_i - mu_i) / sqrt(var_i + eps)            statistics over channels, mel bins and frames
    RFN(x)   = lam IFN(x) + (1 - lam) LN(x)

(population variances, eps 1e-5, no affine parameters). Instance frequency-wise normalisation removes what a
device adds per frequency (an offset and a spread per mel bin of the log-mel spectrogram); the layer
normalisation term keeps part of the spectral shape that IFN erases with it, relaxing the loss of
discriminative information (the paper's "relaxed"). lam is ``rfn_lam``.

Where it acts. Kim et al. plug RFN into CNNs, as a module on feature maps (batch, channels, frequency, time)
whose frequency axis the convolutions keep. In PaSST the analogue of such a map is the patch-embedding output
(batch, dim, frequency rows, time columns), which is inside the network: the interface's places do not reach it
(it would need a hook in models/). This method acts at the input place, on the spectrogram (batch, 1, n_mels,
frames), where the paper's reasoning (device information in the per-frequency statistics of an instance) holds
most directly, and where Primus and Widmer (EUSIPCO 2023, arXiv 2306.11764) conjecture that suppressing device
characteristics is most effective for audio spectrogram transformers, having found that device information moves
from the frequency axis into the tokens after the first attention block. On the input, with one channel, IFN is
the full frequency-wise normalisation (``freq_centering_scale=True``). Being an input-place method it runs the
same in training, evaluation, predict and export, and holds no trained state (a checkpoint rebuilds it from its
settings); the statistics are not detached (a normalisation layer); 16-bit input is normalised with float32
statistics and rounded once.

``weight`` w blends the input with its RFN, ``x + w (RFN(x) - x)``: 1 is the paper's operation (named config
``rfn``), 0 turns it off; values between are frito's interpolation, not from the paper.

Source: Kim, Yang, Kim, Park, Lee and Chang, "Domain Generalization with Relaxed Instance Frequency-wise
Normalization for Multi-device Acoustic Scene Classification", Interspeech 2022, arXiv 2206.12513 (the
extension of the DCASE 2021 Task 1A winning submission). The formula above is the issue's statement of the
paper's ``lam IFN + (1 - lam) LN``; lam = 0.5, the default of the named config, is the value recalled for the
paper but not checked against its text here (with 0.5 the weighting is symmetric, so the two possible
conventions of which term lam weights agree).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from helpers.augment.method import Method, Place, Setting
from helpers.setting_kinds import WEIGHT, Kind

EPS = 1e-5  # added to every variance before the square root, as PyTorch's normalisation layers
IFN_DIMS = (1, 3)  # channels and frames of (batch, channels, n_mels, frames): statistics per mel bin
LN_DIMS = (1, 2, 3)  # channels, mel bins and frames: statistics per example
FRACTION = Kind(lambda value: not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value <= 1,
                "a number in [0, 1]")


class RFN(Method, nn.Module):
    """weight: how much of RFN(x) replaces the input x (1: all, the paper's; 0: off); lam: the share of
    instance frequency-wise normalisation, the rest layer normalisation."""

    name = "rfn"
    place = Place.INPUT
    strength = "weight"
    settings = {
        "weight": Setting(0.0, WEIGHT, "relaxed instance frequency-wise normalisation of the network's input "
                          "(Kim et al. 2022): 1 on, 0 off, between: a blend"),
        "lam": Setting(0.5, FRACTION, "RFN = lam * instance frequency-wise normalisation + (1 - lam) * layer "
                       "normalisation (Kim et al.: 0.5)"),
    }
    named_configs = {"rfn": (
        "Relaxed instance frequency-wise normalisation of the input spectrogram, lam 0.5 (Kim et al., "
        "Interspeech 2022).",
        {"rfn_weight": 1.0, "rfn_lam": 0.5})}

    def __init__(self, weight: float, lam: float = 0.5):
        nn.Module.__init__(self)
        if not WEIGHT.accepts(weight):
            raise ValueError(f"rfn_weight={weight!r}: expected {WEIGHT.expected}; 1 applies the paper's RFN")
        if not FRACTION.accepts(lam):
            raise ValueError(f"rfn_lam={lam!r}: expected {FRACTION.expected} (the share of instance "
                             "frequency-wise normalisation; Kim et al. use 0.5)")
        self.weight = float(weight)
        self.lam = float(lam)

    def forward(self, x: Tensor) -> Tensor:
        """x: the network's input (batch, channels, n_mels, frames) -> the same shape and dtype."""
        work = x if x.dtype == torch.float64 else x.float()
        normalised = relaxed_frequency_normalise(work, self.lam)
        if self.weight != 1.0:
            normalised = work + self.weight * (normalised - work)
        return normalised.to(x.dtype)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, lam={self.lam}"


def relaxed_frequency_normalise(x: Tensor, lam: float, eps: float = EPS) -> Tensor:
    """lam * IFN(x) + (1 - lam) * LN(x) of x (batch, channels, n_mels, frames), see the module."""
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"RFN expects a floating-point spectrogram batch (batch, channels, n_mels, frames), got "
                         f"shape {tuple(x.shape)} of {x.dtype}")
    return lam * _normalise(x, IFN_DIMS, eps) + (1.0 - lam) * _normalise(x, LN_DIMS, eps)


def _normalise(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """x minus its mean over ``dims``, divided by sqrt(population variance + eps) (the variance as a mean of
    squares, which every export format has)."""
    centred = x - x.mean(dim=dims, keepdim=True)
    return centred / (centred.square().mean(dim=dims, keepdim=True) + eps).sqrt()
