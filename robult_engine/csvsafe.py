"""CSV cells a spreadsheet cannot run: every CSV the engine and the app write goes through here.

A spreadsheet reads a cell that starts with `=`, `+`, `-` or `@` (and, in some, a tab or a carriage return
before one) as a formula, so a name in a CSV (a run, a method, a dataset, a modality, a metric, a mask
setting: any text a user chose) could run one when the file is opened. Such a text cell is written with a
leading `'`, which spreadsheets show as text. Numbers stay numbers: an int or a float is written as it is,
and so is text that is just a number (`-0.031200`, `-3.12e-05`, `-inf`), the way the writers format them.

    with open(path, "w", newline="") as f:
        w = csv_writer(f)            # csv.writer whose rows are made safe
        w.writerow(["method", "diff"])
        w.writerow([name, f"{d:.6f}"])
"""
from __future__ import annotations

import csv
import re
from typing import Any, Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def safe_cell(value: Any) -> Any:
    """The value to write: a text cell a spreadsheet would read as a formula gets a leading `'`; numbers, the
    text of a plain number, and every other value are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(v) for v in row]


class SafeWriter:
    """A `csv.writer` whose `writerow` / `writerows` pass every cell through `safe_cell`."""

    def __init__(self, f, *args, **kwargs) -> None:
        self._w = csv.writer(f, *args, **kwargs)

    def writerow(self, row: Iterable[Any]):
        return self._w.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)

    @property
    def dialect(self):
        return self._w.dialect


def csv_writer(f, *args, **kwargs) -> SafeWriter:
    return SafeWriter(f, *args, **kwargs)
