"""The study folder: where a study's runs, logs and records live, and what state each run is in.

    <folder>/study.toml                      the study file as last run, verbatim
    <folder>/study.json                      the resolved study: experiment, seeds, variants, each run's command
    <folder>/.study.lock                     held (fcntl.lockf) by the `study run` working on the folder; its PID
    <folder>/runs/<variant>/seed_<s>/        a run: the FileStorageObserver's base folder
                                             (runs/<variant>/<protocol value>/seed_<s>/ with a [protocol])
        1/, 2/, ...                          Sacred's run folders, one per attempt (a continued training is a new one)
        logs/launch_<k>.log                  the console output of the k-th launch, also when Sacred made no folder
        launches.json                        every launch: command, times, host, PIDs, exit status, outcome
        .run.lock                            held (flock) while a launch of the run is alive
    <folder>/report.md, report.csv, report.png
    <folder>/submitit/                       the SLURM launcher's job files

A run is completed when its newest attempt's Sacred status is COMPLETED; running while its lock is held
(the lock is inherited by the experiment process, so it stays held as long as either lives); failed when its
last launch failed; interrupted when it has an attempt or a launch but none of these (a killed process
leaves RUNNING behind); missing otherwise. An interrupted or failed run continues from the newest
attempt's checkpoints/last.ckpt when there is one.
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers.files import atomic_write
from helpers.study.spec import Run, Study, StudyError

STUDY_LOCK = ".study.lock"
RUN_LOCK = ".run.lock"
LAUNCHES = "launches.json"
LOGS_DIR = "logs"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"  # rewritten atomically after every epoch by the experiments
SIGTERM_EXIT = 143  # the experiments stop at the next batch on SIGTERM and exit with 128 + 15
LOG_TAIL_LINES = 15


class Status(enum.Enum):
    COMPLETED = "completed"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    MISSING = "missing"


@dataclass(frozen=True)
class RunState:
    """What a run's folder says about it.

    attempts: Sacred's run folders, oldest first; resume_from: the newest attempt with a last.ckpt;
    detail: why it is in this state (exit status, Sacred status); log: the last launch's console log.
    """

    status: Status
    attempts: tuple[Path, ...] = ()
    resume_from: Path | None = None
    detail: str = ""
    log: Path | None = None
    log_tail: tuple[str, ...] = field(default=())

    @property
    def latest(self) -> Path | None:
        return self.attempts[-1] if self.attempts else None


class StudyLocked(StudyError):
    """Another `study run` holds the study folder."""


@contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """Hold the study folder for this process (fcntl.lockf: the kernel releases it when the process dies).

    StudyLocked naming the holder's PID when another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STUDY_LOCK
    with open(path, "a+") as lock:
        try:
            fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise StudyLocked(f"the study folder {folder} is in use by another `study run` ({holder}); wait for it "
                              f"to finish or stop it (kill <PID>), then run again. `study report` works meanwhile.") \
                from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"PID {os.getpid()} on {socket.gethostname()} since {now()}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.lockf(lock, fcntl.LOCK_UN)


def acquire_run_lock(run: Run, wait_s: float = 2.0) -> int | None:
    """The open, locked file descriptor of the run's lock (flock), or None while another launch holds it.

    The lock belongs to the open file, so an experiment process that inherits the descriptor keeps it held
    after the launcher ends; close the descriptor to release it (never unlock it: that would release the
    experiment's too). Waits up to ``wait_s`` (a report probing the lock holds it for an instant)."""
    run.base.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run.base / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except OSError:
            if time.monotonic() >= deadline:
                os.close(descriptor)
                return None
            time.sleep(0.1)


def is_running(base: Path) -> bool:
    """Whether a launch of the run in ``base`` holds its lock (checked with a shared lock taken for an instant)."""
    path = base / RUN_LOCK
    if not path.exists():
        return False
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(descriptor)  # releases the probe's shared lock


