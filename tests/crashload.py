"""Crash-load driver for ``tests/test_crash.py``.

A real host (``authsrv serve``) is killed with SIGKILL at random moments while several terminals
drive a mixed load, then restarted on the same port. After every restart the load is paused and
the ledger is audited against the terminals' own model of their cards.

Each terminal owns its cards and sends one request at a time, so it can predict every answer
exactly (response code, approved amount, balance after). A request whose answer does not arrive
is *in doubt*: the terminal sends the same message again (0401/0421 for reversals) until an
answer comes, or it gives up and sends a 0420 reversal advice instead (a terminal time-out).
Only answers move the model; whatever the host did with an unanswered message must be settled
by the answer to its retransmission or by the advice that reversed it (DESIGN §5).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from authsrv.admin import add_store, add_terminal
from authsrv.app import open_store
from authsrv.model import Store, Terminal, Transfer, card_account
from authsrv.store import Ledger
from protocol.messages import encode_message, response_mti
from protocol.tlv import decode_balances
from simulators.terminal import (
    SimError,
    TerminalConnection,
    as_repeat,
    build_request,
    decode_response,
)
from tests.helpers import CHAIN, authsrv_cmd, provision

__all__ = ["CrashStats", "run_crash_load"]

# -- limits (every wait is bounded) -------------------------------------------------------------
ANSWER_TIMEOUT_S = 5.0  # a terminal waits this long for an answer before it retransmits
CONNECT_RETRY_S = 0.02  # pause between connection attempts while the host is down
REQUEST_DEADLINE_S = 40.0  # one request must be answered within this, across all restarts
HOST_STARTUP_TIMEOUT_S = 20.0
HOST_STOP_TIMEOUT_S = 20.0
HOST_WATCH_INTERVAL_S = 0.05
CHECK_TIMEOUT_S = 120.0
RUN_DEADLINE_S = 120.0  # the whole run, plus this much per kill
RUN_DEADLINE_PER_KILL_S = 15.0
KILL_DELAY_MIN_S = 0.05  # load between a restart and the next SIGKILL
KILL_DELAY_MAX_S = 0.40
DOWNTIME_MAX_S = 0.20  # sometimes the host stays down a little while terminals retry
MAP_SIZE_MIB = 4096  # the host's default map; a read-only open uses what the file has
HISTORY_ROWS_MAX = 10**9

# -- the product and the load -------------------------------------------------------------------
BALANCE_MAX_MINOR = 100_000  # gift_product(): max balance 1000.00, loads 5.00 - 500.00
LOAD_MIN_MINOR = 500
CARDS_PER_TERMINAL = 3
# (terminal, store): the three provisioned terminals plus three added for this test.
TERMINALS: tuple[tuple[str, str], ...] = (
    ("T0000001", "S0001"),
    ("T0000002", "S0001"),
    ("T0000003", "S0002"),
    ("T0000004", "S0001"),
    ("T0000005", "S0002"),
    ("T0000006", "S0003"),
)
EXTRA_STORES = ("S0003",)
# Share of 0200 requests per delivery: the answer is "lost" (the terminal drops the line and
# retransmits), the terminal times out (0420 instead of a retransmission), or the request is
# lost on the way (0420, then the late original must get 05).
P_ANSWER_LOST = 0.06
P_TIMEOUT_SENT = 0.04
P_TIMEOUT_UNSENT = 0.02
P_ECHO_DUPLICATE = 0.04  # resend an answered request at once: the answer must be replayed
CREDIT_OPS = frozenset({"activate", "load", "refund"})
REVERSIBLE_OPS = frozenset({"redeem", "load", "refund"})
CONNECTION_ERRORS = (SimError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


# -- the terminals' model -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SeenApproval:
    """An answered approval that moved money: it must be in the journal exactly once."""

    terminal: str
    stan: str
    op: str  # as journalled: activate, redeem, load, refund, reversal
    delta_minor: int  # signed, seen from the card
    rrn: str
    approval: str


@dataclass(slots=True)
class Original:
    """An answered 0200 that a later 0400 may name."""

    fields: dict[str, str]
    op: str
    requested_minor: int
    approved_minor: int  # 0 when declined
    reversed_minor: int = 0


@dataclass(frozen=True, slots=True)
class GivenUp:
    """A 0200 the terminal stopped waiting for and reversed with a 0420.

    The journal holds either nothing for both, or the original's transfer (its answer never
    seen) and the advice's transfer that takes exactly that amount back.
    """

    terminal: str
    original_stan: str
    op: str
    requested_minor: int
    sent: bool
    advice_stan: str
    advice_rrn: str
    advice_approval: str


@dataclass(slots=True)
class CardModel:
    pan: str
    card_id: int
    balance_minor: int = 0
    active: bool = False
    seen: list[SeenApproval] = field(default_factory=list)
    originals: list[Original] = field(default_factory=list)
    given_up: list[GivenUp] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Expected:
    rc: str
    approved_minor: int = 0
    delta_minor: int = 0  # what the card's balance moves by


def expected_for(card: CardModel, op: str, amount: int, partial: bool) -> Expected:
    """The exact answer of a 0200 (DESIGN §3, the product limits of ``gift_product``)."""
    balance = card.balance_minor
    if op == "activate":
        return Expected("00", amount, amount)
    if op == "redeem":
        if amount <= balance:
            return Expected("00", amount, -amount)
        if partial and balance > 0:
            return Expected("10", balance, -balance)
        return Expected("51")
    assert op in ("load", "refund"), op
    if balance + amount > BALANCE_MAX_MINOR:
        return Expected("61")
    return Expected("00", amount, amount)


def expected_reversal(card: CardModel, original: Original) -> Expected:
    """The exact answer of a 0400 naming ``original`` (DESIGN §5)."""
    left = original.approved_minor - original.reversed_minor
    if left == 0:
        return Expected("00")  # declined or already reversed: nothing moves
    if original.op not in CREDIT_OPS:
        return Expected("00", left, left)
    if card.balance_minor < left:
        return Expected("57")  # the value has been spent since
    return Expected("00", left, -left)


# -- statistics ---------------------------------------------------------------------------------
@dataclass(slots=True)
class CrashStats:
    seed: int = 0
    kills: int = 0
    requests: int = 0  # distinct requests (each with its own STAN)
    transmissions: int = 0  # frames sent, retransmissions included
    answered: int = 0
    approvals: int = 0  # answered approvals (00/10) of any kind
    declines: int = 0
    in_doubt_after_kill: int = 0  # the line broke while waiting; answered on a retransmission
    in_doubt_replayed: int = 0  # ... of which the host had committed (its answer a replay)
    answers_lost_on_purpose: int = 0  # the terminal dropped the line, then retransmitted
    timeouts_reversed: int = 0  # 0420 sent instead of a retransmission
    late_originals_declined: int = 0  # a 0200 that arrived after its 0420 got 05
    reversals_0400: int = 0
    echo_duplicates: int = 0  # answered requests sent again at once: identical answer
    answer_timeouts: int = 0
    audits: int = 0
    approvals_checked: int = 0  # journal matches of seen approvals, summed over all audits
    approvals_final: int = 0  # distinct seen approvals that moved money, at the last audit
    given_up_settled_with_pair: int = 0  # at the last audit: original applied, then reversed
    replays_logged: int = 0  # "replayed" request lines in the host logs
    duration_s: float = 0.0

    def summary(self) -> str:
        return (
            f"crash test seed={self.seed}: kills={self.kills} requests={self.requests} "
            f"transmissions={self.transmissions} answered={self.answered} "
            f"approvals={self.approvals} declines={self.declines} "
            f"in_doubt_after_kill={self.in_doubt_after_kill} "
            f"(replayed {self.in_doubt_replayed}) "
            f"answers_lost_on_purpose={self.answers_lost_on_purpose} "
            f"timeouts_reversed={self.timeouts_reversed} "
            f"late_originals_declined={self.late_originals_declined} "
            f"reversals_0400={self.reversals_0400} echo_duplicates={self.echo_duplicates} "
            f"replays_logged={self.replays_logged} audits={self.audits} "
            f"approvals_checked={self.approvals_checked} approvals_final={self.approvals_final} "
            f"given_up_applied_then_reversed={self.given_up_settled_with_pair} "
            f"answer_timeouts={self.answer_timeouts} duration={self.duration_s:.1f}s"
        )


# -- the host process ---------------------------------------------------------------------------
def pick_port() -> int:
    """A free port below the ephemeral range: a terminal retrying while the host is down could
    otherwise get that very port as its source and connect to itself."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12_000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def host_env() -> dict[str, str]:
    """The environment for ``authsrv`` processes. This test's own settings are ``CRASH_*``, not
    ``AUTHSRV_*``: the host reads every ``AUTHSRV_*`` variable and refuses unknown ones."""
    return {**os.environ, "AUTHSRV_SECURITY_DEMO_MODE": "true"}


