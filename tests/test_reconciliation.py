"""Terminal reconciliation (0500/0510) over real TCP to an in-process host, and the simulator's
close-batch.

A terminal sells, loads, redeems, reverses and gets a decline; it keeps its own totals as the
simulator does (``simulators.batch.TerminalBatches``) and closes its batch: in balance (00) the
host answers its own totals, equal to the terminal's; out of balance (95) it answers its own
totals too, and the batch is closed either way. Retransmissions replay and close nothing; a
malformed 0500 changes nothing.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from authsrv.admin import add_terminal
from authsrv.app import open_keys, open_store
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.model import ClosedBatch, OpenBatch, Terminal
from authsrv.processor import Pending, Processor, content_fields
from authsrv.store import LedgerStore
from protocol.errors import FormatError
from protocol.messages import decode_fields, encode_message, parse_request
from protocol.reconciliation import FIGURES, TOTALS_FIELDS, Totals, totals_from_fields
from simulators.batch import TerminalBatches, batch_entry, describe_close_batch
from simulators.scenario import run_scenario
from simulators.terminal import CardBook, TerminalConnection, build_request
from tests.helpers import Provisioned, provision, run_cli, running_host, serve_in_process

NOW = datetime(2026, 11, 22, 10, 30, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
EUR = "978"
TERMINAL = "T0000001"
STORE = "S0001"
EXCHANGE_TIMEOUT_S = 20.0
MAP_SIZE_BYTES = 64 * 1024 * 1024
# What every 0510 echoes of its 0500 (DESIGN §3 and field 60).
ECHOED_0500 = ("3", "7", "11", "12", "13", "41", "42", "49", "60")


class Terminal0500:
    """A terminal on one connection: STANs counting up, field 7 a second apart, and its own
    batch totals kept as the simulator keeps them."""

    def __init__(self, conn: TerminalConnection, terminal: str = TERMINAL) -> None:
        self.conn = conn
        self.terminal = terminal
        self.store = STORE
        self.stan = 100
        self.batches = TerminalBatches()
        self.sent: dict[str, dict[str, str]] = {}

    def build(self, op: str, **kwargs: object) -> dict[str, str]:
        self.stan += 1
        return build_request(
            op,
            terminal=self.terminal,
            store=self.store,
            stan=f"{self.stan:06d}",
            now=NOW + timedelta(seconds=self.stan),
            **kwargs,  # type: ignore[arg-type]
        )

    async def send(self, fields: Mapping[str, str], tag: str = "") -> dict[str, str]:
        answer = await self.conn.exchange(fields)
        if tag:
            self.sent[tag] = dict(fields)
        return answer

    async def op(self, op: str, tag: str = "", **kwargs: object) -> dict[str, str]:
        """Send an operation and count it as the terminal does."""
        fields = self.build(op, **kwargs)
        answer = await self.send(fields, tag)
        self.batches.record(fields, answer)
        return answer

    def close_request(self, totals: Totals | None = None, batch: str = "000001") -> dict[str, str]:
        if totals is None:
            totals = self.batches.current(self.terminal, EUR)
        return self.build("close-batch", totals=totals, batch_number=batch)


def closed_batches(store: LedgerStore | Path) -> list[ClosedBatch]:
    """The closed batches of the running host's store, or of the store at a path."""
    if isinstance(store, LedgerStore):
        with store.read() as led:
            return list(led.closed_batches())
    opened = LedgerStore(store, map_size_bytes=MAP_SIZE_BYTES, readonly=True)
    try:
        return closed_batches(opened)
    finally:
        opened.close()


def open_batches(store: LedgerStore | Path) -> list[OpenBatch]:
    if isinstance(store, LedgerStore):
        with store.read() as led:
            return list(led.open_batches())
    opened = LedgerStore(store, map_size_bytes=MAP_SIZE_BYTES, readonly=True)
    try:
        return open_batches(opened)
    finally:
        opened.close()


def snapshot(store: LedgerStore) -> dict[str, dict[bytes, bytes]]:
    """Every key and value of every database of the running host's store."""
    with store.read() as led:
        return {
            f.name: dict(led.txn.cursor(db=getattr(led.dbs, f.name)))
            for f in dataclasses.fields(led.dbs)
        }


def host_totals(answer: Mapping[str, str]) -> Totals:
    return totals_from_fields(answer)


