"""One bank's links, both ways: the outbound connections to the bank as savings issuer (their
store-and-forward sender and key changes) and the inbound listener for its counters, with its
own allowed peers, keys and acquirer id. :class:`switch.bank.host.BankHost` holds one per
configured bank."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from hsm.interface import Hsm
from hsm.keys import KeyUsage
from ledger.core import Ledger
from messages.bank import KeyChange
from routing.bank_context import SavingsRoute
from routing.bank_routes import bank_routes
from routing.context import CardDirectory, OfflineLimits
from switch.bank.cards import CardStatusStore
from switch.bank.dialect import dialect_of
from switch.bank.keys import (
    KeyChangeError,
    LinkKeys,
    inbound_aliases,
    kcvs_of,
    outbound_aliases,
)
from switch.bank.link import BankLinkPool, LinkDown, OutboundSavings, OutboundSettings
from switch.bank.observe import BankMetrics, LinkEvents, LinkState, SafEvents
from switch.bank.saf import ReversalQueue, SafSender, SafSettings, now_us
from switch.bank.service import BankService
from switch.bank.wire import LinkWire
from switch.config import BankConfig
from switch.listener import Listener, listener_settings
from switch.metrics import Metrics
from switch.pipeline import Pipeline
from switch.replies import ReplyCache
from switch.sequences import Sequences
from switch.sessions import Sessions

log = logging.getLogger("medswitch.bank")


@dataclass(frozen=True, slots=True)
class BankStores:
    """What the bank links keep in the daemon's database, on either backend (taken from the
    stores ``switch.database.open_stores`` opened): the card status register, the reversal
    queue's delivery state, the terminals (counters) and the never-repeating numbers."""

    card_status: CardStatusStore
    reversal_queue: ReversalQueue
    terminals: Any  # routing.context.TerminalDirectory: SqliteTerminals or SqlTerminals
    sequences: Sequences

    @classmethod
    def of(cls, stores: Any) -> BankStores:
        """The bank links' part of ``switch.database.Stores``."""
        return cls(stores.card_status, stores.reversal_queue, stores.terminals, stores.sequences)


async def change_keys(link: BankLinkPool, keys: LinkKeys, now: datetime) -> str:
    """The centre changes its outbound link's zone keys: offered under the ZMK (0800 F70 = 101),
    installed only when the bank answers 00 with the same KCVs. Returns the new ZAK's KCV."""
    field48, exported = await keys.offer(now)
    reply = await link.request(KeyChange(**await link.next_envelope(), keys=field48))
    if reply.response_code != "00":
        raise KeyChangeError(f"the bank refused the key change: {reply.response_code}")
    expected = {usage.value: kcv for usage, (_, kcv) in exported.items()}
    if kcvs_of(reply.data) != expected:
        raise KeyChangeError("the bank answered other KCVs: the keys were not changed")
    await keys.install(exported, now)
    return expected[KeyUsage.ZAK.value]


