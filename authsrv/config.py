"""Configuration: a TOML file, overridden by ``AUTHSRV_<SECTION>_<KEY>`` environment variables,
validated fully at start-up (DESIGN §7). Keys never live here.

Every limit is named with its unit and says what it costs; their relations are asserted in
:func:`validate`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import ssl
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.framing import Framing

__all__ = ["TLS_VERSIONS", "Config", "ConfigError", "load_config", "load_tls_files"]

ENV_PREFIX = "AUTHSRV_"
_INT = re.compile(r"-?[0-9]+")
# Environment variables of the CLI itself, not settings.
ENV_NOT_SETTINGS = frozenset({"AUTHSRV_CONFIG", "AUTHSRV_DATA", "AUTHSRV_KEK_FILE"})
# server.tls_min_version: the oldest TLS version a terminal may use (nothing before 1.2).
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


class ConfigError(Exception):
    """One line: what is wrong and how to fix it."""


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8583
    framing: str = "binary2"  # or "ascii4"
    # A frame is read whole into memory before decoding: this bounds memory per connection.
    frame_size_max_bytes: int = 4096
    # Each connection costs one trio task pair and its buffers (a few KiB).
    connections_max: int = 1024
    # Requests read ahead of their answers per connection; bounds queued work per terminal.
    inflight_per_connection_max: int = 16
    # A connection that sends nothing for this long is closed.
    idle_timeout_s: int = 300
    # On SIGTERM: how long in-flight requests may take before the host exits anyway.
    drain_timeout_s: int = 10
    # 0100/0200 whose field 7 is further than this from the host clock get 39=12.
    skew_max_s: int = 600
    # A plaintext listener on a non-loopback address must be allowed explicitly; a TLS one not.
    allow_public_plaintext: bool = False
    # TLS on the terminal listener: a PEM certificate chain (server certificate first) and its
    # unencrypted PEM key (mode 0600); both or neither, empty = plaintext. Costs a handshake per
    # connection (a millisecond or two of CPU) and a few KiB of buffers per connection.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # The oldest TLS version accepted: "1.2" (ECDHE with AEAD ciphers only) or "1.3".
    tls_min_version: str = "1.2"
    # PEM CA certificates: when set, a terminal must present a certificate they signed
    # (mutual TLS); empty = no client certificate asked for.
    tls_ca_file: str = ""
    # Server processes sharing the port (SO_REUSEPORT) and the store; each costs one core
    # at full load and its own connections (connections_max applies per process).
    workers: int = 1

    @property
    def tls(self) -> bool:
        """Whether the terminal listener speaks TLS (validation ensures the key is set too)."""
        return bool(self.tls_cert_file)

    def transport(self) -> dict[str, str]:
        """What the start-up log line says about the terminal listener."""
        if not self.tls:
            return {"transport": "plaintext"}
        return {
            "transport": "tls",
            "tls_min_version": self.tls_min_version,
            "client_certificates": "required" if self.tls_ca_file else "not requested",
        }


@dataclass(slots=True)
class StoreConfig:
    path: str = "data"
    # LMDB map: the most the store may grow to; address space only until used.
    map_size_mib: int = 4096
    # Requests decided in one write transaction (one fsync).
    batch_size_max: int = 256
    # Duplicate records are kept this long: longer than any terminal repeats or reverses.
    dup_window_s: int = 7 * 86_400
    # An open pre-authorization hold is released after this long.
    hold_expiry_s: int = 7 * 86_400
    # How often the writer releases expired holds and prunes old duplicate records ...
    sweep_interval_s: int = 5
    # ... and how many of each at most per sweep (one write transaction).
    sweep_batch_max: int = 1000
    # The scheduling priority (nice, -20..0) of the writer's thread while it decides and
    # commits a batch, holding the write lock that every worker shares: the sooner the holder
    # runs, the sooner the lock is free (docs/performance.md). Below 0 needs CAP_SYS_NICE;
    # without it the host warns once and the writer keeps the process's priority.
    writer_nice: int = 0


@dataclass(slots=True)
class SecurityConfig:
    # Terminals without a security profile (no MAC, no PIN) are served only in demo mode.
    demo_mode: bool = False
    # After a key change (0800 70=101) the replaced working keys are still accepted this long.
    key_grace_s: int = 900
    # Wrong PINs in a row before a card answers 75 (reset by a right PIN).
    pin_tries_max: int = 3


@dataclass(slots=True)
class SettlementConfig:
    # A business day starts at this local time (HH:MM) on its date, in this IANA time zone.
    cutover_time: str = "00:00"
    timezone: str = "UTC"
    # The host closes the open day itself at its cut-over time (else only `settle cutover`).
    auto_cutover: bool = True
    # Where the host writes each closed day's clearing files (created if missing); empty: the
    # directory "settlement" beside the store's directory.
    dir: str = ""
    # Sender id in every clearing file's header (1-11 letters, digits, "_", ".", "-").
    host_id: str = "AUTHSRV"
    # The host's sweep moves what is left on cards past their expiry month to breakage
    # (store.sweep_batch_max cards per sweep); else only `authsrv settle expire` does.
    expiry_sweep: bool = True


@dataclass(slots=True)
class CampaignConfig:
    # Wrong online activation codes before a campaign card's online activation locks (until
    # `authsrv cards unlock-activation`). A code has 40 bits: 5 tries give a guesser a chance
    # of about 5 in 10^12 per card.
    activation_tries_max: int = 5


@dataclass(slots=True)
class ApiConfig:
    """The HTTP API (docs/api.md): ``authsrv api`` alone, or beside the ISO listener in
    ``authsrv serve`` (worker 0 of several) when ``enabled``."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9584
    # A plaintext API on a non-loopback address must be allowed explicitly (card numbers and
    # card holders' data cross it); a TLS one not. TLS: PEM chain and unencrypted key (0600).
    allow_public_plaintext: bool = False
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_min_version: str = "1.2"
    # A request body is read whole into memory before it is decoded; a larger one gets 413.
    body_size_max_bytes: int = 65_536
    # Requests handled at once (each holds its body, a report its snapshot); more get 503.
    requests_inflight_max: int = 64
    # How long a request waits for the writer or a report slot before it gets 503; also how
    # long a client may take to send a request.
    request_timeout_s: int = 10
    # An idle keep-alive connection is closed after this long.
    keep_alive_timeout_s: int = 5
    # Write jobs queued for the single writer at once; each is one write transaction and fsync.
    write_queue_max: int = 32
    # Reports built at once (each reads its journal range in a worker thread).
    reports_concurrency_max: int = 2
    # Cards per issue request: one write transaction terminals wait for (tens of us a card).
    issue_count_max: int = 10_000
    # Where issue requests write their card files (0600); empty: "card-issue" beside the store.
    issue_dir: str = ""
    # Transactions shown in a card's history (back office and self-service).
    history_rows_max: int = 50
    # Self-service token buckets, kept in the API process's memory: per client (API key and
    # address) and per card (keyed hash of its number): a burst, then so many a minute.
    self_client_burst: int = 10
    self_client_per_min: int = 30
    self_card_burst: int = 5
    self_card_per_min: int = 5
    # Buckets kept at most (a few hundred bytes each); when full and none has refilled, a
    # request that needs a new one gets 429.
    rate_buckets_max: int = 100_000


