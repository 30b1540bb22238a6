"""TAU Urban Acoustic Scenes 2020 Mobile: reading the real layout, items, domain restriction, caching."""

import hashlib
import math
import pickle
from collections import Counter

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from datasets.cache import Clip
from datasets.dcase20 import DEFAULTS, Data
from datasets.metadata import LayoutError
from datasets.tau_mobile import hold_out_locations

FOLDER = "TAU-urban-acoustic-scenes-2020-mobile-development"

# (filename, scene, identifier, device, fold, (file rate, channels, seconds)); every scene has two training
# locations, so validation holds out one of them.
FILES = [
    ("audio/airport-barcelona-0-0-a.wav", "airport", "barcelona-0", "a", "train", (44100, 1, 0.25)),
    ("audio/airport-barcelona-0-0-b.wav", "airport", "barcelona-0", "b", "train", (44100, 1, 0.25)),
    ("audio/airport-lyon-5-13-a.wav", "airport", "lyon-5", "a", "train", (44100, 1, 0.25)),
    ("audio/airport-lyon-5-13-b.wav", "airport", "lyon-5", "b", "train", (44100, 1, 0.25)),
    ("audio/bus-lyon-1-5-a.wav", "bus", "lyon-1", "a", "train", (48000, 2, 0.25)),
    ("audio/bus-lyon-1-5-s2.wav", "bus", "lyon-1", "s2", "train", (44100, 1, 0.05)),
    ("audio/bus-prague-6-14-a.wav", "bus", "prague-6", "a", "train", (44100, 1, 0.25)),
    ("audio/bus-prague-6-14-s2.wav", "bus", "prague-6", "s2", "train", (44100, 1, 0.25)),
    ("audio/park-helsinki-7-15-a.wav", "park", "helsinki-7", "a", "train", (44100, 1, 0.25)),
    ("audio/park-lisbon-8-16-a.wav", "park", "lisbon-8", "a", "train", (44100, 1, 0.25)),
    ("audio/park-prague-2-9-a.wav", "park", "prague-2", "a", "evaluate", (44100, 1, 0.25)),
    ("audio/park-prague-2-9-s5.wav", "park", "prague-2", "s5", "evaluate", (16000, 1, 0.4)),
    ("audio/bus-barcelona-3-11-c.wav", "bus", "barcelona-3", "c", "evaluate", (44100, 1, 0.25)),
    ("audio/airport-lyon-4-12-a.wav", "airport", "lyon-4", "a", None, (44100, 1, 0.25)),
]


def _rank(location, seed=0):
    """The documented ranking of validation locations: sha1("<split_seed>/<identifier>")."""
    return hashlib.sha1(f"{seed}/{location}".encode()).hexdigest()


def _expected_validation(files=FILES, seed=0):
    """With two training locations per scene, each scene holds out the one ranked first."""
    scenes = {}
    for _, scene, location, _, fold, _ in files:
        if fold == "train":
            scenes.setdefault(scene, set()).add(location)
    held = {min(locations, key=lambda location: _rank(location, seed)) for locations in scenes.values()}
    return {f[0] for f in files if f[4] == "train" and f[2] in held}


def _write_tau(parent, files=FILES, line_end="\r\n"):
    """The TAU layout as zenodo ships it: tab-separated tables with header lines, audio/ and evaluation_setup/."""
    root = parent / FOLDER
    (root / "audio").mkdir(parents=True)
    for i, (name, _, _, _, _, (rate, channels, seconds)) in enumerate(files):
        t = np.arange(int(rate * seconds)) / rate
        tone = 0.25 * np.sin(2 * np.pi * (200 + 50 * i) * t)
        soundfile.write(root / name, np.stack([tone] * channels, axis=1), rate, subtype="PCM_24")
    _write_tables(root, files, line_end)
    return root


