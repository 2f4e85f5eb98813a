"""Slow clients are cut: headers and bodies must arrive within PGQ_READ_TIMEOUT_SECONDS.

Raw sockets against a coordinator with a 1 s read timeout; without the deadlines each of
these connections stays open (aiohttp's own keep-alive default is an hour).
"""

from __future__ import annotations

import asyncio
import time

from .support import live_app

TIMEOUT = 1.0
#: generous: a loaded machine may be late by seconds, never by the default hour
CUT_WITHIN = 8.0


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_after(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dribble: bytes = b""
) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and what it sent; ``dribble`` is
    sent one byte every 0.1 s meanwhile."""
    started = time.monotonic()
    received = b""
    pending = iter(dribble)
    while time.monotonic() - started < CUT_WITHIN + 5:
        byte = next(pending, None)
        if byte is not None:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
        try:
            chunk = await asyncio.wait_for(reader.read(4096), 0.1)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not chunk:
            break
        received += chunk
    writer.close()
    return time.monotonic() - started, received


async def test_silent_unfinished_and_dribbled_headers_are_cut(dsn: str) -> None:
    async with live_app(dsn, read_timeout=TIMEOUT) as live:
        cases = {
            "silent": (b"", b""),
            "unfinished": (b"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n", b""),
            "dribbled": (b"", b"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400),
        }

        async def one(first: bytes, dribble: bytes) -> tuple[float, bytes]:
            reader, writer = await _open(live.url)
            writer.write(first)
            return await _closed_after(reader, writer, dribble)

        results = await asyncio.gather(*(one(*case) for case in cases.values()))
        for name, (seconds, received) in zip(cases, results, strict=True):
            assert TIMEOUT * 0.9 <= seconds < CUT_WITHIN, (name, seconds)
            assert received == b"", name  # no request was read, so nothing is answered
        status, _, _ = await live.request("GET", "/jobs")
        assert status == 200  # others are served as before


async def test_a_dribbled_body_is_refused_408_and_cut(dsn: str) -> None:
    async with live_app(dsn, read_timeout=TIMEOUT) as live:
        reader, writer = await _open(live.url)
        body = b'{"type": "SLOW", "arguments": {"pad": "' + b"x" * 200 + b'"}}'
        writer.write(
            b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        seconds, received = await _closed_after(reader, writer, body)
        assert seconds < CUT_WITHIN
        assert received.startswith(b"HTTP/1.1 408"), received[:100]
        assert b'"request_timeout"' in received
        status, answer, _ = await live.request("GET", "/jobs")
        assert status == 200 and answer["jobs"] == []  # nothing was enqueued


async def test_a_kept_alive_connection_serves_more_requests_within_the_timeout(dsn: str) -> None:
    async with live_app(dsn, read_timeout=5.0) as live:
        reader, writer = await _open(live.url)
        for _ in range(3):
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(0.5)
        writer.close()
