"""The terminal's side of the security profiles: it holds the terminal's keys (a simulator is a
terminal), MACs requests, enciphers PINs, checks the answers' MACs and takes new working keys
from a key change.

- ``mac-tdes`` / ``mac-aes``: static working keys, received in a key change (0800 70=101)
  wrapped under the terminal master key; X9.19 retail MAC or AES-CMAC (first 8 bytes).
- ``dukpt-tdes`` / ``dukpt-aes``: the device's initial key and key serial number; every
  request takes the next counter, sends it in field 48 ``KS`` and uses that counter's keys.

PIN blocks: ISO format 0 in field 52 under TDES keys, ISO format 4 in field 48 ``PB`` under AES.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from psec import tr31

from keys import dukpt, mac, pinblock
from keys.keystore import split_transport
from protocol.messages import encode_message
from protocol.tlv import decode_tlv, encode_tlv

__all__ = ["Sealed", "TerminalSecurity", "TerminalSecurityError"]

MAC_HEX_LEN = 16
PROFILES = ("none", "mac-tdes", "mac-aes", "dukpt-tdes", "dukpt-aes")


class TerminalSecurityError(Exception):
    """The terminal side cannot protect a request or trust an answer."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A protected request: its bytes, and the key that must have MACed its answer."""

    payload: bytes
    response_key: bytes = b""


def mac_field(fields: Mapping[str, str]) -> str:
    """Field 128 when the message has a secondary bitmap, else 64 (DESIGN §3)."""
    return "128" if any(k.isdigit() and int(k) > 64 for k in fields) else "64"


