"""The POS side of the terminal interface as the benches and the kill/failover tests drive it:
a signed-on POS, MACed requests, one exchange on its own connection, the response code of a
reply, the card-debit transfer an advice posts, and a cheap read of a frame's fields."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hsm.interface import MacAlgorithm, SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from hsm.soft import SoftHsm
from ledger.events.purchases import card_debit_id
from messages.codec import Codec, Message
from messages.fieldspec import Var
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.private import CardData  # noqa: F401 (peek's doctest)
from messages.spec_terminal import TERMINAL
from messages.terminal import DebitAdvice, SignOn, SignOnReply, TerminalMessage, TerminalReply
from messages.terminal_table import build, parse
from simulators.terminal_link import Envelope
from switch.card_io.connection import CardConnection
from switch.demo import keys as demo_keys
from switch.sessions import tmk_alias

CODEC = Codec(TERMINAL)
U = KeyUsage


@dataclass
class Pos:
    terminal_id: str
    institution_id: str
    psam: CardConnection
    keys: SignOnKeys | None = None
    batch: str = "000000"
    stan: int = 0

    def envelope(self) -> Envelope:
        self.stan += 1
        return {
            "stan": f"{self.stan:06d}",
            "terminal_id": self.terminal_id,
            "institution_id": self.institution_id.ljust(15),
            "batch": self.batch,
        }


async def signed(hsm: SoftHsm, keys: SignOnKeys, typed: TerminalMessage) -> bytes:
    message = build(typed)
    unsigned = CODEC.encode(
        Message(message.mti, {**message.fields, 64: bytes(8)}, message.tpdu, message.header)
    )
    mac = await hsm.generate_mac(keys.mak, MacAlgorithm.CUP_ECB, CODEC.mac_block(unsigned))
    return CODEC.with_mac(unsigned, mac)


async def exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_frame(payload, LengthFormat.BINARY2))
        decoder = FrameDecoder(LengthFormat.BINARY2)
        for _ in range(1000):
            frames = decoder.feed(await asyncio.wait_for(reader.read(65536), timeout=30))
            if frames:
                return frames[0]
        raise RuntimeError("no reply")
    finally:
        writer.close()


async def sign_on(port: int, hsm: SoftHsm, pos: Pos) -> None:
    reply = parse(CODEC.decode(await exchange(port, CODEC.encode(build(SignOn(**pos.envelope()))))))
    assert isinstance(reply, SignOnReply) and reply.keys is not None, reply
    tmk = KeyRef(tmk_alias(pos.terminal_id), 1, U.TMK)
    pos.keys = await hsm.accept_sign_on(
        tmk, reply.keys.build(), f"bench/{pos.terminal_id}", now=demo_keys._now()
    )
    pos.batch = reply.batch


Lanes = list[list[tuple[bytes, bytes]]]


def code_of(reply: bytes) -> str:
    """The response code of a terminal reply."""
    answer = parse(CODEC.decode(reply))
    assert isinstance(answer, TerminalReply), answer
    return answer.response_code


def debit_ids(lanes: Lanes) -> dict[tuple[int, int], str]:
    """(POS, index) of each advice → the id of the card-debit transfer it posts."""
    found = {}
    for number, lane in enumerate(lanes):
        for index, (payload, _) in enumerate(lane):
            request = parse(CODEC.decode(payload))
            if isinstance(request, DebitAdvice):
                card = request.card
                assert card.psam_terminal is not None and card.psam_serial is not None
                found[number, index] = card_debit_id(card.psam_terminal.hex(), card.psam_serial)
    return found


def peek(frame: bytes, last: int = 39) -> dict[int, bytes]:
    """The raw values of a terminal frame's fields up to ``last``, read in place from the
    bitmap and the field specs — a tenth of a full decode, so that the generator, which shares
    the two cores with the daemon, stays cheap.

    >>> from messages.terminal import Settlement
    >>> request = Settlement(stan="000042", terminal_id="T0000001", institution_id="I".ljust(15),
    ...     pan="6200000000000000017", amount_fen=1000, card=CardData(), bill=b"")
    >>> fields = peek(CODEC.encode(build(request)), 41)
    >>> fields[2].hex(), fields[4].hex(), fields[11].hex(), fields[41]
    ('62000000000000000170', '000000001000', '000042', b'T0000001')
    """
    offset = TERMINAL.prefix_bytes + 2
    bitmap = int.from_bytes(frame[offset : offset + 8], "big")
    offset += 8
    found: dict[int, bytes] = {}
    for number in range(2, last + 1):
        if not bitmap >> (64 - number) & 1:
            continue
        spec = TERMINAL.fields[number]
        size = spec.length
        if spec.var:  # BCD length digits: LL in one byte, LLL in two
            width = 1 if spec.var == Var.LL else 2
            size = int(frame[offset : offset + width].hex())
            offset += width
        if spec.kind.is_digits:
            size = (size + 1) // 2
        found[number] = frame[offset : offset + size]
        offset += size
    return found
