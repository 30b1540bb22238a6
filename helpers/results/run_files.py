"""The result files of a run folder: which files were in each role, and what the training selected and scored.

    splits.json            role ("train", "validation", "test") -> the file names in it, written when a
                           training starts, so that a reader can check that validation and test are disjoint
                           and that validation holds only training domains
    results.json           written when a training ends: model_selection ("validation" or "oracle"),
                           selected_epoch, last_epoch, domain_kind, group_names [seen, unseen] (null and [] for
                           a dataset without domains), class_names,
                           domain_names, seen_domains, and the figures of the test and validation splits at
                           the selected and the last epoch: {"test": {"net": {"selected": {...}, "last": {...}},
                           "net_swa": {...}}, "validation": {...}}
    test_predictions.csv   one row per test example: file_name, label, domain, net_selected, net_last
                           (+ net_swa_selected, net_swa_last with SWA); class and domain names
    metrics.json           every figure logged per epoch (written by Sacred's FileStorageObserver, or
                           helpers.results.record for the Python API): {name: {"steps": [epochs], "values": [...]}},
                           e.g. val/acc, test/acc, test/acc_unseen, test/domain/<name>; one per attempt. Epochs
                           are numbered from 1 in both files

"selected" is the epoch model_selection chose (the key stays "selected" with "oracle", which
model_selection names). With a continued training, the run folder of the newest attempt holds both end
files for the whole training. This module writes them and reads them back (the study report reads them).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from errors import UserError
from helpers.files import atomic_write
from helpers.results.metrics import Evaluation
from helpers.results.selection import MODEL_SELECTIONS, ModelSelection

SPLITS = "splits.json"
RESULTS = "results.json"
PREDICTIONS = "test_predictions.csv"
METRICS = "metrics.json"
PREDICTION_COLUMN = "net_selected"  # what a comparison of runs scores: the plain network at the selected epoch
LAST_COLUMN = "net_last"  # the plain network at the last epoch
RESULT_KEYS = ("model_selection", "selected_epoch", "domain_kind", "group_names", "class_names", "domain_names",
               "seen_domains")
ROLE_NAMES = {"val": "validation", "test": "test"}  # helpers.results.selection's roles as the files name them


class ResultsError(UserError, ValueError):
    """A run's results.json or test_predictions.csv that is missing or does not follow the format."""


def write_splits(run_dir: Path, roles: Mapping[str, Sequence[str]]) -> Path:
    """splits.json: role -> file names."""
    text = json.dumps({role: list(files) for role, files in roles.items()}, indent=1)
    return atomic_write(run_dir / SPLITS, lambda stream: stream.write(text.encode()))


def write_results(run_dir: Path, selection: ModelSelection, data, test_files: Sequence[str]) -> list[Path]:
    """results.json and test_predictions.csv of a finished training.

    data: what the run trained on (class and domain names, seen domains, domain kind, group names);
    test_files: the test split's file names in its order (the evaluations name their examples' positions).
    """
    selected, last = selection.selected, selection.last
    results = {
        "model_selection": selection.mode,
        "selected_epoch": selected.epoch,
        "last_epoch": last.epoch,
        "domain_kind": data.domain_kind,
        "group_names": list(data.group_names),
        "class_names": list(data.class_names),
        "domain_names": list(data.domain_names),
        "seen_domains": list(data.seen_domains),
        **{ROLE_NAMES[role]: {net: {"selected": selected.evaluations[role][net].scalars(),
                                    "last": last.evaluations[role][net].scalars()}
                              for net in last.evaluations[role] if net in selected.evaluations[role]}
           for role in last.evaluations},
    }
    text = json.dumps(results, indent=1)
    paths = [atomic_write(run_dir / RESULTS, lambda stream: stream.write(text.encode()))]
    if not np.array_equal(selected.indices["test"], last.indices["test"]):
        raise ValueError("the selected and the last epoch were evaluated on different test examples")
    columns = {f"{net}_{when}": evaluations["test"][net]
               for when, evaluations in (("selected", selected.evaluations), ("last", last.evaluations))
               for net in evaluations["test"] if net in selected.evaluations["test"]}
    files = [test_files[position] for position in last.indices["test"]]
    paths.append(atomic_write(run_dir / PREDICTIONS,
                              lambda stream: stream.write(_predictions_csv(columns, files).encode())))
    return paths


@dataclass(frozen=True)
class RunResults:
    """A completed run's test predictions (at the selected epoch) and what they are measured against.

    files: test example names, in the file's order; domains: domain name per example; correct: whether
    net_selected equals the label; correct_last: whether net_last does (None without that column);
    group_names: how to call seen and unseen domains (e.g. seen devices); domain_kind None and group_names () for
    a dataset without domains."""

    folder: Path
    model_selection: str
    selected_epoch: int
    domain_kind: str | None
    group_names: tuple[str, str] | tuple[()]
    domain_names: tuple[str, ...]
    seen_domains: tuple[str, ...]
    files: np.ndarray
    domains: np.ndarray
    correct: np.ndarray
    correct_last: np.ndarray | None = None


