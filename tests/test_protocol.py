"""The wire: dialect table, message codec, field codecs, framing, card numbers, currencies, and
the docstring examples of the pure modules (STYLE §1, §7, §8)."""

from __future__ import annotations

import doctest
import importlib
import json
import pkgutil
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keys
import protocol
from protocol.cards import luhn_check_digit, luhn_valid, mask_pan
from protocol.currency import CURRENCIES, format_minor, parse_major
from protocol.dialect import HOUSE_ASCII, HOUSE_FIELDS, RESPONSE_ONLY
from protocol.errors import FormatError
from protocol.framing import FrameError, FrameReader, Framing, encode_frame
from protocol.messages import (
    FIELD_CHECKS,
    Unreadable,
    check_fields,
    decode_fields,
    encode_message,
    parse_request,
    response_mti,
    transmission_datetime,
    transmission_ms,
)
from protocol.tlv import (
    Balance,
    OriginalData,
    decode_balances,
    decode_original,
    decode_tlv,
    encode_balances,
    encode_original,
    encode_tlv,
)

# ../shared sits beside the repository (DEVELOPERS.md; CI clones it the same way).
LUHN_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "luhn.json"
PAN = "6036281234567897"

# -- the dialect table (STYLE §1) --------------------------------------------------------------


@pytest.mark.parametrize("number", list(HOUSE_FIELDS))
def test_every_dialect_field_has_max_len_and_desc(number: str) -> None:
    spec = HOUSE_FIELDS[number]
    assert isinstance(spec.get("max_len"), int)
    assert spec["max_len"] >= 0
    assert isinstance(spec.get("desc"), str)
    assert spec["desc"].strip()
    assert HOUSE_ASCII[number] == spec  # the house table wins over default_ascii


# -- message codec -----------------------------------------------------------------------------

FULL_0200: dict[str, str] = {
    "t": "0200",
    "2": PAN,
    "3": "000000",
    "4": "000000001250",
    "7": "1122103000",
    "11": "000123",
    "12": "113000",
    "13": "1122",
    "14": "2912",
    "22": "011",
    "25": "00",
    "32": "12345",
    "37": "ABC123456789",
    "41": "T0000001",
    "42": "S0001          ",
    "48": "PA0011OP003042",
    "49": "978",
    "52": "0123456789ABCDEF",
    "64": "FEDCBA9876543210",
}
FULL_0400: dict[str, str] = {
    "t": "0400",
    "2": PAN,
    "3": "000000",
    "4": "000000001250",
    "7": "1122103000",
    "11": "000124",
    "12": "113000",
    "13": "1122",
    "41": "T0000001",
    "42": "S0001          ",
    "49": "978",
    "90": "020000012311221030000000000000000000000000",
    "95": "0" * 42,
    "128": "FEDCBA9876543210",
}


@pytest.mark.parametrize("fields", [FULL_0200, FULL_0400], ids=["0200", "0400-secondary-bitmap"])
def test_encode_decode_round_trip(fields: dict[str, str]) -> None:
    decoded = decode_fields(encode_message(fields))
    bitmaps = {k: decoded.pop(k) for k in ("p", "1") if k in decoded}
    assert decoded == fields
    assert ("1" in bitmaps) == ("128" in fields)
    # encode_message ignores a stale bitmap and computes its own
    assert encode_message({**fields, "p": "0" * 16}) == encode_message(fields)


