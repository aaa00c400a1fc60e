"""One bank link's messages on the wire, as its dialect (:mod:`switch.bank.dialect`) says,
shared by both directions: encoding with an X9.19 MAC in F128, verifying one, and framing.

A message's MAC is judged by the dialect's policy for its class (:meth:`Dialect.policy`):
:class:`MacCheck` says whether it verified, under which key, or why not — ``missing_mac`` (no
F128 where one is required) is told apart from ``bad_mac`` (an F128 that does not verify)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef
from messages import bank
from messages.bank import BankMessage
from messages.codec import FieldValue, Message
from messages.envelope import response_mti
from messages.errors import CodecError
from messages.framing import FrameDecoder, encode_frame
from switch.bank.dialect import MAC_FIELDS, Dialect, MacPolicy

MISSING_MAC, BAD_MAC = "missing_mac", "bad_mac"


@dataclass(frozen=True, slots=True)
class MacCheck:
    ok: bool
    key: KeyRef | None = None  # the ZAK it verified under (the reply is MACed under it)
    reason: str | None = None  # MISSING_MAC or BAD_MAC when not ok


def mac_of(message: Message) -> FieldValue | None:
    """The message's MAC field: F128, or F64 in a message without a secondary bitmap."""
    return message.fields.get(128, message.fields.get(64))


class LinkWire:
    def __init__(self, dialect: Dialect, hsm: Hsm) -> None:
        self.dialect = dialect
        self.hsm = hsm
        self.codec = dialect.codec()

    def frame(self, payload: bytes) -> bytes:
        return encode_frame(payload, self.dialect.length_header)

    def decoder(self, frame_bytes_max: int) -> FrameDecoder:
        return self.dialect.frame_decoder(self.codec, frame_bytes_max)

    def mti_of(self, payload: bytes) -> str:
        """The MTI of a payload that may not decode ("" when it has none readable)."""
        raw = payload[: self.codec.mti_bytes]
        mti = raw.hex() if self.codec.mti_bytes == 2 else raw.decode("ascii", "replace")
        return mti if len(mti) == 4 and mti.isdigit() else ""

    async def encode(self, message: Message, zak: KeyRef | None) -> bytes:
        """``message`` encoded, with its MAC (F128, or F64 where the dialect puts it there)
        under ``zak`` (none without one)."""
        fields = {n: v for n, v in message.fields.items() if n not in MAC_FIELDS}
        if zak is None:
            return self.codec.encode(Message(message.mti, fields))
        fields[self.dialect.mac_field_of(fields)] = bytes(8)
        payload = self.codec.encode(Message(message.mti, fields))
        data = self.dialect.mac_data(self.codec.mac_block(payload))
        mac = await self.hsm.generate_mac(zak, MacAlgorithm.X9_19, data)
        return self.codec.with_mac(payload, mac)

    async def seal(self, typed: BankMessage, zak: KeyRef | None) -> bytes:
        return await self.encode(bank.build(typed), zak)

    async def verify(self, payload: bytes, mac: FieldValue | None, keys: list[KeyRef]) -> MacCheck:
        """The MAC of ``payload`` (its F128 ``mac``) under any of ``keys``."""
        if not isinstance(mac, bytes):
            return MacCheck(False, reason=MISSING_MAC)
        data = self.dialect.mac_data(self.codec.mac_block(payload))
        for zak in keys:
            if await self.hsm.verify_mac(zak, MacAlgorithm.X9_19, data, mac):
                return MacCheck(True, zak)
        return MacCheck(False, reason=BAD_MAC)

    async def check(self, payload: bytes, message: Message, keys: list[KeyRef]) -> MacCheck:
        """The dialect's judgement of ``message``'s MAC: required (must verify), optional
        (verified when present; ok without one), none (not looked at, ok)."""
        network = message.fields.get(70)
        policy = self.dialect.policy(message.mti, network if isinstance(network, str) else None)
        mac = mac_of(message)
        if policy is MacPolicy.NONE or (policy is MacPolicy.OPTIONAL and mac is None):
            return MacCheck(True)
        return await self.verify(payload, mac, keys)

    def body_digest_block(self, payload: bytes, message: Message) -> bytes:
        """The bytes after the MTI without the MAC: what a retransmission must repeat."""
        body = payload[self.codec.mti_bytes :]
        return body[: -self.codec.mac_bytes] if mac_of(message) is not None else body

    def envelope(self, message: Message) -> dict[int, str]:
        """The envelope fields (specs/bank-interface.md) of a decoded message that are
        well-formed: what a refusal echoes so the bank can match it."""
        found: dict[int, str] = {}
        for number in self.codec.interface.envelope:
            value = message.fields.get(number)
            if isinstance(value, str) and value.isascii() and value.isprintable() and value:
                found[number] = value
        return found

    def format_error(self, payload: bytes, envelope: Mapping[int, str]) -> bytes | None:
        """30 under the response MTI of the request ``payload`` starts with, echoing
        ``envelope``; None when it names no request MTI."""
        mti = self.mti_of(payload)
        if not mti or int(mti[2]) % 2 == 1:
            return None
        fields: dict[int, FieldValue] = {39: "30", **envelope}
        try:
            return self.codec.encode(Message(response_mti(mti), fields))
        except CodecError:
            return self.codec.encode(Message(response_mti(mti), {39: "30"}))
