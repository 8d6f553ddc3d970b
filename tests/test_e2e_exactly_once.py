"""The exactly-once scenario against a real host and store, then `authsrv check`."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Provisioned, run_cli, running_host

ROOT = Path(__file__).resolve().parent.parent


def test_exactly_once_scenario_then_check(provisioned: Provisioned, tmp_path: Path) -> None:
    with running_host(provisioned.data, tmp_path / "host.log") as host:
        result = run_cli(
            "simulate",
            "run",
            str(ROOT / "scenarios" / "exactly-once.toml"),
            "--port",
            str(host.port),
            "--cards",
            str(provisioned.cards_file),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "16 passed, 0 failed" in result.stdout
    check = run_cli("check", "--data", str(provisioned.data))
    assert check.returncode == 0, check.stdout
    view = run_cli("cards", "show", "--data", str(provisioned.data), "--card", provisioned.cards[2])
    assert "balance   360.00 EUR" in view.stdout
