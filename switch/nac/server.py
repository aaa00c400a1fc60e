"""The network access controller: its lines, its router, its status and metrics over HTTP
(``/status`` JSON, ``/metrics`` Prometheus), built whole from a checked table."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from switch.nac.calls import LineRunner
from switch.nac.config import Line, Table
from switch.nac.line_io import LineDevice, PtyLine, SerialLine
from switch.nac.stats import LineStats, NacCollector, NacStats
from switch.nac.upstream import Router

log = logging.getLogger("medswitch.nac")
STOP_WAIT_S = 5.0


def device_of(line: Line) -> LineDevice:
    if line.pty is not None:
        return PtyLine(line.pty, line.speed_bps)
    assert line.device is not None, "a line is a pty or a device (checked at load)"
    return SerialLine(line.device, line.speed_bps)


class Nac:
    def __init__(self, table: Table) -> None:
        self.table = table
        self.stats = NacStats({line.name: LineStats(line.name) for line in table.lines}, {})
        self.router = Router(table.routes, table.settings, self.stats)
        self._calls_up = 0
        self.runners = {
            line.name: LineRunner(
                line,
                device_of(line),
                table.settings,
                self.router,
                self.stats.lines[line.name],
                self._count_calls,
            )
            for line in table.lines
        }
        self.registry = CollectorRegistry()
        self.registry.register(NacCollector(self.stats))
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.status_port = 0

    def _count_calls(self, change: int) -> int:
        self._calls_up += change
        return self._calls_up

    async def start(self) -> None:
        """Every line opened (and linked) first: a device that cannot be opened raises here
        (``OSError``), before the controller says it serves."""
        for runner in self.runners.values():
            runner.device.open()
        for name, runner in self.runners.items():
            task = asyncio.create_task(runner.run(), name=f"nac line {name}")
            task.add_done_callback(self._ended)
            self._tasks.append(task)
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        settings = self.table.settings
        sock = socket.create_server((settings.status_host, settings.status_port))
        self.status_port = sock.getsockname()[1]  # the bound port when configured as 0
        await web.SockSite(self._runner, sock).start()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s ended: %r", task.get_name(), task.exception())

    async def _status(self, _: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded, and our own cancellation is not swallowed
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            for task in pending:
                log.warning("%s did not stop in %s s", task.get_name(), STOP_WAIT_S)
        self._tasks.clear()
        await self.router.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
