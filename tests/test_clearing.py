"""Clearing files (issue 6): the layout table, its codec, writer, reader, verifier, CLI.

pyiso8583 is the reference for the bytes: the fast codec of :mod:`protocol.clearing` must give
what ``iso8583.encode`` gives for the same spec. A file must verify exactly when it is what the
writer wrote; every other file is refused with a message that says where and what, and never
quotes a card number.
"""

from __future__ import annotations

import argparse
import csv
import doctest
import hashlib
import importlib
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import iso8583
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import clearing as layout
from protocol.clearing import (
    CLEARING_ASCII,
    CLEARING_FIELDS,
    MESSAGE_FIELDS,
    OPERATIONS,
    CurrencyTotals,
)
from settlement import (
    CSV_COLUMNS,
    ClearingFileError,
    ClearingOriginal,
    ClearingRecord,
    add_settle_parser,
    build_clearing_file,
    describe_clearing_file,
    read_clearing_file,
    verify_clearing_file,
    write_clearing_files,
)

PROPERTY = settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # each example writes its own file over the last
    ],
)
DAY = "20261122"
CREATED = "20261123020000"
HOST = "authsrv"
FULL_PAN = "6036280000000000003"  # a Luhn-valid test card number: must never appear anywhere

# A small day: a sale, a purchase in another currency, a purchase and its reversal.
SAMPLE: list[ClearingRecord] = [
    ClearingRecord(
        record_id=101,
        op="activate",
        dc="C",
        amount_minor=50000,
        currency="978",
        card_masked="603628*********0003",
        store_id="S0001",
        terminal_id="T0000001",
        approval="000001",
        rrn="632610000001",
        stan="000001",
        local_time="1122091500",
        committed_utc="20261122081500",
        business_day=DAY,
    ),
    ClearingRecord(
        record_id=102,
        op="redeem",
        dc="D",
        amount_minor=12000,
        currency="978",
        card_masked="603628*********0003",
        store_id="S0002",
        terminal_id="T0000002",
        approval="000002",
        rrn="632610000002",
        stan="000017",
        local_time="1122113015",
        committed_utc="20261122103015",
        business_day=DAY,
    ),
    ClearingRecord(
        record_id=103,
        op="redeem",
        dc="D",
        amount_minor=995,
        currency="752",
        card_masked="603629******4242",
        store_id="STORE 12, MAIN",  # a comma: quoted in the CSV
        terminal_id="T SE 001",
        approval="",
        rrn="632610000003",
        stan="000018",
        local_time="1122120000",
        committed_utc="20261122110000",
        business_day=DAY,
    ),
    ClearingRecord(
        record_id=104,
        op="redeem",
        dc="C",
        amount_minor=12000,
        currency="978",
        card_masked="603628*********0003",
        store_id="S0002",
        terminal_id="T0000002",
        approval="000003",
        rrn="632610000004",
        stan="000019",
        local_time="1122113115",
        committed_utc="20261122103115",
        business_day=DAY,
        original=ClearingOriginal(
            rrn="632610000002", stan="000017", business_day=DAY, record_id=102
        ),
    ),
]


def build(records: Iterable[ClearingRecord] = SAMPLE, **kw: Any) -> bytes:
    args: dict[str, Any] = {
        "business_day": DAY,
        "file_seq": 1,
        "host_id": HOST,
        "created": CREATED,
    }
    args.update(kw)
    return build_clearing_file(records=records, **args)


def write(directory: Path, records: Iterable[ClearingRecord] = SAMPLE) -> Path:
    paths = write_clearing_files(
        directory, business_day=DAY, file_seq=1, host_id=HOST, created=CREATED, records=records
    )
    return paths.ipm


def split(data: bytes) -> list[bytes]:
    """The messages of a well-framed file, without their length prefixes."""
    messages, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        messages.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return messages


def join(messages: Iterable[bytes]) -> bytes:
    return b"".join(len(m).to_bytes(4, "big") + m for m in messages)


def changed(message: bytes, **fields: str) -> bytes:
    """``message`` with some fields replaced (``f42="..."``), or removed (``f56=""``)."""
    doc = layout.decode(message)
    for name, value in fields.items():
        key = name.removeprefix("f")
        if value == "" and key in doc and CLEARING_FIELDS[key]["len_type"] == 0:
            del doc[key]
        else:
            doc[key] = value
    return layout.encode({k: v for k, v in doc.items() if k not in ("p", "1")})


def reseal(path: Path, data: bytes) -> None:
    """Write ``data`` as the file and a matching digest: only the structure can object."""
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def clearing_error(source: bytes | Path, **kw: Any) -> str:
    with pytest.raises(ClearingFileError) as info:
        if isinstance(source, bytes):
            read_clearing_file(source)
        else:
            verify_clearing_file(source, **kw)
    text = str(info.value)
    assert FULL_PAN not in text
    return text


