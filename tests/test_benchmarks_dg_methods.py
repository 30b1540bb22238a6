"""benchmarks/dg_methods.py: its variants follow the registry, and one step of each runs."""

import torch

from benchmarks.dg_methods import STEP_PLACES, Setup, measure, ratios, variants
from helpers.augment.registry import METHODS, active_settings


def test_every_method_of_the_training_step_is_a_variant_and_the_baseline_has_none():
    configs, skipped = variants()
    assert active_settings(configs["baseline"]) == {}
    timed = {name for config in configs.values() for name in active_settings(config)}
    assert timed == {name for name, method in METHODS.items() if method.place in STEP_PLACES}
    assert all(active_settings(config) for name, config in configs.items() if name != "baseline")
    assert [entry.split(" ")[0] for entry in skipped] == [
        name for name, method in METHODS.items() if method.place not in STEP_PLACES]


def test_each_variant_times_a_training_step():
    torch.manual_seed(0)
    configs, _ = variants()
    times = measure(Setup("passt_mini", 0.5, 2, 2), configs)
    assert set(times) == set(configs) and all(len(values) == 2 and min(values) > 0 for values in times.values())
    assert set(ratios(times)) == set(configs) - {"baseline"}


def test_ratios_pair_each_round_with_the_baseline_of_that_round():
    times = {"baseline": [1.0, 2.0, 4.0], "slow": [1.5, 3.0, 6.0], "noisy": [1.0, 4.0, 4.0]}
    assert ratios(times) == {"slow": (1.5, 1.5, 1.5), "noisy": (1.0, 1.0, 2.0)}
