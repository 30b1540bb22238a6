"""The study report: one table of test accuracy per variant over seeds, and each variant against the baseline.

For each variant: mean and standard deviation over its completed seeds of the overall, seen and unseen
test accuracy (and per domain), at the epoch chosen by the runs' model selection; for each variant but
the baseline: the mean difference to the baseline over paired seeds with a paired bootstrap interval
(:mod:`helpers.study.bootstrap`). An interval containing 0 is "no clear difference". Runs that are
missing, running, interrupted or failed are listed and left out of every figure.

Written to the console and the study folder as report.md, report.csv (one row per figure) and report.png
(unseen accuracy per variant and its difference to the baseline, with intervals).
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from helpers.files import atomic_write
from helpers.results.run_files import ResultsError, RunResults, has_results, read_results
from helpers.study.bootstrap import OVERALL, Layout, interval, paired_differences, replicated_means
from helpers.study.folder import RunState, Status, run_state
from helpers.study.spec import Study, StudyError

RESAMPLES = 4000
BOOTSTRAP_SEED = 20230710  # fixed: the same runs give the same report
ORACLE_LABEL = "oracle (selected on the test split; optimistic)"
NO_CLEAR_DIFFERENCE = "no clear difference"
CSV_COLUMNS = ("table", "variant", "figure", "seeds", "examples", "mean", "sd", "difference", "ci_low", "ci_high",
               "verdict", "model_selection", "note")


@dataclass(frozen=True)
class Incomplete:
    """A run left out of the figures: its state (missing, running, interrupted, failed, or completed without
    readable results) and why."""

    variant: str
    seed: int
    status: str
    detail: str
    log: Path | None = None
    log_tail: tuple[str, ...] = ()


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


@dataclass
class VariantSummary:
    """One variant's completed seeds, their figures (figure -> value per seed) and its comparison."""

    name: str
    seeds: list[int]
    figures: dict[str, np.ndarray] = field(default_factory=dict)
    per_domain: np.ndarray | None = None  # (seeds, domains)
    replicates: dict[str, np.ndarray] = field(default_factory=dict)  # bootstrap of the mean, for the plot
    paired_seeds: list[int] = field(default_factory=list)
    comparisons: dict[str, Comparison] = field(default_factory=dict)


@dataclass
class Report:
    study: Study
    variants: list[VariantSummary]
    incomplete: list[Incomplete]
    layout: Layout | None
    group_names: tuple[str, str]
    domain_kind: str
    seen_domains: tuple[str, ...]
    selection: str  # "validation" or ORACLE_LABEL
    oracle_runs: list[str]
    resamples: int

    @property
    def selection_text(self) -> str:
        if self.oracle_runs:
            return ORACLE_LABEL
        return "checkpoint of the epoch selected on the validation split"


def build_report(study: Study, resamples: int = RESAMPLES) -> Report:
    """Read every run of ``study`` and compute the report's figures."""
    if resamples < 100:
        raise StudyError(f"--resamples {resamples}: a 95 % interval needs at least 100 replicates (a few thousand "
                         f"give stable bounds).")
    completed, incomplete = _collect(study)
    reference = next(iter(completed.values()), None)
    layout = None
    if reference is not None:
        _check_same_test_set(completed, reference)
        seen, unseen = reference.group_names
        layout = Layout.from_names(reference.domains, {
            seen: [name for name in reference.domain_names if name in reference.seen_domains],
            unseen: [name for name in reference.domain_names if name not in reference.seen_domains]})
    variants = []
    for name in study.variants:
        seeds = [seed for seed in study.seeds if (name, seed) in completed]
        summary = VariantSummary(name, seeds)
        if seeds and layout is not None:
            correct = _correct(completed, name, seeds)
            summary.per_domain = layout.per_domain(correct)
            summary.figures = layout.figures(summary.per_domain)
            summary.replicates = replicated_means(correct, layout, resamples, _rng(name, "mean"))
        variants.append(summary)
    baseline = next(summary for summary in variants if summary.name == study.baseline)
    for summary in variants:
        if summary.name == study.baseline or layout is None:
            continue
        summary.paired_seeds = [seed for seed in summary.seeds if seed in baseline.seeds]
        if summary.paired_seeds:
            replicates = paired_differences(_correct(completed, summary.name, summary.paired_seeds),
                                            _correct(completed, study.baseline, summary.paired_seeds),
                                            layout, resamples, _rng(summary.name, "paired"))
            for figure, values in replicates.items():
                pairs = [summary.seeds.index(seed) for seed in summary.paired_seeds]
                base = [baseline.seeds.index(seed) for seed in summary.paired_seeds]
                difference = float(np.mean(summary.figures[figure][pairs] - baseline.figures[figure][base]))
                summary.comparisons[figure] = Comparison(difference, *interval(values))
    oracle = [f"{variant}/seed_{seed}" for (variant, seed), result in completed.items()
              if result.model_selection == "oracle"]
    return Report(study, variants, incomplete, layout,
                  reference.group_names if reference else ("seen", "unseen"),
                  reference.domain_kind if reference else "domain",
                  reference.seen_domains if reference else (),
                  "oracle" if oracle else "validation", oracle, resamples)


