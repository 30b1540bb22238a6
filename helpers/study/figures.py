"""The study report's figures: each run's test accuracy under three selection rules; per protocol value (a
panel) the variants' means over seeds and paired differences to the baseline; and the means over the
protocol's values (leave-one-domain-out's held-out accuracy, the folds' figures).

Selection rules, side by side as DomainBed's tables give them (which epoch of a run a figure comes from, read
from the run's records, without retraining):

    validation  the run's own model selection: the first epoch of the highest accuracy on its validation split,
                which holds training domains only (training-domain validation). The default, and the only rule
                the report ranks and gives intervals for (test_predictions.csv's net_selected).
    last        the last epoch of the training (test_predictions.csv's net_last).
    oracle      the epoch of the highest test accuracy on the test domains, from the per-epoch figures of the
                run's metrics.json: the held-out domain's (test/domain/<name>) under leave-one-domain-out, else
                the unseen domains' (test/acc_unseen), else all test examples' (test/acc). Chosen on the split it
                reports: optimistic, an upper bound and never a result. metrics.json holds per-domain
                accuracies, not predictions, so the oracle gets means over seeds and no intervals.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.results.run_files import ResultsError, RunResults, has_results, read_metrics, read_results
from helpers.study.bootstrap import Layout, interval, paired_differences, replicated_means
from helpers.study.folder import Status, run_state
from helpers.study.spec import ProtocolValue, Study, StudyError

BOOTSTRAP_SEED = 20230710  # fixed: the same runs give the same report
NO_CLEAR_DIFFERENCE = "no clear difference"
RULES = {"validation": "training-domain validation", "last": "last epoch",
         "oracle": "test-domain oracle (optimistic)"}  # selection rule -> how the report names it
OTHER_RULES = ("last", "oracle")  # the rules besides the runs' own (validation)
HELD_OUT = "held out"  # leave-one-domain-out's group: the panel's held-out domain


@dataclass(frozen=True)
class Incomplete:
    """A run left out of the figures: its state (missing, running, interrupted, failed, or completed without
    readable results) and why; protocol: its protocol value's folder name (None without a protocol)."""

    variant: str
    seed: int
    status: str
    detail: str
    log: Path | None = None
    log_tail: tuple[str, ...] = ()
    protocol: str | None = None


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline for one figure: mean paired difference and its bootstrap interval."""

    difference: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return NO_CLEAR_DIFFERENCE


@dataclass(frozen=True)
class CompletedRun:
    """A completed run's results (selected and last epoch) and its figures per epoch (name -> {epoch: value})."""

    results: RunResults
    metrics: dict[str, dict[int, float]]


@dataclass
class VariantSummary:
    """One variant's completed seeds in one panel, their figures (figure -> value per seed) and its comparison.

    rules: selection rule (last, oracle) -> figure -> value per seed that has it; rule_per_domain: rule ->
    (those seeds, domains); difference_replicates: figure -> bootstrap replicates of the paired difference."""

    name: str
    seeds: list[int]
    figures: dict[str, np.ndarray] = field(default_factory=dict)
    per_domain: np.ndarray | None = None  # (seeds, domains)
    replicates: dict[str, np.ndarray] = field(default_factory=dict)  # bootstrap of the mean, for the plot
    paired_seeds: list[int] = field(default_factory=list)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    rules: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    rule_per_domain: dict[str, np.ndarray] = field(default_factory=dict)
    difference_replicates: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Panel:
    """The runs of one protocol value (or of a study without a protocol), all tested on one test set.

    oracle_monitor: the per-epoch figure the oracle rule maximises."""

    value: ProtocolValue | None
    variants: list[VariantSummary]
    layout: Layout | None
    group_names: tuple[str, str] | tuple[()]
    domain_kind: str | None
    seen_domains: tuple[str, ...]
    oracle_monitor: str = ""

    @property
    def has_domains(self) -> bool:
        """Whether its runs' data has domains, and so group and per-domain figures (one test domain: no)."""
        return self.layout is not None and bool(self.layout.groups)

    @property
    def title(self) -> str:
        """What headings add for this panel: "" without a protocol, else e.g. " (held_out_domain = acoustic)"."""
        return "" if self.value is None else f" ({self.value.kind.column} = {self.value.value})"

    def summary(self, variant: str) -> VariantSummary:
        return next(summary for summary in self.variants if summary.name == variant)


