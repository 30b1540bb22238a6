"""Per-class and per-domain figures on a hand-built evaluation split."""

import numpy as np
import pytest

from helpers.results.metrics import evaluation

CLASSES = ("cat", "dog", "owl")
DOMAINS = ("a", "b", "s4", "s5")  # a, b seen; s4, s5 unseen


def hand_case():
    """Ten examples; the comments give (label, prediction, domain)."""
    rows = [
        (0, 0, "a"), (1, 1, "a"), (2, 0, "a"), (0, 0, "a"),  # domain a: 3 of 4 right
        (1, 1, "b"), (2, 2, "b"),                            # domain b: 2 of 2
        (0, 1, "s4"), (1, 1, "s4"), (2, 1, "s4"),            # domain s4: 1 of 3
        (2, 0, "s5"),                                        # domain s5: 0 of 1
    ]
    labels = [r[0] for r in rows]
    predictions = [r[1] for r in rows]
    domains = [DOMAINS.index(r[2]) for r in rows]
    losses = [0.1 * i for i in range(len(rows))]
    return evaluation(predictions, labels, domains, losses, CLASSES, DOMAINS, seen_domains=("a", "b"))


def test_overall_and_macro_accuracy():
    result = hand_case()
    assert result.accuracy == pytest.approx(6 / 10)
    # cat: 2 of 3 right; dog: 3 of 3; owl: 1 of 4
    assert result.class_accuracy == pytest.approx({"cat": 2 / 3, "dog": 1.0, "owl": 1 / 4})
    assert result.macro_accuracy == pytest.approx((2 / 3 + 1 + 1 / 4) / 3)
    assert result.loss == pytest.approx(np.mean([0.1 * i for i in range(10)]))


def test_per_domain_and_group_means():
    result = hand_case()
    assert result.domain_accuracy == pytest.approx({"a": 3 / 4, "b": 1.0, "s4": 1 / 3, "s5": 0.0})
    assert result.domain_counts == {"a": 4, "b": 2, "s4": 3, "s5": 1}
    # group figures are the mean of the group's per-domain accuracies
    assert result.group_accuracy(seen=True) == pytest.approx((3 / 4 + 1.0) / 2)
    assert result.group_accuracy(seen=False) == pytest.approx((1 / 3 + 0.0) / 2)


def test_confusion_matrix_rows_are_true_classes():
    expected = np.array([
        [2, 1, 0],  # cat: predicted cat twice, dog once
        [0, 3, 0],
        [2, 1, 1],  # owl: cat twice (a, s5), dog once (s4), owl once (b)
    ])
    assert np.array_equal(hand_case().confusion_matrix, expected)


def test_scalars_name_every_figure_and_leave_out_empty_groups():
    result = evaluation([0, 1], [0, 1], [0, 1], [0.0, 0.0], CLASSES, DOMAINS, seen_domains=DOMAINS)
    figures = result.scalars()
    assert figures["acc"] == 1.0
    assert "acc_unseen" not in figures  # every domain seen
    assert set(figures) == {"loss", "acc", "macro_acc", "acc_seen", "domain/a", "domain/b", "class/cat", "class/dog"}


def test_unknown_seen_domain_is_rejected():
    with pytest.raises(ValueError, match="seen domains"):
        evaluation([0], [0], [0], [0.0], CLASSES, DOMAINS, seen_domains=("z",))


def test_data_without_domains_has_accuracy_alone():
    # one domain for every example (ESC-50): the group and per-domain figures would repeat acc; 3 of 4 right
    result = evaluation([0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], ("cat", "dog"), ("all",),
                        seen_domains=("all",))
    assert not result.has_domains
    assert result.scalars() == pytest.approx({"loss": 0.25, "acc": 0.75, "macro_acc": (2 / 3 + 1) / 2,
                                              "class/cat": 2 / 3, "class/dog": 1.0})
    two = evaluation([0, 1], [0, 1], [0, 1], [0.1, 0.1], ("cat", "dog"), ("a", "b"), seen_domains=("a", "b"))
    assert two.has_domains and {"acc_seen", "domain/a", "domain/b"} <= set(two.scalars())
