"""The terminal link a POS and a kiosk share: its state on disk, its connection to the centre,
sign-on with the terminal's own secure module, MACed exchanges and their checks.

What the terminal must not forget — batch, STAN, downloaded limits, blacklist, the batch's
records, a load awaiting confirmation — is a JSON file written atomically after every change,
so it survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

from hsm.errors import KcvMismatchError
from hsm.interface import MacAlgorithm, SignOnKeys
from hsm.keys import KeyRef
from hsm.soft import SoftHsm
from messages import terminal_table
from messages.codec import Codec, Message
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_terminal import TERMINAL
from messages.terminal import (
    SignOn,
    SignOnReply,
    TerminalMessage,
    TerminalReply,
)
from messages.terminal_actions import explain
from simulators import terminal_card
from simulators.card.state import read_json, write_atomic
from simulators.dial_link import Dial, LineDown, ModemLine
from switch.card_io.connection import CardConnection, expect

CODEC = Codec(TERMINAL)
READS_MAX = 10_000  # socket reads for one reply, at most
BLACKLIST_ROUNDS_MAX = 100


class Envelope(TypedDict):
    stan: str
    terminal_id: str
    institution_id: str
    batch: str


class TerminalError(Exception):
    """A refusal or a fault the operator is shown (no card data in the text); `code`: the
    centre's response code when it refused."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Unreachable(TerminalError):
    """The centre did not answer (no connection, or no reply in time)."""


class NotSent(Unreachable):
    """No connection to the centre (refused, or not made in time): the request never left."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    timeout_s: float = 10.0


@dataclass
class TerminalState:
    """The terminal's memory on disk."""

    path: Path | None
    batch: str = "000001"
    stan: int = 0
    floor_fen: int = 0
    count_max: int = 0
    age_max_h: int = 0
    blacklist_version: int = 0
    blacklist: set[str] = field(default_factory=set)  # application serials, hex
    records: list[dict[str, Any]] = field(default_factory=list)
    pending_load: dict[str, Any] | None = None
    pending_reversal: dict[str, Any] | None = None  # store and forward until answered
    clock_offset_s: int = 0  # the centre's clock minus ours at the last sign-on
    # a centre script a card refused, to report at the card's next settlement: PAN → the
    # field 63 script_refused (hex)
    script_refusals: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | None) -> TerminalState:
        if path is None or not path.exists():
            state = cls(path)
            state.save()
            return state
        raw = read_json(path)
        return cls(
            path,
            raw["batch"],
            raw["stan"],
            raw["floor_fen"],
            raw["count_max"],
            raw["age_max_h"],
            raw["blacklist_version"],
            set(raw["blacklist"]),
            list(raw["records"]),
            raw.get("pending_load"),
            raw.get("pending_reversal"),
            raw.get("clock_offset_s", 0),
            dict(raw.get("script_refusals", {})),
        )

    def save(self) -> None:
        if self.path is None:
            return
        write_atomic(
            self.path,
            {
                "batch": self.batch,
                "stan": self.stan,
                "floor_fen": self.floor_fen,
                "count_max": self.count_max,
                "age_max_h": self.age_max_h,
                "blacklist_version": self.blacklist_version,
                "blacklist": sorted(self.blacklist),
                "records": self.records,
                "pending_load": self.pending_load,
                "pending_reversal": self.pending_reversal,
                "clock_offset_s": self.clock_offset_s,
                "script_refusals": self.script_refusals,
            },
        )

    def next_stan(self) -> str:
        self.stan = self.stan % 999_999 + 1
        self.save()
        return f"{self.stan:06d}"


