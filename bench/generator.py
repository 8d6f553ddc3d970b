"""The load generator: one trio task per terminal connection, closed or open loop.

Closed loop: each terminal sends one request and waits for its answer (``--closed N``).
Open loop: each connection follows its own schedule (constant interval or Poisson arrivals)
whatever the host does; a request's latency runs from its *intended* send time, so a late
send (the generator or the host falling behind) shows in the latency instead of disappearing
("coordinated omission"). Connections pipeline; the host answers each connection in order, so
an answer is matched with the oldest request in flight and its STAN is checked.

A client is one process (:func:`client_main`): it reports progress once a second and its
result (counters, HdrHistogram, its own CPU time) at the end through a multiprocessing queue.

Resource handling: every connection is closed when its task ends; the in-flight queue of a
connection is a bounded channel (``inflight_max``), so a stalled host stops the sender.

Error handling: a connection that fails (refused, reset, closed, an unreadable answer) or whose
oldest request times out counts its requests in flight as errors or time-outs and reconnects;
the run goes on until its end.

Terminal security (``bench.security``): a static-key terminal does a key change on each new
connection before its first request (not counted as a request); every request is MACed in
place, a DUKPT terminal taking the next counter for each; answers' MACs are checked (an answer
whose MAC does not verify is an error). The echo baseline sends unprotected requests.
"""

from __future__ import annotations

import collections
import math
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from bench.provision import CardNumbers
from bench.security import KeyChangeError, Sealer, TerminalKeyset
from bench.wire import (
    OPS,
    TIME_FIELDS_LEN,
    AnswerError,
    Clock,
    Template,
    answer_stan_rc,
    build_template,
)
from protocol.framing import encode_frame

__all__ = [
    "LATENCY_US_MAX",
    "ClientPlan",
    "Workload",
    "client_main",
    "new_histogram",
]

LATENCY_US_MIN = 1
LATENCY_US_MAX = 60_000_000  # larger latencies are recorded as 60 s
LATENCY_DIGITS = 3  # HdrHistogram precision: 0.1 % of the value
RECEIVE_BYTES_MAX = 65_536
RECONNECT_PAUSE_S = 0.1  # after a failed connection, before the next attempt
OP_TABLE_SIZE = 1000  # the mix as a lookup table: one random() per choice
APPROVED_KEPT_MAX = 256  # approved redeems per terminal that a reversal may name
LATE_SEND_S = 0.001  # an open-loop send this much behind its schedule counts as late
# Open loop: a request due within this time is sent now. The event loop's timers wake in whole
# milliseconds (epoll), so waiting for the exact time would make most sends late by up to 1 ms;
# an early send is measured from when it went, a late one from when it was due (see _Sent).
SEND_AHEAD_S = 0.001
PROGRESS_INTERVAL_S = 1.0
# Amounts in minor units: redeems 1.00-20.50, loads 5.00-50.00 (the product's load range).
REDEEM_AMOUNTS = tuple(b"%012d" % (100 + 50 * k) for k in range(40))
LOAD_AMOUNTS = tuple(b"%012d" % (500 * k) for k in range(1, 11))
ORIGINAL_MTI = b"0200"
PIN_REDEEM = "redeem+pin"  # a redeem with the card's PIN (--pin-share), reported apart
REDEEMS = frozenset({"redeem", PIN_REDEEM})


def new_histogram() -> Any:
    return HdrHistogram(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_DIGITS)


@dataclass(frozen=True, slots=True)
class Workload:
    """What the terminals send: the operation mix, which cards, how often a retransmission."""

    mix: dict[str, float]  # operation -> share (sums to 1)
    hot_requests: float  # share of requests that go to the hot cards (0: uniform)
    hot_cards: float  # share of the cards that are hot
    retransmit_share: float
    seed: int
    pin_share: float = 0.0  # share of redeems that carry a PIN block (a security profile only)


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """One generator process: its terminals and its part of the schedule."""

    client: int
    host: str
    port: int
    terminals: tuple[tuple[int, str, str], ...]  # (index, field 41, field 42)
    open_loop: bool
    rate_per_s: float  # open loop: this client's share of the offered rate
    poisson: bool
    start_at: float  # wall clock (time.time()) when the warm-up starts, the same for all
    warmup_s: float
    duration_s: float
    timeout_s: float
    inflight_max: int  # open loop: requests in flight per connection
    echo: bool  # the peer returns the request: no field 39 to read
    workload: Workload
    connections_total: int  # over all clients (the phase of each connection's schedule)
    # One per terminal, in the order of ``terminals`` (empty: no security profile).
    keysets: tuple[TerminalKeyset, ...] = ()