def _write_tables(root, files, line_end="\r\n"):
    """meta.csv and evaluation_setup/ for `files` (no audio)."""
    (root / "evaluation_setup").mkdir(parents=True)

    def table(path, header, rows):
        lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
        path.write_bytes((line_end.join(lines) + line_end + line_end).encode())

    table(root / "meta.csv", ["filename", "scene_label", "identifier", "source_label"], [f[:4] for f in files])
    for fold, suffix in (("train", "train"), ("evaluate", "evaluate")):
        rows = [(f[0], f[1]) for f in files if f[4] == fold]
        table(root / "evaluation_setup" / f"fold1_{suffix}.csv", ["filename", "scene_label"], rows)
    table(root / "evaluation_setup" / "fold1_test.csv", ["filename"], [(f[0],) for f in files if f[4] == "evaluate"])
    return root


def _snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def tau(tmp_path):
    return _write_tau(tmp_path / "downloads")


def _data(tau, tmp_path, **settings):
    return Data(
        **{**DEFAULTS, "base_dir": tau.parent, "cache_dir": tmp_path / "cache", "prepare_workers": 0, **settings}
    )


def test_vocabularies_come_from_meta_csv(tau, tmp_path):
    data = _data(tau, tmp_path)
    assert data.class_names == ["airport", "bus", "park"]
    assert data.domain_names == ["a", "b", "c", "s2", "s5"]
    assert data.subdomain_names == ["barcelona", "helsinki", "lisbon", "lyon", "prague"]
    assert data.seen_domains == ["a", "b", "s2"]
    assert data.domain_kind == "device"
    assert data.clip_length == 10.0


def test_base_dir_may_be_the_dataset_folder_or_its_parent(tau, tmp_path):
    assert _data(tau, tmp_path).layout.root == _data(tau, tmp_path, base_dir=tau).layout.root == tau


def test_roles_hold_out_one_training_location_per_scene_for_validation(tau, tmp_path):
    data = _data(tau, tmp_path, clip_length=0.2)
    roles = data.roles()
    validation = _expected_validation()
    assert len(validation) == 5  # airport and bus locations hold 2 clips each, park ones 1
    assert set(roles["validation"]) == validation
    assert set(roles["train"]) == {f[0] for f in FILES if f[4] == "train"} - validation
    assert set(roles["test"]) == {f[0] for f in FILES if f[4] == "evaluate"}
    location = {f[0]: f[2] for f in FILES}
    assert {location[name] for name in roles["train"]}.isdisjoint(location[name] for name in roles["validation"])
    assert data.group_names == ("seen devices", "unseen devices")
    assert list(data.cache_files()) == ["fold1_train", "fold1_evaluate"]  # train and validation share one cache


def test_items_carry_the_labels_of_meta_csv(tau, tmp_path):
    data = _data(tau, tmp_path, clip_length=0.2)
    for dataset, fold in (
        (data.train_set(), "train"),
        (data.validation_set(), "train"),
        (data.test_set(), "evaluate"),
    ):
        expected = {f[0]: f for f in FILES if f[4] == fold}
        items = [dataset[i] for i in range(len(dataset))]
        assert set(item["file_name"] for item in items) <= set(expected)
        for item in items:
            name, scene, identifier, device, _, _ = expected[item["file_name"]]
            assert data.class_names[item["label"]] == scene
            assert data.domain_names[item["domain"]] == device
            assert data.subdomain_names[item["subdomain"]] == identifier.split("-")[0]
            assert item["waveform"].dtype == torch.float32 and item["waveform"].shape == (6400,)


def test_clips_are_resampled_downmixed_and_padded_to_clip_length(tau, tmp_path):
    data = _data(tau, tmp_path, clip_length=0.3)
    items = {
        item["file_name"]: item["waveform"]
        for dataset in (data.train_set(), data.validation_set())
        for item in (dataset[i] for i in range(len(dataset)))
    }
    stereo = items["audio/bus-lyon-1-5-a.wav"].numpy()
    assert np.abs(stereo[:8000]).max() == pytest.approx(0.25, abs=0.01)
    assert np.all(stereo[8000:] == 0)
    short = items["audio/bus-lyon-1-5-s2.wav"].numpy()
    assert np.abs(short[100:1500]).max() > 0.2 and np.all(short[1601:] == 0)


