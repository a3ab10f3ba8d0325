"""CSV cells that are safe to open in a spreadsheet, for every CSV the admin API writes (the log export,
the usage export)."""

from __future__ import annotations

from typing import Any

__all__ = ["csv_cell"]

#: What makes a spreadsheet read a cell as a formula (OWASP, "CSV injection"): such a text cell is
#: written with a leading `'`, which spreadsheets show as text. Numbers are written as numbers.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """`value` as `csv.writer` should get it: None empty, booleans as words, numbers as they are, and
    text that would start a formula prefixed with `'` (text comes from clients, such as model names and
    request ids, and from operators, such as key and backend names)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
