"""The LMDB ledger (DESIGN §4), card data at rest (§6) and the key store, on real stores in
``tmp_path``."""

from __future__ import annotations

import csv
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from psec import tr31

from authsrv.admin import AdminError, issue_cards, register_card
from authsrv.app import open_keys, open_store
from authsrv.model import (
    Account,
    CardState,
    ClosedBatch,
    Hold,
    HoldState,
    Posting,
    Transfer,
    card_account,
    store_account,
)
from authsrv.store import Ledger, LedgerStore, LockTimes, StoreError, StoreFull, check_ledger
from keys import KeyStore, KeyStoreError, check_value, load_kek, new_key_blocks
from protocol.cards import luhn_check_digit
from tests.helpers import Provisioned, gift_product, provision, scan_for, store_snapshot

MAP_MIB = 64  # what tests.helpers.provision creates
MIB = 1024 * 1024
EUR = "978"
AT_MS = 1_795_000_000_000
S1 = store_account("S0001", EUR)
S2 = store_account("S0002", EUR)


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


@pytest.fixture
def prov(tmp_path: Path) -> Provisioned:
    return provision(tmp_path, card_count=3)


@pytest.fixture
def store(prov: Provisioned) -> Iterator[LedgerStore]:
    s = open_store(prov.data, MAP_MIB)
    try:
        yield s
    finally:
        s.close()


def post(led: Ledger, posting: Posting, op: str, card_id: int = 1, stan: str = "000001") -> None:
    led.post(
        posting,
        at_ms=AT_MS,
        op=op,
        card_id=card_id,
        terminal_id="T0000001",
        store_id="S0001",
        stan=stan,
        rrn="632910000001",
        approval="000001",
    )


def sell_and_redeem(store: LedgerStore) -> None:
    """Card 1 sold at S0001 for 100.00, 25.00 redeemed at S0002; card 2 sold for 10.00."""
    with store.write() as led:
        post(led, Posting(S1, card_account(1), 10_000, EUR), "activate")
        post(led, Posting(card_account(1), S2, 2_500, EUR), "redeem", stan="000002")
        post(led, Posting(S1, card_account(2), 1_000, EUR), "activate", card_id=2, stan="000003")


# -- check_ledger --------------------------------------------------------------------------


def test_fresh_store_checks_clean(store: LedgerStore) -> None:
    with store.read() as led:
        assert check_ledger(led) == []
        assert list(led.journal()) == []


def test_postings_keep_the_ledger_balanced(store: LedgerStore) -> None:
    sell_and_redeem(store)
    with store.read() as led:
        assert check_ledger(led) == []
        assert led.balance(card_account(1)) == 7_500
        assert led.balance(card_account(2)) == 1_000
        assert led.balance(S1) == -11_000
        assert led.balance(S2) == 2_500
        assert [(t.seq, t.op, t.amount_minor) for t in led.journal()] == [
            (1, "activate", 10_000),
            (2, "redeem", 2_500),
            (3, "activate", 1_000),
        ]
        assert [t.seq for t in led.card_history(1, 50)] == [1, 2]
        assert [t.seq for t in led.card_history(1, 1)] == [2]


