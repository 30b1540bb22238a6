"""TAU Urban Acoustic Scenes 2020 Mobile: reading the real layout, items, domain restriction, caching."""

import pickle

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from datasets.dcase20 import DEFAULTS, Data
from datasets.metadata import LayoutError

FOLDER = "TAU-urban-acoustic-scenes-2020-mobile-development"

# (filename, scene, identifier, device, fold, (file rate, channels, seconds))
FILES = [
    ("audio/airport-barcelona-0-0-a.wav", "airport", "barcelona-0", "a", "train", (44100, 1, 0.25)),
    ("audio/airport-barcelona-0-0-b.wav", "airport", "barcelona-0", "b", "train", (44100, 1, 0.25)),
    ("audio/bus-lyon-1-5-a.wav", "bus", "lyon-1", "a", "train", (48000, 2, 0.25)),
    ("audio/bus-lyon-1-5-s2.wav", "bus", "lyon-1", "s2", "train", (44100, 1, 0.05)),
    ("audio/park-prague-2-9-a.wav", "park", "prague-2", "a", "evaluate", (44100, 1, 0.25)),
    ("audio/park-prague-2-9-s5.wav", "park", "prague-2", "s5", "evaluate", (16000, 1, 0.4)),
    ("audio/bus-barcelona-3-11-c.wav", "bus", "barcelona-3", "c", "evaluate", (44100, 1, 0.25)),
    ("audio/airport-lyon-4-12-a.wav", "airport", "lyon-4", "a", None, (44100, 1, 0.25)),
]


def _write_tau(parent, files=FILES, line_end="\r\n"):
    """The TAU layout as zenodo ships it: tab-separated tables with header lines, audio/ and evaluation_setup/."""
    root = parent / FOLDER
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    for i, (name, _, _, _, _, (rate, channels, seconds)) in enumerate(files):
        t = np.arange(int(rate * seconds)) / rate
        tone = 0.25 * np.sin(2 * np.pi * (200 + 50 * i) * t)
        soundfile.write(root / name, np.stack([tone] * channels, axis=1), rate, subtype="PCM_24")

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
    assert data.subdomain_names == ["barcelona", "lyon", "prague"]
    assert data.seen_domains == ["a", "b", "s2"]
    assert data.domain_kind == "device"
    assert data.clip_length == 10.0


def test_base_dir_may_be_the_dataset_folder_or_its_parent(tau, tmp_path):
    assert _data(tau, tmp_path).layout.root == _data(tau, tmp_path, base_dir=tau).layout.root == tau


def test_items_carry_the_labels_of_meta_csv(tau, tmp_path):
    data = _data(tau, tmp_path, clip_length=0.2)
    for dataset, fold in ((data.train_set(), "train"), (data.eval_set(), "evaluate")):
        expected = {f[0]: f for f in FILES if f[4] == fold}
        items = [dataset[i] for i in range(len(dataset))]
        assert sorted(item["file_name"] for item in items) == sorted(expected)
        for item in items:
            name, scene, identifier, device, _, _ = expected[item["file_name"]]
            assert data.class_names[item["label"]] == scene
            assert data.domain_names[item["domain"]] == device
            assert data.subdomain_names[item["subdomain"]] == identifier.split("-")[0]
            assert item["waveform"].dtype == torch.float32 and item["waveform"].shape == (6400,)


def test_clips_are_resampled_downmixed_and_padded_to_clip_length(tau, tmp_path):
    data = _data(tau, tmp_path, clip_length=0.3)
    items = {item["file_name"]: item["waveform"] for item in (data.train_set()[i] for i in range(4))}
    stereo = items["audio/bus-lyon-1-5-a.wav"].numpy()
    assert np.abs(stereo[:8000]).max() == pytest.approx(0.25, abs=0.01)
    assert np.all(stereo[8000:] == 0)
    short = items["audio/bus-lyon-1-5-s2.wav"].numpy()
    assert np.abs(short[100:1500]).max() > 0.2 and np.all(short[1601:] == 0)


def test_eval_crop_is_the_start_and_train_crop_a_window_of_the_clip(tau, tmp_path):
    full = _data(tau, tmp_path, clip_length=0.25)
    short = _data(tau, tmp_path, clip_length=0.1)
    clip = full.eval_set()[0]["waveform"].numpy()
    np.testing.assert_array_equal(short.eval_set()[0]["waveform"].numpy(), clip[:3200])
    train_full = full.train_set()[0]["waveform"].numpy()
    torch.manual_seed(3)
    windows = {tuple(short.train_set()[0]["waveform"].numpy()[:5]) for _ in range(20)}
    assert len(windows) > 1
    for window in windows:
        starts = [s for s in range(len(train_full) - 3200 + 1) if tuple(train_full[s : s + 5]) == window]
        assert starts


def test_train_domains_restrict_training_only(tau, tmp_path):
    data = _data(tau, tmp_path, train_domains=["a"])
    assert data.seen_domains == ["a"]
    train = data.train_set()
    assert {data.domain_names[train[i]["domain"]] for i in range(len(train))} == {"a"}
    assert len(train) == 2
    assert {data.domain_names[data.eval_set()[i]["domain"]] for i in range(3)} == {"a", "c", "s5"}


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
    assert len(data.layout.splits["fold1_train"]) == 4


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
    dataset = _data(tau, tmp_path, clip_length=0.25).eval_set()
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
    assert len(data.train_set()) == 4


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
