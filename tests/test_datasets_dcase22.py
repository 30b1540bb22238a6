"""TAU Urban Acoustic Scenes 2022 Mobile: the real layout, the DCASE 2024 training subsets (split_csv), the
demo data and its subsets, and the experiment's defaults for 1 s clips."""

import csv
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile

from datasets import dcase20, dcase22
from datasets.dcase20 import demo as tau2020_demo
from datasets.dcase22 import DEFAULTS, Data
from datasets.metadata import LayoutError
from errors import ConfigurationError
from helpers.training.fit import model_spec

FOLDER = "TAU-urban-acoustic-scenes-2022-mobile-development"
SEEN = ["a", "b", "c", "s1", "s2", "s3"]

# (filename, scene, identifier, device, fold): 1 s parts of 10 s segments, as the release names them; every
# scene has two training locations.
FILES = [
    *[(f"audio/airport-barcelona-0-0-{p}-a.wav", "airport", "barcelona-0", "a", "train") for p in range(3)],
    *[(f"audio/airport-barcelona-0-0-{p}-b.wav", "airport", "barcelona-0", "b", "train") for p in range(2)],
    *[(f"audio/airport-lyon-5-13-{p}-a.wav", "airport", "lyon-5", "a", "train") for p in range(3)],
    *[(f"audio/bus-lyon-1-5-{p}-a.wav", "bus", "lyon-1", "a", "train") for p in range(2)],
    *[(f"audio/bus-lyon-1-5-{p}-s2.wav", "bus", "lyon-1", "s2", "train") for p in range(2)],
    *[(f"audio/bus-prague-6-14-{p}-a.wav", "bus", "prague-6", "a", "train") for p in range(2)],
    *[(f"audio/airport-lisbon-2-9-{p}-s5.wav", "airport", "lisbon-2", "s5", "evaluate") for p in range(2)],
    *[(f"audio/bus-milan-3-11-{p}-c.wav", "bus", "milan-3", "c", "evaluate") for p in range(2)],
]
TRAIN_FILES = [f[0] for f in FILES if f[4] == "train"]
TEST_FILES = [f[0] for f in FILES if f[4] == "evaluate"]


def _write_tau22(parent, files=FILES):
    """The TAU 2022 layout as zenodo ships it: 1 s WAV files, tab-separated tables with header lines."""
    root = parent / FOLDER
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    for i, (name, *_) in enumerate(files):
        t = np.arange(44100) / 44100
        soundfile.write(root / name, 0.25 * np.sin(2 * np.pi * (200 + 50 * i) * t), 44100, subtype="PCM_24")
    _table(root / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), [f[:4] for f in files])
    for fold in ("train", "evaluate"):
        _table(root / "evaluation_setup" / f"fold1_{fold}.csv", ("filename", "scene_label"),
               [f[:2] for f in files if f[4] == fold])
    _table(root / "evaluation_setup" / "fold1_test.csv", ("filename",), [f[:1] for f in files if f[4] == "evaluate"])
    return root


