"""From a received frame to a decision and back to response bytes.

``prepare`` runs on the event loop: decode, validate, hash the card number (the writer never
needs the PAN to find the card). ``process_batch`` runs in the writer thread: one LMDB write
transaction for the whole batch, each request decided by the pure engine against the state left
by the requests before it, then one commit with sync. ``respond`` runs on the event loop again:
the answer is built from the request and the outcome, logged (masked) and counted.
"""

from __future__ import annotations

import calendar
import functools
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from authsrv.engine import (
    CREATING_OPS,
    CardContext,
    Context,
    Decision,
    PinCheck,
    batch_entry,
    decide,
    duplicate_verdict,
    operation_of,
)
from authsrv.logs import info_line
from authsrv.metrics import Metrics
from authsrv.model import (
    PURSE_MONEY,
    BusinessDay,
    CampaignIssue,
    Card,
    CardState,
    ClosedBatch,
    DupKind,
    DupRecord,
    ExceptionCase,
    Hold,
    HoldState,
    IssueAnswer,
    RetiredKeys,
    SecurityProfile,
    Terminal,
    card_account,
)
from authsrv.products import governing_product
from authsrv.store import Ledger, LedgerStore, LockTimes, StoreFull
from keys import KeyStore, KeyStoreError, SecurityViolation, Session
from keys.keystore import ACTIVATION_SALT_LEN, NO_SECURITY, RETIRED_KEYS_MAX
from protocol.cards import luhn_valid, mask_pan
from protocol.currency import format_minor
from protocol.errors import FormatError
from protocol.messages import (
    ECHOED,
    ECHOED_BY_CLASS,
    FIELD_CHECKS,
    Request,
    decode_fields,
    encode_message,
    parse_request,
    response_mti,
)
from protocol.reconciliation import TOTALS_FIELDS, difference
from protocol.tlv import Balance, encode_balances, encode_tlv
from settlement.day import DayClock, close_open_day, cutover_due, next_day
from settlement.expiry import expire_cards_in

__all__ = ["Outcome", "Pending", "Processor"]

# Requests remembered under their duplicate key (DESIGN §5); 0800 is not.
DUPLICATE_CLASSES = frozenset({"0100", "0200", "0220", "0400", "0420", "0500"})
# Requests that take a retrieval reference number (and an approval code when approved): the
# transactions. A 0500 reconciles a batch of them and takes neither.
RRN_CLASSES = frozenset({"0100", "0200", "0220", "0400", "0420"})
# Requests that name an original in field 90.
ORIGINAL_CLASSES = frozenset({"0220", "0400", "0420"})
# Decisions not remembered: the request changed nothing and may be sent again corrected.
NOT_REMEMBERED = frozenset({"03", "30", "63", "91", "94"})
# The fields an answer echoes, per MTI class (built once, not per answer).
_ECHOED_BY_CLASS = {cls: (*ECHOED, *extra) for cls, extra in ECHOED_BY_CLASS.items()}
MAC_HEX_LEN = 16
TRANSMISSION_LEN = 10  # field 7, MMDDhhmmss
MTI_CLASS_LEN = 4
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    rrn: str | None = None
    approval: str | None = None
    card_masked: str | None = None
    currency: str | None = None
    # YYMM (the card's expiry month) or YYYYMMDD (a campaign card's value expiry day).
    card_expiry: str | None = None
    replayed: bool = False
    tags: Mapping[str, str] | None = None  # field 63 tags beyond the balance (a key change)
    closed_batch: ClosedBatch | None = None  # a 0500 that closed a batch (logged after commit)
    # An approved campaign issue: the online activation code for the receipt (field 63 AC).
    # Only in this answer: never logged, never stored (DESIGN §6).
    activation_code: str | None = field(default=None, repr=False)


