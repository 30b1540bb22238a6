"""The study report: one table of test accuracy per variant over seeds, and each variant against the baseline.

For each variant: mean and standard deviation over its completed seeds of the overall, seen and unseen
test accuracy (and per domain), at the epoch chosen by the runs' model selection; for each variant but
the baseline: the mean difference to the baseline over paired seeds with a paired bootstrap interval
(:mod:`helpers.study.bootstrap`). An interval containing 0 is "no clear difference". Runs that are
missing, running, interrupted or failed are listed and left out of every figure. Beside the runs' own
selection, the same figures at the last epoch and at the test-domain oracle's epoch (optimistic), as
:mod:`helpers.study.figures` describes.

With a [protocol] these tables come once per protocol value, after the protocol's own: leave-one-domain-out's
held-out accuracy per held-out domain and their mean, the folds' mean, or accuracy against the training
fraction.

Written to the console and the study folder as report.md, report.csv (one row per figure) and report.png
(:mod:`helpers.study.plots`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.files import atomic_write
from helpers.study.bootstrap import OVERALL, Layout
from helpers.study.figures import (
    BOOTSTRAP_SEED,
    HELD_OUT,
    NO_CLEAR_DIFFERENCE,
    OTHER_RULES,
    RULES,
    Comparison,
    Incomplete,
    Panel,
    PooledVariant,
    VariantSummary,
    build_panel,
    collect,
    pool,
    pooled_figures,
)
from helpers.study.plots import plot_report
from helpers.study.spec import PROTOCOLS, Study, StudyError

RESAMPLES = 4000
ORACLE_LABEL = "oracle (selected on the test split; optimistic)"
RULE_COLUMNS = {"last": "mean_last_epoch", "oracle": "mean_test_oracle_optimistic"}  # report.csv, per rule
PROTOCOL_COLUMNS = tuple(kind.column for kind in PROTOCOLS.values())
CSV_COLUMNS = ("table", "variant", *PROTOCOL_COLUMNS, "figure", "seeds", "examples", "mean", "sd", "difference",
               "ci_low", "ci_high", "verdict", "model_selection", *RULE_COLUMNS.values(), "note")


@dataclass
class Report:
    """panels: one per protocol value (one for a study without a protocol); pooled: figure -> variant -> its
    mean over the protocol's values (leave-one-domain-out, folds)."""

    study: Study
    panels: list[Panel]
    pooled: dict[str, dict[str, PooledVariant]]
    incomplete: list[Incomplete]
    selection: str  # "validation" or "oracle": the runs' own model selection
    oracle_runs: list[str]
    resamples: int

    @property
    def variants(self) -> list[VariantSummary]:
        """The first panel's variants (the only panel of a study without a protocol)."""
        return self.panels[0].variants

    @property
    def layout(self) -> Layout | None:
        return self.panels[0].layout

    @property
    def has_results(self) -> bool:
        return any(panel.layout is not None for panel in self.panels)

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
    completed, incomplete = collect(study)
    panels = [build_panel(study, value, completed, resamples) for value in study.protocol_values]
    pooled = {figure: pool(panels, figure, study.baseline) for figure in pooled_figures(panels)}
    oracle = [_run_name(variant, label, seed) for (variant, label, seed), run in completed.items()
              if run.results.model_selection == "oracle"]
    return Report(study, panels, pooled, incomplete, "oracle" if oracle else "validation", oracle, resamples)


def markdown(report: Report) -> str:
    """The report as Markdown (see the module's docstring)."""
    study = report.study
    label = f" ({ORACLE_LABEL})" if report.oracle_runs else ""
    n_values = len(study.protocol_values)
    n_runs = len(study.seeds) * len(study.variants) * n_values
    grid = (f"{len(study.variants)} variants x {len(study.seeds)} seeds" if study.protocol is None else
            f"{len(study.variants)} variants x {n_values} {study.protocol.kind.column}s x {len(study.seeds)} seeds")
    lines = [f"# Study {study.name}{label}", "",
             f"{study.experiment.name}, test split, {report.selection_text}. {n_runs} runs ({grid}): "
             f"{n_runs - len(report.incomplete)} complete, {len(report.incomplete)} incomplete. Study folder: "
             f"{study.folder}."]
    if report.oracle_runs:
        lines += ["", f"Selected on the test split (model_selection=oracle): {', '.join(report.oracle_runs)}. "
                      f"Every figure below is optimistic."]
    if not report.has_results:
        lines += ["", "No completed run with results yet."]
    else:
        lines += _protocol_sections(report, label)
        for panel in report.panels:
            if panel.layout is not None:
                lines += _panel_sections(report, panel, label)
            else:
                lines += ["", f"## Test accuracy per variant{panel.title}{label}", "", "No completed run yet."]
    if report.incomplete:
        lines += ["", "## Incomplete runs (left out of every figure)", ""]
        for run in report.incomplete:
            where = f" {run.protocol}" if run.protocol else ""
            lines.append(f"- {run.variant}{where} seed {run.seed}: {run.status}"
                         + (f": {run.detail}" if run.detail else ""))
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
    if report.has_results:
        paths.append(plot_report(report.study, report.panels, report.pooled, report.selection_text,
                                 folder / "report.png"))
    return paths


