"""Reading a folder of audio files described by one CSV file (your own dataset).

The CSV has a header line and one row per file: `filename` (the path relative to the folder), `label`
(the class), optionally `domain` (the recording condition whose accuracy is reported separately, e.g.
device, site, speaker) and `split` (which files are trained on and which evaluated). Columns are
separated by commas or tabs, whichever the header line uses; column names are matched without regard to
case, and other columns are ignored.

Without a split column, each (label, domain) group is split on its own: the files of a group are ranked
by a seeded hash of their file name and the first round(n * eval_fraction) of them (at most n - 1, so
every group keeps a training file) are evaluated. The choice does not depend on the row order, and adding
files to the folder moves few of the others.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from datasets.base import Layout
from datasets.cache import Clip
from datasets.metadata import LayoutError, Row, read_tsv

DEFAULT_CSV = "metadata.csv"
REQUIRED_COLUMNS = ("filename", "label")
OPTIONAL_COLUMNS = ("domain", "split")
SEPARATORS = "\t,"  # tab or comma, whichever the header line uses (tab when both)
TRAIN, EVAL = "train", "eval"
SPLIT_VALUES = {"train": TRAIN, "eval": EVAL, "validation": EVAL, "test": EVAL}  # lower-cased cell -> split
NO_DOMAIN = "all"  # the one domain of a CSV without a domain column
NO_SUBDOMAIN = "-"  # this dataset has no secondary domain
SHOWN = 5

EXPECTED_CSV = """\
    filename,label,domain,split          header line; domain and split are optional columns
    dogs/bark_001.wav,dog,phone,train    filename: path relative to base_dir
    dogs/bark_002.wav,dog,studio,eval    split: train, or eval / validation / test (all evaluated)
    birds/blackbird_01.flac,bird,phone,train
(comma- or tab-separated; without a split column, eval_fraction of each label and domain is evaluated)"""


@dataclass(frozen=True)
class Listing:
    """The files a CSV lists, checked: clips in CSV order; splits: "train"/"eval" per clip, or None
    when the CSV has no split column; has_domain: whether it has a domain column."""

    csv_path: Path
    clips: list[Clip]
    splits: list[str] | None
    has_domain: bool

    @property
    def class_names(self) -> list[str]:
        return sorted({clip.label for clip in self.clips})


def csv_path(base_dir: Path, csv_file: str | None) -> Path:
    """The CSV to read: base_dir/metadata.csv by default; a relative path is taken relative to base_dir."""
    return base_dir / DEFAULT_CSV if csv_file is None else base_dir / Path(csv_file).expanduser()


def read_listing(base_dir: Path, csv_file: str | None) -> Listing:
    """Read and check the CSV describing the folder `base_dir` (see the module docstring)."""
    if not base_dir.is_dir():
        state = "is a file, not a folder" if base_dir.exists() else "does not exist"
        raise LayoutError(
            f"basedataset.base_dir={str(base_dir)!r} {state}; point it at the folder holding your audio files. "
            f"A CSV (basedataset.csv, default {DEFAULT_CSV} in that folder) lists them:\n{EXPECTED_CSV}"
        )
    path = csv_path(base_dir, csv_file)
    if not path.is_file():
        present = sorted(p.name for p in base_dir.glob("*.csv")) or sorted(p.name for p in base_dir.glob("*.tsv"))
        found = f" (CSV files there: {present}; choose one with basedataset.csv=NAME)" if present else ""
        raise LayoutError(
            f"{path} not found{found}. The folder dataset needs a CSV listing every audio file with its label:\n"
            f"{EXPECTED_CSV}"
        )
    rows = _read_rows(path)
    columns = set(rows[0]) if rows else set()
    has_domain, has_split = "domain" in columns, "split" in columns
    clips, splits = [], []
    for row in rows:
        line = row.line
        clips.append(
            Clip(
                path=_filename(path, line, row["filename"]),
                label=_required_cell(path, line, row, "label"),
                domain=_required_cell(path, line, row, "domain") if has_domain else NO_DOMAIN,
                subdomain=NO_SUBDOMAIN,
            )
        )
        if has_split:
            splits.append(_split(path, line, row["split"]))
    if not clips:
        raise LayoutError(f"{path} lists no files: expected a row per audio file after the header:\n{EXPECTED_CSV}")
    _check_duplicates(path, rows, clips)
    if has_split:
        _check_split_labels(path, clips, splits)
    return Listing(csv_path=path, clips=clips, splits=splits if has_split else None, has_domain=has_domain)


def read_layout(base_dir: Path, csv_file: str | None, eval_fraction: float, split_seed: int) -> Layout:
    """The training and evaluation clips of the folder, by the CSV's split column or a seeded stratified split."""
    listing = read_listing(base_dir, csv_file)
    if listing.splits is None:
        train, evaluation = stratified_split(listing.clips, eval_fraction, split_seed)
        if not evaluation:
            raise LayoutError(
                f"eval_fraction={eval_fraction} of the {len(listing.clips)} files of {listing.csv_path} leaves no "
                "file for evaluation (each label and domain keeps at least one training file); raise "
                "basedataset.eval_fraction or add a split column to the CSV"
            )
    else:
        train = [clip for clip, split in zip(listing.clips, listing.splits, strict=True) if split == TRAIN]
        evaluation = [clip for clip, split in zip(listing.clips, listing.splits, strict=True) if split == EVAL]
    return Layout(
        root=base_dir,
        splits={TRAIN: train, EVAL: evaluation},
        class_names=listing.class_names,
        domain_names=sorted({clip.domain for clip in listing.clips}),
        subdomain_names=[NO_SUBDOMAIN],
    )


