"""Classification metrics over a whole evaluation split, per class and per domain.

Domains are the dataset's primary domain (recording device for TAU 2020, instrument source for NSynth).
``seen_domains`` are those present in the training data; the others are unseen (out-of-domain), and a
domain-generalisation method is judged by the accuracy on them.

Group figures (``acc_seen``, ``acc_unseen``) are the mean of the per-domain accuracies of the group's
domains that occur in the evaluation split, so a large domain (TAU's device a) does not dominate.
``macro_acc`` is the mean of the per-class accuracies over classes that occur in the split.

A dataset without domains (ESC-50; a folder CSV without a domain column) puts every clip in one domain. With one
domain the per-domain and group figures would only repeat ``acc``: ``has_domains`` is False and they are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    """Predictions for every example of an evaluation split and the figures derived from them.

    predictions, labels: class index per example; domains: domain index per example;
    losses: cross-entropy per example. class_names / domain_names give the index meanings;
    seen_domains names the domains the model was trained on.
    """

    predictions: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    losses: np.ndarray
    class_names: tuple[str, ...]
    domain_names: tuple[str, ...]
    seen_domains: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in ("predictions", "domains", "losses"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Evaluation: {name} has {len(getattr(self, name))} entries, labels has {n}.")
        unknown = sorted(set(self.seen_domains) - set(self.domain_names))
        if unknown:
            raise ValueError(f"seen domains {unknown} are not among the domains {list(self.domain_names)}.")

    @property
    def has_domains(self) -> bool:
        """Whether the data has domains to report apart (more than one); see the module docstring."""
        return len(self.domain_names) > 1

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    @property
    def loss(self) -> float:
        return float(np.mean(self.losses)) if self.n_examples else float("nan")

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels)) if self.n_examples else float("nan")

    @cached_property
    def confusion_matrix(self) -> np.ndarray:
        """Counts (n_classes, n_classes): row = true class, column = predicted class."""
        n_classes = len(self.class_names)
        matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix

    @cached_property
    def domain_class_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(correct, total), each (n_domains, n_classes): examples per domain and true class."""
        shape = (len(self.domain_names), len(self.class_names))
        correct = np.zeros(shape, dtype=np.int64)
        total = np.zeros(shape, dtype=np.int64)
        np.add.at(total, (self.domains, self.labels), 1)
        np.add.at(correct, (self.domains, self.labels), (self.predictions == self.labels).astype(np.int64))
        return correct, total

    @property
    def class_accuracy(self) -> dict[str, float]:
        """Accuracy per class present in the split."""
        correct, total = self.domain_class_counts
        return _ratios(self.class_names, correct.sum(axis=0), total.sum(axis=0))

    @property
    def domain_accuracy(self) -> dict[str, float]:
        """Accuracy per domain present in the split."""
        correct, total = self.domain_class_counts
        return _ratios(self.domain_names, correct.sum(axis=1), total.sum(axis=1))

    @property
    def domain_counts(self) -> dict[str, int]:
        _, total = self.domain_class_counts
        return {name: int(count) for name, count in zip(self.domain_names, total.sum(axis=1), strict=True)}

    @property
    def macro_accuracy(self) -> float:
        return _mean(self.class_accuracy.values())

    def group_accuracy(self, seen: bool) -> float:
        """Mean per-domain accuracy over the seen (or unseen) domains present in the split."""
        per_domain = self.domain_accuracy
        return _mean(acc for name, acc in per_domain.items() if (name in self.seen_domains) == seen)

    def scalars(self) -> dict[str, float]:
        """Flat figures for logging; figures without examples in the split are left out, and so are the group and
        per-domain figures of data without domains."""
        figures = {"loss": self.loss, "acc": self.accuracy, "macro_acc": self.macro_accuracy}
        if self.has_domains:
            figures.update({"acc_seen": self.group_accuracy(seen=True), "acc_unseen": self.group_accuracy(seen=False)})
            figures.update({f"domain/{name}": acc for name, acc in self.domain_accuracy.items()})
        figures.update({f"class/{name}": acc for name, acc in self.class_accuracy.items()})
        return {name: value for name, value in figures.items() if not np.isnan(value)}


def evaluation(
    predictions, labels, domains, losses, class_names, domain_names, seen_domains
) -> Evaluation:
    """Build an :class:`Evaluation` from per-example arrays (anything ``np.asarray`` accepts)."""
    return Evaluation(
        predictions=np.asarray(predictions, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int64),
        domains=np.asarray(domains, dtype=np.int64),
        losses=np.asarray(losses, dtype=np.float64),
        class_names=tuple(class_names),
        domain_names=tuple(domain_names),
        seen_domains=tuple(seen_domains),
    )


def _ratios(names, correct: np.ndarray, total: np.ndarray) -> dict[str, float]:
    return {name: float(c / t) for name, c, t in zip(names, correct, total, strict=True) if t > 0}


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")