def _panel_sections(report: Report, panel: Panel, label: str) -> list[str]:
    """The tables of one protocol value's runs (all of a study without a protocol)."""
    study, layout, kind = report.study, panel.layout, _kind(panel)
    title = f"{panel.title}{label}"
    layout_text = ["", *_layout_text(panel)]
    lines = layout_text if panel.value is None else []  # with a protocol, inside the value's first section
    lines += ["", f"## Test accuracy per variant{title}", *(layout_text if panel.value is not None else []), "",
              "Mean ± standard deviation over the seeds that completed.", ""]
    lines += _table(["variant", "seeds", *_figure_headers(panel)],
                    [[_variant_label(report, summary), str(len(summary.seeds)),
                      *[_mean_sd(summary.figures.get(figure)) for figure in layout.figure_names]]
                     for summary in panel.variants])
    lines += ["", f"## Difference to the baseline ({study.baseline}){title}", "",
              f"Mean over paired seeds of (variant - baseline), with a 95 % paired bootstrap interval: "
              f"{report.resamples} replicates resampling the seeds (a variant's run with the baseline's run of "
              f"the same seed) and the test examples{_within(panel)} (the same draw for both), fixed "
              f"seed {BOOTSTRAP_SEED}. An interval containing 0 is \"{NO_CLEAR_DIFFERENCE}\", not a ranking.", ""]
    rows = [[summary.name, str(len(summary.paired_seeds)),
             *[_comparison(summary.comparisons.get(figure)) for figure in layout.figure_names]]
            for summary in panel.variants if summary.name != study.baseline]
    lines += _table(["variant", "paired seeds", *_figure_headers(panel)], rows) if rows else ["(no other variant)"]
    if panel.has_domains:
        lines += ["", f"## Test accuracy per {kind}{title}", "",
                  f"Mean ± standard deviation over seeds; * marks the seen {kind}s, (n) the test examples.", ""]
        headers = [f"{name}{'*' if name in panel.seen_domains else ''} ({count})"
                   for name, count in zip(layout.domain_names, layout.counts, strict=True)]
        lines += _table(["variant", *headers],
                        [[summary.name, *[_mean_sd(None if summary.per_domain is None else summary.per_domain[:, index])
                                          for index in range(len(layout.domain_names))]]
                         for summary in panel.variants])
    lines += ["", f"## Selection rules{title}", "", *_rules_text(panel), ""]
    rows = []
    for summary in panel.variants:
        for rule, name in RULES.items():
            if rule == "validation" and report.oracle_runs:  # the runs' own selection was on the test split
                name = ORACLE_LABEL
            figures = summary.figures if rule == "validation" else summary.rules.get(rule, {})
            seeds = len(summary.seeds) if rule == "validation" else len(next(iter(figures.values()), ()))
            rows.append([summary.name, name, str(seeds), *[_mean_sd(figures.get(figure))
                                                           for figure in layout.figure_names]])
    lines += _table(["variant", "selection rule", "seeds", *_figure_headers(panel)], rows)
    return lines


def _rules_text(panel: Panel) -> list[str]:
    return [f"The epoch each figure comes from, per run, from its records (no retraining), mean ± standard deviation "
            f"over seeds. {RULES['validation']}: the run's own model selection on its validation split (training "
            f"domains only); the figures above, and the only rule ranked. {RULES['last']}: the training's last "
            f"epoch (test_predictions.csv, net_last). {RULES['oracle']}: the epoch of the highest "
            f"{panel.oracle_monitor} in the run's metrics.json, chosen on the test split it reports: optimistic, "
            f"an upper bound, never ranked. seeds: the runs whose records give the rule's epoch."]


