"""`study.py run` and `study.py report` as users run them, in a subprocess, on the fake experiment
(tests/fake_study_experiment.py: a Sacred experiment that leaves a training's files in a fraction of a
second per epoch, stops at the next batch on SIGTERM with status 143, and continues with resume=)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_study_experiment.py"

pytestmark = pytest.mark.slow


def write_study(folder: Path, variants: str, seeds=(1,), settings=("n_epochs=3",), name="grid") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'experiment = "{FAKE}"\nseeds = {list(seeds)}\nwith = {json.dumps(list(settings))}\n'
                    f'[variants]\n{variants}')
    return path


def study(*arguments, cwd: Path, env=None, check: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / "study.py"), *map(str, arguments)], cwd=cwd,
                            capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})})
    if check is not None:
        assert result.returncode == check, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def start_study(*arguments, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "study.py"), *map(str, arguments)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float = 60.0) -> None:
    """Wait until ``condition()`` holds; a file read half-written by its writer (Sacred rewrites run.json in
    place) counts as not yet."""
    deadline = time.monotonic() + timeout
    while not _holds(condition):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _holds(condition) -> bool:
    try:
        return bool(condition())
    except (json.JSONDecodeError, FileNotFoundError):
        return False


def launches(base: Path) -> list[dict]:
    return json.loads((base / "launches.json").read_text())


def run_json(attempt: Path) -> dict:
    return json.loads((attempt / "run.json").read_text())


def epochs_logged(attempt: Path) -> list[int]:
    return json.loads((attempt / "metrics.json").read_text())["val/acc"]["steps"]


def checkpoint_epoch(attempt: Path) -> int:
    path = attempt / "checkpoints" / "last.ckpt"
    return json.loads(path.read_text())["epoch"] if path.exists() else -1


def test_run_skips_completed_runs_retries_failed_ones_and_reports(tmp_path):
    path = write_study(tmp_path, 'baseline = []\nbetter = ["better"]\nbroken = ["fail=True"]\ntypo = ["n_epochz=2"]\n',
                       seeds=(1, 2))
    first = study("run", path, cwd=tmp_path, check=1)
    runs = tmp_path / "studies" / "grid" / "runs"
    for variant in ("baseline", "better"):
        for seed in (1, 2):
            assert run_json(runs / variant / f"seed_{seed}" / "1")["status"] == "COMPLETED"
            assert (runs / variant / f"seed_{seed}" / "1" / "results.json").is_file()
    # the config error leaves no Sacred run folder, but a log naming the bad key
    typo = runs / "typo" / "seed_1"
    assert not (typo / "1").exists()
    assert "n_epochz" in (typo / "logs" / "launch_1.log").read_text()
    assert f"FAILED typo/seed_1: exit status 1 (log: {typo / 'logs' / 'launch_1.log'})" in first.stdout
    assert "RuntimeError: the fake experiment fails on purpose" in first.stdout  # broken's last log lines
    assert "4 completed, 4 failed" in first.stdout
    # where to follow each run while it trains
    assert f"started baseline/seed_1; live log: {runs / 'baseline' / 'seed_1' / 'logs' / 'launch_1.log'}" in (
        first.stdout + first.stderr)
    recorded = json.loads((tmp_path / "studies" / "grid" / "study.json").read_text())
    assert (tmp_path / "studies" / "grid" / "study.toml").read_text() == path.read_text()
    assert {(run["variant"], run["seed"]): run["command"][-1] for run in recorded["runs"]}[("better", 2)] == "seed=2"

    second = study("run", path, cwd=tmp_path, check=1)
    assert "skipped: 4 completed" in second.stdout
    for variant in ("baseline", "better"):
        assert len(launches(runs / variant / "seed_1")) == 1  # not launched again
        assert not (runs / variant / "seed_1" / "2").exists()
    broken = launches(runs / "broken" / "seed_1")
    assert len(broken) == 2 and broken[1]["resumed_from"] == str(runs / "broken" / "seed_1" / "1")
    assert broken[1]["command"][-1] == f"resume={runs / 'broken' / 'seed_1' / '1'}"
    assert len(launches(typo)) == 2 and (typo / "logs" / "launch_2.log").is_file()

    report = study("report", path, "--resamples", "500", cwd=tmp_path)
    assert "| better | 2 | 0.800 ± 0.000 |" in report.stdout
    assert "- broken seed 1: failed: exit status 1" in report.stdout
    for name in ("report.md", "report.csv", "report.png"):
        assert (tmp_path / "studies" / "grid" / name).is_file()


def test_a_killed_study_continues_each_run_from_its_last_checkpoint(tmp_path):
    path = write_study(tmp_path, "baseline = []\n", settings=("n_epochs=5", "epoch_seconds=0.6"))
    base = tmp_path / "studies" / "grid" / "runs" / "baseline" / "seed_1"
    first = start_study("run", path, cwd=tmp_path)
    wait_for(lambda: checkpoint_epoch(base / "1") >= 1)
    experiment = launches(base)[0]["experiment_pid"]
    first.kill()  # SIGKILL: no clean-up at all, for the study and (below) its run
    first.wait()
    os.kill(experiment, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{experiment}").exists() or "Z" in Path(f"/proc/{experiment}/stat").read_text()
             .split()[2])
    assert run_json(base / "1")["status"] == "RUNNING"
    finished = checkpoint_epoch(base / "1")

    second = study("run", path, cwd=tmp_path)
    assert "baseline/seed_1: interrupted; continue" in second.stdout
    info = json.loads((base / "2" / "info.json").read_text())
    assert info["resumed_from"] == str(base / "1" / "checkpoints" / "last.ckpt")
    assert epochs_logged(base / "2") == list(range(finished + 1, 5))  # only the epochs in flight are repeated
    assert run_json(base / "2")["status"] == "COMPLETED"
    assert launches(base)[0]["outcome"] is None  # the killed launcher never settled its record


def test_ctrl_c_stops_the_runs_at_the_next_batch_and_the_next_run_continues_them(tmp_path):
    path = write_study(tmp_path, "baseline = []\nother = []\n",
                       settings=("n_epochs=4", "epoch_seconds=0.6"))
    runs = tmp_path / "studies" / "grid" / "runs"
    first = start_study("run", path, "--parallel", "2", cwd=tmp_path)
    wait_for(lambda: all(checkpoint_epoch(runs / name / "seed_1" / "1") >= 0 for name in ("baseline", "other")))
    first.send_signal(signal.SIGINT)
    output, _ = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGINT, output
    assert "stopped by SIGINT" in output
    for name in ("baseline", "other"):
        (launch,) = launches(runs / name / "seed_1")
        assert (launch["outcome"], launch["exit_status"]) == ("interrupted", 143)
        assert "stopped by SIGTERM" in (runs / name / "seed_1" / "logs" / "launch_1.log").read_text()
    again = study("run", path, cwd=tmp_path)
    assert "2 interrupted" in again.stdout and "2 completed" in again.stdout
    for name in ("baseline", "other"):
        assert run_json(runs / name / "seed_1" / "2")["status"] == "COMPLETED"


def test_a_second_study_run_refuses_and_a_killed_ones_lock_does_not_block(tmp_path):
    path = write_study(tmp_path, "baseline = []\n", settings=("n_epochs=20", "epoch_seconds=0.5"))
    first = start_study("run", path, cwd=tmp_path)
    wait_for(lambda: (tmp_path / "studies" / "grid" / "runs" / "baseline" / "seed_1" / "launches.json").exists())
    second = study("run", path, cwd=tmp_path, check=1)
    assert f"in use by another `study run` (PID {first.pid} on" in second.stderr
    first.kill()
    first.wait()
    base = tmp_path / "studies" / "grid" / "runs" / "baseline" / "seed_1"
    third = study("run", path, "--dry-run", cwd=tmp_path)  # the orphaned run still trains and holds its lock
    assert "baseline/seed_1: running (launch 1" in third.stdout
    os.kill(launches(base)[0]["experiment_pid"], signal.SIGTERM)
    wait_for(lambda: run_json(base / "1")["status"] != "RUNNING")
    fourth = study("run", path, "--dry-run", cwd=tmp_path)
    assert "baseline/seed_1: interrupted; continue" in fourth.stdout


def test_parallel_runs_share_the_cpu_cores(tmp_path):
    path = write_study(tmp_path, "baseline = []\nother = []\n", settings=("n_epochs=1",))
    study("run", path, "--parallel", "2", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    for name in ("baseline", "other"):
        info = json.loads((tmp_path / "studies" / "grid" / "runs" / name / "seed_1" / "1" / "info.json").read_text())
        assert info["environment"] == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads,
                                       "MKL_NUM_THREADS": threads}


def test_changed_settings_of_a_variant_with_runs_are_refused(tmp_path):
    path = write_study(tmp_path, "baseline = []\n", settings=("n_epochs=1",))
    study("run", path, cwd=tmp_path)
    write_study(tmp_path, 'baseline = ["better"]\n', settings=("n_epochs=1",))
    changed = study("run", path, cwd=tmp_path, check=1)
    assert "baseline/seed_1 was run with other settings" in changed.stderr
    write_study(tmp_path, 'baseline = []\nbetter = ["better"]\n', seeds=(1, 2), settings=("n_epochs=1",))
    study("run", path, cwd=tmp_path)  # a new variant and a new seed are fine


def test_dry_run_changes_nothing(tmp_path):
    path = write_study(tmp_path, "baseline = []\n")
    result = study("run", path, "--dry-run", cwd=tmp_path)
    assert "baseline/seed_1: missing; start" in result.stdout
    assert f"{FAKE} -F {tmp_path / 'studies' / 'grid' / 'runs' / 'baseline' / 'seed_1'} with n_epochs=3 seed=1" \
        in result.stdout
    assert not (tmp_path / "studies").exists()


def test_errors_are_one_line_with_the_fix(tmp_path):
    path = write_study(tmp_path, "baseline = []\n")
    result = study("run", path, "--launcher", "slurm", cwd=tmp_path, check=1)
    assert result.stderr.startswith("study.py: ") and "time limit" in result.stderr
    result = study("run", tmp_path / "absent.toml", cwd=tmp_path, check=1)
    assert "cannot read the study file" in result.stderr
