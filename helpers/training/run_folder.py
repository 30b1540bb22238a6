"""The run folder: where everything a run writes goes, and what the processes of a DDP run share.

A run's folder is the one its caller chose (the Sacred FileStorageObserver's with ``-F runs/``:
``runs/<id>/``; the ``run_dir`` of the Python API), else a new ``runs/<timestamp>/``. With several processes
(DDP=N, torchrun, SLURM) only global rank 0 writes there.
Lightning's DDP launcher starts the other processes by running the same command line again; rank 0 hands
them its run folder and the checkpoint it resumes from through the environment, so that they take the
same folder (to read rank 0's checkpoints) and resume from the same file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from errors import ConfigurationError
from helpers.training.trainer import CHECKPOINT_DIR, LAST_CHECKPOINT, process_rank

logger = logging.getLogger(__name__)

RUNS_DIR = Path("runs")
LAST_CHECKPOINT_FILE = f"{LAST_CHECKPOINT}.ckpt"  # checkpoints/last.ckpt, rewritten after every epoch
EVALUATIONS = "evaluations"  # <run folder>/evaluations/<checkpoint>_<timestamp>/: evaluate_only's reports
PREDICTIONS = "predictions"  # <run folder>/predictions/<checkpoint>_<timestamp>.csv: predict's CSV
RUN_DIR_VARIABLE = "FRITO_RUN_DIR"
RESUME_VARIABLE = "FRITO_RESUME_FROM"


def run_folder(chosen: Path | None = None, parent: Path = RUNS_DIR) -> Path:
    """``chosen`` (created when missing), else a new ``parent/<timestamp>`` folder.

    Processes other than rank 0 create none: they take rank 0's folder (DDP=N) or, started by another
    launcher, a name in the temporary folder; they write nothing there (checkpoints, logs and reports are
    rank 0's, and Lightning hands rank 0's checkpoint folder to every process)."""
    if process_rank() != 0:
        if os.environ.get(RUN_DIR_VARIABLE):
            return Path(os.environ[RUN_DIR_VARIABLE])
        return Path(tempfile.gettempdir()) / f"frito-rank{process_rank()}-{os.getpid()}"
    if chosen is not None:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return _new_folder(parent)


def _new_folder(parent: Path, prefix: str = "") -> Path:
    """A new folder ``parent/<prefix><timestamp>`` (numbered when that exists: nothing is overwritten)."""
    stamp = prefix + datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(100):
        folder = parent / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        logger.info("writing into %s", folder)
        return folder
    raise RuntimeError(f"could not create a new folder under {parent}")


def evaluation_folder(checkpoint: Path, chosen: Path | None = None) -> Path:
    """Where evaluate_only writes: ``chosen``, else a new folder beside the checkpoint,
    ``<its run folder>/evaluations/<checkpoint name>_<timestamp>/`` (see :func:`checkpoint_owner`)."""
    if process_rank() != 0 or chosen is not None:
        return run_folder(chosen)
    return _new_folder(checkpoint_owner(checkpoint) / EVALUATIONS, f"{checkpoint.stem}_")


def checkpoint_owner(checkpoint: Path) -> Path:
    """The folder that outputs about a checkpoint go into: its run folder when the checkpoint is in one's
    checkpoints/, else the checkpoint's own folder."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent


def new_path(parent: Path, prefix: str, suffix: str = "") -> Path:
    """``parent/<prefix><timestamp><suffix>``, numbered when that exists: a name no output has yet."""
    stamp = prefix + datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(100):
        path = parent / f"{stamp if attempt == 0 else f'{stamp}_{attempt}'}{suffix}"
        if not path.exists():
            return path
    raise RuntimeError(f"could not find a new name under {parent}")


def resume_checkpoint(resume: str | None, run_dir: Path, runs: Path = RUNS_DIR) -> Path | None:
    """The checkpoint ``resume`` names: None (a new training), "last" (the newest checkpoints/last.ckpt of
    the folder ``runs`` other than this run's), a run folder (its last.ckpt) or a .ckpt file.

    Processes started by Lightning's DDP launcher take rank 0's choice from the environment."""
    if os.environ.get(RESUME_VARIABLE) and process_rank() != 0:
        return Path(os.environ[RESUME_VARIABLE])
    if resume is None or resume == "":
        return None
    if resume == "last":
        candidates = [path for path in runs.glob(f"*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT_FILE}")
                      if path.parent.parent.resolve() != run_dir.resolve()]
        if not candidates:
            raise ConfigurationError(
                f"resume='last': no {runs}/*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT_FILE} to continue from; give the "
                f"run folder or checkpoint (resume=runs/<id>) or leave resume unset for a new training."
            )
        return max(candidates, key=lambda path: path.stat().st_mtime)
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT_DIR / LAST_CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"resume={resume!r}: {path} does not exist; give 'last', a run folder (runs/<id>) or a .ckpt file."
        )
    return path


@contextlib.contextmanager
def shared_with_child_processes(run_dir: Path, resume_path: Path | None = None) -> Iterator[None]:
    """Rank 0's run folder and resume checkpoint in the environment of the processes Lightning starts."""
    if process_rank() != 0:
        yield
        return
    shared = {RUN_DIR_VARIABLE: str(run_dir.resolve())}
    if resume_path is not None:
        shared[RESUME_VARIABLE] = str(resume_path.resolve())
    before = {name: os.environ.get(name) for name in shared}
    os.environ.update(shared)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
