"""Section 5, mixed precision: the demo training (``python ex_dcase20.py``) with trainer.precision=bf16-mixed
and 16-mixed beside float32, same seed, side by side on the GPU; the final accuracy of each run, from its run
folder's metrics.json. Target: the mixed-precision trainings within 2 points of float32's accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.gpu.check import REPO, Check

PRECISIONS = {"float32": None, "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}
ACCURACY_POINTS = 2.0
# metrics.json key -> what its figure is: test/acc where the run writes it, else val/acc
ACCURACY_KEYS = {
    "test/acc": "test split, epoch chosen on validation",
    "val/acc": "validation split, last epoch",
}


@dataclass
class DemoRun:
    """One demo training in a subprocess; finished: when it was seen to end (None: stopped at the budget)."""

    process: subprocess.Popen
    log: Path
    started: float
    finished: float | None = None


def section_mixed_precision(check: Check) -> None:
    """The trainings run at once (one small model each on one GPU; the first builds the demo cache under a
    lock while the others wait), so the section takes the time of the slowest; the budget stops them."""
    report, sizes = check.report, check.sizes
    options = " ".join(sizes.demo_options)
    report.line(f"python ex_dcase20.py -F <tmp> with {options} seed=1 [trainer.precision=...]: demo data, "
                "GPU when present, the runs side by side")
    row = report.table("precision", "accuracy", "figure", "wall time", "difference to float32", "target")
    labels = [label for label, precision in PRECISIONS.items() if check.cuda or precision is None]
    with tempfile.TemporaryDirectory() as folder:
        runs = run_demos(Path(folder), labels, sizes.demo_options, check)
        accuracies: dict[str, tuple[float, str]] = {}
        for label in PRECISIONS:
            run = runs.get(label)
            if run is None:
                row(label, "skipped: no CUDA", "", "", "", "")
                continue
            seconds = f"{(run.finished or time.monotonic()) - run.started:.0f} s"
            if run.finished is None:
                row(label, "stopped: budget", "", seconds, "", "")
                continue
            if run.process.returncode != 0:
                tail = run.log.read_text().strip().splitlines()[-1:] or [""]
                row(label, f"error: exit {run.process.returncode}: {tail[0][:160]}", "", seconds, "", "")
                continue
            accuracy, key = final_accuracy(next((Path(folder) / label).glob("*/metrics.json")))
            accuracies[label] = accuracy, key
            row(label, f"{100 * accuracy:.1f} %", f"{key} ({ACCURACY_KEYS[key]})", seconds,
                *_against_float32(check, label, accuracies))


def final_accuracy(metrics_file: Path) -> tuple[float, str]:
    """(accuracy, key) of a run's metrics.json (Sacred's metrics file): the last test/acc where the run
    wrote one, else the last val/acc."""
    metrics = json.loads(metrics_file.read_text())
    key = next((key for key in ACCURACY_KEYS if key in metrics), None)
    if key is None:
        raise ValueError(f"{metrics_file} holds none of {', '.join(ACCURACY_KEYS)}; it has {', '.join(metrics)}")
    return metrics[key]["values"][-1], key


def _against_float32(check: Check, label: str, accuracies: dict[str, tuple[float, str]]) -> tuple[str, str]:
    """(difference, target) cells of a mixed-precision run: compared with float32 when both figures are of
    the same kind."""
    if label == "float32" or "float32" not in accuracies:
        return "", ""
    (accuracy, key), (reference, reference_key) = accuracies[label], accuracies["float32"]
    if key != reference_key:
        return f"not compared: float32 read {reference_key}", ""
    points = 100 * (accuracy - reference)
    figure = f"{label} {100 * accuracy:.1f} % vs float32 {100 * reference:.1f} % ({key})"
    verdict = check.verdict("mixed precision accuracy", figure, abs(points) <= ACCURACY_POINTS)
    return f"{points:+.1f} points", f"within {ACCURACY_POINTS:g} points: {verdict}"


def run_demos(folder: Path, labels: list[str], options: tuple[str, ...], check: Check) -> dict[str, DemoRun]:
    """Starts one demo training per precision at once, in run folders under ``folder``, and waits for them
    until the section's budget ends (those still running then are stopped)."""
    env = {**os.environ, "FRITO_CACHE_DIR": str(folder / "cache")}
    runs = {}
    for label in labels:
        command = [sys.executable, "ex_dcase20.py", "-F", str(folder / label), "with", *options, "seed=1"]
        if PRECISIONS[label]:
            command.append(f"trainer.precision={PRECISIONS[label]}")
        log = folder / f"{label}.log"
        with log.open("w") as output:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        runs[label] = DemoRun(process, log, time.monotonic())
    while any(run.finished is None for run in runs.values()) and check.time_left() > 0:
        time.sleep(0.5)
        for run in runs.values():
            if run.finished is None and run.process.poll() is not None:
                run.finished = time.monotonic()
    for run in runs.values():
        if run.finished is None:
            run.process.kill()
            run.process.wait()
    return runs