def test_validation_and_test_crops_are_the_start_and_train_crop_a_window_of_the_clip(tau, tmp_path):
    full = _data(tau, tmp_path, clip_length=0.25)
    short = _data(tau, tmp_path, clip_length=0.1)
    for role in ("validation_set", "test_set"):
        clip = getattr(full, role)()[0]["waveform"].numpy()
        np.testing.assert_array_equal(getattr(short, role)()[0]["waveform"].numpy(), clip[:3200])
    train_full = full.train_set()[0]["waveform"].numpy()
    torch.manual_seed(3)
    windows = {tuple(short.train_set()[0]["waveform"].numpy()[:5]) for _ in range(20)}
    assert len(windows) > 1
    for window in windows:
        starts = [s for s in range(len(train_full) - 3200 + 1) if tuple(train_full[s : s + 5]) == window]
        assert starts


def _clips(sizes):
    """Training clips for {identifier: n_clips}; the scene is the identifier's part before the dash."""
    clips, locations = [], {}
    for location, n in sizes.items():
        for i in range(n):
            path = f"audio/{location}-{i}.wav"
            clips.append(Clip(path, location.split("-")[0], "a", "-"))
            locations[path] = location
    return clips, locations


# scene x: 7 locations of 10 clips; y: 1, 3 and 6 clips; z: a single location. The ranks by
# sha1("<seed>/<identifier>"), worked out once: seed 0: x-6, x-4, x-5, ... and y-2, y-1, y-0;
# seed 1: x-5, x-3, ... and y-2, y-1, y-0.
SIZES = {**{f"x-{i}": 10 for i in range(7)}, "y-0": 6, "y-1": 3, "y-2": 1, "z-0": 4}


@pytest.mark.parametrize(
    "fraction, seed, expected",
    [
        # x: target 10.5, one location (10) is closest; y: target 1.5, y-2 (1) and not y-1 (to 4)
        (0.15, 0, {"x-6", "y-2"}),
        (0.15, 1, {"x-5", "y-2"}),
        # x: target 21: two locations (20); y: target 3: y-2 then y-1 (4 is 1 away), y-0 stays for training
        (0.3, 0, {"x-6", "x-4", "y-2", "y-1"}),
        # x: target 63 of 70: six locations, the seventh stays for training
        (0.9, 0, {"x-6", "x-4", "x-5", "x-2", "x-1", "x-3", "y-2", "y-1"}),
    ],
)
def test_validation_locations_follow_the_documented_rule(fraction, seed, expected):
    clips, locations = _clips(SIZES)
    assert hold_out_locations(clips, locations, fraction, seed) == expected
    assert hold_out_locations(clips[::-1], locations, fraction, seed) == expected  # not the row order


def _many_locations(parent):
    """10 scenes x 12 training locations of 3 to 9 clips (devices a, b, c, s1-s3 in turn) and a test fold."""
    files, devices = [], ("a", "b", "c", "s1", "s2", "s3")
    for scene_index in range(10):
        for location in range(12):
            identifier = f"city{location % 4}-{scene_index * 12 + location}"
            for segment in range(3 + (scene_index + 5 * location) % 7):
                device = devices[(segment + location) % len(devices)]
                name = f"audio/scene{scene_index}-{identifier}-{segment}-{device}.wav"
                files.append((name, f"scene{scene_index}", identifier, device, "train", None))
        files.append((f"audio/scene{scene_index}-far-0-s4.wav", f"scene{scene_index}", "far-0", "s4", "evaluate", None))
    return _write_tables(parent / FOLDER, files), files


