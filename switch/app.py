"""The composition root: configuration → HSM, database, routes, listeners, HTTP side.

`medswitch serve` builds one :class:`App` (:func:`open_app`, the one place it is composed) and
runs it until SIGTERM/SIGINT, then shuts down gracefully: stop accepting, let in-flight requests
answer, close connections and the HSM.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import cast
from zoneinfo import ZoneInfo

from aiohttp import web

from hsm.interface import Hsm, SignOnKeys
from ledger.core import Health, Ledger
from ledger.medical.card_copies import VisitCopies
from ledger.medical.service import CALLER_THREADS, MedicalService
from ledger.medical.sql_store import SqlMedicalStore
from messages.codec import Codec
from messages.framing import LengthFormat
from messages.spec_terminal import TERMINAL
from messages.terminal import TerminalMessage, TerminalReply
from routing.context import OfflineLimits, TerminalRecord
from routing.terminal_routes import terminal_routes
from switch.bank.host import BankHost, BankStores
from switch.card_io.record_book import CentreHealthScripts
from switch.cards import SqlCards
from switch.config import Config
from switch.database import Stores, open_stores
from switch.estate.admin import AdminApi
from switch.his_api import HisDeps, mount_his_app
from switch.his_idempotency import IdempotencyKeys, IdempotencySettings
from switch.his_observe import his_observer
from switch.his_rate import RateLimiter
from switch.his_serve import HisSite, start_his_site
from switch.his_throttle import LoginThrottle
from switch.http_server import GuardedSite, HttpGuard, HttpLimits
from switch.key_home import personal_keys
from switch.listener import Listener, listener_settings
from switch.metrics import Metrics
from switch.observe_http import Observer
from switch.pipeline import Pipeline
from switch.risk import RiskWatch, risk_watch
from switch.sessions import Sessions
from switch.terminal_service import TerminalService
from switch.timed import Timed

log = logging.getLogger("medswitch.app")

TerminalPipeline = Pipeline[TerminalMessage, TerminalReply, SignOnKeys, TerminalRecord]


class App:
    """The daemon, built whole by :func:`open_app` (its one composition), started by
    :meth:`start`: listeners bound, the bank's inbound links, the HTTP side."""

    def __init__(
        self,
        *,
        config: Config,
        hsm: Hsm,
        sessions: Sessions,
        stores: Stores,
        metrics: Metrics,
        clock: Callable[[], datetime],
        bank: BankHost,
        terminal: TerminalPipeline,
        terminal_listener: Listener,
        timed_ledger: Ledger,
        offline: OfflineLimits,
        his: HisDeps,
        risk: RiskWatch,
        worker: int = 0,
    ) -> None:
        self.config = config
        self.hsm = hsm
        self.sessions = sessions
        self.stores = stores
        self.metrics = metrics
        self.clock = clock
        self.bank = bank
        self.terminal = terminal  # the terminal link's pipeline (the listener's handler)
        self.terminal_listener = terminal_listener
        self.timed_ledger = timed_ledger  # the ledger behind its latency metrics
        self.offline = offline
        self.his = his
        self.worker = worker  # this process's index among config.workers
        self.observer = Observer(  # /metrics and /status
            metrics, risk, sessions, terminal_listener, bank, self._writer_health,
            config.http.status_token, worker, config.workers,
        )
        # Set while running: the HTTP side and readiness.
        self.http_runner: web.AppRunner | None = None
        self.worker_metrics_runner: web.AppRunner | None = None
        self.http_port = 0
        self.his_site: HisSite | None = None  # the HIS API's own port, when [his] port is set
        self.ready = False

    @property
    def ledger(self) -> Ledger:
        return self.stores.ledger

    @property
    def cards(self) -> SqlCards:
        return self.stores.cards

    @property
    def medical_store(self) -> SqlMedicalStore:
        return self.stores.medical_store

    async def start(self) -> None:
        config = self.config
        await self.terminal_listener.start()
        if config.bank.enabled:
            await self.bank.start_inbound(
                self.stores.cards,
                self.timed_ledger,
                self.offline,
                replies=self.stores.reply_cache,
                response_timeout_s=config.response_timeout_s,
            )
        await self._start_http(self.his)
        self.ready = True
        log.info(
            "terminal interface on %s:%d, HTTP on %s:%d (%s)",
            config.terminal.host,
            self.terminal_listener.port,
            config.http.host,
            self.http_port,
            "PostgreSQL" if self.stores.postgres else "SQLite",
        )

    async def _start_http(self, his: HisDeps) -> None:
        limits = self.config.http
        http_limits = HttpLimits(
            connections_max=limits.connections_max,
            connections_per_address_max=limits.connections_per_address_max,
            header_timeout_s=limits.header_timeout_s,
            body_timeout_s=limits.body_timeout_s,
            idle_timeout_s=limits.idle_timeout_s,
            body_bytes_max=limits.body_bytes_max,
        )
        guard = HttpGuard(http_limits)
        http = web.Application(
            middlewares=[his_observer(self.metrics), guard.middleware],
            client_max_size=limits.body_bytes_max,
        )
        self.observer.mount(http)
        http.router.add_get("/healthz", self._healthz)
        http.router.add_get("/readyz", self._readyz)
        if self.config.his.port is None:
            mount_his_app(http, his)
        else:  # its own port, maybe TLS; /metrics and health stay here
            self.his_site = await start_his_site(his, http_limits, self.config)
        AdminApi(self.stores.directory.engine, self._estate_changed).mount(http)
        if self.bank is not None:
            self.bank.mount(http, self.stores.directory.engine)
        self.http_runner = web.AppRunner(
            http, access_log=None, shutdown_timeout=limits.drain_timeout_s
        )
        await self.http_runner.setup()
        shared = self.config.workers > 1
        address = (self.config.http.host, self.config.http.port)
        sock = socket.create_server(address, backlog=128, reuse_port=shared)
        self.http_port = sock.getsockname()[1]  # the bound port when configured as 0
        await GuardedSite(self.http_runner, sock, guard).start()
        if shared and self.config.http.worker_metrics_port:
            own = web.Application()
            own.router.add_get("/metrics", self.observer.metrics_page)
            self.worker_metrics_runner = web.AppRunner(own, access_log=None)
            await self.worker_metrics_runner.setup()
            port = self.config.http.worker_metrics_port + self.worker
            await web.TCPSite(self.worker_metrics_runner, self.config.http.host, port).start()

    def _estate_changed(self) -> None:
        """A change through the admin API: read terminals and cards afresh at once."""
        self.stores.terminals.forget()
        self.stores.cards.forget()

    def _writer_health(self) -> Health:
        return self.ledger.health()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self.hsm.diagnostics(), timeout=self.config.hsm.timeout_s)
        except Exception as err:  # any HSM failure makes us not ready; say which
            return web.json_response(
                {"status": "hsm unavailable", "error": type(err).__name__}, status=503
            )
        if not self.ready or self.ledger is None:
            return web.json_response({"status": "starting"}, status=503)
        health = self.ledger.health()
        if health is not Health.OK:  # its writer process died (and may be restarting)
            return web.json_response({"status": f"ledger {health.value}"}, status=503)
        banks = self.bank.readiness()  # [bank] ready_when over the outbound links
        if not banks.ready:
            down = {"status": "bank links down", "banks": banks.down}
            return web.json_response(down, status=503)
        return web.json_response({"status": "ready"})

    @property
    def workers(self) -> int:
        return self.config.workers

    @property
    def terminal_port(self) -> int:
        assert self.terminal_listener is not None
        return self.terminal_listener.port

    @property
    def bank_port(self) -> int:
        assert self.bank is not None and self.bank.listener is not None
        return self.bank.listener.port

    async def stop(self) -> None:
        """The drain: every listener stops accepting and reading at once, then answers what
        it had read (each within its drain_timeout_s) while the bank links, the ledger's writer
        and the stores those requests need are still open; then these close."""
        self.ready = False
        listeners = [] if self.terminal_listener is None else [self.terminal_listener]
        listeners += [] if self.bank is None else self.bank.listeners
        for listener in listeners:
            listener.stop_accepting()
        draining = [listener.close() for listener in listeners]
        if self.http_runner is not None:
            draining.append(self.http_runner.cleanup())
        if self.his_site is not None:
            draining.append(self.his_site.runner.cleanup())
        await asyncio.gather(*draining)
        running = await self.terminal.settle_late(self.config.terminal.drain_timeout_s)
        if running:  # a ledger write already handed to the writer still completes
            log.warning("stopping with %d requests answered 96 still running", running)
        if self.bank is not None:
            await self.bank.stop()
        if self.worker_metrics_runner is not None:
            await self.worker_metrics_runner.cleanup()
        if self.stores is not None:
            await self.stores.close()


