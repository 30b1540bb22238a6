"""NSynth: reading the real layout, the family choice, the three roles, the instrument-source protocol, spectrogram
caches."""

import json
import logging

import numpy as np
import pytest
import soundfile
import soxr
import torch

from datasets.metadata import LayoutError
from datasets.nsynth import DEFAULTS, Data

QUALITIES = ["bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic", "nonlinear_env",
             "percussive", "reverb", "tempo-synced"]  # fmt: skip

# split -> [(instrument_str, pitch, velocity)]; synth_lead only in training, as in the real NSynth.
NOTES = {
    "nsynth-train": [
        ("bass_acoustic_000", 30, 50), ("bass_synthetic_001", 33, 100), ("brass_acoustic_002", 60, 75),
        ("brass_electronic_003", 62, 127), ("synth_lead_synthetic_004", 70, 25), ("vocal_acoustic_005", 64, 50),
    ],
    "nsynth-valid": [("bass_electronic_010", 35, 75), ("brass_acoustic_011", 58, 50), ("vocal_synthetic_012", 60, 25)],
    "nsynth-test": [
        ("bass_synthetic_020", 28, 127), ("brass_electronic_021", 65, 100), ("vocal_acoustic_022", 62, 75),
        ("vocal_electronic_023", 66, 50),
    ],
}  # fmt: skip


def _entry(instrument, pitch, velocity, note):
    family, source = instrument.rsplit("_", 2)[0], instrument.rsplit("_", 2)[1]
    return {
        "note": note,
        "note_str": f"{instrument}-{pitch:03d}-{velocity:03d}",
        "instrument": note,
        "instrument_str": instrument,
        "pitch": pitch,
        "velocity": velocity,
        "sample_rate": 16000,
        "qualities": [0] * 10,
        "qualities_str": [],
        "instrument_family": 0,
        "instrument_family_str": family,
        "instrument_source": 0,
        "instrument_source_str": source,
    }


def _write_nsynth(folder, notes=NOTES, seconds=0.2):
    note = 0
    for split, entries in notes.items():
        (folder / split / "audio").mkdir(parents=True)
        examples = {}
        for instrument, pitch, velocity in entries:
            entry = _entry(instrument, pitch, velocity, note)
            t = np.arange(int(16000 * seconds)) / 16000
            tone = 0.3 * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)
            soundfile.write(folder / split / "audio" / f"{entry['note_str']}.wav", tone, 16000, subtype="PCM_16")
            examples[entry["note_str"]] = entry
            note += 1
        (folder / split / "examples.json").write_text(json.dumps(examples))
    return folder


@pytest.fixture
def nsynth(tmp_path):
    return _write_nsynth(tmp_path / "nsynth")


def _data(nsynth, tmp_path, **settings):
    return Data(**{**DEFAULTS, "base_dir": nsynth, "cache_dir": tmp_path / "cache", "prepare_workers": 0, **settings})


def _family_source(instrument):
    family, source, _ = instrument.rsplit("_", 2)
    return family, source


def test_default_families_are_those_present_in_every_split(nsynth, tmp_path):
    data = _data(nsynth, tmp_path)
    assert data.class_names == ["bass", "brass", "vocal"]
    assert data.domain_names == ["acoustic", "electronic", "synthetic"]
    assert data.domain_kind == "instrument_source"
    assert data.clip_length == 4.0
    assert len(data.train_set()) == 5 and len(data.test_set()) == 4


def test_items_carry_family_source_and_instrument(nsynth, tmp_path):
    data = _data(nsynth, tmp_path, clip_length=0.1)
    for dataset, split in ((data.train_set(), "nsynth-train"), (data.test_set(), "nsynth-test")):
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["file_name"].startswith(f"{split}/audio/")
            note_str = item["file_name"].split("/")[-1][: -len(".wav")]
            instrument = note_str.rsplit("-", 2)[0]
            family, source = _family_source(instrument)
            assert data.class_names[item["label"]] == family
            assert data.domain_names[item["domain"]] == source
            assert data.subdomain_names[item["subdomain"]] == instrument
            assert item["waveform"].shape == (3200,)


def test_families_setting_chooses_classes_in_the_given_order(nsynth, tmp_path):
    data = _data(nsynth, tmp_path, families=["vocal", "synth_lead", "bass"])
    assert data.class_names == ["vocal", "synth_lead", "bass"]
    train = data.train_set()
    assert sorted(data.class_names[train[i]["label"]] for i in range(len(train))) == [
        "bass", "bass", "synth_lead", "vocal"]  # fmt: skip


@pytest.mark.parametrize("families", [["bass", "organ"], []])
def test_unknown_families_are_rejected_listing_the_available_ones(nsynth, tmp_path, families):
    with pytest.raises(ValueError, match="families.*synth_lead"):
        _data(nsynth, tmp_path, families=families)


