"""Network faults for the daemon tests: a relay that drops replies, and a port nothing listens
on."""

from __future__ import annotations

import asyncio
import socket

from messages.framing import FrameDecoder, LengthFormat, encode_frame


class ReplyDropper:
    """A TCP relay to the daemon that passes the first ``keep`` replies and drops the rest."""

    def __init__(self, port: int, keep: int) -> None:
        self.port, self.keep, self.replies = port, keep, 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            decoder = FrameDecoder(LengthFormat.BINARY2)
            for _ in range(10_000):
                data = await src.read(4096)
                if not data:
                    break
                if not replies:
                    dst.write(data)
                    continue
                for frame in decoder.feed(data):
                    self.replies += 1
                    if self.replies <= self.keep:
                        dst.write(encode_frame(bytes(frame), LengthFormat.BINARY2))
            dst.close()

        tasks = [
            asyncio.create_task(pump(reader, up_writer, False)),
            asyncio.create_task(pump(up_reader, writer, True)),
        ]
        self.tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)


def dead_port() -> int:
    """A port nothing listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
