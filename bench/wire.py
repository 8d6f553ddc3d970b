"""The generator's wire code: pre-encoded request templates patched in place, and a minimal
reader of answers that finds fields 11 and 39 by walking the bitmap.

Each template is encoded once with the house dialect (``protocol.encode_message`` over
``simulators.terminal.build_request``), length header included. A request is then a copy of
its template with the card number, the amount, fields 7/11/12/13 and (reversals) field 90
overwritten at fixed byte offsets; the offsets are found by the same bitmap walk that reads the
answers, and checked against pyiso8583 when the template is built. With a terminal security
profile the template also carries field 48 ``KS`` (DUKPT) and the MAC field (64, or 128 with a
secondary bitmap) as placeholders, filled by ``bench.security.Sealer``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import iso8583

from protocol.dialect import HOUSE_ASCII
from protocol.framing import encode_frame
from protocol.messages import encode_message
from protocol.tlv import TLV_LEN_LEN, TLV_TAG_LEN, decode_tlv, encode_tlv
from simulators.terminal import build_request

__all__ = [
    "OPS",
    "AnswerError",
    "Clock",
    "Template",
    "answer_stan_rc",
    "build_template",
    "field_spans",
]

# The bench's operations; a reversal names an earlier approved redeem of its terminal.
OPS: tuple[str, ...] = ("redeem", "balance", "load", "reversal")
HEADER_LEN = 2  # the 2-byte binary length before every message (DESIGN §3)
BITMAP_HEX_LEN = 16
# Fields 7, 11, 12 and 13 follow each other in every bench request (8, 9, 10 are never sent):
# one slice assignment sets all four.
TIME_FIELDS_LEN = 10 + 6 + 6 + 4
PLACEHOLDER_PAN = "6999900000000000"
ORIGINAL_STAN_AT = 4  # inside field 90: MTI (4), STAN (6), field 7 (10), acquirer, zeros
ORIGINAL_SENT_AT = 10
MAC_HEX_LEN = 16  # field 64 or 128, always the last field
KSN_HEX_LEN = {"dukpt-tdes": 20, "dukpt-aes": 24}
# PIN blocks: ISO format 0 in field 52 under TDES keys, format 4 in field 48 PB under AES.
PIN_BLOCK_HEX_LEN = {"tdes": 16, "aes": 32}


class AnswerError(Exception):
    """An answer the generator cannot read (no field 11 or 39, or a malformed field)."""


def _field_table() -> dict[int, tuple[int, int]]:
    """field -> (length digits, fixed length): one of them is 0."""
    table: dict[int, tuple[int, int]] = {}
    for key, spec in HOUSE_ASCII.items():
        if not key.isdigit() or key == "1":
            continue
        field = int(key)
        # The walk counts characters as bytes: ASCII data and lengths only.
        if spec["data_enc"] != "ascii" or spec["len_enc"] != "ascii":
            continue
        len_type = int(spec["len_type"])
        table[field] = (len_type, 0 if len_type else int(spec["max_len"]))
    return table


_FIELDS = _field_table()
_PLAN_CACHE_MAX = 256  # distinct bitmaps seen in answers (a handful in practice)
_plans: dict[bytes, list[tuple[int, int, int]]] = {}


def _plan(bitmap_hex: bytes) -> list[tuple[int, int, int]]:
    """The present fields up to 39 of a bitmap, in wire order: (field, length digits, fixed)."""
    plan = _plans.get(bitmap_hex)
    if plan is not None:
        return plan
    bits = int(bitmap_hex, 16)
    plan = []
    for field in range(2, 40):
        if bits >> (64 - field) & 1:
            spec = _FIELDS.get(field)
            if spec is None:
                raise AnswerError(f"field {field} is not ASCII in the house dialect")
            plan.append((field, *spec))
    if len(_plans) < _PLAN_CACHE_MAX:
        _plans[bitmap_hex] = plan
    return plan


def answer_stan_rc(payload: bytes) -> tuple[bytes, bytes]:
    """Fields 11 and 39 of an answer (without its length header); 39 is ``b""`` when absent
    (the echo baseline gets its requests back).

    >>> fields = {"t": "0210", "2": "6999900375198770", "3": "000000", "11": "000042", "39": "51"}
    >>> answer_stan_rc(encode_message(fields))
    (b'000042', b'51')

    Error handling: :class:`AnswerError` when field 11 is missing or the message is cut short.
    """
    head = payload[4:20]
    pos = 20
    if int(head[:1], 16) & 8:  # bit 1: a secondary bitmap follows (fields 65-128)
        pos += BITMAP_HEX_LEN
    stan = rc = b""
    try:
        for field, len_digits, fixed in _plan(head):
            if len_digits:
                size = int(payload[pos : pos + len_digits])
                pos += len_digits
            else:
                size = fixed
            if field == 11:
                stan = payload[pos : pos + size]
            elif field == 39:
                rc = payload[pos : pos + size]
            pos += size
    except ValueError:
        raise AnswerError("a length prefix is not a number") from None
    if len(stan) != 6 or pos > len(payload):
        raise AnswerError("the answer lacks field 11 or is cut short")
    return stan, rc


def field_spans(payload: bytes) -> dict[int, tuple[int, int]]:
    """Where the value of every field up to 128 lies in ``payload``: field -> (start, end)."""
    bits = int(payload[4:20], 16)
    pos = 20
    if bits >> 63 & 1:
        bits = bits << 64 | int(payload[20:36], 16)
        pos = 36
        last = 128
    else:
        bits <<= 64
        last = 64
    spans: dict[int, tuple[int, int]] = {}
    for field in range(2, last + 1):
        if not bits >> (128 - field) & 1:
            continue
        len_digits, fixed = _FIELDS[field]
        size = fixed
        if len_digits:
            size = int(payload[pos : pos + len_digits])
            pos += len_digits
        spans[field] = (pos, pos + size)
        pos += size
    return spans


@dataclass(frozen=True, slots=True)
class Template:
    """One request, framed, with the byte offsets (in the frame) of what each request changes."""

    op: str
    frame: bytes
    pan_at: int
    time_at: int  # fields 7, 11, 12, 13 (TIME_FIELDS_LEN bytes)
    amount_at: int  # field 4; -1 when the request has none (balance)
    original_at: int  # field 90; -1 unless a reversal
    ksn_at: int = -1  # the KSN inside field 48 (DUKPT); -1 otherwise
    mac_at: int = -1  # field 64 or 128 (any security profile); -1 without one
    pin_at: int = -1  # the PIN block: field 52 (TDES) or inside field 48 PB (AES); -1: none

    @property
    def stan_at(self) -> int:
        return self.time_at + 10


def build_template(
    op: str,
    terminal: str,
    store: str,
    currency: str = "978",
    security: str = "none",
    *,
    pin: bool = False,
) -> Template:
    """The template of one operation for one terminal (card number and times are placeholders;
    with a ``security`` profile also the KSN, the MAC and, with ``pin``, the PIN block).

    >>> t = build_template("redeem", "BT000001", "B0001")
    >>> t.frame[t.pan_at : t.pan_at + 16]
    b'6999900000000000'
    """
    assert op in OPS, op
    original: Mapping[str, str] | None = None
    sim_op = op
    if op == "reversal":
        sim_op = "reverse"
        original = {"t": "0200", "11": "000000", "7": "0000000000", "3": "000000"}
    fields = build_request(
        sim_op,
        terminal=terminal,
        store=store,
        pan=PLACEHOLDER_PAN,
        amount_minor=0 if op != "balance" else None,
        currency=currency,
        stan="000000",
        original=original,
    )
    assert security != "none" or not pin, "a PIN block needs a security profile"
    aes = security.endswith("aes")
    tags: dict[str, str] = {}
    if security.startswith("dukpt-"):
        tags["KS"] = "0" * KSN_HEX_LEN[security]
    if pin and aes:
        tags["PB"] = "0" * PIN_BLOCK_HEX_LEN["aes"]
    elif pin:
        fields["52"] = "0" * PIN_BLOCK_HEX_LEN["tdes"]
    if tags:
        assert "48" not in fields, "bench requests carry no other field 48 tag"
        fields["48"] = encode_tlv(tags)  # KS before PB, as the simulator's terminal side
    if security != "none":
        fields["128" if any(int(k) > 64 for k in fields if k != "t") else "64"] = "0" * MAC_HEX_LEN
    payload = encode_message(fields)
    frame = encode_frame(payload)
    spans = {f: (a + HEADER_LEN, b + HEADER_LEN) for f, (a, b) in field_spans(payload).items()}
    for first, second in ((7, 11), (11, 12), (12, 13)):
        assert spans[first][1] == spans[second][0], "fields 7, 11, 12, 13 are not contiguous"
    assert spans[13][1] - spans[7][0] == TIME_FIELDS_LEN
    assert spans[2][1] - spans[2][0] == len(PLACEHOLDER_PAN)
    template = Template(
        op=op,
        frame=frame,
        pan_at=spans[2][0],
        time_at=spans[7][0],
        amount_at=spans[4][0] if 4 in spans else -1,
        original_at=spans[90][0] if 90 in spans else -1,
        ksn_at=spans[48][0] + TLV_TAG_LEN + TLV_LEN_LEN if "KS" in tags else -1,
        mac_at=len(frame) - MAC_HEX_LEN if security != "none" else -1,
        pin_at=_pin_at(spans, fields, aes) if pin else -1,
    )
    _check_template(template, fields)
    return template


def _pin_at(spans: Mapping[int, tuple[int, int]], fields: Mapping[str, str], aes: bool) -> int:
    if not aes:
        return spans[52][0]
    value = fields["48"]
    at = value.index("PB")
    assert value[at + TLV_TAG_LEN : at + TLV_TAG_LEN + TLV_LEN_LEN] == "032", value
    return spans[48][0] + at + TLV_TAG_LEN + TLV_LEN_LEN


def _check_template(template: Template, fields: Mapping[str, Any]) -> None:
    """The offsets name the fields pyiso8583 decodes (a template is built once per run)."""
    decoded, _ = iso8583.decode(template.frame[HEADER_LEN:], HOUSE_ASCII)
    frame = template.frame
    assert frame[template.pan_at : template.pan_at + 16].decode() == decoded["2"]
    times = frame[template.time_at : template.time_at + TIME_FIELDS_LEN].decode()
    assert times == decoded["7"] + decoded["11"] + decoded["12"] + decoded["13"]
    if template.amount_at >= 0:
        assert frame[template.amount_at : template.amount_at + 12].decode() == decoded["4"]
    if template.original_at >= 0:
        assert frame[template.original_at : template.original_at + 42].decode() == decoded["90"]
    tags = decode_tlv(decoded["48"], 48) if "48" in decoded else {}
    if template.ksn_at >= 0:
        ksn = tags["KS"]
        assert frame[template.ksn_at : template.ksn_at + len(ksn)].decode() == ksn
    if template.pin_at >= 0:
        block = decoded["52"] if "52" in fields else tags["PB"]
        assert frame[template.pin_at : template.pin_at + len(block)].decode() == block
    if template.mac_at >= 0:
        mac_field = "128" if "128" in fields else "64"
        assert frame[template.mac_at :].decode() == decoded[mac_field] == fields[mac_field]
    assert decoded["41"] == fields["41"]


class Clock:
    """Fields 7 (UTC) and 12/13 (local) for the current second, rebuilt once a second."""

    __slots__ = ("_local", "_second", "_sent")

    def __init__(self) -> None:
        self._second = -1
        self._sent = b""
        self._local = b""

    def fields(self) -> tuple[bytes, bytes]:
        """(field 7, fields 12 + 13) as ASCII bytes."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._sent = time.strftime("%m%d%H%M%S", time.gmtime(now)).encode()
            local = time.localtime(now)
            self._local = (
                time.strftime("%H%M%S", local).encode() + time.strftime("%m%d", local).encode()
            )
        return self._sent, self._local
