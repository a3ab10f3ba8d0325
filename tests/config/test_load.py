"""Loading gateway.yaml: interpolation, defaults from the schema, typed config, located errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.auth import exposure_issue
from gateway.config.issues import ConfigError
from gateway.config.load import config_version, load_config, parse_config
from gateway.config.model import Secret

BROKEN = Path(__file__).parent / "broken"
EXPECT = re.compile(r"^# expect: (\d+):(\d+) (?:(\S.*?) )?:: (.+)$", re.MULTILINE)

#: The least a config needs: one model (and the backend its chain names).
MINIMAL = """\
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: up}]}
"""


def model_on(backend: str) -> str:
    """A `models:` section with one model served by `backend` (for texts that define backends)."""
    return f"models:\n  m: {{chain: [{{backend: {backend}}}]}}\n"


def load(text: str, env: dict[str, str] | None = None, name: str = "gateway.yaml"):
    return parse_config(text.encode(), Path("/srv/gw") / name, env=env or {})


def test_a_minimal_file_gets_every_default() -> None:
    config = load(MINIMAL)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert (
        config.timeouts.chat.total,
        config.timeouts.completions.total,
        config.timeouts.embeddings.total,
    ) == (
        900,
        600,
        120,
    )
    assert config.timeouts.chat.connect == 10
    assert config.audit.retention_days == 30
    assert config.audit.database_url == "sqlite:///srv/gw/gateway-audit.sqlite3"
    assert config.failover.circuit_breaker.failure_threshold == 5
    assert config.admin.write_back is True


def test_partial_tier_keeps_its_own_default_total() -> None:
    config = load(MINIMAL + "timeouts:\n  embeddings:\n    connect: 3\n")
    assert config.timeouts.embeddings.total == 120
    assert config.timeouts.embeddings.connect == 3
    assert config.timeouts.chat.total == 900


def test_env_interpolation_types_and_defaults() -> None:
    text = """
server:
  port: ${PORT:-9000}
  host: "${HOST:-127.0.0.1}"
backends:
  up:
    type: openai_compatible
    base_url: http://${UP_HOST}:${UP_PORT-8000}/v1
    api_key: ${UP_KEY:-}
    headers:
      x-tenant: "$${NOT_A_REFERENCE}"
models:
  m: {chain: [{backend: up, model: "${MODEL_NAME:-llama}"}]}
"""
    config = load(text, env={"UP_HOST": "127.0.0.2", "PORT": "9100"})
    assert config.server.port == 9100 and isinstance(config.server.port, int)
    assert config.backend("up").base_url == "http://127.0.0.2:8000/v1"
    assert config.backend("up").api_key == Secret("")
    assert dict(config.backend("up").headers)["x-tenant"].reveal() == "${NOT_A_REFERENCE}"
    assert config.models[0].chain[0].model == "llama"
    # `:-` also replaces an empty value; `-` only an unset one.
    config = load(text, env={"UP_HOST": "h", "PORT": "", "UP_PORT": ""})
    assert config.server.port == 9000
    assert config.backend("up").base_url == "http://h:/v1"


def test_cloud_backend_without_key_is_disabled_with_the_variable_named() -> None:
    text = "backends:\n  oa:\n    type: openai\n    api_key: ${MY_OPENAI:-}\n" + model_on("oa")
    disabled = load(text).backend("oa")
    assert not disabled.enabled
    assert "MY_OPENAI" in disabled.disabled_reason
    enabled = load(text, env={"MY_OPENAI": "sk-test"}).backend("oa")
    assert enabled.enabled and enabled.api_key.reveal() == "sk-test"
    assert enabled.base_url == "https://api.openai.com/v1"


def test_secrets_never_show_in_repr() -> None:
    text = """
backends:
  oa: {type: openai, api_key: "${K}"}
auth:
  client_keys: [{name: ci, key: "${CK}"}]
""" + model_on("oa")
    config = load(text, env={"K": "sk-supersecret-value", "CK": "client-secret-value"})
    assert "sk-supersecret-value" not in repr(config)
    assert "client-secret-value" not in repr(config)


def test_relative_paths_resolve_from_the_config_directory() -> None:
    config = load(
        "backends:\n  local: {type: mlx, path: models/tiny}\naudit: {spill_path: spill/a.jsonl}\n"
        + model_on("local")
    )
    assert config.backend("local").path == Path("/srv/gw/models/tiny")
    assert config.audit.spill_path == Path("/srv/gw/spill/a.jsonl")


def test_key_hashes_and_allowlists() -> None:
    text = (
        """
