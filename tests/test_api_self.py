"""Self-service and card holders: card detail by number and mobile or by token (one 404 for
every way of not matching), rate limits per client and per card, holder data export and
deletion (GDPR), and no card number anywhere but the issue files."""

from __future__ import annotations

import json

import pytest

from api.holders import HolderError, issue_card_token, normalize_mobile, put_holder
from api.ratelimit import TokenBuckets
from authsrv.app import open_store
from tests.api_helpers import Api, FakeClock, api_alone, api_in_host, iso
from tests.helpers import Provisioned, run_cli, scan_for

MOBILE = "+4791234567"
OPEN_LIMITS = {"api.self_client_burst": 1000, "api.self_card_burst": 1000}


def _card_id(api: Api, pan: str) -> int:
    with api.store.read() as led:
        card = led.card_by_hashes(api.ctx.keys.pan_hashes(pan))
    assert card is not None
    return card.id


def _holder(api: Api, pan: str, mobile: str = MOBILE) -> str:
    """A holder record for the card of ``pan``; its card token."""
    card_id = _card_id(api, pan)
    with api.store.write() as led:
        put_holder(led, card_id, mobile=mobile, email="kari@example.com", now_ms=1)
        return issue_card_token(led, card_id, now_ms=2)


async def test_holder_sees_the_card_with_number_and_mobile_or_token(
    provisioned: Provisioned,
) -> None:
    async with api_in_host(provisioned.data, OPEN_LIMITS) as api:
        c, ss = api.client, api.tokens.selfservice
        pan, other = provisioned.cards[0], provisioned.cards[1]
        assert (await iso(api, "activate", pan, 7_500))["39"] == "00"
        assert (await iso(api, "redeem", pan, 2_500))["39"] == "00"
        token = _holder(api, pan)
        _holder(api, other, "+4799999999")

        r = await c.call("getHolderCard", ss, json={"card_number": pan, "mobile": "+47 912 34 567"})
        assert r.status_code == 200, r.text
        card = r.json()
        assert card["card"] == pan[:6] + "******" + pan[-4:]
        assert (card["state"], card["balance_minor"], card["available_minor"]) == (
            "active",
            5_000,
            5_000,
        )
        assert [(h["op"], h["amount_minor"]) for h in card["history"]] == [
            ("activate", 7_500),
            ("redeem", -2_500),
        ]
        assert pan not in r.text
        by_token = await c.call("getHolderCard", ss, json={"token": token})
        assert by_token.json() == card

        misses = [
            {"card_number": pan, "mobile": "+4799999999"},  # another holder's mobile
            {"card_number": provisioned.cards[2], "mobile": MOBILE},  # a card without holder
            {"card_number": "6036280000000000", "mobile": MOBILE},  # no such card
            {"token": token[:-1] + ("A" if token[-1] != "A" else "B")},  # a wrong token
            {"token": "ct_1_" + "x" * 43},
            {"token": "not a token"},
        ]
        answers = []
        for body in misses:
            r = await c.call("getHolderCard", ss, json=body)
            answers.append((r.status_code, r.content))
        assert {a for a in answers} == {answers[0]}, "every miss answers the same"
        assert answers[0][0] == 404

        for body, field in (
            ({"card_number": pan}, "mobile"),
            ({"mobile": MOBILE}, "card_number"),
            ({"token": token, "mobile": MOBILE}, "token"),
            ({"card_number": "60362800000000AB", "mobile": MOBILE}, "card_number"),
            ({"card_number": pan, "mobile": MOBILE, "pin": "1234"}, "pin"),
        ):
            r = await c.call("getHolderCard", ss, json=body)
            assert (r.status_code, r.json()["error"]["field"]) == (422, field), body

        # A new token retires the old one.
        with api.store.write() as led:
            issue_card_token(led, _card_id(api, pan), now_ms=3)
        assert (await c.call("getHolderCard", ss, json={"token": token})).status_code == 404

        # No card number in the store, the logs or any answer.
        pans = provisioned.all_pans()
        assert scan_for([provisioned.data], pans) == []
        assert not any(p in api.log_lines() for p in pans)
        assert not any(p.encode() in body for p in pans for body in c.bodies)


