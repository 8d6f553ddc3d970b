"""``authsrv demo`` (what ``make run`` starts): the tour it prints works as printed.

The demo runs as a subprocess on free ports; the test follows the campaign part of the tour:
issue a campaign card at a terminal, see 78, activate it over HTTP with the printed code and
the self-service key from the demo's key file, redeem it; then SIGTERM ends the demo with 0.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.helpers import authsrv_cmd, read_pans, run_cli

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(path: Path, marker: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if marker in text:
            return text
        assert proc.poll() is None, f"the demo exited early: {text[-2000:]}"
        time.sleep(0.1)
    raise AssertionError(f"no {marker!r} within {STARTUP_TIMEOUT_S} s")


def test_demo_tour_campaign_card_over_iso_and_http(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    iso, api = _free_port(), _free_port()
    err = tmp_path / "demo.err"
    with err.open("wb") as err_fh, (tmp_path / "demo.out").open("wb") as out_fh:
        proc = subprocess.Popen(
            [
                *authsrv_cmd(),
                "demo",
                "--data",
                str(data),
                "--port",
                str(iso),
                "--metrics-port",
                "0",
                "--api-port",
                str(api),
            ],
            stdout=out_fh,
            stderr=err_fh,
            cwd=tmp_path,
        )
        try:
            banner = _wait_for(err, "Stop with Ctrl-C", proc)
            assert f"HTTP API on http://127.0.0.1:{api}" in banner
            camp = data / "demo-campaign-cards.csv"
            keys = data / "demo-api-keys"
            assert keys.stat().st_mode & 0o777 == 0o600
            tokens = dict(line.split("=", 1) for line in keys.read_text().split())
            common = ["--cards", str(camp), "--port", str(iso)]
            issued = run_cli("simulate", "issue", "--card", "@1", "--amount", "1000.00", *common)
            assert issued.returncode == 0, issued.stderr
            assert "balance 300.00 EUR" in issued.stdout
            found = re.search(r"activation code ([A-Z0-9]{8})", issued.stdout)
            assert found is not None, issued.stdout
            refused = run_cli("simulate", "redeem", "--card", "@1", "--amount", "10.00", *common)
            assert "rc 78" in refused.stdout
            body = {
                "card_number": read_pans(camp)[0],
                "activation_code": found.group(1),
                "mobile": "+4791234567",
                "consents": {"terms": True},
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{api}/v1/self/activate",
                data=json.dumps(body).encode(),
                headers={
                    "Authorization": f"Bearer {tokens['selfservice']}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
                activated = json.loads(answer.read())
            assert activated["state"] == "active" and activated["balance_minor"] == 30_000
            paid = run_cli("simulate", "redeem", "--card", "@1", "--amount", "10.00", *common)
            assert "rc 00" in paid.stdout and "balance 290.00 EUR" in paid.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
    # The tour printed nothing secret beyond the demo's own key file.
    assert tokens["backoffice"] not in err.read_text()
