"""Reading ESC-50 as released (https://github.com/karolpiczak/ESC-50), and its roles for one test fold.

meta/esc50.csv (comma-separated, with a header line) lists every clip: filename (a file of audio/), fold (1-5),
target (the class number, 0-49), category (the class name), esc10 (True for the clips of the ESC-10 subset), src_file
(the Freesound recording the clip was cut from) and take (A, B, ...: which fragment of that recording). audio/ holds
the clips: 5 s, 44.1 kHz, mono WAV. The release keeps the fragments of one recording in one fold.

Roles with basedataset.fold=k: test is fold k's clips; validation is held out of the other folds' clips by whole
source recordings (datasets.subsets.hold_out_groups with the src_file column as the group: per class, about
validation_fraction of its clips, ranked by split_seed), so that no fragment of a validation recording is trained
on; training is the rest of the other folds. Folds 1-5 test every clip once. esc10=True keeps the ESC-10 clips
only. ESC-50 has no domains: every clip is in the one domain datasets.base.NO_DOMAIN. The clips of the chosen set
are cached in one file, which every fold's roles select from.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from datasets.base import NO_DOMAIN, TEST, TRAIN, VALIDATION, Layout, Role, check_fraction, check_seed
from datasets.cache import Clip
from datasets.metadata import LayoutError, Row, read_tsv
from datasets.subsets import hold_out_groups
from errors import ConfigurationError

logger = logging.getLogger(__name__)

RELEASE_FOLDER = "ESC-50-master"  # what the GitHub zip of the release extracts to
META_CSV = "meta/esc50.csv"
AUDIO_FOLDER = "audio"
COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
ESC10_VALUES = {"True": True, "False": False}
SUBSETS = {False: "esc50", True: "esc10"}  # esc10 setting -> the cached split's name
NO_SUBDOMAIN = "-"
SHOWN = 5

EXPECTED_TREE = f"""\
base_dir/                         (or base_dir/{RELEASE_FOLDER}/ holding the same, as the zip extracts)
├── audio/
│   ├── 1-100032-A-0.wav          {{fold}}-{{src_file}}-{{take}}-{{target}}.wav: 5 s, 44.1 kHz, mono
│   └── ...                       (2000 clips)
└── meta/
    └── esc50.csv                 filename,fold,target,category,esc10,src_file,take
                                  1-100032-A-0.wav,1,0,dog,True,100032,A"""


@dataclass(frozen=True)
class Listing:
    """meta/esc50.csv read and checked: the clips of the chosen set, in the file's order, with their fold and
    source recording (by path); class_names: the categories in the order of their target numbers."""

    root: Path
    clips: list[Clip]
    folds: dict[str, int]
    sources: dict[str, str]
    class_names: list[str]


def read_layout(base_dir: Path, fold: int, esc10: bool, validation_fraction: float, split_seed: int) -> Layout:
    """The clips of ESC-50 (or ESC-10) and their roles with fold ``fold`` tested on (see the module docstring)."""
    check_split_settings(fold, validation_fraction, split_seed)
    listing = read_listing(base_dir, esc10)
    roles = fold_roles(listing, fold, validation_fraction, split_seed)
    split = SUBSETS[bool(esc10)]
    return Layout(
        root=listing.root,
        splits={split: listing.clips},
        roles={role: Role(split, frozenset(clip.path for clip in clips)) for role, clips in roles.items()},
        class_names=listing.class_names,
        domain_names=[NO_DOMAIN],
        subdomain_names=[NO_SUBDOMAIN],
    )


def find_root(base_dir: Path) -> Path:
    """The release folder: ``base_dir`` itself or its ESC-50-master/; LayoutError with the expected tree otherwise."""
    for candidate in (base_dir, base_dir / RELEASE_FOLDER):
        if (candidate / META_CSV).is_file():
            if not (candidate / AUDIO_FOLDER).is_dir():
                raise LayoutError(f"{candidate} has {META_CSV} but no {AUDIO_FOLDER}/ folder of clips. Expected "
                                  f"ESC-50 as released (https://github.com/karolpiczak/ESC-50):\n{EXPECTED_TREE}")
            return candidate
    state = "does not exist" if not base_dir.exists() else f"holds no {META_CSV} (nor does a {RELEASE_FOLDER}/ in it)"
    raise LayoutError(f"basedataset.base_dir={str(base_dir)!r} {state}. Expected ESC-50 as released "
                      f"(https://github.com/karolpiczak/ESC-50, the zip extracted):\n{EXPECTED_TREE}")


def read_listing(base_dir: Path, esc10: bool) -> Listing:
    """meta/esc50.csv's clips (those marked esc10 when ``esc10``), checked cell by cell."""
    root = find_root(base_dir)
    path = root / META_CSV
    try:
        rows = read_tsv(path, COLUMNS, delimiter=",")
    except LayoutError as error:
        raise LayoutError(f"{error} Expected ESC-50's meta/esc50.csv:\n{EXPECTED_TREE}") from None
    clips, folds, sources, targets = [], {}, {}, {}
    for row in rows:
        subset = _cell(path, row, "esc10", ESC10_VALUES)
        fold = _integer(path, row, "fold")
        target = _integer(path, row, "target")
        if targets.setdefault(row["category"], target) != target:
            raise LayoutError(f"{path} line {row.line}: category {row['category']!r} has target {target} here and "
                              f"{targets[row['category']]} elsewhere; each category has one target number")
        if esc10 and not subset:
            continue
        clip = Clip(path=_clip_path(path, row), label=row["category"], domain=NO_DOMAIN, subdomain=NO_SUBDOMAIN)
        clips.append(clip)
        folds[clip.path] = fold
        sources[clip.path] = row["src_file"]
    _check(path, rows, targets, clips, esc10)
    classes = sorted({clip.label for clip in clips}, key=lambda name: targets[name])
    return Listing(root, clips, folds, sources, classes)


