"""protocol.fastcodec is byte-identical to pyiso8583 for the house dialect, errors included.

pyiso8583 is the reference: every test runs both codecs on the same input and compares the
whole outcome (the dict, or the exception with its msg, field, pos and partial dict).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import iso8583
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import fastcodec
from protocol.dialect import HOUSE_ASCII, HOUSE_FIELDS
from protocol.errors import FormatError
from protocol.messages import Unreadable, decode_fields

PROPERTY = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# A typical redeem and its answer (DESIGN §3).
REDEEM = {
    "t": "0200",
    "2": "6036280000000001",
    "3": "000000",
    "4": "000000001250",
    "7": "1122103015",
    "11": "000123",
    "12": "113015",
    "13": "1122",
    "22": "021",
    "41": "T0000001",
    "42": "S0001          ",
    "48": "PA0011OP003042",
    "49": "978",
}
ANSWER = {
    **{k: v for k, v in REDEEM.items() if k not in ("22", "48")},
    "t": "0210",
    "37": "000000004711",
    "38": "A12345",
    "39": "00",
    "54": "6002978C0000000087506001978C000000008750",
    "63": "EX00820291122",
}
# A reversal with a secondary bitmap (fields 90 and 128).
REVERSAL = {
    **{k: v for k, v in REDEEM.items() if k != "48"},
    "t": "0400",
    "90": "020000012311221030150000000001200000000000",
    "128": "0123456789ABCDEF",
}
# A terminal reconciliation (secondary bitmap: fields 74-97, 128) and its 0510.
RECONCILIATION = {
    **{k: v for k, v in REDEEM.items() if k not in ("2", "4", "22", "48")},
    "t": "0500",
    "3": "920000",
    "60": "000042",
    "74": "0000000002",
    "75": "0000000001",
    "76": "0000000003",
    "77": "0000000001",
    "86": "0000000000060000",
    "87": "0000000000002000",
    "88": "0000000000004250",
    "89": "0000000000001250",
    "97": "D0000000000057000",
    "128": "0123456789ABCDEF",
}
RECONCILED = {**RECONCILIATION, "t": "0510", "39": "95", "88": "0000000000004251"}
TYPICAL = (REDEEM, ANSWER, REVERSAL, RECONCILIATION, RECONCILED)


def reference_encode(fields: Mapping[str, Any]) -> bytes:
    return bytes(iso8583.encode(dict(fields), HOUSE_ASCII)[0])


def reference_decode(frame: bytes) -> tuple[dict[str, str], str | None]:
    """pyiso8583, plus the first loose prefix as protocol.messages.decode_fields finds it."""
    doc, encoded = iso8583.decode(frame, HOUSE_ASCII)
    loose = None
    for key, parts in encoded.items():
        prefix = parts.get("len", b"")
        if prefix and not (prefix.isascii() and prefix.isdigit()):
            loose = key
            break
    return doc, loose


def decode_outcome(
    decoder: Callable[[bytes], tuple[dict[str, str], str | None]], frame: bytes
) -> tuple[object, ...]:
    try:
        doc, loose = decoder(frame)
    except iso8583.DecodeError as exc:
        assert exc.s is frame
        return ("DecodeError", exc.msg, exc.field, exc.pos, exc.doc_dec)
    except KeyError as exc:
        return ("KeyError", exc.args)
    return ("ok", doc, loose)


def encode_outcome(
    encoder: Callable[[Mapping[str, Any]], bytes], fields: Any
) -> tuple[object, ...]:
    try:
        return ("ok", encoder(fields))
    except iso8583.EncodeError as exc:
        return ("EncodeError", exc.msg, exc.field)
    except (KeyError, ValueError) as exc:  # pyiso8583's reaction to odd keys
        return (type(exc).__name__, exc.args)


def assert_same_decode(frame: bytes) -> tuple[object, ...]:
    fast = decode_outcome(fastcodec.decode_checked, frame)
    assert fast == decode_outcome(reference_decode, frame)
    return fast


# --- strategies ------------------------------------------------------------------------------

DATA_FIELDS = [n for n in range(2, 129) if n != 65]
HOUSE_NUMBERS = [int(k) for k in HOUSE_FIELDS if k.isdigit() and k != "1"]
ASCII = st.characters(min_codepoint=0, max_codepoint=127)
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def value_for(number: int, alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    spec = HOUSE_ASCII[str(number)]
    if spec["len_type"] == 0:
        return st.text(alphabet, min_size=spec["max_len"], max_size=spec["max_len"])
    return st.text(alphabet, max_size=spec["max_len"])


@st.composite
def valid_dicts(draw: st.DrawFn) -> dict[str, str]:
    """Field sets over the house fields (some of them secondary) and any other spec field."""
    numbers = draw(
        st.sets(st.sampled_from(HOUSE_NUMBERS) | st.sampled_from(DATA_FIELDS), max_size=16)
    )
    alphabet = draw(st.sampled_from([PRINTABLE, ASCII]))
    fields = {"t": draw(st.text(ASCII, min_size=4, max_size=4))}
    for number in sorted(numbers):
        fields[str(number)] = draw(value_for(number, alphabet))
    return fields


def seed_frames() -> st.SearchStrategy[bytes]:
    typical = [reference_encode(d) for d in TYPICAL]
    return st.sampled_from(typical) | valid_dicts().map(reference_encode)


def prefixes_of(frame: bytes) -> list[tuple[int, int]]:
    """Where the length prefixes of a valid frame start, and their widths."""
    _, encoded = iso8583.decode(frame, HOUSE_ASCII)
    prefixes, pos = [], 0
    for parts in encoded.values():
        if parts["len"]:
            prefixes.append((pos, len(parts["len"])))
        pos += len(parts["len"]) + len(parts["data"])
    return prefixes


def prefixed_keys(encoded: Mapping[str, Mapping[str, bytes]]) -> list[str]:
    return [key for key, parts in encoded.items() if parts["len"]]


HEX_DIGITS = [bytes([c]) for c in b"0123456789ABCDEF"]
HEX_WITH_BIT_1 = [bytes([c]) for c in b"89ABCDEF"]
ODD_BYTES = b"+- _\t\x0b0123456789aAfFgG\x00\x7f\x80\xff"
BYTES = st.integers(0, 255) | st.sampled_from(ODD_BYTES)


def respell(frame: bytearray, prefix: tuple[int, int], draw: st.DrawFn) -> bool:
    """Write a digit length prefix the ways int() also reads: "+6", " 6", "6\t", "1_0", "-0"."""
    pos, width = prefix
    text = frame[pos : pos + width].decode("latin-1")
    if not (text.isascii() and text.isdigit()):
        return False
    digits = str(int(text))
    spelled = [f"+{digits}", f" {digits}", f"{digits}\t", f"{digits[0]}_{digits[1:]}"]
    if digits == "0":
        spelled.append("-0")
    fits = [p.encode() for p in spelled if len(p) == width and not p.endswith("_")]
    if fits:
        frame[pos : pos + width] = draw(st.sampled_from(fits))
    return bool(fits)


@st.composite
def loosely_prefixed_frames(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A valid frame with some length prefixes respelled, and the first field respelled."""
    frame = bytearray(draw(seed_frames()))
    _, encoded = iso8583.decode(bytes(frame), HOUSE_ASCII)
    first = None
    for (pos, width), key in zip(prefixes_of(bytes(frame)), prefixed_keys(encoded), strict=True):
        if draw(st.booleans()) and respell(frame, (pos, width), draw):
            first = first or key
    return bytes(frame), first


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(seed_frames()))
    prefixes = prefixes_of(bytes(frame))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "truncate",
                    "insert",
                    "delete",
                    "replace",
                    "flip",
                    "lower",
                    "prefix",
                    "loose prefix",
                    "bit65",
                    "space bitmap",
                    "append",
                ]
            )
        )
        # Counted from the end: most cuts and edits then land in the fields, not the MTI.
        at = len(frame) - draw(st.integers(0, len(frame)))
        if kind == "truncate":
            del frame[at:]
        elif kind == "insert":
            frame.insert(at, draw(BYTES))
        elif kind == "delete":
            del frame[at : at + 1]
        elif kind == "replace" and at < len(frame):
            frame[at] = draw(BYTES)
        elif kind == "flip" and at < len(frame):
            frame[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "lower":
            end = 36 if frame[4:5] in HEX_WITH_BIT_1 else 20
            frame[4:end] = frame[4:end].lower()
        elif kind == "prefix" and prefixes:
            pos, width = draw(st.sampled_from(prefixes))
            pos += draw(st.integers(0, width - 1))
            if pos < len(frame):
                frame[pos] = draw(st.sampled_from(b"+- _\t0\xb2"))
        elif kind == "loose prefix" and prefixes:
            respell(frame, draw(st.sampled_from(prefixes)), draw)
        elif kind == "bit65" and frame[4:5] in HEX_WITH_BIT_1 and frame[20:21] in HEX_DIGITS:
            # Set bit 65 in the secondary bitmap and insert (part of) a third bitmap.
            frame[20] = ord(f"{int(chr(frame[20]), 16) | 8:X}")
            frame[36:36] = draw(st.sampled_from([b"0" * 16, b"0" * 15 + b"1", b"8000"]))
        elif kind == "space bitmap":
            frame[4:6] = b"  "
        elif kind == "append":
            frame += draw(st.binary(max_size=4))
    return bytes(frame)


# --- encode ----------------------------------------------------------------------------------


@PROPERTY
@given(valid_dicts())
def test_encode_then_decode_is_pyiso8583(fields: dict[str, str]) -> None:
    frame = fastcodec.encode(fields)
    assert type(frame) is bytes
    assert frame == reference_encode(fields)
    assert fastcodec.decode(frame) == iso8583.decode(frame, HOUSE_ASCII)[0]
    assert fastcodec.decode_checked(frame)[1] is None


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(["t", "p", "1", "65", *map(str, DATA_FIELDS[:40]), "90", "128"]),
        st.text(st.characters(max_codepoint=0x17F), max_size=20),
        max_size=8,
    )
)
def test_encode_errors_are_pyiso8583s(fields: dict[str, str]) -> None:
    assert encode_outcome(fastcodec.encode, fields) == encode_outcome(reference_encode, fields)


