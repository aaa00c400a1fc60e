"""The HTTP port's limits (switch.http_server), over real sockets on 127.0.0.1 (port 0): a
request head and body each have a deadline, an idle connection closes, connections are capped
in all and per address, keep-alive requests within the limits are served; and the daemon's
HTTP port takes its body limit from the configuration."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from hsm.keystore import MemoryKeyStore
from switch.app import open_app
from switch.config import Config, HttpConfig, ListenConfig
from switch.http_server import GuardedSite, HttpGuard, HttpLimits
from switch.sessions import Sessions
from tests.support.daemon import make_database, new_hsm, now


async def _hello(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(text=f"read {len(body)}")


@asynccontextmanager
async def _serving(**limits: float) -> AsyncIterator[int]:
    guard = HttpGuard(HttpLimits(**limits))  # type: ignore[arg-type]
    app = web.Application(middlewares=[guard.middleware])
    app.router.add_route("*", "/hello", _hello)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await GuardedSite(runner, sock, guard).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> float | None:
    """Seconds until the server closed the connection, None if it did not within the time."""
    started = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(4096), timeout_s):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_a_request_head_must_be_complete_within_the_header_timeout() -> None:
    asyncio.run(_slow_head())


async def _slow_head() -> None:
    async with _serving(header_timeout_s=0.4, idle_timeout_s=5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        head = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        for byte in head:  # a byte every 0.02 s: the head never completes in time
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)
            if time.monotonic() - started > 2:
                break
        closed = await _closed_within(reader, 2)
        assert closed is not None
        assert 0.35 <= time.monotonic() - started - closed < 1.5
        writer.close()


def test_a_request_body_must_be_complete_within_the_body_timeout() -> None:
    asyncio.run(_slow_body())


async def _slow_body() -> None:
    async with _serving(body_timeout_s=0.4, idle_timeout_s=5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        closed = await _closed_within(reader, 3)
        assert closed is not None and 0.35 <= closed < 1.5, closed
        writer.close()


def test_an_idle_connection_closes_and_keep_alive_requests_are_served() -> None:
    asyncio.run(_idle_and_keep_alive())


async def _idle_and_keep_alive() -> None:
    async with _serving(idle_timeout_s=0.5, header_timeout_s=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):  # three requests on one connection, 0.2 s apart
            writer.write(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            head = await asyncio.wait_for(reader.readuntil(b"read 5"), 2)
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.2)
        closed = await _closed_within(reader, 2)  # then nothing: the idle timeout
        assert closed is not None and 0.2 <= closed < 1.2, closed
        writer.close()
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        closed = await _closed_within(silent_reader, 2)  # never a byte
        assert closed is not None and 0.4 <= closed < 1.2, closed
        silent.close()


def test_connections_are_capped_in_all_and_per_address() -> None:
    asyncio.run(_capped())


async def _capped() -> None:
    async with _serving(connections_max=3, connections_per_address_max=2) as port:
        kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        third = await asyncio.open_connection("127.0.0.1", port)  # a third from 127.0.0.1
        assert await _closed_within(third[0], 1) is not None
        kept.append(await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0)))
        fourth = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
        assert await _closed_within(fourth[0], 1) is not None  # three in all
        for reader, writer in kept:
            writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"read 0"), 2)).startswith(
                b"HTTP/1.1 200"
            )
            writer.close()


def test_a_declared_body_over_the_limit_is_refused_before_its_handler() -> None:
    asyncio.run(_declared_too_large())


async def _declared_too_large() -> None:
    async with _serving(body_bytes_max=1000) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 2)).startswith(b"HTTP/1.1 413")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert b"application/json" in head  # the HIS API's error shape, before any route
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = json.loads(await asyncio.wait_for(reader.readexactly(length), 2))
        assert body["error"]["code"] == "too_large"
        writer.close()


def test_the_daemon_limits_request_bodies_as_configured(tmp_path: Path) -> None:
    asyncio.run(_body_limit(tmp_path))


async def _body_limit(tmp: Path) -> None:
    make_database(tmp / "medswitch.db", {"POS00001": "pos"})
    store = MemoryKeyStore()
    config = Config(
        home=str(tmp),
        terminal=ListenConfig(port=0),
        http=HttpConfig(port=0, body_bytes_max=1000),
    )
    app = await open_app(config, new_hsm(store), Sessions(store), clock=now)
    await app.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
        for size, status in ((2000, b"413"), (900, b"401")):  # 401: no credentials; read
            body = b"{" + b" " * (size - 2) + b"}"
            writer.write(
                b"POST /his/v1/bills HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            line = await asyncio.wait_for(reader.readline(), 5)
            assert line.startswith(b"HTTP/1.1 " + status), line
            if status == b"413":
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
        writer.close()
    finally:
        await app.stop()
