"""ESC-50: the released layout read from folders written here, the roles of a fold (validation by whole source
recordings), ESC-10, bad layouts, the demo data, and ex_esc50.py trained on it."""

import csv
import hashlib
import json
import re

import pytest
import soundfile

from datasets import esc50
from datasets.esc50 import demo
from datasets.metadata import LayoutError
from errors import ConfigurationError

HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
CLASSES = {0: ("dog", "True"), 10: ("rain", "True"), 46: ("church_bells", "False")}  # ESC-50's targets and flags
TAKES = ("AB", "A")  # per class and fold: a source recording with two takes, one with one


def release_rows() -> list[list[str]]:
    """meta/esc50.csv's rows of a small release: 3 classes x 5 folds x 2 source recordings (3 clips)."""
    rows = []
    for target, (category, esc10) in CLASSES.items():
        for fold in range(1, 6):
            for index, takes in enumerate(TAKES):
                source = f"{target + 1}{fold}{index}"
                rows += [[f"{fold}-{source}-{take}-{target}.wav", str(fold), str(target), category, esc10, source,
                          take] for take in takes]
    return rows


def write_release(folder, rows, nested=True):
    """ESC-50 as the GitHub zip extracts (ESC-50-master/audio/, ESC-50-master/meta/esc50.csv); no audio is read."""
    root = folder / "ESC-50-master" if nested else folder
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([HEADER, *rows])
    return root


def data(folder, tmp_path, **settings):
    return esc50.Data(base_dir=folder, cache_dir=tmp_path / "cache", **settings)


def roles(dataset) -> dict[str, set[str]]:
    return {role: set(selection.files) for role, selection in dataset.layout.roles.items()}


@pytest.mark.parametrize("fold", [1, 3])
def test_a_fold_is_the_test_set_and_validation_takes_whole_source_recordings(tmp_path, fold):
    rows = release_rows()
    write_release(tmp_path / "download", rows)
    dataset = data(tmp_path / "download", tmp_path, fold=fold)
    assert dataset.class_names == ["dog", "rain", "church_bells"]  # target order, not alphabetical
    assert dataset.domain_names == dataset.seen_domains == ["all"] and dataset.domain_kind is None
    split = roles(dataset)
    path = {row[0]: f"audio/{row[0]}" for row in rows}
    assert split["test"] == {path[row[0]] for row in rows if row[1] == str(fold)}
    others = {path[row[0]] for row in rows if row[1] != str(fold)}
    assert split["train"] | split["validation"] == others and not split["train"] & split["validation"]
    source = {path[row[0]]: row[5] for row in rows}
    assert not {source[p] for p in split["train"]} & {source[p] for p in split["validation"]}
    # the documented rule: per class (12 clips of 8 recordings outside the fold, target 0.1 x 12 = 1.2 clips) the
    # first recording by sha1("<split_seed>/<src_file>") is held out; a second would move the count away from 1.2
    expected = set()
    for target in CLASSES:
        sources = {row[5] for row in rows if row[2] == str(target) and row[1] != str(fold)}
        first = min(sources, key=lambda name: hashlib.sha1(f"0/{name}".encode()).hexdigest())
        expected |= {path[row[0]] for row in rows if row[5] == first}
    assert split["validation"] == expected


def test_the_five_folds_test_every_clip_once_and_the_split_seed_moves_validation(tmp_path):
    rows = release_rows()
    write_release(tmp_path / "download", rows)
    tests = [roles(data(tmp_path / "download", tmp_path, fold=fold))["test"] for fold in range(1, 6)]
    assert sum(len(test) for test in tests) == len(rows) and set().union(*tests) == {f"audio/{r[0]}" for r in rows}
    validations = {seed: roles(data(tmp_path / "download", tmp_path, split_seed=seed))["validation"]
                   for seed in range(4)}
    assert len({frozenset(files) for files in validations.values()}) > 1


def test_esc10_keeps_the_clips_marked_esc10(tmp_path):
    rows = release_rows()
    write_release(tmp_path / "release", rows, nested=False)  # base_dir may be the release folder itself
    dataset = data(tmp_path / "release", tmp_path, esc10=True)
    assert dataset.class_names == ["dog", "rain"]
    marked = {f"audio/{row[0]}" for row in rows if row[4] == "True"}
    assert set().union(*roles(dataset).values()) == marked
    assert list(dataset.layout.splits) == ["esc10"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda rows: rows[3].__setitem__(4, "yes"), r"csv line 5: esc10 'yes' is not one of \['True', 'False'\]"),
        (lambda rows: rows[3].__setitem__(2, "3"), r"line 5: category 'dog' has target 3 here and 0 elsewhere"),
        (lambda rows: rows[3].__setitem__(1, "one"), r"line 5: fold 'one' is not an integer"),
        (lambda rows: rows[3].__setitem__(0, "../x.wav"), r"line 5: filename '../x.wav' is not the name of a file"),
        (lambda rows: rows.append(list(rows[0])), r"1 files are listed more than once"),
    ],
)
def test_a_malformed_meta_csv_names_the_line_and_the_problem(tmp_path, change, message):
    rows = release_rows()
    change(rows)
    write_release(tmp_path / "download", rows)
    with pytest.raises(LayoutError, match=message):
        data(tmp_path / "download", tmp_path)


