"""`authsrv backup` while the host is serving, and the documented restore."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from authsrv.app import open_store
from authsrv.store import check_ledger
from simulators.terminal import build_request, summarize
from tests.helpers import Provisioned, RawClient, run_cli, running_host

REDEEMS = 300


def _journal(data: Path) -> list[tuple[int, int, str]]:
    store = open_store(data, 64, readonly=True)
    try:
        with store.read() as led:
            assert check_ledger(led) == []
            return [(t.seq, t.amount_minor, t.stan) for t in led.journal()]
    finally:
        store.close()


def test_hot_backup_under_load_restores_to_a_consistent_store(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    pan = provisioned.cards[0]
    backup = tmp_path / "backup"
    with running_host(provisioned.data, tmp_path / "host.log") as host:
        with RawClient(host.port) as client:
            act = build_request(
                "activate", terminal="T0000001", store="S0001", pan=pan, amount_minor=50000
            )
            assert client.exchange(act)["39"] == "00"
            answers: list[str] = []

            def load() -> None:
                for i in range(REDEEMS):
                    req = build_request(
                        "redeem",
                        terminal="T0000001",
                        store="S0001",
                        pan=pan,
                        amount_minor=1,
                        stan=f"{i + 1:06d}",
                    )
                    answers.append(summarize(client.exchange(req)).rc)

            worker = threading.Thread(target=load)
            worker.start()
            result = run_cli("backup", "--data", str(provisioned.data), str(backup))
            worker.join(60)
        assert result.returncode == 0, result.stderr
        assert answers == ["00"] * REDEEMS
    assert not any(backup.glob("*.kek")), "the key-encrypting key is not part of a backup"
    final = _journal(provisioned.data)
    copied = _journal(backup)
    # The copy is the store as of one commit: a prefix of the journal, activation included.
    assert 1 <= len(copied) <= len(final)
    assert copied == final[: len(copied)]

    # Restore as documented: the host is stopped; copy data.mdb into an empty directory and
    # give the host the same key-encrypting key.
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    shutil.copy2(backup / "data.mdb", restored / "data.mdb")
    shutil.copy2(provisioned.data / "master.kek", restored / "master.kek")
    check = run_cli("check", "--data", str(restored))
    assert check.returncode == 0, check.stdout
    expected_minor = 50000 - (len(copied) - 1)
    with running_host(restored, tmp_path / "restored.log") as host, RawClient(host.port) as c:
        balance = build_request("balance", terminal="T0000001", store="S0001", pan=pan)
        assert summarize(c.exchange(balance)).available_minor == expected_minor


def test_backup_refuses_a_non_empty_directory(provisioned: Provisioned, tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("x")
    result = run_cli("backup", "--data", str(provisioned.data), str(target))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not empty" in result.stderr
