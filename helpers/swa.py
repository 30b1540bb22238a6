"""Stochastic weight averaging: an equal-weight running mean of the network's weights over epochs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SwaSchedule:
    """Which epochs enter the average.

    epoch_start: first epoch (0-based, as Lightning counts) whose final weights are averaged.
    freq: average every ``freq`` epochs from ``epoch_start`` on.
    """

    epoch_start: int
    freq: int = 1

    def __post_init__(self) -> None:
        if self.epoch_start < 0:
            raise ValueError(f"swa_epoch_start must be an epoch index >= 0, got {self.epoch_start}.")
        if self.freq < 1:
            raise ValueError(f"swa_freq must be >= 1 (average every swa_freq epochs), got {self.freq}.")

    def averages_after(self, epoch: int) -> bool:
        """Whether the weights at the end of ``epoch`` join the average."""
        return epoch >= self.epoch_start and (epoch - self.epoch_start) % self.freq == 0


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, n_averaged: int) -> None:
    """Fold ``model``'s weights into ``average``, the mean of ``n_averaged`` earlier snapshots.

    Parameters and floating-point buffers become (n * average + model) / (n + 1); other buffers are copied.
    """
    for mean, current in zip(average.parameters(), model.parameters(), strict=True):
        mean.add_((current.detach() - mean) / (n_averaged + 1))
    for mean, current in zip(average.buffers(), model.buffers(), strict=True):
        if mean.is_floating_point():
            mean.add_((current - mean) / (n_averaged + 1))
        else:
            mean.copy_(current)
