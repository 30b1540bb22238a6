"""Reading what a completed training leaves in its run folder for the study report.

    results.json           model_selection ("validation" or "oracle"), selected_epoch, last_epoch, domain_kind,
                           group_names [seen, unseen], class_names, domain_names, seen_domains, and the
                           figures of the test and validation splits ("test" -> "net" -> "selected" -> ...)
    test_predictions.csv   one row per test example: file_name, label, domain, net_selected, net_last
                           (+ net_swa_selected, net_swa_last with SWA); class and domain names

The report uses ``net_selected``: the plain network at the epoch chosen by ``model_selection``. With a
continued training, the run folder of the newest attempt holds both files for the whole training.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.study.spec import StudyError

RESULTS = "results.json"
PREDICTIONS = "test_predictions.csv"
PREDICTION_COLUMN = "net_selected"
SELECTIONS = ("validation", "oracle")
RESULT_KEYS = ("model_selection", "selected_epoch", "domain_kind", "group_names", "class_names", "domain_names",
               "seen_domains")


class OutputError(StudyError):
    """A run's results.json or test_predictions.csv that is missing or does not follow the format."""


@dataclass(frozen=True)
class RunResults:
    """A completed run's test predictions (at the selected epoch) and what they are measured against.

    files: test example names, in the file's order; domains: domain name per example; correct: whether
    net_selected equals the label; group_names: how to call seen and unseen domains (e.g. seen devices)."""

    folder: Path
    model_selection: str
    selected_epoch: int
    domain_kind: str
    group_names: tuple[str, str]
    domain_names: tuple[str, ...]
    seen_domains: tuple[str, ...]
    files: np.ndarray
    domains: np.ndarray
    correct: np.ndarray


def has_results(attempt: Path) -> bool:
    return (attempt / RESULTS).is_file() and (attempt / PREDICTIONS).is_file()


def read_results(attempt: Path) -> RunResults:
    """The results of the run folder ``attempt``; OutputError naming the file and what is wrong."""
    path = attempt / RESULTS
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise OutputError(f"{path} does not exist: the experiment did not write its results (is it a version that "
                          f"writes results.json at the end of a training?).") from None
    except json.JSONDecodeError as error:
        raise OutputError(f"{path} is not valid JSON: {error}") from None
    missing = [key for key in RESULT_KEYS if key not in results]
    if missing:
        raise OutputError(f"{path} lacks {missing}; expected the keys {list(RESULT_KEYS)}.")
    if results["model_selection"] not in SELECTIONS:
        raise OutputError(f"{path}: model_selection = {results['model_selection']!r}; expected one of {SELECTIONS}.")
    group_names = tuple(results["group_names"])
    if len(group_names) != 2:
        raise OutputError(f"{path}: group_names = {group_names}; expected [seen name, unseen name].")
    domain_names = tuple(results["domain_names"])
    seen = tuple(results["seen_domains"])
    if not set(seen) <= set(domain_names):
        raise OutputError(f"{path}: seen_domains {list(seen)} are not all among domain_names {list(domain_names)}.")
    files, labels, domains, predictions = _read_predictions(attempt / PREDICTIONS)
    unknown = sorted(set(domains) - set(domain_names))
    if unknown:
        raise OutputError(f"{attempt / PREDICTIONS}: domains {unknown} are not among domain_names in {path}.")
    return RunResults(folder=attempt, model_selection=results["model_selection"],
                      selected_epoch=int(results["selected_epoch"]), domain_kind=str(results["domain_kind"]),
                      group_names=group_names, domain_names=domain_names, seen_domains=seen,
                      files=files, domains=domains, correct=predictions == labels)


def _read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        with open(path, newline="") as stream:
            reader = csv.DictReader(stream)
            columns = ("file_name", "label", "domain", PREDICTION_COLUMN)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise OutputError(f"{path} has the columns {reader.fieldnames}; expected at least {list(columns)}.")
            rows = [[row[column] for column in columns] for row in reader]
    except FileNotFoundError:
        raise OutputError(f"{path} does not exist: the experiment did not write its test predictions.") from None
    if not rows:
        raise OutputError(f"{path} has no test examples.")
    table = np.array(rows, dtype=object)
    return tuple(table[:, column].astype(str) for column in range(4))
