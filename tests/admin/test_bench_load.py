"""The figures of one benchmark level (`gateway.admin.bench_load.LevelLoad.figures`) from known samples:
nearest-rank percentiles over the successful requests, errors by kind, rates over the level's time."""

from __future__ import annotations

from gateway.admin.bench_load import LevelLoad, Sample, bench_call


def level(samples: list[Sample], seconds: float = 2.0) -> LevelLoad:
    load = LevelLoad(concurrency=4, seconds=seconds, samples=samples, started=100.0)
    load.ended = 100.0 + seconds
    return load


def test_figures_of_a_level() -> None:
    ok = [Sample(True, float(ms), ttft_ms=ms / 10, output_tokens=5) for ms in range(10, 210, 10)]  # 20
    failed = [
        Sample(False, 5.0, error="http_5xx"),
        Sample(False, 7.0, error="timeout"),
        Sample(False, 1.0, error="timeout"),
    ]
    figures = level(ok + failed).figures()
    assert figures["concurrency"] == 4 and figures["duration_s"] == 2.0
    assert figures["requests"] == 23 and figures["errors"] == 3
    assert figures["error_kinds"] == {"http_5xx": 1, "timeout": 2}
    assert figures["requests_per_s"] == 10.0  # the 20 that succeeded, over 2 s
    assert figures["latency_ms"] == {"p50": 100.0, "p95": 190.0}  # failures are not latencies
    assert figures["ttft_ms"] == {"p50": 10.0, "p95": 19.0}
    assert figures["output_tokens_per_s"] == 50.0


def test_a_level_without_successes_or_streams_has_no_percentiles() -> None:
    figures = level([Sample(False, 3.0, error="connect_error")]).figures()
    assert figures["latency_ms"] == {"p50": None, "p95": None}
    assert figures["ttft_ms"] is None and figures["requests_per_s"] == 0.0
    assert level([Sample(True, 42.0)]).figures()["latency_ms"] == {"p50": 42.0, "p95": 42.0}


def test_the_benchmark_request_is_a_short_bounded_chat_request() -> None:
    call = bench_call("gpt-4o-mini", stream=True, max_tokens=16, request_id="req_bench")
    assert call.endpoint == "chat" and call.protocol == "openai" and call.stream
    assert call.body["max_tokens"] == 16 and call.body["stream_options"] == {"include_usage": True}
    assert call.request.max_tokens == 16 and call.request.model == "gpt-4o-mini"
    assert "stream_options" not in bench_call("m", stream=False, max_tokens=1, request_id="r").body
