"""Local embeddings below the end-to-end level: one L2-normalised vector per input, the mean of the
model's final hidden states (checked against the model loaded apart), the same whether an input is
embedded alone, in a batch or beside other requests, and refusals that name the field."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.backends.mlx.backend import LocalModelBackend
from gateway.backends.mlx.embeddings import STEP_TOKENS
from gateway.backends.upstream import AttemptLimits, UpstreamCall, UpstreamFailure
from gateway.modelgen.presets import PRESETS
from gateway.protocol.canonical import EmbeddingResponse, Usage
from gateway.protocol.openai_legacy import parse_embedding_request
from tests.backends.mlx.conftest import limits
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

HIDDEN = PRESETS["tiny"].hidden_size
TEXTS = [
    "The sea at night.",
    "A lighthouse keeper counts the ships that pass his rock every evening, and writes each one down.",
    "Hi",
]
#: Longer than one step of the engine's batches: it runs in several, through a KV cache.
LONG = [(i * 37) % 4000 + 10 for i in range(STEP_TOKENS + 200)]
#: Float rounding: the same input computed in another batch shape, or in steps, differs by no more.
TOLERANCE = 1e-5


def embed_call(value: Any, **extra: Any) -> UpstreamCall:
    body = {"model": "tiny", "input": value, **extra}
    return UpstreamCall("embeddings", "openai", body, parse_embedding_request(body), False, "r", "tiny")


async def embed(local: LocalModelBackend, value: Any, **extra: Any) -> EmbeddingResponse:
    answer = await local.send(embed_call(value, **extra), "tiny", limits())
    assert type(answer) is EmbeddingResponse
    return answer


def matrix(answer: EmbeddingResponse) -> np.ndarray:
    return np.stack([np.frombuffer(v, dtype="<f4") for v in answer.vectors])


async def refusal(local: LocalModelBackend, value: Any, **extra: Any) -> UpstreamFailure:
    with pytest.raises(UpstreamFailure) as caught:
        await local.send(embed_call(value, **extra), "tiny", limits())
    return caught.value


def encode(local: LocalModelBackend, text: str) -> list[int]:
    assert local.engine is not None
    return list(local.engine.tokenizer.encode(text))


@pytest.fixture(scope="module")
def reference(tiny_model: Path, local: LocalModelBackend) -> Any:
    """The same model loaded apart (after the engine, which chose the BLAS): text → the mean of its final
    hidden states, normalised, in one forward pass of that input alone."""
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(tiny_model))

    def vector(tokens: list[int]) -> np.ndarray:
        hidden = model.model(mx.array([tokens])).astype(mx.float32)[0]
        mean = np.array(hidden.mean(axis=0))
        return mean / np.linalg.norm(mean)

    return vector


async def test_one_normalised_vector_per_input_with_the_tokenizer_count(local: LocalModelBackend) -> None:
    answer = await embed(local, TEXTS)
    vectors = matrix(answer)
    assert vectors.shape == (len(TEXTS), HIDDEN) and answer.dimensions == HIDDEN
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=TOLERANCE)
    assert answer.usage == Usage(prompt_tokens=sum(len(encode(local, t)) for t in TEXTS))
    assert answer.encoding_format == "float"
    assert (await embed(local, "x", encoding_format="base64")).encoding_format == "base64"


async def test_the_vectors_are_the_mean_of_the_final_hidden_states(
    local: LocalModelBackend, reference: Any
) -> None:
    answer = await embed(local, [*(encode(local, t) for t in TEXTS), LONG])
    expected = np.stack([reference(encode(local, t)) for t in TEXTS] + [reference(LONG)])
    assert np.allclose(matrix(answer), expected, atol=TOLERANCE)


async def test_the_same_input_gets_the_same_vector(local: LocalModelBackend) -> None:
    first, second = await embed(local, TEXTS[1]), await embed(local, TEXTS[1])
    assert first.vectors == second.vectors


async def test_a_batch_equals_its_inputs_embedded_alone(local: LocalModelBackend) -> None:
    inputs: list[Any] = [encode(local, t) for t in TEXTS] + [LONG]
    batch = matrix(await embed(local, inputs))
    alone = np.concatenate([matrix(await embed(local, tokens)) for tokens in inputs])
    assert np.allclose(batch, alone, atol=TOLERANCE)


async def test_concurrent_requests_get_their_own_vectors(local: LocalModelBackend) -> None:
    """Requests waiting together are computed in shared batches; each gets its own inputs' vectors."""
    inputs = [[text, TEXTS[i % 3]] for i, text in enumerate([*TEXTS, "one", "two more words", "three"])]
    together = await asyncio.gather(*(embed(local, pair) for pair in inputs))
    for pair, answer in zip(inputs, together, strict=True):
        alone = np.concatenate([matrix(await embed(local, text)) for text in pair])
        assert np.allclose(matrix(answer), alone, atol=TOLERANCE)
        assert answer.usage.prompt_tokens == sum(len(encode(local, t)) for t in pair)


async def test_token_ids_embed_as_their_text(local: LocalModelBackend) -> None:
    ids = [encode(local, t) for t in TEXTS[:2]]
    assert (await embed(local, ids[0])).vectors == (await embed(local, TEXTS[0])).vectors
    assert np.allclose(matrix(await embed(local, ids)), matrix(await embed(local, TEXTS[:2])), atol=TOLERANCE)


@pytest.mark.parametrize(
    ("value", "extra", "field", "says"),
    [
        ("hi", {"dimensions": HIDDEN // 2}, "dimensions", f"{HIDDEN} dimensions"),
        ([5, 4096], {}, "input[1]", "vocabulary size 4096"),
        ([[5], [6, 7, 99999]], {}, "input[1][2]", "vocabulary size 4096"),
        (["hi", TEXTS[1] * 500], {}, "input[1]", "at most 8192"),
        ([1] * 8193, {}, "input", "8193 tokens long"),
    ],
)
async def test_what_the_model_cannot_embed_is_refused_naming_the_field(
    local: LocalModelBackend, value: Any, extra: dict[str, Any], field: str, says: str
) -> None:
    failure = await refusal(local, value, **extra)
    assert (failure.kind, failure.param) == ("client_error", field)
    assert failure.detail.startswith(f"{field}: ") and says in failure.detail
    assert failure.status is None  # not an upstream's answer


async def test_dimensions_equal_to_the_hidden_size_are_accepted(local: LocalModelBackend) -> None:
    assert (await embed(local, "hi", dimensions=HIDDEN)).dimensions == HIDDEN


async def test_a_request_given_up_leaves_the_queue(local: LocalModelBackend) -> None:
    engine = local.engine
    assert engine is not None
    gone = AttemptLimits(connect=5, first_byte=0, deadline=0)  # no time at all: it times out at once
    with pytest.raises(UpstreamFailure) as caught:
        await local.send(embed_call(TEXTS), "tiny", gone)
    assert caught.value.kind == "timeout"
    await wait_for(lambda: engine.queued == 0 and engine.active == 0)
    assert (engine.queued, engine.active) == (0, 0)
    assert len((await embed(local, TEXTS)).vectors) == len(TEXTS)
