"""A terminal for the authsrv house dialect, written from docs/dialect.md with the standard
library alone.

It signs on (0800, field 70 = 001), redeems an amount with partial approval allowed (0200,
processing code 00, ``PA=1`` in field 48) and asks the balance (0200, processing code 30),
printing each answer::

    python examples/stdlib_client.py --port 8583 --terminal T0000001 --store S0001 \\
        --card CARD_NUMBER --amount 12.00

The functions are meant to be read and copied: building a message (MTI, bitmap, fixed and
LLVAR/LLLVAR fields), the 2-byte length framing, and parsing an answer.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

# Field number -> (digits of its length prefix: 0 fixed, 2 LLVAR, 3 LLLVAR; length or maximum).
# From the field list, docs/dialect.md §4.
# fmt: off
FIELDS: dict[int, tuple[int, int]] = {
    2: (2, 19),   3: (0, 6),    4: (0, 12),   7: (0, 10),   11: (0, 6),   12: (0, 6),
    13: (0, 4),   14: (0, 4),   22: (0, 3),   25: (0, 2),   32: (2, 11),  35: (2, 37),
    37: (0, 12),  38: (0, 6),   39: (0, 2),   41: (0, 8),   42: (0, 15),  44: (2, 25),
    48: (3, 999), 49: (0, 3),   52: (0, 16),  54: (3, 120), 63: (3, 999), 64: (0, 16),
    70: (0, 3),   90: (0, 42),  95: (0, 42),  128: (0, 16),
}
# fmt: on
BITMAP_CHARS = 16  # one bitmap: 64 bits as hexadecimal characters
STORE_ID_LEN = 15  # field 42 is fixed 15, the store id padded with spaces
HEADER = struct.Struct(">H")  # 2-byte big-endian length, not counting itself
# fmt: off
RESPONSE_CODES = {  # the codes the host produces today, docs/dialect.md §8
    "00": "approved",            "03": "unknown terminal or store", "10": "partial approval",
    "12": "invalid transaction", "13": "invalid amount",            "14": "invalid card number",
    "30": "format error",        "41": "lost card",                 "43": "stolen card",
    "51": "insufficient funds",  "54": "expired card",              "57": "not permitted",
    "58": "not accepted here",   "61": "exceeds amount limit",      "62": "restricted card",
    "78": "card not activated",  "91": "host unavailable or sign-on needed",
}
# fmt: on


# --- building and parsing messages -------------------------------------------------------------


def bitmap(numbers: Iterable[int]) -> str:
    """The primary bitmap, followed by the secondary one when a field above 64 is present.

    >>> bitmap([2, 3, 4]), bitmap([7, 70])
    ('7000000000000000', '82000000000000000400000000000000')
    """
    present = set(numbers)
    width = 128 if max(present) > 64 else 64
    if width == 128:
        present.add(1)  # bit 1 announces the secondary bitmap
    bits = 0
    for number in present:
        bits |= 1 << (width - number)
    return f"{bits:0{width // 4}X}"


def encode_field(number: int, value: str) -> str:
    """A field as it goes on the wire: fixed fields as they are, others after their length."""
    prefix_len, length = FIELDS[number]
    if prefix_len == 0:
        if len(value) != length:
            raise ValueError(f"field {number} must be {length} characters, not {len(value)}")
        return value
    if len(value) > length:
        raise ValueError(f"field {number} takes at most {length} characters, not {len(value)}")
    return f"{len(value):0{prefix_len}d}{value}"


def encode_message(mti: str, fields: Mapping[int, str]) -> bytes:
    """MTI, bitmap(s), then the fields in ascending order, all in ASCII."""
    body = "".join(encode_field(number, fields[number]) for number in sorted(fields))
    return (mti + bitmap(fields) + body).encode("ascii")


def frame(payload: bytes) -> bytes:
    """Prefix a message with its 2-byte big-endian length."""
    return HEADER.pack(len(payload)) + payload


@dataclass(frozen=True)
class Message:
    mti: str
    fields: dict[int, str]

    @property
    def rc(self) -> str:
        return self.fields.get(39, "")


def decode_message(payload: bytes) -> Message:
    """Parse a message of the house dialect.

    Error handling: ``ValueError`` for a field outside the dialect or a message that ends early
    or runs on after its last field.
    """
    text = payload.decode("ascii")
    mti, pos = text[:4], 4
    bits, width = int(text[pos : pos + BITMAP_CHARS], 16), 64
    pos += BITMAP_CHARS
    if bits >> 63:  # bit 1: a secondary bitmap follows
        bits = bits << 64 | int(text[pos : pos + BITMAP_CHARS], 16)
        width = 128
        pos += BITMAP_CHARS
    fields: dict[int, str] = {}
    for number in range(2, width + 1):
        if not bits >> (width - number) & 1:
            continue
        if number not in FIELDS:
            raise ValueError(f"field {number} is not in the house dialect")
        prefix_len, length = FIELDS[number]
        if prefix_len:
            length = int(text[pos : pos + prefix_len])
            pos += prefix_len
        value = text[pos : pos + length]
        if len(value) != length:
            raise ValueError(f"the message ends inside field {number}")
        fields[number] = value
        pos += length
    if pos != len(text):
        raise ValueError("data after the last field")
    return Message(mti, fields)


def encode_tlv(tags: Mapping[str, str]) -> str:
    """Fields 48 and 63: ``TAG(2) LEN(3 digits) VALUE`` repeated."""
    return "".join(f"{tag}{len(value):03d}{value}" for tag, value in tags.items())


def decode_tlv(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        tag, length = text[pos : pos + 2], int(text[pos + 2 : pos + 5])
        tags[tag] = text[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return tags


@dataclass(frozen=True)
class Balance:
    account_type: str
    amount_type: str  # 01 ledger, 02 available
    currency: str
    amount_minor: int


def decode_balances(text: str) -> list[Balance]:
    """Field 54: 20-character blocks, type(2) amount type(2) currency(3) C/D amount(12)."""
    blocks = []
    for i in range(0, len(text), 20):
        block = text[i : i + 20]
        sign = 1 if block[7] == "C" else -1
        blocks.append(Balance(block[0:2], block[2:4], block[4:7], sign * int(block[8:20])))
    return blocks


# --- a terminal --------------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


class Terminal:
    """One TCP connection to the host, one request at a time.

    Resource handling: use as a context manager; the socket is closed on exit.
    """

    def __init__(
        self,
        host: str,
        port: int,
        terminal_id: str,
        store_id: str,
        *,
        currency: str = "978",
        timeout_s: float = 15.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.terminal_id = terminal_id
        self.store_id = store_id
        self.currency = currency
        self.clock = clock
        self.stan = 0
        self.sock = socket.create_connection((host, port), timeout=timeout_s)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def exchange(self, mti: str, fields: Mapping[int, str]) -> Message:
        self.sock.sendall(frame(encode_message(mti, fields)))
        (size,) = HEADER.unpack(self._receive_exactly(HEADER.size))
        return decode_message(self._receive_exactly(size))

    def _receive_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the host closed the connection")
            data += chunk
        return data

    def _common(self) -> dict[int, str]:
        """Fields 7, 11, 12, 13 and 41, mandatory in every request."""
        self.stan = self.stan % 999_999 + 1
        now = self.clock()
        local = now.astimezone()
        return {
            7: now.astimezone(UTC).strftime("%m%d%H%M%S"),
            11: f"{self.stan:06d}",
            12: local.strftime("%H%M%S"),
            13: local.strftime("%m%d"),
            41: self.terminal_id,
        }

    def _financial(
        self, proc: str, pan: str, amount_minor: int | None, tags: Mapping[str, str] | None = None
    ) -> Message:
        fields = {**self._common(), 2: pan, 3: proc, 42: self.store_id.ljust(STORE_ID_LEN)}
        if amount_minor is not None:
            fields[4] = f"{amount_minor:012d}"
            fields[49] = self.currency
        if tags:
            fields[48] = encode_tlv(tags)
        return self.exchange("0200", fields)

    def sign_on(self) -> Message:
        return self.exchange("0800", {**self._common(), 70: "001"})

    def activate(self, pan: str, amount_minor: int) -> Message:
        return self._financial("720000", pan, amount_minor)

    def redeem(self, pan: str, amount_minor: int, partial_ok: bool = True) -> Message:
        return self._financial("000000", pan, amount_minor, {"PA": "1" if partial_ok else "0"})

    def balance(self, pan: str) -> Message:
        return self._financial("300000", pan, None)


# --- the command line --------------------------------------------------------------------------


def to_minor(text: str) -> int:
    """``"12.5"`` -> 1250: amounts are integers in minor units (two decimals here)."""
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(frac) > 2 or (frac and not frac.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount like 12.00")
    return int(whole) * 100 + int(frac.ljust(2, "0"))


def to_major(amount_minor: int) -> str:
    """1250 -> ``"12.50"``, without floats."""
    sign = "-" if amount_minor < 0 else ""
    whole, cents = divmod(abs(amount_minor), 100)
    return f"{sign}{whole}.{cents:02d}"


def describe(answer: Message) -> str:
    rc = answer.rc
    parts = [f"{answer.mti} rc {rc} {RESPONSE_CODES.get(rc, '')}".rstrip()]
    if 4 in answer.fields and rc in ("00", "10"):
        parts.append(f"amount {to_major(int(answer.fields[4]))}")
    for balance in decode_balances(answer.fields.get(54, "")):
        if balance.amount_type == "02":
            parts.append(f"available {to_major(balance.amount_minor)}")
    receipt = decode_tlv(answer.fields.get(63, "")).get("RT")
    if receipt:
        parts.append(f"receipt {receipt!r}")
    if 44 in answer.fields:
        parts.append(f"field 44 {answer.fields[44]!r}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8583)
    parser.add_argument("--terminal", required=True, help="field 41, 8 characters")
    parser.add_argument("--store", required=True, help="field 42, the store id")
    parser.add_argument("--card", required=True, help="card number (field 2)")
    parser.add_argument("--amount", type=to_minor, default=to_minor("12.00"), help="12.00")
    parser.add_argument("--currency", default="978", help="ISO 4217 numeric, default EUR")
    args = parser.parse_args(argv)
    masked = args.card[:6] + "*" * (len(args.card) - 10) + args.card[-4:]
    try:
        with Terminal(args.host, args.port, args.terminal, args.store, currency=args.currency) as t:
            signed_on = t.sign_on()
            print(f"sign-on: {describe(signed_on)}")
            redeemed = t.redeem(args.card, args.amount)
            print(f"redeem {to_major(args.amount)} with card {masked}: {describe(redeemed)}")
            balance = t.balance(args.card)
            print(f"balance: {describe(balance)}")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = signed_on.rc == "00" and redeemed.rc in ("00", "10") and balance.rc == "00"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
