"""Terminal security end to end, over real TCP against an in-process host without demo mode:
MAC profiles with key change and grace, DUKPT (AES and TDES) with KSN counters, PINs with
tries, a tampered byte that moves nothing, card-number hash versions and a KEK rotation.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from authsrv import keyadmin
from authsrv.admin import add_product, add_terminal, card_view, issue_cards
from authsrv.app import kek_path, open_keys, open_store
from authsrv.model import CardState, SecurityProfile, Terminal
from keys import dukpt, load_kek, mac
from keys.keystore import KeyStoreError
from simulators.security import TerminalSecurity, TerminalSecurityError
from simulators.terminal import TerminalConnection, build_request, decode_response
from tests.helpers import (
    InProcessHost,
    Provisioned,
    gift_product,
    provision,
    read_pans,
    scan_for,
    serve_in_process,
)

NOW_MS = 1_795_343_400_000  # 2026-11-22 07:10 UTC, inside the cards' validity
SECURE = {"security.demo_mode": False, "security.key_grace_s": 60}
AES_KSN = bytes.fromhex("123456789012345600000000")  # initial key ID 1234567890123456
TDES_KSN = bytes.fromhex("FFFF9876543210E00000")


class Clock:
    def __init__(self) -> None:
        self.now_ms = NOW_MS

    def __call__(self) -> int:
        return self.now_ms


class Setup(msgspec.Struct, kw_only=True):
    prov: Provisioned
    tmk_aes: bytes
    tmk_tdes: bytes
    aes_ik: bytes
    tdes_ipek: bytes
    pin_cards: list[str]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """T0000001 mac-aes, T0000002 mac-tdes (S0001); T0000003 dukpt-aes, T0000004 dukpt-tdes
    (S0002); product PINGIFT whose debits need a PIN."""
    prov = provision(tmp_path)
    store = open_store(prov.data, 64)
    try:
        kek = load_kek(kek_path(prov.data))
        tmk_aes, tmk_tdes = secrets.token_bytes(16), secrets.token_bytes(16)
        bdk_aes, bdk_tdes = secrets.token_bytes(16), secrets.token_bytes(16)
        keyadmin.add_named_key(store, kek, "tmk/T0000001", tmk_aes, "A", exportable=False)
        keyadmin.add_named_key(store, kek, "tmk/T0000002", tmk_tdes, "T", exportable=False)
        keyadmin.add_named_key(store, kek, "bdk/aes", bdk_aes, "A", exportable=False)
        keyadmin.add_named_key(store, kek, "bdk/tdes", bdk_tdes, "T", exportable=False)
        add_terminal(store, Terminal(id="T0000004", store_id="S0002"))
        set_ = keyadmin.set_terminal_security
        set_(store, "T0000001", SecurityProfile.MAC_AES, tmk="tmk/T0000001")
        set_(store, "T0000002", SecurityProfile.MAC_TDES, tmk="tmk/T0000002")
        set_(
            store,
            "T0000003",
            SecurityProfile.DUKPT_AES,
            bdk="bdk/aes",
            ksn_prefix=AES_KSN[:8].hex(),
        )
        set_(
            store, "T0000004", SecurityProfile.DUKPT_TDES, bdk="bdk/tdes", ksn_prefix=TDES_KSN.hex()
        )
        add_product(store, gift_product(id="PINGIFT", prefix="603629", pin_required=True))
        pin_file = tmp_path / "pin-cards.csv"
        keys = open_keys(store)
        issue_cards(store, keys, "PINGIFT", 3, pin_file)
        for pan in read_pans(pin_file):
            keyadmin.set_card_pin(store, keys, pan, "4321")
    finally:
        store.close()
    yield Setup(
        prov=prov,
        tmk_aes=tmk_aes,
        tmk_tdes=tmk_tdes,
        aes_ik=dukpt.aes_initial_key(bdk_aes, AES_KSN[:8]),
        tdes_ipek=dukpt.tdes_ipek(bdk_tdes, TDES_KSN),
        pin_cards=read_pans(pin_file),
    )


def _req(
    op: str, terminal: str, store: str, pan: str | None = None, amount: int | None = None
) -> dict[str, str]:
    from datetime import UTC, datetime

    return build_request(
        op,
        terminal=terminal,
        store=store,
        pan=pan,
        amount_minor=amount,
        now=datetime.fromtimestamp(NOW_MS / 1000, tz=UTC),
    )


def _snapshot(host: InProcessHost) -> dict[str, dict[bytes, bytes]]:
    """Every record of every database, read through the running host's own environment."""
    env = host.host.store.env
    snap: dict[str, dict[bytes, bytes]] = {}
    # One read transaction: open_db without one takes LMDB's write lock while holding the GIL,
    # which deadlocks against the host's writer thread inside a write transaction.
    with env.begin() as txn:
        names = [k for k, _ in txn.cursor()]
        for name in names:
            db = env.open_db(name, txn=txn, create=False)
            snap[name.decode()] = dict(txn.cursor(db=db))
    return snap