def test_a_single_family_name_must_come_as_a_list(nsynth, tmp_path):
    with pytest.raises(ValueError, match="families='bass': expected a list"):
        _data(nsynth, tmp_path, families="bass")


def test_training_on_acoustic_instruments_evaluates_every_source(nsynth, tmp_path):
    data = _data(nsynth, tmp_path, train_domains=["acoustic"])
    assert data.seen_domains == ["acoustic"]
    train, evaluation = data.train_set(), data.test_set()
    assert {data.domain_names[train[i]["domain"]] for i in range(len(train))} == {"acoustic"}
    assert len(train) == 3
    assert {data.domain_names[evaluation[i]["domain"]] for i in range(len(evaluation))} == {
        "acoustic", "electronic", "synthetic"}  # fmt: skip


def _note_file(split, instrument, pitch, velocity):
    return f"{split}/audio/{instrument}-{pitch:03d}-{velocity:03d}.wav"


def test_roles_are_the_three_split_folders_and_validation_holds_the_training_sources_only(nsynth, tmp_path):
    data = _data(nsynth, tmp_path, train_domains=["acoustic"], clip_length=0.1)
    roles = data.roles()
    # by hand from NOTES: the acoustic notes of bass, brass and vocal in training; the one acoustic validation
    # note; every test note of the three families
    assert sorted(roles["train"]) == sorted(
        _note_file("nsynth-train", *note) for note in [NOTES["nsynth-train"][i] for i in (0, 2, 5)]
    )
    assert roles["validation"] == [_note_file("nsynth-valid", "brass_acoustic_011", 58, 50)]
    assert sorted(roles["test"]) == sorted(_note_file("nsynth-test", *note) for note in NOTES["nsynth-test"])
    validation = data.validation_set()
    assert len(validation) == 1 and data.domain_names[validation[0]["domain"]] == "acoustic"
    assert validation.file_names() == roles["validation"]
    assert set(roles["validation"]).isdisjoint(roles["test"]) and set(roles["train"]).isdisjoint(roles["test"])
    assert data.group_names == ("in-domain sources", "out-of-domain sources")
    assert set(data.cache_files()) == {"nsynth-train", "nsynth-valid", "nsynth-test"}


def test_validation_is_cropped_from_the_start_like_test(nsynth, tmp_path):
    data = _data(nsynth, tmp_path, clip_length=0.05)
    validation = data.validation_set()
    item = validation[0]
    samples, rate = soundfile.read(nsynth / item["file_name"], dtype="float32")
    expected = soxr.resample(samples, rate, 32000, quality="HQ")[:1600]
    np.testing.assert_allclose(item["waveform"].numpy(), expected, atol=2e-4)
    np.testing.assert_array_equal(validation[0]["waveform"], validation[0]["waveform"])


def test_test_split_chooses_the_folder_reported(nsynth, tmp_path):
    data = _data(nsynth, tmp_path, test_split="nsynth-valid", validation_split="nsynth-test")
    assert sorted(data.roles()["test"]) == sorted(_note_file("nsynth-valid", *note) for note in NOTES["nsynth-valid"])


def test_validation_on_the_test_split_is_called_oracle_selection(nsynth, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="datasets.base"):
        _data(nsynth, tmp_path, validation_split="nsynth-test")
    assert "The validation and test sets share 4 files" in caplog.text and "oracle" in caplog.text


def test_a_family_without_training_notes_of_the_training_sources_is_refused_by_name(nsynth, tmp_path):
    families = ["bass", "synth_lead", "vocal"]
    with pytest.raises(ValueError) as failure:
        _data(nsynth, tmp_path, families=families, train_domains=["acoustic"])
    message = str(failure.value)
    assert "the classes ['synth_lead'] have no training clip of the training instrument_sources ['acoustic']" in message
    assert "'synth_lead': training clips only of the instrument_sources ['synthetic']" in message
    assert "basedataset.families" in message and "drop_untrained_classes=True" in message


def test_drop_untrained_classes_leaves_them_out_of_every_role(nsynth, tmp_path):
    families = ["brass", "synth_lead", "vocal"]
    data = _data(nsynth, tmp_path, families=families, train_domains=["acoustic"], drop_untrained_classes=True)
    assert data.class_names == ["brass", "vocal"]
    roles = data.roles()
    assert sorted(roles["train"]) == sorted(
        [
            _note_file("nsynth-train", "brass_acoustic_002", 60, 75),
            _note_file("nsynth-train", "vocal_acoustic_005", 64, 50),
        ]
    )
    assert roles["validation"] == [_note_file("nsynth-valid", "brass_acoustic_011", 58, 50)]
    assert sorted(roles["test"]) == sorted(_note_file("nsynth-test", *note) for note in NOTES["nsynth-test"][1:])


