"""End-of-run reports: confusion matrix and per-domain accuracy table (PNG and CSV), console summary.

Domains are named as the dataset names them: its domain kind ("device", "instrument_source", ...) and
the names of its two groups, the domains trained on and the others (e.g. "seen devices" and "unseen
devices"). Group figures are means of per-domain accuracies (helpers.results.metrics), and say so. Data without
domains (one domain for every clip: ESC-50) gets accuracy alone: no per-domain report, no seen or unseen figure;
a group without a domain in the split (unseen, when every domain was trained on) is left out rather than shown empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.utilities import rank_zero_only

from helpers.files import atomic_write
from helpers.results.metrics import Evaluation
from helpers.results.record import RunRecord
from helpers.results.selection import EpochEvaluations

SUMMARY_WIDTH = 78
HEADLINE = ("loss", "acc", "macro_acc", "acc_seen", "acc_unseen")  # the figures a run returns to Sacred


def finish(record: RunRecord, run_dir: Path, data, title: str, moments: Sequence[tuple[str, EpochEvaluations]],
           files: Sequence[Path] = ()) -> dict[str, float]:
    """Reports (PNG/CSV) of the test split and the console summary at each moment (rank 0 writes them), and
    the headline test figures by "<moment>/<network>/<figure>", the run's result (every figure of every
    epoch is in the run's metrics).

    record: the run's record, told of the files and the run folder;
    data: the data module (domain kind, group names);
    moments: (name, evaluations) reported, e.g. ("selected", selection.selected), ("last", selection.last):
    the report files are test_<moment>_<network>_{confusion_matrix,domains}.{csv,png}; files: further files
    the summary lists (checkpoints, results).
    """
    figures: dict[str, float] = {}
    reports: list[Path] = []
    for moment, evaluated in moments:
        for net, result in evaluated.evaluations.get("test", {}).items():
            figures.update({f"{moment}/{net}/{key}": value for key, value in result.scalars().items()
                            if key in HEADLINE})
            if rank_zero_only.rank == 0:
                reports.extend(write_reports(result, run_dir, f"test_{moment}_{net}", data.group_names,
                                             f"{net}, {_moment_caption(moment, evaluated.epoch)}", data.domain_kind))
    if rank_zero_only.rank == 0:
        kinds = "{confusion_matrix,domains}" if any(path.stem.endswith("_domains") for path in reports) else (
            "confusion_matrix")
        listed = [*files, f"{len(reports)} reports of the test split: {run_dir}/test_*_{kinds}.*"]
        print(console_summary(moments, data.domain_kind, data.group_names, f"{title} ({run_dir})", listed))
        record.add_files(run_dir, [*files, *reports])
        record.note("run_dir", str(run_dir))
    return figures


def write_reports(result: Evaluation, out_dir: Path, stem: str, group_names: tuple[str, str] | tuple[()],
                  caption: str = "", domain_kind: str | None = "domain") -> list[Path]:
    """Write ``<stem>_confusion_matrix.{csv,png}`` and, for data with domains, ``<stem>_domains.{csv,png}`` into
    ``out_dir``; their paths.

    caption: what was evaluated, in the pictures' titles (e.g. "net, epoch 3 (selected)"); the per-domain
    picture's title also gives the seen and unseen means, named by group_names and domain_kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    confusion_csv = out_dir / f"{stem}_confusion_matrix.csv"
    confusion_png = out_dir / f"{stem}_confusion_matrix.png"
    _write_csv(confusion_csv, ["true \\ predicted", *result.class_names],
               [[name, *row] for name, row in zip(result.class_names, result.confusion_matrix.tolist(), strict=True)])
    _save_figure(_confusion_figure(result, caption), confusion_png)
    if not result.has_domains:
        return [confusion_csv, confusion_png]
    domains_csv = out_dir / f"{stem}_domains.csv"
    domains_png = out_dir / f"{stem}_domains.png"
    header, rows = domain_table(result, group_names)
    _write_csv(domains_csv, header, rows)
    _save_figure(_domain_figure(result, caption, group_names, domain_kind), domains_png)
    return [confusion_csv, confusion_png, domains_csv, domains_png]


def domain_table(result: Evaluation, group_names: tuple[str, str]) -> tuple[list[str], list[list]]:
    """Rows per domain (group, examples, accuracy, accuracy per class), then the two group means (means of
    the group's per-domain accuracies)."""
    seen_label, unseen_label = group_names
    correct, total = result.domain_class_counts
    header = ["domain", "group", "examples", "accuracy", *result.class_names]
    rows = []
    for index, name in enumerate(result.domain_names):
        if total[index].sum() == 0:
            continue
        per_class = [_ratio(c, t) for c, t in zip(correct[index], total[index], strict=True)]
        group = seen_label if name in result.seen_domains else unseen_label
        rows.append([name, group, int(total[index].sum()), _ratio(correct[index].sum(), total[index].sum()),
                     *per_class])
    for label, seen in ((seen_label, True), (unseen_label, False)):
        mean = _round(result.group_accuracy(seen))
        rows.append([f"mean of {label}", label, "", mean, *[""] * len(result.class_names)])
    return header, rows


