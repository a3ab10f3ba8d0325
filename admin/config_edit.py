"""Admin JSON API for generic config edits: the config as a tree with where each value comes from,
and RFC 6902 JSON Patch edits of gateway.yaml (each one `gateway.runtime.edit` transaction).

`GET /admin/api/config/tree`, `GET /admin/api/config/schema` (what the panel's forms are built from)
and `PATCH /admin/api/config` (docs/config-edits.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from gateway.admin.access import authenticate_admin, check_origin
from gateway.admin.api import edit_problems
from quart import Blueprint, Response, current_app, request

from gateway.config.literal_secrets import literal_secrets
from gateway.config.load import config_version
from gateway.config.patch import PatchError, PatchOp, parse_patch, plan_patch
from gateway.config.schema import apply_defaults, load_schema
from gateway.config.yamlsource import LocatedDocument, parse_yaml
from gateway.errors import (
    BadRequest,
    ConfigRejected,
    InvalidPatch,
    PatchNotApplicable,
    PatchTestFailed,
    PreconditionRequired,
    UnsupportedMediaType,
)
from gateway.runtime.edit import (
    check_edit,
    edit_config,
)

__all__ = ["PATCH_CONTENT_TYPE", "blueprint"]

blueprint = Blueprint("admin_config_edit", __name__, url_prefix="/admin/api")

PATCH_CONTENT_TYPE = "application/json-patch+json"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def _etag(version: str) -> str:
    return f'"{version}"'


@blueprint.before_request
async def require_admin() -> None:
    authenticate_admin(current_app.live.current)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        check_origin()


# --- the tree ------------------------------------------------------------------------------------


@blueprint.get("/config/tree")
async def config_tree() -> Response:
    """The config file as a tree: each value with its source (`file` line:column, `env` with the
    variables, never their values; `default` for a schema default the file does not set)."""
    live = current_app.live
    raw = await asyncio.to_thread(live.path.read_bytes)
    version = config_version(raw)
    text = raw.decode("utf-8-sig", errors="replace")
    doc, issues = parse_yaml(text, str(live.path), live.env, strict_env=False)
    if doc is None or not isinstance(doc.data, dict):
        raise ConfigRejected(
            "the config file on disk cannot be read as settings: " + "; ".join(str(i) for i in issues[:5]),
            errors=[issue.as_dict() for issue in issues],
        )
    written = yaml.safe_load(text)  # the file's own text of each `${VAR}` reference, unresolved
    # A file the loader refuses may hold a literal secret (a key pasted in): never shown either.
    hidden: set[tuple[Any, ...]] = set()
    with contextlib.suppress(KeyError, TypeError, AttributeError, ValueError):
        hidden = {path for path, _ in literal_secrets(doc.data, doc)}
    try:
        effective = apply_defaults(doc.data)
    except (KeyError, TypeError, ValueError, AttributeError):
        effective = doc.data  # an invalid file: its own values, no defaults
    runtime = live.current
    body = {
        "version": version,
        "serving_version": runtime.version,
        "write_back": runtime.config.admin.write_back,
        "tree": _node(effective, (), _Sources(doc, written, hidden)),
    }
    return _json(body, headers={"etag": _etag(version)})


def _pointer(path: tuple[Any, ...]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


@dataclass(frozen=True, slots=True)
class _Sources:
    """Where the tree's values come from: the located document, the file's own text of each value
    (references unresolved), and the paths never shown (literal secrets of a refused file)."""

    doc: LocatedDocument
    written: Any
    hidden: set[tuple[Any, ...]]

    def source(self, path: tuple[Any, ...]) -> dict[str, Any]:
        location = self.doc.values.get(path)
        if location is None:
            return {"kind": "default"}
        variables = self.doc.from_env.get(path)
        where = {"line": location.line, "column": location.column}
        if variables:
            return {"kind": "env", "variables": list(variables), **where}
        return {"kind": "file", **where}

    def written_text(self, path: tuple[Any, ...]) -> str:
        """The scalar's text as the file holds it (`${VAR}`, `${VAR:-default}`)."""
        value = self.written
        for part in path:
            value = value[part]
        return str(value)


