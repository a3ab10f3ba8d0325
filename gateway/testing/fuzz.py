"""A property-based fuzz of every route of a running gateway, driven by its own /openapi.json.

`fuzz_gateway(base_url, cases, models=[...], client_key=..., admin_key=...)` fetches the document,
generates `cases` requests with hypothesis (bodies from the request schemas, then broken: a member
swapped for a hostile value such as 1e20, 2**64, NaN, a lone surrogate or a 300-deep nesting;
malformed JSON and random bytes; wrong content types; oversized and non-ASCII headers; wrong methods,
keys and query strings), sends them over HTTP and checks what the gateway promises whatever a client
sends: no 5xx, and every error is `application/problem+json` with the response's `request_id`.
It returns a `FuzzReport` (counts by status, and the failing cases, reproducible from their seed).

Needs `hypothesis` (the `dev` extra). Used by tests/e2e/test_fuzz.py (a few thousand cases in CI)
and by benchmarks that want a longer run.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

__all__ = ["FuzzFailure", "FuzzReport", "FuzzRequest", "fuzz_gateway", "generate_requests", "send_requests"]

_METHODS = ("get", "post", "put", "patch", "delete")
#: Status 0 in a report: the connection ended without an HTTP answer.
NO_ANSWER = 0


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    headers: tuple[tuple[str, bytes], ...]
    body: bytes | None
    #: What was broken on purpose ("valid", "member", "raw-body", "content-type", "header", "method"...).
    kind: str
    #: The documented operation it was generated from ("POST /v1/messages").
    route: str = ""

    def describe(self, limit: int = 300) -> str:
        body = b"" if self.body is None else self.body[:limit]
        headers = {name: value[:80] for name, value in self.headers}
        return f"{self.method} {self.path[:limit]} [{self.kind}] headers={headers} body={body!r}"


@dataclass(frozen=True)
class FuzzFailure:
    request: FuzzRequest
    status: int
    #: Why this answer breaks the promise ("5xx", "not problem+json", "request_id missing"...).
    reason: str
    response: str


@dataclass
class FuzzReport:
    cases: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    #: Documented operation -> status -> count.
    by_route: dict[str, Counter[int]] = field(default_factory=dict)
    #: Answers that break the promise (kept up to `max_failures`; `failed` counts them all).
    failures: list[FuzzFailure] = field(default_factory=list)
    failed: int = 0
    max_failures: int = 20
    #: Requests the connection ended on without an answer (status 0), the first few.
    unanswered: list[FuzzFailure] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.by_status.items() if status >= 500)

    def add(self, request: FuzzRequest, status: int, reason: str | None, response: str) -> None:
        self.cases += 1
        self.by_status[status] += 1
        self.by_kind[request.kind] += 1
        self.by_route.setdefault(request.route, Counter())[status] += 1
        if status == NO_ANSWER and len(self.unanswered) < self.max_failures:
            self.unanswered.append(FuzzFailure(request, status, "no answer", response[:500]))
        if reason is not None:
            self.failed += 1
            if len(self.failures) < self.max_failures:
                self.failures.append(FuzzFailure(request, status, reason, response[:500]))

    def summary(self) -> str:
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.by_status.items()))
        lines = [f"{self.cases} cases; by status {{{statuses}}}; {self.failed} broke the promise"]
        lines += [
            f"  {f.status} {f.reason}: {f.request.describe()} -> {f.response[:200]}" for f in self.failures
        ]
        return "\n".join(lines)


# -- hostile values --------------------------------------------------------------------------------------

_HUGE_NUMBERS = st.sampled_from(
    [10**20, 2**64, 2**63, -(2**63) - 1, 2**31, -1, 0, 10**400, 1e20, 1e308, -1e308, 5e-324, -0.0, 1.5, 8.0]
)
_SPECIAL_FLOATS = st.sampled_from([float("nan"), float("inf"), float("-inf")])  # NaN/Infinity literals
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "²",
            "٣",
            "1²",
            "\u0000",
            "\ud800",
            "\U0001f600" * 50,
            "x" * 5000,
            "../../etc/passwd",
            "%00",
        ]
    ),
)


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


_JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _TEXT, _HUGE_NUMBERS)
HOSTILE = st.one_of(
    _HUGE_NUMBERS,
    _SPECIAL_FLOATS,
    _TEXT,
    st.recursive(
        _JSON_LEAVES,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
        max_leaves=12,
    ),
    st.sampled_from([_deep(40), _deep(300), [0] * 3000, {"type": None}, [], {}]),
)

_RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[1, 2]",
            b'"text"',
            b"null",
            b"{}",
            b'{"model": "m",',
            b'{"model": NaN}',
            b'{"max_tokens": Infinity}',
            b'{"a": 1e999}',
            b'{"model": "\\ud800"}',
            b"\xff\xfe{\x00}\x00",
            b'{"model": "m", "model": 1}',
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 2000 + b"1" + b"}" * 2000,
            b'{"messages": [' + b"{}," * 3000 + b"{}]}",
        ]
    ),
)
_CONTENT_TYPES = st.sampled_from(
    [
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=xyz",
        b"application/json; charset=utf-16",
        b"application/problem+json",
        b"\xff\xfe",
        b"",
    ]
)


# -- bodies from the request schemas ---------------------------------------------------------------------


class _Schemas:
    """Hypothesis strategies for the JSON Schema subset the document uses."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def value(self, schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
        schema = self.resolve(schema)
        if depth > 6:
            return st.none()
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        options = schema.get("oneOf") or schema.get("anyOf")
        if options:
            return st.one_of([self.value(option, depth + 1) for option in options])
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self.value({**schema, "type": k}, depth) for k in kind])
        if kind == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            edges = [v for v in (low, high) if v is not None]
            return st.integers(min_value=low, max_value=high) | st.sampled_from(edges or [0])
        if kind == "number":
            low, high = schema.get("minimum"), schema.get("maximum")
            return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
        if kind == "string":
            return st.text(min_size=schema.get("minLength", 0), max_size=20)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array":
            items = self.value(schema.get("items", {}), depth + 1)
            low = schema.get("minItems", 0)
            return st.lists(items, min_size=low, max_size=max(low, schema.get("maxItems", 3)))
        if kind == "object" or "properties" in schema:
            properties = schema.get("properties", {})
            required = set(schema.get("required", ()))
            return st.fixed_dictionaries(
                {name: self.value(sub, depth + 1) for name, sub in properties.items() if name in required},
                optional={
                    name: self.value(sub, depth + 1)
                    for name, sub in properties.items()
                    if name not in required
                },
            )
        return _JSON_LEAVES

    def number_paths(self, schema: dict[str, Any], prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Where numbers go in a body of `schema`: ("max_tokens",), ("thinking", "budget_tokens"),
        ("prompt", 0, 0)... (an array's first item; "50256" for a map's key)."""
        schema = self.resolve(schema)
        if len(prefix) > 5:
            return []
        found: list[tuple[Any, ...]] = []
        for option in schema.get("oneOf", ()):
            found += self.number_paths(option, prefix)
        kind = schema.get("type")
        if kind in ("integer", "number"):
            found.append(prefix)
        elif kind == "array" and "items" in schema:
            found += self.number_paths(schema["items"], (*prefix, 0))
        elif kind == "object" or "properties" in schema:
            for name, sub in schema.get("properties", {}).items():
                found += self.number_paths(sub, (*prefix, name))
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                found += self.number_paths(extra, (*prefix, "50256"))
        return list(dict.fromkeys(found))

    def body(self, schema: dict[str, Any], models: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
        """A body of `schema`, its `model` one of `models` (or any text, now and then). Half of them
        start from one of the schema's `examples` (which the backends answer), with generated members
        added around it."""
        schema = self.resolve(schema)
        generated = self.value(schema)
        examples = schema.get("examples")
        if examples:
            # A copy of each example: a request's body is mutated in place later (`_set_path`), and the
            # document's own examples must stay as written for the next request (and the next run).
            example = st.sampled_from(examples).map(copy.deepcopy)
            from_example = st.tuples(example, generated).map(lambda p: {**p[1], **p[0]})
            generated = st.one_of(generated, example, from_example)
        model = st.sampled_from(list(models)) if models else st.text(max_size=10)
        return st.tuples(generated, st.one_of(model, model, model, st.text(max_size=10))).map(
            lambda pair: {**pair[0], "model": pair[1]} if "model" in schema.get("properties", {}) else pair[0]
        )


def _encode(value: Any) -> bytes:
    # The standard library writes NaN/Infinity literals and any integer, as a careless client would.
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def _member_swapped(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], names: list[str]) -> bytes:
    body = draw(bodies)
    if not isinstance(body, dict):
        return _encode(body)
    target = draw(st.sampled_from(names or ["model"]))
    value = body.get(target)
    # Now and then one level down: inside a message, a tool, `thinking`...
    if isinstance(value, list) and value and isinstance(value[0], dict) and draw(st.booleans()):
        inner = value[0]
        key = draw(st.sampled_from([*inner, "content"]))
        inner[key] = draw(HOSTILE)
    elif isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(list(value)))
        value[key] = draw(HOSTILE)
    else:
        body[target] = draw(HOSTILE)
    return _encode(body)


_NUMBERS = st.one_of(_HUGE_NUMBERS, _SPECIAL_FLOATS, st.integers(), st.floats(), st.booleans(), _TEXT)


def _set_path(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Put `value` at `path` in `body`, making (or replacing) the containers on the way."""
    node: Any = body
    for step, following in zip(path, (*path[1:], None), strict=True):
        fresh: Any = value if following is None else [] if isinstance(following, int) else {}
        if isinstance(step, int):
            if node:
                if following is None or not isinstance(node[0], list | dict):
                    node[0] = fresh
            else:
                node.append(fresh)
            node = node[0]
        else:
            current = node.get(step)
            if following is None or not isinstance(current, list if isinstance(following, int) else dict):
                node[step] = fresh
            node = node[step]


@st.composite
def _number_swapped(
    draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], paths: list[tuple[Any, ...]]
) -> bytes:
    body = draw(bodies)
    if isinstance(body, dict) and paths:
        _set_path(body, draw(st.sampled_from(paths)), draw(_NUMBERS))
    return _encode(body)


