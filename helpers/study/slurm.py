"""The SLURM launcher: one array job through submitit, one task per run.

Each task is a :class:`RunTask` (a ``submitit.helpers.Checkpointable``) that launches its run as the local
launcher does (:func:`helpers.study.execute.launch`: skip, continue or start, log in the run's folder).
When SLURM announces the end of the task's time or a preemption (submitit's signal, USR2, ``signal_delay_s``
before; the experiment itself ignores that signal), the task stops its experiment with SIGTERM (it stops at
the next batch, exit status 143, last.ckpt of the last finished epoch in place) and requeues itself; the
requeued task waits for the run's lock and continues the training from last.ckpt.

The resources of each task come from the study file's [slurm] table (see :mod:`helpers.study.spec`) and
``--slurm KEY=VALUE`` on the command line. ``cluster="local"`` runs the same tasks through submitit's local
executor (tests; a machine without SLURM).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from helpers.study.execute import ExperimentProcess, Outcome, launch
from helpers.study.folder import Status, log_tail
from helpers.study.local import Stopped, stop_on_signals
from helpers.study.spec import Run, Study, StudyError, slurm_minutes

logger = logging.getLogger(__name__)

SUBMITIT_DIR = "submitit"  # <study folder>/submitit/<job id>_*: submitit's pickles and logs
STOP_WAIT_S = 60.0  # a stopped experiment ends within a batch; then it is killed (last.ckpt stays intact)
REQUEUED_LOCK_WAIT_S = 600.0  # a requeued task waits this long for its previous attempt's process to end
POLL_S = {"slurm": 30.0, "local": 1.0}
# [slurm] keys -> AutoExecutor parameters (generic ones apply to the local executor too).
PARAMETERS = {"partition": "slurm_partition", "time": "timeout_min", "gpus_per_task": "gpus_per_node",
              "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "array_parallelism": "slurm_array_parallelism",
              "signal_delay_s": "slurm_signal_delay_s", "setup": "slurm_setup",
              "extra": "slurm_additional_parameters"}
REPOSITORY = Path(__file__).resolve().parents[2]  # the tasks import helpers.study from here


class RunTask(Checkpointable):
    """One run as a submitit task; requeued after a timeout or preemption (see the module's docstring).

    requeued: this task continues one that was stopped; it waits for the run's lock rather than skipping
    the run while the stopped experiment finishes exiting."""

    def __init__(self, run: Run, requeued: bool = False) -> None:
        self.run = run
        self.requeued = requeued
        self._process: ExperimentProcess | None = None

    def __call__(self) -> Outcome:
        self._process = ExperimentProcess()
        job = submitit.JobEnvironment()
        return launch(self.run, f"submitit job {job.job_id}", process=self._process,
                      lock_wait_s=REQUEUED_LOCK_WAIT_S if self.requeued else 2.0,
                      ignore_signals=(preemption_signal(),))

    def checkpoint(self) -> DelayedSubmission:
        """Stop the experiment (SIGTERM, then SIGKILL after STOP_WAIT_S) and requeue the run."""
        if self._process is not None:
            logger.warning("%s: timeout or preemption; stopping the experiment and requeuing", self.run.name)
            self._process.stop()
            if self._process.wait(STOP_WAIT_S) is None:
                self._process.stop()
                self._process.wait(10.0)
        return DelayedSubmission(RunTask(self.run, requeued=True))

    def __getstate__(self) -> dict[str, Any]:
        return {"run": self.run, "requeued": self.requeued, "_process": None}


def preemption_signal() -> signal.Signals:
    """The signal submitit's tasks receive before their end (USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)."""
    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


def executor_parameters(slurm: Mapping[str, Any], name: str) -> dict[str, Any]:
    """AutoExecutor.update_parameters keywords for the study file's [slurm] table: one task, one node."""
    if "time" not in slurm:
        raise StudyError("the SLURM launcher needs each run's time limit: add time = \"24:00:00\" (or minutes) to "
                         "the study file's [slurm] table, or --slurm time=1440.")
    parameters: dict[str, Any] = {"name": f"study-{name}", "nodes": 1, "tasks_per_node": 1}
    for key, value in slurm.items():
        converted = {"time": slurm_minutes, "extra": dict, "setup": list}.get(key, lambda item: item)
        parameters[PARAMETERS[key]] = converted(value)
    return parameters


def check_launcher(study: Study, cluster: str) -> dict[str, Any]:
    """The executor's parameters; StudyError when the study or this machine cannot submit (before any work)."""
    parameters = executor_parameters(study.slurm, study.name)
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise StudyError("--launcher slurm: no sbatch on this machine; run `study run` on the cluster's login node "
                         "(or use --launcher local).")
    return parameters


def run_submitit(study: Study, runs: Sequence[Run], cluster: str = "slurm") -> list[Outcome]:
    """Submit ``runs`` as one array job and wait for them; their outcomes in the same order.

    cluster: "slurm", or "local" for submitit's local executor. Raises :class:`Stopped` after cancelling the
    jobs when a stop signal arrives while waiting (the runs stop at the next batch and continue next time)."""
    parameters = check_launcher(study, cluster)
    if not runs:
        return []
    executor = submitit.AutoExecutor(folder=study.folder / SUBMITIT_DIR, cluster=cluster)
    executor.update_parameters(**parameters)
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    with submitit.helpers.environment_variables(PYTHONPATH=path):
        jobs = executor.submit_array([RunTask(run) for run in runs])
    logger.info("submitted %d runs as %s job(s) %s; their files are in %s", len(jobs), cluster,
                ", ".join(sorted({job.job_id.split("_")[0] for job in jobs})), study.folder / SUBMITIT_DIR)
    outcomes: dict[int, Outcome] = {}

    def cancel() -> None:
        for index, job in enumerate(jobs):
            if index not in outcomes:
                job.cancel(check=False)

    with stop_on_signals(cancel) as received:
        while len(outcomes) < len(jobs) and not received:
            for index, job in enumerate(jobs):
                if index not in outcomes and job.done():
                    outcomes[index] = _outcome(job, runs[index])
            if len(outcomes) < len(jobs):
                time.sleep(POLL_S.get(cluster, 1.0))
    if received:
        logger.warning("cancelled the study's jobs; `study run` again continues their runs")
        raise Stopped(received[0])
    return [outcomes[index] for index in range(len(jobs))]


def _outcome(job, run: Run) -> Outcome:
    """The task's own outcome, or a failure with the end of the job's stderr when the task did not return."""
    try:
        return job.result()
    except Exception as error:  # submitit raises the task's error (or UncompletedJobError) here
        message = str(error).strip().splitlines()
        stderr = job.paths.stderr
        return Outcome(run.name, Status.FAILED, "started",
                       f"job {job.job_id}: {message[-1] if message else type(error).__name__}",
                       stderr if stderr.exists() else None, tuple(log_tail(stderr)))
