"""Configuration (file, environment, command line; validated whole) and the ``authsrv`` command
line as an operator meets it: help with examples, one-line errors with exit status 2 (DESIGN §7).

CLI tests run the real command in a subprocess (about 0.25 s each), so they are few.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from psec import tr31

from authsrv.app import kek_path, open_keys, open_store
from authsrv.cli import build_parser
from authsrv.config import ConfigError, load_config
from keys import load_kek
from protocol.framing import Framing
from tests.helpers import Provisioned, provision, run_cli

# -- configuration -----------------------------------------------------------------------------


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authsrv.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid() -> None:
    cfg = load_config()
    assert (cfg.server.host, cfg.server.port, cfg.framing) == ("127.0.0.1", 8583, Framing.BINARY2)
    assert cfg.server.frame_size_max_bytes == 4096
    assert cfg.server.skew_max_s == 600
    assert cfg.server.allow_public_plaintext is False
    assert (cfg.metrics.enabled, cfg.metrics.host, cfg.metrics.port) == (True, "127.0.0.1", 9583)
    assert (cfg.store.path, cfg.store.map_size_mib, cfg.store.batch_size_max) == ("data", 4096, 256)
    assert (cfg.log.level, cfg.log.requests) == ("info", True)
    assert cfg.writer_queue_max == 1024 * 16
    assert cfg.data_path == Path("data")


def test_file_values(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
[server]
port = 9000
framing = "ascii4"
frame_size_max_bytes = 9999
skew_max_s = 120
connections_max = 10
inflight_per_connection_max = 4

[store]
path = "/srv/authsrv"
batch_size_max = 64
map_size_mib = 16

[metrics]
enabled = false
port = 0

[log]
level = "debug"
requests = false
""",
    )
    cfg = load_config(path, {})
    assert (cfg.server.port, cfg.framing, cfg.server.frame_size_max_bytes) == (
        9000,
        Framing.ASCII4,
        9999,
    )
    assert (cfg.server.skew_max_s, cfg.writer_queue_max) == (120, 40)
    assert (cfg.store.path, cfg.store.batch_size_max, cfg.store.map_size_mib) == (
        "/srv/authsrv",
        64,
        16,
    )
    assert (cfg.metrics.enabled, cfg.metrics.port) == (False, 0)
    assert (cfg.log.level, cfg.log.requests) == ("debug", False)