@dataclass
class PooledVariant:
    """One variant's figure over the protocol's values: per_value, the mean over seeds in each panel (None where
    no seed completed); mean, their mean; replicates, its bootstrap; rules: rule -> the same mean under that
    rule; comparison: the mean over the values of the paired differences, with its interval."""

    name: str
    per_value: list[float | None]
    runs: int
    mean: float | None = None
    replicates: np.ndarray | None = None
    rules: dict[str, float] = field(default_factory=dict)
    per_value_comparisons: list[Comparison | None] = field(default_factory=list)
    comparison: Comparison | None = None


def collect(study: Study) -> tuple[dict[tuple[str, str | None, int], CompletedRun], list[Incomplete]]:
    """The completed runs with readable results by (variant, protocol value's folder name, seed); the others."""
    completed, incomplete = {}, []
    for run in study.runs():
        state = run_state(run)
        if state.status is not Status.COMPLETED:
            incomplete.append(Incomplete(run.variant, run.seed, state.status.value, state.detail, state.log,
                                         state.log_tail, run.label))
            continue
        if not has_results(state.latest):
            incomplete.append(Incomplete(run.variant, run.seed, "completed without results",
                                         f"{state.latest} has no results.json and test_predictions.csv",
                                         protocol=run.label))
            continue
        try:
            completed[(run.variant, run.label, run.seed)] = CompletedRun(read_results(state.latest),
                                                                         read_metrics(state.attempts))
        except ResultsError as error:
            incomplete.append(Incomplete(run.variant, run.seed, "unreadable results", str(error), protocol=run.label))
    return completed, incomplete


def build_panel(study: Study, value: ProtocolValue | None, completed: dict[tuple[str, str | None, int], CompletedRun],
                resamples: int) -> Panel:
    """The figures of the runs of ``value`` (see the module's docstring)."""
    label = None if value is None else value.label
    runs = {(variant, seed): run for (variant, run_label, seed), run in completed.items() if run_label == label}
    reference = next(iter(runs.values()), None)
    if reference is None:
        return Panel(value, [VariantSummary(name, []) for name in study.variants], None, ("seen", "unseen"),
                     "domain", ())
    results = reference.results
    _check_same_test_set(runs, results)
    groups, unseen = {}, None  # data without domains (one domain for every clip): overall alone
    if len(results.domain_names) > 1:
        seen, unseen = results.group_names
        groups = {seen: [name for name in results.domain_names if name in results.seen_domains],
                  unseen: [name for name in results.domain_names if name not in results.seen_domains]}
    held_out = value is not None and value.kind.key == "held_out_domains"
    if held_out:
        if value.value not in set(results.domains):
            raise StudyError(f"held-out domain {value.value!r} has no test examples in {results.folder}; its test "
                             f"domains are {sorted(set(results.domains))}. Name the dataset's domains in "
                             f"held_out_domains and training_domains.")
        groups[HELD_OUT] = [value.value]
    layout = Layout.from_names(results.domains, groups)
    monitor = (f"test/domain/{value.value}" if held_out else "test/acc_unseen" if unseen in layout.groups
               else "test/acc")
    panel = Panel(value, [], layout, results.group_names, results.domain_kind, results.seen_domains, monitor)
    for name in study.variants:
        seeds = [seed for seed in study.seeds if (name, seed) in runs]
        summary = VariantSummary(name, seeds)
        if seeds:
            correct = np.stack([runs[(name, seed)].results.correct for seed in seeds])
            summary.per_domain = layout.per_domain(correct)
            summary.figures = layout.figures(summary.per_domain)
            summary.replicates = replicated_means(correct, layout, resamples, _rng(name, "mean", label))
            for rule in OTHER_RULES:
                rows = [row for row in (_rule_per_domain(runs[(name, seed)], rule, layout, monitor) for seed in seeds)
                        if row is not None]
                if rows:
                    summary.rule_per_domain[rule] = np.stack(rows)
                    summary.rules[rule] = layout.figures(summary.rule_per_domain[rule])
        panel.variants.append(summary)
    baseline = panel.summary(study.baseline)
    for summary in panel.variants:
        if summary.name == study.baseline:
            continue
        summary.paired_seeds = [seed for seed in summary.seeds if seed in baseline.seeds]
        if not summary.paired_seeds:
            continue
        replicates = paired_differences(np.stack([runs[(summary.name, seed)].results.correct
                                                  for seed in summary.paired_seeds]),
                                        np.stack([runs[(study.baseline, seed)].results.correct
                                                  for seed in summary.paired_seeds]),
                                        layout, resamples, _rng(summary.name, "paired", label))
        pairs = [summary.seeds.index(seed) for seed in summary.paired_seeds]
        base = [baseline.seeds.index(seed) for seed in summary.paired_seeds]
        for figure, values in replicates.items():
            difference = float(np.mean(summary.figures[figure][pairs] - baseline.figures[figure][base]))
            summary.comparisons[figure] = Comparison(difference, *interval(values))
            summary.difference_replicates[figure] = values
    return panel


