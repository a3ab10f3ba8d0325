"""What example files other than Markdown and gateway configs run and hold (used by tests/test_docs.py).

CI workflows, compose files and Kubernetes manifests (YAML), systemd and Quadlet units, Containerfiles:
each command line they run becomes a one-line shell `Block` (checked like a documented command), a
Kubernetes `httpGet` probe becomes the `curl` it amounts to, and a multi-line string that is itself
a gateway config (a ConfigMap's `gateway.yaml`) becomes a config `Block`. A command that starts with a
gateway subcommand (`args: [serve, ...]` of an image whose entrypoint is `gateway`) is `gateway ...`.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.docs_snippets import ROOT, Block, is_gateway_config, relative

_UNIT_COMMAND = re.compile(
    r"^(?P<key>ExecStart|ExecStartPre|ExecStartPost|ExecReload|ExecStop|Exec)=(?P<command>.*)$"
)
_CONTAINER_COMMAND = re.compile(r"^(?P<key>RUN|CMD|ENTRYPOINT|HEALTHCHECK)\s+(?P<command>.*)$", re.IGNORECASE)


def _gateway_subcommands() -> frozenset[str]:
    from gateway.cli import build_parser
    from tests.docs_snippets import subcommands

    return frozenset(subcommands(build_parser()))


def as_gateway(command: str) -> str:
    """`serve --config x` (arguments to an image's `gateway` entrypoint) as `gateway serve --config x`."""
    words = command.split()
    return f"gateway {command}" if words and words[0] in _gateway_subcommands() else command


def _python(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def _scalars(node: yaml.Node) -> list[str]:
    if isinstance(node, yaml.SequenceNode):
        return [str(_python(item)) for item in node.value]
    return [str(_python(node))] if isinstance(node, yaml.ScalarNode) else []


def yaml_file_parts(text: str, source: str) -> tuple[list[Block], list[Block]]:
    """(commands, embedded gateway configs) of a YAML file that is not itself a gateway config."""
    try:
        documents = list(yaml.compose_all(text))
    except yaml.YAMLError:
        return [], []
    commands: list[Block] = []
    configs: list[Block] = []

    def command(node: yaml.Node, line: str) -> None:
        commands.append(Block(source, node.start_mark.line + 1, "sh", as_gateway(line)))

    def walk(node: yaml.Node | None) -> None:
        if isinstance(node, yaml.MappingNode):
            members = {key.value: value for key, value in node.value if isinstance(key, yaml.ScalarNode)}
            argv = [n for n in (members.get("command"), members.get("args")) if n is not None]
            if argv:  # a string is shell form (compose), a list is exec form
                words = [n.value if isinstance(n, yaml.ScalarNode) else shlex.join(_scalars(n)) for n in argv]
                command(argv[0], " ".join(words))
            run = members.get("run")
            if isinstance(run, yaml.ScalarNode):  # a CI step
                first = run.start_mark.line + (2 if run.style in ("|", ">") else 1)
                for offset, line in enumerate(run.value.split("\n")):
                    if line.strip():
                        commands.append(Block(source, first + offset, "sh", line))
            test = _scalars(members["test"]) if "test" in members else []
            if test[:1] == ["CMD"]:
                command(members["test"], shlex.join(test[1:]))
            elif test[:1] == ["CMD-SHELL"]:
                command(members["test"], " ".join(test[1:]))
            probe = members.get("httpGet")
            if isinstance(probe, yaml.MappingNode):
                get = _python(probe)
                command(probe, f"curl http://localhost:{get.get('port', 80)}{get.get('path', '/')}")
            for key, value in node.value:
                if key.value not in ("command", "args", "run", "test", "httpGet"):
                    walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)
        elif isinstance(node, yaml.ScalarNode) and "\n" in node.value and is_gateway_config(node.value):
            configs.append(Block(source, node.start_mark.line + 2, "yaml", node.value))

    for document in documents:
        walk(document)
    return commands, configs


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line, text) with backslash continuations joined."""
    lines, joined, index = text.split("\n"), [], 0
    while index < len(lines):
        start, line = index, lines[index]
        while line.rstrip().endswith("\\") and index + 1 < len(lines):
            index += 1
            line = line.rstrip()[:-1] + " " + lines[index].strip()
        joined.append((start + 1, line))
        index += 1
    return joined


def unit_commands(text: str, source: str) -> list[Block]:
    """`ExecStart=` and the like of a systemd unit; Quadlet's `Exec=` (arguments to the entrypoint)."""
    blocks = []
    for line, content in _logical_lines(text):
        found = _UNIT_COMMAND.match(content.strip())
        if found:
            run = found["command"].lstrip("-@+!:")
            blocks.append(Block(source, line, "sh", as_gateway(run) if found["key"] == "Exec" else run))
    return blocks


def containerfile_commands(text: str, source: str) -> list[Block]:
    """RUN and HEALTHCHECK commands of a Containerfile, and what the container runs: ENTRYPOINT then
    CMD, joined as the engine joins them (each in exec (JSON) form or shell form)."""
    blocks = []
    runs: dict[str, tuple[int, str]] = {}
    for line, content in _logical_lines(text):
        found = _CONTAINER_COMMAND.match(content.strip())
        if not found:
            continue
        key, run = found["key"].upper(), found["command"]
        if key == "HEALTHCHECK":
            run = run.partition("CMD")[2].strip()
        if run.startswith("["):
            with contextlib.suppress(ValueError):  # not JSON: shell form after all
                run = shlex.join(json.loads(run))
        if key in ("ENTRYPOINT", "CMD"):
            runs[key] = (line, run)
        else:
            blocks.append(Block(source, line, "sh", run))
    if runs:
        line = max(at for at, _ in runs.values())
        joined = " ".join(
            run for _, run in (runs.get("ENTRYPOINT", (0, "")), runs.get("CMD", (0, ""))) if run
        )
        blocks.append(Block(source, line, "sh", as_gateway(joined)))
    return blocks


def example_file_parts(root: Path = ROOT) -> tuple[list[Block], list[Block]]:
    """(commands, embedded configs) of every example file that is not Markdown or a gateway config."""
    commands: list[Block] = []
    configs: list[Block] = []
    for path in sorted(p for p in (root / "examples").rglob("*") if p.is_file()):
        text, source = path.read_text(encoding="utf-8", errors="replace"), relative(path, root)
        if path.suffix in (".yaml", ".yml") and not is_gateway_config(text):
            found_commands, found_configs = yaml_file_parts(text, source)
            commands += found_commands
            configs += found_configs
        elif path.suffix in (".service", ".container", ".socket", ".timer"):
            commands += unit_commands(text, source)
        elif path.name.lower().startswith(("containerfile", "dockerfile")):
            commands += containerfile_commands(text, source)
    return commands, configs