def test_environment_beats_file_and_command_line_beats_environment(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[server]\nport = 9000\n[metrics]\nenabled = true\n")
    env = {"AUTHSRV_SERVER_PORT": "9100", "AUTHSRV_METRICS_ENABLED": "false"}
    assert load_config(path, {}).server.port == 9000
    assert load_config(path, env).server.port == 9100
    assert load_config(path, env).metrics.enabled is False
    assert load_config(path, env, {"server.port": 9200}).server.port == 9200
    assert load_config(None, env, {"metrics.enabled": True}).metrics.enabled is True


@pytest.mark.parametrize(
    ("env", "setting", "value"),
    [
        ({"AUTHSRV_SERVER_ALLOW_PUBLIC_PLAINTEXT": "true", "AUTHSRV_SERVER_HOST": "0.0.0.0"},
         "server.host", "0.0.0.0"),
        ({"AUTHSRV_SERVER_HOST": "::1"}, "server.host", "::1"),
        ({"AUTHSRV_SERVER_FRAME_SIZE_MAX_BYTES": "64"}, "server.frame_size_max_bytes", 64),
        ({"AUTHSRV_LOG_REQUESTS": "0"}, "log.requests", False),
        ({"AUTHSRV_LOG_REQUESTS": "TRUE"}, "log.requests", True),
        ({"AUTHSRV_STORE_MAP_SIZE_MIB": " 32 "}, "store.map_size_mib", 32),
        # The CLI's own variables and everything without the prefix are not settings.
        ({"AUTHSRV_CONFIG": "x.toml", "AUTHSRV_DATA": "d", "AUTHSRV_KEK_FILE": "k", "PORT": "1"},
         "server.port", 8583),
    ],
)  # fmt: skip
def test_environment_values(env: Mapping[str, str], setting: str, value: object) -> None:
    section, _, key = setting.partition(".")
    assert getattr(getattr(load_config(None, env), section), key) == value


def _error_id(toml: str, env: Mapping[str, str], overrides: Mapping[str, Any]) -> str:
    text = toml or " ".join(f"env {k}={v}" for k, v in env.items())
    text = text or " ".join(f"cli {k}={v}" for k, v in overrides.items())
    return re.sub(r"\W+", "-", text).strip("-")


# (TOML file text, environment, command-line overrides, parts of the one-line message)
# fmt: off
CONFIG_ERRORS: list[tuple[str, dict[str, str], dict[str, Any], list[str]]] = [
    ("[bogus]\nx = 1", {}, {},
     ["unknown section [bogus]", "known: server, store, security, settlement, metrics"]),
    ("[server]\nprot = 1", {}, {}, ["unknown setting server.prot", "known: host, port"]),
    ('[server]\nport = "abc"', {}, {}, ["server.port", "must be a whole number", "'abc'"]),
    ("[server]\nport = true", {}, {}, ["server.port", "must be a whole number"]),
    ("[server]\nport = 1.5", {}, {}, ["server.port", "must be a whole number"]),
    ('[metrics]\nenabled = "maybe"', {}, {}, ["metrics.enabled", "must be true or false"]),
    ("[log]\nlevel = 3", {}, {}, ["log.level", "must be a string"]),
    ("[server]\nport = 70000", {}, {}, ["server.port is 70000", "between 0 and 65535"]),
    ("[server]\nport = -1", {}, {}, ["server.port is -1", "between 0 and 65535"]),
    ("[server]\nframe_size_max_bytes = 10", {}, {},
     ["server.frame_size_max_bytes is 10", "between 64 and 65535"]),
    ('[server]\nframing = "ascii4"\nframe_size_max_bytes = 10000', {}, {},
     ["server.frame_size_max_bytes is 10000", "between 64 and 9999"]),
    ('[server]\nframing = "bcd"', {}, {}, ["server.framing is 'bcd'", "'binary2' or 'ascii4'"]),
    ("[server]\nconnections_max = 0", {}, {}, ["server.connections_max is 0"]),
    ("[server]\ninflight_per_connection_max = 1025", {}, {},
     ["server.inflight_per_connection_max is 1025"]),
    ("[server]\nidle_timeout_s = 0", {}, {}, ["server.idle_timeout_s is 0"]),
    ("[server]\ndrain_timeout_s = 601", {}, {}, ["server.drain_timeout_s is 601"]),
    ("[server]\nskew_max_s = 0", {}, {}, ["server.skew_max_s is 0"]),
    ('[server]\nhost = "0.0.0.0"', {}, {},
     ["server.host 0.0.0.0 is not loopback", "server.allow_public_plaintext = true"]),
    ('[server]\nhost = "192.0.2.10"', {}, {}, ["server.host 192.0.2.10 is not loopback"]),
    ('[server]\nhost = "localhost"', {}, {}, ["server.host 'localhost' is not an IP address"]),
    ("[store]\nmap_size_mib = 8", {}, {}, ["store.map_size_mib is 8", "between 16 and"]),
    ("[store]\nbatch_size_max = 0", {}, {}, ["store.batch_size_max is 0"]),
    ("[store]\nwriter_nice = 1", {}, {}, ["store.writer_nice is 1", "between -20 and 0"]),
    ("[metrics]\nport = 65536", {}, {}, ["metrics.port is 65536"]),
    ('[metrics]\nhost = "x"', {}, {}, ["metrics.host 'x' is not an IP address"]),
    ('[log]\nlevel = "loud"', {}, {}, ["log.level is 'loud'", "debug, info, warning or error"]),
    ("port = 8583", {}, {}, ["port in", "must be a [section] table"]),
    ("[server\nport = 1", {}, {}, ["is not valid TOML"]),
    ("", {"AUTHSRV_SERVER_PORT": "abc"}, {},
     ["server.port (environment AUTHSRV_SERVER_PORT) must be a whole number"]),
    ("", {"AUTHSRV_SERVER_PORT": "--80"}, {},
     ["server.port (environment AUTHSRV_SERVER_PORT) must be a whole number"]),
    ("", {"AUTHSRV_SERVER_PORT": "²"}, {},
     ["server.port (environment AUTHSRV_SERVER_PORT) must be a whole number"]),
    ("", {"AUTHSRV_SERVER_PORT": "70000"}, {}, ["server.port is 70000"]),
    ("", {"AUTHSRV_BOGUS": "1"}, {}, ["unknown section [bogus] in environment AUTHSRV_BOGUS"]),
    ("", {"AUTHSRV_SERVER_TIMEOUT": "1"}, {},
     ["unknown setting server.timeout in environment AUTHSRV_SERVER_TIMEOUT"]),
    ("", {"AUTHSRV_METRICS_ENABLED": "yes"}, {}, ["metrics.enabled", "must be true or false"]),
    ("", {"AUTHSRV_SERVER_HOST": "0.0.0.0"}, {}, ["server.host 0.0.0.0 is not loopback"]),
    ("", {}, {"server.port": 70000}, ["server.port is 70000"]),
    ("", {}, {"server.nope": 1}, ["unknown setting server.nope in command line"]),
    ("", {}, {"nope": 1}, ["unknown section [nope] in command line"]),
    ("[server]\nport = 9000", {"AUTHSRV_SERVER_PORT": "x"}, {"server.port": 1},
     ["environment AUTHSRV_SERVER_PORT"]),
]
# fmt: on


@pytest.mark.parametrize(
    ("toml", "env", "overrides", "expected"),
    CONFIG_ERRORS,
    ids=[_error_id(*row[:3]) for row in CONFIG_ERRORS],
)
def test_config_errors(
    tmp_path: Path,
    toml: str,
    env: Mapping[str, str],
    overrides: Mapping[str, Any],
    expected: list[str],
) -> None:
    path = _toml(tmp_path, toml) if toml else None
    with pytest.raises(ConfigError) as info:
        load_config(path, env, overrides)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nowhere.toml")
    assert str(info.value) == f"config file {tmp_path / 'nowhere.toml'} not found"


# -- the command line: help ------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def _ends_with_examples(text: str) -> bool:
    last = text.rstrip().split("\n\n")[-1]
    return last.startswith("examples:\n  authsrv ")


def test_every_command_help_ends_with_examples() -> None:
    """In process (cheap): every command and command group, including the nested ones."""
    found = dict(_parsers(build_parser()))
    assert {"authsrv", "authsrv init", "authsrv cards issue", "authsrv simulate"} <= set(found)
    missing = [prog for prog, p in found.items() if not _ends_with_examples(p.format_help())]
    assert missing == []


@pytest.mark.parametrize(
    "argv",
    [[], ["init"], ["products"], ["cards", "issue"], ["serve"]],
    ids=["authsrv", "init", "products", "cards-issue", "serve"],
)
def test_help_ends_with_examples(argv: list[str]) -> None:
    result = run_cli(*argv, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert _ends_with_examples(result.stdout), result.stdout


# -- the command line: one-line errors -----------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    """A provisioned store that the error cases read but never change."""
    return provision(tmp_path_factory.mktemp("cli"), card_count=2)


def _one_line_usage_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    return result.stderr


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["products", "add", "--data", "{data}", "--id", "X"], {},
         "authsrv products add: error: the following arguments are required: --chain, --prefix"),
        (["cards", "issue", "--data", "{data}", "--product", "GIFT", "--count", "x", "--out",
          "{out}"], {}, "argument --count: invalid int value: 'x'"),
        (["bogus"], {}, "authsrv: error: argument command: invalid choice: 'bogus'"),
        ([], {}, "authsrv: error: the following arguments are required: command"),
        (["cards", "issue", "--data", "{data}", "--product", "NOPE", "--count", "1", "--out",
          "{out}"], {}, "authsrv cards: error: product NOPE does not exist"),
        (["cards", "issue", "--data", "{data}", "--product", "GIFT", "--count", "1", "--expiry",
          "2913", "--out", "{out}"], {}, "--expiry must be YYMM, e.g. 2912"),
        (["products", "add", "--data", "{data}", "--id", "X", "--chain", "ACME", "--prefix",
          "603629", "--currency", "999"], {}, "--currency '999' is not a known ISO 4217"),
        (["products", "add", "--data", "{data}", "--id", "X", "--chain", "ACME", "--prefix",
          "603629", "--load-min", "1.234"], {},
         "--load-min: amount '1.234' is not a positive decimal with at most 2 decimals"),
        (["check", "--data", "{missing}"], {}, "authsrv check: error: no store at"),
        (["check", "--data", "{data}"], {"AUTHSRV_SERVER_PORT": "abc"},
         "server.port (environment AUTHSRV_SERVER_PORT) must be a whole number"),
    ],
    ids=[
        "missing-required-option",
        "non-int-count",
        "unknown-subcommand",
        "no-subcommand",
        "unknown-product",
        "bad-expiry",
        "bad-currency",
        "bad-amount",
        "store-missing",
        "bad-environment",
    ],
)  # fmt: skip
def test_bad_arguments_give_one_line_and_exit_2(
    shared: Provisioned,
    tmp_path: Path,
    argv: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    where = {
        "data": str(shared.data),
        "out": str(tmp_path / "cards.csv"),
        "missing": str(tmp_path / "no-store"),
    }
    result = run_cli(*(a.format(**where) for a in argv), env=env)
    stderr = _one_line_usage_error(result)
    assert expected in stderr
    assert not (tmp_path / "cards.csv").exists()


def test_serve_with_a_bad_config_file_exits_2(shared: Provisioned, tmp_path: Path) -> None:
    config = _toml(tmp_path, "[server]\nport = 70000\n")
    result = run_cli("serve", "--config", str(config), "--data", str(shared.data))
    stderr = _one_line_usage_error(result)
    assert "authsrv serve: error: server.port is 70000; it must be between 0 and 65535" in stderr


# -- the command line: an operator's first session -----------------------------------------------


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_operator_session(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = ["--data", str(data)]

    out = _ok(run_cli("init", *d))
    assert f"created store at {data}" in out
    assert (data / "data.mdb").exists()
    stderr = _one_line_usage_error(run_cli("init", *d))
    assert f"authsrv init: error: a store already exists at {data}" in stderr

    product = ["products", "add", *d, "--id", "GIFT", "--chain", "ACME", "--prefix", "603628"]
    assert "added product GIFT (gift, 978, range 603628)" in _ok(run_cli(*product))
    assert "product GIFT exists already" in _one_line_usage_error(run_cli(*product))

    store = ["stores", "add", *d, "--id", "S0001", "--name", "Oslo City", "--chain", "ACME"]
    assert "added store S0001 (Oslo City, chain ACME)" in _ok(run_cli(*store))
    assert "store S0001 exists already" in _one_line_usage_error(run_cli(*store))

    terminal = ["terminals", "add", *d, "--id", "T0000001", "--store", "S0001"]
    assert "added terminal T0000001 in store S0001" in _ok(run_cli(*terminal))
    assert "terminal T0000001 exists already" in _one_line_usage_error(run_cli(*terminal))

    cards = tmp_path / "cards.csv"
    out = _ok(
        run_cli("cards", "issue", *d, "--product", "GIFT", "--count", "2", "--out", str(cards))
    )
    assert f"issued 2 cards of product GIFT (ids 1..2); card numbers written once to {cards}" in out
    assert cards.stat().st_mode & 0o777 == 0o600
    pan = cards.read_text().splitlines()[1].split(",")[0]
    assert re.fullmatch(r"603628\d{10}", pan)

    show = run_cli("cards", "show", *d, "--card", "@1", "--cards", str(cards))
    out = _ok(show)
    assert f"card      {pan[:6]}******{pan[-4:]}  (id 1)" in out
    assert "state     issued" in out
    assert "balance   0.00 EUR" in out
    assert pan not in show.stdout + show.stderr

    out = _ok(run_cli("check", *d))
    assert "check passed: 0 accounts, 0 transfers" in out

    listing = run_cli("keys", "list", *d)
    out = _ok(listing)
    store_ = open_store(data, 4096, readonly=True)
    try:
        expected = open_keys(store_).check_values()
        with store_.read() as led:
            blocks = led.key_blocks()
    finally:
        store_.close()
    assert sorted(expected) == ["activation/1", "dup-content/1", "pan-hash/1", "pin-verify/1"]
    lines = out.splitlines()
    assert lines[0].startswith("key-encrypting key check value ")
    lines = lines[1:]
    assert len(lines) == len(expected)
    for line, (name, kcv) in zip(lines, sorted(expected.items()), strict=True):
        assert line.split()[0] == name
        assert line.endswith(f"check value {kcv}")
    # No key material: neither the KEK, nor a key block, nor a clear key (nor a piece of one).
    kek = load_kek(kek_path(data))
    secrets = [kek.hex(), *blocks.values()]
    secrets += [bytes(tr31.unwrap(kek, block)[1]).hex() for block in blocks.values()]
    shown = (listing.stdout + listing.stderr).lower()
    for secret in secrets:
        for i in range(0, len(secret) - 16, 8):
            assert secret[i : i + 16].lower() not in shown
