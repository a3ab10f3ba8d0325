"""Checking a JSON request body against an AWS API model (botocore's service-2.json, the model AWS
publishes): members, required members, types, unions (exactly one member), enums, lengths, ranges and
patterns, as AWS's front door checks them. For the fake Bedrock server; a body the real API would
refuse as malformed is refused here too, with the path of the first offending value.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from botocore.loaders import Loader

__all__ = ["ShapeError", "check_input", "service_model"]


class ShapeError(ValueError):
    """The body breaks the API model at `path` (`messages.0.content.1.toolUse.name`)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or '#'}: {problem}")
        self.path = path


@cache
def service_model(service: str) -> Mapping[str, Any]:
    """The newest API model botocore ships for `service` (e.g. `bedrock-runtime`)."""
    return Loader().load_service_model(service, "service-2")


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check_input(service: str, operation: str, body: Any) -> None:
    """Raise ShapeError unless `body` is a valid JSON body of `operation`'s input (members bound to the
    URI, headers or query are not part of the body and are not accepted in it)."""
    model = service_model(service)
    shape_name = model["operations"][operation]["input"]["shape"]
    shape = model["shapes"][shape_name]
    body_members = {
        name: member for name, member in shape.get("members", {}).items() if "location" not in member
    }
    required = [name for name in shape.get("required", ()) if name in body_members]
    _structure(model["shapes"], {**shape, "members": body_members, "required": required}, body, "")


def _at(path: str, name: str | int) -> str:
    return f"{path}.{name}" if path else str(name)


def _check(shapes: Mapping[str, Any], name: str, value: Any, path: str) -> None:
    shape = shapes[name]
    kind = shape["type"]
    if kind == "structure":
        if shape.get("document"):
            return  # any JSON value
        _structure(shapes, shape, value, path)
    elif kind == "list":
        if not isinstance(value, list):
            raise ShapeError(path, "expected a list")
        _bounds(shape, len(value), path, "length")
        for i, item in enumerate(value):
            _check(shapes, shape["member"]["shape"], item, _at(path, i))
    elif kind == "map":
        if not isinstance(value, dict):
            raise ShapeError(path, "expected an object")
        _bounds(shape, len(value), path, "size")
        for key, item in value.items():
            _check(shapes, shape["key"]["shape"], key, _at(path, key))
            _check(shapes, shape["value"]["shape"], item, _at(path, key))
    elif kind == "string":
        if not isinstance(value, str):
            raise ShapeError(path, "expected a string")
        _bounds(shape, len(value), path, "length")
        if "enum" in shape and value not in shape["enum"]:
            raise ShapeError(path, f"must be one of [{', '.join(shape['enum'])}]")
        if "pattern" in shape and not _pattern(shape["pattern"]).fullmatch(value):
            raise ShapeError(path, f"must match the pattern {shape['pattern']}")
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ShapeError(path, "expected an integer")
        _bounds(shape, value, path, "value")
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ShapeError(path, "expected a number")
        _bounds(shape, value, path, "value")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ShapeError(path, "expected a boolean")
    elif kind == "blob":
        if not isinstance(value, str):
            raise ShapeError(path, "expected base64 data")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ShapeError(path, "is not valid base64") from None
        _bounds(shape, len(data), path, "length")
    elif kind == "timestamp" and not isinstance(value, int | float | str):
        raise ShapeError(path, "expected a timestamp")


def _structure(shapes: Mapping[str, Any], shape: Mapping[str, Any], value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise ShapeError(path, "expected an object")
    members = shape.get("members", {})
    unknown = [key for key in value if key not in members]
    if unknown:
        raise ShapeError(path, f"extraneous key [{unknown[0]}] is not permitted")
    for name in shape.get("required", ()):
        if name not in value:
            raise ShapeError(path, f"required key [{name}] not found")
    if shape.get("union"):
        present = [key for key, item in value.items() if item is not None]
        if len(present) != 1:
            raise ShapeError(path, f"exactly one member must be set, got {len(present)}")
    for key, item in value.items():
        if item is None and key not in shape.get("required", ()):
            continue
        _check(shapes, members[key]["shape"], item, _at(path, key))


def _bounds(shape: Mapping[str, Any], measure: float, path: str, what: str) -> None:
    if "min" in shape and measure < shape["min"]:
        raise ShapeError(path, f"{what} must be at least {shape['min']}")
    if "max" in shape and measure > shape["max"]:
        raise ShapeError(path, f"{what} must be at most {shape['max']}")