def _balance(data: Path, pan: str) -> int:
    store = open_store(data, 64, readonly=True)
    try:
        return card_view(store, open_keys(store), pan=pan).balance_minor
    finally:
        store.close()


async def _key_change(
    conn: TerminalConnection, sec: TerminalSecurity, terminal: str
) -> dict[str, str]:
    resp = await conn.exchange(_req("echo", terminal, "S0001") | {"70": "101"}, security=sec)
    sec.accept_key_change(resp)
    return resp


# -- MAC profiles --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("profile", "terminal"), [("mac-aes", "T0000001"), ("mac-tdes", "T0000002")]
)
async def test_mac_terminal_redeems_and_a_changed_byte_moves_nothing(
    setup: Setup, profile: str, terminal: str
) -> None:
    prov = setup.prov
    tmk = setup.tmk_aes if profile == "mac-aes" else setup.tmk_tdes
    sec = TerminalSecurity(profile, tmk=tmk)
    pan = prov.cards[0]
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        # Before any key change only the key change itself is served (unMACed).
        resp = await conn.exchange(_req("activate", terminal, "S0001", pan, 10_000))
        assert resp["39"] == "63"
        answer = await _key_change(conn, sec, terminal)
        assert "128" not in answer  # no working key yet to MAC it with (70 -> field 128)
        resp = await conn.exchange(_req("activate", terminal, "S0001", pan, 10_000), security=sec)
        assert resp["39"] == "00"
        assert "64" in resp  # checked by exchange(): the answer's MAC verifies
        resp = await conn.exchange(_req("redeem", terminal, "S0001", pan, 2_500), security=sec)
        assert (resp["39"], resp["4"]) == ("00", "000000002500")

        # The same redeem with one byte changed (the amount) and its MAC kept: 63.
        sealed = sec.seal(_req("redeem", terminal, "S0001", pan, 1_000))
        tampered = sealed.payload.replace(b"000000001000", b"000000009000", 1)
        assert tampered != sealed.payload
        before = _snapshot(host)
        await conn.send_raw(tampered)
        resp = decode_response(await conn.receive_raw())
        assert resp["39"] == "63"
        assert "64" not in resp and "128" not in resp  # a forged request gets no MAC
        assert _snapshot(host) == before
        # The untouched message still goes through: nothing of it was remembered.
        await conn.send_raw(sealed.payload)
        raw = await conn.receive_raw()
        resp = decode_response(raw)
        sec.check_answer(sealed, raw, resp)
        assert resp["39"] == "00"
    assert _balance(prov.data, pan) == 10_000 - 2_500 - 1_000
    failures = host.host.metrics.security_failures.labels("mac_mismatch")._value.get()
    assert failures == 1


async def test_key_change_grace_period(setup: Setup) -> None:
    prov = setup.prov
    clock = Clock()
    old = TerminalSecurity("mac-aes", tmk=setup.tmk_aes)
    pan = prov.cards[1]
    async with serve_in_process(prov.data, clock_ms=clock, overrides=SECURE) as host:
        async with await host.connect() as conn:
            await _key_change(conn, old, "T0000001")
            resp = await conn.exchange(
                _req("activate", "T0000001", "S0001", pan, 5_000), security=old
            )
            assert resp["39"] == "00"
            new = TerminalSecurity("mac-aes", tmk=setup.tmk_aes)
            new._mac_key, new._pin_key = old._mac_key, old._pin_key
            resp = await _key_change(conn, new, "T0000001")  # MACed with the old keys
            assert resp["39"] == "00" and "128" in resp
            assert new._mac_key != old._mac_key
            for sec in (old, new):  # within the grace period both are accepted
                resp = await conn.exchange(_req("balance", "T0000001", "S0001", pan), security=sec)
                assert resp["39"] == "00"
            clock.now_ms += 61_000
            resp = await conn.exchange(_req("balance", "T0000001", "S0001", pan), security=new)
            assert resp["39"] == "00"
            resp = await conn.exchange(_req("balance", "T0000001", "S0001", pan), security=old)
            assert resp["39"] == "63"  # past the grace period
        async with await host.connect() as conn:
            sealed = old.seal(_req("balance", "T0000001", "S0001", pan))
            await conn.send_raw(sealed.payload)
            assert decode_response(await conn.receive_raw())["39"] == "63"


