"""A small software security module: it holds keys and answers questions, never hands a key out.

Keys at rest are TR-31 key blocks (version D, AES) wrapped under a key-encrypting key (KEK);
the KEK itself comes from a file readable only by the service user, made from two or three
components (DESIGN §6). Named keys in the store:

- ``pan-hash/N``: HMAC-SHA256 keys of the keyed card-number hash, versioned (1, 2, ...);
- ``dup-content/1``: HMAC-SHA256 key of the content digest of duplicate detection (DESIGN §5);
- ``pin-verify/1``: HMAC-SHA256 key of the PIN verification values;
- ``activation/1``: HMAC-SHA256 key of campaign cards' online activation codes (derivation
  and verifier); a store made before it existed gets it on its first writable open
  (``authsrv.app.open_keys``);
- ``bdk/NAME``: DUKPT base derivation keys (TDES or AES-128);
- ``tmk/NAME``: terminal master keys, which wrap the working keys sent in a key change;
- ``kek/NAME``: key-exchange keys under which blocks are imported and exported.

Terminals' working keys live in their terminal records, as TR-31 blocks under the KEK too.
Callers outside this package get MACs, keyed digests, check values and opaque sessions; clear
keys, PINs and PIN blocks never leave it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from psec import tr31

from keys import dukpt, mac, pinblock

__all__ = [
    "ACTIVATION_CODE_ALPHABET",
    "ACTIVATION_CODE_LEN",
    "KeyChange",
    "KeyInfo",
    "KeyStore",
    "KeyStoreError",
    "SecurityViolation",
    "Session",
    "TerminalKeys",
    "combine_components",
    "generate_kek_file",
    "kek_check_value",
    "load_kek",
    "missing_system_blocks",
    "new_key_blocks",
    "normalize_activation_code",
    "write_kek_file",
]

KEK_LEN = 32  # AES-256
HMAC_KEY_LEN = 32
WORKING_KEY_LEN = 16  # TDES double length, or AES-128
# TR-31 header: version D (AES key block), usage M7 (HMAC), algorithm H (HMAC), mode C
# (generate and verify), key version 00, exportability N (never exported), no optional blocks.
HMAC_HEADER = "D0000M7HC00N0000"
PAN_HASH_PREFIX = "pan-hash/"
DUP_CONTENT = "dup-content/1"
PIN_VERIFY = "pin-verify/1"
ACTIVATION = "activation/1"
SYSTEM_PREFIXES = (PAN_HASH_PREFIX, "dup-content/", "pin-verify/", "activation/")
# Online activation codes: Crockford's base32 (no I, L, O, U: nothing to misread on a
# receipt), 8 characters = 40 bits. Guessing is bounded by the wrong-code lock
# (campaign.activation_tries_max), not by the length alone.
ACTIVATION_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ACTIVATION_CODE_LEN = 8
ACTIVATION_SALT_LEN = 16
ACTIVATION_VERIFIER_LEN = 16
_CODE_BITS = 5
assert len(ACTIVATION_CODE_ALPHABET) == 1 << _CODE_BITS
# What a customer may type for a character of the code (Crockford's reading rules).
_CODE_READS = {"O": "0", "I": "1", "L": "1"}
# Operator-entered keys: the name's prefix fixes the TR-31 usage and mode of use.
NAMED_USAGES = {"bdk/": ("B0", "X"), "tmk/": ("K0", "B"), "kek/": ("K0", "B")}
COMPONENTS_MIN, COMPONENTS_MAX = 2, 3
UNWRAPPED_CACHE_MAX = 8192  # clear working keys kept per process (terminals x key changes)
RETIRED_KEYS_MAX = 3  # earlier working keys a terminal may still use within the grace period
PVV_LEN = 16
KEK_PENDING_SUFFIX = ".new"  # the next KEK file while a rotation is under way
MAC_LEN = 8  # field 64/128: 8 bytes as 16 hex characters
KSN_HEX_LEN = {"tdes": 20, "aes": 24}


class KeyStoreError(Exception):
    """A key cannot be loaded or used; the message never contains key material."""


class SecurityViolation(Exception):
    """A request fails a security check (answered 63); ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# -- the key-encrypting key ---------------------------------------------------------------------