@dataclass(slots=True)
class Pending:
    """One request on its way through a connection: answered in the order received."""

    received_ns: int
    mti: str
    request: Request | None = None
    pan_hashes: list[bytes] = field(default_factory=list)
    dup_key: bytes | None = None  # financial requests only
    content: bytes = b""  # HMAC of the content that must not change between transmissions
    error: FormatError | None = None
    error_fields: Mapping[str, str] = field(default_factory=dict)
    outcome: Outcome | None = None
    done: trio.Event = field(default_factory=trio.Event)
    # The keys that verified the request's MAC (they MAC the answer), and the keyed value of
    # the PIN in its PIN block (None: no PIN block), to compare with the card's.
    session: Session = NO_SECURITY
    pin_candidate: bytes | None = None

    @property
    def needs_writer(self) -> bool:
        return self.request is not None and self.outcome is None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Processor:
    """Resource handling: holds the store and the key store; owns no tasks or threads."""

    def __init__(
        self,
        store: LedgerStore,
        keys: KeyStore,
        metrics: Metrics,
        log: Any,
        *,
        skew_max_s: int,
        log_requests: bool = True,
        clock_ms: Callable[[], int] = _now_ms,
        dup_window_s: int = 7 * DAY_S,
        hold_expiry_s: int = 7 * DAY_S,
        sweep_batch_max: int = 1000,
        demo_mode: bool = False,
        key_grace_s: int = 900,
        pin_tries_max: int = 3,
        day_clock: DayClock | None = None,
        expiry: bool = False,
        writer_nice: int = 0,
    ) -> None:
        self.store = store
        self.keys = keys
        self.metrics = metrics
        self.log = log
        self.skew_ms_max = skew_max_s * 1000
        self.log_requests = log_requests
        self.clock_ms = clock_ms
        self.dup_window_ms = dup_window_s * 1000
        self.hold_expiry_ms = hold_expiry_s * 1000
        self.sweep_batch_max = sweep_batch_max
        self.demo_mode = demo_mode
        self.key_grace_ms = key_grace_s * 1000
        self.pin_tries_max = pin_tries_max
        # Automatic business-day cut-over (None: only by hand). The open day ends at
        # _day_ends_ms; until then a batch pays one comparison for it.
        self.day_clock = day_clock
        self.expiry = expiry  # the sweep moves expired cards' value to breakage
        # The writer thread's nice value while it decides and commits a batch (0: unchanged;
        # set to 0 when the system refuses it).
        self.writer_nice = writer_nice
        self._day_ends_ms = 0
        # A store from before time-first duplicate keys: until a duplicate window has passed,
        # a lookup that misses tries the earlier layout too (legacy_dup_key).
        since_ms = store.dup_keys_time_first_ms()
        self._legacy_keys_until_ms = since_ms + self.dup_window_ms if since_ms else 0

    # -- event loop side ---------------------------------------------------------------------
    def prepare(self, frame: bytes) -> Pending:
        """Decode and validate one frame.

        Error handling: raises ``protocol.Unreadable`` (close the connection); a format error
        becomes a :class:`Pending` that is already done and answers 30.
        """
        received_ns = time.perf_counter_ns()
        mti = frame[:4].decode("ascii", "replace")
        try:
            fields = decode_fields(frame)
        except FormatError as exc:
            return self._format_error(received_ns, mti, exc, exc.partial)
        try:
            req = parse_request(fields)
        except FormatError as exc:
            partial = {k: v for k, v in fields.items() if k != str(exc.field)}
            return self._format_error(received_ns, mti, exc, partial)
        hashes = self.keys.pan_hashes(req.pan) if req.pan and luhn_valid(req.pan) else []
        pending = Pending(received_ns, mti, request=req, pan_hashes=hashes)
        if req.supported and req.mti_class in DUPLICATE_CLASSES:
            pending.dup_key = dup_key(req)
            pending.content = self.keys.content_mac(content_fields(req))
        try:
            self._verify(pending, req, frame)
        except SecurityViolation as exc:
            self.metrics.security_failures.labels(exc.reason).inc()
            self.log.warning(
                "security_violation",
                reason=exc.reason,
                detail=str(exc),
                mti=req.mti,
                terminal=req.terminal_id,
                stan=req.stan,
            )
            pending.outcome = Outcome(Decision("63", operation_of(req) or "unsupported"))
            pending.done.set()
        except KeyStoreError as exc:  # a key the terminal's profile names is missing or wrong
            self.log.error("key_error", error=str(exc), terminal=req.terminal_id, mti=req.mti)
            pending.outcome = Outcome(Decision("96", operation_of(req) or "unsupported"))
            pending.done.set()
        return pending

    def _verify(self, pending: Pending, req: Request, frame: bytes) -> None:
        """MAC verification before anything else touches the request (DESIGN §5 order), then
        the PIN block turned into a keyed value for the writer to compare. A terminal without
        a profile is served only in demo mode; a static-key terminal without working keys only
        for its first key change.

        Error handling: :class:`SecurityViolation` (the caller answers 63).
        """
        with self.store.read() as led:
            terminal = led.terminal(req.terminal_id)
        if terminal is None:
            return  # the writer answers 03
        if terminal.security is SecurityProfile.NONE:
            if not self.demo_mode:
                raise SecurityViolation(
                    "no_profile", "the terminal has no security profile (demo mode only)"
                )
            return
        mac_field = "128" if any(k.isdigit() and int(k) > 64 for k in req.fields) else "64"
        other = "64" if mac_field == "128" else "128"
        mac_hex = req.fields.get(mac_field)
        if other in req.fields:
            raise SecurityViolation("mac_field", f"the MAC belongs in field {mac_field}")
        if terminal.security.static and not terminal.mac_key:
            if req.mti_class == "0800" and req.network_code == "101" and mac_hex is None:
                return  # the first key change: its answer is wrapped under the master key
            raise SecurityViolation("no_working_keys", "the terminal needs a key change first")
        if mac_hex is not None:
            assert frame[-MAC_HEX_LEN:] == mac_hex.encode("ascii"), "MAC is not the last field"
        session = self.keys.open_session(
            terminal, frame[:-MAC_HEX_LEN], mac_hex, req.tags.get("KS"), self.clock_ms()
        )
        pending.session = session
        block = req.fields.get("52") if session.pin_format == "52" else req.tags.get("PB")
        if block is not None and req.pan is not None:
            pending.pin_candidate = self.keys.pin_candidate(session, block, req.pan)
        elif "52" in req.fields or "PB" in req.tags:
            pending.pin_candidate = b""  # a PIN block where this profile does not carry one

    def _format_error(
        self, received_ns: int, mti: str, exc: FormatError, fields: Mapping[str, str]
    ) -> Pending:
        pending = Pending(received_ns, mti, error=exc, error_fields=fields)
        pending.done.set()
        return pending

    def respond(self, pending: Pending) -> bytes:
        """Build, log and count the answer of a finished request."""
        assert pending.done.is_set()
        if pending.error is not None:
            payload = self._format_error_response(pending)
            rc = "30"
            self.metrics.format_errors.labels(f"{pending.error.field:03d}").inc()
        else:
            assert pending.request is not None and pending.outcome is not None
            rc = pending.outcome.decision.rc
            payload = self._encode_response(
                pending, build_response(pending.request, pending.outcome)
            )
            if pending.outcome.decision.field44 is not None:
                self.metrics.format_errors.labels(pending.outcome.decision.field44[:3]).inc()
        latency_s = (time.perf_counter_ns() - pending.received_ns) / 1e9
        self.metrics.count_request(pending.mti, rc)
        if rc in ("55", "75"):
            self.metrics.pin_failures.labels(rc).inc()
        self.metrics.latency.observe(latency_s)
        if self.log_requests:
            self._log_request(pending, rc, latency_s)
        return payload

    def _encode_response(self, pending: Pending, resp: dict[str, str]) -> bytes:
        """Encode an answer; MAC it under the session's response key (not a 63: a forged
        request must not get a MACed answer)."""
        session = pending.session
        if not session.macs_responses or resp["39"] == "63":
            return encode_message(resp)
        mac_field = "128" if any(k.isdigit() and int(k) > 64 for k in resp) else "64"
        resp[mac_field] = "0" * MAC_HEX_LEN
        payload = encode_message(resp)
        data = payload[:-MAC_HEX_LEN]
        return data + self.keys.response_mac(session, data).encode("ascii")

    def _log_request(self, pending: Pending, rc: str, latency_s: float) -> None:
        req, out = pending.request, pending.outcome
        if req is None:
            assert pending.error is not None
            f = pending.error_fields
            pan = f.get("2", "")
            info_line(
                "request",
                {
                    "mti": pending.mti,
                    "rc": rc,
                    "card": mask_pan(pan) if pan.isdigit() else None,
                    "terminal": f.get("41"),
                    "store": f.get("42"),
                    "stan": f.get("11"),
                    "field44": pending.error.field44,
                    "latency_ms": round(latency_s * 1000, 3),
                },
            )
            return
        assert out is not None
        d = out.decision
        line = {
            "mti": req.mti,
            "proc": req.proc,
            "op": d.op,
            "rc": rc,
            "terminal": req.terminal_id,
            "store": req.store_id,
            "stan": req.stan,
            "card": out.card_masked or _masked(req),
            "amount_minor": req.amount_minor,
            "approved_minor": d.approved_minor,
            "latency_ms": round(latency_s * 1000, 3),
        }
        if out.replayed:
            line["replayed"] = True  # only on a replay, so that ordinary lines stay short
        info_line("request", line)

    def _format_error_response(self, pending: Pending) -> bytes:
        assert pending.error is not None
        resp: dict[str, str] = {"t": response_mti(pending.mti)}
        for key in (*ECHOED, *ECHOED_BY_CLASS.get(pending.mti[:3] + "0", ())):
            value = pending.error_fields.get(key)
            if value is None or key == str(pending.error.field):
                continue
            try:
                FIELD_CHECKS[key](int(key), value)
            except FormatError:
                continue  # echo only what is well formed
            resp[key] = value
        resp["39"] = "30"
        resp["44"] = pending.error.field44
        try:
            return encode_message(resp)
        except Exception:  # an echoed field that does not re-encode: answer without echoes
            return encode_message({"t": resp["t"], "39": "30", "44": pending.error.field44})

    # -- writer thread side ------------------------------------------------------------------
    def process_batch(
        self, batch: list[Pending], more: Callable[[], list[Pending]] | None = None
    ) -> list[Outcome]:
        """Decide and apply every request of ``batch`` in one transaction, then commit.
        ``more``, when given, is called once the transaction holds the write lock; the
        requests it returns join the batch (the answers are in the order of ``batch``, then
        of those).

        Error handling: a full store answers the whole batch 91 and changes nothing; a broken
        invariant (AssertionError) aborts the transaction and propagates: the server stops.
        """
        started = time.perf_counter()
        try:
            with self._writer_priority(), self.writing() as led:
                if more is not None:
                    batch = [*batch, *more()]
                now_ms = self.clock_ms()  # the batch's time: once it holds the lock
                day = self.day_boundary(led, now_ms)
                # Holds past their expiry no longer count against the available balance, even
                # before the sweep gets to them (one cursor step when none has expired).
                for hold in led.expired_holds(now_ms, self.sweep_batch_max):
                    led.close_hold(hold, HoldState.EXPIRED)
                    self.metrics.holds_expired.inc()
                outcomes = [self._process_one(led, p, now_ms) for p in batch]
            self.day_committed(day)
        except StoreFull as exc:
            self.metrics.store_errors.labels("full").inc()
            self.log.error("store_full", error=str(exc), batch=len(batch))
            return [Outcome(Decision("91", _op(p))) for p in batch]
        self.metrics.batch_size.observe(len(batch))
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        for outcome in outcomes:
            if outcome.closed_batch is not None:
                self._batch_closed(outcome.closed_batch)
        return outcomes

    @contextmanager
    def writing(self) -> Iterator[Ledger]:
        """A write transaction of the writer (a batch, a sweep or a job): committed with sync
        on success, and then its wait for and hold of the write lock go to the metrics."""
        lock = LockTimes()
        with self.store.write(lock) as led:
            yield led
        self.metrics.lock_times(lock)

    @contextmanager
    def _writer_priority(self) -> Iterator[None]:
        """The calling thread at ``writer_nice`` for the block, then back at its own priority
        (the thread is a pooled one: what else it runs keeps the process's priority).

        Error handling: a refusal (no CAP_SYS_NICE for a value below 0) is logged once and
        the writer goes on at its own priority.
        """
        nice = self.writer_nice
        if not nice:
            yield
            return
        tid = threading.get_native_id()
        try:
            own = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError as exc:
            self.writer_nice = 0
            self.log.warning(
                "writer_nice_refused",
                writer_nice=nice,
                error=exc.strerror,
                detail="the writer keeps the process's priority; a value below 0 needs "
                "CAP_SYS_NICE (or store.writer_nice = 0)",
            )
            yield
            return
        try:
            yield
        finally:
            os.setpriority(os.PRIO_PROCESS, tid, own)

    def decide_in(self, led: Ledger, pending: Pending, now_ms: int) -> Outcome:
        """Decide and apply one request in the caller's write transaction, as a batch would:
        the duplicate record first, then the engine, the postings and the records. For
        requests that do not come from a terminal (the HTTP API's web-shop loads): they carry
        their own duplicate key and content MAC, and no MAC or PIN to verify. The caller
        commits (a writer job: it has closed a due business day in ``led`` already).

        Error handling: as :meth:`process_batch`, but a full store raises ``StoreFull`` (the
        caller's transaction aborts; nothing of it is written).
        """
        assert pending.request is not None and pending.outcome is None
        assert pending.dup_key is not None and pending.content, "a key and a content MAC"
        for hold in led.expired_holds(now_ms, self.sweep_batch_max):
            led.close_hold(hold, HoldState.EXPIRED)
            self.metrics.holds_expired.inc()
        return self._process_one(led, pending, now_ms)

    def _batch_closed(self, closed: ClosedBatch) -> None:
        """After the commit: report a closed batch, with what the terminal's totals differ by."""
        self.metrics.batches_closed.labels(closed.rc).inc()
        self.log.info(
            "batch_closed",
            terminal=closed.terminal_id,
            store=closed.store_id,
            batch=closed.batch_number,
            currency=closed.currency,
            rc=closed.rc,
            host_net_minor=closed.host.net_minor,
            terminal_net_minor=closed.terminal_net_minor,
            difference=closed.difference,
        )

    def _process_one(self, led: Ledger, pending: Pending, now_ms: int) -> Outcome:
        req = pending.request
        assert req is not None
        op = operation_of(req) or "unsupported"
        key = pending.dup_key
        legacy = now_ms < self._legacy_keys_until_ms
        if key is not None:
            existing = led.dupe(key)
            if existing is None and legacy:
                existing = _legacy_dupe(led, key)[1]
            if existing is not None:
                return self._duplicate(existing, pending, op)
        counter = pending.session.ksn_counter
        if counter is not None and not self._ksn_fresh(led, req, counter):
            return Outcome(Decision("63", op))
        original = hold = None
        original_key = (
            _original_key(req) if req.original and req.mti_class in ORIGINAL_CLASSES else None
        )
        if original_key is not None:
            original = led.dupe(original_key)
            if original is None and legacy:
                # Recorded before time-first keys: found, and updated, under the key it has.
                original_key, original = _legacy_dupe(led, original_key)
            if original is not None and original.hold_id:
                hold = led.hold(original.hold_id)
        terminal = led.terminal(req.terminal_id)
        store = led.store(req.store_id) if req.store_id else None
        batch = None
        if req.totals is not None and terminal is not None and req.currency is not None:
            open_batch = led.open_batch(req.terminal_id, req.currency)
            batch = open_batch.totals if open_batch is not None else None
        card: Card | None = None
        card_ctx: CardContext | None = None
        if pending.pan_hashes:
            card = led.card_by_hashes(pending.pan_hashes)
            if card is not None:
                card_ctx = CardContext(
                    card,
                    governing_product(led, card),
                    led.balance(card_account(card.id)),
                    led.held(card.id),
                )
        ctx = Context(
            now_ms,
            self.skew_ms_max,
            terminal,
            store,
            card_ctx,
            original,
            hold,
            pin=_pin_check(pending.pin_candidate, card),
            pin_tries_max=self.pin_tries_max,
            batch=batch,
            original_day_closed=_day_closed(led, original),
        )
        decision = decide(req, ctx)
        tags: dict[str, str] | None = None
        if decision.key_change:
            assert terminal is not None
            try:
                tags = self._change_keys(led, terminal, now_ms)
            except KeyStoreError as exc:
                self.log.error("key_change_failed", terminal=req.terminal_id, error=str(exc))
                decision = Decision("96", decision.op)
        code_salt = b""
        code: str | None = None
        verifier = b""
        if decision.activation_code:
            assert card is not None and decision.approved
            code_salt = secrets.token_bytes(ACTIVATION_SALT_LEN)
            try:
                code = self.keys.activation_code(code_salt, card.id)
                verifier = self.keys.activation_verifier(card.id, code)
            except KeyStoreError as exc:
                self.log.error("activation_code_failed", terminal=req.terminal_id, error=str(exc))
                decision, code_salt, code = Decision("96", decision.op), b"", None
        if card is not None and decision.rc not in NOT_REMEMBERED:
            card = self._rekey(led, card, pending.pan_hashes)

        rrn = approval = None
        # A request from an unknown terminal or store changes nothing, not even a counter.
        if key is not None and decision.rc != "03" and req.mti_class in RRN_CLASSES:
            rrn = req.rrn or _rrn(led.next_seq("rrn"), now_ms)
            if decision.approved:
                approval = f"{led.next_seq('approval') % 1_000_000:06d}"
        transfer_seq = 0
        for posting in decision.postings:
            assert card is not None and req.store_id is not None
            transfer_seq = led.post(
                posting,
                at_ms=now_ms,
                op=decision.op,
                card_id=card.id,
                terminal_id=req.terminal_id,
                store_id=req.store_id,
                stan=req.stan,
                rrn=rrn or "",
                approval=approval or "",
                local_time=req.local_date + req.local_time,
                original_seq=original.transfer_seq if original is not None else 0,
            ).seq
        entry = batch_entry(decision)
        if entry is not None:
            led.add_to_batch(
                req.terminal_id, entry.currency, entry.kind, entry.amount_minor, now_ms
            )
        closed_batch = None
        if decision.batch_totals is not None:
            closed_batch = self._close_batch(led, req, decision, now_ms)
        if decision.card_state is not None:
            assert card is not None
            if decision.op in CREATING_OPS:
                assert card_ctx is not None and req.store_id is not None
                campaign = card.campaign
                if decision.op == "issue":
                    assert decision.value_expiry is not None and transfer_seq
                    campaign = CampaignIssue(
                        issue_seq=transfer_seq,
                        store_id=req.store_id,
                        terminal_id=req.terminal_id,
                        value_expiry=decision.value_expiry,
                        code_verifier=verifier,
                    )
                active = decision.card_state is CardState.ACTIVE
                card = msgspec.structs.replace(
                    card,
                    state=decision.card_state,
                    activated_ms=now_ms if active else card.activated_ms,
                    sold_store=req.store_id,
                    product_version=card_ctx.product.version,
                    campaign=campaign,
                )
            elif original is not None and original.op == "issue":
                # A void of a campaign issue: the card is as produced, ready for a new issue.
                assert decision.card_state is CardState.ISSUED, decision.card_state
                card = msgspec.structs.replace(card, state=decision.card_state, campaign=None)
            else:
                card = msgspec.structs.replace(card, state=decision.card_state)
            led.put_card(card)
        if decision.pin_tries is not None:
            assert card is not None
            card = msgspec.structs.replace(card, pin_tries=decision.pin_tries)
            led.put_card(card)
        if decision.terminal_signed_on is not None:
            assert terminal is not None
            led.put_terminal(
                msgspec.structs.replace(terminal, signed_on=decision.terminal_signed_on)
            )
        hold_id = 0
        if decision.hold_place_minor:
            assert card is not None and key is not None
            hold_id = led.next_seq("hold")
            led.place_hold(
                Hold(
                    id=hold_id,
                    card_id=card.id,
                    amount_minor=decision.hold_place_minor,
                    placed_ms=now_ms,
                    expires_ms=now_ms + self.hold_expiry_ms,
                    state=HoldState.OPEN,
                    original_key=key,
                )
            )
        if decision.hold_close is not None:
            assert hold is not None
            led.close_hold(hold, decision.hold_close)
        if decision.hold_resize_minor is not None:
            assert hold is not None
            led.resize_hold(hold, decision.hold_resize_minor)
        if decision.original_reversed_minor is not None:
            assert original is not None and original_key is not None
            led.put_dupe(
                original_key,
                msgspec.structs.replace(
                    original, reversed_minor=decision.original_reversed_minor, reversed=True
                ),
            )
        if decision.tombstone:
            assert original_key is not None and original is None
            led.put_dupe(original_key, DupRecord(kind=DupKind.TOMBSTONE, at_ms=now_ms))
        for kind in decision.exceptions:
            self._record_exception(led, kind, req, decision, card_ctx, now_ms)
        if card_ctx is not None and decision.ledger_after_minor is not None:
            after = led.balance(card_account(card_ctx.card.id))
            assert after == decision.ledger_after_minor, "ledger differs from the decision"
            held = led.held(card_ctx.card.id)
            assert after - held == decision.available_after_minor, "available differs"
        outcome = Outcome(
            decision,
            rrn=rrn,
            approval=approval,
            card_masked=card.masked if card else None,
            currency=card_ctx.product.currency if card_ctx else None,
            card_expiry=_card_expiry(card),
            tags=tags,
            closed_batch=closed_batch,
            activation_code=code,
        )
        if key is not None and decision.rc not in NOT_REMEMBERED:
            issue = None
            if decision.op == "issue" and decision.approved:
                assert decision.loaded_minor is not None
                issue = IssueAnswer(loaded_minor=decision.loaded_minor, code_salt=code_salt)
            led.put_dupe(
                key, _record(outcome, pending, req, now_ms, card, hold_id, transfer_seq, issue)
            )
        return outcome

    def _close_batch(
        self, led: Ledger, req: Request, decision: Decision, now_ms: int
    ) -> ClosedBatch:
        """Close the terminal's open batch in field 49's currency with the decision's totals."""
        host = decision.batch_totals
        assert host is not None and decision.rc in ("00", "95"), decision.rc
        assert req.totals is not None and req.net_minor is not None
        assert req.currency is not None and req.batch_number is not None
        assert req.store_id is not None
        opened = led.open_batch(req.terminal_id, req.currency)
        assert opened is None or opened.totals == host, "the batch changed under its decision"
        closed = ClosedBatch(
            seq=led.next_seq("batch"),
            terminal_id=req.terminal_id,
            store_id=req.store_id,
            currency=req.currency,
            batch_number=req.batch_number,
            rc=decision.rc,
            opened_ms=opened.opened_ms if opened is not None else 0,
            closed_ms=now_ms,
            stan=req.stan,
            host=host,
            terminal=req.totals,
            terminal_net_minor=req.net_minor,
            difference=difference(req.totals, req.net_minor, host),
        )
        led.close_batch(closed)
        return closed

    def day_boundary(
        self, led: Ledger, now_ms: int
    ) -> tuple[int, list[BusinessDay], BusinessDay | None] | None:
        """Close the open business day in this transaction when its cut-over time has come;
        None while the day is known to run on (no LMDB access then)."""
        if self.day_clock is None or now_ms < self._day_ends_ms:
            return None
        due, ends_ms = cutover_due(led, self.day_clock, now_ms)
        if not due:
            return ends_ms, [], led.open_day()
        closed, opened = close_open_day(led, self.day_clock, now_ms, how="auto")
        return self.day_clock.start_ms(next_day(opened.day)), closed, opened

    def day_committed(self, day: tuple[int, list[BusinessDay], BusinessDay | None] | None) -> None:
        """After the commit: remember when the open day ends, say which days closed."""
        if day is None:
            return
        self._day_ends_ms, closed, opened = day
        for record in closed:
            self.metrics.business_days_closed.inc()
            self.log.info(
                "business_day_closed",
                day=record.day,
                how=record.how,
                transfers=record.last_seq - record.first_seq + 1,
                file_seq=record.file_seq,
            )
        if opened is not None:
            self.metrics.business_day.set(int(opened.day))
            if closed:
                self.log.info("business_day_opened", day=opened.day, first_seq=opened.first_seq)

    def _ksn_fresh(self, led: Ledger, req: Request, counter: int) -> bool:
        """A DUKPT counter must exceed the last one accepted from the device; checked after the
        duplicate replay, so that a retransmission is still answered (DESIGN §5)."""
        terminal = led.terminal(req.terminal_id)
        if terminal is None:
            return True  # answered 03 by the engine
        if counter <= terminal.ksn_counter:
            self.metrics.security_failures.labels("ksn_stale").inc()
            self.log.warning(
                "security_violation",
                reason="ksn_stale",
                detail="the KSN counter is not above the last one seen",
                mti=req.mti,
                terminal=req.terminal_id,
                stan=req.stan,
            )
            return False
        led.put_terminal(msgspec.structs.replace(terminal, ksn_counter=counter))
        return True

    def _change_keys(self, led: Ledger, terminal: Terminal, now_ms: int) -> dict[str, str]:
        """New working keys for the terminal; the replaced ones stay valid for the grace period."""
        change = self.keys.change_keys(terminal)
        retired = tuple(r for r in terminal.retired_keys if r.until_ms > now_ms)
        if terminal.mac_key:
            replaced = RetiredKeys(
                mac_key=terminal.mac_key,
                pin_key=terminal.pin_key,
                until_ms=now_ms + self.key_grace_ms,
            )
            retired = (replaced, *retired)
        led.put_terminal(
            msgspec.structs.replace(
                terminal,
                mac_key=change.mac_key,
                pin_key=change.pin_key,
                retired_keys=retired[:RETIRED_KEYS_MAX],
                keys_changed_ms=now_ms,
            )
        )
        self.metrics.key_changes.inc()
        return {"KB": change.transport, "KC": change.check_values}

    def _rekey(self, led: Ledger, card: Card, hashes: list[bytes]) -> Card:
        """A card found under an old hash-key version moves to the current one (DESIGN §6)."""
        if card.hash_version == self.keys.pan_version_current:
            return card
        old = next(h for h in hashes if h[0] == card.hash_version)
        self.metrics.cards_rekeyed.inc()
        return led.rekey_card(card, old, hashes[0])

    def _duplicate(self, existing: DupRecord, pending: Pending, op: str) -> Outcome:
        verdict = duplicate_verdict(existing, pending.content)
        self.metrics.duplicates.labels(verdict).inc()
        if verdict == "replay":
            issue = existing.issue
            code = None
            if issue is not None and issue.code_salt:
                # The same code as the first answer: derived again, never stored.
                code = self.keys.activation_code(issue.code_salt, existing.card_id)
            return Outcome(
                Decision(
                    existing.rc,
                    existing.op,
                    approved_minor=existing.approved_minor,
                    ledger_after_minor=existing.ledger_after_minor,
                    available_after_minor=existing.available_after_minor,
                    batch_totals=existing.batch,
                    loaded_minor=issue.loaded_minor if issue is not None else None,
                ),
                rrn=existing.rrn or None,
                approval=existing.approval or None,
                card_masked=existing.card_masked or None,
                currency=existing.currency or None,
                card_expiry=existing.card_expiry or None,
                replayed=True,
                activation_code=code,
            )
        return Outcome(Decision("05" if verdict == "tombstone" else "94", op))

    def _record_exception(
        self,
        led: Ledger,
        kind: str,
        req: Request,
        decision: Decision,
        cc: CardContext | None,
        now_ms: int,
    ) -> None:
        self.metrics.advice_exceptions.labels(kind).inc()
        led.add_exception(
            ExceptionCase(
                seq=led.next_seq("exception"),
                at_ms=now_ms,
                kind=kind,
                op=decision.op,
                card_id=cc.card.id if cc else 0,
                amount_minor=req.amount_minor or 0,
                balance_after_minor=decision.ledger_after_minor or 0,
                currency=cc.product.currency if cc else (req.currency or ""),
                terminal_id=req.terminal_id,
                store_id=req.store_id or "",
                stan=req.stan,
            )
        )

    def sweep(self) -> tuple[int, int]:
        """Release expired holds, prune duplicate records past their window and (with
        ``expiry``) move expired cards' value to breakage, in bounded steps; each step is one
        write transaction, so it happens exactly once.

        Returns (holds expired, records pruned).
        """
        now_ms = self.clock_ms()
        with self.writing() as led:
            day = self.day_boundary(led, now_ms)
            expired = led.expired_holds(now_ms, self.sweep_batch_max)
            for hold in expired:
                led.close_hold(hold, HoldState.EXPIRED)
            pruned = led.prune_dupes(now_ms - self.dup_window_ms, self.sweep_batch_max)
            oldest = led.oldest_dupe_ms()
            stored = led.dupes_count()
            swept = expire_cards_in(led, now_ms, self.sweep_batch_max) if self.expiry else None
        self.day_committed(day)
        if swept is not None:
            self.metrics.cards_expired.inc(swept.expired)
            for account, amount in swept.moved.items():
                self.metrics.breakage.labels(account).inc(amount)
            if swept.expired or swept.transfers:
                self.log.info(
                    "cards_expired",
                    cards=swept.expired,
                    transfers=swept.transfers,
                    moved_minor=swept.moved,
                )
        self.metrics.holds_expired.inc(len(expired))
        self.metrics.dupes_pruned.inc(pruned)
        self.metrics.dupes_stored.set(stored)
        self.metrics.dupes_oldest_age.set(0 if oldest is None else (now_ms - oldest) / 1000)
        return len(expired), pruned


