"""Reading a folder of audio files described by one CSV file (your own dataset).

The CSV has a header line and one row per file: `filename` (the path relative to the folder), `label`
(the class), optionally `domain` (the recording condition whose accuracy is reported separately, e.g.
device, site, speaker), `split` (train, validation or test; eval means test) and `fold` (an integer: the
cross-validation fold, read only with basedataset.fold set). Columns are separated by commas or tabs,
whichever the header line uses; column names are matched without regard to case, and other columns are
ignored.

Roles the CSV does not assign (all of validation and test without a split column, or one of them when no
row names it) are held out of the training rows, each (label, domain) group on its own: the group's files
are ranked by a seeded hash of their file name; the first round(n * test_fraction) are test, the next
round(n * validation_fraction) validation (together at most n - 1, so every group keeps a training file),
the rest train. The choice does not depend on the row order, and adding files moves few of the others.

With basedataset.fold=k (a CSV with a fold column and no split column), the roles come from the folds: test
is fold k's rows, every domain; validation is held out of the other folds' rows by the same rule (test share
0, validation_fraction of each (label, domain) group), and training is the rest of the other folds. Folds
1..K then test every row once. Every file listed is cached in one file; the roles select from it.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from datasets.base import NO_DOMAIN, ROLES, TEST, TRAIN, VALIDATION, Layout, Role, check_fraction, check_seed
from datasets.cache import Clip
from datasets.metadata import LayoutError, Row, read_tsv
from datasets.subsets import seeded_order
from errors import ConfigurationError

logger = logging.getLogger(__name__)

DEFAULT_CSV = "metadata.csv"
REQUIRED_COLUMNS = ("filename", "label")
OPTIONAL_COLUMNS = ("domain", "split", "fold")
SEPARATORS = "\t,"  # tab or comma, whichever the header line uses (tab when both)
SPLIT_VALUES = {"train": TRAIN, "validation": VALIDATION, "test": TEST, "eval": TEST}  # lower-cased cell -> role
CACHED_SPLIT = "all"  # the one cached split: every file of the CSV
NO_SUBDOMAIN = "-"  # this dataset has no secondary domain
SHOWN = 5

EXPECTED_CSV = """\
    filename,label,domain,split          header line; domain, split (and fold) are optional columns
    dogs/bark_001.wav,dog,phone,train    filename: path relative to base_dir
    dogs/bark_002.wav,dog,studio,test    split: train, validation, or test (eval means test)
    birds/blackbird_01.flac,bird,phone,validation
