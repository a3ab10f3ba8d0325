"""Embeddings from Google's text embedding models on Vertex AI, through the model's `:predict` method
(Vertex AI has no `batchEmbedContents`): `{"instances": [{"content": text}, ...], "parameters":
{"outputDimensionality": n}}` in, `{"predictions": [{"embeddings": {"values": [...], "statistics":
{"token_count": n}}}, ...]}` out, one prediction per instance, in order.

`text-embedding-*` and `text-multilingual-embedding-*` models take up to 250 texts a request;
`gemini-embedding-*` models one, so their inputs go one request each. Token-id inputs are refused:
these models embed text.
"""

from __future__ import annotations

import struct
from typing import Any

from gateway.protocol.canonical import EmbeddingRequest, UpstreamProtocolError
from gateway.protocol.gemini import GeminiRefusal

__all__ = ["VertexEmbedding", "parse_predict_response", "predict_bodies"]

#: One vector (little-endian float32 bytes) and its input's token count.
VertexEmbedding = tuple[bytes, int]

_MOST_INSTANCES = 250


def predict_bodies(req: EmbeddingRequest, model: str) -> list[dict[str, Any]]:
    """The `:predict` bodies for `req`, their instances in the order of the inputs; raises
    `GeminiRefusal`."""
    value = req.input
    texts: list[Any] = [value] if isinstance(value, str) else list(value)
    if not texts or not all(isinstance(text, str) for text in texts):
        raise GeminiRefusal("input", "Vertex AI's embedding models take text only, not token ids")
    per_request = 1 if model.startswith("gemini-embedding") else _MOST_INSTANCES
    bodies: list[dict[str, Any]] = []
    for start in range(0, len(texts), per_request):
        body: dict[str, Any] = {
            "instances": [{"content": text} for text in texts[start : start + per_request]]
        }
        if req.dimensions is not None:
            body["parameters"] = {"outputDimensionality": req.dimensions}
        bodies.append(body)
    return bodies


def parse_predict_response(body: Any, count: int) -> list[VertexEmbedding]:
    """The `count` vectors and token counts of one `:predict` answer."""
    try:
        predictions = body["predictions"]
        if not isinstance(predictions, list) or len(predictions) != count:
            raise UpstreamProtocolError(
                f"the backend returned {len(predictions)} embeddings for {count} inputs"
            )
        parts = []
        for prediction in predictions:
            embeddings = prediction["embeddings"]
            values = embeddings["values"]
            tokens = (embeddings.get("statistics") or {}).get("token_count", 0)
            if not isinstance(values, list) or not values or isinstance(tokens, bool):
                raise TypeError("no values")
            parts.append((struct.pack(f"<{len(values)}f", *values), int(tokens)))
    except (KeyError, TypeError, ValueError, AttributeError, struct.error) as error:
        raise UpstreamProtocolError(
            f"malformed Vertex AI embeddings from the backend ({type(error).__name__}: {error})"
        ) from None
    return parts
