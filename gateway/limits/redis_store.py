"""The limits store shared by workers and instances (`limits.store: redis://...`).

One round trip per admission: a Lua script (EVALSHA; loaded again by itself after a Redis restart)
checks every limit of the subject and charges them all or none, atomically across every instance.
Settling (lease release, token correction, spend) is a second script, run in a task after the
response, so the client never waits for it. Every call is bounded by `limits.store_timeout_ms`;
a failed call raises StoreUnavailable and, for the next second, calls fail at once without trying
(a Redis that stopped answering would otherwise cost every request the whole timeout). The client
reconnects by itself when Redis is back.

Keys (with `limits.key_prefix`, default `gateway:`; the subject in braces is a Redis Cluster hash
tag, so one script's keys share a slot): `gateway:{key:team-a}:rpm` and `:tpm` (hashes: second →
units), `:conc` (sorted set: lease → expiry), `:day:20261202` and `:month:202612` (spend in USD).
Instances should keep their clocks in sync (NTP): windows and leases are computed from the caller's
clock.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any

from gateway.limits.periods import Periods
from gateway.limits.rules import WINDOW_SECONDS, Rules
from gateway.limits.store import StoreUnavailable, Verdict
from gateway.redis_link import RedisLink

__all__ = ["RedisStore"]

log = logging.getLogger("gateway.limits")

#: Spend keys live this long past their period's end.
SPEND_KEEP_S = 86400

ADMIT = """
local now = tonumber(ARGV[1])
local sec = math.floor(now)
local window = tonumber(ARGV[12])
local refused, retry = false, 0

local function count(key)
  local flat = redis.call('HGETALL', key)
  local total, oldest, live, stale = 0, false, {}, {}
  for i = 1, #flat, 2 do
    local s, n = tonumber(flat[i]), tonumber(flat[i + 1])
    if s <= sec - window then
      stale[#stale + 1] = flat[i]
    else
      total = total + n
      live[#live + 1] = {s, n}
      if not oldest or s < oldest then oldest = s end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return total, live, oldest
end

local function wait_for(live, total, cost, limit)
  table.sort(live, function(a, b) return a[1] < b[1] end)
  local excess, freed = total + cost - limit, 0
  for _, entry in ipairs(live) do
    freed = freed + entry[2]
    if freed >= excess then return entry[1] + window - now end
  end
  return window
end

local function refuse(name, seconds)
  if not refused or seconds > retry then refused, retry = name, seconds end
end

local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rpm_used, rpm_oldest, tpm_used, tpm_oldest = 0, false, 0, false
if rpm > 0 then
  local live
  rpm_used, live, rpm_oldest = count(KEYS[1])
  if rpm_used + 1 > rpm then refuse('requests_per_minute', wait_for(live, rpm_used, 1, rpm)) end
end
if tpm > 0 then
  local live
  tpm_used, live, tpm_oldest = count(KEYS[2])
  local cost = math.min(tokens, tpm)
  if tpm_used + cost > tpm then refuse('tokens_per_minute', wait_for(live, tpm_used, cost, tpm)) end
end
local slots, in_flight = tonumber(ARGV[5]), 0
if slots > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  in_flight = redis.call('ZCARD', KEYS[3])
  if in_flight >= slots then refuse('concurrent_requests', 1) end
end
local day_cap, month_cap = tonumber(ARGV[8]), tonumber(ARGV[9])
local day_spent, month_spent = 0, 0
if day_cap >= 0 then
  day_spent = tonumber(redis.call('GET', KEYS[4]) or '0')
  if day_spent >= day_cap then refuse('budget_usd.per_day', tonumber(ARGV[10])) end
end
if month_cap >= 0 then
  month_spent = tonumber(redis.call('GET', KEYS[5]) or '0')
  if month_spent >= month_cap then refuse('budget_usd.per_month', tonumber(ARGV[11])) end
end
local charged, lease = 0, ''
if not refused then
  if rpm > 0 then
    redis.call('HINCRBY', KEYS[1], sec, 1)
    redis.call('EXPIRE', KEYS[1], window * 2)
    rpm_used = rpm_used + 1
    if not rpm_oldest then rpm_oldest = sec end
  end
  if tpm > 0 and tokens > 0 then
    redis.call('HINCRBY', KEYS[2], sec, tokens)
    redis.call('EXPIRE', KEYS[2], window * 2)
    tpm_used, charged = tpm_used + tokens, tokens
    if not tpm_oldest then tpm_oldest = sec end
  end
  if slots > 0 then
    redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6])
    redis.call('PEXPIRE', KEYS[3], ARGV[13])
    in_flight, lease = in_flight + 1, ARGV[6]
  end
