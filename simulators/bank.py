"""A bank host, both sides of the host-to-host link, through the switch's own messages and HSM
interface (never a private copy of the formats).

- :class:`BankAcquirer` — the bank's counters: connects to the switch's inbound bank link, signs
  on, and sends counter transactions MACed (X9.19) under the link's ZAK, with a virtual card in
  its reader: an ED load or unload runs INITIALIZE on the card, the 0200 brings MAC2, the card's
  CREDIT FOR LOAD / DEBIT FOR UNLOAD gives the TAC / MAC3 for the 0220. Scriptable: see
  :func:`run_script`.
- :class:`BankIssuer` (:mod:`simulators.bank_issuer`) — the bank as issuer of savings
  accounts: a listener that answers savings
  debits (0200 F3 401000) and their reversals by rule — approve, decline above an amount, delay,
  drop, disconnect — recording every request it received (repeats deduplicated by message key,
  as a real bank applies a reversal once), and taking the centre's key changes (0800 F70 = 101).

Key changes, both ways, through :class:`BankKeys` (:mod:`simulators.bank_keys`): new zone keys
under the link's ZMK with KCVs; the previous ZAK still verifies for an overlap after a change.
"""

from __future__ import annotations

__all__ = [
    "CODEC",
    "DISCONNECT",
    "BankAcquirer",
    "BankIssuer",
    "BankKeys",
    "IssuerRules",
    "Received",
    "mac_payload",
    "mac_verifies",
    "message_key",
    "original_data",
    "run_script",
]

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from hsm.interface import Hsm
from hsm.keys import KeyRef
from messages import bank
from messages.bank import (
    BankEcho,
    BankMessage,
    BankReply,
    BankSignOn,
    CardService,
    CounterEpLoad,
    CounterEpLoadConfirm,
    CounterInquiry,
    CounterLoad,
    CounterLoadConfirm,
    CounterUnload,
    CounterUnloadConfirm,
    KeyChange,
)
from messages.errors import CodecError
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.private import CardData, Purse
from simulators import terminal_card
from simulators.bank_issuer import (
    DISCONNECT,
    BankIssuer,
    IssuerRules,
    Received,
    message_key,
    original_data,
)
from simulators.bank_keys import CODEC, BankKeys, mac_payload, mac_verifies
from simulators.card import terminal
from switch.card_io.connection import CardConnection, expect

COUNTER_NO = bytes.fromhex("000000000099")  # the terminal number the card MACs at a counter
READ_PUBLIC = bytes.fromhex("00B095001E")  # READ BINARY, SFI 15, 30 bytes
READS_MAX = 1000  # frames arrive whole within a few reads; a bound, not a wait


