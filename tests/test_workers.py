"""Several server processes on one port and one store (server.workers)."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

from simulators.terminal import build_request, summarize
from tests.helpers import Provisioned, RawClient, run_cli, running_host

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 8


def test_two_workers_share_the_port_the_store_and_the_rules(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    pan = provisioned.cards[0]
    log = tmp_path / "host.log"
    with running_host(provisioned.data, log, metrics=True, extra_args=("--workers", "2")) as host:
        clients = [RawClient(host.port) for _ in range(CONNECTIONS)]
        try:
            act = build_request(
                "activate", terminal="T0000001", store="S0001", pan=pan, amount_minor=1000
            )
            assert clients[0].exchange(act)["39"] == "00"
            # Every connection spends 1.00 of the same 10.00, twice over: wherever a request
            # lands, exactly ten are approved (one writer at a time across processes).
            codes = []
            for round_ in range(2):
                for i, client in enumerate(clients):
                    req = build_request(
                        "redeem",
                        terminal="T0000001",
                        store="S0001",
                        pan=pan,
                        amount_minor=100,
                        stan=f"{round_ * CONNECTIONS + i + 1:06d}",
                    )
                    codes.append(summarize(client.exchange(req)).rc)
            assert sorted(codes) == ["00"] * 10 + ["51"] * 6
            # A retransmission on another connection (so possibly another worker) is replayed.
            again = build_request(
                "redeem",
                terminal="T0000001",
                store="S0001",
                pan=pan,
                amount_minor=100,
                stan="000001",
            )
            first_answer = None
            for client in clients:
                answer = client.exchange(again)
                first_answer = first_answer or answer
                assert answer == first_answer
        finally:
            for client in clients:
                client.close()
        assert host.metrics_port is not None
        with urllib.request.urlopen(
            f"http://127.0.0.1:{host.metrics_port}/metrics", timeout=5
        ) as resp:
            text = resp.read().decode()
        # 1 activation, 10 approvals, 8 replayed answers.
        assert 'authsrv_requests_total{mti="0200",rc="00"} 19.0' in text
        assert 'authsrv_requests_total{mti="0200",rc="51"} 6.0' in text
        assert "authsrv_store_size_bytes " in text
    workers = {e.get("worker") for e in host.log_lines() if e.get("event") == "listening"}
    assert workers == {0, 1, None}  # each worker, then the supervisor
    check = run_cli("check", "--data", str(provisioned.data))
    assert check.returncode == 0, check.stdout
    view = run_cli("cards", "show", "--data", str(provisioned.data), "--card", pan)
    assert "balance   0.00 EUR" in view.stdout


def test_a_worker_that_dies_stops_the_host(provisioned: Provisioned, tmp_path: Path) -> None:
    log = tmp_path / "host.log"
    try:
        with running_host(provisioned.data, log, extra_args=("--workers", "2")) as host:
            children = _children(host.proc.pid)
            assert len(children) >= 2
            os.kill(children[-1], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while host.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert host.proc.returncode == 1
    except AssertionError as exc:
        # running_host asserts exit 0 at the end; here 1 is the expected status.
        assert "host exited 1" in str(exc), exc
    events = [e.get("event") for e in (x for x in _lines(log))]
    assert "worker_exited" in events


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    # The spawn machinery may start a resource tracker: workers are the ones running authsrv.
    workers = [c for c in found if "authsrv" in _cmdline(c) or "spawn_main" in _cmdline(c)]
    return sorted(workers)


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _lines(log: Path) -> list[dict[str, object]]:
    import json

    return [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
