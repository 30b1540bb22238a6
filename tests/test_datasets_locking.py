"""Preparation shared between processes: one builds, others wait; a killed preparation leaves no worker, no lock
held and no half-built file behind; the prepare command reports bad data without a traceback."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from datasets import locking
from datasets.cache import open_cache
from datasets.folder import DEFAULTS, Data
from datasets.prepare import main as prepare_main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")

N_FILES = 120
DECODE_PAUSE = 0.05  # seconds each decoding takes in the killed run: 120 files on 2 workers, about 3 s


def _python(code: str, *args: str, stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.Popen:
    """A Python process running `code` from the repository (stdout readable line by line by default)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, stdout=stdout, stderr=stderr, text=True
    )


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (an ended process nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.02)


@pytest.fixture
def tone_folder(tmp_path):
    """N_FILES short tones with a CSV (two labels, train and test rows)."""
    folder = tmp_path / "tones"
    folder.mkdir()
    rows = ["filename,label,split"]
    for i in range(N_FILES):
        t = np.arange(800) / 16000
        soundfile.write(folder / f"{i:03d}.wav", 0.2 * np.sin(2 * np.pi * (300 + i) * t), 16000, subtype="PCM_16")
        rows.append(f"{i:03d}.wav,{'low' if i % 2 else 'high'},{'test' if i % 5 == 0 else 'train'}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_a_killed_preparation_leaves_no_worker_and_the_next_one_prepares(tone_folder, tmp_path):
    cache_dir = tmp_path / "cache"
    log = tmp_path / "killed.log"  # a file, not a pipe: a surviving worker would keep a pipe open
    killed = _python(
        f"""
        import sys, time
        import datasets.audio
        real_load = datasets.audio.load_audio
        def slow_load(*args, **kwargs):
            time.sleep({DECODE_PAUSE})
            return real_load(*args, **kwargs)
        datasets.audio.load_audio = slow_load  # the forked workers decode with it
        from datasets.folder import DEFAULTS, Data
        Data(**{{**DEFAULTS, "base_dir": sys.argv[1], "cache_dir": sys.argv[2], "prepare_workers": 2}}).prepare()
        """,
        str(tone_folder),
        str(cache_dir),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    workers = []
    try:
        _wait_until(
            lambda: len(_children(killed.pid)) >= 2 and any(cache_dir.rglob("*.partial")) or killed.poll() is not None,
            timeout=60,
            what="the preparation's two workers decode",
        )
        assert killed.poll() is None, log.read_text()[-3000:]
        workers = _children(killed.pid)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        _wait_until(lambda: not any(_running(pid) for pid in workers), timeout=2, what=f"the workers {workers} end")
    finally:
        for pid in [killed.pid, *workers]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        killed.wait(timeout=10)
    assert any(cache_dir.rglob("*.partial")) and any(cache_dir.rglob("*.lock"))  # what the kill left behind

    start = time.monotonic()
    data = Data(**{**DEFAULTS, "base_dir": tone_folder, "cache_dir": cache_dir, "prepare_workers": 0})
    data.prepare()
    assert time.monotonic() - start < 30
    assert sum(len(open_cache(path)) for path in data.cache_files().values()) == N_FILES
    assert not any(cache_dir.rglob("*.partial")) and not any(cache_dir.rglob("*.lock"))


PREPARE = f"""
    import logging, sys, time
    import datasets.audio
    logging.basicConfig(level=logging.INFO)
    real_load = datasets.audio.load_audio
    def slow_load(*args, **kwargs):
        time.sleep({DECODE_PAUSE})
        return real_load(*args, **kwargs)
    datasets.audio.load_audio = slow_load
    from datasets.folder import DEFAULTS, Data
    data = Data(**{{**DEFAULTS, "base_dir": sys.argv[1], "cache_dir": sys.argv[2], "prepare_workers": 2}})
    print(sum(len(names) for names in data.roles().values()))
"""


def test_two_runs_preparing_the_same_data_decode_it_once(tone_folder, tmp_path):
    runs = [_python(PREPARE, str(tone_folder), str(tmp_path / "cache")) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert [out for out, _ in outputs] == [f"{N_FILES}\n"] * 2  # both read every file from the one cache
    builders = [i for i, (_, err) in enumerate(outputs) if "Preparing folder split 'all'" in err]
    assert len(builders) == 1
    waiter = 1 - builders[0]
    assert outputs[waiter][1].count("Waiting for process") == 1
    assert f"Waiting for process {runs[builders[0]].pid} on " in outputs[waiter][1]
    assert len(list((tmp_path / "cache" / "folder").iterdir())) == 1  # the cache; no lock, no partial file


HOLDER = """
    import sys, time
    from pathlib import Path
    from datasets import locking
    with locking.exclusive(Path(sys.argv[1]), "preparing the test cache"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
"""


def test_a_waiting_process_says_once_which_process_it_waits_for(tmp_path, caplog):
    lock_path = tmp_path / "cache.h5.lock"
    holder = _python(HOLDER, str(lock_path), "1.5")
    try:
        assert holder.stdout.readline() == "held\n"
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger="datasets.locking"):
            with locking.exclusive(lock_path, "preparing the test cache"):
                waited = time.monotonic() - start
                assert lock_path.read_text().split()[0] == str(os.getpid())
    finally:
        holder.communicate(timeout=30)
    assert holder.returncode == 0 and waited > 0.5
    messages = [record.getMessage() for record in caplog.records if "Waiting" in record.getMessage()]
    assert len(messages) == 1 and caplog.records[0].levelno == logging.WARNING
    assert f"Waiting for process {holder.pid} on " in messages[0] and str(lock_path) in messages[0]
    assert "which is preparing the test cache" in messages[0]
    assert not lock_path.exists()


def test_the_lock_of_a_killed_holder_is_free_at_once_and_its_children_never_hold_it(tmp_path, caplog):
    lock_path = tmp_path / "cache.h5.lock"
    holder = _python(
        """
        import os, sys, time
        from pathlib import Path
        from datasets import locking
        with locking.exclusive(Path(sys.argv[1]), "testing"):
            child = os.fork()
            if child == 0:  # inherits the open lock file, as a decoding worker does
                time.sleep(60)
                os._exit(0)
            print(child, flush=True)
            time.sleep(60)
        """,
        str(lock_path),
    )
    child = int(holder.stdout.readline())
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert _running(child)
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger="datasets.locking"), locking.exclusive(lock_path, "testing"):
            assert time.monotonic() - start < 1.0
        assert not [record for record in caplog.records if "Waiting" in record.getMessage()]
    finally:
        os.kill(child, signal.SIGKILL)
        holder.communicate()


def test_prepare_command_reports_bad_data_without_a_traceback(tmp_path):
    missing = tmp_path / "nowhere"
    command = [sys.executable, "-m", "datasets.prepare", "folder", "--base-dir", str(missing)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: basedataset.base_dir={str(missing)!r} does not exist" in result.stderr
    from datasets.metadata import LayoutError

    with pytest.raises(LayoutError, match="does not exist"):
        prepare_main(["folder", "--base-dir", str(missing), "--debug"])
