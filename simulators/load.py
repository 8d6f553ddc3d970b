"""A timed run of many redeems over several connections (the simulator's own timing).

Each connection sends one request at a time and waits for its answer (closed loop). The report
gives requests per second over the whole run, latency percentiles and counts per response code.

With a security profile every request is sealed (MAC, PIN block, KSN) and every answer's MAC
checked, inside the timed round trip. A static-key terminal does one key change before the run
and its connections share those working keys: the host keeps only a few replaced keys valid,
so a key change per connection would retire the keys of the first connections. A DUKPT
terminal is one device with one counter: its load runs on one connection.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import trio

from simulators.scenario import TerminalKeys, TerminalLink, open_link
from simulators.terminal import build_request, summarize

__all__ = ["LoadReport", "run_load"]


@dataclass(frozen=True, slots=True)
class LoadReport:
    requests: int
    connections: int
    elapsed_s: float
    rate_per_s: float
    latency_ms: dict[str, float]
    rc_counts: dict[str, int]
    security: str = "none"
    notes: tuple[str, ...] = ()  # the key change's check values

    def lines(self) -> list[str]:
        lat = "  ".join(f"{k} {v:.2f} ms" for k, v in self.latency_ms.items())
        rcs = "  ".join(f"{rc}: {n}" for rc, n in sorted(self.rc_counts.items()))
        return [
            *self.notes,
            f"{self.requests} requests on {self.connections} connections in "
            f"{self.elapsed_s:.2f} s: {self.rate_per_s:.0f} requests/s (security {self.security})",
            f"latency {lat}",
            f"response codes {rcs}",
        ]


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


async def run_load(
    host: str,
    port: int,
    *,
    cards: list[str],
    terminals: list[tuple[str, str]],
    count: int,
    connections: int,
    amount_minor: int,
    currency: str = "978",
    op: str = "redeem",
    keys: TerminalKeys | None = None,
    pin: str | None = None,
) -> LoadReport:
    """``count`` requests in all, spread over ``connections``; terminal and card round-robin.

    ``keys`` protect the requests (one terminal then); ``pin`` goes with every request.
    """
    assert count > 0 and connections > 0 and cards and terminals
    keys = keys or TerminalKeys()
    assert keys.profile == "none" or len(terminals) == 1, "the keys are one terminal's"
    assert not keys.dukpt or connections == 1, "a DUKPT device has one counter"
    latencies: list[float] = []
    rcs: Counter[str] = Counter()
    per_conn = [
        count // connections + (1 if i < count % connections else 0) for i in range(connections)
    ]

    notes: list[str] = []
    shared = keys.security()
    if keys.static:
        terminal, store = terminals[0]
        first = await open_link(host, port, keys, shared)
        async with first.conn:
            notes.append(await first.key_change(terminal, store))
        shared = first.security

    async def one_connection(index: int, n: int) -> None:
        terminal, store = terminals[index % len(terminals)]
        link: TerminalLink = await open_link(host, port, keys, shared)
        async with link.conn:
            for j in range(n):
                pan = cards[(index + j * connections) % len(cards)]
                req = build_request(
                    op,
                    terminal=terminal,
                    store=store,
                    pan=pan,
                    amount_minor=amount_minor,
                    currency=currency,
                )
                exchange = await link.send(req, pin)
                latencies.append(exchange.elapsed_s)
                rcs[summarize(exchange.answer).rc] += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, n in enumerate(per_conn):
            if n:
                nursery.start_soon(one_connection, i, n)
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return LoadReport(
        requests=len(latencies),
        connections=connections,
        elapsed_s=elapsed,
        rate_per_s=len(latencies) / elapsed if elapsed else 0.0,
        latency_ms={f"p{p:g}": _percentile(ordered, p) * 1000 for p in (50, 90, 99, 99.9)}
        | {"max": (ordered[-1] * 1000 if ordered else 0.0)},
        rc_counts=dict(rcs),
        security=keys.profile,
        notes=tuple(notes),
    )
