"""The OpenAPI document (`gateway/openapi.yaml`, served at /openapi.json) stays true: every route the
app serves is in it and every path in it is served; its schemas are valid JSON Schema whose references
resolve; and every bound in a model request schema is the bound the request parsers enforce."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gateway.admin.openapi import PATH, load_openapi
from jsonschema import Draft202012Validator

from gateway.app import create_app
from gateway.errors import FieldError
from gateway.protocol.anthropic import parse_count_tokens_request, parse_messages_request
from gateway.protocol.openai import parse_chat_request
from gateway.protocol.openai_legacy import parse_completion_request, parse_embedding_request
from gateway.protocol.responses import parse_responses_request
from gateway.surfaces.model_api import ROUTES

DOC = load_openapi()
USER = [{"role": "user", "content": "hi"}]
#: Each model request schema: the parser that enforces it and a smallest valid body.
PARSERS: dict[str, tuple[Callable[[Any], Any], dict[str, Any]]] = {
    "ChatCompletionRequest": (parse_chat_request, {"model": "m", "messages": USER}),
    "CompletionRequest": (parse_completion_request, {"model": "m", "prompt": "hi"}),
    "EmbeddingRequest": (parse_embedding_request, {"model": "m", "input": "hi"}),
    "MessagesRequest": (parse_messages_request, {"model": "m", "messages": USER, "max_tokens": 16}),
    "CountTokensRequest": (parse_count_tokens_request, {"model": "m", "messages": USER}),
    "ResponsesRequest": (parse_responses_request, {"model": "m", "input": "hi"}),
}
_IGNORED_METHODS = {"HEAD", "OPTIONS"}


def served_routes() -> set[tuple[str, str]]:
    """(path in OpenAPI form, lower-case method) for every route: Quart's url_map, the model API's
    plain-ASGI routes, and the metrics endpoint (matched before routing, at its default path)."""
    quart = create_app("gateway.yaml").fallback
    served = set()
    for rule in quart.url_map.iter_rules():
        path = re.sub(r"<[^>]*?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - _IGNORED_METHODS:
            served.add((path, method.lower()))
    served |= {(path, route.method.lower()) for path, route in ROUTES.items()}
    served.add(("/metrics", "get"))
    return served


def documented_routes() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in DOC["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def test_every_route_is_documented_and_every_documented_route_is_served() -> None:
    served, documented = served_routes(), documented_routes()
    assert not served - documented, f"routes missing from gateway/openapi.yaml: {sorted(served - documented)}"
    assert not documented - served, f"documented but not served: {sorted(documented - served)}"
    assert (PATH, "get") in served


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = DOC
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_the_document_is_openapi_3_1_with_valid_schemas_and_resolving_refs() -> None:
    assert DOC["openapi"].startswith("3.1.")
    assert {"title", "version"} <= set(DOC["info"])
    for ref in _refs(DOC):
        _resolve(ref)
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    operation_ids = [op["operationId"] for item in DOC["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            assert operation.get("responses"), f"{method} {path} has no responses"
            for name in re.findall(r"{(\w+)}", path):
                declared = {p.get("name") for p in operation.get("parameters", [])}
                assert name in declared, f"{method} {path}: path parameter {name} not declared"


# -- bounds: the document says what the parsers do --------------------------------------------------------


Make = Callable[[Any], dict[str, Any]]


def _bounded_leaves(schema: Any, path: str, make: Make) -> Iterator[tuple[str, dict[str, Any], Make]]:
    """(field path, number schema, value -> the request members that put it there) for every number
    with a minimum or maximum reachable through properties, items, oneOf and additionalProperties."""
    if "$ref" in schema:
        schema = _resolve(schema["$ref"])
    for alternative in schema.get("oneOf", ()):
        yield from _bounded_leaves(alternative, path, make)
    kind = schema.get("type")
    if kind in ("integer", "number") and ("minimum" in schema or "maximum" in schema):
        yield path, schema, make
    elif kind == "array" and "items" in schema:
        yield from _bounded_leaves(schema["items"], f"{path}[0]", lambda v, make=make: make([v]))
    elif kind == "object":
        required = {
            name: "x"
            for name in schema.get("required", ())
            if _resolve_type(schema["properties"].get(name, {})) == "string"
        }
        for name, sub in schema.get("properties", {}).items():
            sub_path = f"{path}.{name}" if path else name
            yield from _bounded_leaves(
                sub, sub_path, lambda v, name=name, make=make: make({**required, name: v})
            )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            yield from _bounded_leaves(extra, f"{path}.50256", lambda v, make=make: make({"50256": v}))


def _resolve_type(schema: dict[str, Any]) -> Any:
    return (_resolve(schema["$ref"]) if "$ref" in schema else schema).get("type")


def _cases() -> Iterator[Any]:
    for name, (parse, base) in PARSERS.items():
        schema = DOC["components"]["schemas"][name]
        for field, bounds, make in _bounded_leaves(schema, "", lambda members: members):
            yield pytest.param(parse, base, field, bounds, make, id=f"{name}.{field}")


def _field_of(parse: Callable[[Any], Any], body: dict[str, Any]) -> str | None:
    try:
        parse(body)
    except FieldError as error:
        return error.field
    return None


@pytest.mark.parametrize(("parse", "base", "field", "bounds", "make"), list(_cases()))
def test_documented_bounds_are_the_enforced_bounds(
    parse: Callable[[Any], Any], base: dict[str, Any], field: str, bounds: dict[str, Any], make: Make
) -> None:
    for edge, outside in (("minimum", -1), ("maximum", 1)):
        if edge not in bounds:
            continue
        limit = bounds[edge]
        assert _field_of(parse, {**base, **make(limit)}) is None, f"{field} = {limit} is refused"
        assert _field_of(parse, {**base, **make(limit + outside)}) == field, (
            f"{field} = {limit + outside} is accepted"
        )


def test_the_bounds_cover_the_numbers_of_issue_15() -> None:
    fields = {case.id for case in _cases()}
    for expected in (
        "ChatCompletionRequest.max_tokens",
        "ChatCompletionRequest.seed",
        "ChatCompletionRequest.n",
        "ChatCompletionRequest.top_logprobs",
        "ChatCompletionRequest.logit_bias.50256",
        "CompletionRequest.prompt[0]",
        "CompletionRequest.prompt[0][0]",
        "EmbeddingRequest.dimensions",
        "MessagesRequest.max_tokens",
        "MessagesRequest.thinking.budget_tokens",
        "CountTokensRequest.thinking.budget_tokens",
    ):
        assert expected in fields
