"""Business days: the clock, the automatic and manual cut-over, and the clearing file of a day
built from the ledger (settlement/day.py, settlement/ledger.py).

The processor runs in-process with a clock the test moves; requests are real frames.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from authsrv.app import open_keys
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.model import CardState, card_account
from authsrv.processor import Processor
from authsrv.store import LedgerStore, check_ledger
from settlement.clearing import read_clearing_file, verify_clearing_file
from settlement.day import (
    DayClock,
    DayError,
    DayIndex,
    close_open_day,
    current_open_day,
    next_day,
)
from settlement.ledger import clearing_records, days_without_files, write_day_files
from simulators.terminal import build_request
from tests.helpers import ManualClock, exchange_in_process, provision

OSLO = DayClock.of("04:00", "Europe/Oslo")
# 2026-11-22 12:00 Oslo (UTC+1): business day 20261122 runs 04:00 to 04:00 the next day.
NOON_MS = int(datetime(2026, 11, 22, 11, 0, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
MAP = 64 * 1024 * 1024


def _ms(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp() * 1000)


# -- the clock -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "day"),
    [
        ((2026, 11, 22, 2, 59), "20261121"),  # 03:59 Oslo: still the day before
        ((2026, 11, 22, 3, 0), "20261122"),  # 04:00 Oslo: the cut-over
        ((2026, 11, 23, 2, 59), "20261122"),
        ((2026, 7, 1, 1, 59), "20260630"),  # summer time, UTC+2: 03:59
        ((2026, 7, 1, 2, 0), "20260701"),
        ((2026, 12, 31, 23, 0), "20261231"),  # 00:00 Oslo on new year's day: still 31st
    ],
)
def test_day_of(utc: tuple[int, int, int, int, int], day: str) -> None:
    assert OSLO.day_of(_ms(*utc)) == day


def test_start_and_daylight_saving() -> None:
    assert OSLO.start_ms("20261122") == _ms(2026, 11, 22, 3)
    # 2026-03-29: Oslo goes from 02:00 to 03:00; the 04:00 cut-over is then 02:00 UTC, and the
    # day before is 23 hours long.
    assert OSLO.start_ms("20260329") == _ms(2026, 3, 29, 2)
    assert OSLO.start_ms("20260329") - OSLO.start_ms("20260328") == 23 * HOUR_MS
    assert next_day("20261231") == "20270101"
    with pytest.raises(ValueError, match="HH:MM"):
        DayClock.of("4:00", "UTC")
    with pytest.raises(ValueError, match="IANA"):
        DayClock.of("04:00", "Mars/Olympus")


# -- the host ---------------------------------------------------------------------------------


Clock = ManualClock


@dataclass
class Host:
    store: LedgerStore
    proc: Processor
    clock: Clock
    pans: list[str]
    root: Path
    stan: int = 0
    last_request: dict[str, str] = field(default_factory=dict)

    def send(self, op: str, card: int, amount: int | None = None, **kw: object) -> dict[str, str]:
        self.stan += 1
        fields = build_request(
            op,
            terminal="T0000001",
            store="S0001",
            pan=self.pans[card],
            amount_minor=amount,
            stan=f"{self.stan:06d}",
            now=self.clock.at(),
            **kw,  # type: ignore[arg-type]
        )
        return self.exchange(fields)

    def exchange(self, fields: dict[str, str]) -> dict[str, str]:
        self.last_request = fields
        return exchange_in_process(self.proc, fields)

    def days(self) -> list[object]:
        with self.store.read() as led:
            return list(led.days())


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    configure_logging("info", io.StringIO())
    provisioned = provision(tmp_path, card_count=4)
    store = LedgerStore(provisioned.data, map_size_bytes=MAP)
    clock = Clock()
    # init opened the first day by the wall clock; the tests run on their own clock.
    with store.write() as led:
        led.txn.drop(led.dbs.days, delete=False)
        current_open_day(led, OSLO, OSLO.start_ms("20261122") + HOUR_MS)
    proc = Processor(
        store,
        open_keys(store),
        Metrics(),
        get_logger(),
        skew_max_s=600,
        log_requests=False,
        clock_ms=clock,
        demo_mode=True,
        day_clock=OSLO,
    )
    try:
        yield Host(store, proc, clock, provisioned.cards, tmp_path)
    finally:
        store.close()


def test_automatic_cutover_splits_the_journal_at_the_boundary(host: Host) -> None:
    host.clock.now_ms = OSLO.start_ms("20261122") + HOUR_MS
    with host.store.write() as led:
        open_day = led.open_day()
        assert open_day is not None and open_day.first_seq == 1
    assert host.send("activate", 0, 10_000)["39"] == "00"
    day0 = next(d for d in host.days() if not d.closed)  # type: ignore[attr-defined]
    # One minute before the cut-over: still the same day.
    host.clock.now_ms = OSLO.start_ms("20261123") - 60_000
    assert host.send("redeem", 0, 1_000)["39"] == "00"
    # At the cut-over the next batch closes the day first, then decides its requests.
    host.clock.now_ms = OSLO.start_ms("20261123")
    assert host.send("redeem", 0, 2_000)["39"] == "00"
    with host.store.read() as led:
        days = led.days()
        assert check_ledger(led) == []
    by_day = {d.day: d for d in days}
    closed = by_day[day0.day]  # type: ignore[attr-defined]
    assert closed.closed and closed.how == "auto"
    assert closed.closed_ms == OSLO.start_ms("20261123")
    assert (closed.first_seq, closed.last_seq) == (1, 2)
    opened = days[-1]
    assert not opened.closed and opened.day == "20261123" and opened.first_seq == 3
    # Closing balances: the store's settlement account after an activation of 100.00 and a
    # redeem of 10.00.
    assert closed.balances["store:S0001:978"] == -10_000 + 1_000
    assert DayIndex(days).day_of_seq(3) == "20261123"
    assert DayIndex(days).day_of_seq(2) == closed.day


def test_days_skipped_while_stopped_are_closed_and_empty(host: Host) -> None:
    host.clock.now_ms = OSLO.start_ms("20261122") + HOUR_MS
    assert host.send("activate", 0, 10_000)["39"] == "00"
    # The host comes back three days later: the sweep closes the open day and records the
    # two days in between as empty, and each gets its own file sequence number.
    host.clock.now_ms = OSLO.start_ms("20261125") + HOUR_MS
    host.proc.sweep()
    days = host.days()
    tail = [(d.day, d.how, d.file_seq) for d in days[-4:]]  # type: ignore[attr-defined]
    first_seq = days[-4].file_seq  # type: ignore[attr-defined]
    assert tail[1:] == [
        ("20261123", "empty", first_seq + 1),
        ("20261124", "empty", first_seq + 2),
        ("20261125", "", 0),
    ]
    assert tail[0][1] == "auto"
    index = DayIndex(days)  # type: ignore[arg-type]
    assert index.day_of_seq(1) == tail[0][0]
    out = host.root / "out"
    for day in days_without_files(host.store, out):
        write_day_files(host.store, out, "H1", day)
    empty = verify_clearing_file(out / f"clearing-20261124-{first_seq + 2:06d}.ipm")
    assert empty.trailer.record_count == 0
    assert days_without_files(host.store, out) == []


def test_manual_cutover_runs_at_most_one_day_ahead(host: Host) -> None:
    host.clock.now_ms = OSLO.start_ms("20261122") + HOUR_MS
    with host.store.write() as led:
        closed, opened = close_open_day(led, OSLO, host.clock.now_ms, how="manual")
    assert closed[-1].day == "20261122" and closed[-1].how == "manual"
    assert opened.day == "20261123"
    before = host.days()
    with pytest.raises(DayError, match="opened early"), host.store.write() as led:
        close_open_day(led, OSLO, host.clock.now_ms, how="manual")
    assert host.days() == before
    # The automatic cut-over of the early day is still at its own time.
    host.clock.now_ms = OSLO.start_ms("20261124") - 1
    host.proc.sweep()
    assert next(d for d in host.days() if not d.closed).day == "20261123"  # type: ignore[attr-defined]
    host.clock.now_ms = OSLO.start_ms("20261124")
    host.proc.sweep()
    assert next(d for d in host.days() if not d.closed).day == "20261124"  # type: ignore[attr-defined]


def test_clearing_file_of_a_closed_day_never_changes(host: Host) -> None:
    """Records in commit order, a late reversal in the later day naming its original's day,
    and the file of a closed day byte-identical after more traffic and a rebuild."""
    host.clock.now_ms = OSLO.start_ms("20261122") + HOUR_MS
    assert host.send("activate", 0, 10_000)["39"] == "00"
    assert host.send("activate", 1, 5_000)["39"] == "00"
    redeem = host.send("redeem", 0, 2_500)
    assert redeem["39"] == "00"
    redeem_request = host.last_request
    assert host.send("redeem", 1, 9_999)["39"] == "51"  # a decline moves nothing: no record
    host.clock.now_ms = OSLO.start_ms("20261123") + HOUR_MS
    host.proc.sweep()
    with host.store.read() as led:
        days = led.days()
    day1 = days[-2]
    assert day1.day == "20261122"
    out = host.root / "out"
    first = write_day_files(host.store, out, "H1", "20261122")
    ipm1 = first.paths.ipm.read_bytes()
    csv1 = first.paths.csv.read_bytes()
    recs = read_clearing_file(ipm1).records
    assert [(r.op, r.dc, r.amount_minor) for r in recs] == [
        ("activate", "C", 10_000),
        ("activate", "C", 5_000),
        ("redeem", "D", 2_500),
    ]
    assert [r.record_id for r in recs] == [1, 2, 3]
    assert recs[2].local_time == redeem_request["13"] + redeem_request["12"]
    assert recs[2].rrn == redeem["37"] and recs[2].approval == redeem["38"]
    for r in recs:
        assert r.card_masked.startswith(host.pans[0][:6]) and "*" in r.card_masked
    # The next day: the redeem is reversed (a late reversal) and more is redeemed.
    reversal = host.send("reverse", 0, 2_500, original=redeem_request)
    assert reversal["39"] == "00"
    assert host.send("redeem", 1, 1_000)["39"] == "00"
    host.clock.now_ms = OSLO.start_ms("20261124") + HOUR_MS
    host.proc.sweep()
    # The closed day's file, rebuilt after all that, is the same bytes.
    again = write_day_files(host.store, out, "H1", "20261122")
    assert again.paths.ipm.read_bytes() == ipm1 and again.paths.csv.read_bytes() == csv1
    second = write_day_files(host.store, out, "H1", "20261123")
    recs2 = read_clearing_file(second.paths.ipm).records
    assert [(r.op, r.dc, r.amount_minor) for r in recs2] == [
        ("redeem", "C", 2_500),  # the reversal of the redeem: value back on the card
        ("redeem", "D", 1_000),
    ]
    orig = recs2[0].original
    assert orig is not None
    assert (orig.business_day, orig.record_id, orig.rrn, orig.stan) == (
        "20261122",
        3,
        redeem["37"],
        redeem_request["11"],
    )
    assert recs2[1].original is None
    assert verify_clearing_file(second.paths.ipm).trailer.record_count == 2
    # The file holds no full card number.
    for path in out.iterdir():
        data = path.read_bytes()
        for pan in host.pans:
            assert pan.encode() not in data


def test_open_day_has_no_clearing_file(host: Host) -> None:
    with host.store.read() as led:
        day = led.open_day()
        assert day is not None
        with pytest.raises(DayError, match="still open"):
            list(clearing_records(led, DayIndex(led.days()), day))
    with pytest.raises(DayError, match="still open"):
        write_day_files(host.store, host.root / "out", "H1", day.day)
    with pytest.raises(DayError, match="no business day 19990101"):
        write_day_files(host.store, host.root / "out", "H1", "19990101")


# -- the command line --------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authsrv", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_settle_cli_cutover_days_clearing(tmp_path: Path) -> None:
    provision(tmp_path, card_count=1)
    data = str(tmp_path / "data")
    out = tmp_path / "files"
    days = _cli("settle", "days", "--data", data, cwd=tmp_path)
    assert days.returncode == 0, days.stderr
    assert "open" in days.stdout and "closed" not in days.stdout.split("\n", 1)[1]
    cut = _cli("settle", "cutover", "--data", data, "--out", str(out), cwd=tmp_path)
    assert cut.returncode == 0, cut.stderr
    assert "closed business day" in cut.stdout and "OK: 0 records" in cut.stdout
    again = _cli("settle", "cutover", "--data", data, cwd=tmp_path)
    assert again.returncode == 1 and "refused" in again.stderr and again.stderr[-1] == "\n"
    assert again.stderr.count("\n") == 1
    listed = _cli("settle", "days", "--data", data, "--out", str(out), cwd=tmp_path)
    assert "closed (manual)" in listed.stdout and ".ipm" in listed.stdout
    missing = _cli(
        "settle", "clearing", "--missing", "--data", data, "--out", str(out), cwd=tmp_path
    )
    assert missing.returncode == 0 and "every closed day has its files" in missing.stdout
    bad = _cli("settle", "clearing", "2026-11-22", "--data", data, cwd=tmp_path)
    assert bad.returncode == 2 and "YYYYMMDD" in bad.stderr
    # The default directory is "settlement" beside the store directory.
    default = _cli("settle", "clearing", "--missing", "--data", data, cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert len(list((tmp_path / "settlement").glob("*.ipm"))) == 1


def test_settlement_config_errors(tmp_path: Path) -> None:
    from authsrv.config import ConfigError, load_config

    for over, expected in [
        ({"settlement.cutover_time": "25:00"}, "settlement.cutover_time"),
        ({"settlement.timezone": "Oslo"}, "settlement.timezone"),
        ({"settlement.host_id": "has space"}, "settlement.host_id"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            load_config(None, {}, over)
    cfg = load_config(None, {}, {"store.path": str(tmp_path / "d")})
    assert cfg.settlement_dir == tmp_path / "settlement"


def test_the_hosts_sweep_moves_expired_value_to_breakage(host: Host) -> None:
    host.proc.expiry = True
    host.clock.now_ms = OSLO.start_ms("20261122") + HOUR_MS
    assert host.send("activate", 0, 10_000)["39"] == "00"
    assert host.send("activate", 1, 4_000)["39"] == "00"
    with host.store.write() as led:
        card = led.card_by_hashes(host.proc.keys.pan_hashes(host.pans[0]))
        assert card is not None
        led.put_card(msgspec.structs.replace(card, expiry="2601"))  # ended January 2026
    registry = host.proc.metrics.registry
    held_before = registry.get_sample_value("authsrv_write_lock_held_seconds_count") or 0.0
    host.proc.sweep()
    host.proc.sweep()  # a second sweep moves nothing more
    # Each sweep is a write transaction of its own, counted with the lock's other holders.
    assert registry.get_sample_value("authsrv_write_lock_held_seconds_count") == held_before + 2
    with host.store.read() as led:
        expired = led.card(card.id)
        assert expired is not None and expired.state is CardState.EXPIRED
        assert led.balance(card_account(card.id)) == 0
        assert led.balance("breakage:issuer:978") == 10_000
        assert [t.op for t in led.journal()].count("expire") == 1
        assert check_ledger(led) == []
    assert host.proc.metrics.cards_expired._value.get() == 1
    assert host.send("redeem", 0, 100)["39"] == "54"