def markdown(report: Report) -> str:
    """The report as Markdown (see the module's docstring)."""
    study, layout = report.study, report.layout
    label = f" ({ORACLE_LABEL})" if report.oracle_runs else ""
    n_runs = len(study.seeds) * len(study.variants)
    lines = [f"# Study {study.name}{label}", "",
             f"{study.experiment.name}, test split, {report.selection_text}. {n_runs} runs "
             f"({len(study.variants)} variants x {len(study.seeds)} seeds): {n_runs - len(report.incomplete)} "
             f"complete, {len(report.incomplete)} incomplete. Study folder: {study.folder}."]
    if report.oracle_runs:
        lines += ["", f"Selected on the test split (model_selection=oracle): {', '.join(report.oracle_runs)}. "
                      f"Every figure below is optimistic."]
    if layout is None:
        lines += ["", "No completed run with results yet."]
    else:
        lines += ["", *_layout_text(report)]
        lines += ["", f"## Test accuracy per variant{label}", "",
                  "Mean ± standard deviation over the seeds that completed.", ""]
        lines += _table(["variant", "seeds", *_figure_headers(report)],
                        [[_variant_label(report, summary), str(len(summary.seeds)),
                          *[_mean_sd(summary.figures.get(figure)) for figure in layout.figure_names]]
                         for summary in report.variants])
        lines += ["", f"## Difference to the baseline ({study.baseline}){label}", "",
                  f"Mean over paired seeds of (variant - baseline), with a 95 % paired bootstrap interval: "
                  f"{report.resamples} replicates resampling the seeds (a variant's run with the baseline's run of "
                  f"the same seed) and the test examples within each {_kind(report)} (the same draw for both), fixed "
                  f"seed {BOOTSTRAP_SEED}. An interval containing 0 is \"{NO_CLEAR_DIFFERENCE}\", not a ranking.", ""]
        rows = []
        for summary in report.variants:
            if summary.name == study.baseline:
                continue
            cells = [_comparison(summary.comparisons.get(figure)) for figure in layout.figure_names]
            rows.append([summary.name, str(len(summary.paired_seeds)), *cells])
        lines += _table(["variant", "paired seeds", *_figure_headers(report)], rows) if rows else ["(no other variant)"]
        lines += ["", f"## Test accuracy per {_kind(report)}{label}", "",
                  f"Mean ± standard deviation over seeds; * marks the seen {_kind(report)}s, (n) the test "
                  f"examples.", ""]
        headers = [f"{name}{'*' if name in report.seen_domains else ''} ({count})"
                   for name, count in zip(layout.domain_names, layout.counts, strict=True)]
        lines += _table(["variant", *headers],
                        [[summary.name, *[_mean_sd(None if summary.per_domain is None else summary.per_domain[:, index])
                                          for index in range(len(layout.domain_names))]]
                         for summary in report.variants])
    if report.incomplete:
        lines += ["", "## Incomplete runs (left out of every figure)", ""]
        for run in report.incomplete:
            lines.append(f"- {run.variant} seed {run.seed}: {run.status}" + (f": {run.detail}" if run.detail else ""))
            if run.log_tail:
                lines += [f"  last lines of {run.log}:" if run.log else "  last lines:", "",
                          *[f"      {line}" for line in run.log_tail[-8:]], ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: Report) -> list[Path]:
    """report.md, report.csv and report.png in the study folder; their paths."""
    folder = report.study.folder
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    paths = [atomic_write(folder / "report.md", lambda stream: stream.write(text.encode())),
             atomic_write(folder / "report.csv", lambda stream: stream.write(_csv(report).encode()))]
    if report.layout is not None:
        paths.append(_plot(report, folder / "report.png"))
    return paths


