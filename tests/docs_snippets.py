"""Read the documentation's snippets and check each against the real thing (used by tests/test_docs.py).

Every function takes text (a Markdown document, a YAML file, a shell line) and returns what is wrong
with it as a list of messages, empty when nothing is: the test of the documentation and the test of
that test (planted broken snippets) go through the same code.

- YAML blocks: a block with at least one top-level key of the config schema is a gateway config
  (anything else, such as a Kubernetes manifest, a compose file or a CI workflow, is not checked
  here). A block with `version:` is a whole config and is checked as written; one without is a
  fragment, merged onto `FRAGMENT_BASE` first: each top-level section is merged one level deep, the
  fragment's entries replacing the base's entries of the same name (so a fragment may use the
  backend `openai` without defining it). Both are checked by `gateway check --no-env`'s loader.
- Shell blocks: every command whose program is `gateway` parses with the CLI's real argparse parser
  (`gateway bench ...` with the bench parser), without running. A usage synopsis (a line with
  `[optional]` parts or UPPER-CASE placeholders) is checked for its subcommands and option names,
  and so is an inline code span `gateway ...` in the prose (often partial: `gateway bench`).
- `curl`, `websocat` and `http` URLs to the gateway (a local host, a `$VARIABLE` host or a host with
  `gateway` in its name) name a route the app serves, with the method the route takes; a local URL
  uses the default port, 8080.
- Relative Markdown links name a file of the repository, and a `#anchor` a heading of it (GitHub's
  slugs); a code span holding a path that climbs out of the document's folder (`../x`) names one too.

A block is left out by an HTML comment right before its fence, which must give the reason:
`<!-- docs-test: skip (shows the error a typo gives) -->`; a YAML file, by a
`# docs-test: skip (reason)` comment line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_KEYS = frozenset(json.loads((ROOT / "schema" / "gateway.schema.json").read_text())["properties"])
DEFAULT_PORT = 8080
YAML_LANGS = frozenset({"yaml", "yml"})
SHELL_LANGS = frozenset({"sh", "bash", "shell", "console", "zsh"})
HTTP_CLIENTS = frozenset({"curl", "websocat", "http", "https"})
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1", "0.0.0.0"})
#: What a fragment (a YAML block without `version:`) is merged onto before it is checked.
FRAGMENT_BASE: dict[str, Any] = {
    "version": 1,
    "backends": {"openai": {"type": "openai", "api_key": "${OPENAI_API_KEY}"}},
    "models": {"docs-base": {"chain": [{"backend": "openai"}]}},
}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+.-]*)")
_MARKER = re.compile(r"<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>.*)\))?\s*-->")
_FILE_MARKER = re.compile(r"^#\s*docs-test:\s*skip\s*(?:\((?P<reason>.*)\))?\s*$", re.MULTILINE)
#: Said with every failure, so that whoever meets one knows the way out for a deliberate mistake.
SKIP_HINT = (
    "(a block wrong on purpose, or not about the gateway: put `<!-- docs-test: skip (the reason) -->` "
    "right before its fence)"
)


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it opens (1-based line), its language and its text."""

    source: str
    line: int
    lang: str
    text: str
    #: None: checked; else the reason given in the skip marker ("" when the marker gives none).
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def extract_blocks(text: str, source: str) -> list[Block]:
    """Every fenced block of a Markdown document (indented ones, in lists, included)."""
    lines = text.split("\n")
    blocks = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            body.append(lines[end][indent:] if not lines[end][:indent].strip() else lines[end].lstrip())
            end += 1
        blocks.append(Block(source, index + 1, opening["lang"].lower(), "\n".join(body), _skip(lines, index)))
        index = end + 1
    return blocks


def _skip(lines: list[str], fence: int) -> str | None:
    before = fence - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    marker = _MARKER.search(lines[before]) if before >= 0 else None
    return None if marker is None else (marker["reason"] or "").strip()


