"""Launching one run of a study: skip it, continue it or start it, with its console output in a log file.

Every launcher (local, SLURM) calls :func:`launch`. It takes the run's lock, reads the run's state from its
folder (:mod:`helpers.study.folder`), and runs the experiment's command line as a child process: a
completed run is skipped, a running one (another launch holds its lock) is left alone, an interrupted or
failed one continues from its newest checkpoints/last.ckpt (``resume=<attempt folder>``), a missing one
starts. The child inherits the run's lock, runs in its own session (a terminal's Ctrl-C reaches the
launcher, which stops the child with SIGTERM: the experiments then stop at the next batch, exit with
status 143 and keep last.ckpt of the last finished epoch) and writes stdout and stderr into
``logs/launch_<k>.log`` of the run's folder.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from helpers.study.folder import (
    SIGTERM_EXIT,
    Status,
    acquire_run_lock,
    attempts,
    log_tail,
    now,
    run_state,
    sacred_status,
    start_launch,
    update_launch,
)
from helpers.study.spec import Run

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Outcome:
    """What a launch of a run came to.

    status: completed, failed, interrupted; or skipped as completed / running (another launch holds it).
    action: "skipped", "started" or "continued"; log: the launch's console log, log_tail: its last lines.
    """

    name: str  # the run's: <variant>[/<protocol value>]/seed_<s>
    status: Status
    action: str
    detail: str = ""
    log: Path | None = None
    log_tail: tuple[str, ...] = field(default=())
    seconds: float = 0.0


class ExperimentProcess:
    """The child process of a launch, shared with whoever may have to stop it (a signal handler, a thread).

    stop() asks it to stop (SIGTERM: the experiment stops at the next batch); a second call kills it."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.stop_requested = False
        self._lock = threading.RLock()  # re-entered by a signal handler in the same thread

    def started(self, process: subprocess.Popen) -> None:
        with self._lock:
            self.process = process
            if self.stop_requested:
                process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        with self._lock:
            again = self.stop_requested
            self.stop_requested = True
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL if again else signal.SIGTERM)

    def wait(self, timeout_s: float) -> int | None:
        """The exit status once the process has ended, polling (safe inside a signal handler); None on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.process is not None and self.process.poll() is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)
        return self.process.returncode if self.process is not None else None


def launch(run: Run, launcher: str, env: Mapping[str, str] | None = None, process: ExperimentProcess | None = None,
           lock_wait_s: float = 2.0, ignore_signals: tuple[int, ...] = ()) -> Outcome:
    """Skip, continue or start ``run`` (see the module's docstring) and wait for it.

    launcher: recorded with the launch ("local", "submitit job <id>"); env: variables added to the child's
    environment (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS); process: filled with the child process so that
    another thread or a signal handler can stop it; lock_wait_s: how long to wait for another launch of the
    run to end; ignore_signals: signals the child ignores (a cluster's preemption notice, which the
    launcher handles).
    """
    process = process or ExperimentProcess()
    lock = acquire_run_lock(run, lock_wait_s)
    if lock is None:
        return Outcome(run.name, Status.RUNNING, "skipped", "another launch holds the run's lock")
    try:
        if process.stop_requested:
            return Outcome(run.name, Status.INTERRUPTED, "skipped", "the study was stopped before it")
        state = run_state(run, lock_held=True)
        if state.status is Status.COMPLETED:
            return Outcome(run.name, Status.COMPLETED, "skipped", state.detail)
        return _execute(run, state.resume_from, launcher, env or {}, process, lock, ignore_signals)
    finally:
        os.close(lock)


def _execute(run: Run, resume_from: Path | None, launcher: str, env: Mapping[str, str], process: ExperimentProcess,
             lock: int, ignore_signals: tuple[int, ...]) -> Outcome:
    command = run.resumed_command(resume_from)
    action = "continued" if resume_from else "started"
    record = start_launch(run, command, launcher, resume_from)
    log_path = run.base / record["log"]
    before = set(attempts(run.base))
    logger.info("%s %s%s; live log: %s", action, run.name, f" from {resume_from}" if resume_from else "", log_path)
    start = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"# {' '.join(command)}\n# launch {record['number']} ({launcher}) at {record['started']}\n".encode())
        log.flush()
        try:
            child = subprocess.Popen(
                command, cwd=run.cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, start_new_session=True, pass_fds=(lock,),
                preexec_fn=_ignoring(ignore_signals) if ignore_signals else None,
            )
        except OSError as error:
            log.write(f"could not start the experiment: {error}\n".encode())
            child = None
            failure = f"could not start {command[0]}: {error.strerror}"
    exit_status = None
    try:
        if child is not None:
            update_launch(run, record, experiment_pid=child.pid)
            process.started(child)
            exit_status = process.wait(timeout_s=float("inf"))
    finally:  # also when a signal handler ends the launcher (SystemExit): the record is settled either way
        if child is not None:
            exit_status = child.poll()
            status, detail = _classify(run, exit_status, process.stop_requested, before)
        else:
            status, detail = Status.FAILED, failure
        seconds = time.monotonic() - start
        update_launch(run, record, ended=now(), exit_status=exit_status, outcome=status.value, detail=detail)
    logger.info("%s %s (%s)%s", run.name, status.value, _duration(seconds), f": {detail}" if detail else "")
    return Outcome(run.name, status, action, detail, log_path, tuple(log_tail(log_path)), seconds)


def _classify(run: Run, exit_status: int | None, stopped: bool, before: set[Path]) -> tuple[Status, str]:
    """The outcome of a launch from its exit status and the Sacred run folder it made."""
    new = [attempt for attempt in attempts(run.base) if attempt not in before]
    if exit_status == 0:
        if new and sacred_status(new[-1])[0] == "COMPLETED":
            return Status.COMPLETED, f"completed in {new[-1]}"
        return Status.FAILED, (f"the experiment exited with status 0 but left no completed Sacred run in {run.base} "
                               f"(does it take -F <folder>?)")
    if exit_status is None:
        return Status.INTERRUPTED, "still running when its launcher ended"
    if exit_status < 0:
        return Status.INTERRUPTED, f"killed by {signal.Signals(-exit_status).name}"
    if stopped or exit_status == SIGTERM_EXIT:
        return Status.INTERRUPTED, f"stopped (exit status {exit_status})"
    return Status.FAILED, f"exit status {exit_status}"


def _ignoring(signals: tuple[int, ...]):
    def ignore() -> None:
        for number in signals:
            signal.signal(number, signal.SIG_IGN)
    return ignore


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