def test_validation_is_about_the_fraction_location_disjoint_every_scene_and_device_and_seeded(tmp_path):
    root, files = _many_locations(tmp_path / "many")
    location = {f[0]: f[2] for f in files}
    device = {f[0]: f[3] for f in files}
    scene = {f[0]: f[1] for f in files}
    data = _data(root, tmp_path)
    train, validation = data.layout.roles["train"].files, data.layout.roles["validation"].files
    assert train | validation == {f[0] for f in files if f[4] == "train"} and not train & validation
    assert {location[name] for name in train}.isdisjoint(location[name] for name in validation)
    assert 0.12 < len(validation) / (len(train) + len(validation)) < 0.18
    assert {scene[name] for name in validation} == {scene[name] for name in train}  # every scene has both
    assert {device[name] for name in validation} == {"a", "b", "c", "s1", "s2", "s3"}
    assert data.layout.roles["test"].files is None  # test: every clip of fold1_evaluate
    again = _data(root, tmp_path).layout.roles["validation"].files
    reseeded = _data(root, tmp_path, split_seed=1).layout.roles["validation"].files
    assert again == validation and reseeded != validation
    larger = _data(root, tmp_path, validation_fraction=0.3).layout.roles["validation"].files
    assert 0.25 < len(larger) / len(train | validation) < 0.35


@pytest.mark.parametrize("settings, message", [
    ({"validation_fraction": 0}, "validation_fraction=0: expected the share"),
    ({"validation_fraction": 1.0}, "validation_fraction=1.0: expected the share"),
    ({"split_seed": 0.5}, "split_seed=0.5: expected an integer"),
])  # fmt: skip
def test_split_settings_are_checked(tau, tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        _data(tau, tmp_path, **settings)


def test_a_scene_without_training_clips_of_the_training_devices_is_refused_unless_dropped(tau, tmp_path):
    # the park locations were recorded on device a only
    with pytest.raises(ValueError) as failure:
        _data(tau, tmp_path, train_domains=["b", "s2"])
    message = str(failure.value)
    assert "the classes ['park'] have no training clip of the training devices ['b', 's2']" in message
    assert "'park': training clips only of the devices ['a']" in message and "drop_untrained_classes=True" in message
    data = _data(tau, tmp_path, train_domains=["b", "s2"], drop_untrained_classes=True)
    assert data.class_names == ["airport", "bus"]
    assert "audio/park-prague-2-9-a.wav" not in data.roles()["test"]


def test_train_domains_restrict_training_and_validation_only(tau, tmp_path):
    data = _data(tau, tmp_path, train_domains=["a"])
    assert data.seen_domains == ["a"]
    roles = data.roles()
    device = {f[0]: f[3] for f in FILES}
    assert {device[name] for name in roles["train"] + roles["validation"]} == {"a"}
    assert len(roles["train"]) == len(roles["validation"]) == 3  # each scene's two locations hold one clip on a
    assert {device[name] for name in roles["test"]} == {"a", "c", "s5"}


@pytest.mark.parametrize("train_domains", [["zz"], "a", []])
def test_bad_train_domains_are_rejected_listing_the_devices(tau, tmp_path, train_domains):
    with pytest.raises(ValueError, match="train_domains.*'a'"):
        _data(tau, tmp_path, train_domains=train_domains)


def test_train_domains_absent_from_the_training_split_are_rejected(tau, tmp_path):
    with pytest.raises(ValueError, match=r"\['s5'\] have no clips in the training split 'fold1_train'"):
        _data(tau, tmp_path, train_domains=["a", "s5"])


def test_unknown_setting_raises_type_error_naming_it(tau, tmp_path):
    with pytest.raises(TypeError, match="sampel_rate"):
        _data(tau, tmp_path, sampel_rate=16000)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("cache_format", "mp3"),
        ("audio_dtype", "int8"),
        ("sample_rate", 0),
        ("clip_length", -1.0),
        ("prepare_workers", -1),
    ],
)
def test_bad_settings_are_rejected_naming_them(tau, tmp_path, setting, value):
    with pytest.raises(ValueError, match=setting):
        _data(tau, tmp_path, **{setting: value})