def test_records_read_again_in_a_transaction_are_the_ones_it_wrote(store: LedgerStore) -> None:
    """The ledger keeps the accounts, open batches and held totals it has read for the rest
    of its transaction: every read after a write sees the write, inside it and after it."""
    with store.write() as led:
        assert led.balance(card_account(1)) == 0  # read (absent) before it is first written
        assert led.open_batch("T0000001", EUR) is None
        assert led.held(1) == 0
        post(led, Posting(S1, card_account(1), 10_000, EUR), "activate")
        post(led, Posting(card_account(1), S2, 2_500, EUR), "redeem", stan="000002")
        assert led.balance(card_account(1)) == 7_500
        assert led.balance(S1) == -10_000
        acct = led.account(card_account(1))
        assert acct is not None and acct.last_seq == 2
        led.add_to_batch("T0000001", EUR, "debits", 2_500, AT_MS)
        led.add_to_batch("T0000001", EUR, "debits", 500, AT_MS)
        batch = led.open_batch("T0000001", EUR)
        assert batch is not None and batch.totals.debits_minor == 3_000
        totals = batch.totals
        led.close_batch(
            ClosedBatch(
                seq=1,
                terminal_id="T0000001",
                store_id="S0001",
                currency=EUR,
                batch_number="000001",
                rc="00",
                opened_ms=AT_MS,
                closed_ms=AT_MS,
                stan="000003",
                host=totals,
                terminal=totals,
                terminal_net_minor=totals.net_minor,
                difference={},
            )
        )
        assert led.open_batch("T0000001", EUR) is None
        led.add_to_batch("T0000001", EUR, "credits", 100, AT_MS)
        hold = Hold(
            id=1,
            card_id=1,
            amount_minor=700,
            placed_ms=AT_MS,
            expires_ms=AT_MS + 1,
            state=HoldState.OPEN,
            original_key=b"k",
        )
        led.place_hold(hold)
        assert led.held(1) == 700
        led.close_hold(hold, HoldState.EXPIRED)
        assert led.held(1) == 0
        led.place_hold(msgspec.structs.replace(hold, id=2, amount_minor=300))
    with store.read() as led:
        assert led.balance(card_account(1)) == 7_500
        assert led.held(1) == 300
        batch = led.open_batch("T0000001", EUR)
        assert batch is not None and batch.totals.credits_minor == 100
        assert batch.totals.debits_minor == 0
        assert check_ledger(led) == []


def test_account_chains_give_each_accounts_transfers_without_an_index(
    store: LedgerStore,
) -> None:
    sell_and_redeem(store)
    with store.write() as led:
        for n in range(4, 10):  # card 1 and card 2 alternate, through both stores
            card = 1 + n % 2
            post(led, Posting(card_account(card), S2, 100, EUR), "redeem", card, f"{n:06d}")
    with store.read() as led:
        assert check_ledger(led) == []
        for key in (card_account(1), card_account(2), S1, S2):
            moved = [t.seq for t in led.journal() if key in (t.debit, t.credit)]
            assert [t.seq for t in led.account_transfers(key)] == moved[::-1], key
        assert [t.seq for t in led.card_history(1, 50)] == [1, 2, 4, 6, 8]
        assert [t.seq for t in led.card_history(1, 2)] == [6, 8]
        assert [t.seq for t in led.card_first_transfers(1, 2)] == [1, 2]
        assert [t.seq for t in led.card_first_transfers(2, 50)] == [3, 5, 7, 9]
        assert list(led.txn.cursor(db=led.dbs.card_journal)) == []  # nothing indexed


def test_a_store_from_before_account_chains_keeps_its_card_histories(
    store: LedgerStore,
) -> None:
    """Transfers 1-3 as a release before account chains wrote them: no links, accounts without
    a head, each card's transfers in card_journal; the store's first open since then marked
    where the chains begin."""
    with store.write() as led:
        for seq, (debit, credit, amount, card) in enumerate(
            [
                (S1, card_account(1), 10_000, 1),
                (card_account(1), S2, 2_500, 1),
                (S1, card_account(2), 1_000, 2),
            ],
            start=1,
        ):
            old = Transfer(
                seq=seq,
                at_ms=AT_MS,
                op="redeem",
                debit=debit,
                credit=credit,
                amount_minor=amount,
                unit=EUR,
                card_id=card,
                terminal_id="T0000001",
                store_id="S0001",
                stan=f"{seq:06d}",
                rrn="",
                approval="",
            )
            led.txn.put(_u64(seq), msgspec.msgpack.encode(old), db=led.dbs.journal)
            led.txn.put(_u64(card) + _u64(seq), b"", db=led.dbs.card_journal)
        for key, balance in (
            (S1, -11_000),
            (S2, 2_500),
            (card_account(1), 7_500),
            (card_account(2), 1_000),
        ):
            led.txn.put(
                key.encode(), msgspec.msgpack.encode(Account(EUR, balance)), db=led.dbs.accounts
            )
        led.txn.put(b"seq:transfer", _u64(3), db=led.dbs.meta)
        led.put_meta("account_chains_from", _u64(4))
    with store.write() as led:
        post(led, Posting(card_account(1), S2, 500, EUR), "redeem", 1, "000004")
        post(led, Posting(card_account(1), S1, 500, EUR), "redeem", 1, "000005")
    with store.read() as led:
        assert check_ledger(led) == []
        assert [t.seq for t in led.card_history(1, 50)] == [1, 2, 4, 5]
        assert [t.seq for t in led.card_history(1, 3)] == [2, 4, 5]
        assert [t.seq for t in led.card_first_transfers(1, 3)] == [1, 2, 4]
        assert [t.seq for t in led.card_history(2, 50)] == [3]
        fourth, fifth = led.transfer(4), led.transfer(5)
        assert fourth is not None and fifth is not None
        assert fourth.credit_prev == 0  # S2's transfer 2 is from before the chains
        assert fifth.debit_prev == 4