@dataclass(slots=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9583


@dataclass(slots=True)
class LogConfig:
    level: str = "info"  # debug, info, warning, error
    requests: bool = True  # one JSON line per request


@dataclass(slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    settlement: SettlementConfig = field(default_factory=SettlementConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def framing(self) -> Framing:
        return Framing(self.server.framing)

    @property
    def data_path(self) -> Path:
        return Path(self.store.path)

    @property
    def settlement_dir(self) -> Path:
        if self.settlement.dir:
            return Path(self.settlement.dir)
        return self.data_path.absolute().parent / "settlement"

    @property
    def writer_queue_max(self) -> int:
        """Requests waiting for the writer: every connection's in-flight window fits."""
        return self.server.connections_max * self.server.inflight_per_connection_max


SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "store": StoreConfig,
    "security": SecurityConfig,
    "settlement": SettlementConfig,
    "metrics": MetricsConfig,
    "log": LogConfig,
    "campaign": CampaignConfig,
    "api": ApiConfig,
}


def _coerce(where: str, value: Any, kind: Any) -> Any:
    if kind in ("bool", bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind in ("int", int):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value)
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _apply(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"unknown section [{section}] in {source}; known: {', '.join(SECTIONS)}")
    target = getattr(cfg, section)
    names = {f.name: f.type for f in dataclasses.fields(target)}
    if key not in names:
        raise ConfigError(f"unknown setting {section}.{key} in {source}; known: {', '.join(names)}")
    setattr(target, key, _coerce(f"{section}.{key} ({source})", value, names[key]))


def _range(where: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{where} is {value}; it must be between {low} and {high}")


def validate(cfg: Config) -> None:
    s = cfg.server
    _range("server.port", s.port, 0, 65535)
    if s.framing not in {f.value for f in Framing}:
        raise ConfigError(f"server.framing is {s.framing!r}; use 'binary2' or 'ascii4'")
    _range("server.frame_size_max_bytes", s.frame_size_max_bytes, 64, cfg.framing.payload_len_max)
    _range("server.connections_max", s.connections_max, 1, 100_000)
    _range("server.inflight_per_connection_max", s.inflight_per_connection_max, 1, 1024)
    _range("server.idle_timeout_s", s.idle_timeout_s, 1, 86_400)
    _range("server.drain_timeout_s", s.drain_timeout_s, 1, 600)
    _range("server.skew_max_s", s.skew_max_s, 1, 86_400)
    _range("server.workers", s.workers, 1, 64)
    try:
        addr = ipaddress.ip_address(s.host)
    except ValueError:
        raise ConfigError(f"server.host {s.host!r} is not an IP address, e.g. 127.0.0.1") from None
    _validate_tls(s)
    if not addr.is_loopback and not s.tls and not s.allow_public_plaintext:
        raise ConfigError(
            f"server.host {s.host} is not loopback: card data would cross the network in clear; "
            "configure TLS (server.tls_cert_file and server.tls_key_file) or "
            "set server.allow_public_plaintext = true to accept that"
        )
    st = cfg.store
    _range("store.map_size_mib", st.map_size_mib, 16, 16 * 1024 * 1024)
    _range("store.batch_size_max", st.batch_size_max, 1, 65_536)
    _range("store.dup_window_s", st.dup_window_s, 3600, 366 * 86_400)
    _range("store.hold_expiry_s", st.hold_expiry_s, 60, 366 * 86_400)
    _range("store.sweep_interval_s", st.sweep_interval_s, 1, 3600)
    _range("store.sweep_batch_max", st.sweep_batch_max, 1, 100_000)
    _range("store.writer_nice", st.writer_nice, -20, 0)
    if st.hold_expiry_s > st.dup_window_s:
        raise ConfigError(
            "store.hold_expiry_s must not exceed store.dup_window_s: a hold would outlive the "
            "record its completion and reversal are matched against"
        )
    if st.dup_window_s * 1000 < s.skew_max_s * 1000 * 2:
        raise ConfigError(
            "store.dup_window_s must be at least twice server.skew_max_s, or a retransmission "
            "could be processed as new after its record was pruned"
        )
    sec = cfg.security
    _range("security.key_grace_s", sec.key_grace_s, 0, 7 * 86_400)
    _range("security.pin_tries_max", sec.pin_tries_max, 1, 10)
    _validate_settlement(cfg.settlement)
    _range("campaign.activation_tries_max", cfg.campaign.activation_tries_max, 1, 20)
    _validate_api(cfg)
    m = cfg.metrics
    _range("metrics.port", m.port, 0, 65535)
    try:
        ipaddress.ip_address(m.host)
    except ValueError:
        raise ConfigError(f"metrics.host {m.host!r} is not an IP address") from None
    if cfg.log.level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log.level is {cfg.log.level!r}; use debug, info, warning or error")
    assert cfg.writer_queue_max >= s.inflight_per_connection_max


_HOST_ID = re.compile(r"[A-Za-z0-9_.-]{1,11}", re.ASCII)


def _validate_settlement(st: SettlementConfig) -> None:
    from settlement.day import parse_cutover_time, parse_timezone

    try:
        parse_cutover_time(st.cutover_time)
        parse_timezone(st.timezone)
    except ValueError as exc:
        which = "cutover_time" if "HH:MM" in str(exc) else "timezone"
        raise ConfigError(f"settlement.{which}: {exc}") from None
    if not _HOST_ID.fullmatch(st.host_id):
        raise ConfigError(
            f"settlement.host_id is {st.host_id!r}; use 1-11 letters, digits, '_', '.' or '-'"
        )


def _validate_tls(s: ServerConfig) -> None:
    if s.tls_min_version not in TLS_VERSIONS:
        raise ConfigError(
            f"server.tls_min_version is {s.tls_min_version!r}; use '1.2' or '1.3' "
            "(older versions are not accepted)"
        )
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        given, missing = (
            ("tls_cert_file", "tls_key_file")
            if s.tls_cert_file
            else ("tls_key_file", "tls_cert_file")
        )
        raise ConfigError(
            f"server.{given} is set but server.{missing} is not; set both (PEM certificate "
            "chain and its key) for TLS, or neither for plaintext"
        )
    if s.tls_ca_file and not s.tls:
        raise ConfigError(
            "server.tls_ca_file is set without server.tls_cert_file and server.tls_key_file; "
            "client certificates are checked over TLS only: set those too, or clear tls_ca_file"
        )
    if not s.tls:
        return
    cert = _read_tls_file("tls_cert_file", s.tls_cert_file)
    if _PEM_CERTIFICATE not in cert:
        raise ConfigError(
            f"server.tls_cert_file {s.tls_cert_file} holds no PEM certificate; give the "
            "certificate chain in PEM (-----BEGIN CERTIFICATE-----), the server's first"
        )
    key = _read_tls_file("tls_key_file", s.tls_key_file, secret=True)
    if not _PEM_PRIVATE_KEY.search(key):
        raise ConfigError(
            f"server.tls_key_file {s.tls_key_file} holds no PEM private key; give the "
            "certificate's key in PEM (-----BEGIN PRIVATE KEY-----)"
        )
    del key  # not kept: ssl reads the file itself
    if s.tls_ca_file and _PEM_CERTIFICATE not in _read_tls_file("tls_ca_file", s.tls_ca_file):
        raise ConfigError(
            f"server.tls_ca_file {s.tls_ca_file} holds no PEM certificate; give the CA "
            "certificates that sign terminal certificates, in PEM"
        )
    # What the server will do, once, so that a mismatch is a start-up error.
    load_tls_files(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), s)


def _read_tls_file(setting: str, name: str, *, secret: bool = False) -> bytes:
    path = Path(name)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"server.{setting} {path} is not a file; give the path of a PEM file")
        # The same rule as for the key-encrypting key (keys/keystore.py).
        if secret and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"server.{setting} {path} is readable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"server.{setting} {path} not found; give the path of a PEM file"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"server.{setting} {path} is not readable by this user; "
            "give the service user read access to it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"server.{setting} {path} cannot be read: {exc.strerror}") from None


def load_tls_files(ctx: ssl.SSLContext, s: ServerConfig) -> None:
    """Load the server's certificate chain, key and (for mutual TLS) CA certificates into
    ``ctx``.

    Error handling: :class:`ConfigError` with one line naming the file and the fix.
    """
    assert s.tls

    def encrypted() -> bytes:
        # Without this callback OpenSSL would prompt on the terminal of an unattended host.
        raise ConfigError(
            f"server.tls_key_file {s.tls_key_file} is encrypted; the host starts unattended: "
            "give it the key unencrypted (mode 0600)"
        )

    try:
        ctx.load_cert_chain(s.tls_cert_file, s.tls_key_file, password=encrypted)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"server.tls_key_file {s.tls_key_file} does not match the certificate in "
                f"server.tls_cert_file {s.tls_cert_file}; give the key the certificate was "
                "issued for"
            ) from None
        raise ConfigError(
            f"server.tls_cert_file {s.tls_cert_file} with server.tls_key_file "
            f"{s.tls_key_file} cannot be loaded ({exc.reason or 'bad PEM'}); give PEM "
            "certificates and the certificate's unencrypted PEM key"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"server.tls_cert_file {s.tls_cert_file} or server.tls_key_file {s.tls_key_file} "
            f"cannot be read: {exc.strerror}"
        ) from None
    if not s.tls_ca_file:
        return
    try:
        ctx.load_verify_locations(cafile=s.tls_ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"server.tls_ca_file {s.tls_ca_file} cannot be loaded ({exc.reason or 'bad PEM'}); "
            "give the CA certificates that sign terminal certificates, in PEM"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"server.tls_ca_file {s.tls_ca_file} cannot be read: {exc.strerror}"
        ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """File, then environment, then command-line ``overrides`` (``{"server.port": 0}``).

    Error handling: :class:`ConfigError` with one line naming the setting and the fix.
    """
    cfg = Config()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{section} in {path} must be a [section] table")
            for key, value in values.items():
                _apply(cfg, section, key, value, str(path))
    for name, value in (env or {}).items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        _apply(cfg, section, key, value, f"environment {name}")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _apply(cfg, section, key, value, "command line")
    validate(cfg)
    return cfg


def _validate_api(cfg: Config) -> None:
    a = cfg.api
    _range("api.port", a.port, 0, 65535)
    try:
        addr = ipaddress.ip_address(a.host)
    except ValueError:
        raise ConfigError(f"api.host {a.host!r} is not an IP address, e.g. 127.0.0.1") from None
    if a.tls_min_version not in TLS_VERSIONS:
        raise ConfigError(f"api.tls_min_version is {a.tls_min_version!r}; use '1.2' or '1.3'")
    if bool(a.tls_cert_file) != bool(a.tls_key_file):
        raise ConfigError(
            "set both api.tls_cert_file and api.tls_key_file for TLS, or neither for plaintext"
        )
    if a.tls_cert_file:
        load_api_tls(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), a)
    if not addr.is_loopback and not a.tls_cert_file and not a.allow_public_plaintext:
        raise ConfigError(
            f"api.host {a.host} is not loopback: card numbers and card holders' data would "
            "cross the network in clear; configure TLS (api.tls_cert_file and api.tls_key_file) "
            "or set api.allow_public_plaintext = true to accept that"
        )
    if a.enabled and a.port and a.port == cfg.server.port:
        raise ConfigError(f"api.port {a.port} is server.port too; give the API its own port")
    _range("api.body_size_max_bytes", a.body_size_max_bytes, 1024, 16 * 1024 * 1024)
    _range("api.requests_inflight_max", a.requests_inflight_max, 1, 10_000)
    _range("api.request_timeout_s", a.request_timeout_s, 1, 600)
    _range("api.keep_alive_timeout_s", a.keep_alive_timeout_s, 1, 600)
    _range("api.write_queue_max", a.write_queue_max, 1, 10_000)
    _range("api.reports_concurrency_max", a.reports_concurrency_max, 1, 64)
    _range("api.issue_count_max", a.issue_count_max, 1, 1_000_000)
    _range("api.history_rows_max", a.history_rows_max, 1, 1000)
    _range("api.self_client_burst", a.self_client_burst, 1, 100_000)
    _range("api.self_client_per_min", a.self_client_per_min, 1, 1_000_000)
    _range("api.self_card_burst", a.self_card_burst, 1, 100_000)
    _range("api.self_card_per_min", a.self_card_per_min, 1, 1_000_000)
    _range("api.rate_buckets_max", a.rate_buckets_max, 100, 10_000_000)


def load_api_tls(ctx: ssl.SSLContext, a: ApiConfig) -> None:
    """Load the API's certificate chain and key into ``ctx``.

    Error handling: :class:`ConfigError` with one line naming the file and the fix.
    """
    key = Path(a.tls_key_file)
    try:
        if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"api.tls_key_file {key} is readable by group or others; chmod 600 it"
            )
    except OSError as exc:
        raise ConfigError(f"api.tls_key_file {key} cannot be read: {exc.strerror}") from None

    def encrypted() -> bytes:
        raise ConfigError(f"api.tls_key_file {key} is encrypted; give it unencrypted (mode 0600)")

    try:
        ctx.load_cert_chain(a.tls_cert_file, a.tls_key_file, password=encrypted)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"api.tls_cert_file {a.tls_cert_file} with api.tls_key_file {key} cannot be loaded "
            f"({exc.reason or 'bad PEM'}); give a PEM chain and the certificate's own key"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"api.tls_cert_file {a.tls_cert_file} cannot be read: {exc.strerror}"
        ) from None