def test_encode_leaves_its_argument_alone() -> None:
    fields = {**REVERSAL, "1": "junk", "65": "junk", "p": "junk"}
    before = dict(fields)
    assert fastcodec.encode(fields) == reference_encode(fields)
    assert fields == before


# Dicts the host never builds; pyiso8583's answer is the expected one in each case.
ODD_DICTS: list[tuple[str, dict[Any, Any]]] = [
    ("no MTI", {"3": "000000"}),
    ("short MTI", {"t": "020"}),
    ("non-ASCII MTI", {"t": "02é0"}),
    ("MTI not a str", {"t": 200}),
    ("fixed field too short", {"t": "0210", "3": "00000"}),
    ("fixed field too long", {"t": "0210", "39": "000"}),
    ("variable field too long", {"t": "0210", "2": "1" * 20}),
    ("variable field at its maximum", {"t": "0210", "63": "x" * 999}),
    ("empty variable field", {"t": "0210", "44": ""}),
    ("non-ASCII data", {"t": "0210", "41": "T000000é"}),
    ("data not a str", {"t": "0210", "4": 1250}),
    ("lowest bad field is named", {"t": "0210", "39": "0", "3": "0"}),
    ("only secondary fields", {"t": "0810", "70": "301"}),
    ("bitmap keys are recomputed", {"t": "0210", "1": "x", "65": "y", "p": "z", "h": "w"}),
    ("non-numeric keys are ignored", {"t": "0210", "x": "1", "39": "00"}),
    ("leading zero key with its field", {"t": "0210", "03": "x", "3": "000000"}),
    ("leading zero key alone", {"t": "0210", "03": "000000"}),
    ("field 0", {"t": "0210", "0": "x"}),
    ("field 129", {"t": "0210", "129": "x"}),
    ("field 193", {"t": "0210", "193": "x"}),
    ("int key", {"t": "0210", 3: "000000"}),
    ("Arabic-Indic digit key", {"t": "0210", "\u0663": "000000"}),
    ("superscript key", {"t": "0210", "\u00b2": "x"}),
]


