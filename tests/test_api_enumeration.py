"""Enumeration against online activation (``POST /v1/self/activate``): wrong card numbers from
one client are throttled after the client's burst (429 with Retry-After, before any look-up);
one card number is throttled whoever asks; wrong codes on a real card answer 422 and then 423,
and the lock survives a real restart of the host (a new process on the same store) until
``authsrv cards unlock-activation``. No card number, code or token reaches the log or the
store."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from api.access import add_key
from authsrv.admin import add_product, issue_cards
from authsrv.app import open_keys, open_store
from authsrv.model import ApiRole
from protocol.cards import luhn_check_digit
from protocol.tlv import decode_tlv
from simulators.terminal import build_request
from tests.api_helpers import api_in_host
from tests.helpers import (
    Provisioned,
    RawClient,
    campaign_product,
    read_pans,
    run_cli,
    running_host,
    scan_for,
)

CLIENT_BURST = 5
TRIES_MAX = 3
ENV = {
    "AUTHSRV_API_ENABLED": "true",
    "AUTHSRV_API_PORT": "0",
    "AUTHSRV_API_SELF_CLIENT_BURST": str(CLIENT_BURST),
    "AUTHSRV_API_SELF_CLIENT_PER_MIN": "1",  # then one a minute: Retry-After up to 60 s
    "AUTHSRV_API_SELF_CARD_BURST": "20",
    "AUTHSRV_CAMPAIGN_ACTIVATION_TRIES_MAX": str(TRIES_MAX),
}
MOBILE = "+4791234567"
HTTP_TIMEOUT_S = 10.0


def _luhn(body: str) -> str:
    return body + luhn_check_digit(body)


def _token(data: Path, name: str) -> str:
    made = run_cli("api-keys", "add", "--data", str(data), "--role", "selfservice", "--name", name)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def _api(log: Path) -> httpx.Client:
    """A client of the API the host's ``api_listening`` line names."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    (listening,) = [e for e in lines if e.get("event") == "api_listening"]
    port = listening["port"]
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HTTP_TIMEOUT_S)


def _activation(pan: str, code: str) -> dict[str, object]:
    return {
        "card_number": pan,
        "activation_code": code,
        "mobile": MOBILE,
        "consents": {"terms": True},
    }


def _activate(api: httpx.Client, token: str, pan: str, code: str) -> httpx.Response:
    return api.post(
        "/v1/self/activate",
        json=_activation(pan, code),
        headers={"Authorization": f"Bearer {token}"},
    )


def _card_state(data: Path, card_id: int) -> str:
    store = open_store(data, 64, readonly=True)
    try:
        with store.read() as led:
            card = led.card(card_id)
    finally:
        store.close()
    assert card is not None
    return card.state.value


