"""Message framing: a length header before every ISO 8583 message (DESIGN §3).

The default is a 2-byte big-endian binary length that does not count itself. A listener may be
configured for a 4-byte ASCII decimal length instead.
"""

from __future__ import annotations

import enum

__all__ = ["FrameError", "FrameReader", "Framing", "encode_frame"]


class Framing(enum.Enum):
    BINARY2 = "binary2"
    ASCII4 = "ascii4"

    @property
    def header_len(self) -> int:
        return 2 if self is Framing.BINARY2 else 4

    @property
    def payload_len_max(self) -> int:
        return 0xFFFF if self is Framing.BINARY2 else 9999


class FrameError(Exception):
    """The byte stream cannot be split into messages: the connection must be closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_frame(payload: bytes, framing: Framing = Framing.BINARY2) -> bytes:
    """Prefix ``payload`` with its length header.

    >>> encode_frame(b"0800")
    b'\\x00\\x040800'
    >>> encode_frame(b"0800", Framing.ASCII4)
    b'00040800'
    """
    size = len(payload)
    if size > framing.payload_len_max:
        raise ValueError(f"message of {size} bytes does not fit a {framing.value} header")
    if framing is Framing.BINARY2:
        return size.to_bytes(2, "big") + payload
    return b"%04d" % size + payload


class FrameReader:
    """Splits received bytes into message payloads.

    Resource handling: keeps at most one header plus ``frame_size_max`` bytes buffered; a header
    that announces more closes the connection before the body is read.

    Error handling: raises :class:`FrameError` for an empty, oversized or unreadable header.
    """

    def __init__(self, framing: Framing, frame_size_max: int) -> None:
        assert frame_size_max > 0
        assert frame_size_max <= framing.payload_len_max
        self._framing = framing
        self._frame_size_max = frame_size_max
        self._buf = bytearray()
        self.error: FrameError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data``.

        A bad header after complete frames is kept in :attr:`error` (the caller answers those
        frames, then closes); a bad header with no complete frame before it raises at once.
        """
        if self.error is not None:
            raise self.error
        self._buf += data
        frames: list[bytes] = []
        header_len = self._framing.header_len
        while len(self._buf) >= header_len:
            try:
                size = self._parse_header(bytes(self._buf[:header_len]))
            except FrameError as exc:
                if not frames:
                    raise
                self.error = exc
                break
            if len(self._buf) < header_len + size:
                break
            frames.append(bytes(self._buf[header_len : header_len + size]))
            del self._buf[: header_len + size]
        return frames

    def _parse_header(self, header: bytes) -> int:
        if self._framing is Framing.BINARY2:
            size = int.from_bytes(header, "big")
        else:
            if not (header.isascii() and header.isdigit()):
                raise FrameError("length header is not 4 ASCII digits")
            size = int(header)
        if size == 0:
            raise FrameError("empty frame")
        if size > self._frame_size_max:
            raise FrameError(f"frame of {size} bytes exceeds {self._frame_size_max}")
        return size