def test_a_broken_account_chain_is_detected(store: LedgerStore) -> None:
    sell_and_redeem(store)
    with store.write() as led:
        t = led.transfer(2)
        assert t is not None and t.debit_prev == 1
        broken = msgspec.structs.replace(t, debit_prev=0)
        led.txn.put(_u64(2), msgspec.msgpack.encode(broken), db=led.dbs.journal)
    with store.read() as led:
        assert check_ledger(led) == [f"transfer 2 links {card_account(1)} to 0, not 1"]


def test_a_changed_balance_is_detected(store: LedgerStore) -> None:
    sell_and_redeem(store)
    with store.write() as led:
        key = card_account(1)
        changed = Account(EUR, 7_501, last_seq=2)
        led.txn.put(key.encode(), msgspec.msgpack.encode(changed), db=led.dbs.accounts)
    with store.read() as led:
        assert check_ledger(led) == [
            "account card:000000000001:60 balance 7501 != journal 7500",
            "unit 978 does not balance: sum of balances is 1",
        ]


def test_a_journal_gap_is_detected(store: LedgerStore) -> None:
    """Transfer 3 moved to sequence 4: every balance still matches; the gap is wrong, and the
    accounts it moved point at where it was."""
    sell_and_redeem(store)
    with store.write() as led:
        raw = led.txn.pop(_u64(3), db=led.dbs.journal)
        moved = msgspec.structs.replace(msgspec.msgpack.decode(raw, type=Transfer), seq=4)
        led.txn.put(_u64(4), msgspec.msgpack.encode(moved), db=led.dbs.journal)
    with store.read() as led:
        assert check_ledger(led) == [
            "journal gap after transfer 2",
            f"account {card_account(2)} chain starts at 3, not 4",
            f"account {S1} chain starts at 3, not 4",
        ]


def test_a_failed_write_transaction_leaves_nothing(prov: Provisioned) -> None:
    before = store_snapshot(prov.data)
    s = open_store(prov.data, MAP_MIB)
    try:
        with pytest.raises(RuntimeError, match="half way"), s.write() as led:
            post(led, Posting(S1, card_account(1), 10_000, EUR), "activate")
            led.put_product(gift_product(id="NEW"))
            led.next_seq("card")
            raise RuntimeError("half way")
        with s.read() as led:
            assert list(led.journal()) == []
            assert led.product("NEW") is None
            assert led.account(card_account(1)) is None
    finally:
        s.close()
    assert store_snapshot(prov.data) == before


def test_a_write_reports_its_wait_for_the_lock_and_its_hold(store: LedgerStore) -> None:
    """A transaction that starts while another thread holds the write lock waits for its
    commit; the times are filled in after its own commit, and not after an abort."""
    holding, hold_s = threading.Event(), 0.15
    first = LockTimes()

    def hold_the_lock() -> None:
        with store.write(first) as led:
            led.next_seq("card")
            holding.set()
            time.sleep(hold_s)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert holding.wait(5)
    second = LockTimes()
    with store.write(second) as led:
        led.next_seq("card")
    holder.join()
    assert first.held_s >= hold_s and first.wait_s < hold_s
    assert hold_s / 2 < second.wait_s <= first.held_s + 0.05
    assert 0 < second.held_s < hold_s
    aborted = LockTimes()
    with pytest.raises(RuntimeError), store.write(aborted):
        raise RuntimeError("aborted")
    assert aborted == LockTimes()


# -- card data at rest (DESIGN §6) -----------------------------------------------------------