def yaml_file_block(text: str, source: str) -> Block:
    """A whole YAML file as one block; `# docs-test: skip (reason)` in it leaves it out."""
    marker = _FILE_MARKER.search(text)
    return Block(source, 1, "yaml", text, None if marker is None else (marker["reason"] or "").strip())


# --- YAML: gateway configs ---------------------------------------------------------------------------


def yaml_problem(text: str) -> str | None:
    """Why a YAML block does not parse (None when it does; several documents are fine)."""
    try:
        list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        return f"not YAML: {' '.join(str(error).split())}"
    return None


def is_gateway_config(text: str) -> bool:
    """One YAML document, a mapping with at least one top-level key of the config schema."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return False
    return (
        len(documents) == 1
        and isinstance(documents[0], dict)
        and any(key in SCHEMA_KEYS for key in documents[0])
    )


def merge_fragment(fragment: dict[str, Any]) -> dict[str, Any]:
    """`FRAGMENT_BASE` with each top-level section of the fragment merged one level deep."""
    merged = dict(FRAGMENT_BASE)
    for key, value in fragment.items():
        base = merged.get(key)
        merged[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    return merged


def check_config_text(text: str, *, first_line: int = 1) -> list[str]:
    """What the gateway's loader says of a config block whose first line is `first_line` of its file
    (a fragment is merged onto the base first: its problems are named by key, not line)."""
    from gateway.config.issues import ConfigError
    from gateway.config.load import load_config

    data = yaml.safe_load(text)
    fragment = "version" not in data
    if fragment:
        text = yaml.safe_dump(merge_fragment(data), sort_keys=False)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gateway.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path, env={}, strict_env=False)
        except ConfigError as error:
            return [
                f"{'fragment' if fragment else first_line + issue.location.line - 1}: "
                + (f"{issue.path}: {issue.message}" if issue.path else issue.message)
                for issue in error.issues
            ]
    return []


# --- Shell: gateway commands and HTTP clients ------------------------------------------------------


def shell_commands(text: str, *, console: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(line offset in the block, argv) of every simple command: continuations joined, `$ ` prompts
    dropped (in a console block only prompted lines are commands), split at pipes, `;`, `&&`, `||`,
    `$( )`, redirections; leading `VAR=value` assignments dropped; here-documents' bodies skipped."""
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        start, line = index, lines[index]
        while line.endswith("\\") and index + 1 < len(lines):
            index += 1
            line = line[:-1] + " " + lines[index]
        index += 1
        heredoc = re.search(r"(?<!<)<<(?!<)-?\s*(['\"]?)(\w+)\1", line)
        if heredoc:  # its body is a file's text, not commands
            while index < len(lines) and lines[index].strip() != heredoc[2]:
                index += 1
            index += 1
            line = line[: heredoc.start()]
        stripped = line.strip()
        if stripped.startswith("$ "):
            stripped = stripped[2:]
        elif console:
            continue
        lexer = shlex.shlex(stripped, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote: not a command this test can read
            continue
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token and all(char in ";&|()<>" for char in token):
                if command:
                    yield start, command
                command = []
            elif command or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token):
                command.append(token)


def program(argv: list[str]) -> tuple[str, list[str]]:
    """The program a command runs and its arguments (`sudo`, `env`, `python -m gateway`, and
    `docker|podman|kubectl ... gateway SUBCOMMAND` seen through)."""
    while argv and argv[0] in ("sudo", "env", "exec", "time", "nohup"):
        argv = argv[1:]
    if argv and argv[0] in ("docker", "podman", "kubectl", "oc"):
        after = argv[argv.index("--") + 1 :] if "--" in argv else []  # kubectl exec POD -- gateway ...
        if after and Path(after[0]).name == "gateway":
            return "gateway", after[1:]
        names = subcommands(_parsers()[0])
        for index in range(1, len(argv) - 1):
            if Path(argv[index]).name == "gateway" and argv[index + 1] in names:
                return "gateway", argv[index + 1 :]
    if (
        len(argv) >= 3
        and re.fullmatch(r"python3?(\.\d+)?", Path(argv[0]).name)
        and argv[1:3] == ["-m", "gateway"]
    ):
        return "gateway", argv[3:]
    return (Path(argv[0]).name, argv[1:]) if argv else ("", [])


