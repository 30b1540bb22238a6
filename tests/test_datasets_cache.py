"""HDF5 cache: round trip, atomic writing, interrupted and failed preparations, validation on open."""

import json
import os
import socket

import h5py
import numpy as np
import pytest
import soundfile

import datasets.audio
from datasets.cache import BadFilesError, CacheError, CacheSpec, Clip, build_cache, open_cache

RATE = 32000


def _spec(root, **changes):
    settings = dict(
        dataset="toy",
        split="train",
        source=str(root),
        sample_rate=RATE,
        cache_format="waveform",
        audio_dtype="int16",
        resample_quality="HQ",
    )
    return CacheSpec(**{**settings, **changes})


@pytest.fixture
def toy(tmp_path):
    """Five PCM_16 files of different lengths with known integer samples, and their clips."""
    root = tmp_path / "data"
    (root / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    samples, clips = {}, []
    for i, (length, label, device) in enumerate(
        [(500, "x", "a"), (1200, "y", "b"), (64, "x", "b"), (3000, "z", "a"), (7, "y", "c")]
    ):
        path = f"audio/f{i}.wav"
        samples[path] = rng.integers(-30000, 30000, length).astype(np.int16)
        soundfile.write(root / path, samples[path], RATE, subtype="PCM_16")
        clips.append(Clip(path=path, label=label, domain=device, subdomain=f"city{i % 2}"))
    return root, clips, samples


def _read_all(path, name="audio"):
    with h5py.File(path, "r") as file:
        return file[name][:], file["offsets"][:], json.loads(file.attrs["record"])


def test_round_trip_stores_every_clip_exactly_with_its_labels(tmp_path, toy):
    root, clips, samples = toy
    path = tmp_path / "cache" / "train.h5"
    build_cache(path, _spec(root), clips, root, workers=0)
    index = open_cache(path)
    audio, offsets, record = _read_all(path)
    lengths = [len(samples[clip.path]) for clip in clips]
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(lengths)]))
    np.testing.assert_array_equal(audio, np.concatenate([samples[clip.path] for clip in clips]))
    assert [index.label_names[i] for i in index.labels] == [clip.label for clip in clips]
    assert [index.domain_names[i] for i in index.domains] == [clip.domain for clip in clips]
    assert [index.subdomain_names[i] for i in index.subdomains] == [clip.subdomain for clip in clips]
    assert index.scale == 1 / 32768
    assert record["n_clips"] == 5 and record["n_skipped"] == 0 and record["source"] == str(root)
    assert record["sample_rate"] == RATE and record["cache_format"] == "waveform" and "prep_version" in record
    with h5py.File(path, "r") as file:
        assert list(file["file_names"].asstr()[:]) == [clip.path for clip in clips]


def test_float16_storage_holds_the_decoded_values(tmp_path, toy):
    root, clips, samples = toy
    path = tmp_path / "c.h5"
    build_cache(path, _spec(root, audio_dtype="float16"), clips, root, workers=0)
    audio, _, _ = _read_all(path)
    expected = np.concatenate([samples[clip.path] / 32768.0 for clip in clips]).astype(np.float16)
    np.testing.assert_array_equal(audio, expected)
    assert open_cache(path).scale == 1.0


def test_worker_processes_write_the_same_cache_as_the_main_process(tmp_path, toy):
    root, clips, _ = toy
    build_cache(tmp_path / "serial.h5", _spec(root), clips, root, workers=0)
    build_cache(tmp_path / "parallel.h5", _spec(root), clips, root, workers=2)
    serial, parallel = _read_all(tmp_path / "serial.h5"), _read_all(tmp_path / "parallel.h5")
    np.testing.assert_array_equal(serial[0], parallel[0])
    np.testing.assert_array_equal(serial[1], parallel[1])


def test_cache_name_changes_with_any_setting_and_with_the_file_list(tmp_path, toy):
    root, clips, _ = toy
    base = _spec(root).path(tmp_path, clips)
    assert base == _spec(root).path(tmp_path, list(clips))
    changed = [
        _spec(root, sample_rate=16000),
        _spec(root, audio_dtype="float16"),
        _spec(root, resample_quality="VHQ"),
        _spec(root, source=str(root / "elsewhere")),
        _spec(root, cache_format="spectrogram", mel={"n_mels": 64}),
    ]
    names = {spec.path(tmp_path, clips) for spec in changed}
    names.add(_spec(root).path(tmp_path, clips[:-1]))
    names.add(_spec(root).path(tmp_path, [*clips[:-1], Clip(clips[-1].path, "x", "c", "city0")]))
    assert base not in names and len(names) == 7


