"""Mixup of spectrogram batches with per-example mixing weights, and the matching loss.

Each example i is mixed with example ``permutation[i]`` of the same batch:
``x_i' = lam_i x_i + (1 - lam_i) x_perm(i)``, with lam_i ~ Beta(alpha, alpha) folded onto [0.5, 1]
(lam = max(lam, 1 - lam)) so every mixed example is dominated by its own label. As a method of the batch
place (:class:`Mixup`), a batch is mixed with probability p (1, as the paper's ``use_mixup=True``, draws
no decision) and trained on the mixed criterion ``lam_i loss(x_i', y_i) + (1 - lam_i) loss(x_i', y_perm(i))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from errors import ConfigurationError
from helpers.augment.method import Criterion, Method, Place, Setting, Switch
from helpers.setting_kinds import POSITIVE, PROBABILITY


@dataclass(frozen=True)
class Mixup(Method):
    """p: probability that a training batch is mixed; alpha: the weights' Beta(alpha, alpha)."""

    name = "mixup"
    place = Place.BATCH
    settings = {
        "p": Setting(0.0, PROBABILITY, "probability a training batch is mixed (mixup); 0: off"),
        "alpha": Setting(0.3, POSITIVE, "mixup weights ~ Beta(alpha, alpha), folded onto [0.5, 1]"),
    }
    switch = Switch("use_mixup", "True: mixup on every training batch (mixup_p=1), False: off (mixup_p=0); "
                                 "None: as mixup_p says")
    named_configs = {
        "mixup": ("Mixup of spectrograms, alpha 0.3.", {"use_mixup": True, "mixup_alpha": 0.3}),
        "nomixup": ("No mixup.", {"use_mixup": False}),
    }

    p: float
    alpha: float

    def __call__(self, x: Tensor, criterion: Criterion) -> tuple[Tensor, Criterion]:
        """The batch mixed, and the criterion weighted over both labels of each mixed example (with
        probability p; else both as they are)."""
        if self.p < 1 and float(torch.rand(())) >= self.p:
            return x, criterion
        x, permutation, lam = mixup(x, self.alpha)
        return x, mixed_criterion(criterion, permutation, lam)


def mixup(x: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mix a batch (batch, ...) with a random permutation of itself.

    Returns (mixed batch, permutation (batch,), lam (batch,)). The random draws come from torch's
    global CPU generator (seeded by the run's seed) whatever the batch's device.
    """
    if alpha <= 0:
        raise ConfigurationError(f"mixup_alpha must be > 0 (the Beta distribution's parameter), got {alpha!r}.")
    batch_size = x.shape[0]
    lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((batch_size,))
    lam = torch.maximum(lam, 1.0 - lam)
    permutation = torch.randperm(batch_size)
    return mix(x, permutation, lam), permutation, lam


def mix(x: Tensor, permutation: Tensor, lam: Tensor) -> Tensor:
    """lam_i x_i + (1 - lam_i) x_permutation(i), lam broadcast over all but the batch axis."""
    lam = lam.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return x * lam + x[permutation.to(x.device)] * (1.0 - lam)


def mixed_criterion(criterion: Criterion, permutation: Tensor, lam: Tensor) -> Criterion:
    """(logits, labels) -> lam_i criterion(logits, labels)_i + (1 - lam_i) criterion(logits, labels[perm])_i."""

    def mixed(logits: Tensor, labels: Tensor) -> Tensor:
        weight = lam.to(device=logits.device, dtype=logits.dtype)
        own = criterion(logits, labels)
        other = criterion(logits, labels[permutation.to(labels.device)])
        return weight * own + (1.0 - weight) * other

    return mixed


def mixed_cross_entropy(logits: Tensor, labels: Tensor, permutation: Tensor, lam: Tensor) -> Tensor:
    """Per-example cross-entropy against both mixed labels, weighted lam and 1 - lam: shape (batch,)."""
    criterion = mixed_criterion(lambda scores, targets: F.cross_entropy(scores, targets, reduction="none"),
                                permutation, lam)
    return criterion(logits, labels)
