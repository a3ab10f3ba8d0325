"""Numbers in client requests: every integer is type-checked and bounded at parse time, so whatever a
parser accepts encodes for either backend protocol (issue 15, defect 4: `max_tokens: 1e20` crossing
protocols crashed the encoder with a 500)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import FieldError
from gateway.protocol._fields import INT32_MAX, INT64_MAX, INT64_MIN, int_value
from gateway.protocol.anthropic import messages_request_to_body, parse_messages_request
from gateway.protocol.openai import chat_request_to_body, parse_chat_request
from gateway.protocol.openai_legacy import (
    completion_request_to_body,
    parse_completion_request,
    parse_embedding_request,
)

USER = [{"role": "user", "content": "hi"}]

#: What a JSON parser can hand a parser where a number belongs: orjson reads integers past 64 bits
#: (and any exponent) as floats.
NUMBERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e20, 2.0**64, -(2.0**63), 2.0**31, 2**31, 2**31 - 1, 0, -1, 8.0, 1.5]),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _encodes(body: dict[str, Any]) -> None:
    orjson.dumps(body)  # raises on an integer past 64 bits: what the 500 was


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "expected"),
    [
        (5, 1, INT32_MAX, 5),
        (INT32_MAX, 1, INT32_MAX, INT32_MAX),
        (INT64_MIN, INT64_MIN, INT64_MAX, INT64_MIN),
        (0, 0, 20, 0),
    ],
)
def test_int_value_accepts_integers_in_range(value: Any, minimum: int, maximum: int, expected: int) -> None:
    assert int_value(value, "f", minimum, maximum) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (1e20, "must be a positive integer (at most 2147483647), got 1e+20"),
        (2.0**64, "got 1.8446744073709552e+19"),
        (2**31, "got 2147483648"),
        (0, "got 0"),
        (8.0, "no decimal point or exponent"),
        (8.5, "no decimal point or exponent"),
        (True, "not a boolean"),
        ("8", "not a string"),
    ],
)
def test_int_value_refuses_with_the_field_path(value: Any, says: str) -> None:
    with pytest.raises(FieldError) as caught:
        int_value(value, "thinking.budget_tokens", 1, INT32_MAX)
    assert caught.value.field == "thinking.budget_tokens"
    assert says in caught.value.detail


@_SETTINGS
@given(max_tokens=NUMBERS, seed=NUMBERS, temperature=NUMBERS, n=NUMBERS)
def test_what_an_openai_parse_accepts_encodes_for_both_backends(
    max_tokens: Any, seed: Any, temperature: Any, n: Any
) -> None:
    body = {"model": "m", "messages": USER, "max_tokens": max_tokens, "seed": seed}
    body |= {"temperature": temperature, "n": n}
    try:
        request = parse_chat_request(body)
    except FieldError:
        return
    assert request.max_tokens is None or 1 <= request.max_tokens <= INT32_MAX
    _encodes(chat_request_to_body(request, "upstream"))
    _encodes(messages_request_to_body(request, "upstream"))


@_SETTINGS
@given(max_tokens=NUMBERS, top_k=NUMBERS, budget=NUMBERS, top_p=NUMBERS)
def test_what_an_anthropic_parse_accepts_encodes_for_both_backends(
    max_tokens: Any, top_k: Any, budget: Any, top_p: Any
) -> None:
    body = {"model": "m", "messages": USER, "max_tokens": max_tokens, "top_k": top_k, "top_p": top_p}
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    try:
        request = parse_messages_request(body)
    except FieldError:
        return
    assert request.max_tokens is not None and 1 <= request.max_tokens <= INT32_MAX
    _encodes(chat_request_to_body(request, "upstream"))
    _encodes(messages_request_to_body(request, "upstream"))


@_SETTINGS
@given(max_tokens=NUMBERS, token=NUMBERS, dimensions=NUMBERS)
def test_legacy_endpoints_bound_their_integers(max_tokens: Any, token: Any, dimensions: Any) -> None:
    try:
        request = parse_completion_request({"model": "m", "prompt": [1, token], "max_tokens": max_tokens})
    except FieldError:
        pass
    else:
        assert type(token) is int and 0 <= token < 2**32
        _encodes(completion_request_to_body(request, "upstream"))
    try:
        embedding = parse_embedding_request({"model": "m", "input": "hi", "dimensions": dimensions})
    except FieldError as error:
        assert error.field == "dimensions"
    else:
        assert embedding.dimensions is None or 1 <= embedding.dimensions <= 65536


@pytest.mark.parametrize("token", ["²", "٣", "-1", "1.5", "99999999999", "4294967296", ""])
def test_logit_bias_keys_must_be_ascii_token_ids(token: str) -> None:
    body = {"model": "m", "messages": USER, "logit_bias": {token: 1}}
    with pytest.raises(FieldError) as caught:
        parse_chat_request(body)
    assert caught.value.field == f"logit_bias.{token}"