def assert_echoes(request: Mapping[str, str], answer: Mapping[str, str]) -> None:
    assert answer["t"] == "0510"
    for key in ECHOED_0500:
        assert answer.get(key) == request[key], f"field {key} not echoed"
    # A reconciliation is not a transaction: no RRN, no approval code.
    assert "37" not in answer
    assert "38" not in answer


def batch_closed_lines(log: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(raw) for raw in log.getvalue().splitlines() if raw.startswith("{")]
    return [line for line in lines if line.get("event") == "batch_closed"]


async def test_balanced_then_out_of_balance_then_retransmitted(provisioned: Provisioned) -> None:
    card1, card2, card3 = provisioned.cards[:3]
    log = io.StringIO()
    async with serve_in_process(provisioned.data, clock_ms=lambda: NOW_MS, log_stream=log) as host:
        metrics = host.host.processor.metrics.registry
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            async with await host.connect() as conn, await host.connect() as other_conn:
                t = Terminal0500(conn)
                other = Terminal0500(other_conn, "T0000002")
                # Credits: two activations and a load; debits: two redeems; a reversal of
                # each kind; a decline, a balance inquiry and a hold that count nothing.
                assert (await t.op("activate", pan=card1, amount_minor=50_000))["39"] == "00"
                assert (await t.op("activate", pan=card2, amount_minor=10_000))["39"] == "00"
                assert (await t.op("load", "load", pan=card1, amount_minor=2_000))["39"] == "00"
                assert (await t.op("redeem", "r1", pan=card1, amount_minor=1_250))["39"] == "00"
                assert (await t.op("redeem", pan=card2, amount_minor=3_000))["39"] == "00"
                reverse_redeem = t.build(
                    "reverse", pan=card1, amount_minor=1_250, original=t.sent["r1"]
                )
                answer = await t.send(reverse_redeem)
                t.batches.record(reverse_redeem, answer)
                assert answer["39"] == "00"
                reverse_load = t.build(
                    "reverse", pan=card1, amount_minor=2_000, original=t.sent["load"]
                )
                answer = await t.send(reverse_load)
                t.batches.record(reverse_load, answer)
                assert answer["39"] == "00"
                assert (await t.op("redeem", pan=card2, amount_minor=100_000))["39"] == "51"
                assert (await t.op("redeem", pan=card3, amount_minor=100))["39"] == "78"
                assert (await t.op("balance", pan=card1))["39"] == "00"
                assert (await t.op("preauth", pan=card1, amount_minor=1_000))["39"] == "00"
                # Another terminal of the same store: its own batch.
                assert (await other.op("activate", pan=card3, amount_minor=700))["39"] == "00"

                expected = Totals(
                    credits_count=3,
                    credit_reversals_count=1,
                    debits_count=2,
                    debit_reversals_count=1,
                    credits_minor=62_000,
                    credit_reversals_minor=2_000,
                    debits_minor=4_250,
                    debit_reversals_minor=1_250,
                )
                assert t.batches.current(TERMINAL, EUR) == expected  # the simulator's count

                # 1. In balance: 00, and the host's totals are the terminal's.
                balanced = t.close_request(batch="000001")
                answer = await t.send(balanced)
                assert answer["39"] == "00"
                assert_echoes(balanced, answer)
                assert host_totals(answer) == expected
                assert {k: answer[k] for k in TOTALS_FIELDS} == {
                    k: balanced[k] for k in TOTALS_FIELDS
                }
                assert answer["97"] == "D0000000000057000"  # 3000 - 60000: the store paid out

                # 2. The next batch starts from zero: one redeem, and a 0500 one figure off.
                assert (await t.op("redeem", pan=card1, amount_minor=500))["39"] == "00"
                one_redeem = Totals(debits_count=1, debits_minor=500)
                wrong = t.close_request(dataclasses.replace(one_redeem, debits_minor=501), "000002")
                answer = await t.send(wrong)
                assert answer["39"] == "95"
                assert_echoes(wrong, answer)
                assert host_totals(answer) == one_redeem
                assert answer["97"] == "C0000000000000500"

                # 3. Closed anyway: a 0500 with zeros is in balance.
                zeros = t.close_request(Totals(), "000003")
                answer = await t.send(zeros)
                assert (answer["39"], host_totals(answer)) == ("00", Totals())

                # 4. The 95's retransmission: the same answer, no batch closed, although the
                # open batch now holds a new redeem.
                assert (await t.op("redeem", pan=card1, amount_minor=700))["39"] == "00"
                closed_before = len(closed_batches(host.host.store))
                again = await t.send(wrong)
                assert again["39"] == "95"
                assert {k: again[k] for k in TOTALS_FIELDS} == {
                    k: v for k, v in one_redeem.to_fields().items()
                }
                assert len(closed_batches(host.host.store)) == closed_before
                (still_open,) = [
                    b for b in open_batches(host.host.store) if b.terminal_id == TERMINAL
                ]
                assert still_open.totals == Totals(debits_count=1, debits_minor=700)

                # 5. Same key, other content: 94, no totals, nothing closed.
                changed = {**zeros, "88": "0000000000000001"}
                answer = await t.send(changed)
                assert answer["39"] == "94"
                assert not set(FIGURES) & set(answer)
                assert len(closed_batches(host.host.store)) == closed_before

        assert metrics.get_sample_value("authsrv_batches_closed_total", {"rc": "00"}) == 2
        assert metrics.get_sample_value("authsrv_batches_closed_total", {"rc": "95"}) == 1

    closed = closed_batches(provisioned.data)
    assert [(c.batch_number, c.rc) for c in closed] == [
        ("000001", "00"),
        ("000002", "95"),
        ("000003", "00"),
    ]
    first, out_of_balance, _ = closed
    assert (first.host, first.terminal) == (expected, expected)
    assert set(first.difference.values()) == {0}
    assert first.store_id == STORE and first.currency == EUR
    assert out_of_balance.difference["debits_minor"] == 1
    assert out_of_balance.difference["net_minor"] == 1
    assert {k: v for k, v in out_of_balance.difference.items() if v} == {
        "debits_minor": 1,
        "net_minor": 1,
    }
    # The other terminal's batch is untouched.
    (other_open,) = [b for b in open_batches(provisioned.data) if b.terminal_id == "T0000002"]
    assert other_open.totals == Totals(credits_count=1, credits_minor=700)

    lines = batch_closed_lines(log)
    assert [(line["batch"], line["rc"]) for line in lines] == [
        ("000001", "00"),
        ("000002", "95"),
        ("000003", "00"),
    ]
    assert lines[1]["terminal"] == TERMINAL and lines[1]["store"] == STORE
    difference = lines[1]["difference"]
    assert isinstance(difference, dict)
    assert difference["debits_minor"] == 1 and difference["debits_count"] == 0