def test_a_folder_in_another_layout_is_reported_with_the_expected_tree(tmp_path):
    (tmp_path / "ESC-50").mkdir()
    with pytest.raises(LayoutError, match=r"holds no meta/esc50.csv \(nor does a ESC-50-master/ in it\)") as error:
        data(tmp_path / "ESC-50", tmp_path)
    assert "├── audio/" in str(error.value) and "filename,fold,target,category,esc10,src_file,take" in str(error.value)
    with pytest.raises(LayoutError, match="does not exist"):
        data(tmp_path / "nowhere", tmp_path)
    root = write_release(tmp_path / "no_audio", release_rows())
    (root / "audio").rmdir()
    with pytest.raises(LayoutError, match="has meta/esc50.csv but no audio/ folder"):
        data(tmp_path / "no_audio", tmp_path)
    (root / "meta" / "esc50.csv").write_text("filename;fold;target\n1-1-A-0.wav;1;0\n")
    (root / "audio").mkdir()
    with pytest.raises(LayoutError, match="lacks the columns .* Expected ESC-50's meta/esc50.csv"):
        data(tmp_path / "no_audio", tmp_path)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"fold": 6}, r"basedataset.fold=6: .* has no clip of that fold; its folds are \[1, 2, 3, 4, 5\]"),
        ({"fold": "1"}, r"basedataset.fold='1': expected the number of the fold tested on, 1 to 5"),
        ({"fold": None}, r"basedataset.fold=None: expected the number"),
        ({"validation_fraction": 1.5}, r"validation_fraction=1.5: expected the share of each class's clips"),
        ({"train_domains": ["a"]}, r"train_domains=\['a'\]: esc50 has no domains .* leave basedataset.train_domains"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(tmp_path, settings, message):
    write_release(tmp_path / "download", release_rows())
    with pytest.raises(ConfigurationError, match=message):
        data(tmp_path / "download", tmp_path, **settings)


def test_the_demo_data_is_esc50_in_its_released_layout(cache_dir):
    dataset = esc50.Data(cache_dir=cache_dir)
    root = dataset.layout.root
    assert root.name == "ESC-50-master" and dataset.clip_length == demo.CLIP_LENGTH
    with open(root / "meta" / "esc50.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == HEADER
    assert {(row["category"], row["target"], row["esc10"]) for row in rows} == {
        ("dog", "0", "True"), ("rooster", "1", "True"), ("rain", "10", "True"), ("door_wood_knock", "30", "False"),
        ("church_bells", "46", "False")}
    assert {row["fold"] for row in rows} == set("12345")
    for row in rows:
        assert row["filename"] == f"{row['fold']}-{row['src_file']}-{row['take']}-{row['target']}.wav"
        assert re.fullmatch(r"[ABC]", row["take"])
    folds_of = {}
    for row in rows:
        folds_of.setdefault(row["src_file"], set()).add(row["fold"])
    assert all(len(folds) == 1 for folds in folds_of.values())  # a recording's takes share a fold, as released
    info = soundfile.info(root / "audio" / rows[0]["filename"])
    assert (info.samplerate, info.channels, info.frames) == (44100, 1, round(44100 * demo.CLIP_LENGTH))
    assert len(rows) == 5 * 5 * sum(demo.TAKES_PER_SOURCE)


@pytest.mark.slow
def test_ex_esc50_trains_on_the_demo_data_and_reports_accuracy_alone(cache_dir, in_tmp, capsys, load_experiment):
    ex = load_experiment("ex_esc50")
    trainer = {"max_epochs": 1, "limit_train_batches": 2, "enable_progress_bar": False,
               "enable_model_summary": False, "num_sanity_val_steps": 0}
    run = ex.run("main", config_updates={"basedataset": {"cache_dir": str(cache_dir), "fold": 2},
                                         "trainer": trainer}, options={"--capture": "sys"})
    run_dir = in_tmp / "runs" / next(p.name for p in (in_tmp / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["domain_kind"] is None and results["group_names"] == [] and results["domain_names"] == ["all"]
    figures = results["test"]["net"]["selected"]
    assert {name for name in figures if not name.startswith("class/")} == {"loss", "acc", "macro_acc"}
    assert set(run.result) == {f"{moment}/{net}/{name}" for moment in ("selected", "last")
                               for net in ("net",) for name in ("loss", "acc", "macro_acc")}
    splits = json.loads((run_dir / "splits.json").read_text())
    assert all(name.startswith("audio/2-") for name in splits["test"]) and len(splits["test"]) == 5 * 8
    assert (run_dir / "test_selected_net_confusion_matrix.csv").is_file()
    assert not list(run_dir.glob("*_domains.*"))
    out = capsys.readouterr().out
    summary = out[out.index("training finished"):]
    assert re.search(r"net +acc \d\.\d{4}  macro \d\.\d{4}  loss", summary)
    assert "seen" not in summary and "per domain" not in summary
