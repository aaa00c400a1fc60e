"""Network-management handlers of the terminal interface: sign-on, sign-off, echo."""

from __future__ import annotations

from dataclasses import replace

from messages.outcome import Outcome
from messages.private import WorkingKeys
from messages.terminal import Echo, SignOff, SignOn, SignOnReply, TerminalMessage, TerminalReply
from messages.terminal_table import reply_to
from routing.context import RequestContext

_LAYOUTS = {"001": 24, "003": 40, "004": 60}


def _answer(request: TerminalMessage, context: RequestContext, outcome: Outcome) -> TerminalReply:
    return reply_to(request, outcome.code, host_time=context.host_time, host_date=context.host_date)


async def handle_sign_on(request: SignOn, context: RequestContext) -> TerminalReply:
    """New PIK/MAK(/TDK) under the terminal's TMK, a new batch, and the host's clock."""
    layout = _LAYOUTS.get(request.key_scheme)
    tmk = await context.sessions.tmk(request.terminal_id)
    if layout is None:
        return _answer(request, context, Outcome.FUNCTION_NOT_SUPPORTED)
    if tmk is None:
        return _answer(request, context, Outcome.SECURITY_FAILURE)
    keys = await context.hsm.sign_on(tmk, layout, f"term/{request.terminal_id}", now=context.now)
    context.sessions.remember(request.terminal_id, keys)
    batch = await context.terminals.next_batch(request.terminal_id)
    reply = reply_to(
        request,
        Outcome.APPROVED.code,
        SignOnReply,
        host_time=context.host_time,
        host_date=context.host_date,
        keys=WorkingKeys.parse(keys.field62),
    )
    return replace(reply, batch=batch)  # 60.2 of the 0810: the batch the terminal now uses


async def handle_sign_off(request: SignOff, context: RequestContext) -> TerminalReply:
    context.sessions.forget(request.terminal_id)
    return _answer(request, context, Outcome.APPROVED)


async def handle_echo(request: Echo, context: RequestContext) -> TerminalReply:
    return _answer(request, context, Outcome.APPROVED)