def _card_expiry(card: Card | None) -> str | None:
    """What the answer's EX tag says: a campaign card's value expiry day, else its expiry
    month (the tag then gives the month's last day)."""
    if card is None:
        return None
    return card.campaign.value_expiry if card.campaign is not None else card.expiry


def _day_closed(led: Ledger, original: DupRecord | None) -> bool:
    """Whether the business day of a campaign issue that a reversal names has closed (the
    issue's transfer precedes the open day): its void window is over (docs/products.md)."""
    if original is None or original.op != "issue" or not original.transfer_seq:
        return False
    open_day = led.open_day()
    return open_day is not None and original.transfer_seq < open_day.first_seq


def _pin_check(candidate: bytes | None, card: Card | None) -> PinCheck:
    if candidate is None:
        return PinCheck.ABSENT
    if card is None or not card.pvv:
        return PinCheck.NOT_SET
    return PinCheck.RIGHT if hmac.compare_digest(candidate, card.pvv) else PinCheck.WRONG


def _op(pending: Pending) -> str:
    assert pending.request is not None
    return operation_of(pending.request) or "unsupported"


def dup_key(req: Request) -> bytes:
    """DESIGN §5's key, transmission time first: (field 7, field 32 padded to 11, field 41,
    field 11, MTI class). Time first, each commit's new records fall on the newest pages of
    the duplicate B-tree instead of on one page per terminal: fewer pages to write and sync.
    """
    acquirer = (req.acquirer or "").zfill(11)
    return _stored_key(req.transmission, acquirer, req.terminal_id, req.stan, req.mti_class)


