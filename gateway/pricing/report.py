"""What `gateway prices` prints: the shipped table (dated) and, for a config, each backend's effective
prices (the models its chains route to it and the ones it prices itself), each with where its price
comes from. One report, written as text for people or as JSON for scripts.
"""

from __future__ import annotations

from typing import Any

from gateway.config.backends import Price
from gateway.config.model import Config
from gateway.pricing.table import ShippedTable, fallback_of, resolve_price, shipped_table

__all__ = ["format_report", "price_report"]

_KINDS = ("input", "cached_input", "cache_write", "output")
#: How a text report marks a price's origin.
_MARKS = {"backend": "gateway.yaml", "shipped": "shipped", "local": "local (free)"}


def _price(price: Price) -> dict[str, float]:
    return {kind: getattr(price, kind) for kind in _KINDS}


def price_report(config: Config | None = None, table: ShippedTable | None = None) -> dict[str, Any]:
    """The report as JSON-ready data."""
    table = table or shipped_table()
    shipped = {
        provider: {
            model: {**_price(models[model]), "aliases": list(names)}
            for model, names in table.aliases[provider].items()
        }
        for provider, models in table.providers.items()
    }
    report: dict[str, Any] = {
        "unit": "USD per million tokens",
        "as_of": table.as_of,
        "sources": dict(table.sources),
        "notes": list(table.notes),
        "shipped": shipped,
    }
    if config is None:
        return report
    routed: dict[str, list[str]] = {}
    for model in config.models:
        for target in model.chain:
            names = routed.setdefault(target.backend, [])
            if target.model not in names:
                names.append(target.model)
    backends = {}
    for settings in config.backends:
        served = routed.get(settings.name, [])
        models: dict[str, Any] = {}
        for name in dict.fromkeys((*served, *settings.prices)):
            resolved = resolve_price(settings, name, table)
            models[name] = {
                "price": None if resolved is None else _price(resolved.price),
                "origin": None if resolved is None else resolved.origin,
                "routed": name in served,
            }
        backends[settings.name] = {
            "type": settings.type,
            "shipped_table": table.provider_of(settings),
            "other_models": fallback_of(settings),
            "models": models,
        }
    report["config"] = str(config.path)
    report["backends"] = backends
    return report


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one table per provider, then one per backend of the config."""
    lines = [f"Prices shipped with the gateway, as of {report['as_of']} ({report['unit']})"]
    for provider, models in report["shipped"].items():
        lines += ["", f"{provider}, from {report['sources'].get(provider, '?')}"]
        rows = [
            [model, *(_number(entry[kind]) for kind in _KINDS), ", ".join(entry["aliases"])]
            for model, entry in models.items()
        ]
        lines += _rows(["model", *_KINDS, "aliases"], rows)
    lines += ["", *(f"note: {note}" for note in report["notes"])]
    if "backends" not in report:
        return "\n".join(lines) + "\n"
    lines += ["", f"Effective prices of {report['config']} (* priced in gateway.yaml)"]
    for name, backend in report["backends"].items():
        otherwise = {
            "shipped": f"the shipped {backend['shipped_table']} prices",
            "free": "free (a local model)",
            "unknown": "unknown cost (null in the audit log)",
        }[backend["other_models"]]
        lines += ["", f"{name} ({backend['type']}); other models: {otherwise}"]
        rows = []
        for model, entry in backend["models"].items():
            price, origin = entry["price"], entry["origin"]
            mark = "*" if origin == "backend" else ""
            cells = ["unknown"] * len(_KINDS) if price is None else [_number(price[k]) for k in _KINDS]
            source = "-" if origin is None else _MARKS[origin]
            rows.append([model + mark, *cells, source + ("" if entry["routed"] else ", not routed")])
        if rows:
            lines += _rows(["model", *_KINDS, "from"], rows)
    return "\n".join(lines) + "\n"
