"""Server limits and lifecycle: connections, idle time, in-flight window, sign-on, drain."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from authsrv.admin import add_terminal
from authsrv.app import open_store
from authsrv.model import Terminal
from protocol.framing import Framing, encode_frame
from protocol.messages import encode_message
from simulators.terminal import (
    SimError,
    TerminalConnection,
    build_request,
    decode_response,
    summarize,
)
from tests.helpers import (
    Provisioned,
    RawClient,
    run_cli,
    running_host,
    scan_for,
    serve_in_process,
)

NOW = datetime(2026, 11, 22, 10, 30, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def _clock() -> int:
    return NOW_MS


def _echo(stan: str = "000001") -> dict[str, str]:
    return build_request("echo", terminal="T0000001", store="S0001", stan=stan, now=NOW)


async def test_connections_max_refuses_the_next_connection(provisioned: Provisioned) -> None:
    async with serve_in_process(
        provisioned.data, clock_ms=_clock, overrides={"server.connections_max": 2}
    ) as h:
        first = await h.connect()
        second = await h.connect()
        assert summarize(await first.exchange(_echo())).rc == "00"
        assert summarize(await second.exchange(_echo())).rc == "00"
        third = await h.connect()
        with pytest.raises(SimError, match="closed the connection"):
            await third.exchange(_echo())
        await third.__aexit__()
        await first.__aexit__()
        # The slot is free again once the host has seen the close.
        answer = None
        for _ in range(100):
            fourth = await h.connect()
            try:
                answer = await fourth.exchange(_echo())
                break
            except SimError:
                await trio.sleep(0.01)
            finally:
                await fourth.__aexit__()
        assert answer is not None and answer["39"] == "00"
        assert summarize(await second.exchange(_echo("000002"))).rc == "00"
        await second.__aexit__()
        assert h.host.metrics.connections_refused._value.get() >= 1


async def test_idle_connection_is_closed(provisioned: Provisioned) -> None:
    async with (
        serve_in_process(
            provisioned.data, clock_ms=_clock, overrides={"server.idle_timeout_s": 1}
        ) as h,
        await h.connect() as conn,
    ):
        assert summarize(await conn.exchange(_echo())).rc == "00"
        started = trio.current_time()
        with trio.fail_after(5):
            data = await conn.stream.receive_some(10)
        assert data == b""
        assert trio.current_time() - started >= 0.9


async def test_inflight_window_pushes_back_without_dropping(provisioned: Provisioned) -> None:
    pan = provisioned.cards[0]
    count = 60
    async with (
        serve_in_process(
            provisioned.data, clock_ms=_clock, overrides={"server.inflight_per_connection_max": 2}
        ) as h,
        await h.connect() as conn,
    ):
        act = build_request(
            "activate",
            terminal="T0000001",
            store="S0001",
            pan=pan,
            amount_minor=50000,
            now=NOW,
        )
        assert summarize(await conn.exchange(act)).rc == "00"
        stans = [f"{i:06d}" for i in range(1, count + 1)]

        async def send_all() -> None:
            for stan in stans:
                req = build_request(
                    "redeem",
                    terminal="T0000001",
                    store="S0001",
                    pan=pan,
                    amount_minor=100,
                    stan=stan,
                    now=NOW,
                )
                await conn.send_raw(encode_message(req))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            answers = [decode_response(await conn.receive_raw()) for _ in stans]
    assert [a["11"] for a in answers] == stans
    assert all(a["39"] == "00" for a in answers)
    # Each redeem saw the one before it: balances step down by 1.00.
    balances = [summarize(a).available_minor for a in answers]
    assert balances == [50000 - 100 * i for i in range(1, count + 1)]


async def test_signon_required_terminal(provisioned: Provisioned) -> None:
    store = open_store(provisioned.data, 64)
    try:
        add_terminal(store, Terminal(id="T0000005", store_id="S0001", signon_required=True))
    finally:
        store.close()
    pan = provisioned.cards[0]

    def req(op: str, stan: str) -> dict[str, str]:
        return build_request(
            op, terminal="T0000005", store="S0001", pan=pan, amount_minor=1000, stan=stan, now=NOW
        )

    async with serve_in_process(provisioned.data, clock_ms=_clock) as h, await h.connect() as conn:
        assert summarize(await conn.exchange(req("activate", "000001"))).rc == "91"
        assert summarize(await conn.exchange(req("signon", "000002"))).rc == "00"
        assert summarize(await conn.exchange(req("activate", "000003"))).rc == "00"
        assert summarize(await conn.exchange(req("signoff", "000004"))).rc == "00"
        assert summarize(await conn.exchange(req("balance", "000005"))).rc == "91"


def test_sigterm_drains_in_flight_requests(provisioned: Provisioned, tmp_path: Path) -> None:
    """Requests already sent are answered after SIGTERM; then the host exits 0."""
    pan = provisioned.cards[0]
    log = tmp_path / "host.log"
    count = 200
    with running_host(provisioned.data, log) as host:
        with RawClient(host.port) as client:
            act = build_request(
                "activate", terminal="T0000001", store="S0001", pan=pan, amount_minor=50000
            )
            assert client.exchange(act)["39"] == "00"
            payloads = b"".join(
                len(p).to_bytes(2, "big") + p
                for p in (
                    encode_message(
                        build_request(
                            "redeem",
                            terminal="T0000001",
                            store="S0001",
                            pan=pan,
                            amount_minor=1,
                            stan=f"{i:06d}",
                        )
                    )
                    for i in range(1, count + 1)
                )
            )
            client.send_bytes(payloads)
            # Wait until the host has read the first request, then ask it to stop.
            first = decode_response(client.recv_payload())
            host.proc.send_signal(signal.SIGTERM)
            rest = [decode_response(client.recv_payload()) for _ in range(count - 1)]
            assert client.closed_by_host()
        host.proc.wait(20)
        assert host.proc.returncode == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", host.port), timeout=1).close()
    answers = [first, *rest]
    assert [a["11"] for a in answers] == [f"{i:06d}" for i in range(1, count + 1)]
    assert all(a["39"] == "00" for a in answers)
    events = [e["event"] for e in host.log_lines()]
    assert "draining" in events and events[-1] == "stopped"
    check = run_cli("check", "--data", str(provisioned.data))
    assert check.returncode == 0, check.stdout
    view = run_cli("cards", "show", "--data", str(provisioned.data), "--card", pan)
    assert "balance   498.00 EUR" in view.stdout  # 500.00 - 200 x 0.01


def test_request_log_lines_and_metrics(provisioned: Provisioned, tmp_path: Path) -> None:
    """One JSON line per request with the agreed keys, card masked; metrics exposed."""
    pan = provisioned.cards[0]
    log = tmp_path / "host.log"
    with running_host(provisioned.data, log, metrics=True) as host:
        with RawClient(host.port) as client:
            act = build_request(
                "activate", terminal="T0000001", store="S0001", pan=pan, amount_minor=5000
            )
            assert client.exchange(act)["39"] == "00"
            bad = build_request(
                "redeem",
                terminal="T0000001",
                store="S0001",
                pan=pan,
                amount_minor=100,
                overrides={"4": "00000000010X"},
            )
            assert client.exchange(bad)["39"] == "30"
        assert host.metrics_port is not None
        deadline = time.monotonic() + 5
        while True:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{host.metrics_port}/metrics", timeout=5
            ) as resp:
                text = resp.read().decode()
            if 'authsrv_requests_total{mti="0200",rc="30"} 1.0' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
    assert 'authsrv_requests_total{mti="0200",rc="00"} 1.0' in text
    assert 'authsrv_format_errors_total{field="004"} 1.0' in text
    assert "authsrv_request_duration_seconds_count 2.0" in text
    assert "authsrv_commit_batch_size_count 1.0" in text
    # The batch and the writer's sweeps (one at its start, one every sweep_interval_s) each
    # waited for the write lock and held it.
    series = {
        name: float(value)
        for name, value in (
            ln.split() for ln in text.splitlines() if ln.startswith("authsrv_write_lock")
        )
        if name.endswith(("_count", "_sum"))
    }
    assert series["authsrv_write_lock_wait_seconds_count"] >= 2
    assert (
        series["authsrv_write_lock_held_seconds_count"]
        == series["authsrv_write_lock_wait_seconds_count"]
    )
    assert series["authsrv_write_lock_held_seconds_sum"] > 0
    assert "authsrv_connections_accepted_total 1.0" in text
    size = [ln for ln in text.splitlines() if ln.startswith("authsrv_store_size_bytes ")]
    assert size and float(size[0].split()[1]) > 0
    requests = [e for e in host.log_lines() if e["event"] == "request"]
    assert len(requests) == 2
    ok, bad_line = requests
    for key in ("mti", "proc", "rc", "terminal", "store", "card", "latency_ms", "timestamp"):
        assert key in ok, key
    assert ok["card"] == pan[:6] + "******" + pan[-4:]
    assert ok["rc"] == "00" and ok["mti"] == "0200" and ok["terminal"] == "T0000001"
    assert str(ok["timestamp"]).endswith("Z")
    assert bad_line["rc"] == "30" and bad_line["field44"] == "004 not numeric"
    assert scan_for([log], [pan]) == []
    # Every line is JSON.
    for raw in log.read_text().splitlines():
        json.loads(raw)


async def test_ascii_length_framing_listener(provisioned: Provisioned) -> None:
    async with serve_in_process(
        provisioned.data, clock_ms=_clock, overrides={"server.framing": "ascii4"}
    ) as h:
        stream = await trio.open_tcp_stream("127.0.0.1", h.port)
        async with TerminalConnection(stream, Framing.ASCII4) as conn:
            payload = encode_message(_echo())
            await conn.stream.send_all(b"%04d" % len(payload) + payload)
            header = b""
            while len(header) < 4:
                header += await conn.stream.receive_some(4 - len(header))
            assert header.isdigit()
            body = b""
            while len(body) < int(header):
                body += await conn.stream.receive_some(int(header) - len(body))
            assert decode_response(body)["39"] == "00"


async def test_each_connection_is_counted_closed_once_by_its_cause(
    provisioned: Provisioned,
) -> None:
    """A terminal that hangs up (eof), one that goes quiet (idle), one that sends a frame
    without an MTI (unreadable) and one reset while its answer is on the way (peer): one count
    each, under its own reason."""
    async with serve_in_process(
        provisioned.data, clock_ms=_clock, overrides={"server.idle_timeout_s": 1}
    ) as h:
        closed = h.host.metrics.connections_closed

        def counts() -> dict[str, float]:
            reasons = ("eof", "idle", "unreadable", "peer", "internal", "frame", "drain")
            return {r: closed.labels(r)._value.get() for r in reasons}

        async with await h.connect() as polite:
            assert summarize(await polite.exchange(_echo())).rc == "00"
        quiet = await h.connect()
        assert summarize(await quiet.exchange(_echo())).rc == "00"
        rude = await trio.open_tcp_stream("127.0.0.1", h.port)
        await rude.send_all(b"\x00\x03abc")  # a frame too short to hold an MTI
        with trio.fail_after(5):
            while await rude.receive_some(10):
                pass
        await rude.aclose()
        resetting = await trio.open_tcp_stream("127.0.0.1", h.port)
        resetting.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        await resetting.send_all(encode_frame(encode_message(_echo()), Framing.BINARY2))
        await resetting.aclose()  # linger 0: an RST, the answer has nowhere to go
        with trio.fail_after(5):
            while sum(counts().values()) < 4:
                await trio.sleep(0.05)
        await trio.sleep(0.2)  # a second count for one connection would come now
        got = counts()
        await quiet.stream.aclose()
    assert got["eof"] + got["peer"] == 2, got  # the reset may land before or after the answer
    assert got["eof"] >= 1 and got["idle"] == 1 and got["unreadable"] == 1, got
    assert sum(got.values()) == 4, got


async def test_what_arrives_while_the_writer_waits_for_the_lock_joins_its_batch(
    provisioned: Provisioned,
) -> None:
    """The writer takes its batch once it holds the write lock: a request that arrives while
    another transaction (another worker's, here a thread's) holds the lock is decided in the
    same commit as the one that was waiting, not in the next."""
    async with serve_in_process(provisioned.data, clock_ms=_clock) as h:
        registry = h.host.metrics.registry

        def count(name: str) -> float:
            return registry.get_sample_value(name) or 0.0

        while count("authsrv_write_lock_held_seconds_count") < 1:  # the writer's first sweep
            await trio.sleep(0.01)
        holding, release = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            with h.host.store.write():
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        assert holding.wait(5)
        first, second = await h.connect(), await h.connect()
        answers: dict[str, str] = {}

        async def activate(client: TerminalConnection, pan: str, stan: str) -> None:
            request = build_request(
                "activate", terminal="T0000001", store="S0001", pan=pan, amount_minor=1000,
                stan=stan, now=NOW,
            )  # fmt: skip
            answers[stan] = (await client.exchange(request))["39"]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(activate, first, provisioned.cards[0], "000001")
            await trio.sleep(0.2)  # the writer has taken it up and waits for the lock
            nursery.start_soon(activate, second, provisioned.cards[1], "000002")
            await trio.sleep(0.2)
            assert answers == {}  # nothing is answered before its commit
            release.set()
        holder.join()
        await first.__aexit__()
        await second.__aexit__()
        assert answers == {"000001": "00", "000002": "00"}
        assert count("authsrv_commit_batch_size_count") == 1
        assert count("authsrv_commit_batch_size_sum") == 2
