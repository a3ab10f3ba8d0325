"""Local inference through the real server: a generated tiny model served by the mlx backend, with
both SDKs, concurrency, cancellation, a full queue failing over, stop sequences, embeddings and
reloads."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import anthropic
import numpy as np
import openai
import pytest
import requests

from gateway.modelgen.presets import PRESETS
from gateway.testing import FakeOpenAI
from tests.conftest import service_missing, wait_until

MESSAGES = [{"role": "user", "content": "Tell me a story about the sea."}]


@pytest.fixture(scope="module")
def fallback() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(gateway_server_module, tiny_model: Path, fallback: FakeOpenAI):
    return gateway_server_module(
        f"""
backends:
  local: {{type: mlx, path: "{tiny_model}", max_batch_size: 16, max_queue: 64}}
  narrow: {{type: mlx, path: "{tiny_model}", batching: false, max_queue: 1}}
  uncached: {{type: mlx, path: "{tiny_model}", prompt_cache_size: 0}}
  cloud: {{type: openai_compatible, base_url: "{fallback.base_url}"}}
models:
  tiny: {{chain: [{{backend: local}}]}}
  narrow: {{chain: [{{backend: narrow}}]}}
  uncached: {{chain: [{{backend: uncached}}]}}
  narrow-or-cloud: {{chain: [{{backend: narrow}}, {{backend: cloud, model: gpt}}]}}
timeouts:
  chat: {{total: 120, first_byte: 60}}
