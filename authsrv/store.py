"""The LMDB ledger: one environment, named databases, typed records (DESIGN §2, §4).

Resource handling: one ``lmdb.Environment`` per process. Write transactions are taken by the
single writer (the server's group commit) or by an administrative command; LMDB's lock serialises
them across processes. :meth:`LedgerStore.write` returns only after the transaction is on disk:

- the commit writes the transaction's pages and syncs them (``sync``), then writes the meta page
  that makes them current without waiting for it (``metasync=False``, LMDB's ``MDB_NOMETASYNC``:
  integrity is kept, a crash at that point may undo the last transaction only), and releases
  the write lock;
- then, outside the lock, ``env.sync`` makes that meta page durable before the caller (and the
  terminal waiting on the answer) is told of the commit.

The second sync overlaps with the next writer's transaction (another worker process) instead of
holding the lock: the lock is held for one sync per transaction, not two.

Error handling: ``StoreFull`` when the map is exhausted (answered 91); anything else raised out of
a write transaction aborts it whole.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgspec

from authsrv.model import (
    Account,
    ApiKey,
    AuditEntry,
    BusinessDay,
    Card,
    CardHolder,
    ClosedBatch,
    DupRecord,
    ExceptionCase,
    Hold,
    HoldState,
    IdempotencyRecord,
    OpenBatch,
    Posting,
    Product,
    Store,
    Terminal,
    Transfer,
    card_account,
)
from protocol.reconciliation import Totals

__all__ = ["Ledger", "LedgerStore", "LockTimes", "StoreError", "StoreFull", "check_ledger"]

SCHEMA_VERSION = 1
# meta: the first transfer written with account chain links (a store made before them has
# older transfers without links, indexed in card_journal instead).
CHAINS_FROM = "account_chains_from"
# meta: when the store's first open by a release with time-first duplicate keys happened, or 0
# when it had no duplicate records then (a store made since): until a duplicate window after
# it, a terminal's retransmission may find its record under the earlier key layout.
DUP_KEYS_TIME_FIRST = "dup_keys_time_first_ms"
DBS = (
    "meta",
    "keys",
    "products",
    "stores",
    "terminals",
    "cards",
    "card_index",
    "accounts",
    "journal",
    # card id + seq -> b"": each card's transfers, written by releases before account chains
    # (Account.last_seq, Transfer.debit_prev/credit_prev) and read for those transfers only.
    "card_journal",
    "dupes",  # duplicate key -> DupRecord
    "dupes_by_time",  # at_ms + duplicate key -> b"" (pruning in time order)
    "holds",  # hold id -> Hold
    "holds_by_expiry",  # expires_ms + hold id -> b"" (the expiry sweep)
    "card_held",  # card id -> total of open holds
    "exceptions",  # seq -> ExceptionCase
    "days",  # YYYYMMDD -> BusinessDay
    "batches",  # terminal id + ":" + currency -> OpenBatch (reconciliation, 0500)
    "batches_closed",  # terminal id + ":" + batch number + ":" + close seq -> ClosedBatch
    "product_versions",  # product id + NUL + version (u32) -> Product (every version kept)
    "audit",  # seq -> AuditEntry (back-office actions)
    "idempotency",  # request id -> IdempotencyRecord (back-office requests done once)
    "api_keys",  # key id -> ApiKey (HTTP API clients; token hashes, never tokens)
    "holders",  # card id -> CardHolder (personal data of card holders; no card data)
)
MAX_DBS = 32
MAX_READERS = 256
U64 = 8

T = TypeVar("T")

_enc = msgspec.msgpack.Encoder()
_dec_product = msgspec.msgpack.Decoder(Product)
_dec_store = msgspec.msgpack.Decoder(Store)
_dec_terminal = msgspec.msgpack.Decoder(Terminal)
_dec_card = msgspec.msgpack.Decoder(Card)
_dec_account = msgspec.msgpack.Decoder(Account)
_dec_transfer = msgspec.msgpack.Decoder(Transfer)
_dec_dup = msgspec.msgpack.Decoder(DupRecord)
_dec_hold = msgspec.msgpack.Decoder(Hold)
_dec_exception = msgspec.msgpack.Decoder(ExceptionCase)
_dec_day = msgspec.msgpack.Decoder(BusinessDay)
_dec_open_batch = msgspec.msgpack.Decoder(OpenBatch)
_dec_closed_batch = msgspec.msgpack.Decoder(ClosedBatch)
_dec_audit = msgspec.msgpack.Decoder(AuditEntry)
_dec_idempotency = msgspec.msgpack.Decoder(IdempotencyRecord)
_dec_api_key = msgspec.msgpack.Decoder(ApiKey)
_dec_holder = msgspec.msgpack.Decoder(CardHolder)
CARD_ACCOUNT_PREFIX = b"card:"


class StoreError(Exception):
    """The store cannot be opened or used as asked; the message says what to do."""


class StoreFull(StoreError):
    """The LMDB map is full: raise ``store.map_size_mib`` and restart."""


def _u64(n: int) -> bytes:
    return n.to_bytes(U64, "big")


def _version_key(product_id: str, version: int) -> bytes:
    return product_id.encode() + b"\x00" + version.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class _Dbs:
    meta: Any
    keys: Any
    products: Any
    stores: Any
    terminals: Any
    cards: Any
    card_index: Any
    accounts: Any
    journal: Any
    card_journal: Any
    dupes: Any
    dupes_by_time: Any
    holds: Any
    holds_by_expiry: Any
    card_held: Any
    exceptions: Any
    days: Any
    batches: Any
    batches_closed: Any
    product_versions: Any
    audit: Any
    idempotency: Any
    api_keys: Any
    holders: Any


class Ledger:
    """Typed access to one LMDB transaction (read or write)."""

    def __init__(self, txn: Any, dbs: _Dbs) -> None:
        self.txn = txn
        self.dbs = dbs
        # Counters are read once and written once per transaction (flush() before commit),
        # stores and products read once: neither changes inside a batch of requests.
        self._seqs: dict[str, int] = {}
        self._stores: dict[str, Store | None] = {}
        self._products: dict[str, Product | None] = {}
        self._versions: dict[tuple[str, int], Product | None] = {}
        # Records a batch reads again and again (a store's account on every redeem there, a
        # terminal's open batch), decoded once per transaction. Every write goes through
        # this class and updates them: they are never older than the transaction.
        self._accounts: dict[str, Account | None] = {}
        self._batches: dict[bytes, OpenBatch | None] = {}
        self._held: dict[int, int] = {}

    # -- reference data ---------------------------------------------------------------------
    def product(self, product_id: str) -> Product | None:
        if product_id not in self._products:
            raw = self.txn.get(product_id.encode(), db=self.dbs.products)
            self._products[product_id] = None if raw is None else _dec_product.decode(raw)
        return self._products[product_id]

    def put_product(self, product: Product) -> None:
        """Store ``product`` as the current version of its id, and keep it among its versions
        (a version once written is never replaced)."""
        self.txn.put(product.id.encode(), _enc.encode(product), db=self.dbs.products)
        self.txn.put(
            _version_key(product.id, product.version),
            _enc.encode(product),
            db=self.dbs.product_versions,
        )
        self._products[product.id] = product
        self._versions[(product.id, product.version)] = product

    def keep_product_version(self, product: Product) -> bool:
        """Store ``product`` among its versions unless that version is stored already (a
        product written before versions were kept); True when it was added."""
        added: bool = self.txn.put(
            _version_key(product.id, product.version),
            _enc.encode(product),
            db=self.dbs.product_versions,
            overwrite=False,
        )
        return added

    def product_version(self, product_id: str, version: int) -> Product | None:
        """Version ``version`` of a product; a product written before versions were kept has
        only its current record, which answers for its own version."""
        key = (product_id, version)
        if key not in self._versions:
            raw = self.txn.get(_version_key(product_id, version), db=self.dbs.product_versions)
            found = None if raw is None else _dec_product.decode(raw)
            if found is None:
                current = self.product(product_id)
                found = current if current is not None and current.version == version else None
            self._versions[key] = found
        return self._versions[key]

    def product_versions(self, product_id: str) -> list[Product]:
        """Every stored version of a product, oldest first (at least the current one)."""
        prefix = product_id.encode() + b"\x00"
        cursor = self.txn.cursor(db=self.dbs.product_versions)
        found: list[Product] = []
        if cursor.set_range(prefix):
            for key, raw in cursor.iternext():
                if not key.startswith(prefix):
                    break
                found.append(_dec_product.decode(raw))
        current = self.product(product_id)
        if current is not None and all(p.version != current.version for p in found):
            found.append(current)
        return found

    def store(self, store_id: str) -> Store | None:
        if store_id not in self._stores:
            raw = self.txn.get(store_id.encode(), db=self.dbs.stores)
            self._stores[store_id] = None if raw is None else _dec_store.decode(raw)
        return self._stores[store_id]

    def put_store(self, store: Store) -> None:
        self.txn.put(store.id.encode(), _enc.encode(store), db=self.dbs.stores)
        self._stores[store.id] = store

    def terminal(self, terminal_id: str) -> Terminal | None:
        raw = self.txn.get(terminal_id.encode(), db=self.dbs.terminals)
        return None if raw is None else _dec_terminal.decode(raw)

    def put_terminal(self, terminal: Terminal) -> None:
        self.txn.put(terminal.id.encode(), _enc.encode(terminal), db=self.dbs.terminals)

    def _all(self, db: Any, decoder: msgspec.msgpack.Decoder[T]) -> Iterator[T]:
        for _key, raw in self.txn.cursor(db=db):
            yield decoder.decode(raw)

    def products(self) -> Iterator[Product]:
        return self._all(self.dbs.products, _dec_product)

    def stores(self) -> Iterator[Store]:
        return self._all(self.dbs.stores, _dec_store)

    def terminals(self) -> Iterator[Terminal]:
        return self._all(self.dbs.terminals, _dec_terminal)

    def cards(self) -> Iterator[Card]:
        return self._all(self.dbs.cards, _dec_card)

    # -- keys (TR-31 blocks) ----------------------------------------------------------------
    def key_blocks(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.txn.cursor(db=self.dbs.keys)}

    def put_key_block(self, name: str, block: str) -> None:
        self.txn.put(name.encode(), block.encode(), db=self.dbs.keys)

    def delete_key_block(self, name: str) -> bool:
        return bool(self.txn.delete(name.encode(), db=self.dbs.keys))

    # -- counters and meta ------------------------------------------------------------------
    def meta(self, name: str) -> bytes | None:
        raw: bytes | None = self.txn.get(name.encode(), db=self.dbs.meta)
        return raw

    def meta_u64(self, name: str) -> int | None:
        """A meta value stored as an unsigned 64-bit integer (None: not stored)."""
        raw = self.meta(name)
        return None if raw is None else int.from_bytes(raw, "big")

    def put_meta(self, name: str, value: bytes) -> None:
        self.txn.put(name.encode(), value, db=self.dbs.meta)

    def next_seq(self, name: str) -> int:
        """Increment and return a durable counter (first value 1); stored by :meth:`flush`."""
        value = self._seqs.get(name)
        if value is None:
            raw = self.txn.get(f"seq:{name}".encode(), db=self.dbs.meta)
            value = int.from_bytes(raw, "big") if raw else 0
        value += 1
        self._seqs[name] = value
        return value

    def flush(self) -> None:
        """Write the counters this transaction advanced (before its commit)."""
        for name, value in self._seqs.items():
            self.txn.put(f"seq:{name}".encode(), _u64(value), db=self.dbs.meta)

    # -- cards ------------------------------------------------------------------------------
    def card(self, card_id: int) -> Card | None:
        raw = self.txn.get(_u64(card_id), db=self.dbs.cards)
        return None if raw is None else _dec_card.decode(raw)

    def card_by_hashes(self, hashes: list[bytes]) -> Card | None:
        for digest in hashes:
            raw = self.txn.get(digest, db=self.dbs.card_index)
            if raw is not None:
                card = self.card(int.from_bytes(raw, "big"))
                assert card is not None, "card index points to a missing card"
                return card
        return None

    def rekey_card(self, card: Card, old: bytes, new: bytes) -> Card:
        """Move a card's index entry from an old hash-key version to the current one."""
        assert old[0] == card.hash_version, "old hash is not the card's version"
        assert new[0] != card.hash_version, "re-keying to the same version"
        removed = self.txn.delete(old, db=self.dbs.card_index)
        assert removed, "the card was not indexed under its old hash"
        rekeyed = msgspec.structs.replace(card, hash_version=new[0])
        self.put_card(rekeyed, new)
        return rekeyed

    def cards_per_hash_version(self) -> dict[int, int]:
        """How many cards each hash-key version still indexes (a scan of the index keys)."""
        counts: dict[int, int] = {}
        cursor = self.txn.cursor(db=self.dbs.card_index)
        for key in cursor.iternext(keys=True, values=False):
            counts[key[0]] = counts.get(key[0], 0) + 1
        return counts

    def hash_version_used(self, version: int) -> bool:
        cursor = self.txn.cursor(db=self.dbs.card_index)
        return bool(cursor.set_range(bytes([version]))) and cursor.key()[:1] == bytes([version])

    def card_hash_taken(self, digest: bytes) -> bool:
        return self.txn.get(digest, db=self.dbs.card_index) is not None

    def put_card(self, card: Card, digest: bytes | None = None) -> None:
        self.txn.put(_u64(card.id), _enc.encode(card), db=self.dbs.cards)
        if digest is not None:
            assert digest[0] == card.hash_version
            added = self.txn.put(digest, _u64(card.id), db=self.dbs.card_index, overwrite=False)
            assert added, "card hash already indexed"

    # -- accounts and journal ---------------------------------------------------------------
    def account(self, key: str) -> Account | None:
        try:
            return self._accounts[key]
        except KeyError:
            raw = self.txn.get(key.encode(), db=self.dbs.accounts)
            acct = None if raw is None else _dec_account.decode(raw)
            self._accounts[key] = acct
            return acct

    def balance(self, key: str) -> int:
        acct = self.account(key)
        return 0 if acct is None else acct.balance_minor

    def accounts(self) -> Iterator[tuple[str, Account]]:
        for key, raw in self.txn.cursor(db=self.dbs.accounts):
            yield key.decode(), _dec_account.decode(raw)

    def post(
        self,
        posting: Posting,
        *,
        at_ms: int,
        op: str,
        card_id: int,
        terminal_id: str,
        store_id: str,
        stan: str,
        rrn: str,
        approval: str,
        local_time: str = "",
        original_seq: int = 0,
    ) -> Transfer:
        """Apply one double-entry posting and journal it, linked into both accounts' chains
        (the account records are written anyway: a history costs no index write)."""
        assert posting.amount_minor > 0, posting
        assert posting.debit != posting.credit, posting
        seq = self.next_seq("transfer")
        prev: list[int] = []
        for key, delta in (
            (posting.debit, -posting.amount_minor),
            (posting.credit, posting.amount_minor),
        ):
            acct = self.account(key)
            if acct is None:
                acct = Account(posting.unit, 0)
            assert acct.unit == posting.unit, f"unit mismatch on {key}"
            prev.append(acct.last_seq)
            new = Account(acct.unit, acct.balance_minor + delta, seq)
            self.txn.put(key.encode(), _enc.encode(new), db=self.dbs.accounts)
            self._accounts[key] = new
        transfer = Transfer(
            seq=seq,
            at_ms=at_ms,
            op=op,
            debit=posting.debit,
            credit=posting.credit,
            amount_minor=posting.amount_minor,
            unit=posting.unit,
            card_id=card_id,
            terminal_id=terminal_id,
            store_id=store_id,
            stan=stan,
            rrn=rrn,
            approval=approval,
            local_time=local_time,
            original_seq=original_seq,
            debit_prev=prev[0],
            credit_prev=prev[1],
        )
        added = self.txn.put(_u64(seq), _enc.encode(transfer), db=self.dbs.journal, append=True)
        assert added, "journal sequence reused"
        return transfer

    def account_transfers(self, key: str) -> Iterator[Transfer]:
        """The transfers of account ``key`` written since account chains began, newest first
        (one journal read each, following the links back)."""
        acct = self.account(key)
        seq = 0 if acct is None else acct.last_seq
        while seq:
            transfer = self.transfer(seq)
            assert transfer is not None, f"account {key} links to a missing transfer {seq}"
            yield transfer
            seq = transfer.debit_prev if transfer.debit == key else transfer.credit_prev

    def _legacy_card_seqs(self, card_id: int) -> list[bytes]:
        """The journal keys of a card's transfers from before account chains, oldest first
        (card_journal; empty in a store made since)."""
        prefix = _u64(card_id)
        cursor = self.txn.cursor(db=self.dbs.card_journal)
        seqs: list[bytes] = []
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                if not key.startswith(prefix):
                    break
                seqs.append(key[U64:])
        return seqs

    def _journal_entries(self, seqs: list[bytes]) -> list[Transfer]:
        result = []
        for seq in seqs:
            raw = self.txn.get(seq, db=self.dbs.journal)
            assert raw is not None, "card journal points to a missing transfer"
            result.append(_dec_transfer.decode(raw))
        return result

    # -- duplicates (DESIGN §5) --------------------------------------------------------------
    def dupe(self, key: bytes) -> DupRecord | None:
        raw = self.txn.get(key, db=self.dbs.dupes)
        return None if raw is None else _dec_dup.decode(raw)

    def put_dupe(self, key: bytes, record: DupRecord) -> None:
        """Store or replace the record of ``key``; the time index follows its first store.
        One put when the key is new (a request's own record nearly always is)."""
        value = _enc.encode(record)
        if self.txn.put(key, value, db=self.dbs.dupes, overwrite=False):
            self.txn.put(_u64(record.at_ms) + key, b"", db=self.dbs.dupes_by_time)
            return
        old = self.txn.get(key, db=self.dbs.dupes)
        assert _dec_dup.decode(old).at_ms == record.at_ms, "a duplicate record moved in time"
        self.txn.put(key, value, db=self.dbs.dupes)

    def prune_dupes(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` records stored before ``before_ms``, oldest first."""
        cursor = self.txn.cursor(db=self.dbs.dupes_by_time)
        removed = 0
        while removed < limit and cursor.first():
            index_key = cursor.key()
            if int.from_bytes(index_key[:U64], "big") >= before_ms:
                break
            cursor.delete()
            self.txn.delete(index_key[U64:], db=self.dbs.dupes)
            removed += 1
        return removed

    def dupes_count(self) -> int:
        return int(self.txn.stat(self.dbs.dupes)["entries"])

    def oldest_dupe_ms(self) -> int | None:
        cursor = self.txn.cursor(db=self.dbs.dupes_by_time)
        return int.from_bytes(cursor.key()[:U64], "big") if cursor.first() else None

    # -- holds ------------------------------------------------------------------------------
    def hold(self, hold_id: int) -> Hold | None:
        raw = self.txn.get(_u64(hold_id), db=self.dbs.holds)
        return None if raw is None else _dec_hold.decode(raw)

    def held(self, card_id: int) -> int:
        try:
            return self._held[card_id]
        except KeyError:
            raw = self.txn.get(_u64(card_id), db=self.dbs.card_held)
            total = 0 if raw is None else int.from_bytes(raw, "big", signed=True)
            self._held[card_id] = total
            return total

    def _add_held(self, card_id: int, delta: int) -> None:
        total = self.held(card_id) + delta
        assert total >= 0, f"card {card_id} would hold a negative amount"
        if total:
            self.txn.put(
                _u64(card_id), total.to_bytes(U64, "big", signed=True), db=self.dbs.card_held
            )
        else:
            self.txn.delete(_u64(card_id), db=self.dbs.card_held)
        self._held[card_id] = total

    def place_hold(self, hold: Hold) -> None:
        assert hold.state is HoldState.OPEN and hold.amount_minor > 0
        added = self.txn.put(_u64(hold.id), _enc.encode(hold), db=self.dbs.holds, overwrite=False)
        assert added, "hold id reused"
        self.txn.put(_u64(hold.expires_ms) + _u64(hold.id), b"", db=self.dbs.holds_by_expiry)
        self._add_held(hold.card_id, hold.amount_minor)

    def close_hold(self, hold: Hold, state: HoldState) -> Hold:
        """Move an open hold to ``state`` and give its amount back to the available balance."""
        assert hold.state is HoldState.OPEN and state is not HoldState.OPEN
        closed = msgspec.structs.replace(hold, state=state)
        self.txn.put(_u64(hold.id), _enc.encode(closed), db=self.dbs.holds)
        self.txn.delete(_u64(hold.expires_ms) + _u64(hold.id), db=self.dbs.holds_by_expiry)
        self._add_held(hold.card_id, -hold.amount_minor)
        return closed

    def resize_hold(self, hold: Hold, amount_minor: int) -> Hold:
        """Keep an open hold with a smaller amount (a partial reversal of a 0100)."""
        assert hold.state is HoldState.OPEN and 0 < amount_minor < hold.amount_minor
        resized = msgspec.structs.replace(hold, amount_minor=amount_minor)
        self.txn.put(_u64(hold.id), _enc.encode(resized), db=self.dbs.holds)
        self._add_held(hold.card_id, amount_minor - hold.amount_minor)
        return resized

    def expired_holds(self, now_ms: int, limit: int) -> list[Hold]:
        cursor = self.txn.cursor(db=self.dbs.holds_by_expiry)
        result: list[Hold] = []
        if cursor.first():
            for key in cursor.iternext(keys=True, values=False):
                if len(result) >= limit or int.from_bytes(key[:U64], "big") > now_ms:
                    break
                hold = self.hold(int.from_bytes(key[U64:], "big"))
                assert hold is not None and hold.state is HoldState.OPEN
                result.append(hold)
        return result

    def holds(self) -> Iterator[Hold]:
        return self._all(self.dbs.holds, _dec_hold)

    def card_held_totals(self) -> Iterator[tuple[int, int]]:
        for key, raw in self.txn.cursor(db=self.dbs.card_held):
            yield int.from_bytes(key, "big"), int.from_bytes(raw, "big", signed=True)

    # -- audit and idempotency (back-office actions) -----------------------------------------
    def add_audit(
        self,
        *,
        at_ms: int,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, str | int] | None = None,
        request_id: str = "",
    ) -> AuditEntry:
        """Append an audit entry (in the caller's transaction, with what it records)."""
        entry = AuditEntry(
            seq=self.next_seq("audit"),
            at_ms=at_ms,
            actor=actor,
            action=action,
            target=target,
            detail=dict(detail or {}),
            request_id=request_id,
        )
        added = self.txn.put(_u64(entry.seq), _enc.encode(entry), db=self.dbs.audit, append=True)
        assert added, "audit sequence reused"
        return entry

    def audit_entry(self, seq: int) -> AuditEntry | None:
        raw = self.txn.get(_u64(seq), db=self.dbs.audit)
        return None if raw is None else _dec_audit.decode(raw)

    def audit_entries(self) -> Iterator[AuditEntry]:
        return self._all(self.dbs.audit, _dec_audit)

    def idempotency(self, request_id: str) -> IdempotencyRecord | None:
        raw = self.txn.get(request_id.encode(), db=self.dbs.idempotency)
        return None if raw is None else _dec_idempotency.decode(raw)

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        added = self.txn.put(
            record.request_id.encode(),
            _enc.encode(record),
            db=self.dbs.idempotency,
            overwrite=False,
        )
        assert added, "request id reused"

    # -- exceptions (advices that break a rule) ---------------------------------------------
    def add_exception(self, case: ExceptionCase) -> None:
        self.txn.put(_u64(case.seq), _enc.encode(case), db=self.dbs.exceptions, append=True)

    def exception_cases(self) -> Iterator[ExceptionCase]:
        return self._all(self.dbs.exceptions, _dec_exception)

    def journal(self) -> Iterator[Transfer]:
        return self._all(self.dbs.journal, _dec_transfer)

    def journal_range(self, first_seq: int, last_seq: int) -> Iterator[Transfer]:
        """Transfers ``first_seq`` to ``last_seq`` (both included), in order."""
        cursor = self.txn.cursor(db=self.dbs.journal)
        if first_seq > last_seq or not cursor.set_range(_u64(first_seq)):
            return
        for key, raw in cursor.iternext():
            if int.from_bytes(key, "big") > last_seq:
                break
            yield _dec_transfer.decode(raw)

    def transfer(self, seq: int) -> Transfer | None:
        raw = self.txn.get(_u64(seq), db=self.dbs.journal)
        return None if raw is None else _dec_transfer.decode(raw)

    def last_transfer_seq(self) -> int:
        """The last journal sequence committed (counters this transaction advanced included)."""
        if "transfer" in self._seqs:
            return self._seqs["transfer"]
        raw = self.txn.get(b"seq:transfer", db=self.dbs.meta)
        return int.from_bytes(raw, "big") if raw else 0

    def non_card_balances(self) -> dict[str, int]:
        """Balances of every account that is not a card purse (stores, funding accounts)."""
        result: dict[str, int] = {}
        cursor = self.txn.cursor(db=self.dbs.accounts)
        if not cursor.first():
            return result
        while True:
            key = cursor.key()
            if key.startswith(CARD_ACCOUNT_PREFIX):
                # Skip the card purses in one step: ";" sorts right after ":".
                if not cursor.set_range(CARD_ACCOUNT_PREFIX[:-1] + b";"):
                    break
                continue
            result[key.decode()] = _dec_account.decode(cursor.value()).balance_minor
            if not cursor.next():
                break
        return result

    # -- business days ----------------------------------------------------------------------
    def day(self, day: str) -> BusinessDay | None:
        raw = self.txn.get(day.encode(), db=self.dbs.days)
        return None if raw is None else _dec_day.decode(raw)

    def put_day(self, record: BusinessDay) -> None:
        self.txn.put(record.day.encode(), _enc.encode(record), db=self.dbs.days)

    def days(self) -> list[BusinessDay]:
        """Every business day, oldest first (the open one last)."""
        return list(self._all(self.dbs.days, _dec_day))

    def open_day(self) -> BusinessDay | None:
        cursor = self.txn.cursor(db=self.dbs.days)
        if not cursor.last():
            return None
        last = _dec_day.decode(cursor.value())
        return None if last.closed else last

    # -- terminal batches (reconciliation, 0500) ---------------------------------------------
    @staticmethod
    def _batch_key(terminal_id: str, currency: str) -> bytes:
        return f"{terminal_id}:{currency}".encode()

    def open_batch(self, terminal_id: str, currency: str) -> OpenBatch | None:
        key = self._batch_key(terminal_id, currency)
        try:
            return self._batches[key]
        except KeyError:
            raw = self.txn.get(key, db=self.dbs.batches)
            batch = None if raw is None else _dec_open_batch.decode(raw)
            self._batches[key] = batch
            return batch

    def add_to_batch(
        self, terminal_id: str, currency: str, kind: str, amount_minor: int, at_ms: int
    ) -> OpenBatch:
        """Count one money-moving transaction in the terminal's open batch (one put)."""
        batch = self.open_batch(terminal_id, currency)
        if batch is None:
            batch = OpenBatch(
                terminal_id=terminal_id,
                currency=currency,
                opened_ms=at_ms,
                totals=Totals().add(kind, amount_minor),
            )
        else:
            batch = msgspec.structs.replace(batch, totals=batch.totals.add(kind, amount_minor))
        key = self._batch_key(terminal_id, currency)
        self.txn.put(key, _enc.encode(batch), db=self.dbs.batches)
        self._batches[key] = batch
        return batch

    def close_batch(self, closed: ClosedBatch) -> None:
        """Record a closed batch and start the terminal's next one (in that currency) at zero."""
        open_key = self._batch_key(closed.terminal_id, closed.currency)
        self.txn.delete(open_key, db=self.dbs.batches)
        self._batches[open_key] = None
        key = f"{closed.terminal_id}:{closed.batch_number}:".encode() + _u64(closed.seq)
        added = self.txn.put(key, _enc.encode(closed), db=self.dbs.batches_closed, overwrite=False)
        assert added, "closed batch sequence reused"

    def open_batches(self) -> Iterator[OpenBatch]:
        return self._all(self.dbs.batches, _dec_open_batch)

    def closed_batches(self, terminal_id: str | None = None) -> Iterator[ClosedBatch]:
        """Closed batches, of one terminal or all, by terminal and batch number."""
        if terminal_id is None:
            yield from self._all(self.dbs.batches_closed, _dec_closed_batch)
            return
        prefix = f"{terminal_id}:".encode()
        cursor = self.txn.cursor(db=self.dbs.batches_closed)
        if not cursor.set_range(prefix):
            return
        for key, raw in cursor.iternext():
            if not key.startswith(prefix):
                break
            yield _dec_closed_batch.decode(raw)

    def card_history(self, card_id: int, limit: int) -> list[Transfer]:
        """The newest ``limit`` transfers of one card, oldest first: its purse account's chain,
        then (a store from before account chains) the older ones from card_journal."""
        if limit <= 0:
            return []
        newest = list(itertools.islice(self.account_transfers(card_account(card_id)), limit))
        if len(newest) < limit:
            older = self._legacy_card_seqs(card_id)[-(limit - len(newest)) :]
            newest.extend(reversed(self._journal_entries(older)))
        newest.reverse()
        return newest

    # -- settlement jobs and reports ---------------------------------------------------------
    def cards_from(self, first_id: int, limit: int) -> list[Card]:
        """Up to ``limit`` cards with an id of ``first_id`` or more, by id (a resumable scan)."""
        cursor = self.txn.cursor(db=self.dbs.cards)
        result: list[Card] = []
        if limit > 0 and cursor.set_range(_u64(first_id)):
            for raw in cursor.iternext(keys=False, values=True):
                result.append(_dec_card.decode(raw))
                if len(result) >= limit:
                    break
        return result

    def card_first_transfers(self, card_id: int, limit: int) -> list[Transfer]:
        """The oldest ``limit`` transfers of one card, oldest first (``card_history`` gives the
        newest)."""
        if limit <= 0:
            return []
        result = self._journal_entries(self._legacy_card_seqs(card_id)[:limit])
        if len(result) < limit:
            chained = list(self.account_transfers(card_account(card_id)))
            result.extend(reversed(chained[-(limit - len(result)) :]))
        return result

    # -- HTTP API: clients and card holders (docs/api.md) ------------------------------------
    def api_key(self, key_id: str) -> ApiKey | None:
        raw = self.txn.get(key_id.encode(), db=self.dbs.api_keys)
        return None if raw is None else _dec_api_key.decode(raw)

    def put_api_key(self, key: ApiKey) -> None:
        self.txn.put(key.id.encode(), _enc.encode(key), db=self.dbs.api_keys)

    def api_keys(self) -> Iterator[ApiKey]:
        return self._all(self.dbs.api_keys, _dec_api_key)

    def holder(self, card_id: int) -> CardHolder | None:
        raw = self.txn.get(_u64(card_id), db=self.dbs.holders)
        return None if raw is None else _dec_holder.decode(raw)

    def put_holder(self, holder: CardHolder) -> None:
        self.txn.put(_u64(holder.card_id), _enc.encode(holder), db=self.dbs.holders)

    def delete_holder(self, card_id: int) -> bool:
        return bool(self.txn.delete(_u64(card_id), db=self.dbs.holders))

    def holders(self) -> Iterator[CardHolder]:
        return self._all(self.dbs.holders, _dec_holder)

    def audit_after(self, after_seq: int, limit: int) -> list[AuditEntry]:
        """Up to ``limit`` audit entries with a sequence above ``after_seq``, oldest first."""
        cursor = self.txn.cursor(db=self.dbs.audit)
        result: list[AuditEntry] = []
        if limit > 0 and cursor.set_range(_u64(after_seq + 1)):
            for raw in cursor.iternext(keys=False, values=True):
                result.append(_dec_audit.decode(raw))
                if len(result) >= limit:
                    break
        return result


@dataclass(slots=True)
class LockTimes:
    """One write transaction's time with LMDB's write lock, one lock for every process of
    the host: waiting for it (another worker's or an administrative transaction held it),
    and holding it (deciding, writing, the commit's data sync)."""

    wait_s: float = 0.0
    held_s: float = 0.0


class LedgerStore:
    """The LMDB environment and its databases.

    ``map_size_bytes`` is the largest the store may grow (LMDB's map); ``readonly`` opens it for
    reports and checks without taking the writer lock.
    """

    def __init__(self, path: Path, *, map_size_bytes: int, readonly: bool = False) -> None:
        if not (path / "data.mdb").exists():
            raise StoreError(f"no store at {path}; create one with `authsrv init --data {path}`")
        self.path = path
        self.env = self._open(path, map_size_bytes, readonly)
        # A store made by an older release lacks the databases added since: a writable open
        # adds them (empty), a read-only one reports them.
        self._dbs = self._open_dbs(create=not readonly)
        if not readonly:
            self.env.sync(True)  # databases an older release lacked, added just now
        with self.read() as led:
            version = led.meta("schema")
            marked = led.meta(CHAINS_FROM) is not None and led.meta(DUP_KEYS_TIME_FIRST) is not None
        if version != str(SCHEMA_VERSION).encode():
            raise StoreError(f"store at {path} has schema {version!r}, expected {SCHEMA_VERSION}")
        if not marked and not readonly:
            self._mark_layouts()

    def _mark_layouts(self) -> None:
        """The first writable open by a release with account chains and time-first duplicate
        keys records where each began (what the store holds from before is read as it was)."""
        with self.write() as led:
            if led.meta(CHAINS_FROM) is None:
                led.put_meta(CHAINS_FROM, _u64(led.last_transfer_seq() + 1))
            if led.meta(DUP_KEYS_TIME_FIRST) is None:
                since = time.time_ns() // 1_000_000 if led.dupes_count() else 0
                led.put_meta(DUP_KEYS_TIME_FIRST, _u64(since))

    def dup_keys_time_first_ms(self) -> int:
        """When terminal duplicate keys became time-first in this store (0: always were)."""
        with self.read() as led:
            return led.meta_u64(DUP_KEYS_TIME_FIRST) or 0

    @staticmethod
    def _open(path: Path, map_size_bytes: int, readonly: bool) -> Any:
        try:
            return lmdb.open(
                str(path),
                map_size=map_size_bytes,
                max_dbs=MAX_DBS,
                max_readers=MAX_READERS,
                sync=True,
                # The meta page is synced by LedgerStore.write after the lock is released.
                metasync=False,
                readahead=False,
                readonly=readonly,
                lock=True,
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open store at {path}: {exc}") from None

    def _open_dbs(self, create: bool) -> _Dbs:
        handles = {}
        for name in DBS:
            try:
                handles[name] = self.env.open_db(name.encode(), create=create)
            except lmdb.NotFoundError:
                raise StoreError(
                    f"store at {self.path} lacks database {name} (made by an older release); "
                    "open it once writable, e.g. with `authsrv serve`, to add it"
                ) from None
        return _Dbs(**handles)

    @classmethod
    def create(cls, path: Path, *, map_size_bytes: int, key_blocks: dict[str, str]) -> LedgerStore:
        """Create an empty store with its working keys; refuses an existing one."""
        if (path / "data.mdb").exists():
            raise StoreError(f"a store already exists at {path}")
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        env = cls._open(path, map_size_bytes, readonly=False)
        with env.begin(write=True) as txn:
            for name in DBS:
                env.open_db(name.encode(), txn=txn, create=True)
            meta = env.open_db(b"meta", txn=txn)
            keys = env.open_db(b"keys", txn=txn)
            txn.put(b"schema", str(SCHEMA_VERSION).encode(), db=meta)
            for name, block in key_blocks.items():
                txn.put(name.encode(), block.encode(), db=keys)
        env.sync(True)
        env.close()
        return cls(path, map_size_bytes=map_size_bytes)

    @contextmanager
    def read(self) -> Iterator[Ledger]:
        with self.env.begin(write=False, buffers=False) as txn:
            yield Ledger(txn, self._dbs)

    @contextmanager
    def write(self, times: LockTimes | None = None) -> Iterator[Ledger]:
        """A write transaction committed (with sync) on success, aborted on any exception.
        ``times``, when given, is filled in after a commit: how long the transaction waited
        for LMDB's write lock and how long it held it."""
        asked = time.perf_counter()
        try:
            with self.env.begin(write=True) as txn:
                got = time.perf_counter()
                led = Ledger(txn, self._dbs)
                yield led
                led.flush()
        except lmdb.MapFullError:
            raise StoreFull(
                f"store at {self.path} is full; raise store.map_size_mib and restart"
            ) from None
        if times is not None:
            times.wait_s, times.held_s = got - asked, time.perf_counter() - got
        # Committed and the write lock released: now the meta page (module docstring).
        self.env.sync(True)

    def size_bytes(self) -> int:
        info = self.env.info()
        stat = self.env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def backup(self, target: Path) -> None:
        """A consistent hot copy with compaction into the empty or new directory ``target``."""
        target.mkdir(parents=True, exist_ok=True)
        if any(target.iterdir()):
            raise StoreError(f"backup directory {target} is not empty")
        os.chmod(target, 0o700)
        self.env.copy(str(target), compact=True)

    def close(self) -> None:
        self.env.close()


def check_ledger(led: Ledger) -> list[str]:
    """Every invariant of DESIGN §4 that the ledger alone can prove; returns the problems.

    - per unit, all balances sum to zero;
    - every account's balance equals the sum of its journal transfers;
    - every card's purse account is in the card's product currency;
    - every card's held total equals the sum of its open holds;
    - every account's chain links each of its transfers to the one before (since chains began).
    """
    problems: list[str] = []
    from_journal: dict[str, int] = {}
    last_of: dict[str, int] = {}  # account -> its latest transfer so far
    chains_from = led.meta_u64(CHAINS_FROM) or led.last_transfer_seq() + 1
    last_seq = 0
    for t in led.journal():
        if t.seq != last_seq + 1:
            problems.append(f"journal gap after transfer {last_seq}")
        last_seq = t.seq
        if t.amount_minor <= 0:
            problems.append(f"transfer {t.seq} has a non-positive amount")
        from_journal[t.debit] = from_journal.get(t.debit, 0) - t.amount_minor
        from_journal[t.credit] = from_journal.get(t.credit, 0) + t.amount_minor
        for key, prev in ((t.debit, t.debit_prev), (t.credit, t.credit_prev)):
            before = last_of.get(key, 0)
            if t.seq >= chains_from and prev != (before if before >= chains_from else 0):
                problems.append(f"transfer {t.seq} links {key} to {prev}, not {before}")
            last_of[key] = t.seq
    totals: dict[str, int] = {}
    seen: set[str] = set()
    for key, acct in led.accounts():
        seen.add(key)
        totals[acct.unit] = totals.get(acct.unit, 0) + acct.balance_minor
        if from_journal.get(key, 0) != acct.balance_minor:
            problems.append(
                f"account {key} balance {acct.balance_minor} != journal {from_journal.get(key, 0)}"
            )
        last = last_of.get(key, 0)
        if acct.last_seq != (last if last >= chains_from else 0):
            problems.append(f"account {key} chain starts at {acct.last_seq}, not {last}")
    for key in from_journal.keys() - seen:
        problems.append(f"account {key} appears in the journal but has no balance record")
    for unit, total in sorted(totals.items()):
        if total != 0:
            problems.append(f"unit {unit} does not balance: sum of balances is {total}")
    open_by_card: dict[int, int] = {}
    for hold in led.holds():
        if hold.state is HoldState.OPEN:
            open_by_card[hold.card_id] = open_by_card.get(hold.card_id, 0) + hold.amount_minor
    if dict(led.card_held_totals()) != open_by_card:
        problems.append("held totals per card differ from the open holds")
    products = {p.id: p for p in led.products()}
    for card in led.cards():
        product = products.get(card.product)
        if product is None:
            problems.append(f"card {card.id} has unknown product {card.product}")
            continue
        purse = led.account(card_account(card.id))
        if purse is not None and purse.unit != product.currency:
            problems.append(
                f"card {card.id} purse is in {purse.unit}, product in {product.currency}"
            )
    return problems
