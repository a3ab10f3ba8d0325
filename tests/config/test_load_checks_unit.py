"""`gateway.config.load`'s own checks, one each, on small documents in process: where a non-UTF-8
byte is, an unreadable file, the config version, chains with groups and their backends, the semantic
cache's embedding model, trusted proxies, key names, and SQLite URLs kept or resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.issues import ConfigError
from gateway.config.load import config_version, load_config, parse_config

BACKENDS = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:2/v1"}
"""
MODELS = "models:\n  m: {chain: [{backend: a}]}\n"


def issues(text: str | bytes, env: dict[str, str] | None = None) -> list[str]:
    raw = text.encode() if isinstance(text, str) else text
    with pytest.raises(ConfigError) as error:
        parse_config(raw, Path("/srv/gw/gateway.yaml"), env=env or {})
    return [str(issue) for issue in error.value.issues]


def load(text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return parse_config(text.encode(), Path("/srv/gw/gateway.yaml"), env=env or {})


def test_the_version_is_16_hex_digits_of_the_bytes_hash() -> None:
    version = config_version(b"models: {}\n")
    assert len(version) == 16 and int(version, 16) >= 0
    assert version != config_version(b"models: {} \n")


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b"\xff", "1:1"),
        (b"models:\n  m: caf\xc3\xa9\xff\n", "2:10"),
        (b"a\nbb\nccc\xfe", "3:4"),
    ],
)
def test_a_byte_that_is_not_utf8_is_located(raw: bytes, where: str) -> None:
    [found] = issues(raw)
    assert f"gateway.yaml:{where}:" in found
    assert "not UTF-8" in found and "byte 0xf" in found


def test_an_unreadable_file_is_one_issue(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "missing.yaml")
    [found] = error.value.issues
    assert "cannot read file" in str(found)


def test_group_members_name_known_backends() -> None:
    text = BACKENDS + (
        "models:\n  m:\n    chain:\n"
        "      - group: {strategy: weighted, targets: [{backend: a}, {backend: nope}]}\n"
        "      - {backend: b}\n"
    )
    [found] = issues(text)
    assert "models.m.chain[0].group.targets[1].backend" in found and "no backend named 'nope'" in found


def test_a_chain_with_a_group_loads_its_steps() -> None:
    text = BACKENDS + (
        "models:\n  m:\n    chain:\n      - {backend: b}\n"
        "      - group: {strategy: least_busy, targets: [{backend: a, weight: 2}, {backend: b}]}\n"
    )
    model = load(text).models[0]
    assert [t.backend for t in model.chain] == ["b", "a", "b"]
    assert model.steps[1].strategy == "least_busy"  # type: ignore[union-attr]
    assert [t.weight for t in model.steps[1].targets] == [2.0, 1.0]  # type: ignore[union-attr]


def test_a_semantic_cache_needs_an_embedding_model_that_embeds() -> None:
    base = BACKENDS + "models:\n  m:\n    chain: [{backend: a}]\n"
    [missing] = issues(base + "    cache: {mode: semantic}\n")
    assert "models.m.cache.mode" in missing and "needs cache.embedding_model" in missing
    [unknown] = issues(base + "    cache: {mode: semantic, embedding_model: e}\n")
    assert "no model named 'e'" in unknown
    cannot = issues(
        base
        + "    cache: {mode: semantic, embedding_model: e}\n"
        + "  e: {chain: [{backend: a, model: chatty, capabilities: {embeddings: false}}]}\n"
    )
    assert any("embedding_model" in c for c in cannot)
    ok = load(
        base
        + "    cache: {mode: semantic, embedding_model: e}\n"
        + "  e: {chain: [{backend: a, model: text-embedding-3-small, capabilities: {embeddings: true}}]}\n"
    )
    assert ok.models[0].cache.mode == "semantic"


def test_trusted_proxies_must_be_addresses_and_need_keys() -> None:
    [bad] = issues(
        BACKENDS
        + MODELS
        + "server: {trusted_proxies: ['10.0.0.0/8', nonsense]}\nauth: {allow_unauthenticated: true}\n"
    )
    assert "server.trusted_proxies[1]" in bad and "'nonsense' is not an IP address" in bad
    [keyless] = issues(BACKENDS + MODELS + "server: {trusted_proxies: ['10.0.0.5/8']}\n")
    assert "server.trusted_proxies" in keyless and "add auth.client_keys" in keyless
    assert load(
        BACKENDS + MODELS + "server: {trusted_proxies: ['10.0.0.5/8']}\nauth: {allow_unauthenticated: true}\n"
    )


def test_key_names_are_unique_per_section() -> None:
    text = (
        BACKENDS
        + MODELS
        + (
            "auth:\n  client_keys:\n    - {name: app, key: '${K1}'}\n    - {name: app, key: '${K2}'}\n"
            "  admin_keys:\n    - {name: app, key: '${K3}'}\n"
        )
    )
    [found] = issues(text, env={"K1": "one-key-value", "K2": "two-key-value", "K3": "three-key-value"})
    assert "auth.client_keys[1].name" in found and "already named 'app'" in found


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("sqlite://:memory:", "sqlite://:memory:"),
        ("sqlite:///var/audit.sqlite3", "sqlite:///var/audit.sqlite3"),
        ("sqlite://data/audit.sqlite3", "sqlite:///srv/gw/data/audit.sqlite3"),
        ("postgres://db/audit", "postgres://db/audit"),
    ],
)
def test_sqlite_urls_resolve_from_the_config_directory(url: str, stored: str) -> None:
    config = load(BACKENDS + MODELS + f"audit: {{database_url: '{url}'}}\n")
    assert config.audit.database_url == stored


