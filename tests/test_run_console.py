"""What a run prints and writes, on a terminal and into a file, with and without -F, as a user types it.

A terminal is a pseudo-terminal with a width (os.openpty). The trainings are a few short epochs on the demo data.
"""

import csv
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
SHORT = ["cpu_tiny", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0",
         "seed=3"]
RECORD = {"config.json", "run.json", "metrics.json", "cout.txt"}  # Sacred's files, in every run folder
PROGRESS_LINE = r"epoch 1/3: training batch 2/6, \d+\.\d\d batches/s, \d+:\d\d:\d\d left"

pytestmark = pytest.mark.slow


def on_a_terminal(arguments: list[str], cwd: Path, env: dict) -> tuple[int, str]:
    """(exit status, everything shown) of a command line whose output is a 24 x 100 terminal."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(arguments, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    shown = bytearray()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 1.0)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=30), shown.decode(errors="replace")


def environment(cache_dir: Path) -> dict:
    inherited = {name: value for name, value in os.environ.items() if name not in ("DDP", "FRITO_CONSOLE")}
    return {**inherited, "FRITO_CACHE_DIR": str(cache_dir)}


def test_a_terminal_shows_the_progress_bar_and_the_run_folder_keeps_its_record_without_F(tmp_path, cache_dir):
    status, shown = on_a_terminal([sys.executable, str(REPO / "ex_nsynth.py"), "with", *SHORT, "trainer.max_epochs=2",
                                   "trainer.use_tensorboard_logger=True", "-p"], tmp_path, environment(cache_dir))
    assert status == 0, shown[-3000:]
    # Lightning's bar, its epochs numbered as every other output numbers them
    assert re.search(r"epoch 1/2: +\d+%\|.*\| \d/6 \[", shown) and re.search(r"epoch 2/2: 100%\|.*\| 6/6 \[", shown)
    assert "Epoch 0" not in shown and "Epoch 1" not in shown
    assert "test split, epoch 2 (last):" in shown
    run_dir = tmp_path / "runs" / "1"  # without -F: runs/ as -F runs/ makes it
    assert RECORD <= {path.name for path in run_dir.iterdir()}
    # -p coloured the terminal; the run's console record is plain text
    assert "\x1b[" in shown
    cout = (run_dir / "cout.txt").read_text()
    assert "\x1b" not in cout and "epoch 2/2: 100%" in cout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert metrics["val/acc"]["steps"] == [1, 2] and results["last_epoch"] == 2
    assert results["selected_epoch"] == 1 + int(np.argmax(metrics["val/acc"]["values"]))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("val/acc")] == [1, 2]  # TensorBoard's x-axis: the epoch
    title = Image.open(run_dir / "test_last_net_domains.png").text["Title"]
    test = results["test"]["net"]["last"]
    assert title.startswith("Test accuracy per instrument source and class: net, epoch 2 (last)")
    assert (f"in-domain sources {test['acc_seen']:.3f}, out-of-domain sources {test['acc_unseen']:.3f}"
            in title)


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory, cache_dir, frito):
    """A training into a file (loader workers, progress lines) stopped by SIGTERM to its whole process group in
    its second epoch, then resumed: (folder, the stopped run's output, exit status, seconds to stop, resumed run)."""
    folder = tmp_path_factory.mktemp("sigterm")
    log = folder / "console.txt"
    arguments = [sys.executable, str(REPO / "ex_nsynth.py"), "with", *SHORT, "trainer.max_epochs=3", "num_workers=2",
                 "progress_every_batches=2"]
    with open(log, "w") as output:
        training = subprocess.Popen(arguments, cwd=folder, env=environment(cache_dir), stdout=output,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while "epoch 2/3: training batch 2/6" not in log.read_text():
        assert training.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    os.killpg(training.pid, signal.SIGTERM)  # what timeout, SLURM and some shells' Ctrl-C do
    signalled = time.monotonic()
    status = training.wait(timeout=120)
    seconds = time.monotonic() - signalled
    resumed = frito("ex_nsynth.py", "with", *SHORT, "trainer.max_epochs=3", "resume=runs/1", cwd=folder)
    return folder, log.read_text(), status, seconds, resumed


def test_sigterm_to_the_process_group_stops_cleanly_and_the_training_resumes(stopped_and_resumed):
    folder, stopped, status, seconds, resumed = stopped_and_resumed
    assert status == 128 + signal.SIGTERM and seconds < 30, stopped[-3000:]
    assert "stopped by SIGTERM; continue with resume=runs/1" in stopped
    assert "DataLoader worker" not in stopped and "Traceback" not in stopped
    # a file gets progress lines: batch, rate, time left; and one line per epoch
    assert re.search(PROGRESS_LINE, stopped)
    assert re.search(r"epoch 1/3 \(\d+:\d\d:\d\d, about \d+:\d\d:\d\d left\): train/loss \d", stopped)
    assert "\x1b" not in stopped and "it/s]" not in stopped
    # the resumed training: its own record, the epochs it trained numbered as before, no Lightning warning
    output = resumed.stdout + resumed.stderr
    assert "dirpath has changed" not in output and "training finished" in output
    run_dir = folder / "runs" / "2"
    assert RECORD <= {path.name for path in run_dir.iterdir()}
    assert json.loads((run_dir / "metrics.json").read_text())["val/acc"]["steps"] == [2, 3]
    assert json.loads((run_dir / "results.json").read_text())["last_epoch"] == 3


def test_evaluate_only_predict_and_plot_write_beside_their_input_and_never_over_an_output(stopped_and_resumed,
                                                                                         tmp_path, frito):
    folder = stopped_and_resumed[0]
    run_dir = folder / "runs" / "2"
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    evaluation = frito("ex_nsynth.py", "evaluate_only", "with", f"checkpoint={checkpoint}",
                       "trainer.limit_val_batches=2", cwd=folder)
    assert "Validate metric" not in evaluation.stdout  # Lightning's table; frito's summary follows
    assert f"nsynth: evaluation of {checkpoint}" in evaluation.stdout
    (evaluated,) = (path for path in (run_dir / "evaluations").iterdir() if path.name != "_sources")  # Sacred's
    assert evaluated.name.startswith("best_") and RECORD <= {path.name for path in evaluated.iterdir()}

    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "tone.wav", np.sin(np.arange(32000) * 0.05).astype(np.float32), 32000)
    (audio / "broken.wav").write_bytes(b"RIFF not really audio")
    for _ in range(2):
        predicted = frito("ex_nsynth.py", "predict", "with", f"checkpoint={checkpoint}", f"files={audio}",
                          cwd=tmp_path)
        assert "1 files classified, 1 skipped (listed with the reason); probabilities in" in predicted.stdout
    first, second = sorted((run_dir / "predictions").iterdir())  # the second run kept the first's CSV
    assert first.name.startswith("best_") and first.suffix == ".csv" and first.read_bytes() == second.read_bytes()
    rows = list(csv.DictReader(first.open()))
    assert [row["file"].rsplit("/", 1)[1] for row in rows] == ["tone.wav", "broken.wav"]
    assert rows[0]["skipped"] == "" and "not readable as audio" in rows[1]["skipped"]

    plot = ["plot_attention_mask", "with", "models.net.rf_norm_t=per_row_3"]
    frito("ex_nsynth.py", *plot, cwd=tmp_path)
    picture = tmp_path / "attention_mask_per_row_3.png"
    drawn = picture.read_bytes()
    again = frito("ex_nsynth.py", *plot, cwd=tmp_path, check=False)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert f"{picture.name} exists; give plot_path=OTHER.png, or remove it to draw it again" in again.stderr
    assert picture.read_bytes() == drawn
    assert not (tmp_path / "runs").exists()  # neither predict nor plot_attention_mask made a run folder
