"""Terminal security for the bench: the profile and keys of the bench terminals in the store,
and the terminal side in the generator (``--security``).

The bench plays the key-injection facility and the terminals. For ``mac-*`` it creates one
terminal master key per terminal (``tmk/BT000001-aes``), for ``dukpt-*`` one base derivation
key per algorithm (``bdk/bench-aes``) and a KSN prefix per terminal; it enters them into the
store under the KEK, as ``authsrv keys add`` does, and keeps the clear keys in
``bench-keys.json`` beside the store (mode 0600), never in it.

At the start of every run the bench sets its terminals to the run's profile and clears their
working keys: each static-key terminal's first key change is then the unMACed first one, and
the next ones (after a reconnection) are MACed under the keys it holds. DUKPT terminals
continue from the counter the host last accepted (read from their terminal records).

In the generator a request is MACed in place: the template carries field 48 ``KS`` (DUKPT) and
the MAC field (64, or 128 with a secondary bitmap) as placeholders at fixed offsets, so sealing
is a counter step, a key derivation (DUKPT) and one MAC. Answers' MACs are checked (30 and 63
carry none). A retransmission resends the sealed bytes: the same MAC and the same KSN.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from psec import tr31

from authsrv.app import kek_path, open_store
from authsrv.model import SecurityProfile
from bench.provision import BENCH_PIN, PAN_LEN, BenchError, Layout
from bench.wire import Template
from keys import dukpt, load_kek, mac, pinblock
from keys.keystore import named_key_block, split_transport
from protocol.tlv import decode_tlv
from simulators.security import PROFILES, Sealed, TerminalSecurity, TerminalSecurityError
from simulators.terminal import build_request, decode_response

__all__ = [
    "KEYS_FILE",
    "PROFILES",
    "KeyChangeError",
    "Sealer",
    "TerminalKeyset",
    "prepare_security",
]

KEYS_FILE = "bench-keys.json"
KEY_LEN = 16  # terminal master keys and BDKs: TDES double length or AES-128
MAC_HEX_LEN = 16
KEY_CHANGE_CODE = "101"
UNMACED_ANSWERS = (b"30", b"63")  # format errors and security violations carry no MAC
BDK_NAMES = {"dukpt-aes": "bdk/bench-aes", "dukpt-tdes": "bdk/bench-tdes"}
# The bench devices' KSNs: a fixed 16-bit issuer part, then the terminal number.
KSN_ISSUER = 0xBE7C
TDES_COUNTER_BITS = 21
TDES_COUNTER_MAX = (1 << TDES_COUNTER_BITS) - 1


class KeyChangeError(Exception):
    """A key change the host refused or answered with keys that do not check."""


@dataclass(frozen=True, slots=True)
class TerminalKeyset:
    """One bench terminal's side: its profile and clear keys (``repr`` shows none)."""

    profile: str
    tmk: bytes = field(default=b"", repr=False)
    initial_key: bytes = field(default=b"", repr=False)
    ksn: bytes = b""  # DUKPT: the device's KSN with the counter the host accepted last


def tmk_name(terminal_id: str, profile: str) -> str:
    return f"tmk/{terminal_id}-{'aes' if profile.endswith('aes') else 'tdes'}"


def ksn_prefix(profile: str, index: int) -> str:
    """The device part of a bench terminal's KSN (AES 16, TDES 20 hex digits).

    >>> ksn_prefix("dukpt-aes", 0), ksn_prefix("dukpt-tdes", 0)
    ('BE7C000000000001', 'BE7C0000000000200000')
    """
    if profile == "dukpt-aes":
        return f"{KSN_ISSUER << 48 | (index + 1):016X}"
    return f"{KSN_ISSUER << 64 | (index + 1) << TDES_COUNTER_BITS:020X}"


def _read_keys_file(path: Path) -> dict[str, str]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BenchError(f"{path} is readable by others; chmod 600 it")
    try:
        raw = json.loads(path.read_text())
    except ValueError:
        raise BenchError(f"{path} is not the bench's key file; use a fresh --data") from None
    if not isinstance(raw, dict):
        raise BenchError(f"{path} is not the bench's key file; use a fresh --data")
    return {str(k): str(v) for k, v in raw.items()}