class _Sent:
    """One request on its way: what was sent and when it was meant to go."""

    __slots__ = (
        "card",
        "frame",
        "intended",
        "measured",
        "op",
        "original",
        "rc",
        "response_key",
        "sent_at",
        "stan",
    )

    def __init__(
        self, op: str, frame: bytes | bytearray, stan: bytes, card: int, original: _Sent | None
    ) -> None:
        self.op = op
        self.frame = frame
        self.stan = stan
        self.card = card
        self.original = original  # the request a retransmission repeats
        # Latency runs from the earlier of the two: from when it was due if it went late
        # (queueing in the generator is not hidden), from when it went if it went early.
        self.intended = 0.0  # when it was due
        self.sent_at = 0.0  # when it went: the time-out runs from here
        self.measured = False
        self.rc: bytes | None = None
        self.response_key = b""  # the key of its answer's MAC (security profiles)


class _Terminal:
    """Builds one terminal's requests from its templates; remembers its approved redeems."""

    def __init__(
        self,
        index: int,
        terminal: str,
        store: str,
        numbers: CardNumbers,
        workload: Workload,
        stan_start: int,
        keyset: TerminalKeyset | None = None,
    ) -> None:
        self.index = index
        self.id = terminal
        self.store = store
        profile = keyset.profile if keyset is not None else "none"
        self.sealer = Sealer(keyset) if keyset is not None and profile != "none" else None
        self.templates: dict[str, Template] = {
            op: build_template(op, terminal, store, security=profile) for op in OPS
        }
        self.pin_share = workload.pin_share if self.sealer is not None else 0.0
        if self.pin_share:
            self.templates[PIN_REDEEM] = build_template(
                "redeem", terminal, store, security=profile, pin=True
            )
        # Reproducible choices from the seed, not secrets: S311 does not apply.
        self.rng = random.Random(f"{workload.seed}:{index}")  # noqa: S311
        self.numbers = numbers
        self.cards = numbers.count
        self.hot_requests = workload.hot_requests
        self.hot_n = max(1, int(numbers.count * workload.hot_cards))
        self.retransmit_share = workload.retransmit_share
        table: list[str] = []
        for op in OPS:
            table += [op] * round(workload.mix.get(op, 0.0) * OP_TABLE_SIZE)
        self.op_table = table or ["redeem"]
        self.stan = stan_start
        self.approved: collections.deque[tuple[int, bytes, bytes, bytes]] = collections.deque(
            maxlen=APPROVED_KEPT_MAX
        )
        self.last: _Sent | None = None
        self.substituted = 0  # reversals sent as redeems: no approved redeem to name yet
        self.next_at = 0.0  # open loop: the intended time of the next request

    def _card(self) -> int:
        r = self.rng.random
        if self.hot_requests and r() < self.hot_requests:
            return int(r() * self.hot_n)
        return int(r() * self.cards)

    def next_request(self, clock: Clock) -> _Sent:
        r = self.rng.random
        last = self.last
        if last is not None and r() < self.retransmit_share:
            # The same bytes again, as a terminal that got no answer sends them (DESIGN §5):
            # the same MAC and, under DUKPT, the same KSN.
            again = _Sent("retransmit", last.frame, last.stan, last.card, last)
            again.response_key = last.response_key
            return again
        op = self.op_table[int(r() * len(self.op_table))]
        if op == "redeem" and self.pin_share and r() < self.pin_share:
            op = PIN_REDEEM
        original = None
        if op == "reversal":
            if self.approved:
                original = self.approved.pop()
            else:
                op = "redeem"
                self.substituted += 1
        stan = self.next_stan()
        sent, local = clock.fields()
        template = self.templates[op]
        frame = bytearray(template.frame)
        at = template.time_at
        frame[at : at + TIME_FIELDS_LEN] = sent + stan + local
        if original is None:
            card = self._card()
            amounts = LOAD_AMOUNTS if op == "load" else REDEEM_AMOUNTS
            amount = amounts[int(r() * len(amounts))]
        else:
            card, orig_stan, orig_sent, amount = original
            at = template.original_at
            frame[at : at + 20] = ORIGINAL_MTI + orig_stan + orig_sent
        at = template.pan_at
        frame[at : at + 16] = self.numbers.slice(card)
        if template.amount_at >= 0:
            at = template.amount_at
            frame[at : at + 12] = amount
        request = _Sent(op, frame, stan, card, None)
        if self.sealer is not None:
            request.response_key = self.sealer.seal(frame, template)
        self.last = request
        return request

    def next_stan(self) -> bytes:
        self.stan = self.stan % 999_999 + 1
        return b"%06d" % self.stan

    def remember_approved(self, request: _Sent) -> None:
        template = self.templates[request.op]
        at = template.time_at
        sent = bytes(request.frame[at : at + 10])
        amount_at = template.amount_at
        amount = bytes(request.frame[amount_at : amount_at + 12])
        self.approved.append((request.card, request.stan, sent, amount))


