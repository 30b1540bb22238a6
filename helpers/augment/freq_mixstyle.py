"""Frequency-wise MixStyle: mixing the per-frequency statistics of spectrograms across a batch.

For each example i of a batch (batch, channels, n_mels, frames), the mean mu_i[f] and standard deviation
sigma_i[f] of every frequency row f are taken over channels and time. The example is normalised with its
own statistics and re-scaled with statistics mixed with those of example ``permutation[i]``:

    x_i' = (x_i - mu_i) / sigma_i * (lam_i sigma_i + (1 - lam_i) sigma_perm(i)) + lam_i mu_i + (1 - lam_i) mu_perm(i)

with lam_i ~ Beta(alpha, alpha), not folded (unlike mixup, the label is unchanged). A recording device acts
roughly as a per-frequency gain, which on a log-mel spectrogram is a per-row offset, so mixing the row
statistics simulates other devices. The statistics are detached from the graph (gradients reach the input
only through the normalised values, as in MixStyle), sigma includes an epsilon of 1e-6 in the variance,
and the whole batch is mixed with probability p, else left untouched.

Sources:
- MixStyle (channel statistics of CNN features): Zhou et al., "Domain Generalization with MixStyle",
  ICLR 2021.
- Frequency-wise statistics on spectrograms (Freq-MixStyle): Schmid et al., "Knowledge Distillation from
  Transformers for Low-Complexity Acoustic Scene Classification", DCASE 2022 Workshop; CP-JKU's DCASE 2022
  Task 1 submission 2 used p=0.6, alpha=0.3 (README of github.com/CPJKU/cpjku_dcase22).
- The DCASE 2024 Task 1 baseline (github.com/CPJKU/dcase2024_task1_baseline, ``run_training.py``
  defaults ``--mixstyle_p 0.4 --mixstyle_alpha 0.3``), the same values as CP-JKU's DCASE 2023 CP-Mobile
  student (github.com/fschmid56/cpjku_dcase23, ``run_training.py``).
- PaSST with Freq-MixStyle: p=0.4, alpha=0.4 in CP-JKU's DCASE 2023 PaSST teacher
  (``run_passt_training.py``) and in the PaSST pipeline of Morocutti et al., "Device-Robust Acoustic
  Scene Classification via Impulse Response Augmentation", EUSIPCO 2023, arXiv 2305.07499
  (github.com/theMoro/DIRAugmentation, ``main_passt.py``).

Those implementations use the unbiased variance; this one uses the population variance, which is defined
for a single frame. Since the same estimator normalises and re-scales, the two differ only through epsilon.
All random numbers (the per-batch decision, lam, the permutation) come from torch's global CPU generator,
whatever the batch's device, so a seeded run and a resumed one (which restores that generator) draw the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from helpers.augment.method import Method, Place, Setting
from helpers.setting_kinds import POSITIVE, PROBABILITY

EPS = 1e-6  # added to the per-frequency variance before the square root, as in the sources above
STATISTICS_DIMS = (1, 3)  # channels and time of (batch, channels, n_mels, frames)


@dataclass(frozen=True)
class FreqMixStyle(Method):
    """Frequency-wise MixStyle with validated settings, a method of the spectrogram place.

    p: probability that a batch is mixed (0 turns it off without drawing random numbers);
    alpha: parameter of the Beta(alpha, alpha) distribution of the per-example weights of the own
    statistics (small alpha: weights near 0 or 1, i.e. mostly one example's statistics).
    """

    name = "freq_mixstyle"
    place = Place.SPECTROGRAM
    settings = {
        "p": Setting(0.0, PROBABILITY, "probability a training batch gets Freq-MixStyle (per-frequency statistics "
                     "mixed); 0: off"),
        "alpha": Setting(0.3, POSITIVE, "Freq-MixStyle weights ~ Beta(alpha, alpha)"),
    }
    named_configs = {"freq_mixstyle": (
        "Frequency-wise MixStyle, p 0.4, alpha 0.3 (DCASE 2024 Task 1 baseline; Schmid et al., DCASE 2022).",
        {"freq_mixstyle_p": 0.4, "freq_mixstyle_alpha": 0.3})}

    p: float
    alpha: float

    def __post_init__(self):
        if isinstance(self.p, bool) or not isinstance(self.p, int | float) or not 0 <= self.p <= 1:
            raise ValueError(
                f"freq_mixstyle_p={self.p!r}: expected the probability that a batch is mixed, in [0, 1] "
                "(0 turns Freq-MixStyle off; the DCASE 2024 Task 1 baseline uses 0.4)"
            )
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or not (
            math.isfinite(self.alpha) and self.alpha > 0
        ):
            raise ValueError(
                f"freq_mixstyle_alpha={self.alpha!r}: expected the Beta(alpha, alpha) parameter, a number > 0 "
                "(the DCASE 2024 Task 1 baseline uses 0.3); to turn Freq-MixStyle off set freq_mixstyle_p=0"
            )

    def draw(self, batch_size: int) -> tuple[Tensor, Tensor] | None:
        """Decide whether a batch of `batch_size` examples is mixed and draw how.

        Returns None (batch left as it is) or (permutation (batch,), lam (batch,) float32), all drawn from
        torch's global CPU generator: one uniform number for the decision, then lam, then the permutation.
        """
        if self.p == 0 or float(torch.rand(())) >= self.p:
            return None
        lam = torch.distributions.Beta(float(self.alpha), float(self.alpha)).sample((batch_size,))
        permutation = torch.randperm(batch_size)
        return permutation, lam

    def __call__(self, x: Tensor) -> Tensor:
        """x: spectrogram batch (batch, channels, n_mels, frames); the batch mixed with probability p."""
        _check_batch(x)
        drawn = self.draw(x.shape[0])
        if drawn is None:
            return x
        return mix_frequency_statistics(x, *drawn)


def freq_mixstyle(x: Tensor, p: float, alpha: float) -> Tensor:
    """Frequency-wise MixStyle of a spectrogram batch (batch, channels, n_mels, frames), see the module."""
    return FreqMixStyle(p, alpha)(x)


def mix_frequency_statistics(x: Tensor, permutation: Tensor, lam: Tensor, eps: float = EPS) -> Tensor:
    """Re-scale every example of x (batch, channels, n_mels, frames) from its own per-frequency statistics
    to lam_i * own + (1 - lam_i) * those of example permutation[i].

    Computed in float32 (float64 for float64 input), since the statistics' sums over frames need more than
    16 bits, and rounded once to x's dtype; the result stays on x's device.
    """
    _check_batch(x)
    work = x if x.dtype == torch.float64 else x.float()
    mean = work.mean(dim=STATISTICS_DIMS, keepdim=True).detach()
    std = (work.var(dim=STATISTICS_DIMS, keepdim=True, correction=0) + eps).sqrt().detach()
    lam = lam.to(device=x.device, dtype=work.dtype).reshape(-1, 1, 1, 1)
    permutation = permutation.to(x.device)
    mixed_mean = lam * mean + (1.0 - lam) * mean[permutation]
    mixed_std = lam * std + (1.0 - lam) * std[permutation]
    return ((work - mean) * (mixed_std / std) + mixed_mean).to(x.dtype)


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"Freq-MixStyle expects a floating-point spectrogram batch (batch, channels, n_mels, frames), got "
            f"shape {tuple(x.shape)} of {x.dtype}; apply it to the network's input (after x.unsqueeze(1))"
        )
