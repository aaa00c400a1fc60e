"""The access controller in tests: its table written for pty lines under a directory, the
controller running in the test's loop, and a host that answers every frame as the switch
swaps a TPDU (for routing and failover tests that need no switch behind)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from messages.framing import FrameDecoder, LengthFormat, encode_frame
from switch.nac.config import parse_table
from switch.nac.server import Nac

NUMBER = "95566"


def table_text(
    lines_dir: Path,
    routes: dict[str, Sequence[int]],
    *,
    lines: int = 2,
    speed_bps: int = 9600,
    framing: str = "cup",
    framings: Sequence[str] = (),
    answer_timeout_s: float = 5.0,
    extra: str = "",
) -> str:
    """A table: ``lines`` pty lines linked as lines_dir/lineNN (``framings``: each line's, else
    ``framing``), routes NII → local ports."""
    text = [
        "[nac]",
        f'numbers = ["{NUMBER}"]',
        "status_port = 0",
        f"answer_timeout_s = {answer_timeout_s}",
        "connect_timeout_s = 1.0",
        "host_retry_s = 0.5",
        "escape_guard_s = 0.2",
        extra,
    ]
    for n in range(1, lines + 1):
        text += [
            "[[lines]]",
            f'name = "line{n:02d}"',
            f'pty = "{lines_dir / f"line{n:02d}"}"',
            f"speed_bps = {speed_bps}",
            f'framing = "{framings[n - 1] if framings else framing}"',
        ]
    for nii, ports in routes.items():
        hosts = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
        text += ["[[routes]]", f'nii = "{nii}"', f"hosts = [{hosts}]"]
    return "\n".join(text) + "\n"


@contextlib.asynccontextmanager
async def running_nac(text: str) -> AsyncIterator[Nac]:
    nac = Nac(parse_table(text))
    await nac.start()
    try:
        yield nac
    finally:
        await nac.stop()


class SwappingHost:
    """A host on 127.0.0.1 that answers each frame with its TPDU's addresses swapped and
    ``tag`` appended; counts what it answered."""

    def __init__(self, tag: bytes = b"") -> None:
        self.tag = tag
        self.answered = 0
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        decoder = FrameDecoder(LengthFormat.BINARY2)
        with contextlib.suppress(OSError):
            while data := await reader.read(65_536):
                for frame in decoder.feed(data):
                    answer = frame[:1] + frame[3:5] + frame[1:3] + frame[5:] + self.tag
                    self.answered += 1
                    writer.write(encode_frame(answer, LengthFormat.BINARY2))
        writer.close()

    async def stop(self) -> None:
        """Killed: the listener and every connection closed."""
        if self.server is not None:
            self.server.close()
            for writer in self._writers:
                writer.close()
            await self.server.wait_closed()
            self.server = None


class Relay:
    """A switch host in front of another (a TCP relay to ``port``) that can be killed: its
    listener and every connection closed at once, as when its process dies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, up_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                for _ in range(1_000_000):
                    data = await source.read(65_536)
                    if not data:
                        break
                    sink.write(data)
            sink.close()

        tasks = [
            asyncio.create_task(pump(reader, up_writer)),
            asyncio.create_task(pump(up_reader, writer)),
        ]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def kill(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self._writers:
                writer.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None