# -- requests --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Operation:
    path: str
    method: str
    spec: dict[str, Any]

    @property
    def is_model_api(self) -> bool:
        return self.path.startswith("/v1/")


def operations(document: dict[str, Any]) -> list[_Operation]:
    """Every (path, method) of the document."""
    return [
        _Operation(path, method, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
        if method in _METHODS
    ]


def _path_strategy(op: _Operation, schemas: _Schemas) -> st.SearchStrategy[str]:
    parameters = {p["name"]: p for p in op.spec.get("parameters", []) if p.get("in") == "path"}
    if not parameters:
        return st.just(op.path)
    names = list(parameters)

    def fill(values: tuple[str, ...]) -> str:
        path = op.path
        for name, value in zip(names, values, strict=True):
            path = path.replace("{" + name + "}", quote(str(value), safe="/", errors="surrogatepass"))
        return path

    per_name = [schemas.value(parameters[n]["schema"]) | _TEXT for n in names]
    return st.tuples(*per_name).map(fill)


def _query_strategy(op: _Operation, schemas: _Schemas) -> st.SearchStrategy[str]:
    parameters = [p for p in op.spec.get("parameters", []) if p.get("in") == "query"]
    if not parameters:
        return st.just("") | st.text(max_size=20).map(lambda q: quote(q, safe="=&", errors="surrogatepass"))
    pairs = {
        p["name"]: st.one_of(schemas.value(p["schema"]).map(str), _TEXT, _HUGE_NUMBERS.map(str))
        for p in parameters
    }
    return st.fixed_dictionaries({}, optional=pairs).map(lambda q: urlencode(q, errors="surrogatepass"))


def _auth(op: _Operation, client_key: str | None, admin_key: str | None) -> st.SearchStrategy[tuple]:
    key = client_key if op.is_model_api else admin_key
    good: list[tuple[tuple[str, bytes], ...]] = []
    if key:
        good = [(("authorization", f"Bearer {key}".encode()),), (("x-api-key", key.encode()),)]
    bad = [(), (("authorization", b"Bearer sk-wrong"),), (("authorization", b"Basic \xff\xfe"),)]
    return st.sampled_from(good * 4 + bad) if good else st.sampled_from(bad)


def _request_strategy(
    op: _Operation, schemas: _Schemas, models: Sequence[str], client_key: str | None, admin_key: str | None
) -> st.SearchStrategy[FuzzRequest]:
    content = op.spec.get("requestBody", {}).get("content", {}).get("application/json")
    schema = schemas.resolve(content["schema"]) if content else None
    names = list(schema.get("properties", {})) if schema else []
    number_paths = schemas.number_paths(schema) if schema else []
    bodies = schemas.body(schema, models) if schema else st.just({})

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        path = draw(_path_strategy(op, schemas))
        query = draw(_query_strategy(op, schemas))
        headers = list(draw(_auth(op, client_key, admin_key)))
        method = op.method.upper()
        kinds = (
            ["valid", "member", "number", "raw-body", "content-type", "header", "method"] if schema else []
        )
        kinds = kinds or ["valid", "header", "method", "raw-body"]
        kind = draw(st.sampled_from(kinds))
        body: bytes | None = None
        if schema is not None:
            body = _encode(draw(bodies))
            headers.append(("content-type", b"application/json"))
        if kind == "member":
            body = draw(_member_swapped(bodies, names))
        elif kind == "number":
            body = draw(_number_swapped(bodies, number_paths))
        elif kind == "raw-body":
            body = draw(_RAW_BODIES)
            headers.append(("content-type", b"application/json"))
        elif kind == "content-type":
            headers = [(n, v) for n, v in headers if n != "content-type"]
            headers.append(("content-type", draw(_CONTENT_TYPES)))
        elif kind == "header":
            name = draw(
                st.sampled_from(["x-request-id", "x-fuzz", "authorization", "anthropic-version", "if-match"])
            )
            size = draw(st.sampled_from([200, 8_000, 20_000, 70_000]))
            filler = draw(st.sampled_from([b"a", b"\xc3\xa9", b"\xff", b"\x7f", b"{"]))
            headers.append((name, filler * (size // len(filler))))
        elif kind == "method":
            method = draw(
                st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"])
            )
        if op.path.startswith("/admin/") and op.method != "get" and draw(st.booleans()):
            headers.append(("origin", draw(st.sampled_from([b"http://evil.example", b"null", b"\xff"]))))
        if op.method == "patch":
            headers.append(("if-match", draw(st.sampled_from([b'"0000000000000000"', b"\xff", b""]))))
        full_path = f"{path}?{query}" if query else path
        return FuzzRequest(method, full_path, tuple(headers), body, kind, f"{op.method.upper()} {op.path}")

    return build()


def generate_requests(
    document: dict[str, Any],
    count: int,
    *,
    models: Sequence[str] = (),
    client_key: str | None = None,
    admin_key: str | None = None,
    seed: int = 0,
) -> list[FuzzRequest]:
    """`count` requests over every operation of `document` (the same `seed`, the same requests)."""
    schemas = _Schemas(document)
    ops = operations(document)
    strategy = st.one_of([_request_strategy(op, schemas, models, client_key, admin_key) for op in ops])
    found: list[FuzzRequest] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(request: FuzzRequest) -> None:
        found.append(request)

    with _no_local_constants():
        collect()
    return found[:count]


@contextlib.contextmanager
def _no_local_constants() -> Iterator[None]:
    """Hypothesis mixes constants read from the project's loaded modules into what it draws, and
    the pool grows as modules load: the same seed then gives other requests later in a process (or
    once a module is added to the project). Without them, the requests depend on the seed alone.
    (An internal of Hypothesis: where it is missing, nothing is changed.)"""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    if original is None or not hasattr(providers, "Constants"):  # pragma: no cover
        yield
        return
    providers._get_local_constants = providers.Constants  # an empty pool
    try:
        yield
    finally:
        providers._get_local_constants = original


# -- sending ---------------------------------------------------------------------------------------------


def _verdict(request: FuzzRequest, response: requests.Response) -> str | None:
    """Why this answer breaks the promise, or None."""
    status = response.status_code
    if status >= 500:
        return "5xx"
    if status < 400 or request.method == "HEAD":
        return None
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0].strip() != "application/problem+json":
        return f"error answered as {content_type or 'no content type'}, not problem+json"
    try:
        body = json.loads(response.content)
    except ValueError:
        return "problem body is not JSON"
    if not isinstance(body, dict) or not body.get("request_id"):
        return "problem has no request_id"
    if body["request_id"] != response.headers.get("x-request-id"):
        return "problem request_id differs from the x-request-id header"
    if body.get("status") != status:
        return "problem status differs from the HTTP status"
    return None


def send_requests(
    base_url: str, cases: Sequence[FuzzRequest], *, concurrency: int = 4, timeout: float = 30.0
) -> FuzzReport:
    """Send `cases` to the gateway at `base_url` (`concurrency` connections) and check every answer."""
    report = FuzzReport()
    sessions = [requests.Session() for _ in range(concurrency)]

    def send(index: int) -> tuple[FuzzRequest, int, str | None, str]:
        request = cases[index]
        arguments = {
            "headers": dict(request.headers),
            "data": request.body,
            "timeout": timeout,
            "allow_redirects": False,
        }
        try:
            response = sessions[index % concurrency].request(
                request.method, base_url + request.path, **arguments
            )
        except requests.ConnectionError:
            # The server may close a kept-alive connection after answering a request whose body the
            # app did not read (a body on GET /health): the next request on it finds it closed. Once
            # more on a new connection.
            try:
                response = requests.request(request.method, base_url + request.path, **arguments)
            except requests.RequestException as error:
                return request, NO_ANSWER, None, f"no answer: {error!r}"
        except requests.RequestException as error:
            return request, NO_ANSWER, None, f"no answer: {error!r}"
        return request, response.status_code, _verdict(request, response), response.text

    with ThreadPoolExecutor(concurrency) as pool:
        for request, status, reason, text in pool.map(send, range(len(cases))):
            report.add(request, status, reason, text)
    for session in sessions:
        session.close()
    return report


def fuzz_gateway(
    base_url: str,
    cases: int,
    *,
    models: Sequence[str] = (),
    client_key: str | None = None,
    admin_key: str | None = None,
    seed: int = 0,
    concurrency: int = 4,
    timeout: float = 30.0,
) -> FuzzReport:
    """Fuzz every route the gateway at `base_url` documents in its /openapi.json with `cases` requests.

    `models`: public model names to aim at (pick ones served by each backend protocol, so requests
    cross protocols); `client_key` / `admin_key`: keys sent with most model / admin requests.
    """
    document = requests.get(base_url + "/openapi.json", timeout=timeout).json()
    generated = generate_requests(
        document, cases, models=models, client_key=client_key, admin_key=admin_key, seed=seed
    )
    return send_requests(base_url, generated, concurrency=concurrency, timeout=timeout)
