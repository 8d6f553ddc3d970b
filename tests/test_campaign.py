"""Campaign cards end to end in-process: issue at the terminal (0200 proc 92), online
activation and its lock, redeem, void, clawback, product versions, the day's net settlement,
and no activation code or card number in the store or the logs (docs/products.md).

The processor runs in-process with a clock the test moves (as in test_business_day.py);
requests are real frames. Stores S0001 (S) and S0002 (T) of chain ACME.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest

from authsrv.admin import AdminError, add_product, issue_cards, register_card, update_product
from authsrv.app import open_keys, open_store
from authsrv.campaign import (
    ActivationStatus,
    CampaignError,
    ClawbackStatus,
    activate_online,
    clawback,
    unlock_activation,
)
from authsrv.config import ConfigError, load_config
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.model import Card, CardState, card_account
from authsrv.processor import Processor
from authsrv.store import LedgerStore, check_ledger
from keys import KeyStoreError
from keys.keystore import ACTIVATION, ACTIVATION_CODE_ALPHABET, ACTIVATION_SALT_LEN
from protocol.tlv import decode_tlv
from settlement.day import DayClock, DayIndex, current_open_day
from settlement.ledger import clearing_records, write_day_files
from settlement.net import build_net_report
from settlement.reports import activity_report, summary_report
from tests.helpers import (
    InProcessTerminal,
    ManualClock,
    campaign_product,
    exchange_in_process,
    provision,
    read_pans,
    run_cli,
    scan_for,
)

OSLO = DayClock.of("04:00", "Europe/Oslo")
HOUR_MS = 3_600_000
MAP = 64 * 1024 * 1024
DAY1, DAY2 = "20261122", "20261123"
S = ("T0000001", "S0001")
T = ("T0000003", "S0002")
EUR = "978"
ISSUE = {"3": "920000"}  # 0200 proc 92: field 4 is the qualifying purchase
TRIES_MAX = 5
VALUE_EXPIRY = "20270220"  # issued on 2026-11-22 (UTC), valid 90 days
CODE = re.compile(f"[{ACTIVATION_CODE_ALPHABET}]{{8}}")


Clock = ManualClock


@dataclass
class Host(InProcessTerminal):
    store: LedgerStore
    proc: Processor
    clock: Clock
    root: Path
    data: Path
    camp: list[str]
    logs: io.StringIO
    stan: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    site: ClassVar[tuple[str, str]] = S

    def issue(self, pan: str, purchase: int, at: tuple[str, str] = S) -> dict[str, str]:
        return self.send("activate", pan, purchase, at=at, overrides=ISSUE)

    def exchange(self, fields: dict[str, str]) -> dict[str, str]:
        self.requests.append(fields)
        return exchange_in_process(self.proc, fields)

    def card(self, pan: str) -> Card:
        with self.store.read() as led:
            card = led.card_by_hashes(self.proc.keys.pan_hashes(pan))
        assert card is not None
        return card

    def activate(self, pan: str, code: str) -> ActivationStatus:
        with self.store.write() as led:
            result = activate_online(
                led, self.proc.keys, pan, code, self.clock.now_ms, TRIES_MAX, actor="api:test"
            )
        return result.status

    def cutover(self, day: str) -> None:
        self.clock.now_ms = OSLO.start_ms(day) + HOUR_MS
        self.proc.sweep()

    def reopen(self) -> None:
        """Close the store and open it again (a restart of the host)."""
        self.store.close()
        self.store = LedgerStore(self.data, map_size_bytes=MAP)
        self.proc.store = self.store


def _tags(answer: dict[str, str]) -> dict[str, str]:
    return dict(decode_tlv(answer["63"], 63))


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    logs = io.StringIO()
    configure_logging("info", logs)
    provisioned = provision(tmp_path, card_count=1)
    store = LedgerStore(provisioned.data, map_size_bytes=MAP)
    keys = open_keys(store)
    add_product(store, campaign_product())
    camp = tmp_path / "camp.csv"
    issue_cards(store, keys, "CAMP", 6, camp)
    clock = Clock(OSLO.start_ms(DAY1) + 8 * HOUR_MS)  # 11:00 UTC on 2026-11-22
    with store.write() as led:
        led.txn.drop(led.dbs.days, delete=False)
        current_open_day(led, OSLO, clock.now_ms)
    proc = Processor(
        store,
        keys,
        Metrics(),
        get_logger(),
        skew_max_s=600,
        log_requests=True,
        clock_ms=clock,
        demo_mode=True,
        day_clock=OSLO,
    )
    h = Host(store, proc, clock, tmp_path, provisioned.data, read_pans(camp), logs)
    try:
        yield h
    finally:
        h.store.close()


# -- the issue's end-to-end goal ---------------------------------------------------------------


def test_issue_activate_redeem_and_the_days_net_settlement(host: Host) -> None:
    """Issued at S for a 1000.00 purchase at 30 %: 300.00, refused with 78, activated online,
    redeemed at T; the day's net shows S owing 300.00 to the campaign account and T owed the
    redeemed amount."""
    pan = host.camp[0]
    answer = host.issue(pan, 100_000)
    assert answer["39"] == "00"
    assert answer["4"] == "000000100000"  # the purchase, echoed
    assert answer["54"] == "6001978C0000000300006002978C000000030000"
    tags = _tags(answer)
    assert tags["RT"] == "CAMPAIGN CARD LOADED 300.00 EUR, ACTIVATE ONLINE WITH CODE"
    assert tags["EX"] == VALUE_EXPIRY
    code = tags["AC"]
    assert CODE.fullmatch(code), code
    card = host.card(pan)
    assert card.state is CardState.AWAITING_ACTIVATION
    assert card.product_version == 1 and card.sold_store == "S0001"
    assert card.campaign is not None and card.campaign.value_expiry == VALUE_EXPIRY
    # A retransmission gets the first answer, with the same code, and moves nothing.
    replay = host.exchange(host.requests[-1])
    assert replay == answer
    with host.store.read() as led:
        assert led.balance(card_account(card.id)) == 30_000
        assert [t.op for t in led.journal()] == ["issue"]
    # Not spendable before the online activation.
    assert host.send("redeem", pan, 5_000, at=T)["39"] == "78"
    assert host.send("balance", pan, at=S)["39"] == "78"
    # A second issue on the same card is refused.
    assert host.issue(pan, 100_000)["39"] == "57"
    assert host.activate(pan, code.lower()[:4] + "-" + code.lower()[4:]) is (
        ActivationStatus.ACTIVATED
    )
    assert host.activate(pan, code) is ActivationStatus.ALREADY_ACTIVE
    redeem = host.send("redeem", pan, 12_000, at=T)
    assert redeem["39"] == "00"
    assert _tags(redeem) == {"RT": "BALANCE 180.00 EUR", "EX": VALUE_EXPIRY}
    host.cutover(DAY2)
    with host.store.read() as led:
        report = build_net_report(led, DAY1)
        records = list(clearing_records(led, DayIndex(led.days()), led.days()[-2]))
        assert check_ledger(led) == []
    assert [(s.store_id, s.funding, s.net_minor) for s in report.stores] == [
        ("S0001", "campaign:ACME", -30_000),  # S owes 300.00 to the campaign account
        ("S0002", "campaign:ACME", 12_000),  # T is owed 120.00 by it
    ]
    assert [(f.funding, f.net_minor) for f in report.funding] == [("campaign:ACME", 18_000)]
    assert [(r.op, r.dc, r.amount_minor, r.store_id) for r in records] == [
        ("issue", "C", 30_000, "S0001"),
        ("redeem", "D", 12_000, "S0002"),
    ]
    # Neither the code nor a card number reaches the store or the logs.
    log_text = host.logs.getvalue()
    assert '"op":"issue"' in log_text
    for needle in (code, pan):
        assert needle not in log_text
    assert scan_for([host.data], [code, *host.camp]) == []


def test_retransmitted_issue_keeps_its_code_and_the_record_holds_no_code(host: Host) -> None:
    pan = host.camp[0]
    first = host.issue(pan, 50_000)
    assert first["39"] == "00"
    code = _tags(first)["AC"]
    again = [host.exchange(host.requests[0]) for _ in range(3)]
    assert {_tags(a)["AC"] for a in again} == {code}
    with host.store.read() as led:
        record = next(iter(led.txn.cursor(db=led.dbs.dupes)))[1]
        card = led.card_by_hashes(host.proc.keys.pan_hashes(pan))
    assert code.encode() not in record
    assert card is not None and card.campaign is not None
    assert len(card.campaign.code_verifier) == 16
    assert code.encode() not in msgspec.msgpack.encode(card)
    # The salt in the record gives the code only under the activation key.
    assert record.count(b"code_salt") == 1 and ACTIVATION_SALT_LEN == 16


# -- online activation: wrong codes lock it, durably --------------------------------------------


def test_wrong_codes_lock_online_activation_across_a_restart(host: Host) -> None:
    pan, other = host.camp[0], host.camp[1]
    code = _tags(host.issue(pan, 100_000))["AC"]
    wrong = "0000000" + ("1" if code[-1] != "1" else "2")
    with host.store.write() as led:
        results = [
            activate_online(led, host.proc.keys, pan, wrong, host.clock.now_ms, TRIES_MAX)
            for _ in range(TRIES_MAX - 1)
        ]
    assert [(r.status, r.tries_left) for r in results] == [
        (ActivationStatus.WRONG_CODE, left) for left in (4, 3, 2, 1)
    ]
    # Not a code at all counts too; the fifth wrong one locks.
    assert host.activate(pan, "not-a-code!") is ActivationStatus.LOCKED
    assert host.activate(pan, code) is ActivationStatus.LOCKED
    host.reopen()
    assert host.activate(pan, code) is ActivationStatus.LOCKED
    assert host.card(pan).state is CardState.AWAITING_ACTIVATION
    assert host.send("redeem", pan, 1_000)["39"] == "78"
    # Other cards are not affected; unknown and never-issued cards say so.
    assert host.activate(other, code) is ActivationStatus.NOT_CAMPAIGN
    assert host.activate("6036290000000000", code) is ActivationStatus.UNKNOWN_CARD
    # The back office unlocks (audited); then the right code activates.
    unlocked = run_cli(
        "cards",
        "unlock-activation",
        "--data",
        str(host.data),
        "--id",
        str(host.card(pan).id),
        "--reason",
        "customer called",
    )
    assert unlocked.returncode == 0, unlocked.stderr
    assert "unlocked" in unlocked.stdout and pan not in unlocked.stdout
    assert host.activate(pan, code) is ActivationStatus.ACTIVATED
    with host.store.read() as led:
        audit = [(e.action, e.target, e.actor[:4]) for e in led.audit_entries()]
    card_target = f"card:{host.card(pan).id}"
    assert audit[-3:] == [
        ("activation_locked", card_target, "api:"),
        ("unlock_activation", card_target, "cli:"),
        ("activate_online", card_target, "api:"),
    ]
    with host.store.write() as led, pytest.raises(CampaignError, match="no online activation"):
        unlock_activation(led, host.card(other).id, "cli", "why", host.clock.now_ms)
    assert scan_for([host.data], [code, *host.camp]) == []


def test_activation_of_an_expired_value_is_refused(host: Host) -> None:
    pan = host.camp[0]
    code = _tags(host.issue(pan, 100_000))["AC"]
    host.clock.now_ms = int(datetime(2027, 2, 21, tzinfo=UTC).timestamp() * 1000)
    assert host.activate(pan, code) is ActivationStatus.EXPIRED


# -- void within the business day; after the cut-over a refund or clawback ----------------------


def test_void_within_the_day_removes_the_value_and_after_the_cutover_is_refused(
    host: Host,
) -> None:
    a, b = host.camp[0], host.camp[1]
    first = host.issue(a, 100_000)
    issue_a = host.requests[-1]
    void = host.send("reverse", a, 100_000, original=issue_a)
    assert void["39"] == "00" and void["54"].startswith("6001978C000000000000")
    card = host.card(a)
    assert card.state is CardState.ISSUED and card.campaign is None
    assert host.send("redeem", a, 1_000)["39"] == "78"
    assert host.activate(a, _tags(first)["AC"]) is ActivationStatus.NOT_CAMPAIGN
    # A second void moves nothing; the card can be issued again, with a new code.
    assert host.send("reverse", a, 100_000, original=issue_a)["39"] == "00"
    again = host.issue(a, 40_000)
    assert again["39"] == "00" and _tags(again)["AC"] != _tags(first)["AC"]
    host.issue(b, 100_000)
    issue_b = host.requests[-1]
    host.cutover(DAY2)
    late = host.send("reverse", b, 100_000, original=issue_b)
    assert late["39"] == "12"
    with host.store.read() as led:
        assert led.balance(card_account(host.card(b).id)) == 30_000
        report = build_net_report(led, DAY1)
        assert check_ledger(led) == []
    # S: -300.00 + 300.00 (the void) - 120.00 (issued again) - 300.00 (card B).
    assert [(s.store_id, s.net_minor) for s in report.stores] == [("S0001", -42_000)]


# -- clawback -----------------------------------------------------------------------------------


def test_clawback_moves_unspent_value_exactly_once_and_is_audited(host: Host) -> None:
    pan, part = host.camp[0], host.camp[1]
    code = _tags(host.issue(pan, 100_000))["AC"]
    assert host.activate(pan, code) is ActivationStatus.ACTIVATED
    assert host.send("redeem", pan, 10_000, at=T)["39"] == "00"
    host.issue(part, 100_000, at=T)
    card_id, part_id = host.card(pan).id, host.card(part).id
    host.cutover(DAY2)  # the void window is over: only the back office can take value back
    now = host.clock.now_ms
    with host.store.write() as led:
        done = clawback(led, card_id, None, "purchase returned", "api:bo", now, request_id="r1")
    assert done.status is ClawbackStatus.CLAWED_BACK
    assert (done.amount_minor, done.currency, done.card_closed) == (20_000, EUR, True)
    with host.store.write() as led:
        again = clawback(led, card_id, None, "purchase returned", "api:bo", now, request_id="r1")
        other = clawback(led, card_id, 5, "purchase returned", "api:bo", now, request_id="r1")
        empty = clawback(led, card_id, None, "purchase returned", "api:bo", now, request_id="r2")
        too_much = clawback(led, part_id, 30_001, "return", "api:bo", now, request_id="r3")
        partly = clawback(led, part_id, 5_000, "part return", "api:bo", now, request_id="r4")
        gift = clawback(led, 1, None, "wrong card", "api:bo", now, request_id="r5")
    assert (again.status, again.amount_minor, again.transfer_seq) == (
        ClawbackStatus.REPLAYED,
        20_000,
        done.transfer_seq,
    )
    assert other.status is ClawbackStatus.CONFLICT
    assert empty.status is ClawbackStatus.NOTHING_LEFT
    assert (too_much.status, too_much.available_minor) == (ClawbackStatus.EXCEEDS, 30_000)
    assert (partly.status, partly.card_closed) == (ClawbackStatus.CLAWED_BACK, False)
    assert gift.status is ClawbackStatus.NOT_CAMPAIGN
    with pytest.raises(CampaignError), host.store.write() as led:
        clawback(led, card_id, 0, "zero", "api:bo", now, request_id="r6")
    assert host.card(pan).state is CardState.CLOSED
    assert host.send("redeem", pan, 100, at=T)["39"] == "62"
    with host.store.read() as led:
        claws = [t for t in led.journal() if t.op == "clawback"]
        issue_seq = next(t.seq for t in led.journal() if t.op == "issue")
        entries = [e for e in led.audit_entries() if e.action == "clawback"]
        assert led.balance(card_account(card_id)) == 0
        assert led.balance(card_account(part_id)) == 25_000
        assert check_ledger(led) == []
    assert [(t.amount_minor, t.debit, t.credit, t.store_id) for t in claws] == [
        (20_000, card_account(card_id), "store:S0001:978", "S0001"),
        (5_000, card_account(part_id), "store:S0002:978", "S0002"),
    ]
    assert claws[0].original_seq == issue_seq
    assert [(e.actor, e.request_id, e.detail["amount_minor"]) for e in entries] == [
        ("api:bo", "r1", 20_000),
        ("api:bo", "r4", 5_000),
    ]
    assert entries[0].detail["reason"] == "purchase returned"
    # The day's settlement: S is owed the clawed value back by the campaign account; the
    # clearing file carries a reversal record of the issue.
    host.cutover("20261124")
    with host.store.read() as led:
        report = build_net_report(led, DAY2)
        records = list(clearing_records(led, DayIndex(led.days()), led.days()[-2]))
        activity = activity_report(led, DAY2, DAY2)
        summary = summary_report(led, DAY1, DAY1)
    assert [(s.store_id, s.funding, s.net_minor) for s in report.stores] == [
        ("S0001", "campaign:ACME", 20_000),
        ("S0002", "campaign:ACME", 5_000),
    ]
    assert [(r.op, r.dc, r.amount_minor, r.is_reversal) for r in records] == [
        ("issue", "D", 20_000, True),
        ("issue", "D", 5_000, True),
    ]
    original = records[0].original
    assert original is not None and (original.record_id, original.business_day) == (
        issue_seq,
        DAY1,
    )
    assert [(r[1], r[6], r[7]) for r in activity.rows] == [
        ("S0001", 1, 20_000),
        ("S0002", 1, 5_000),
    ]  # load reversals
    assert summary.rows[0][2] == 2  # cards sold on day 1: the two issues
    files = write_day_files(host.store, host.root / "out", "H1", DAY2)
    assert files.records == 2
    assert scan_for([host.root / "out"], host.camp) == []


# -- products as data: versions ---------------------------------------------------------------


def test_a_product_change_writes_version_2_and_cards_keep_their_version(host: Host) -> None:
    old_card, new_card = host.camp[0], host.camp[1]
    code_old = _tags(host.issue(old_card, 100_000))["AC"]
    changed = update_product(
        host.store,
        "CAMP",
        {"share_bp": 5000, "expiry_days": 10, "redeem_stores": ("S0001",)},
        now_ms=host.clock.now_ms,
    )
    assert changed.version == 2
    with host.store.read() as led:
        versions = led.product_versions("CAMP")
        current = led.product("CAMP")
    assert [(v.version, v.share_bp, v.expiry_days) for v in versions] == [
        (1, 3000, 90),
        (2, 5000, 10),
    ]
    assert current == versions[1]
    new = host.issue(new_card, 100_000)
    assert new["54"].startswith("6001978C000000050000")  # 50 % under version 2
    assert _tags(new)["EX"] == "20261202"  # 10 days under version 2
    assert (host.card(old_card).product_version, host.card(new_card).product_version) == (1, 2)
    assert host.activate(old_card, code_old) is ActivationStatus.ACTIVATED
    assert host.activate(new_card, _tags(new)["AC"]) is ActivationStatus.ACTIVATED
    # Version 1 accepts the card anywhere in the chain, version 2 only at S0001.
    assert host.send("redeem", old_card, 1_000, at=T)["39"] == "00"
    assert host.send("redeem", new_card, 1_000, at=T)["39"] == "58"
    assert host.send("redeem", new_card, 1_000, at=S)["39"] == "00"
    assert host.card(old_card).campaign.value_expiry == VALUE_EXPIRY  # type: ignore[union-attr]
    with pytest.raises(AdminError, match="chain cannot change"):
        update_product(host.store, "CAMP", {"chain": "OTHER"})
    with pytest.raises(AdminError, match="nothing to change"):
        update_product(host.store, "CAMP", {"share_bp": 5000})
    with pytest.raises(AdminError, match="--share-bp must be 1 to 10000"):
        update_product(host.store, "CAMP", {"share_bp": 10_001})
    with host.store.read() as led:
        actions = [(e.action, e.target) for e in led.audit_entries()]
    assert ("product_change", "product:CAMP") in actions


# -- production: random numbers, no registration ----------------------------------------------


def test_campaign_cards_are_drawn_at_random_within_the_range(host: Host) -> None:
    out = host.root / "many.csv"
    issue_cards(host.store, host.proc.keys, "CAMP", 40, out)
    bodies = [int(p[6:-1]) for p in read_pans(out)]
    assert all(str(p).startswith("603629") for p in read_pans(out))
    assert bodies != sorted(bodies)
    steps = sorted(b - a for a, b in zip(sorted(bodies), sorted(bodies)[1:], strict=False))
    assert steps[len(steps) // 2] > 1_000  # sequential numbers would be 1 apart
    with pytest.raises(AdminError, match="drawn at random"):
        register_card(host.store, host.proc.keys, "CAMP", "6036290000000000", "2912", 0)


# -- configuration, keys, command line --------------------------------------------------------


def test_activation_tries_setting_is_validated() -> None:
    assert load_config(None, {}).campaign.activation_tries_max == 5
    env = {"AUTHSRV_CAMPAIGN_ACTIVATION_TRIES_MAX": "3"}
    assert load_config(None, env).campaign.activation_tries_max == 3
    with pytest.raises(ConfigError, match=r"campaign.activation_tries_max is 0"):
        load_config(None, {}, {"campaign.activation_tries_max": 0})


def test_a_store_without_the_activation_key_gets_it_when_opened_writable(tmp_path: Path) -> None:
    provisioned = provision(tmp_path, card_count=1)
    store = open_store(provisioned.data, 64)
    with store.write() as led:
        assert led.delete_key_block(ACTIVATION)
    store.close()
    readonly = open_store(provisioned.data, 64, readonly=True)
    try:
        with pytest.raises(KeyStoreError, match="no activation/1 key"):
            open_keys(readonly).activation_code(bytes(16), 1)
    finally:
        readonly.close()
    store = open_store(provisioned.data, 64)
    try:
        keys = open_keys(store)
        assert CODE.fullmatch(keys.activation_code(bytes(16), 1))
        with store.read() as led:
            assert ACTIVATION in led.key_blocks()
        assert open_keys(store).activation_code(bytes(16), 1) == keys.activation_code(bytes(16), 1)
    finally:
        store.close()


def test_products_cli_add_change_versions_and_one_line_errors(tmp_path: Path) -> None:
    provisioned = provision(tmp_path, card_count=1)
    d = ["--data", str(provisioned.data)]
    add = run_cli(
        "products", "add", *d, "--id", "CAMP30", "--chain", "ACME", "--prefix", "603627",
        "--kind", "campaign", "--share-bp", "3000", "--min-purchase", "100.00",
        "--max-value", "500.00", "--expiry-days", "90", "--issue-chains", "ACME",
        "--redeem-chains", "ACME",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert "added product CAMP30 (campaign, 978, range 603627) as version 1" in add.stdout
    change = run_cli("products", "change", *d, "--id", "CAMP30", "--share-bp", "2500")
    assert change.returncode == 0, change.stderr
    assert "product CAMP30 is now version 2 (share_bp)" in change.stdout
    versions = run_cli("products", "versions", *d, "--id", "CAMP30")
    assert versions.returncode == 0, versions.stderr
    lines = versions.stdout.splitlines()
    assert len(lines) == 2
    assert "v1" in lines[0] and "30.00 %" in lines[0] and "v2" in lines[1]
    assert "25.00 %" in lines[1] and "100.00 EUR" in lines[1]
    listing = run_cli("products", "list", *d)
    assert "CAMP30" in listing.stdout and "v2" in listing.stdout
    for args, expected in [
        (["--share-bp", "3000", "--max-value", "500.00"], "give exactly one of --expiry-days"),
        (["--share-bp", "0", "--max-value", "5.00", "--expiry-days", "9"], "--share-bp must"),
        (["--share-bp", "10", "--expiry-days", "9"], "--max-value must be above zero"),
        (
            ["--share-bp", "10", "--max-value", "5.00", "--expiry-date", "20270230"],
            "--expiry-date must be a date YYYYMMDD",
        ),
        (
            ["--share-bp", "10", "--max-value", "5.00", "--expiry-days", "9", "--issue-stores",
             "NOPE"],
            "--issue-stores: store NOPE does not exist",
        ),
    ]:  # fmt: skip
        bad = run_cli(
            "products", "add", *d, "--id", "X", "--chain", "ACME", "--prefix", "603626",
            "--kind", "campaign", *args,
        )  # fmt: skip
        assert bad.returncode == 2, (args, bad.stdout)
        assert expected in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    gift = run_cli(
        "products", "add", *d, "--id", "G2", "--chain", "ACME", "--prefix", "603625",
        "--share-bp", "10",
    )  # fmt: skip
    assert gift.returncode == 2 and "--share-bp is for campaign products" in gift.stderr
    fixed = run_cli("products", "change", *d, "--id", "CAMP30")
    assert fixed.returncode == 2 and "give at least one setting" in fixed.stderr