# -- the layout table (STYLE §1) -----------------------------------------------------------------


@pytest.mark.parametrize("key", list(CLEARING_FIELDS))
def test_every_clearing_field_has_max_len_and_desc(key: str) -> None:
    spec = CLEARING_FIELDS[key]
    assert isinstance(spec.get("max_len"), int)
    assert spec["max_len"] >= 0
    assert isinstance(spec.get("desc"), str)
    assert spec["desc"].strip()
    assert spec["data_enc"] == spec["len_enc"] == "ascii"
    assert spec["len_type"] in (0, 2, 3)
    assert CLEARING_ASCII[key] is spec


def test_every_message_field_is_in_the_table_in_order() -> None:
    for kind, keys in MESSAGE_FIELDS.items():
        assert set(keys) <= set(CLEARING_FIELDS), kind
        assert list(keys) == sorted(keys, key=int), kind
    used = {key for keys in MESSAGE_FIELDS.values() for key in keys}
    assert used == set(CLEARING_FIELDS) - {"h", "t", "p", "1"}, "no field is unused"


def test_operations_have_a_direction() -> None:
    assert set(OPERATIONS.values()) == {"D", "C"}
    for op in ("redeem", "load", "activate", "refund", "cashout", "completion", "advice"):
        assert op in OPERATIONS


@pytest.mark.parametrize(
    "name", ["protocol.clearing", "settlement.clearing", "settlement.commands", "settlement"]
)
def test_doctests(name: str) -> None:
    runner = doctest.DocTestRunner()
    report: list[str] = []
    for test in doctest.DocTestFinder().find(importlib.import_module(name)):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


# -- the codec is pyiso8583, faster ---------------------------------------------------------------

DATA_KEYS = [k for k in CLEARING_FIELDS if k.isdigit() and k != "1"]
ASCII = st.characters(min_codepoint=0, max_codepoint=127)


def value_for(key: str) -> st.SearchStrategy[str]:
    spec = CLEARING_FIELDS[key]
    size = spec["max_len"]
    if spec["len_type"] == 0:
        return st.text(ASCII, min_size=size, max_size=size)
    return st.text(ASCII, max_size=size)


@st.composite
def field_dicts(draw: st.DrawFn) -> dict[str, str]:
    keys = draw(st.lists(st.sampled_from(DATA_KEYS), unique=True, max_size=len(DATA_KEYS)))
    fields = {"t": draw(st.text(ASCII, min_size=4, max_size=4))}
    for key in keys:  # in any order: the codec sorts
        fields[key] = draw(value_for(key))
    return fields


def reference_encode(fields: dict[str, str]) -> bytes:
    return bytes(iso8583.encode(dict(fields), CLEARING_ASCII)[0])


def encode_outcome(encoder: Callable[[dict[str, str]], bytes], fields: Any) -> tuple[object, ...]:
    try:
        return ("ok", encoder(fields))
    except iso8583.EncodeError as exc:
        return ("EncodeError", exc.msg, exc.field)


@PROPERTY
@given(field_dicts())
def test_encode_and_decode_are_pyiso8583(fields: dict[str, str]) -> None:
    before = dict(fields)
    frame = layout.encode(fields)
    assert fields == before, "not changed in place (pyiso8583 adds the bitmaps)"
    assert frame == reference_encode(fields)
    assert layout.decode(frame) == iso8583.decode(frame, CLEARING_ASCII)[0]