def test_missing_dataset_shows_the_expected_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    for base_dir in (tmp_path / "empty", tmp_path / "nowhere"):
        with pytest.raises(LayoutError) as failure:
            Data(base_dir=base_dir, cache_dir=tmp_path / "cache")
        message = str(failure.value)
        assert str(base_dir) in message and FOLDER in message
        assert "fold1_train.csv" in message and "evaluation_setup" in message and "zenodo" in message


def test_missing_split_file_names_it(tau, tmp_path):
    (tau / "evaluation_setup" / "fold1_train.csv").unlink()
    with pytest.raises(LayoutError, match="fold1_train.csv"):
        _data(tau, tmp_path)


def test_comma_separated_tables_are_reported_as_such(tau, tmp_path):
    meta = tau / "meta.csv"
    meta.write_text(meta.read_text().replace("\t", ","))
    with pytest.raises(LayoutError, match="tab"):
        _data(tau, tmp_path)


def test_unix_line_endings_and_a_byte_order_mark_read_the_same(tmp_path):
    root = _write_tau(tmp_path / "unix", line_end="\n")
    meta = root / "meta.csv"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    data = Data(base_dir=root, cache_dir=tmp_path / "cache")
    assert data.class_names == ["airport", "bus", "park"]
    assert len(data.layout.splits["fold1_train"]) == 10


def test_preparation_never_writes_under_base_dir(tau, tmp_path):
    before = _snapshot(tau.parent)
    data = _data(tau, tmp_path, prepare_workers=2)
    data.prepare()
    data.train_set()[0]
    assert _snapshot(tau.parent) == before
    with pytest.raises(ValueError, match="inside the dataset folder"):
        _data(tau, tmp_path, cache_dir=tau / "cache")


def test_changed_settings_build_a_new_cache_and_same_settings_reuse_it(tau, tmp_path):
    first = _data(tau, tmp_path)
    first.prepare()
    files = first.cache_files()
    stamps = {split: path.stat().st_mtime_ns for split, path in files.items()}
    again = _data(tau, tmp_path, clip_length=1.0, train_domains=["a"])
    again.prepare()
    assert again.cache_files() == files
    assert {split: path.stat().st_mtime_ns for split, path in files.items()} == stamps
    other = _data(tau, tmp_path, sample_rate=16000)
    other.prepare()
    assert set(other.cache_files().values()).isdisjoint(files.values())
    assert all(path.exists() for path in [*files.values(), *other.cache_files().values()])
    assert len(other.train_set()[0]["waveform"]) == 160000


def test_items_are_the_same_through_a_loader_worker_process(tau, tmp_path):
    dataset = _data(tau, tmp_path, clip_length=0.25).test_set()
    direct = next(iter(DataLoader(dataset, batch_size=3, num_workers=0)))
    pickle.loads(pickle.dumps(dataset))
    worker = next(iter(DataLoader(dataset, batch_size=3, num_workers=1)))
    torch.testing.assert_close(direct["waveform"], worker["waveform"])
    assert direct["file_name"] == worker["file_name"]
    for key in ("label", "domain", "subdomain"):
        assert torch.equal(direct[key], worker[key])


def test_data_object_pickles(tau, tmp_path):
    data = _data(tau, tmp_path)
    clone = pickle.loads(pickle.dumps(data))
    assert clone.class_names == data.class_names and clone.cache_files() == data.cache_files()