class _HostClosed(Exception):
    """The peer closed the connection."""


class _Connection:
    """A TCP connection with the 2-byte length framing, read into one buffer."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def send(self, frame: bytes | bytearray) -> None:
        await self.stream.send_all(frame)

    async def receive(self) -> bytes:
        buf = self.buf
        while True:
            if len(buf) >= 2:
                end = 2 + (buf[0] << 8 | buf[1])
                if len(buf) >= end:
                    payload = bytes(buf[2:end])
                    del buf[:end]
                    return payload
            data = await self.stream.receive_some(RECEIVE_BYTES_MAX)
            if not data:
                raise _HostClosed
            buf += data

    def take_frames(self) -> list[bytes]:
        """The complete frames received so far (without waiting)."""
        buf = self.buf
        frames = []
        while len(buf) >= 2:
            end = 2 + (buf[0] << 8 | buf[1])
            if len(buf) < end:
                break
            frames.append(bytes(buf[2:end]))
            del buf[:end]
        return frames

    async def fill(self) -> None:
        """Wait for more bytes from the peer."""
        data = await self.stream.receive_some(RECEIVE_BYTES_MAX)
        if not data:
            raise _HostClosed
        self.buf += data

    async def aclose(self) -> None:
        await self.stream.aclose()


class _Timeout(Exception):
    """The oldest request in flight on a connection got no answer in time."""


CONNECTION_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    _HostClosed,
    KeyChangeError,
)


@dataclass
class _Stats:
    """Counters of one client. ``*_total`` for progress; the rest only in the measured window."""

    sent_total: int = 0
    answered_total: int = 0
    errors_total: int = 0
    timeouts_total: int = 0
    latency_sum_us: int = 0  # progress: since the last report
    latency_n: int = 0
    latency_max_us: int = 0
    sent: int = 0
    answered: int = 0
    timeouts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rc: Counter[tuple[str, str]] = field(default_factory=Counter)  # (op, rc) -> count
    replays_differing: int = 0  # retransmissions answered with another rc than the original
    late_sends: int = 0
    connects: int = 0
    key_changes: int = 0


class Client:
    """One generator process's trio side."""

    def __init__(self, plan: ClientPlan, numbers: CardNumbers, report: Callable[..., None]):
        self.plan = plan
        self.report = report
        self.clock = Clock()
        self.stats = _Stats()
        self.hist = new_histogram()
        self.lag_hist = new_histogram()  # open loop: actual minus intended send time
        stan_start = int(time.time()) % 900_000  # runs on one store do not reuse a STAN soon
        assert not plan.keysets or len(plan.keysets) == len(plan.terminals)
        keysets = plan.keysets if plan.keysets and not plan.echo else (None,) * len(plan.terminals)
        self.terminals = [
            _Terminal(index, tid, sid, numbers, plan.workload, stan_start, keyset)
            for (index, tid, sid), keyset in zip(plan.terminals, keysets, strict=True)
        ]
        self.inflight = 0
        self.t0 = self.m_start = self.m_end = 0.0
        self.cpu_start = self.cpu_end = 0.0
        self.wall_start = self.wall_end = 0.0

    # -- bookkeeping ---------------------------------------------------------------------------
    def _error(self, kind: str, measured: bool) -> None:
        self.stats.errors_total += 1
        if measured:
            self.stats.errors[kind] += 1

    def _in_window(self, at: float) -> bool:
        return self.m_start <= at < self.m_end

    def _failed(self, kind: str, requests: list[_Sent]) -> None:
        """Requests that will get no answer on a connection that is given up."""
        for request in requests:
            self.inflight -= 1
            if kind == "timeout":
                self.stats.timeouts_total += 1
                if request.measured:
                    self.stats.timeouts += 1
            else:
                self._error(kind, request.measured)

    def _sent(self, request: _Sent) -> None:
        self.inflight += 1
        self.stats.sent_total += 1
        if request.measured:
            self.stats.sent += 1

    def _answered(self, term: _Terminal, request: _Sent, payload: bytes, now: float) -> None:
        self.inflight -= 1
        stats = self.stats
        try:
            stan, rc = answer_stan_rc(payload)
        except AnswerError:
            self._error("unreadable answer", request.measured)
            return
        if stan != request.stan:
            self._error("answer for another STAN", request.measured)
            return
        if not rc and not self.plan.echo:
            self._error("answer without field 39", request.measured)
            return
        sealer = term.sealer
        if sealer is not None and not sealer.answer_ok(payload, rc, request.response_key):
            self._error("answer MAC does not verify", request.measured)
            return
        latency_us = int((now - min(request.intended, request.sent_at)) * 1e6)
        stats.answered_total += 1
        stats.latency_sum_us += latency_us
        stats.latency_n += 1
        if latency_us > stats.latency_max_us:
            stats.latency_max_us = latency_us
        request.rc = rc
        if request.measured:
            stats.answered += 1
            self.hist.record_value(min(max(latency_us, LATENCY_US_MIN), LATENCY_US_MAX))
            stats.rc[(request.op, rc.decode("ascii", "replace") or "echo")] += 1
        if request.op in REDEEMS and rc == b"00":
            term.remember_approved(request)
        elif request.op == "retransmit" and request.measured:
            original = request.original
            assert original is not None
            if original.rc is not None and original.rc != rc:
                stats.replays_differing += 1

    async def _connect(self) -> _Connection | None:
        try:
            stream = await trio.open_tcp_stream(self.plan.host, self.plan.port)
        except OSError:
            self._error("connect", self._in_window(trio.current_time()))
            await trio.sleep(RECONNECT_PAUSE_S)
            return None
        self.stats.connects += 1
        return _Connection(stream)

    async def _key_change(self, conn: _Connection, term: _Terminal) -> None:
        """A static-key terminal's key change on a new connection, before its first request.

        Error handling: :class:`KeyChangeError` (the connection is given up and retried).
        """
        sealer = term.sealer
        assert sealer is not None and sealer.static
        sealed = sealer.key_change_request(term.id, term.store, term.next_stan().decode())
        await conn.send(encode_frame(sealed.payload))
        with trio.move_on_after(self.plan.timeout_s) as waited:
            payload = await conn.receive()
        if waited.cancelled_caught:
            raise KeyChangeError("no answer to the key change")
        sealer.take_key_change(sealed, payload)
        self.stats.key_changes += 1

    async def _ready(self, conn: _Connection, term: _Terminal) -> bool:
        """Whether a new connection may carry requests (a static-key terminal's key change
        first); a failed key change counts as an error and closes the connection."""
        if term.sealer is None or not term.sealer.static:
            return True
        try:
            await self._key_change(conn, term)
        except CONNECTION_ERRORS as exc:
            kind = "key change" if isinstance(exc, KeyChangeError) else "connection"
            self._error(kind, self._in_window(trio.current_time()))
            with trio.CancelScope(shield=True):
                await conn.aclose()
            await trio.sleep(RECONNECT_PAUSE_S)
            return False
        return True

    # -- closed loop ---------------------------------------------------------------------------
    async def _closed(self, term: _Terminal) -> None:
        timeout_s = self.plan.timeout_s
        first = True
        while trio.current_time() < self.m_end:
            conn = await self._connect()
            if conn is None or not await self._ready(conn, term):
                continue
            if first:
                first = False
                await trio.sleep_until(self.t0)
            request: _Sent | None = None
            try:
                while (now := trio.current_time()) < self.m_end:
                    request = term.next_request(self.clock)
                    request.intended = request.sent_at = now
                    request.measured = now >= self.m_start
                    self._sent(request)
                    await conn.send(request.frame)
                    with trio.move_on_after(timeout_s) as waited:
                        payload = await conn.receive()
                    if waited.cancelled_caught:
                        self._failed("timeout", [request])
                        break  # reconnect: a late answer must not be taken for the next one
                    self._answered(term, request, payload, trio.current_time())
                    request = None
            except CONNECTION_ERRORS:
                self._failed("connection", [request] if request is not None else [])
                await trio.sleep(RECONNECT_PAUSE_S)
            finally:
                with trio.CancelScope(shield=True):
                    await conn.aclose()

    # -- open loop -----------------------------------------------------------------------------
    def _interval(self, term: _Terminal, rate_per_conn: float) -> float:
        if self.plan.poisson:
            return term.rng.expovariate(rate_per_conn)
        return 1.0 / rate_per_conn

    async def _open(self, term: _Terminal, rate_per_conn: float) -> None:
        while term.next_at < self.m_end:
            conn = await self._connect()
            if conn is None or not await self._ready(conn, term):
                self._skip_missed(term, rate_per_conn)
                continue
            inflight: collections.deque[_Sent] = collections.deque()
            try:
                await self._open_connection(conn, term, rate_per_conn, inflight)
            except _Timeout:
                # The oldest timed out; the others are cut with the connection.
                self._failed("timeout", [inflight.popleft()])
                self._failed("cut by a time-out", list(inflight))
            except CONNECTION_ERRORS:
                self._failed("connection", list(inflight))
                await trio.sleep(RECONNECT_PAUSE_S)
            finally:
                with trio.CancelScope(shield=True):
                    await conn.aclose()

    def _skip_missed(self, term: _Terminal, rate_per_conn: float) -> None:
        """Requests whose time passed while there was no connection: never sent, each an
        error (the schedule does not wait for the host)."""
        now = trio.current_time()
        while term.next_at < min(now, self.m_end):
            self._error("not sent: no connection", self._in_window(term.next_at))
            term.next_at += self._interval(term, rate_per_conn)

    async def _open_connection(
        self,
        conn: _Connection,
        term: _Terminal,
        rate_per_conn: float,
        inflight: collections.deque[_Sent],
    ) -> None:
        """One task per connection: send what is due, then wait for whichever comes first,
        an answer, the next send time or the oldest request's time-out (one cancel scope per
        wait; answers come in request order)."""
        timeout_s = self.plan.timeout_s
        window = self.plan.inflight_max
        m_start, m_end = self.m_start, self.m_end
        stats = self.stats
        while True:
            now = trio.current_time()
            while (
                term.next_at <= now + SEND_AHEAD_S
                and term.next_at < m_end
                and len(inflight) < window
            ):
                intended = term.next_at
                term.next_at = intended + self._interval(term, rate_per_conn)
                request = term.next_request(self.clock)
                request.intended = intended
                request.sent_at = now
                request.measured = intended >= m_start
                inflight.append(request)
                self._sent(request)
                if request.measured:  # early sends count as on time
                    lag_us = int((now - intended) * 1e6)
                    self.lag_hist.record_value(min(max(lag_us, LATENCY_US_MIN), LATENCY_US_MAX))
                    if now - intended > LATE_SEND_S:
                        stats.late_sends += 1
                await conn.send(request.frame)
                now = trio.current_time()
            more = term.next_at < m_end
            if not inflight and not more:
                return
            deadline = inflight[0].sent_at + timeout_s if inflight else math.inf
            if more and len(inflight) < window:
                deadline = min(deadline, term.next_at - SEND_AHEAD_S)
            with trio.move_on_at(deadline):
                await conn.fill()
            for payload in conn.take_frames():
                if not inflight:
                    self._error("answer to nothing sent", True)
                    continue
                self._answered(term, inflight.popleft(), payload, trio.current_time())
            if inflight and trio.current_time() >= inflight[0].sent_at + timeout_s:
                raise _Timeout

    # -- the run -------------------------------------------------------------------------------
    async def _phases(self) -> None:
        await trio.sleep_until(self.m_start)
        self.cpu_start, self.wall_start = time.process_time(), time.time()
        await trio.sleep_until(self.m_end)
        self.cpu_end, self.wall_end = time.process_time(), time.time()

    async def _progress(self) -> None:
        s = self.stats
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            self.report(
                "progress",
                {
                    "sent": s.sent_total,
                    "answered": s.answered_total,
                    "errors": s.errors_total,
                    "timeouts": s.timeouts_total,
                    "latency_sum_us": s.latency_sum_us,
                    "latency_n": s.latency_n,
                    "latency_max_us": s.latency_max_us,
                    "inflight": self.inflight,
                },
            )
            s.latency_sum_us = s.latency_n = s.latency_max_us = 0

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        self.t0 = trio.current_time() + (plan.start_at - time.time())
        self.m_start = self.t0 + plan.warmup_s
        self.m_end = self.m_start + plan.duration_s
        conns = plan.connections_total
        rate_per_conn = plan.rate_per_s / len(self.terminals) if plan.open_loop else 0.0
        async with trio.open_nursery() as outer:
            outer.start_soon(self._progress)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._phases)
                for term in self.terminals:
                    if plan.open_loop:
                        # Spread the connections' first sends over one interval.
                        phase = term.index / conns / rate_per_conn if not plan.poisson else 0.0
                        term.next_at = self.t0 + phase
                        nursery.start_soon(self._open, term, rate_per_conn)
                    else:
                        nursery.start_soon(self._closed, term)
            outer.cancel_scope.cancel()
        return self._result()

    def _result(self) -> dict[str, Any]:
        s = self.stats
        return {
            "client": self.plan.client,
            "connections": len(self.terminals),
            "sent": s.sent,
            "answered": s.answered,
            "timeouts": s.timeouts,
            "errors": dict(s.errors),
            "rc": [[op, rc, n] for (op, rc), n in sorted(s.rc.items())],
            "replays_differing": s.replays_differing,
            "reversals_substituted": sum(t.substituted for t in self.terminals),
            "late_sends": s.late_sends,
            "connects": s.connects,
            "key_changes": s.key_changes,
            "cpu_s": self.cpu_end - self.cpu_start,
            "wall_s": self.wall_end - self.wall_start,
            "histogram": self.hist.encode().decode("ascii"),
            "lag_histogram": self.lag_hist.encode().decode("ascii")
            if self.plan.open_loop
            else None,
        }


def client_main(plan: ClientPlan, numbers: CardNumbers, queue: Any) -> None:
    """Entry point of a generator process (forked: ``numbers`` is shared, not copied)."""

    def report(kind: str, data: dict[str, Any]) -> None:
        queue.put((plan.client, kind, data))

    # Ctrl-C reaches the whole process group: the parent decides and stops the clients.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        client = Client(plan, numbers, report)
        result = trio.run(client.run)
    except BaseException as exc:
        report("failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    report("result", result)
