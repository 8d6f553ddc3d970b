"""Every status code the OpenAPI document gives an operation is reached, over HTTP, against
the API running in the host: the shared refusals (401, 403, 400, 413, 422, 429, 503) by one
recipe per operation, the rest (successes, 404, 409) by a recipe each. No recipe may get a
status its operation does not document."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

import authsrv.admin
from api.holders import put_holder
from api.operations import OPERATIONS
from api.routing import Operation
from authsrv.model import ApiRole
from protocol.cards import luhn_check_digit
from protocol.tlv import decode_tlv
from settlement.day import DayClock, close_open_day
from simulators.terminal import build_request
from tests.api_helpers import Api, api_in_host
from tests.helpers import Provisioned, read_pans

OPS = {op.id: op for op in OPERATIONS}
MOBILE = "+4791234567"
# Path values that name things that exist, and values no parameter accepts.
GOOD_PATH = {
    "card_id": 1,
    "store_id": "S0001",
    "terminal_id": "T0000001",
    "product_id": "GIFT",
    "kind": "liability",
}
BAD_PATH = {
    "card_id": "abc",
    "store_id": "x" * 65,
    "terminal_id": "x" * 65,
    "product_id": "x" * 65,
    "kind": "nope",
    "day": "2026",
}
BAD_QUERY = {"listProducts": {"kind": "nope"}, "listAudit": {"limit": "0"}}


def _path_names(op: Operation) -> list[str]:
    return [p.name for p in op.params if p.where == "path"]


def _denied_role(op: Operation) -> ApiRole:
    return next(
        r for r in (ApiRole.SELFSERVICE, ApiRole.STORE, ApiRole.BACKOFFICE) if r not in op.roles
    )


def _allowed_role(op: Operation) -> ApiRole:
    return next(
        r for r in (ApiRole.BACKOFFICE, ApiRole.SELFSERVICE, ApiRole.STORE) if r in op.roles
    )


async def _shared_refusals(api: Api, op: Operation, day: str) -> None:
    c = api.client
    token = api.tokens.of_role(_allowed_role(op))
    path = {n: GOOD_PATH.get(n, day) for n in _path_names(op)}
    statuses = op.statuses()
    await c.call(op.id, None, path=path)
    if 403 in statuses:
        await c.call(op.id, api.tokens.of_role(_denied_role(op)), path=path)
    limit = api.ctx.cfg.api.requests_inflight_max
    api.ctx.inflight = limit
    try:
        await c.call(op.id, token, path=path)
    finally:
        api.ctx.inflight = 0
    if op.body is not None:
        await c.call(
            op.id, token, path=path, content=b"x" * (api.ctx.cfg.api.body_size_max_bytes + 1)
        )
        await c.call(op.id, token, path=path, content=b"{")
        await c.call(op.id, token, path=path, json={"no_such_field": 1})
    elif op.params:
        bad_path = {n: BAD_PATH[n] for n in _path_names(op)}
        await c.call(op.id, token, path=bad_path or None, query=BAD_QUERY.get(op.id))


async def test_every_documented_status_is_reached(
    provisioned: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {
        "api.issue_count_max": 5,
        "api.issue_dir": str(tmp_path / "issued"),
        "settlement.dir": str(tmp_path / "settlement"),
        "api.self_card_burst": 2,
        "api.self_client_burst": 100,
        "campaign.activation_tries_max": 2,
    }
    async with api_in_host(provisioned.data, settings) as api:
        c, bo, ss = api.client, api.tokens.backoffice, api.tokens.selfservice
        with api.store.read() as led:
            today = led.open_day()
        assert today is not None

        async def expect(status: int, op_id: str, token: str, **kw: object) -> httpx.Response:
            r = await c.call(op_id, token, **kw)  # type: ignore[arg-type]
            assert r.status_code == status, (op_id, r.text)
            return r

        recipes: list[Callable[[], Awaitable[object]]] = [
            lambda: expect(200, "getMe", bo),
            lambda: expect(200, "getCard", bo, path={"card_id": 1}),
            lambda: expect(404, "getCard", bo, path={"card_id": 999_999}),
            # Card 2: lost, then nothing but close; card 4: closed, keeps its expiry.
            lambda: expect(
                200,
                "changeCardState",
                bo,
                path={"card_id": 2},
                json={"action": "lost", "reason": "r"},
            ),
            lambda: expect(
                409,
                "changeCardState",
                bo,
                path={"card_id": 2},
                json={"action": "block", "reason": "r"},
            ),
            lambda: expect(
                404,
                "changeCardState",
                bo,
                path={"card_id": 999_999},
                json={"action": "lost", "reason": "r"},
            ),
            lambda: expect(
                200,
                "changeCardExpiry",
                bo,
                path={"card_id": 3},
                json={"expiry": "3012", "reason": "r"},
            ),
            lambda: expect(
                200,
                "changeCardState",
                bo,
                path={"card_id": 4},
                json={"action": "close", "reason": "r"},
            ),
            lambda: expect(
                409,
                "changeCardExpiry",
                bo,
                path={"card_id": 4},
                json={"expiry": "3012", "reason": "r"},
            ),
            lambda: expect(
                404,
                "changeCardExpiry",
                bo,
                path={"card_id": 999_999},
                json={"expiry": "3012", "reason": "r"},
            ),
            lambda: expect(201, "issueCards", bo, json={"product": "GIFT", "count": 2}),
            lambda: expect(404, "issueCards", bo, json={"product": "NOPE", "count": 2}),
            lambda: expect(200, "listStores", bo),
            lambda: expect(
                201, "createStore", bo, json={"id": "S0009", "name": "N", "chain": "ACME"}
            ),
            lambda: expect(
                409, "createStore", bo, json={"id": "S0009", "name": "N", "chain": "ACME"}
            ),
            lambda: expect(200, "getStore", bo, path={"store_id": "S0009"}),
            lambda: expect(404, "getStore", bo, path={"store_id": "S9999"}),
            lambda: expect(200, "updateStore", bo, path={"store_id": "S0009"}, json={"name": "M"}),
            lambda: expect(404, "updateStore", bo, path={"store_id": "S9999"}, json={"name": "M"}),
            lambda: expect(200, "listTerminals", bo),
            lambda: expect(201, "createTerminal", bo, json={"id": "T0000019", "store_id": "S0009"}),
            lambda: expect(409, "createTerminal", bo, json={"id": "T0000019", "store_id": "S0009"}),
            lambda: expect(200, "getTerminal", bo, path={"terminal_id": "T0000019"}),
            lambda: expect(404, "getTerminal", bo, path={"terminal_id": "T9999999"}),
            lambda: expect(
                200, "updateTerminal", bo, path={"terminal_id": "T0000019"}, json={"active": False}
            ),
            lambda: expect(
                404, "updateTerminal", bo, path={"terminal_id": "T9999999"}, json={"active": False}
            ),
            lambda: expect(200, "listProducts", bo, query={"kind": "gift"}),
            lambda: expect(
                201,
                "createProduct",
                bo,
                json={
                    "id": "CAMP",
                    "chain": "ACME",
                    "prefix": "603629",
                    "kind": "campaign",
                    "share_bp": 3000,
                    "max_value_minor": 50_000,
                    "expiry_days": 90,
                },
            ),
            lambda: expect(
                409, "createProduct", bo, json={"id": "GIFT", "chain": "ACME", "prefix": "603628"}
            ),
            lambda: expect(200, "getProduct", bo, path={"product_id": "CAMP"}),
            lambda: expect(404, "getProduct", bo, path={"product_id": "NOPE"}),
            lambda: expect(
                200, "changeProduct", bo, path={"product_id": "CAMP"}, json={"share_bp": 2500}
            ),
            lambda: expect(
                409, "changeProduct", bo, path={"product_id": "CAMP"}, json={"share_bp": 2500}
            ),
            lambda: expect(
                404, "changeProduct", bo, path={"product_id": "NOPE"}, json={"share_bp": 1}
            ),
            lambda: expect(404, "getReport", bo, path={"kind": "activity"}),  # no day closed yet
            lambda: expect(200, "getReport", bo, path={"kind": "liability"}),
            lambda: expect(404, "getNetReport", bo, path={"day": "20000101"}),
            lambda: expect(404, "getClearingFile", bo, path={"day": "20000101"}),
            lambda: expect(200, "listAudit", bo),
            lambda: expect(
                404,
                "getHolderCard",
                ss,
                json={"card_number": provisioned.cards[0], "mobile": MOBILE},
            ),
        ]
        for recipe in recipes:
            await recipe()

        monkeypatch.setattr(authsrv.admin, "PAN_TRIES_MAX", 0)
        await expect(409, "issueCards", bo, json={"product": "GIFT", "count": 1})
        monkeypatch.undo()

        with api.store.write() as led:
            card = led.card_by_hashes(api.ctx.keys.pan_hashes(provisioned.cards[5]))
            assert card is not None
            put_holder(led, card.id, mobile=MOBILE, now_ms=1)
            closed, _opened = close_open_day(
                led, DayClock.of("00:00", "UTC"), time.time_ns() // 10**6, how="manual"
            )
        day = closed[0].day
        mine = {"card_number": provisioned.cards[5], "mobile": MOBILE}
        await expect(200, "getHolderCard", ss, json=mine)
        await expect(200, "getHolderCard", ss, json=mine)
        await expect(429, "getHolderCard", ss, json=mine)  # the card's burst is 2
        await expect(200, "getReport", bo, path={"kind": "activity"})
        await expect(200, "getNetReport", bo, path={"day": day})
        r = await expect(200, "getClearingFile", bo, path={"day": day}, query={"format": "ipm"})
        assert r.headers["content-type"] == "application/octet-stream"
        r = await expect(200, "getClearingFile", bo, path={"day": day})
        assert r.headers["content-type"].startswith("text/csv")

        await _campaign_and_shop_statuses(api, provisioned, expect)

        for op in OPERATIONS:
            await _shared_refusals(api, op, day)

        documented = {(op.id, code) for op in OPERATIONS for code in op.statuses()}
        reached = c.recorded
        assert documented - reached == set(), "documented, never reached"
        assert reached - documented == set(), "reached, not documented"


Expect = Callable[..., Awaitable[httpx.Response]]


async def _issue_campaign_card(api: Api, pan: str) -> str:
    """A 0200 proc 92 for a 1000.00 purchase at S0001 over TCP; the receipt's code (AC)."""
    fields = build_request(
        "activate",
        terminal="T0000001",
        store="S0001",
        pan=pan,
        amount_minor=100_000,
        overrides={"3": "920000"},
    )
    async with await api.terminal() as conn:
        answer = await conn.exchange(fields)
    assert answer["39"] == "00", answer
    return dict(decode_tlv(answer["63"], 63))["AC"]


