"""`gateway check` exit codes and output, `gateway key hash`, `gateway prices`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BROKEN = Path(__file__).parent / "config" / "broken"
VALID = """\
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: up}]}
"""


def gateway(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, input=stdin
    )


def test_check_valid_file_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID + "server: {port: 9999}\n")
    result = gateway("check", str(path))
    assert result.returncode == 0
    assert f"{path}: valid" in result.stdout


def test_check_lists_every_error_and_exits_1() -> None:
    result = gateway("check", str(BROKEN / "many_errors.yaml"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if ": " in line and "error(s)" not in line]
    assert len(lines) == 3
    assert lines[0].endswith("many_errors.yaml:6:9: server.port: must be at most 65535, got 70000")
    assert "3 error(s)" in result.stderr


def test_check_several_files_fails_if_any_fails(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    result = gateway("check", str(good), str(BROKEN / "tabs.yaml"))
    assert result.returncode == 1
    assert "good.yaml: valid" in result.stdout
    assert "tabs.yaml:3:1: tab character" in result.stderr


def test_check_json_format_is_machine_readable() -> None:
    result = gateway("check", "--format", "json", str(BROKEN / "unknown_backend.yaml"))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["errors"][0]["line"] == 14
    assert report["errors"][0]["path"] == "models.chat.chain[1].backend"


def test_check_no_env_accepts_unset_variables_with_a_warning() -> None:
    path = BROKEN / "unset_env.yaml"
    assert gateway("check", str(path)).returncode == 1
    result = gateway("check", "--no-env", str(path))
    assert result.returncode == 0, result.stderr
    assert "GATEWAY_TEST_SURELY_UNSET_VAR" in result.stderr


def test_check_warns_about_models_with_no_enabled_target(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "backends:\n  oa: {type: openai, api_key: '${NOPE_KEY:-}'}\n"
        "models:\n  gpt: {chain: [{backend: oa}]}\n"
    )
    result = gateway("check", str(path))
    assert result.returncode == 0
    assert "models.gpt: no enabled target" in result.stderr
    assert "NOPE_KEY" in result.stderr


def test_key_hash_matches_sha256() -> None:
    result = gateway("key", "hash", stdin="s3cret\n")
    assert result.stdout.strip() == hashlib.sha256(b"s3cret").hexdigest()


@pytest.mark.parametrize(
    ("group", "example"), [("key", "gateway key new NAME"), ("model", "gateway model create")]
)
def test_a_command_group_alone_says_what_it_can_do(group: str, example: str) -> None:
    result = gateway(group)
    assert result.returncode == 2
    assert example in result.stderr
    assert "required" not in result.stderr and "_command" not in result.stderr  # no argparse internals


def test_key_new_prints_the_key_once_and_an_entry_the_config_accepts(tmp_path: Path) -> None:
    result = gateway("key", "new", "billing-app")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("gw-") and len(key) > 40
    assert key not in result.stderr  # the entry holds the hash only
    entry = result.stderr[result.stderr.index("    - name:") :]
    path = tmp_path / "g.yaml"
    path.write_text(VALID + "auth:\n  client_keys:\n" + entry)
    from gateway.config.load import load_config

    (client,) = load_config(path).auth.client_keys
    assert client.name == "billing-app"
    assert client.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert gateway("key", "new", "billing-app").stdout.strip() != key  # random each time
    admin = gateway("key", "new", "ops", "--admin")
    assert "auth.admin_keys" in admin.stderr
    refused = gateway("key", "new", "not a name")
    assert refused.returncode == 2 and "not a usable name" in refused.stderr and not refused.stdout


def test_check_warns_when_a_per_attempt_timeout_exceeds_the_total(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(VALID + "timeouts:\n  chat: {total: 30, first_byte: 60}\n  embeddings: {total: 120}\n")
    result = gateway("check", str(path))
    assert result.returncode == 0, result.stderr
    assert "timeouts.chat.first_byte (60 s) is longer than timeouts.chat.total (30 s)" in result.stderr
    assert "embeddings" not in result.stderr  # first_byte's default (120 s) is not longer than 120 s
    assert "connect" not in result.stderr


def test_prices_prints_the_shipped_table_with_its_date() -> None:
    from gateway.pricing import shipped_table

    result = gateway("prices")
    assert result.returncode == 0, result.stderr
    assert f"as of {shipped_table().as_of} (USD per million tokens)" in result.stdout
    lines = result.stdout.splitlines()
    assert any(line.split()[:5] == ["gpt-4o-mini", "0.15", "0.075", "0.15", "0.6"] for line in lines)
    assert any(line.split()[:5] == ["claude-sonnet-4-5", "3", "0.3", "3.75", "15"] for line in lines)


def test_prices_with_a_config_shows_each_backend_s_effective_prices(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "backends:\n"
        "  oa: {type: openai, api_key: '${UNSET_OPENAI_KEY}', prices: {gpt-4o: {input: 2, output: 8}}}\n"
        "  up: {type: openai_compatible, base_url: 'http://127.0.0.1:9/v1'}\n"
        "models:\n"
        "  gpt: {chain: [{backend: oa, model: gpt-4o}, {backend: oa, model: gpt-4.1}, {backend: up}]}\n"
    )
    result = gateway("prices", "--config", str(path))
    assert result.returncode == 0, result.stderr  # secrets are not needed to read prices
    assert "oa (openai); other models: the shipped openai prices" in result.stdout
    own = ["gpt-4o*", "2", "2", "2", "8", "gateway.yaml"]
    assert any(line.split() == own for line in result.stdout.splitlines())
    report = json.loads(gateway("prices", "--json", "-c", str(path)).stdout)
    assert report["backends"]["oa"]["models"]["gpt-4.1"]["origin"] == "shipped"
    assert report["backends"]["up"]["models"]["gpt"] == {"price": None, "origin": None, "routed": True}
    assert report["backends"]["up"]["other_models"] == "unknown"


def test_prices_with_a_broken_config_says_where_and_exits_1() -> None:
    result = gateway("prices", "--config", str(BROKEN / "unknown_backend.yaml"))
    assert result.returncode == 1
    assert "unknown_backend.yaml:14:" in result.stderr and result.stdout == ""


def _check_one(path: Path) -> tuple[int, list[str]]:
    """`gateway check PATH`: its exit code and its error lines; never a traceback."""
    result = gateway("check", str(path))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout
    *errors, summary = result.stderr.splitlines()
    assert summary.startswith(f"{path}: ") and summary.endswith("error(s)"), result.stderr
    return result.returncode, errors


@pytest.mark.parametrize(
    "content",
    [b"", b"\n  \n", b"# only a comment\n# and another\n", b"---\n", b"~\n"],
    ids=["empty", "blank", "comments", "empty-document", "null"],
)
def test_check_refuses_a_file_with_no_settings(tmp_path: Path, content: bytes) -> None:
    """An editor that truncates then writes passes through this state; serving it drops every model."""
    path = tmp_path / "gateway.yaml"
    path.write_bytes(content)
    code, errors = _check_one(path)
    assert code == 1
    assert errors == [
        f"{path}:1:1: the file has no settings (it is empty or only comments); a gateway needs its models"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("server: {port: 1}\n", ":1:1: no models: define at least one under `models:`"),
        (VALID.split("models:")[0] + "models: {}\n", ":3:9: models: no models: define at least one"),
        (VALID.split("models:")[0] + "models:\n", ":3:8: models: expected a mapping, got nothing (null)"),
        ("- server\n- models\n", ":1:1: the file must be a mapping of settings (key: value)"),
        ("just words\n", ":1:1: the file must be a mapping of settings (key: value)"),
    ],
    ids=["missing", "empty-mapping", "null", "a-list", "a-string"],
)
def test_check_refuses_a_config_with_no_models(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(content)
    code, errors = _check_one(path)
    assert code == 1
    assert len(errors) == 1 and errors[0].startswith(f"{path}{expected}"), errors


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"models:\n  m: \x00\n", ":2:6: a NUL byte is not allowed in the config file"),
        (
            b"server:\n  port: 1\n  host: caf\xc3\xa9 \xff\n",
            ":3:14: the file is not UTF-8 text: byte 0xff here",
        ),
        (b"server:\n  host: a\x07b\n", ":2:10: the control character U+0007 is not allowed in YAML"),
        (b'server:\n  host: "a\\x01b"\n', ":2:9: server.host: the control character U+0001 is not allowed"),
        (b"server:\n  port: !!int abc\n", ":2:9: server.port: 'abc' is not an integer"),
        (b"server:\n  host: !!python/object:os.system x\n", ":2:9: server.host: unsupported YAML tag"),
    ],
    ids=["nul", "not-utf8", "control", "escaped-control", "bad-int", "python-tag"],
)
def test_check_locates_bytes_yaml_refuses_without_a_traceback(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(VALID.encode() + content if content.startswith(b"server") else content)
    code, errors = _check_one(path)
    assert code == 1
    shift = VALID.count("\n") if content.startswith(b"server") else 0
    line, rest = expected[1:].split(":", 1)
    assert errors[0].startswith(f"{path}:{int(line) + shift}:{rest}"), errors


def test_check_accepts_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    result = gateway("check", str(path))
    assert result.returncode == 0 and f"{path}: valid" in result.stdout, result.stderr


def test_check_a_directory_or_a_missing_file_is_a_located_error(tmp_path: Path) -> None:
    directory = tmp_path / "gateway.yaml"
    directory.mkdir()
    code, errors = _check_one(directory)
    assert code == 1 and errors == [f"{directory}:1:1: cannot read file: Is a directory"]
    code, errors = _check_one(tmp_path / "missing.yaml")
    assert code == 1 and errors == [
        f"{tmp_path / 'missing.yaml'}:1:1: cannot read file: No such file or directory"
    ]


def test_check_refuses_a_literal_provider_key_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        VALID.replace('"http://127.0.0.1:9/v1"}', '"http://127.0.0.1:9/v1", api_key: sk-live-42}')
    )
    code, errors = _check_one(path)
    assert code == 1
    assert errors == [
        f"{path}:2:77: backends.up.api_key: a literal secret is refused (this file belongs in git): write "
        "`${UP_API_KEY}` and set UP_API_KEY in the environment (a default, `${UP_API_KEY:-...}`, is literal "
        "too; `${UP_API_KEY:-}` is fine)"
    ]


def test_check_refuses_a_file_nested_too_deep(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID + "x: " + "[" * 5000 + "]" * 5000 + "\n")
    code, errors = _check_one(path)
    assert code == 1 and errors == [
        f"{path}:1:1: the YAML nests too deeply (lists or mappings hundreds of levels inside each other)"
    ]


def test_check_reports_a_loader_failure_as_a_located_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defence in depth: should the loader raise anything but ConfigError, check still answers in its
    usual format, with exit code 1."""
    from gateway import cli

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the loader")

    monkeypatch.setattr("gateway.config.load.load_config", broken)
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID)
    assert cli.main(["check", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:1:1: the config could not be loaded (RuntimeError: a bug in the loader)",
        f"{path}: 1 error(s)",
    ]


def test_init_writes_a_starter_that_check_accepts_and_keeps_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "new"
    result = gateway("init", str(target))
    assert result.returncode == 0, result.stderr
    config = target / "gateway.yaml"
    assert config.is_file() and (target / "gateway.schema.json").is_file()
    text = config.read_text()
    assert text.startswith("# yaml-language-server: $schema=./gateway.schema.json\n")
    assert json.loads((target / "gateway.schema.json").read_text())["title"]
    assert f"gateway check {target / 'gateway.yaml'}" in result.stdout
    checked = gateway("check", str(config))
    assert checked.returncode == 0, checked.stderr

    config.write_text(text + "# mine\n")
    again = gateway("init", str(target))
    assert again.returncode == 1 and "exists; not replacing it" in again.stderr
    assert config.read_text().endswith("# mine\n")
    assert gateway("init", str(target), "--force").returncode == 0
    assert not config.read_text().endswith("# mine\n")


def test_the_starter_s_commented_next_steps_are_valid_once_uncommented(tmp_path: Path) -> None:
    """The commented-out blocks are what an operator uncomments first, each where its line says
    (`(under backends:)`, `(a new section)`): done so, the file must check clean."""
    import re

    import yaml

    from gateway.starter import starter_text

    text = starter_text()
    data = yaml.safe_load(text)
    tail = text[text.index("# Next steps") :]
    blocks = re.findall(r"\((under (\w+):[^)]*|a new section)\)\n((?:#  ?\S.*\n|#   .*\n)+)", tail)
    assert len(blocks) == 4, tail
    digest = hashlib.sha256(b"k").hexdigest()
    for where, section, body in blocks:
        block = "".join(line[2:] + "\n" for line in body.splitlines())
        parsed = yaml.safe_load(block.replace("<from gateway key new billing-app>", digest))
        if where == "a new section":
            assert not set(parsed) & set(data), parsed  # really new
            data.update(parsed)
        else:
            data[section].update(parsed)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    result = gateway("check", "--no-env", str(path))
    assert result.returncode == 0, result.stderr
    from gateway.config.load import load_config

    loaded = load_config(path, strict_env=False)
    assert [k.name for k in loaded.auth.client_keys] == ["billing-app"]
    assert [t.backend for t in next(m for m in loaded.models if m.name == "llama").chain] == ["vllm", "local"]
    assert loaded.audit.database_url.startswith("postgres://")
