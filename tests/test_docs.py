"""The documentation is tested: its config blocks load, its `gateway` commands parse, its HTTP calls
name served routes on the default port, and its links resolve (the rules: tests/docs_snippets.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs_examples import example_file_parts
from tests.docs_snippets import (
    ROOT,
    SHELL_LANGS,
    SKIP_HINT,
    YAML_LANGS,
    Block,
    Router,
    all_blocks,
    check_config_text,
    check_inline_commands,
    check_links,
    check_shell_block,
    example_yaml_files,
    extract_blocks,
    is_gateway_config,
    markdown_files,
    relative,
    skip_problem,
    yaml_file_block,
    yaml_problem,
)

BLOCKS = list(all_blocks())
CONFIG_BLOCKS = [
    b for b in BLOCKS if b.lang in YAML_LANGS and (b.skip is not None or is_gateway_config(b.text))
]
CONFIG_BLOCKS += [
    block
    for block in (yaml_file_block(p.read_text(encoding="utf-8"), relative(p)) for p in example_yaml_files())
    if block.skip is not None or is_gateway_config(block.text)
]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL_LANGS]
#: Commands and embedded configs of the other example files (CI, compose, Kubernetes, units, Containerfiles).
EXAMPLE_COMMANDS, EMBEDDED_CONFIGS = example_file_parts()
CONFIG_BLOCKS += EMBEDDED_CONFIGS


@pytest.fixture(scope="module")
def router() -> Router:
    return Router()


def _checked(block: Block) -> None:
    problem = skip_problem(block)
    assert problem is None, f"{block.id}: {problem}"
    if block.skip:
        pytest.skip(block.skip)


@pytest.mark.parametrize("block", CONFIG_BLOCKS, ids=[b.id for b in CONFIG_BLOCKS])
def test_config_block_is_valid(block: Block) -> None:
    _checked(block)
    first_line = block.line + 1 if block.source.endswith(".md") else block.line
    problems = check_config_text(block.text, first_line=first_line)
    assert not problems, f"{block.id}: not a valid gateway config {SKIP_HINT}:\n" + "\n".join(problems)


COMMAND_BLOCKS = SHELL_BLOCKS + EXAMPLE_COMMANDS


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=[b.id for b in COMMAND_BLOCKS])
def test_shell_block_commands_and_urls(block: Block, router: Router) -> None:
    _checked(block)
    # A Markdown block's text starts the line after its fence; an example file's command is its line.
    first_line = block.line + 1 if block.source.endswith(".md") else block.line
    problems = check_shell_block(block.text, router, console=block.lang == "console", first_line=first_line)
    assert not problems, f"{block.id} {SKIP_HINT}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", markdown_files(), ids=[relative(p) for p in markdown_files()])
def test_links_and_inline_commands(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    problems = check_links(text, path) + check_inline_commands(text)
    assert not problems, f"{relative(path)}:\n" + "\n".join(problems)


def test_yaml_blocks_and_files_parse() -> None:
    yaml_texts = [b for b in BLOCKS if b.lang in YAML_LANGS]
    yaml_texts += [yaml_file_block(p.read_text(encoding="utf-8"), relative(p)) for p in example_yaml_files()]
    problems = [
        f"{b.id}: {yaml_problem(b.text)}" for b in yaml_texts if b.skip is None and yaml_problem(b.text)
    ]
    assert not problems, "\n".join(problems)
    assert yaml_problem("models: {a: [}") is not None


def test_the_documents_hold_snippets_of_every_kind() -> None:
    """Extraction finds what it is meant to (a regex that matched nothing would pass every test)."""
    assert len(CONFIG_BLOCKS) >= 15 and len(SHELL_BLOCKS) >= 30
    assert any(b.source.startswith("examples/configs/") for b in CONFIG_BLOCKS)
    assert any(b.source == "examples/ci/gateway-check.yml" for b in EXAMPLE_COMMANDS)
    assert any(b.source == "examples/kubernetes/gateway.k8s.yml" for b in EMBEDDED_CONFIGS)


# --- the test of the test: planted mistakes are reported ----------------------------------------------

PLANTED = """\
# Planted