def _stored_key(
    transmission: str, acquirer: str, terminal: str, stan: str, mti_class: str
) -> bytes:
    """The one place the stored layout of a terminal's duplicate key is written down
    (``legacy_dup_key`` turns it into the earlier one)."""
    return f"{transmission}|{acquirer}|{terminal}|{stan}|{mti_class}".encode()


def _legacy_dupe(led: Ledger, key: bytes) -> tuple[bytes, DupRecord | None]:
    """A duplicate record stored under the earlier layout of ``key``: (that key, the record),
    or (``key``, None) when there is none."""
    legacy = legacy_dup_key(key)
    found = None if legacy is None else led.dupe(legacy)
    if legacy is None or found is None:
        return key, None
    return legacy, found


def _original_key(req: Request) -> bytes:
    """The duplicate key of the request that field 90 names (same terminal)."""
    o = req.original
    assert o is not None
    return _stored_key(o.transmission, o.acquirer, req.terminal_id, o.stan, o.mti[:3] + "0")


def legacy_dup_key(key: bytes) -> bytes | None:
    """The same key in the layout of releases before time-first keys, (field 32, 41, 11, 7,
    MTI class); None for a key that is not a terminal's.

    >>> legacy_dup_key(b"1122153012|00000000001|T0000001|000042|0200")
    b'00000000001|T0000001|000042|1122153012|0200'
    """
    transmission, rest = key[:TRANSMISSION_LEN], key[TRANSMISSION_LEN + 1 :]
    if key[TRANSMISSION_LEN : TRANSMISSION_LEN + 1] != b"|" or not transmission.isdigit():
        return None
    return rest[: -MTI_CLASS_LEN - 1] + b"|" + transmission + rest[-MTI_CLASS_LEN - 1 :]