@dataclass
class BankAcquirer:
    """One connection of a bank's counters to the switch."""

    hsm: Hsm
    zak: KeyRef
    acquirer_id: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    counter_id: str = "C0000001"
    branch_id: str = "BRANCH000000001"
    timeout_s: float = 10.0
    clock: Callable[[], datetime] = datetime.now
    _stan: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    async def connect(
        cls, host: str, port: int, hsm: Hsm, zak: KeyRef, acquirer_id: str, **kw: Any
    ) -> BankAcquirer:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(hsm, zak, acquirer_id, reader, writer, **kw)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    def envelope(self) -> dict[str, Any]:
        return {
            "stan": f"{next(self._stan) % 1_000_000:06d}",
            "transmitted": self.clock().strftime("%m%d%H%M%S"),
            "acquirer_id": self.acquirer_id,
            "terminal_id": self.counter_id,
            "branch_id": self.branch_id,
        }

    async def send(self, payload: bytes) -> bytes:
        """One frame out, the next frame in (one request outstanding at a time)."""
        self.writer.write(encode_frame(payload, LengthFormat.ASCII4))
        await self.writer.drain()
        decoder = FrameDecoder(LengthFormat.ASCII4)
        for _ in range(READS_MAX):
            data = await asyncio.wait_for(self.reader.read(4096), timeout=self.timeout_s)
            if not data:
                raise ConnectionError("the switch closed the bank link")
            frames = decoder.feed(data)
            if frames:
                return frames[0]
        raise ConnectionError("no reply")

    async def key_change(self, keys: BankKeys) -> BankReply:
        """The bank changes its link's zone keys (0800 F70 = 101): on 00 with the KCVs it sent,
        its new ZAK MACs from now on (``keys`` keeps the old one for the overlap)."""
        field48, new_zak = await keys.offer(self.hsm, self.clock())
        reply = await self.exchange(KeyChange(**self.envelope(), keys=field48))
        expected = {i.split("=")[0]: i.split("/")[-1] for i in field48.split(";")}
        answered = dict(i.split("=", 1) for i in (reply.data or "").split(";") if "=" in i)
        if reply.response_code == "00" and answered == expected:
            keys._switch(new_zak)
            self.zak = new_zak
        return reply

    async def exchange(
        self, request: BankMessage, *, mac: bool = True, bad_mac: bool = False
    ) -> BankReply:
        message = bank.build(request)
        payload = (
            await mac_payload(self.hsm, self.zak, message, bad_mac=bad_mac)
            if mac
            else CODEC.encode(message)
        )
        answer = await self.send(payload)
        reply = bank.parse(CODEC.decode(answer))
        if not isinstance(reply, BankReply):
            raise CodecError("the switch answered with a request")
        if reply.mac is not None and not await mac_verifies(self.hsm, self.zak, answer, reply.mac):
            raise CodecError("the reply's MAC does not verify", field="128")
        return reply

    async def sign_on(self) -> BankReply:
        return await self.exchange(BankSignOn(**self.envelope()), mac=False)

    async def echo(self) -> BankReply:
        return await self.exchange(BankEcho(**self.envelope()), mac=False)

    async def inquiry(self, card_no: str) -> BankReply:
        return await self.exchange(CounterInquiry(**self.envelope(), pan=card_no))

    async def card_service(
        self, service: str, card_no: str, new_card: str | None = None
    ) -> BankReply:
        """A card service with no card present: loss_report, unloss, cancel, card_replacement
        (with the replacement's number)."""
        return await self.exchange(
            CardService(**self.envelope(), service=service, pan=card_no, new_card=new_card)
        )

    async def pin_reload(
        self, conn: CardConnection, card_no: str, new_pin: str, pin_block: bytes
    ) -> tuple[BankReply, int | None]:
        """The new PIN (entered at the counter, ``pin_block`` under the link's ZPK) → the
        switch's RELOAD PIN MAC → RELOAD PIN on the card; the card's status word."""
        reply = await self.exchange(
            CardService(**self.envelope(), service="pin_reload", pan=card_no, pin_block=pin_block)
        )
        if reply.response_code != "00" or reply.card is None or reply.card.mac2 is None:
            return reply, None
        terminal.select(conn)
        data = bytes.fromhex(new_pin) + reply.card.mac2
        _, sw = conn.transmit(bytes([0x80, 0x5E, 0x00, 0x00, len(data)]) + data)
        return reply, sw

    async def pin_unblock(
        self, conn: CardConnection, card_no: str, pin_block: bytes
    ) -> tuple[BankReply, int | None]:
        """The card's challenge → the switch's PIN UNBLOCK command → the card."""
        terminal.select(conn)
        serial = _serial(conn)
        challenge = expect(conn, terminal_card.GET_CHALLENGE, "GET CHALLENGE")
        reply = await self.exchange(
            CardService(
                **self.envelope(),
                service="pin_unblock",
                pan=card_no,
                pin_block=pin_block,
                card=CardData(app_serial=serial, challenge=challenge),
            )
        )
        if reply.response_code != "00" or reply.card is None or not reply.card.issuer_script:
            return reply, None
        _, sw = conn.transmit(reply.card.issuer_script)
        return reply, sw

    async def ed_load(
        self, conn: CardConnection, card_no: str, pin: str, amount_fen: int, *, confirm: bool = True
    ) -> tuple[BankReply, BankReply | None]:
        """VERIFY → INITIALIZE FOR LOAD → 0200 (MAC2) → CREDIT FOR LOAD → 0220 with the TAC."""
        return await self._load(conn, card_no, pin, amount_fen, Purse.ED, None, confirm)

    async def ep_load(
        self,
        conn: CardConnection,
        card_no: str,
        pin: str,
        amount_fen: int,
        pin_block: bytes,
        *,
        confirm: bool = True,
    ) -> tuple[BankReply, BankReply | None]:
        """An EP load from the cardholder's savings: the PIN block (under the link's ZPK) rides
        with the card's INITIALIZE FOR LOAD data (purse EP)."""
        return await self._load(conn, card_no, pin, amount_fen, Purse.EP, pin_block, confirm)

    async def _load(
        self,
        conn: CardConnection,
        card_no: str,
        pin: str,
        amount_fen: int,
        purse: Purse,
        pin_block: bytes | None,
        confirm: bool,
    ) -> tuple[BankReply, BankReply | None]:
        terminal_card.open_application(conn, pin)
        serial = _serial(conn)
        data = terminal_card.initialize_load(conn, serial, amount_fen, COUNTER_NO, purse)
        ep = purse is Purse.EP
        cls, confirm_cls = (
            (CounterEpLoad, CounterEpLoadConfirm) if ep else (CounterLoad, CounterLoadConfirm)
        )
        reply = await self.exchange(
            cls(
                **self.envelope(),
                pan=card_no,
                amount_fen=amount_fen,
                card=data,
                pin_block=pin_block,
            )
        )
        if reply.response_code != "00":
            _run_script(conn, reply)
            return reply, None
        assert reply.card is not None and reply.card.mac2 and reply.card.card_datetime
        tac = terminal_card.credit_for_load(conn, reply.card.card_datetime, reply.card.mac2)
        if not confirm:
            return reply, None
        done = replace(
            data,
            tac=tac,
            new_balance_fen=terminal_card.balance(conn, purse),
            card_datetime=reply.card.card_datetime,
        )
        confirmation = await self.exchange(
            confirm_cls(**self.envelope(), pan=card_no, amount_fen=amount_fen, card=done)
        )
        return reply, confirmation

    async def ed_unload(
        self, conn: CardConnection, card_no: str, pin: str, amount_fen: int, *, confirm: bool = True
    ) -> tuple[BankReply, BankReply | None]:
        """VERIFY → INITIALIZE FOR UNLOAD → 0200 (MAC2) → DEBIT FOR UNLOAD → 0220 with MAC3."""
        terminal_card.open_application(conn, pin)
        serial = _serial(conn)
        init = terminal.initialize_load(
            conn, terminal.PURSE_ED, amount_fen, COUNTER_NO, unload=True
        )
        data = CardData(
            app_serial=serial,
            purse=Purse.ED,
            old_balance_fen=init.old_balance_fen,
            online_counter=init.online_ctr,
            key_version=init.key_version,
            algorithm_id=init.alg,
            card_random=init.rnd,
            mac1=init.mac1,
            psam_terminal=COUNTER_NO,
            amount_fen=amount_fen,
            pboc_type=init.txn_type,
        )
        reply = await self.exchange(
            CounterUnload(**self.envelope(), pan=card_no, amount_fen=amount_fen, card=data)
        )
        if reply.response_code != "00":
            _run_script(conn, reply)
            return reply, None
        assert reply.card is not None and reply.card.mac2 and reply.card.card_datetime
        when = datetime.strptime(reply.card.card_datetime, "%Y%m%d%H%M%S")
        mac3 = terminal.debit_for_unload(conn, when, reply.card.mac2)
        if not confirm:
            return reply, None
        done = replace(
            data,
            mac3=mac3,
            new_balance_fen=terminal_card.balance(conn),
            card_datetime=reply.card.card_datetime,
        )
        confirmation = await self.exchange(
            CounterUnloadConfirm(**self.envelope(), pan=card_no, amount_fen=amount_fen, card=done)
        )
        return reply, confirmation


