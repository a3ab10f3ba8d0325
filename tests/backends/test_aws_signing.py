"""The SigV4 signing the `bedrock` backend uses (`aws_signing.sign_request`), checked against AWS's
published Signature Version 4 test vectors (tests/data/sigv4/, SOURCE.md there says where from)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.credentials import ReadOnlyCredentials

from gateway.backends.aws_signing import sign_request

SUITE = Path(__file__).parents[1] / "data" / "sigv4"
CASES = sorted(path.name for path in SUITE.iterdir() if path.is_dir())
# The suite's fixed signing context.
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"
AT = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)


def parse_request(raw: str) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """A `.req` file: request line, `Name:value` headers (a name may repeat), blank line, body."""
    head, _, body = raw.partition("\n\n")
    request_line, *header_lines = head.split("\n")
    method, target, _version = request_line.split(" ")
    headers = [(name, value) for name, _, value in (line.partition(":") for line in header_lines)]
    host = next(value for name, value in headers if name.lower() == "host")
    return method, f"https://{host}{target}", headers, body.encode()


def read(case: str, suffix: str) -> str:
    return (SUITE / case / f"{case}.{suffix}").read_text(encoding="utf-8").replace("\r", "")


def test_the_vendored_suite_has_the_cases_the_issue_names() -> None:
    assert {"get-vanilla", "post-vanilla", "get-vanilla-query", "post-x-www-form-urlencoded"} <= set(CASES)
    assert "get-header-key-duplicate" in CASES


@pytest.mark.parametrize("case", CASES)
def test_signature_matches_the_published_vector(case: str) -> None:
    method, url, headers, body = parse_request(read(case, "req"))
    token = SESSION_TOKEN if case.endswith("with-session-token") else None
    credentials = ReadOnlyCredentials(ACCESS_KEY, SECRET_KEY, token)
    signed = sign_request(credentials, "us-east-1", method, url, body, headers, service="service", at=AT)
    assert signed.canonical_request == read(case, "creq")
    assert signed.string_to_sign == read(case, "sts")
    assert signed.headers["Authorization"] == read(case, "authz")
    assert signed.headers["X-Amz-Date"] == "20150830T123600Z"


def test_a_signature_depends_on_the_clock() -> None:
    method, url, headers, body = parse_request(read("get-vanilla", "req"))
    credentials = ReadOnlyCredentials(ACCESS_KEY, SECRET_KEY, None)
    later = sign_request(
        credentials,
        "us-east-1",
        method,
        url,
        body,
        headers,
        service="service",
        at=datetime(2015, 8, 31, tzinfo=UTC),
    )
    assert later.headers["Authorization"] != read("get-vanilla", "authz")
    assert later.headers["X-Amz-Date"] == "20150831T000000Z"