async def _campaign_and_shop_statuses(api: Api, provisioned: Provisioned, expect: Expect) -> None:
    """Online activation, clawback and web-shop loads: every status of their own. Product
    CAMP (25 % after its change) exists; campaign.activation_tries_max is 2."""
    bo, ss, shop = api.tokens.backoffice, api.tokens.selfservice, api.tokens.store
    issued = await expect(201, "issueCards", bo, json={"product": "CAMP", "count": 2})
    a, b = read_pans(Path(issued.json()["file"]))
    code_a, code_b = await _issue_campaign_card(api, a), await _issue_campaign_card(api, b)
    wrong_b = "0000000" + ("1" if code_b[-1] != "1" else "2")

    def activation(pan: str, code: str) -> dict[str, object]:
        return {
            "card_number": pan,
            "activation_code": code,
            "mobile": MOBILE,
            "consents": {"terms": True},
        }

    r = await expect(200, "activateCard", ss, json=activation(a, code_a))
    token = r.json()["token"]
    await expect(409, "activateCard", ss, json=activation(a, code_a))  # active already
    await expect(404, "activateCard", ss, json=activation(a[:-1] + str(9 - int(a[-1])), code_a))
    await expect(422, "activateCard", ss, json=activation(b, wrong_b))
    await expect(423, "activateCard", ss, json=activation(b, wrong_b))  # the 2nd wrong code
    await expect(429, "activateCard", ss, json=activation(b, code_b))  # the card's burst is 2
    await expect(200, "getHolderCard", ss, json={"token": token})

    card_a = r.json()["card"]
    with api.store.read() as led:
        card = led.card_by_hashes(api.ctx.keys.pan_hashes(a))
    assert card is not None and card.masked == card_a
    claw = {"amount_minor": 5_000, "reason": "purchase returned", "request_id": "claw-1"}
    await expect(200, "clawBackCard", bo, path={"card_id": card.id}, json=claw)
    await expect(200, "clawBackCard", bo, path={"card_id": card.id}, json=claw)  # replayed
    await expect(
        409, "clawBackCard", bo, path={"card_id": card.id}, json={**claw, "amount_minor": 1}
    )
    await expect(409, "clawBackCard", bo, path={"card_id": 1}, json={**claw, "request_id": "c2"})
    await expect(404, "clawBackCard", bo, path={"card_id": 999_999}, json=claw)

    gift = provisioned.cards[6]
    sale = {
        "payment_ref": "pay-1",
        "terminal_id": "T0000001",
        "operation": "activate",
        "card_number": gift,
        "amount_minor": 5_000,
        "currency": "978",
    }
    await expect(200, "createShopLoad", shop, json=sale)
    await expect(409, "createShopLoad", shop, json={**sale, "amount_minor": 5_001})
    await expect(
        409, "createShopLoad", shop, json={**sale, "payment_ref": "p2", "terminal_id": "T0000003"}
    )
    unknown = "603628000000000" + luhn_check_digit("603628000000000")
    await expect(
        404, "createShopLoad", shop, json={**sale, "payment_ref": "p3", "card_number": unknown}
    )
    over = {**sale, "payment_ref": "p4", "operation": "load", "amount_minor": 60_000}
    r = await expect(422, "createShopLoad", shop, json=over)
    assert r.json()["error"]["rc"] == "61", r.text