(comma- or tab-separated; roles without rows are held out of the training rows per label and domain)"""


@dataclass(frozen=True)
class Listing:
    """The files a CSV lists, checked: clips in CSV order; roles: "train"/"validation"/"test" per clip, or
    None when the CSV has no split column; has_domain: whether it has a domain column; fold_cells: (line,
    cell) of the fold column per clip, unchecked (see fold_roles), or None without a fold column; lines: the
    CSV line of each clip."""

    csv_path: Path
    clips: list[Clip]
    roles: list[str] | None
    has_domain: bool
    fold_cells: list[tuple[int, str]] | None = None
    lines: list[int] = field(default_factory=list)

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
    has_domain, has_split, has_fold = "domain" in columns, "split" in columns, "fold" in columns
    clips, roles = [], []
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
            roles.append(_role(path, line, row["split"]))
    if not clips:
        raise LayoutError(f"{path} lists no files: expected a row per audio file after the header:\n{EXPECTED_CSV}")
    _check_duplicates(path, rows, clips)
    if has_split and TRAIN not in roles:
        raise LayoutError(
            f"{path}: no file has split 'train' ({len(roles)} rows); mark the files to train on 'train', or drop the "
            "split column to hold validation and test files out of all rows"
        )
    fold_cells = [(row.line, row["fold"]) for row in rows] if has_fold else None
    return Listing(path, clips, roles if has_split else None, has_domain, fold_cells, [row.line for row in rows])


def read_layout(
    base_dir: Path,
    csv_file: str | None,
    validation_fraction: float,
    test_fraction: float,
    split_seed: int,
    fold: int | None = None,
) -> Layout:
    """The folder's files and their roles: by the folds with fold=k (see fold_roles), else by the CSV's split
    column, the rest held out of the training rows."""
    check_split_settings(validation_fraction, test_fraction, split_seed)
    check_fold(fold)
    listing = read_listing(base_dir, csv_file)
    if fold is None:
        assigned = split_roles(listing, validation_fraction, test_fraction, split_seed)
    else:
        assigned = fold_roles(listing, fold, validation_fraction, split_seed)
    return Layout(
        root=base_dir,
        splits={CACHED_SPLIT: listing.clips},
        roles={role: Role(CACHED_SPLIT, frozenset(clip.path for clip in assigned[role])) for role in ROLES},
        class_names=listing.class_names,
        domain_names=sorted({clip.domain for clip in listing.clips}),
        subdomain_names=[NO_SUBDOMAIN],
        listed_at={clip.path: f"{listing.csv_path.name} line {line}" for clip, line in zip(listing.clips, listing.lines,
                                                                                            strict=True)},
        restore=f"Fix the rows of {listing.csv_path} that name them, or the files in {base_dir}",
    )


def split_roles(
    listing: Listing, validation_fraction: float, test_fraction: float, split_seed: int
) -> dict[str, list[Clip]]:
    """{role: clips} by the CSV's split column; roles without rows held out of the training rows (stratified_split).
    A fold column is not read."""
    if listing.fold_cells is not None:
        logger.info("%s: the fold column is not used (basedataset.fold=None)", listing.csv_path)
    roles = listing.roles or [TRAIN] * len(listing.clips)
    assigned = {role: [clip for clip, r in zip(listing.clips, roles, strict=True) if r == role] for role in ROLES}
    missing = [role for role in (TEST, VALIDATION) if not assigned[role]]
    if missing:
        fractions = {role: (test_fraction if role == TEST else validation_fraction) for role in missing}
        train, held_out = stratified_split(
            assigned[TRAIN], fractions.get(VALIDATION, 0.0), fractions.get(TEST, 0.0), split_seed
        )
        for role in missing:
            if not held_out[role]:
                raise LayoutError(
                    f"{role}_fraction={fractions[role]} of the {len(assigned[TRAIN])} training files of "
                    f"{listing.csv_path} leaves no file for {role} (each label and domain keeps at least one training "
                    f"file); raise basedataset.{role}_fraction, or mark {role} files in a split column of the CSV"
                )
        assigned = {**assigned, **{role: held_out[role] for role in missing}, TRAIN: train}
        shares = ", ".join(
            f"{len(held_out[role])} {role} files ({role}_fraction={fractions[role]})" for role in missing
        )
        source = "the CSV has no split column" if listing.roles is None else f"no row of the CSV is marked {missing}"
        logger.info("%s: %s, so %s are held out of its training rows", listing.csv_path, source, shares)
    return assigned


def stratified_split(
    clips: Sequence[Clip], validation_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Clip], dict[str, list[Clip]]]:
    """(training clips, {"validation": clips, "test": clips}), each in the given order.

    Per (label, domain) group of n clips ranked by sha1("<seed>/<path>"): the first round(n * test_fraction)
    are test, the next round(n * validation_fraction) validation (halves round up; together at most n - 1,
    test first), the rest train. A fraction of 0 holds out nothing for that role.
    """
    groups: dict[tuple[str, str], list[Clip]] = defaultdict(list)
    for clip in clips:
        groups[clip.label, clip.domain].append(clip)
    role_of: dict[str, str] = {}
    for members in groups.values():
        n_test = min(len(members) - 1, _round_half_up(len(members) * test_fraction))
        n_validation = min(len(members) - 1 - n_test, _round_half_up(len(members) * validation_fraction))
        by_path = {clip.path: clip for clip in members}
        ranked = [by_path[path] for path in seeded_order(list(by_path), seed)]
        role_of.update({clip.path: TEST for clip in ranked[:n_test]})
        role_of.update({clip.path: VALIDATION for clip in ranked[n_test : n_test + n_validation]})
    held_out = {role: [clip for clip in clips if role_of.get(clip.path) == role] for role in (VALIDATION, TEST)}
    return [clip for clip in clips if clip.path not in role_of], held_out


def fold_roles(listing: Listing, fold: int, validation_fraction: float, split_seed: int) -> dict[str, list[Clip]]:
    """{role: clips} with fold k tested on: test is fold k's rows; validation is held out of the other folds' rows
    (stratified_split with test share 0: validation_fraction of each (label, domain) group, split_seed), training
    is the rest of them. Refuses a CSV without a fold column or with a split column, a fold not in the column,
    and a fold cell that is not an integer."""
    path = listing.csv_path
    if listing.fold_cells is None:
        raise ConfigurationError(
            f"basedataset.fold={fold}: {path} has no fold column; add one (an integer fold per row, e.g. 1 to 5) to "
            "test on one fold and train and validate on the others, or set basedataset.fold=None"
        )
    if listing.roles is not None:
        raise ConfigurationError(
            f"basedataset.fold={fold}: {path} has both a split and a fold column, and which rows may be trained on "
            "would be ambiguous; set basedataset.fold=None to use the split column, or use a CSV without the split "
            "column (basedataset.csv=...) for the folds"
        )
    folds = [_fold_number(path, line, cell) for line, cell in listing.fold_cells]
    present = sorted(set(folds))
    if fold not in present:
        raise ConfigurationError(f"basedataset.fold={fold}: {path} has no row of that fold; its folds are {present}")
    others = [clip for clip, number in zip(listing.clips, folds, strict=True) if number != fold]
    if not others:
        raise ConfigurationError(
            f"basedataset.fold={fold}: every row of {path} is in fold {fold}, which leaves nothing to train on; "
            "give the rows several folds"
        )
    train, held_out = stratified_split(others, validation_fraction, 0.0, split_seed)
    if not held_out[VALIDATION]:
        raise LayoutError(
            f"validation_fraction={validation_fraction} of the {len(others)} files outside fold {fold} of {path} "
            "leaves no file for validation (each label and domain keeps at least one training file); raise "
            "basedataset.validation_fraction"
        )
    test = [clip for clip, number in zip(listing.clips, folds, strict=True) if number == fold]
    logger.info(
        "%s: fold %d of %s tested on (%d files); %d files of the other folds validated on (validation_fraction=%s, "
        "split_seed=%d), %d trained on", path, fold, present, len(test), len(held_out[VALIDATION]),
        validation_fraction, split_seed, len(train)
    )
    return {TRAIN: train, VALIDATION: held_out[VALIDATION], TEST: test}


def check_fold(fold: int | None) -> None:
    """Raise ConfigurationError unless fold is None or an integer."""
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)):
        raise ConfigurationError(
            f"basedataset.fold={fold!r}: expected the number of the fold to test on, as in the CSV's fold column "
            "(e.g. 1), or None to take the roles from the split column"
        )


def check_split_settings(validation_fraction: float, test_fraction: float, split_seed: int) -> None:
    """Raise ConfigurationError for fractions outside (0, 1) or together 1 or more, or a split_seed that is not an
    integer."""
    for key, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        meaning = f"the share of each label and domain's files held out for {key.split('_')[0]}"
        check_fraction(key, value, meaning, 0.2)
    if validation_fraction + test_fraction >= 1:
        raise ConfigurationError(
            f"validation_fraction={validation_fraction} and test_fraction={test_fraction} leave nothing to train on; "
            "their sum must be below 1"
        )
    check_seed(split_seed)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _read_rows(path: Path) -> list[Row]:
    """The CSV's non-blank rows (lower-cased column names), with the expected format added to format errors."""
    try:
        return read_tsv(path, REQUIRED_COLUMNS, delimiter=SEPARATORS, optional=OPTIONAL_COLUMNS)
    except LayoutError as error:
        raise LayoutError(
            f"{error} Expected the header {','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}], as in:\n"
            f"{EXPECTED_CSV}"
        ) from None


def _fold_number(path: Path, line: int, cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise LayoutError(
            f"{path} line {line}: fold {cell!r} is not an integer; give every row its fold number (e.g. 1 to 5)"
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


def _role(path: Path, line: int, cell: str) -> str:
    role = SPLIT_VALUES.get(cell.lower())
    if role is None:
        raise LayoutError(
            f"{path} line {line}: split {cell!r} is not one of {list(SPLIT_VALUES)} (any case; eval means test); "
            "drop the split column to hold validation and test files out by basedataset.validation_fraction and "
            "test_fraction instead"
        )
    return role


def _check_duplicates(path: Path, rows: list[Row], clips: list[Clip]) -> None:
    lines: dict[str, list[int]] = defaultdict(list)
    for row, clip in zip(rows, clips, strict=True):
        lines[clip.path].append(row.line)
    repeated = {name: numbers for name, numbers in lines.items() if len(numbers) > 1}
    if repeated:
        shown = ", ".join(f"{name!r} (lines {numbers})" for name, numbers in list(repeated.items())[:SHOWN])
        raise LayoutError(f"{path}: {len(repeated)} files are listed more than once: {shown}; list each file once")
