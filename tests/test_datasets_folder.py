"""Your own dataset: the CSV format and its roles, the seeded stratified hold-out, caching, bad input, and ex_folder
end to end."""

import hashlib
import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from datasets import folder as folder_package
from datasets.cache import BadFilesError
from datasets.folder import DEFAULTS, Data
from datasets.metadata import LayoutError

REPO = Path(__file__).resolve().parents[1]

LISTING = [  # filename, label, domain, split
    ("dog/1.wav", "dog", "phone", "train"),
    ("dog/2.wav", "dog", "studio", "train"),
    ("dog/3.wav", "dog", "phone", "eval"),
    ("dog/4.wav", "dog", "studio", "validation"),
    ("cat/1.wav", "cat", "phone", "train"),
    ("cat/2.wav", "cat", "studio", "Validation"),
    ("cat/3.wav", "cat", "studio", "train"),
    ("cat/4.wav", "cat", "phone", "VALIDATION"),
    ("bird/1.wav", "bird", "studio", "train"),
    ("bird/2.wav", "bird", "phone", "TEST"),
]


def _write_wavs(folder, names, seconds=0.1, rate=16000):
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(rate * seconds)) / rate
        soundfile.write(path, 0.2 * np.sin(2 * np.pi * (300 + 50 * i) * t), rate, subtype="PCM_16")


def _folder(tmp_path, text, names=tuple(row[0] for row in LISTING), csv_name="metadata.csv"):
    folder = tmp_path / "mine"
    folder.mkdir(exist_ok=True)
    _write_wavs(folder, names)
    (folder / csv_name).write_text(text, encoding="utf-8")
    return folder


def _table(rows, columns=("filename", "label", "domain", "split"), separator=","):
    lines = [separator.join(columns)] + [separator.join(row[: len(columns)]) for row in rows]
    return "\n".join(lines) + "\n"


def _data(folder, tmp_path, **settings):
    return Data(**{**DEFAULTS, "base_dir": folder, "cache_dir": tmp_path / "cache", "prepare_workers": 0, **settings})


def _files(dataset, data):
    """{file_name: (label name, domain name)} of a torch dataset's items."""
    items = (dataset[i] for i in range(len(dataset)))
    return {item["file_name"]: (data.class_names[item["label"]], data.domain_names[item["domain"]]) for item in items}


# ---------------------------------------------------------------- the CSV format


@pytest.mark.parametrize("separator", [",", "\t"])
def test_comma_and_tab_separated_listings_give_the_same_roles(tmp_path, separator):
    data = _data(_folder(tmp_path, _table(LISTING, separator=separator)), tmp_path, clip_length=0.1)
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.domain_names == ["phone", "studio"]
    assert data.subdomain_names == ["-"]
    assert data.domain_kind == "domain" and data.group_names == ("seen domains", "unseen domains")
    assert _files(data.train_set(), data) == {
        "dog/1.wav": ("dog", "phone"), "dog/2.wav": ("dog", "studio"), "cat/1.wav": ("cat", "phone"),
        "cat/3.wav": ("cat", "studio"), "bird/1.wav": ("bird", "studio")}  # fmt: skip
    # validation in any case; eval and test (any case) are the test role
    assert _files(data.validation_set(), data) == {
        "dog/4.wav": ("dog", "studio"), "cat/2.wav": ("cat", "studio"), "cat/4.wav": ("cat", "phone")}  # fmt: skip
    assert _files(data.test_set(), data) == {"dog/3.wav": ("dog", "phone"), "bird/2.wav": ("bird", "phone")}
    assert {role: sorted(names) for role, names in data.roles().items()} == {
        "train": ["bird/1.wav", "cat/1.wav", "cat/3.wav", "dog/1.wav", "dog/2.wav"],
        "validation": ["cat/2.wav", "cat/4.wav", "dog/4.wav"],
        "test": ["bird/2.wav", "dog/3.wav"],
    }