async def test_malformed_and_refused_0500s_change_nothing(provisioned: Provisioned) -> None:
    card = provisioned.cards[0]
    async with serve_in_process(provisioned.data, clock_ms=lambda: NOW_MS) as host:
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            async with await host.connect() as conn:
                t = Terminal0500(conn)
                assert (await t.op("activate", pan=card, amount_minor=5_000))["39"] == "00"
                before = snapshot(host.host.store)
                cases: list[tuple[dict[str, str], str, str | None]] = [
                    ({**t.close_request(), "88": ""}, "30", "088 missing"),
                    ({**t.close_request(), "97": "X0000000000005000"}, "30", "097 not C or D"),
                    ({**t.close_request(), "74": "00000000x1"}, "30", "074 not numeric"),
                    ({**t.close_request(), "60": "12345"}, "30", "060 not 6 digits"),
                    ({**t.close_request(), "60": ""}, "30", "060 missing"),
                    ({**t.close_request(), "49": ""}, "30", "049 missing"),
                    ({**t.close_request(), "41": "T0000099"}, "03", None),
                    ({**t.close_request(), "42": "S0002".ljust(15)}, "03", None),
                ]
                for fields, rc, field44 in cases:
                    sent = {k: v for k, v in fields.items() if v != ""}
                    answer = await t.send(sent)
                    assert (answer["39"], answer.get("44")) == (rc, field44), sent
                    assert not set(FIGURES) & set(answer)
                    if rc == "30" and "60" in sent and field44 != "060 not 6 digits":
                        assert answer["60"] == sent["60"]  # echoed in the format-error answer
                assert snapshot(host.host.store) == before
                # The corrected 0500 under the same STAN and field 7 is then processed.
                fixed = {k: v for k, v in cases[0][0].items() if k != "88"}
                fixed["88"] = "0000000000000000"
                answer = await t.send(fixed)
                assert answer["39"] == "00"
                assert host_totals(answer) == Totals(credits_count=1, credits_minor=5_000)
                # A processing code other than 92 is not served (12) and closes nothing.
                other_code = t.close_request(Totals())
                other_code["3"] = "900000"
                answer = await t.send(other_code)
                assert answer["39"] == "12"
                assert not set(FIGURES) & set(answer)
    assert len(closed_batches(provisioned.data)) == 1