@st.composite
def bad_field_dicts(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = draw(field_dicts())
    key = draw(st.sampled_from(["t", *DATA_KEYS]))
    spec = CLEARING_FIELDS[key]
    size = spec["max_len"]
    bad = [
        st.text(ASCII, min_size=size + 1, max_size=size + 3),  # too long
        st.text(st.characters(min_codepoint=128, max_codepoint=400), min_size=1, max_size=size),
        st.integers(),
    ]
    if spec["len_type"] == 0:
        bad.append(st.text(ASCII, max_size=size - 1))  # too short for a fixed field
    fields[key] = draw(st.one_of(bad))
    return fields


@PROPERTY
@given(bad_field_dicts())
def test_encode_errors_are_pyiso8583s(fields: dict[str, Any]) -> None:
    ours = encode_outcome(layout.encode, fields)
    assert ours == encode_outcome(reference_encode, dict(fields))
    assert ours[0] == "EncodeError"


@PROPERTY
@given(field_dicts(), st.data())
def test_decode_accepts_only_the_canonical_form(
    fields: dict[str, str], data: st.DataObject
) -> None:
    """Whatever decode accepts, pyiso8583 reads the same way and encode writes back."""
    frame = bytearray(reference_encode(fields))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(frame)))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if action == "set" and pos < len(frame):
            frame[pos] = byte
        elif action == "insert":
            frame.insert(pos, byte)
        elif pos < len(frame):
            del frame[pos]
    message = bytes(frame)
    try:
        doc = layout.decode(message)
    except iso8583.DecodeError as exc:
        assert 0 <= exc.pos <= len(message)
        assert exc.field in ("t", "p", "1", *DATA_KEYS)
        return
    assert doc == iso8583.decode(message, CLEARING_ASCII)[0]
    assert layout.encode({k: v for k, v in doc.items() if k not in ("p", "1")}) == message


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"124", "Field data is 3 bytes, expecting 4: field t pos 0"),
        (b"124080000000000000000", "Field data is 1 bytes, expecting 16: field 1 pos 20"),
        (b"124040000000000000000212X", "Extra data after last field: field 2 pos 24"),
        (b"124080000000000000000000000000000000", "Secondary bitmap selects no field"),
        (b"1240400000000000000005603", "Field data is 3 bytes, expecting 5"),
        (b"124040000000000000002060362800000000000003", "larger than maximum 19"),
        (b"12404000000000000000 5603628", "Field length is not 2 digits"),
        (b"12404000000000000000+5603628", "Field length is not 2 digits"),
        (b"1240400000000000000a00", "Bitmap is not 16 upper-case hex digits"),
        (b"1240200000000000000000", "selects field 3, which is not in the clearing"),
        (b"124080000000000000008000000000000000", "field 65 (a third bitmap)"),
        (b"1240400000000000000004\xe9123", "Failed to decode field, invalid data"),
    ],
)
def test_decode_errors_say_where(message: bytes, error: str) -> None:
    with pytest.raises(iso8583.DecodeError) as info:
        layout.decode(message)
    assert error in str(info.value)


def test_totals_block_round_trip() -> None:
    totals = (
        CurrencyTotals(
            currency="752", debit_count=1, debit_minor=995, credit_count=0, credit_minor=0
        ),
        CurrencyTotals(
            currency="978",
            debit_count=10**8 - 1,
            debit_minor=10**20 - 1,
            credit_count=2,
            credit_minor=62000,
        ),
    )
    text = layout.encode_totals(totals)
    assert len(text) == 2 * layout.TOTALS_BLOCK_LEN
    assert layout.decode_totals(text) == totals
    with pytest.raises(ValueError, match="out of order"):
        layout.encode_totals(totals[::-1])
    with pytest.raises(ValueError, match="out of order"):
        layout.decode_totals(text[layout.TOTALS_BLOCK_LEN :] + text[: layout.TOTALS_BLOCK_LEN])
    with pytest.raises(ValueError, match="not a multiple"):
        layout.decode_totals(text[:-1])


# -- records: strategies --------------------------------------------------------------------------

CURRENCIES = ["978", "752", "392", "048"]  # exponents 2, 2, 0, 3


def from_regex(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True)


@st.composite
def records(draw: st.DrawFn, max_size: int = 12) -> list[ClearingRecord]:
    count = draw(st.integers(0, max_size))
    ids = draw(st.lists(st.integers(0, 10**20 - 1), min_size=count, max_size=count, unique=True))
    out = []
    for record_id in ids:
        op = draw(st.sampled_from(sorted(OPERATIONS)))
        original = None
        direction = OPERATIONS[op]
        if draw(st.booleans()):
            original = ClearingOriginal(
                rrn=draw(from_regex(r"[0-9A-Z]{12}")),
                stan=draw(from_regex(r"[0-9]{6}")),
                business_day=draw(st.sampled_from(["20261120", "20261121", DAY])),
                record_id=draw(st.integers(0, 10**20 - 1).filter(record_id.__ne__)),
            )
            direction = "C" if direction == "D" else "D"
        out.append(
            ClearingRecord(
                record_id=record_id,
                op=op,
                dc=direction,
                amount_minor=draw(st.integers(0, 10**12 - 1)),
                currency=draw(st.sampled_from(CURRENCIES)),
                card_masked=draw(from_regex(r"[0-9]{6}\*{2,9}[0-9]{4}")),
                store_id=draw(from_regex(r"[\x20-\x7e]{0,14}[\x21-\x7e]")),
                terminal_id=draw(from_regex(r"[\x21-\x7e][\x20-\x7e]{7}")),
                approval=draw(from_regex(r"[0-9A-Za-z]{0,6}")),
                rrn=draw(from_regex(r"[0-9A-Za-z][0-9A-Za-z ]{11}")),
                stan=draw(from_regex(r"[0-9]{6}")),
                local_time=draw(from_regex(r"(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[01][0-9]5959")),
                committed_utc=draw(from_regex(r"2026(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])000000")),
                business_day=DAY,
                original=original,
            )
        )
    return out