def _serial(conn: CardConnection) -> bytes:
    """The application serial (EF 0015 bytes 11-20), read from the card in the reader."""
    return expect(conn, READ_PUBLIC, "READ BINARY 0015")[10:20]


def _run_script(conn: CardConnection, reply: BankReply) -> None:
    """An issuer script the switch sent back (a lost card's block) goes to the card."""
    if reply.card is not None and reply.card.issuer_script:
        conn.transmit(reply.card.issuer_script)


# -- scripts ----------------------------------------------------------------------------------


async def run_script(
    acquirer: BankAcquirer, lines: Iterable[str], cards: dict[str, tuple[CardConnection, str]]
) -> list[str]:
    """Run counter steps, one per line: ``sign_on``, ``echo``, ``inquiry CARD``,
    ``load CARD AMOUNT``, ``unload CARD AMOUNT``, ``loss_report CARD``, ``unloss CARD``,
    ``cancel CARD``, ``replace CARD NEW_CARD``
    (``#`` starts a comment). ``cards`` maps a card number to its connection and PIN. Returns
    one result line per step."""
    results: list[str] = []
    for raw in lines:
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        verb, args = words[0], words[1:]
        if verb == "sign_on":
            reply = await acquirer.sign_on()
        elif verb == "echo":
            reply = await acquirer.echo()
        elif verb == "inquiry":
            reply = await acquirer.inquiry(args[0])
        elif verb in ("loss_report", "unloss", "cancel"):
            reply = await acquirer.card_service(verb, args[0])
        elif verb == "replace":
            reply = await acquirer.card_service("card_replacement", args[0], args[1])
        elif verb in ("load", "unload"):
            conn, pin = cards[args[0]]
            step = acquirer.ed_load if verb == "load" else acquirer.ed_unload
            reply, confirmation = await step(conn, args[0], pin, int(args[1]))
            if confirmation is not None:
                reply = confirmation if confirmation.response_code != "00" else reply
        else:
            raise ValueError(f"unknown step {verb!r}")
        results.append(f"{' '.join(words)} -> {reply.response_code}")
    return results
