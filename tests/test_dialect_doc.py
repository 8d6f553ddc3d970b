"""docs/dialect.md checked against the code, so the integration guide cannot drift.

The blocks of the guide marked ``<!-- check: NAME -->`` are read here:

- ``fields``: the field list, against ``protocol/dialect.py`` (lengths, descriptions), the echo
  list and the response-only fields of ``protocol/messages.py``;
- ``format-errors``: every field-44 text quoted is one the validator can produce;
- ``request-*`` / ``answer-*``: the worked example; its ASCII, hex dump and field breakdown agree
  with one another, and a real host with a fixed clock answers the documented request with
  exactly the documented answer bytes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import iso8583
import trio

from authsrv.admin import register_card
from authsrv.app import open_keys, open_store
from protocol.cards import luhn_valid
from protocol.dialect import HOUSE_ASCII, HOUSE_FIELDS, RESPONSE_ONLY
from protocol.errors import FIELD44_LEN_MAX
from protocol.framing import encode_frame
from protocol.messages import ECHOED, ECHOED_BY_CLASS
from simulators.terminal import build_request
from tests.helpers import Provisioned, serve_in_process

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "dialect.md"
MARKER = re.compile(r"^<!-- check: ([a-z0-9-]+) -->$")

# The worked example's preconditions (docs/dialect.md §13).
NOW = datetime(2026, 11, 22, 10, 30, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
PAN = "6036280012345677"
EXPIRY = "2911"
ACTIVATION_MINOR = 1000
TERMINAL = "T0000001"
STORE = "S0001"
MAP_SIZE_MIB = 64
EXCHANGE_TIMEOUT_S = 10.0
HEX_BYTES_PER_LINE = 16

# Names of the first column of the doc's tables that are not field numbers.
ROW_KEYS = {"MTI": "t", "bitmap": "p"}


def doc_blocks() -> dict[str, list[str]]:
    """The lines of every marked block: the fenced code block or table right after a marker."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    blocks: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        match = MARKER.match(lines[i])
        i += 1
        if match is None:
            continue
        name = match.group(1)
        assert name not in blocks, f"marker {name} appears twice in {DOC.name}"
        while i < len(lines) and not lines[i].strip():
            i += 1
        body: list[str] = []
        if lines[i].startswith("```"):
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
        else:
            while i < len(lines) and lines[i].startswith("|"):
                body.append(lines[i])
                i += 1
        assert body, f"marker {name} is not followed by a code block or a table"
        blocks[name] = body
    return blocks


def table_rows(lines: list[str]) -> list[list[str]]:
    """Cells of a markdown table without its header; a cell in backticks loses them (only)."""
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append([c[1:-1] if len(c) >= 2 and c[0] == c[-1] == "`" else c for c in cells])
    return rows


def row_key(cell: str) -> str:
    return ROW_KEYS.get(cell, cell)


def hexdump(data: bytes) -> str:
    """``hexdump -C`` layout: offset, 8 + 8 bytes in hex, the printable characters."""
    lines = []
    for offset in range(0, len(data), HEX_BYTES_PER_LINE):
        chunk = data[offset : offset + HEX_BYTES_PER_LINE]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {f'{left}  {right}':<48}  |{text}|")
    return "\n".join(lines)


def parse_hexdump(lines: list[str]) -> bytes:
    """The bytes of a hex dump in the layout of :func:`hexdump` (which it must match exactly)."""
    data = b""
    for line in lines:
        assert int(line[:8], 16) == len(data), f"offset out of step: {line!r}"
        data += bytes.fromhex(line[10:58])
    assert hexdump(data) == "\n".join(lines), "the hex dump's layout or ASCII column is off"
    return data


def decode(payload: bytes) -> dict[str, str]:
    decoded, _ = iso8583.decode(payload, HOUSE_ASCII)
    return dict(decoded)


def documented_frame(blocks: dict[str, list[str]], which: str) -> bytes:
    """The example's frame from its hex dump, checked against its ASCII and field table."""
    frame = parse_hexdump(blocks[f"{which}-hex"])
    size, payload = int.from_bytes(frame[:2], "big"), frame[2:]
    assert size == len(payload), f"{which}: length header {size}, message {len(payload)} bytes"
    (ascii_line,) = blocks[f"{which}-ascii"]
    assert ascii_line.encode("ascii") == payload, f"{which}: ASCII and hex differ"
    table = {row_key(row[0]): row[1] for row in table_rows(blocks[f"{which}-fields"])}
    assert table == decode(payload), f"{which}: the field breakdown differs from the bytes"
    return frame


