"""Where a price comes from: the backend's own `prices`, then the table shipped with the gateway for
its provider; a local model is free unless priced; anything else is unknown. Prices are resolved when
a config is compiled, from that config (a reload that changes only prices keeps the backend object)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.config.backends import Price
from gateway.config.load import parse_config
from gateway.config.model import Config
from gateway.pricing import TokenPrice, resolve_price, shipped_table
from gateway.pricing.report import format_report, price_report
from gateway.pricing.table import PRICES_PATH, ShippedTable, fallback_of
from gateway.runtime.compile import compile_runtime

CONFIG = """
backends:
  oa: {type: openai, api_key: "${KEY}", prices: {gpt-4o: {input: 2, output: 8}, house: {input: 1, output: 2}}}
  an: {type: anthropic, api_key: "${KEY}"}
  vllm:
    type: openai_compatible
    base_url: "http://127.0.0.1:9/v1"
    prices: {llama: {input: 0.1, output: 0.2}}
  local: {type: mlx, path: models/tiny}
  local_priced: {type: mlx, path: models/tiny, prices: {tiny: {input: 0.2, output: 0.8, cached_input: 0.02}}}
models:
  gpt: {chain: [{backend: oa, model: gpt-4o}, {backend: vllm, model: qwen}]}
  mini: {chain: [{backend: oa, model: gpt-4o-mini-2024-07-18}]}
  claude: {chain: [{backend: an, model: claude-sonnet-4-5}, {backend: an, model: claude-nonesuch}]}
  llama: {chain: [{backend: vllm, model: llama}]}
  tiny: {chain: [{backend: local}, {backend: local_priced, model: tiny}]}