def test_cards_are_found_by_keyed_hash_and_no_pan_is_stored(
    prov: Provisioned, store: LedgerStore
) -> None:
    keys = open_keys(store)
    with store.read() as led:
        for pan in prov.all_pans():
            card = led.card_by_hashes(keys.pan_hashes(pan))
            assert card is not None
            assert (card.first6, card.last4, card.pan_len) == (pan[:6], pan[-4:], len(pan))
            assert card.masked == pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
            assert card.state is CardState.ISSUED
        unknown = _valid("603628999999999")
        assert unknown not in prov.all_pans()
        assert led.card_by_hashes(keys.pan_hashes(unknown)) is None
    assert (prov.data / "data.mdb").stat().st_size > 0
    assert scan_for([prov.data / "data.mdb"], prov.all_pans()) == []
    assert scan_for([prov.data], prov.all_pans()) == []


def _card_count(store: LedgerStore) -> int:
    with store.read() as led:
        return sum(1 for _ in led.cards())


def test_issue_cards_writes_a_0600_file_once(store: LedgerStore, tmp_path: Path) -> None:
    keys = open_keys(store)
    out = tmp_path / "batch.csv"
    before = _card_count(store)
    ids = issue_cards(store, keys, "GIFT", 5, out, now_ms=AT_MS)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["card_id"]) for r in rows] == ids
    assert len(ids) == 5
    assert _card_count(store) == before + 5
    assert {r["expiry"] for r in rows} == {"2911"}  # 2026-11 plus the product's 36 months
    with store.read() as led:
        for r in rows:
            assert led.card_by_hashes(keys.pan_hashes(r["pan"])) is not None


def test_issue_cards_refuses_an_existing_file(store: LedgerStore, tmp_path: Path) -> None:
    keys = open_keys(store)
    out = tmp_path / "taken.csv"
    out.write_text("keep me\n")
    before = _card_count(store)
    with pytest.raises(AdminError, match="exists; card files are written once"):
        issue_cards(store, keys, "GIFT", 1, out)
    assert out.read_text() == "keep me\n"
    assert _card_count(store) == before


@pytest.mark.parametrize(
    ("product", "count", "expiry", "message"),
    [
        ("NOPE", 1, None, "product NOPE does not exist; add it with `products add`"),
        ("GIFT", 0, None, "--count must be between 1 and 1000000"),
        ("GIFT", 1_000_001, None, "--count must be between 1 and 1000000"),
        ("GIFT", 1, "2913", "--expiry must be YYMM, e.g. 2912"),
        ("GIFT", 1, "291", "--expiry must be YYMM, e.g. 2912"),
    ],
)
def test_issue_cards_failures_leave_no_file_and_no_card(
    store: LedgerStore,
    tmp_path: Path,
    product: str,
    count: int,
    expiry: str | None,
    message: str,
) -> None:
    keys = open_keys(store)
    out = tmp_path / "never.csv"
    before = _card_count(store)
    with pytest.raises(AdminError) as info:
        issue_cards(store, keys, product, count, out, expiry=expiry)
    assert str(info.value) == message
    assert not out.exists()
    assert _card_count(store) == before
    with store.read() as led:
        assert check_ledger(led) == []


def _valid(body: str) -> str:
    return body + luhn_check_digit(body)


@pytest.mark.parametrize(
    ("pan", "product", "expiry", "message"),
    [
        (None, "GIFT", "2912", "card number is already registered"),
        (_valid("123456000000001"), "GIFT", "2912", "card number is not in the product's range"),
        (_valid("60362800000001"), "GIFT", "2912", "card number is not in the product's range"),
        (_valid("6036280000000001"), "GIFT", "2912", "card number is not in the product's range"),
        (
            _valid("603628000000001")[:-1] + str((int(_valid("603628000000001")[-1]) + 1) % 10),
            "GIFT",
            "2912",
            "card number has a bad check digit",
        ),
        (_valid("603628000000001"), "NOPE", "2912", "product NOPE does not exist"),
        (_valid("603628000000001"), "GIFT", "2913", "expiry"),
    ],
    ids=[
        "duplicate",
        "other-range",
        "too-short",
        "too-long",
        "bad-luhn",
        "unknown-product",
        "bad-expiry-month",
    ],
)
def test_register_card_refuses(
    prov: Provisioned,
    store: LedgerStore,
    pan: str | None,
    product: str,
    expiry: str,
    message: str,
) -> None:
    """A card with expiry month 13 would make every later request of it raise in the engine
    (calendar), so it is refused like ``issue_cards`` refuses it."""
    keys = open_keys(store)
    before = _card_count(store)
    with pytest.raises(AdminError) as info:
        register_card(store, keys, product, pan or prov.cards[0], expiry, AT_MS)
    assert message in str(info.value)
    assert _card_count(store) == before