class TerminalSecurity:
    """One terminal's keys and counter (not thread-safe: one per terminal task)."""

    def __init__(
        self,
        profile: str,
        *,
        tmk: bytes = b"",
        initial_key: bytes = b"",
        ksn: bytes = b"",
    ) -> None:
        if profile not in PROFILES:
            raise TerminalSecurityError(f"unknown security profile {profile!r}")
        self.profile = profile
        self.aes = profile.endswith("aes")
        self._tmk = tmk
        self._mac_key = b""
        self._pin_key = b""
        self._initial_key = initial_key
        self._ksn = ksn  # the last KSN used (its counter is advanced before each request)
        if profile.startswith("dukpt") and (not initial_key or not ksn):
            raise TerminalSecurityError("a DUKPT terminal needs its initial key and KSN")
        if profile.startswith("mac") and not tmk:
            raise TerminalSecurityError("a static-key terminal needs its master key")

    def __repr__(self) -> str:
        return f"TerminalSecurity(profile={self.profile!r})"

    @property
    def needs_key_change(self) -> bool:
        return self.profile.startswith("mac") and not self._mac_key

    @property
    def ksn_counter(self) -> int:
        if not self._ksn:
            return 0
        return dukpt.aes_counter(self._ksn) if self.aes else dukpt.tdes_counter(self._ksn)

    # -- requests ------------------------------------------------------------------------------
    def seal(self, fields: Mapping[str, str], pin: str | None = None) -> Sealed:
        """Encode ``fields`` protected by this terminal's profile (a PIN block if ``pin``)."""
        out = dict(fields)
        if self.profile == "none" or (self.needs_key_change and _is_key_change(out)):
            if pin is not None:
                raise TerminalSecurityError("this terminal has no PIN key")
            return Sealed(encode_message(out))
        if self.needs_key_change:
            raise TerminalSecurityError("no working keys yet: do a key change (0800 70=101)")
        tags = decode_tlv(out["48"], 48) if "48" in out else {}
        if self.profile.startswith("dukpt"):
            self._ksn = self._next_ksn()
            tags["KS"] = self._ksn.hex().upper()
            mac_key, response_key, pin_key = self._dukpt_keys()
        else:
            mac_key = response_key = self._mac_key
            pin_key = self._pin_key
        if pin is not None:
            pan = out.get("2")
            if pan is None:
                raise TerminalSecurityError("a PIN block needs the card number (field 2)")
            block = pinblock.encrypt_pin(pin, pan, pin_key, 4 if self.aes else 0)
            if self.aes:
                tags["PB"] = block.hex().upper()
            else:
                out["52"] = block.hex().upper()
        if tags:
            out["48"] = encode_tlv(tags)
        out.pop("64", None)
        out.pop("128", None)
        out[mac_field(out)] = "0" * MAC_HEX_LEN
        payload = encode_message(out)
        data = payload[:-MAC_HEX_LEN]
        return Sealed(data + self._mac(mac_key, data).hex().upper().encode(), response_key)

    def _next_ksn(self) -> bytes:
        if self.aes:
            counter = dukpt.aes_counter(self._ksn) + 1
            while not dukpt.aes_counter_valid(counter):
                counter += 1
            return self._ksn[:8] + counter.to_bytes(4, "big")
        value = int.from_bytes(self._ksn, "big")
        counter = (value & 0x1FFFFF) + 1
        while not dukpt.tdes_counter_valid(counter):
            counter += 1
        if counter > 0x1FFFFF:
            raise TerminalSecurityError("the DUKPT counter is exhausted")
        return ((value & ~0x1FFFFF) | counter).to_bytes(10, "big")

    def _dukpt_keys(self) -> tuple[bytes, bytes, bytes]:
        ksn = self._ksn
        if self.aes:
            dk = dukpt.aes_derivation_key(self._initial_key, ksn)
            return (
                dukpt.aes_working_key(dk, ksn, dukpt.KeyUsage.MAC_GEN),
                dukpt.aes_working_key(dk, ksn, dukpt.KeyUsage.MAC_VER),
                dukpt.aes_working_key(dk, ksn, dukpt.KeyUsage.PIN),
            )
        txn = dukpt.tdes_transaction_key(self._initial_key, ksn)
        return (
            dukpt.tdes_request_mac_key(txn),
            dukpt.tdes_response_mac_key(txn),
            dukpt.tdes_pin_key(txn),
        )

    def _mac(self, key: bytes, data: bytes) -> bytes:
        if self.aes:
            return mac.cmac(key, data, algorithm="aes")[:8]
        return mac.retail_mac(key, data)

    # -- answers -------------------------------------------------------------------------------
    def check_answer(self, sealed: Sealed, raw: bytes, fields: Mapping[str, str]) -> None:
        """Verify the answer's MAC (answers 30 and 63 carry none, by design).

        Error handling: :class:`TerminalSecurityError` if a MAC is missing or wrong.
        """
        if not sealed.response_key or fields.get("39") in ("30", "63"):
            return
        field = mac_field(fields)
        received = fields.get(field)
        if received is None:
            raise TerminalSecurityError("the answer carries no MAC")
        expected = self._mac(sealed.response_key, raw[:-MAC_HEX_LEN])
        if not mac.macs_equal(expected, bytes.fromhex(received)):
            raise TerminalSecurityError("the answer's MAC does not verify")

    def accept_key_change(self, fields: Mapping[str, str]) -> tuple[str, str]:
        """Take the working keys of an 0810 (field 63 KB, under the master key) after checking
        them against the check values in KC. Returns the check values (MAC key, PIN key).
        """
        if fields.get("39") != "00" or "63" not in fields:
            raise TerminalSecurityError(f"the key change was answered {fields.get('39')}")
        tags = decode_tlv(fields["63"], 63)
        blocks = split_transport(tags.get("KB", ""))
        if len(blocks) != 2:
            raise TerminalSecurityError("the key change answer does not hold two key blocks")
        keys: dict[str, bytes] = {}
        for block in blocks:
            header, key = tr31.unwrap(self._tmk, block)
            keys[header.key_usage] = bytes(key)
        mac_usage = "M6" if self.aes else "M3"
        if set(keys) != {mac_usage, "P0"}:
            raise TerminalSecurityError(f"unexpected key usages {sorted(keys)}")
        kind: mac.CipherName = "aes" if self.aes else "tdes"
        kcvs = mac.kcv(keys[mac_usage], kind), mac.kcv(keys["P0"], kind)
        if tags.get("KC") != kcvs[0] + kcvs[1]:
            raise TerminalSecurityError("the new keys' check values do not match KC")
        self._mac_key, self._pin_key = keys[mac_usage], keys["P0"]
        return kcvs


def _is_key_change(fields: Mapping[str, str]) -> bool:
    return fields.get("t") == "0800" and fields.get("70") == "101"
