"""Domain generalisation protocols on the data side, on small generated folders: the training fraction (nested,
stratified by label x domain, chosen by subset_seed and not the run's seed), the folder dataset's folds, and
leave-one-domain-out through train_domains. (TAU's and NSynth's leave-one-domain-out: their own test files.)"""

import logging
import math
import random
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import soundfile
import torch

from datasets.folder import DEFAULTS, Data
from datasets.metadata import LayoutError
from errors import ConfigurationError

FRACTIONS = [0.05, 0.1, 0.25, 0.5, 1.0]
# training rows per (label, domain) stratum: sizes where ceil(f x n) rounds up, lands exactly, and is 1
STRATA = {("cat", "phone"): 30, ("cat", "studio"): 7, ("dog", "phone"): 20, ("dog", "studio"): 1, ("owl", "phone"): 3}


def _write(root, rows, columns):
    """A folder with a silent-ish short wav per row and metadata.csv listing the rows."""
    root.mkdir(parents=True, exist_ok=True)
    for row in rows:
        path = root / row[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, np.full(160, 0.01), 16000, subtype="PCM_16")
    lines = [",".join(columns)] + [",".join(str(cell) for cell in row) for row in rows]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def _data(root, tmp_path, **settings):
    return Data(**{**DEFAULTS, "base_dir": root, "cache_dir": tmp_path / "cache", "prepare_workers": 0, **settings})


def _stratum(name):
    """(label, domain) of a file named <label>/<domain>_<i>.wav."""
    label, rest = name.split("/")
    return label, rest.rsplit("_", 1)[0]


@pytest.fixture
def strata_folder(tmp_path):
    """Training rows per STRATA, and one validation and one test row per stratum (a split column)."""
    rows = [(f"{label}/{domain}_{i}.wav", label, domain, "train")
            for (label, domain), n in STRATA.items() for i in range(n)]  # fmt: skip
    rows += [(f"{label}/{domain}_{role}.wav", label, domain, role)
             for label, domain in STRATA for role in ("validation", "test")]  # fmt: skip
    return _write(tmp_path / "strata", rows, ("filename", "label", "domain", "split"))


# ---------------------------------------------------------------- the training fraction


def test_training_fractions_are_nested_stratified_and_leave_validation_and_test_alone(strata_folder, tmp_path, caplog):
    roles = {}
    for fraction in FRACTIONS:
        with caplog.at_level(logging.INFO, logger="datasets.base"):
            roles[fraction] = _data(strata_folder, tmp_path, train_fraction=fraction).roles()
        # of each stratum of n, ceil(f x n) (exact rational arithmetic; at least one)
        expected = {stratum: math.ceil(Fraction(str(fraction)) * n) for stratum, n in STRATA.items()}
        assert Counter(_stratum(name) for name in roles[fraction]["train"]) == expected
        assert f"train_fraction={fraction} (subset_seed=0): {sum(expected.values())} of 61 training clips kept" in (
            caplog.text
        )
    trains = [set(roles[fraction]["train"]) for fraction in FRACTIONS]
    assert all(smaller < larger for smaller, larger in zip(trains, trains[1:], strict=False))  # 5 % in 10 % in ...
    assert len(trains[-1]) == sum(STRATA.values())
    for fraction in FRACTIONS:
        assert roles[fraction]["validation"] == roles[1.0]["validation"]
        assert roles[fraction]["test"] == roles[1.0]["test"]


def test_the_subset_follows_subset_seed_and_not_the_run_seed(strata_folder, tmp_path):
    chosen = []
    for run_seed in (0, 1):
        random.seed(run_seed), np.random.seed(run_seed), torch.manual_seed(run_seed)
        chosen.append(set(_data(strata_folder, tmp_path, train_fraction=0.5).roles()["train"]))
    assert chosen[0] == chosen[1]
    other = set(_data(strata_folder, tmp_path, train_fraction=0.5, subset_seed=1).roles()["train"])
    assert other != chosen[0]
    assert Counter(map(_stratum, other)) == Counter(map(_stratum, chosen[0]))  # the same counts per stratum


