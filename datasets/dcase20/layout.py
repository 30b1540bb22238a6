"""Reading TAU Urban Acoustic Scenes 2020 Mobile (development set) as downloaded from zenodo.

meta.csv lists every file with its scene, recording location (identifier, "<city>-<number>") and
device (source_label); evaluation_setup/<split>.csv lists the files of each split. All are
tab-separated with a header line.
"""

from __future__ import annotations

from pathlib import Path

from datasets.base import Layout
from datasets.cache import Clip
from datasets.metadata import LayoutError, read_tsv

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


def read_layout(base_dir: Path, train_split: str, eval_split: str) -> Layout:
    """The dataset's clips for the two splits, named by their evaluation_setup files (without .csv)."""
    root = find_root(base_dir)
    meta = {row["filename"]: row for row in read_tsv(root / "meta.csv", META_COLUMNS)}
    splits = {split: _split_clips(root, split, meta) for split in dict.fromkeys((train_split, eval_split))}
    rows = meta.values()
    return Layout(
        root=root,
        splits=splits,
        class_names=sorted({row["scene_label"] for row in rows}),
        domain_names=sorted({row["source_label"] for row in rows}),
        subdomain_names=sorted({_city(row["identifier"]) for row in rows}),
    )


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
