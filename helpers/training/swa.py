"""Stochastic weight averaging: which epochs' weights enter the average.

The average itself is torch.optim.swa_utils.AveragedModel (an equal-weight running mean, its count in
its state dict), kept by the training module as ``net_swa``."""

from __future__ import annotations

from dataclasses import dataclass

from errors import ConfigurationError


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
            raise ConfigurationError(f"swa_epoch_start must be an epoch index >= 0, got {self.epoch_start}.")
        if self.freq < 1:
            raise ConfigurationError(f"swa_freq must be >= 1 (average every swa_freq epochs), got {self.freq}.")

    def averages_after(self, epoch: int) -> bool:
        """Whether the weights at the end of ``epoch`` join the average."""
        return epoch >= self.epoch_start and (epoch - self.epoch_start) % self.freq == 0
