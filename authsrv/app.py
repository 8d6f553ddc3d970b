"""Wiring: configuration, key-encrypting key, store, key store, metrics, processor, server."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authsrv.config import Config
from authsrv.logs import get_logger
from authsrv.metrics import Metrics
from authsrv.processor import Processor
from authsrv.server import Server
from authsrv.store import LedgerStore
from authsrv.storefs import filesystem_of
from keys import (
    KeyStore,
    KeyStoreError,
    generate_kek_file,
    load_kek,
    missing_system_blocks,
    new_key_blocks,
)
from keys.keystore import KEK_PENDING_SUFFIX
from settlement.day import DayClock, current_open_day

__all__ = [
    "Host",
    "init_store",
    "kek_path",
    "make_processor",
    "open_host",
    "open_keys",
    "open_store",
]

KEK_FILE_NAME = "master.kek"
MIB = 1024 * 1024


def kek_path(data: Path) -> Path:
    """``AUTHSRV_KEK_FILE``, else ``master.kek`` inside the data directory (development)."""
    env = os.environ.get("AUTHSRV_KEK_FILE")
    return Path(env) if env else data / KEK_FILE_NAME


def init_store(
    data: Path, map_size_mib: int, clock: DayClock | None = None
) -> tuple[LedgerStore, bool]:
    """Create a store and its working keys, and open its first business day (by ``clock``,
    default: days from midnight UTC). Returns the store and whether a development KEK was
    generated (the caller must say so)."""
    kek_file = kek_path(data)
    generated = False
    data.mkdir(parents=True, exist_ok=True)
    if not kek_file.exists():
        generate_kek_file(kek_file)
        generated = True
    kek = load_kek(kek_file)
    store = LedgerStore.create(
        data, map_size_bytes=map_size_mib * MIB, key_blocks=new_key_blocks(kek)
    )
    with store.write() as led:
        current_open_day(led, clock or DayClock.of("00:00", "UTC"), time.time_ns() // 1_000_000)
    return store, generated


def open_store(data: Path, map_size_mib: int, readonly: bool = False) -> LedgerStore:
    return LedgerStore(data, map_size_bytes=map_size_mib * MIB, readonly=readonly)


def open_keys(store: LedgerStore) -> KeyStore:
    """The key store under the KEK file.

    Error handling: :class:`KeyStoreError`; when the keys do not unwrap but a ``.new`` KEK
    file exists (a rotation stopped after its commit), the message says how to finish it.
    """
    path = kek_path(store.path)
    kek = load_kek(path)
    with store.read() as led:
        blocks = led.key_blocks()
    try:
        keys = KeyStore(kek, blocks)
    except KeyStoreError:
        pending = path.with_name(path.name + KEK_PENDING_SUFFIX)
        if pending.exists():
            KeyStore(load_kek(pending), blocks)  # raises if that is not it either
            raise KeyStoreError(
                f"a key-encrypting key rotation stopped half-way: the keys are under {pending}; "
                f"move it to {path} (mv {pending} {path})"
            ) from None
        raise
    if missing_system_blocks(kek, blocks) and not store.env.flags()["readonly"]:
        keys = KeyStore(kek, _add_system_keys(store, kek))
    return keys


def _add_system_keys(store: LedgerStore, kek: bytes) -> dict[str, str]:
    """Give a store made by an older release the system keys added since (the activation
    key). Checked again inside the write transaction, so that processes opening the store
    together agree on one key."""
    with store.write() as led:
        blocks = led.key_blocks()
        for name, block in missing_system_blocks(kek, blocks).items():
            led.put_key_block(name, block)
            blocks[name] = block
    return blocks


@dataclass
class Host:
    cfg: Config
    store: LedgerStore
    keys: KeyStore
    metrics: Metrics
    processor: Processor
    server: Server
    log: Any

    def close(self) -> None:
        self.store.close()


def day_clock(cfg: Config) -> DayClock:
    return DayClock.of(cfg.settlement.cutover_time, cfg.settlement.timezone)


def make_processor(
    cfg: Config, store: LedgerStore, keys: KeyStore, metrics: Metrics, log: Any
) -> Processor:
    """The processor of ``cfg``: the host's, and the standalone API's (its web-shop loads go
    through the same engine and duplicate rules as a terminal's requests)."""
    return Processor(
        store,
        keys,
        metrics,
        log,
        skew_max_s=cfg.server.skew_max_s,
        log_requests=cfg.log.requests,
        dup_window_s=cfg.store.dup_window_s,
        hold_expiry_s=cfg.store.hold_expiry_s,
        sweep_batch_max=cfg.store.sweep_batch_max,
        demo_mode=cfg.security.demo_mode,
        key_grace_s=cfg.security.key_grace_s,
        pin_tries_max=cfg.security.pin_tries_max,
        day_clock=day_clock(cfg) if cfg.settlement.auto_cutover else None,
        expiry=cfg.settlement.expiry_sweep,
        writer_nice=cfg.store.writer_nice,
    )


def open_host(cfg: Config, worker: int | None = None) -> Host:
    """Open everything a serving host needs (it does not start listening)."""
    log = get_logger() if worker is None else get_logger().bind(worker=worker)
    store = open_store(cfg.data_path, cfg.store.map_size_mib)
    keys = open_keys(store)
    metrics = Metrics()
    metrics.watch_store_size(store.size_bytes, cfg.store.map_size_mib * MIB)
    processor = make_processor(cfg, store, keys, metrics, log)
    metrics.dupes_window.set(cfg.store.dup_window_s)
    fs = filesystem_of(cfg.data_path)
    if fs is not None and fs.in_memory and worker in (None, 0):
        log.warning(
            "store_in_memory",
            filesystem=fs.type,
            mount_point=fs.mount_point,
            detail="every commit is synced, but the sync reaches no disk: a power loss or a "
            "reboot loses the store; keep live cards on a disk",
        )
    if cfg.security.demo_mode:
        log.warning(
            "demo_mode",
            detail="terminals without a security profile are served (no MAC, no PIN); "
            "never run live cards like this",
        )
    server = Server(cfg, processor, metrics, log, clearing_files=worker in (None, 0))
    if cfg.api.enabled and worker in (None, 0):
        # The HTTP API in this process (one of several workers), its writes through this
        # server's writer (docs/api.md).
        from api.serve import host_service

        server.add_service(host_service(cfg, store, keys, metrics, log, server))
    return Host(cfg, store, keys, metrics, processor, server, log)