def test_wrong_numbers_are_throttled_and_wrong_codes_lock_across_a_restart(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    data = provisioned.data
    store = open_store(data, 64)
    try:
        keys = open_keys(store)
        add_product(store, campaign_product())
        issue_cards(store, keys, "CAMP", 3, tmp_path / "camp.csv")
        camp = read_pans(tmp_path / "camp.csv")
        with store.read() as led:
            card = led.card_by_hashes(keys.pan_hashes(camp[0]))
        assert card is not None
        card_id = card.id
    finally:
        store.close()
    pan = camp[0]
    scanner, holder = _token(data, "scanner"), _token(data, "holder")
    log = tmp_path / "host.log"
    unknown = [_luhn(f"603629{n:09d}") for n in (123_456_789, 987_654_321, 555_000_111)]
    assert not set(unknown) & set(camp)
    bad_luhn = unknown[0][:-1] + str((int(unknown[0][-1]) + 1) % 10)
    tried = [*unknown, bad_luhn, provisioned.cards[0]]  # the last: a gift card
    assert len(tried) == CLIENT_BURST
    with running_host(data, log, env=ENV) as host, _api(log) as api:
        with RawClient(host.port) as terminal:
            issued = terminal.exchange(
                build_request(
                    "activate",
                    terminal="T0000001",
                    store="S0001",
                    pan=pan,
                    amount_minor=100_000,
                    overrides={"3": "920000"},
                )
            )
        assert issued["39"] == "00", issued
        code = dict(decode_tlv(issued["63"], 63))["AC"]
        wrong = [c + code[1:] for c in "0123456789ABCDEFGH" if c != code[0]][: TRIES_MAX + 1]

        # One client scanning numbers: the same 404 for each, then 429 after its burst,
        # before any look-up (even a real card with its right code).
        answers = [_activate(api, scanner, number, code) for number in tried]
        assert {(r.status_code, r.content) for r in answers} == {(404, answers[0].content)}, (
            "unknown, bad check digit and not a campaign card answer alike"
        )
        throttled = _activate(api, scanner, pan, code)
        assert throttled.status_code == 429, throttled.text
        assert 1 <= int(throttled.headers["Retry-After"]) <= 60
        assert throttled.json()["error"]["code"] == "rate_limited"
        assert _card_state(data, card_id) == "awaiting_activation"

        # Another client with wrong codes on the real card: 422 with the tries left, then
        # 423 at the limit, and 423 for the right code too.
        r = _activate(api, holder, pan, wrong[0])
        assert r.status_code == 422, r.text
        assert (r.json()["error"]["code"], r.json()["error"]["tries_left"]) == ("wrong_code", 2)
        r = _activate(api, holder, pan, wrong[1])
        assert (r.status_code, r.json()["error"]["tries_left"]) == (422, 1)
        r = _activate(api, holder, pan, wrong[2])
        assert (r.status_code, r.json()["error"]["code"]) == (423, "locked")
        assert _activate(api, holder, pan, code).status_code == 423
        assert _activate(api, holder, pan, wrong[3]).status_code == 423

    # A real restart: a new process on the same store. The buckets refill (they are the
    # process's); the lock is in the card record.
    log2 = tmp_path / "host-2.log"
    with running_host(data, log2, env=ENV) as host, _api(log2) as api:
        assert _activate(api, holder, pan, code).status_code == 423
        with RawClient(host.port) as terminal:
            redeem = terminal.exchange(
                build_request(
                    "redeem", terminal="T0000003", store="S0002", pan=pan, amount_minor=1_000
                )
            )
        assert redeem["39"] == "78"
        assert _activate(api, scanner, unknown[0], code).status_code == 404  # refilled
        unlocked = run_cli(
            "cards",
            "unlock-activation",
            "--data",
            str(data),
            "--id",
            str(card_id),
            "--reason",
            "customer called, ID checked",
        )
        assert unlocked.returncode == 0, unlocked.stderr
        r = _activate(api, holder, pan, code)
        assert r.status_code == 200, r.text
        card_token = r.json()["token"]
        mine = api.post(
            "/v1/self/card",
            json={"token": card_token},
            headers={"Authorization": f"Bearer {holder}"},
        )
        assert (mine.status_code, mine.json()["balance_minor"]) == (200, 30_000), mine.text
    assert _card_state(data, card_id) == "active"
    store = open_store(data, 64, readonly=True)
    try:
        with store.read() as led:
            actions = [e.action for e in led.audit_entries() if e.target == f"card:{card_id}"]
    finally:
        store.close()
    assert actions == ["activation_locked", "unlock_activation", "activate_online"]
    needles = [*camp, *tried, code, card_token]
    assert scan_for([data, log, log2], needles) == []


async def test_one_card_number_is_throttled_whoever_asks(provisioned: Provisioned) -> None:
    """The per-card bucket is keyed by the number's keyed hash: an unknown number is limited
    like a known one, across clients."""
    settings = {"api.self_card_burst": 3, "api.self_client_burst": 100}
    async with api_in_host(provisioned.data, settings) as api:
        with api.store.write() as led:
            _key, second = add_key(
                led, name="second", role=ApiRole.SELFSERVICE, store_id="", now_ms=1, actor="t"
            )
        number = _luhn("603629000000123")
        body = _activation(number, "ABCDEFGH")
        statuses = []
        for token in (api.tokens.selfservice, second, api.tokens.selfservice, second):
            r = await api.client.call("activateCard", token, json=body)
            statuses.append(r.status_code)
        assert statuses == [404, 404, 404, 429]
        other = await api.client.call(
            "activateCard", second, json=_activation(_luhn("6036290000001"), "ABCDEFGH")
        )
        assert other.status_code == 404  # another number has its own bucket
        assert number not in api.log_lines()
