"""A link of the pipeline in miniature (`EchoLink`), for the pipeline's tests."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from messages.codec import Message
from messages.errors import CodecError
from messages.outcome import Outcome
from routing.table import Route
from switch.pipeline import Admitted
from tests.support.daemon import CODEC


class Answer(NamedTuple):
    mti: str
    response_code: str


class Request(str):
    """An `EchoLink` request: its text; no card, no amount for the log line."""

    def card_number(self) -> str | None:
        return None

    def amount(self) -> int | None:
        return None


class EchoLink:
    """A link of the pipeline in miniature: a frame is ``MTI|key|content``; every request
    is admitted, remembered by its key, and routed to ``handler``; a reply is ``MTI|code``."""

    name = "test"
    log = logging.getLogger("medswitch.test")
    codec = CODEC  # the frame trace's (an interface it does not trace: not read)

    def __init__(self, handler: Callable[[str, Any], Awaitable[Answer]]) -> None:
        self.route_to = Route("test", "0200", handler=handler)

    def read(self, payload: bytes, peer: str) -> tuple[Message, str]:
        mti, _, rest = payload.decode().partition("|")
        return Message(mti, {}), Request(rest)

    def format_error(self, payload: bytes, err: CodecError) -> bytes | None:
        return None

    async def admit(self, request: str, message: Message, payload: bytes) -> Admitted[str, None]:
        key, _, content = request.partition("|")
        return Admitted("mac", key, content.encode(), None)

    def route(self, request: str, message: Message) -> Route:
        return self.route_to

    async def context(self, request: str, admitted: Admitted[str, None]) -> None:
        return None

    async def answered(self, request: str, reply: Answer, admitted: Admitted[str, None]) -> str:
        return "mac"

    def why(self, context: Any) -> None:
        return None

    def refuse(self, request: str, outcome: Outcome) -> Answer:
        return Answer("0210", outcome.code)

    async def seal(self, reply: Answer, mac_key: str | None) -> bytes:
        return f"{reply.mti}|{reply.response_code}".encode()

    def envelope(self, request: str, message: Message) -> dict[str, str | None]:
        return {"key": request.partition("|")[0]}