def test_header_case_extra_columns_quoting_bom_crlf_and_blank_lines_are_tolerated(tmp_path):
    text = (
        "\ufeffFileName,Duration,LABEL,Split\r\n"
        '"dog/1.wav",1.0," dog, barking ",train\r\n'
        "\r\n"
        '"./dog/2.wav",2.5,"dog, barking",eval\r\n'
        '"dog/3.wav",0.5,"dog, barking",validation\r\n'
    )
    data = _data(_folder(tmp_path, text, names=["dog/1.wav", "dog/2.wav", "dog/3.wav"]), tmp_path, clip_length=0.1)
    assert data.class_names == ["dog, barking"]
    assert _files(data.test_set(), data) == {"dog/2.wav": ("dog, barking", "all")}


def test_without_a_domain_column_every_file_is_in_one_domain(tmp_path):
    rows = [(name, label, split) for name, label, _, split in LISTING]
    data = _data(_folder(tmp_path, _table(rows, ("filename", "label", "split"))), tmp_path, clip_length=0.1)
    assert data.domain_names == ["all"] and data.seen_domains == ["all"]
    assert set(_files(data.test_set(), data).values()) == {("dog", "all"), ("bird", "all")}
    assert set(_files(data.validation_set(), data).values()) == {("dog", "all"), ("cat", "all")}


def test_labels_without_training_files_are_refused_by_name_unless_dropped(tmp_path):
    rows = [*LISTING, ("fox/1.wav", "fox", "phone", "eval"), ("owl/1.wav", "owl", "studio", "validation")]
    folder = _folder(tmp_path, _table(rows), names=[row[0] for row in rows])
    with pytest.raises(ValueError) as failure:
        _data(folder, tmp_path)
    message = str(failure.value)
    assert "the classes ['fox', 'owl'] have no training clip of the training domains ['phone', 'studio']" in message
    assert "'fox': no training clip at all" in message and "drop_untrained_classes=True" in message
    data = _data(folder, tmp_path, clip_length=0.1, drop_untrained_classes=True)
    assert data.class_names == ["bird", "cat", "dog"]
    roles = data.roles()
    assert "fox/1.wav" not in roles["test"] and "owl/1.wav" not in roles["validation"]


def test_a_label_without_training_files_in_the_training_domains_is_refused(tmp_path):
    folder = _folder(tmp_path, _table(LISTING))
    with pytest.raises(ValueError) as failure:
        _data(folder, tmp_path, train_domains=["phone"])
    message = str(failure.value)
    assert "the classes ['bird'] have no training clip of the training domains ['phone']" in message
    assert "('bird': training clips only of the domains ['studio'])" in message
    data = _data(folder, tmp_path, clip_length=0.1, train_domains=["phone"], drop_untrained_classes=True)
    assert data.class_names == ["cat", "dog"]
    assert {role: sorted(names) for role, names in data.roles().items()} == {
        "train": ["cat/1.wav", "dog/1.wav"], "validation": ["cat/4.wav"], "test": ["dog/3.wav"]}  # fmt: skip


def test_a_split_column_without_training_files_is_rejected(tmp_path):
    rows = [(name, label, domain, "test" if split == "train" else split) for name, label, domain, split in LISTING]
    with pytest.raises(LayoutError, match="no file has split 'train'.*drop the split column"):
        _data(_folder(tmp_path, _table(rows)), tmp_path)


def test_roles_without_rows_are_held_out_of_the_training_rows(tmp_path, caplog):
    rows = [(*row, "train") for row in _groups_listing(SIZES)] + [("dog/t.wav", "dog", "phone", "test")]
    folder = _folder(tmp_path, _table(rows), names=[row[0] for row in rows])
    with caplog.at_level(logging.INFO, logger="datasets.folder.layout"):
        data = _data(folder, tmp_path, clip_length=0.1)
    assert "no row of the CSV is marked ['validation']" in caplog.text and "validation_fraction=0.1" in caplog.text
    roles = data.roles()
    assert roles["test"] == ["dog/t.wav"]
    # validation: the rounded tenth of each group (no test share taken: the CSV has test rows), the files
    # ranked first by sha1("0/<filename>"): dog/phone 10 -> 1, cat/phone 5 -> 1 (0.5 rounds up), others 0
    expected = set()
    for (label, domain), n_validation in {("dog", "phone"): 1, ("cat", "phone"): 1}.items():
        names = [r[0] for r in rows if r[1:3] == (label, domain) and r[3] == "train"]
        expected |= set(sorted(names, key=lambda name: hashlib.sha1(f"0/{name}".encode()).hexdigest())[:n_validation])
    assert set(roles["validation"]) == expected
    assert set(roles["train"]) == {r[0] for r in rows if r[3] == "train"} - expected