def pool(panels: list[Panel], figure: str, baseline: str) -> dict[str, PooledVariant]:
    """``figure`` of every variant over the panels (the protocol's values, each weighing the same): the mean over
    the values of the mean over seeds, and of the paired differences, whose bootstrap replicates are averaged the
    same way (each value's runs and test examples drawn on their own; the values themselves are fixed)."""
    pooled = {}
    for name in (summary.name for summary in panels[0].variants):
        summaries = [panel.summary(name) for panel in panels]
        per_value = [float(np.mean(summary.figures[figure])) if figure in summary.figures else None
                     for summary in summaries]
        entry = PooledVariant(name, per_value, sum(len(summary.seeds) for summary in summaries),
                              per_value_comparisons=[summary.comparisons.get(figure) for summary in summaries])
        if all(value is not None for value in per_value):
            entry.mean = float(np.mean(per_value))
            entry.replicates = np.mean([summary.replicates[figure] for summary in summaries], axis=0)
        for rule in OTHER_RULES:
            values = [summary.rules.get(rule, {}).get(figure) for summary in summaries]
            if all(value is not None for value in values):
                entry.rules[rule] = float(np.mean([np.mean(value) for value in values]))
        if name != baseline and all(comparison is not None for comparison in entry.per_value_comparisons):
            replicates = np.mean([summary.difference_replicates[figure] for summary in summaries], axis=0)
            entry.comparison = Comparison(float(np.mean([comparison.difference
                                                         for comparison in entry.per_value_comparisons])),
                                          *interval(replicates))
        pooled[name] = entry
    return pooled


def pooled_figures(panels: list[Panel]) -> tuple[str, ...]:
    """The figures a protocol's report pools over its values: leave-one-domain-out's held-out accuracy; for
    folds, every figure that each fold's test set has; none for training fractions (a curve, not a mean)."""
    value = panels[0].value
    if value is None or value.kind.key == "train_fractions":
        return ()
    if value.kind.key == "held_out_domains":
        return (HELD_OUT,)
    layouts = [panel.layout for panel in panels]
    if any(layout is None for layout in layouts):
        return ()
    return tuple(figure for figure in layouts[0].figure_names if all(figure in layout.figure_names
                                                                      for layout in layouts))


def _rule_per_domain(run: CompletedRun, rule: str, layout: Layout, monitor: str) -> np.ndarray | None:
    """A run's accuracy per domain at the epoch ``rule`` chooses (None when its records lack it)."""
    if rule == "last":
        return None if run.results.correct_last is None else layout.per_domain(run.results.correct_last)
    series = run.metrics.get(monitor)
    if not series:
        return None
    epochs = sorted(series)
    epoch = max(epochs, key=lambda step: series[step])  # max keeps the first of equal values
    names = [f"test/domain/{name}" for name in layout.domain_names] if layout.groups else ["test/acc"]
    values = [run.metrics.get(name, {}).get(epoch) for name in names]
    return None if any(value is None for value in values) else np.array(values, dtype=float)


def _check_same_test_set(runs: dict[tuple[str, int], CompletedRun], reference: RunResults) -> None:
    """Paired comparisons need every run of a panel evaluated on the same examples, domains and seen domains."""
    for (variant, seed), run in runs.items():
        result = run.results
        same = (np.array_equal(result.files, reference.files) and np.array_equal(result.domains, reference.domains)
                and set(result.seen_domains) == set(reference.seen_domains)
                and result.group_names == reference.group_names)
        if not same:
            raise StudyError(
                f"{result.folder} was tested on other examples, domains or seen domains than {reference.folder}; a "
                f"study compares runs on one test set. Check the variant's settings ({variant}, seed {seed}) for "
                f"dataset options."
            )


def _rng(variant: str, purpose: str, label: str | None = None) -> np.random.Generator:
    """A generator fixed by the variant's name (and the protocol value's): adding a variant or a value leaves the
    others' intervals unchanged."""
    key = [BOOTSTRAP_SEED, zlib.crc32(variant.encode()), zlib.crc32(purpose.encode())]
    return np.random.default_rng(key if label is None else [*key, zlib.crc32(label.encode())])