def summed(recs: Sequence[ClearingRecord]) -> tuple[CurrencyTotals, ...]:
    by: dict[str, list[int]] = {}
    for r in recs:
        row = by.setdefault(r.currency, [0, 0, 0, 0])
        i = 0 if r.dc == "D" else 2
        row[i] += 1
        row[i + 1] += r.amount_minor
    return tuple(
        CurrencyTotals(
            currency=c, debit_count=v[0], debit_minor=v[1], credit_count=v[2], credit_minor=v[3]
        )
        for c, v in sorted(by.items())
    )


# -- build and read -------------------------------------------------------------------------------


@PROPERTY
@given(records())
def test_round_trip_gives_the_same_records_and_totals(recs: list[ClearingRecord]) -> None:
    data = build(recs)
    assert build(iter(recs)) == data, "the same input gives the same bytes"
    cf = read_clearing_file(data)
    assert list(cf.records) == recs
    assert cf.header.business_day == cf.trailer.business_day == DAY
    assert cf.header.file_id == cf.trailer.file_id == f"{HOST}-{DAY}-000001"
    assert (cf.header.file_seq, cf.header.sender, cf.header.created_utc) == (1, HOST, CREATED)
    assert cf.trailer.record_count == len(recs)
    assert cf.trailer.totals == summed(recs)


@PROPERTY
@given(records(max_size=4))
def test_every_message_is_pyiso8583s_encoding_of_its_fields(recs: list[ClearingRecord]) -> None:
    messages = split(build(recs))
    assert len(messages) == len(recs) + 2
    for message in messages:
        doc = iso8583.decode(message, CLEARING_ASCII)[0]
        fields = {k: v for k, v in doc.items() if k not in ("p", "1")}
        assert reference_encode(fields) == message


def test_the_sample_file_field_by_field() -> None:
    header, first, _, _, reversal, trailer = (layout.decode(m) for m in split(build()))
    assert header == {
        "t": "1644",
        "p": "8000011000000000",
        "1": "0000000408000018",
        "24": "697",
        "28": DAY,
        "94": HOST,
        "101": "authsrv-20261122-000001",
        "124": "000001",
        "125": CREATED,
    }
    assert first == {
        "t": "1240",
        "p": "D03001100CC08000",
        "1": "02000000000001E0",
        "2": "603628*********0003",
        "4": "000000050000",
        "11": "000001",
        "12": "1122091500",
        "24": "200",
        "28": DAY,
        "37": "632610000001",
        "38": "000001",
        "41": "T0000001",
        "42": "S0001          ",
        "49": "978",
        "71": "00000001",
        "120": "00000000000000000101",
        "121": "C",
        "122": "activate",
        "123": "20261122081500",
    }
    assert reversal["24"] == "400"
    assert reversal["56"] == "632610000002" + "000017" + DAY + "00000000000000000102"
    assert (trailer["24"], trailer["126"]) == ("695", "00000004")
    assert layout.decode_totals(trailer["127"]) == summed(SAMPLE)


def test_input_order_is_kept_and_numbered() -> None:
    cf = read_clearing_file(build(SAMPLE[::-1]))
    assert list(cf.records) == SAMPLE[::-1]
    assert [layout.decode(m)["71"] for m in split(build())[1:-1]] == [
        "00000001",
        "00000002",
        "00000003",
        "00000004",
    ]


def test_an_empty_day_has_a_header_and_a_trailer() -> None:
    cf = read_clearing_file(build([]))
    assert cf.records == ()
    assert (cf.trailer.record_count, cf.trailer.totals) == (0, ())


def r(**changes: Any) -> ClearingRecord:
    fields = {f: getattr(SAMPLE[1], f) for f in SAMPLE[1].__struct_fields__}
    fields.update(changes)
    return ClearingRecord(**fields)