def test_validation_rows_of_other_domains_than_the_training_ones_are_left_out_with_a_notice(tmp_path, caplog):
    folder = _folder(tmp_path, _table(LISTING))
    with caplog.at_level(logging.INFO, logger="datasets.base"):
        data = _data(folder, tmp_path, clip_length=0.1, train_domains=["studio"])
    assert "1 validation clips of the domains ['phone'] are left out" in caplog.text
    assert sorted(data.roles()["validation"]) == ["cat/2.wav", "dog/4.wav"]
    assert sorted(data.roles()["test"]) == ["bird/2.wav", "dog/3.wav"]  # test keeps every domain


@pytest.mark.parametrize(
    "row, message",
    [
        (
            "dog/9.wav,dog,phone,holdout",
            r"line 3: split 'holdout' is not one of \['train', 'validation', 'test', 'eval'",
        ),
        ("dog/9.wav,,phone,train", "line 3: empty label for 'dog/9.wav'"),
        ("dog/9.wav,dog,,train", "line 3: empty domain for 'dog/9.wav'; give every row a domain"),
        ("/data/dog/9.wav,dog,phone,train", "line 3: filename '/data/dog/9.wav' is absolute"),
        ("dog/9.wav,dog,phone", r"line 3: 3 comma-separated fields, expected 4"),
        ("dog/1.wav,dog,phone,train", r"listed more than once: 'dog/1.wav' \(lines \[2, 3\]\)"),
    ],
)
def test_bad_rows_are_reported_with_their_line(tmp_path, row, message):
    text = "filename,label,domain,split\ndog/1.wav,dog,phone,train\n" + row + "\n"
    with pytest.raises(LayoutError, match=message):
        _data(_folder(tmp_path, text, names=["dog/1.wav", "dog/9.wav"]), tmp_path)


# ---------------------------------------------------------------- the split without a split column


def _groups_listing(sizes):
    """Rows for groups of the given sizes: {(label, domain): n}."""
    return [(f"{label}/{domain}_{i}.wav", label, domain) for (label, domain), n in sizes.items() for i in range(n)]


SIZES = {("dog", "phone"): 10, ("dog", "studio"): 3, ("cat", "phone"): 5, ("cat", "studio"): 2, ("bird", "phone"): 1}
# test: round(n * 0.2), halves up, at most n - 1: 10 -> 2, 3 -> 1 (0.6), 5 -> 1, 2 -> 0 (0.4), 1 -> 0
EXPECTED_TEST_COUNTS = {("dog", "phone"): 2, ("dog", "studio"): 1, ("cat", "phone"): 1}
# validation: round(n * 0.1), at most n - 1 - test: 10 -> 1, 3 -> 0 (0.3), 5 -> 1 (0.5 up), 2 -> 0, 1 -> 0
EXPECTED_VALIDATION_COUNTS = {("dog", "phone"): 1, ("cat", "phone"): 1}


def _split_folder(tmp_path, rows, name="metadata.csv"):
    return _folder(tmp_path, _table(rows, ("filename", "label", "domain")), names=[r[0] for r in rows], csv_name=name)


