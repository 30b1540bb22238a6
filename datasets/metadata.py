"""Reading datasets' metadata files, and the error for a folder that is not laid out as downloaded."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path


class LayoutError(Exception):
    """A dataset folder that does not look like the dataset as downloaded."""


def read_tsv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header line, as dicts keyed by the header's column names.

    Tolerates a byte-order mark, Windows line endings, surrounding spaces and blank lines; anything else
    that does not fit (missing columns, another separator, rows of the wrong width) raises LayoutError
    naming the file and line.
    """
    with open(path, encoding="utf-8-sig", newline="") as handle:
        lines = [
            (number, row)
            for number, row in enumerate(csv.reader(handle, delimiter="\t"), 1)
            if any(c.strip() for c in row)
        ]
    if not lines:
        raise LayoutError(f"{path} is empty; expected a header line with the columns {list(required)}")
    header = [cell.strip() for cell in lines[0][1]]
    missing = [column for column in required if column not in header]
    if missing:
        separator_hint = (
            " It does not look tab-separated: the original files separate columns with tabs."
            if len(header) == 1 and any(sep in header[0] for sep in ",;")
            else ""
        )
        raise LayoutError(f"{path}: header {header} lacks the columns {missing}.{separator_hint}")
    rows = []
    for number, row in lines[1:]:
        cells = [cell.strip() for cell in row]
        while len(cells) > len(header) and not cells[-1]:
            cells.pop()
        if len(cells) != len(header):
            raise LayoutError(
                f"{path} line {number}: {len(cells)} tab-separated fields, expected {len(header)} {header}"
            )
        rows.append(dict(zip(header, cells, strict=True)))
    return rows