def fold_roles(listing: Listing, fold: int, validation_fraction: float, split_seed: int) -> dict[str, list[Clip]]:
    """{role: clips}: test is fold ``fold``; validation whole source recordings of the other folds (per class, about
    validation_fraction of its clips, split_seed); training the rest of the other folds."""
    present = sorted(set(listing.folds.values()))
    if fold not in present:
        raise ConfigurationError(f"basedataset.fold={fold}: {listing.root / META_CSV} has no clip of that fold; its "
                                 f"folds are {present}")
    test = [clip for clip in listing.clips if listing.folds[clip.path] == fold]
    others = [clip for clip in listing.clips if listing.folds[clip.path] != fold]
    held_out = hold_out_groups(others, listing.sources, validation_fraction, split_seed)
    validation = [clip for clip in others if listing.sources[clip.path] in held_out]
    train = [clip for clip in others if listing.sources[clip.path] not in held_out]
    if not validation or not train:
        raise LayoutError(f"validation_fraction={validation_fraction} of the {len(others)} clips outside fold {fold} "
                          f"leaves no {'clip for validation' if not validation else 'clip to train on'} (whole source "
                          f"recordings are held out, and each class keeps one); choose another "
                          f"basedataset.validation_fraction")
    logger.info("esc50: fold %d of %s tested on (%d clips); %d clips of %d source recordings of the other folds "
                "validated on (validation_fraction=%s, split_seed=%d), %d trained on", fold, present, len(test),
                len(validation), len(held_out), validation_fraction, split_seed, len(train))
    return {TRAIN: train, VALIDATION: validation, TEST: test}


def check_split_settings(fold: int, validation_fraction: float, split_seed: int) -> None:
    """Raise ConfigurationError for a fold that is not an integer, a validation_fraction outside (0, 1) or a
    split_seed that is not an integer."""
    if isinstance(fold, bool) or not isinstance(fold, int):
        raise ConfigurationError(f"basedataset.fold={fold!r}: expected the number of the fold tested on, 1 to 5 (the "
                                 f"fold column of meta/esc50.csv); the other folds are trained and validated on")
    meaning = "the share of each class's clips outside the test fold validated on (whole source recordings)"
    check_fraction("validation_fraction", validation_fraction, meaning, 0.1)
    check_seed(split_seed)


def _check(path: Path, rows: list[Row], targets: dict[str, int], clips: list[Clip], esc10: bool) -> None:
    """Refuse an empty listing, one target number for two categories, and files listed twice."""
    if not clips:
        what = "no clip marked esc10 True (basedataset.esc10=True)" if esc10 and rows else "no clip"
        raise LayoutError(f"{path} lists {what}; expected a row per clip after the header:\n{EXPECTED_TREE}")
    shared = [target for target, count in Counter(targets.values()).items() if count > 1]
    if shared:
        names = sorted(name for name, target in targets.items() if target in shared)
        raise LayoutError(f"{path}: the categories {names} share the target numbers {sorted(shared)}; each category "
                          f"has its own")
    repeated = [name for name, count in Counter(clip.path for clip in clips).items() if count > 1]
    if repeated:
        raise LayoutError(f"{path}: {len(repeated)} files are listed more than once, e.g. {repeated[:SHOWN]}")


def _clip_path(path: Path, row: Row) -> str:
    name = PurePosixPath(row["filename"])
    if not row["filename"] or name.is_absolute() or len(name.parts) != 1:
        raise LayoutError(f"{path} line {row.line}: filename {row['filename']!r} is not the name of a file in "
                          f"{AUDIO_FOLDER}/ (e.g. 1-100032-A-0.wav)")
    return f"{AUDIO_FOLDER}/{name}"


def _integer(path: Path, row: Row, column: str) -> int:
    try:
        return int(row[column])
    except ValueError:
        raise LayoutError(f"{path} line {row.line}: {column} {row[column]!r} is not an integer") from None


def _cell(path: Path, row: Row, column: str, values: dict[str, bool]) -> bool:
    if row[column] not in values:
        raise LayoutError(f"{path} line {row.line}: {column} {row[column]!r} is not one of {list(values)}")
    return values[row[column]]
