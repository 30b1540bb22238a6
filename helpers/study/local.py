"""The local launcher: a study's runs on this machine, one at a time or N at a time.

With ``parallel`` = N > 1 each run gets its own GPU (CUDA_VISIBLE_DEVICES) when GPUs are visible, else an
equal share of the CPU cores (OMP_NUM_THREADS and MKL_NUM_THREADS = cores // N). One run at a time keeps
the environment as it is (a run may use every GPU, e.g. with trainer.devices=4).

SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the study: the runs in flight are sent SIGTERM (the experiments
stop at the next batch, keeping last.ckpt of the last finished epoch), no further run starts, and the
next `study run` continues them; a second signal kills the runs in flight.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from helpers.study.execute import ExperimentProcess, Outcome, launch
from helpers.study.folder import Status
from helpers.study.spec import Run, StudyError

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """The study was stopped by a signal (its number in ``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES's entries when it is set, else torch's count."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        entries = [entry.strip() for entry in environ["CUDA_VISIBLE_DEVICES"].split(",") if entry.strip()]
        visible = []
        for entry in entries:  # CUDA stops at the first invalid entry, e.g. -1
            if entry.startswith("-"):
                break
            visible.append(entry)
        return visible
    import torch  # only here: the study itself needs no torch

    return [str(index) for index in range(torch.cuda.device_count())]


def slot_environments(parallel: int, gpus: Sequence[str], cores: int) -> list[dict[str, str]]:
    """The environment each of ``parallel`` concurrent runs gets (see the module's docstring)."""
    if parallel < 1:
        raise StudyError(f"--parallel {parallel}: give the number of runs at once, 1 or more.")
    if parallel == 1:
        return [{}]
    if gpus:
        if parallel > len(gpus):
            raise StudyError(f"--parallel {parallel} gives each run its own GPU, but {len(gpus)} GPU(s) are visible "
                             f"({', '.join(gpus)}); use --parallel {len(gpus)} or fewer.")
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus[:parallel]]
    threads = str(max(1, cores // parallel))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(parallel)]


def run_local(runs: Sequence[Run], environments: Sequence[Mapping[str, str]] = ({},)) -> list[Outcome]:
    """Launch ``runs`` in order, one per environment at a time (see :func:`slot_environments`), and return
    their outcomes in the same order. Raises :class:`Stopped` after the runs in flight have ended when a
    stop signal arrived."""
    slots: queue.Queue[Mapping[str, str]] = queue.Queue()
    for environment in environments:
        slots.put(environment)
    processes = {run.name: ExperimentProcess() for run in runs}

    def one(run: Run) -> Outcome:
        environment = slots.get()
        try:
            return launch(run, "local", environment, processes[run.name])
        except Exception as error:  # a broken run folder must not stop the other runs
            logger.exception("%s: the launcher failed", run.name)
            return Outcome(run.name, Status.FAILED, "skipped", f"launcher error: {error}")
        finally:
            slots.put(environment)

    def stop_all() -> None:
        for process in processes.values():
            process.stop()

    with stop_on_signals(stop_all) as received:
        with ThreadPoolExecutor(max_workers=len(environments), thread_name_prefix="study-run") as pool:
            futures = [pool.submit(one, run) for run in runs]
            outcomes = [future.result() for future in futures]
    if received:
        raise Stopped(received[0])
    return outcomes


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[list[int]]:
    """Within the block, each stop signal (SIGINT, SIGTERM, SIGHUP) calls ``stop``; yields the list of the
    signals received. Only the main thread can set signal handlers; elsewhere nothing is installed."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame) -> None:
        if not received:
            logger.warning("%s: stopping the runs in flight (again to kill them); no further run starts",
                           signal.Signals(signum).name)
        received.append(signum)
        stop()

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield received
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
