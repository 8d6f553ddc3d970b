"""TLS on the terminal listener: version floor, refusals that never reach ISO 8583, mutual TLS,
drain and idle time over TLS, and the start-up checks of the ``server.tls_*`` settings.

The handshake is the point here, so these tests use real sockets on 127.0.0.1, each bounded by
``trio.fail_after``. Certificates are made at test time (EC P-256, SAN 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authsrv.config import ConfigError, load_config
from authsrv.server import DRAIN_QUIET_S, tls_context
from protocol.framing import FrameReader, Framing, encode_frame
from protocol.messages import encode_message
from simulators.terminal import build_request, decode_response
from tests.helpers import InProcessHost, Provisioned, run_cli, running_host, serve_in_process

NOW = datetime.datetime(2026, 11, 22, 10, 30, 0, tzinfo=datetime.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
STEP_TIMEOUT_S = 10  # any one exchange or handshake; they take milliseconds
FAILURES = "authsrv_tls_handshake_failures_total"


def _clock() -> int:
    return NOW_MS


def _echo(stan: str = "000001") -> dict[str, str]:
    return build_request("echo", terminal="T0000001", store="S0001", stan=stan, now=NOW)


# -- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A self-signed server certificate; a client CA, a client certificate it signed, and a
    self-signed client certificate it did not."""

    cert: Path
    key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, 0o600)  # whatever the umask
    return path