def test_stratified_split_holds_out_the_rounded_share_of_each_label_and_domain(tmp_path):
    rows = _groups_listing(SIZES)
    data = _data(_split_folder(tmp_path, rows), tmp_path, clip_length=0.1)
    tested, validated = _files(data.test_set(), data), _files(data.validation_set(), data)
    trained = _files(data.train_set(), data)
    for held, expected in ((tested, EXPECTED_TEST_COUNTS), (validated, EXPECTED_VALIDATION_COUNTS)):
        counts = {group: list(held.values()).count(group) for group in SIZES}
        assert {group: n for group, n in counts.items() if n} == expected
    assert set(trained.values()) == set(SIZES)  # every group keeps a training file
    assert len(tested) + len(validated) + len(trained) == len(rows)
    # the documented rule: per group, ranked by sha1("<seed>/<filename>"), the first are test, the next validation
    for label, domain in SIZES:
        names = [r[0] for r in rows if r[1:] == (label, domain)]
        ranked = sorted(names, key=lambda name: hashlib.sha1(f"0/{name}".encode()).hexdigest())
        n_test = EXPECTED_TEST_COUNTS.get((label, domain), 0)
        n_validation = EXPECTED_VALIDATION_COUNTS.get((label, domain), 0)
        assert {name for name, group in tested.items() if group == (label, domain)} == set(ranked[:n_test])
        assert {name for name, group in validated.items() if group == (label, domain)} == set(
            ranked[n_test : n_test + n_validation]
        )


def test_stratified_split_is_seeded_and_independent_of_the_row_order(tmp_path):
    rows = _groups_listing(SIZES)
    folder = _split_folder(tmp_path, rows)
    (folder / "reversed.csv").write_text(_table(rows[::-1], ("filename", "label", "domain")))
    data = _data(folder, tmp_path, clip_length=0.1)
    roles = {role: set(names) for role, names in data.roles().items()}
    reordered = _data(folder, tmp_path, clip_length=0.1, csv="reversed.csv")
    assert {role: set(names) for role, names in reordered.roles().items()} == roles
    reseeded = _data(folder, tmp_path, clip_length=0.1, split_seed=1)
    assert set(reseeded.roles()["test"]) != roles["test"]
    assert len(reseeded.test_set()) == len(roles["test"])


def test_test_fraction_is_the_share_of_each_group_held_out_for_test(tmp_path):
    rows = _groups_listing({("dog", "phone"): 10, ("cat", "phone"): 10})
    data = _data(_split_folder(tmp_path, rows), tmp_path, test_fraction=0.3)
    assert len(data.roles()["test"]) == 6  # 3 of each group of 10


def test_a_listing_too_small_to_hold_files_out_is_rejected(tmp_path):
    rows = _groups_listing({("dog", "phone"): 2, ("cat", "phone"): 2})
    with pytest.raises(LayoutError, match="test_fraction=0.2 of the 4 training files.*leaves no file for test"):
        _data(_split_folder(tmp_path, rows), tmp_path)
    rows = _groups_listing({("dog", "phone"): 4, ("cat", "phone"): 4})
    with pytest.raises(LayoutError, match="validation_fraction=0.1 of the 8 training files.*no file for validation"):
        _data(_split_folder(tmp_path, rows), tmp_path)
    data = _data(_split_folder(tmp_path, rows), tmp_path, test_fraction=0.25, validation_fraction=0.25)
    assert len(data.roles()["test"]) == len(data.roles()["validation"]) == 2