def test_a_validation_split_without_notes_of_the_training_sources_is_refused(nsynth, tmp_path):
    # nsynth-valid holds an electronic bass and a synthetic vocal note only
    with pytest.raises(ValueError, match=r"the validation set is empty: its clips \(split 'nsynth-valid'\) are of the "
                       r"instrument_sources \['electronic', 'synthetic'\], none of the training instrument_sources "
                       r"\['acoustic'\]"):  # fmt: skip
        _data(nsynth, tmp_path, families=["bass", "vocal"], train_domains=["acoustic"])


def test_base_dir_may_hold_an_nsynth_folder(nsynth, tmp_path):
    assert _data(nsynth, tmp_path, base_dir=nsynth.parent).layout.root == nsynth


def test_missing_splits_show_the_expected_layout(nsynth, tmp_path):
    with pytest.raises(LayoutError, match="(?s)does not exist.*magenta.*nsynth-train/.*examples.json"):
        Data(base_dir=tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    with pytest.raises(LayoutError, match="split folder itself.*point base_dir at its parent"):
        Data(base_dir=nsynth / "nsynth-train", cache_dir=tmp_path / "cache")
    (nsynth / "nsynth-test" / "examples.json").unlink()
    with pytest.raises(LayoutError, match="nsynth-test/examples.json"):
        _data(nsynth, tmp_path)


def test_malformed_examples_json_is_reported(nsynth, tmp_path):
    path = nsynth / "nsynth-valid" / "examples.json"
    path.write_text('{"bass_electronic_010-035-075": {"pitch": 35}}')
    with pytest.raises(LayoutError, match="instrument_family_str"):
        _data(nsynth, tmp_path)
    path.write_text("{not json")
    with pytest.raises(LayoutError, match="not valid JSON"):
        _data(nsynth, tmp_path)


def test_spectrogram_cache_holds_the_eval_mode_log_mel_of_each_clip(nsynth, tmp_path):
    from models.preprocess import AugmentMelSTFT

    mel = {"n_mels": 64, "sr": 32000}
    with pytest.raises(ValueError, match="mel settings"):
        _data(nsynth, tmp_path, cache_format="spectrogram")
    with pytest.raises(ValueError, match="sr=16000.*32000"):
        _data(nsynth, tmp_path, cache_format="spectrogram", mel={"sr": 16000})
    spectra = _data(nsynth, tmp_path, cache_format="spectrogram", mel=mel, clip_length=0.5).test_set()
    frontend = AugmentMelSTFT(**mel).eval()
    silence = float(frontend(torch.zeros(1, 3200))[0].min())
    for i in range(len(spectra)):
        item = spectra[i]
        assert item["spectrogram"].shape == (64, frontend.frames_for(16000))
        samples, rate = soundfile.read(nsynth / item["file_name"], dtype="float32")
        clip = torch.from_numpy(soxr.resample(samples, rate, 32000, quality="HQ"))
        expected = frontend(clip[None])[0]
        n = expected.shape[1]
        torch.testing.assert_close(item["spectrogram"][:, :n], expected, atol=0.005, rtol=0)
        torch.testing.assert_close(item["spectrogram"][:, n:], torch.full((64, 50 - n), silence), atol=0.005, rtol=0)


# Leave-one-source-out: two families with a note of every source in every split (note numbers differ per split).
LODO_NOTES = {
    split: [(f"{family}_{source}_{offset + i}", 40 + i, 75)
            for i, (family, source) in enumerate((f, s) for f in ("bass", "brass")
                                                 for s in ("acoustic", "electronic", "synthetic"))]
    for split, offset in (("nsynth-train", 100), ("nsynth-valid", 200), ("nsynth-test", 300))
}  # fmt: skip


@pytest.mark.parametrize("held_out", ["acoustic", "electronic", "synthetic"])
def test_leaving_one_source_out_validates_on_the_other_two_and_tests_all_three(tmp_path, held_out):
    folder = _write_nsynth(tmp_path / "nsynth", notes=LODO_NOTES, seconds=0.05)
    trained = [source for source in ("acoustic", "electronic", "synthetic") if source != held_out]
    data = _data(folder, tmp_path, train_domains=trained)
    roles = data.roles()

    def sources(names):
        return {_family_source(name.split("/")[-1].rsplit("-", 2)[0])[1] for name in names}

    assert data.seen_domains == trained and data.class_names == ["bass", "brass"]
    assert sources(roles["train"]) == sources(roles["validation"]) == set(trained)
    assert sources(roles["test"]) == {"acoustic", "electronic", "synthetic"} and len(roles["test"]) == 6


def test_leaving_out_acoustic_refuses_the_vocal_family_naming_drop_untrained_classes(nsynth, tmp_path):
    # NOTES' only training vocal note is acoustic
    with pytest.raises(ValueError, match=r"\['vocal'\] have no training clip.*drop_untrained_classes=True"):
        _data(nsynth, tmp_path, train_domains=["electronic", "synthetic"])
    data = _data(nsynth, tmp_path, train_domains=["electronic", "synthetic"], drop_untrained_classes=True)
    assert data.class_names == ["bass", "brass"]