def _table(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n")


def _first_ranked(locations, seed=0):
    """The documented ranking of validation locations: sha1("<split_seed>/<identifier>"), first."""
    return min(locations, key=lambda location: hashlib.sha1(f"{seed}/{location}".encode()).hexdigest())


def _expected_validation(files):
    """With two training locations per scene (of the given files), each scene holds out the one ranked first."""
    per_scene = defaultdict(set)
    for _, scene, location, *_ in files:
        per_scene[scene].add(location)
    held = {_first_ranked(locations) for locations in per_scene.values() if len(locations) > 1}
    return {f[0] for f in files if f[2] in held}


@pytest.fixture
def tau22(tmp_path):
    return _write_tau22(tmp_path / "downloads")


def _data(base_dir, tmp_path, **settings):
    return Data(**{**DEFAULTS, "base_dir": base_dir, "cache_dir": tmp_path / "cache", "prepare_workers": 0,
                   **settings})


def test_the_release_layout_is_read_into_three_roles_of_1_s_clips(tau22, tmp_path):
    data = _data(tau22.parent, tmp_path)
    assert data.layout.root == _data(tau22, tmp_path).layout.root == tau22
    assert data.clip_length == 1.0 and data.clip_samples == 32000
    assert data.class_names == ["airport", "bus"] and data.domain_names == ["a", "b", "c", "s2", "s5"]
    assert data.subdomain_names == ["barcelona", "lisbon", "lyon", "milan", "prague"]
    validation = _expected_validation([f for f in FILES if f[4] == "train"])
    assert data.layout.roles["validation"].files == validation
    assert data.layout.roles["train"].files == set(TRAIN_FILES) - validation
    device = {f[0]: f[3] for f in FILES}
    assert data.seen_domains == sorted({device[name] for name in set(TRAIN_FILES) - validation})
    roles = data.roles()  # validation of the devices trained on only
    assert set(roles["validation"]) == {name for name in validation if device[name] in data.seen_domains}
    assert sorted(roles["test"]) == sorted(TEST_FILES)
    item = data.test_set()[0]
    assert item["waveform"].shape == (32000,)
    assert data.class_names[item["label"]] == dict((f[0], f[1]) for f in FILES)[item["file_name"]]


def test_a_folder_in_another_layout_is_reported_with_the_expected_tree(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError) as failure:
        Data(base_dir=tmp_path / "empty", cache_dir=tmp_path / "cache")
    message = str(failure.value)
    for part in (FOLDER, "meta.csv", "evaluation_setup", "fold1_evaluate.csv", "airport-barcelona-0-0-0-a.wav",
                 "https://zenodo.org/record/6337421", "split_setup/", "split5.csv ... split100.csv"):
        assert part in message, part


def test_a_split_csv_restricts_training_and_validation_to_its_files(tau22, tmp_path):
    subset = [f for f in FILES if f[2] in ("barcelona-0", "lyon-5", "lyon-1", "prague-6") and f[0][-5] == "a"]
    _table(tau22 / "split_setup" / "split50.csv", ("filename", "scene_label"), [f[:2] for f in subset])
    data = _data(tau22, tmp_path, split_csv="split_setup/split50.csv")
    roles = data.roles()
    assert set(roles["train"]) | set(roles["validation"]) == {f[0] for f in subset}
    assert set(roles["validation"]) == _expected_validation(subset)  # the subset's own locations held out
    assert sorted(roles["test"]) == sorted(TEST_FILES)  # the test role is not restricted
    assert data.seen_domains == ["a"]  # devices b and s2 have no file in the subset: they are unseen
    absolute = _data(tau22, tmp_path, split_csv=str(tau22 / "split_setup" / "split50.csv"))
    assert absolute.roles() == roles


def test_a_split_csv_naming_files_outside_the_training_split_is_refused(tau22, tmp_path):
    rows = [(name, "airport") for name in TRAIN_FILES[:2] + TEST_FILES[:1]] + [("audio/nowhere-0-0-0-a.wav", "bus")]
    _table(tau22 / "bad.csv", ("filename", "scene_label"), rows)
    with pytest.raises(ConfigurationError) as failure:
        _data(tau22, tmp_path, split_csv="bad.csv")
    message = str(failure.value)
    assert "2 of its 4 files are not in the training split 'fold1_train'" in message
    assert "1 in the fold1_evaluate split" in message and "1 in no split (not in meta.csv)" in message
    assert TEST_FILES[0] in message


def test_a_split_csv_with_other_scene_labels_or_no_files_is_refused(tau22, tmp_path):
    _table(tau22 / "relabelled.csv", ("filename", "scene_label"), [(TRAIN_FILES[0], "bus")])
    with pytest.raises(LayoutError, match=r"relabelled.csv: scene labels differ from meta.csv for 1 files"):
        _data(tau22, tmp_path, split_csv="relabelled.csv")
    _table(tau22 / "empty.csv", ("filename", "scene_label"), [])
    with pytest.raises(LayoutError, match="lists no files"):
        _data(tau22, tmp_path, split_csv="empty.csv")


def test_a_missing_split_csv_names_where_it_was_looked_for(tau22, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _table(tmp_path / "split25.csv", ("filename",), [(TRAIN_FILES[0],)])
    with pytest.raises(ConfigurationError) as failure:
        _data(tau22, tmp_path, split_csv="split25.csv")
    message = str(failure.value)
    assert f"{tau22 / 'split25.csv'} not found" in message and "relative path is taken from the dataset" in message
    assert f"{tmp_path / 'split25.csv'} exists: give its absolute path" in message
    with pytest.raises(ConfigurationError, match="expected the path of a training subset's CSV"):
        _data(tau22, tmp_path, split_csv=25)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return Data(cache_dir=tmp_path_factory.mktemp("cache"), prepare_workers=0)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def test_the_demo_is_the_tau_2020_demo_cut_into_1_s_files(demo):
    assert demo.is_demo and demo.clip_length == 1.0
    assert len(demo.layout.splits["fold1_train"]) == 720 and len(demo.layout.splits["fold1_evaluate"]) == 360
    first = next(tau2020_demo.recordings())  # the first scene's first location on the first device
    root = demo.layout.root
    stem = f"audio/{first.scene}-{first.identifier}-{first.segment}"
    parts = [soundfile.read(root / f"{stem}-{part}-{first.device}.wav") for part in (0, 1)]
    assert all(rate == 44100 and len(audio) == 44100 for audio, rate in parts)
    np.testing.assert_allclose(np.concatenate([audio for audio, _ in parts]), first.audio, atol=2.0**-23)


def test_the_demo_subsets_are_nested_whole_recordings_of_the_training_split(demo):
    setup = demo.layout.root / "split_setup"
    training = {clip.path: clip for clip in demo.layout.splits["fold1_train"]}
    previous = set()
    for percent, per_scene in ((5, 2), (10, 4), (25, 9), (50, 18), (100, 36)):  # round(p / 100 x 36) recordings
        rows = _rows(setup / f"split{percent}.csv")
        assert rows[0] == ["filename", "scene_label"]
        files = {name for name, _ in rows[1:]}
        assert all(training[name].label == label for name, label in rows[1:])
        recordings = defaultdict(set)
        for name in files:  # audio/<scene>-<city>-<location>-<segment>-<part>-<device>.wav
            *stem, part, device = name.removesuffix(".wav").split("-")
            recordings["-".join(stem), device].add(part)
        assert all(parts == {"0", "1"} for parts in recordings.values())
        scenes = defaultdict(list)
        for stem, device in recordings:
            scenes[training[f"{stem}-0-{device}.wav"].label].append((stem, device))
        assert len(scenes) == 10 and all(len(keys) == per_scene for keys in scenes.values())
        for keys in scenes.values():  # pairs: each device at two locations, a location once per device
            assert len(set(keys)) == per_scene
            if per_scene <= 4:
                devices = [device for _, device in keys]
                assert all(devices.count(device) == 2 for device in devices)
        assert {device for _, device in recordings} == set(SEEN)  # every subset has every seen device
        assert previous <= files
        previous = files
    assert previous == set(training)


def test_every_demo_subset_trains_and_validates_on_its_own_files(demo):
    for percent in (5, 10, 25, 50, 100):
        data = Data(cache_dir=demo.cache_dir, split_csv=f"split_setup/split{percent}.csv")
        roles = data.layout.roles
        listed = {name for name, _ in _rows(demo.layout.root / "split_setup" / f"split{percent}.csv")[1:]}
        assert roles["train"].files | roles["validation"].files == listed
        assert not roles["train"].files & roles["validation"].files
        assert roles["train"].files and roles["validation"].files and roles["test"].files is None
        assert data.seen_domains == SEEN  # the validation hold-out leaves every subset all six devices to train on


@pytest.mark.parametrize("package, seconds", [(dcase22, 1.0), (dcase20, 2.0)])
def test_the_cpu_preset_keeps_clips_no_longer_than_the_datasets_own(load_experiment, cache_dir, capsys, package,
                                                                     seconds):
    ex = load_experiment(f"ex_{package.Data.name}")
    frames = int(seconds * 100)  # hop 320 at 32 kHz: 100 frames per second
    for named_configs in ((), ("cpu_tiny",)):
        config = ex.run("print_config", config_updates={"basedataset": {"cache_dir": str(cache_dir)}},
                        named_configs=named_configs, options={"--capture": "sys"}).config
        assert config["basedataset"]["clip_length"] == seconds and config["models"]["net"]["arch"] == "passt_mini"
        assert f"models.net.input_tdim = {frames}" in capsys.readouterr().out
    ex.run("print_named_configs", options={"--capture": "sys"})
    assert f"A small transformer (passt_mini) on {seconds:g} s clips" in capsys.readouterr().out


def test_on_the_real_data_the_input_and_patch_grid_follow_the_1_s_clips(load_experiment, capsys):
    ex = load_experiment("ex_dcase22")
    config = ex.run("print_config", config_updates={"basedataset": {"base_dir": "/data/tau2022"}},
                    options={"--capture": "sys"}).config
    assert config["basedataset"]["clip_length"] is None and config["basedataset"]["split_csv"] is None
    out = capsys.readouterr().out
    assert "basedataset.clip_length = 1.0" in out and "models.net.input_tdim = 100" in out
    # PaSST-S: 16 x 16 patches at stride 10 over 128 mel bins x 100 frames: (128 - 16) // 10 + 1 = 12 rows and
    # (100 - 16) // 10 + 1 = 9 columns
    assert model_spec(dcase22, config).patch_grid == (12, 9)


def test_the_shipped_subsets_study_names_the_five_demo_subsets(tmp_path, demo):
    from helpers.study.spec import load_study

    repo = Path(__file__).resolve().parents[1]
    study = load_study(repo / "studies" / "dcase24_subsets_demo.toml", folder=tmp_path / "study", cwd=repo)
    assert study.experiment == repo / "ex_dcase22.py" and study.baseline == "split100"
    assert dict(study.variants) == {
        f"split{p}": (f"basedataset.split_csv=split_setup/split{p}.csv",) for p in (5, 10, 25, 50, 100)}
    for percent in (5, 10, 25, 50, 100):
        assert (demo.layout.root / "split_setup" / f"split{percent}.csv").is_file()


@pytest.mark.slow
def test_a_subset_trains_end_to_end_on_the_demo_and_its_run_records_the_roles(demo, tmp_path):
    from helpers import api

    results = api.train("dcase22", updates={
        "basedataset": {"cache_dir": str(demo.cache_dir), "split_csv": "split_setup/split25.csv"},
        "trainer": {"max_epochs": 1, "limit_train_batches": 2}}, named_configs=["cpu_tiny"], run_dir=tmp_path / "run")
    roles = json.loads((tmp_path / "run" / "splits.json").read_text())
    listed = {name for name, _ in _rows(demo.layout.root / "split_setup" / "split25.csv")[1:]}
    train, validation = set(roles["train"]), set(roles["validation"])
    assert train | validation <= listed and train and validation and not train & validation
    assert sorted(roles["test"]) == sorted(clip.path for clip in demo.layout.splits["fold1_evaluate"])
    test = results["test"]["net"]["selected"]
    assert 0 <= test["acc"] <= 1 and {f"domain/{device}" for device in demo.domain_names} <= set(test)
