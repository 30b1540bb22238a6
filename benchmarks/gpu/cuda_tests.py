"""Section 2, the suite's CUDA tests: the tests that skip without CUDA (test files mentioning "cuda", tests
marked skipif with a reason naming CUDA or a GPU), run by pytest in a subprocess; pass/fail counts.

This module is also the pytest plugin (``-p benchmarks.gpu.cuda_tests``) that selects those tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time

from benchmarks.gpu.check import REPO, Check

OUTCOMES = ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS")
TEST_OUTCOME = re.compile(r"^(tests/\S+::\S+) (" + "|".join(OUTCOMES) + r")\b")
SELECTED = re.compile(r"collected \d+ items / \d+ deselected / (\d+) selected")


def pytest_collection_modifyitems(config, items) -> None:
    """pytest hook, active where this module is loaded as a plugin: keeps the tests marked skipif with a
    reason naming CUDA or a GPU."""
    kept, deselected = [], []
    for item in items:
        reasons = " ".join(str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif")).lower()
        (kept if "cuda" in reasons or "gpu" in reasons else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def cuda_test_files() -> list[str]:
    return sorted(
        str(path.relative_to(REPO)) for path in (REPO / "tests").glob("test_*.py") if "cuda" in path.read_text()
    )


def section_cuda_tests(check: Check) -> None:
    """pytest -v in a subprocess; the outcomes are counted from its lines, so a run stopped at the budget
    still reports the tests it finished."""
    report = check.report
    files = cuda_test_files()
    report.line("test files mentioning cuda: " + ", ".join(files))
    command = [sys.executable, "-m", "pytest", "-v", "-p", __name__, "-p", "no:cacheprovider", *files]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, text=True)
        try:
            process.wait(timeout=max(30.0, check.time_left()))
            stopped = ""
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            stopped = " (stopped: budget)"
        output.seek(0)
        lines = output.read().splitlines()
    outcomes = {}
    for line in lines:
        match = TEST_OUTCOME.match(line)
        if match:
            outcomes[match.group(1)] = match.group(2)
    selected = next((int(m.group(1)) for m in map(SELECTED.search, lines) if m), len(outcomes))
    counts = {outcome: sum(value == outcome for value in outcomes.values()) for outcome in OUTCOMES}
    failed = [name for name, outcome in outcomes.items() if outcome in ("FAILED", "ERROR")]
    if not outcomes and not stopped and process.returncode not in (0, 5):
        report.line(f"error: pytest exited {process.returncode}: {' / '.join(lines[-3:])}")
        return
    skipped = f"{counts['SKIPPED']} skipped" + (" (skipped: no CUDA)" if not check.cuda else "")
    report.line(
        f"{selected} CUDA tests, {time.monotonic() - started:.0f} s{stopped}: {counts['PASSED']} passed, "
        f"{len(failed)} failed, {skipped}, {selected - len(outcomes)} not reached"
    )
    for name in failed[:20]:
        report.line(f"- failed: {name}")
    if check.cuda:
        check.targets.append(("the suite's CUDA tests pass", f"{counts['PASSED']} of {selected}", not failed))