def _collect(study: Study) -> tuple[dict[tuple[str, int], RunResults], list[Incomplete]]:
    completed, incomplete = {}, []
    for run in study.runs():
        state: RunState = run_state(run)
        if state.status is not Status.COMPLETED:
            incomplete.append(Incomplete(run.variant, run.seed, state.status.value, state.detail, state.log,
                                         state.log_tail))
            continue
        if not has_results(state.latest):
            incomplete.append(Incomplete(run.variant, run.seed, "completed without results",
                                         f"{state.latest} has no results.json and test_predictions.csv"))
            continue
        try:
            completed[(run.variant, run.seed)] = read_results(state.latest)
        except ResultsError as error:
            incomplete.append(Incomplete(run.variant, run.seed, "unreadable results", str(error)))
    return completed, incomplete


def _check_same_test_set(completed: dict[tuple[str, int], RunResults], reference: RunResults) -> None:
    """Paired comparisons need every run evaluated on the same examples, domains and seen domains."""
    for (variant, seed), result in completed.items():
        same = (np.array_equal(result.files, reference.files) and np.array_equal(result.domains, reference.domains)
                and set(result.seen_domains) == set(reference.seen_domains)
                and result.group_names == reference.group_names)
        if not same:
            raise StudyError(
                f"{result.folder} was tested on other examples, domains or seen domains than {reference.folder}; a "
                f"study compares runs on one test set. Check the variant's settings ({variant}, seed {seed}) for "
                f"dataset options."
            )


def _correct(completed: dict[tuple[str, int], RunResults], variant: str, seeds: list[int]) -> np.ndarray:
    return np.stack([completed[(variant, seed)].correct for seed in seeds])


def _rng(variant: str, purpose: str) -> np.random.Generator:
    """A generator fixed by the variant's name: adding a variant leaves the others' intervals unchanged."""
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(variant.encode()), zlib.crc32(purpose.encode())])


def _kind(report: Report) -> str:
    return report.domain_kind.replace("_", " ")


def _layout_text(report: Report) -> list[str]:
    layout = report.layout
    counts = layout.group_counts()
    parts = []
    for group, members in layout.groups.items():
        domains = ", ".join(f"{layout.domain_names[index]} {layout.counts[index]}" for index in members)
        parts.append(f"{group} {counts[group]} ({domains})")
    return [f"Test examples: {counts[OVERALL]} in all; " + "; ".join(parts) + ".",
            "", f"The {' and '.join(layout.groups)} figures are means over {_kind(report)}s of the per-{_kind(report)} "
                f"accuracy: each {_kind(report)} weighs the same, whatever its number of test examples. overall is the "
                f"accuracy over all test examples. Few test examples in a group make its figures uncertain: read the "
                f"intervals."]


def _figure_headers(report: Report) -> list[str]:
    counts = report.layout.group_counts()
    return [f"{figure} (n={counts[figure]})" for figure in report.layout.figure_names]


def _variant_label(report: Report, summary: VariantSummary) -> str:
    baseline = summary.name == report.study.baseline and summary.name != "baseline"
    return f"{summary.name} (baseline)" if baseline else summary.name


