"""The demo datasets: real layouts, seeded generation, roles, and signals that carry the task and the domain shift."""

import csv
import hashlib
import json

import numpy as np
import pytest
import soundfile

from datasets import dcase20, nsynth
from datasets.dcase20 import demo as tau_demo
from datasets.nsynth import demo as nsynth_demo


def test_tau_demo_signals_are_seeded():
    first = tau_demo.record(tau_demo.scene_segment("tram", 3, 7), "s4", 7)
    again = tau_demo.record(tau_demo.scene_segment("tram", 3, 7), "s4", 7)
    other_segment = tau_demo.record(tau_demo.scene_segment("tram", 3, 8), "s4", 8)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other_segment)
    assert first.shape == (round(tau_demo.CLIP_LENGTH * tau_demo.SAMPLE_RATE),) and np.abs(first).max() <= 1


def test_nsynth_demo_notes_are_seeded():
    first = nsynth_demo.render("reed", "electronic", 5, 60, 75)
    np.testing.assert_array_equal(first, nsynth_demo.render("reed", "electronic", 5, 60, 75))
    assert not np.allclose(first, nsynth_demo.render("reed", "electronic", 6, 60, 75))
    assert first.shape == (64000,) and np.abs(first).max() <= 1


def _tree_digest(folder):
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def _log_band_features(waveform, sample_rate, n_fft=1024, n_bands=40):
    """Mean and spread over time of log energies in log-spaced bands (plain numpy)."""
    frames = np.lib.stride_tricks.sliding_window_view(waveform, n_fft)[::n_fft] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.unique(np.geomspace(2, n_fft // 2, n_bands + 1).astype(int))
    bands = np.log(np.stack([power[:, lo:hi].sum(1) for lo, hi in zip(edges[:-1], edges[1:], strict=True)], 1) + 1e-10)
    return np.concatenate([bands.mean(0), bands.std(0)])


def _nearest_centroid_accuracy(train, evaluation, sample_rate):
    """Per-domain accuracy of a nearest-class-mean classifier on log-band features."""
    x_train = np.stack([_log_band_features(item["waveform"].numpy(), sample_rate) for item in train])
    x_eval = np.stack([_log_band_features(item["waveform"].numpy(), sample_rate) for item in evaluation])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_eval = (x_train - mean) / std, (x_eval - mean) / std
    y_train = np.array([item["label"] for item in train])
    classes = np.unique(y_train)
    centroids = np.stack([x_train[y_train == c].mean(0) for c in classes])
    predicted = classes[np.argmin(((x_eval[:, None] - centroids[None]) ** 2).sum(-1), 1)]
    correct = predicted == np.array([item["label"] for item in evaluation])
    domains = np.array([item["domain"] for item in evaluation])
    return {int(d): float(correct[domains == d].mean()) for d in np.unique(domains)}, float(correct.mean())


@pytest.fixture(scope="module")
def tau_data(tmp_path_factory):
    return dcase20.Data(cache_dir=tmp_path_factory.mktemp("cache"), clip_length=None)


@pytest.fixture(scope="module")
def nsynth_data(tmp_path_factory):
    return nsynth.Data(cache_dir=tmp_path_factory.mktemp("cache"), train_domains=["acoustic"])


@pytest.mark.slow
def test_tau_demo_has_the_real_layout_and_device_protocol(tau_data):
    root = tau_data.layout.root
    assert root.name == "TAU-urban-acoustic-scenes-2020-mobile-development"
    assert root.is_relative_to(tau_data.cache_dir / "demo")
    meta = list(csv.DictReader(open(root / "meta.csv"), delimiter="\t"))
    folds = {
        fold: list(csv.DictReader(open(root / "evaluation_setup" / f"fold1_{fold}.csv"), delimiter="\t"))
        for fold in ("train", "evaluate", "test")
    }
    device = {row["filename"]: row["source_label"] for row in meta}
    assert {device[row["filename"]] for row in folds["train"]} == {"a", "b", "c", "s1", "s2", "s3"}
    assert {device[row["filename"]] for row in folds["evaluate"]} == {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}
    assert [row["filename"] for row in folds["test"]] == [row["filename"] for row in folds["evaluate"]]
    assert len({row["scene_label"] for row in meta}) == 10
    info = soundfile.info(root / meta[0]["filename"])
    assert (info.samplerate, info.channels, info.subtype, info.duration) == (44100, 1, "PCM_24", 2.0)
    assert tau_data.clip_length == 2.0 and tau_data.seen_domains == ["a", "b", "c", "s1", "s2", "s3"]


@pytest.mark.slow
def test_tau_demo_validation_holds_out_whole_locations_of_every_scene_and_device(tau_data):
    root = tau_data.layout.root
    meta = {row["filename"]: row for row in csv.DictReader(open(root / "meta.csv"), delimiter="\t")}
    roles = tau_data.roles()
    # 10 scenes x 6 training locations x 6 devices; 15 % of a scene's 36 clips is nearest one location (6)
    assert len(roles["train"]) == 300 and len(roles["validation"]) == 60 and len(roles["test"]) == 180
    locations = {role: {meta[name]["identifier"] for name in names} for role, names in roles.items()}
    assert not locations["train"] & locations["validation"]
    for role in ("train", "validation"):
        assert {meta[name]["scene_label"] for name in roles[role]} == set(tau_data.class_names)
        assert {meta[name]["source_label"] for name in roles[role]} == {"a", "b", "c", "s1", "s2", "s3"}
    assert {meta[name]["source_label"] for name in roles["test"]} >= {"s4", "s5", "s6"}
    assert set(roles["test"]).isdisjoint(roles["train"] + roles["validation"])


@pytest.mark.slow
def test_nsynth_demo_has_the_real_layout_and_disjoint_instruments(nsynth_data):
    root = nsynth_data.layout.root
    examples = {split: json.loads((root / split / "examples.json").read_text()) for split in nsynth_demo.SPLIT_SIZES}
    instruments = {split: {e["instrument_str"] for e in entries.values()} for split, entries in examples.items()}
    assert not instruments["nsynth-train"] & instruments["nsynth-test"]
    assert not instruments["nsynth-train"] & instruments["nsynth-valid"]
    families = {split: {e["instrument_family_str"] for e in entries.values()} for split, entries in examples.items()}
    assert "synth_lead" in families["nsynth-train"] and "synth_lead" not in families["nsynth-test"]
    assert nsynth_data.class_names == sorted(families["nsynth-test"]) and len(nsynth_data.class_names) == 10
    roles = nsynth_data.roles()  # trained on acoustic instruments: validation holds acoustic notes only
    assert len(roles["train"]) == 10 * 2 * 10 and len(roles["validation"]) == 10 * 5 and len(roles["test"]) == 210
    validation_sources = {examples["nsynth-valid"][name.split("/")[-1][:-4]]["instrument_source_str"]
                          for name in roles["validation"]}  # fmt: skip
    assert validation_sources == {"acoustic"}
    note, entry = next(iter(examples["nsynth-test"].items()))
    assert note == entry["note_str"] == f"{entry['instrument_str']}-{entry['pitch']:03d}-{entry['velocity']:03d}"
    info = soundfile.info(root / "nsynth-test" / "audio" / f"{note}.wav")
    assert (info.samplerate, info.channels, info.subtype, info.duration) == (16000, 1, "PCM_16", 4.0)


@pytest.mark.slow
def test_tau_demo_scenes_are_learnable_and_unseen_devices_harder(tau_data):
    per_device, overall = _nearest_centroid_accuracy(tau_data.train_set(), tau_data.test_set(), 32000)
    names = tau_data.domain_names
    unseen = np.mean([per_device[names.index(d)] for d in ("s4", "s5", "s6")])
    seen = np.mean([per_device[names.index(d)] for d in ("b", "c", "s1", "s2", "s3")])
    assert overall > 0.45 and per_device[names.index("a")] > 0.7
    assert unseen < seen - 0.15


@pytest.mark.slow
def test_nsynth_demo_families_are_learnable_and_other_sources_harder(nsynth_data):
    per_source, overall = _nearest_centroid_accuracy(nsynth_data.train_set(), nsynth_data.test_set(), 32000)
    acoustic = per_source[nsynth_data.domain_names.index("acoustic")]
    others = np.mean([per_source[nsynth_data.domain_names.index(s)] for s in ("electronic", "synthetic")])
    assert overall > 0.4 and acoustic > 0.55
    assert others < acoustic - 0.05


@pytest.mark.slow
@pytest.mark.parametrize("package", [dcase20, nsynth])
def test_demo_generation_is_deterministic_and_happens_once(tmp_path, package, request):
    data = request.getfixturevalue("tau_data" if package is dcase20 else "nsynth_data")
    folder = data.cache_dir / "demo" / package.Data.demo_folder
    stamp = folder.stat().st_mtime_ns
    package.Data(cache_dir=data.cache_dir)
    assert folder.stat().st_mtime_ns == stamp
    package.demo.build(tmp_path)
    assert _tree_digest(tmp_path) == _tree_digest(folder)