def attempts(base: Path) -> list[Path]:
    """Sacred's run folders in ``base`` (numbered 1, 2, ...), oldest first."""
    if not base.is_dir():
        return []
    return sorted((path for path in base.iterdir() if path.name.isdigit() and path.is_dir()),
                  key=lambda path: int(path.name))


def sacred_status(attempt: Path) -> tuple[str, str]:
    """(status, fail_trace) of a Sacred run folder; status UNREADABLE when run.json is missing or cut short."""
    try:
        entry = json.loads((attempt / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "UNREADABLE", ""
    trace = entry.get("fail_trace") or []
    return str(entry.get("status", "UNREADABLE")), "".join(trace) if isinstance(trace, list) else str(trace)


def run_state(run: Run, lock_held: bool = False) -> RunState:
    """The state of ``run`` (see the module's docstring). lock_held: the caller holds the run's lock (a
    launcher deciding what to do), so the lock does not mean that another launch runs it."""
    base = run.base
    if not lock_held and is_running(base):
        return RunState(Status.RUNNING, detail=_running_detail(base))
    found = tuple(attempts(base))
    resume_from = next((attempt for attempt in reversed(found) if (attempt / LAST_CHECKPOINT).is_file()), None)
    launches = read_launches(base)
    last = launches[-1] if launches else None
    log = base / last["log"] if last else None
    tail = tuple(log_tail(log)) if log else ()
    status, trace = sacred_status(found[-1]) if found else ("", "")
    if status == "COMPLETED":
        return RunState(Status.COMPLETED, found, resume_from, f"completed in {found[-1]}", log, tail)
    if last is not None and last.get("outcome") == Status.FAILED.value:
        return RunState(Status.FAILED, found, resume_from, last.get("detail", ""), log, tail)
    if last is None and status == "FAILED" and f"SystemExit: {SIGTERM_EXIT}" not in trace:
        # made outside the study: Sacred's record is all there is
        return RunState(Status.FAILED, found, resume_from, f"Sacred status FAILED in {found[-1]}", None,
                        tuple(trace.strip().splitlines()[-LOG_TAIL_LINES:]))
    if found or launches:
        where = f"; continues from {resume_from}" if resume_from else "; no checkpoint yet, starts again"
        what = (last.get("detail") if last and last.get("detail") else
                f"Sacred status {status} in {found[-1]}" if found else "stopped before Sacred made a run folder")
        return RunState(Status.INTERRUPTED, found, resume_from, what + where, log, tail)
    return RunState(Status.MISSING)


def read_launches(base: Path) -> list[dict[str, Any]]:
    """The run's launch records, oldest first (empty when it was never launched by a study)."""
    path = base / LAUNCHES
    if not path.is_file():
        return []
    try:
        launches = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StudyError(f"{path} is not valid JSON ({error}); it is written whole by `study run`: restore or "
                         f"delete it (the run's attempts stay valid).") from None
    return launches if isinstance(launches, list) else []


def start_launch(run: Run, command: list[str], launcher: str, resumed_from: Path | None) -> dict[str, Any]:
    """Record a new launch of ``run`` (before its process starts) and return the record; its log file is
    ``run.base / record["log"]``. Only the holder of the run's lock calls this."""
    launches = read_launches(run.base)
    number = len(launches) + 1
    record = {
        "number": number,
        "command": command,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "launcher": launcher,
        "host": socket.gethostname(),
        "launcher_pid": os.getpid(),
        "experiment_pid": None,
        "started": now(),
        "ended": None,
        "exit_status": None,
        "outcome": None,
        "detail": "",
        "log": f"{LOGS_DIR}/launch_{number}.log",
    }
    (run.base / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    _write_launches(run.base, [*launches, record])
    return record


def update_launch(run: Run, record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Change fields of a launch record (e.g. experiment_pid, then outcome and exit status) and save it."""
    record.update(changes)
    launches = read_launches(run.base)
    launches = [record if entry.get("number") == record["number"] else entry for entry in launches]
    _write_launches(run.base, launches)
    return record


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of a log (progress bars' carriage returns resolved)."""
    if path is None or not path.is_file():
        return []
    with open(path, "rb") as stream:
        stream.seek(max(0, path.stat().st_size - 64 * 1024))
        text = stream.read().decode(errors="replace")
    rows = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    return [row for row in rows if row.strip()][-lines:]


def record_study(study: Study) -> None:
    """Write study.toml and study.json into the study folder, first refusing a study whose runs that were
    made already would now be another training (another experiment, a changed variant or ``with``)."""
    folder = study.folder
    recorded = read_recorded_study(folder)
    before = {_key(entry): entry["command"] for entry in recorded.get("runs", [])}
    for run in study.runs():
        old = before.get((run.variant, run.label, run.seed))
        if (old is not None and _what_runs(old) != _what_runs(run.command)
                and (attempts(run.base) or read_launches(run.base))):
            raise StudyError(
                f"{run.name} was run with other settings than the study file now gives:\n  before: {' '.join(old)}\n"
                f"  now:    {' '.join(run.command)}\nits runs would mix the two; give the changed variant a new "
                f"name, or use another study folder (--folder or folder = ...)."
            )
    folder.mkdir(parents=True, exist_ok=True)
    resolved = {
        "study_file": str(study.path.resolve()),
        "recorded": now(),
        "experiment": str(study.experiment),
        "python": study.python,
        "cwd": str(study.cwd),
        "seeds": list(study.seeds),
        "with": list(study.settings),
        "variants": {name: list(settings) for name, settings in study.variants.items()},
        "baseline": study.baseline,
        "slurm": study.slurm,
        "protocol": None if study.protocol is None else {
            "key": study.protocol.kind.key, "values": [value.value for value in study.protocol.values],
            "training_domains": list(study.protocol.training_domains)},
        "runs": [{"variant": run.variant, **({"protocol": run.label} if run.label else {}), "seed": run.seed,
                  "folder": str(run.base), "command": list(run.command)} for run in study.runs()],
    }
    # Runs of earlier versions of the file (a variant, protocol value or seed dropped since) stay recorded.
    current = {(run.variant, run.label, run.seed) for run in study.runs()}
    resolved["runs"] += [entry for entry in recorded.get("runs", []) if _key(entry) not in current]
    atomic_write(folder / "study.toml", lambda stream: stream.write(study.source.encode()))
    atomic_write(folder / "study.json", lambda stream: stream.write(json.dumps(resolved, indent=2).encode()))


def read_recorded_study(folder: Path) -> dict[str, Any]:
    path = folder / "study.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StudyError(f"{path} is not valid JSON ({error}); delete it, `study run` writes it anew.") from None


def _key(entry: Mapping[str, Any]) -> tuple[str, str | None, int]:
    """A recorded run's (variant, protocol value's folder name or None, seed)."""
    return entry["variant"], entry.get("protocol"), entry["seed"]


def _what_runs(command) -> tuple[str, list[str]]:
    """The experiment's file name and the settings of a run's command line: what makes two runs the same
    training (the interpreter's and the folders' paths may change, e.g. in another virtual environment)."""
    command = list(command)
    return Path(command[1]).name, command[command.index("with") + 1:]


def _running_detail(base: Path) -> str:
    launches = read_launches(base)
    if not launches:
        return "a launch holds the run's lock"
    last = launches[-1]
    return (f"launch {last['number']} on {last.get('host')} (launcher PID {last.get('launcher_pid')}, "
            f"experiment PID {last.get('experiment_pid')}) since {last.get('started')}")


def _write_launches(base: Path, launches: list[Mapping[str, Any]]) -> None:
    atomic_write(base / LAUNCHES, lambda stream: stream.write(json.dumps(launches, indent=2).encode()))


def now() -> str:
    """The local time, as launch records and the study lock give it."""
    return datetime.now().astimezone().isoformat(timespec="seconds")
