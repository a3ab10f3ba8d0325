"""Traces: Logfire (OpenTelemetry) spans for requests, backend attempts, upstream HTTP calls and the
audit writer's database writes.

Tracing is on only when something receives the spans: a Logfire token (`LOGFIRE_TOKEN`), an OTLP
endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), or a Logfire instance
handed to `create_app` (tests). Otherwise no span is created anywhere: `span()` returns a shared
do-nothing object, and the request path pays one attribute read.

Spans carry metadata only (ids, names, statuses, counts, durations): never a body, prompt, answer,
tool argument or key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.model import LogfireConfig

if TYPE_CHECKING:
    from logfire import Logfire

__all__ = [
    "NO_SPAN",
    "configure_logfire",
    "current_trace_id",
    "enabled",
    "install",
    "replace",
    "span",
    "trace_id_of",
    "uninstall",
]

log = logging.getLogger("gateway.telemetry")

#: Environment variables that name a destination for spans.
TOKEN_ENV = "LOGFIRE_TOKEN"
OTLP_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class _NoSpan:
    """What `span()` yields when tracing is off: accepts the calls a span accepts and does nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def is_recording(self) -> bool:
        return False


NO_SPAN = _NoSpan()


class _Tracing:
    """The process's tracing switch. One per process: OpenTelemetry context is process-wide too."""

    __slots__ = ("logfire", "owned")

    def __init__(self) -> None:
        self.logfire: Logfire | None = None
        #: Whether `install` got an instance this module configured (and so must shut down).
        self.owned = False


_state = _Tracing()


def enabled() -> bool:
    """Whether spans are being made (something receives them)."""
    return _state.logfire is not None


def span(name: str, /, **attributes: Any) -> AbstractContextManager[Any]:
    """A span named `name` with these attributes, as a context manager yielding the span (with
    `set_attribute(key, value)` / `set_attributes(mapping)`). Nested spans become its children.

    When tracing is off this returns a shared no-op object: no span is created. Attribute values must
    be str, bool, int, float or lists of those; None values are left out. Never pass content (bodies,
    prompts, answers, keys).
    """
    instance = _state.logfire
    if instance is None:
        return NO_SPAN
    return instance.span(
        _escape(name), _span_name=name, **{k: v for k, v in attributes.items() if v is not None}
    )


def trace_id_of(active_span: Any) -> str | None:
    """The 32-hex-digit trace id of a span made by `span()` (None for the no-op span)."""
    if active_span is NO_SPAN:
        return None
    context = active_span.get_span_context()
    return f"{context.trace_id:032x}" if context is not None and context.trace_id else None


def current_trace_id() -> str | None:
    """The trace id of the span active in this context, if tracing is on and a span is active."""
    if _state.logfire is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.trace_id else None


def inject_context(headers: dict[str, str]) -> None:
    """Add `traceparent` (W3C trace context) for the active span to outgoing request headers."""
    from opentelemetry import propagate

    propagate.inject(headers)


def _escape(name: str) -> str:
    """A span name as a Logfire message template (which formats `{...}`)."""
    return name.replace("{", "{{").replace("}", "}}") if "{" in name or "}" in name else name


# -- configuration ----------------------------------------------------------------------------------


def destination(env: Mapping[str, str] | None = None) -> str | None:
    """Where spans would go per the environment: "logfire", "otlp", "logfire+otlp", or None."""
    env = os.environ if env is None else env
    to_logfire = bool(env.get(TOKEN_ENV))
    to_otlp = any(env.get(name) for name in OTLP_ENVS)
    if to_logfire and to_otlp:
        return "logfire+otlp"
    return "logfire" if to_logfire else "otlp" if to_otlp else None


def configure_logfire(config: LogfireConfig, env: Mapping[str, str] | None = None) -> Logfire | None:
    """A Logfire instance for `telemetry.logfire`, or None when tracing stays off (disabled in the
    config, or no token and no OTLP endpoint in the environment: nothing would receive the spans).

    The instance is local (`logfire.configure(local=True)`): it does not replace the process's
    global Logfire or OpenTelemetry providers. Logfire itself reads the token and the OTLP variables.
    """
    if not config.enabled or destination(env) is None:
        return None
    import logfire

    _attribute_spans_to_callers()
    return logfire.configure(
        local=True,
        send_to_logfire="if-token-present",
        service_name=config.service_name,
        service_version=_version(),
        environment=config.environment or None,
        console=False,
        metrics=False,
        inspect_arguments=False,
        # Spans hold metadata only (see the module docstring); scrubbing would also rewrite model
        # and backend names that happen to look like secrets.
        scrubbing=False,
    )


def install(instance: Logfire, *, owned: bool) -> None:
    """Make spans go to `instance` (at app startup). `owned`: this module configured it."""
    _attribute_spans_to_callers()
    _state.logfire, _state.owned = instance, owned


def uninstall(instance: Logfire | None = None) -> None:
    """Stop tracing (at app shutdown); flush and shut down an instance this module configured."""
    current = _state.logfire
    if current is None or (instance is not None and current is not instance):
        return
    replace(None, owned=False)()


def replace(instance: Logfire | None, *, owned: bool) -> Callable[[], None]:
    """Make spans go to `instance` from now on (None: stop tracing), as a reload that changes
    `telemetry.logfire` does. Answers the release of the instance replaced: it flushes its spans and
    shuts it down if this module configured it, which may wait on a collector (call it off the event
    loop). A span the old instance started ends on it."""
    if instance is not None:
        _attribute_spans_to_callers()
    previous, previous_owned = _state.logfire, _state.owned
    _state.logfire, _state.owned = instance, owned if instance is not None else False

    def release() -> None:
        if previous is None or previous is instance:
            return
        try:
            if previous_owned:
                previous.shutdown(timeout_millis=5000)
            else:
                previous.force_flush()
        except Exception:  # a collector that is down must not fail a shutdown or a reload
            log.warning("flushing spans failed", exc_info=True)

    return release


def _attribute_spans_to_callers() -> None:
    """Have Logfire record the code location of `span()`'s caller, not this package's."""
    import logfire

    add_prefix = getattr(logfire, "add_non_user_code_prefix", None)  # (logfire 4.x and later)
    if add_prefix is not None:
        add_prefix(Path(__file__).parent)


def _version() -> str:
    try:
        return metadata.version("gateway")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