def run_check(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*authsrv_cmd(), "check", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        env=host_env(),
        check=False,
    )


class HostProcess:
    """``authsrv serve`` on a fixed port, started, killed and restarted by the test.

    Resource handling: :meth:`close` kills a host that is still running.
    """

    def __init__(self, data: Path, port: int, log_dir: Path) -> None:
        self.data = data
        self.port = port
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = log_dir / "host-000.log"

    async def start(self) -> None:
        assert self.proc is None
        self.starts += 1
        self.log_path = self.log_dir / f"host-{self.starts:03d}.log"
        cmd = [*authsrv_cmd(), "serve", "--data", str(self.data), "--port", str(self.port)]
        env = {**host_env(), "AUTHSRV_METRICS_ENABLED": "false"}
        with self.log_path.open("wb") as log_fh:
            self.proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env)
        deadline = trio.current_time() + HOST_STARTUP_TIMEOUT_S
        while not any(e.get("event") == "listening" for e in self.log_events()):
            if self.proc.poll() is not None:
                raise AssertionError(f"host exited at start: {self.log_tail()}")
            if trio.current_time() > deadline:
                raise AssertionError(f"host not listening after restart: {self.log_tail()}")
            await trio.sleep(0.02)

    def assert_alive(self) -> None:
        """Only the test stops the host: a peer that hangs up or a retransmission must not."""
        proc = self.proc
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"host exited on its own ({proc.returncode}) in life {self.starts}: "
                f"{self.log_tail()}"
            )

    def kill(self) -> None:
        """SIGKILL: no drain, no commit of anything not yet committed."""
        self.assert_alive()
        proc = self.proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(HOST_STOP_TIMEOUT_S)
        self.proc = None

    async def stop(self) -> None:
        """SIGTERM: the host drains and must exit 0."""
        proc = self.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        returncode = await trio.to_thread.run_sync(proc.wait, HOST_STOP_TIMEOUT_S)
        self.proc = None
        assert returncode == 0, f"host exited {returncode} after SIGTERM: {self.log_tail()}"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def log_events(self, path: Path | None = None) -> list[dict[str, object]]:
        events = []
        for raw in (path or self.log_path).read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    events.append(json.loads(raw))
                except json.JSONDecodeError:
                    continue  # the last line of a killed host may be cut short
        return events

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def replays_logged(self) -> list[tuple[str, str]]:
        """(terminal, STAN) of every answer the host logged as a replay, in all its lives."""
        return [
            (str(e.get("terminal")), str(e.get("stan")))
            for path in sorted(self.log_dir.glob("host-*.log"))
            for e in self.log_events(path)
            if e.get("event") == "request" and e.get("replayed")
        ]