def _is_synopsis(args: list[str]) -> bool:
    return any("[" in a or "]" in a or "..." in a or re.fullmatch(r"[A-Z][A-Z_]+", a) for a in args)


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    from gateway.bench.cli import build_parser as bench_parser

    from gateway.cli import build_parser

    return build_parser(), bench_parser()


def check_gateway_args(args: list[str]) -> list[str]:
    """Whether `gateway ARGS` parses (as `gateway.cli.main` would dispatch it), without running it."""
    top, bench = _parsers()
    if _is_synopsis(args):
        return _check_synopsis(args, top, bench)
    parser, argv = (bench, args[1:]) if args[:1] == ["bench"] else (top, args)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return [errors.getvalue().strip().splitlines()[-1] if errors.getvalue().strip() else "refused"]
    return []


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _check_synopsis(
    args: list[str], top: argparse.ArgumentParser, bench: argparse.ArgumentParser
) -> list[str]:
    """A usage line: its subcommands exist and every option it names is an option of the last one."""
    parser, rest = top, [a.strip("[]") for a in args]
    parsers = [parser]
    while rest and subcommands(parser) and not rest[0].startswith("-"):
        word = rest.pop(0)
        if re.fullmatch(r"[A-Z][A-Z_]+", word):  # a placeholder (SCENARIO): options every choice takes
            parsers = list(subcommands(parser).values())
            break
        if parser is top and word == "bench":
            parser = bench
        elif word in subcommands(parser):
            parser = subcommands(parser)[word]
        else:
            return [f"{parser.prog}: no subcommand {word!r} (choices: {', '.join(subcommands(parser))})"]
        parsers = [parser]
    options = [word.split("=")[0] for word in rest if word.startswith("-") and word not in ("-", "--")]
    return [
        f"{each.prog}: no option {option}"
        for option in options
        for each in parsers
        if option not in each._option_string_actions
    ]


class Router:
    """The routes the app serves: Quart's url_map, the model API's plain-ASGI routes, the metrics path."""

    def __init__(self) -> None:
        from gateway.app import create_app
        from gateway.config.load import load_config
        from gateway.surfaces.model_api import ROUTES

        config = ROOT / "gateway.yaml"
        self._adapter = create_app(config, watch=False).fallback.url_map.bind("localhost")
        self._plain = {path: route.method for path, route in ROUTES.items()}
        self._plain[load_config(config, env={}, strict_env=False).telemetry.prometheus.path] = "GET"

    def problem(self, path: str, method: str, *, websocket: bool = False) -> str | None:
        from werkzeug.exceptions import MethodNotAllowed, NotFound
        from werkzeug.routing import WebsocketMismatch

        if path in self._plain:
            allowed = self._plain[path]
            if websocket:
                return f"{path}: not a WebSocket route"
            return None if method in (allowed, "HEAD") else f"{method} {path}: the route takes {allowed}"
        try:
            self._adapter.match(path, method=method, websocket=websocket)
        except WebsocketMismatch:
            return f"{path}: " + ("not a WebSocket route" if websocket else "a WebSocket route (ws://)")
        except MethodNotAllowed as error:
            return f"{method} {path}: the route takes {', '.join(sorted(error.valid_methods or []))}"
        except NotFound:
            return f"{path}: no such route"
        return None


_PLACEHOLDER = re.compile(r"\{[^}/]*\}|<[^>/]*>|\$\{[^}/]*\}|\$\w+|:\w+(?=/|$)")


