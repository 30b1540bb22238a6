"""The per-epoch learning-rate factor against values computed by hand from the schedule's definition."""

import math

import pytest
import torch

from helpers.training.schedule import lr_schedule

# warm-up 5 epochs, full rate through epoch 50, linear ramp over 50 epochs down to 0.01 (the TAU defaults)
TAU = dict(schedule_mode="exp_lin", warm_up_len=5, ramp_down_start=50, ramp_down_len=50, last_lr_value=0.01)


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0, math.exp(-5 * (1 - 0.5 / 5) ** 2)),  # epoch 0 counts as half an epoch: exp(-4.05)
        (1, math.exp(-5 * (1 - 1 / 5) ** 2)),  # exp(-3.2)
        (4, math.exp(-5 * (1 - 4 / 5) ** 2)),  # exp(-0.2)
        (5, 1.0),
        (50, 1.0),
        (51, 0.01 + 0.99 * 49 / 50),
        (75, 0.01 + 0.99 * 25 / 50),  # half way down: 0.505
        (99, 0.01 + 0.99 * 1 / 50),
        (100, 0.01),
        (500, 0.01),
    ],
)
def test_exp_lin_factor_at_chosen_epochs(epoch, expected):
    assert lr_schedule(**TAU)(epoch) == pytest.approx(expected, rel=1e-12)


def test_warm_up_and_ramp_down_overlap_multiply():
    factor = lr_schedule("exp_lin", warm_up_len=4, ramp_down_start=1, ramp_down_len=4, last_lr_value=0.0)
    # epoch 3: warm-up exp(-5 (1/4)^2), ramp 2 epochs into 4 -> 2/4
    assert factor(3) == pytest.approx(math.exp(-5 / 16) * 0.5)


def test_no_warm_up():
    factor = lr_schedule("exp_lin", warm_up_len=0, ramp_down_start=10, ramp_down_len=10, last_lr_value=0.1)
    assert factor(0) == 1.0


def test_lambda_lr_applies_the_factor_per_epoch():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=2e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(**TAU))
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [2e-3 * math.exp(-5 * (1 - max(e, 0.5) / 5) ** 2) for e in range(5)] + [2e-3]
    assert seen == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(schedule_mode="cosine"), "schedule_mode 'cosine'.*exp_lin"),
        (dict(warm_up_len=-1), "warm_up_len"),
        (dict(ramp_down_len=2.5), "ramp_down_len"),
        (dict(last_lr_value=1.5), "last_lr_value"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        lr_schedule(**{**TAU, **changes})