def _protocol_sections(report: Report, label: str) -> list[str]:
    """The protocol's own tables: leave-one-domain-out's and the folds' means over values, or the fraction curve."""
    study = report.study
    if study.protocol is None:
        return []
    key = study.protocol.kind.key
    values = [str(value.value) for value in study.protocol.values]
    if key == "train_fractions":
        layout = next(panel.layout for panel in report.panels if panel.layout is not None)
        figures = list(layout.figure_names)
        lines = ["", f"## Accuracy against the training fraction{label}", "",
                 "Test accuracy (training-domain validation) at each basedataset.train_fraction, mean over seeds; "
                 "validation and test splits are the same at every fraction. The intervals are in each fraction's "
                 "tables below; report.png draws the curves.", ""]
        rows = []
        for name in study.variants:
            for figure in figures:
                cells = []
                for panel in report.panels:
                    values_of = panel.summary(name).figures.get(figure)
                    cells.append("-" if values_of is None else f"{np.mean(values_of):.3f}")
                rows.append([name, figure, *cells])
        return lines + _table(["variant", "figure", *values], rows)
    if key == "held_out_domains":
        domains = ", ".join(study.protocol.training_domains)
        lines = ["", f"## Leave-one-domain-out: held-out accuracy{label}", "",
                 f"Each run trains and validates on {domains} less its held-out domain and is tested on every "
                 f"domain; the figure is the held-out domain's test accuracy, at the epoch chosen on the run's own "
                 f"validation split (mean over seeds), and the mean over the held-out domains (each weighs the "
                 f"same).", ""]
    else:
        lines = ["", f"## Folds: mean over folds{label}", "",
                 "Each fold's runs test on that fold and select their epoch on their own validation split; the "
                 "figures are the mean over folds of each fold's mean over seeds (each fold weighs the same).", ""]
    lines += [f"Differences to the baseline ({study.baseline}): the mean over the {study.protocol.kind.column}s of "
              f"the mean over paired seeds, with a 95 % paired bootstrap interval from {report.resamples} replicates "
              f"resampling, in each {study.protocol.kind.column}, the seeds and the test examples"
              f"{_within(report.panels[0])} ({study.protocol.kind.column}s fixed). The last two columns are the mean "
              f"under the other selection rules, never ranked.", ""]
    for figure, pooled in report.pooled.items():
        heading = [*values, "mean", f"mean, {RULES['last']}", f"mean, {RULES['oracle']}"]
        rows = [[name, str(entry.runs), *[_number_text(value) for value in entry.per_value],
                 _number_text(entry.mean), *[_number_text(entry.rules.get(rule)) for rule in OTHER_RULES]]
                for name, entry in pooled.items()]
        lines += [f"{_figure_title(figure)}:", "", *_table(["variant", "runs", *heading], rows), ""]
        rows = [[name, *[_comparison(comparison) for comparison in entry.per_value_comparisons],
                 _comparison(entry.comparison)] for name, entry in pooled.items() if name != study.baseline]
        if rows:
            lines += [f"{_figure_title(figure)}, difference to {study.baseline}:", "",
                      *_table(["variant", *values, "mean"], rows), ""]
    return lines


def _figure_title(figure: str) -> str:
    return "Held-out domain's test accuracy" if figure == HELD_OUT else f"Test accuracy, {figure}"


def _number_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _run_name(variant: str, label: str | None, seed: int) -> str:
    return "/".join(part for part in (variant, label, f"seed_{seed}") if part)


def _kind(panel: Panel) -> str:
    return (panel.domain_kind or "domain").replace("_", " ")


def _within(panel: Panel) -> str:
    """Where the bootstrap draws test examples: within each domain, or (data without domains) among all."""
    return f" within each {_kind(panel)}" if panel.has_domains else ""