# The writer refuses what the layout cannot hold; the error names the record and field.
@pytest.mark.parametrize(
    ("record", "error"),
    [
        (
            r(card_masked=FULL_PAN),
            "record 2, field 2 (Card number, masked: first six, *, last four): not a masked card "
            "number (first six digits, 2-9 '*', last four digits)",
        ),
        (r(card_masked="603628*******000003"), "field 2"),  # first six and last *six*
        (r(card_masked="603628XXXXXXXXX0003"), "field 2"),
        (r(card_masked="603628*0003"), "field 2"),  # a middle of one: not a 12-19 digit number
        (r(amount_minor=-1), "field 4 (Amount (minor units)): the amount must be an integer"),
        (r(amount_minor=10**12), "field 4"),
        (r(amount_minor=12.5), "field 4"),
        (r(amount_minor=True), "field 4"),
        (r(stan="12345"), "field 11 (System trace audit number (STAN)): the STAN must be 6"),
        (r(local_time="1322113015"), "field 12"),
        (r(local_time="0230113015"), "field 12"),
        (r(business_day="20261123"), "record 2, field 28 (Business day YYYYMMDD): the record's"),
        (r(rrn="            "), "field 37"),
        (r(approval="0000001"), "field 38"),
        (r(terminal_id="T1"), "field 41"),
        (r(store_id="S0002 "), "field 42"),
        (r(store_id=""), "field 42"),
        (r(store_id="S\u00e90002"), "field 42"),
        (r(currency="999"), "field 49"),
        (r(dc="C"), "field 121 (Debit/credit indicator, card's view: D or C): must be D for a"),
        (r(dc="d"), "field 121"),
        (r(op="reversal"), "field 122"),
        (r(committed_utc="20260230103015"), "field 123"),
        (r(record_id=-1), "field 120"),
        (r(record_id=101), "record 2, field 120 (Record id (the host's, unique)): the record id"),
        (
            r(
                dc="C",
                original=ClearingOriginal(rrn="1", stan="000017", business_day=DAY, record_id=1),
            ),
            "field 56",
        ),
        (
            r(
                dc="C",
                original=ClearingOriginal(
                    rrn="632610000002", stan="000017", business_day="20261123", record_id=1
                ),
            ),
            "field 56 (Original record: RRN, STAN, business day, record id): the original's "
            "business day is after the reversal's",
        ),
        (
            r(
                original=ClearingOriginal(
                    rrn="632610000002", stan="000017", business_day=DAY, record_id=1
                )
            ),
            "field 121 (Debit/credit indicator, card's view: D or C): must be C for a reversal of",
        ),
    ],
)
def test_the_writer_refuses(record: ClearingRecord, error: str) -> None:
    with pytest.raises(ClearingFileError) as info:
        build([SAMPLE[0], record])
    assert error in str(info.value)
    assert FULL_PAN not in str(info.value)
    assert info.value.record == 2


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"business_day": "20261131"}, "file header, field 28"),
        ({"file_seq": 0}, "file header, field 124"),
        ({"file_seq": 10**6}, "file header, field 124"),
        ({"host_id": "auth srv"}, "file header, field 94"),
        ({"host_id": "a" * 12}, "file header, field 94"),
        ({"created": "2026-11-23"}, "file header, field 125"),
    ],
)
def test_the_writer_refuses_bad_file_facts(kw: dict[str, Any], error: str) -> None:
    with pytest.raises(ClearingFileError, match=error):
        build([], **kw)


# -- verify: every damage is found ----------------------------------------------------------------


def test_a_written_file_verifies(tmp_path: Path) -> None:
    path = write(tmp_path)
    report = verify_clearing_file(path)
    assert report.line() == (
        "OK: 4 records, totals SEK debit 1 9.95 credit 0 0.00; EUR debit 1 120.00 credit 2 "
        "620.00; file authsrv-20261122-000001, business day 20261122, digest checked"
    )
    assert report.size_bytes == path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clearing-20261122-000001.csv",
        "clearing-20261122-000001.csv.sha256",
        "clearing-20261122-000001.ipm",
        "clearing-20261122-000001.ipm.sha256",
    ]
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "clearing-20261122-000001.ipm.sha256").read_text() == (
        f"{digest}  clearing-20261122-000001.ipm\n"
    )
    assert path.read_bytes() == build()


def test_writing_twice_gives_identical_files_and_a_different_day_is_refused(
    tmp_path: Path,
) -> None:
    write(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    write(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(ClearingFileError, match="exists with other content"):
        write(tmp_path, SAMPLE[:2])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, "nothing left behind"


def test_a_refused_record_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ClearingFileError):
        write(tmp_path, [SAMPLE[0], r(card_masked=FULL_PAN)])
    assert list(tmp_path.iterdir()) == []


@PROPERTY
@given(st.data())
def test_verify_detects_a_changed_byte_anywhere(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "clearing-20261122-000001.ipm"
    original = build()
    reseal(path, original)
    damaged = bytearray(original)
    pos = data.draw(st.integers(0, len(damaged) - 1))
    damaged[pos] = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]))
    path.write_bytes(bytes(damaged))  # the digest file still describes the original
    clearing_error(path)


