"""Reading TAU Urban Acoustic Scenes 2020 Mobile (development set) as downloaded from zenodo, and holding
recording locations of the training split out for validation.

meta.csv lists every file with its scene, recording location (identifier, "<city>-<number>") and
device (source_label); evaluation_setup/<split>.csv lists the files of each split. All are
tab-separated with a header line.

Validation locations: the training split's locations are ranked per scene by sha1("<split_seed>/<identifier>");
each scene with two or more locations holds out the first location, and then the next ones while that
brings the scene's held-out share of clips closer to validation_fraction, always keeping one location
for training. Every clip of a held-out location (all its devices) is validated on, none trained on, so
validation is location-disjoint from training. A location recorded in several scenes counts for the
first of them (alphabetically). Adding locations moves few others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datasets.base import TEST, TRAIN, VALIDATION, Layout, Role, check_fraction, check_seed
from datasets.cache import Clip
from datasets.metadata import LayoutError, read_tsv
from datasets.subsets import hold_out_groups

DATASET_FOLDER = "TAU-urban-acoustic-scenes-2020-mobile-development"
META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
SHOWN = 5

EXPECTED_TREE = f"""\
base_dir/                                   (or base_dir may be this folder itself)
└── {DATASET_FOLDER}/
    ├── meta.csv                  tab-separated: filename, scene_label, identifier, source_label
    ├── audio/
    │   ├── airport-barcelona-0-0-a.wav
    │   └── ...                   (the audio.1 ... audio.16 zips extracted here)
    └── evaluation_setup/
        ├── fold1_train.csv       tab-separated: filename, scene_label
        ├── fold1_evaluate.csv    tab-separated: filename, scene_label
        └── fold1_test.csv        filename"""


def find_root(base_dir: Path) -> Path:
    """The dataset folder: `base_dir` itself or its child named like the download."""
    for candidate in (base_dir, base_dir / DATASET_FOLDER):
        if (candidate / "meta.csv").is_file():
            return candidate
    state = (
        "does not exist" if not base_dir.exists() else "contains no meta.csv (nor does a " + DATASET_FOLDER + "/ in it)"
    )
    raise LayoutError(
        f"basedataset.base_dir={str(base_dir)!r} {state}. Expected the TAU Urban Acoustic Scenes 2020 Mobile "
        f"development set as extracted from zenodo (https://zenodo.org/record/3819968):\n{EXPECTED_TREE}"
    )


def read_layout(
    base_dir: Path, train_split: str, test_split: str, validation_fraction: float, split_seed: int
) -> Layout:
    """The dataset's clips for the training and test splits, named by their evaluation_setup files (without
    .csv); validation is the training split's held-out locations (see the module docstring)."""
    check_split_settings(validation_fraction, split_seed)
    root = find_root(base_dir)
    meta = {row["filename"]: row for row in read_tsv(root / "meta.csv", META_COLUMNS)}
    splits = {split: _split_clips(root, split, meta) for split in dict.fromkeys((train_split, test_split))}
    locations = {clip.path: meta[clip.path]["identifier"] for clip in splits[train_split]}
    held_out = hold_out_locations(splits[train_split], locations, validation_fraction, split_seed)
    validation = frozenset(path for path, location in locations.items() if location in held_out)
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
        subdomain_names=sorted({_city(row["identifier"]) for row in rows}),
    )


def hold_out_locations(clips: Sequence[Clip], locations: dict[str, str], fraction: float, seed: int) -> set[str]:
    """The identifiers of the recording locations held out for validation (see the module docstring): whole
    locations, per scene (datasets.subsets.hold_out_groups).

    clips: the training split; locations: each clip's identifier, by path.
    """
    return hold_out_groups(clips, locations, fraction, seed)


def check_split_settings(validation_fraction: float, split_seed: int) -> None:
    """Raise ValueError for a validation_fraction outside (0, 1) or a split_seed that is not an integer."""
    meaning = "the share of the training split's clips whose locations are held out for validation"
    check_fraction("validation_fraction", validation_fraction, meaning, 0.15)
    check_seed(split_seed)


def _split_clips(root: Path, split: str, meta: dict[str, dict[str, str]]) -> list[Clip]:
    setup = root / "evaluation_setup" / f"{split}.csv"
    if not setup.is_file():
        available = sorted(p.stem for p in (root / "evaluation_setup").glob("*.csv"))
        raise LayoutError(
            f"{setup} not found; split {split!r} must name a file in evaluation_setup/ (found {available}). "
            f"Expected layout:\n{EXPECTED_TREE}"
        )
    rows = read_tsv(setup, ("filename",))
    unknown = [row["filename"] for row in rows if row["filename"] not in meta]
    if unknown:
        raise LayoutError(f"{setup}: {len(unknown)} files are not in meta.csv, e.g. {unknown[:SHOWN]}")
    disagree = [
        row["filename"]
        for row in rows
        if row.get("scene_label", meta[row["filename"]]["scene_label"]) != meta[row["filename"]]["scene_label"]
    ]
    if disagree:
        raise LayoutError(
            f"{setup}: scene labels differ from meta.csv for {len(disagree)} files, e.g. {disagree[:SHOWN]}"
        )
    return [
        Clip(
            path=row["filename"],
            label=meta[row["filename"]]["scene_label"],
            domain=meta[row["filename"]]["source_label"],
            subdomain=_city(meta[row["filename"]]["identifier"]),
        )
        for row in rows
    ]


def _city(identifier: str) -> str:
    """The city of a recording location identifier such as "barcelona-0"."""
    return identifier.split("-", 1)[0]
