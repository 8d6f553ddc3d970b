"""The HTTP API over real HTTP on 127.0.0.1: keys and roles, store scoping, the audit log,
card state changes and what a terminal then gets, issue batches, the writer path, limits."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import msgspec
import pytest
import trio

from api.operations import OPERATIONS
from authsrv.model import CardState
from authsrv.server import WriterStopped
from tests.api_helpers import Api, api_alone, api_in_host, iso
from tests.helpers import Provisioned, read_pans, scan_for

ROOT = Path(__file__).resolve().parent.parent


def _card_id(api: Api, pan: str) -> int:
    with api.store.read() as led:
        card = led.card_by_hashes(api.ctx.keys.pan_hashes(pan))
    assert card is not None
    return card.id


def _audit(api: Api) -> list[msgspec.Struct]:
    with api.store.read() as led:
        return list(led.audit_entries())


# -- the document ---------------------------------------------------------------------------


async def test_openapi_served_equals_committed_document(provisioned: Provisioned) -> None:
    async with api_alone(provisioned.data) as api:
        served = await api.client.http.get("/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    committed = (ROOT / "docs" / "openapi.json").read_bytes()
    assert served.content == committed, (
        "docs/openapi.json is stale: `authsrv api --print-openapi > docs/openapi.json`"
    )
    doc = json.loads(served.content)
    assert doc["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    assert documented == {(op.path, op.method) for op in OPERATIONS}


# -- keys and roles ---------------------------------------------------------------------------


async def test_no_key_bad_key_and_revoked_key_get_401(provisioned: Provisioned) -> None:
    from api.access import revoke_key

    async with api_alone(provisioned.data) as api:
        c = api.client
        for token in (None, "nonsense", api.tokens.backoffice[:-1] + "x"):
            r = await c.call("getMe", token)
            assert r.status_code == 401, token
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["code"] == "unauthorized"
        basic = {"Authorization": "Basic " + api.tokens.backoffice}
        r = await c.call("getMe", None, headers=basic)
        assert r.status_code == 401
        me = (await c.call("getMe", api.tokens.store)).json()
        assert me["role"] == "store" and me["store_id"] == "S0001"
        with api.store.write() as led:
            revoke_key(led, me["key_id"], now_ms=2, actor="test")
        assert (await c.call("getMe", api.tokens.store)).status_code == 401


async def test_roles_get_403_where_they_may_not_call(provisioned: Provisioned) -> None:
    async with api_alone(provisioned.data) as api:
        c, t = api.client, api.tokens
        cases = [
            ("getCard", t.store, {"card_id": 1}),
            ("getCard", t.selfservice, {"card_id": 1}),
            ("listStores", t.selfservice, None),
            ("listAudit", t.store, None),
        ]
        for op_id, token, path in cases:
            r = await c.call(op_id, token, path=path)
            assert r.status_code == 403, op_id
            assert r.json()["error"]["code"] == "forbidden"
        r = await c.call("getHolderCard", t.backoffice, json={"token": "x"})
        assert r.status_code == 403


async def test_a_store_key_sees_and_acts_on_its_own_store_only(provisioned: Provisioned) -> None:
    async with api_alone(provisioned.data) as api:
        c, t = api.client, api.tokens
        stores = (await c.call("listStores", t.store)).json()["stores"]
        assert [s["id"] for s in stores] == ["S0001"]
        assert (await c.call("getStore", t.store, path={"store_id": "S0002"})).status_code == 404
        assert (await c.call("getStore", t.store, path={"store_id": "S0001"})).status_code == 200
        terminals = (await c.call("listTerminals", t.store)).json()["terminals"]
        assert {x["id"] for x in terminals} == {"T0000001", "T0000002"}
        other = await c.call("getTerminal", t.store, path={"terminal_id": "T0000003"})
        assert other.status_code == 404
        r = await c.call(
            "updateTerminal", t.store, path={"terminal_id": "T0000003"}, json={"active": False}
        )
        assert r.status_code == 404
        r = await c.call("createTerminal", t.store, json={"id": "T0000077", "store_id": "S0002"})
        assert r.status_code == 403
        r = await c.call("createTerminal", t.store, json={"id": "T0000077", "store_id": "S0001"})
        assert r.status_code == 201
        r = await c.call(
            "updateTerminal", t.store, path={"terminal_id": "T0000077"}, json={"active": False}
        )
        assert r.status_code == 200 and r.json()["active"] is False
        everything = (await c.call("listTerminals", t.backoffice)).json()["terminals"]
        assert len(everything) == 5
        r = await c.call("getReport", t.store, path={"kind": "breakage"})
        assert r.status_code == 403
        r = await c.call("getClearingFile", t.store, path={"day": "20260101"})
        assert r.status_code == 403


# -- the audit log ----------------------------------------------------------------------------


async def test_every_change_is_audited_with_who_what_and_before_after(
    provisioned: Provisioned,
) -> None:
    async with api_alone(provisioned.data) as api:
        c, t = api.client, api.tokens
        card_id = _card_id(api, provisioned.cards[0])
        before = len(_audit(api))
        writes = [
            ("createStore", None, {"id": "S0100", "name": "New", "chain": "ACME"}, 201),
            ("updateStore", {"store_id": "S0100"}, {"active": False}, 200),
            ("createTerminal", None, {"id": "T0000100", "store_id": "S0100"}, 201),
            ("updateTerminal", {"terminal_id": "T0000100"}, {"active": False}, 200),
            (
                "createProduct",
                None,
                {"id": "GIFT2", "chain": "ACME", "prefix": "603630", "load_max_minor": 20_000},
                201,
            ),
            ("changeProduct", {"product_id": "GIFT2"}, {"load_max_minor": 30_000}, 200),
            ("changeCardState", {"card_id": card_id}, {"action": "lost", "reason": "call"}, 200),
            ("changeCardExpiry", {"card_id": card_id}, {"expiry": "3012", "reason": "x"}, 200),
            ("issueCards", None, {"product": "GIFT", "count": 2}, 201),
        ]
        for op_id, path, body, status in writes:
            r = await c.call(op_id, t.backoffice, path=path, json=body)
            assert r.status_code == status, (op_id, r.text)
        entries = _audit(api)[before:]
        assert [e.action for e in entries] == [  # type: ignore[attr-defined]
            "store_add",
            "store_update",
            "terminal_add",
            "terminal_update",
            "product_add",
            "product_change",
            "card_lost",
            "card_expiry",
            "cards_issue",
        ]
        backoffice_key = (await c.call("getMe", t.backoffice)).json()["key_id"]
        for e in entries:
            assert e.actor == f"api:{backoffice_key}:test backoffice"  # type: ignore[attr-defined]
            assert e.at_ms > 0  # type: ignore[attr-defined]
        lost = entries[6]
        assert lost.target == f"card:{card_id}"  # type: ignore[attr-defined]
        assert lost.detail["before"] == "issued" and lost.detail["after"] == "lost"  # type: ignore[attr-defined]
        assert entries[1].detail == {  # type: ignore[attr-defined]
            "endpoint": "PATCH /v1/stores/{store_id}",
            "active_before": "true",
            "active_after": "false",
        }
        # No change, no entry.
        n = len(_audit(api))
        r = await c.call(
            "updateStore", t.backoffice, path={"store_id": "S0100"}, json={"active": False}
        )
        assert r.status_code == 200
        r = await c.call(
            "changeCardState",
            t.backoffice,
            path={"card_id": card_id},
            json={"action": "lost", "reason": "again"},
        )
        assert r.json()["changed"] is False and r.json()["audit_seq"] is None
        assert len(_audit(api)) == n
        # The audit log over the API, in pages.
        page = (
            await c.call("listAudit", t.backoffice, query={"after": str(before), "limit": "4"})
        ).json()
        assert [e["action"] for e in page["entries"]] == [
            "store_add",
            "store_update",
            "terminal_add",
            "terminal_update",
        ]
        assert page["next_after"] == before + 4


# -- cards: state changes and the terminals ---------------------------------------------------

S = CardState
# (state before, action) -> (status, state after)
TRANSITIONS = [
    (S.ACTIVE, "block", 200, S.BLOCKED),
    (S.BLOCKED, "unblock", 200, S.ACTIVE),
    (S.BLOCKED, "block", 200, S.BLOCKED),  # already so: changed=false
    (S.ISSUED, "block", 409, S.ISSUED),
    (S.AWAITING_ACTIVATION, "block", 409, S.AWAITING_ACTIVATION),
    (S.ACTIVE, "unblock", 200, S.ACTIVE),  # already so
    (S.LOST, "unblock", 409, S.LOST),
    (S.ISSUED, "lost", 200, S.LOST),
    (S.BLOCKED, "stolen", 200, S.STOLEN),
    (S.AWAITING_ACTIVATION, "stolen", 200, S.STOLEN),
    (S.CLOSED, "lost", 409, S.CLOSED),
    (S.EXPIRED, "stolen", 409, S.EXPIRED),
    (S.LOST, "close", 200, S.CLOSED),
    (S.EXPIRED, "close", 200, S.CLOSED),
]


@pytest.mark.parametrize(("before", "action", "status", "after"), TRANSITIONS)
async def test_card_state_transitions(
    provisioned: Provisioned, before: CardState, action: str, status: int, after: CardState
) -> None:
    async with api_alone(provisioned.data) as api:
        card_id = _card_id(api, provisioned.cards[0])
        with api.store.write() as led:
            card = led.card(card_id)
            assert card is not None
            led.put_card(msgspec.structs.replace(card, state=before))
        r = await api.client.call(
            "changeCardState",
            api.tokens.backoffice,
            path={"card_id": card_id},
            json={"action": action, "reason": "table"},
        )
        assert r.status_code == status, r.text
        with api.store.read() as led:
            card = led.card(card_id)
        assert card is not None and card.state is after
        if status == 409:
            assert r.json()["error"]["code"] == "conflict"


async def test_card_states_reach_the_terminal_through_the_hosts_writer(
    provisioned: Provisioned,
) -> None:
    async with api_in_host(provisioned.data) as api:
        c, bo = api.client, api.tokens.backoffice
        registry = api.ctx.metrics.registry
        committed = registry.get_sample_value("authsrv_writer_jobs_total", {"outcome": "committed"})
        assert committed is None
        one, two, three = provisioned.cards[:3]
        assert (await iso(api, "activate", one, 10_000))["39"] == "00"
        assert (await iso(api, "activate", two, 5_000))["39"] == "00"

        async def state(pan: str, action: str, expect: int = 200) -> None:
            r = await c.call(
                "changeCardState",
                bo,
                path={"card_id": _card_id(api, pan)},
                json={"action": action, "reason": "test"},
            )
            assert r.status_code == expect, r.text

        await state(one, "block")
        assert (await iso(api, "redeem", one, 1_000))["39"] == "62"
        await state(one, "unblock")
        assert (await iso(api, "redeem", one, 1_000))["39"] == "00"
        await state(one, "lost")
        assert (await iso(api, "redeem", one, 1_000))["39"] == "41"
        await state(two, "stolen")
        assert (await iso(api, "redeem", two, 1_000))["39"] == "43"
        await state(two, "close", 409)  # 50.00 still on it
        await state(three, "close")
        assert (await iso(api, "activate", three, 5_000))["39"] == "62"
        # Every change was a job of the host's writer loop, committed before the answer.
        committed = registry.get_sample_value("authsrv_writer_jobs_total", {"outcome": "committed"})
        failed = registry.get_sample_value("authsrv_writer_jobs_total", {"outcome": "failed"})
        assert (committed, failed) == (5.0, 1.0)
        # The write lock is counted for every committed transaction: jobs, batches and the
        # writer's sweeps (one at its start, then one every store.sweep_interval_s).
        batches = registry.get_sample_value("authsrv_commit_batch_size_count")
        waits = registry.get_sample_value("authsrv_write_lock_wait_seconds_count") or 0.0
        held = registry.get_sample_value("authsrv_write_lock_held_seconds_count")
        assert batches == 7.0 and waits == held and 5.0 + 7.0 < waits <= 5.0 + 7.0 + 3
        detail = (await c.call("getCard", bo, path={"card_id": _card_id(api, one)})).json()
        assert detail["state"] == "lost"
        assert detail["balance_minor"] == 9_000
        assert [h["op"] for h in detail["history"]] == ["activate", "redeem"]
        assert [h["amount_minor"] for h in detail["history"]] == [10_000, -1_000]


async def test_a_failing_job_aborts_only_itself(provisioned: Provisioned) -> None:
    from authsrv.model import Store

    async with api_in_host(provisioned.data) as api:
        assert api.iso is not None
        server = api.iso.host.server

        def half_then_fail(led: object) -> None:
            led.put_store(Store(id="HALF", name="half", chain="ACME"))  # type: ignore[attr-defined]
            raise ValueError("the job changed its mind")

        with pytest.raises(ValueError, match="changed its mind"):
            await server.run_job(half_then_fail, 1.0)
        with api.store.read() as led:
            assert led.store("HALF") is None
        assert (await iso(api, "activate", provisioned.cards[0], 1_000))["39"] == "00"
        r = await api.client.call("getStore", api.tokens.backoffice, path={"store_id": "S0001"})
        assert r.status_code == 200


async def test_a_broken_invariant_in_a_job_stops_the_host(provisioned: Provisioned) -> None:
    def broken(_led: object) -> None:
        raise AssertionError("an invariant broke")

    with pytest.raises(BaseExceptionGroup) as info:
        async with api_in_host(provisioned.data) as api:
            assert api.iso is not None
            with pytest.raises(WriterStopped):
                await api.iso.host.server.run_job(broken, 1.0)
            await trio.sleep_forever()  # the server stops by itself
    assert info.group_contains(AssertionError, match="an invariant broke")


async def test_writes_wait_for_a_free_slot_then_get_503(provisioned: Provisioned) -> None:
    async with api_alone(provisioned.data, {"api.write_queue_max": 1}) as api:
        started, release = trio.Event(), trio.Event()
        token = trio.lowlevel.current_trio_token()

        def slow(_led: object) -> None:
            trio.from_thread.run_sync(started.set, trio_token=token)
            trio.from_thread.run(release.wait, trio_token=token)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(api.ctx.writer.write, slow)
            await started.wait()  # the one slot is taken
            r = await api.client.call(
                "createStore",
                api.tokens.backoffice,
                json={"id": "S0200", "name": "Later", "chain": "ACME"},
            )
            release.set()
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert "nothing changed" in r.json()["error"]["message"]
        with api.store.read() as led:
            assert led.store("S0200") is None


# -- issue batches ------------------------------------------------------------------------------


async def test_issue_batch_writes_a_0600_file_and_answers_no_numbers(
    provisioned: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "issued"
    async with api_alone(
        provisioned.data, {"api.issue_dir": str(out), "api.issue_count_max": 5}
    ) as api:
        c, bo = api.client, api.tokens.backoffice
        r = await c.call("issueCards", bo, json={"product": "GIFT", "count": 3, "expiry": "3103"})
        assert r.status_code == 201, r.text
        answer = r.json()
        path = Path(answer["file"])
        assert path.parent == out
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(out.stat().st_mode) == 0o700
        pans = read_pans(path)
        assert len(pans) == answer["count"] == len(answer["ids"]) == 3
        assert answer["expiry"] == "3103"
        with api.store.read() as led:
            cards = [led.card(i) for i in answer["ids"]]
        assert all(card is not None and card.state is CardState.ISSUED for card in cards)
        assert not any(pan in r.text for pan in pans)
        r = await c.call("issueCards", bo, json={"product": "GIFT", "count": 6})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "count")
        r = await c.call("issueCards", bo, json={"product": "NOPE", "count": 1})
        assert r.status_code == 404
        import authsrv.admin

        monkeypatch.setattr(authsrv.admin, "PAN_TRIES_MAX", 0)
        r = await c.call("issueCards", bo, json={"product": "GIFT", "count": 1})
        assert r.status_code == 409, r.text
        assert sorted(out.iterdir()) == [path], "a batch that did not commit leaves no file"
        leaks = scan_for([provisioned.data], pans) + [
            p for p in pans if p in api.log_lines() or any(p.encode() in b for b in c.bodies)
        ]
        assert leaks == []


# -- limits ---------------------------------------------------------------------------------------


async def test_a_body_over_the_limit_gets_413_before_anything_else(
    provisioned: Provisioned,
) -> None:
    async with api_alone(provisioned.data) as api:
        big = json.dumps({"id": "S1", "name": "x" * 5000, "chain": "ACME"}).encode()
        r = await api.client.call("createStore", None, content=big)
        assert r.status_code == 413
        r = await api.client.call("createStore", api.tokens.backoffice, content=big)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "too_large"


async def test_too_many_requests_at_once_get_503(provisioned: Provisioned) -> None:
    async with api_alone(provisioned.data) as api:
        api.ctx.inflight = api.ctx.cfg.api.requests_inflight_max
        r = await api.client.call("getMe", api.tokens.backoffice)
        api.ctx.inflight = 0
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert (await api.client.call("getMe", api.tokens.backoffice)).status_code == 200


async def test_a_broken_invariant_in_a_handler_stops_the_api(provisioned: Provisioned) -> None:
    from api.app import build_app
    from api.routing import ALL_ROLES, Answer, Call, Operation, Reply
    from api.serve import InvariantBroken

    async def broken(_call: Call) -> Reply:
        raise AssertionError("the ledger is inconsistent")

    op = Operation(
        id="broken",
        method="GET",
        path="/v1/broken",
        summary="broken",
        tag="test",
        roles=ALL_ROLES,
        handler=broken,
        answers={200: Answer("never")},
    )
    with pytest.raises(BaseExceptionGroup) as info:
        async with api_alone(provisioned.data) as api:
            service_app = build_app(api.ctx, (op,))
            r = await _asgi_get(service_app, "/v1/broken", api.tokens.backoffice)
            assert r == 500
            await trio.sleep_forever()
    assert info.group_contains(InvariantBroken)


async def _asgi_get(app: object, path: str, token: str) -> int:
    """One GET straight into an ASGI app (no socket): its status."""
    import httpx

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        r = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    return r.status_code


def test_no_card_number_in_the_openapi_document() -> None:
    text = (ROOT / "docs" / "openapi.json").read_text()
    assert "603628" not in text
    assert text.endswith("}\n")


def test_docs_api_md_names_every_endpoint() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for op in OPERATIONS:
        line = f"`{op.method} {op.path}`"
        assert line in text, line
        row = next(r for r in text.splitlines() if r.startswith(f"| {line}"))
        codes = row.rstrip(" |").rsplit("|", 1)[1].split()
        assert codes == [str(c) for c in op.statuses()], (line, codes)