def _urls(args: list[str]) -> Iterator[tuple[str, str, str, int | None, str]]:
    """(the URL as written, scheme, host, port, path) of each URL-like argument."""
    for arg in args:
        text = arg
        if re.match(r"^\$\{?\w+\}?/", text):  # $GATEWAY_URL/v1/models
            variable, _, path = text.partition("/")
            yield arg, "", variable, None, "/" + path.split("?")[0].split("#")[0]
            continue
        if re.match(r"^:\d+(/|$)", text):  # httpie: localhost
            text = "localhost" + text
        if "://" not in text:
            if not re.match(r"^(\[[0-9a-f:]+\]|[\w.-]+):\d+(/|$)", text):
                continue
            text = "http://" + text
        parts = urlsplit(text)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        try:
            port = parts.port
        except ValueError:
            port = None
        yield arg, parts.scheme, host, port, parts.path or "/"


def _method(program_name: str, args: list[str]) -> str:
    if program_name == "websocat":
        return "GET"
    if program_name in ("http", "https"):
        verbs = [a for a in args if re.fullmatch(r"GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS", a)]
        return verbs[0] if verbs else "GET"
    for index, arg in enumerate(args):
        if arg in ("-X", "--request") and index + 1 < len(args):
            return args[index + 1].upper()
        if arg.startswith("-X") and len(arg) > 2:
            return arg[2:].upper()
    if any(a in ("-I", "--head") for a in args):
        return "HEAD"
    data = ("-d", "--data", "--data-raw", "--data-binary", "--data-urlencode", "--json", "-F", "--form")
    return "POST" if any(a in data or a.startswith(("--data", "--json")) for a in args) else "GET"


def check_http_command(
    program_name: str, args: list[str], router: Router, ports: frozenset[int] = frozenset()
) -> list[str]:
    """Each URL to the gateway names a served route (with the method used); a local one uses 8080
    (or a port the block starts the gateway on, `ports`). A local URL on another port whose path the
    gateway does not serve is another service's (Prometheus on 9090, say), and not checked."""
    problems = []
    method = _method(program_name, args)
    for written, scheme, host, port, path in _urls(args):
        if not (host in LOCAL_HOSTS or host.startswith("$") or "gateway" in host):
            continue
        websocket = scheme in ("ws", "wss")
        problem = router.problem(_PLACEHOLDER.sub("x", path), method, websocket=websocket)
        if host in LOCAL_HOSTS and port not in {DEFAULT_PORT, *ports}:
            if problem and problem.endswith("no such route"):
                continue
            problems.append(
                f"{written}: a local gateway URL uses the default port {DEFAULT_PORT} (if this is another "
                "service, say so with a docs-test skip marker)"
            )
        if problem:
            problems.append(f"{written}: {problem}")
    return problems


def check_shell_block(text: str, router: Router, *, console: bool = False, first_line: int = 1) -> list[str]:
    """Every `gateway` command and every HTTP client call of a shell block (whose first line is
    `first_line` of its file)."""
    problems = []
    commands = [(offset, *program(argv)) for offset, argv in shell_commands(text, console=console)]
    ports = frozenset(
        int(args[i + 1])
        for _, name, args in commands
        if name == "gateway" and args[:1] == ["serve"]
        for i in range(len(args) - 1)
        if args[i] == "--port" and args[i + 1].isdigit()
    )
    for offset, name, args in commands:
        line = first_line + offset
        if name == "gateway":
            problems += [f"{line}: gateway {' '.join(args)}: {p}" for p in check_gateway_args(args)]
        elif name in HTTP_CLIENTS:
            problems += [f"{line}: {p}" for p in check_http_command(name, args, router, ports)]
    return problems


def inline_commands(text: str) -> list[tuple[int, list[str]]]:
    """(line, arguments) of every code span in the prose that reads `gateway SUBCOMMAND ...`."""
    found = []
    prose = _prose(text, keep_spans=True)
    for span in re.finditer(r"`gateway ([a-z][^`\n]*)`", prose):
        try:
            args = shlex.split(span[1])
        except ValueError:
            continue
        found.append((prose.count("\n", 0, span.start()) + 1, args))
    return found