def _layout_text(panel: Panel) -> list[str]:
    layout, kind = panel.layout, _kind(panel)
    counts = layout.group_counts()
    where = f"{panel.value.kind.column} = {panel.value.value}: t" if panel.value is not None else "T"
    if not panel.has_domains:
        return [f"{where}est examples: {counts[OVERALL]}; the data has no domains, so overall, the accuracy over all "
                f"test examples, is the figure."]
    parts = []
    for group, members in layout.groups.items():
        domains = ", ".join(f"{layout.domain_names[index]} {layout.counts[index]}" for index in members)
        parts.append(f"{group} {counts[group]} ({domains})")
    return [f"{where}est examples: {counts[OVERALL]} in all; " + "; ".join(parts) + ".",
            "", f"The {' and '.join(layout.groups)} figures are means over {kind}s of the per-{kind} "
                f"accuracy: each {kind} weighs the same, whatever its number of test examples. overall is the "
                f"accuracy over all test examples. Few test examples in a group make its figures uncertain: read the "
                f"intervals."]


def _figure_headers(panel: Panel) -> list[str]:
    counts = panel.layout.group_counts()
    return [f"{figure} (n={counts[figure]})" for figure in panel.layout.figure_names]


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
    for panel in report.panels:
        if panel.layout is not None:
            writer.writerows(_panel_rows(report, panel))
    protocol = report.study.protocol
    for figure, pooled in report.pooled.items():
        for name, entry in pooled.items():
            where = {protocol.kind.column: "mean", "variant": name, "figure": figure, "seeds": entry.runs,
                     "model_selection": report.selection,
                     "note": f"mean over {len(protocol.values)} {protocol.kind.column}s; seeds: runs"}
            writer.writerow({"table": "pooled", **where, "mean": _number(entry.mean),
                             **{RULE_COLUMNS[rule]: _number(entry.rules.get(rule)) for rule in OTHER_RULES}})
            if entry.comparison is not None:
                writer.writerow({"table": "pooled_difference", **where, **_comparison_cells(entry.comparison),
                                 "note": f"{where['note']}; baseline {report.study.baseline}"})
    for run in report.incomplete:
        where = {} if run.protocol is None else {protocol.kind.column: protocol.value(run.protocol).value}
        writer.writerow({"table": "incomplete", "variant": run.variant, **where, "seeds": run.seed,
                         "verdict": run.status, "note": run.detail})
    return text.getvalue()


def _panel_rows(report: Report, panel: Panel) -> list[dict]:
    layout, rows = panel.layout, []
    where = {} if panel.value is None else {panel.value.kind.column: panel.value.value}
    counts = layout.group_counts()
    for summary in panel.variants:
        for figure in layout.figure_names:
            row = {"table": "accuracy", "variant": summary.name, **where, "figure": figure,
                   "seeds": len(summary.seeds), "examples": counts[figure], "model_selection": report.selection,
                   **_mean_cells(summary.figures.get(figure)),
                   **{RULE_COLUMNS[rule]: _mean(summary.rules.get(rule, {}).get(figure)) for rule in OTHER_RULES}}
            rows.append(row)
            comparison = summary.comparisons.get(figure)
            if comparison is not None:
                rows.append({"table": "difference", "variant": summary.name, **where, "figure": figure,
                             "seeds": len(summary.paired_seeds), "examples": counts[figure],
                             **_comparison_cells(comparison), "model_selection": report.selection,
                             "note": f"baseline {report.study.baseline}"})
        for index, domain in enumerate(layout.domain_names if panel.has_domains else ()):
            per_domain = None if summary.per_domain is None else summary.per_domain[:, index]
            rows.append({"table": "domain", "variant": summary.name, **where, "figure": domain,
                         "seeds": len(summary.seeds), "examples": int(layout.counts[index]),
                         "model_selection": report.selection, **_mean_cells(per_domain),
                         **{RULE_COLUMNS[rule]: _mean(summary.rule_per_domain[rule][:, index])
                            for rule in OTHER_RULES if rule in summary.rule_per_domain},
                         "note": "seen" if domain in panel.seen_domains else "unseen"})
    return rows


def _mean_cells(values: np.ndarray | None) -> dict:
    if values is None or not len(values):
        return {}
    return {"mean": _number(np.mean(values)), "sd": _number(np.std(values, ddof=1)) if len(values) > 1 else ""}


def _mean(values: np.ndarray | None) -> float | str:
    return "" if values is None or not len(values) else _number(np.mean(values))


def _comparison_cells(comparison: Comparison) -> dict:
    return {"difference": _number(comparison.difference), "ci_low": _number(comparison.low),
            "ci_high": _number(comparison.high), "verdict": comparison.verdict}


def _number(value: float | None) -> float | str:
    return "" if value is None else round(float(value), 6)