def test_an_unreadable_file_says_why_at_its_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "missing.yaml")
    text = str(error.value.issues[0])
    assert "missing.yaml:1:1:" in text
    assert "cannot read file: No such file or directory" in text


@pytest.mark.parametrize(("raw", "where", "byte"), [(b"\n\xff", "2:1", "ff"), (b"ab\xfe\xff", "1:3", "fe")])
def test_the_first_bad_byte_is_named_exactly(raw: bytes, where: str, byte: str) -> None:
    [found] = issues(raw)
    assert f"gateway.yaml:{where}: the file is not UTF-8 text: byte 0x{byte} here" in found


def test_unknown_backends_are_listed_with_the_known_ones() -> None:
    [found] = issues(BACKENDS + "models:\n  m: {chain: [{backend: nope}]}\n")
    assert "no backend named 'nope' (backends: a, b)" in found
    shadow = issues(
        BACKENDS + "models:\n  m:\n    chain: [{backend: a}]\n    shadow: {target: {backend: gone}}\n"
    )
    assert any("models.m.shadow.target.backend" in s and "(backends: a, b)" in s for s in shadow), shadow


def test_an_embedding_model_whose_first_target_is_unknown_is_judged_by_the_rest() -> None:
    found = issues(
        BACKENDS
        + "models:\n  m:\n    chain: [{backend: a}]\n    cache: {mode: semantic, embedding_model: e}\n"
        + "  e:\n    chain:\n      - {backend: nope}\n"
        + "      - {backend: a, model: text-embedding-3-small, capabilities: {embeddings: true}}\n"
    )
    assert len(found) == 1 and "no backend named 'nope'" in found[0]


def test_a_sticky_header_is_kept_lower_case() -> None:
    text = BACKENDS + (
        "models:\n  m:\n    chain:\n      - group:\n          strategy: weighted\n"
        "          targets: [{backend: a}, {backend: b}]\n          sticky: {by: header, header: X-Session}\n"
        "  k:\n    chain:\n      - group:\n          targets: [{backend: a}, {backend: b}]\n"
        "          sticky: {by: key}\n"
    )
    config = load(text)
    by_header, by_key = (next(s for s in m.steps if hasattr(s, "sticky")) for m in config.models)
    assert by_header.sticky.header == "x-session"  # type: ignore[union-attr]
    assert by_key.sticky.header is None  # type: ignore[union-attr]


def test_a_public_name_used_twice_is_placed_on_its_second_use() -> None:
    alias = issues(
        BACKENDS + "models:\n  m: {chain: [{backend: a}]}\n  n: {chain: [{backend: a}], aliases: [m]}\n"
    )
    assert any("models.n.aliases[0]" in s and "already used by model 'm'" in s for s in alias), alias
    name = issues(
        BACKENDS + "models:\n  m: {chain: [{backend: a}], aliases: [n]}\n  n: {chain: [{backend: a}]}\n"
    )
    assert any("models.n:" in s and "'n' is already used by model 'm'" in s for s in name), name


def test_every_key_is_checked_after_a_bad_one() -> None:
    text = (
        BACKENDS
        + MODELS
        + (
            "auth:\n  client_keys:\n    - {name: lit, key: literal-secret-value}\n"
            "    - {name: empty, key: '${E}'}\n"
            "    - {name: empty, key: '${F}'}\n"
        )
    )
    found = issues(text, env={"E": "", "F": "another-key-value"})
    assert any("auth.client_keys[0].key" in s and "literal key is refused" in s for s in found)
    assert any("auth.client_keys[1].key" in s and "the key is empty" in s for s in found)
    assert any("auth.client_keys[2].name" in s for s in found)


def test_key_limits_are_loaded() -> None:
    text = (
        BACKENDS
        + MODELS
        + ("auth:\n  client_keys:\n    - {name: app, key: '${K}', limits: {requests_per_minute: 5}}\n")
    )
    key = load(text, env={"K": "app-key-value"}).auth.client_keys[0]
    assert key.limits is not None and key.limits.requests_per_minute == 5


def test_values_from_unset_variables_are_unknown_not_wrong_when_not_strict() -> None:
    text = BACKENDS + MODELS + "server: {port: '${GW_PORT}'}\n"
    assert issues(text)  # strict: an unset variable is an error
    config = parse_config(text.encode(), Path("/srv/gw/gateway.yaml"), env={}, strict_env=False)
    assert config.models[0].name == "m"


def test_a_model_name_used_as_an_alias_is_marked_on_its_key() -> None:
    [found] = issues(
        BACKENDS + "models:\n  m: {chain: [{backend: a}], aliases: [n]}\n  n: {chain: [{backend: a}]}\n"
    )
    assert found.endswith("gateway.yaml:7:3: models.n: the public name 'n' is already used by model 'm'")


def test_a_key_from_a_variable_with_a_literal_default_is_refused() -> None:
    text = (
        BACKENDS + MODELS + "auth:\n  client_keys:\n    - {name: app, key: '${APP_KEY:-a-literal-secret}'}\n"
    )
    found = issues(text)
    assert any("auth.client_keys[0].key" in s and "literal key is refused" in s for s in found), found