# -- DUKPT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("profile", "terminal"), [("dukpt-aes", "T0000003"), ("dukpt-tdes", "T0000004")]
)
async def test_dukpt_terminal_with_pin_and_ksn_counter(
    setup: Setup, profile: str, terminal: str
) -> None:
    prov = setup.prov
    aes = profile == "dukpt-aes"
    sec = TerminalSecurity(
        profile,
        initial_key=setup.aes_ik if aes else setup.tdes_ipek,
        ksn=AES_KSN if aes else TDES_KSN,
    )
    pan = setup.pin_cards[0]
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        resp = await conn.exchange(_req("activate", terminal, "S0002", pan, 10_000), security=sec)
        assert resp["39"] == "00"
        resp = await conn.exchange(_req("redeem", terminal, "S0002", pan, 1_000), security=sec)
        assert resp["39"] == "55"  # the product requires a PIN
        resp = await conn.exchange(
            _req("redeem", terminal, "S0002", pan, 1_000), security=sec, pin="4321"
        )
        assert resp["39"] == "00"
        # A retransmission (same bytes, same KSN) is answered from the record ...
        sealed = sec.seal(_req("redeem", terminal, "S0002", pan, 700), pin="4321")
        for _ in range(2):
            await conn.send_raw(sealed.payload)
            raw = await conn.receive_raw()
            resp = decode_response(raw)
            sec.check_answer(sealed, raw, resp)
            assert resp["39"] == "00"
        # ... but a new request under a counter already used is refused and moves nothing.
        stale = TerminalSecurity(
            profile,
            initial_key=setup.aes_ik if aes else setup.tdes_ipek,
            ksn=AES_KSN if aes else TDES_KSN,
        )
        before = _snapshot(host)
        resp = await conn.exchange(
            _req("redeem", terminal, "S0002", pan, 100), security=stale, pin="4321"
        )
        assert resp["39"] == "63"
        assert _snapshot(host) == before
        # Another device's KSN under the same BDK cannot speak for this terminal.
        other_ksn = (
            (AES_KSN[:7] + b"\x99" + AES_KSN[8:]) if aes else bytes.fromhex("FFFF9876543211E00000")
        )
        other = TerminalSecurity(
            profile, initial_key=setup.aes_ik if aes else setup.tdes_ipek, ksn=other_ksn
        )
        resp = await conn.exchange(_req("balance", terminal, "S0002", pan), security=other)
        assert resp["39"] == "63"
    assert _balance(prov.data, pan) == 10_000 - 1_000 - 700
    metrics = host.host.metrics.security_failures
    assert metrics.labels("ksn_stale")._value.get() == 1
    assert metrics.labels("ksn_device")._value.get() == 1


