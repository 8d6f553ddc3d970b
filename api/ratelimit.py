"""Rate limits of the self-service endpoints: token buckets per client and per card.

A bucket holds up to ``burst`` tokens and gains ``per_min`` a minute; a request takes one or
is refused with the seconds until the next (HTTP 429 with ``Retry-After``). Two tables:

- per client: the API key's id and the caller's address; taken before the body is read, so
  that malformed requests count too;
- per card: the keyed hash of the card number asked for (never the number), or the card of a
  card token; taken for unknown numbers as for known ones, so that the limit itself tells
  nothing. Together they bound how fast card numbers can be tried (enumeration).

The tables live in the API process's memory (one process serves the API: ``authsrv api``, or
worker 0 of ``authsrv serve``); a restart refills every bucket. Each table holds at most
``buckets_max`` buckets: when it is full, buckets that have refilled (the same as none) are
dropped; if none has, a request that needs a new bucket is refused (the limit fails closed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Refused", "TokenBuckets"]

SECONDS_PER_MIN = 60.0


@dataclass(frozen=True, slots=True)
class Refused:
    retry_after_s: int  # whole seconds, at least 1
    full: bool = False  # refused because the table is full, not by the key's own bucket


class TokenBuckets:
    """Resource handling: at most ``buckets_max`` entries of two floats each."""

    def __init__(
        self,
        *,
        burst: int,
        per_min: int,
        buckets_max: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert burst >= 1 and per_min >= 1 and buckets_max >= 1
        self.burst = float(burst)
        self.rate_per_s = per_min / SECONDS_PER_MIN
        self.buckets_max = buckets_max
        self.clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, tokens: float, at: float, now: float) -> float:
        return min(self.burst, tokens + max(0.0, now - at) * self.rate_per_s)

    def take(self, key: bytes) -> Refused | None:
        """Take one token for ``key``: None when allowed, else how long to wait."""
        now = self.clock()
        found = self._buckets.get(key)
        if found is None:
            if len(self._buckets) >= self.buckets_max:
                self._prune(now)
                if len(self._buckets) >= self.buckets_max:
                    return Refused(math.ceil(1 / self.rate_per_s), full=True)
            tokens = self.burst
        else:
            tokens = self._level(found[0], found[1], now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return Refused(max(1, math.ceil((1.0 - tokens) / self.rate_per_s)))
        self._buckets[key] = (tokens - 1.0, now)
        return None

    def _prune(self, now: float) -> None:
        """Drop the buckets that have refilled: they count as if they were not there."""
        full = [k for k, (t, at) in self._buckets.items() if self._level(t, at, now) >= self.burst]
        for key in full:
            del self._buckets[key]
