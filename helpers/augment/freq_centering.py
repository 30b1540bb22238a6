"""Frequency-centering: each frequency bin of an example's log-mel input minus its mean over time.

For the network's input x (batch, channels, n_mels, frames), per example i and mel bin f,

    mu_i[f] = mean of x_i[:, f, :] over channels and frames,     centred_i = x_i - mu_i[f]

and with ``freq_centering_scale=True`` the full frequency-wise normalisation (each bin also divided by its
standard deviation over channels and frames, population variance + 1e-5 under the square root)

    normalised_i = (x_i - mu_i[f]) / sqrt(var_i[f] + 1e-5).

A recording device acts roughly as a fixed gain per frequency, which on a log-mel spectrogram is an offset per
mel bin: the per-bin mean over time of an example carries the device, and subtracting it removes that offset
whatever the device, seen in training or not. It is a method of the input place: the same operation in
training, evaluation, predict and export, rebuilt from its settings by a checkpoint (it holds no trained state).
The statistics are not detached (a normalisation layer, as instance normalisation); 16-bit input is centred
with float32 statistics and rounded once.

``weight`` w blends the input with its centred (or normalised) version, ``x + w (N(x) - x)``: 1 is the
paper's operation (the named config ``freq_centering``), 0 turns it off; values between are frito's
interpolation, not from the paper.

Source: Primus and Widmer, "On Frequency-Wise Normalizations for Better Recording Device Generalization in
Audio Spectrogram Transformers", EUSIPCO 2023, arXiv 2306.11764. What the defaults rest on: the abstract's
findings, that device information sits in the frequency dimension of the input and is moved into the token
dimension after the first self-attention block, hence that suppressing it in the input spectrogram is most
effective, and that the operation proposed is frequency-*centering* of spectrograms (up to +18.2 points on
unseen devices). So the default is centering (``scale=False``) on the input. The paper's tables comparing
centering with full normalisation, and normalisations of hidden layers, could not be read here; full
normalisation is offered as ``freq_centering_scale=True``, and normalising hidden activations (the patch
embedding, a block's output) is not reachable through this interface without a hook in models/.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from helpers.augment.method import Method, Place, Setting
from helpers.setting_kinds import BOOLEAN, WEIGHT

EPS = 1e-5  # added to the per-bin variance before the square root (scale=True), as PyTorch's normalisation layers
STATISTICS_DIMS = (1, 3)  # channels and frames of (batch, channels, n_mels, frames)


class FreqCentering(Method, nn.Module):
    """weight: how much of the centred input replaces the input (1: all, the paper's; 0: off);
    scale: also divide each mel bin by its standard deviation over time (full frequency-wise normalisation)."""

    name = "freq_centering"
    place = Place.INPUT
    strength = "weight"
    settings = {
        "weight": Setting(0.0, WEIGHT, "frequency-centering of the network's input (each mel bin minus its mean "
                          "over time, per example; Primus and Widmer 2023): 1 on, 0 off, between: a blend"),
        "scale": Setting(False, BOOLEAN, "frequency-centering also divides each mel bin by its standard deviation "
                         "over time (full frequency-wise normalisation); False: centering only, the paper's"),
    }
    named_configs = {"freq_centering": (
        "Frequency-centering of the input spectrogram (Primus and Widmer, EUSIPCO 2023).",
        {"freq_centering_weight": 1.0, "freq_centering_scale": False})}

    def __init__(self, weight: float, scale: bool = False):
        nn.Module.__init__(self)
        if not WEIGHT.accepts(weight):
            raise ValueError(f"freq_centering_weight={weight!r}: expected {WEIGHT.expected}; 1 applies the paper's "
                             "frequency-centering")
        if not BOOLEAN.accepts(scale):
            raise ValueError(f"freq_centering_scale={scale!r}: expected True or False (False: centering only)")
        self.weight = float(weight)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        """x: the network's input (batch, channels, n_mels, frames) -> the same shape and dtype."""
        work = x if x.dtype == torch.float64 else x.float()
        normalised = frequency_normalise(work, self.scale)
        if self.weight != 1.0:
            normalised = work + self.weight * (normalised - work)
        return normalised.to(x.dtype)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, scale={self.scale}"


def frequency_normalise(x: Tensor, scale: bool, eps: float = EPS) -> Tensor:
    """Each example's mel bins of x (batch, channels, n_mels, frames) minus their mean over channels and frames,
    and with ``scale`` divided by sqrt(their population variance + eps)."""
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"frequency-centering expects a floating-point spectrogram batch (batch, channels, n_mels, "
                         f"frames), got shape {tuple(x.shape)} of {x.dtype}")
    centred = x - x.mean(dim=STATISTICS_DIMS, keepdim=True)
    if not scale:
        return centred
    return centred / (centred.square().mean(dim=STATISTICS_DIMS, keepdim=True) + eps).sqrt()  # exportable variance
