"""The gift-card scenario against a real host on 127.0.0.1 and a real LMDB store."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Provisioned, run_cli, running_host, scan_for

ROOT = Path(__file__).resolve().parent.parent


def test_giftcard_scenario_then_check(provisioned: Provisioned, tmp_path: Path) -> None:
    log = tmp_path / "host.log"
    with running_host(provisioned.data, log) as host:
        result = run_cli(
            "simulate",
            "run",
            str(ROOT / "scenarios" / "giftcard.toml"),
            "--port",
            str(host.port),
            "--cards",
            str(provisioned.cards_file),
            "--cards",
            f"expired={provisioned.expired_file}",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "13 passed, 0 failed" in result.stdout
    check = run_cli("check", "--data", str(provisioned.data))
    assert check.returncode == 0, check.stdout
    assert "check passed" in check.stdout
    # Card numbers appear nowhere but in the card-issue files.
    outputs = [provisioned.data, log]
    leaks = scan_for(outputs, provisioned.all_pans())
    assert leaks == []
    for text in (result.stdout, result.stderr, check.stdout):
        assert not any(pan in text for pan in provisioned.all_pans())
