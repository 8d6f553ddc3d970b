"""Online activation, clawback and web-shop loads over HTTP, in-process (the host with the API,
real TCP and HTTP on 127.0.0.1): what each answers, what it records, what it keeps exactly
once, and that bad data is refused before the card or the code is looked at."""

from __future__ import annotations

from pathlib import Path

import msgspec

from authsrv.admin import add_product, issue_cards
from authsrv.app import open_keys, open_store
from authsrv.model import Card, card_account
from protocol.cards import luhn_check_digit
from protocol.tlv import decode_tlv
from simulators.terminal import build_request
from tests.api_helpers import Api, api_alone, api_in_host, iso
from tests.helpers import Provisioned, campaign_product, read_pans, scan_for

MOBILE = "+4791234567"
OPEN_LIMITS = {"api.self_client_burst": 1000, "api.self_card_burst": 1000}


def _with_campaign(provisioned: Provisioned, root: Path, count: int = 3) -> list[str]:
    store = open_store(provisioned.data, 64)
    try:
        add_product(store, campaign_product())
        issue_cards(store, open_keys(store), "CAMP", count, root / "camp.csv")
    finally:
        store.close()
    return read_pans(root / "camp.csv")


async def _issue(api: Api, pan: str, purchase_minor: int = 100_000) -> str:
    """A campaign issue at S0001 over TCP (0200 proc 92); the receipt's activation code."""
    fields = build_request(
        "activate",
        terminal="T0000001",
        store="S0001",
        pan=pan,
        amount_minor=purchase_minor,
        overrides={"3": "920000"},
    )
    async with await api.terminal() as conn:
        answer = await conn.exchange(fields)
    assert answer["39"] == "00", answer
    return dict(decode_tlv(answer["63"], 63))["AC"]


def _card(api: Api, pan: str) -> Card:
    with api.store.read() as led:
        card = led.card_by_hashes(api.ctx.keys.pan_hashes(pan))
    assert card is not None
    return card


def _activation(pan: str, code: str, **more: object) -> dict[str, object]:
    return {
        "card_number": pan,
        "activation_code": code,
        "mobile": MOBILE,
        "consents": {"terms": True},
        **more,
    }