def _write_keys_file(path: Path, keys: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(keys, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def prepare_security(
    data: Path,
    layout: Layout,
    profile: str,
    terminals: int,
    map_size_mib: int,
    *,
    may_add_keys: bool,
    pins: bool = False,
) -> list[TerminalKeyset]:
    """Give every bench terminal ``profile`` with its keys (created where missing when
    ``may_add_keys``), clear their working keys, and return the first ``terminals`` keysets.

    A running host reads its named keys once at start: against a host started by hand
    (``may_add_keys`` false) the keys must have been provisioned before it started. ``pins``:
    the cards must have their PIN (stores provisioned before PINs were added have none).

    Error handling: :class:`BenchError` naming what to do.
    """
    assert profile in PROFILES, profile
    assert terminals <= layout.terminals
    wanted = SecurityProfile(profile)
    keys_path = data / KEYS_FILE
    clear = _read_keys_file(keys_path)
    store = open_store(data, map_size_mib)
    try:
        kek = load_kek(kek_path(store.path))
        with store.write() as led:
            first = led.card(1)
            if pins and (first is None or not first.pvv):
                raise BenchError(
                    "the bench store's cards have no PIN (provisioned by an older bench); "
                    "use a fresh --data for --pin-share"
                )
            blocks = led.key_blocks()
            names = _key_names(layout, profile)
            added = False
            for name in names:
                if name in blocks and name in clear:
                    continue
                if name in blocks:
                    raise BenchError(
                        f"the store holds {name} but {keys_path} has no clear copy of it; "
                        "use a fresh --data"
                    )
                if not may_add_keys:
                    raise BenchError(
                        f"the store has no {name}: provision the keys of --security {profile} "
                        "before the host starts (authsrv bench --provision-only --data DIR "
                        f"--security {profile})"
                    )
                key = secrets.token_bytes(KEY_LEN)
                alg = "A" if profile.endswith("aes") else "T"
                led.put_key_block(name, named_key_block(kek, name, key, alg))
                clear[name] = key.hex().upper()
                added = True
            if added:
                # The clear copies first: a crash before the commit leaves unused ones only.
                _write_keys_file(keys_path, clear)
            keysets: list[TerminalKeyset] = []
            for index in range(layout.terminals):
                tid = layout.terminal_id(index)
                t = led.terminal(tid)
                if t is None:
                    raise BenchError(f"the bench store lacks terminal {tid}; use a fresh --data")
                prefix = ksn_prefix(profile, index) if wanted.dukpt else ""
                record = msgspec.structs.replace(
                    t,
                    security=wanted,
                    tmk=tmk_name(tid, profile) if wanted.static else "",
                    bdk=BDK_NAMES[profile] if wanted.dukpt else "",
                    ksn_prefix=prefix,
                    ksn_counter=t.ksn_counter if prefix == t.ksn_prefix else 0,
                    mac_key="",
                    pin_key="",
                    retired_keys=(),
                )
                if record != t:
                    led.put_terminal(record)
                if index < terminals:
                    keysets.append(
                        _keyset(profile, tid, record.ksn_prefix, record.ksn_counter, clear)
                    )
    finally:
        store.close()
    return keysets


def _key_names(layout: Layout, profile: str) -> list[str]:
    if profile.startswith("mac-"):
        return [tmk_name(layout.terminal_id(t), profile) for t in range(layout.terminals)]
    if profile.startswith("dukpt-"):
        return [BDK_NAMES[profile]]
    return []


def _keyset(
    profile: str, terminal_id: str, prefix: str, counter: int, clear: dict[str, str]
) -> TerminalKeyset:
    if profile.startswith("mac-"):
        return TerminalKeyset(profile, tmk=bytes.fromhex(clear[tmk_name(terminal_id, profile)]))
    if profile == "dukpt-aes":
        bdk = bytes.fromhex(clear[BDK_NAMES[profile]])
        device = bytes.fromhex(prefix)
        ik = dukpt.aes_initial_key(bdk, device)
        return TerminalKeyset(profile, initial_key=ik, ksn=device + counter.to_bytes(4, "big"))
    if profile == "dukpt-tdes":
        bdk = bytes.fromhex(clear[BDK_NAMES[profile]])
        device = bytes.fromhex(prefix)
        ipek = dukpt.tdes_ipek(bdk, device)
        ksn = (int.from_bytes(device, "big") | counter).to_bytes(10, "big")
        return TerminalKeyset(profile, initial_key=ipek, ksn=ksn)
    return TerminalKeyset(profile)


class Sealer:
    """One terminal's side in the generator: key changes (static keys), requests MACed in place
    (DUKPT: the next counter's keys), answers' MACs checked. Not shared between tasks."""

    __slots__ = (
        "_counter",
        "_device",
        "_mac_key",
        "_pin_key",
        "aes",
        "dukpt",
        "keyset",
        "security",
        "static",
    )

    def __init__(self, keyset: TerminalKeyset) -> None:
        assert keyset.profile != "none"
        self.keyset = keyset
        self.aes = keyset.profile.endswith("aes")
        self.static = keyset.profile.startswith("mac-")
        self.dukpt = not self.static
        # Static keys: the key change goes through the simulator's terminal side (it MACs the
        # next key change under the keys it holds and checks the check values).
        self.security = TerminalSecurity(keyset.profile, tmk=keyset.tmk) if self.static else None
        self._mac_key = b""
        self._pin_key = b""
        self._device = 0
        self._counter = 0
        if self.dukpt:
            value = int.from_bytes(keyset.ksn, "big")
            if self.aes:
                self._device, self._counter = value >> 32, value & 0xFFFFFFFF
            else:
                self._device = value & ~TDES_COUNTER_MAX
                self._counter = value & TDES_COUNTER_MAX

    def __repr__(self) -> str:
        return f"Sealer(profile={self.keyset.profile!r})"

    @property
    def ready(self) -> bool:
        """Whether requests can be sealed (static keys: after a key change)."""
        return self.dukpt or bool(self._mac_key)

    # -- key change (static keys) ------------------------------------------------------------
    def key_change_request(self, terminal: str, store: str, stan: str) -> Sealed:
        assert self.security is not None
        fields = build_request(
            "signon", terminal=terminal, store=store, stan=stan, overrides={"70": KEY_CHANGE_CODE}
        )
        try:
            return self.security.seal(fields)
        except TerminalSecurityError as exc:
            raise KeyChangeError(str(exc)) from None

    def take_key_change(self, sealed: Sealed, payload: bytes) -> None:
        """Check the 0810 (its MAC, the check values) and take its working keys.

        Error handling: :class:`KeyChangeError`.
        """
        assert self.security is not None
        try:
            answer = decode_response(payload)
            self.security.check_answer(sealed, payload, answer)
            self.security.accept_key_change(answer)
        except (TerminalSecurityError, ValueError) as exc:
            raise KeyChangeError(str(exc)) from None
        except Exception as exc:  # pyiso8583's DecodeError: an unreadable answer
            raise KeyChangeError(f"unreadable key change answer: {exc}") from None
        # The same blocks again, for the clear MAC key the fast path needs (the simulator's
        # terminal side keeps its keys to itself).
        usage = "M6" if self.aes else "M3"
        for block in split_transport(decode_tlv(answer["63"], 63)["KB"]):
            header, key = tr31.unwrap(self.keyset.tmk, block)
            if header.key_usage == usage:
                self._mac_key = bytes(key)
            elif header.key_usage == "P0":
                self._pin_key = bytes(key)
        assert self._mac_key and self._pin_key, "accept_key_change checked both blocks"

    # -- requests ------------------------------------------------------------------------------
    def seal(self, frame: bytearray, template: Template) -> bytes:
        """MAC ``frame`` (length header included) in place, after setting its KSN (DUKPT) and
        its PIN block (a template with one: the card's PIN under the PIN key); returns the key
        its answer's MAC is checked with."""
        pin_key = b""
        if self.static:
            assert self._mac_key, "no working keys: the key change comes first"
            key = response_key = self._mac_key
            pin_key = self._pin_key
        else:
            ksn = self._next_ksn()
            at = template.ksn_at
            frame[at : at + 2 * len(ksn)] = ksn.hex().upper().encode()
            key, response_key, pin_key = self._dukpt_keys(ksn, pin=template.pin_at >= 0)
        if template.pin_at >= 0:
            pan = frame[template.pan_at : template.pan_at + PAN_LEN].decode("ascii")
            block = pinblock.encrypt_pin(BENCH_PIN, pan, pin_key, 4 if self.aes else 0)
            frame[template.pin_at : template.pin_at + 2 * len(block)] = block.hex().upper().encode()
        frame[-MAC_HEX_LEN:] = self._mac(key, bytes(frame[2:-MAC_HEX_LEN])).hex().upper().encode()
        return response_key

    def answer_ok(self, payload: bytes, rc: bytes, response_key: bytes) -> bool:
        """Whether an answer's MAC (its last 16 characters) verifies; 30 and 63 carry none."""
        if rc in UNMACED_ANSWERS:
            return True
        if len(payload) <= MAC_HEX_LEN:
            return False
        try:
            received = bytes.fromhex(payload[-MAC_HEX_LEN:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return False
        return mac.macs_equal(self._mac(response_key, payload[:-MAC_HEX_LEN]), received)

    def _next_ksn(self) -> bytes:
        counter = self._counter + 1
        if self.aes:
            while not dukpt.aes_counter_valid(counter):
                counter += 1
            self._counter = counter
            return (self._device << 32 | counter).to_bytes(12, "big")
        while not dukpt.tdes_counter_valid(counter):
            counter += 1
        if counter > TDES_COUNTER_MAX:
            raise KeyChangeError("the TDES DUKPT counter is exhausted; use a fresh --data")
        self._counter = counter
        return (self._device | counter).to_bytes(10, "big")

    def _dukpt_keys(self, ksn: bytes, *, pin: bool) -> tuple[bytes, bytes, bytes]:
        """Request MAC, response MAC and (when ``pin``) PIN keys of one KSN."""
        ik = self.keyset.initial_key
        if self.aes:
            dk = dukpt.aes_derivation_key(ik, ksn)
            return (
                dukpt.aes_working_key(dk, ksn, dukpt.KeyUsage.MAC_GEN),
                dukpt.aes_working_key(dk, ksn, dukpt.KeyUsage.MAC_VER),
                dukpt.aes_working_key(dk, ksn, dukpt.KeyUsage.PIN) if pin else b"",
            )
        txn = dukpt.tdes_transaction_key(ik, ksn)
        return (
            dukpt.tdes_request_mac_key(txn),
            dukpt.tdes_response_mac_key(txn),
            dukpt.tdes_pin_key(txn) if pin else b"",
        )

    def _mac(self, key: bytes, data: bytes) -> bytes:
        if self.aes:
            return mac.cmac(key, data, algorithm="aes")[:8]
        return mac.retail_mac(key, data)
