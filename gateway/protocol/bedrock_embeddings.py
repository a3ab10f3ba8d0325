"""Embeddings from Bedrock's Amazon Titan text embedding models, through InvokeModel
(`POST /model/{modelId}/invoke`, the model's own body: Converse has no embeddings): one request per
input text, `{"inputText": ..., "dimensions": ...}` in, `{"embedding": [...], "inputTextTokenCount":
n}` out. `dimensions` goes as sent (Titan v2 takes 256, 512 or 1024; v1 takes none, and says so).
Token-id inputs are refused: Titan takes text.
"""

from __future__ import annotations

import struct
from typing import Any

from gateway.protocol.bedrock import Untranslatable
from gateway.protocol.canonical import EmbeddingRequest, EmbeddingResponse, UpstreamProtocolError, Usage

__all__ = ["TitanEmbedding", "embedding_response", "parse_titan_response", "titan_request_bodies"]

TitanEmbedding = tuple[bytes, int]


def titan_request_bodies(req: EmbeddingRequest) -> list[dict[str, Any]]:
    """One InvokeModel body per input text, in the order of the inputs."""
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not all(isinstance(text, str) for text in texts):
        raise Untranslatable("input", "token ids: Titan embedding models take text")
    bodies: list[dict[str, Any]] = []
    for text in texts:
        body: dict[str, Any] = {"inputText": text}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        bodies.append(body)
    return bodies


def parse_titan_response(body: Any) -> TitanEmbedding:
    """The vector (little-endian float32 bytes) and the input's token count of one answer."""
    vector = body.get("embedding") if isinstance(body, dict) else None
    tokens = body.get("inputTextTokenCount") if isinstance(body, dict) else None
    if not isinstance(vector, list) or not vector or type(tokens) is not int:
        raise UpstreamProtocolError(f"malformed Titan embedding answer from the backend: {str(body)[:200]}")
    try:
        return struct.pack(f"<{len(vector)}f", *vector), tokens
    except struct.error as error:
        raise UpstreamProtocolError(f"malformed Titan embedding vector ({error})") from None


def embedding_response(parts: list[TitanEmbedding], req: EmbeddingRequest) -> EmbeddingResponse:
    sizes = {len(vector) for vector, _ in parts}
    if len(sizes) != 1:
        raise UpstreamProtocolError("the backend's embedding vectors differ in size")
    return EmbeddingResponse(
        vectors=tuple(vector for vector, _ in parts),
        dimensions=sizes.pop() // 4,
        usage=Usage(sum(tokens for _, tokens in parts)),
        encoding_format=req.encoding_format or "float",
    )