def test_parse_request_of_a_full_0200() -> None:
    r = parse_request(decode_fields(encode_message(FULL_0200)))
    assert (r.mti, r.mti_class, r.repeat) == ("0200", "0200", False)
    assert (r.tx_type, r.from_account, r.amount_minor, r.currency) == ("00", "00", 1250, "978")
    assert (r.terminal_id, r.store_id, r.acquirer, r.rrn) == (
        "T0000001",
        "S0001",
        "12345",
        "ABC123456789",
    )
    assert r.tags == {"PA": "1", "OP": "042"}
    assert r.partial_ok
    assert (r.pan, r.expiry) == (PAN, "2912")
    assert PAN not in repr(r)


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"4": "00000000125X"}, 4, "not numeric"),  # a digits-only field
        ({"11": "00012 "}, 11, "not numeric"),
        ({"3": "009900"}, 3, "bad account type"),  # a field with its own check
        ({"4": "00000000125X", "3": "009900"}, 3, "bad account type"),  # the lowest first
        ({"39": "00"}, 39, "not allowed"),  # a response field in a request
        ({"4": "00000000125X", "39": "00"}, 4, "not numeric"),
    ],
)
@pytest.mark.parametrize("order", ["bitmap", "reversed"])
def test_check_fields_names_the_lowest_bad_field(
    bad: dict[str, str], field: int, reason: str, order: str
) -> None:
    """Fields in bitmap order (a decoded message) and in any other order (built by the HTTP API
    or an import) are checked alike: the lowest bad field is the one named."""
    fields = {**FULL_0200, **bad}
    if order == "reversed":
        fields = dict(reversed(fields.items()))
    else:
        fields = dict(sorted(fields.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1))
    with pytest.raises(FormatError) as info:
        check_fields(fields)
    assert (info.value.field, info.value.reason) == (field, reason)


@pytest.mark.parametrize("field", sorted(RESPONSE_ONLY))
def test_every_answer_only_field_is_refused_in_a_request(field: str) -> None:
    """check_fields tests its fields' syntax before "answer only": a request field's own check
    must never let an answer-only field through (none of them has one)."""
    assert field not in FIELD_CHECKS
    with pytest.raises(FormatError) as info:
        check_fields({**FULL_0200, field: "00"})
    assert (info.value.field, info.value.reason) == (int(field), "not allowed")


def test_parse_request_of_a_repeat_reversal() -> None:
    r = parse_request(decode_fields(encode_message({**FULL_0400, "t": "0401"})))
    assert (r.mti_class, r.repeat) == ("0400", True)
    assert r.original == OriginalData("0200", "000123", "1122103000", "00000000000")


_GOOD = encode_message(FULL_0200)


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        (b"0210" + _GOOD[4:], Unreadable, "MTI is not a request MTI"),
        (b"02", Unreadable, "no readable MTI"),
        (b"xx00" + _GOOD[4:], Unreadable, "no readable MTI"),
        (_GOOD + b"X", FormatError, "field 064: extra data after"),
        (_GOOD[:-3], FormatError, "field 064: too short"),
        (b"0200" + b"G" * 16, FormatError, "field 000: not hex"),
    ],
    ids=["response-mti", "short-mti", "mti-not-digits", "extra-data", "short-field", "bitmap"],
)
def test_decode_errors(frame: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        decode_fields(frame)
    assert str(info.value) == message


# -- TLV (fields 48 and 63) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        ("", {}),
        ("PA0011", {"PA": "1"}),
        ("PA0011OP003042", {"PA": "1", "OP": "042"}),
        ("RT000", {"RT": ""}),
        ("RT012BALANCE 1.00EX00820291231", {"RT": "BALANCE 1.00", "EX": "20291231"}),
        ("ZZ003abcPA0010", {"ZZ": "abc", "PA": "0"}),  # unknown tags are kept, ignored later
    ],
)
def test_tlv_round_trip(text: str, tags: dict[str, str]) -> None:
    assert decode_tlv(text, 48) == tags
    assert encode_tlv(tags) == text


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("PA00", 48, "field 048: TLV truncated"),
        ("PA0011O", 48, "field 048: TLV truncated"),
        ("P!0011", 48, "field 048: TLV tag not alnum"),
        ("PÄ0011", 48, "field 048: TLV tag not alnum"),
        ("PA0x11", 48, "field 048: TLV length not num"),
        ("PA٠٠١1", 48, "field 048: TLV length not num"),
        ("PA0051", 48, "field 048: TLV value truncated"),
        ("PA0011PA0010", 48, "field 048: TLV tag repeated"),
        ("RT00", 63, "field 063: TLV truncated"),
    ],
)
def test_tlv_errors(text: str, field: int, message: str) -> None:
    with pytest.raises(FormatError) as info:
        decode_tlv(text, field)
    assert str(info.value) == message
    assert info.value.field == field
    assert info.value.field44 == message.removeprefix("field ").replace(":", "")