@PROPERTY
@given(st.integers(0, len(build()) - 1))
def test_a_truncated_file_is_refused_without_its_digest(size: int) -> None:
    text = clearing_error(build()[:size])
    assert any(
        word in text for word in ("empty file", "truncated", "without a trailer", "length prefix")
    ), text


HEADER, *RECORDS, TRAILER = split(build())


# Damage the digest cannot catch (the file was resealed): the structure must.
@pytest.mark.parametrize(
    ("messages_or_bytes", "error"),
    [
        (
            [HEADER, RECORDS[0], RECORDS[2], RECORDS[3], TRAILER],  # a dropped record
            "record 2 (message 3 at byte 302), field 71 (Record sequence number in the file): "
            "the record sequence number is 3, expected 2",
        ),
        (
            [HEADER, RECORDS[0], RECORDS[1], RECORDS[1], RECORDS[2], RECORDS[3], TRAILER],
            "record 3 (message 4 at byte 497), field 71 (Record sequence number in the file): "
            "the record sequence number is 2, expected 3",
        ),
        (
            [HEADER, *RECORDS, changed(TRAILER, f126="00000005")],
            "trailer (message 6 at byte 930), field 126 (Record count): the trailer counts 5 "
            "records, the file has 4",
        ),
        (
            [
                HEADER,
                *RECORDS,
                changed(
                    TRAILER,
                    f127=layout.encode_totals(
                        [
                            summed(SAMPLE)[0],
                            CurrencyTotals(
                                currency="978",
                                debit_count=1,
                                debit_minor=12001,
                                credit_count=2,
                                credit_minor=62000,
                            ),
                        ]
                    ),
                ),
            ],
            "trailer (message 6 at byte 930), field 127 (Totals per currency (repeated 59-char "
            "block)): 978 debit total is 120.01 EUR in the trailer, the records sum to 120.00 EUR",
        ),
        (
            [HEADER, *RECORDS, changed(TRAILER, f127=layout.encode_totals(summed(SAMPLE)[1:]))],
            "field 127 (Totals per currency (repeated 59-char block)): no totals for currency "
            "752, which records carry",
        ),
        (
            [HEADER, *RECORDS, changed(TRAILER, f127="978")],
            "field 127 (Totals per currency (repeated 59-char block)): 3 characters, not a "
            "multiple of 59",
        ),
        (
            join([HEADER, *RECORDS, TRAILER]) + b"\x00",
            "byte 1135: 1 bytes of trailing data after the trailer (message 6)",
        ),
        (
            join([HEADER, *RECORDS, TRAILER]) + join([RECORDS[0]]),
            "byte 1135: 197 bytes of trailing data after the trailer (message 6)",
        ),
        (
            [HEADER, *RECORDS],
            "byte 930: the file ends after 4 records without a trailer (truncated?)",
        ),
        (
            [RECORDS[0], HEADER, TRAILER],
            "header (message 1 at byte 0): a clearing file starts with its header (MTI 1644, "
            "function code 697), not MTI 1240, function code 200",
        ),
        (
            [HEADER, HEADER, *RECORDS, TRAILER],
            "message 2 at byte 105: a second file header",
        ),
        (
            [HEADER, changed(RECORDS[0], t="1220"), *RECORDS[1:], TRAILER],
            "message 2 at byte 105: not a clearing message (MTI 1220, function code 200)",
        ),
        (
            [HEADER, changed(RECORDS[0], f24="400"), *RECORDS[1:], TRAILER],
            "message 2 at byte 105, field 56 (Original record: RRN, STAN, business day, record "
            "id): missing",
        ),
        (
            [HEADER, *RECORDS[:3], changed(RECORDS[3], f56=""), TRAILER],
            "message 5 at byte 689, field 56 (Original record: RRN, STAN, business day, record "
            "id): missing",
        ),
        (
            [HEADER, changed(RECORDS[0], f28="20261121"), *RECORDS[1:], TRAILER],
            "record 1 (message 2 at byte 105), field 28 (Business day YYYYMMDD): the record's "
            "business day is not the file's",
        ),
        (
            [HEADER, changed(RECORDS[0], f120="0000000000000000010x"), *RECORDS[1:], TRAILER],
            "record 1 (message 2 at byte 105), field 120 (Record id (the host's, unique)): must "
            "be 20 digits",
        ),
        (
            [HEADER, changed(RECORDS[0], f122="reversal"), *RECORDS[1:], TRAILER],
            "record 1 (message 2 at byte 105), field 122 (Operation): not an operation",
        ),
        (
            [HEADER, changed(RECORDS[0], f42="S0001\t         "), *RECORDS[1:], TRAILER],
            "record 1 (message 2 at byte 105), field 42 (Store id, space-padded): the store id "
            "must be 1-15 printable ASCII characters, no trailing space",
        ),
        (
            [HEADER, *RECORDS, changed(TRAILER, f101="authsrv-20261122-000002")],
            "field 101 (File id): the trailer's file id is not the header's",
        ),
        (
            [changed(HEADER, f101="authsrv-20261122-000002"), *RECORDS, TRAILER],
            "header (message 1 at byte 0), field 101 (File id): the file id is not "
            "<sender>-<business day>-<file sequence>",
        ),
        (
            b"\x00\x00\x00\x05" + join([HEADER]),
            "message 1 at byte 0: length prefix 5 is not a clearing message's (36-2048 bytes)",
        ),
        (
            b"sender,day\n",
            "message 1 at byte 0: length prefix 1936027236 is not a clearing message's",
        ),
        (
            join([HEADER])[:50],
            "message 1 at byte 0: truncated: the length prefix says 101 bytes, 46 remain",
        ),
        (
            join([HEADER, RECORDS[0].lower()]),
            "message 2 at byte 105, field p (Primary bitmap (hex)): Bitmap is not 16 upper-case "
            "hex digits (at byte 113)",
        ),
    ],
)
def test_verify_finds_the_damage(
    tmp_path: Path, messages_or_bytes: list[bytes] | bytes, error: str
) -> None:
    data = messages_or_bytes if isinstance(messages_or_bytes, bytes) else join(messages_or_bytes)
    path = tmp_path / "clearing-20261122-000001.ipm"
    reseal(path, data)
    text = clearing_error(path)
    assert error in text, text
    assert text == clearing_error(data), "read and verify agree"


