"""Card numbers, track data and PIN blocks never reach the store, the logs or other outputs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from authsrv.logs import configure_logging, get_logger, mask_text
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