# -- field 54 balances -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balances", "text"),
    [
        ([], ""),
        ([Balance("60", "02", "978", 38000)], "6002978C000000038000"),
        ([Balance("60", "01", "978", -5)], "6001978D000000000005"),
        ([Balance("60", "01", "978", 0)], "6001978C000000000000"),
        (
            [Balance("60", "01", "978", 12050), Balance("60", "02", "978", -999_999_999_999)],
            "6001978C0000000120506002978D999999999999",
        ),
        ([Balance("65", "02", "999", 1)] * 6, "6502999C000000000001" * 6),
    ],
    ids=["none", "credit", "debit", "zero", "two-blocks-negative-max", "six-blocks"],
)
def test_balances_round_trip(balances: list[Balance], text: str) -> None:
    assert encode_balances(balances) == text
    assert decode_balances(text) == balances


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("6002978C00000003800", "field 54 is not a whole number of 20-character blocks"),
        ("6002978C000000038000X", "field 54 is not a whole number of 20-character blocks"),
        ("6002978X000000038000", "field 54 block has a bad sign or amount"),
        ("6002978C0000000380 0", "field 54 block has a bad sign or amount"),
        ("6002978C-00000038000", "field 54 block has a bad sign or amount"),
        ("6002978C٠٠٠٠٠٠٠٣٨٠٠٠", "field 54 block has a bad sign or amount"),
    ],
    ids=["short", "long", "bad-sign", "space", "minus", "non-ascii-digits"],
)
def test_balances_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_balances(text)
    assert str(info.value) == message


# -- field 90 original data --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orig", "text"),
    [
        (
            OriginalData("0200", "000123", "1122103000", "00000000000"),
            "020000012311221030000000000000000000000000",
        ),
        (
            OriginalData("0100", "999999", "0101000000", "00000012345"),
            "010099999901010000000000001234500000000000",
        ),
    ],
)
def test_original_round_trip(orig: OriginalData, text: str) -> None:
    assert encode_original(orig) == text
    assert decode_original(text) == orig


def test_original_pads_the_acquirer() -> None:
    text = encode_original(OriginalData("0200", "000123", "1122103000", "12345"))
    assert text == "0200" + "000123" + "1122103000" + "00000012345" + "00000000000"


@pytest.mark.parametrize(
    "text",
    [
        "02000001231122103000000000000000000000000",  # 41
        "0200000123112210300000000000000000000000000",  # 43
        "02000001231122103000000000000000000000000A",
        "02000001231122103000000000000000000000000٠",
        "",
    ],
    ids=["41", "43", "letter", "non-ascii-digit", "empty"],
)
def test_original_errors(text: str) -> None:
    with pytest.raises(FormatError) as info:
        decode_original(text)
    assert str(info.value) == "field 090: not 42 digits"


# -- framing -----------------------------------------------------------------------------------


def _bin(payload: bytes) -> bytes:
    return len(payload).to_bytes(2, "big") + payload


def test_frame_split_across_chunks() -> None:
    reader = FrameReader(Framing.BINARY2, 4096)
    frame = _bin(b"0800abc")
    got: list[bytes] = []
    for i in range(len(frame)):
        got += reader.feed(frame[i : i + 1])
        if i < len(frame) - 1:
            assert got == []
    assert got == [b"0800abc"]
    assert reader.buffered == 0


def test_several_frames_in_one_chunk() -> None:
    reader = FrameReader(Framing.BINARY2, 4096)
    third = _bin(b"third")
    assert reader.feed(_bin(b"one") + _bin(b"two") + third[:3]) == [b"one", b"two"]
    assert reader.buffered == 3
    assert reader.feed(third[3:]) == [b"third"]
    assert reader.buffered == 0


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    reader = FrameReader(Framing.BINARY2, 64)
    assert reader.feed(_bin(b"x" * 64)) == [b"x" * 64]