def test_an_unmasked_card_number_in_a_file_is_refused_and_not_quoted(tmp_path: Path) -> None:
    pan_record = changed(RECORDS[1], f2=FULL_PAN)
    path = tmp_path / "clearing-20261122-000001.ipm"
    reseal(path, join([HEADER, RECORDS[0], pan_record, *RECORDS[2:], TRAILER]))
    text = clearing_error(path)
    assert text == (
        "record 2 (message 3 at byte 302), field 2 (Card number, masked: first six, *, last "
        "four): not a masked card number (first six digits, 2-9 '*', last four digits)"
    )
    with pytest.raises(ClearingFileError) as info:
        describe_clearing_file(path)
    assert FULL_PAN not in str(info.value)


def test_the_digest_file_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path)
    digest = path.with_name(path.name + ".sha256")
    good = digest.read_text()
    digest.write_text(good.replace(path.name, "other.ipm"))
    assert clearing_error(path) == (
        "digest file clearing-20261122-000001.ipm.sha256: names another file, not "
        "clearing-20261122-000001.ipm"
    )
    digest.write_text(good.upper())
    assert "not one line" in clearing_error(path)
    digest.write_text(good + good)
    assert "not one line" in clearing_error(path)
    digest.write_text(("0" * 64) + good[64:])
    assert "SHA-256 mismatch" in clearing_error(path)
    digest.unlink()
    assert clearing_error(path) == (
        "digest file clearing-20261122-000001.ipm.sha256: missing (every clearing file has "
        "one; verify without it only on purpose)"
    )
    assert not verify_clearing_file(path, digest=False).digest_checked


# -- CSV ------------------------------------------------------------------------------------------


def test_the_csv_has_the_same_records_and_totals(tmp_path: Path) -> None:
    paths = write_clearing_files(
        tmp_path, business_day=DAY, file_seq=1, host_id=HOST, created=CREATED, records=SAMPLE
    )
    raw = paths.csv.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    assert paths.csv_digest.read_text() == f"{digest}  {paths.csv.name}\n"
    rows = list(csv.DictReader(io.StringIO(raw.decode("ascii"), newline="")))
    assert raw.startswith(",".join(CSV_COLUMNS).encode() + b"\r\n")
    cf = read_clearing_file(paths.ipm)
    assert len(rows) == len(cf.records) == cf.trailer.record_count
    for n, (row, rec) in enumerate(zip(rows, cf.records, strict=True), start=1):
        orig = rec.original
        assert row == {
            "seq": str(n),
            "record_id": str(rec.record_id),
            "kind": "reversal" if orig else "financial",
            "op": rec.op,
            "dc": rec.dc,
            "amount_minor": str(rec.amount_minor),
            "amount": row["amount"],
            "currency": rec.currency,
            "card": rec.card_masked,
            "store_id": rec.store_id,
            "terminal_id": rec.terminal_id,
            "approval": rec.approval,
            "rrn": rec.rrn,
            "stan": rec.stan,
            "local_time": rec.local_time,
            "committed_utc": rec.committed_utc,
            "business_day": rec.business_day,
            "orig_rrn": orig.rrn if orig else "",
            "orig_stan": orig.stan if orig else "",
            "orig_business_day": orig.business_day if orig else "",
            "orig_record_id": str(orig.record_id) if orig else "",
        }
    assert [row["amount"] for row in rows] == ["500.00", "120.00", "9.95", "120.00"]
    by: dict[str, list[int]] = {}
    for row in rows:
        t = by.setdefault(row["currency"], [0, 0, 0, 0])
        i = 0 if row["dc"] == "D" else 2
        t[i] += 1
        t[i + 1] += int(row["amount_minor"])
    assert cf.trailer.totals == tuple(
        CurrencyTotals(
            currency=c, debit_count=v[0], debit_minor=v[1], credit_count=v[2], credit_minor=v[3]
        )
        for c, v in sorted(by.items())
    )