See [the cache](docs/no-such-file.md) and [a heading](#no-such-heading), [fine](#planted),
[a reference][gone], <img src="docs/screenshots/gone.png">.

[gone]: docs/gone.md
The design is in `../shared/DESIGN.md`; run `gateway chekc`, or `gateway bench overhead --nope`.

```yaml
backends:
  local: {type: mlx, path: models/tiny, paht: x}
```

<!-- docs-test: skip -->
```yaml
models: {}
```

```sh
gateway chekc gateway.yaml
gateway check --no-env --formt json gateway.yaml
gateway bench overhead --no-such-flag
gateway check [FILE ...] [--nope]
curl -s localhost:8080/v1/nonexistent
curl -s localhost:8000/v1/models
curl -s localhost:8080/v1/models -d '{}'
kubectl exec deploy/gateway -- gateway chekc
```
"""


def test_planted_mistakes_are_reported(router: Router) -> None:
    yaml_block, skipped, shell = extract_blocks(PLANTED, "planted.md")
    assert is_gateway_config(yaml_block.text)
    assert any("paht" in p for p in check_config_text(yaml_block.text))
    assert skip_problem(skipped) is not None
    problems = check_shell_block(shell.text, router)
    for expected in ("chekc", "--formt", "--no-such-flag", "--nope", "/v1/nonexistent", "8080", "takes GET"):
        assert any(expected in p for p in problems), (expected, problems)
    assert len(problems) == 8 and problems[-1].startswith("8: gateway chekc"), problems
    links = check_links(PLANTED, ROOT / "planted.md")
    assert [p.split(": ", 1)[1] for p in links] == [
        "docs/no-such-file.md: no such file",
        "#no-such-heading: no heading with the anchor #no-such-heading",
        "docs/screenshots/gone.png: no such file",
        "docs/gone.md: no such file",
        "`../shared/DESIGN.md`: no such file in the repository",
    ], links
    inline = check_inline_commands(PLANTED)
    assert len(inline) == 2 and "chekc" in inline[0] and "--nope" in inline[1], inline


PLANTED_FILES = {
    "compose.yaml": """\
services:
  gateway:
    image: gateway:latest
    command: ["serve", "--confg", "/etc/gateway/gateway.yaml"]
    healthcheck: {test: ["CMD", "curl", "-f", "http://localhost:8080/healthz"]}
configs:
  gateway:
    content: |
      models:
        m: {chain: [{backend: nowhere}]}
""",
    "gateway.service": "[Service]\nExecStart=/opt/gateway/bin/gateway serve \\\n    --wrokers 2\n",
    "Containerfile": 'FROM python:3.11\nRUN pip install .\nENTRYPOINT ["gateway"]\nCMD ["serv"]\n',
}


def test_planted_mistakes_in_example_files_are_reported(tmp_path: Path, router: Router) -> None:
    for name, text in PLANTED_FILES.items():
        (tmp_path / "examples" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "examples" / name).write_text(text)
    commands, configs = example_file_parts(tmp_path)
    problems = [p for block in commands for p in check_shell_block(block.text, router)]
    for expected in ("--confg", "/healthz", "--wrokers", "'serv'"):
        assert any(expected in p for p in problems), (expected, problems)
    assert len(problems) == 4, problems
    assert [b.id for b in configs] == ["examples/compose.yaml:9"]
    assert any("nowhere" in p for p in check_config_text(configs[0].text))


def test_sound_snippets_pass(router: Router) -> None:
    """The other way round: what is right is not reported (a check that always fails tests nothing)."""
    config = (
        "version: 1\nbackends: {b: {type: openai, api_key: '${K}'}}\nmodels: {m: {chain: [{backend: b}]}}\n"
    )
    assert check_config_text(config) == []
    assert check_config_text("models:\n  m: {chain: [{backend: openai}]}\n") == []  # a fragment
    text = (
        "$ FOO=1 gateway check --no-env \\\n    --format json gateway.yaml | jq .\n"
        "$ curl -s -H 'authorization: Bearer $K' http://127.0.0.1:8080/admin/api/logs?limit=5\n"
        "output line gateway chekc\n"
        "$ websocat ws://localhost:8080/admin/api/logs/live\n"
        "$ curl -X PATCH localhost:8080/admin/api/config/timeouts -d '{}'\n"
        "$ curl -s 'localhost:9090/api/v1/query?query=up'\n"  # Prometheus, not the gateway
        "$ gateway serve --port 9000 & curl localhost:9000/health\n"
        "$ cat > gateway.yaml <<'EOF'\ncurl localhost:1/nowhere\nEOF\n"  # a here-document is text
        "$ http :8080/v1/models\n"
    )
    assert check_shell_block(text, router, console=True) == []
