"""CSV files the console writes (exports of tables, failed import rows) and reads."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> int:
    """A CSV file of text cells (UTF-8, the csv module's quoting); the number of rows written."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def read_text(path: Path) -> str:
    """A CSV file's text: UTF-8 (with or without Excel's byte-order mark), else Windows-1252
    (a spreadsheet saved "as CSV" on a Windows workstation)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return path.read_text(encoding="cp1252")
