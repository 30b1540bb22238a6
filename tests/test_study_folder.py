"""The study folder: each run's state from the files a training and the launcher leave, and the record of
the study that keeps a variant's seeds one configuration."""

import dataclasses
import json
from pathlib import Path

import pytest

from helpers.study.folder import Status, read_recorded_study, record_study, run_state
from helpers.study.spec import StudyError, load_study

FAKE = Path(__file__).resolve().parent / "fake_study_experiment.py"


def make_study(tmp_path, variants="baseline = []\nother = ['accuracy=0.7']\n"):
    path = tmp_path / "grid.toml"
    path.write_text(f'experiment = "{FAKE}"\nseeds = [1]\nwith = ["n_epochs=2"]\n[variants]\n{variants}')
    return load_study(path, folder=tmp_path / "study", cwd=tmp_path)


def attempt(base: Path, number: int, status: str, checkpoint: bool = False, trace: str = "") -> Path:
    folder = base / str(number)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": status, "fail_trace": [trace] if trace else None}))
    if checkpoint:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_text("{}")
    return folder


def launch_record(base: Path, outcome: str | None, detail: str = "", log: str = "") -> None:
    (base / "logs").mkdir(parents=True, exist_ok=True)
    (base / "logs" / "launch_1.log").write_text(log)
    (base / "launches.json").write_text(json.dumps([{"number": 1, "outcome": outcome, "detail": detail,
                                                     "log": "logs/launch_1.log"}]))


def test_a_run_continues_from_the_newest_attempt_with_a_checkpoint(tmp_path):
    base = make_study(tmp_path).run("baseline", 1).base
    first = attempt(base, 1, "FAILED", checkpoint=True, trace="SystemExit: 143")
    attempt(base, 2, "RUNNING")  # killed before its first epoch ended: no checkpoint of its own
    launch_record(base, "interrupted", "stopped (exit status 143)")
    state = run_state(make_study(tmp_path).run("baseline", 1))
    assert state.status is Status.INTERRUPTED and state.resume_from == first
    assert state.detail == f"stopped (exit status 143); continues from {first}"


def test_a_stopped_training_made_outside_a_study_is_interrupted_not_failed(tmp_path):
    study = make_study(tmp_path)
    attempt(study.run("baseline", 1).base, 1, "FAILED", checkpoint=True, trace="Traceback...\nSystemExit: 143\n")
    attempt(study.run("other", 1).base, 1, "FAILED", trace="Traceback...\nValueError: nan loss\n")
    assert run_state(study.run("baseline", 1)).status is Status.INTERRUPTED
    failed = run_state(study.run("other", 1))
    assert failed.status is Status.FAILED and failed.log_tail[-1] == "ValueError: nan loss"


def test_a_failed_launch_without_a_sacred_folder_keeps_its_log(tmp_path):
    study = make_study(tmp_path)
    base = study.run("baseline", 1).base
    launch_record(base, "failed", "exit status 1", log="# python ...\nConfigAddedError: n_epochz\n")
    state = run_state(study.run("baseline", 1))
    assert state.status is Status.FAILED and state.resume_from is None
    assert state.log == base / "logs" / "launch_1.log" and state.log_tail[-1] == "ConfigAddedError: n_epochz"


def test_completed_wins_and_an_unsettled_launch_is_interrupted(tmp_path):
    study = make_study(tmp_path)
    attempt(study.run("baseline", 1).base, 1, "COMPLETED", checkpoint=True)
    launch_record(study.run("baseline", 1).base, None)  # its launcher was killed, the training finished
    launch_record(study.run("other", 1).base, None)  # killed before Sacred made a run folder
    assert run_state(study.run("baseline", 1)).status is Status.COMPLETED
    other = run_state(study.run("other", 1))
    assert other.status is Status.INTERRUPTED and "before Sacred made a run folder" in other.detail


def test_a_cut_short_run_json_reads_as_interrupted(tmp_path):
    study = make_study(tmp_path)
    folder = study.run("baseline", 1).base / "1"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text('{"status": "RUNN')
    assert run_state(study.run("baseline", 1)).status is Status.INTERRUPTED


def test_the_record_refuses_changed_settings_of_runs_that_exist(tmp_path):
    study = make_study(tmp_path)
    record_study(study)
    attempt(study.run("other", 1).base, 1, "COMPLETED")
    record_study(dataclasses.replace(study, python="/elsewhere/bin/python"))  # another environment: the same runs
    changed = make_study(tmp_path, "baseline = ['accuracy=0.6']\nother = ['accuracy=0.8']\n")
    with pytest.raises(StudyError, match="other/seed_1 was run with other settings"):
        record_study(changed)
    record_study(make_study(tmp_path, "baseline = ['accuracy=0.6']\nother = ['accuracy=0.7']\n"))  # no runs yet
    record_study(make_study(tmp_path, "other = ['accuracy=0.7']\nnew = []\n"))
    recorded = read_recorded_study(tmp_path / "study")
    assert [(run["variant"], run["command"][-2]) for run in recorded["runs"]] == [
        ("other", "accuracy=0.7"), ("new", "n_epochs=2"), ("baseline", "accuracy=0.6")]  # dropped ones kept
    assert (tmp_path / "study" / "study.toml").read_text() == (tmp_path / "grid.toml").read_text()
