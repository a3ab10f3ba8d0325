"""Command-line option types the scenarios share."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["int_list", "name_list", "scenario_settings"]


def int_list(text: str) -> list[int]:
    """`1,8,32` -> [1, 8, 32]: positive numbers separated by commas."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive numbers separated by commas")
    return values


def name_list(choices: Iterable[str], what: str) -> Callable[[str], list[str]]:
    """An option type for `a,b` from `choices`: unknown names are a usage error that lists them."""
    allowed = tuple(choices)

    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        unknown = sorted(set(names) - set(allowed))
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown} (choose from {', '.join(allowed)})")
        return names

    return parse


def scenario_settings(
    args: argparse.Namespace, quick: Mapping[str, Any], full: Mapping[str, Any]
) -> dict[str, Any]:
    """A scenario's settings: its quick or full defaults, overridden by every option given (an
    option is the setting's name; None means not given)."""
    settings = dict(quick if args.quick else full)
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    return settings
