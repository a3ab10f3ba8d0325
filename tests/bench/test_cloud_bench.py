"""`gateway bench cloud --quick --simulate`: without calling any provider, the fake servers with
cloud-like latency, labelled simulated in the table and the JSON. Vertex AI's direct calls and the
gateway's both authenticate with the fake's service account (a real JWT-bearer token exchange)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.conftest import BenchRun, check_envelope, check_percentiles


@pytest.mark.timeout(120)
def test_cloud_quick_simulated(run_bench: Callable[..., BenchRun], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        monkeypatch.delenv(name, raising=False)
    run = run_bench("cloud", "--simulate")
    assert run.exit_code == 0
    assert "**simulated**" in run.stdout and "live" not in run.stdout.split("\n\n")[0]

    result = run.result
    check_envelope(result, "cloud")
    assert result["simulated"] is True and result["failed_requests"] == 0
    providers = {p["provider"]: p for p in result["providers"]}
    assert set(providers) == {"openai", "anthropic", "gemini", "azure_openai", "bedrock", "vertex"}
    assert providers["vertex"]["model"] == "gemini-2.5-flash"
    assert "| Vertex AI gemini-2.5-flash | **simulated** |" in run.stdout
    latency_ms = result["settings"]["sim_latency_ms"]
    for provider in providers.values():
        assert provider["simulated"] is True and provider["source"].startswith("simulated:")
        assert set(provider["modes"]) == {"non_streaming", "streaming"}
        for mode, found in provider["modes"].items():
            assert found["errors"] == [] and found["served_by_other_backend"] == 0
            for way in ("direct", "gateway"):
                summary = found[way]
                assert summary["requests"] == provider["requests_per_mode"] and summary["failed"] == 0
                check_percentiles(summary["latency_ms"])
                # The simulated latency is before the first byte: no answer can come sooner.
                assert summary["latency_ms"]["p50"] >= latency_ms
                if mode == "streaming":
                    check_percentiles(summary["ttft_ms"])
                    assert summary["ttft_ms"]["p50"] >= latency_ms
            added = found["added_latency_ms"]
            assert added["p50"] == pytest.approx(
                found["gateway"]["latency_ms"]["p50"] - found["direct"]["latency_ms"]["p50"], abs=0.002
            )
            assert (found["added_ttft_ms"] is None) == (mode == "non_streaming")
