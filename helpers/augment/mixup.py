"""Mixup of spectrogram batches with per-example mixing weights, and the matching loss.

Each example i is mixed with example ``permutation[i]`` of the same batch:
``x_i' = lam_i x_i + (1 - lam_i) x_perm(i)``, with lam_i ~ Beta(alpha, alpha) folded onto [0.5, 1]
(lam = max(lam, 1 - lam)) so every mixed example is dominated by its own label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from errors import ConfigurationError


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


def mixed_cross_entropy(logits: Tensor, labels: Tensor, permutation: Tensor, lam: Tensor) -> Tensor:
    """Per-example cross-entropy against both mixed labels, weighted lam and 1 - lam: shape (batch,)."""
    lam = lam.to(device=logits.device, dtype=logits.dtype)
    own = F.cross_entropy(logits, labels, reduction="none")
    other = F.cross_entropy(logits, labels[permutation.to(labels.device)], reduction="none")
    return lam * own + (1.0 - lam) * other
