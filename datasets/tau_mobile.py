"""What the TAU Urban Acoustic Scenes Mobile development sets share: one folder layout, the three roles, and
the recording locations of the training split held out for validation.

TAU 2020 Mobile (datasets/dcase20, 10 s files) and TAU 2022 Mobile (datasets/dcase22, the same recordings cut
into 1 s files) ship alike: meta.csv lists every file with its scene, recording location (identifier,
"<city>-<number>") and device (source_label); evaluation_setup/<split>.csv lists the files of each split.
All are tab-separated with a header line. A release differs only in its folder name, its zenodo record and
its file-name pattern (:class:`Release`).

Validation locations: the training split's locations are ranked per scene by sha1("<split_seed>/<identifier>");
each scene with two or more locations holds out the first location, and then the next ones while that
brings the scene's held-out share of clips closer to validation_fraction, always keeping one location
for training. Every clip of a held-out location (all its devices) is validated on, none trained on, so
validation is location-disjoint from training. A location recorded in several scenes counts for the
first of them (alphabetically). Adding locations moves few others.

A training subset (a file list such as the DCASE 2024 Task 1 splits of TAU 2022) takes the place of the
training split: its locations are held out by the same rule, so training and validation are both drawn from
its files, and nothing else of the training split is used.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from datasets.base import TEST, TRAIN, VALIDATION, CachedData, Layout, Role, check_fraction, check_seed
from datasets.cache import Clip
from datasets.metadata import LayoutError, Row, read_tsv
from datasets.subsets import hold_out_groups
from errors import ConfigurationError

logger = logging.getLogger(__name__)

META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
SHOWN = 5

# The settings of the roles every TAU Mobile dataset has (its DEFAULTS add them).
SPLIT_DEFAULTS = {
    "train_split": "fold1_train",  # evaluation_setup/<name>.csv: the training files (train and validation roles)
    "test_split": "fold1_evaluate",  # evaluation_setup/<name>.csv: the test files, every device (reported only)
    "validation_fraction": 0.15,  # about this share of train_split's clips, whole recording locations, validates
    "split_seed": 0,  # seed of the choice of validation locations
}


@dataclass(frozen=True)
class Release:
    """One TAU Urban Acoustic Scenes Mobile development set as extracted from zenodo.

    title: its name in messages; folder: the folder its zips extract into; zenodo: the record's address;
    example: an audio file name showing the pattern; optional: a line of the expected tree for files the
    release does not ship but a user may add (or None).
    """

    title: str
    folder: str
    zenodo: str
    example: str
    optional: str | None = None

    def expected_tree(self) -> str:
        """The layout a base_dir must have, as messages show it."""
        setup = "├──" if self.optional else "└──"
        indent = "│   " if self.optional else "    "
        lines = [
            "base_dir/                                   (or base_dir may be this folder itself)",
            f"└── {self.folder}/",
            "    ├── meta.csv                  tab-separated: filename, scene_label, identifier, source_label",
            "    ├── audio/",
            f"    │   ├── {self.example}",
            "    │   └── ...                   (the audio.1 ... audio.16 zips extracted here)",
            f"    {setup} evaluation_setup/",
            f"    {indent}├── fold1_train.csv       tab-separated: filename, scene_label",
            f"    {indent}├── fold1_evaluate.csv    tab-separated: filename, scene_label",
            f"    {indent}└── fold1_test.csv        filename",
        ]
        if self.optional:
            lines.append(f"    └── {self.optional}")
        return "\n".join(lines)


class TauMobileData(CachedData):
    """A TAU Urban Acoustic Scenes Mobile development set, cached as HDF5.

    Roles: train (train_split less the validation locations, train_domains devices), validation (held-out
    recording locations of train_split, train_domains devices), test (test_split, every device). Items:
    waveform (or spectrogram), file_name (as in meta.csv), label (scene), domain (device), subdomain (city).
    Subclasses name their release and their demo data.
    """

    release: ClassVar[Release]
    domain_kind = "device"
    group_names = ("seen devices", "unseen devices")

    def __init__(
        self,
        *,
        train_split: str = SPLIT_DEFAULTS["train_split"],
        test_split: str = SPLIT_DEFAULTS["test_split"],
        validation_fraction: float = SPLIT_DEFAULTS["validation_fraction"],
        split_seed: int = SPLIT_DEFAULTS["split_seed"],
        **settings,
    ):
        """train_split, test_split: evaluation_setup files (without .csv); validation_fraction, split_seed: the
        validation locations (see hold_out_locations); settings: the rest of DEFAULTS, and mel."""
        self.train_split = train_split
        self.test_split = test_split
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed
        super().__init__(**settings)

    def _read_layout(self, base_dir: Path) -> Layout:
        return read_layout(
            base_dir, self.release, self.train_split, self.test_split, self.validation_fraction, self.split_seed
        )


def read_layout(
    base_dir: Path,
    release: Release,
    train_split: str,
    test_split: str,
    validation_fraction: float,
    split_seed: int,
    subset_csv: str | os.PathLike | None = None,
) -> Layout:
    """The dataset's clips for the training and test splits, named by their evaluation_setup files (without
    .csv); validation is the training split's held-out locations (see the module docstring).

    subset_csv: a file listing the training files to use instead of the whole training split (see
    read_subset); None: the whole training split.
    """
    check_split_settings(validation_fraction, split_seed)
    root = find_root(base_dir, release)
    meta = {row["filename"]: row for row in read_tsv(root / "meta.csv", META_COLUMNS)}
    splits = {split: split_clips(root, split, meta, release) for split in dict.fromkeys((train_split, test_split))}
    training = splits[train_split]
    if subset_csv is not None:
        kept = read_subset(root, subset_csv, meta, train_split, splits)
        training = [clip for clip in training if clip.path in kept]
    locations = {clip.path: meta[clip.path]["identifier"] for clip in training}
    held_out = hold_out_locations(training, locations, validation_fraction, split_seed)
    validation = frozenset(path for path, location in locations.items() if location in held_out)
    if subset_csv is not None:
        logger.info("split_csv=%s: %d of the %d files of %s; %d of them (%d locations) validate, %d train",
                    subset_csv, len(training), len(splits[train_split]), train_split, len(validation), len(held_out),
                    len(training) - len(validation))
    rows = meta.values()
    return Layout(
        root=root,
        splits=splits,
        roles={
            TRAIN: Role(train_split, frozenset(locations) - validation),
            VALIDATION: Role(train_split, validation),
            TEST: Role(test_split),
        },
        class_names=sorted({row["scene_label"] for row in rows}),
        domain_names=sorted({row["source_label"] for row in rows}),
        subdomain_names=sorted({city(row["identifier"]) for row in rows}),
    )


def find_root(base_dir: Path, release: Release) -> Path:
    """The dataset folder: `base_dir` itself or its child named like the download."""
    for candidate in (base_dir, base_dir / release.folder):
        if (candidate / "meta.csv").is_file():
            return candidate
    state = (
        "does not exist" if not base_dir.exists() else f"contains no meta.csv (nor does a {release.folder}/ in it)"
    )
    raise LayoutError(
        f"basedataset.base_dir={str(base_dir)!r} {state}. Expected the {release.title} development set as "
        f"extracted from zenodo ({release.zenodo}):\n{release.expected_tree()}"
    )


def hold_out_locations(clips: Sequence[Clip], locations: dict[str, str], fraction: float, seed: int) -> set[str]:
    """The identifiers of the recording locations held out for validation (see the module docstring): whole
    locations, per scene (datasets.subsets.hold_out_groups).

    clips: the training clips (the training split, or its subset); locations: each clip's identifier, by path.
    """
    return hold_out_groups(clips, locations, fraction, seed)


def read_subset(
    root: Path, subset_csv: str | os.PathLike, meta: dict[str, Row], train_split: str, splits: dict[str, list[Clip]]
) -> frozenset[str]:
    """The file names a training subset lists: a table with a filename column (and, as published, scene_label,
    which must agree with meta.csv), tab-separated with a header line. A relative path is taken from the
    dataset folder. Files outside the training split are refused, naming where they are."""
    path = _subset_path(root, subset_csv)
    rows = read_tsv(path, ("filename",), optional=("scene_label",))
    if not rows:
        raise LayoutError(f"basedataset.split_csv={str(subset_csv)!r}: {path} lists no files")
    listed = {row["filename"]: row for row in rows}
    training = {clip.path for clip in splits[train_split]}
    outside = [name for name in listed if name not in training]
    if outside:
        others = {split: {clip.path for clip in clips} for split, clips in splits.items() if split != train_split}
        where = Counter(
            next((f"the {split} split" for split, files in others.items() if name in files), None)
            or ("other splits of meta.csv" if name in meta else "no split (not in meta.csv)")
            for name in outside
        )
        places = ", ".join(f"{count} in {place}" for place, count in where.items())
        raise ConfigurationError(
            f"basedataset.split_csv={str(subset_csv)!r}: {len(outside)} of its {len(listed)} files are not in the "
            f"training split {train_split!r} ({places}), e.g. {outside[:SHOWN]}. A training subset lists files of "
            f"the training split only: check that the file belongs to this dataset ({root.name}) and to "
            f"basedataset.train_split={train_split!r}."
        )
    _check_scene_labels(path, rows, meta)
    return frozenset(listed)


def split_clips(root: Path, split: str, meta: dict[str, Row], release: Release) -> list[Clip]:
    """The clips of evaluation_setup/<split>.csv, their scene, device and city from meta.csv."""
    setup = root / "evaluation_setup" / f"{split}.csv"
    if not setup.is_file():
        available = sorted(p.stem for p in (root / "evaluation_setup").glob("*.csv"))
        raise LayoutError(
            f"{setup} not found; split {split!r} must name a file in evaluation_setup/ (found {available}). "
            f"Expected layout:\n{release.expected_tree()}"
        )
    rows = read_tsv(setup, ("filename",))
    unknown = [row["filename"] for row in rows if row["filename"] not in meta]
    if unknown:
        raise LayoutError(f"{setup}: {len(unknown)} files are not in meta.csv, e.g. {unknown[:SHOWN]}")
    _check_scene_labels(setup, rows, meta)
    return [
        Clip(
            path=row["filename"],
            label=meta[row["filename"]]["scene_label"],
            domain=meta[row["filename"]]["source_label"],
            subdomain=city(meta[row["filename"]]["identifier"]),
        )
        for row in rows
    ]


def check_split_settings(validation_fraction: float, split_seed: int) -> None:
    """Raise ValueError for a validation_fraction outside (0, 1) or a split_seed that is not an integer."""
    meaning = "the share of the training split's clips whose locations are held out for validation"
    check_fraction("validation_fraction", validation_fraction, meaning, 0.15)
    check_seed(split_seed)


def city(identifier: str) -> str:
    """The city of a recording location identifier such as "barcelona-0"."""
    return identifier.split("-", 1)[0]


def _subset_path(root: Path, subset_csv: str | os.PathLike) -> Path:
    given = Path(subset_csv).expanduser()
    path = given if given.is_absolute() else root / given
    if path.is_file():
        return path
    hint = (
        f"; {given.resolve()} exists: give its absolute path"
        if not given.is_absolute() and given.is_file()
        else ""
    )
    raise ConfigurationError(
        f"basedataset.split_csv={str(subset_csv)!r}: {path} not found (a relative path is taken from the dataset "
        f"folder {root}, e.g. split_setup/split25.csv; or give an absolute path){hint}"
    )


def _check_scene_labels(path: Path, rows: Sequence[Row], meta: dict[str, Row]) -> None:
    """Raise LayoutError where a table's scene_label (when it has the column) differs from meta.csv's."""
    disagree = [
        row["filename"]
        for row in rows
        if row.get("scene_label", meta[row["filename"]]["scene_label"]) != meta[row["filename"]]["scene_label"]
    ]
    if disagree:
        raise LayoutError(
            f"{path}: scene labels differ from meta.csv for {len(disagree)} files, e.g. {disagree[:SHOWN]}"
        )
