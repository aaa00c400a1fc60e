"""The bank host links of a deployment, wired from `[bank]` (the first bank) and its
`[[bank.links]]` (more banks, each with its own listener, allowed peers, keys and outbound
connections): one :class:`~switch.bank.peer.BankPeer` per bank, the kiosk EP load routes by BIN
over all of them, the sweep of ended cards, and the operator's key-change trigger (HTTP, for
`medswitch bank key-change`). :class:`switch.app.App` starts the outbound side before the
terminal routes are built (kiosk EP loads route to it by BIN) and the inbound side after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from hsm.interface import Hsm
from ledger.core import Ledger
from routing.bank_context import SavingsRoute
from routing.context import CardDirectory, OfflineLimits
from switch.bank.cards import sweep_ended_cards
from switch.bank.keys import KeyChangeError, LinkKeys
from switch.bank.link import BankLinkPool, LinkDown, OutboundSavings
from switch.bank.observe import BankMetrics, Readiness, ready
from switch.bank.peer import BankPeer, BankStores, change_keys
from switch.bank.saf import SafSender
from switch.bank.service import BankService
from switch.config import BankConfig
from switch.listener import Listener
from switch.metrics import Metrics
from switch.replies import ReplyCache
from switch.sessions import Sessions

__all__ = ["BankHost", "BankStores", "bank_configs", "change_keys", "configured_savings_routes"]

log = logging.getLogger("medswitch.bank")
SWEEP_INTERVAL_S = 3600.0  # how often ended cards past their grace period are swept
_OWN = ("acquirer_id", "zak_alias", "zpk_alias", "outbound_zak_alias", "zmk_alias")


def bank_configs(config: BankConfig) -> list[BankConfig]:
    """Every configured bank: `[bank]` and its `[[bank.links]]`, the enabled ones; ValueError
    when two share an acquirer id or a key (each bank has its own)."""
    if any(bank.links for bank in config.links):
        raise ValueError("bank links: [[bank.links]] do not nest")
    banks = [bank for bank in (config, *config.links) if bank.enabled]
    for name in _OWN:
        values = [getattr(bank, name) for bank in banks]
        if len(set(values)) != len(values):
            raise ValueError(f"bank links: two banks share {name}")
    return banks


def configured_savings_routes(config: BankConfig) -> list[SavingsRoute]:
    """The savings routes `[bank]` configures (no link behind them: `medswitch routes`)."""
    return [
        SavingsRoute(bank.acquirer_id, bank.bins)
        for bank in bank_configs(config)
        if bank.outbound_host
    ]


class BankHost:
    def __init__(
        self,
        config: BankConfig,
        hsm: Hsm,
        sessions: Sessions,
        metrics: Metrics,
        clock: Callable[[], datetime],
        stores: BankStores,
        *,
        workers: int = 1,
        worker: int = 0,
        on_drop: Callable[[str, str], None] | None = None,
    ) -> None:
        """With several ``workers`` each runs every bank's links (the listeners share their
        ports); only worker 0 changes keys on schedule and sweeps ended cards. ``on_drop``
        hears (bank, reason) of every outbound response dropped (missing_mac, bad_mac,
        unmatched, late, unreadable)."""
        self.config = config
        self.clock = clock
        self.stores = stores
        self.primary = worker == 0
        self.observed = BankMetrics(metrics.registry)
        self.peers = [
            BankPeer(
                bank,
                hsm,
                sessions,
                metrics,
                clock,
                stores,
                reuse_port=workers > 1,
                primary=self.primary,
                on_drop=on_drop or self.observed.count_drop,
                observed=self.observed,
            )
            for bank in bank_configs(config)
        ]
        self._sweeps: asyncio.Task[None] | None = None

    def peer(self, bank_id: str) -> BankPeer | None:
        return next((peer for peer in self.peers if peer.bank_id == bank_id), None)

    # -- the first bank's parts (the one `[bank]` itself names) ---------------------------------
    @property
    def first(self) -> BankPeer | None:
        return self.peers[0] if self.peers else None

    @property
    def outbound(self) -> BankLinkPool | None:
        return self.first.outbound if self.first else None

    @property
    def outbound_keys(self) -> LinkKeys | None:
        return self.first.outbound_keys if self.first else None

    @property
    def savings(self) -> OutboundSavings | None:
        return self.first.savings if self.first else None

    @property
    def saf(self) -> SafSender | None:
        return self.first.saf if self.first else None

    @property
    def service(self) -> BankService | None:
        return self.first.service if self.first else None

    @property
    def listener(self) -> Listener | None:
        return self.first.listener if self.first else None

    # -- every bank ------------------------------------------------------------------------------
    @property
    def listeners(self) -> list[Listener]:
        """Every bank's inbound listener (those started)."""
        return [peer.listener for peer in self.peers if peer.listener is not None]

    def savings_routes(self) -> list[SavingsRoute]:
        """Where kiosk EP loads go: each bank's savings link, for its BINs."""
        return [route for peer in self.peers for route in peer.savings_routes()]

    async def show_metrics(self) -> None:
        """Every bank's link and queue gauges, as they are now (before a scrape)."""
        for peer in self.peers:
            self.observed.show(peer.bank_id, await peer.link_state())

    def readiness(self) -> Readiness:
        """`[bank] ready_when` over the banks' outbound links (those configured)."""
        links = [
            (peer.bank_id, peer.outbound is not None and peer.outbound.up)
            for peer in self.peers
            if peer.config.outbound_host  # configured, started or not (no key: down)
        ]
        return ready(self.config.ready_when, links)

    async def start_outbound(self) -> None:
        for peer in self.peers:
            await peer.start_outbound()

    async def start_inbound(
        self,
        cards: CardDirectory,
        ledger: Ledger,
        offline: OfflineLimits,
        *,
        replies: Callable[[], ReplyCache],
        response_timeout_s: float,
    ) -> int:
        """Each bank's listener for its counters (each with its reply cache from ``replies``),
        and the sweep of ended cards; returns the first bank's port."""
        ports = [
            await peer.start_inbound(
                cards, ledger, offline, replies=replies(), response_timeout_s=response_timeout_s
            )
            for peer in self.peers
        ]
        if self.primary:
            self._sweeps = asyncio.ensure_future(self._sweep_ended_cards(ledger))
        return ports[0] if ports else 0

    async def change_keys(self, bank_id: str | None = None) -> str:
        """Change a bank's outbound zone keys now (KeyChangeError, LinkDown when not)."""
        peer = self.peer(bank_id) if bank_id is not None else self.first
        if peer is None:
            raise LinkDown(f"no bank link {bank_id}")
        return await peer.change_keys()

    async def _sweep_ended_cards(self, ledger: Ledger) -> None:
        cards = self.stores.card_status
        while True:  # until stop() cancels it
            try:
                swept = await sweep_ended_cards(cards, ledger, self.clock())
            except Exception:  # a failed round is logged; the next one tries again
                log.exception("bank: sweeping ended cards failed")
            else:
                for serial, outcome in swept:
                    log.info("card %s swept after its grace period: %s", serial, outcome)
            await asyncio.sleep(SWEEP_INTERVAL_S)

    def mount(self, http: web.Application, engine: Any) -> None:
        """POST /bank/{bank}/key-change: the operator's trigger (bind HTTP to loopback), by a
        ``key_custodian`` logged in (``Authorization: Bearer TOKEN``, the operators of the
        back office's ``engine``); the audit log records who changed which link's keys."""

        async def key_change(request: web.Request) -> web.Response:
            return await self._key_change(request, engine)

        http.router.add_post("/bank/{bank}/key-change", key_change)

    async def _key_change(self, request: web.Request, engine: Any) -> web.Response:
        from switch.estate.common import record
        from switch.operators import AuthError, http_status, operator_of_bearer

        header = request.headers.get("Authorization", "")
        try:
            operator = await asyncio.to_thread(operator_of_bearer, engine, header,
                                               "key_custodian")
        except AuthError as err:
            return web.json_response({"error": str(err)}, status=http_status(err))
        bank_id = request.match_info["bank"]
        if self.peer(bank_id) is None:
            return web.json_response({"error": "no such bank link"}, status=404)
        try:
            kcv = await self.change_keys(bank_id)
        except (KeyChangeError, LinkDown, TimeoutError) as err:
            reason = str(err) or type(err).__name__
            await asyncio.to_thread(record, engine, operator.name, "bank.key-change", bank_id,
                                    refused=reason[:200])
            return web.json_response({"error": reason}, status=409)
        await asyncio.to_thread(record, engine, operator.name, "bank.key-change", bank_id,
                                zak_kcv=kcv)
        return web.json_response({"bank": bank_id, "zak_kcv": kcv})

    async def stop(self) -> None:
        for peer in self.peers:
            await peer.stop_inbound()
        if self._sweeps is not None:
            self._sweeps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeps
        for peer in self.peers:
            await peer.stop()