@pytest.mark.parametrize("settings, message", [
    ({"test_fraction": 1.0}, "test_fraction=1.0: expected the share"),
    ({"test_fraction": 0}, "test_fraction=0: expected the share"),
    ({"validation_fraction": -0.1}, "validation_fraction=-0.1: expected the share"),
    ({"validation_fraction": 0.5, "test_fraction": 0.5}, "leave nothing to train on"),
    ({"split_seed": "a"}, "split_seed='a': expected an integer"),
])  # fmt: skip
def test_split_settings_are_checked(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        _data(_folder(tmp_path, _table(LISTING)), tmp_path, **settings)


def test_train_domains_restrict_training_and_validation_and_test_keeps_every_domain(tmp_path):
    data = _data(_folder(tmp_path, _table(LISTING)), tmp_path, clip_length=0.1, train_domains=["studio"])
    assert data.seen_domains == ["studio"]
    assert set(_files(data.train_set(), data)) == {"dog/2.wav", "cat/3.wav", "bird/1.wav"}
    assert len(data.test_set()) == 2
    with pytest.raises(ValueError, match=r"\['car'\] not among the domains"):
        _data(_folder(tmp_path, _table(LISTING)), tmp_path, train_domains=["car"])


# ---------------------------------------------------------------- caching


def test_cache_round_trip_holds_the_resampled_mono_audio(tmp_path):
    folder = tmp_path / "mine"
    rates = {"a.wav": 16000, "b.flac": 44100, "c.wav": 22050, "d.wav": 48000, "e.ogg": 32000}
    rng = np.random.default_rng(0)
    sources = {}
    for name, rate in rates.items():
        folder.mkdir(exist_ok=True)
        channels = 2 if name == "b.flac" else 1
        samples = (0.3 * rng.standard_normal((int(rate * 0.25), channels))).clip(-0.9, 0.9)
        soundfile.write(folder / name, samples, rate, subtype="VORBIS" if name.endswith(".ogg") else "PCM_16")
        sources[name] = soundfile.read(folder / name, dtype="float32", always_2d=True)
    (folder / "metadata.csv").write_text(
        "filename,label,split\na.wav,x,train\nb.flac,y,train\nc.wav,x,eval\nd.wav,y,test\ne.ogg,y,validation\n"
    )
    data = _data(folder, tmp_path, clip_length=0.3, audio_dtype="float16")
    data.prepare()
    paths = data.cache_files()
    assert list(paths) == ["all"] and paths["all"].parent.name == "folder"  # one cache; the roles select from it
    stamps = {split: path.stat().st_mtime_ns for split, path in paths.items()}
    for dataset in (data.train_set(), data.validation_set(), data.test_set()):
        for i in range(len(dataset)):
            item = dataset[i]
            frames, rate = sources[item["file_name"]]
            expected = soxr.resample(frames.mean(axis=1), rate, 32000, quality="HQ")  # downmix, then resample
            n = len(expected)  # 8000 samples: 0.25 s at 32 kHz
            assert item["waveform"].shape == (9600,)
            np.testing.assert_allclose(item["waveform"][:n].numpy(), expected, atol=2e-3)
            assert not item["waveform"][n:].any()  # padded to 0.3 s with silence
    again = _data(folder, tmp_path, clip_length=0.3, audio_dtype="float16")
    again.prepare()
    assert again.cache_files() == paths
    assert {split: path.stat().st_mtime_ns for split, path in paths.items()} == stamps  # read, not rebuilt
    (folder / "metadata.csv").write_text(
        "filename,label,split\na.wav,x,train\nb.flac,y,train\nc.wav,x,validation\nd.wav,y,test\ne.ogg,y,test\n"
    )
    assert (
        _data(folder, tmp_path, audio_dtype="float16").cache_files() == paths
    )  # other roles, the same files: the same cache
    (folder / "metadata.csv").write_text(
        "filename,label,split\na.wav,y,train\nb.flac,x,train\nc.wav,x,eval\nd.wav,y,test\ne.ogg,y,validation\n"
    )
    relabelled = _data(folder, tmp_path, clip_length=0.3, audio_dtype="float16")
    assert relabelled.cache_files()["all"] != paths["all"]  # a new label: a new cache


# ---------------------------------------------------------------- bad input


def test_base_dir_is_required(tmp_path):
    with pytest.raises(ValueError, match="base_dir is required for the folder dataset.*no demo data"):
        Data(cache_dir=tmp_path / "cache")


def test_missing_folder_and_csv_name_the_expected_format(tmp_path):
    with pytest.raises(LayoutError, match="(?s)'.*nowhere' does not exist.*filename,label,domain,split"):
        _data(tmp_path / "nowhere", tmp_path)
    folder = _folder(tmp_path, _table(LISTING), csv_name="labels.csv")
    with pytest.raises(
        LayoutError,
        match=r"(?s)metadata.csv not found \(CSV files there: \['labels.csv'\]; "
        r"choose one with basedataset.csv=NAME\).*filename,label",
    ):
        _data(folder, tmp_path)
    assert len(_data(folder, tmp_path, csv="labels.csv").class_names) == 3
    assert len(_data(folder, tmp_path, csv=str(folder / "labels.csv")).class_names) == 3


@pytest.mark.parametrize("header, hint", [
    ("file,class,domain", r"header \['file', 'class', 'domain'\] lacks the columns \['filename', 'label'\]"),
    ("filename;label", "Columns must be separated by tabs or commas, not semicolons"),
    ("filename,label,label", r"names the columns \['label'\] more than once"),
])  # fmt: skip
def test_missing_columns_name_the_expected_header(tmp_path, header, hint):
    with pytest.raises(LayoutError, match=hint) as error:
        _data(_folder(tmp_path, header + "\ndog/1.wav,dog,phone\n", names=["dog/1.wav"]), tmp_path)
    if "lacks" in hint or "commas" in hint:
        assert "filename,label[,domain,split,fold]" in str(error.value)


def test_empty_or_non_utf8_csv_is_reported(tmp_path):
    folder = _folder(tmp_path, "\n\n")
    with pytest.raises(LayoutError, match="is empty; expected a header line"):
        _data(folder, tmp_path)
    (folder / "metadata.csv").write_bytes("filename,label\nchanson_\xe9t\xe9.wav,x\n".encode("latin-1"))
    with pytest.raises(LayoutError, match="is not UTF-8 text"):
        _data(folder, tmp_path)
    (folder / "metadata.csv").write_text("filename,label\n")
    with pytest.raises(LayoutError, match="lists no files"):
        _data(folder, tmp_path)


def test_missing_and_corrupt_files_are_named_unless_skipped(tmp_path):
    folder = _folder(tmp_path, _table(LISTING))
    (folder / "dog/2.wav").unlink()
    with pytest.raises(BadFilesError) as missing:
        _data(folder, tmp_path).prepare()
    # dog/2.wav is the CSV's second row: line 3, after the header; the fix is the user's CSV or folder
    assert str(missing.value).splitlines() == [
        f"1 of 10 files of folder split 'all' (in {folder}) are unusable:",
        "  dog/2.wav (metadata.csv line 3): file not found",
        f"Fix the rows of {folder / 'metadata.csv'} that name them, or the files in {folder}, or set "
        "basedataset.skip_bad_files=True to leave them out."]
    _write_wavs(folder, ["dog/2.wav"])
    (folder / "cat/1.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(BadFilesError, match="(?s)1 of 10 files.*cat/1.wav \\(metadata.csv line 6\\): .*not "
                                            "readable as audio.*Fix the rows of"):
        _data(folder, tmp_path).prepare()
    (folder / "dog/2.wav").unlink()
    data = _data(folder, tmp_path, clip_length=0.1, skip_bad_files=True)
    data.prepare()
    assert set(_files(data.train_set(), data)) == {"dog/1.wav", "cat/3.wav", "bird/1.wav"}
    assert "dog/2.wav" not in data.roles()["train"]


# ---------------------------------------------------------------- the experiment


@pytest.fixture
def ex_folder():
    sys.path.insert(0, str(REPO))
    try:
        return importlib.import_module("ex_folder").ex
    finally:
        sys.path.remove(str(REPO))


def test_experiment_takes_the_number_of_classes_from_the_csv_and_checks_a_given_one(ex_folder, tmp_path):
    from errors import ConfigurationError, UserError
    from helpers.training.fit import data_module, model_spec

    folder = _folder(tmp_path, _table(LISTING))
    config = ex_folder.run(
        "print_config", config_updates={"basedataset": {"base_dir": str(folder)}}, options={"--capture": "sys"}
    ).config
    assert config["models"]["net"]["n_classes"] is None  # None: the number of classes of the data
    spec = model_spec(folder_package, config)
    assert spec.derived()["models.net.input_tdim"] == 1000  # 10 s at 32 kHz, hop 320
    config = {**config, "basedataset": {**config["basedataset"], "cache_dir": str(tmp_path)}}
    data = data_module(folder_package, config, spec)
    assert spec.with_class_count(data.class_names).net["n_classes"] == 3  # bird, cat, dog; no cache built
    assert not list(tmp_path.glob("folder/*.h5"))
    wrong = model_spec(folder_package, {**config, "models": {**config["models"], "net": {**config["models"]["net"],
                                                                                         "n_classes": 5}}})
    with pytest.raises(ConfigurationError, match="models.net.n_classes=5 but the data has 3 classes"):
        wrong.with_class_count(data.class_names)
    with pytest.raises(UserError, match="main: basedataset.base_dir is required"):
        ex_folder.run("main", options={"--capture": "sys"})


def test_without_base_dir_no_demo_preset_nor_notice(ex_folder, capsys):
    config = ex_folder.run("print_config", options={"--capture": "sys"}).config
    output = capsys.readouterr()
    assert "demo data" not in output.err
    assert config["models"]["net"]["arch"] == "passt_s_swa_p16_128_ap476" and config["lr"] == 1e-5
    assert config["basedataset"]["clip_length"] == 10.0 and "models.net.input_tdim = 1000" in output.out
    assert config["trainer"]["max_epochs"] == 20 and config["models"]["net"]["n_classes"] is None


def _tone_folder(folder):
    """60 one-second clips: 3 classes of distinct harmonic tones, 2 domains (clean; noisy and low-passed),
    5 sample rates, one stereo file; no split column (the stratified split holds out 12)."""
    rng = np.random.default_rng(0)
    rates = (16000, 22050, 32000, 44100, 48000)
    pitches = {"low": 220.0, "mid": 660.0, "high": 1980.0}
    rows = ["filename,label,domain"]
    for c, (label, pitch) in enumerate(pitches.items()):
        for domain in ("clean", "street"):
            for i in range(10):
                rate = rates[(c + i) % len(rates)]
                t = np.arange(rate) / rate
                f0 = pitch * (1 + 0.03 * rng.standard_normal())
                tone = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
                if domain == "street":
                    tone = np.convolve(tone, np.ones(4) / 4, "same") + 0.05 * rng.standard_normal(len(t))
                name = f"{label}/{domain}_{i}.wav"
                (folder / label).mkdir(parents=True, exist_ok=True)
                samples = np.stack([tone, 0.5 * tone], axis=1) if (c, domain, i) == (0, "clean", 0) else tone
                soundfile.write(folder / name, samples.clip(-1, 1), rate, subtype="PCM_16")
                rows.append(f"{name},{label},{domain}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
def test_ex_folder_trains_on_a_generated_folder_and_predicts(tmp_path):
    data = _tone_folder(tmp_path / "tones")
    run = [sys.executable, str(REPO / "ex_folder.py")]
    env = {**os.environ, "FRITO_CACHE_DIR": str(tmp_path / "unused")}
    train = subprocess.run(
        [*run, "-F", "runs", "with", "cpu_tiny", f"basedataset.base_dir={data}",
         f"basedataset.cache_dir={tmp_path / 'cache'}", "basedataset.clip_length=1.0", "trainer.max_epochs=1",
         "num_workers=0", "batch_size=16", "lr=1e-3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    run_dir = tmp_path / "runs" / "1"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["class_names"] == ["high", "low", "mid"]  # the classes (and their number) from the CSV
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("val/acc", "val/domain/clean", "test/acc", "test/domain/street"):
        assert len(metrics[name]["values"]) == 1, name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    domains = (run_dir / "test_selected_net_domains.csv").read_text().splitlines()
    assert domains[0].startswith("domain,group,examples,accuracy,high,low,mid")
    # 10 files per label and domain, test_fraction 0.2: 2 of each, 6 per domain
    assert [row.split(",")[:3] for row in domains[1:3]] == [["clean", "seen domains", "6"],
                                                            ["street", "seen domains", "6"]]
    assert [p.name[:4] for p in (tmp_path / "cache" / "folder").iterdir()] == ["all-"]

    predict = subprocess.run(
        [*run, "predict", "with", "checkpoint=runs/1/checkpoints/last.ckpt", f"files={data / 'low'}",
         "predictions_csv=predictions.csv"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predict.returncode == 0, predict.stdout[-3000:] + predict.stderr[-3000:]
    assert "20 files classified, 0 skipped" in predict.stdout