"""
    )


def oai(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0)


def claude(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0)


def local_status(gateway, name: str) -> dict:
    backends = requests.get(
        gateway.url("/admin/api/backends"), headers=gateway.admin_headers, timeout=5
    ).json()["backends"]
    return next(b for b in backends if b["name"] == name)["local"]


def test_openai_sdk_non_stream_and_stream_agree(gateway) -> None:
    client = oai(gateway)
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, temperature=0)
    assert whole.choices[0].finish_reason in ("length", "stop")
    assert whole.usage.prompt_tokens > 5
    if whole.choices[0].finish_reason == "length":
        assert whole.usage.completion_tokens == 24
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_anthropic_sdk_non_stream_and_stream_agree(gateway) -> None:
    client = claude(gateway)
    whole = client.messages.create(
        model="tiny", max_tokens=20, messages=MESSAGES, extra_body={"temperature": 0}
    )
    assert whole.stop_reason in ("max_tokens", "end_turn")
    with client.messages.stream(
        model="tiny", max_tokens=20, messages=MESSAGES, extra_body={"temperature": 0}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == (whole.content[0].text if whole.content else "")
    assert final.usage.output_tokens == whole.usage.output_tokens
    count = client.messages.count_tokens(model="tiny", messages=MESSAGES)
    # The same prompt ran before (prompt cache): Anthropic counts cache reads apart from input_tokens.
    assert count.input_tokens == whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)
    assert count.input_tokens == final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)


def test_legacy_completions(gateway) -> None:
    client = oai(gateway)
    whole = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == whole.choices[0].text


@pytest.mark.parametrize("include_usage", [False, True])
def test_legacy_completion_stream_ends_with_done(gateway, include_usage: bool) -> None:
    """A local backend's stream is written by the gateway's own encoder (not relayed from an upstream):
    the last event of a /v1/completions stream is `data: [DONE]`, exactly once, after the finish (and
    usage) chunks. The SDK does not notice a missing `[DONE]`; clients that wait for it would hang."""
    body: dict = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 6, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with requests.post(gateway.url("/v1/completions"), json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith(b"data: ")]
    assert data[-1] == b"[DONE]" and data.count(b"[DONE]") == 1
    chunks = [json.loads(line) for line in data[:-1]]
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]
    assert len(finishes) == 1 and finishes[0] in ("length", "stop")
    assert (chunks[-1]["choices"] == [] and "usage" in chunks[-1]) is include_usage


def test_seed_makes_sampling_reproducible(gateway) -> None:
    client = oai(gateway)

    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=16, temperature=1.0, seed=seed
        )
        return reply.choices[0].message.content

    assert sample(7) == sample(7)


def test_sixteen_concurrent_requests_all_complete_with_their_token_counts(gateway) -> None:
    client = oai(gateway)
    results: dict[int, object] = {}

    def run(i: int) -> None:
        results[i] = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"Request number {i}."}],
            max_tokens=8 + i,
            temperature=0,
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 16
    for i, reply in results.items():
        choice = reply.choices[0]
        if choice.finish_reason == "length":
            assert reply.usage.completion_tokens == 8 + i
        else:
            assert reply.usage.completion_tokens <= 8 + i


def test_max_tokens_and_stop_sequences(gateway) -> None:
    client = oai(gateway)
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=40, temperature=0)
    text = reply.choices[0].message.content
    assert len(text) > 10
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=40, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert stop not in cut.choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=40, temperature=0, stop=[stop], stream=True
        )
        if c.choices
    )
    assert streamed == cut.choices[0].message.content


def test_client_disconnect_frees_the_slot(gateway) -> None:
    response = requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": "tiny", "messages": MESSAGES, "max_tokens": 4000, "stream": True, "ignore_eos": True},
        stream=True,
        timeout=30,
    )
    lines = response.iter_lines()
    next(line for line in lines if line.startswith(b"data:"))
    wait_until(lambda: local_status(gateway, "local")["active"] == 1, timeout=10)
    response.close()  # the client goes away mid-stream
    wait_until(lambda: local_status(gateway, "local")["active"] == 0, timeout=10)


def open_request(gateway, body: dict) -> socket.socket:
    """Send a request and leave it open without reading (a queued request has no headers yet)."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def test_full_queue_answers_429_and_the_chain_fails_over(gateway, fallback) -> None:
    long = {"model": "narrow", "messages": MESSAGES, "max_tokens": 4000, "stream": True, "ignore_eos": True}
    holders = []
    try:
        # `narrow` serves one request at a time and queues one more: two long streams fill it.
        holders.append(open_request(gateway, long))
        wait_until(lambda: local_status(gateway, "narrow")["active"] == 1, timeout=10)
        holders.append(open_request(gateway, long))
        wait_until(lambda: local_status(gateway, "narrow")["queued"] == 1, timeout=10)
        full = requests.post(
            gateway.url("/v1/chat/completions"),
            json={"model": "narrow", "messages": MESSAGES, "max_tokens": 5},
            timeout=30,
        )
        assert full.status_code == 429
        assert full.headers["retry-after"] == "1"
        assert "busy" in full.json()["detail"]
        moved = requests.post(
            gateway.url("/v1/chat/completions"),
            json={"model": "narrow-or-cloud", "messages": MESSAGES, "max_tokens": 5},
            timeout=30,
        )
        assert moved.status_code == 200
        assert moved.headers["x-gateway-backend"] == "cloud"
    finally:
        for sock in holders:
            sock.close()
    # Both clients went away: the running one leaves the batch and the queued one the queue.
    wait_until(lambda: local_status(gateway, "narrow")["active"] == 0, timeout=10)
    wait_until(lambda: local_status(gateway, "narrow")["queued"] == 0, timeout=10)


def test_shared_prefix_is_read_from_the_prompt_cache(gateway) -> None:
    """A second request sharing a long system prompt prefills only its own part, reports the cached
    tokens, and answers exactly as a backend without prompt caching does."""
    client = oai(gateway)
    system = {"role": "system", "content": "You are a careful assistant for a shipping company. " * 12}

    def ask(model: str, question: str):
        messages = [system, {"role": "user", "content": question}]
        return client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)

    first = ask("tiny", "Where is my parcel?")
    details = first.usage.prompt_tokens_details
    # Only the chat template's first tokens are shared with earlier tests' prompts.
    assert details is None or details.cached_tokens < 10
    second = ask("tiny", "When does the office open?")
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 100 < cached < second.usage.prompt_tokens
    reference = ask("uncached", "When does the office open?")
    assert reference.usage.prompt_tokens_details is None
    assert second.usage.prompt_tokens == reference.usage.prompt_tokens
    assert second.choices[0].message.content == reference.choices[0].message.content


EMBED_TEXTS = ["The sea at night.", "A lighthouse keeper counts the ships that pass his rock.", "Hi"]


