"""A bench store: deterministic card numbers and a fast bulk loader.

The layout of a bench store (how many cards, stores and terminals, which seed) is data: it is
written next to the store as ``bench.json`` so that a later run, or a run against a host
started by hand, can rebuild the card numbers from the seed. Card numbers themselves are never
written anywhere: they live in the generator's memory only (DESIGN §6), the store keeps the
keyed hash, the first six and the last four digits as for every card.

Card numbers are an affine permutation of the 9 free digits of the range (``a * i + b`` modulo
10^9, ``a`` prime to 10, both from the seed): distinct, Luhn-valid, spread over the range. Every
card has the PIN ``BENCH_PIN`` (its keyed verification value, as ``cards set-pin`` stores it),
for ``--pin-share``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from authsrv.admin import add_product, add_store, add_terminal
from authsrv.app import init_store, open_keys, open_store
from authsrv.model import (
    Card,
    CardState,
    Posting,
    Product,
    Store,
    Terminal,
    card_account,
    store_account,
)
from authsrv.store import LedgerStore

__all__ = [
    "CARDS_MAX",
    "LAYOUT_FILE",
    "PAN_LEN",
    "BenchError",
    "CardNumbers",
    "Layout",
    "ProvisionReport",
    "map_size_mib_for",
    "provision",
]

PRODUCT_ID = "BENCH"
CHAIN = "BENCH"
CURRENCY = "978"
PREFIX = "699990"  # a range of its own, so bench cards never look like test or demo cards
PAN_LEN = 16
FREE_DIGITS = PAN_LEN - len(PREFIX) - 1  # 9 digits chosen by the permutation, then the check
FREE_SPACE = 10**FREE_DIGITS
CARDS_MAX = 10_000_000  # the numbers of all cards are held in memory (16 bytes each)
TERMINALS_MAX = 99_999
STORES_MAX = 9_999
# Cards per write transaction: one fsync each; larger transactions hold more dirty pages.
CARDS_PER_TXN = 50_000
LAYOUT_FILE = "bench.json"
# LMDB map: what 1M cards take (about 1 GiB with the journal) plus room for the run's records.
MAP_SIZE_MIB_MIN = 4096
MAP_BYTES_PER_CARD = 2048
MIB = 1024 * 1024
BALANCE_MAX_MINOR = 10_000_000  # the bench product's largest balance: 100,000.00
BENCH_PIN = "1234"  # every bench card's PIN (test cards; only its keyed value is stored)


class BenchError(Exception):
    """One line for the user: what is wrong and how to fix it."""


@dataclass(frozen=True, slots=True)
class Layout:
    """What a bench store holds; everything the generator needs to address it."""

    cards: int
    seed: int
    stores: int
    terminals: int
    balance_minor: int

    def __post_init__(self) -> None:
        if not 1 <= self.cards <= CARDS_MAX:
            raise BenchError(f"--cards must be between 1 and {CARDS_MAX:,}")
        if not 1 <= self.stores <= STORES_MAX:
            raise BenchError(f"--stores must be between 1 and {STORES_MAX}")
        if not 1 <= self.terminals <= TERMINALS_MAX:
            raise BenchError(f"terminals must be between 1 and {TERMINALS_MAX}")
        if not 500 <= self.balance_minor <= BALANCE_MAX_MINOR:
            raise BenchError("--balance must be between 5.00 and 100000.00")

    @staticmethod
    def store_id(index: int) -> str:
        return f"B{index + 1:04d}"

    @staticmethod
    def terminal_id(index: int) -> str:
        return f"BT{index + 1:06d}"  # field 41: exactly 8 characters

    def store_of_terminal(self, index: int) -> str:
        return self.store_id(index % self.stores)

    def store_of_card(self, index: int) -> str:
        return self.store_id(index % self.stores)

    def save(self, data: Path) -> None:
        (data / LAYOUT_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, data: Path) -> Layout | None:
        path = data / LAYOUT_FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(**{k: int(raw[k]) for k in cls.__slots__})
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"{path} is not a bench layout ({exc}); use a fresh --data") from None


def bench_product() -> Product:
    return Product(
        id=PRODUCT_ID,
        chain=CHAIN,
        kind="gift",
        currency=CURRENCY,
        prefix=PREFIX,
        pan_len=PAN_LEN,
        fixed_value_minor=0,
        load_min_minor=500,
        load_max_minor=50_000,
        balance_max_minor=BALANCE_MAX_MINOR,
        redeem_min_minor=1,
        expiry_months=36,
        reloadable=True,
        cashout=False,
    )


def _luhn_tables() -> tuple[list[int], list[int]]:
    """Luhn sums of a 3-digit chunk, for a chunk whose last digit is doubled (first table) and
    for one whose last digit is not (second)."""

    def chunk_sum(chunk: int, double_last: bool) -> int:
        total = 0
        for i, ch in enumerate(reversed(f"{chunk:03d}")):
            d = int(ch)
            if (i % 2 == 0) == double_last:
                d *= 2
                if d > 9:
                    d -= 9
            total += d
        return total

    return [chunk_sum(c, True) for c in range(1000)], [chunk_sum(c, False) for c in range(1000)]


_DOUBLED, _PLAIN = _luhn_tables()


def _prefix_sum() -> int:
    # The prefix digits sit at reversed body positions FREE_DIGITS.. (position 0 is doubled).
    total = 0
    for i, ch in enumerate(reversed(PREFIX), start=FREE_DIGITS):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


_PREFIX_SUM = _prefix_sum()


class CardNumbers:
    """The bench's card numbers, ``count`` of them, as one block of ASCII digits in memory.

    ``slice(i)`` is the number of card ``i`` (0-based) as 16 bytes; the generator copies it
    into its request templates. Nothing here is ever written to a file or a log.
    """

    __slots__ = ("_blob", "count")

    def __init__(self, seed: int, count: int) -> None:
        assert FREE_DIGITS == 9, "the Luhn tables below split 9 digits into 3 chunks"
        assert 1 <= count <= min(CARDS_MAX, FREE_SPACE)
        # Test card numbers reproducible from the seed, not secrets: S311 does not apply.
        rng = random.Random(f"bench-cards:{seed}")  # noqa: S311
        a = rng.randrange(FREE_SPACE // 10, FREE_SPACE)
        while a % 2 == 0 or a % 5 == 0:  # prime to 10: the map is a permutation
            a += 1
        b = rng.randrange(FREE_SPACE)
        prefix = PREFIX.encode()
        doubled, plain, base = _DOUBLED, _PLAIN, _PREFIX_SUM
        parts = []
        for i in range(count):
            x = (a * i + b) % FREE_SPACE
            total = base + doubled[x // 1_000_000] + plain[x // 1000 % 1000] + doubled[x % 1000]
            parts.append(b"%s%09d%d" % (prefix, x, (10 - total % 10) % 10))
        self._blob = b"".join(parts)
        self.count = count
        assert len(self._blob) == count * PAN_LEN

    def slice(self, index: int) -> bytes:
        return self._blob[index * PAN_LEN : (index + 1) * PAN_LEN]

    def __repr__(self) -> str:  # never the numbers themselves
        return f"CardNumbers(count={self.count})"


def map_size_mib_for(cards: int) -> int:
    return max(MAP_SIZE_MIB_MIN, cards * MAP_BYTES_PER_CARD // MIB + MAP_SIZE_MIB_MIN // 2)


@dataclass(frozen=True, slots=True)
class ProvisionReport:
    """What provisioning did and how fast (seconds per phase)."""

    created: bool  # a fresh store (False: an existing bench store was reused)
    cards: int
    terminals_added: int
    numbers_s: float  # generating the card numbers
    hash_s: float  # keyed hashes of card numbers and PINs (HMAC-SHA256 in keys/)
    write_s: float  # LMDB puts, postings and commits (with sync)
    total_s: float

    @property
    def cards_per_s(self) -> float:
        loaded = self.hash_s + self.write_s
        return self.cards / loaded if self.created and loaded > 0 else 0.0

    def line(self) -> str:
        if not self.created:
            added = f", {self.terminals_added} terminal(s) added" if self.terminals_added else ""
            return f"reused the bench store ({self.cards:,} cards{added})"
        per_card_us = 1e6 / self.cards
        return (
            f"provisioned {self.cards:,} active cards in {self.total_s:.1f} s "
            f"({self.cards_per_s:,.0f} cards/s): numbers {self.numbers_s:.1f} s, "
            f"keyed hashes and PIN values {self.hash_s:.1f} s "
            f"({self.hash_s * per_card_us:.1f} µs/card), "
            f"LMDB writes and commits {self.write_s:.1f} s "
            f"({self.write_s * per_card_us:.1f} µs/card)"
        )


def _expiry(now_ms: int, months: int) -> str:
    t = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    index = t.year * 12 + (t.month - 1) + months
    return f"{(index // 12) % 100:02d}{index % 12 + 1:02d}"


def provision(
    data: Path, layout: Layout, numbers: CardNumbers, numbers_s: float = 0.0
) -> ProvisionReport:
    """A bench store at ``data``: a fresh one (``data`` has no store), or the existing bench
    store with the same layout, given the terminals it lacks.

    Error handling: :class:`BenchError` when ``data`` holds a store that is not a bench store
    or one of another layout (cards, seed, stores).
    """
    started = time.perf_counter()
    assert numbers.count == layout.cards
    if (data / "data.mdb").exists():
        return _reuse(data, layout, started, numbers_s)
    store, _generated = init_store(data, map_size_mib_for(layout.cards))
    try:
        add_product(store, bench_product())
        for s in range(layout.stores):
            add_store(store, Store(id=layout.store_id(s), name=f"Bench {s + 1}", chain=CHAIN))
        _add_terminals(store, layout, 0)
        hash_s, write_s = _load_cards(store, layout, numbers)
    finally:
        store.close()
    layout.save(data)
    return ProvisionReport(
        created=True,
        cards=layout.cards,
        terminals_added=layout.terminals,
        numbers_s=numbers_s,
        hash_s=hash_s,
        write_s=write_s,
        total_s=numbers_s + time.perf_counter() - started,
    )


def _reuse(data: Path, layout: Layout, started: float, numbers_s: float) -> ProvisionReport:
    saved = Layout.load(data)
    if saved is None:
        raise BenchError(f"{data} holds a store that is not a bench store; use a fresh --data")
    for name in ("cards", "seed", "stores", "balance_minor"):
        if getattr(saved, name) != getattr(layout, name):
            raise BenchError(
                f"the bench store at {data} was provisioned with {name} "
                f"{getattr(saved, name)}, not {getattr(layout, name)}; use those or a fresh --data"
            )
    added = 0
    if layout.terminals > saved.terminals:  # fewer: the run uses the first ones
        store = open_store(data, map_size_mib_for(layout.cards))
        try:
            added = _add_terminals(store, layout, saved.terminals)
        finally:
            store.close()
        layout.save(data)
    total_s = numbers_s + time.perf_counter() - started
    return ProvisionReport(False, layout.cards, added, numbers_s, 0.0, 0.0, total_s)


def _add_terminals(store: LedgerStore, layout: Layout, first: int) -> int:
    for t in range(first, layout.terminals):
        add_terminal(
            store, Terminal(id=layout.terminal_id(t), store_id=layout.store_of_terminal(t))
        )
    return layout.terminals - first


def _load_cards(store: LedgerStore, layout: Layout, numbers: CardNumbers) -> tuple[float, float]:
    """Every card active with its balance, moved from its store's settlement account by an
    activation posting (so that ``authsrv check`` passes); one transaction per CARDS_PER_TXN.

    Returns the seconds spent on keyed hashes and on LMDB writes.
    """
    keys = open_keys(store)
    product = bench_product()
    now_ms = time.time_ns() // 1_000_000
    expiry = _expiry(now_ms, product.expiry_months)
    balance = layout.balance_minor
    first_terminal = {
        layout.store_of_terminal(t): layout.terminal_id(t)
        for t in range(min(layout.terminals, layout.stores) - 1, -1, -1)
    }
    hash_s = write_s = 0.0
    for start in range(0, layout.cards, CARDS_PER_TXN):
        end = min(start + CARDS_PER_TXN, layout.cards)
        t0 = time.perf_counter()
        pans = [numbers.slice(i).decode("ascii") for i in range(start, end)]
        digests = [keys.pan_hash(pan) for pan in pans]
        pvvs = [keys.pvv(pan, BENCH_PIN) for pan in pans]
        t1 = time.perf_counter()
        with store.write() as led:
            for offset, (pan, digest, pvv) in enumerate(zip(pans, digests, pvvs, strict=True)):
                index = start + offset
                card_id = led.next_seq("card")
                store_id = layout.store_of_card(index)
                led.put_card(
                    Card(
                        id=card_id,
                        product=product.id,
                        state=CardState.ACTIVE,
                        first6=pan[:6],
                        last4=pan[-4:],
                        pan_len=PAN_LEN,
                        expiry=expiry,
                        hash_version=digest[0],
                        issued_ms=now_ms,
                        activated_ms=now_ms,
                        pvv=pvv,
                        sold_store=store_id,
                    ),
                    digest,
                )
                led.post(
                    Posting(
                        store_account(store_id, CURRENCY), card_account(card_id), balance, CURRENCY
                    ),
                    at_ms=now_ms,
                    op="activate",
                    card_id=card_id,
                    terminal_id=first_terminal.get(store_id, ""),
                    store_id=store_id,
                    stan="000000",
                    rrn="",
                    approval="",
                )
        write_s += time.perf_counter() - t1
        hash_s += t1 - t0
    return hash_s, write_s