def test_a_0500_sees_the_requests_before_it_in_its_write_transaction(tmp_path: Path) -> None:
    """Group commit: a redeem and the terminal's 0500 decided in one transaction."""
    p = provision(tmp_path, card_count=1)
    configure_logging("info", io.StringIO())
    store = LedgerStore(p.data, map_size_bytes=MAP_SIZE_BYTES)
    try:
        proc = Processor(
            store,
            open_keys(store),
            Metrics(),
            get_logger(),
            skew_max_s=600,
            log_requests=False,
            clock_ms=lambda: NOW_MS,
            demo_mode=True,
        )

        def pending(op: str, stan: int, **kwargs: object) -> Pending:
            fields = build_request(
                op,
                terminal=TERMINAL,
                store=STORE,
                stan=f"{stan:06d}",
                now=NOW,
                **kwargs,  # type: ignore[arg-type]
            )
            return proc.prepare(encode_message(fields))

        batch = [
            pending("activate", 1, pan=p.cards[0], amount_minor=5_000),
            pending("redeem", 2, pan=p.cards[0], amount_minor=1_200),
            pending("close-batch", 3, totals=Totals(), batch_number="000009"),
            pending("redeem", 4, pan=p.cards[0], amount_minor=300),
        ]
        outcomes = proc.process_batch(batch)
        assert [o.decision.rc for o in outcomes] == ["00", "00", "95", "00"]
        assert outcomes[2].decision.batch_totals == Totals(
            credits_count=1, credits_minor=5_000, debits_count=1, debits_minor=1_200
        )
        with store.read() as led:
            (opened,) = list(led.open_batches())
            assert opened.totals == Totals(debits_count=1, debits_minor=300)
            (closed,) = list(led.closed_batches(TERMINAL))
            assert (closed.batch_number, closed.rc, closed.opened_ms) == ("000009", "95", NOW_MS)
    finally:
        store.close()
    # What an operator sees: the batch out of balance, and which figures differed.
    listed = run_cli("settle", "batches", "--data", str(p.data), "--out-of-balance")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if TERMINAL in line]
    assert "000009" in row and "95 OUT OF BALANCE" in row
    assert "credits count (74) -1" in row and "debits amount (88) -12.00 EUR" in row
    other = run_cli("settle", "batches", "--data", str(p.data), "--terminal", "T0000003")
    assert other.returncode == 0 and other.stdout == "no closed batches of terminal T0000003\n"


# -- the simulator ------------------------------------------------------------------------------

SCENARIO = {
    "name": "close a batch",
    "defaults": {"terminal": TERMINAL, "store": STORE, "currency": EUR},
    "step": [
        {"name": "sell", "op": "activate", "card": "@1", "amount": "50.00", "expect_rc": "00"},
        {"name": "redeem", "op": "redeem", "card": "@1", "amount": "12.50", "expect_rc": "00"},
        {"name": "again", "op": "redeem", "resend": 2, "expect_rc": "00"},
        {"name": "decline", "op": "redeem", "card": "@1", "amount": "99.00", "expect_rc": "51"},
        {"name": "void", "op": "reverse", "card": "@1", "amount": "12.50", "original": 2},
        {"name": "redeem", "op": "redeem", "card": "@1", "amount": "5.00", "expect_rc": "00"},
        {"name": "close", "op": "close-batch", "expect_rc": "00"},
        {"name": "redeem", "op": "redeem", "card": "@1", "amount": "2.00", "expect_rc": "00"},
        {"name": "close off", "op": "close-batch", "batch_offset_minor": 100, "expect_rc": "95"},
        {"name": "close empty", "op": "close-batch", "expect_rc": "00"},
    ],
}


