"""report.png: the study report's figure.

Without a protocol, and for leave-one-domain-out and folds: one headline figure per variant (the unseen
accuracy, or the overall accuracy for data without domains; the held-out domain's accuracy under
leave-one-domain-out; for folds and leave-one-domain-out its mean over the protocol's values) with its 95 %
bootstrap interval, the seeds (or the values) as crosses, the other selection rules as open markers, and on the
right its paired difference to the baseline. For training fractions: seen and unseen accuracy against the
fraction, one line per variant, with intervals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from helpers.files import atomic_write
from helpers.study.bootstrap import OVERALL, interval
from helpers.study.figures import HELD_OUT, NO_CLEAR_DIFFERENCE, RULES, Comparison, Panel, PooledVariant
from helpers.study.spec import Study

RULE_MARKERS = {"last": ("s", "tab:orange"), "oracle": ("D", "tab:purple")}


def plot_report(study: Study, panels: list[Panel], pooled: dict[str, dict[str, PooledVariant]], selection_text: str,
                path: Path) -> Path:
    """Draw the report's figure (see the module's docstring) into ``path``: the panels of ``study`` (one per
    protocol value), their means over the values (``pooled``: figure -> variant -> mean) and how the runs
    selected their epoch."""
    protocol = study.protocol
    if protocol is not None and protocol.kind.key == "train_fractions":
        figure = _fraction_curves(study, panels)
    else:
        figure = _dot_plot(study, *_headline_rows(study, panels, pooled))
    figure.suptitle(f"Study {study.name}: test split, {selection_text}")
    figure.tight_layout()
    FigureCanvasAgg(figure)
    return atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=120))


def _headline_rows(study: Study, panels: list[Panel], pooled: dict[str, dict[str, PooledVariant]]
                   ) -> tuple[str, str, list[tuple]]:
    """(figure name, what the crosses are, rows of (variant, mean, (low, high), points, comparison, rule means))."""
    panel = next(panel for panel in panels if panel.layout is not None)
    unseen = panel.group_names[1] if panel.has_domains else None  # overall for data without domains
    if pooled:
        figure = HELD_OUT if HELD_OUT in pooled else unseen if unseen in pooled else OVERALL
        column = study.protocol.kind.column
        rows = [(name, entry.mean, interval(entry.replicates),
                 [value for value in entry.per_value if value is not None], entry.comparison, entry.rules)
                for name, entry in pooled[figure].items() if entry.mean is not None]
        label = "held-out domain's accuracy" if figure == HELD_OUT else f"{figure} accuracy"
        return f"{label}, mean over {column}s", f"{column}s", rows
    figure = unseen if unseen in panel.layout.groups else OVERALL
    rows = [(summary.name, float(np.mean(summary.figures[figure])), interval(summary.replicates[figure]),
             list(summary.figures[figure]), summary.comparisons.get(figure),
             {rule: float(np.mean(values[figure])) for rule, values in summary.rules.items() if figure in values})
            for summary in panel.variants if summary.seeds]
    return f"{figure} accuracy", "seeds", rows


def _dot_plot(study: Study, figure_name: str, points_name: str, rows: list[tuple]) -> Figure:
    figure = Figure(figsize=(11.0, max(3.0, 0.5 * len(rows) + 1.8)))
    left, right = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(rows))
    labelled = set()
    for position, (_, mean, (low, high), points, comparison, rules) in zip(positions, rows, strict=True):
        left.errorbar(mean, position, xerr=[[mean - low], [high - mean]], fmt="o", color="tab:blue", capsize=4)
        left.scatter(points, np.full(len(points), position), marker="x", color="tab:gray", zorder=3)
        for rule, value in rules.items():
            marker, color = RULE_MARKERS[rule]
            left.scatter([value], [position + 0.2], marker=marker, facecolors="none", edgecolors=color, zorder=3,
                         label=None if rule in labelled else RULES[rule])
            labelled.add(rule)
        if comparison is not None:
            _difference(right, comparison, position)
    left.set_yticks(positions, [row[0] for row in rows])
    left.invert_yaxis()
    left.set_xlabel(f"{figure_name}\n(training-domain validation: mean, 95 % bootstrap interval; x: {points_name})")
    if any(row[5] for row in rows):
        left.legend(loc="best", fontsize="small")
    right.axvline(0.0, color="black", linewidth=0.8)
    right.set_xlabel(f"difference to {study.baseline}\n(95 % paired interval; grey: no clear difference)")
    return figure


def _difference(axes, comparison: Comparison, position: float) -> None:
    clear = comparison.verdict != NO_CLEAR_DIFFERENCE
    axes.errorbar(comparison.difference, position,
                  xerr=[[comparison.difference - comparison.low], [comparison.high - comparison.difference]],
                  fmt="o", capsize=4, color="tab:green" if comparison.verdict == "better" else
                  "tab:red" if clear else "tab:gray")


def _fraction_curves(study: Study, panels: list[Panel]) -> Figure:
    """Seen and unseen accuracy (training-domain validation) against the training fraction, per variant."""
    fractions = [panel.value.value for panel in panels]
    names = next(panel.group_names for panel in panels if panel.layout is not None)
    groups = [name for name in names
              if any(panel.layout is not None and name in panel.layout.groups for panel in panels)]
    figure = Figure(figsize=(5.5 * max(1, len(groups)), 4.2))
    axes = figure.subplots(1, max(1, len(groups)), squeeze=False)[0]
    for ax, group in zip(axes, groups or [OVERALL], strict=False):
        for name in study.variants:
            points = [(fraction, float(np.mean(summary.figures[group])), interval(summary.replicates[group]))
                      for fraction, summary in zip(fractions, (panel.summary(name) for panel in panels),
                                                   strict=True) if group in summary.figures]
            if not points:
                continue
            x, mean, bounds = zip(*points, strict=True)
            low, high = np.array(bounds).T
            ax.errorbar(x, mean, yerr=[np.array(mean) - low, high - np.array(mean)], marker="o", capsize=3,
                        label=name)
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{fraction:g}" for fraction in fractions])
        ax.set_xlabel("training fraction (basedataset.train_fraction)")
        ax.set_ylabel(f"{group} accuracy\n(training-domain validation; 95 % interval)")
        ax.legend(fontsize="small")
    return figure
