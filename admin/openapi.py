"""`GET /openapi.json`: the OpenAPI 3.1 description of the model API and the admin API.

The document is `gateway/openapi.yaml`, maintained by hand beside the code (a test keeps its paths equal
to the routes the app serves, and its request bounds equal to the ones the parsers enforce). It is read
and serialized once, when the blueprint is registered; a request gets the same bytes. No key is needed:
it describes the public shape of the API and holds nothing from the config.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson
import yaml
from quart import Blueprint, Response

__all__ = ["PATH", "blueprint", "load_openapi", "openapi_bytes"]

blueprint = Blueprint("openapi", __name__)
PATH = "/openapi.json"


def load_openapi() -> dict[str, Any]:
    """The OpenAPI document as data (read from the package each call: callers keep what they need)."""
    text = resources.files("gateway").joinpath("openapi.yaml").read_text(encoding="utf-8")
    # libyaml's loader where PyYAML has it: the pure-Python one took 0.2-0.5 s of every worker's start.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@cache
def openapi_bytes() -> bytes:
    """The document as JSON bytes, serialized once per process."""
    return orjson.dumps(load_openapi())


@blueprint.record_once
def _serialize_at_startup(_state: Any) -> None:
    openapi_bytes()  # at create_app, so no request pays for it (and a broken document fails startup)


@blueprint.get(PATH)
async def openapi() -> Response:
    return Response(openapi_bytes(), content_type="application/json", headers={"cache-control": "no-cache"})