# --- the field list and the field-44 texts ---------------------------------------------------


def test_field_list_matches_the_dialect_table() -> None:
    rows = table_rows(doc_blocks()["fields"])
    documented = {row_key(row[0]): row for row in rows}
    assert len(documented) == len(rows), "a field is listed twice"
    assert set(documented) == set(HOUSE_FIELDS) - {"h"}
    for key, (_, _fmt, length, desc, _direction, _check) in documented.items():
        spec = HOUSE_FIELDS[key]
        assert desc == spec["desc"], key
        var = re.fullmatch(r"\.\.(\d+) \((LL|LLL)VAR\)", length)
        if var is None:
            assert (spec["len_type"], spec["max_len"]) == (0, int(length)), key
        else:
            assert (spec["len_type"], spec["max_len"]) == (len(var.group(2)), int(var.group(1)))
    echoed = {key for key, row in documented.items() if "echo" in row[4]}
    assert echoed == set(ECHOED).union(*ECHOED_BY_CLASS.values())
    answer_only = {key for key, row in documented.items() if row[4].startswith("answer")}
    assert answer_only == RESPONSE_ONLY


def test_format_error_texts_are_the_validators() -> None:
    sources = "".join(p.read_text() for p in sorted((ROOT / "protocol").glob("*.py")))
    rows = table_rows(doc_blocks()["format-errors"])
    assert rows
    for text, _cause in rows:
        assert re.fullmatch(r"\d{3} \S.*", text), text
        assert len(text) <= FIELD44_LEN_MAX, text
        assert f'"{text[4:]}' in sources, f"no reason {text[4:]!r} in protocol/"


# --- the worked example ------------------------------------------------------------------------


def test_worked_example_is_consistent() -> None:
    blocks = doc_blocks()
    request = decode(documented_frame(blocks, "request")[2:])
    answer = decode(documented_frame(blocks, "answer")[2:])
    assert request["2"] == PAN and luhn_valid(PAN)
    assert request["7"] == NOW.strftime("%m%d%H%M%S")
    assert answer["11"] == request["11"]


def register_example_card(data: Path) -> None:
    store = open_store(data, MAP_SIZE_MIB)
    try:
        register_card(store, open_keys(store), "GIFT", PAN, EXPIRY, NOW_MS)
    finally:
        store.close()


async def receive_frame(stream: trio.SocketStream) -> bytes:
    """One whole answer, length header included."""
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
        chunk = await stream.receive_some()
        assert chunk, "the host closed the connection"
        buf += chunk
    assert len(buf) == 2 + int.from_bytes(buf[:2], "big"), "more than one answer"
    return buf


async def test_worked_example_against_the_host(provisioned: Provisioned) -> None:
    blocks = doc_blocks()
    request_frame = documented_frame(blocks, "request")
    answer_frame = documented_frame(blocks, "answer")
    register_example_card(provisioned.data)
    async with serve_in_process(provisioned.data, clock_ms=lambda: NOW_MS) as host:
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            async with await host.connect() as conn:
                activation = build_request(
                    "activate",
                    terminal=TERMINAL,
                    store=STORE,
                    pan=PAN,
                    amount_minor=ACTIVATION_MINOR,
                    stan="000122",
                    now=NOW,
                )
                activated = await conn.exchange(activation)
            # The doc says the activation took RRN sequence 1 and approval code 000001.
            assert (activated["39"], activated["37"], activated["38"]) == (
                "00",
                "632610000001",
                "000001",
            )
            async with await trio.open_tcp_stream("127.0.0.1", host.port) as stream:
                await stream.send_all(request_frame)
                received = await receive_frame(stream)
    assert hexdump(received) == hexdump(answer_frame), (
        "the host's answer differs from docs/dialect.md; it answered:\n" + hexdump(received)
    )
    assert received == answer_frame
    assert encode_frame(received[2:]) == received
