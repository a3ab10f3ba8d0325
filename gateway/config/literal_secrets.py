"""Secrets in gateway.yaml come from the environment: the file is meant for git, so a literal secret
(an API key, a client or admin key, a credential header, a password in a URL) is refused, with the fix.

What counts is what the file holds, not what the environment supplies: `${VAR}` is fine, and so is
`${VAR:-}` (unset means off); `${VAR:-sk-...}` is not, since its default sits in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gateway.config.backends import SETTINGS_BY_TYPE
from gateway.config.yamlsource import ENV_MARK, LocatedDocument, Path

__all__ = ["CREDENTIAL_HEADER", "env_name", "literal_key_message", "literal_secrets", "reference_fix"]

#: Names of headers (and URL query parameters) whose values are credentials, matched anywhere in the
#: name, any case.
CREDENTIAL_HEADER = re.compile(r"auth|api[-_]?key|token|secret|passw|cookie|credential", re.IGNORECASE)
#: What a credential header may hold besides its references: an auth scheme (`Bearer ${TOKEN}`).
_AUTH_SCHEMES = {"bearer", "basic", "token", "bot", "digest", "apikey", "key"}
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SHOWN_REFERENCE = "${…}"


def reference_fix(variable: str) -> str:
    """What to write instead of a literal secret."""
    return (
        f"write `${{{variable}}}` and set {variable} in the environment (a default, "
        f"`${{{variable}:-...}}`, is literal too; `${{{variable}:-}}` is fine)"
    )


def literal_key_message(doc: LocatedDocument, path: Path, value: str, variable: str) -> str | None:
    """Why the secret at `path` (a whole value: an API key, a client key) is refused, or None. An
    empty value is not a secret (for an API key it leaves the backend off)."""
    outside, defaults = _refs(doc, path, value)
    if not defaults and value == "":
        return None
    if defaults and not any(outside) and not any(defaults):
        return None
    if defaults:
        variable = doc.from_env[path][0]
    return f"a literal secret is refused (this file belongs in git): {reference_fix(variable)}"


def _refs(doc: LocatedDocument, path: Path, value: str) -> tuple[list[str], list[str]]:
    """(literal text around the references, each reference's default) as the file holds them."""
    written = doc.written.get(path)
    if written is None:
        return [value], []
    pieces = written.split(ENV_MARK)
    # ENV_MARK opens and closes each reference's default: text, default, text, default, ..., text.
    return pieces[0::2], pieces[1::2]


def literal_secrets(data: dict[str, Any], doc: LocatedDocument) -> Iterator[tuple[Path, str]]:
    """Every literal secret in `data` (loaded from `doc`): its path and what to write instead."""
    for name, backend in (data.get("backends") or {}).items():
        if not isinstance(backend, dict):
            continue
        key = backend.get("api_key")
        if isinstance(key, str):
            path = ("backends", name, "api_key")
            message = literal_key_message(doc, path, key, _api_key_variable(name, backend.get("type")))
            if message:
                yield path, message
        token = backend.get("azure_ad_token")
        if isinstance(token, str):
            path = ("backends", name, "azure_ad_token")
            message = literal_key_message(doc, path, token, "AZURE_OPENAI_AD_TOKEN")
            if message:
                yield path, message
        headers = backend.get("headers")
        if isinstance(headers, dict):
            for header, header_value in headers.items():
                if isinstance(header_value, str) and CREDENTIAL_HEADER.search(header):
                    path = ("backends", name, "headers", header)
                    message = _header_message(doc, path, header_value, header, name)
                    if message:
                        yield path, message
    yield from _urls_with_passwords(data, doc, ())


def _header_message(doc: LocatedDocument, path: Path, value: str, header: str, backend: str) -> str | None:
    outside, defaults = _refs(doc, path, value)
    if not defaults and value == "":
        return None
    words = outside[0].split()
    scheme = f"{words[0]} " if words and words[0].lower() in _AUTH_SCHEMES else ""
    prefix_ok = not words or (len(words) == 1 and scheme != "" and outside[0][-1].isspace())
    if defaults and not any(defaults) and not any(outside[1:]) and prefix_ok:
        return None
    # The fix keeps the value's auth scheme (`Bearer`), and never echoes any other part of it.
    variable = f"{env_name(backend)}_{env_name(header)}"
    return (
        f"a literal credential in header {header} is refused (this file belongs in git): write "
        f'`{header}: "{scheme}${{{variable}}}"` and set {variable} in the environment'
    )


def _urls_with_passwords(node: Any, doc: LocatedDocument, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _urls_with_passwords(child, doc, (*path, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _urls_with_passwords(child, doc, (*path, i))
    elif isinstance(node, str) and "://" in node:
        message = _url_message(doc, path, node)
        if message:
            yield path, message


def _url_message(doc: LocatedDocument, path: Path, value: str) -> str | None:
    outside, defaults = _refs(doc, path, value)
    # The URL as the file holds it, each reference (default included) one mark: a default is literal.
    marked = outside[0] + "".join(ENV_MARK + d + t for d, t in zip(defaults, outside[1:], strict=True))
    start = _URL_START.search(marked)
    if start is None:
        return None
    try:
        url = urlsplit(marked[start.start() :])
        password = url.password
        query = parse_qsl(url.query, keep_blank_values=True)
    except ValueError:
        return None  # not a URL that anything will read a password from
    literal_password = password is not None and password.replace(ENV_MARK, "") != ""
    # `?password=` (libpq), `?token=`, `?api_key=`: a credential in the query is as literal.
    literal_params = [k for k, v in query if CREDENTIAL_HEADER.search(k) and v.replace(ENV_MARK, "")]
    if not literal_password and not literal_params:
        return None
    # audit.database_url → AUDIT_DATABASE_PASSWORD; backends.vllm.base_url → VLLM_BASE_PASSWORD.
    names = [p for p in path if isinstance(p, str)]
    prefix = "_".join(env_name(p) for p in names[1:] if names[0] == "backends") or "_".join(
        env_name(p) for p in names
    )
    prefix = prefix.removesuffix("_URL")
    variables = []
    netloc = url.netloc
    if literal_password:
        variables.append(f"{prefix}_PASSWORD")
        user = f"{url.username}:" if url.username is not None else ":"
        netloc = f"{user}${{{variables[-1]}}}@{url.netloc.rpartition('@')[2]}"
    params = []
    for k, v in query:
        if k in literal_params:
            variables.append(f"{prefix}_{env_name(k)}")
            v = f"${{{variables[-1]}}}"
        params.append(f"{k}={v}")
    fixed = url._replace(netloc=netloc, query="&".join(params)).geturl().replace(ENV_MARK, _SHOWN_REFERENCE)
    return (
        f"a literal {'password' if literal_password else 'credential'} in this URL is refused (this file "
        f"belongs in git): write `{fixed}` and set {' and '.join(dict.fromkeys(variables))} in the "
        f"environment (or the whole URL: `${{{prefix}_URL}}`)"
    )


def _api_key_variable(backend: str, kind: Any) -> str:
    """The variable to suggest: a cloud type's usual one (`OPENAI_API_KEY`), else one named after
    the backend."""
    settings = SETTINGS_BY_TYPE.get(kind) if isinstance(kind, str) else None
    usual = getattr(settings, "cloud_key_env", None)
    return usual if isinstance(usual, str) else f"{env_name(backend)}_API_KEY"


def env_name(text: str) -> str:
    """`billing-app` → `BILLING_APP`: a name as part of an environment variable's."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper() or "SECRET"