def vectors(answer) -> np.ndarray:
    return np.array([item.embedding for item in answer.data], dtype=np.float32)


def test_openai_sdk_embeddings_from_the_local_model(gateway) -> None:
    client = oai(gateway)
    raw = client.embeddings.with_raw_response.create(model="tiny", input=EMBED_TEXTS)  # asks for base64
    batch = raw.parse()
    assert raw.headers["x-gateway-backend"] == "local"
    assert batch.model == "tiny" and [item.index for item in batch.data] == [0, 1, 2]
    matrix = vectors(batch)
    assert matrix.shape == (len(EMBED_TEXTS), PRESETS["tiny"].hidden_size)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    # JSON numbers read back as exactly the float32 values base64 carries.
    floats = client.embeddings.create(model="tiny", input=EMBED_TEXTS, encoding_format="float")
    assert vectors(floats).tobytes() == matrix.tobytes()
    assert vectors(client.embeddings.create(model="tiny", input=EMBED_TEXTS)).tobytes() == matrix.tobytes()
    alone = np.concatenate([vectors(client.embeddings.create(model="tiny", input=t)) for t in EMBED_TEXTS])
    assert np.allclose(alone, matrix, atol=1e-5)
    # The tokenizer's count: the one /v1/completions reports for the same text.
    completions = [client.completions.create(model="tiny", prompt=t, max_tokens=1) for t in EMBED_TEXTS]
    counted = sum(c.usage.prompt_tokens for c in completions)
    assert batch.usage.prompt_tokens == batch.usage.total_tokens == counted
    ids = client.embeddings.create(model="tiny", input=[[1, 2, 3], [4, 5]])
    assert len(vectors(ids)) == 2 and ids.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="tiny", input="hi", dimensions=64)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": "hi", "dimensions": 64}, "dimensions"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["hi", ""]}, "input[1]"),
        ({"input": [1, 5000]}, "input[1]"),
        ({"input": ["hi", [1]]}, "input[1]"),
    ],
)
def test_embedding_refusals_are_problems_naming_the_field(gateway, body: dict, field: str) -> None:
    response = requests.post(gateway.url("/v1/embeddings"), json={"model": "tiny", **body}, timeout=30)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["field"] == field and problem["error"]["param"] == field
    assert problem["detail"].startswith(f"{field}: ")
    assert problem["request_id"] == response.headers["x-request-id"]


def test_embedding_usage_reaches_the_audit_log(gateway) -> None:
    raw = oai(gateway).embeddings.with_raw_response.create(model="tiny", input=EMBED_TEXTS)
    usage = raw.parse().usage
    path = f"/admin/api/logs?request_id={raw.headers['x-request-id']}"
    records: list[dict] = []

    def recorded() -> bool:
        records[:] = gateway.admin("GET", path).json()["records"]
        return bool(records)

    wait_until(recorded, timeout=10, interval=0.1)
    record = records[0]
    assert (record["endpoint"], record["backend_type"], record["status"]) == ("embeddings", "mlx", "success")
    assert (record["prompt_tokens"], record["completion_tokens"]) == (usage.prompt_tokens, 0)


def test_model_swap_reloads_only_that_model(gateway_server, tiny_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_model, copy)
    text = f"""
backends:
  a: {{type: mlx, path: "{tiny_model}"}}
  b: {{type: mlx, path: "{tiny_model}"}}
models:
  a: {{chain: [{{backend: a}}]}}
  b: {{chain: [{{backend: b}}]}}
reload: {{debounce_ms: 50}}
"""
    gateway = gateway_server(text)
    before = {name: local_status(gateway, name)["engine_id"] for name in ("a", "b")}
    assert all(before.values())
    gateway.config_path.write_text(
        text.replace(f'b: {{type: mlx, path: "{tiny_model}"}}', f'b: {{type: mlx, path: "{copy}"}}')
    )
    wait_until(lambda: local_status(gateway, "b")["path"] == str(copy), timeout=30)
    after = {name: local_status(gateway, name)["engine_id"] for name in ("a", "b")}
    assert after["a"] == before["a"], "the unchanged model was reloaded"
    assert after["b"] != before["b"]
    history = requests.get(gateway.url("/admin/api/config"), headers=gateway.admin_headers, timeout=5).json()[
        "history"
    ]
    assert history[0]["rebuilt_backends"] == ["b"]


