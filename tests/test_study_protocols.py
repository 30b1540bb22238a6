"""The [protocol] study axis: leave-one-domain-out, training fractions and folds in the study file, the runs
they make, and the record of the study folder."""

import json
import sys
from pathlib import Path

import pytest

from helpers.study.cli import run_study
from helpers.study.folder import read_recorded_study, record_study
from helpers.study.spec import StudyError, load_study

REPO = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_study_experiment.py"
HEAD = f'experiment = "{FAKE}"\nseeds = [1, 2]\nwith = ["n_epochs=2"]\n'
VARIANTS = "[variants]\nbaseline = []\nother = ['better']\n"


def load(tmp_path, protocol: str, head: str = HEAD, variants: str = VARIANTS):
    path = tmp_path / "axis.toml"
    path.write_text(f"{head}{variants}[protocol]\n{protocol}")
    return load_study(path, folder=tmp_path / "study", cwd=tmp_path)


def test_leave_one_domain_out_trains_on_the_training_domains_less_the_held_out_one(tmp_path):
    study = load(tmp_path, 'held_out_domains = ["a", "c"]\ntraining_domains = ["a", "b", "c"]\n')
    runs = study.runs()
    assert [run.name for run in runs] == [
        "baseline/held_out_a/seed_1", "other/held_out_a/seed_1", "baseline/held_out_c/seed_1",
        "other/held_out_c/seed_1", "baseline/held_out_a/seed_2", "other/held_out_a/seed_2",
        "baseline/held_out_c/seed_2", "other/held_out_c/seed_2"]
    run = runs[3]
    assert run.base == tmp_path / "study" / "runs" / "other" / "held_out_c" / "seed_1"
    assert list(run.command) == [sys.executable, str(FAKE), "-F", str(run.base), "with", "n_epochs=2", "better",
                                 'basedataset.train_domains=["a","b"]', "seed=1"]
    assert study.protocol.training_domains == ("a", "b", "c")
    assert [value.value for value in study.protocol.values] == ["a", "c"]


@pytest.mark.parametrize("protocol, labels, settings", [
    ("train_fractions = [0.05, 0.5, 1]\n", ["fraction_0.05", "fraction_0.5", "fraction_1.0"],
     ["basedataset.train_fraction=0.05", "basedataset.train_fraction=0.5", "basedataset.train_fraction=1.0"]),
    ("folds = [1, 2, 3]\n", ["fold_1", "fold_2", "fold_3"],
     ["basedataset.fold=1", "basedataset.fold=2", "basedataset.fold=3"]),
])
def test_fractions_and_folds_set_one_dataset_key_per_value(tmp_path, protocol, labels, settings):
    study = load(tmp_path, protocol)
    assert len(study.runs()) == 2 * 2 * 3
    for value, label, setting in zip(study.protocol.values, labels, settings, strict=True):
        run = study.run("baseline", 2, value)
        assert run.base == tmp_path / "study" / "runs" / "baseline" / label / "seed_2"
        assert run.command[-2:] == (setting, "seed=2")


