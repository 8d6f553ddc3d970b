"""Test harness: provisioned stores, a real host in a subprocess, raw ISO 8583 exchanges."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, TextIO

import iso8583
import lmdb
import trio

from authsrv.admin import add_product, add_store, add_terminal, issue_cards
from authsrv.app import Host, init_store, open_host, open_keys
from authsrv.config import load_config
from authsrv.logs import configure_logging
from authsrv.model import Product, Store, Terminal
from authsrv.processor import Processor
from authsrv.server import Server
from protocol.dialect import HOUSE_ASCII
from protocol.framing import encode_frame
from protocol.messages import encode_message
from simulators.terminal import TerminalConnection, build_request

CHAIN = "ACME"
OTHER_CHAIN = "OTHER"
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
SOCKET_TIMEOUT_S = 10.0


def gift_product(**overrides: object) -> Product:
    values: dict[str, object] = dict(
        id="GIFT",
        chain=CHAIN,
        kind="gift",
        currency="978",
        prefix="603628",
        pan_len=16,
        fixed_value_minor=0,
        load_min_minor=500,
        load_max_minor=50000,
        balance_max_minor=100000,
        redeem_min_minor=1,
        expiry_months=36,
        reloadable=True,
        cashout=True,
    )
    values.update(overrides)
    return Product(**values)  # type: ignore[arg-type]


def campaign_product(**overrides: object) -> Product:
    """A campaign product of chain ACME: 30 % of purchases from 100.00, at most 500.00 per
    issue, valid 90 days, issued and accepted in the chain, with online activation."""
    values: dict[str, object] = dict(
        id="CAMP",
        chain=CHAIN,
        kind="campaign",
        currency="978",
        prefix="603629",
        pan_len=16,
        fixed_value_minor=0,
        load_min_minor=0,
        load_max_minor=0,
        balance_max_minor=50_000,
        redeem_min_minor=1,
        expiry_months=36,
        reloadable=False,
        cashout=False,
        share_bp=3000,
        min_purchase_minor=10_000,
        max_value_minor=50_000,
        expiry_days=90,
        online_activation=True,
    )
    values.update(overrides)
    return Product(**values)  # type: ignore[arg-type]


@dataclass
class Provisioned:
    """A store on disk with: product GIFT (chain ACME, EUR); stores S0001, S0002 (ACME) and
    X0001 (chain OTHER); terminals T0000001/T0000002 in S0001, T0000003 in S0002, T0000009 in
    X0001; cards in ``cards`` (issued, not active) and ``expired`` (expiry 2401)."""

    data: Path
    cards_file: Path
    expired_file: Path
    cards: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)

    def all_pans(self) -> list[str]:
        return self.cards + self.expired


def read_pans(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return [row["pan"] for row in csv.DictReader(fh)]


def provision(root: Path, card_count: int = 8) -> Provisioned:
    data = root / "data"
    store, _ = init_store(data, 64)
    try:
        add_product(store, gift_product())
        add_store(store, Store(id="S0001", name="City", chain=CHAIN))
        add_store(store, Store(id="S0002", name="Mall", chain=CHAIN))
        add_store(store, Store(id="X0001", name="Elsewhere", chain=OTHER_CHAIN))
        add_terminal(store, Terminal(id="T0000001", store_id="S0001"))
        add_terminal(store, Terminal(id="T0000002", store_id="S0001"))
        add_terminal(store, Terminal(id="T0000003", store_id="S0002"))
        add_terminal(store, Terminal(id="T0000009", store_id="X0001"))
        keys = open_keys(store)
        cards_file = root / "cards.csv"
        expired_file = root / "expired.csv"
        issue_cards(store, keys, "GIFT", card_count, cards_file)
        issue_cards(store, keys, "GIFT", 2, expired_file, expiry="2401")
    finally:
        store.close()
    return Provisioned(
        data, cards_file, expired_file, read_pans(cards_file), read_pans(expired_file)
    )


def store_snapshot(data: Path) -> dict[str, dict[bytes, bytes]]:
    """Every key and value of every named database, for 'nothing changed' assertions."""
    env = lmdb.open(str(data), readonly=True, max_dbs=64, lock=False)
    try:
        snap: dict[str, dict[bytes, bytes]] = {}
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                snap[name.decode()] = dict(txn.cursor())
        return snap
    finally:
        env.close()


@dataclass
class HostProcess:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log_path: Path

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines


def authsrv_cmd() -> list[str]:
    return [sys.executable, "-m", "authsrv"]


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    input_text: str = "",
) -> subprocess.CompletedProcess[str]:
    """``authsrv ARGS``; ``input_text`` is its standard input (secrets are read from there)."""
    return subprocess.run(
        [*authsrv_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input_text,
        check=False,
    )


@contextmanager
def running_host(
    data: Path,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    metrics: bool = False,
) -> Iterator[HostProcess]:
    """``authsrv serve`` on 127.0.0.1 with an ephemeral port; SIGTERM and a clean exit at the
    end (asserted)."""
    args = [*authsrv_cmd(), "serve", "--data", str(data), "--port", "0", *extra_args]
    # Test terminals have no security profile: the host serves them in demo mode only.
    full_env = {**os.environ, "AUTHSRV_SECURITY_DEMO_MODE": "true", **(env or {})}
    if metrics:
        args += ["--metrics-port", "0"]
    else:
        full_env["AUTHSRV_METRICS_ENABLED"] = "false"
    with log_path.open("ab") as log_fh:
        proc = subprocess.Popen(args, stdout=log_fh, stderr=subprocess.STDOUT, env=full_env)
    try:
        port, metrics_port = _wait_listening(proc, log_path)
        host = HostProcess(proc, port, metrics_port, log_path)
        yield host
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("host did not stop after SIGTERM") from None
    assert proc.returncode == 0, f"host exited {proc.returncode}: {log_path.read_text()[-2000:]}"


def _wait_listening(proc: subprocess.Popen[bytes], log_path: Path) -> tuple[int, int | None]:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    metrics_port = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"host exited at start: {log_path.read_text()[-2000:]}")
        for raw in log_path.read_text().splitlines():
            if not raw.startswith("{"):
                continue
            event = json.loads(raw)
            if event.get("event") == "metrics":
                metrics_port = int(str(event["url"]).rsplit(":", 1)[1].split("/")[0])
            # With --workers each worker logs its own "listening"; the host is up when the
            # supervisor (the line without "worker") says so.
            if event.get("event") == "listening" and "worker" not in event:
                return int(event["port"]), metrics_port
        time.sleep(0.05)
    raise AssertionError("host did not start listening in time")


class RawClient:
    """A blocking socket client speaking the 2-byte framing; for exact-bytes tests."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_payload(self, payload: bytes) -> None:
        self.sock.sendall(encode_frame(payload))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by host")
            buf += chunk
        return buf

    def recv_payload(self) -> bytes:
        size = int.from_bytes(self.recv_exact(2), "big")
        return self.recv_exact(size)

    def closed_by_host(self) -> bool:
        """True when the host closes the connection (EOF or reset) within the timeout."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def exchange(self, fields: Mapping[str, str]) -> dict[str, str]:
        encoded, _ = iso8583.encode(dict(fields), HOUSE_ASCII)
        self.send_payload(bytes(encoded))
        return decode(self.recv_payload())


def decode(payload: bytes) -> dict[str, str]:
    decoded, _ = iso8583.decode(payload, HOUSE_ASCII)
    return dict(decoded)


def scan_for(paths: list[Path], needles: list[str]) -> list[str]:
    """Where any of ``needles`` occurs in the files under ``paths`` (as ASCII bytes)."""
    found = []
    wanted = [n.encode() for n in needles]
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            blob = path.read_bytes()
            for needle in wanted:
                if needle in blob:
                    found.append(f"{path}: {needle[:6].decode()}...")
    return found


@asynccontextmanager
async def serve_in_process(
    data: Path,
    *,
    clock_ms: Callable[[], int] | None = None,
    overrides: Mapping[str, object] | None = None,
    log_stream: TextIO | None = None,
) -> AsyncIterator[InProcessHost]:
    """A real ``Server`` on 127.0.0.1 (ephemeral port) inside the test's trio loop.

    ``clock_ms`` fixes the host's clock (the engine takes time as an input); ``overrides`` are
    config settings such as ``{"server.idle_timeout_s": 1}``.
    """
    cfg = load_config(
        None,
        {},
        {
            "store.path": str(data),
            "server.port": 0,
            "metrics.enabled": False,
            "security.demo_mode": True,  # test terminals have no security profile
            **(overrides or {}),
        },
    )
    configure_logging("info", log_stream or io.StringIO())
    host = open_host(cfg)
    if clock_ms is not None:
        host.processor.clock_ms = clock_ms
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_run, host.server)
            yield InProcessHost(host, port)
            host.server.request_stop()
    finally:
        host.close()


async def _run(
    server: Server, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await server.run(task_status=task_status)


@dataclass
class InProcessHost:
    host: Host
    port: int

    async def connect(self) -> TerminalConnection:
        return await TerminalConnection.open("127.0.0.1", self.port)


@dataclass
class ManualClock:
    """A host clock that a test moves (the processor takes time as an input)."""

    now_ms: int = 0

    def __call__(self) -> int:
        return self.now_ms

    def at(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms / 1000, tz=UTC)


def exchange_in_process(proc: Processor, fields: Mapping[str, str]) -> dict[str, str]:
    """One request through an in-process processor (prepare, a batch of one, respond): the
    answer's fields, as a terminal would decode them."""
    pending = proc.prepare(encode_message(dict(fields)))
    if pending.needs_writer:
        pending.outcome = proc.process_batch([pending])[0]
        pending.done.set()
    answer, _ = iso8583.decode(proc.respond(pending), HOUSE_ASCII)
    return dict(answer)


class InProcessTerminal:
    """Requests sent to an in-process processor from a (terminal, store) site, each with the
    next STAN at the clock's time; for test harnesses (dataclasses) that hold these fields."""

    proc: Processor
    clock: ManualClock
    stan: int
    requests: list[dict[str, str]]
    site: ClassVar[tuple[str, str]] = ("T0000001", "S0001")

    def send(
        self,
        op: str,
        pan: str,
        amount: int | None = None,
        at: tuple[str, str] | None = None,
        **kw: object,
    ) -> dict[str, str]:
        terminal, store = at or self.site
        self.stan += 1
        fields = build_request(
            op,
            terminal=terminal,
            store=store,
            pan=pan,
            amount_minor=amount,
            stan=f"{self.stan:06d}",
            now=self.clock.at(),
            **kw,  # type: ignore[arg-type]
        )
        self.requests.append(fields)
        return exchange_in_process(self.proc, fields)