@pytest.mark.parametrize(
    ("framing", "data", "reason"),
    [
        (Framing.BINARY2, b"\x00\x00", "empty frame"),
        (Framing.BINARY2, b"\x10\x01", "frame of 4097 bytes exceeds 4096"),
        (Framing.BINARY2, b"\xff\xff", "frame of 65535 bytes exceeds 4096"),
        (Framing.ASCII4, b"0000", "empty frame"),
        (Framing.ASCII4, b"4097", "frame of 4097 bytes exceeds 4096"),
        (Framing.ASCII4, b"00a5", "length header is not 4 ASCII digits"),
        (Framing.ASCII4, b" 005", "length header is not 4 ASCII digits"),
        (Framing.ASCII4, b"+005", "length header is not 4 ASCII digits"),
    ],
)
def test_frame_errors(framing: Framing, data: bytes, reason: str) -> None:
    """Raised from the header alone: an oversized body is never buffered."""
    reader = FrameReader(framing, 4096)
    with pytest.raises(FrameError) as info:
        reader.feed(data)
    assert info.value.reason == reason
    assert str(info.value) == reason


def test_ascii4_framing() -> None:
    reader = FrameReader(Framing.ASCII4, 4096)
    assert reader.feed(b"00") == []
    assert reader.feed(b"0508000") == [b"08000"]
    assert reader.feed(b"0003abc0002de") == [b"abc", b"de"]


@pytest.mark.parametrize(
    ("payload", "framing", "frame"),
    [
        (b"0800", Framing.BINARY2, b"\x00\x040800"),
        (b"x" * 300, Framing.BINARY2, b"\x01\x2c" + b"x" * 300),
        (b"0800", Framing.ASCII4, b"00040800"),
        (b"x" * 9999, Framing.ASCII4, b"9999" + b"x" * 9999),
    ],
    ids=["binary2", "binary2-two-byte-length", "ascii4", "ascii4-max"],
)
def test_encode_frame(payload: bytes, framing: Framing, frame: bytes) -> None:
    assert encode_frame(payload, framing) == frame
    assert FrameReader(framing, framing.payload_len_max).feed(frame) == [payload]


@pytest.mark.parametrize(
    ("size", "framing", "message"),
    [
        (65536, Framing.BINARY2, "message of 65536 bytes does not fit a binary2 header"),
        (10000, Framing.ASCII4, "message of 10000 bytes does not fit a ascii4 header"),
    ],
)
def test_encode_frame_too_large(size: int, framing: Framing, message: str) -> None:
    with pytest.raises(ValueError) as info:
        encode_frame(b"x" * size, framing)
    assert str(info.value) == message


# -- card numbers ------------------------------------------------------------------------------


def _luhn_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LUHN_VECTORS.read_text())
    return data


def _luhn_number_cases() -> list[Any]:
    return [
        pytest.param(v["number"], v["valid"], id=v["number"])
        for v in _luhn_data()["vectors"]
        if "number" in v
    ]


def _luhn_prefix_cases() -> list[Any]:
    return [
        pytest.param(v["prefix"], v["check_digit"], id=v["prefix"])
        for v in _luhn_data()["vectors"]
        if "prefix" in v
    ]


def _luhn_edge_cases() -> list[Any]:
    # An entry may carry a note after the value: "<value> (explanation)".
    return [
        pytest.param(text.split(" (", 1)[0], id=f"edge{i}")
        for i, text in enumerate(_luhn_data()["edge_cases_to_reject_before_luhn"])
    ]


def test_luhn_vector_file_is_read_whole() -> None:
    data = _luhn_data()
    assert len(_luhn_number_cases()) + len(_luhn_prefix_cases()) == len(data["vectors"])
    assert len(_luhn_number_cases()) >= 20
    assert len(_luhn_edge_cases()) == 6


