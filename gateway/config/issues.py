"""A configuration problem, located in its file: `gateway.yaml:14:7: models.chat.chain[1].backend: ...`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "ConfigIssue", "Location"]

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class Location:
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    location: Location
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.location.line}:{self.location.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.location.line,
            "column": self.location.column,
            "path": self.path,
            "message": self.message,
            "text": str(self),
        }

    @staticmethod
    def format_path(path: tuple[str | int, ...]) -> str:
        """`("models", "gpt-4.1", "chain", 0)` → `models["gpt-4.1"].chain[0]`."""
        out = ""
        for part in path:
            if isinstance(part, int):
                out += f"[{part}]"
            elif _PLAIN_KEY.match(part):
                out += f".{part}" if out else part
            else:
                out += f'["{part}"]'
        return out


class ConfigError(Exception):
    """A config that cannot be served. Carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue] | tuple[ConfigIssue, ...]) -> None:
        self.issues = tuple(sorted(issues, key=lambda i: (i.file, i.location.line, i.location.column)))
        super().__init__("\n".join(str(issue) for issue in self.issues))