@pytest.mark.parametrize(("name", "fields"), ODD_DICTS, ids=[n for n, _ in ODD_DICTS])
def test_encode_odd_dicts(name: str, fields: dict[Any, Any]) -> None:
    assert encode_outcome(fastcodec.encode, fields) == encode_outcome(reference_encode, fields)


def test_encode_typical_messages() -> None:
    for fields in TYPICAL:
        assert fastcodec.encode(fields) == reference_encode(fields)
    assert fastcodec.encode({"t": "0810", "70": "301"})[4:36] == b"8000000000000000" + (
        b"0400000000000000"
    )


# --- decode ----------------------------------------------------------------------------------


@PROPERTY
@given(mutated_frames())
def test_decode_of_mutated_frames_is_pyiso8583s(frame: bytes) -> None:
    assert_same_decode(frame)


@PROPERTY
@given(loosely_prefixed_frames())
def test_decode_names_the_first_loose_prefix(case: tuple[bytes, str | None]) -> None:
    frame, first = case
    assert assert_same_decode(frame)[::2] == ("ok", first)


@PROPERTY
@given(st.binary(max_size=60) | st.binary(max_size=60).map(lambda b: b"0200" + b))
def test_decode_of_random_bytes_is_pyiso8583s(frame: bytes) -> None:
    assert_same_decode(frame)