def test_an_interrupted_preparation_leaves_nothing_and_can_be_rerun(tmp_path, toy, monkeypatch):
    root, clips, samples = toy
    path = tmp_path / "cache" / "train.h5"
    real_load = datasets.audio.load_audio
    calls = []

    def crash_on_third_file(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_load(*args, **kwargs)

    monkeypatch.setattr(datasets.audio, "load_audio", crash_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        build_cache(path, _spec(root), clips, root, workers=0)
    assert not path.exists() and list(path.parent.iterdir()) == []

    monkeypatch.setattr(datasets.audio, "load_audio", real_load)
    build_cache(path, _spec(root), clips, root, workers=0)
    audio, _, _ = _read_all(path)
    np.testing.assert_array_equal(audio, np.concatenate([samples[clip.path] for clip in clips]))


def test_partial_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path, toy):
    root, clips, _ = toy
    path = tmp_path / "train.h5"
    host = socket.gethostname()
    dead = tmp_path / f"train.h5.{host}-{2**22 + 12345}.partial"
    alive = tmp_path / f"train.h5.{host}-{os.getppid()}.partial"
    dead.write_bytes(b"half a file")
    alive.write_bytes(b"another process at work")
    build_cache(path, _spec(root), clips, root, workers=0)
    assert not dead.exists() and alive.exists()
    assert len(open_cache(path)) == 5


def test_missing_and_empty_files_stop_preparation_before_decoding(tmp_path, toy):
    root, clips, _ = toy
    (root / clips[1].path).write_bytes(b"")
    missing = Clip("audio/not_there.wav", "x", "a", "city0")
    path = tmp_path / "train.h5"
    with pytest.raises(BadFilesError) as failure:
        build_cache(path, _spec(root), [*clips, missing], root, workers=2)
    message = str(failure.value)
    assert "2 of 6 files" in message and "audio/not_there.wav" in message and clips[1].path in message
    assert "skip_bad_files" in message
    assert not path.exists() and list(tmp_path.glob("*.partial")) == []


def test_undecodable_file_stops_preparation_and_a_fixed_dataset_then_prepares(tmp_path, toy):
    root, clips, samples = toy
    good = (root / clips[3].path).read_bytes()
    (root / clips[3].path).write_bytes(b"RIFF garbage that is not a wave file")
    path = tmp_path / "train.h5"
    with pytest.raises(BadFilesError, match=f"1 of 5 files.*\\n  {clips[3].path}: "):
        build_cache(path, _spec(root), clips, root, workers=2)
    assert not path.exists() and list(tmp_path.glob("*.partial")) == []
    (root / clips[3].path).write_bytes(good)
    build_cache(path, _spec(root), clips, root, workers=2)
    audio, _, _ = _read_all(path)
    np.testing.assert_array_equal(audio, np.concatenate([samples[clip.path] for clip in clips]))


def test_skip_bad_files_leaves_them_out_and_records_them(tmp_path, toy):
    root, clips, samples = toy
    (root / clips[1].path).write_bytes(b"")
    (root / clips[3].path).write_bytes(b"RIFF garbage that is not a wave file")
    missing = Clip("audio/not_there.wav", "x", "a", "city0")
    path = tmp_path / "train.h5"
    build_cache(path, _spec(root), [*clips, missing], root, workers=0, skip_bad_files=True)
    audio, offsets, record = _read_all(path)
    kept = [clips[0], clips[2], clips[4]]
    np.testing.assert_array_equal(audio, np.concatenate([samples[clip.path] for clip in kept]))
    assert record["n_clips"] == 3 and record["n_skipped"] == 3
    assert sorted(entry["file"] for entry in record["skipped"]) == sorted([clips[1].path, clips[3].path, missing.path])
    index = open_cache(path)
    assert [index.label_names[i] for i in index.labels] == [clip.label for clip in kept]


def test_a_long_list_of_bad_files_shows_the_first_few_and_the_count(tmp_path, toy):
    root, clips, _ = toy
    missing = [Clip(f"audio/gone{i}.wav", "x", "a", "city0") for i in range(8)]
    with pytest.raises(BadFilesError) as failure:
        build_cache(tmp_path / "t.h5", _spec(root), clips + missing, root, workers=0)
    message = str(failure.value)
    assert "8 of 13 files" in message and "audio/gone0.wav" in message and "... and 3 more" in message
    assert "audio/gone7.wav" not in message


def test_truncated_cache_file_is_reported_with_how_to_rebuild(tmp_path, toy):
    root, clips, _ = toy
    path = tmp_path / "train.h5"
    build_cache(path, _spec(root), clips, root, workers=0)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(CacheError, match=f"{path}.*Delete {path}"):
        open_cache(path)


@pytest.mark.parametrize("damage", ["drop labels", "drop audio", "wrong count", "bad offsets"])
def test_inconsistent_cache_file_is_reported(tmp_path, toy, damage):
    root, clips, _ = toy
    path = tmp_path / "train.h5"
    build_cache(path, _spec(root), clips, root, workers=0)
    with h5py.File(path, "a") as file:
        if damage == "drop labels":
            del file["labels"]
        elif damage == "drop audio":
            del file["audio"]
        elif damage == "wrong count":
            record = json.loads(file.attrs["record"])
            file.attrs["record"] = json.dumps({**record, "n_clips": 4})
        else:
            file["offsets"][-1] = 3
    with pytest.raises(CacheError, match=f"Cache file {path} is not usable.*Delete"):
        open_cache(path)


def test_spectrogram_cache_stores_the_features_of_each_clip(tmp_path, toy):
    root, clips, samples = toy

    def features(waveform):
        frames = len(waveform) // 100 + 1
        return np.stack([np.full(4, waveform[:100].sum()) + np.arange(4) for _ in range(frames)])

    path = tmp_path / "spec.h5"
    build_cache(
        path, _spec(root, cache_format="spectrogram", mel={"n_mels": 4}), clips, root, workers=0, features=features
    )
    spectrogram, offsets, _ = _read_all(path, "spectrogram")
    index = open_cache(path)
    assert spectrogram.shape[1] == 4 and spectrogram.dtype == np.float16
    for i, clip in enumerate(clips):
        x = samples[clip.path] / 32768.0
        rows = spectrogram[offsets[i] : offsets[i + 1]]
        assert len(rows) == len(x) // 100 + 1
        np.testing.assert_allclose(rows[0], np.float16(x[:100].sum() + np.arange(4)), rtol=1e-3, atol=1e-3)
    assert index.pad_value == 0.0 and index.cache_format == "spectrogram"