def _certificate(
    path: Path,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> Path:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_pki(root: Path) -> Pki:
    root.mkdir(exist_ok=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test terminal CA")])
    return Pki(
        cert=_certificate(
            root / "server.pem", "authsrv test", server_key, usage=ExtendedKeyUsageOID.SERVER_AUTH
        ),
        key=_write_key(root / "server.key", server_key),
        client_ca=_certificate(root / "ca.pem", "test terminal CA", ca_key, ca=True),
        client_cert=_certificate(
            root / "client.pem",
            "T0000001",
            client_key,
            issuer=(ca_name, ca_key),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        client_key=_write_key(root / "client.key", client_key),
        stranger_cert=_certificate(
            root / "stranger.pem", "T0000001", stranger_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
        ),
        stranger_key=_write_key(root / "stranger.key", stranger_key),
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def _tls_settings(pki: Pki, **more: str) -> dict[str, object]:
    return {
        "server.tls_cert_file": str(pki.cert),
        "server.tls_key_file": str(pki.key),
        **{f"server.{k}": v for k, v in more.items()},
    }


# -- clients -------------------------------------------------------------------------------------


def client_context(
    pki: Pki, version: ssl.TLSVersion | None = None, *, cert: tuple[Path, Path] | None = None
) -> ssl.SSLContext:
    """A terminal's context: trusts the test certificate, checks that it names 127.0.0.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=pki.cert)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


async def tls_connect(port: int, ctx: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    return trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1")


async def receive_frame(
    stream: trio.abc.Stream, reader: FrameReader, ready: list[bytes] | None = None
) -> bytes | None:
    """The next ISO 8583 payload, or None when the host closed the connection first. Answers
    may arrive several in one read: ``ready`` keeps those not returned yet (a caller that
    reads more than one answer passes the same list each time)."""
    ready = [] if ready is None else ready
    while not ready:
        data = await stream.receive_some(65_536)
        if not data:
            return None
        ready.extend(reader.feed(bytes(data)))
    return ready.pop(0)


async def exchange(stream: trio.abc.Stream, fields: Mapping[str, str]) -> dict[str, str]:
    with trio.fail_after(STEP_TIMEOUT_S):
        await stream.send_all(encode_frame(encode_message(fields)))
        payload = await receive_frame(stream, FrameReader(Framing.BINARY2, 9999))
    assert payload is not None, "the host closed the connection instead of answering"
    return decode_response(payload)


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    """Everything the host sends until it closes (EOF or reset), within the step bound."""
    received = b""
    with trio.fail_after(STEP_TIMEOUT_S):
        try:
            while data := await stream.receive_some(65_536):
                received += data
        except trio.BrokenResourceError:
            pass  # reset: the host closed with our bytes unread
    return received


async def expect_no_answer(stream: trio.abc.Stream) -> None:
    """Send an echo: the host closes the connection (EOF or reset) and never answers it."""
    answer = None
    with trio.fail_after(STEP_TIMEOUT_S):
        try:
            await stream.send_all(encode_frame(encode_message(_echo())))
            answer = await receive_frame(stream, FrameReader(Framing.BINARY2, 9999))
        except trio.BrokenResourceError:
            return
    assert answer is None, "an ISO 8583 answer came"


async def assert_serves(h: InProcessHost, pki: Pki, stan: str = "000009") -> None:
    """A good TLS client completes an echo: the host is unharmed."""
    async with await tls_connect(h.port, client_context(pki)) as stream:
        answer = await exchange(stream, _echo(stan))
    assert (answer["t"], answer["39"], answer["70"]) == ("0810", "00", "301")


def failures(h: InProcessHost, reason: str) -> float:
    return h.host.metrics.registry.get_sample_value(FAILURES, {"reason": reason}) or 0.0


def log_events(stream: io.StringIO, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == event]


# -- versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
    ids=["tls1.2", "tls1.3"],
)
async def test_tls_client_gets_answers(
    provisioned: Provisioned, pki: Pki, version: ssl.TLSVersion, name: str
) -> None:
    logs = io.StringIO()
    async with (
        serve_in_process(
            provisioned.data, clock_ms=_clock, overrides=_tls_settings(pki), log_stream=logs
        ) as h,
        await tls_connect(h.port, client_context(pki, version)) as stream,
    ):
        echo = await exchange(stream, _echo("000001"))
        assert (echo["t"], echo["39"], echo["70"]) == ("0810", "00", "301")
        signon = await exchange(
            stream, build_request("signon", terminal="T0000001", store="S0001", stan="000002")
        )
        assert (signon["t"], signon["39"], signon["70"]) == ("0810", "00", "001")
        assert stream.version() == name
        cipher, _protocol, _bits = stream.cipher()
        if name == "TLSv1.2":
            # Forward secrecy and AEAD only.
            assert cipher.startswith("ECDHE-"), cipher
            assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    [listening] = log_events(logs, "listening")
    assert (listening["transport"], listening["tls_min_version"]) == ("tls", "1.2")
    assert log_events(logs, "tls_handshake_failed") == []


def tls11_only_context(pki: Pki) -> ssl.SSLContext:
    """A client that offers TLS 1.1 and nothing else (OpenSSL needs security level 0 for it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=pki.cert)
    with pytest.warns(DeprecationWarning, match="TLSv1_1 is deprecated"):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_1
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_1
    # Proof that it really offers 1.1: its ClientHello, taken from a memory BIO, says 3.2
    # (TLS 1.1) and OpenSSL did not refuse to build one ("no protocols available").
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    probe = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        probe.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16, "a handshake record"
    assert hello[5] == 0x01, "a ClientHello"
    assert hello[9:11] == b"\x03\x02", f"client_version {hello[9:11].hex()} is not TLS 1.1"
    return ctx


async def test_tls11_client_is_refused(provisioned: Provisioned, pki: Pki) -> None:
    logs = io.StringIO()
    async with serve_in_process(
        provisioned.data, clock_ms=_clock, overrides=_tls_settings(pki), log_stream=logs
    ) as h:
        old = await tls_connect(h.port, tls11_only_context(pki))
        async with old:
            with trio.fail_after(STEP_TIMEOUT_S), pytest.raises(trio.BrokenResourceError):
                await old.do_handshake()
            # Nothing more comes on this connection, and certainly no ISO 8583 answer.
            with pytest.raises(trio.BrokenResourceError):
                await old.receive_some(100)
        assert failures(h, "version") == 1
        await assert_serves(h, pki)
    [failed] = log_events(logs, "tls_handshake_failed")
    assert failed["reason"] == "version" and failed["level"] == "warning"


async def test_tls13_floor_refuses_tls12(provisioned: Provisioned, pki: Pki) -> None:
    async with serve_in_process(
        provisioned.data, clock_ms=_clock, overrides=_tls_settings(pki, tls_min_version="1.3")
    ) as h:
        async with await tls_connect(h.port, client_context(pki, ssl.TLSVersion.TLSv1_2)) as old:
            with trio.fail_after(STEP_TIMEOUT_S), pytest.raises(trio.BrokenResourceError):
                await old.do_handshake()
        assert failures(h, "version") == 1
        async with await tls_connect(h.port, client_context(pki)) as stream:
            assert (await exchange(stream, _echo()))["39"] == "00"
            assert stream.version() == "TLSv1.3"


async def test_plaintext_client_on_the_tls_port_gets_no_answer(
    provisioned: Provisioned, pki: Pki
) -> None:
    logs = io.StringIO()
    # Values found nowhere else, to look for in the log.
    request = build_request("echo", terminal="TPLAIN42", store="SPLAIN", stan="424242", now=NOW)
    async with serve_in_process(
        provisioned.data, clock_ms=_clock, overrides=_tls_settings(pki), log_stream=logs
    ) as h:
        async with await trio.open_tcp_stream("127.0.0.1", h.port) as plain:
            await plain.send_all(encode_frame(encode_message(request)))
            received = await read_until_closed(plain)
        # Closed without a byte: neither an ISO 8583 answer nor even a TLS alert.
        assert received == b""
        assert failures(h, "not_tls") == 1
        await assert_serves(h, pki)
    # One structured line, with none of the bytes received.
    [failed] = log_events(logs, "tls_handshake_failed")
    assert set(failed) == {"reason", "ssl_reason", "event", "level", "timestamp"}
    assert (failed["reason"], failed["level"]) == ("not_tls", "warning")
    for value in ("TPLAIN42", "SPLAIN", "424242"):
        assert value not in logs.getvalue()


async def test_failures_leave_other_connections_alone(provisioned: Provisioned, pki: Pki) -> None:
    """A good connection stays open through refused handshakes of every kind; new good
    connections keep working; every failure is counted once."""
    async with (
        serve_in_process(provisioned.data, clock_ms=_clock, overrides=_tls_settings(pki)) as h,
        await tls_connect(h.port, client_context(pki)) as good,
    ):
        assert (await exchange(good, _echo("000001")))["39"] == "00"
        # An old client, a plaintext one, one that hangs up mid-handshake, and one with a
        # client certificate the host never asked for, which is fine.
        async with await tls_connect(h.port, tls11_only_context(pki)) as old:
            with trio.fail_after(STEP_TIMEOUT_S), pytest.raises(trio.BrokenResourceError):
                await old.do_handshake()
        async with await trio.open_tcp_stream("127.0.0.1", h.port) as plain:
            await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
            assert await read_until_closed(plain) == b""
        async with await trio.open_tcp_stream("127.0.0.1", h.port) as quitter:
            await quitter.send_all(b"\x16\x03\x01")  # the start of a record, then nothing
        with_cert = client_context(pki, cert=(pki.client_cert, pki.client_key))
        async with await tls_connect(h.port, with_cert) as stream:
            assert (await exchange(stream, _echo("000002")))["39"] == "00"
        assert (await exchange(good, _echo("000003")))["39"] == "00"
        await assert_serves(h, pki)
        with trio.fail_after(STEP_TIMEOUT_S):
            while failures(h, "eof") < 1:  # the host sees the hang-up when it reads
                await trio.sleep(0.01)
        assert (failures(h, "version"), failures(h, "not_tls"), failures(h, "eof")) == (1, 1, 1)
        assert (await exchange(good, _echo("000004")))["39"] == "00"


async def test_connections_max_refuses_a_tls_client_without_waiting_for_it(
    provisioned: Provisioned, pki: Pki
) -> None:
    """A refused connection is closed at once, before any handshake (not counted as a TLS
    failure)."""
    settings = {**_tls_settings(pki), "server.connections_max": 1}
    async with (
        serve_in_process(provisioned.data, clock_ms=_clock, overrides=settings) as h,
        await tls_connect(h.port, client_context(pki)) as first,
    ):
        assert (await exchange(first, _echo()))["39"] == "00"
        async with await trio.open_tcp_stream("127.0.0.1", h.port) as silent:
            assert await read_until_closed(silent) == b""  # without sending a byte
        assert h.host.metrics.connections_refused._value.get() == 1
        assert h.host.metrics.registry.get_sample_value(FAILURES, {"reason": "timeout"}) is None
        assert (await exchange(first, _echo("000002")))["39"] == "00"


# -- mutual TLS ----------------------------------------------------------------------------------


async def test_mutual_tls_accepts_a_terminal_certificate(
    provisioned: Provisioned, pki: Pki
) -> None:
    logs = io.StringIO()
    settings = _tls_settings(pki, tls_ca_file=str(pki.client_ca))
    async with serve_in_process(
        provisioned.data, clock_ms=_clock, overrides=settings, log_stream=logs
    ) as h:
        ctx = client_context(pki, cert=(pki.client_cert, pki.client_key))
        async with await tls_connect(h.port, ctx) as stream:
            assert (await exchange(stream, _echo()))["39"] == "00"
    [listening] = log_events(logs, "listening")
    assert listening["client_certificates"] == "required"


@pytest.mark.parametrize(
    ("version", "cert"),
    [
        (ssl.TLSVersion.TLSv1_2, None),
        (ssl.TLSVersion.TLSv1_3, None),
        (ssl.TLSVersion.TLSv1_2, "stranger"),
        (ssl.TLSVersion.TLSv1_3, "stranger"),
    ],
    ids=["tls1.2-no-cert", "tls1.3-no-cert", "tls1.2-unknown-ca", "tls1.3-unknown-ca"],
)
async def test_mutual_tls_refuses_a_terminal_without_a_good_certificate(
    provisioned: Provisioned, pki: Pki, version: ssl.TLSVersion, cert: str | None
) -> None:
    settings = _tls_settings(pki, tls_ca_file=str(pki.client_ca))
    async with serve_in_process(provisioned.data, clock_ms=_clock, overrides=settings) as h:
        pair = (pki.stranger_cert, pki.stranger_key) if cert else None
        async with await tls_connect(h.port, client_context(pki, version, cert=pair)) as stream:
            # With TLS 1.3 the client finishes its side before the host has checked its
            # certificate, so the refusal shows on the first read; with 1.2 on the handshake.
            await expect_no_answer(stream)
        assert failures(h, "certificate") == 1
        ctx = client_context(pki, cert=(pki.client_cert, pki.client_key))
        async with await tls_connect(h.port, ctx) as good:
            assert (await exchange(good, _echo("000002")))["39"] == "00"


# -- lifecycle: idle time and drain ----------------------------------------------------------


async def test_idle_tls_connection_is_closed(provisioned: Provisioned, pki: Pki) -> None:
    settings = {**_tls_settings(pki), "server.idle_timeout_s": 1}
    async with (
        serve_in_process(provisioned.data, clock_ms=_clock, overrides=settings) as h,
        await tls_connect(h.port, client_context(pki)) as stream,
    ):
        assert (await exchange(stream, _echo()))["39"] == "00"
        started = trio.current_time()
        with trio.fail_after(5):
            data = await stream.receive_some(10)
        assert data == b""  # a clean TLS close (close_notify), not a reset
        assert trio.current_time() - started >= 0.9


async def test_silent_tls_client_gets_the_handshake_timeout(
    provisioned: Provisioned, pki: Pki
) -> None:
    """A client that connects and never says hello holds its slot for the handshake bound (here
    the smaller idle time), then is counted and closed."""
    settings = {**_tls_settings(pki), "server.idle_timeout_s": 1}
    async with serve_in_process(provisioned.data, clock_ms=_clock, overrides=settings) as h:
        async with await trio.open_tcp_stream("127.0.0.1", h.port) as silent:
            started = trio.current_time()
            assert await read_until_closed(silent) == b""
            assert trio.current_time() - started >= 0.9
        assert failures(h, "timeout") == 1
        await assert_serves(h, pki)


async def test_drain_answers_tls_requests_and_closes_every_connection(
    provisioned: Provisioned, pki: Pki
) -> None:
    count = 20
    async with serve_in_process(
        provisioned.data, clock_ms=_clock, overrides=_tls_settings(pki)
    ) as h:
        silent = await trio.open_tcp_stream("127.0.0.1", h.port)  # no ClientHello, ever
        stream = await tls_connect(h.port, client_context(pki))
        async with silent, stream:
            reader, ready = FrameReader(Framing.BINARY2, 9999), list[bytes]()
            with trio.fail_after(STEP_TIMEOUT_S):
                await stream.send_all(
                    b"".join(
                        encode_frame(encode_message(_echo(f"{i:06d}"))) for i in range(1, count + 1)
                    )
                )
                first = await receive_frame(stream, reader, ready)
            h.host.server.request_stop()
            stopped = trio.current_time()
            with trio.fail_after(STEP_TIMEOUT_S):
                rest = [await receive_frame(stream, reader, ready) for _ in range(count - 1)]
                assert await stream.receive_some(10) == b""
                assert await read_until_closed(silent) == b""
            # The handshake-less connection is cut with the quiet readers, not after the
            # handshake bound or the drain timeout.
            assert trio.current_time() - stopped < DRAIN_QUIET_S + 2
        answers = [decode_response(p) for p in [first, *rest] if p is not None]
        assert [a["11"] for a in answers] == [f"{i:06d}" for i in range(1, count + 1)]
        assert all(a["39"] == "00" for a in answers)
        # Cut by the drain: not the terminal's failure.
        assert h.host.metrics.registry.get_sample_value(FAILURES, {"reason": "timeout"}) is None


# -- the real command, several workers -----------------------------------------------------------


def _recv_payload(sock: socket.socket) -> bytes:
    """One 2-byte-length framed payload from a blocking socket."""
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
        chunk = sock.recv(4096)
        assert chunk, "the host closed the connection instead of answering"
        buf += chunk
    size = int.from_bytes(buf[:2], "big")
    assert len(buf) == 2 + size
    return buf[2:]


def test_workers_serve_tls(provisioned: Provisioned, pki: Pki, tmp_path: Path) -> None:
    """``authsrv serve --workers 2``: every worker's SO_REUSEPORT socket speaks TLS; the
    start-up lines say so."""
    env = {
        "AUTHSRV_SERVER_TLS_CERT_FILE": str(pki.cert),
        "AUTHSRV_SERVER_TLS_KEY_FILE": str(pki.key),
        "AUTHSRV_SERVER_TLS_MIN_VERSION": "1.3",
    }
    log = tmp_path / "host.log"
    ctx = client_context(pki)
    with running_host(provisioned.data, log, env=env, extra_args=("--workers", "2")) as host:
        for i in range(1, 5):
            with (
                socket.create_connection(("127.0.0.1", host.port), timeout=STEP_TIMEOUT_S) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(encode_frame(encode_message(_echo(f"{i:06d}"))))
                answer = decode_response(_recv_payload(tls))
                assert (answer["11"], answer["39"]) == (f"{i:06d}", "00")
                assert tls.version() == "TLSv1.3"
        with socket.create_connection(("127.0.0.1", host.port), timeout=STEP_TIMEOUT_S) as plain:
            plain.sendall(encode_frame(encode_message(_echo("000009"))))
            with contextlib.suppress(ConnectionResetError):  # closed with the frame unread
                assert plain.recv(100) == b""
    listening = [e for e in host.log_lines() if e["event"] == "listening"]
    assert len(listening) == 3  # each worker, then the supervisor
    assert {(e["transport"], e["tls_min_version"]) for e in listening} == {("tls", "1.3")}


def test_server_context_is_tls12_or_newer_with_ecdhe_and_aead(pki: Pki) -> None:
    for floor, version in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
        cfg = load_config(None, {}, _tls_settings(pki, tls_min_version=floor))
        ctx = tls_context(cfg.server)
        assert ctx.minimum_version == version
        assert ctx.options & ssl.OP_NO_COMPRESSION
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        assert ctx.verify_mode == ssl.CERT_NONE  # no client certificate asked for
        ciphers = ctx.get_ciphers()
        tls12 = [c["name"] for c in ciphers if c["protocol"] == "TLSv1.2"]
        assert tls12 and all(n.startswith("ECDHE-") for n in tls12), tls12
        assert all(c["aead"] for c in ciphers), ciphers
        assert {c["protocol"] for c in ciphers} == {"TLSv1.2", "TLSv1.3"}
    mutual = load_config(None, {}, _tls_settings(pki, tls_ca_file=str(pki.client_ca)))
    assert tls_context(mutual.server).verify_mode == ssl.CERT_REQUIRED


def test_serve_with_a_bad_tls_setting_exits_2(provisioned: Provisioned, pki: Pki) -> None:
    result = run_cli(
        "serve",
        "--data",
        str(provisioned.data),
        env={"AUTHSRV_SERVER_TLS_CERT_FILE": str(pki.cert)},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        "authsrv serve: error: server.tls_cert_file is set but server.tls_key_file is not; "
        "set both (PEM certificate chain and its key) for TLS, or neither for plaintext\n"
    )


# -- configuration ---------------------------------------------------------------------------


def _config(tmp_path: Path, pki: Pki, case: str) -> dict[str, object]:
    """Settings for one invalid TLS configuration."""
    other_key = tmp_path / "other.key"
    if case == "mismatched-key":
        _write_key(other_key, ec.generate_private_key(ec.SECP256R1()))
        return _tls_settings(pki, tls_key_file=str(other_key))
    if case in ("key-mode-644", "key-mode-640"):
        pki.key.chmod(0o644 if case == "key-mode-644" else 0o640)
        return _tls_settings(pki)
    if case == "key-holds-a-cert":
        fd = os.open(other_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pki.cert.read_bytes())
        return _tls_settings(pki, tls_key_file=str(other_key))
    if case == "encrypted-key":
        key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
        fd = os.open(other_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"secret"),
                )
            )
        return _tls_settings(pki, tls_key_file=str(other_key))
    cases: dict[str, dict[str, object]] = {
        "cert-without-key": {"server.tls_cert_file": str(pki.cert)},
        "key-without-cert": {"server.tls_key_file": str(pki.key)},
        "ca-without-tls": {"server.tls_ca_file": str(pki.client_ca)},
        "missing-cert": _tls_settings(pki, tls_cert_file=str(tmp_path / "nope.pem")),
        "missing-key": _tls_settings(pki, tls_key_file=str(tmp_path / "nope.key")),
        "missing-ca": _tls_settings(pki, tls_ca_file=str(tmp_path / "nope-ca.pem")),
        "cert-is-a-directory": _tls_settings(pki, tls_cert_file=str(tmp_path)),
        "cert-holds-a-key": _tls_settings(pki, tls_cert_file=str(pki.key)),
        "ca-holds-a-key": _tls_settings(pki, tls_ca_file=str(pki.key)),
        "version-1.1": _tls_settings(pki, tls_min_version="1.1"),
        "version-TLSv1.2": _tls_settings(pki, tls_min_version="TLSv1.2"),
        "version-without-tls": {"server.tls_min_version": "1.0"},
        "public-plaintext": {"server.host": "0.0.0.0"},
    }
    return cases[case]


# (case, parts of the one-line message; {dir} is the test's directory)
TLS_CONFIG_ERRORS: list[tuple[str, list[str]]] = [
    ("cert-without-key", ["server.tls_cert_file is set but server.tls_key_file is not",
                          "set both", "or neither for plaintext"]),
    ("key-without-cert", ["server.tls_key_file is set but server.tls_cert_file is not"]),
    ("ca-without-tls", ["server.tls_ca_file is set without server.tls_cert_file"]),
    ("missing-cert", ["server.tls_cert_file {dir}/nope.pem not found",
                      "give the path of a PEM file"]),
    ("missing-key", ["server.tls_key_file {dir}/nope.key not found"]),
    ("missing-ca", ["server.tls_ca_file {dir}/nope-ca.pem not found"]),
    ("cert-is-a-directory", ["server.tls_cert_file {dir} is not a file"]),
    ("cert-holds-a-key", ["server.tls_cert_file {dir}/pki/server.key holds no PEM certificate"]),
    ("key-holds-a-cert", ["server.tls_key_file {dir}/other.key holds no PEM private key"]),
    ("ca-holds-a-key", ["server.tls_ca_file {dir}/pki/server.key holds no PEM certificate"]),
    ("key-mode-644", ["server.tls_key_file {dir}/pki/server.key is readable by group or others",
                      "(mode 0644)", "chmod 600 it"]),
    ("key-mode-640", ["(mode 0640)", "chmod 600 it"]),
    ("encrypted-key", ["server.tls_key_file {dir}/other.key is encrypted",
                       "give it the key unencrypted"]),
    ("mismatched-key", ["server.tls_key_file {dir}/other.key does not match the certificate in "
                        "server.tls_cert_file {dir}/pki/server.pem"]),
    ("version-1.1", ["server.tls_min_version is '1.1'; use '1.2' or '1.3'"]),
    ("version-TLSv1.2", ["server.tls_min_version is 'TLSv1.2'; use '1.2' or '1.3'"]),
    ("version-without-tls", ["server.tls_min_version is '1.0'"]),
    ("public-plaintext", ["server.host 0.0.0.0 is not loopback",
                          "configure TLS (server.tls_cert_file and server.tls_key_file)",
                          "server.allow_public_plaintext = true"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "expected"), TLS_CONFIG_ERRORS, ids=[row[0] for row in TLS_CONFIG_ERRORS]
)
def test_tls_config_errors(tmp_path: Path, pki: Pki, case: str, expected: list[str]) -> None:
    settings = _config(tmp_path, pki, case)
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, settings)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part.format(dir=tmp_path) in message, message


def test_tls_settings_from_file_and_environment(tmp_path: Path, pki: Pki) -> None:
    """A TLS listener on a public address needs no allow_public_plaintext; the settings come
    from the TOML file or AUTHSRV_SERVER_TLS_* like every other."""
    path = tmp_path / "authsrv.toml"
    path.write_text(
        f'[server]\nhost = "0.0.0.0"\ntls_cert_file = "{pki.cert}"\ntls_key_file = "{pki.key}"\n'
    )
    cfg = load_config(path, {})
    assert cfg.server.tls and cfg.server.allow_public_plaintext is False
    assert cfg.server.transport() == {
        "transport": "tls",
        "tls_min_version": "1.2",
        "client_certificates": "not requested",
    }
    env = {
        "AUTHSRV_SERVER_HOST": "192.0.2.10",
        "AUTHSRV_SERVER_TLS_CERT_FILE": str(pki.cert),
        "AUTHSRV_SERVER_TLS_KEY_FILE": str(pki.key),
        "AUTHSRV_SERVER_TLS_MIN_VERSION": "1.3",
        "AUTHSRV_SERVER_TLS_CA_FILE": str(pki.client_ca),
    }
    s = load_config(None, env).server
    assert (s.host, s.tls_min_version, s.tls_ca_file) == ("192.0.2.10", "1.3", str(pki.client_ca))
    assert s.transport()["client_certificates"] == "required"
    # Plaintext stays the default, and stays refused on a public address.
    assert load_config().server.transport() == {"transport": "plaintext"}
    with pytest.raises(ConfigError, match="is not loopback"):
        load_config(None, {"AUTHSRV_SERVER_HOST": "192.0.2.10"})
