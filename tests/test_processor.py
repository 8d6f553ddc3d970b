"""The processor: a full store answers the batch 91 and changes nothing; answers are counted."""

from __future__ import annotations

import io
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb
import pytest
from structlog.testing import capture_logs

from authsrv.app import open_keys
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.processor import Pending, Processor
from authsrv.store import LedgerStore
from protocol.messages import encode_message
from simulators.terminal import build_request
from tests.helpers import Provisioned, store_snapshot

NOW = datetime(2026, 11, 22, 10, 30, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
FILLER_BYTES = 4096


def _processor(store: LedgerStore) -> Processor:
    configure_logging("info", io.StringIO())
    return Processor(
        store,
        open_keys(store),
        Metrics(),
        get_logger(),
        skew_max_s=600,
        clock_ms=lambda: NOW_MS,
        demo_mode=True,
    )


def _pending(proc: Processor, op: str, pan: str, amount_minor: int, stan: str) -> Pending:
    fields = build_request(
        op,
        terminal="T0000001",
        store="S0001",
        pan=pan,
        amount_minor=amount_minor,
        stan=stan,
        now=NOW,
    )
    pending = proc.prepare(encode_message(fields))
    assert pending.needs_writer
    return pending


def _fill(data: Path, map_size_bytes: int) -> None:
    """Fill the map until not even a small record fits, so that the next write cannot."""
    env = lmdb.open(str(data), map_size=map_size_bytes, max_dbs=64)
    filler = env.open_db(b"filler")
    i = 0
    try:
        for size in (FILLER_BYTES, 512, 64, 8):
            while True:
                try:
                    with env.begin(write=True, db=filler) as txn:
                        txn.put(i.to_bytes(8, "big"), b"\0" * size)
                        i += 1
                except lmdb.MapFullError:
                    break
    finally:
        env.close()
    assert i > 0


def test_full_store_answers_the_batch_91_and_changes_nothing(provisioned: Provisioned) -> None:
    data = provisioned.data
    pan = provisioned.cards[0]
    map_size = 2 * 1024 * 1024
    store = LedgerStore(data, map_size_bytes=map_size)
    proc = _processor(store)
    try:
        activation = _pending(proc, "activate", pan, 20000, "000001")
        (outcome,) = proc.process_batch([activation])
        assert outcome.decision.rc == "00"
    finally:
        store.close()
    _fill(data, map_size)
    before = store_snapshot(data)
    store = LedgerStore(data, map_size_bytes=map_size)
    proc = _processor(store)
    try:
        batch = [_pending(proc, "redeem", pan, 100 + i, f"{i + 2:06d}") for i in range(40)]
        outcomes = proc.process_batch(batch)
    finally:
        store.close()
    assert [o.decision.rc for o in outcomes] == ["91"] * len(batch)
    assert store_snapshot(data) == before
    assert proc.metrics.store_errors.labels("full")._value.get() == 1


def test_broken_invariant_aborts_the_batch(
    provisioned: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An assertion inside the batch propagates (the server stops) and nothing is committed."""
    before = store_snapshot(provisioned.data)
    store = LedgerStore(provisioned.data, map_size_bytes=64 * 1024 * 1024)
    proc = _processor(store)
    try:
        batch = [
            _pending(proc, "activate", provisioned.cards[0], 5000, "000001"),
            _pending(proc, "activate", provisioned.cards[1], 5000, "000002"),
        ]
        calls = 0
        original = proc._process_one

        def second_breaks(*args: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise AssertionError("broken invariant")
            return original(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(proc, "_process_one", second_breaks)
        with pytest.raises(AssertionError, match="broken invariant"):
            proc.process_batch(batch)
        assert calls == 2
    finally:
        store.close()
    assert store_snapshot(provisioned.data) == before


def test_requests_are_counted_per_mti_and_response_code() -> None:
    metrics = Metrics()
    for mti, rc in [("0200", "00"), ("0200", "51"), ("0200", "00"), ("0100", "00")]:
        metrics.count_request(mti, rc)

    def count(mti: str, rc: str) -> float | None:
        labels = {"mti": mti, "rc": rc}
        return metrics.registry.get_sample_value("authsrv_requests_total", labels)

    assert (count("0200", "00"), count("0200", "51"), count("0100", "00")) == (2.0, 1.0, 1.0)
    assert count("0100", "51") is None


def _nice_inside_batches(
    proc: Processor, provisioned: Provisioned, monkeypatch: pytest.MonkeyPatch, batches: int
) -> list[int]:
    """Run ``batches`` one-request batches in a thread of their own; the thread's nice value
    while each decided (read inside its write transaction), then the thread's nice after."""
    seen: list[int] = []
    day_boundary = proc.day_boundary

    def watched(*args: Any) -> Any:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return day_boundary(*args)

    monkeypatch.setattr(proc, "day_boundary", watched)

    def run() -> None:
        for n in range(batches):
            pending = _pending(proc, "activate", provisioned.cards[n], 5000, f"{n + 1:06d}")
            assert [o.decision.rc for o in proc.process_batch([pending])] == ["00"]
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    writer = threading.Thread(target=run)
    writer.start()
    writer.join()
    return seen


def test_the_writer_decides_at_writer_nice_and_returns_to_its_own_priority(
    provisioned: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store.writer_nice``: the batch's thread runs at it while deciding and committing,
    then at the priority it had; the rest of the process is not touched. Raising a thread's
    priority needs CAP_SYS_NICE: without it the refusal is logged once and batches go on."""
    store = LedgerStore(provisioned.data, map_size_bytes=64 * 1024 * 1024)
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    proc = _processor(store)
    proc.writer_nice = -5
    try:
        with capture_logs() as logs:
            seen = _nice_inside_batches(proc, provisioned, monkeypatch, batches=2)
    finally:
        store.close()
    refused = [e for e in logs if e["event"] == "writer_nice_refused"]
    if refused:  # no CAP_SYS_NICE here: one warning, the writer at its own priority
        assert len(refused) == 1 and refused[0]["writer_nice"] == -5
        assert seen == [own, own, own] and proc.writer_nice == 0
    else:
        assert seen == [-5, -5, own] and proc.writer_nice == -5
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


def test_a_refused_writer_nice_is_logged_once(
    provisioned: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries: list[int] = []

    def refuse(_which: int, _who: int, value: int) -> None:
        tries.append(value)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    store = LedgerStore(provisioned.data, map_size_bytes=64 * 1024 * 1024)
    proc = _processor(store)
    proc.writer_nice = -10
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    try:
        with capture_logs() as logs:
            seen = _nice_inside_batches(proc, provisioned, monkeypatch, batches=3)
    finally:
        store.close()
    assert tries == [-10]  # asked once; the next batches do not ask again
    assert seen == [own] * 4
    assert [e["error"] for e in logs if e["event"] == "writer_nice_refused"] == [
        "Operation not permitted"
    ]