@pytest.mark.parametrize(("number", "valid"), _luhn_number_cases())
def test_luhn_vectors(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid
    if valid:
        assert luhn_check_digit(number[:-1]) == number[-1]


@pytest.mark.parametrize(("prefix", "digit"), _luhn_prefix_cases())
def test_luhn_check_digit_vectors(prefix: str, digit: str) -> None:
    assert luhn_check_digit(prefix) == digit
    assert luhn_valid(prefix + digit)


@pytest.mark.parametrize("text", _luhn_edge_cases())
def test_luhn_rejects_what_is_not_ascii_digits(text: str) -> None:
    assert not luhn_valid(text)
    fields = {**FULL_0200, "2": text}
    with pytest.raises(FormatError) as info:
        parse_request(fields)
    assert info.value.field == 2


@pytest.mark.parametrize(
    ("pan", "masked"),
    [
        ("6036280000000000009", "603628*********0009"),
        ("6036281234567897", "603628******7897"),
        ("603628123456", "603628**3456"),
        ("60362812345", "*******2345"),
        ("12345", "*2345"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_pan(pan: str, masked: str) -> None:
    assert mask_pan(pan) == masked
    assert len(masked) == len(pan)


# -- currencies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "minor"),
    [
        ("12.50", "978", 1250),
        ("12.5", "978", 1250),
        ("7", "978", 700),
        ("0.05", "978", 5),
        ("0", "978", 0),
        (" 3.00 ", "978", 300),
        ("999999999.99", "978", 99_999_999_999),
        ("1200", "392", 1200),
        ("1.234", "048", 1234),
        ("1.2", "048", 1200),
    ],
)
def test_parse_major(text: str, code: str, minor: int) -> None:
    assert parse_major(text, code) == minor


def _not_decimal(text: str, exp: int) -> str:
    return f"amount {text!r} is not a positive decimal with at most {exp} decimals, e.g. 12.50"


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("1", "999", "unknown currency '999': use an ISO 4217 numeric code such as 978"),
        ("1", "EUR", "unknown currency 'EUR': use an ISO 4217 numeric code such as 978"),
        ("12.505", "978", _not_decimal("12.505", 2)),
        ("-1", "978", _not_decimal("-1", 2)),
        ("1,50", "978", _not_decimal("1,50", 2)),
        ("", "978", _not_decimal("", 2)),
        (".5", "978", _not_decimal(".5", 2)),
        ("12.", "978", _not_decimal("12.", 2)),
        ("1e3", "978", _not_decimal("1e3", 2)),
        ("1.5", "392", _not_decimal("1.5", 0)),
        ("1.2345", "048", _not_decimal("1.2345", 3)),
        ("١٢", "978", _not_decimal("١٢", 2)),  # Arabic-Indic digits
        ("²", "978", _not_decimal("²", 2)),  # a superscript is a "digit" to str.isdigit
    ],
    ids=[
        "unknown-code",
        "alpha-code",
        "three-decimals",
        "negative",
        "comma",
        "empty",
        "no-whole",
        "no-fraction",
        "exponent",
        "decimals-in-jpy",
        "four-decimals-in-bhd",
        "non-ascii-digits",
        "superscript",
    ],
)
def test_parse_major_errors(text: str, code: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_major(text, code)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("minor", "code", "text"),
    [
        (12050, "978", "120.50 EUR"),
        (5, "978", "0.05 EUR"),
        (-5, "978", "-0.05 EUR"),
        (0, "978", "0.00 EUR"),
        (1200, "392", "1200 JPY"),
        (-1200, "392", "-1200 JPY"),
        (1234, "048", "1.234 BHD"),
        (1, "048", "0.001 BHD"),
    ],
)
def test_format_minor(minor: int, code: str, text: str) -> None:
    assert format_minor(minor, code) == text


@pytest.mark.parametrize("code", sorted(CURRENCIES))
def test_format_then_parse_is_identity(code: str) -> None:
    for minor in (0, 1, 9, 10, 99, 100, 12345, 10**11 + 7):
        assert parse_major(format_minor(minor, code).split()[0], code) == minor


# -- MTIs and field 7 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mti", "answer"),
    [
        ("0100", "0110"),
        ("0200", "0210"),
        ("0220", "0230"),
        ("0221", "0230"),
        ("0400", "0410"),
        ("0401", "0410"),
        ("0420", "0430"),
        ("0421", "0430"),
        ("0500", "0510"),
        ("0800", "0810"),
    ],
)
def test_response_mti(mti: str, answer: str) -> None:
    assert response_mti(mti) == answer


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, s: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, s, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field7", "now", "expected"),
    [
        ("1122103000", _utc(2026, 11, 22, 10, 31), _utc(2026, 11, 22, 10, 30)),
        ("0101000100", _utc(2026, 12, 31, 23, 58), _utc(2027, 1, 1, 0, 1)),
        ("1231235800", _utc(2027, 1, 1, 0, 1), _utc(2026, 12, 31, 23, 58)),
        ("1231235959", _utc(2027, 1, 1, 0, 0), _utc(2026, 12, 31, 23, 59, 59)),
        ("0101000000", _utc(2026, 12, 31, 23, 59, 59), _utc(2027, 1, 1)),
        ("0615120000", _utc(2026, 6, 15, 11), _utc(2026, 6, 15, 12)),
        ("1231120000", _utc(2026, 6, 15), _utc(2025, 12, 31, 12)),  # 166 days back, not 199
        ("0101120000", _utc(2026, 11, 1), _utc(2027, 1, 1, 12)),  # 61 days ahead, not 304 back
        ("0229120000", _utc(2028, 3, 1), _utc(2028, 2, 29, 12)),
        ("0229120000", _utc(2027, 6, 1), _utc(2028, 2, 29, 12)),
        ("0229120000", _utc(2025, 6, 1), _utc(2024, 2, 29, 12)),
        # 2025-2027 have no 29 February: the nearest existing one is 2028's, not a crash.
        ("0229120000", _utc(2026, 11, 22), _utc(2028, 2, 29, 12)),
    ],
    ids=[
        "same-day",
        "new-year-ahead",
        "new-year-behind",
        "new-year-one-second",
        "new-year-one-second-ahead",
        "mid-year",
        "nearest-is-last-year",
        "nearest-is-next-year",
        "leap-day-this-year",
        "leap-day-next-year",
        "leap-day-last-year",
        "leap-day-two-years-away",
    ],
)
def test_transmission_datetime(field7: str, now: datetime, expected: datetime) -> None:
    assert transmission_datetime(field7, now) == expected


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@pytest.mark.parametrize(
    ("field7", "now"),
    [
        ("1231235959", _utc(2027, 1, 1)),  # the year behind, at the new year
        ("0101000000", _utc(2026, 12, 31, 23, 59, 59)),  # the year ahead
        ("0229120000", _utc(2026, 11, 22)),  # 29 February: the full search
        ("0521120000", _utc(2026, 11, 22)),  # half a year off: the full search
        ("1122153012", _utc(2026, 11, 22, 15, 30, 12)),
    ],
)
def test_transmission_ms_matches_the_datetime(field7: str, now: datetime) -> None:
    assert transmission_ms(field7, _ms(now)) == _ms(transmission_datetime(field7, now))


