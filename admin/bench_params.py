"""The parameters of a backend benchmark run (`POST /admin/api/backends/<name>/bench`), each honoured
within its bounds or refused with the field named; the panel's form and docs/panel-benchmark.md show
the same bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest, FieldError

__all__ = ["DEFAULTS", "BenchParams", "bounds", "parse_params"]

#: Bounds of a run's parameters (the panel's form and the docs show them).
MAX_LEVELS = 5
MAX_CONCURRENCY = 32
MAX_SECONDS_PER_LEVEL = 20.0
MIN_SECONDS_PER_LEVEL = 0.5
#: The whole series: levels x seconds_per_level.
MAX_TOTAL_SECONDS = 60.0
MAX_TOKENS = 256
DEFAULTS: dict[str, Any] = {
    "concurrency": [1, 4, 8],
    "seconds_per_level": 5,
    "stream": True,
    "max_tokens": 32,
}


@dataclass(frozen=True, slots=True)
class BenchParams:
    concurrency: tuple[int, ...]
    seconds_per_level: float
    stream: bool
    max_tokens: int
    model: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": list(self.concurrency),
            "seconds_per_level": self.seconds_per_level,
            "stream": self.stream,
            "max_tokens": self.max_tokens,
            "model": self.model,
        }


def parse_params(body: Any) -> BenchParams:
    """The request body's parameters, each within its bounds; unknown members are refused."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object such as {"concurrency": [1, 4, 8]} (or nothing: the defaults)')
    unknown = set(body) - {*DEFAULTS, "model"}
    if unknown:
        name = sorted(unknown)[0]
        raise FieldError(name, f"unknown field; use {', '.join([*DEFAULTS, 'model'])}")
    levels = body.get("concurrency", DEFAULTS["concurrency"])
    if (
        not isinstance(levels, list)
        or not 1 <= len(levels) <= MAX_LEVELS
        or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CONCURRENCY for n in levels)
    ):
        raise FieldError(
            "concurrency", f"expected 1 to {MAX_LEVELS} whole numbers from 1 to {MAX_CONCURRENCY}"
        )
    seconds = body.get("seconds_per_level", DEFAULTS["seconds_per_level"])
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not MIN_SECONDS_PER_LEVEL <= seconds <= MAX_SECONDS_PER_LEVEL
    ):
        raise FieldError(
            "seconds_per_level",
            f"expected seconds from {MIN_SECONDS_PER_LEVEL:g} to {MAX_SECONDS_PER_LEVEL:g}",
        )
    if len(levels) * seconds > MAX_TOTAL_SECONDS:
        raise FieldError(
            "seconds_per_level",
            f"{len(levels)} levels x {seconds:g} s is over the {MAX_TOTAL_SECONDS:g} s a series may take",
        )
    stream = body.get("stream", DEFAULTS["stream"])
    if not isinstance(stream, bool):
        raise FieldError("stream", "expected true or false")
    max_tokens = body.get("max_tokens", DEFAULTS["max_tokens"])
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise FieldError("max_tokens", f"expected a whole number from 1 to {MAX_TOKENS}")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip() or len(model) > 255):
        raise FieldError("model", "expected the upstream model's name")
    return BenchParams(tuple(levels), float(seconds), stream, max_tokens, model)


def bounds() -> dict[str, Any]:
    """The bounds, as `GET /admin/api/backends/<name>/bench` shows them."""
    return {
        "levels": MAX_LEVELS,
        "concurrency": MAX_CONCURRENCY,
        "seconds_per_level": [MIN_SECONDS_PER_LEVEL, MAX_SECONDS_PER_LEVEL],
        "total_seconds": MAX_TOTAL_SECONDS,
        "max_tokens": MAX_TOKENS,
    }