def _node(value: Any, path: tuple[Any, ...], sources: _Sources) -> dict[str, Any]:
    source = sources.source(path)
    node: dict[str, Any] = {"pointer": _pointer(path), "source": source}
    if path in sources.hidden:
        node["redacted"] = "a literal secret, which the loader refuses: it is not shown"
    elif isinstance(value, dict):
        node["entries"] = {str(key): _node(item, (*path, key), sources) for key, item in value.items()}
    elif isinstance(value, list):
        node["items"] = [_node(item, (*path, index), sources) for index, item in enumerate(value)]
    elif source["kind"] == "env":
        # What the file says (the reference), never what the environment resolved it to: it may be a
        # secret, whatever field holds it.
        node["reference"] = sources.written_text(path)
    else:
        node["value"] = value
    return node


@functools.cache
def _schema_body() -> bytes:
    return orjson.dumps(load_schema())


@blueprint.get("/config/schema")
async def config_schema() -> Response:
    """The JSON Schema gateway.yaml is validated by: types, bounds, enums and descriptions of every
    setting (the panel builds its forms from it)."""
    return Response(_schema_body(), content_type="application/schema+json")


# --- the patch -----------------------------------------------------------------------------------


@blueprint.patch("/config")
async def patch_config() -> Response:
    """Apply a JSON Patch (RFC 6902) to gateway.yaml itself. Requires `If-Match: "<version>"`."""
    live = current_app.live
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != PATCH_CONTENT_TYPE:
        raise UnsupportedMediaType(f"send the edit as {PATCH_CONTENT_TYPE} (an RFC 6902 JSON Patch)")
    if_match = request.headers.get("if-match")
    if not if_match:
        raise PreconditionRequired(
            "send If-Match with the config version you edited (the ETag of GET /admin/api/config/tree)"
        )
    dry_run = _flag(request.args.get("dry_run", "false"))
    expected = if_match.strip().removeprefix("W/").strip('"')
    try:
        body = orjson.loads(await request.get_data())
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    try:
        ops = parse_patch(body)
    except PatchError as error:
        raise _patch_problem(error) from None
    planner = functools.partial(_plan, ops=tuple(ops))
    source = "ui" if request.headers.get("x-gateway-client") == "admin-ui" else "api"
    with edit_problems(
        live,
        expected,
        redo="read it again and re-apply your patch",
        edited="patched",
        instead="commit this patch to gateway.yaml instead (git apply takes it)",
    ):
        try:  # first: a PatchError is a WriteBackError, which edit_problems would answer more vaguely
            if dry_run:
                plan = await check_edit(live, planner, expected, source=source)
                return _json(
                    {
                        "dry_run": True,
                        "previous_version": plan.previous_version,
                        "version": plan.version,
                        "diff": plan.diff,
                        "written": False,
                    },
                    headers={"etag": _etag(plan.previous_version)},
                )
            result = await edit_config(live, planner, expected, source=source)
        except PatchError as error:
            raise _patch_problem(error) from None
    return _json(
        {
            "previous_version": result.previous_version,
            "version": result.version,
            "diff": result.diff,
            "written": result.written,
            "reload": result.event.as_dict(),
        },
        headers={"etag": _etag(result.version)},
    )


def _plan(raw: bytes, path: Any, *, ops: tuple[PatchOp, ...]) -> Any:
    return plan_patch(raw, path, ops)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise BadRequest("dry_run is true or false")


def _patch_problem(error: PatchError) -> Exception:
    extensions = (
        {"op_index": error.index, "path": error.path, "reason": error.reason} if error.index >= 0 else {}
    )
    detail = f"{error}; nothing was changed"
    if error.kind == "invalid":
        return InvalidPatch(detail, **extensions)
    if error.kind == "test":
        return PatchTestFailed(detail, **extensions)
    return PatchNotApplicable(detail, **extensions)
