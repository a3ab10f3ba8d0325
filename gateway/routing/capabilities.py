"""Whether a chain target can serve a request: the capabilities it needs, and the fields only a backend
speaking the client's protocol can take (`gateway.protocol.requirements`).

Failover asks before sending anything: a target that cannot serve the request is skipped (outcome
`incapable`), so no backend gets a request it would answer while dropping part of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.capabilities import CAPABILITIES, EXTRA_FIELDS_BY_TYPE
from gateway.config.providers import CAPABILITY_FIELDS, preset
from gateway.protocol.requirements import Requirements
from gateway.routing.table import RouteTarget

__all__ = ["Refusal", "refusal"]

_ORDER = {name: i for i, name in enumerate(CAPABILITIES)}
_NO_EXTRAS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a target cannot serve a request: the capability it lacks or the field it cannot take."""

    detail: str
    capability: str | None = None
    field: str | None = None


def _also_speaks(step: RouteTarget) -> frozenset[str]:
    """Client protocols the target's backend takes as sent besides its own (`openai`: Responses)."""
    return getattr(step.backend, "also_speaks", _NO_EXTRAS)


def refusal(needs: Requirements, step: RouteTarget) -> Refusal | None:
    """Why `step` cannot serve a request needing `needs`, or None when it can. Costs a set comparison
    for most requests (those with no native field)."""
    if not needs.capabilities <= step.capabilities:
        missing = min(needs.capabilities - step.capabilities, key=lambda name: _ORDER.get(name, 99))
        vendor = preset(step.config.preset_name())
        why = vendor.refuses.get(missing) if vendor is not None else None
        if why is not None:  # the vendor's documented refusal: name it, and the field that asks for it
            return Refusal(
                f"lacks capability '{missing}' ({why})",
                capability=missing,
                field=CAPABILITY_FIELDS.get(missing),
            )
        # Named with the request field that asks for it, if one does (the 400 names both).
        return Refusal(f"lacks capability '{missing}'", missing, needs.field_for(missing))
    speaks = step.speaks
    if needs.foreign is not None and speaks != needs.foreign[0]:
        # An OpenAI client's `thinking_blocks` (Anthropic blocks sent back): only Anthropic takes them.
        protocol, what = needs.foreign
        return Refusal(
            f"cannot take the {protocol} {what}s of a message's thinking_blocks: only a backend "
            f"speaking {protocol} can",
            field="thinking_blocks",
        )
    if needs.native and speaks != needs.protocol and needs.protocol not in _also_speaks(step):
        extras = EXTRA_FIELDS_BY_TYPE.get(step.config.type, _NO_EXTRAS)
        for name in needs.native:
            if name not in extras:
                what = needs.describe_native(name)
                if speaks is None:
                    why = f"cannot take {what}: a local model takes only the canonical form"
                else:
                    why = f"cannot take {what}: this backend speaks {speaks}"
                return Refusal(why, field=name)
    if needs.endpoint == "count_tokens" and speaks == "openai":
        return Refusal("cannot count tokens: the OpenAI API has no count_tokens endpoint")
    return None