def combine_components(components: Sequence[bytes], length: int = KEK_LEN) -> bytes:
    """XOR of two or three key components of equal length (a key ceremony)."""
    if not COMPONENTS_MIN <= len(components) <= COMPONENTS_MAX:
        raise KeyStoreError(f"give {COMPONENTS_MIN} or {COMPONENTS_MAX} key components")
    lengths = {len(c) for c in components}
    if lengths != {length}:
        raise KeyStoreError(f"every component must be {length} bytes ({2 * length} hex digits)")
    if len(set(components)) != len(components):
        raise KeyStoreError("two components are equal; each custodian must bring their own")
    out = bytes(length)
    for c in components:
        out = bytes(a ^ b for a, b in zip(out, c, strict=True))
    return out


def kek_check_value(key: bytes, algorithm: str = "A") -> str:
    """Check value of a key or one of its components (6 hex digits): AES-CMAC of zeros for
    AES keys (the KEK), TDES-ECB of zeros for TDES keys."""
    return mac.kcv(key, "aes" if algorithm == "A" else "tdes")


def write_kek_file(path: Path, kek: bytes) -> None:
    """Write ``kek`` (hex) to ``path``, readable only by its owner, atomically (temp + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(kek.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def generate_kek_file(path: Path) -> None:
    """Write a fresh random KEK readable only by its owner. For development and demos."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(KEK_LEN) + "\n")


def load_kek(path: Path) -> bytes:
    """Read the KEK file; refuse one that others can read.

    Error handling: :class:`KeyStoreError` naming the file and what to do.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyStoreError(
            f"key-encrypting key file {path} not found; run `authsrv keys init`"
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(f"key-encrypting key file {path} is readable by others; chmod 600 it")
    text = path.read_text().strip()
    try:
        kek = bytes.fromhex(text)
    except ValueError:
        raise KeyStoreError(f"key-encrypting key file {path} is not hex") from None
    if len(kek) != KEK_LEN:
        raise KeyStoreError(f"key-encrypting key file {path} must hold {KEK_LEN} bytes as hex")
    return kek


def new_key_blocks(kek: bytes) -> dict[str, str]:
    """Fresh system keys for a new store, as TR-31 blocks under ``kek``."""
    return {
        name: tr31.wrap(kek, HMAC_HEADER, secrets.token_bytes(HMAC_KEY_LEN))
        for name in (PAN_HASH_PREFIX + "1", DUP_CONTENT, PIN_VERIFY, ACTIVATION)
    }


def missing_system_blocks(kek: bytes, blocks: Mapping[str, str]) -> dict[str, str]:
    """Fresh blocks for the system keys added since a store was made (today: the activation
    key); empty when it has them all."""
    if ACTIVATION in blocks:
        return {}
    return {ACTIVATION: tr31.wrap(kek, HMAC_HEADER, secrets.token_bytes(HMAC_KEY_LEN))}


def normalize_activation_code(text: str) -> str | None:
    """An activation code as typed (any case, with spaces or hyphens, O for 0, I or L for 1)
    in its printed form; None when it cannot be one.

    >>> normalize_activation_code("k7mp-q2ho")
    'K7MPQ2H0'
    >>> normalize_activation_code("K7MPQ2H") is None
    True
    """
    code = "".join(_CODE_READS.get(c, c) for c in text.upper() if c not in " -")
    if len(code) != ACTIVATION_CODE_LEN or any(c not in ACTIVATION_CODE_ALPHABET for c in code):
        return None
    return code


def check_value(key: bytes) -> str:
    """A key check value for HMAC keys: first 6 hex digits of HMAC(key, 16 zero bytes)."""
    return hmac.new(key, bytes(16), hashlib.sha256).hexdigest()[:6].upper()


def _kcv(header: tr31.Header, key: bytes) -> str:
    if header.algorithm == "H":
        return check_value(key)
    return mac.kcv(key, "aes" if header.algorithm == "A" else "tdes")


def _unwrap(kbpk: bytes, name: str, block: str) -> tuple[tr31.Header, bytes]:
    try:
        header, key = tr31.unwrap(kbpk, block)
    except Exception:
        raise KeyStoreError(f"key {name} does not unwrap (wrong wrapping key or damaged)") from None
    return header, bytes(key)


def _expect(name: str, header: tr31.Header, usage: str, algorithms: str, modes: str) -> None:
    """Key usage, algorithm and mode of use checked after every unwrap (TR-31 binding)."""
    if header.key_usage != usage:
        raise KeyStoreError(f"key {name} has usage {header.key_usage}, expected {usage}")
    if header.algorithm not in algorithms:
        raise KeyStoreError(f"key {name} has algorithm {header.algorithm}, expected {algorithms}")
    if header.mode_of_use not in modes:
        raise KeyStoreError(f"key {name} has mode of use {header.mode_of_use}, expected {modes}")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a listing shows about a key: never the key."""

    name: str
    usage: str
    algorithm: str
    mode_of_use: str
    exportability: str
    check_value: str