def frame_of(*parts: str | bytes) -> bytes:
    return b"".join(p.encode("latin-1") if isinstance(p, str) else p for p in parts)


PAN = "6036280000000001"
P23 = "6000000000000000"  # fields 2 and 3
P2 = "4000000000000000"  # field 2
P48 = "0000000000010000"  # field 48

# (name, frame, expected): the dict, or (msg, field, pos), or a KeyError's key. Both codecs
# must give exactly this.
DECODE_CASES: list[tuple[str, bytes, object]] = [
    ("empty frame", b"", ("Field data is 0 bytes, expecting 4", "t", 0)),
    ("short MTI", b"020", ("Field data is 3 bytes, expecting 4", "t", 0)),
    ("non-ASCII MTI", b"02\xff0", ("Failed to decode field, invalid data", "t", 0)),
    ("no bitmap", b"0200", ("Field data is 0 bytes, expecting 16", "p", 4)),
    ("short bitmap", b"020040000000", ("Field data is 8 bytes, expecting 16", "p", 4)),
    (
        "non-ASCII bitmap",
        frame_of("0200", "\xe90", "0" * 14),
        ("Failed to decode field, invalid data", "p", 4),
    ),
    (
        "non-hex bitmap",
        frame_of("0200G", "0" * 15),
        ("Failed to decode field, non-hex data", "p", 4),
    ),
    ("MTI and empty bitmap", frame_of("0200", "0" * 16), {"t": "0200", "p": "0" * 16}),
    (
        "extra data after the bitmap names p",
        frame_of("0200", "0" * 16, "X"),
        ("Extra data after last field", "p", 20),
    ),
    (
        "extra data names the last field",
        frame_of("0200", P23, "16", PAN, "000000", "X"),
        ("Extra data after last field", "3", 44),
    ),
    (
        "lowercase bitmap is kept as sent",
        frame_of("0200", "0e00000000000000", "000000001250", "000000001250", "1122103015"),
        {
            "t": "0200",
            "p": "0e00000000000000",
            "5": "000000001250",
            "6": "000000001250",
            "7": "1122103015",
        },
    ),
    (
        "bitmap with two spaces is seven bytes",
        frame_of("0200", "  60000000000000", "16", PAN, "000000"),
        {"t": "0200", "p": "  60000000000000", "2": PAN, "3": "000000"},
    ),
    (
        "secondary bitmap missing",
        frame_of("0200", "8000000000000000", "00000"),
        ("Field data is 5 bytes, expecting 16", "1", 20),
    ),
    (
        "bit 65 with an empty third bitmap decodes",
        frame_of("0200", "C000000000000000", "8000000000000000", "0" * 16, "16", PAN),
        {"t": "0200", "p": "C000000000000000", "1": "8" + "0" * 31, "2": PAN},
    ),
    (
        "bit 65 with field 129 is a KeyError",
        frame_of("0200", "C000000000000000", "8000000000000000", "8" + "0" * 15, "16", PAN),
        "129",
    ),
    (
        "field errors come before the KeyError",
        frame_of("0200", "C000000000000000", "8000000000000000", "8" + "0" * 15, "16", "1"),
        ("Field data is 1 bytes, expecting 16", "2", 54),
    ),
    (
        "third bitmap short",
        frame_of("0200", "8000000000000000", "8000000000000000", "0000"),
        ("Field data is 20 bytes, expecting 32", "1", 36),
    ),
    (
        "third bitmap non-hex",
        frame_of("0200", "8000000000000000", "8000000000000000", "X" * 16),
        ("Failed to decode field, non-hex data", "1", 36),
    ),
    (
        "LL prefix '+6' is taken",
        frame_of("0200", P2, "+6", "603628"),
        {"t": "0200", "p": P2, "2": "603628"},
    ),
    (
        "LL prefix ' 6' is taken",
        frame_of("0200", P2, " 6", "603628"),
        {"t": "0200", "p": P2, "2": "603628"},
    ),
    (
        "LL prefix '6\\t' is taken",
        frame_of("0200", P2, "6\t", "603628"),
        {"t": "0200", "p": P2, "2": "603628"},
    ),
    (
        "LL prefix '-0' is an empty field",
        frame_of("0200", P2, "-0"),
        {"t": "0200", "p": P2, "2": ""},
    ),
    (
        "LL prefix '00' is an empty field",
        frame_of("0200", P2, "00"),
        {"t": "0200", "p": P2, "2": ""},
    ),
    (
        "LL prefix '-5' expects -5 bytes",
        frame_of("0200", P2, "-5", "603628"),
        ("Field data is 0 bytes, expecting -5", "2", 22),
    ),
    (
        "LL prefix not numeric",
        frame_of("0200", P2, "1x", PAN),
        ("Failed to decode field length, non-numeric data", "2", 20),
    ),
    (
        "LL prefix superscript two",
        frame_of("0200", P2, "1\xb2", PAN),
        ("Failed to decode field length, invalid data", "2", 20),
    ),
    (
        "LL prefix cut",
        frame_of("0200", P2, "1"),
        ("Field length is 1 bytes wide, expecting 2", "2", 20),
    ),
    (
        "LL prefix over max_len",
        frame_of("0200", P2, "20", "1" * 20),
        ("Field data is 20 bytes, larger than maximum 19", "2", 20),
    ),
    (
        "LLL prefix '1_0' is taken",
        frame_of("0200", P48, "1_0", "PA0011OP00"),
        {"t": "0200", "p": P48, "48": "PA0011OP00"},
    ),
    (
        "LLL field at max_len",
        frame_of("0200", P48, "999", "x" * 999),
        {"t": "0200", "p": P48, "48": "x" * 999},
    ),
    (
        "fixed field short",
        frame_of("0200", P23, "16", PAN, "000"),
        ("Field data is 3 bytes, expecting 6", "3", 38),
    ),
    (
        "variable field short",
        frame_of("0200", P2, "16", PAN[:10]),
        ("Field data is 10 bytes, expecting 16", "2", 22),
    ),
    (
        "non-ASCII data",
        frame_of("0200", P23, "16", PAN, "00000\x80"),
        ("Failed to decode field, invalid data", "3", 38),
    ),
    (
        "control characters are ASCII",
        frame_of("0200", P2, "02", "\x00\x1b"),
        {"t": "0200", "p": P2, "2": "\x00\x1b"},
    ),
]