def test_without_base_dir_the_demo_is_built_once_in_the_cache_folder(tmp_path, monkeypatch):
    from datasets.dcase20 import demo

    builds = []
    monkeypatch.setattr(demo, "build", lambda folder: builds.append(folder) or _write_tau(folder))
    data = Data(cache_dir=tmp_path / "cache", prepare_workers=0)
    assert data.is_demo and data.clip_length == demo.CLIP_LENGTH
    assert data.layout.root == tmp_path / "cache" / "demo" / Data.demo_folder / FOLDER
    assert Data(cache_dir=tmp_path / "cache", clip_length=1.5).clip_length == 1.5
    assert len(builds) == 1
    assert len(data.train_set()) == 5


def test_an_interrupted_demo_build_leaves_nothing_and_the_next_run_builds_it(tmp_path, monkeypatch):
    import socket

    from datasets.dcase20 import demo

    def interrupted(folder):
        _write_tau(folder)
        raise KeyboardInterrupt

    demo_parent = tmp_path / "cache" / "demo"
    stale = demo_parent / f"{Data.demo_folder}.{socket.gethostname()}-{2**22 + 7}.partial"
    (stale / "audio").mkdir(parents=True)
    monkeypatch.setattr(demo, "build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Data(cache_dir=tmp_path / "cache")
    assert list(demo_parent.iterdir()) == []
    monkeypatch.setattr(demo, "build", _write_tau)
    assert Data(cache_dir=tmp_path / "cache").class_names == ["airport", "bus", "park"]
    assert [p.name for p in demo_parent.iterdir()] == [Data.demo_folder]


SEEN, UNSEEN = ["a", "b", "c", "s1", "s2", "s3"], ["s4", "s5", "s6"]


def _lodo_files():
    """Two scenes x two training locations recorded on every seen device; one test location on every device."""
    files = []
    for scene in ("bus", "park"):
        for location, fold, devices in ((f"lyon-{scene}1", "train", SEEN), (f"prague-{scene}2", "train", SEEN),
                                        (f"lisbon-{scene}3", "evaluate", SEEN + UNSEEN)):  # fmt: skip
            files += [(f"audio/{scene}-{location}-0-{device}.wav", scene, location, device, fold, (16000, 1, 0.05))
                      for device in devices]  # fmt: skip
    return files


@pytest.mark.parametrize("held_out", SEEN)
def test_leaving_one_seen_device_out_validates_on_the_other_five_and_tests_every_device(tmp_path, held_out):
    files = _lodo_files()
    tau = _write_tau(tmp_path / "downloads", files)
    trained = [device for device in SEEN if device != held_out]
    data = _data(tau, tmp_path, train_domains=trained)
    roles = data.roles()
    device = {f[0]: f[3] for f in files}
    assert data.seen_domains == trained
    assert {device[name] for name in roles["train"]} == {device[name] for name in roles["validation"]} == set(trained)
    assert {device[name] for name in roles["test"]} == set(SEEN + UNSEEN)
    assert len(roles["test"]) == 2 * len(SEEN + UNSEEN)


def test_train_fraction_keeps_a_share_of_each_scene_and_device_and_leaves_validation_and_test(tmp_path):
    files = [(f"audio/{scene}-lyon-{scene}{k}-0-{device}.wav", scene, f"lyon-{scene}{k}", device,
              "train" if k < 5 else "evaluate", (16000, 1, 0.05))
             for scene in ("bus", "park") for k in range(6) for device in ("a", "b")]  # fmt: skip
    tau = _write_tau(tmp_path / "downloads", files)
    full, half = (_data(tau, tmp_path, train_fraction=fraction).roles() for fraction in (1.0, 0.5))
    scene_device = {f[0]: (f[1], f[3]) for f in files}
    counts = Counter(scene_device[name] for name in full["train"])
    assert min(counts.values()) >= 3  # whole locations validate, the others train
    assert Counter(scene_device[name] for name in half["train"]) == {
        stratum: math.ceil(n / 2) for stratum, n in counts.items()}  # fmt: skip
    assert set(half["train"]) < set(full["train"])
    assert half["validation"] == full["validation"] and half["test"] == full["test"]