def stratified_split(clips: Sequence[Clip], eval_fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """(training clips, evaluation clips), each in the given order.

    Per (label, domain) group of n clips, the round(n * eval_fraction) clips (at most n - 1; halves round
    up) that come first when ranked by sha1("<seed>/<path>") are evaluated.
    """
    check_split_settings(eval_fraction, seed)
    groups: dict[tuple[str, str], list[Clip]] = defaultdict(list)
    for clip in clips:
        groups[clip.label, clip.domain].append(clip)
    held_out = set()
    for members in groups.values():
        n_eval = min(len(members) - 1, math.floor(len(members) * eval_fraction + 0.5))
        ranked = sorted(members, key=lambda clip: hashlib.sha1(f"{seed}/{clip.path}".encode()).hexdigest())
        held_out.update(clip.path for clip in ranked[:n_eval])
    return [c for c in clips if c.path not in held_out], [c for c in clips if c.path in held_out]


def check_split_settings(eval_fraction: float, split_seed: int) -> None:
    """Raise ValueError for an eval_fraction outside (0, 1) or a split_seed that is not an integer."""
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, int | float) or not 0 < eval_fraction < 1:
        raise ValueError(
            f"eval_fraction={eval_fraction!r}: expected the share of files held out for evaluation, "
            "between 0 and 1 (exclusive), e.g. 0.2"
        )
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ValueError(f"split_seed={split_seed!r}: expected an integer, e.g. 0")


def _read_rows(path: Path) -> list[Row]:
    """The CSV's non-blank rows (lower-cased column names), with the expected format added to format errors."""
    try:
        return read_tsv(path, REQUIRED_COLUMNS, delimiter=SEPARATORS, optional=OPTIONAL_COLUMNS)
    except LayoutError as error:
        raise LayoutError(
            f"{error} Expected the header {','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}], as in:\n"
            f"{EXPECTED_CSV}"
        ) from None


def _filename(path: Path, line: int, cell: str) -> str:
    if not cell:
        raise LayoutError(f"{path} line {line}: empty filename; every row names an audio file")
    name = PurePosixPath(cell)
    if name.is_absolute():
        raise LayoutError(
            f"{path} line {line}: filename {cell!r} is absolute; expected a path relative to basedataset.base_dir"
        )
    return name.as_posix()


def _required_cell(path: Path, line: int, row: dict[str, str], column: str) -> str:
    if not row[column]:
        fix = "give every row a domain, or drop the column" if column == "domain" else "give every file a label"
        raise LayoutError(f"{path} line {line}: empty {column} for {row['filename']!r}; {fix}")
    return row[column]


def _split(path: Path, line: int, cell: str) -> str:
    split = SPLIT_VALUES.get(cell.lower())
    if split is None:
        raise LayoutError(
            f"{path} line {line}: split {cell!r} is not one of {list(SPLIT_VALUES)} (any case; validation and test "
            "are evaluated like eval); drop the split column to split by basedataset.eval_fraction instead"
        )
    return split


def _check_duplicates(path: Path, rows: list[Row], clips: list[Clip]) -> None:
    lines: dict[str, list[int]] = defaultdict(list)
    for row, clip in zip(rows, clips, strict=True):
        lines[clip.path].append(row.line)
    repeated = {name: numbers for name, numbers in lines.items() if len(numbers) > 1}
    if repeated:
        shown = ", ".join(f"{name!r} (lines {numbers})" for name, numbers in list(repeated.items())[:SHOWN])
        raise LayoutError(f"{path}: {len(repeated)} files are listed more than once: {shown}; list each file once")


def _check_split_labels(path: Path, clips: list[Clip], splits: list[str]) -> None:
    counts = {split: sum(s == split for s in splits) for split in (TRAIN, EVAL)}
    empty = [split for split, count in counts.items() if count == 0]
    if empty:
        raise LayoutError(
            f"{path}: no file has split {empty[0]!r} ({counts[TRAIN]} train, {counts[EVAL]} eval); mark some files "
            f"{'train' if empty[0] == TRAIN else 'eval'}, or drop the split column to split by "
            "basedataset.eval_fraction"
        )
    trained = {clip.label for clip, split in zip(clips, splits, strict=True) if split == TRAIN}
    untrained = sorted({clip.label for clip, split in zip(clips, splits, strict=True) if split == EVAL} - trained)
    if untrained:
        raise LayoutError(
            f"{path}: the labels {untrained} occur only in evaluation files, so the model could never learn them; "
            "add training files of these labels or remove their rows"
        )
