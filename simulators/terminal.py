"""The terminal side: build house-dialect requests, exchange them over TCP, show the answers.

Used by ``authsrv simulate``, the scenario runner, the load mode and the tests. Output shows
card numbers masked, amounts in major units and response codes with their meaning.
"""

from __future__ import annotations

import csv
import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import iso8583
import trio

from protocol.cards import luhn_check_digit, mask_pan
from protocol.currency import format_minor
from protocol.dialect import HOUSE_ASCII
from protocol.framing import FrameReader, Framing, encode_frame
from protocol.messages import encode_message
from protocol.reconciliation import Totals
from protocol.tlv import OriginalData, decode_balances, decode_tlv, encode_original, encode_tlv
from simulators.security import TerminalSecurity, TerminalSecurityError

__all__ = [
    "OPERATIONS",
    "RESPONSE_CODES",
    "CardBook",
    "SimError",
    "TerminalConnection",
    "build_request",
    "describe_exchange",
]

# operation -> (MTI, processing code or None, network code or None)
OPERATIONS: dict[str, tuple[str, str | None, str | None]] = {
    "signon": ("0800", None, "001"),
    "signoff": ("0800", None, "002"),
    "echo": ("0800", None, "301"),
    "activate": ("0200", "720000", None),
    "load": ("0200", "210000", None),
    "redeem": ("0200", "000000", None),
    "refund": ("0200", "200000", None),
    "balance": ("0200", "300000", None),
    "cashout": ("0200", "010000", None),
    "inquiry": ("0100", "300000", None),
    "preauth": ("0100", "000000", None),
    "complete": ("0220", "000000", None),  # completion of a preauth (needs the original)
    "advice": ("0220", "000000", None),  # an offline purchase the host must accept
    "reverse": ("0400", "000000", None),  # needs the original; proc = the original's
    "reverse-advice": ("0420", "000000", None),
    "close-batch": ("0500", "920000", None),  # reconciliation: the terminal's batch totals
    "issue": ("0200", "920000", None),  # campaign-card issue: the amount is the purchase
}
AMOUNT_OPS = frozenset(
    {
        "activate",
        "load",
        "redeem",
        "refund",
        "cashout",
        "preauth",
        "complete",
        "advice",
        "reverse",
        "reverse-advice",
        "issue",
    }
)
NEEDS_ORIGINAL = frozenset({"complete", "reverse", "reverse-advice"})
# Processing code of each operation a reversal may name.
PROC_OF: dict[str, str] = {
    op: proc for op, (_mti, proc, _net) in OPERATIONS.items() if proc is not None
}

RESPONSE_CODES: dict[str, str] = {
    "00": "approved",
    "03": "unknown terminal or store",
    "05": "do not honour",
    "10": "partial approval",
    "12": "invalid transaction",
    "13": "invalid amount",
    "14": "invalid card number",
    "25": "original not found",
    "30": "format error",
    "41": "lost card",
    "43": "stolen card",
    "51": "insufficient funds",
    "54": "expired card",
    "55": "incorrect PIN",
    "57": "not permitted for this card",
    "58": "not permitted here",
    "61": "exceeds amount limit",
    "62": "restricted card",
    "63": "security violation",
    "65": "exceeds frequency limit",
    "75": "PIN tries exceeded",
    "78": "card not activated",
    "91": "host unavailable",
    "94": "duplicate transmission",
    "95": "reconciliation error",
    "96": "system malfunction",
}
RECEIVE_BYTES_MAX = 65_536
UNKNOWN_CARD_PREFIX = "603628"  # range used for an unknown card when no card file is given


class SimError(Exception):
    """One line for the user of the simulator."""


_stan_counter = itertools.count(secrets.randbelow(900_000) + 1)


def next_stan() -> str:
    return f"{next(_stan_counter) % 1_000_000 or 1:06d}"


