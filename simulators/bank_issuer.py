"""The bank simulator's issuer side: the bank as issuer of savings accounts, answering the
switch's savings debits and reversals by rule — approve, decline above an amount, delay, drop,
disconnect — recording every request it received (repeats deduplicated by message key, as a
real bank applies a reversal once), and taking the centre's key changes (0800 F70 = 101)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from hsm.interface import Hsm
from hsm.keys import KeyRef
from messages import bank
from messages.bank import BankMessage, BankReply, BankReversal, KeyChange, SavingsDebit
from messages.codec import Message
from messages.envelope import message_class
from messages.errors import CodecError
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from simulators.bank_keys import CODEC, BankKeys, mac_payload, mac_verifies


@dataclass(frozen=True, slots=True)
class IssuerRules:
    """How the issuer simulator answers a savings debit."""

    decline_above_fen: int | None = None  # larger debits are declined 51
    delay_s: float = 0.0  # before answering
    drop: bool = False  # never answer (the switch times out and reverses)
    drop_reversal_replies: int = 0  # apply the first N reversals but lose their answers
    disconnect: bool = False  # apply a debit, then drop the connection without answering
    unanswered_reversals: tuple[str, ...] = ()  # originals' F11: their reversals never answered
    repeat_reply_mti: str = "0430"  # a repeated reversal (0421) answered 0430, or 0431
    unsigned_replies: bool = False  # answer without F128 (a bank whose dialect MACs no response)


@dataclass
class Received:
    message_key: str
    mti: str
    typed: BankMessage
    repeat: bool  # the same message key seen before (a repeated reversal is applied once)


class BankIssuer:
    """The bank's host answering the switch's savings debits and reversals."""

    def __init__(
        self,
        hsm: Hsm,
        zak: KeyRef | BankKeys,
        rules: IssuerRules | None = None,
        on_receive: Callable[[Received], None] | None = None,
    ) -> None:
        self.hsm = hsm
        self.keys = zak if isinstance(zak, BankKeys) else BankKeys(zak)
        self.rules = rules or IssuerRules()
        self.on_receive = on_receive
        self.received: list[Received] = []
        self._seen: set[str] = set()  # message keys received
        self.applied: dict[str, int] = {}  # message key → amount debited (reversals remove)
        self.reversals_seen = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def zak(self) -> KeyRef:
        return self.keys.zak

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen (again, after :meth:`close`: what it received and applied is kept)."""
        self._server = await asyncio.start_server(self._serve, host, port)

    async def close(self) -> None:
        """Stop listening and drop every connection (a bank host going away)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def drop_connection(self) -> bool:
        """One line fails: the oldest open connection is closed (False: none open)."""
        for writer in list(self._writers):
            writer.close()
            return True
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(LengthFormat.ASCII4)
        self._writers.add(writer)
        try:
            while data := await reader.read(4096):
                for frame in decoder.feed(data):
                    answer = await self.answer(frame)
                    if answer is DISCONNECT:
                        return
                    if answer is not None:
                        writer.write(encode_frame(answer, LengthFormat.ASCII4))
                        await writer.drain()
        except (ConnectionError, CodecError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def answer(self, payload: bytes) -> bytes | None:
        message = CODEC.decode(payload)
        typed = bank.parse(message)
        if isinstance(typed, BankReply):
            return None
        key = message_key(typed.acquirer_id, typed.transmitted, typed.stan, message.mti)
        repeat = key in self._seen
        self._seen.add(key)
        received = Received(key, message.mti, typed, repeat)
        self.received.append(received)
        if self.on_receive is not None:
            self.on_receive(received)
        financial = not message.mti.startswith("08")
        zak = await self._mac_key(payload, typed.mac) if financial else self.zak
        if zak is None:
            return CODEC.encode(bank.build(bank.reply_to(typed, "A0")))
        code = "00"
        if isinstance(typed, KeyChange):
            taken = await self.keys.take(self.hsm, typed.keys, datetime.now())
            code = "00" if taken is not None else "89"
            return CODEC.encode(bank.build(bank.reply_to(typed, code, data=taken)))
        if isinstance(typed, SavingsDebit):
            rules = self.rules
            if rules.drop:
                return None
            if rules.delay_s:
                await asyncio.sleep(rules.delay_s)
            if rules.decline_above_fen is not None and typed.amount_fen > rules.decline_above_fen:
                code = "51"
            elif not repeat:
                self.applied[key] = typed.amount_fen
            if rules.disconnect:
                return DISCONNECT
        elif isinstance(typed, BankReversal):
            if typed.original[4:10] in self.rules.unanswered_reversals:
                return None  # stuck: neither applied nor answered
            original = _original_key(typed)
            self.applied.pop(original, None)  # once, however often it is repeated
            self.reversals_seen += 1
            if self.reversals_seen <= self.rules.drop_reversal_replies:
                return None
        reply = bank.build(bank.reply_to(typed, code))
        if message.mti == "0421":
            reply = Message(self.rules.repeat_reply_mti, reply.fields)
        if not financial or self.rules.unsigned_replies:
            return CODEC.encode(reply)
        return await mac_payload(self.hsm, zak, reply)

    async def _mac_key(self, payload: bytes, mac: bytes | None) -> KeyRef | None:
        for zak in self.keys.accepted():
            if await mac_verifies(self.hsm, zak, payload, mac):
                return zak
        return None


DISCONNECT = b""  # what :meth:`BankIssuer.answer` returns to drop the connection


def message_key(acquirer_id: str, transmitted: str, stan: str, mti: str) -> str:
    """(F32, F7, F11, class) as text; F32 as a number (F90 carries it zero-filled)."""
    return f"{int(acquirer_id)}|{transmitted}|{stan}|{message_class(mti)}"


def original_data(request: BankMessage, mti: str) -> str:
    """F90 of a reversal of ``request``: MTI(4) STAN(6) F7(10) F32(11) F33(11)."""
    return f"{mti}{request.stan}{request.transmitted}{int(request.acquirer_id):011d}{0:011d}"


def _original_key(reversal: BankReversal) -> str:
    """The original's message key from F90."""
    data = reversal.original
    return message_key(data[20:31], data[10:20], data[4:10], data[:4])