def test_the_fraction_applies_within_the_training_domains(strata_folder, tmp_path):
    roles = _data(strata_folder, tmp_path, train_fraction=0.1, train_domains=["phone"]).roles()
    assert Counter(map(_stratum, roles["train"])) == {("cat", "phone"): 3, ("dog", "phone"): 2, ("owl", "phone"): 1}


@pytest.mark.parametrize("settings, message", [
    ({"train_fraction": 0}, "basedataset.train_fraction=0: expected the share"),
    ({"train_fraction": -0.1}, "basedataset.train_fraction=-0.1: expected the share"),
    ({"train_fraction": 1.5}, r"basedataset.train_fraction=1.5: .*at most 1, e.g. 0.1 \(1.0: every training clip\)"),
    ({"train_fraction": float("nan")}, "basedataset.train_fraction=nan"),
    ({"train_fraction": True}, "basedataset.train_fraction=True"),
    ({"train_fraction": "0.1"}, "basedataset.train_fraction='0.1'"),
    ({"train_fraction": None}, "basedataset.train_fraction=None"),
    ({"subset_seed": 1.5}, "basedataset.subset_seed=1.5: expected an integer"),
    ({"subset_seed": "0"}, "basedataset.subset_seed='0': expected an integer"),
])  # fmt: skip
def test_bad_subset_settings_are_refused_before_the_folder_is_read(tmp_path, settings, message):
    with pytest.raises(ConfigurationError, match=message):
        _data(tmp_path / "no such folder", tmp_path, **settings)


# ---------------------------------------------------------------- folds

K = 3
LABELS, DOMAINS = ("cat", "dog"), ("phone", "studio")
PER_GROUP = 5  # rows per (label, domain, fold): the other folds' 10 per group give round(0.1 x 10) = 1 validation


def _fold_rows():
    return [(f"{label}/{domain}_f{fold}-{i}.wav", label, domain, fold)
            for fold in range(1, K + 1) for label in LABELS for domain in DOMAINS for i in range(PER_GROUP)]


@pytest.fixture
def fold_folder(tmp_path):
    return _write(tmp_path / "folds", _fold_rows(), ("filename", "label", "domain", "fold"))


def test_fold_k_tests_on_its_rows_and_validates_on_a_stratified_part_of_the_others(fold_folder, tmp_path):
    rows = _fold_rows()
    group = {row[0]: row[1:3] for row in rows}
    tested = Counter()
    for fold in range(1, K + 1):
        roles = {role: set(names) for role, names in _data(fold_folder, tmp_path, fold=fold).roles().items()}
        assert roles["test"] == {row[0] for row in rows if row[3] == fold}
        assert roles["train"] | roles["validation"] == {row[0] for row in rows if row[3] != fold}
        assert not roles["validation"] & roles["train"] and not roles["validation"] & roles["test"]
        # each (label, domain) group of the other folds (2 x 5 rows) gives round(0.1 x 10) = 1 validation file
        assert Counter(group[name] for name in roles["validation"]) == dict.fromkeys(
            [(label, domain) for label in LABELS for domain in DOMAINS], 1
        )
        tested.update(roles["test"])
    assert tested == Counter(row[0] for row in rows)  # folds 1..K test every row once


def test_folds_with_training_domains_validate_on_those_and_test_every_domain(fold_folder, tmp_path):
    roles = _data(fold_folder, tmp_path, fold=2, train_domains=["studio"]).roles()
    assert {_stratum(name)[1] for name in roles["train"] + roles["validation"]} == {"studio"}
    assert {_stratum(name)[1] for name in roles["test"]} == {"phone", "studio"}
    assert len(roles["test"]) == len(LABELS) * len(DOMAINS) * PER_GROUP


def test_folds_are_seeded_by_split_seed_and_combine_with_a_training_fraction(fold_folder, tmp_path):
    first = _data(fold_folder, tmp_path, fold=1).roles()
    other = _data(fold_folder, tmp_path, fold=1, split_seed=7).roles()
    assert first["test"] == other["test"] and set(first["validation"]) != set(other["validation"])
    part = _data(fold_folder, tmp_path, fold=1, train_fraction=0.5).roles()
    assert set(part["train"]) < set(first["train"]) and part["validation"] == first["validation"]
    assert Counter(map(_stratum, part["train"])) == {(label, domain): 5 for label in LABELS for domain in DOMAINS}


