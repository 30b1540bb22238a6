"""Reading datasets' metadata files, and the error for a folder that is not laid out as downloaded."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from errors import UserError

SEPARATOR_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon"}


class LayoutError(UserError):
    """A dataset folder that does not look like the dataset as downloaded."""


class Row(dict):
    """One row of a table, {column name: cell}; line: the file's line number where the row ends."""

    def __init__(self, cells: Mapping[str, str], line: int):
        super().__init__(cells)
        self.line = line


def read_tsv(path: Path, required: Sequence[str], delimiter: str = "\t", optional: Sequence[str] = ()) -> list[Row]:
    """Rows of a delimited text file with a header line, keyed by the header's lower-cased column names.

    required: columns every file must have; optional: columns read when present (neither may repeat).
    delimiter: the column separator, or several candidates of which the first that occurs in the header
    line separates the columns (the first candidate when none occurs), e.g. "\\t," for tab or comma.
    Tolerates a byte-order mark, Windows line endings, surrounding spaces, blank lines, quoted cells and
    the case of column names; anything else that does not fit (text other than UTF-8, missing or repeated
    columns, another separator, rows of the wrong width) raises LayoutError naming the file and line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise LayoutError(f'{path} is not UTF-8 text ({error}); save it as UTF-8 (e.g. "CSV UTF-8" in Excel)') from None
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise LayoutError(f"{path} is empty; expected a header line with the columns {list(required)}")
    separator = next((candidate for candidate in delimiter if candidate in first), delimiter[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    header = [cell.strip().lower() for cell in lines[0][1]]
    missing = [column for column in required if column not in header]
    if missing:
        others = [name for sep, name in SEPARATOR_NAMES.items() if sep not in delimiter and sep in first]
        hint = (
            f" Columns must be separated by {' or '.join(_plural(sep) for sep in delimiter)}, not {others[0]}s."
            if len(header) == 1 and others
            else ""
        )
        raise LayoutError(f"{path}: header {header} lacks the columns {missing}.{hint}")
    repeated = [column for column in (*required, *optional) if header.count(column) > 1]
    if repeated:
        raise LayoutError(f"{path}: the header names the columns {repeated} more than once")
    rows = []
    for line, row in lines[1:]:
        cells = [cell.strip() for cell in row]
        while len(cells) > len(header) and not cells[-1]:
            cells.pop()
        if len(cells) != len(header):
            raise LayoutError(
                f"{path} line {line}: {len(cells)} {_name(separator)}-separated fields, expected {len(header)} "
                f"{header} (quote cells that contain the separator)"
            )
        rows.append(Row(zip(header, cells, strict=True), line))
    return rows


def _name(separator: str) -> str:
    return SEPARATOR_NAMES.get(separator, repr(separator))


def _plural(separator: str) -> str:
    return f"{_name(separator)}s" if separator in SEPARATOR_NAMES else repr(separator)