async def test_scenario_close_batch_in_and_out_of_balance(provisioned: Provisioned) -> None:
    book = CardBook()
    book.add_file("default", provisioned.cards_file)
    async with serve_in_process(provisioned.data) as host:
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            result = await run_scenario(SCENARIO, book, "127.0.0.1", host.port)
    text = "\n".join(result.lines)
    assert (result.passed, result.failed) == (10, 0), text
    close, off, empty = (_step(result.lines, n) for n in (7, 9, 10))
    assert "batch 000001" in close and "rc 00 IN BALANCE" in close
    assert "batch 000002" in off and "rc 95 OUT OF BALANCE" in off
    assert "batch 000003" in empty and "rc 00 IN BALANCE" in empty
    # The balanced batch: terminal and host side by side, no difference.
    rows = _table(close)
    assert rows["credits"] == ["1", "50.00", "1", "50.00", "0", "0.00"]
    assert rows["debits"] == ["2", "17.50", "2", "17.50", "0", "0.00"]
    assert rows["debit reversals"] == ["1", "12.50", "1", "12.50", "0", "0.00"]
    assert rows["net"] == ["D", "45.00", "D", "45.00", "0.00"]
    # The deliberately wrong one: one debit of 3.00 sent against the host's 2.00.
    rows = _table(off)
    assert rows["debits"] == ["1", "3.00", "1", "2.00", "0", "+1.00"]
    assert rows["net"] == ["C", "3.00", "C", "2.00", "+1.00"]