# -- pausing the load for an audit --------------------------------------------------------------
class Gate:
    """Terminals pass :meth:`checkpoint` between requests; :meth:`pause` returns once every
    terminal waits there (each has its current request answered), :meth:`resume` lets them on."""

    def __init__(self) -> None:
        self.members = 0
        self._paused = False
        self._parked = 0
        self._resume = trio.Event()
        self._all_parked = trio.Event()

    def join(self) -> None:
        self.members += 1

    def leave(self) -> None:
        self.members -= 1
        self._check_all_parked()

    async def checkpoint(self) -> None:
        if not self._paused:
            return
        resume = self._resume
        self._parked += 1
        self._check_all_parked()
        await resume.wait()

    async def pause(self) -> None:
        self._paused = True
        self._parked = 0
        self._resume = trio.Event()
        self._all_parked = trio.Event()
        self._check_all_parked()
        await self._all_parked.wait()

    def resume(self) -> None:
        self._paused = False
        self._resume.set()

    def _check_all_parked(self) -> None:
        if self._paused and self._parked >= self.members:
            self._all_parked.set()


# -- one terminal -------------------------------------------------------------------------------
@dataclass
class Shared:
    port: int
    gate: Gate
    stats: CrashStats
    requests_per_terminal_max: int
    done: bool = False
    # (terminal, STAN) of requests in doubt after a kill and answered on a retransmission.
    resolved_after_kill: set[tuple[str, str]] = field(default_factory=set)