def describe_blocks(kek: bytes, blocks: Mapping[str, str]) -> list[KeyInfo]:
    out = []
    for name in sorted(blocks):
        header, key = _unwrap(kek, name, blocks[name])
        out.append(
            KeyInfo(
                name,
                header.key_usage,
                header.algorithm,
                header.mode_of_use,
                header.exportability,
                _kcv(header, key),
            )
        )
    return out


def rewrap_blocks(
    old_kek: bytes, new_kek: bytes, blocks: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Every block re-wrapped under ``new_kek``; returns (new blocks, check values).

    Error handling: :class:`KeyStoreError` if a block does not unwrap, or if a re-wrapped key's
    check value differs from the original's (nothing is returned then).
    """
    new: dict[str, str] = {}
    kcvs: dict[str, str] = {}
    for name, block in blocks.items():
        header, key = _unwrap(old_kek, name, block)
        kcvs[name] = _kcv(header, key)
        new[name] = tr31.wrap(new_kek, header, key)
        header2, key2 = _unwrap(new_kek, name, new[name])
        if _kcv(header2, key2) != kcvs[name] or header2.dump(0) != header.dump(0):
            raise KeyStoreError(f"key {name} changed while re-wrapping; nothing was written")
    return new, kcvs


def named_key_block(
    kek: bytes, name: str, key: bytes, algorithm: str, *, exportable: bool = False
) -> str:
    """Wrap an operator-entered key (``bdk/``, ``tmk/``, ``kek/``) under the KEK."""
    prefix = next((p for p in NAMED_USAGES if name.startswith(p)), None)
    if prefix is None or len(name) <= len(prefix) or not name.isascii():
        raise KeyStoreError(f"key name {name!r} must start with one of {', '.join(NAMED_USAGES)}")
    if algorithm not in ("T", "A"):
        raise KeyStoreError("algorithm must be T (TDES) or A (AES)")
    if len(key) != WORKING_KEY_LEN:
        raise KeyStoreError(
            f"key must be {WORKING_KEY_LEN} bytes ({2 * WORKING_KEY_LEN} hex digits)"
        )
    usage, mode = NAMED_USAGES[prefix]
    header = f"D0000{usage}{algorithm}{mode}00{'E' if exportable else 'N'}0000"
    return tr31.wrap(kek, header, key)


def import_block(kek: bytes, blocks: Mapping[str, str], name: str, block: str, under: str) -> str:
    """A TR-31 block received under key-exchange key ``under``, re-wrapped under the KEK.

    Error handling: :class:`KeyStoreError` if ``under`` is not a key-exchange key, the block
    does not unwrap, or its usage does not fit the name (a PIN key cannot become a BDK).
    """
    kbpk, _ = _exchange_key(kek, blocks, under)
    header, key = _unwrap(kbpk, name, block)
    prefix = next((p for p in NAMED_USAGES if name.startswith(p)), None)
    if prefix is None:
        raise KeyStoreError(f"key name {name!r} must start with one of {', '.join(NAMED_USAGES)}")
    usage, mode = NAMED_USAGES[prefix]
    _expect(name, header, usage, "TA", mode)
    stored = tr31.Header("D", header.key_usage, header.algorithm, header.mode_of_use, "00")
    stored.exportability = header.exportability
    return tr31.wrap(kek, stored, key)


def export_block(kek: bytes, blocks: Mapping[str, str], name: str, under: str) -> str:
    """Key ``name`` as a TR-31 block under key-exchange key ``under``; only exportable keys."""
    if name not in blocks:
        raise KeyStoreError(f"no key {name}")
    header, key = _unwrap(kek, name, blocks[name])
    if header.exportability != "E":
        raise KeyStoreError(f"key {name} is not exportable")
    kbpk, kbpk_algorithm = _exchange_key(kek, blocks, under)
    # TR-31 version B binds under a TDES key-exchange key, version D under an AES one.
    out = tr31.Header("B" if kbpk_algorithm == "T" else "D", header.key_usage, header.algorithm)
    out.mode_of_use = header.mode_of_use
    out.exportability = "N"  # the receiver may not pass it on
    return tr31.wrap(kbpk, out, key)


def _exchange_key(kek: bytes, blocks: Mapping[str, str], under: str) -> tuple[bytes, str]:
    if not under.startswith("kek/") or under not in blocks:
        raise KeyStoreError(f"no key-exchange key {under}; add one with `keys add kek/NAME`")
    header, kbpk = _unwrap(kek, under, blocks[under])
    _expect(under, header, "K0", "TA", "B")
    return kbpk, header.algorithm


# -- terminal sessions ---------------------------------------------------------------------------
class RetiredLike(Protocol):
    @property
    def mac_key(self) -> str: ...
    @property
    def pin_key(self) -> str: ...
    @property
    def until_ms(self) -> int: ...


class TerminalKeys(Protocol):
    """What the key store reads from a terminal record (``authsrv.model.Terminal``)."""

    @property
    def security(self) -> str: ...
    @property
    def tmk(self) -> str: ...
    @property
    def mac_key(self) -> str: ...
    @property
    def pin_key(self) -> str: ...
    @property
    def retired_keys(self) -> Sequence[RetiredLike]: ...
    @property
    def bdk(self) -> str: ...
    @property
    def ksn_prefix(self) -> str: ...


class Session:
    """The keys that verified one request, kept to MAC its answer and read its PIN block.

    Opaque outside this package: no accessor returns a key, and ``repr`` shows none.
    """

    __slots__ = ("_aes", "_mac_response", "_pin", "ksn_counter", "profile")

    def __init__(
        self,
        profile: str,
        *,
        aes: bool = False,
        mac_response: bytes = b"",
        pin: bytes = b"",
        ksn_counter: int | None = None,
    ) -> None:
        self.profile = profile
        self._aes = aes
        self._mac_response = mac_response
        self._pin = pin
        self.ksn_counter = ksn_counter

    def __repr__(self) -> str:
        return f"Session(profile={self.profile!r}, ksn_counter={self.ksn_counter})"

    @property
    def macs_responses(self) -> bool:
        return bool(self._mac_response)

    @property
    def pin_format(self) -> str:
        """Where this session's PIN block travels: field 52 (TDES) or field 48 tag PB (AES)."""
        return "PB" if self._aes else "52"


NO_SECURITY = Session("none")


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A key change's result: blocks to store, blocks to send (field 63 KB) and check values."""

    mac_key: str  # under the KEK, for the terminal record
    pin_key: str
    transport: str  # both working keys as TR-31 blocks under the terminal master key
    check_values: str  # KCV of the MAC key then of the PIN key (12 hex digits)


class KeyStore:
    """Keys unwrapped in memory; callers get digests, MACs, check values and sessions only."""

    def __init__(self, kek: bytes, blocks: Mapping[str, str]) -> None:
        self._kek = kek
        self._blocks = dict(blocks)
        self._pan_keys: dict[int, bytes] = {}
        self._check_values: dict[str, str] = {}
        self._content_key = b""
        self._pin_verify_key = b""
        self._activation_key = b""
        self._cache: dict[tuple[str, str], bytes] = {}  # (block, expected usage) -> clear key
        for name, block in blocks.items():
            if not name.startswith(SYSTEM_PREFIXES):
                continue
            header, key = _unwrap(kek, name, block)
            _expect(name, header, "M7", "H", "C")
            if len(key) != HMAC_KEY_LEN:
                raise KeyStoreError(f"key {name} has the wrong length")
            self._check_values[name] = check_value(key)
            if name.startswith(PAN_HASH_PREFIX):
                self._pan_keys[int(name[len(PAN_HASH_PREFIX) :])] = key
            elif name == DUP_CONTENT:
                self._content_key = key
            elif name == PIN_VERIFY:
                self._pin_verify_key = key
            elif name == ACTIVATION:
                self._activation_key = key
        if not self._pan_keys:
            raise KeyStoreError("no pan-hash key in the store")
        if not self._content_key:
            raise KeyStoreError("no dup-content key in the store")
        if not self._pin_verify_key:
            raise KeyStoreError("no pin-verify key in the store")
        self.pan_version_current = max(self._pan_keys)

    def __repr__(self) -> str:
        return f"KeyStore(keys={sorted(self._blocks)})"

    def check_values(self) -> dict[str, str]:
        return dict(self._check_values)

    # -- card numbers and duplicate content ------------------------------------------------
    def pan_hash(self, pan: str, version: int | None = None) -> bytes:
        """The keyed hash of a card number under one key version (the current by default).

        The index key is the version byte followed by HMAC-SHA256, so that lookups under every
        live version never collide.
        """
        v = self.pan_version_current if version is None else version
        digest = hmac.new(self._pan_keys[v], pan.encode("ascii"), hashlib.sha256).digest()
        return bytes([v]) + digest

    def pan_hashes(self, pan: str) -> list[bytes]:
        """Hashes under every live version, newest first (DESIGN §6 look-up)."""
        return [self.pan_hash(pan, v) for v in sorted(self._pan_keys, reverse=True)]

    def content_mac(self, data: bytes) -> bytes:
        return hmac.new(self._content_key, data, hashlib.sha256).digest()

    # -- online activation codes (campaign cards) -------------------------------------------
    def _activation(self) -> bytes:
        if not self._activation_key:
            raise KeyStoreError(
                f"no {ACTIVATION} key in the store; open it once writable (e.g. `authsrv "
                "serve`) to add it"
            )
        return self._activation_key

    def activation_code(self, salt: bytes, card_id: int) -> str:
        """The activation code of one campaign issue: 8 characters of
        :data:`ACTIVATION_CODE_ALPHABET` derived from the issue's random ``salt`` and the card
        under the activation key, so that a replay of the issue gives the same code and no
        record has to hold it.

        Error handling: :class:`KeyStoreError` when the store has no activation key.
        """
        assert len(salt) == ACTIVATION_SALT_LEN, "an activation salt is 16 random bytes"
        msg = b"code\x1f" + salt + card_id.to_bytes(8, "big")
        digest = hmac.new(self._activation(), msg, hashlib.sha256).digest()
        bits = int.from_bytes(digest[: ACTIVATION_CODE_LEN * _CODE_BITS // 8], "big")
        mask = len(ACTIVATION_CODE_ALPHABET) - 1
        return "".join(
            ACTIVATION_CODE_ALPHABET[(bits >> (_CODE_BITS * i)) & mask]
            for i in reversed(range(ACTIVATION_CODE_LEN))
        )

    def activation_verifier(self, card_id: int, code: str) -> bytes:
        """The keyed value stored on the card instead of its activation code; compare with
        ``hmac.compare_digest``.

        Error handling: :class:`KeyStoreError` when the store has no activation key.
        """
        msg = b"verify\x1f" + card_id.to_bytes(8, "big") + code.encode("ascii")
        return hmac.new(self._activation(), msg, hashlib.sha256).digest()[:ACTIVATION_VERIFIER_LEN]

    # -- PINs ------------------------------------------------------------------------------
    def pvv(self, pan: str, pin: str) -> bytes:
        """The keyed PIN verification value stored on a card (issuance: ``cards set-pin``)."""
        if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
            raise KeyStoreError("a PIN is 4 to 12 digits")
        msg = f"{pan}\x1f{pin}".encode("ascii")
        return hmac.new(self._pin_verify_key, msg, hashlib.sha256).digest()[:PVV_LEN]

    def pin_candidate(self, session: Session, block_hex: str, pan: str) -> bytes:
        """The verification value of the PIN inside an encrypted PIN block, to compare with the
        card's. A block that does not decrypt to a well-formed PIN of an allowed format (ISO 0
        and 3 under TDES, 4 under AES; never 1 or 2) gives ``b""``, which matches no card: the
        answer is the same 55 as for a wrong PIN, so the host is no oracle for PIN blocks.
        """
        if not session._pin:
            return b""
        formats = frozenset({4}) if session._aes else frozenset({0, 3})
        try:
            pin = pinblock.decrypt_pin(
                bytes.fromhex(block_hex), pan, session._pin, formats_allowed=formats
            )
        except (pinblock.PinBlockError, ValueError):
            return b""
        return self.pvv(pan, pin)

    # -- terminal MACs ---------------------------------------------------------------------
    def _working_key(
        self, block: str, usage: str, algorithm: str, modes: str = "CDEB", name: str = ""
    ) -> bytes:
        cached = self._cache.get((block, usage))
        if cached is not None:
            return cached
        name = name or "terminal working key"
        header, key = _unwrap(self._kek, name, block)
        _expect(name, header, usage, algorithm, modes)
        if len(self._cache) >= UNWRAPPED_CACHE_MAX:
            self._cache.clear()
        self._cache[(block, usage)] = key
        return key

    def _named(self, name: str, usage: str, algorithm: str) -> bytes:
        block = self._blocks.get(name)
        if block is None:
            raise KeyStoreError(f"no key {name}; add it with `authsrv keys add {name}`")
        return self._working_key(block, usage, algorithm, "X", name)

    def open_session(
        self,
        terminal: TerminalKeys,
        mac_data: bytes,
        mac_hex: str | None,
        ksn_hex: str | None,
        now_ms: int,
    ) -> Session:
        """Verify a request's MAC and return the session that answers it.

        ``mac_data`` is the message from the MTI up to the byte before the MAC field, as
        received (DESIGN §3). Static profiles try the current working keys, then keys retired
        by a key change within their grace period. DUKPT profiles derive the keys from the
        base derivation key and the key serial number (field 48 ``KS``), which must belong to
        the terminal's device; whether its counter is new is the writer's check (it needs state).

        Error handling: :class:`SecurityViolation` (answer 63, change nothing).
        """
        profile = terminal.security
        if profile == "none":
            return NO_SECURITY
        if mac_hex is None:
            raise SecurityViolation("mac_missing", "the terminal's profile requires a MAC")
        received = bytes.fromhex(mac_hex)
        aes = profile.endswith("aes")
        if profile.startswith("mac-"):
            sets = [(terminal.mac_key, terminal.pin_key)] + [
                (r.mac_key, r.pin_key) for r in terminal.retired_keys if r.until_ms > now_ms
            ]
            for mac_block, pin_block in sets:
                if not mac_block:
                    continue
                key = self._working_key(mac_block, "M6" if aes else "M3", "A" if aes else "T")
                if mac.macs_equal(self._mac(key, mac_data, aes), received):
                    pin = self._working_key(pin_block, "P0", "A" if aes else "T")
                    return Session(profile, aes=aes, mac_response=key, pin=pin)
            raise SecurityViolation("mac_mismatch", "the MAC does not verify")
        if ksn_hex is None:
            raise SecurityViolation("ksn_missing", "a DUKPT terminal must send its KSN (48 KS)")
        kind: Literal["aes", "tdes"] = "aes" if aes else "tdes"
        if len(ksn_hex) != KSN_HEX_LEN[kind]:
            raise SecurityViolation(
                "ksn_invalid", f"a {kind} KSN has {KSN_HEX_LEN[kind]} hex digits"
            )
        ksn = bytes.fromhex(ksn_hex)
        if aes:
            counter = dukpt.aes_counter(ksn)
            device = ksn_hex[:16]
            valid = dukpt.aes_counter_valid(counter)
        else:
            counter = dukpt.tdes_counter(ksn)
            device = (int(ksn_hex, 16) & ~0x1FFFFF).to_bytes(10, "big").hex()
            valid = dukpt.tdes_counter_valid(counter)
        if device.upper() != terminal.ksn_prefix.upper():
            raise SecurityViolation("ksn_device", "the KSN belongs to another device")
        if not valid:
            raise SecurityViolation("ksn_invalid", "the KSN counter is not a valid DUKPT counter")
        bdk = self._named(terminal.bdk, "B0", "A" if aes else "T")
        keys = dukpt.aes_keys_from_bdk(bdk, ksn) if aes else dukpt.tdes_keys_from_bdk(bdk, ksn)
        if not mac.macs_equal(self._mac(keys.mac_request, mac_data, aes), received):
            raise SecurityViolation("mac_mismatch", "the MAC does not verify")
        return Session(
            profile, aes=aes, mac_response=keys.mac_response, pin=keys.pin, ksn_counter=counter
        )

    @staticmethod
    def _mac(key: bytes, data: bytes, aes: bool) -> bytes:
        if aes:
            return mac.cmac(key, data, algorithm="aes")[:MAC_LEN]
        return mac.retail_mac(key, data)

    def response_mac(self, session: Session, mac_data: bytes) -> str:
        """The MAC of an answer (16 hex digits) under the session's response key."""
        assert session._mac_response, "this session does not MAC its answers"
        return self._mac(session._mac_response, mac_data, session._aes).hex().upper()

    # -- key change (0800 70=101) ----------------------------------------------------------
    def change_keys(self, terminal: TerminalKeys) -> KeyChange:
        """New MAC and PIN working keys for a static-key terminal: wrapped under the KEK for
        the terminal record and under the terminal master key for the terminal (TR-31 version
        B under a TDES master key, D under an AES one), with their check values.

        Error handling: :class:`KeyStoreError` if the terminal has no master key.
        """
        aes = terminal.security == "mac-aes"
        assert terminal.security in ("mac-aes", "mac-tdes"), terminal.security
        if not terminal.tmk:
            raise KeyStoreError("the terminal has no master key; set one with `terminals security`")
        tmk_block = self._blocks.get(terminal.tmk)
        if tmk_block is None:
            raise KeyStoreError(f"no key {terminal.tmk}")
        header, tmk = _unwrap(self._kek, terminal.tmk, tmk_block)
        _expect(terminal.tmk, header, "K0", "TA", "BE")
        alg = "A" if aes else "T"
        mac_usage = "M6" if aes else "M3"
        mac_key = secrets.token_bytes(WORKING_KEY_LEN)
        pin_key = secrets.token_bytes(WORKING_KEY_LEN)
        version = "B" if header.algorithm == "T" else "D"
        transport = tr31.wrap(tmk, f"{version}0000{mac_usage}{alg}C00N0000", mac_key) + tr31.wrap(
            tmk, f"{version}0000P0{alg}E00N0000", pin_key
        )
        kind: Literal["aes", "tdes"] = "aes" if aes else "tdes"
        return KeyChange(
            mac_key=tr31.wrap(self._kek, f"D0000{mac_usage}{alg}C00N0000", mac_key),
            pin_key=tr31.wrap(self._kek, f"D0000P0{alg}D00N0000", pin_key),
            transport=transport,
            check_values=mac.kcv(mac_key, kind) + mac.kcv(pin_key, kind),
        )

    def working_key_check_values(self, terminal: TerminalKeys) -> tuple[str, str]:
        """Check values of a terminal's current MAC and PIN keys (for listings)."""
        if not terminal.mac_key:
            return "", ""
        aes = terminal.security == "mac-aes"
        kind: Literal["aes", "tdes"] = "aes" if aes else "tdes"
        mac_key = self._working_key(terminal.mac_key, "M6" if aes else "M3", "A" if aes else "T")
        pin_key = self._working_key(terminal.pin_key, "P0", "A" if aes else "T")
        return mac.kcv(mac_key, kind), mac.kcv(pin_key, kind)


def split_transport(value: str) -> list[str]:
    """Split field 63 ``KB`` into its TR-31 blocks (each starts with its 4-digit length)."""
    blocks: list[str] = []
    pos = 0
    while pos < len(value):
        length = int(value[pos + 1 : pos + 5])
        blocks.append(value[pos : pos + length])
        pos += length
    return blocks