@pytest.mark.parametrize(
    ("name", "frame", "expected"), DECODE_CASES, ids=[n for n, _, _ in DECODE_CASES]
)
def test_decode_cases(name: str, frame: bytes, expected: object) -> None:
    outcome = assert_same_decode(frame)
    if isinstance(expected, dict):
        assert outcome[:2] == ("ok", expected)
    elif isinstance(expected, str):
        assert outcome == ("KeyError", (expected,))
    else:
        assert isinstance(expected, tuple)
        assert outcome[:4] == ("DecodeError", *expected)


def test_decode_partial_dict_holds_the_failing_field_empty() -> None:
    frame = frame_of("0200", P23, "16", PAN, "000")
    with pytest.raises(iso8583.DecodeError) as info:
        fastcodec.decode(frame)
    assert info.value.doc_dec == {"t": "0200", "p": P23, "2": PAN, "3": ""}


def test_decode_typical_messages() -> None:
    for fields in TYPICAL:
        frame = reference_encode(fields)
        assert fastcodec.decode_checked(frame) == (iso8583.decode(frame, HOUSE_ASCII)[0], None)
    assert fastcodec.decode(bytearray(reference_encode(REDEEM))) == fastcodec.decode(
        reference_encode(REDEEM)
    )


def test_decode_rejects_what_is_not_bytes() -> None:
    with pytest.raises(TypeError, match="must be bytes or bytearray, not str"):
        fastcodec.decode("0200")  # type: ignore[arg-type]