async def open_app(
    config: Config,
    hsm: Hsm,
    sessions: Sessions,
    *,
    stores: Stores | None = None,
    clock: Callable[[], datetime] | None = None,
    worker: int = 0,
) -> App:
    """The daemon's one composition: the stores on ``config.database`` (unless given; closed
    again if building fails), the HSM, ledger and medical core behind their latency metrics,
    the bank links (their outbound side started: kiosk EP loads route to it by BIN), the
    terminal link's pipeline and listener (not yet bound: :meth:`App.start`)."""
    asyncio.get_running_loop().set_default_executor(  # medical writes wait in threads
        ThreadPoolExecutor(CALLER_THREADS, thread_name_prefix="medswitch")
    )
    given = stores
    if stores is None:
        stores = await open_stores(config.database, writer_process=config.writer_process)
    try:
        return await _compose(config, hsm, sessions, stores, clock or _zone_clock(config), worker)
    except BaseException:
        if given is None:
            await stores.close()
        raise


async def _compose(
    config: Config,
    hsm: Hsm,
    sessions: Sessions,
    stores: Stores,
    clock: Callable[[], datetime],
    worker: int,
) -> App:
    metrics = Metrics()
    sessions.attach(stores.session_sets())  # unless given one
    sessions.count_into(metrics.sign_ons)
    timed_hsm = cast(Hsm, Timed(hsm, metrics.hsm_seconds))
    timed_ledger = cast(Ledger, Timed(stores.ledger, metrics.ledger_seconds))
    service = _medical_service(stores, config)
    # the centre's copies of the visits it writes to cards, sealed under the key store's
    # PERSONAL_DATA key (found when first needed)
    keys = partial(personal_keys, timed_hsm, sessions.key_store)
    scripts = CentreHealthScripts(timed_hsm, sessions.key_store)  # pending health data
    service.visit_copies = VisitCopies(stores.medical_store, keys, scripts)
    medical = cast(
        MedicalService,
        Timed(
            service,
            metrics.medical_seconds,
            calls=True,
            fixed=("visit_copies", "posts_with_ledger"),  # set above, and the store's
        ),
    )
    offline = OfflineLimits(
        config.offline.floor_fen, config.offline.count_max, config.offline.age_max_h
    )
    bank = BankHost(
        config.bank,
        timed_hsm,
        sessions,
        metrics,
        clock,
        BankStores.of(stores),
        workers=config.workers,
        worker=worker,
    )
    await bank.start_outbound()  # kiosk EP loads route to it
    try:
        terminal = TerminalService(
            codec=Codec(TERMINAL),
            hsm=timed_hsm,
            terminals=stores.terminals,
            sessions=sessions,
            cards=stores.cards,
            ledger=timed_ledger,
            offline=offline,
            medical=medical,
            routes=terminal_routes(bank.savings_routes()),
            clock=clock,
        )
        pipeline = Pipeline(
            link=terminal,
            replies=stores.reply_cache(),  # shared by the workers on PostgreSQL
            metrics=metrics,
            response_timeout_s=config.response_timeout_s,
        )
        listen = config.terminal
        settings = listener_settings(listen, LengthFormat.BINARY2, reuse_port=config.workers > 1)
    except BaseException:
        await bank.stop()
        raise
    return App(
        config=config,
        hsm=hsm,
        sessions=sessions,
        stores=stores,
        metrics=metrics,
        clock=clock,
        bank=bank,
        terminal=pipeline,
        terminal_listener=Listener(
            settings, pipeline.handle, metrics.format_errors.labels("terminal").inc
        ),
        timed_ledger=timed_ledger,
        offline=offline,
        his=HisDeps(
            medical,
            stores.reference,
            throttle=LoginThrottle(config.his.throttle_settings()),
            metrics=metrics,
            expiry_sweep_s=config.his.expiry_sweep_s,
            rate=RateLimiter(config.his.rate_settings()),
            idempotency=IdempotencyKeys(
                IdempotencySettings(retention_s=config.his.idempotency_retention_s)
            ),
            timezone=config.timezone,
            reviews=timed_ledger.add_review,
        ),
        risk=risk_watch(stores.reference.engine, config),
        worker=worker,
    )