def check_inline_commands(text: str) -> list[str]:
    """Inline `gateway ...` spans are often partial (`gateway bench`), so they are read as synopses:
    their subcommands and options exist."""
    top, bench = _parsers()
    return [
        f"{line}: gateway {' '.join(args)}: {problem}"
        for line, args in inline_commands(text)
        for problem in _check_synopsis(args, top, bench)
    ]


# --- Markdown links ---------------------------------------------------------------------------------

_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
#: A reference definition (`[name]: path`) and an HTML link or image (`<a href>`, `<img src>`).
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(?P<target>[^\s>]+)", re.MULTILINE)
_HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"(?P<target>[^\"]+)\"")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


def _prose(text: str, *, keep_spans: bool = False) -> str:
    """The document with its fenced blocks blanked (line numbers kept) and code spans emptied."""
    lines = text.split("\n")
    for block in extract_blocks(text, ""):
        end = block.line + block.text.count("\n") + 1
        for number in range(block.line - 1, min(end + 1, len(lines))):
            lines[number] = ""
    prose = "\n".join(lines)
    return prose if keep_spans else re.sub(r"`[^`\n]*`", "``", prose)


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading (before de-duplication)."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link: its text
    title = title.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    lines = text.split("\n")
    for block in extract_blocks(text, ""):  # a `# comment` in a shell block is no heading
        for number in range(block.line - 1, block.line + block.text.count("\n") + 1):
            lines[number] = ""
    for line in lines:
        heading = _HEADING.match(line)
        if heading:
            slug = github_slug(heading["title"])
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    found |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return found


def check_links(text: str, source: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of a Markdown document names a file of the repository (and a heading)."""
    problems = []
    prose = _prose(text)
    links = [*_LINK.finditer(prose), *_LINK_DEFINITION.finditer(prose), *_HTML_LINK.finditer(prose)]
    for link in sorted(links, key=lambda found: found.start()):
        target = link["target"]
        line = prose.count("\n", 0, link.start()) + 1
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (source.parent / file_part).resolve() if file_part else source.resolve()
        if file_part and not path.is_relative_to(root.resolve()):
            problems.append(f"{line}: {target}: outside the repository")
        elif file_part and not path.exists():
            problems.append(f"{line}: {target}: no such file")
        elif anchor and path.suffix == ".md":
            text_there = text if not file_part else path.read_text(encoding="utf-8")
            if anchor not in anchors(text_there):
                problems.append(f"{line}: {target}: no heading with the anchor #{anchor}")
    spans = _prose(text, keep_spans=True)
    for span in re.finditer(r"`(\.\./[^`\s<>*]+)`", spans):  # a path climbing out of the document's folder
        line = spans.count("\n", 0, span.start()) + 1
        path = (source.parent / span[1]).resolve()
        if not path.is_relative_to(root.resolve()) or not path.exists():
            problems.append(f"{line}: `{span[1]}`: no such file in the repository")
    return problems


# --- what is checked ---------------------------------------------------------------------------------


def markdown_files(root: Path = ROOT) -> list[Path]:
    patterns = ("README.md", "RELIABILITY.md", "PERFORMANCE.md", "docs/**/*.md", "examples/**/*.md")
    return sorted({path for pattern in patterns for path in root.glob(pattern)})


def example_yaml_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for pattern in ("examples/**/*.yaml", "examples/**/*.yml") for p in root.glob(pattern))


def relative(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root).as_posix()


def all_blocks(root: Path = ROOT) -> Iterable[Block]:
    for path in markdown_files(root):
        yield from extract_blocks(path.read_text(encoding="utf-8"), relative(path, root))


def skip_problem(block: Block) -> str | None:
    return None if block.skip is None or block.skip else "a docs-test skip marker must give its reason"
