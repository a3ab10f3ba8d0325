"""Small validators shared by the request parsers: each checks one body member and raises `FieldError` with
the member's path (`messages[2].content`) and a plain-words reason, never KeyError or TypeError."""

from __future__ import annotations

from typing import Any

from gateway.errors import FieldError

__all__ = [
    "FieldError",
    "at",
    "opt_bool",
    "opt_dict",
    "opt_int",
    "opt_number",
    "opt_str",
    "req_dict",
    "req_list",
    "req_obj",
    "req_str",
    "stop_list",
]

_MISSING = object()


def at(prefix: str, key: str) -> str:
    """The path of member `key` under `prefix` ("" for the top level)."""
    return f"{prefix}.{key}" if prefix else key


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def req_str(obj: dict[str, Any], key: str, prefix: str = "", *, empty_ok: bool = False) -> str:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        raise FieldError(at(prefix, key), "is required")
    if not isinstance(value, str):
        raise FieldError(at(prefix, key), f"must be a string, not {_type_name(value)}")
    if not value and not empty_ok:
        raise FieldError(at(prefix, key), "must not be empty")
    return value


def opt_str(obj: dict[str, Any], key: str, prefix: str = "") -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise FieldError(at(prefix, key), f"must be a string, not {_type_name(value)}")


def opt_bool(obj: dict[str, Any], key: str, prefix: str = "") -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise FieldError(at(prefix, key), f"must be true or false, not {_type_name(value)}")


def opt_int(obj: dict[str, Any], key: str, prefix: str = "", *, minimum: int | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int subclass; `true` is not a token count.
    if not isinstance(value, int) or isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise FieldError(at(prefix, key), f"must be an integer, not {_type_name(value)}")
    if minimum is not None and value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise FieldError(at(prefix, key), f"must be {what}, got {value}")
    return value


def opt_number(obj: dict[str, Any], key: str, prefix: str, low: float, high: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FieldError(at(prefix, key), f"must be a number, not {_type_name(value)}")
    if not low <= value <= high:
        raise FieldError(at(prefix, key), f"must be between {low:g} and {high:g}, got {value:g}")
    return value


def req_list(obj: dict[str, Any], key: str, prefix: str = "", *, non_empty: bool = True) -> list[Any]:
    value = obj.get(key, _MISSING)
    if value is _MISSING or value is None:
        raise FieldError(at(prefix, key), "is required")
    if not isinstance(value, list):
        raise FieldError(at(prefix, key), f"must be an array, not {_type_name(value)}")
    if non_empty and not value:
        raise FieldError(at(prefix, key), "must not be empty")
    return value


def req_dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError(path, f"must be an object, not {_type_name(value)}")
    return value


def opt_dict(obj: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    return req_dict(value, at(prefix, key))


def stop_list(value: Any, path: str, *, max_items: int | None) -> tuple[str, ...]:
    """A stop member: one string or an array of strings, as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise FieldError(path, f"must be a string or an array of strings, not {_type_name(value)}")
    if max_items is not None and len(value) > max_items:
        raise FieldError(path, f"may hold at most {max_items} sequences, got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldError(f"{path}[{i}]", f"must be a string, not {_type_name(item)}")
    return tuple(value)


def req_obj(obj: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
    """A required object member."""
    value = obj.get(key)
    if value is None:
        raise FieldError(at(prefix, key), "is required")
    return req_dict(value, at(prefix, key))
