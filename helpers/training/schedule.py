"""Per-epoch learning-rate schedules: a factor of the base learning rate for each epoch.

``schedule_mode`` names an entry of :data:`SCHEDULES`; :func:`lr_schedule` builds the factor function
that ``torch.optim.lr_scheduler.LambdaLR`` steps once per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpWarmupLinearDown:
    """Exponential warm-up, a plateau at 1, then a linear ramp-down to ``last_lr_value``.

    warm_up_len: epochs of warm-up; the factor at epoch e < warm_up_len is exp(-5 (1 - e'/warm_up_len)^2)
        with e' = max(e, 0.5), so epoch 0 already trains with a small, non-zero rate. 0 disables it.
    ramp_down_start: the last epoch at full rate; the ramp-down begins after it.
    ramp_down_len: epochs the factor takes to fall linearly from 1 to ``last_lr_value``.
    last_lr_value: factor kept after the ramp-down.
    """

    warm_up_len: int
    ramp_down_start: int
    ramp_down_len: int
    last_lr_value: float

    def __call__(self, epoch: int) -> float:
        return self.warm_up(epoch) * self.ramp_down(epoch)

    def warm_up(self, epoch: int) -> float:
        if epoch >= self.warm_up_len:
            return 1.0
        phase = 1.0 - max(epoch, 0.5) / self.warm_up_len
        return math.exp(-5.0 * phase * phase)

    def ramp_down(self, epoch: int) -> float:
        if epoch <= self.ramp_down_start:
            return 1.0
        into_ramp = epoch - self.ramp_down_start
        if into_ramp >= self.ramp_down_len:
            return self.last_lr_value
        return self.last_lr_value + (1.0 - self.last_lr_value) * (self.ramp_down_len - into_ramp) / self.ramp_down_len


SCHEDULES = {
    "exp_lin": ExpWarmupLinearDown,
}


def lr_schedule(
    schedule_mode: str, warm_up_len: int, ramp_down_start: int, ramp_down_len: int, last_lr_value: float
) -> ExpWarmupLinearDown:
    """The per-epoch learning-rate factor for ``schedule_mode`` (a key of SCHEDULES)."""
    if schedule_mode not in SCHEDULES:
        raise ValueError(
            f"Unknown schedule_mode {schedule_mode!r}; known modes: {', '.join(SCHEDULES)} "
            "(set schedule_mode=exp_lin for exponential warm-up then linear ramp-down)."
        )
    for name, value in (("warm_up_len", warm_up_len), ("ramp_down_start", ramp_down_start),
                        ("ramp_down_len", ramp_down_len)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number of epochs >= 0, got {value!r}.")
    if not 0.0 <= last_lr_value <= 1.0:
        raise ValueError(f"last_lr_value is a factor of lr in [0, 1], got {last_lr_value!r}.")
    return SCHEDULES[schedule_mode](warm_up_len, ramp_down_start, ramp_down_len, last_lr_value)