def has_results(run_dir: Path) -> bool:
    return (run_dir / RESULTS).is_file() and (run_dir / PREDICTIONS).is_file()


def read_results(run_dir: Path) -> RunResults:
    """The results of the run folder ``run_dir``; ResultsError naming the file and what is wrong."""
    path = run_dir / RESULTS
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist: the experiment did not write its results (is it a version "
                           "that writes results.json at the end of a training?).") from None
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not valid JSON: {error}") from None
    missing = [key for key in RESULT_KEYS if key not in results]
    if missing:
        raise ResultsError(f"{path} lacks {missing}; expected the keys {list(RESULT_KEYS)}.")
    if results["model_selection"] not in MODEL_SELECTIONS:
        raise ResultsError(f"{path}: model_selection = {results['model_selection']!r}; expected one of "
                           f"{tuple(MODEL_SELECTIONS)}.")
    group_names = tuple(results["group_names"])
    if len(group_names) not in (0, 2):
        raise ResultsError(f"{path}: group_names = {group_names}; expected [seen name, unseen name] ([] for a dataset "
                           f"without domains).")
    domain_names = tuple(results["domain_names"])
    seen = tuple(results["seen_domains"])
    if not set(seen) <= set(domain_names):
        raise ResultsError(f"{path}: seen_domains {list(seen)} are not all among domain_names {list(domain_names)}.")
    files, labels, domains, predictions, last = _read_predictions(run_dir / PREDICTIONS)
    unknown = sorted(set(domains) - set(domain_names))
    if unknown:
        raise ResultsError(f"{run_dir / PREDICTIONS}: domains {unknown} are not among domain_names in {path}.")
    return RunResults(folder=run_dir, model_selection=results["model_selection"],
                      selected_epoch=int(results["selected_epoch"]), domain_kind=results["domain_kind"],
                      group_names=group_names, domain_names=domain_names, seen_domains=seen,
                      files=files, domains=domains, correct=predictions == labels,
                      correct_last=None if last is None else last == labels)


def read_metrics(run_dirs: Sequence[Path]) -> dict[str, dict[int, float]]:
    """Every figure per epoch of a training made of the attempts ``run_dirs`` (oldest first; a continued training
    repeats epochs, the newest attempt's value wins): name -> {epoch: value}. Attempts without metrics.json add
    nothing; ResultsError for one that is not in the format."""
    figures: dict[str, dict[int, float]] = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / METRICS
        try:
            metrics = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except json.JSONDecodeError as error:
            raise ResultsError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(metrics, dict):
            raise ResultsError(f"{path}: expected {{name: {{\"steps\": [...], \"values\": [...]}}}}.")
        for name, series in metrics.items():
            try:
                pairs = zip(series["steps"], series["values"], strict=True)
                figures.setdefault(name, {}).update((int(step), float(value)) for step, value in pairs)
            except (KeyError, TypeError, ValueError):
                raise ResultsError(f"{path}: {name} is not {{\"steps\": [epochs], \"values\": [numbers]}} of "
                                   f"equal length.") from None
    return figures


def _predictions_csv(columns: Mapping[str, Evaluation], test_files: Sequence[str]) -> str:
    first = next(iter(columns.values()))
    if len(test_files) != first.n_examples:
        raise ValueError(f"{len(test_files)} test file names for {first.n_examples} evaluated examples")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file_name", "label", "domain", *columns])
    for index, name in enumerate(test_files):
        writer.writerow([name, first.class_names[first.labels[index]], first.domain_names[first.domains[index]],
                         *(result.class_names[result.predictions[index]] for result in columns.values())])
    return text.getvalue()


def _read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        with open(path, newline="") as stream:
            reader = csv.DictReader(stream)
            columns = ("file_name", "label", "domain", PREDICTION_COLUMN)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise ResultsError(f"{path} has the columns {reader.fieldnames}; expected at least {list(columns)}.")
            if LAST_COLUMN in reader.fieldnames:
                columns += (LAST_COLUMN,)
            rows = [[row[column] for column in columns] for row in reader]
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist: the experiment did not write its test predictions.") from None
    if not rows:
        raise ResultsError(f"{path} has no test examples.")
    table = np.array(rows, dtype=object)
    last = table[:, 4].astype(str) if len(columns) == 5 else None
    return (*(table[:, column].astype(str) for column in range(4)), last)
