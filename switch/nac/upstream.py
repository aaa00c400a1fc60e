"""Routing by TPDU to the hosts: one persistent TCP connection per host, multiplexed over every
line; the TPDU source rewritten to name the line and its call, so the host's answer (whose
destination is that source: a reply swaps them) finds its way back (specs/dialup.md
"The TPDU rewrite"). Several hosts per NII: the first reachable in the table's order.

>>> rewrite(bytes.fromhex("6000030000") + b"...", line_number=2, call=65)
b'`\\x00\\x03\\x00\\x81...'
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from messages.errors import FramingError
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from switch.nac.config import Host, Settings
from switch.nac.stats import HostStats, NacStats

log = logging.getLogger("medswitch.nac")
TPDU_ID = 0x60
CALL_BITS = 6  # the source's low bits: the call on the line, modulo 64


class Dropped(Exception):
    """The request cannot be answered: the line is dropped. ``cause`` as the stats count it."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def source_of(line_number: int, call: int) -> int:
    return line_number << CALL_BITS | call % (1 << CALL_BITS)


def rewrite(frame: bytes, line_number: int, call: int) -> bytes:
    """The frame with its TPDU source naming the line and the call."""
    return frame[:3] + source_of(line_number, call).to_bytes(2, "big") + frame[5:]


def restore(answer: bytes, original_source: bytes) -> bytes:
    """The host's answer with its TPDU destination given back to the terminal's source."""
    return answer[:1] + original_source + answer[3:]


@dataclass
class Waiting:
    future: asyncio.Future[bytes]
    host: HostLink | None = None


class HostLink:
    """One host's connection: opened on demand, kept, its answers read by one task."""

    def __init__(self, host: Host, router: Router, stats: HostStats) -> None:
        self.host = host
        self.router = router
        self.stats = stats
        self.down_until = 0.0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self.in_flight: set[int] = set()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def ensure(self, settings: Settings) -> bool:
        async with self._connecting:
            if self.connected:
                return True
            loop = asyncio.get_running_loop()
            if loop.time() < self.down_until:
                return False
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host.host, self.host.port),
                    settings.connect_timeout_s,
                )
            except (OSError, TimeoutError) as error:
                self.down_until = loop.time() + settings.host_retry_s
                self.stats.failures["connect"] += 1
                log.warning(
                    "host %s unreachable",
                    self.host,
                    extra={"fields": {"error": type(error).__name__}},
                )
                return False
            self._writer = writer
            self.stats.up = True
            self._reader_task = asyncio.create_task(self._read(reader))
            log.info("host %s connected", self.host)
            return True

    def send(self, frame: bytes, key: int) -> None:
        assert self._writer is not None, "send before connect"
        data = encode_frame(frame, LengthFormat.BINARY2)
        self._writer.write(data)
        self.in_flight.add(key)
        self.stats.requests += 1
        self.stats.bytes_out += len(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(LengthFormat.BINARY2)
        try:
            while data := await reader.read(65_536):
                self.stats.bytes_in += len(data)
                for frame in decoder.feed(data):
                    self.router.deliver(frame, self)
        except (OSError, FramingError) as error:
            log.warning("host %s: %s", self.host, type(error).__name__)
        finally:
            self._lost()

    def _lost(self) -> None:
        writer, self._writer = self._writer, None
        self.stats.up = False
        if writer is not None:
            writer.close()
            self.stats.failures["lost"] += 1
            log.warning("host %s: connection lost", self.host)
        lost, self.in_flight = self.in_flight, set()
        for key in lost:
            self.router.fail(key, self)

    def abandon(self, retry_s: float) -> None:
        """An answer did not come in time: the connection closed (its other requests fail
        now), the host not tried again for ``retry_s``; the NII's next host takes the calls."""
        self.stats.failures["timeout"] += 1
        self.down_until = asyncio.get_running_loop().time() + retry_s
        if self._writer is not None:
            self._writer.close()  # the reader sees the end and fails what was in flight

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if writer is not None:
            writer.close()
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=5.0)  # bounded; our own cancel not swallowed


class Router:
    """Destination NII → hosts; answers matched to the waiting request by TPDU destination."""

    def __init__(
        self, routes: dict[str, tuple[Host, ...]], settings: Settings, stats: NacStats
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.links: dict[Host, HostLink] = {}
        for hosts in routes.values():
            for host in hosts:
                if host not in self.links:
                    stats.hosts[str(host)] = HostStats(str(host))
                    self.links[host] = HostLink(host, self, stats.hosts[str(host)])
        self.routes = {nii: tuple(self.links[h] for h in hosts) for nii, hosts in routes.items()}
        self._waiting: dict[int, Waiting] = {}

    async def exchange(self, frame: bytes, line_number: int, call: int) -> bytes:
        """The host's answer to the terminal's ``frame``, for the terminal; or ``Dropped``."""
        if len(frame) < 5 or frame[0] != TPDU_ID:
            raise Dropped("bad_tpdu")
        nii = frame[1:3].hex()
        links = self.routes.get(nii)
        if links is None:
            self.stats.routing_misses[nii] += 1
            log.warning("no route for NII %s", nii, extra={"fields": {"line": line_number}})
            raise Dropped("routing_miss")
        key = source_of(line_number, call)
        stale = self._waiting.pop(key, None)
        if stale is not None:
            stale.future.cancel()
        waiting = Waiting(asyncio.get_running_loop().create_future())
        self._waiting[key] = waiting
        try:
            waiting.host = await self._send(links, rewrite(frame, line_number, call), key)
            answer = await asyncio.wait_for(waiting.future, self.settings.answer_timeout_s)
        except TimeoutError:
            if waiting.host is not None:  # a host that does not answer is left for a while
                waiting.host.abandon(self.settings.host_retry_s)
            raise Dropped("host_timeout") from None
        finally:
            if self._waiting.get(key) is waiting:
                del self._waiting[key]
            if waiting.host is not None:
                waiting.host.in_flight.discard(key)
        return restore(answer, frame[3:5])

    async def _send(self, links: tuple[HostLink, ...], frame: bytes, key: int) -> HostLink:
        for link in links:
            if await link.ensure(self.settings):
                link.send(frame, key)
                return link
        raise Dropped("host_down")

    def deliver(self, frame: bytes, link: HostLink) -> None:
        key = int.from_bytes(frame[1:3], "big") if len(frame) >= 5 else -1
        waiting = self._waiting.get(key)
        if waiting is None or waiting.host is not link or waiting.future.done():
            link.stats.unmatched += 1
            return
        link.stats.answers += 1
        link.in_flight.discard(key)
        waiting.future.set_result(frame)

    def fail(self, key: int, link: HostLink) -> None:
        """``link`` was lost with the request ``key`` on it: its line is dropped now."""
        waiting = self._waiting.get(key)
        if waiting is not None and waiting.host is link and not waiting.future.done():
            waiting.future.set_exception(Dropped("host_lost"))

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