def test_blas_threads_apply_at_the_first_load_and_wait_for_a_restart_after(
    gateway_server, tiny_model: Path
) -> None:
    text = f"""
backends:
  a: {{type: mlx, path: "{tiny_model}"}}
models:
  a: {{chain: [{{backend: a}}]}}
local_models: {{blas_threads: 1}}
reload: {{debounce_ms: 50}}
"""
    gateway = gateway_server(text)
    blas = local_status(gateway, "a")["blas"]
    if not blas.startswith("OpenBLAS"):
        service_missing(f"mlx does not run on OpenBLAS here ({blas}); `apt-get install libopenblas0-pthread`")
    assert blas.endswith(", 1 thread)"), blas  # read back from OpenBLAS after setting it
    assert "1 thread)" in gateway.log()  # the startup log says it too
    # OpenBLAS's count is process-wide: changed under a loaded model, it waits (and says so).
    gateway.config_path.write_text(text.replace("blas_threads: 1", "blas_threads: 2"))
    wait_until(lambda: "blas_threads changed to 2 while local models are loaded" in gateway.log(), timeout=30)
    assert local_status(gateway, "a")["blas"] == blas
    # Greedy, so the answer cannot be an end-of-sequence token drawn first (sampling can draw one).
    answer = oai(gateway).chat.completions.create(model="a", messages=MESSAGES, max_tokens=4, temperature=0)
    assert answer.usage.completion_tokens >= 1


def test_shipped_config_generates_its_tiny_model_on_first_start_and_serves_it(gateway_server) -> None:
    shipped = (Path(__file__).resolve().parents[2] / "gateway.yaml").read_text()
    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}  # the embedded defaults: no keys
    gateway = gateway_server(shipped, env=env, timeout=120)
    assert (gateway.config_path.parent / "models" / "tiny" / "config.json").exists()  # created there
    client = oai(gateway)
    answer = client.chat.completions.create(model="local", messages=MESSAGES, max_tokens=8, temperature=0)
    assert answer.choices[0].message.content and answer.usage.completion_tokens >= 1
    status = local_status(gateway, "local")
    assert status["loaded"] and status["path"].endswith("models/tiny")


def test_a_model_on_the_bundled_blas_warns_on_start_in_ready_and_in_the_backends_api(
    gateway_server, tiny_model: Path
) -> None:
    text = f"""
backends:
  a: {{type: mlx, path: "{tiny_model}", load: startup}}
models:
  a: {{chain: [{{backend: a}}]}}
"""
    # GATEWAY_OPENBLAS=off keeps mlx on the reference BLAS its Linux wheel bundles.
    gateway = gateway_server(text, env={"GATEWAY_OPENBLAS": "off"})
    lines = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    slow = [line for line in lines if line.get("event") == "slow_blas"]
    assert slow, "no slow_blas line in the startup log"
    assert slow[0]["level"] == "warning"
    assert "bundled reference BLAS" in slow[0]["message"] and "30x slower" in slow[0]["message"]
    ready = requests.get(gateway.url("/ready"), timeout=5)
    assert ready.status_code == 200  # slow is not down
    check = ready.json()["checks"]["local_models"]
    assert check["status"] == "degraded" and "local_models" in ready.json()["degraded"]
    assert "bundled reference BLAS" in check["detail"]
    assert local_status(gateway, "a")["blas_warning"] == check["detail"]


def test_a_model_on_openblas_has_no_blas_warning(gateway) -> None:
    oai(gateway).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1, temperature=0)
    status = local_status(gateway, "local")
    if not status["blas"].startswith("OpenBLAS"):
        service_missing(
            f"mlx is not on OpenBLAS here ({status['blas']}); `apt-get install libopenblas0-pthread`"
        )
    assert status["blas_warning"] is None
    check = requests.get(gateway.url("/ready"), timeout=5).json()["checks"]["local_models"]
    assert check["status"] == "ok" and "detail" not in check