def console_summary(
    moments: Sequence[tuple[str, EpochEvaluations]],
    domain_kind: str | None,
    group_names: tuple[str, str] | tuple[()],
    title: str,
    files: Sequence[Path | str] = (),
) -> str:
    """A one-screen summary: for each moment (selected epoch, last epoch, a checkpoint), the test split's
    overall figures, and for data with domains its group figures and per-domain accuracy, for each evaluated
    network; and the validation accuracy. domain_kind, group_names: as the dataset names them (None and () for
    a dataset without domains)."""
    kind = (domain_kind or "domain").replace("_", " ")
    lines = ["=" * SUMMARY_WIDTH, title, "=" * SUMMARY_WIDTH]
    grouped = False
    for moment, evaluated in moments:
        lines.append(f"test split, {_moment_description(moment, evaluated.epoch)}:")
        for net, result in evaluated.evaluations.get("test", {}).items():
            means = (result.group_accuracy(True), result.group_accuracy(False)) if result.has_domains else ()
            groups = zip(group_names[: len(means)], means, strict=True)
            shown = "".join(f"{label} {value:.4f}  " for label, value in groups if not np.isnan(value))
            lines.append(f"{net:8s} acc {result.accuracy:.4f}  macro {result.macro_accuracy:.4f}  {shown}"
                         f"loss {result.loss:.4f}  ({result.n_examples} examples)")
            if result.has_domains:
                grouped = True
                cells = [f"{domain}{'*' if domain in result.seen_domains else ''} {acc:.3f}"
                         for domain, acc in result.domain_accuracy.items()]
                lines.extend(_wrap(f"{'':8s} per {kind} (* = seen): ", cells))
        validation = evaluated.evaluations.get("val", {}).get("net")
        if validation is not None:
            lines.append(f"{'':8s} validation split: acc {validation.accuracy:.4f} ({validation.n_examples} examples)")
    if grouped:
        lines.append(f"{' / '.join(group_names)}: means of the per-{kind} accuracies")
    for path in files:
        lines.append(f"  {path}")
    lines.append("=" * SUMMARY_WIDTH)
    return "\n".join(lines)


def _moment_caption(moment: str, epoch: int) -> str:
    """The moment in a picture's title: "epoch 3 (selected)", "epoch 5 (last)", "checkpoint"."""
    return f"epoch {epoch} ({moment})" if moment in ("selected", "oracle", "last") else moment


def _moment_description(moment: str, epoch: int) -> str:
    if moment == "selected":
        return f"epoch {epoch} (selected: best validation accuracy)"
    if moment == "oracle":
        return f"epoch {epoch} (ORACLE: selected on the test split itself; optimistic)"
    if moment == "last":
        return f"epoch {epoch} (last)"
    return moment


def _wrap(prefix: str, cells: Sequence[str]) -> list[str]:
    lines, current = [], prefix
    for cell in cells:
        if len(current) + len(cell) + 2 > SUMMARY_WIDTH and current.strip():
            lines.append(current.rstrip())
            current = " " * len(prefix)
        current += cell + "  "
    lines.append(current.rstrip())
    return lines


def _confusion_figure(result: Evaluation, caption: str) -> Figure:
    n_classes = len(result.class_names)
    size = max(4.0, 0.45 * n_classes + 2.0)
    figure = Figure(figsize=(size + 1.0, size))
    axes = figure.add_subplot()
    matrix = result.confusion_matrix
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, label="examples")
    axes.set_xticks(range(n_classes), result.class_names, rotation=90)
    axes.set_yticks(range(n_classes), result.class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix{f' of {caption}' if caption else ''} (accuracy {result.accuracy:.3f})")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            axes.text(column, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > threshold else "black")
    figure.tight_layout()
    return figure


def _domain_figure(result: Evaluation, caption: str, group_names: tuple[str, str], domain_kind: str) -> Figure:
    correct, total = result.domain_class_counts
    present = [index for index in range(len(result.domain_names)) if total[index].sum() > 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = correct[present] / total[present]
        overall = correct[present].sum(axis=1) / total[present].sum(axis=1)
    table = np.column_stack([per_class, overall])
    columns = [*result.class_names, "all"]
    rows = [f"{result.domain_names[i]}{' (seen)' if result.domain_names[i] in result.seen_domains else ''}"
            for i in present]
    figure = Figure(figsize=(max(5.0, 0.55 * len(columns) + 2.5), max(3.0, 0.45 * len(rows) + 1.8)))
    axes = figure.add_subplot()
    image = axes.imshow(table, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    figure.colorbar(image, ax=axes, label="accuracy")
    axes.set_xticks(range(len(columns)), columns, rotation=90)
    axes.set_yticks(range(len(rows)), rows)
    kind = domain_kind.replace("_", " ")
    axes.set_title(f"Test accuracy per {kind} and class{f': {caption}' if caption else ''}\n"
                   f"{group_names[0]} {result.group_accuracy(True):.3f}, {group_names[1]} "
                   f"{result.group_accuracy(False):.3f} (means of the per-{kind} accuracies)", fontsize=9)
    for (row, column), value in np.ndenumerate(table):
        if not np.isnan(value):
            axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="black" if value > 0.6 else "white")
    figure.tight_layout()
    return figure


def _save_figure(figure: Figure, path: Path) -> None:
    """The PNG, its axes' title also in its metadata ("Title"), where a reader (or a test) finds it as text."""
    FigureCanvasAgg(figure)
    metadata = {"Title": figure.axes[0].get_title()}
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=120, metadata=metadata))


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, lambda stream: stream.write(text.getvalue().encode()))


def _ratio(correct, total) -> float | str:
    return _round(correct / total) if total else ""


def _round(value: float) -> float | str:
    return "" if np.isnan(value) else round(float(value), 6)
