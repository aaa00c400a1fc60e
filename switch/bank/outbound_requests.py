"""Requests the bank starts on the centre's outbound connection (the bank as issuer): a bank
that echoes both ways sends its 0800 echo here, some send their sign-on or sign-off here too.
Each is answered, never dropped: echo and sign-on 00 (a sign-on lifts the bank's sign-off),
sign-off 00 (the connection carries no request until the bank signs on again or it is
reconnected), key change and any financial request 40 (counters use the inbound link; the
centre changes this link's keys itself); a MAC the dialect requires and that is missing or
wrong A0; a request that does not decode or names no transaction 30, echoing its envelope."""

from __future__ import annotations

import logging
from typing import NamedTuple

from hsm.keys import KeyRef
from messages import bank
from messages.bank import BankEcho, BankReply, BankSignOff, BankSignOn
from messages.errors import CodecError
from messages.outcome import Outcome
from switch.bank.wire import LinkWire

log = logging.getLogger("medswitch.bank.out")


class Answer(NamedTuple):
    payload: bytes
    signed_on: bool | None = None  # the bank signed the connection on (True) or off (False)


async def answer(wire: LinkWire, keys: list[KeyRef], frame: bytes, bank_id: str) -> Answer:
    """The answer to the bank's request ``frame`` on the outbound connection."""
    try:
        message = wire.codec.decode(frame)
    except CodecError as err:
        log.warning("bank %s outbound: unreadable request from the bank: %s; 30", bank_id, err)
        return Answer(wire.format_error(frame, err.envelope) or b"")
    try:
        request = bank.parse(message)
    except CodecError as err:
        log.warning("bank %s outbound: request %s: %s; 30", bank_id, message.mti, err)
        return Answer(wire.format_error(frame, wire.envelope(message)) or b"")
    if isinstance(request, BankReply):  # not with an even third MTI digit: for the type
        return Answer(wire.format_error(frame, wire.envelope(message)) or b"")
    check = await wire.check(frame, message, keys)
    pan = request.card_number()
    if not check.ok:
        log.warning(
            "bank %s outbound: request %s stan=%s: %s; refused A0",
            bank_id,
            message.mti,
            request.stan,
            check.reason,
        )
        refusal = bank.reply_to(request, Outcome.MAC_ERROR.code, pan=pan)
        return Answer(await wire.seal(refusal, None))
    signed_on: bool | None = None
    code = Outcome.APPROVED.code
    if isinstance(request, BankSignOn):
        signed_on = True
    elif isinstance(request, BankSignOff):
        signed_on = False
    elif not isinstance(request, BankEcho):
        code = Outcome.FUNCTION_NOT_SUPPORTED.code
    log.info(
        "bank %s outbound: the bank's %s stan=%s answered %s",
        bank_id,
        message.mti,
        request.stan,
        code,
    )
    reply = bank.reply_to(request, code, pan=pan)
    return Answer(await wire.seal(reply, check.key), signed_on)