def _mean_sd(values: np.ndarray | None) -> str:
    if values is None or len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _comparison(comparison: Comparison | None) -> str:
    if comparison is None:
        return "no paired seeds"
    return f"{comparison.difference:+.3f} [{comparison.low:+.3f}, {comparison.high:+.3f}] {comparison.verdict}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *["| " + " | ".join(row) + " |" for row in rows]]


def _csv(report: Report) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS)
    writer.writeheader()
    layout = report.layout
    for summary in report.variants if layout is not None else []:
        counts = layout.group_counts()
        for figure in layout.figure_names:
            values = summary.figures.get(figure)
            row = {"table": "accuracy", "variant": summary.name, "figure": figure, "seeds": len(summary.seeds),
                   "examples": counts[figure], "model_selection": report.selection}
            if values is not None and len(values):
                row.update(mean=_number(np.mean(values)), sd=_number(np.std(values, ddof=1)) if len(values) > 1 else "")
            writer.writerow(row)
            comparison = summary.comparisons.get(figure)
            if comparison is not None:
                writer.writerow({"table": "difference", "variant": summary.name, "figure": figure,
                                 "seeds": len(summary.paired_seeds), "examples": counts[figure],
                                 "difference": _number(comparison.difference), "ci_low": _number(comparison.low),
                                 "ci_high": _number(comparison.high), "verdict": comparison.verdict,
                                 "model_selection": report.selection, "note": f"baseline {report.study.baseline}"})
        for index, domain in enumerate(layout.domain_names):
            row = {"table": "domain", "variant": summary.name, "figure": domain, "seeds": len(summary.seeds),
                   "examples": int(layout.counts[index]), "model_selection": report.selection,
                   "note": "seen" if domain in report.seen_domains else "unseen"}
            if summary.per_domain is not None:
                values = summary.per_domain[:, index]
                row.update(mean=_number(np.mean(values)), sd=_number(np.std(values, ddof=1)) if len(values) > 1 else "")
            writer.writerow(row)
    for run in report.incomplete:
        writer.writerow({"table": "incomplete", "variant": run.variant, "seeds": run.seed, "verdict": run.status,
                         "note": run.detail})
    return text.getvalue()


def _number(value: float) -> float:
    return round(float(value), 6)


def _plot(report: Report, path: Path) -> Path:
    """Unseen accuracy per variant (mean, 95 % interval, seeds as dots) and its difference to the baseline."""
    layout = report.layout
    figure_name = report.group_names[1] if report.group_names[1] in layout.groups else OVERALL
    variants = [summary for summary in report.variants if summary.seeds]
    names = [summary.name for summary in variants]
    figure = Figure(figsize=(11.0, max(3.0, 0.5 * len(names) + 1.6)))
    left, right = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(names))
    for position, summary in zip(positions, variants, strict=True):
        low, high = interval(summary.replicates[figure_name])
        mean = float(np.mean(summary.figures[figure_name]))
        left.errorbar(mean, position, xerr=[[mean - low], [high - mean]], fmt="o", color="tab:blue", capsize=4)
        left.scatter(summary.figures[figure_name], np.full(len(summary.seeds), position), marker="x",
                     color="tab:gray", zorder=3)
        comparison = summary.comparisons.get(figure_name)
        if comparison is not None:
            clear = comparison.verdict != NO_CLEAR_DIFFERENCE
            right.errorbar(comparison.difference, position,
                           xerr=[[comparison.difference - comparison.low], [comparison.high - comparison.difference]],
                           fmt="o", capsize=4, color="tab:green" if comparison.verdict == "better" else
                           "tab:red" if clear else "tab:gray")
    left.set_yticks(positions, names)
    left.invert_yaxis()
    left.set_xlabel(f"{figure_name} accuracy\n(mean, 95 % bootstrap interval; x: seeds)")
    right.axvline(0.0, color="black", linewidth=0.8)
    right.set_xlabel(f"difference to {report.study.baseline}\n(95 % paired interval; grey: no clear difference)")
    title = f"Study {report.study.name}: test split, {report.selection_text}"
    figure.suptitle(title)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    return atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=120))
