"""Structured output on local models: OpenAI `response_format` (`json_object`, `json_schema`) through
grammar-constrained decoding with llguidance.

The JSON schema is compiled to an llguidance grammar and checked before the request is queued (a
schema the model cannot follow is the client's error, a 400). Each sequence gets its own `LLMatcher`;
its logits processor, called by mlx-lm once per decode step, feeds the matcher the token sampled at the
previous step and masks every token the grammar does not allow next (their logits become -inf). Once
the JSON value is complete only end-of-sequence is allowed, so the answer finishes with "stop"; when
`max_tokens` runs out first it finishes with "length" and the text is a cut-off prefix (as OpenAI's).

The mask is applied with numpy and `mx.where`: llguidance's own `llguidance.mlx` helper uses a Metal
kernel, which the CPU build of mlx does not have.

llguidance's tokenizer (built from the model's fast tokenizer, ~30 ms for the tiny model, about a
second for a large vocabulary) is made once per loaded engine and kept beside it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from gateway.backends.upstream import UpstreamFailure

__all__ = ["GrammarProcessor", "grammar_tokenizer", "response_format_grammar"]

log = logging.getLogger("gateway.mlx")

#: Compact JSON: no free whitespace between tokens (it would only cost tokens).
_JSON_OPTIONS = {"whitespace_flexible": False}

_tokenizers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


def grammar_tokenizer(engine: Any) -> Any:
    """llguidance's tokenizer for `engine`'s model, built on first use and cached with the engine.
    Blocking (call it off the event loop)."""
    with _tokenizers_lock:
        found = _tokenizers.get(engine)
        if found is None:
            import llguidance.hf

            tokenizer = engine.tokenizer
            eos = sorted(tokenizer.eos_token_ids)
            found = llguidance.hf.from_tokenizer(tokenizer._tokenizer, eos_token=eos[0] if eos else None)
            _tokenizers[engine] = found
        return found


def _client_error(detail: str, param: str) -> UpstreamFailure:
    return UpstreamFailure("client_error", detail, param=param)


def response_format_grammar(response_format: Any) -> str | None:
    """The llguidance grammar for an OpenAI `response_format`, or None for plain text."""
    if not isinstance(response_format, Mapping):
        raise _client_error("response_format: must be an object", "response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise _client_error(
                "response_format.json_schema: must be an object with a schema", "response_format.json_schema"
            )
        schema = spec.get("schema", {})
        if not isinstance(schema, Mapping):
            raise _client_error(
                "response_format.json_schema.schema: must be a JSON schema object",
                "response_format.json_schema.schema",
            )
        schema = dict(schema)
    else:
        raise _client_error(
            f"response_format.type: {str(kind)[:40]!r} is not one of text, json_object, json_schema",
            "response_format.type",
        )
    return schema_grammar(schema)


def schema_grammar(schema: dict[str, Any]) -> str:
    """Compile `schema` to a grammar; an invalid or unsupported schema is a client error."""
    import jsonschema
    import llguidance

    param = "response_format.json_schema.schema"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        raise _client_error(f"{param}: not a valid JSON schema: {error.message}", param) from None
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)  # type: ignore[arg-type]
    except Exception as error:  # llguidance raises ValueError (and others) on what it cannot read
        raise _client_error(f"{param}: {error}", param) from None
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        raise _client_error(f"{param}: the local model cannot follow this schema: {problem}", param)
    return grammar


class GrammarProcessor:
    """A logits processor keeping one sequence inside a grammar (see the module's docstring)."""

    __slots__ = ("_eos", "_eos_only", "_first", "_matcher")

    def __init__(self, tokenizer: Any, grammar: str) -> None:
        import llguidance

        self._matcher = llguidance.LLMatcher(tokenizer, grammar)
        if self._matcher.is_error():  # checked before queueing: only an llguidance limit gets here
            raise _client_error(
                f"response_format: {self._matcher.get_error()}", "response_format.json_schema.schema"
            )
        self._eos = tokenizer.eos_token
        self._first = True
        self._eos_only: Any = None

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx
        import numpy as np

        matcher = self._matcher
        if self._first:  # tokens[-1] is the prompt's last token, not a sampled one
            self._first = False
        elif not matcher.is_stopped():
            token = int(tokens[-1].item())
            if not matcher.consume_token(token):
                log.warning("constrained decoding left its grammar: %s", matcher.get_error())
        width = logits.shape[-1]
        if matcher.is_stopped():
            # The value is complete and nothing may follow it (or the matcher failed): end the sequence.
            # While more may follow (a number's digits), the mask allows end-of-sequence beside them.
            if self._eos_only is None:
                self._eos_only = mx.arange(width) == self._eos
            mask = self._eos_only
        else:
            bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            if bits.shape[0] >= width:
                bits = bits[:width]
            else:
                bits = np.concatenate([bits, np.zeros(width - bits.shape[0], dtype=np.uint8)])
            mask = mx.array(bits.astype(np.bool_))
        return mx.where(mask, logits, mx.array(-mx.inf, dtype=logits.dtype))