async def test_rate_limits_per_client_and_per_card_then_recovery(
    provisioned: Provisioned,
) -> None:
    clock = FakeClock()
    limits = {
        "api.self_client_burst": 3,
        "api.self_client_per_min": 60,  # one a second
        "api.self_card_burst": 2,
        "api.self_card_per_min": 6,  # one every ten seconds
    }
    async with api_alone(provisioned.data, limits, clock=clock) as api:
        c, ss = api.client, api.tokens.selfservice
        one, two = provisioned.cards[0], provisioned.cards[1]

        async def ask(pan: str) -> tuple[int, str | None]:
            r = await c.call("getHolderCard", ss, json={"card_number": pan, "mobile": MOBILE})
            return r.status_code, r.headers.get("retry-after")

        # Per card: the third try of one number within ten seconds.
        assert await ask(one) == (404, None)
        assert await ask(one) == (404, None)
        assert await ask(one) == (429, "10")
        # Per client: three a burst, then one a second (the 429 above took one too).
        assert await ask(two) == (429, "1")
        clock.now += 1
        assert await ask(two) == (404, None)
        assert await ask(two) == (429, "1")
        # Malformed requests count against the client as well.
        clock.now += 1
        r = await c.call("getHolderCard", ss, content=b"{")
        assert r.status_code == 400
        assert await ask(two) == (429, "1")
        # Recovery: after ten seconds both buckets have tokens again.
        clock.now += 10  # the card bucket has 1.2 tokens now
        assert await ask(one) == (404, None)
        assert await ask(one) == (429, "8")
        text = api.log_lines()
        assert '"status":429' in text and one not in text
        limited = api.ctx.metrics.registry.get_sample_value(
            "authsrv_api_rate_limited_total", {"bucket": "card"}
        )
        assert limited == 2.0


def test_token_buckets_refill_prune_and_fail_closed_when_full() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(burst=2, per_min=60, buckets_max=2, clock=clock)
    assert buckets.take(b"a") is None
    assert buckets.take(b"a") is None
    refused = buckets.take(b"a")
    assert refused is not None and (refused.retry_after_s, refused.full) == (1, False)
    assert buckets.take(b"b") is None
    full = buckets.take(b"c")  # a third key: no bucket has refilled
    assert full is not None and full.full
    clock.now += 2  # both refilled: dropped to make room
    assert buckets.take(b"c") is None
    assert len(buckets) == 1


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("+4791234567", "+4791234567"),
        ("+47 912 34 567", "+4791234567"),
        ("0047-912-34-567", "+4791234567"),
        ("(+47) 91234567", "+4791234567"),
        ("91234567", None),
        ("+0791234567", None),
        ("+47912345678901234", None),
        ("", None),
    ],
)
def test_mobile_numbers_are_normalised_to_e164(typed: str, normal: str | None) -> None:
    assert normalize_mobile(typed) == normal


def test_holders_export_and_delete_from_the_command_line(provisioned: Provisioned) -> None:
    store = open_store(provisioned.data, 64)
    from authsrv.app import open_keys

    keys = open_keys(store)
    try:
        with store.read() as led:
            ids = [led.card_by_hashes(keys.pan_hashes(p)) for p in provisioned.cards[:3]]
        assert all(ids)
        with store.write() as led:
            for card in ids[:2]:
                assert card is not None
                put_holder(led, card.id, mobile=MOBILE, consents=("marketing_sms",), now_ms=5)
            assert ids[2] is not None
            put_holder(led, ids[2].id, mobile="+4690000000", now_ms=5)
            with pytest.raises(HolderError, match="mobile"):
                put_holder(led, ids[2].id, mobile="12", now_ms=5)
    finally:
        store.close()
    data = str(provisioned.data)
    out = run_cli("holders", "export", "--data", data, "--mobile", "+47 91 23 45 67")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert [r["mobile"] for r in records] == [MOBILE, MOBILE]
    assert records[0]["consents"] == ["marketing_sms"]
    assert records[0]["card"].startswith("603628******")
    one = run_cli(
        "holders", "export", "--data", data, "--card", "@3", "--cards", str(provisioned.cards_file)
    )
    assert [r["mobile"] for r in json.loads(one.stdout)] == ["+4690000000"]
    gone = run_cli("holders", "delete", "--data", data, "--mobile", MOBILE, "--reason", "GDPR 1")
    assert gone.returncode == 0, gone.stderr
    assert "deleted 2 holder record(s)" in gone.stdout
    again = run_cli("holders", "export", "--data", data, "--mobile", MOBILE)
    assert json.loads(again.stdout) == []
    bad = run_cli("holders", "export", "--data", data, "--mobile", "12")
    assert bad.returncode == 2 and "mobile" in bad.stderr
    store = open_store(provisioned.data, 64, readonly=True)
    try:
        with store.read() as led:
            entries = [e for e in led.audit_entries() if e.action == "holder_delete"]
    finally:
        store.close()
    assert len(entries) == 2
    assert all(e.detail == {"reason": "GDPR 1"} and e.actor.startswith("cli:") for e in entries)
    outputs = out.stdout + one.stdout + gone.stdout
    assert not any(p in outputs for p in provisioned.all_pans())
    assert "+479" not in repr([e.detail for e in entries])
