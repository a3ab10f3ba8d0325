"""The JSON Schema of gateway.yaml: load it, validate with located plain-words errors, fill defaults.

`schema/gateway.schema.json` is the one definition of the config, defaults included: nothing else in
the code repeats a default value.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from gateway.config.issues import ConfigIssue
from gateway.config.yamlsource import LocatedDocument

__all__ = ["SCHEMA_PATH", "apply_defaults", "load_schema", "validate"]

# A symlink to schema/gateway.schema.json, so the file also ships inside the wheel.
SCHEMA_PATH = Path(__file__).with_name("gateway.schema.json")

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing (null)",
}


@functools.cache
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


def validate(doc: LocatedDocument, filename: str) -> list[ConfigIssue]:
    """Every schema violation in `doc.data`, located and worded for a person."""
    issues: list[ConfigIssue] = []
    seen: set[tuple[str, str]] = set()
    errors = sorted(_validator().iter_errors(doc.data), key=lambda e: [str(p) for p in e.absolute_path])
    flagged_paths = {tuple(e.absolute_path) for e in errors if e.validator not in _UNKNOWN_KEY_VALIDATORS}
    for error in errors:
        for path, message, on_key in _describe(error, flagged_paths):
            where = doc.key_location(path) if on_key else doc.location(path)
            text_path = ConfigIssue.format_path(path)
            if (text_path, message) in seen:
                continue
            seen.add((text_path, message))
            issues.append(ConfigIssue(filename, where, text_path, message))
    return issues


_UNKNOWN_KEY_VALIDATORS = {"additionalProperties", "unevaluatedProperties"}


def _describe(error: ValidationError, flagged: set[tuple]) -> list[tuple[tuple, str, bool]]:
    path = tuple(error.absolute_path)
    kind = error.validator
    value = error.instance
    if kind in _UNKNOWN_KEY_VALIDATORS:
        known = sorted(_known_keys(error.schema))
        sibling_errors = any(p[: len(path)] == path for p in flagged)
        found = []
        for key in _unexpected(error):
            if key in known:
                # Declared in a branch that did not apply: either that branch failed for another
                # reason (already reported) or the key belongs to another `type`.
                if sibling_errors:
                    continue
                kind_name = value.get("type") if isinstance(value, dict) else None
                message = (
                    f"'{key}' does not apply to type '{kind_name}'"
                    if kind_name
                    else f"'{key}' is not allowed here"
                )
                found.append(((*path, key), message, True))
            else:
                found.append(((*path, key), _unknown_key(key, known), True))
        return found
    if "propertyNames" in error.absolute_schema_path and isinstance(value, str):
        return [((*path, value), _invalid_name(error), True)]
    custom = error.schema.get("errorMessage", {}).get(kind) if isinstance(error.schema, dict) else None
    if custom:
        return [(path, custom, kind in ("required", "anyOf", "oneOf"))]
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        name = missing[0] if missing else str(error.validator_value)
        return [(path, f"missing required key '{name}'", True)]
    if kind == "type":
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return [(path, f"expected {wanted}, got {_show(value)}", False)]
    if kind == "enum":
        options = ", ".join(json.dumps(o) for o in error.validator_value)
        hint = _did_you_mean(value, [str(o) for o in error.validator_value])
        return [(path, f"{_show(value)} is not allowed; use one of: {options}{hint}", False)]
    if kind == "const":
        return [(path, f"must be {json.dumps(error.validator_value)}, got {_show(value)}", False)]
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = error.validator_value
        words = {
            "minimum": f"at least {bound}",
            "exclusiveMinimum": f"greater than {bound}",
            "maximum": f"at most {bound}",
            "exclusiveMaximum": f"less than {bound}",
        }[kind]
        return [(path, f"must be {words}, got {_show(value)}", False)]
    if kind == "minLength":
        return [(path, "must not be empty", False)]
    if kind == "minItems":
        return [(path, f"must have at least {error.validator_value} item(s)", False)]
    if kind == "uniqueItems":
        return [(path, "must not contain the same item twice", False)]
    if kind == "pattern":
        description = error.schema.get("description", f"must match {error.validator_value}")
        return [(path, f"{_show(value)} is not valid: {description}", False)]
    if kind in ("anyOf", "oneOf") and error.context:
        best = min(error.context, key=lambda e: len(list(e.absolute_path)))
        return _describe(best, flagged)
    return [(path, error.message, False)]


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {json.dumps(value)}" if value else "an empty string"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value)


def _unexpected(error: ValidationError) -> list[str]:
    if isinstance(error.instance, dict):
        allowed = _known_keys(error.schema)
        if error.validator == "additionalProperties" and allowed:
            return [k for k in error.instance if k not in allowed]
    return re.findall(r"'([^']+)'", error.message.split("(", 1)[-1])


def _known_keys(schema: dict[str, Any]) -> set[str]:
    """Every property name the schema (and its $ref / allOf / if-then parts) declares."""
    keys: set[str] = set()
    root = load_schema()

    def visit(node: Any, depth: int = 0) -> None:
        if not isinstance(node, dict) or depth > 6:
            return
        keys.update(node.get("properties", {}))
        if "$ref" in node:
            visit(_resolve(root, node["$ref"]), depth + 1)
        for part in node.get("allOf", []):
            visit(part, depth + 1)
            visit(part.get("then"), depth + 1)

    visit(schema)
    return keys


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _unknown_key(key: str, known: list[str]) -> str:
    hint = _did_you_mean(key, known)
    if hint:
        return f"unknown key '{key}'{hint}"
    return f"unknown key '{key}'; allowed here: {', '.join(known)}" if known else f"unknown key '{key}'"


def _invalid_name(error: ValidationError) -> str:
    if error.validator == "enum":  # a key from a fixed set (capability names)
        options = [str(o) for o in error.validator_value]
        hint = _did_you_mean(str(error.instance), options)
        return f"unknown name '{error.instance}'" + (hint or f"; allowed here: {', '.join(options)}")
    description = (error.schema.get("description") or "").rstrip(".")
    description = description[:1].lower() + description[1:]
    return f"'{error.instance}' is not a valid name" + (f" ({description})" if description else "")


def _did_you_mean(value: Any, options: list[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def apply_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a schema-valid `data` with every default the schema declares filled in."""
    root = load_schema()
    result = copy.deepcopy(data)
    _fill(result, root, root)
    return result


def _fill(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        _fill(instance, _resolve(root, schema["$ref"]), root)
    for part in schema.get("allOf", []):
        condition = part.get("if")
        if condition is None:
            _fill(instance, part, root)
        elif Draft202012Validator(condition).is_valid(instance):
            _fill(instance, part.get("then", {}), root)
    if isinstance(instance, dict):
        for name, prop in schema.get("properties", {}).items():
            if not isinstance(prop, dict):
                continue
            if name not in instance and "default" in prop:
                instance[name] = copy.deepcopy(prop["default"])
            if name in instance:
                _fill(instance[name], prop, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            declared = schema.get("properties", {})
            for name, value in instance.items():
                if name not in declared:
                    _fill(value, extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill(item, schema["items"], root)