async def test_activation_records_the_holder_and_bad_data_is_refused_first(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    camp = _with_campaign(provisioned, tmp_path)
    async with api_in_host(provisioned.data, OPEN_LIMITS) as api:
        c, ss = api.client, api.tokens.selfservice
        pan = camp[0]
        code = await _issue(api, pan)
        wrong = ("1" if code[0] != "1" else "2") + code[1:]
        # Bad data answers 422 naming the field, whatever the code: nothing is counted.
        for body, field in (
            (_activation(pan, wrong, consents={"terms": False}), "consents"),
            (_activation(pan, code, consents={"terms": False}), "consents"),
            (_activation(pan, wrong, mobile="12"), "mobile"),
            (_activation(pan, code, mobile="12"), "mobile"),
            (_activation(pan, code, email="not an address"), "email"),
            (_activation(pan, code, interests=["Sport!"]), "interests"),
            (_activation(pan, code, interests=[f"i{n}" for n in range(17)]), "interests"),
            (_activation(pan, code, consents={"terms": True, "sms": True}), "consents"),
            (_activation("60362900000000AB", code), "card_number"),
            (_activation(pan, code, pin="1234"), "pin"),
        ):
            r = await c.call("activateCard", ss, json=body)
            assert (r.status_code, r.json()["error"]["field"]) == (422, field), (body, r.text)
        issue = _card(api, pan).campaign
        assert issue is not None and (issue.wrong_codes, issue.locked) == (0, False)
        r = await c.call("activateCard", ss, json=_activation(pan, wrong))
        assert r.status_code == 422 and r.json()["error"]["tries_left"] == 4
        assert r.json()["error"]["field"] == "activation_code"

        body = _activation(
            pan,
            code,
            email="kari@example.com",
            consents={"terms": True, "marketing": True},
            interests=["sport", "books", "sport"],
        )
        r = await c.call("activateCard", ss, json=body)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        card = _card(api, pan)
        with api.store.read() as led:
            holder = led.holder(card.id)
            entries = [(e.action, e.actor) for e in led.audit_entries()]
        assert holder is not None
        assert (holder.mobile, holder.email) == (MOBILE, "kari@example.com")
        assert (holder.consents, holder.interests) == (("marketing", "terms"), ("books", "sport"))
        assert holder.token_hash and token.encode() not in msgspec.msgpack.encode(holder)
        assert ("activate_online", f"api:{_key_id(token=ss)}:test selfservice") in entries
        # The token shows the card; the number and mobile too.
        r = await c.call("getHolderCard", ss, json={"token": token})
        assert (r.status_code, r.json()["balance_minor"]) == (200, 30_000)
        r = await c.call("getHolderCard", ss, json={"card_number": pan, "mobile": MOBILE})
        assert r.status_code == 200
        # Activated: the right or a wrong code again is the same 409, and counts nothing.
        again = [await c.call("activateCard", ss, json=_activation(pan, x)) for x in (code, wrong)]
        assert {(a.status_code, a.content) for a in again} == {(409, again[0].content)}
        # Not a campaign card, or not issued yet: the same 404 as an unknown number.
        unknown = "603629000000000" + luhn_check_digit("603629000000000")
        misses = [
            await c.call("activateCard", ss, json=_activation(n, code))
            for n in (provisioned.cards[0], camp[1], unknown)
        ]
        assert {(m.status_code, m.content) for m in misses} == {(404, misses[0].content)}
        texts = api.log_lines() + "".join(b.decode() for b in c.bodies)
        assert pan not in texts and code not in texts
        assert '"event":"online_activation"' in api.log_lines()
        assert scan_for([provisioned.data], [*camp, code, token]) == []


def _key_id(*, token: str) -> str:
    return token.split("_")[1]


async def test_clawback_over_http_exactly_once_and_audited(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    camp = _with_campaign(provisioned, tmp_path)
    async with api_in_host(provisioned.data, OPEN_LIMITS) as api:
        c, bo = api.client, api.tokens.backoffice
        pan = camp[0]
        await _issue(api, pan)
        card_id = _card(api, pan).id
        path = {"card_id": card_id}
        part = {"amount_minor": 10_000, "reason": "part returned", "request_id": "ret-1"}
        r = await c.call("clawBackCard", bo, path=path, json=part)
        assert r.status_code == 200, r.text
        first = r.json()
        assert first == {
            "card_id": card_id,
            "card": pan[:6] + "******" + pan[-4:],
            "state": "awaiting_activation",
            "request_id": "ret-1",
            "amount_minor": 10_000,
            "currency": "978",
            "store_id": "S0001",
            "transfer_seq": first["transfer_seq"],
            "audit_seq": first["audit_seq"],
            "card_closed": False,
            "replayed": False,
        }
        r = await c.call("clawBackCard", bo, path=path, json=part)
        assert r.json() == {**first, "replayed": True}
        r = await c.call("clawBackCard", bo, path=path, json={**part, "amount_minor": 1})
        assert (r.status_code, r.json()["error"]["field"]) == (409, "request_id")
        r = await c.call(
            "clawBackCard",
            bo,
            path=path,
            json={**part, "request_id": "ret-2", "amount_minor": 20_001},
        )
        assert r.status_code == 409 and "20000" in r.json()["error"]["message"]
        everything = {"amount_minor": "all", "reason": "all returned", "request_id": "ret-3"}
        r = await c.call("clawBackCard", bo, path=path, json=everything)
        assert r.status_code == 200, r.text
        assert (r.json()["amount_minor"], r.json()["card_closed"], r.json()["state"]) == (
            20_000,
            True,
            "closed",
        )
        r = await c.call("clawBackCard", bo, path=path, json={**everything, "request_id": "r4"})
        assert r.status_code == 409  # nothing left
        r = await c.call(
            "clawBackCard", bo, path=path, json={**everything, "reason": "line\nbreak"}
        )
        assert (r.status_code, r.json()["error"]["field"]) == (422, "reason")
        with api.store.read() as led:
            claws = [t for t in led.journal() if t.op == "clawback"]
            audited = [e for e in led.audit_entries() if e.action == "clawback"]
            assert led.balance(card_account(card_id)) == 0
        assert [(t.amount_minor, t.credit) for t in claws] == [
            (10_000, "store:S0001:978"),
            (20_000, "store:S0001:978"),
        ]
        assert [(e.request_id, e.actor.split(":")[0]) for e in audited] == [
            ("ret-1", "api"),
            ("ret-3", "api"),
        ]


async def test_shop_loads_go_through_the_engine_exactly_once(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    camp = _with_campaign(provisioned, tmp_path)
    async with api_in_host(provisioned.data) as api:
        c, shop = api.client, api.tokens.store  # a key of S0001
        gift = provisioned.cards[0]
        sale = {
            "payment_ref": "order-1",
            "terminal_id": "T0000002",
            "operation": "activate",
            "card_number": gift,
            "amount_minor": 2_500,
            "currency": "978",
        }
        r = await c.call("createShopLoad", shop, json=sale)
        assert r.status_code == 200, r.text
        sold = r.json()
        assert (sold["store_id"], sold["terminal_id"], sold["expiry"]) == (
            "S0001",
            "T0000002",
            _card(api, gift).expiry,
        )
        assert len(sold["rrn"]) == 12 and len(sold["approval_code"]) == 6
        with api.store.read() as led:
            moved = list(led.journal())
        assert [(t.op, t.amount_minor, t.store_id, t.terminal_id) for t in moved] == [
            ("activate", 2_500, "S0001", "T0000002")
        ]
        # Declines answer 422 with the response code, and are kept: the same body replays
        # them; a corrected body needs another payment_ref.
        declined = []
        for ref, changes in (
            ("order-2", {"operation": "load", "amount_minor": 60_000}),  # over load_max
            ("order-3", {"card_number": camp[0]}),  # a campaign card is not sold so
            ("order-4", {"operation": "load", "currency": "752"}),  # not the product's
            ("order-5", {"card_number": provisioned.cards[1], "operation": "load"}),
        ):
            r = await c.call("createShopLoad", shop, json={**sale, "payment_ref": ref, **changes})
            assert (r.status_code, r.json()["error"]["code"]) == (422, "declined"), r.text
            declined.append(r.json()["error"]["rc"])
            again = await c.call(
                "createShopLoad", shop, json={**sale, "payment_ref": ref, **changes}
            )
            assert (again.status_code, again.json()) == (422, r.json())
        assert declined == ["61", "57", "12", "78"], declined
        # Another store's terminal, an inactive one: 409, nothing kept (it may be sent again).
        other = {**sale, "payment_ref": "order-6", "operation": "load", "terminal_id": "T0000003"}
        r = await c.call("createShopLoad", shop, json=other)
        assert (r.status_code, r.json()["error"]["field"]) == (409, "terminal_id")
        r = await c.call(
            "updateTerminal", shop, path={"terminal_id": "T0000002"}, json={"active": False}
        )
        assert r.status_code == 200
        r = await c.call("createShopLoad", shop, json={**other, "terminal_id": "T0000002"})
        assert r.status_code == 409 and "inactive" in r.json()["error"]["message"]
        # The replay answers from the permanent record even after the duplicate record is
        # pruned (store.dup_window_s), and still moves nothing.
        with api.store.write() as led:
            assert led.txn.delete(b"shop|S0001|order-1", db=led.dbs.dupes)
        r = await c.call("createShopLoad", shop, json=sale)
        assert r.status_code == 200 and r.json() == {**sold, "replayed": True}
        r = await c.call("createShopLoad", shop, json={**sale, "terminal_id": "T0000001"})
        assert (r.status_code, r.json()["error"]["field"]) == (409, "payment_ref")
        with api.store.read() as led:
            assert len(list(led.journal())) == 1
            assert led.balance(card_account(_card(api, gift).id)) == 2_500
            actions = [(e.action, e.request_id) for e in led.audit_entries()]
        assert ("shop_load", "order-1") in actions
        assert (await iso(api, "balance", gift))["54"].endswith("000000002500")
        # The same payment_ref at another store (chain OTHER) is another payment: decided
        # afresh (the product is not accepted there: 58), not a 409.
        elsewhere = {**sale, "terminal_id": "T0000009", "operation": "load"}
        r = await c.call("createShopLoad", api.tokens.other_store, json=elsewhere)
        assert (r.status_code, r.json()["error"]["rc"]) == (422, "58"), r.text
        log = api.log_lines()
        assert '"event":"shop_load"' in log and gift not in log
        assert scan_for([provisioned.data], provisioned.all_pans()) == []


async def test_shop_loads_in_the_standalone_api(provisioned: Provisioned) -> None:
    """``authsrv api`` alone decides loads with its own processor and direct writer."""
    async with api_alone(provisioned.data) as api:
        sale = {
            "payment_ref": "order-9",
            "terminal_id": "T0000001",
            "operation": "activate",
            "card_number": provisioned.cards[3],
            "amount_minor": 1_000,
            "currency": "978",
        }
        first = await api.client.call("createShopLoad", api.tokens.store, json=sale)
        assert (first.status_code, first.json()["balance_minor"]) == (200, 1_000), first.text
        again = await api.client.call("createShopLoad", api.tokens.store, json=sale)
        assert again.json() == {**first.json(), "replayed": True}
        with api.store.read() as led:
            assert [t.op for t in led.journal()] == ["activate"]
