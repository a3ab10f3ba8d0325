"""The audit log's `backend_type` filter knows every backend type the config does: the query's
check, the OpenAPI enum and the logs page's choices (a new type missing from one of them would make
its records unfilterable)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gateway.audit.query import BACKEND_TYPES
from gateway.config.backends import SETTINGS_BY_TYPE

ROOT = Path(__file__).resolve().parents[2]


def test_the_backend_type_filter_lists_every_backend_type() -> None:
    types = set(SETTINGS_BY_TYPE)
    assert set(BACKEND_TYPES) == types
    openapi = yaml.safe_load((ROOT / "gateway" / "openapi.yaml").read_text())
    assert set(openapi["components"]["parameters"]["backend_type"]["schema"]["enum"]) == types
    logs_js = (ROOT / "admin" / "static" / "js" / "logs.js").read_text()
    listed = re.search(r"const BACKEND_TYPES = \[([^\]]*)\]", logs_js)
    assert listed is not None and set(re.findall(r'"([a-z_]+)"', listed[1])) == types