auth:
  client_keys:
    - {name: ci, key: "${CI_KEY}", models: ["gpt-*"]}
    - {name: hashed, key_sha256: 5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8}
  admin_keys:
    - {name: ops, key: "${OPS_KEY}"}
"""
        + MINIMAL
    )
    config = load(text, env={"CI_KEY": "ci-secret", "OPS_KEY": "ops-secret"})
    assert config.auth.client_keys[0].models == ("gpt-*",)
    assert (
        config.auth.client_keys[1].key_sha256
        == "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
    )
    assert config.auth.client_keys[1].models == ("*",)


def test_same_key_for_client_and_admin_is_refused() -> None:
    text = (
        """
auth:
  client_keys: [{name: a, key: "${K1}"}]
  admin_keys: [{name: b, key: "${K2}"}]
"""
        + MINIMAL
    )
    with pytest.raises(ConfigError) as raised:
        load(text, env={"K1": "same", "K2": "same"})
    assert "every key must be distinct" in str(raised.value)


def test_version_is_a_hash_of_the_bytes() -> None:
    text = MINIMAL + "server: {port: 1}\n"
    assert load(text).version == config_version(text.encode())
    assert load(text).version != load(text + " \n").version


def test_no_env_mode_reports_unset_variables_instead_of_failing() -> None:
    text = "backends:\n  up: {type: openai_compatible, base_url: 'http://${UP}/v1', api_key: '${UP_KEY}'}\n"
    text += model_on("up")
    with pytest.raises(ConfigError):
        parse_config(text.encode(), "g.yaml", env={})
    config = parse_config(text.encode(), "g.yaml", env={}, strict_env=False)
    assert config.unset_env == {"UP", "UP_KEY"}


def test_merge_keys_and_anchors() -> None:
    text = """
backends:
  base: &common {type: openai_compatible, base_url: "http://127.0.0.1:1/v1", max_queue: 5}
  other:
    <<: *common
    max_queue: 9
""" + model_on("other")
    config = load(text)
    assert config.backend("other").max_queue == 9
    assert config.backend("other").base_url == "http://127.0.0.1:1/v1"


def test_exposure_needs_keys_or_explicit_opt_in() -> None:
    assert exposure_issue(load(MINIMAL), "127.0.0.1") is None
    assert exposure_issue(load(MINIMAL), "::1") is None
    assert "client keys" in exposure_issue(load(MINIMAL), "0.0.0.0")
    assert exposure_issue(load(MINIMAL + "auth: {allow_unauthenticated: true}\n"), "0.0.0.0") is None


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read file" in str(raised.value)


def test_non_utf8_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(b"server:\n  host: \xff\xfe\n", "g.yaml")
    assert "not UTF-8" in str(raised.value)


def _broken_files() -> list[Path]:
    return sorted(BROKEN.glob("*.yaml"))


def test_the_broken_corpus_is_large_enough() -> None:
    assert len(_broken_files()) >= 15


@pytest.mark.parametrize("path", _broken_files(), ids=lambda p: p.stem)
def test_broken_file_names_line_column_and_path(path: Path) -> None:
    expected = EXPECT.findall(path.read_text())
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    issues = raised.value.issues
    for line, column, json_path, message in expected:
        matching = [
            i
            for i in issues
            if (i.location.line, i.location.column, i.path) == (int(line), int(column), json_path or "")
            and message in i.message
        ]
        assert matching, f"expected {line}:{column} {json_path}: {message}\ngot:\n{raised.value}"
    assert len(issues) == len(expected), f"unexpected extra errors:\n{raised.value}"
    assert all(str(i).startswith(f"{path}:") for i in issues)


def test_literal_secrets_are_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(BROKEN / "literal_secrets.yaml", env={})
    text = str(raised.value)
    for secret in ("sk-proj-0123456789abcdef", "sk-ant-0123", "hunter2", "abc123", "s3cret", "0p5-k3y"):
        assert secret not in text, f"{secret} shown in the error"


def test_secrets_from_the_environment_are_accepted_in_every_secret_setting() -> None:
    text = """