def content_fields(req: Request) -> bytes:
    """What must not change between transmissions (DESIGN §5), excluding 52, 64, 128, KS."""
    f = req.fields
    parts = [
        req.pan or "",
        f.get("3", ""),
        f.get("4", ""),
        f.get("42", ""),
        f.get("49", ""),
        f.get("90", ""),
        f.get("95", ""),
        "1" if req.partial_ok else "",  # PA=0 and no PA mean the same
        req.tags.get("AL", ""),
    ]
    if req.mti_class == "0500":
        # Only here, so that the content of every other request hashes as before.
        parts += [f.get(key, "") for key in ("60", *TOTALS_FIELDS)]
    return "\x1f".join(parts).encode()


def _record(
    outcome: Outcome,
    pending: Pending,
    req: Request,
    now_ms: int,
    card: Card | None,
    hold_id: int,
    transfer_seq: int,
    issue: IssueAnswer | None = None,
) -> DupRecord:
    d = outcome.decision
    return DupRecord(
        kind=DupKind.REQUEST,
        at_ms=now_ms,
        content=pending.content,
        mti_class=req.mti_class,
        proc=req.proc or "",
        op=d.op,
        rc=d.rc,
        approval=outcome.approval or "",
        rrn=outcome.rrn or "",
        requested_minor=req.amount_minor or 0,
        approved_minor=d.approved_minor,
        ledger_after_minor=d.ledger_after_minor,
        available_after_minor=d.available_after_minor,
        currency=outcome.currency or "",
        card_id=card.id if card else 0,
        card_masked=outcome.card_masked or "",
        card_expiry=outcome.card_expiry or "",
        hold_id=hold_id,
        transfer_seq=transfer_seq,
        batch=d.batch_totals,
        issue=issue,
    )


