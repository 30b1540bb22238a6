"""Section 5, mixed precision: the demo training (``python ex_dcase20.py``) with trainer.precision=bf16-mixed
and 16-mixed beside float32, same seed, side by side on the GPU; the accuracy of each run on the test split at
the epoch selected on the validation split, from its run folder's results.json (helpers.results.run_files). Target:
the mixed-precision trainings within 2 points of float32's accuracy."""

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
FIGURE = "test/acc (test split, epoch selected on validation)"


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
        accuracies: dict[str, float] = {}
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
            accuracies[label] = selected_test_accuracy(next((Path(folder) / label).glob("*/results.json")))
            row(label, f"{100 * accuracies[label]:.1f} %", FIGURE, seconds, *_against_float32(check, label, accuracies))


def selected_test_accuracy(results_file: Path) -> float:
    """The plain network's test accuracy at the selected epoch, from a run's results.json."""
    return json.loads(results_file.read_text())["test"]["net"]["selected"]["acc"]


def _against_float32(check: Check, label: str, accuracies: dict[str, float]) -> tuple[str, str]:
    """(difference, target) cells of a mixed-precision run beside the float32 one."""
    if label == "float32" or "float32" not in accuracies:
        return "", ""
    accuracy, reference = accuracies[label], accuracies["float32"]
    points = 100 * (accuracy - reference)
    figure = f"{label} {100 * accuracy:.1f} % vs float32 {100 * reference:.1f} % ({FIGURE})"
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