class TerminalLink:
    """The terminal's connection to the centre and its secure module."""

    def __init__(
        self,
        endpoint: Endpoint | Dial,
        terminal_id: str,
        institution_id: str,
        hsm: SoftHsm,
        tmk: KeyRef,
        state: TerminalState,
        *,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.endpoint = endpoint
        self.terminal_id = terminal_id
        self.institution_id = institution_id.ljust(15)
        self.hsm = hsm
        self.tmk = tmk
        self.state = state
        self.clock = clock
        # the centre's clock minus ours, set at sign-on (kept on disk: offline records after a
        # restart are dated in the centre's time too)
        self.offset = timedelta(seconds=state.clock_offset_s)
        self.keys: SignOnKeys | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._modem: ModemLine | None = None  # dialling: the modem line, kept between calls

    async def close(self) -> None:
        modem, self._modem = self._modem, None
        if modem is not None:
            modem.close()  # DTR dropped: the call ends
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _connect(
        self, endpoint: Endpoint
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(endpoint.host, endpoint.port),
                    endpoint.timeout_s,
                )
            except (OSError, TimeoutError) as error:
                reason = str(error) or type(error).__name__
                raise NotSent(f"centre unreachable: {reason}") from None
            self._reader, self._writer = reader, writer
        return self._reader, self._writer

    def envelope(self, stan: str | None = None) -> Envelope:
        return {
            "stan": stan or self.state.next_stan(),
            "terminal_id": self.terminal_id,
            "institution_id": self.institution_id,
            "batch": self.state.batch,
        }

    async def exchange(self, request: TerminalMessage, *, mac: bool = True) -> TerminalReply:
        message = terminal_table.build(request)
        payload = CODEC.encode(message)
        if mac:
            keys = self.signed_on()
            fields = dict(message.fields)
            fields[64] = bytes(8)
            payload = CODEC.encode(Message(message.mti, fields, message.tpdu, message.header))
            code = await self.hsm.generate_mac(
                keys.mak, MacAlgorithm.CUP_ECB, CODEC.mac_block(payload)
            )
            payload = CODEC.with_mac(payload, code)
        answer = await self._send(payload)
        reply = terminal_table.parse(CODEC.decode(answer))
        if not isinstance(reply, TerminalReply):
            raise TerminalError(f"the centre answered with a request ({type(reply).__name__})")
        if reply.mac is not None and self.keys is not None:
            good = await self.hsm.verify_mac(
                self.keys.mak, MacAlgorithm.CUP_ECB, CODEC.mac_block(answer), reply.mac
            )
            if not good:
                raise TerminalError("the reply's MAC does not verify")
        return reply

    async def _send(self, payload: bytes) -> bytes:
        endpoint = self.endpoint
        if isinstance(endpoint, Dial):
            return await self._dial(endpoint, payload)
        if self._modem is not None:
            await self.close()
        reader, writer = await self._connect(endpoint)
        try:
            writer.write(encode_frame(payload, LengthFormat.BINARY2))
            await writer.drain()
            decoder = FrameDecoder(LengthFormat.BINARY2)
            for _ in range(READS_MAX):
                data = await asyncio.wait_for(reader.read(4096), endpoint.timeout_s)
                if not data:
                    raise Unreachable("the centre closed the connection")
                frames = decoder.feed(data)
                if frames:
                    return bytes(frames[0])
            raise Unreachable("no reply")
        except (OSError, TimeoutError, Unreachable) as error:
            await self.close()
            if isinstance(error, Unreachable):
                raise
            raise Unreachable(f"no reply from the centre: {type(error).__name__}") from None

    async def _dial(self, dial: Dial, payload: bytes) -> bytes:
        """Through the terminal's modem: dialled when the line is down, kept up after."""
        if self._modem is None or self._modem.dial != dial:
            await self.close()
            self._modem = ModemLine(dial)
        try:
            return await self._modem.exchange(payload)
        except LineDown as down:
            if down.sent:
                raise Unreachable(str(down)) from None
            raise NotSent(f"centre unreachable: {down}") from None

    def now(self) -> datetime:
        """The terminal's clock set to the centre's at sign-on (naive, the centre's time)."""
        return (self.clock().replace(tzinfo=None) + self.offset).replace(microsecond=0)

    def signed_on(self) -> SignOnKeys:
        if self.keys is None:
            raise TerminalError("not signed on: run sign_on first")
        return self.keys

    async def sign_on(self) -> str:
        """0800 → working keys under the TMK, the centre's clock and batch."""
        self.keys = None  # the old session ends; the 0810 is not under its MAK
        reply = await self.exchange(SignOn(**self.envelope()), mac=False)
        if not isinstance(reply, SignOnReply) or reply.keys is None:
            raise refused(reply, "sign-on")
        try:
            self.keys = await self.hsm.accept_sign_on(
                self.tmk, reply.keys.build(), f"terminal/{self.terminal_id}", now=self.clock()
            )
        except KcvMismatchError:
            raise TerminalError(
                "the working keys of field 62 do not match their check values under this "
                "terminal's TMK: it holds another TMK than the centre's "
                f"tmk/{self.terminal_id} (load that one's components)"
            ) from None
        self.offset = centre_offset(reply.host_date, reply.host_time, self.clock())
        self.state.clock_offset_s = int(self.offset.total_seconds())
        if reply.batch:
            self.state.batch = reply.batch
        self.state.save()
        return (
            f"signed on: batch {self.state.batch}, centre time {reply.host_date} {reply.host_time}"
        )


def centre_offset(host_date: str | None, host_time: str | None, local: datetime) -> timedelta:
    """The centre's MMDD hhmmss from the sign-on reply, minus the local clock."""
    if not host_date or not host_time or len(host_date) != 4 or len(host_time) != 6:
        return timedelta(0)
    here = local.replace(tzinfo=None, microsecond=0)
    try:
        centre = datetime.strptime(f"{here.year}{host_date}{host_time}", "%Y%m%d%H%M%S")
    except ValueError:
        return timedelta(0)
    for year in (here.year - 1, here.year + 1):  # around new year the centre's may differ
        candidate = centre.replace(year=year) if host_date != "0229" else centre
        if abs(candidate - here) < abs(centre - here):
            centre = candidate
    return centre - here


def read_serial(card: CardConnection, pin: str) -> bytes:
    """SELECT, VERIFY the PIN (the card decides), then the application serial from EF 15."""
    terminal_card.open_application(card, pin)
    return expect(card, bytes.fromhex("00B095001E"), "READ BINARY")[10:20]


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def answered(code: str) -> str:
    """A response code as a line shows it: `00`, or a refusal's code, meaning and what to do."""
    return code if code == "00" else explain(code)


def refused(reply: TerminalReply, what: str) -> TerminalError:
    """A refusal as the terminal shows it: code, meaning and what to do (the spec's table)."""
    return TerminalError(f"{what} refused: {explain(reply.response_code)}", reply.response_code)
