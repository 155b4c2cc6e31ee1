"""A minimal RFC 6455 WebSocket client on asyncio streams: enough for the dashboard's live channel.

Text and binary messages (fragmented or not), ping → pong, close. Client frames are masked as the RFC
requires; server frames are read unmasked. No extensions, no TLS: it only talks to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 16 * 1024 * 1024


class HandshakeError(ConnectionError):
    pass


class Closed(ConnectionError):
    def __init__(self, code: int | None, reason: str = ""):
        super().__init__(f"closed: {code} {reason}".strip())
        self.code = code


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()  # noqa: S324 (RFC 6455)


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None, fin: bool = True) -> bytes:
    """One client frame (masked unless mask is given as b'' for a server-style frame)."""
    if mask is None:
        mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask else 0
    length = len(payload)
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    return head + mask + _mask(payload, mask)


def _mask(payload: bytes, mask: bytes) -> bytes:
    # XOR with the mask repeated, as one big integer operation instead of a Python loop per byte.
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """(fin, opcode, payload) of the next frame."""
    first, second = await reader.readexactly(2)
    fin, opcode = bool(first & 0x80), first & 0x0F
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    if length > MAX_MESSAGE:
        raise Closed(1009, "message too big")
    mask = await reader.readexactly(4) if second & 0x80 else b""
    payload = await reader.readexactly(length)
    if mask:
        payload = _mask(payload, mask)
    return fin, opcode, payload


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, path: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> WebSocket:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: 127.0.0.1:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
                *(f"{name}: {value}" for name, value in (headers or {}).items()),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            status = await reader.readline()
            response = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _sep, value = line.decode("latin-1").partition(":")
                response[name.strip().lower()] = value.strip()
            if len(status.split()) < 2 or status.split()[1] != b"101":
                writer.close()
                raise HandshakeError(f"handshake refused: {status.decode('latin-1').strip()}")
            if response.get("sec-websocket-accept") != accept_key(key):
                writer.close()
                raise HandshakeError("bad Sec-WebSocket-Accept")
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        self.writer.write(encode_frame(OP_TEXT, text.encode()))
        await self.writer.drain()

    async def recv(self) -> str | bytes:
        """The next text (str) or binary (bytes) message; answers pings; raises Closed on a close frame."""
        parts: list[bytes] = []
        kind = None
        while True:
            fin, opcode, payload = await read_frame(self.reader)
            if opcode == OP_PING:
                self.writer.write(encode_frame(OP_PONG, payload))
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                with contextlib.suppress(OSError):
                    self.writer.write(encode_frame(OP_CLOSE, payload[:2]))
                raise Closed(code, payload[2:].decode(errors="replace"))
            if opcode != OP_CONT:
                kind = opcode
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return data.decode() if kind == OP_TEXT else data

    async def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(encode_frame(OP_CLOSE, struct.pack("!H", 1000)))
            await self.writer.drain()
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
