"""The API as operators run it: inside ``authsrv serve`` (beside the terminals, worker 0 of
several) and alone (``authsrv api``), as processes; its configuration section."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from authsrv.app import open_store
from authsrv.config import ConfigError, load_config
from simulators.terminal import build_request
from tests.helpers import (
    STARTUP_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Provisioned,
    RawClient,
    authsrv_cmd,
    run_cli,
    running_host,
)

API_ON = {"AUTHSRV_API_ENABLED": "true", "AUTHSRV_API_PORT": "0"}


def _events(log: Path, event: str) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [e for e in lines if e.get("event") == event]


def _token(data: Path, *args: str) -> str:
    made = run_cli("api-keys", "add", "--data", str(data), *args)
    assert made.returncode == 0, made.stderr
    assert "shown this once" in made.stderr
    return made.stdout.strip()


def test_serve_runs_the_api_beside_the_terminals(provisioned: Provisioned, tmp_path: Path) -> None:
    token = _token(provisioned.data, "--role", "backoffice", "--name", "ops")
    log = tmp_path / "host.log"
    with running_host(provisioned.data, log, env=API_ON) as host:
        (listening,) = _events(log, "api_listening")
        port = int(str(listening["port"]))
        assert port != host.port
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.get(f"http://127.0.0.1:{port}/v1/me", headers=auth, timeout=10)
        assert r.status_code == 200 and r.json()["role"] == "backoffice"
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/stores",
            json={"id": "S0300", "name": "Served", "chain": "ACME"},
            headers=auth,
            timeout=10,
        )
        assert r.status_code == 201
        with RawClient(host.port) as terminal:
            answer = terminal.exchange(build_request("echo", terminal="T0000001", store="S0001"))
        assert answer["39"] == "00"
    assert _events(log, "api_stopped")
    listed = run_cli("stores", "list", "--data", str(provisioned.data))
    assert "S0300" in listed.stdout


def test_with_workers_only_worker_0_serves_the_api(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    token = _token(provisioned.data, "--role", "store", "--store", "S0001", "--name", "city")
    log = tmp_path / "host.log"
    with running_host(provisioned.data, log, env=API_ON, extra_args=("--workers", "2")):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _events(log, "api_listening") and time.monotonic() < deadline:
            time.sleep(0.05)
        (listening,) = _events(log, "api_listening")
        assert listening["worker"] == 0
        r = httpx.get(
            f"http://127.0.0.1:{listening['port']}/v1/terminals",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert [t["id"] for t in r.json()["terminals"]] == ["T0000001", "T0000002"]


def test_api_alone_serves_until_sigterm(provisioned: Provisioned, tmp_path: Path) -> None:
    token = _token(provisioned.data, "--role", "backoffice", "--name", "ops")
    log = tmp_path / "api.log"
    env = {**os.environ, "AUTHSRV_API_PORT": "0"}
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [*authsrv_cmd(), "api", "--data", str(provisioned.data)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _events(log, "api_listening"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        port = _events(log, "api_listening")[0]["port"]
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/cards/1/state",
            json={"action": "stolen", "reason": "stock theft"},
            headers=auth,
            timeout=10,
        )
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(STOP_TIMEOUT_S)
    assert proc.returncode == 0, log.read_text()[-2000:]
    shown = run_cli("cards", "show", "--data", str(provisioned.data), "--id", "1")
    assert "stolen" in shown.stdout


def test_api_port_taken_is_one_line(provisioned: Provisioned) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "api", "--data", str(provisioned.data), "--port", str(port), timeout=STOP_TIMEOUT_S
        )
    assert result.returncode == 2
    assert f"cannot listen on api.host 127.0.0.1 api.port {port}" in result.stderr


def test_api_keys_list_and_revoke(provisioned: Provisioned) -> None:
    data = str(provisioned.data)
    token = _token(provisioned.data, "--role", "selfservice", "--name", "web")
    listed = run_cli("api-keys", "list", "--data", data)
    assert "selfservice" in listed.stdout and "in force" in listed.stdout
    assert token not in listed.stdout and token[4:16] in listed.stdout
    revoked = run_cli("api-keys", "revoke", "--data", data, "--id", token[4:16])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = run_cli("api-keys", "revoke", "--data", data, "--id", token[4:16])
    assert again.returncode == 2 and "revoked already" in again.stderr
    store = open_store(provisioned.data, 64, readonly=True)
    try:
        with store.read() as led:
            audited = [(e.action, e.target, e.actor[:4]) for e in led.audit_entries()]
    finally:
        store.close()
    key = f"api_key:{token[4:16]}"
    assert ("api_key_add", key, "cli:") in audited
    assert ("api_key_revoke", key, "cli:") in audited
    bad = run_cli("api-keys", "add", "--data", data, "--role", "store", "--name", "x")
    assert bad.returncode == 2 and "--store" in bad.stderr
    bad = run_cli(
        "api-keys", "add", "--data", data, "--role", "store", "--store", "NOPE", "--name", "x"
    )
    assert bad.returncode == 2 and "store NOPE does not exist" in bad.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"api.host": "0.0.0.0"}, "api.host 0.0.0.0 is not loopback"),
        ({"api.host": "localhost"}, "api.host 'localhost' is not an IP address"),
        ({"api.tls_cert_file": "/x.pem"}, "set both api.tls_cert_file and api.tls_key_file"),
        ({"api.port": 70000}, "api.port is 70000"),
        ({"api.enabled": True, "api.port": 8583}, "api.port 8583 is server.port too"),
        ({"api.body_size_max_bytes": 10}, "api.body_size_max_bytes is 10"),
        ({"api.write_queue_max": 0}, "api.write_queue_max is 0"),
        ({"api.self_card_per_min": 0}, "api.self_card_per_min is 0"),
        ({"api.tls_min_version": "1.1"}, "api.tls_min_version is '1.1'"),
    ],
)
def test_api_settings_are_validated(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(None, {}, settings)


def test_a_public_api_needs_tls_or_an_explicit_yes() -> None:
    cfg = load_config(None, {}, {"api.host": "0.0.0.0", "api.allow_public_plaintext": True})
    assert cfg.api.host == "0.0.0.0"
    env = {"AUTHSRV_API_ENABLED": "true", "AUTHSRV_API_SELF_CARD_BURST": "3"}
    cfg = load_config(None, env, {})
    assert (cfg.api.enabled, cfg.api.self_card_burst, cfg.api.port) == (True, 3, 9584)


async def test_api_over_tls_with_our_floor(provisioned: Provisioned, tmp_path: Path) -> None:
    import ssl

    from tests.api_helpers import api_alone
    from tests.test_tls import make_pki

    pki = make_pki(tmp_path / "pki")
    tls = {
        "api.tls_cert_file": str(pki.cert),
        "api.tls_key_file": str(pki.key),
        "api.tls_min_version": "1.3",
    }
    async with api_alone(provisioned.data, tls) as api:
        url = f"https://127.0.0.1:{api.port}/v1/me"
        ctx = ssl.create_default_context(cafile=str(pki.cert))
        async with httpx.AsyncClient(verify=ctx, timeout=10) as client:
            r = await client.get(url, headers={"Authorization": f"Bearer {api.tokens.backoffice}"})
        assert r.status_code == 200 and r.http_version == "HTTP/1.1"
        tls12 = ssl.create_default_context(cafile=str(pki.cert))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        async with httpx.AsyncClient(verify=tls12, timeout=10) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)
        async with httpx.AsyncClient(timeout=10) as client:
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await client.get(f"http://127.0.0.1:{api.port}/v1/me")
    pki.key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        load_config(None, {}, tls)
