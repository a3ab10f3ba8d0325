"""The progress line of `gateway bench`: a bar on stderr while a scenario runs, or one plain line per
step when stderr is not a terminal (CI logs, pipes), and `say()`, which prints a message above the
bar without breaking it. No dependency: `rich` may not be installed where a benchmark runs."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress", "say"]

_active: Progress | None = None


def say(text: str) -> None:
    """Print a line on stderr; with a bar showing, above it (the bar is drawn again below)."""
    if _active is not None and _active.tty:
        _active.clear()
        _active.stream.write(text + "\n")
        _active.draw()
    else:
        stream = _active.stream if _active is not None else sys.stderr
        stream.write(text + "\n")
    (_active.stream if _active is not None else sys.stderr).flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


class Progress:
    """`total` steps (an estimate: it grows if more steps come). `with progress.step(label):` around
    each; `with progress:` around the whole run makes it the bar `say()` writes above."""

    def __init__(self, title: str, total: int = 1, *, stream: TextIO | None = None, enabled: bool = True):
        self.title = title
        self.total = max(1, total)
        self.done = 0
        self.label = ""
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.started = time.monotonic()
        self._previous: Progress | None = None

    def __enter__(self) -> Progress:
        global _active
        self._previous, _active = _active, self
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _active
        if self.tty:
            self.clear()
        if self.enabled:
            self.stream.write(
                f"{self.title}: {self.done} steps in {_clock(time.monotonic() - self.started)}\n"
            )
            self.stream.flush()
        _active = self._previous

    def add(self, steps: int) -> None:
        """More steps than first thought (a phase run again, say)."""
        self.total += steps

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.label = label
        if self.done >= self.total:
            self.total = self.done + 1
        if self.tty:
            self.draw()
        elif self.enabled:
            self.stream.write(f"[{self.done + 1}/{self.total}] {label}\n")
            self.stream.flush()
        try:
            yield
        finally:
            self.done += 1
            if self.tty:
                self.draw()

    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first step ends)."""
        if not self.done:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / self.done * max(0, self.total - self.done)

    def line(self, width: int = 100) -> str:
        share = min(1.0, self.done / self.total)
        bar_width = 20
        filled = round(share * bar_width)
        left = self.eta()
        timing = _clock(time.monotonic() - self.started) + (f", ~{_clock(left)} left" if left else "")
        text = (
            f"{self.title} [{'#' * filled}{'.' * (bar_width - filled)}] {self.done}/{self.total} "
            f"{timing}  {self.label}"
        )
        return text[: max(10, width - 1)]

    def draw(self) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r\033[K" + self.line(width))
        self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
