"""The study commands: `run` (every run of a study, skipping what is done) and `report`.

`run` holds the study folder's lock, records the resolved study, reads every run's state and launches
those that are missing, interrupted or failed (:mod:`helpers.study.execute`) through a launcher: local,
N at a time (:mod:`helpers.study.local`), or SLURM through submitit (:mod:`helpers.study.slurm`). Runs
that fail are reported with their logs' last lines and the study goes on; the next `run` retries them.
"""

from __future__ import annotations

import logging
import shlex
from collections import Counter
from collections.abc import Sequence

from helpers.study.execute import Outcome
from helpers.study.folder import RunState, Status, record_study, run_state, study_lock
from helpers.study.local import run_local, slot_environments, usable_cores, visible_gpus
from helpers.study.slurm import check_launcher, run_submitit
from helpers.study.spec import Run, Study, StudyError
from helpers.study.table import build_report, markdown, write_report

logger = logging.getLogger(__name__)

LAUNCHERS = ("local", "slurm", "submitit-local")  # submitit-local: the SLURM launcher's tasks on this machine


def run_study(study: Study, launcher: str = "local", parallel: int = 1, dry_run: bool = False) -> int:
    """Run what remains of ``study``; the exit status: 0 when every run has completed, else 1.

    dry_run: print each run's state and the command it would get, and change nothing."""
    if launcher not in LAUNCHERS:
        raise StudyError(f"--launcher {launcher}: expected one of {', '.join(LAUNCHERS)}.")
    cluster = {"slurm": "slurm", "submitit-local": "local"}.get(launcher)
    if cluster is not None:
        check_launcher(study, cluster)
    else:
        environments = slot_environments(parallel, visible_gpus() if parallel > 1 else [], usable_cores())
    if dry_run:
        plan = [(run, run_state(run)) for run in study.runs()]
        print(_plan_text(study, plan, verbose=True))
        return 0
    with study_lock(study.folder):
        record_study(study)
        plan = [(run, run_state(run)) for run in study.runs()]
        print(_plan_text(study, plan))
        todo = [run for run, state in plan if state.status not in (Status.COMPLETED, Status.RUNNING)]
        if cluster is None:
            outcomes = run_local(todo, environments)
        else:
            outcomes = run_submitit(study, todo, cluster)
    print(outcome_text(study, plan, outcomes))
    remaining = [run for run in study.runs() if run_state(run).status is not Status.COMPLETED]
    return 0 if not remaining else 1


def report_study(study: Study, resamples: int) -> str:
    """Write report.md, report.csv and report.png into the study folder; the Markdown text."""
    report = build_report(study, resamples)
    paths = write_report(report)
    return markdown(report) + "\nWritten: " + ", ".join(str(path) for path in paths) + "\n"


def outcome_text(study: Study, plan: Sequence[tuple[Run, RunState]], outcomes: Sequence[Outcome]) -> str:
    """What this `study run` did: counts, then each failure with its log's last lines."""
    done = Counter(outcome.status.value for outcome in outcomes)
    skipped = Counter(state.status.value for _, state in plan if state.status in (Status.COMPLETED, Status.RUNNING))
    lines = [f"study {study.name}: {len(outcomes)} launched: " + _counts(done)
             + (f"; skipped: {_counts(skipped)}" if skipped else "")]
    for outcome in outcomes:
        if outcome.status is Status.FAILED:
            lines.append(f"FAILED {outcome.name}: {outcome.detail}" + (f" (log: {outcome.log})" if outcome.log else ""))
            lines += [f"    {line}" for line in outcome.log_tail]
        elif outcome.status is Status.INTERRUPTED:
            lines.append(f"interrupted {outcome.name}: {outcome.detail}; `study run` again continues it")
    lines.append(f"report: python study.py report {study.path}")
    return "\n".join(lines)


def _plan_text(study: Study, plan: Sequence[tuple[Run, RunState]], verbose: bool = False) -> str:
    states = Counter(state.status.value for _, state in plan)
    protocol = "" if study.protocol is None else f" x {len(study.protocol.values)} {study.protocol.kind.column}s"
    lines = [f"study {study.name} ({study.experiment.name}, {len(study.variants)} variants{protocol} x "
             f"{len(study.seeds)} seeds) in {study.folder}: {_counts(states)}"]
    for run, state in plan:
        if state.status is Status.RUNNING:
            lines.append(f"  {run.name}: running ({state.detail}); left alone")
        elif verbose or state.status in (Status.FAILED, Status.INTERRUPTED):
            action = {Status.COMPLETED: "skip", Status.MISSING: "start", Status.FAILED: "retry",
                      Status.INTERRUPTED: "continue"}[state.status]
            lines.append(f"  {run.name}: {state.status.value}; {action}"
                         + (f" ({state.detail})" if state.detail and state.status is not Status.COMPLETED else ""))
            if verbose and state.status is not Status.COMPLETED:
                lines.append(f"      {shlex.join(run.resumed_command(state.resume_from))}")  # as a shell takes it
    return "\n".join(lines)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(counter.items())) or "nothing"