def _step(lines: list[str], n: int) -> str:
    """What a scenario printed for step ``n``: from its ``[n]`` line to the next step's."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"[{n}] "))
    end = next(
        (i for i, line in enumerate(lines) if i > start and line.startswith("[")), len(lines)
    )
    return "\n".join(lines[start:end])


def _table(block: str) -> dict[str, list[str]]:
    """The rows of a close-batch comparison: label -> the cells after it."""
    rows = {}
    for line in block.splitlines():
        if not line.startswith("    ") or line.strip().startswith("terminal"):
            continue
        rows[line[4:22].strip()] = line[22:].split()
    return rows


def test_describe_close_batch_without_host_totals() -> None:
    req = build_request(
        "close-batch",
        terminal=TERMINAL,
        store=STORE,
        stan="000001",
        now=NOW,
        totals=Totals(debits_count=1, debits_minor=250),
        batch_number="000004",
    )
    text = describe_close_batch(req, {"t": "0510", "39": "94"}, 0.001, verbose=False)
    assert "rc 94 duplicate transmission" in text
    assert _table(text)["debits"] == ["1", "2.50", "-"]


def test_cli_close_batch_keeps_the_terminals_totals(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    """``authsrv simulate`` with --batch-file: operations count, close-batch sends and resets."""
    batch_file = tmp_path / "T0000001.batch"
    common = ("--cards", str(provisioned.cards_file), "--batch-file", str(batch_file))
    with running_host(provisioned.data, tmp_path / "host.log") as host:
        port = ("--port", str(host.port))

        def simulate(*args: str) -> str:
            done = run_cli("simulate", *args, *port, *common)
            assert done.returncode == 0, done.stderr
            return done.stdout

        simulate("activate", "--card", "@1", "--amount", "20.00")
        simulate("redeem", "--card", "@1", "--amount", "7.25", "--retransmit", "1")
        out = simulate("close-batch")
        assert "batch 000001" in out and "rc 00 IN BALANCE" in out, out
        assert _table(out)["debits"] == ["1", "7.25", "1", "7.25", "0", "0.00"]
        simulate("redeem", "--card", "@1", "--amount", "1.00")
        out = simulate("close-batch", "--batch-offset-minor", "-50")
        assert "batch 000002" in out and "rc 95 OUT OF BALANCE" in out, out
        assert _table(out)["debits"] == ["1", "0.50", "1", "1.00", "0", "-0.50"]
        out = simulate("close-batch", "--totals", "debits=0/0")
        assert "batch 000003" in out and "rc 00 IN BALANCE" in out, out
        refused = run_cli(
            "simulate", "redeem", "--card", "@1", "--amount", "1", "--batch", "1", *port
        )
        assert refused.returncode == 2 and "go with close-batch" in refused.stderr
    assert json.loads(batch_file.read_text())["batch_numbers"] == {TERMINAL: 4}


async def test_terminal_added_later_reconciles_from_zero(provisioned: Provisioned) -> None:
    """A terminal that never moved money has an empty batch: zeros are in balance."""
    store = open_store(provisioned.data, 64)
    try:
        add_terminal(store, Terminal(id="T0000005", store_id=STORE))
    finally:
        store.close()
    async with serve_in_process(provisioned.data, clock_ms=lambda: NOW_MS) as host:
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            async with await host.connect() as conn:
                t = Terminal0500(conn, "T0000005")
                answer = await t.send(t.close_request(Totals()))
    assert (answer["39"], answer["97"]) == ("00", "C0000000000000000")


@pytest.mark.parametrize(
    ("op", "rc", "fields", "expected"),
    [
        ("redeem", "00", {"4": "000000001000"}, ("debits", 1000)),
        ("redeem", "10", {"4": "000000000400"}, ("debits", 400)),
        ("redeem", "51", {}, None),
        ("load", "00", {"4": "000000002000"}, ("credits", 2000)),
        ("balance", "00", {"4": "000000000000"}, None),
        ("preauth", "00", {"4": "000000001000"}, None),
    ],
)
def test_terminal_counts_what_got_approved(
    op: str, rc: str, fields: dict[str, str], expected: tuple[str, int] | None
) -> None:
    req = build_request(
        op, terminal=TERMINAL, store=STORE, pan="6036280000000001", amount_minor=1000, now=NOW
    )
    assert batch_entry(req, {"39": rc, **fields}) == expected


# -- the 0500 on the wire -----------------------------------------------------------------------

MANDATORY_0500 = ("3", "7", "11", "12", "13", "41", "42", "49", "60", *TOTALS_FIELDS)


def _0500(**overrides: str | None) -> dict[str, str]:
    return build_request(
        "close-batch",
        terminal=TERMINAL,
        store=STORE,
        stan="000007",
        now=NOW,
        totals=Totals(debits_count=2, debits_minor=1_500, credits_count=1, credits_minor=500),
        batch_number="000042",
        overrides=overrides,
    )


def test_parse_request_of_a_0500() -> None:
    fields = _0500()
    assert fields["3"] == "920000"
    frame = encode_message(fields)
    assert frame[4:5] in b"89ABCDEF", "fields 74-97 need the secondary bitmap"
    r = parse_request(decode_fields(frame))
    assert (r.mti_class, r.supported, r.batch_number, r.currency) == ("0500", True, "000042", EUR)
    assert r.totals == Totals(
        debits_count=2, debits_minor=1_500, credits_count=1, credits_minor=500
    )
    assert r.net_minor == 1_000
    assert fields["97"] == "C0000000000001000"


@pytest.mark.parametrize("key", MANDATORY_0500)
def test_every_mandatory_field_of_a_0500(key: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_request(decode_fields(encode_message(_0500(**{key: None}))))
    assert info.value.field44 == f"{int(key):03d} missing"


@pytest.mark.parametrize(
    ("key", "value", "field44"),
    [
        ("60", "00042", "060 not 6 digits"),
        ("60", "00004A", "060 not 6 digits"),
        ("74", "000000000A", "074 not numeric"),
        ("89", "-000000000000001", "089 not numeric"),
        ("97", "+0000000000001000", "097 not C or D"),
        ("97", "C000000000000100A", "097 not numeric"),
        ("97", "c0000000000001000", "097 not C or D"),
    ],
)
def test_malformed_totals(key: str, value: str, field44: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_request(decode_fields(encode_message(_0500(**{key: value}))))
    assert info.value.field44 == field44


def test_batch_number_longer_than_6_is_too_long() -> None:
    frame = encode_message(_0500()).replace(b"006000042", b"0070000042")
    with pytest.raises(FormatError) as info:
        decode_fields(frame)
    assert info.value.field44 == "060 too long"


def test_content_of_a_0500_covers_its_totals_and_batch_number() -> None:
    base = content_fields(parse_request(_decoded(_0500())))
    for key, value in (("60", "000043"), ("88", "0000000000001501"), ("97", "D0000000000001000")):
        assert content_fields(parse_request(_decoded(_0500(**{key: value})))) != base, key
    # Not content: the MAC, fields 12 and 13.
    assert content_fields(parse_request(_decoded(_0500(**{"12": "120000"})))) == base


def _decoded(fields: Mapping[str, str]) -> dict[str, str]:
    return decode_fields(encode_message(fields))