def _rrn(seq: int, now_ms: int) -> str:
    """Host-assigned retrieval reference: YDDDHH + 6-digit sequence (12 characters)."""
    return f"{_rrn_prefix(now_ms // 3_600_000)}{seq % 1_000_000:06d}"


@functools.lru_cache(maxsize=4)
def _rrn_prefix(hour: int) -> str:
    """YDDDHH of the UTC hour ``hour`` (hours since the epoch): one per hour, not per request."""
    t = time.gmtime(hour * 3600)
    return f"{t.tm_year % 10}{t.tm_yday:03d}{t.tm_hour:02d}"


def _masked(req: Request) -> str | None:
    return mask_pan(req.pan) if req.pan else None


def build_response(req: Request, out: Outcome) -> dict[str, str]:
    """The answer's fields: echoes, then what the host decided (DESIGN §3)."""
    d = out.decision
    fields = req.fields
    resp: dict[str, str] = {"t": response_mti(req.mti)}
    for key in _ECHOED_BY_CLASS.get(req.mti_class, ECHOED):
        if key in fields:
            resp[key] = fields[key]
    if (
        d.approved
        and d.approved_minor is not None
        and d.op != "balance"
        and ("4" in fields or d.op == "cashout")
    ):
        resp["4"] = f"{d.approved_minor:012d}"
    if out.rrn is not None:
        resp["37"] = out.rrn
    if out.approval is not None:
        resp["38"] = out.approval
    resp["39"] = d.rc
    if d.field44 is not None:
        resp["44"] = d.field44
    if (
        out.currency is not None
        and d.ledger_after_minor is not None
        and d.available_after_minor is not None
    ):
        resp["54"] = encode_balances(
            [
                Balance(PURSE_MONEY, "01", out.currency, d.ledger_after_minor),
                Balance(PURSE_MONEY, "02", out.currency, d.available_after_minor),
            ]
        )
        if d.approved:
            tags = {"RT": f"BALANCE {format_minor(d.available_after_minor, out.currency)}"}
            if d.op == "issue" and d.loaded_minor is not None:
                tags["RT"] = _issue_receipt(d.loaded_minor, out.currency, out.activation_code)
            if out.card_expiry is not None:
                tags["EX"] = _expiry_date(out.card_expiry)
            if out.activation_code is not None:
                tags["AC"] = out.activation_code
            resp["63"] = encode_tlv(tags)
    if out.tags:
        resp["63"] = encode_tlv(dict(out.tags))
    if d.batch_totals is not None:
        resp.update(d.batch_totals.to_fields())  # the host's totals (0510)
    return resp


def _issue_receipt(loaded_minor: int, currency: str, code: str | None) -> str:
    """RT of a campaign issue: what was loaded, and what the customer must do before use."""
    text = f"CAMPAIGN CARD LOADED {format_minor(loaded_minor, currency)}"
    return text + ", ACTIVATE ONLINE WITH CODE" if code is not None else text


@functools.lru_cache(maxsize=256)  # expiry months in use: a few dozen; one answer each
def _expiry_date(expiry: str) -> str:
    """The card's last valid day YYYYMMDD: a YYMM expiry month's last day, or a value expiry
    day as it is."""
    if len(expiry) == len("YYYYMMDD"):
        return expiry
    year, month = 2000 + int(expiry[:2]), int(expiry[2:])
    return f"{year:04d}{month:02d}{calendar.monthrange(year, month)[1]:02d}"
