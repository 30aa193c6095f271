"""A rate limit and a circuit breaker whose state lives in Redis.

Both are single Lua scripts, so that every worker process on every machine shares one
budget and one breaker without a read-then-write race. Times come from Redis's own clock
(TIME), so that processes with skewed clocks still agree. A Redis that cannot be reached
raises redis.RedisError here; the client turns it into an outage (RetryLater).
"""

import math
from dataclasses import dataclass
from functools import cached_property

from redis.commands.core import Script

from domains.infra.redis import sync_client

# GCRA (the generic cell rate algorithm): one key holds the theoretical arrival time of
# the next call. A call is allowed while that time is at most `burst` intervals ahead.
_GCRA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - tolerance - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, new_tat - now))
return 0
"""

# The breaker's hash: `failures` in a row and `open_until` (ms; absent while closed).
# Past `open_until` it is half-open: the one caller that takes the probe key goes through.
_BREAKER_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return {1, 0} end
if now < open_until then return {0, open_until - now} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return {2, 0} end
return {0, tonumber(redis.call('PTTL', KEYS[2]))}
"""

_BREAKER_FAILURE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local opened = 0
if ARGV[3] == '1' or (open_until == 0 and failures >= tonumber(ARGV[1])) then
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[2]))
  redis.call('DEL', KEYS[2])
  opened = 1
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 86400000)
return opened
"""


@dataclass(frozen=True)
class RateLimit:
    """At most `per_minute` calls a minute across all processes, `burst` of them at once."""

    per_minute: float
    burst: int = 1

    def acquire(self, service: str) -> float:
        """0 if the call may go now, else the seconds until it may."""
        interval_ms = 60_000 / self.per_minute
        wait_ms = _scripts.gcra(
            keys=[f"ratelimit:{service}"], args=[interval_ms, self.burst], client=sync_client()
        )
        return float(wait_ms) / 1000


class BreakerState:
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Breaker:
    """Opens after `failure_threshold` failures in a row; after `reset_timeout` seconds one
    probe call goes through: its success closes the breaker, its failure opens it again."""

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    probe_timeout: float = 30.0  # a probe that never reports frees the slot after this

    def acquire(self, service: str) -> tuple[bool, bool, float]:
        """(allowed, is_probe, seconds to wait when refused)."""
        verdict, wait_ms = _scripts.breaker_acquire(
            keys=self._keys(service), args=[int(self.probe_timeout * 1000)], client=sync_client()
        )
        return verdict != 0, verdict == 2, max(float(wait_ms), 0.0) / 1000

    def record_success(self, service: str) -> None:
        sync_client().delete(*self._keys(service))

    def release_probe(self, service: str) -> None:
        sync_client().delete(self._keys(service)[1])

    def record_failure(self, service: str, *, probe: bool) -> bool:
        """True if this failure opened the breaker."""
        opened = _scripts.breaker_failure(
            keys=self._keys(service),
            args=[self.failure_threshold, int(self.reset_timeout * 1000), int(probe)],
            client=sync_client(),
        )
        return bool(opened)

    def state(self, service: str) -> str:
        open_until = sync_client().hget(self._keys(service)[0], "open_until")
        if open_until is None:
            return BreakerState.CLOSED
        seconds, micros = sync_client().time()
        now_ms = seconds * 1000 + math.floor(micros / 1000)
        return BreakerState.OPEN if now_ms < int(open_until) else BreakerState.HALF_OPEN

    @staticmethod
    def _keys(service: str) -> list[str]:
        return [f"breaker:{service}", f"breaker:{service}:probe"]


class _Scripts:
    @cached_property
    def gcra(self) -> Script:
        return sync_client().register_script(_GCRA)

    @cached_property
    def breaker_acquire(self) -> Script:
        return sync_client().register_script(_BREAKER_ACQUIRE)

    @cached_property
    def breaker_failure(self) -> Script:
        return sync_client().register_script(_BREAKER_FAILURE)


_scripts = _Scripts()