def test_plan_caches_stay_bounded() -> None:
    for n in range(fastcodec.PLAN_CACHE_MAX + 10):
        frame = frame_of("0200", f"{n << 8:016X}") + b"0" * 1000
        decode_outcome(fastcodec.decode_checked, frame)
        keys = {"t": "0200", **{str(2 + b): "x" for b in range(12) if n >> b & 1}}
        encode_outcome(fastcodec.encode, keys)
    assert len(fastcodec._primary_plans) <= fastcodec.PLAN_CACHE_MAX
    assert len(fastcodec._encode_plans) <= fastcodec.PLAN_CACHE_MAX


# --- the host's decoder on top of the fast codec ----------------------------------------------


@PROPERTY
@given(mutated_frames())
def test_decode_fields_answers_every_frame_with_fields_or_a_field_error(frame: bytes) -> None:
    """Whatever bytes arrive, the host's decoder returns fields or names a field (30) or says
    the frame is unreadable (close): nothing else escapes (a KeyError once stopped the host)."""
    try:
        fields = decode_fields(frame)
    except FormatError as exc:
        assert 0 <= exc.field <= 128
        assert len(exc.field44) <= 25
        assert exc.partial.get("t", frame[:4].decode("latin-1")) == frame[:4].decode("latin-1")
    except Unreadable:
        assert not (frame[:4].isdigit() and int(frame[2:3] or b"1") % 2 == 0 and len(frame) >= 4)
    else:
        assert fields["t"] == frame[:4].decode("ascii")
        assert len(fields["p"]) == 16


def test_whitespace_in_a_bitmap_is_not_hex() -> None:
    """pyiso8583 reads bitmaps with bytes.fromhex, which skips spaces; the host does not."""
    frame = b"0800" + b"  60000000000000" + b"x" * 40
    with pytest.raises(FormatError) as info:
        decode_fields(frame)
    assert info.value.field44 == "000 not hex"
