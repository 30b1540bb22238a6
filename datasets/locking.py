"""One process at a time builds a shared file (a cache, the demo data); the others wait, then read it.

The lock is a POSIX record lock (fcntl.lockf) on a small lock file beside what is built. Such a lock
belongs to the process that took it: children forked while it is held (decoding workers) do not hold
it, and the kernel releases it when its holder ends, SIGKILL included, so a waiter never waits on a
dead process. The holder writes "<pid> <host>" into the lock file, which a waiter names in the one
line it logs, and removes the lock file when done. Threads of one process share the process's locks,
so this serialises processes, not threads.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

HOLDER_READ_TRIES = 10  # a waiter gives a new holder this many HOLDER_READ_PAUSE to write its PID
HOLDER_READ_PAUSE = 0.05  # seconds


@contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold the lock `lock_path` for the duration of the block, waiting for another process that holds it.

    what: what the holder is doing, for the waiting message (e.g. "preparing the nsynth nsynth-train cache").
    A wait is logged once, at WARNING, with the lock file and the holder's PID and host when known.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock_path, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        try:
            lock_path.unlink(missing_ok=True)  # still held: nobody can have locked the file in the meantime
        finally:
            os.close(fd)  # closing releases the lock


def _acquire(lock_path: Path, what: str) -> int:
    """An open descriptor of `lock_path` on which this process holds the lock."""
    announced = False
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            locked = _try_lock(fd)
            if not locked and not announced:
                locked = _announce_wait(fd, lock_path, what)
                announced = not locked
            if not locked:
                fcntl.lockf(fd, fcntl.LOCK_EX)
            if _is_current(fd, lock_path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed this file when it finished: lock the one now at lock_path


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def _is_current(fd: int, lock_path: Path) -> bool:
    """Whether `fd` is still the file at `lock_path` (not one a finished holder removed)."""
    try:
        on_disk = os.stat(lock_path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _announce_wait(fd: int, lock_path: Path, what: str) -> bool:
    """Log that this process waits, naming the holder written in the lock file (a holder that has just taken
    the lock is given a moment to write itself there). True when the lock came free meanwhile (nothing logged)."""
    found = None
    for _ in range(HOLDER_READ_TRIES):
        found = _parse(os.pread(fd, 256, 0))
        if found is not None:
            break
        time.sleep(HOLDER_READ_PAUSE)
        if _try_lock(fd):
            return True
    who = f"process {found[0]} on {found[1]}" if found else "another process"
    logger.warning(
        "Waiting for %s, which is %s (lock file %s); this run continues when it is done.", who, what, lock_path
    )
    return False


def _parse(content: bytes) -> tuple[int, str] | None:
    fields = content.decode(errors="replace").split()
    if len(fields) != 2 or not fields[0].isdigit():
        return None
    return int(fields[0]), fields[1]