@given(
    at=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2199, 12, 31)),
    now_ms=st.integers(min_value=_ms(_utc(1972, 1, 1)), max_value=_ms(_utc(2199, 1, 1))),
)
def test_transmission_ms_is_the_datetime_in_milliseconds(at: datetime, now_ms: int) -> None:
    """The engine's integer form picks the same year as the datetime search, for any field 7
    against any clock (property test)."""
    field7 = at.strftime("%m%d%H%M%S")
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    assert transmission_ms(field7, now_ms) == _ms(transmission_datetime(field7, now))


# -- docs that run (STYLE §7) ------------------------------------------------------------------


def _modules(package: ModuleType) -> list[str]:
    return [package.__name__] + [
        f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
    ]


DOCTEST_MODULES = [
    *_modules(protocol),
    "authsrv.engine",
    "authsrv.model",
    "authsrv.logs",
    *_modules(keys),
    "simulators.batch",
]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_doctests_exist_where_promised() -> None:
    """The modules whose docstrings carry examples keep them (a lost example is a lost test)."""
    tried = 0
    for name in DOCTEST_MODULES:
        runner = doctest.DocTestRunner()
        for test in doctest.DocTestFinder().find(importlib.import_module(name)):
            runner.run(test, out=lambda _text: None)
        tried += runner.tries
    assert tried >= 20
