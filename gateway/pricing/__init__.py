"""What requests cost: the price table shipped with the gateway, each backend's own prices over it,
and the arithmetic that turns a backend's reported usage into USD.

Prices are resolved once, when a config is compiled (`resolve_price`, into each route target's
`TokenPrice`); a request only multiplies its token counts by them.
"""

from gateway.pricing.cost import PICODOLLARS_PER_USD, TokenPrice, format_usd
from gateway.pricing.table import PriceOrigin, ResolvedPrice, ShippedTable, resolve_price, shipped_table

__all__ = [
    "PICODOLLARS_PER_USD",
    "PriceOrigin",
    "ResolvedPrice",
    "ShippedTable",
    "TokenPrice",
    "format_usd",
    "resolve_price",
    "shipped_table",
]