def test_without_fold_the_fold_column_is_ignored(fold_folder, tmp_path):
    plain = _write(tmp_path / "plain", [row[:3] for row in _fold_rows()], ("filename", "label", "domain"))
    assert _data(fold_folder, tmp_path).roles() == _data(plain, tmp_path).roles()


def test_fold_errors_name_the_key_and_the_fix(fold_folder, tmp_path):
    with pytest.raises(ConfigurationError, match=r"basedataset.fold=4: .* has no row of that fold; its folds are "
                                                 r"\[1, 2, 3\]"):  # fmt: skip
        _data(fold_folder, tmp_path, fold=4)
    plain = _write(tmp_path / "plain", [row[:3] for row in _fold_rows()], ("filename", "label", "domain"))
    with pytest.raises(ConfigurationError, match="basedataset.fold=1: .* has no fold column; add one .* or set "
                                                 "basedataset.fold=None"):  # fmt: skip
        _data(plain, tmp_path, fold=1)
    both = _write(tmp_path / "both", [(*row, "train") for row in _fold_rows()],
                  ("filename", "label", "domain", "fold", "split"))  # fmt: skip
    with pytest.raises(ConfigurationError, match="has both a split and a fold column.*basedataset.fold=None"):
        _data(both, tmp_path, fold=1)
    assert _data(both, tmp_path).roles()["train"]  # without fold, the split column applies
    for bad in ("1", 1.0, True):
        with pytest.raises(ConfigurationError, match=f"basedataset.fold={bad!r}: expected the number of the fold"):
            _data(fold_folder, tmp_path, fold=bad)


def test_a_fold_cell_that_is_not_an_integer_is_reported_with_its_line(tmp_path):
    rows = [*_fold_rows()[:-1], ("dog/last.wav", "dog", "studio", "3.5")]
    folder = _write(tmp_path / "bad", rows, ("filename", "label", "domain", "fold"))
    with pytest.raises(LayoutError, match=rf"line {len(rows) + 1}: fold '3.5' is not an integer"):
        _data(folder, tmp_path, fold=1)


def test_a_single_fold_leaves_nothing_to_train_on(tmp_path):
    rows = [row for row in _fold_rows() if row[3] == 1]
    folder = _write(tmp_path / "one", rows, ("filename", "label", "domain", "fold"))
    with pytest.raises(ConfigurationError, match="every row of .* is in fold 1, which leaves nothing to train on"):
        _data(folder, tmp_path, fold=1)


# ---------------------------------------------------------------- leave-one-domain-out


def test_leaving_one_domain_out_validates_on_the_others_and_tests_every_domain(tmp_path):
    domains = ("phone", "street", "studio")  # sorted, as the dataset names them
    rows = [(f"{label}/{domain}_{i}.wav", label, domain) for label in LABELS for domain in domains for i in range(10)]
    folder = _write(tmp_path / "lodo", rows, ("filename", "label", "domain"))
    for held_out in domains:
        trained = [domain for domain in domains if domain != held_out]
        data = _data(folder, tmp_path, train_domains=trained)
        roles = data.roles()
        assert data.seen_domains == trained
        assert {_stratum(name)[1] for name in roles["train"]} == set(trained)
        assert {_stratum(name)[1] for name in roles["validation"]} == set(trained)
        assert {_stratum(name)[1] for name in roles["test"]} == set(domains)


def test_leaving_out_the_only_domain_of_a_label_names_drop_untrained_classes(tmp_path):
    rows = [(f"{label}/{domain}_{i}.wav", label, domain)
            for label, domain in [("cat", "phone"), ("cat", "studio"), ("dog", "phone")] for i in range(10)]
    folder = _write(tmp_path / "lodo", rows, ("filename", "label", "domain"))
    with pytest.raises(ConfigurationError, match=r"\['dog'\] have no training clip.*drop_untrained_classes=True"):
        _data(folder, tmp_path, train_domains=["studio"])
    data = _data(folder, tmp_path, train_domains=["studio"], drop_untrained_classes=True)
    assert data.class_names == ["cat"]
