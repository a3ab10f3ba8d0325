"""Where a model's price comes from: the backend's own `prices` in gateway.yaml first, then the table
shipped with the gateway (`prices.json`, dated) for the provider the backend type talks to.

`openai`, `anthropic`, `gemini` and `bedrock` backends read their provider's shipped prices. Backends of
other types (`openai_compatible`: any server; `azure_openai`: deployment names) have none; a local model
(`mlx`) costs nothing unless priced. A model priced nowhere has an unknown cost: None, never a guess.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from gateway.config.backends import (
    AnthropicSettings,
    BackendSettings,
    BedrockSettings,
    GeminiSettings,
    MLXSettings,
    OpenAISettings,
    Price,
)

__all__ = [
    "PRICES_PATH",
    "Fallback",
    "PriceOrigin",
    "ResolvedPrice",
    "ShippedTable",
    "fallback_of",
    "resolve_price",
    "shipped_table",
]

PRICES_PATH = Path(__file__).with_name("prices.json")

#: The shipped table's provider each backend settings class bills at (by class, as the registries
#: choose; a subclass is a type of its own and does not inherit the entry).
_SHIPPED_PROVIDER: Mapping[type[BackendSettings], str] = MappingProxyType(
    {
        OpenAISettings: "openai",
        AnthropicSettings: "anthropic",
        GeminiSettings: "gemini",
        BedrockSettings: "bedrock",
    }
)
#: Settings classes whose models run on the operator's own hardware: free unless priced.
_LOCAL: frozenset[type[BackendSettings]] = frozenset({MLXSettings})
_FREE = Price(input=0.0, output=0.0, cached_input=0.0, cache_write=0.0)

#: "backend": the backend's own `prices`; "shipped": the table shipped with the gateway;
#: "local": a local model, free unless priced.
PriceOrigin = Literal["backend", "shipped", "local"]
#: What a model a backend does not price itself costs: the shipped table's price ("shipped"),
#: nothing ("free", a local model) or an unknown amount ("unknown").
Fallback = Literal["shipped", "free", "unknown"]


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    price: Price
    origin: PriceOrigin


@dataclass(frozen=True, slots=True)
class ShippedTable:
    """The price table shipped with the gateway."""

    #: The date the prices were read from the providers' pages (ISO 8601).
    as_of: str
    #: Provider -> where its prices were read.
    sources: Mapping[str, str]
    notes: tuple[str, ...]
    #: Provider ("openai", "anthropic", "gemini", "bedrock") -> model name (aliases included) -> price.
    providers: Mapping[str, Mapping[str, Price]]
    #: Provider -> model -> its other names (dated snapshots, `-latest` names), as the file lists them.
    aliases: Mapping[str, Mapping[str, tuple[str, ...]]]

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ShippedTable:
        providers: dict[str, Mapping[str, Price]] = {}
        aliases: dict[str, Mapping[str, tuple[str, ...]]] = {}
        for provider, models in data["providers"].items():
            prices: dict[str, Price] = {}
            names: dict[str, tuple[str, ...]] = {}
            for model, entry in models.items():
                price = Price.from_raw(entry)
                names[model] = tuple(entry.get("aliases", ()))
                for name in (model, *names[model]):
                    if name in prices:
                        raise ValueError(f"{provider}: {name} is priced twice")
                    prices[name] = price
            providers[provider] = MappingProxyType(prices)
            aliases[provider] = MappingProxyType(names)
        return cls(
            as_of=data["as_of"],
            sources=MappingProxyType(dict(data["sources"])),
            notes=tuple(data.get("notes", ())),
            providers=MappingProxyType(providers),
            aliases=MappingProxyType(aliases),
        )

    def provider_of(self, settings: BackendSettings) -> str | None:
        """The provider whose prices a backend of this settings class pays, or None."""
        return _SHIPPED_PROVIDER.get(type(settings))


@functools.cache
def shipped_table() -> ShippedTable:
    """The shipped table, read once per process."""
    return ShippedTable.from_data(json.loads(PRICES_PATH.read_text(encoding="utf-8")))


def resolve_price(
    settings: BackendSettings, model: str, table: ShippedTable | None = None
) -> ResolvedPrice | None:
    """The price of `model` on the backend `settings` describes, and where it came from; None when
    nothing prices it. Read the settings of the config being compiled: prices are not part of a
    backend's identity, so a reused backend object may carry an older config's."""
    own = settings.prices.get(model)
    if own is not None:
        return ResolvedPrice(own, "backend")
    if type(settings) in _LOCAL:
        return ResolvedPrice(_FREE, "local")
    table = table or shipped_table()
    provider = table.provider_of(settings)
    if provider is not None:
        shipped = table.providers.get(provider, {}).get(model)
        if shipped is not None:
            return ResolvedPrice(shipped, "shipped")
    return None


def fallback_of(settings: BackendSettings) -> Fallback:
    """Where the price of a model `settings` does not price itself comes from."""
    if type(settings) in _LOCAL:
        return "free"
    return "shipped" if type(settings) in _SHIPPED_PROVIDER else "unknown"