"""


def load(tmp_path: Path, text: str = CONFIG) -> Config:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return parse_config(path.read_bytes(), path, env={"KEY": "sk-test"})


def test_the_shipped_table_is_dated_sourced_and_consistent() -> None:
    table = shipped_table()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.as_of)
    assert set(table.providers) == set(table.sources) == {"openai", "anthropic", "gemini", "bedrock"}
    for provider, models in table.providers.items():
        assert models, provider
        for model, price in models.items():
            assert 0 <= price.cached_input <= price.input <= price.cache_write, model
            assert price.output >= 0, model
    for model, price in table.providers["anthropic"].items():
        # Anthropic's published multipliers: a cache read is 0.1x input, a 5-minute cache write 1.25x
        # (Claude Haiku 3's are published rounded to the cent: 0.03 and 0.30).
        assert price.cached_input == pytest.approx(price.input * 0.1, abs=0.015), model
        assert price.cache_write == pytest.approx(price.input * 1.25, abs=0.015), model
    for model, price in table.providers["openai"].items():
        assert price.cache_write == price.input, model  # OpenAI charges nothing extra to write the cache
    for model, price in table.providers["bedrock"].items():
        if ".anthropic." in f".{model}":  # Claude on Bedrock: Anthropic's multipliers too
            assert price.cached_input == pytest.approx(price.input * 0.1), model
            assert price.cache_write == pytest.approx(price.input * 1.25), model


def test_gemini_and_bedrock_backends_read_their_shipped_prices(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
backends:
  gem: {type: gemini, api_key: "${KEY}"}
  br: {type: bedrock, region: us-east-1}
  az: {type: azure_openai, resource: contoso, api_version: "2024-10-21", api_key: "${KEY}"}
models:
  flash: {chain: [{backend: gem, model: gemini-2.5-flash}]}
""",
    )
    gem, br, az = (config.backend(name) for name in ("gem", "br", "az"))
    assert gem is not None and br is not None and az is not None
    flash = resolve_price(gem, "gemini-2.5-flash")
    assert flash is not None and flash.origin == "shipped"
    assert flash.price == Price(input=0.3, output=2.5, cached_input=0.03, cache_write=0.3)
    # An inference profile's id is priced as listed: the geographic one 10% over the global one.
    regional = resolve_price(br, "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    worldwide = resolve_price(br, "global.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert regional is not None and worldwide is not None
    assert (regional.price.input, worldwide.price.input) == (3.3, 3.0)
    assert resolve_price(br, "gemini-2.5-flash") is None  # each type reads its own provider's prices
    assert resolve_price(az, "gpt-4o") is None  # Azure's models are deployment names: never shipped
    assert (fallback_of(gem), fallback_of(br), fallback_of(az)) == ("shipped", "shipped", "unknown")


def test_the_shipped_table_names_each_model_once() -> None:
    data = json.loads(PRICES_PATH.read_text())
    data["providers"]["openai"]["gpt-4o-mini"]["aliases"].append("gpt-4o")
    with pytest.raises(ValueError, match="gpt-4o is priced twice"):
        ShippedTable.from_data(data)


def test_prices_come_from_the_backend_then_the_shipped_table(tmp_path: Path) -> None:
    config = load(tmp_path)
    found = [config.backend(n) for n in ("oa", "an", "vllm", "local", "local_priced")]
    assert None not in found
    oa, an, vllm, local, local_priced = found  # type: ignore[misc]
    shipped = shipped_table().providers

    own = resolve_price(oa, "gpt-4o")
    assert own is not None and own.origin == "backend" and own.price == Price(2, 8, 2, 2)
    mini = resolve_price(oa, "gpt-4o-mini-2024-07-18")  # a dated snapshot: the alias of gpt-4o-mini
    assert mini is not None and (mini.origin, mini.price) == ("shipped", shipped["openai"]["gpt-4o-mini"])
    sonnet = resolve_price(an, "claude-sonnet-4-5")
    assert sonnet is not None and sonnet.price == Price(3, 15, 0.3, 3.75)
    assert resolve_price(an, "claude-nonesuch") is None  # never a guess
    assert resolve_price(an, "gpt-4o") is None  # an Anthropic backend does not read OpenAI's prices
    assert resolve_price(vllm, "gpt-4o") is None  # any server: no shipped prices
    llama = resolve_price(vllm, "llama")
    assert llama is not None and llama.origin == "backend"
    free = resolve_price(local, "tiny")
    assert free is not None and free.origin == "local" and free.price == Price(0, 0, 0, 0)
    priced = resolve_price(local_priced, "tiny")
    assert priced is not None and priced.price == Price(0.2, 0.8, 0.02, 0.2)
    assert [fallback_of(b) for b in (oa, an, vllm, local)] == ["shipped", "shipped", "unknown", "free"]


def test_compiled_routes_carry_their_prices(tmp_path: Path) -> None:
    runtime, _ = compile_runtime(load(tmp_path), None, "test")
    prices = {
        (step.backend.name, step.target.model): step.price for route in runtime.models for step in route.chain
    }
    assert prices == {
        ("oa", "gpt-4o"): TokenPrice(2_000_000, 8_000_000, 2_000_000, 2_000_000),
        ("vllm", "qwen"): None,
        ("oa", "gpt-4o-mini-2024-07-18"): TokenPrice(150_000, 600_000, 75_000, 150_000),
        ("an", "claude-sonnet-4-5"): TokenPrice(3_000_000, 15_000_000, 300_000, 3_750_000),
        ("an", "claude-nonesuch"): None,
        ("vllm", "llama"): TokenPrice(100_000, 200_000, 100_000, 100_000),
        ("local", "tiny"): TokenPrice(0, 0, 0, 0),
        ("local_priced", "tiny"): TokenPrice(200_000, 800_000, 20_000, 200_000),
    }


def test_a_reload_that_changes_only_prices_keeps_the_backend_and_takes_the_new_prices(tmp_path: Path) -> None:
    before, _ = compile_runtime(load(tmp_path), None, "v1")
    changed = CONFIG.replace("gpt-4o: {input: 2, output: 8}", "gpt-4o: {input: 2.5, output: 10}")
    after, created = compile_runtime(load(tmp_path, changed), before, "v2")
    assert after.backends["oa"] is before.backends["oa"] and created == []
    [step, _] = after.routes["gpt"].chain
    assert step.price == TokenPrice(2_500_000, 10_000_000, 2_500_000, 2_500_000)


def test_the_report_marks_where_each_price_comes_from(tmp_path: Path) -> None:
    config = load(tmp_path)
    report = price_report(config)
    assert report["as_of"] == shipped_table().as_of
    assert report["shipped"]["openai"]["gpt-4o-mini"]["aliases"] == ["gpt-4o-mini-2024-07-18"]
    oa = report["backends"]["oa"]
    assert oa["other_models"] == "shipped" and oa["shipped_table"] == "openai"
    assert oa["models"]["gpt-4o"]["origin"] == "backend"
    assert oa["models"]["house"] == {
        "price": {"input": 1.0, "cached_input": 1.0, "cache_write": 1.0, "output": 2.0},
        "origin": "backend",
        "routed": False,
    }
    unknown = {"price": None, "origin": None, "routed": True}
    assert report["backends"]["an"]["models"]["claude-nonesuch"] == unknown
    assert report["backends"]["local"]["models"]["tiny"]["origin"] == "local"
    text = format_report(report)
    assert f"as of {shipped_table().as_of}" in text
    assert re.search(r"^  gpt-4o\*  +2  +2  +2  +8  +gateway\.yaml$", text, re.M)
    assert re.search(r"^  house\*  .* gateway\.yaml, not routed$", text, re.M)
    assert re.search(r"^  claude-nonesuch  +unknown  +unknown  +unknown  +unknown  +-$", text, re.M)
    assert "vllm (openai_compatible); other models: unknown cost" in text


def test_a_table_with_other_prices_is_used_when_given(tmp_path: Path) -> None:
    config = load(tmp_path)
    data = json.loads(PRICES_PATH.read_text())
    data["providers"]["anthropic"]["claude-nonesuch"] = {"input": 1, "output": 1}
    table = ShippedTable.from_data(data)
    an = config.backend("an")
    assert an is not None
    found = resolve_price(an, "claude-nonesuch", table)
    assert found is not None and (found.origin, found.price) == ("shipped", Price(1, 1, 1, 1))