class TerminalClient:
    """One terminal: one connection, one request at a time, its own cards and STANs."""

    def __init__(
        self,
        shared: Shared,
        terminal_id: str,
        store_id: str,
        cards: list[CardModel],
        rng: random.Random,
    ) -> None:
        self.shared = shared
        self.stats = shared.stats
        self.terminal_id = terminal_id
        self.store_id = store_id
        self.cards = cards
        self.rng = rng
        self.conn: TerminalConnection | None = None
        self.stan_seq = 0
        self.requests = 0
        shared.gate.join()  # before the task starts: a pause must wait for this terminal too

    async def run(self) -> None:
        gate = self.shared.gate
        try:
            while True:
                await gate.checkpoint()
                if self.shared.done or self.requests >= self.shared.requests_per_terminal_max:
                    return
                await self.step()
        finally:
            gate.leave()
            await self.disconnect()

    # -- choosing what to do ------------------------------------------------------------------
    async def step(self) -> None:
        card = self.rng.choice(self.cards)
        rng = self.rng
        if not card.active:
            await self.financial(card, "activate", rng.randrange(LOAD_MIN_MINOR, 30_001))
            return
        roll = rng.random()
        open_originals = [o for o in card.originals if o.approved_minor > o.reversed_minor]
        if roll < 0.15 and card.originals:
            # Mostly an approval not yet reversed; sometimes one that is (or a decline).
            pool = open_originals if open_originals and rng.random() < 0.8 else card.originals
            await self.reverse(card, rng.choice(pool))
        elif roll < 0.32:
            await self.financial(card, "load", rng.randrange(LOAD_MIN_MINOR, 20_001))
        elif roll < 0.45:
            await self.financial(card, "refund", rng.randrange(1, 5_001))
        else:
            ceiling = max(200, card.balance_minor * 5 // 4)
            partial = rng.random() < 0.3
            await self.financial(card, "redeem", rng.randrange(1, ceiling + 1), partial)

    def next_stan(self) -> str:
        self.stan_seq += 1
        self.requests += 1
        self.stats.requests += 1
        return f"{self.stan_seq:06d}"

    def build(
        self,
        op: str,
        card: CardModel,
        amount: int,
        *,
        partial: bool = False,
        original: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        # Field 7 is the clock at the first transmission and stays on every retransmission.
        return build_request(
            op,
            terminal=self.terminal_id,
            store=self.store_id,
            pan=card.pan,
            amount_minor=amount,
            partial=partial,
            stan=self.next_stan(),
            original=original,
        )

    # -- the operations -----------------------------------------------------------------------
    async def financial(self, card: CardModel, op: str, amount: int, partial: bool = False) -> None:
        request = self.build(op, card, amount, partial=partial)
        roll = self.rng.random()
        if roll < P_TIMEOUT_UNSENT:
            await self.time_out(card, op, request, sent=False)
            return
        if roll < P_TIMEOUT_UNSENT + P_TIMEOUT_SENT:
            await self.time_out(card, op, request, sent=True)
            return
        lost = roll < P_TIMEOUT_UNSENT + P_TIMEOUT_SENT + P_ANSWER_LOST
        expected = expected_for(card, op, amount, partial)
        answer = await self.transact(request, answer_lost=lost)
        self.check_answer(card, request, answer, expected)
        await self.maybe_echo(request, answer)
        self.apply(card, request, answer, expected, op)
        if op in REVERSIBLE_OPS:
            card.originals.append(Original(request, op, amount, expected.approved_minor))
        elif op == "activate" and expected.rc == "00":
            card.active = True

    async def reverse(self, card: CardModel, original: Original) -> None:
        """A 0400 naming an answered 0200; field 4 is its requested or its approved amount."""
        amount = original.requested_minor
        if original.approved_minor and self.rng.random() < 0.5:
            amount = original.approved_minor
        request = self.build("reverse", card, amount, original=original.fields)
        expected = expected_reversal(card, original)
        answer = await self.transact(request, answer_lost=self.rng.random() < P_ANSWER_LOST)
        self.stats.reversals_0400 += 1
        self.check_answer(card, request, answer, expected)
        await self.maybe_echo(request, answer)
        self.apply(card, request, answer, expected, "reversal")
        if expected.delta_minor:
            original.reversed_minor += abs(expected.delta_minor)

    async def time_out(
        self, card: CardModel, op: str, request: dict[str, str], *, sent: bool
    ) -> None:
        """The terminal gets no answer and reverses with a 0420 instead of retransmitting.

        ``sent``: the request went out (the host may or may not have applied it); otherwise it
        was lost on the way, the 0420 leaves a tombstone and the late original must get 05.
        """
        if sent:
            await self.send_and_drop(request)
        amount = int(request["4"])
        advice = self.build("reverse-advice", card, amount, original=request)
        answer = await self.transact(advice)
        self.stats.timeouts_reversed += 1
        # Whatever the original did, the advice leaves the card where it was before it.
        self.check_answer(card, advice, answer, Expected("00"))
        self.count(answer)
        card.given_up.append(
            GivenUp(
                terminal=self.terminal_id,
                original_stan=request["11"],
                op=op,
                requested_minor=amount,
                sent=sent,
                advice_stan=advice["11"],
                advice_rrn=answer.get("37", ""),
                advice_approval=answer.get("38", ""),
            )
        )
        if not sent:
            late = await self.transact(request)
            assert late.get("39") == "05", (
                f"{self.terminal_id} stan {request['11']}: the original after its 0420 got "
                f"{late.get('39')}, expected 05 (tombstone)"
            )
            assert "38" not in late, late
            self.stats.late_originals_declined += 1

    # -- answers and the model ----------------------------------------------------------------
    def check_answer(
        self,
        card: CardModel,
        request: Mapping[str, str],
        answer: Mapping[str, str],
        expected: Expected,
    ) -> None:
        where = (
            f"{self.terminal_id} stan {request['11']} mti {request['t']} proc {request.get('3')} "
            f"amount {request.get('4')} (model balance {card.balance_minor})"
        )
        assert answer.get("39") == expected.rc, f"{where}: rc {answer.get('39')}, want {expected}"
        approved = expected.rc in ("00", "10")
        if approved:
            assert answer.get("38") and answer.get("37"), f"{where}: approval without 37/38"
        if request["t"] == "0200" and approved:
            assert int(answer["4"]) == expected.approved_minor, f"{where}: approved {answer['4']}"
        if "54" in answer:
            ledger = [
                b.amount_minor for b in decode_balances(answer["54"]) if b.amount_type == "01"
            ]
            want = card.balance_minor + expected.delta_minor
            assert ledger == [want], f"{where}: field 54 ledger {ledger}, model {want}"

    def apply(
        self,
        card: CardModel,
        request: Mapping[str, str],
        answer: Mapping[str, str],
        expected: Expected,
        op: str,
    ) -> None:
        self.count(answer)
        if expected.delta_minor == 0:
            return
        card.balance_minor += expected.delta_minor
        card.seen.append(
            SeenApproval(
                terminal=self.terminal_id,
                stan=request["11"],
                op=op,
                delta_minor=expected.delta_minor,
                rrn=answer["37"],
                approval=answer["38"],
            )
        )

    def count(self, answer: Mapping[str, str]) -> None:
        if answer.get("39") in ("00", "10"):
            self.stats.approvals += 1
        else:
            self.stats.declines += 1

    async def maybe_echo(self, request: Mapping[str, str], answer: Mapping[str, str]) -> None:
        """Sometimes send an answered request again: the stored decision must come back."""
        if self.rng.random() >= P_ECHO_DUPLICATE:
            return
        again = await self.transact(as_repeat(request))
        keys = ("39", "38", "37", "4", "54")
        assert {k: again.get(k) for k in keys} == {k: answer.get(k) for k in keys}, (
            f"{self.terminal_id} stan {request['11']}: duplicate answered {again}, first {answer}"
        )
        self.stats.echo_duplicates += 1

    # -- the line -----------------------------------------------------------------------------
    async def connect(self, deadline: float) -> TerminalConnection:
        while self.conn is None:
            if trio.current_time() > deadline:
                raise AssertionError(f"{self.terminal_id}: cannot reach the host")
            try:
                conn = await TerminalConnection.open("127.0.0.1", self.shared.port)
            except SimError:
                await trio.sleep(CONNECT_RETRY_S)
                continue
            try:
                sock = conn.stream.socket
                usable = sock.getsockname() != sock.getpeername()  # not connected to itself
            except OSError:  # reset already (the host was killed right after accepting)
                usable = False
            if not usable:
                await conn.stream.aclose()
                await trio.sleep(CONNECT_RETRY_S)
                continue
            self.conn = conn
        return self.conn

    async def disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await conn.stream.aclose()

    async def send_and_drop(self, request: Mapping[str, str]) -> None:
        """Send once and hang up without reading: the answer, if any, is lost."""
        deadline = trio.current_time() + REQUEST_DEADLINE_S
        try:
            conn = await self.connect(deadline)
            await conn.send_raw(encode_message(request))
            self.stats.transmissions += 1
        except CONNECTION_ERRORS:
            pass
        await self.disconnect()

    async def transact(
        self, request: Mapping[str, str], *, answer_lost: bool = False
    ) -> dict[str, str]:
        """Send until answered; a retransmission of a 0400/0420 is its repeat (0401/0421)."""
        message: Mapping[str, str] = request
        in_doubt = False
        if answer_lost:
            await self.send_and_drop(request)
            self.stats.answers_lost_on_purpose += 1
            message = as_repeat(request)
        deadline = trio.current_time() + REQUEST_DEADLINE_S
        while True:
            conn = await self.connect(deadline)
            try:
                await conn.send_raw(encode_message(message))
                self.stats.transmissions += 1
                with trio.move_on_after(ANSWER_TIMEOUT_S) as waited:
                    raw = await conn.receive_raw()
                if not waited.cancelled_caught:
                    answer = decode_response(raw)
                    assert answer.get("t") == response_mti(message["t"]), answer
                    assert answer.get("11") == request["11"], answer
                    assert answer.get("41") == request["41"], answer
                    self.stats.answered += 1
                    if in_doubt:
                        self.stats.in_doubt_after_kill += 1
                        self.shared.resolved_after_kill.add((self.terminal_id, request["11"]))
                    return answer
                self.stats.answer_timeouts += 1
            except CONNECTION_ERRORS:
                pass
            in_doubt = True  # sent (or partly sent) and the line broke: retransmit
            await self.disconnect()
            if trio.current_time() > deadline:
                raise AssertionError(
                    f"{self.terminal_id} stan {request['11']}: no answer in {REQUEST_DEADLINE_S} s"
                )
            message = as_repeat(request)


# -- the audit ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CardLedger:
    state: str
    balance_minor: int
    history: list[Transfer]


def read_cards(data: Path, card_ids: list[int]) -> dict[int, CardLedger]:
    """The cards' ledger state; the store is opened read-only and closed again at once."""
    store = open_store(data, MAP_SIZE_MIB, readonly=True)
    try:
        with store.read() as led:
            return {card_id: _card_ledger(led, card_id) for card_id in card_ids}
    finally:
        store.close()


def _card_ledger(led: Ledger, card_id: int) -> CardLedger:
    card = led.card(card_id)
    assert card is not None, f"card {card_id} missing"
    return CardLedger(
        card.state.value,
        led.balance(card_account(card_id)),
        led.card_history(card_id, HISTORY_ROWS_MAX),
    )


def _delta(card_id: int, t: Transfer) -> int:
    account = card_account(card_id)
    if t.credit == account:
        return t.amount_minor
    assert t.debit == account, t
    return -t.amount_minor


def audit_card(card: CardModel, ledger: CardLedger) -> tuple[list[str], int, int]:
    """Problems of one card, the number of seen approvals matched, and of given-up requests
    the host had applied (then reversed)."""
    problems: list[str] = []
    name = f"card {card.card_id}"
    if ledger.balance_minor != card.balance_minor:
        problems.append(f"{name}: ledger {ledger.balance_minor}, model {card.balance_minor}")
    want_state = "active" if card.active else "issued"
    if ledger.state != want_state:
        problems.append(f"{name}: state {ledger.state}, model {want_state}")
    entries: dict[tuple[str, str], list[Transfer]] = {}
    for t in ledger.history:
        entries.setdefault((t.terminal_id, t.stan), []).append(t)
    matched = 0
    for seen in card.seen:
        found = entries.pop((seen.terminal, seen.stan), [])
        shape = [(t.op, _delta(card.card_id, t), t.rrn, t.approval) for t in found]
        if shape != [(seen.op, seen.delta_minor, seen.rrn, seen.approval)]:
            problems.append(f"{name}: approval {seen} journalled as {shape}")
        else:
            matched += 1
    pairs = 0
    for gave_up in card.given_up:
        original = entries.pop((gave_up.terminal, gave_up.original_stan), [])
        advice = entries.pop((gave_up.terminal, gave_up.advice_stan), [])
        if not original and not advice:
            continue
        if not gave_up.sent or len(original) != 1 or len(advice) != 1:
            problems.append(f"{name}: {gave_up} journalled as {original} + {advice}")
            continue
        moved = _delta(card.card_id, original[0])
        took_back = _delta(card.card_id, advice[0])
        sign = 1 if gave_up.op in CREDIT_OPS else -1
        if (
            original[0].op != gave_up.op
            or not 0 < sign * moved <= gave_up.requested_minor
            or advice[0].op != "reversal"
            or took_back != -moved
            or (advice[0].rrn, advice[0].approval) != (gave_up.advice_rrn, gave_up.advice_approval)
        ):
            problems.append(f"{name}: {gave_up} journalled as {original} + {advice}")
        else:
            pairs += 1
    for key, extra in entries.items():
        problems.append(f"{name}: journal entries nobody accounts for under {key}: {extra}")
    return problems, matched, pairs


# -- the run ------------------------------------------------------------------------------------
def provision_for_crash(root: Path) -> tuple[Path, dict[str, list[CardModel]]]:
    """A store with the six terminals and their cards (issued, not yet active)."""
    count = len(TERMINALS) * CARDS_PER_TERMINAL
    prov = provision(root, card_count=count)
    store = open_store(prov.data, 64)
    try:
        for store_id in EXTRA_STORES:
            add_store(store, Store(id=store_id, name="Crash", chain=CHAIN))
        existing = {"T0000001", "T0000002", "T0000003"}
        for terminal_id, store_id in TERMINALS:
            if terminal_id not in existing:
                add_terminal(store, Terminal(id=terminal_id, store_id=store_id))
    finally:
        store.close()
    with prov.cards_file.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == count
    cards = [CardModel(pan=row["pan"], card_id=int(row["card_id"])) for row in rows]
    by_terminal = {
        terminal_id: cards[i * CARDS_PER_TERMINAL : (i + 1) * CARDS_PER_TERMINAL]
        for i, (terminal_id, _store) in enumerate(TERMINALS)
    }
    return prov.data, by_terminal


class CrashRun:
    def __init__(self, root: Path, kills: int, seed: int) -> None:
        self.kills = kills
        self.rng = random.Random(seed)
        self.stats = CrashStats(seed=seed)
        self.data, self.cards_by_terminal = provision_for_crash(root)
        log_dir = root / "logs"
        log_dir.mkdir()
        self.host = HostProcess(self.data, pick_port(), log_dir)
        self.shared = Shared(
            self.host.port, Gate(), self.stats, requests_per_terminal_max=300 * (kills + 2)
        )
        self.clients = [
            TerminalClient(
                self.shared,
                terminal_id,
                store_id,
                self.cards_by_terminal[terminal_id],
                random.Random(seed * 1000 + i),
            )
            for i, (terminal_id, store_id) in enumerate(TERMINALS)
        ]

    @property
    def all_cards(self) -> list[CardModel]:
        return [c for cards in self.cards_by_terminal.values() for c in cards]

    async def run(self) -> CrashStats:
        started = trio.current_time()
        try:
            with trio.fail_after(RUN_DEADLINE_S + RUN_DEADLINE_PER_KILL_S * self.kills):
                await self.host.start()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.watch_host)
                    async with trio.open_nursery() as load:
                        for client in self.clients:
                            load.start_soon(client.run)
                        await self.kill_loop()
                    nursery.cancel_scope.cancel()
                await self.host.stop()
                await self.audit("after the final SIGTERM")
        finally:
            self.host.close()
        replays = self.host.replays_logged()
        self.stats.replays_logged = len(replays)
        self.stats.in_doubt_replayed = len(self.shared.resolved_after_kill.intersection(replays))
        self.stats.duration_s = trio.current_time() - started
        return self.stats

    async def watch_host(self) -> None:
        while True:
            self.host.assert_alive()
            await trio.sleep(HOST_WATCH_INTERVAL_S)

    async def kill_loop(self) -> None:
        gate = self.shared.gate
        for number in range(1, self.kills + 1):
            await trio.sleep(self.rng.uniform(KILL_DELAY_MIN_S, KILL_DELAY_MAX_S))
            self.host.kill()
            self.stats.kills += 1
            if self.rng.random() < 0.3:
                await trio.sleep(self.rng.uniform(0, DOWNTIME_MAX_S))
            await self.host.start()
            await gate.pause()  # every in-doubt request is answered once all terminals wait
            await self.audit(f"after restart {number}")
            gate.resume()
        await trio.sleep(self.rng.uniform(KILL_DELAY_MIN_S, KILL_DELAY_MAX_S))
        await gate.pause()
        self.shared.done = True
        gate.resume()

    async def audit(self, when: str) -> None:
        cards = self.all_cards
        ledgers = await trio.to_thread.run_sync(read_cards, self.data, [c.card_id for c in cards])
        problems: list[str] = []
        matched = pairs = 0
        for card in cards:
            card_problems, card_matched, card_pairs = audit_card(card, ledgers[card.card_id])
            problems += card_problems
            matched += card_matched
            pairs += card_pairs
        check = await trio.to_thread.run_sync(run_check, self.data)
        if check.returncode != 0:
            problems.append(f"authsrv check exited {check.returncode}: {check.stdout[-2000:]}")
        assert not problems, (
            f"{when} (seed {self.stats.seed}): {len(problems)} discrepancies:\n"
            + "\n".join(problems[:30])
        )
        self.stats.audits += 1
        self.stats.approvals_checked += matched
        self.stats.approvals_final = matched
        self.stats.given_up_settled_with_pair = pairs


async def run_crash_load(root: Path, *, kills: int, seed: int) -> CrashStats:
    """Provision a store under ``root``, drive the load through ``kills`` SIGKILLs and restarts
    (auditing after each), stop the host with SIGTERM and audit once more."""
    return await CrashRun(root, kills, seed).run()