async def test_format_1_pin_block_is_refused_like_a_wrong_pin(setup: Setup) -> None:
    prov = setup.prov
    sec = TerminalSecurity("dukpt-tdes", initial_key=setup.tdes_ipek, ksn=TDES_KSN)
    pan = setup.pin_cards[1]
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        resp = await conn.exchange(_req("activate", "T0000004", "S0002", pan, 5_000), security=sec)
        assert resp["39"] == "00"
        # Format 1 carries the right PIN but no PAN binding: never accepted online.
        fields = _req("redeem", "T0000004", "S0002", pan, 100)
        probe = sec.seal(fields)  # advances the counter; its KSN tells the PIN key
        ksn = sec._ksn
        pin_key = dukpt.tdes_pin_key(dukpt.tdes_transaction_key(setup.tdes_ipek, ksn))
        from keys.pinblock import _tdes

        clear = bytes.fromhex("144321" + "5A3C9E1B7D")  # 1 | len 4 | PIN | fill
        assert len(clear) == 8
        block = _tdes(pin_key).encryptor().update(clear).hex().upper()
        sec._ksn = ksn[:-1] + bytes([ksn[-1] - 1])  # seal again under the same counter
        sealed = sec.seal(fields | {"52": block})
        del probe
        raw_payload = sealed.payload
        await conn.send_raw(raw_payload)
        resp = decode_response(await conn.receive_raw())
        assert resp["39"] == "55"
    store = open_store(prov.data, 64, readonly=True)
    try:
        view = card_view(store, open_keys(store), pan=pan)
    finally:
        store.close()
    assert view.card.pin_tries == 1
    assert view.balance_minor == 5_000


async def test_pin_tries_lock_the_card_across_restarts(setup: Setup) -> None:
    prov = setup.prov
    sec = TerminalSecurity("dukpt-aes", initial_key=setup.aes_ik, ksn=AES_KSN)
    pan = setup.pin_cards[2]
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        assert (
            await conn.exchange(_req("activate", "T0000003", "S0002", pan, 5_000), security=sec)
        )["39"] == "00"
        codes = []
        for _ in range(3):
            resp = await conn.exchange(
                _req("redeem", "T0000003", "S0002", pan, 100), security=sec, pin="0000"
            )
            codes.append(resp["39"])
        assert codes == ["55", "55", "75"]
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        resp = await conn.exchange(
            _req("redeem", "T0000003", "S0002", pan, 100), security=sec, pin="4321"
        )
        assert resp["39"] == "75"  # the right PIN no longer helps
    store = open_store(prov.data, 64)
    try:
        keyadmin.set_card_pin(store, open_keys(store), pan, "2468")
    finally:
        store.close()
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        resp = await conn.exchange(
            _req("redeem", "T0000003", "S0002", pan, 100), security=sec, pin="2468"
        )
        assert resp["39"] == "00"
    assert _balance(prov.data, pan) == 4_900


async def test_terminal_without_profile_is_refused_outside_demo_mode(setup: Setup) -> None:
    prov = setup.prov
    store = open_store(prov.data, 64)
    try:
        add_terminal(store, Terminal(id="T0000005", store_id="S0001"))
    finally:
        store.close()
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        before = _snapshot(host)
        resp = await conn.exchange(_req("activate", "T0000005", "S0001", prov.cards[2], 1_000))
        assert resp["39"] == "63"
        assert _snapshot(host) == before
    async with (
        serve_in_process(
            prov.data, clock_ms=Clock(), overrides={"security.demo_mode": True}
        ) as host,
        await host.connect() as conn,
    ):
        resp = await conn.exchange(_req("activate", "T0000005", "S0001", prov.cards[2], 1_000))
        assert resp["39"] == "00"


# -- keys at rest ---------------------------------------------------------------------------------
async def test_pan_hash_rotation_rekeys_cards_on_use(setup: Setup) -> None:
    prov = setup.prov
    store = open_store(prov.data, 64)
    try:
        before = keyadmin.pan_hash_versions(store)
        assert before == {1: len(prov.all_pans()) + len(setup.pin_cards)}
        assert keyadmin.rotate_pan_hash(store, load_kek(kek_path(prov.data))) == 2
        with pytest.raises(KeyStoreError, match="still indexes cards"):
            keyadmin.retire_pan_hash(store, 1)
    finally:
        store.close()
    sec = TerminalSecurity("dukpt-aes", initial_key=setup.aes_ik, ksn=AES_KSN)
    pan = prov.cards[3]
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        for op, amount in (("activate", 3_000), ("redeem", 500)):
            resp = await conn.exchange(_req(op, "T0000003", "S0002", pan, amount), security=sec)
            assert resp["39"] == "00"
    store = open_store(prov.data, 64)
    try:
        versions = keyadmin.pan_hash_versions(store)
        assert versions == {1: before[1] - 1, 2: 1}
        card = card_view(store, open_keys(store), pan=pan).card
        assert card.hash_version == 2
        assert card.state is CardState.ACTIVE
    finally:
        store.close()
    assert _balance(prov.data, pan) == 2_500