def test_register_card(prov: Provisioned, store: LedgerStore) -> None:
    keys = open_keys(store)
    pan = _valid("603628000000001")
    assert pan not in prov.all_pans()
    card_id = register_card(store, keys, "GIFT", pan, "2912", AT_MS)
    with store.read() as led:
        card = led.card_by_hashes(keys.pan_hashes(pan))
    assert card is not None
    assert (card.id, card.state, card.expiry, card.masked) == (
        card_id,
        CardState.ISSUED,
        "2912",
        "603628******" + pan[-4:],
    )
    assert scan_for([prov.data], [pan]) == []


# -- backup and a full map ---------------------------------------------------------------------


def test_backup_opens_and_checks_with_the_same_journal(store: LedgerStore, tmp_path: Path) -> None:
    sell_and_redeem(store)
    target = tmp_path / "backup"
    store.backup(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    copy = LedgerStore(target, map_size_bytes=MAP_MIB * MIB, readonly=True)
    try:
        with store.read() as led, copy.read() as bled:
            assert check_ledger(bled) == []
            assert list(bled.journal()) == list(led.journal())
            assert dict(bled.accounts()) == dict(led.accounts())
            assert bled.key_blocks() == led.key_blocks()
            assert list(bled.cards()) == list(led.cards())
    finally:
        copy.close()
    with pytest.raises(StoreError, match="is not empty"):
        store.backup(target)


def test_store_full_aborts_the_batch_and_leaves_a_consistent_store(tmp_path: Path) -> None:
    kek = bytes(range(32))
    tiny = LedgerStore.create(tmp_path / "tiny", map_size_bytes=MIB, key_blocks=new_key_blocks(kek))
    batch = 64
    committed = 0
    try:
        with pytest.raises(
            StoreFull, match=re.escape("is full; raise store.map_size_mib and restart")
        ):
            for _ in range(10_000):  # bound: 1 MiB holds far fewer transfers than this
                with tiny.write() as led:
                    for i in range(batch):
                        post(led, Posting(S1, card_account(1), 1 + i, EUR), "load")
                committed += batch
        assert committed > 0
        with tiny.read() as led:
            assert check_ledger(led) == []
            assert sum(1 for _ in led.journal()) == committed
            assert led.balance(card_account(1)) == committed // batch * sum(range(1, batch + 1))
    finally:
        tiny.close()
    reopened = LedgerStore(tmp_path / "tiny", map_size_bytes=MIB, readonly=True)
    try:
        with reopened.read() as led:
            assert check_ledger(led) == []
            assert sum(1 for _ in led.journal()) == committed
    finally:
        reopened.close()


# -- keys ----------------------------------------------------------------------------------------

KEK = bytes(range(32))


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (KEK.hex(), 0o640, "is readable by others; chmod 600 it"),
        (KEK.hex(), 0o604, "is readable by others; chmod 600 it"),
        (KEK.hex(), 0o620, "is readable by others; chmod 600 it"),
        (KEK[:16].hex(), 0o600, "must hold 32 bytes as hex"),
        (KEK.hex() + "00", 0o600, "must hold 32 bytes as hex"),
        ("zz" * 32, 0o600, "is not hex"),
        (None, 0o600, "not found; run `authsrv keys init`"),
    ],
    ids=["group-read", "other-read", "group-write", "16-bytes", "33-bytes", "not-hex", "missing"],
)
def test_load_kek_refuses(tmp_path: Path, content: str | None, mode: int, message: str) -> None:
    path = tmp_path / "master.kek"
    if content is not None:
        path.write_text(content + "\n")
        os.chmod(path, mode)
    with pytest.raises(KeyStoreError) as info:
        load_kek(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert KEK.hex() not in str(info.value)


def test_load_kek(tmp_path: Path) -> None:
    path = tmp_path / "master.kek"
    path.write_text(KEK.hex() + "\n")
    os.chmod(path, 0o600)
    assert load_kek(path) == KEK


def _hmac_block(key: bytes) -> str:
    block: str = tr31.wrap(KEK, "D0000M7HC00N0000", key)
    return block


WRONG_USAGE = tr31.wrap(KEK, "D0000K0AB00N0000", bytes(32))


PIN_VERIFY_BLOCK = _hmac_block(bytes(range(200, 232)))


@pytest.mark.parametrize(
    ("kek", "blocks", "message"),
    [
        (
            KEK,
            {
                "pan-hash/1": WRONG_USAGE,
                "dup-content/1": _hmac_block(bytes(32)),
                "pin-verify/1": PIN_VERIFY_BLOCK,
            },
            "key pan-hash/1 has usage K0, expected M7",
        ),
        (
            KEK,
            {
                "pan-hash/1": _hmac_block(bytes(32)),
                "dup-content/1": WRONG_USAGE,
                "pin-verify/1": PIN_VERIFY_BLOCK,
            },
            "key dup-content/1 has usage K0, expected M7",
        ),
        (
            bytes(32),
            new_key_blocks(KEK),
            "key pan-hash/1 does not unwrap (wrong wrapping key or damaged)",
        ),
        (
            KEK,
            {
                "pan-hash/1": _hmac_block(bytes(16)),
                "dup-content/1": _hmac_block(bytes(32)),
                "pin-verify/1": PIN_VERIFY_BLOCK,
            },
            "key pan-hash/1 has the wrong length",
        ),
        (
            KEK,
            {"dup-content/1": _hmac_block(bytes(32)), "pin-verify/1": PIN_VERIFY_BLOCK},
            "no pan-hash key in the store",
        ),
        (
            KEK,
            {"pan-hash/1": _hmac_block(bytes(32)), "pin-verify/1": PIN_VERIFY_BLOCK},
            "no dup-content key in the store",
        ),
        (
            KEK,
            {"pan-hash/1": _hmac_block(bytes(32)), "dup-content/1": _hmac_block(bytes(32))},
            "no pin-verify key in the store",
        ),
    ],
    ids=[
        "wrong-usage",
        "wrong-usage-content",
        "wrong-kek",
        "short-key",
        "no-pan",
        "no-dup",
        "no-pin-verify",
    ],
)
def test_keystore_refuses(kek: bytes, blocks: dict[str, str], message: str) -> None:
    with pytest.raises(KeyStoreError) as info:
        KeyStore(kek, blocks)
    assert str(info.value) == message


def test_key_check_values_are_stable() -> None:
    pan_key, dup_key = bytes(32), bytes(range(100, 132))
    # HMAC-SHA256(32 zero bytes, 16 zero bytes) = 853c7403..., computed independently (openssl)
    assert check_value(pan_key) == "853C74"
    first = KeyStore(
        KEK,
        {
            "pan-hash/1": _hmac_block(pan_key),
            "dup-content/1": _hmac_block(dup_key),
            "pin-verify/1": PIN_VERIFY_BLOCK,
        },
    )
    again = KeyStore(
        KEK,
        {
            "pan-hash/1": _hmac_block(pan_key),
            "dup-content/1": _hmac_block(dup_key),
            "pin-verify/1": PIN_VERIFY_BLOCK,
        },
    )
    assert _hmac_block(pan_key) != _hmac_block(pan_key)  # wrapping is randomised ...
    assert first.check_values() == again.check_values()  # ... the check value is not
    assert first.check_values() == {
        "pan-hash/1": "853C74",
        "dup-content/1": check_value(dup_key),
        "pin-verify/1": check_value(bytes(range(200, 232))),
    }
    assert check_value(dup_key) != check_value(pan_key)
    assert first.pan_hash("6036281234567897") == again.pan_hash("6036281234567897")
    assert "853C74" not in repr(first)
    assert pan_key.hex() not in repr(first)
