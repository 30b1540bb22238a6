"""Figures per run and the bootstrap over seeds and test examples, against hand-built cases, a plain loop
over replicates and the normal approximation of a mean's spread."""

import numpy as np
import pytest

from helpers.study.bootstrap import OVERALL, Layout, interval, paired_differences, replicated_means


def layout_of(counts: dict[str, int], seen: list[str]) -> Layout:
    domains = [name for name, count in counts.items() for _ in range(count)]
    return Layout.from_names(domains, {"seen": seen, "unseen": [name for name in counts if name not in seen]})


def test_groups_are_means_of_domain_accuracies_overall_counts_examples():
    # device a: 60 examples, all wrong; device b: 12 examples, all right; c (unseen): 10 examples, 4 right
    layout = layout_of({"a": 60, "b": 12, "c": 10}, seen=["a", "b"])
    correct = np.array([False] * 60 + [True] * 12 + [True] * 4 + [False] * 6)
    per_domain = layout.per_domain(correct)
    np.testing.assert_allclose(per_domain, [0.0, 1.0, 0.4])
    figures = layout.figures(per_domain)
    assert figures["seen"] == pytest.approx(0.5)  # b weighs as much as a
    assert figures["unseen"] == pytest.approx(0.4)
    assert figures[OVERALL] == pytest.approx(16 / 82)
    assert layout.group_counts() == {OVERALL: 82, "seen": 72, "unseen": 10}


def test_domains_without_examples_and_empty_groups_are_left_out():
    layout = Layout.from_names(["b", "a", "b"], {"seen": ["a", "x"], "unseen": ["y"]})
    assert layout.domain_names == ("a", "b")
    assert dict(layout.groups) == {"seen": (0,)}
    np.testing.assert_array_equal(layout.counts, [1, 2])


def test_identical_runs_differ_by_exactly_zero():
    layout = layout_of({"a": 30, "b": 10, "c": 20}, seen=["a"])
    correct = np.random.default_rng(0).random((3, 60)) < 0.6
    replicates = paired_differences(correct, correct.copy(), layout, 500, np.random.default_rng(1))
    for values in replicates.values():
        assert interval(values) == (0.0, 0.0)


def test_always_right_against_always_wrong_differs_by_exactly_one():
    layout = layout_of({"a": 30, "b": 10}, seen=["a"])
    replicates = paired_differences(np.ones((2, 40), bool), np.zeros((2, 40), bool), layout, 500,
                                    np.random.default_rng(1))
    for values in replicates.values():
        assert interval(values) == (1.0, 1.0)


def test_seeds_are_resampled_in_pairs():
    # seed 1: variant and baseline agree everywhere; seed 2: variant right, baseline wrong everywhere.
    # Examples do not matter; two seeds drawn with replacement give 0, 1/2 or 1 with chances 1/4, 1/2, 1/4.
    layout = layout_of({"a": 8, "b": 4}, seen=["a"])
    variant = np.array([[True] * 12, [True] * 12])
    baseline = np.array([[True] * 12, [False] * 12])
    values = paired_differences(variant, baseline, layout, 20000, np.random.default_rng(2))["seen"]
    assert set(np.unique(values)) == {0.0, 0.5, 1.0}
    shares = [np.mean(values == level) for level in (0.0, 0.5, 1.0)]
    np.testing.assert_allclose(shares, [0.25, 0.5, 0.25], atol=0.015)
    assert interval(values) == (0.0, 1.0)  # contains 0: no clear difference


def test_a_seed_effect_shared_by_variant_and_baseline_cancels():
    # seed 1 is easy for both (all right), seed 2 hard for both (all wrong): every paired replicate is 0,
    # where drawing the variant's and the baseline's seeds apart would give differences up to +-1.
    layout = layout_of({"a": 8, "b": 4}, seen=["a"])
    runs = np.array([[True] * 12, [False] * 12])
    values = paired_differences(runs, runs.copy(), layout, 2000, np.random.default_rng(2))
    assert all(np.all(value == 0.0) for value in values.values())


def test_one_seed_spread_matches_the_normal_approximation():
    # With one seed only examples are resampled: a domain's mean difference has the plug-in standard error
    # sd(d) / sqrt(n), and a group (mean of D domains) sqrt(sum sd_d^2 / n_d) / D.
    rng = np.random.default_rng(3)
    counts = {"a": 200, "b": 50, "c": 120}
    layout = layout_of(counts, seen=["a", "b"])
    variant = rng.random((1, 370)) < 0.7
    baseline = rng.random((1, 370)) < 0.6
    difference = variant[0].astype(float) - baseline[0]
    values = paired_differences(variant, baseline, layout, 20000, np.random.default_rng(4))
    a, b = difference[:200], difference[200:250]
    seen_se = np.sqrt(a.var() / 200 + b.var() / 50) / 2
    assert np.std(values["seen"]) == pytest.approx(seen_se, rel=0.04)
    assert np.mean(values["seen"]) == pytest.approx((a.mean() + b.mean()) / 2, abs=0.2 * seen_se)
    overall_se = np.sqrt(sum(part.var() * len(part) for part in (a, b, difference[250:]))) / 370
    assert np.std(values[OVERALL]) == pytest.approx(overall_se, rel=0.04)


def test_interval_agrees_with_a_plain_loop_over_replicates():
    rng = np.random.default_rng(5)
    counts = {"a": 40, "b": 12, "c": 25, "d": 18}
    layout = layout_of(counts, seen=["a", "b"])
    n_seeds, n = 3, sum(counts.values())
    variant = rng.random((n_seeds, n)) < np.array([[0.75], [0.6], [0.7]])
    baseline = rng.random((n_seeds, n)) < 0.6
    domain_of = np.repeat(np.arange(4), list(counts.values()))
    loop = np.random.default_rng(6)
    reference = []
    for _ in range(4000):
        seeds = loop.integers(0, n_seeds, n_seeds)
        examples = [loop.choice(np.flatnonzero(domain_of == d), size=np.sum(domain_of == d)) for d in range(4)]
        per_seed = []
        for seed in seeds:
            accuracies = [variant[seed, members].mean() - baseline[seed, members].mean() for members in examples]
            per_seed.append(np.mean(accuracies[2:]))  # unseen: mean of devices c and d
        reference.append(np.mean(per_seed))
    values = paired_differences(variant, baseline, layout, 4000, np.random.default_rng(7))["unseen"]
    np.testing.assert_allclose(interval(values), np.percentile(reference, [2.5, 97.5]), atol=0.02)


def test_replicated_means_of_one_variant():
    layout = layout_of({"a": 10, "b": 10}, seen=["a"])
    correct = np.array([[True] * 10 + [False] * 10, [True] * 10 + [True] * 10])
    values = replicated_means(correct, layout, 4000, np.random.default_rng(8))
    assert interval(values["seen"]) == (1.0, 1.0)
    assert set(np.unique(values["unseen"])) == {0.0, 0.5, 1.0}  # only the seeds differ there


def test_paired_runs_need_the_same_shape():
    layout = layout_of({"a": 2}, seen=["a"])
    with pytest.raises(ValueError, match="same seeds"):
        paired_differences(np.ones((2, 2), bool), np.ones((1, 2), bool), layout, 10, np.random.default_rng(0))