def _zone_clock(config: Config) -> Callable[[], datetime]:
    zone = ZoneInfo(config.timezone)
    return lambda: datetime.now(zone)


def _medical_service(stores: Stores, config: Config) -> MedicalService:
    """The bill service with the configured plausibility limits and holds ([his])."""
    open_ttl, bill_ttl = config.his.ttls()
    return MedicalService(
        stores.medical_store,
        stores.directory,
        bill_ttl=bill_ttl,
        open_ttl=open_ttl,
        limits=config.his.bill_limits(),
    )


GC_THRESHOLDS = (20_000, 20, 20)


def settle_garbage_collector() -> None:
    """After start-up: what is loaded now (reference data, routes, keys, metrics) lives as long
    as the daemon, so it is moved out of the collector's generations (``gc.freeze``), and the
    young generation is collected after 20,000 net allocations rather than 700 — a request
    frees what it made by reference counting; cycles are rare. Under bench_settle the collector
    ran 2 times instead of 180 (0.01 s instead of 0.2 s of the run)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve_until_signalled(app: App) -> None:
    """Run ``app`` until SIGTERM or SIGINT, then stop it gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
    except BaseException:  # a port in use: what open_app started (the ledger's writer) closes
        await app.stop()
        raise
    settle_garbage_collector()
    listening = app.bank is not None and app.bank.listener is not None
    bank = f", bank link on {app.config.bank.host}:{app.bank_port}" if listening else ""
    line = (
        f"medswitch serving: terminals on {app.config.terminal.host}:{app.terminal_port}"
        f"{bank}, HTTP on {app.config.http.host}:{app.http_port}"
        + (f" (worker {app.worker + 1} of {app.workers})" if app.workers > 1 else "")
    )
    sys.stdout.write(line + "\n")  # one write: workers' lines never interleave
    sys.stdout.flush()
    await stop.wait()
    log.info("stopping: draining in-flight requests")
    await app.stop()