end
return {refused or '', tostring(retry), rpm_used, tostring(rpm_oldest or ''), tpm_used,
        tostring(tpm_oldest or ''), in_flight, tostring(day_spent), tostring(month_spent), sec,
        charged, lease}
"""

SETTLE = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local delta = tonumber(ARGV[2])
if delta > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[3], delta)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
elseif delta < 0 then
  local held = tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')
  local back = math.min(held, -delta)
  if back > 0 then redis.call('HINCRBY', KEYS[2], ARGV[4], -back) end
end
local cost = tonumber(ARGV[6])
if cost > 0 then
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
  redis.call('INCRBYFLOAT', KEYS[4], ARGV[6])
  redis.call('EXPIRE', KEYS[4], ARGV[8])
end
return 1
"""


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, *, timeout_ms: int, prefix: str) -> None:
        self.link = RedisLink(
            url, timeout_ms=timeout_ms, log=log, what="the limits store (Redis)", event="limits_store"
        )
        self.timeout_s = self.link.timeout_s
        self.prefix = prefix
        self._admit = self.link.client.register_script(ADMIT)
        self._settle = self.link.client.register_script(SETTLE)
        self._keys: dict[str, tuple[str, str, str, str]] = {}
        self._leases = itertools.count()
        self._instance = f"{os.getpid()}-{os.urandom(4).hex()}"

    def _subject_keys(self, subject: str) -> tuple[str, str, str, str]:
        keys = self._keys.get(subject)
        if keys is None:
            base = f"{self.prefix}{{{subject}}}:"
            keys = self._keys[subject] = (base + "rpm", base + "tpm", base + "conc", base)
        return keys

    async def admit(
        self, rules: Rules, now: float, tokens: int, lease_seconds: float, periods: Periods
    ) -> Verdict:
        link = self.link
        if not link.available():
            raise StoreUnavailable(link.last_error or "down")
        rpm_key, tpm_key, conc_key, base = self._subject_keys(rules.subject)
        slots = rules.concurrent_requests or 0
        lease = f"{self._instance}-{next(self._leases)}" if slots else ""
        args = (
            repr(now),
            rules.requests_per_minute or 0,
            rules.tokens_per_minute or 0,
            tokens,
            slots,
            lease,
            repr(now + lease_seconds),
            -1 if rules.per_day is None else repr(rules.per_day),
            -1 if rules.per_month is None else repr(rules.per_month),
            repr(periods.day_end - now),
            repr(periods.month_end - now),
            WINDOW_SECONDS,
            int(lease_seconds * 1000),
        )
        keys = (rpm_key, tpm_key, conc_key, f"{base}day:{periods.day}", f"{base}month:{periods.month}")
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self._admit(keys=keys, args=args)
        except Exception as error:  # connection refused, timeout, a script error: the store failed
            link.failed(error)
            raise StoreUnavailable(link.last_error or "error") from error
        link.answered()
        refused, retry, rpm_used, rpm_oldest, tpm_used, tpm_oldest, in_flight = answer[:7]
        day_spent, month_spent, second, charged, taken = answer[7:]
        return Verdict(
            refused=refused.decode() or None,
            retry_after=float(retry),
            requests_used=int(rpm_used),
            requests_oldest=int(float(rpm_oldest)) if rpm_oldest else None,
            tokens_used=int(tpm_used),
            tokens_oldest=int(float(tpm_oldest)) if tpm_oldest else None,
            in_flight=int(in_flight),
            spent_day=float(day_spent),
            spent_month=float(month_spent),
            second=int(second),
            tokens=int(charged),
            lease=taken.decode() or None,
        )

    def settle(
        self,
        rules: Rules,
        verdict: Verdict,
        now: float,
        token_delta: int,
        cost: float | None,
        periods: Periods,
    ) -> None:
        if verdict.lease is None and not token_delta and not cost:
            return
        _, tpm_key, conc_key, base = self._subject_keys(rules.subject)
        keys = (conc_key, tpm_key, f"{base}day:{periods.day}", f"{base}month:{periods.month}")
        args = (
            verdict.lease or "",
            token_delta,
            int(now // 1),
            verdict.second,
            WINDOW_SECONDS * 2,
            repr(cost or 0.0),
            int(periods.day_end - now) + SPEND_KEEP_S,
            int(periods.month_end - now) + SPEND_KEEP_S,
        )
        self.link.spawn(self._run_settle(keys, args))

    async def _run_settle(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> None:
        # Settling is not skipped while the store counts as down: releasing a lease matters most
        # right after an outage, and a failure here costs no client anything.
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._settle(keys=keys, args=args)
        except Exception as error:
            self.link.failed(error)
        else:
            self.link.answered()

    def status(self) -> dict[str, Any]:
        return self.link.status()

    async def drain(self) -> None:
        await self.link.drain()

    async def close(self) -> None:
        await self.link.close()
