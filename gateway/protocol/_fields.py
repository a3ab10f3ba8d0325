"""Small validators shared by the request parsers: each checks one body member and raises `FieldError` with
the member's path (`messages[2].content`) and a plain-words reason, never KeyError or TypeError."""

from __future__ import annotations

from typing import Any

from gateway.errors import FieldError

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "INT64_MIN",
    "FieldError",
    "at",
    "check_members",
    "int_value",
    "logit_bias",
    "number_value",
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

#: The largest integer the gateway takes for a count (tokens, budgets): what a signed 32-bit field holds.
INT32_MAX = 2**31 - 1
#: A `seed` is any signed 64-bit integer.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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


def opt_int(
    obj: dict[str, Any], key: str, prefix: str = "", *, minimum: int | None = None, maximum: int = INT32_MAX
) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    return int_value(value, at(prefix, key), minimum, maximum)


def int_value(value: Any, path: str, minimum: int | None, maximum: int) -> int:
    """`value` as an integer within [minimum, maximum]; raises `FieldError` naming `path`.

    A JSON number written with a fraction or an exponent (`8.0`, `1e20`; parsers also read integers past
    64 bits as floats) is not an integer, as OpenAI rules; an integral one out of range is told so.
    """
    # bool is an int subclass; `true` is not a token count.
    if type(value) is not int:
        if type(value) is not float:
            raise FieldError(path, f"must be an integer, not {_type_name(value)}")
        if minimum is None or minimum <= value <= maximum or not value.is_integer():
            raise FieldError(path, f"must be an integer (no decimal point or exponent), got {value!r}")
    if value > maximum or (minimum is not None and value < minimum):
        if minimum is None:
            what = f"an integer of at most {maximum}"
        elif maximum == INT32_MAX and minimum == 1:
            what = f"a positive integer (at most {maximum})"
        else:
            what = f"an integer from {minimum} to {maximum}"
        raise FieldError(path, f"must be {what}, got {value!r}")
    return value


def opt_number(obj: dict[str, Any], key: str, prefix: str, low: float, high: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    return number_value(value, at(prefix, key), low, high)


def number_value(value: Any, path: str, low: float, high: float) -> float:
    """`value` as a number within [low, high] (NaN and the infinities never are); raises `FieldError`."""
    kind = type(value)
    if kind is not float and kind is not int:
        raise FieldError(path, f"must be a number, not {_type_name(value)}")
    if not low <= value <= high:  # False for NaN too
        shown = f"{value:g}" if kind is float else str(value)
        raise FieldError(path, f"must be between {low:g} and {high:g}, got {shown}")
    return value


def check_members(
    obj: dict[str, Any],
    prefix: str,
    ints: dict[str, tuple[int, int]],
    numbers: dict[str, tuple[float, float]] | None = None,
    bools: frozenset[str] = frozenset(),
) -> None:
    """Type- and range-check the members of `obj` named in `ints`, `numbers` and `bools` that are present
    (members the gateway forwards as sent but whose nonsense values must still be a 400, not a backend's
    error or an encoder's crash). Costs a dict lookup per member present."""
    for key, value in obj.items():
        if value is None:
            continue
        bounds = ints.get(key)
        if bounds is not None:
            int_value(value, at(prefix, key), *bounds)
        elif numbers is not None and key in numbers:
            number_value(value, at(prefix, key), *numbers[key])
        elif key in bools and type(value) is not bool:
            raise FieldError(at(prefix, key), f"must be true or false, not {_type_name(value)}")


def logit_bias(value: Any, path: str) -> None:
    """An OpenAI `logit_bias`: token id (a string of digits) → a bias from -100 to 100."""
    bias = req_dict(value, path)
    for token, weight in bias.items():
        if not (token.isascii() and token.isdigit()) or len(token) > 10 or int(token) > INT32_MAX:
            raise FieldError(f"{path}.{token[:40]}", "the key must be a token id (a non-negative integer)")
        number_value(weight, f"{path}.{token}", -100, 100)


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
