"""The study file: what it accepts, the command line of each run, and the errors that name the fix."""

import sys
from pathlib import Path

import pytest

from helpers.study.local import slot_environments, visible_gpus
from helpers.study.slurm import executor_parameters
from helpers.study.spec import StudyError, load_study, merge_slurm_options, slurm_minutes

REPO = Path(__file__).resolve().parents[1]

STUDY = """
experiment = "ex_dcase20.py"
seeds = [1, 2]
with = ["basedataset.base_dir=/data/tau2020", "trainer.max_epochs=80"]
[variants]
unrestricted = []
per_row_1 = ["models.net.rf_norm_t=per_row_1"]
mixstyle = ["freq_mixstyle"]
"""


def write(folder: Path, text: str, name: str = "forms.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_every_run_is_the_experiment_command_with_the_study_settings(tmp_path):
    study = load_study(write(tmp_path, STUDY), cwd=REPO)
    runs = study.runs()
    assert [(run.variant, run.seed) for run in runs] == [
        ("unrestricted", 1), ("per_row_1", 1), ("mixstyle", 1), ("unrestricted", 2), ("per_row_1", 2), ("mixstyle", 2)]
    run = study.run("per_row_1", 2)
    base = REPO / "studies" / "forms" / "runs" / "per_row_1" / "seed_2"
    assert run.base == base
    assert list(run.command) == [sys.executable, str(REPO / "ex_dcase20.py"), "-F", str(base), "with",
                                 "basedataset.base_dir=/data/tau2020", "trainer.max_epochs=80",
                                 "models.net.rf_norm_t=per_row_1", "seed=2"]
    assert run.resumed_command(base / "3")[-1] == f"resume={base / '3'}"
    assert run.cwd == REPO
    assert study.baseline == "unrestricted"  # no variant named baseline, no baseline key: the first


def test_baseline_by_name_or_key_and_folder_from_file_or_command_line(tmp_path):
    named = load_study(write(tmp_path, STUDY.replace("unrestricted =", "baseline =")), cwd=REPO)
    assert named.baseline == "baseline"
    keyed = load_study(write(tmp_path, 'baseline = "mixstyle"\nfolder = "elsewhere/x"\n' + STUDY), cwd=REPO)
    assert keyed.baseline == "mixstyle"
    assert keyed.folder == REPO / "elsewhere" / "x"
    given = load_study(write(tmp_path, 'folder = "elsewhere/x"\n' + STUDY), folder=tmp_path / "mine", cwd=REPO)
    assert given.folder == tmp_path / "mine"


@pytest.mark.parametrize("text, message", [
    ("experiment = 'ex_dcase20.py'\nseed = [1]\n[variants]\na = []", "Did you mean 'seeds'?"),
    ("experiment = 'nope.py'\nseeds = [1]\n[variants]\na = []", "no such file"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1, 1]\n[variants]\na = []", "distinct integers"),
    ("experiment = 'ex_dcase20.py'\nseeds = []\n[variants]\na = []", "distinct integers"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\nwith = ['seed=3']\n[variants]\na = []", "sets seed"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n[variants]\na = ['resume=last']", "sets resume"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n[variants]\na = ['-p']", "option '-p'"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n[variants]\n'a b' = []", "folder name"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n[variants]", "[variants] must be a table"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\nbaseline = 'b'\n[variants]\na = []", "is not a variant"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n[variants]\na = 'x'", "expected a list of settings"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n[variants]\na = []\n[slurm]\npartiton = 'gpu'",
     "Did you mean 'partition'?"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n[variants]\na = []\n[slurm]\ntime = '24h'", "SLURM time"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n[variants]\na = []\n[slurm]\nmem_gb = -1", "positive"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1]\n", "no 'variants'"),
    ("experiment = 'ex_dcase20.py'\nseeds = [1\n", "not valid TOML"),
])
def test_a_bad_study_file_is_refused_with_the_fix(tmp_path, text, message):
    with pytest.raises(StudyError) as error:
        load_study(write(tmp_path, text), cwd=REPO)
    assert message in str(error.value)


def test_missing_study_file(tmp_path):
    with pytest.raises(StudyError, match="cannot read the study file"):
        load_study(tmp_path / "absent.toml", cwd=REPO)


@pytest.mark.parametrize("value, minutes", [
    (45, 45), ("90", 90), ("10:30", 11), ("24:00:00", 1440), ("1:30:00", 90), ("2-12", 3600),
    ("1-00:30", 1470), ("1-00:30:00", 1470)])
def test_slurm_time_in_minutes(value, minutes):
    assert slurm_minutes(value) == minutes


@pytest.mark.parametrize("value", [0, "0:00:00", "abc", 1.5, "1-2-3"])
def test_slurm_time_refused(value):
    with pytest.raises(StudyError):
        slurm_minutes(value)


def test_command_line_slurm_settings_over_the_file(tmp_path):
    text = STUDY + "[slurm]\npartition = 'cpu'\ntime = 60\n[slurm.extra]\naccount = 'lab'\n"
    study = merge_slurm_options(load_study(write(tmp_path, text), cwd=REPO),
                                ["partition=gpu", "time=12:00:00", "gpus_per_task=1", "mem_gb=31.5",
                                 "extra.qos=high"])
    assert study.slurm == {"partition": "gpu", "time": "12:00:00", "gpus_per_task": 1, "mem_gb": 31.5,
                           "extra": {"account": "lab", "qos": "high"}}
    assert executor_parameters(study.slurm, "forms") == {
        "name": "study-forms", "nodes": 1, "tasks_per_node": 1, "slurm_partition": "gpu", "timeout_min": 720,
        "gpus_per_node": 1, "mem_gb": 31.5, "slurm_additional_parameters": {"account": "lab", "qos": "high"}}
    with pytest.raises(StudyError, match="KEY=VALUE"):
        merge_slurm_options(study, ["partition"])
    with pytest.raises(StudyError, match="unknown key 'gpus'"):
        merge_slurm_options(study, ["gpus=2"])


def test_slurm_launcher_needs_a_time_limit():
    with pytest.raises(StudyError, match="time limit"):
        executor_parameters({"partition": "gpu"}, "forms")


def test_parallel_runs_get_a_gpu_each_or_a_share_of_the_cores():
    assert slot_environments(1, ["0", "1"], 8) == [{}]
    assert slot_environments(2, ["3", "5", "7"], 8) == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    assert slot_environments(3, [], 8) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 3
    assert slot_environments(4, [], 2) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 4
    with pytest.raises(StudyError, match="2 GPU"):
        slot_environments(3, ["0", "1"], 8)
    with pytest.raises(StudyError):
        slot_environments(0, [], 8)


@pytest.mark.parametrize("value, gpus", [("0,1", ["0", "1"]), ("", []), ("2, 3", ["2", "3"]), ("1,-1,2", ["1"]),
                                         ("-1", []), ("GPU-abc", ["GPU-abc"])])
def test_visible_gpus_from_cuda_visible_devices(value, gpus):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": value}) == gpus