backends:
  oa: {type: openai, api_key: "${OPENAI_API_KEY}"}
  an: {type: anthropic, api_key: "${ANTHROPIC_API_KEY:-}"}
  vllm:
    type: openai_compatible
    base_url: "https://${VLLM_USER}:${VLLM_PASSWORD}@vllm.internal/v1?token=${VLLM_TOKEN}&region=eu"
    api_key: ""
    headers:
      Authorization: "Bearer ${VLLM_TOKEN}"
      x-api-key: ${VLLM_KEY}
      X-Tenant: acme
models:
  m: {chain: [{backend: oa}, {backend: an}, {backend: vllm}]}
auth:
  client_keys: [{name: app, key: "${APP_KEY}"}]
  admin_keys: [{name: ops, key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}]
audit:
  database_url: postgresql://gateway:${AUDIT_DB_PASSWORD}@db.internal:5432/audit?sslmode=require
"""
    env = {
        "OPENAI_API_KEY": "sk-1",
        "VLLM_USER": "u",
        "VLLM_PASSWORD": "p",
        "VLLM_TOKEN": "t",
        "VLLM_KEY": "k",
        "APP_KEY": "a",
        "AUDIT_DB_PASSWORD": "pw",
    }
    config = load(text, env=env)
    assert config.backend("vllm").base_url == "https://u:p@vllm.internal/v1?token=t&region=eu"
    assert config.audit.database_url == "postgresql://gateway:pw@db.internal:5432/audit?sslmode=require"
    # A URL without a password, or the whole URL from the environment, is fine too.
    load(MINIMAL + "audit: {database_url: 'postgresql://gateway@db.internal/audit'}\n")
    load(MINIMAL + "audit: {database_url: '${AUDIT_URL}'}\n", env={"AUDIT_URL": "postgresql://g:x@h/db"})


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ('"Bearer ${T}"', False),
        ('"${T}"', False),
        ('""', False),
        ('"Bearer sk-literal"', True),
        ('"sk-literal ${T}"', True),  # a literal part before the reference is no auth scheme
        ('"${T} trailing"', True),
        ('"${T:-sk-literal}"', True),
    ],
)
def test_a_credential_header_holds_references_and_at_most_an_auth_scheme(value: str, refused: bool) -> None:
    backend = f"{{type: openai_compatible, base_url: 'http://h/v1', headers: {{X-Api-Key: {value}}}}}"
    text = f"backends:\n  v: {backend}\n" + model_on("v")
    if not refused:
        load(text, env={"T": "t"})
        return
    with pytest.raises(ConfigError) as raised:
        load(text, env={"T": "t"})
    assert "backends.v.headers.X-Api-Key: a literal credential in header X-Api-Key is refused" in str(
        raised.value
    )
    assert "sk-literal" not in str(raised.value) and "trailing" not in str(raised.value)


@pytest.mark.parametrize(
    ("kind", "variable"),
    [("openai", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY"), ("openai_compatible", "MINE_API_KEY")],
)
def test_a_literal_api_key_is_refused_naming_the_usual_variable(kind: str, variable: str) -> None:
    backend = f"{{type: {kind}, base_url: 'http://h/v1', api_key: 'literal-key-123'}}"
    with pytest.raises(ConfigError) as raised:
        load(f"backends:\n  mine: {backend}\n" + model_on("mine"))
    assert f"${{{variable}}}" in str(raised.value)
    assert "literal-key-123" not in str(raised.value)


def test_shadow_is_typed_with_its_defaults() -> None:
    shadowed = MINIMAL.replace(
        "m: {chain: [{backend: up}]}",
        "m: {chain: [{backend: up}], shadow: {target: {backend: up}, sample_rate: 0.25}}",
    )
    config = load(shadowed)
    [model] = config.models
    assert model.shadow is not None
    assert (model.shadow.target.backend, model.shadow.target.model) == ("up", "m")  # the public name
    assert (model.shadow.sample_rate, model.shadow.max_concurrency) == (0.25, 16)
    assert load(MINIMAL).models[0].shadow is None
