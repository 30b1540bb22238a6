"""Accuracy figures of a study's runs, and bootstrap intervals over seeds and test examples.

A run's figures come from whether each test example was classified correctly: its accuracy per domain;
``overall``, the accuracy over all test examples; and one figure per group of domains (seen, unseen), the
mean of the group's per-domain accuracies, so that a domain with few test examples weighs as much as one
with many.

The bootstrap resamples both sources of chance in a comparison: the seeds (with replacement, keeping each
seed's variant run and baseline run together) and the test examples (with replacement within each domain,
the same draw for every run of a replicate). Each replicate recomputes the figures from the resampled
examples and averages them over the resampled seeds. Draws are multinomial counts, so a replicate is a
weighted sum and all replicates are computed together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

OVERALL = "overall"
LEVEL = 0.95  # the intervals' coverage: the 2.5th and 97.5th percentiles of the replicates


@dataclass(frozen=True)
class Layout:
    """How the test examples fall into domains and groups of domains.

    domain_of: the domain index of each test example; domain_names: the domains, each with at least one
    example; groups: group name (e.g. "unseen devices") -> the indices of its domains (groups without
    domains are left out).
    """

    domain_of: np.ndarray
    domain_names: tuple[str, ...]
    groups: Mapping[str, tuple[int, ...]]

    @classmethod
    def from_names(cls, domains: Sequence[str], groups: Mapping[str, Sequence[str]]) -> Layout:
        """The layout of examples whose domains are ``domains`` (names); groups: name -> domain names.
        Domains come in the order of their first example unless a group lists them first."""
        order = list(dict.fromkeys([name for members in groups.values() for name in members if name in set(domains)]
                                   + list(domains)))
        index = {name: position for position, name in enumerate(order)}
        domain_of = np.array([index[name] for name in domains], dtype=np.int64)
        kept = {group: tuple(index[name] for name in members if name in index) for group, members in groups.items()}
        return cls(domain_of, tuple(order), {group: members for group, members in kept.items() if members})

    @property
    def counts(self) -> np.ndarray:
        """Test examples per domain."""
        return np.bincount(self.domain_of, minlength=len(self.domain_names))

    @property
    def figure_names(self) -> tuple[str, ...]:
        return (OVERALL, *self.groups)

    def group_counts(self) -> dict[str, int]:
        """Test examples per figure (overall and each group)."""
        counts = self.counts
        return {OVERALL: int(counts.sum()), **{group: int(counts[list(members)].sum())
                                               for group, members in self.groups.items()}}

    def per_domain(self, correct: np.ndarray) -> np.ndarray:
        """Accuracy per domain of ``correct`` (..., examples) -> (..., domains)."""
        correct = np.asarray(correct, dtype=float)
        totals = np.stack([correct[..., self.domain_of == domain].sum(-1) for domain in range(len(self.domain_names))],
                          axis=-1)
        return totals / self.counts

    def figures(self, per_domain: np.ndarray) -> dict[str, np.ndarray]:
        """overall (examples-weighted) and each group's mean of its domains, from per-domain accuracies."""
        counts = self.counts
        figures = {OVERALL: per_domain @ counts / counts.sum()}
        for group, members in self.groups.items():
            figures[group] = per_domain[..., list(members)].mean(-1)
        return figures


def paired_differences(variant: np.ndarray, baseline: np.ndarray, layout: Layout, resamples: int,
                       rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the mean over seeds of (variant - baseline), per figure.

    variant, baseline: (seeds, examples) correctness, row k of both from the same seed."""
    if variant.shape != baseline.shape:
        raise ValueError(f"paired runs need the same seeds and examples: {variant.shape} vs {baseline.shape}")
    figures, seed_weights = _replicates(np.stack([variant, baseline]), layout, resamples, rng)
    return {name: _seed_mean(value[:, 0] - value[:, 1], seed_weights) for name, value in figures.items()}


def replicated_means(correct: np.ndarray, layout: Layout, resamples: int,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the mean over seeds of each figure of one variant; correct: (seeds, examples)."""
    figures, seed_weights = _replicates(correct[np.newaxis], layout, resamples, rng)
    return {name: _seed_mean(value[:, 0], seed_weights) for name, value in figures.items()}


def interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of the replicates at ``level``."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def _replicates(correct: np.ndarray, layout: Layout, resamples: int, rng: np.random.Generator
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Figures of every replicate (resamples, runs, seeds) for correct (runs, seeds, examples), and the seed
    draw of every replicate as counts (resamples, seeds)."""
    n_runs, n_seeds, _ = correct.shape
    per_domain = np.empty((resamples, n_runs, n_seeds, len(layout.domain_names)))
    values = correct.astype(float)
    for domain, size in enumerate(layout.counts):
        members = np.flatnonzero(layout.domain_of == domain)
        draws = rng.multinomial(size, np.full(size, 1 / size), size=resamples)  # (resamples, examples of the domain)
        per_domain[..., domain] = np.tensordot(draws, values[..., members], axes=([1], [2])) / size
    seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=resamples)
    return layout.figures(per_domain), seed_weights


def _seed_mean(value: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
    """The mean over each replicate's drawn seeds: value (resamples, seeds), seed_weights (resamples, seeds)."""
    return (value * seed_weights).sum(-1) / seed_weights.sum(-1)