class BankPeer:
    def __init__(
        self,
        config: BankConfig,
        hsm: Hsm,
        sessions: Sessions,
        metrics: Metrics,
        clock: Callable[[], datetime],
        stores: BankStores,
        *,
        reuse_port: bool = False,
        primary: bool = True,
        on_drop: Callable[[str, str], None] | None = None,
        observed: BankMetrics | None = None,
    ) -> None:
        self.config = config
        self.dialect = dialect_of(config)
        self.on_drop = on_drop  # (bank, reason) of every outbound response dropped: metrics
        self.observed = observed  # the bank links' metrics (switch.bank.observe)
        self.stores = stores
        self.reuse_port = reuse_port  # several workers share the listener's port
        self.primary = primary  # the one worker that changes keys and sends reversals
        self.hsm = hsm
        self.sessions = sessions
        self.metrics = metrics
        self.clock = clock
        self.outbound: BankLinkPool | None = None
        self.outbound_keys: LinkKeys | None = None
        self.savings: OutboundSavings | None = None
        self.saf: SafSender | None = None
        self.service: BankService | None = None
        self.listener: Listener | None = None
        self._schedule: asyncio.Task[None] | None = None

    @property
    def bank_id(self) -> str:
        return self.config.acquirer_id

    def savings_routes(self) -> list[SavingsRoute]:
        """Where kiosk EP loads go: this bank's savings link, for its BINs."""
        if not self.config.enabled or not self.config.outbound_host:
            return []
        return [SavingsRoute(self.bank_id, self.config.bins, self.savings)]

    async def start_outbound(self) -> None:
        """The outbound link to the bank as savings issuer, its store-and-forward sender and
        its key-change schedule; nothing when no `outbound_host` is configured."""
        link = self.config
        if not link.enabled or not link.outbound_host:
            return
        keys = LinkKeys(self.hsm, self.sessions, outbound_aliases(link), link.key_overlap_s)
        if await keys.current() is None:
            log.error("bank outbound link: no key %s; EP loads refused", link.outbound_zak_alias)
            return
        settings = OutboundSettings(
            link.outbound_host,
            link.outbound_port,
            link.centre_id,
            link.outbound_timeout_s,
            dialect=self.dialect,
            bank_id=self.bank_id,
        )
        on_drop = self.on_drop
        bank_id = self.bank_id
        self.outbound_keys = keys
        self.outbound = BankLinkPool.open(
            settings,
            self.hsm,
            keys,
            self.clock,
            link.outbound_connections,
            self.stores.sequences,
            None if on_drop is None else lambda reason: on_drop(bank_id, reason),
            LinkEvents(self.bank_id, self.observed),
        )
        if self.outbound.stans is not None:
            await self.outbound.stans.fill()  # kiosk EP loads take their F11 from these
        self.outbound.start()
        if self.primary:  # one sender per bank, whatever the number of workers
            events = SafEvents(self.bank_id, self.observed)
            queue = self.stores.reversal_queue
            self.saf = SafSender(queue, self.outbound, self.bank_id, SafSettings.of(link), events)
            self.saf.start()
        self.savings = OutboundSavings(self.outbound, self.bank_id, keys.zpk)
        if link.key_change_interval_s > 0 and self.primary:
            self._schedule = asyncio.ensure_future(self._change_on_schedule())

    async def start_inbound(
        self,
        cards: CardDirectory,
        ledger: Ledger,
        offline: OfflineLimits,
        *,
        replies: ReplyCache,
        response_timeout_s: float,
    ) -> int:
        """The listener for the bank's counters; returns its port."""
        link = self.config
        self.service = BankService(
            wire=LinkWire(self.dialect, self.hsm),
            hsm=self.hsm,
            link=link,
            keys=LinkKeys(self.hsm, self.sessions, inbound_aliases(link), link.key_overlap_s),
            terminals=self.stores.terminals,
            sessions=self.sessions,
            cards=cards,
            card_status=self.stores.card_status,
            ledger=ledger,
            offline=offline,
            routes=bank_routes(),
            clock=self.clock,
            savings=self.savings,
        )
        pipeline = Pipeline(
            link=self.service,
            replies=replies,
            metrics=self.metrics,
            response_timeout_s=response_timeout_s,
        )
        settings = listener_settings(
            link,
            self.dialect.length_header,
            reuse_port=self.reuse_port,
            allowed_addresses=link.allowed_peers,  # others refused at accept
            measure=self.service.codec.frame_length,  # for a dialect without length header
        )
        malformed = self.metrics.format_errors.labels("bank").inc
        self.listener = Listener(settings, pipeline.handle, malformed)
        await self.listener.start()
        log.info("bank link %s on %s:%d", link.acquirer_id, link.host, self.listener.port)
        return self.listener.port

    async def link_state(self) -> LinkState:
        """Both links' state and the reversal queue's depth, as the metrics show them."""
        outbound, service, listener = self.outbound, self.service, self.listener
        configured = self.config.enabled and bool(self.config.outbound_host)
        state = LinkState(  # an outbound link configured but not started (no key) is down
            (outbound is not None and outbound.connected) if configured else None,
            (outbound is not None and outbound.up) if configured else None,
            None if listener is None else listener.connections > 0,
            None if service is None else self.bank_id in service.signed_on,
        )
        if not configured:
            return state
        try:
            depth = await self.stores.reversal_queue.depth(self.bank_id)
        except Exception:  # the database away: the links still show, the depth as last read
            return state
        oldest_s = 0.0 if depth.oldest_at_us is None else (now_us() - depth.oldest_at_us) / 1e6
        return replace(state, saf_depth=depth.count, saf_oldest_age_s=max(0.0, oldest_s))

    async def change_keys(self) -> str:
        """Change the outbound link's zone keys now (KeyChangeError, LinkDown when not)."""
        if self.outbound is None or self.outbound_keys is None:
            raise LinkDown("no outbound bank link")
        return await change_keys(self.outbound, self.outbound_keys, self.clock())

    async def _change_on_schedule(self) -> None:
        while True:  # until stop() cancels it
            await asyncio.sleep(self.config.key_change_interval_s)
            try:
                kcv = await self.change_keys()
                log.info("bank %s: scheduled key change, ZAK %s", self.bank_id, kcv)
            except (KeyChangeError, LinkDown, TimeoutError) as err:
                log.warning("bank %s: scheduled key change failed: %s", self.bank_id, err)

    async def stop_inbound(self) -> None:
        if self.listener is not None:
            await self.listener.close()

    async def stop(self) -> None:
        await self.stop_inbound()
        if self._schedule is not None:
            self._schedule.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._schedule
        if self.saf is not None:
            await self.saf.close()
        if self.outbound is not None:
            await self.outbound.close()
