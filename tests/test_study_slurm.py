"""The SLURM launcher's tasks through submitit's local executor (AutoExecutor(cluster="local")): the same
array submission, Checkpointable tasks and requeueing as on a cluster, on this machine. A preemption is
what SLURM does before a job's end: the signal submitit asks for (USR2) to the task and its processes."""

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.study.execute import ExperimentProcess
from helpers.study.slurm import RunTask
from helpers.study.spec import load_study

REPO = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_study_experiment.py"

pytestmark = pytest.mark.slow


def write_study(folder: Path, settings: list[str], seeds=(1,)) -> Path:
    path = folder / "grid.toml"
    path.write_text(f'experiment = "{FAKE}"\nseeds = {list(seeds)}\nwith = {json.dumps(settings)}\n'
                    f'[variants]\nbaseline = []\nbroken = ["fail=True"]\n[slurm]\ntime = 10\n')
    return path


def launches(base: Path) -> list[dict]:
    path = base / "launches.json"
    return json.loads(path.read_text()) if path.exists() else []


def test_submitit_local_runs_the_array_and_reports_failures(tmp_path):
    path = write_study(tmp_path, ["n_epochs=2"], seeds=(1, 2))
    result = subprocess.run([sys.executable, str(REPO / "study.py"), "run", str(path), "--launcher", "submitit-local"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 launched: 2 completed, 2 failed" in result.stdout
    assert "RuntimeError: the fake experiment fails on purpose" in result.stdout
    runs = tmp_path / "studies" / "grid" / "runs"
    for seed in (1, 2):
        (launch,) = launches(runs / "baseline" / f"seed_{seed}")
        assert launch["launcher"].startswith("submitit job ") and launch["outcome"] == "completed"
    assert list((tmp_path / "studies" / "grid" / "submitit").glob("*_submitted.pkl"))


def test_a_preempted_task_stops_its_experiment_requeues_and_continues_from_last_checkpoint(tmp_path):
    path = write_study(tmp_path, ["n_epochs=5", "epoch_seconds=0.6"])
    base = tmp_path / "studies" / "grid" / "runs" / "baseline" / "seed_1"
    study = subprocess.Popen([sys.executable, str(REPO / "study.py"), "run", str(path), "--launcher", "submitit-local"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (base / "1" / "checkpoints" / "last.ckpt").exists() or not launches(base)[0]["experiment_pid"]:
        assert time.monotonic() < deadline and study.poll() is None
        time.sleep(0.05)
    first = launches(base)[0]
    for pid in (first["experiment_pid"], first["launcher_pid"]):  # SLURM signals the task's processes
        subprocess.run(["kill", "-USR2", str(pid)], check=True)
    output, _ = study.communicate(timeout=120)
    assert study.returncode == 1, output  # broken fails, baseline completes
    first, second = launches(base)
    assert (first["outcome"], first["exit_status"]) == ("interrupted", 143)  # SIGTERM: stopped at the next batch
    assert first["launcher"] == second["launcher"]  # the same job, requeued
    assert second["resumed_from"] == str(base / "1") and second["outcome"] == "completed"
    stopped_after = json.loads((base / "1" / "metrics.json").read_text())["val/acc"]["steps"][-1]
    continued = json.loads((base / "2" / "metrics.json").read_text())["val/acc"]["steps"]
    assert continued == list(range(stopped_after + 1, 5))  # only the epoch in flight is repeated
    resumed_from = json.loads((base / "2" / "info.json").read_text())["resumed_from"]
    assert resumed_from == str(base / "1" / "checkpoints" / "last.ckpt")


def test_a_task_pickles_without_its_process_and_requeues_as_requeued(tmp_path):
    task = RunTask(load_study(write_study(tmp_path, ["n_epochs=1"]), cwd=tmp_path).run("baseline", 1))
    task._process = ExperimentProcess()  # holds a lock, which does not pickle
    copy = pickle.loads(pickle.dumps(task))
    assert copy.run == task.run and copy._process is None and not copy.requeued
    delayed = copy.checkpoint()  # no experiment started: nothing to stop
    assert delayed.function.requeued and delayed.function.run == task.run
