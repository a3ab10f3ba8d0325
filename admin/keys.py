"""Admin JSON API for keys: `POST /admin/api/keys/new` makes a random key and its SHA-256 (the same
generator as `gateway key new`), for the panel's Keys page to put the hash in gateway.yaml and show the
key once. It writes nothing and logs nothing of the key; the answer is never cached.
"""

from __future__ import annotations

import orjson
from gateway.admin.access import authenticate_admin, check_origin
from quart import Blueprint, Response, current_app

from gateway.auth import generate_key

__all__ = ["blueprint"]

blueprint = Blueprint("admin_keys", __name__, url_prefix="/admin/api/keys")


@blueprint.before_request
async def require_admin() -> None:
    authenticate_admin(current_app.live.current)
    check_origin()  # every route here changes nothing, but hands out a secret: never to another site


@blueprint.post("/new")
async def new_key() -> Response:
    """A new random key (`gw-` + 256 random bits) and its SHA-256 in hex. Nothing is stored: the
    caller puts `key_sha256` in gateway.yaml (`PATCH /admin/api/config`) and hands the key over."""
    key, digest = generate_key()
    return Response(
        orjson.dumps({"key": key, "key_sha256": digest}),
        content_type="application/json",
        headers={"cache-control": "no-store", "pragma": "no-cache"},
    )