def test_a_study_without_protocol_keeps_its_layout(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text(HEAD + VARIANTS)
    study = load_study(path, folder=tmp_path / "study", cwd=tmp_path)
    assert study.protocol is None and study.protocol_values == (None,)
    assert study.run("other", 1).base == tmp_path / "study" / "runs" / "other" / "seed_1"
    assert study.run("other", 1).name == "other/seed_1"
    with pytest.raises(ValueError):
        study.run("other", 1, load(tmp_path, "folds = [1]\n").protocol.values[0])


@pytest.mark.parametrize("protocol, message", [
    ("folds = [1]\ntrain_fractions = [0.5]\n", "a study has one protocol"),
    ("training_domains = ['a', 'b']\n", "it gives none"),
    ("held_out_domains = ['a']\n", "needs training_domains"),
    ("held_out_domains = ['d']\ntraining_domains = ['a', 'b']\n", "not among training_domains"),
    ("held_out_domains = ['a']\ntraining_domains = ['a']\n", "two or more distinct"),
    ("held_out_domains = ['a', 'a']\ntraining_domains = ['a', 'b']\n", "distinct domain names"),
    ("held_out_domains = ['a b']\ntraining_domains = ['a b', 'c']\n", "name folders"),
    ("folds = [1]\ntraining_domains = ['a', 'b']\n", "goes with held_out_domains only"),
    ("train_fractions = [0, 0.5]\n", "fractions in (0, 1]"),
    ("train_fractions = [1.5]\n", "fractions in (0, 1]"),
    ("train_fractions = [0.5, 0.5]\n", "distinct fractions"),
    ("train_fractions = [true]\n", "fractions in (0, 1]"),
    ("train_fractions = []\n", "non-empty list"),
    ("folds = [1.5]\n", "fold numbers"),
    ("folds = [1, 1]\n", "fold numbers"),
    ("fold = [1]\n", "Did you mean 'folds'?"),
])
def test_a_bad_protocol_is_refused_with_the_fix(tmp_path, protocol, message):
    with pytest.raises(StudyError) as error:
        load(tmp_path, protocol)
    assert message in str(error.value)


@pytest.mark.parametrize("head, variants", [
    (HEAD.replace('"n_epochs=2"', '"basedataset.fold=2"'), VARIANTS),
    (HEAD, "[variants]\nbaseline = []\nother = ['basedataset.fold=1']\n"),
])
def test_the_protocol_s_setting_is_the_protocol_s_alone(tmp_path, head, variants):
    with pytest.raises(StudyError, match="sets basedataset.fold for each run itself"):
        load(tmp_path, "folds = [1, 2]\n", head, variants)


def test_the_record_keeps_protocol_values_apart_and_refuses_changed_settings(tmp_path):
    study = load(tmp_path, "folds = [1, 2]\n")
    record_study(study)
    recorded = read_recorded_study(study.folder)
    assert recorded["protocol"] == {"key": "folds", "values": [1, 2], "training_domains": []}
    assert {(entry["variant"], entry["protocol"], entry["seed"]) for entry in recorded["runs"]} == {
        (variant, f"fold_{fold}", seed) for variant in ("baseline", "other") for fold in (1, 2) for seed in (1, 2)}
    run = study.run("other", 1, study.protocol.values[1])
    (run.base / "1").mkdir(parents=True)  # a run that exists
    changed = load(tmp_path, "folds = [1, 2]\n", variants="[variants]\nbaseline = []\nother = ['oracle']\n")
    with pytest.raises(StudyError, match="other/fold_2/seed_1 was run with other settings"):
        record_study(changed)
    record_study(load(tmp_path, "folds = [1, 2, 3]\n"))  # a new fold is fine


@pytest.mark.parametrize("name, values", [("nsynth_lodo_demo", 3), ("frito_forms_demo", 1)])
def test_the_shipped_protocol_studies_parse_and_list_their_runs(tmp_path, capsys, name, values):
    study = load_study(REPO / "studies" / f"{name}.toml", folder=tmp_path / name, cwd=REPO)
    assert run_study(study, dry_run=True) == 0
    shown = capsys.readouterr().out
    assert shown.count("missing; start") == len(study.variants) * len(study.seeds) * values
    if name == "nsynth_lodo_demo":
        # quoted as a shell takes it
        assert "per_row_1 'basedataset.train_domains=[\"electronic\",\"synthetic\"]' seed=2" in shown
        assert "per_row_1/held_out_acoustic/seed_2: missing; start" in shown
    assert not (tmp_path / name).exists()


def test_the_dg_methods_study_lists_every_method(tmp_path):
    study = load_study(REPO / "studies" / "dg_methods_demo.toml", folder=tmp_path / "dg", cwd=REPO)
    assert list(study.variants) == ["baseline", "per_row_1", "freq_centering", "rfn", "dann", "freq_mixstyle"]
    assert study.protocol is None and study.experiment == REPO / "ex_dcase20.py"


@pytest.mark.slow
def test_a_leave_one_domain_out_study_runs_and_reports(tmp_path):
    """study.py run and report on the fake experiment: the list setting reaches Sacred's config."""
    import subprocess

    path = tmp_path / "lodo.toml"
    path.write_text(f'experiment = "{FAKE}"\nseeds = [1]\nwith = ["n_epochs=2"]\n{VARIANTS}'
                    f'[protocol]\nheld_out_domains = ["a", "b"]\ntraining_domains = ["a", "b", "c"]\n')
    for command in ("run", "report"):
        result = subprocess.run([sys.executable, str(REPO / "study.py"), command, str(path), "--folder", "out"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((tmp_path / "out" / "runs" / "other" / "held_out_b" / "seed_1" / "1" / "config.json")
                        .read_text())
    assert config["basedataset"]["train_domains"] == ["a", "c"]
    assert "## Leave-one-domain-out: held-out accuracy" in result.stdout
    # the fake gives seen devices 0.5 (0.8 with better) and unseen ones the same: held-out a and b alike
    assert "| other | 2 | 0.800 | 0.800 | 0.800 | 0.800 | 0.800 |" in result.stdout
    assert (tmp_path / "out" / "report.png").is_file()