async def test_kek_rotation_keeps_every_key(setup: Setup, tmp_path: Path) -> None:
    prov = setup.prov
    sec = TerminalSecurity("mac-aes", tmk=setup.tmk_aes)
    pan = prov.cards[4]
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        await _key_change(conn, sec, "T0000001")
    store = open_store(prov.data, 64)
    try:
        kek = load_kek(kek_path(prov.data))
        named, working = keyadmin.list_keys(store, kek)
        result = keyadmin.rotate_kek(store, kek_path(prov.data), secrets.token_bytes(32))
        new_kek = load_kek(kek_path(prov.data))
        assert new_kek != kek
        named2, working2 = keyadmin.list_keys(store, new_kek)
        with pytest.raises(KeyStoreError):
            keyadmin.list_keys(store, kek)  # the old KEK opens nothing any more
    finally:
        store.close()
    assert [(k.name, k.check_value) for k in named] == [(k.name, k.check_value) for k in named2]
    assert working == working2 and len(working) == 1
    assert set(result.check_values) >= {k.name for k in named}
    # The terminal's working keys still verify after the rotation.
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE) as host,
        await host.connect() as conn,
    ):
        resp = await conn.exchange(_req("activate", "T0000001", "S0001", pan, 2_000), security=sec)
        assert resp["39"] == "00"


async def test_no_clear_key_pin_block_or_card_number_at_rest(setup: Setup, tmp_path: Path) -> None:
    prov = setup.prov
    log = io.StringIO()
    mac_sec = TerminalSecurity("mac-tdes", tmk=setup.tmk_tdes)
    dk_sec = TerminalSecurity("dukpt-aes", initial_key=setup.aes_ik, ksn=AES_KSN)
    pin_blocks: list[str] = []
    async with (
        serve_in_process(prov.data, clock_ms=Clock(), overrides=SECURE, log_stream=log) as host,
        await host.connect() as conn,
    ):
        await _key_change(conn, mac_sec, "T0000002")
        for i, pan in enumerate(setup.pin_cards[:2]):
            resp = await conn.exchange(
                _req("activate", "T0000003", "S0002", pan, 5_000), security=dk_sec
            )
            assert resp["39"] == "00"
            sealed = dk_sec.seal(_req("redeem", "T0000003", "S0002", pan, 100 + i), pin="4321")
            pin_blocks.append(decode_response(sealed.payload).get("48", ""))
            await conn.send_raw(sealed.payload)
            assert decode_response(await conn.receive_raw())["39"] == "00"
        resp = await conn.exchange(
            _req("activate", "T0000002", "S0001", prov.cards[5], 5_000),
            security=mac_sec,
            pin="9999",
        )
        assert resp["39"] == "55"  # a PIN sent is checked; this card has none
    secrets_ = [
        setup.tmk_aes.hex(),
        setup.tmk_tdes.hex(),
        setup.aes_ik.hex(),
        setup.tdes_ipek.hex(),
        mac_sec._mac_key.hex(),
        mac_sec._pin_key.hex(),
        *(b[b.index("PB") + 5 :][:32] for b in pin_blocks),
    ]
    secrets_ = [s.upper() for s in secrets_] + [s.lower() for s in secrets_]
    logs = tmp_path / "host.log"
    logs.write_text(log.getvalue())
    found = scan_for(
        [prov.data / "data.mdb", logs],
        [*prov.all_pans(), *setup.pin_cards, *secrets_],
    )
    assert found == []
    # Clear keys as bytes, too (LMDB holds binary values).
    blob = (prov.data / "data.mdb").read_bytes() + log.getvalue().encode()
    for key in (setup.tmk_aes, setup.tmk_tdes, setup.aes_ik, setup.tdes_ipek, mac_sec._mac_key):
        assert key not in blob
    assert "security_violation" not in log.getvalue()


def test_mac_helpers_are_the_vectors_functions() -> None:
    """The terminal side and the host use the same primitives (proved by tests/test_vectors)."""
    key = bytes(range(16))
    assert mac.retail_mac(key, b"x" * 8) == mac.iso9797_mac(key, b"x" * 8, algorithm=3, padding=1)
    with pytest.raises(TerminalSecurityError):
        TerminalSecurity("dukpt-aes")
