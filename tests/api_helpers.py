"""The HTTP API under test: in the host (``authsrv serve`` with ``api.enabled``) or alone (its
direct writer), on 127.0.0.1 with an ephemeral port, inside the test's trio loop; a client
that calls operations by id and records what each answered."""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from api.access import add_key
from api.context import ApiContext, api_context
from api.operations import OPERATIONS
from api.serve import ApiService
from api.writer import DirectWriter
from authsrv.app import make_processor, open_keys, open_store
from authsrv.config import load_config
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.model import ApiRole
from authsrv.store import LedgerStore
from simulators.terminal import TerminalConnection, build_request
from tests.helpers import STARTUP_TIMEOUT_S, STOP_TIMEOUT_S, InProcessHost, serve_in_process

OPS = {op.id: op for op in OPERATIONS}
HTTP_TIMEOUT_S = 10.0


@dataclass
class Tokens:
    backoffice: str
    store: str  # bound to S0001
    other_store: str  # bound to X0001 (chain OTHER)
    selfservice: str

    def of_role(self, role: ApiRole) -> str:
        return {
            ApiRole.BACKOFFICE: self.backoffice,
            ApiRole.STORE: self.store,
            ApiRole.SELFSERVICE: self.selfservice,
        }[role]


def make_tokens(store: LedgerStore) -> Tokens:
    made: dict[str, str] = {}
    with store.write() as led:
        for name, role, store_id in (
            ("backoffice", ApiRole.BACKOFFICE, ""),
            ("store", ApiRole.STORE, "S0001"),
            ("other_store", ApiRole.STORE, "X0001"),
            ("selfservice", ApiRole.SELFSERVICE, ""),
        ):
            _key, made[name] = add_key(
                led, name=f"test {name}", role=role, store_id=store_id, now_ms=1, actor="test"
            )
    return Tokens(**made)


@dataclass
class ApiClient:
    """Calls operations by id; remembers every (operation, status) and every answer body."""

    http: httpx.AsyncClient
    recorded: set[tuple[str, int]] = field(default_factory=set)
    bodies: list[bytes] = field(default_factory=list)

    async def call(
        self,
        op_id: str,
        token: str | None = None,
        *,
        path: Mapping[str, object] | None = None,
        query: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        op = OPS[op_id]
        url = op.path.format(**(path or {}))
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        response = await self.http.request(
            op.method, url, params=query, json=json, content=content, headers=sent
        )
        self.recorded.add((op_id, response.status_code))
        self.bodies.append(response.content)
        return response


@dataclass
class Api:
    port: int
    ctx: ApiContext
    tokens: Tokens
    log: io.StringIO
    client: ApiClient
    iso: InProcessHost | None = None  # the host it runs in (None: alone)

    @property
    def store(self) -> LedgerStore:
        return self.ctx.store

    def log_lines(self) -> str:
        return self.log.getvalue()

    async def terminal(self) -> TerminalConnection:
        assert self.iso is not None, "the API runs alone: no terminal listener"
        return await self.iso.connect()


API_DEFAULTS: dict[str, object] = {
    "api.port": 0,
    "api.body_size_max_bytes": 4096,
}


@asynccontextmanager
async def _client(port: int) -> AsyncIterator[ApiClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=HTTP_TIMEOUT_S
    ) as http:
        yield ApiClient(http)


@asynccontextmanager
async def api_in_host(
    data: Path, overrides: Mapping[str, object] | None = None
) -> AsyncIterator[Api]:
    """The host (ISO listener and API) in-process: API writes go through its writer loop."""
    log = io.StringIO()
    settings = {"api.enabled": True, **API_DEFAULTS, **(overrides or {})}
    async with serve_in_process(data, overrides=settings, log_stream=log) as h:
        (service,) = h.host.server.services
        assert isinstance(service, ApiService) and service.port is not None
        tokens = make_tokens(h.host.store)
        async with _client(service.port) as client:
            yield Api(service.port, service.ctx, tokens, log, client, h)


@asynccontextmanager
async def api_alone(
    data: Path,
    overrides: Mapping[str, object] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Api]:
    """``authsrv api`` in-process: its own direct writer on the store."""
    cfg = load_config(
        None,
        {},
        {"store.path": str(data), "metrics.enabled": False, **API_DEFAULTS, **(overrides or {})},
    )
    log = io.StringIO()
    configure_logging("info", log)
    store = open_store(cfg.data_path, cfg.store.map_size_mib)
    try:
        metrics = Metrics()
        keys = open_keys(store)
        processor = make_processor(cfg, store, keys, metrics, get_logger())
        writer = DirectWriter(processor, queue_max=cfg.api.write_queue_max, wait_s=1.0)
        ctx = api_context(cfg, store, keys, writer, processor, metrics, get_logger(), clock=clock)
        service = ApiService(ctx)
        tokens = make_tokens(store)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(service.run, stop)
            async with _client(port) as client:
                yield Api(port, ctx, tokens, log, client)
            stop.set()
    finally:
        store.close()


async def iso(api: Api, op: str, pan: str, amount_minor: int | None = None) -> dict[str, str]:
    """One terminal request at T0000001 in S0001; its answer."""
    fields = build_request(
        op, terminal="T0000001", store="S0001", pan=pan, amount_minor=amount_minor
    )
    async with await api.terminal() as conn:
        return await conn.exchange(fields)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ThreadedApi:
    port: int
    tokens: Tokens
    ctx: ApiContext


@contextmanager
def api_in_thread(
    data: Path, overrides: Mapping[str, object] | None = None
) -> Iterator[ThreadedApi]:
    """``api_alone`` in a thread of its own (its own trio loop), for blocking clients such as
    schemathesis; stopped (and joined) at the end."""
    started: queue.Queue[
        tuple[ThreadedApi, trio.lowlevel.TrioToken, trio.Event] | BaseException
    ] = queue.Queue(maxsize=1)

    async def main() -> None:
        async with api_alone(data, overrides) as api:
            stop = trio.Event()
            started.put(
                (
                    ThreadedApi(api.port, api.tokens, api.ctx),
                    trio.lowlevel.current_trio_token(),
                    stop,
                )
            )
            await stop.wait()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            started.put(exc)

    thread = threading.Thread(target=run, name="api-under-test", daemon=True)
    thread.start()
    got = started.get(timeout=STARTUP_TIMEOUT_S)
    if isinstance(got, BaseException):
        raise got
    api, token, stop = got
    try:
        yield api
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(STOP_TIMEOUT_S)
        assert not thread.is_alive(), "the API thread did not stop"