def build_request(
    op: str,
    *,
    terminal: str,
    store: str,
    pan: str | None = None,
    amount_minor: int | None = None,
    currency: str = "978",
    partial: bool = False,
    stan: str | None = None,
    now: datetime | None = None,
    original: Mapping[str, str] | None = None,
    final_minor: int | None = None,
    overrides: Mapping[str, str | None] | None = None,
    totals: Totals | None = None,
    batch_number: str = "000001",
) -> dict[str, str]:
    """Fields of one request; ``overrides`` replaces fields (``None`` removes one).

    ``original`` is the earlier request (its fields) that a completion or reversal names in
    field 90; a reversal takes its processing code. ``final_minor`` adds field 95 (a partial
    reversal: what the transaction finally came to). ``close-batch`` sends ``totals`` (fields
    74-77, 86-89, the net in 97) for batch ``batch_number`` (field 60).
    """
    if op not in OPERATIONS:
        raise SimError(f"unknown operation {op!r}; use one of {', '.join(OPERATIONS)}")
    mti, proc, network = OPERATIONS[op]
    if op in NEEDS_ORIGINAL and original is None:
        raise SimError(f"{op} needs the original request (--original MTI/STAN/MMDDhhmmss)")
    now = now or datetime.now(UTC)
    local = now.astimezone()
    fields: dict[str, str] = {
        "t": mti,
        "7": now.strftime("%m%d%H%M%S"),
        "11": stan or next_stan(),
        "12": local.strftime("%H%M%S"),
        "13": local.strftime("%m%d"),
        "41": terminal,
    }
    if network is not None:
        fields["70"] = network
    elif op == "close-batch":
        assert proc is not None
        fields["3"] = proc
        fields["42"] = store.ljust(15)
        fields["49"] = currency
        fields["60"] = batch_number
        fields.update((totals or Totals()).to_fields())
    else:
        assert proc is not None
        if pan is None:
            raise SimError(f"{op} needs --card")
        fields["2"] = pan
        fields["3"] = proc
        fields["42"] = store.ljust(15)
        if op in AMOUNT_OPS:
            fields["4"] = f"{amount_minor or 0:012d}"
            fields["49"] = currency
        if partial:
            fields["48"] = encode_tlv({"PA": "1"})
        fields["22"] = "011"
        if original is not None:
            fields["90"] = original_data(original)
            if op.startswith("reverse"):
                fields["3"] = original.get("3", proc)
        if final_minor is not None:
            fields["95"] = f"{final_minor:012d}" + "0" * 30
    for key, value in (overrides or {}).items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


def original_data(original: Mapping[str, str]) -> str:
    """Field 90 naming ``original`` (its MTI, STAN, field 7 and acquirer)."""
    return encode_original(
        OriginalData(original["t"], original["11"], original["7"], original.get("32", "0"))
    )


def parse_original(text: str) -> dict[str, str]:
    """``MTI/STAN/MMDDhhmmss[/PROC]`` from the command line into original fields.

    >>> parse_original("0200/000123/1122103000")["11"]
    '000123'
    """
    parts = text.split("/")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise SimError("--original must be MTI/STAN/MMDDhhmmss[/PROC], e.g. 0200/000123/1122103000")
    mti, stan, sent = parts[:3]
    if len(mti) != 4 or len(stan) != 6 or len(sent) != 10:
        raise SimError("--original must be MTI/STAN/MMDDhhmmss[/PROC], e.g. 0200/000123/1122103000")
    fields = {"t": mti, "11": stan, "7": sent}
    if len(parts) == 4:
        fields["3"] = parts[3]
    return fields


def as_repeat(fields: Mapping[str, str]) -> dict[str, str]:
    """The same message as a repeat (0220 -> 0221, 0400 -> 0401, 0420 -> 0421)."""
    repeated = dict(fields)
    if repeated["t"] in ("0220", "0400", "0420"):
        repeated["t"] = repeated["t"][:3] + "1"
    return repeated


class TerminalConnection:
    """One TCP connection to the host, one request at a time (or pipelined with send/receive).

    Resource handling: use as ``async with``; the socket is closed on exit.
    """

    def __init__(self, stream: trio.SocketStream, framing: Framing = Framing.BINARY2) -> None:
        self.stream = stream
        self.framing = framing
        self._reader = FrameReader(framing, framing.payload_len_max)
        self._frames: list[bytes] = []

    @classmethod
    async def open(
        cls, host: str, port: int, framing: Framing = Framing.BINARY2
    ) -> TerminalConnection:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise SimError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return cls(stream, framing)

    async def __aenter__(self) -> TerminalConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    async def send_raw(self, payload: bytes) -> None:
        await self.stream.send_all(encode_frame(payload, self.framing))

    async def receive_raw(self) -> bytes:
        while not self._frames:
            data = await self.stream.receive_some(RECEIVE_BYTES_MAX)
            if not data:
                raise SimError("the host closed the connection")
            self._frames.extend(self._reader.feed(data))
        return self._frames.pop(0)

    async def exchange(
        self,
        fields: Mapping[str, str],
        timeout_s: float = 15.0,
        *,
        security: TerminalSecurity | None = None,
        pin: str | None = None,
    ) -> dict[str, str]:
        """Send one request and wait for its answer. With ``security`` the request is MACed
        (and the PIN enciphered) by the terminal's profile and the answer's MAC is checked."""
        try:
            sealed = security.seal(fields, pin) if security is not None else None
        except TerminalSecurityError as exc:
            raise SimError(str(exc)) from None
        if sealed is None and pin is not None:
            raise SimError("a PIN needs a terminal security profile (--security)")
        await self.send_raw(sealed.payload if sealed is not None else encode_message(fields))
        with trio.move_on_after(timeout_s) as scope:
            raw = await self.receive_raw()
        if scope.cancelled_caught:
            raise SimError(f"no answer within {timeout_s:g} s")
        resp = decode_response(raw)
        if security is not None and sealed is not None:
            try:
                security.check_answer(sealed, raw, resp)
            except TerminalSecurityError as exc:
                raise SimError(str(exc)) from None
        return resp