# -- describe and the command line ----------------------------------------------------------------


def test_describe_prints_header_totals_and_aligned_records() -> None:
    lines = describe_clearing_file(build()).splitlines()
    assert lines[:7] == [
        "clearing file authsrv-20261122-000001",
        "  business day   2026-11-22",
        "  file sequence  1",
        "  sender         authsrv",
        "  created        2026-11-23 02:00:00 UTC",
        "  records        4",
        "  size           1135 bytes",
    ]
    assert lines[9].split() == [
        "SEK",
        "752",
        "1",
        "9.95",
        "SEK",
        "0",
        "0.00",
        "SEK",
        "-9.95",
        "SEK",
    ]
    assert lines[10].split() == [
        "EUR",
        "978",
        "1",
        "120.00",
        "EUR",
        "2",
        "620.00",
        "EUR",
        "500.00",
        "EUR",
    ]
    records = lines[-4:]
    assert records[0].split() == [
        "1",
        "activate",
        "C",
        "500.00",
        "EUR",
        "603628*********0003",
        "S0001",
        "T0000001",
        "000001",
        "632610000001",
        "000001",
    ]
    assert records[3].endswith("reverses record 102 of 2026-11-22 (RRN 632610000002, STAN 000017)")
    for field in ("603628", "S0002", "T0000002", "632610000004"):
        columns = {line.find(field) for line in records if field in line}
        assert len(columns) == 1, f"{field} is not aligned"
    assert {line.find("EUR") for line in records if "EUR" in line} == {lines[-1].find("EUR")}


def _add(
    sub: Any,
    name: str,
    help_text: str,
    examples: Sequence[str],
    func: Callable[..., int],
    store_args: bool = True,
) -> argparse.ArgumentParser:
    """``authsrv.cli._add``, checking that verify and describe read a file, not the store."""
    from authsrv.cli import _add as cli_add

    if name in ("verify", "describe"):
        assert store_args is False, "settle verify/describe read a file, not the store"
    return cli_add(sub, name, help_text, examples, func, store_args)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="authsrv")
    sub = parser.add_subparsers(dest="command", required=True)
    add_settle_parser(sub, _add)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_cli_verify_and_describe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    assert run_cli(["settle", "verify", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("OK: 4 records, totals SEK debit 1 9.95 credit 0 0.00; EUR")
    assert out.count("\n") == 1
    assert err == ""

    assert run_cli(["settle", "describe", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == describe_clearing_file(path)
    assert err == ""

    path.with_name(path.name + ".sha256").unlink()
    assert run_cli(["settle", "verify", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"authsrv settle verify: FAILED: {path}: digest file clearing-20261122-000001.ipm.sha256"
        ": missing (every clearing file has one; verify without it only on purpose)\n"
    )
    assert run_cli(["settle", "verify", "--no-digest", str(path)]) == 0
    assert capsys.readouterr().out.endswith("digest NOT checked\n")

    reseal(path, join([HEADER, *RECORDS]))
    assert run_cli(["settle", "describe", str(path)]) == 1
    assert "without a trailer" in capsys.readouterr().err

    assert run_cli(["settle", "verify", str(tmp_path / "missing.ipm")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["settle"], ["settle", "verify"], ["settle", "describe"]])
def test_cli_help_ends_with_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli([*argv, "--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    tail = help_text.rstrip("\n").split("\n")
    examples = tail[tail.index("examples:") + 1 :]
    assert examples
    assert all(line.startswith("  authsrv settle ") or "sha256sum" in line for line in examples)


def test_cli_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(["settle"])
    assert info.value.code == 2
    assert "ACTION" in capsys.readouterr().err
