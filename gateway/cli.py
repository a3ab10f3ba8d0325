"""The `gateway` command: serve, init, check, schema, prices, key, model, bench."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config.issues import ConfigError, ConfigIssue, Location

if TYPE_CHECKING:
    from gateway.config.model import Config

__all__ = ["main"]

DEFAULT_CONFIG = "gateway.yaml"


def _check(args: argparse.Namespace) -> int:
    from gateway.auth import exposure_issue

    failed = 0
    for name in args.files or [DEFAULT_CONFIG]:
        try:
            config = _load_for_check(name, strict_env=not args.no_env)
        except ConfigError as error:
            failed += 1
            if args.format == "json":
                print(
                    json.dumps({"file": name, "valid": False, "errors": [i.as_dict() for i in error.issues]})
                )
            else:
                for issue in error.issues:
                    print(issue, file=sys.stderr)
                print(f"{name}: {len(error.issues)} error(s)", file=sys.stderr)
            continue
        warnings = _warnings(config)
        exposure = exposure_issue(config, config.server.host)
        if exposure:
            warnings.append(f"server.host: {exposure}")
        if args.format == "json":
            print(json.dumps({"file": name, "valid": True, "version": config.version, "warnings": warnings}))
        else:
            for warning in warnings:
                print(f"{name}: warning: {warning}", file=sys.stderr)
            models = len(config.models)
            print(
                f"{name}: valid (version {config.version}, "
                f"{len(config.backends)} backend(s), {models} model(s))"
            )
    return 1 if failed else 0


def _load_for_check(name: str, *, strict_env: bool) -> Config:
    from gateway.config.load import load_config

    try:
        return load_config(name, strict_env=strict_env)
    except ConfigError:
        raise
    except Exception as unexpected:  # a loader bug is still a located failure, not a traceback
        message = f"the config could not be loaded ({type(unexpected).__name__}: {unexpected})"
        raise ConfigError([ConfigIssue(name, Location(1, 1), "", message)]) from unexpected


def _warnings(config: object) -> list[str]:
    from gateway.config.model import Config

    assert isinstance(config, Config)
    found = []
    if config.unset_env:
        found.append("unset environment variables (checked as empty): " + ", ".join(sorted(config.unset_env)))
    enabled = {b.name for b in config.backends if b.enabled}
    for model in config.models:
        if not any(t.backend in enabled for t in model.chain):
            reasons = "; ".join(
                f"{b.name}: {b.disabled_reason}"
                for b in config.backends
                if b.name in {t.backend for t in model.chain}
            )
            found.append(f"models.{model.name}: no enabled target, clients get 503 ({reasons})")
    found.extend(_timeout_warnings(config))
    from gateway.limits import per_worker_warning

    per_worker = per_worker_warning(config, config.server.workers)
    if per_worker:
        found.append(per_worker)
    from gateway.cache import per_worker_cache_warning

    per_worker = per_worker_cache_warning(config, config.server.workers)
    if per_worker:
        found.append(per_worker)
    return found


def _timeout_warnings(config: Config) -> list[str]:
    """A per-attempt limit longer than the whole request's: the attempt is cut by `total` first, so a
    backend that hangs takes the whole budget and the chain never fails over."""
    found = []
    for kind in ("chat", "completions", "embeddings"):
        tier = config.timeouts.for_kind(kind)  # type: ignore[arg-type]
        for name in ("first_byte", "connect"):
            seconds = getattr(tier, name)
            if seconds > tier.total:
                found.append(
                    f"timeouts.{kind}.{name} ({seconds:g} s) is longer than timeouts.{kind}.total "
                    f"({tier.total:g} s): a backend that hangs uses the whole request's time and the "
                    f"chain never fails over; set {name} below total"
                )
    return found


def _schema(_args: argparse.Namespace) -> int:
    from gateway.config.schema import SCHEMA_PATH

    sys.stdout.write(SCHEMA_PATH.read_text(encoding="utf-8"))
    return 0


def _prices(args: argparse.Namespace) -> int:
    from gateway.pricing.report import format_report, price_report

    config = None
    if args.config is not None:
        try:
            # Prices need no secrets: unset variables read as empty, as `gateway check --no-env`.
            config = _load_for_check(str(args.config), strict_env=False)
        except ConfigError as error:
            for issue in error.issues:
                print(issue, file=sys.stderr)
            return 1
    report = price_report(config)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        sys.stdout.write(format_report(report))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import serve
    from gateway.starter import StarterError, embedded_config

    config = args.config
    if config is None:
        config = Path(DEFAULT_CONFIG)
        if not config.exists():
            try:
                config, made = embedded_config()
            except StarterError as error:
                print(f"gateway: not starting: {error}", file=sys.stderr)
                return 1
            print(
                f"gateway: no {DEFAULT_CONFIG} in {Path.cwd()}: serving the embedded defaults from "
                f"{config}{' (written now)' if made else ''}; the local model and the audit database "
                f"live in {config.parent}. `gateway init` writes a {DEFAULT_CONFIG} here to edit.",
                file=sys.stderr,
            )
    return serve(config, host=args.host, port=args.port, workers=args.workers, debug=args.debug)


def _init(args: argparse.Namespace) -> int:
    from gateway.starter import StarterError, write_starter

    try:
        written = write_starter(args.directory, force=args.force)
    except StarterError as error:
        print(f"gateway init: {error}", file=sys.stderr)
        return 1
    config = written[0]
    print(f"wrote {config} (and its schema, {written[1].name}, for editors)")
    if args.directory.resolve() == Path.cwd().resolve():
        print("next: edit it, `gateway check`, then `gateway serve` (both read ./gateway.yaml)")
    else:
        shown = args.directory / config.name
        print(f"next: edit it, `gateway check {shown}`, then `gateway serve --config {shown}`")
    return 0


def _key_hash(args: argparse.Namespace) -> int:
    from gateway.auth import key_sha256

    key = args.key if args.key is not None else sys.stdin.readline().rstrip("\n")
    if not key:
        print("gateway key hash: no key given", file=sys.stderr)
        return 2
    print(key_sha256(key))
    return 0


def _key_new(args: argparse.Namespace) -> int:
    """The key goes to standard output alone (to copy or pipe into a secret store), the entry to add to
    gateway.yaml to standard error: the file holds only the hash, never the key."""
    import re

    from gateway.auth import generate_key

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", args.name):
        print(
            f"gateway key new: {args.name!r} is not a usable name: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 64 characters",
            file=sys.stderr,
        )
        return 2
    key, digest = generate_key()
    section = "admin_keys" if args.admin else "client_keys"
    print(key)
    print(
        f"\n# The key above is shown once. Add this under auth.{section} in gateway.yaml:\n"
        f"    - name: {args.name}\n      key_sha256: {digest}",
        file=sys.stderr,
    )
    return 0


def _model_create(args: argparse.Namespace) -> int:
    from gateway.modelgen.cli import run_create

    return run_create(args)


def _usage(parser: argparse.ArgumentParser, example: str) -> Callable[[argparse.Namespace], int]:
    """A command group named alone: what it can do, with an example, instead of argparse's
    "the following arguments are required" about an internal name."""

    def handler(_args: argparse.Namespace) -> int:
        print(f"{parser.prog}: say what to do, for example:\n  {example}", file=sys.stderr)
        print(f"(`{parser.prog} --help` lists every command)", file=sys.stderr)
        return 2

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="A declarative, config-driven LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config",
        "-c",
        type=Path,
        help="config file (default: ./gateway.yaml; if there is none, the embedded defaults, kept in the "
        "per-user data directory: $GATEWAY_DATA_DIR, else $XDG_DATA_HOME/gateway or ~/.local/share/gateway)",
    )
    serve.add_argument("--host", help="address to bind (overrides server.host for this run)")
    serve.add_argument("--port", type=int, help="port to bind (overrides server.port; 0 picks a free one)")
    serve.add_argument("--workers", type=int, help="worker processes (overrides server.workers)")
    serve.add_argument(
        "--debug", action="store_true", help="show the traceback of a failed start (one line without)"
    )
    serve.set_defaults(handler=_serve)

    init = commands.add_parser(
        "init",
        help="write a commented starter gateway.yaml (and its schema) to edit",
        description="Write DIR/gateway.yaml: the embedded defaults with the next steps (client keys, an "
        "OpenAI-compatible backend, PostgreSQL) commented out, and DIR/gateway.schema.json for editors. "
        "An existing gateway.yaml is kept unless --force.",
    )
    init.add_argument("directory", nargs="?", type=Path, default=Path(), help="where (default: here)")
    init.add_argument("--force", action="store_true", help="replace an existing gateway.yaml")
    init.set_defaults(handler=_init)

    check = commands.add_parser("check", help="validate config files; exit 1 if any is invalid")
    check.add_argument("files", nargs="*", help="files to check (default: gateway.yaml)")
    check.add_argument(
        "--no-env",
        action="store_true",
        help="treat unset ${VAR} references as empty instead of as errors (for CI without secrets)",
    )
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.set_defaults(handler=_check)

    schema = commands.add_parser("schema", help="print the JSON Schema of gateway.yaml")
    schema.set_defaults(handler=_schema)

    prices = commands.add_parser(
        "prices",
        help="print the price table shipped with the gateway, and a config's effective prices",
        description="Print the prices (USD per million tokens) the gateway ships, with their date, and "
        "with --config each backend's effective prices: its own `prices` (marked *) over the shipped "
        "table.",
    )
    prices.add_argument("--config", "-c", type=Path, help="also show this config's effective prices")
    prices.add_argument("--json", action="store_true", help="print JSON instead of tables")
    prices.set_defaults(handler=_prices)

    key = commands.add_parser("key", help="API key helpers")
    key_commands = key.add_subparsers(dest="key_command", metavar="{hash,new}")
    key.set_defaults(
        handler=_usage(key, "gateway key new NAME  makes a key and prints its gateway.yaml entry")
    )
    key_hash = key_commands.add_parser(
        "hash", help="print a key's SHA-256, for key_sha256 (reads stdin if no KEY)"
    )
    key_hash.add_argument("key", nargs="?")
    key_hash.set_defaults(handler=_key_hash)
    key_new = key_commands.add_parser(
        "new",
        help="make a new random key: prints the key once and the gateway.yaml entry holding its hash",
    )
    key_new.add_argument("name", help="the key's name (audit records and limits use it)")
    key_new.add_argument("--admin", action="store_true", help="an admin key (auth.admin_keys)")
    key_new.set_defaults(handler=_key_new)

    from gateway.modelgen.cli import add_create_arguments

    model = commands.add_parser("model", help="local model helpers")
    model_commands = model.add_subparsers(dest="model_command", metavar="{create}")
    model.set_defaults(
        handler=_usage(model, "gateway model create PATH --preset tiny  generates a local model to serve")
    )
    model_create = model_commands.add_parser(
        "create",
        help="generate a random-weight model with the shapes of a real one (mlx_lm.load reads it offline)",
        description="Write a model directory: a BPE tokenizer trained locally and random weights in the "
        "exact shapes of the chosen size tier. The text is gibberish; the compute per token is real. "
        "Exit 1 if it would not fit in memory or on disk.",
    )
    add_create_arguments(model_create)
    model_create.set_defaults(handler=_model_create)

    # Listed here for `gateway --help`; `main` hands everything after `bench` to bench.cli.
    bench = commands.add_parser(
        "bench", help="run a benchmark scenario (gateway bench --help)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=lambda args: _bench(args.bench_args))
    return parser


def _bench(argv: list[str]) -> int:
    from gateway.bench.cli import main as bench_main

    return bench_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(list(argv[1:]))
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