def decode_response(raw: bytes) -> dict[str, str]:
    decoded, _ = iso8583.decode(raw, HOUSE_ASCII)
    return dict(decoded)


@dataclass(frozen=True, slots=True)
class Answer:
    rc: str
    approved_minor: int | None
    available_minor: int | None
    ledger_minor: int | None
    field44: str | None


def summarize(resp: Mapping[str, str]) -> Answer:
    ledger = available = None
    if "54" in resp:
        for b in decode_balances(resp["54"]):
            if b.amount_type == "01":
                ledger = b.amount_minor
            elif b.amount_type == "02":
                available = b.amount_minor
    approved = int(resp["4"]) if "4" in resp and resp.get("39") in ("00", "10") else None
    return Answer(resp.get("39", "??"), approved, available, ledger, resp.get("44"))


def _field_line(key: str, value: str) -> str:
    shown = mask_pan(value) if key == "2" else value
    return f"    {key:>3}  {shown}"


def describe_exchange(
    op: str, req: Mapping[str, str], resp: Mapping[str, str], elapsed_s: float, verbose: bool
) -> str:
    currency = req.get("49", "978")
    lines = []
    head = f"-> {req['t']} {op}"
    if "2" in req:
        head += f"  card {mask_pan(req['2'])}"
    if "4" in req:
        amount = req["4"]
        head += f"  amount {format_minor(int(amount), currency) if amount.isdigit() else amount}"
    head += f"  terminal {req['41']}  stan {req['11']}  sent {req['7']}"
    if "90" in req:
        head += f"  original {req['90'][:4]}/{req['90'][4:10]}/{req['90'][10:20]}"
    lines.append(head)
    if verbose:
        lines += [_field_line(k, v) for k, v in req.items() if k != "t"]
    ans = summarize(resp)
    tail = f"<- {resp.get('t', '????')} rc {ans.rc} {RESPONSE_CODES.get(ans.rc, '')}"
    if ans.approved_minor is not None and "4" in req:
        tail += f"  approved {format_minor(ans.approved_minor, currency)}"
    if ans.available_minor is not None:
        tail += f"  balance {format_minor(ans.available_minor, currency)}"
    if ans.field44:
        tail += f"  field 44: {ans.field44}"
    if "38" in resp:
        tail += f"  approval {resp['38']}"
    if "37" in resp:
        tail += f"  rrn {resp['37']}"
    if "63" in resp:
        tags = decode_tlv(resp["63"], 63)
        if "RT" in tags:
            tail += f"  receipt {tags['RT']!r}"
        if "EX" in tags:
            tail += f"  valid through {tags['EX']}"
        if "AC" in tags:
            tail += f"  activation code {tags['AC']} (printed on the receipt)"
    tail += f"  ({elapsed_s * 1000:.1f} ms)"
    lines.append(tail)
    if verbose:
        lines += [_field_line(k, v) for k, v in resp.items() if k not in ("t", "p")]
    return "\n".join(lines)


class CardBook:
    """Card numbers from card-issue files, referred to as ``@N`` or ``@set:N`` (1-based)."""

    def __init__(self) -> None:
        self.sets: dict[str, list[str]] = {}

    def add_file(self, name: str, path: Path) -> None:
        try:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        except FileNotFoundError:
            raise SimError(f"card file {path} not found") from None
        if not rows or "pan" not in rows[0]:
            raise SimError(f"card file {path} has no 'pan' column")
        self.sets[name] = [row["pan"] for row in rows]

    def resolve(self, ref: str) -> str:
        """A literal card number, ``@N``, ``@set:N``, or ``unknown`` (a valid, unissued one)."""
        if ref == "unknown":
            return self.unknown()
        if not ref.startswith("@"):
            if not ref.isdigit():
                raise SimError("--card must be a card number, @N or @set:N")
            return ref
        name, _, index = ref[1:].rpartition(":")
        name = name or "default"
        if name not in self.sets:
            raise SimError(f"card reference {ref}: no card file {name!r} given (--cards)")
        cards = self.sets[name]
        if not index.isdigit() or not 1 <= int(index) <= len(cards):
            raise SimError(f"card reference {ref}: use @1 to @{len(cards)}")
        return cards[int(index) - 1]

    def unknown(self) -> str:
        """A Luhn-valid number in the same range as the first known card, never issued."""
        known = {pan for cards in self.sets.values() for pan in cards}
        template = next(iter(known), UNKNOWN_CARD_PREFIX + "0" * 10)
        while True:
            body = template[:6] + "".join(
                str(secrets.randbelow(10)) for _ in range(len(template) - 7)
            )
            pan = body + luhn_check_digit(body)
            if pan not in known:
                return pan
