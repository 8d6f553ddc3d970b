"""Card numbers, track data and PIN blocks never reach the store, the logs or other outputs."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from authsrv.logs import _Clock, _Lines, configure_logging, get_logger, info_line, mask_text
from simulators.terminal import build_request
from tests.helpers import Provisioned, RawClient, run_cli, running_host, scan_for


def test_no_card_data_in_store_logs_backup_or_cli_output(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    pans = provisioned.all_pans()
    pan = provisioned.cards[0]
    log = tmp_path / "host.log"
    outputs: list[str] = []
    with provisioned.cards_file.open() as fh:
        expiry = next(row for row in csv.DictReader(fh) if row["pan"] == pan)["expiry"]
    track2 = f"{pan}={expiry}1010000000000"
    pin_block = "0412AC89ABCDEF67"
    with running_host(provisioned.data, log) as host:
        with RawClient(host.port) as client:

            def send(op: str, **over: str | None) -> dict[str, str]:
                req = build_request(
                    op,
                    terminal="T0000001",
                    store="S0001",
                    pan=pan,
                    amount_minor=1000,
                    overrides=over,
                )
                return client.exchange(req)

            assert send("activate", **{"4": "000000005000"})["39"] == "00"
            assert send("redeem", **{"2": None, "35": track2})["39"] == "00"
            assert send("redeem", **{"52": pin_block})["39"] == "00"
            # Malformed requests carrying card data: answered 30, logged without it.
            assert send("redeem", **{"4": "0000000001X0"})["39"] == "30"
            assert send("redeem", **{"35": track2[:-1] + "X"})["39"] == "30"
            assert send("redeem", **{"2": None, "35": "6036281234567890123=2912"})["39"] in (
                "14",
                "30",
            )
        for cmd in (
            ["cards", "show", "--data", str(provisioned.data), "--card", pan],
            ["check", "--data", str(provisioned.data)],
            ["keys", "list", "--data", str(provisioned.data)],
        ):
            result = run_cli(*cmd)
            outputs += [result.stdout, result.stderr]
        backup = tmp_path / "backup"
        result = run_cli("backup", "--data", str(provisioned.data), str(backup))
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    assert scan_for([provisioned.data, log, backup], [*pans, track2, pin_block]) == []
    for text in outputs:
        for needle in [*pans, pin_block]:
            assert needle not in text
    requests = [json.loads(x) for x in log.read_text().splitlines() if '"request"' in x]
    assert len(requests) == 6
    assert all(r["card"] in (None, pan[:6] + "******" + pan[-4:]) for r in requests[:5])


def test_log_processor_masks_card_numbers_in_any_field() -> None:
    stream = io.StringIO()
    configure_logging("info", stream)
    get_logger().info(
        "oops", note="card 6036281234567890 swiped", nested={"t2": "6036281234567890=2912101"}
    )
    line = json.loads(stream.getvalue())
    assert line["note"] == "card 603628******7890 swiped"
    assert line["nested"]["t2"] == "[track2]"
    # Digit runs that are not Luhn-valid (amounts, RRNs, timestamps) are left alone.
    assert (
        mask_text("rrn 632610000001 amount 000000012000") == "rrn 632610000001 amount 000000012000"
    )


def _line_without_time(text: str) -> tuple[dict[str, object], str]:
    line = json.loads(text)
    return line, line.pop("timestamp")


def test_request_line_is_structlogs_line_and_masks_as_it_does() -> None:
    """``info_line`` (the request log's path past structlog's chain) writes what
    ``get_logger().info`` writes: same keys, same order, same masking, same timestamp shape."""
    fields: dict[str, object] = {
        "mti": "0200",
        "card": "card 6036281234567890 swiped",
        "nested": {"t2": "6036281234567890=2912101"},
        "amount_minor": 1234,
        "approved_minor": None,
        "latency_ms": 1.5,
        "replayed": True,
    }
    stream = io.StringIO()
    configure_logging("info", stream)
    get_logger().info("request", **fields)
    info_line("request", fields)
    by_structlog, by_fast = stream.getvalue().splitlines()
    assert "6036281234567890" not in stream.getvalue()
    (expected, _stamp), (got, stamp) = map(_line_without_time, (by_structlog, by_fast))
    assert list(got.items()) == list(expected.items())
    assert got["card"] == "card 603628******7890 swiped"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp), stamp


def test_request_line_follows_the_log_level() -> None:
    stream = io.StringIO()
    configure_logging("warning", stream)
    info_line("request", {"mti": "0200"})
    get_logger().info("request", mti="0200")
    assert stream.getvalue() == ""
    configure_logging("info", stream)
    info_line("request", {"mti": "0200"})
    assert json.loads(stream.getvalue())["event"] == "request"


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800 * 10**9), min_size=1))
def test_log_timestamps_are_structlogs_iso_utc(times_ns: list[int]) -> None:
    """The once-a-second formatting gives what ``TimeStamper(fmt="iso", utc=True)`` gives:
    datetime's ISO form, microseconds left out when they are zero, "Z" for UTC; one clock
    going back and forth between seconds (1970 to 2100) keeps each second's own text."""
    clock = _Clock()
    for ns in times_ns:
        when = datetime.fromtimestamp(ns // 10**9, tz=UTC)
        when = when.replace(microsecond=ns // 1000 % 10**6)
        assert clock.at(ns) == when.isoformat().replace("+00:00", "Z")


def test_request_line_without_configured_logging_goes_to_structlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Lines, "writer", None)
    with structlog.testing.capture_logs() as logs:
        info_line("request", {"mti": "0200", "rc": "00"})
    assert logs == [{"event": "request", "log_level": "info", "mti": "0200", "rc": "00"}]
