"""Your own dataset: the CSV format, the seeded stratified split, caching, bad input, and ex_folder end to end."""

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from datasets.cache import BadFilesError
from datasets.folder import DEFAULTS, Data, read_class_names
from datasets.metadata import LayoutError

REPO = Path(__file__).resolve().parents[1]

LISTING = [  # filename, label, domain, split
    ("dog/1.wav", "dog", "phone", "train"),
    ("dog/2.wav", "dog", "studio", "train"),
    ("dog/3.wav", "dog", "phone", "eval"),
    ("cat/1.wav", "cat", "phone", "train"),
    ("cat/2.wav", "cat", "studio", "Validation"),
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
def test_comma_and_tab_separated_listings_give_the_same_splits(tmp_path, separator):
    data = _data(_folder(tmp_path, _table(LISTING, separator=separator)), tmp_path, clip_length=0.1)
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.domain_names == ["phone", "studio"]
    assert data.subdomain_names == ["-"]
    assert data.domain_kind == "domain"
    assert _files(data.train_set(), data) == {
        "dog/1.wav": ("dog", "phone"), "dog/2.wav": ("dog", "studio"), "cat/1.wav": ("cat", "phone"),
        "bird/1.wav": ("bird", "studio")}  # fmt: skip
    # eval, validation and test (any case) are all evaluated
    assert _files(data.eval_set(), data) == {
        "dog/3.wav": ("dog", "phone"), "cat/2.wav": ("cat", "studio"), "bird/2.wav": ("bird", "phone")}  # fmt: skip


def test_header_case_extra_columns_quoting_bom_crlf_and_blank_lines_are_tolerated(tmp_path):
    text = (
        "\ufeffFileName,Duration,LABEL,Split\r\n"
        '"dog/1.wav",1.0," dog, barking ",train\r\n'
        "\r\n"
        '"./dog/2.wav",2.5,"dog, barking",eval\r\n'
    )
    data = _data(_folder(tmp_path, text, names=["dog/1.wav", "dog/2.wav"]), tmp_path, clip_length=0.1)
    assert data.class_names == ["dog, barking"]
    assert _files(data.eval_set(), data) == {"dog/2.wav": ("dog, barking", "all")}


def test_without_a_domain_column_every_file_is_in_one_domain(tmp_path):
    rows = [(name, label, split) for name, label, _, split in LISTING]
    data = _data(_folder(tmp_path, _table(rows, ("filename", "label", "split"))), tmp_path, clip_length=0.1)
    assert data.domain_names == ["all"] and data.seen_domains == ["all"]
    assert set(_files(data.eval_set(), data).values()) == {("dog", "all"), ("cat", "all"), ("bird", "all")}


def test_labels_only_in_evaluation_files_are_rejected_by_name(tmp_path):
    rows = [*LISTING, ("fox/1.wav", "fox", "phone", "eval"), ("owl/1.wav", "owl", "phone", "test")]
    with pytest.raises(LayoutError, match=r"labels \['fox', 'owl'\] occur only in evaluation files"):
        _data(_folder(tmp_path, _table(rows)), tmp_path)


def test_a_split_column_without_training_or_evaluation_files_is_rejected(tmp_path):
    rows = [(name, label, domain, "train") for name, label, domain, _ in LISTING]
    with pytest.raises(LayoutError, match="no file has split 'eval'.*drop the split column"):
        _data(_folder(tmp_path, _table(rows)), tmp_path)


@pytest.mark.parametrize(
    "row, message",
    [
        ("dog/9.wav,dog,phone,holdout", r"line 3: split 'holdout' is not one of \['train', 'eval', 'validation'"),
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
# round(n * 0.2), halves up, at most n - 1: 10 -> 2, 3 -> 1 (0.6), 5 -> 1, 2 -> 0 (0.4), 1 -> 0
EXPECTED_EVAL_COUNTS = {("dog", "phone"): 2, ("dog", "studio"): 1, ("cat", "phone"): 1}


def _split_folder(tmp_path, rows, name="metadata.csv"):
    return _folder(tmp_path, _table(rows, ("filename", "label", "domain")), names=[r[0] for r in rows], csv_name=name)


def test_stratified_split_holds_out_the_rounded_share_of_each_label_and_domain(tmp_path):
    rows = _groups_listing(SIZES)
    data = _data(_split_folder(tmp_path, rows), tmp_path, clip_length=0.1)
    evaluated, trained = _files(data.eval_set(), data), _files(data.train_set(), data)
    counts = {group: list(evaluated.values()).count(group) for group in SIZES}
    assert {group: n for group, n in counts.items() if n} == EXPECTED_EVAL_COUNTS
    assert set(trained.values()) == set(SIZES)  # every group keeps a training file
    assert len(evaluated) + len(trained) == len(rows)
    # the documented rule: per group, the files ranked first by sha1("<seed>/<filename>")
    for (label, domain), n_eval in EXPECTED_EVAL_COUNTS.items():
        names = [r[0] for r in rows if r[1:] == (label, domain)]
        first = sorted(names, key=lambda name: hashlib.sha1(f"0/{name}".encode()).hexdigest())[:n_eval]
        assert {name for name, group in evaluated.items() if group == (label, domain)} == set(first)


def test_stratified_split_is_seeded_and_independent_of_the_row_order(tmp_path):
    rows = _groups_listing(SIZES)
    folder = _split_folder(tmp_path, rows)
    (folder / "reversed.csv").write_text(_table(rows[::-1], ("filename", "label", "domain")))
    data = _data(folder, tmp_path, clip_length=0.1)
    evaluated = set(_files(data.eval_set(), data))
    reordered = _data(folder, tmp_path, clip_length=0.1, csv="reversed.csv")
    assert set(_files(reordered.eval_set(), reordered)) == evaluated
    reseeded = _data(folder, tmp_path, clip_length=0.1, split_seed=1)
    assert set(_files(reseeded.eval_set(), reseeded)) != evaluated
    assert len(reseeded.eval_set()) == len(evaluated)


def test_a_listing_too_small_to_hold_files_out_is_rejected(tmp_path):
    rows = _groups_listing({("dog", "phone"): 2, ("cat", "phone"): 2})
    with pytest.raises(LayoutError, match="eval_fraction=0.2 of the 4 files.*leaves no file for evaluation"):
        _data(_split_folder(tmp_path, rows), tmp_path)
    assert len(_data(_split_folder(tmp_path, rows), tmp_path, eval_fraction=0.5).eval_set()) == 2


@pytest.mark.parametrize("settings, message", [
    ({"eval_fraction": 1.0}, "eval_fraction=1.0: expected the share"),
    ({"eval_fraction": 0}, "eval_fraction=0: expected the share"),
    ({"split_seed": "a"}, "split_seed='a': expected an integer"),
])  # fmt: skip
def test_split_settings_are_checked(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        _data(_folder(tmp_path, _table(LISTING)), tmp_path, **settings)


def test_train_domains_restrict_training_and_evaluation_keeps_every_domain(tmp_path):
    data = _data(_folder(tmp_path, _table(LISTING)), tmp_path, clip_length=0.1, train_domains=["studio"])
    assert data.seen_domains == ["studio"]
    assert set(_files(data.train_set(), data)) == {"dog/2.wav", "bird/1.wav"}
    assert len(data.eval_set()) == 3
    with pytest.raises(ValueError, match=r"\['car'\] not among the domains"):
        _data(_folder(tmp_path, _table(LISTING)), tmp_path, train_domains=["car"])


# ---------------------------------------------------------------- caching


def test_cache_round_trip_holds_the_resampled_mono_audio(tmp_path):
    folder = tmp_path / "mine"
    rates = {"a.wav": 16000, "b.flac": 44100, "c.wav": 22050, "d.wav": 48000}
    rng = np.random.default_rng(0)
    sources = {}
    for name, rate in rates.items():
        folder.mkdir(exist_ok=True)
        channels = 2 if name == "b.flac" else 1
        samples = (0.3 * rng.standard_normal((int(rate * 0.25), channels))).clip(-0.9, 0.9)
        soundfile.write(folder / name, samples, rate, subtype="PCM_16")
        sources[name] = soundfile.read(folder / name, dtype="float32", always_2d=True)
    (folder / "metadata.csv").write_text(
        "filename,label,split\na.wav,x,train\nb.flac,y,train\nc.wav,x,eval\nd.wav,y,eval\n"
    )
    data = _data(folder, tmp_path, clip_length=0.3, audio_dtype="float16")
    data.prepare()
    paths = data.cache_files()
    assert sorted(p.parent.name for p in paths.values()) == ["folder", "folder"]
    stamps = {split: path.stat().st_mtime_ns for split, path in paths.items()}
    for dataset in (data.train_set(), data.eval_set()):
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
        "filename,label,split\na.wav,y,train\nb.flac,x,train\nc.wav,x,eval\nd.wav,y,eval\n"
    )
    relabelled = _data(folder, tmp_path, clip_length=0.3, audio_dtype="float16")
    assert relabelled.cache_files()["train"] != paths["train"]  # a new label: a new cache
    assert relabelled.cache_files()["eval"] == paths["eval"]


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
        assert "filename,label[,domain,split]" in str(error.value)


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
    with pytest.raises(
        BadFilesError, match="(?s)1 of 4 files of folder split 'train'.*dog/2.wav: file not found.*skip_bad_files=True"
    ):
        _data(folder, tmp_path).prepare()
    _write_wavs(folder, ["dog/2.wav"])
    (folder / "cat/1.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(BadFilesError, match="(?s)1 of 4 files.*cat/1.wav: not readable as audio"):
        _data(folder, tmp_path).prepare()
    (folder / "dog/2.wav").unlink()
    data = _data(folder, tmp_path, clip_length=0.1, skip_bad_files=True)
    data.prepare()
    assert set(_files(data.train_set(), data)) == {"dog/1.wav", "bird/1.wav"}


def test_read_class_names_gives_the_sorted_labels(tmp_path):
    assert read_class_names(_folder(tmp_path, _table(LISTING))) == ["bird", "cat", "dog"]


# ---------------------------------------------------------------- the experiment


@pytest.fixture
def ex_folder():
    sys.path.insert(0, str(REPO))
    try:
        return importlib.import_module("ex_folder").ex
    finally:
        sys.path.remove(str(REPO))


def test_experiment_reads_the_number_of_classes_from_the_csv(ex_folder, tmp_path):
    from helpers.config_check import ConfigurationError
    from helpers.model_config import derived_settings

    folder = _folder(tmp_path, _table(LISTING))
    config = ex_folder.run(
        "print_config", config_updates={"basedataset": {"base_dir": str(folder)}}, options={"--capture": "sys"}
    ).config
    assert config["models"]["net"]["n_classes"] == 3
    assert derived_settings(config)["models.net.input_tdim"] == 1000  # 10 s at 32 kHz, hop 320
    with pytest.raises(ConfigurationError, match="main: basedataset.base_dir is required"):
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
    config = json.loads((run_dir / "config.json").read_text())
    assert config["models"]["net"]["n_classes"] == 3
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("val/acc", "val/domain/clean", "val/domain/street"):
        assert len(metrics[name]["values"]) == 1, name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    domains = (run_dir / "net_domains.csv").read_text().splitlines()
    assert domains[0].startswith("domain,group,examples,accuracy,high,low,mid")
    assert [row.split(",")[:3] for row in domains[1:3]] == [["clean", "seen", "6"], ["street", "seen", "6"]]
    assert sorted(p.name for p in (tmp_path / "cache" / "folder").iterdir())[0].startswith("eval-")

    predict = subprocess.run(
        [*run, "predict", "with", "checkpoint=runs/1/checkpoints/last.ckpt", f"files={data / 'low'}",
         "predictions_csv=predictions.csv"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predict.returncode == 0, predict.stdout[-3000:] + predict.stderr[-3000:]
    assert "20 files classified, 0 skipped" in predict.stdout
