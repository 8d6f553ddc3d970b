"""The in-process harness itself: a fixed clock, a real socket, pipelined requests in order."""

from __future__ import annotations

from datetime import UTC, datetime

from simulators.terminal import build_request, summarize
from tests.helpers import Provisioned, serve_in_process

NOW = datetime(2026, 11, 22, 10, 30, 0, tzinfo=UTC)


async def test_pipelined_requests_are_answered_in_order(provisioned: Provisioned) -> None:
    pan = provisioned.cards[0]
    async with (
        serve_in_process(provisioned.data, clock_ms=lambda: int(NOW.timestamp() * 1000)) as h,
        await h.connect() as conn,
    ):
        first = build_request(
            "activate", terminal="T0000001", store="S0001", pan=pan, amount_minor=10000, now=NOW
        )
        assert summarize(await conn.exchange(first)).rc == "00"
        stans = [f"{i:06d}" for i in range(100, 110)]
        from protocol.messages import encode_message
        from simulators.terminal import decode_response

        for stan in stans:
            req = build_request(
                "redeem",
                terminal="T0000001",
                store="S0001",
                pan=pan,
                amount_minor=1500,
                stan=stan,
                now=NOW,
            )
            await conn.send_raw(encode_message(req))
        answers = [decode_response(await conn.receive_raw()) for _ in stans]
    assert [a["11"] for a in answers] == stans
    # 100.00 in 15.00 steps: six approvals, then insufficient funds, decided in order.
    assert [a["39"] for a in answers] == ["00"] * 6 + ["51"] * 4
